"""A webhook receiver for the benchmarks: answers every POST at once (``fast``), or never (``hang``).

    python tests/perf/webhook_receiver.py fast PORT_FILE
    python tests/perf/webhook_receiver.py hang PORT_FILE

Listens on a free port of 127.0.0.1, writes the port to PORT_FILE, and runs
until SIGTERM or SIGINT, then prints how many requests it received.  asyncio
with keep-alive and no parsing beyond Content-Length, so that the receiver
costs the machine as little as possible beside the server it is measured with.
Not used by the test suite (tests/receivers.py is the receiver that verifies).
"""

from __future__ import annotations

import asyncio
import signal
import sys

ANSWER = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


async def main(mode: str, port_file: str) -> None:
    received = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                received += 1
                if mode == "hang":
                    await asyncio.sleep(3600)
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    with open(port_file, "w") as out:
        out.write(str(server.sockets[0].getsockname()[1]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()
    print(f"received {received}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
