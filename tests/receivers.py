"""A real webhook receiver on 127.0.0.1 for the tests: it verifies each request with the
``standardwebhooks`` package, records what arrived, and answers as the test tells it.

Modes (``Receiver.mode``), switchable while deliveries go on:

- ``ok``: 204 to every request;
- ``fail``: 500;
- ``redirect``: 307 to another URL (which a deliverer must not follow);
- ``hang``: read the request, never answer (until the mode changes or the receiver stops);
- and ``Receiver.close_listener()`` / ``reopen()`` refuse connections for a while, on the same port.

``Receiver.delay`` slows every answer down (a slow receiver), and ``Receiver.hanging``
counts the requests being held in ``hang`` mode right now.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0MjQyNDI0"


@dataclass
class Arrival:
    """One request as received: its headers (lower-cased names), body, and whether its signature verified."""

    headers: dict[str, str]
    body: bytes
    path: str
    verified: bool
    answered: int | None
    at: float = field(default_factory=time.monotonic)

    @property
    def document(self):
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """A receiver listening on a free port of 127.0.0.1; use as a context manager, or call stop()."""

    def __init__(self, secret: str | None = SECRET, mode: str = "ok"):
        self.verifier = Webhook(secret) if secret else None
        self.mode = mode
        self.arrivals: list[Arrival] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.hanging = 0
        self.delay = 0.0  # seconds every answer (all modes but hang) waits before it is sent
        # Kept-alive connections between requests: close_listener() drops them, or a
        # client holding one would still be answered while the port refuses connections.
        self._idle: set[socket.socket] = set()
        self._listening = threading.Event()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.port = _free_port()
        self._server: ThreadingHTTPServer | None = None
        self.reopen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/deployapi?token=path-secret"

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        if mode != "hang":
            self._release.set()
            self._release = threading.Event()

    def accepted(self) -> list[Arrival]:
        """The requests answered with a 2xx, in the order they arrived."""
        with self._lock:
            return [a for a in self.arrivals if a.answered is not None and 200 <= a.answered < 300]

    def wait_for(self, count: int, timeout: float = 30) -> list[Arrival]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            accepted = self.accepted()
            if len(accepted) >= count:
                return accepted
            time.sleep(0.02)
        raise AssertionError(f"{len(self.accepted())} of {count} deliveries accepted within {timeout} s "
                             f"({len(self.arrivals)} requests arrived)")

    def close_listener(self) -> None:
        """Stop listening: connections to the port are refused until reopen().

        Idle kept-alive connections are closed too; a request in progress ends as its mode says
        (a hanging one keeps hanging), and then its connection is closed.
        """
        self._listening.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            idle, self._idle = self._idle, set()
        for connection in idle:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def reopen(self) -> None:
        receiver = self
        listening = self._listening = threading.Event()
        listening.set()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with receiver._lock:
                    receiver._idle.add(self.connection)

            def finish(self):
                with receiver._lock:
                    receiver._idle.discard(self.connection)
                super().finish()

            def do_POST(self):  # noqa: N802 (http.server's name)
                with receiver._lock:
                    receiver._idle.discard(self.connection)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {name.lower(): value for name, value in self.headers.items()}
                verified = False
                if receiver.verifier is not None:
                    try:
                        receiver.verifier.verify(body, headers)
                        verified = True
                    except WebhookVerificationError:
                        verified = False
                mode = receiver.mode
                with receiver._lock:
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                try:
                    if mode == "hang":
                        with receiver._lock:
                            receiver.hanging += 1
                        receiver._release.wait(60)
                        with receiver._lock:
                            receiver.hanging -= 1
                        arrival = Arrival(headers, body, self.path, verified, None)
                        with receiver._lock:
                            receiver.arrivals.append(arrival)
                        self.close_connection = True
                        return
                    status = {"ok": 204, "fail": 500, "redirect": 307}[mode]
                    if receiver.delay:
                        time.sleep(receiver.delay)
                    with receiver._lock:
                        receiver.arrivals.append(Arrival(headers, body, self.path, verified, status))
                    self.send_response(status)
                    if status == 307:
                        self.send_header("Location", f"http://127.0.0.1:{receiver.port}/elsewhere")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1
                        if listening.is_set():
                            receiver._idle.add(self.connection)
                        else:
                            self.close_connection = True

            def log_message(self, *args):  # quiet
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        self._release.set()
        self.close_listener()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def webhook_config(*hooks: dict, extra: str = "") -> str:
    """A configuration file's text with these ``[[webhooks]]`` tables (values as TOML literals via json)."""
    lines = [extra] if extra else []
    for hook in hooks:
        lines.append("[[webhooks]]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in hook.items())
    return "\n".join(lines) + "\n"
