"""Start and stop the real ``deployapi serve`` process for end-to-end tests."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

DEPLOYAPI = str(Path(sys.executable).with_name("deployapi"))
URL_LINE = re.compile(r"listening on (http://\S+?)/? ")


class Server:
    """A running ``deployapi serve``; ``url`` has no trailing slash.

    Its stderr is read continuously by a thread (so a chatty log never fills
    the pipe and blocks the server) and kept in ``stderr_text``.
    """

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 15,
                 wrapper: tuple[str, ...] = (), preexec_fn=None):
        """``wrapper``: a command that runs ``deployapi serve ARGS`` (appended to it) by exec, keeping its pid;
        ``preexec_fn``: run in the child before it starts (to set resource limits)."""
        environment = {**os.environ, **(env or {})}
        self.process = subprocess.Popen(
            [*wrapper, DEPLOYAPI, "serve", *args], cwd=cwd, env=environment,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn,
        )
        self._stderr: list[str] = []
        self._stderr_reader = threading.Thread(target=self._stderr.extend, args=(self.process.stderr,), daemon=True)
        self._stderr_reader.start()
        self.first_line = self._read_line(timeout)
        match = URL_LINE.search(self.first_line)
        if not match:
            self.stop()
            raise RuntimeError(f"server did not start: {self.first_line!r} {self.stderr_text}")
        self.url = match.group(1).rstrip("/")

    @property
    def stderr_text(self) -> str:
        return "".join(self._stderr)

    def _read_line(self, timeout: float) -> str:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        return self.process.stdout.readline() if ready else ""

    def request(self, method: str, path: str, body: object = None, headers: dict | None = None):
        """(status, headers, decoded JSON body or None)."""
        data = None if body is None else json.dumps(body).encode()
        status, response_headers, answer = http_request(method, self.url + path, data, headers)
        return status, response_headers, _json(answer)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Send ``sig`` (if still running) and wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._stderr_reader.join(5)
        self.process.stdout.close()
        return code


def http_request(method: str, url: str, data: bytes | None = None, headers: dict | None = None,
                 timeout: float = 10):
    """(status, headers, body bytes) of one request sent as JSON; an error status is an answer too.

    :raises OSError: no answer within ``timeout`` or no connection.
    """
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def _json(data: bytes):
    return json.loads(data) if data else None


def run_command(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 20):
    """Run ``deployapi ARGS`` to completion."""
    return subprocess.run([DEPLOYAPI, *args], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def wait_until(predicate, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
