"""Serving under waitress with bounds: what ``deployapi serve`` adds to waitress's defaults.

waitress buffers every request before a worker thread sees it, and every
response until the client takes it.  Left at its defaults, cheap requests can
hold that machinery: a body of any size is spooled to disk before the app can
answer 413, a client that pipelines requests and never reads keeps a worker
thread waiting for as long as the connection stays open (waitress never times
out a connection with a request in progress), and connections that trickle
their headers a byte at a time keep their slots forever.  This module sets the
limits (:class:`Limits`) and gives waitress a channel that enforces two more:

- a request (headers and body) must arrive within ``channel_timeout`` of its
  first byte;
- a worker waiting for a client to take its output gives up after
  ``channel_timeout`` without progress, and the connection is closed.

waitress's own refusals (a body over the limit, headers too large, malformed
HTTP) are answered as problem+json like every other error of the API.
Connection floods and slow clients beyond these bounds are a reverse proxy's
job (docs/operations.md, "Behind a reverse proxy").
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask
from werkzeug.exceptions import RequestEntityTooLarge

from . import errors

logger = logging.getLogger("deployapi")

# waitress refuses a body whose Content-Length reaches this, before reading it.
# The API's own limit is MAX_BODY_BYTES; the margin lets the app answer
# bodies just over it itself, and lets a chunked body of exactly
# MAX_BODY_BYTES through with its chunk framing.  Below waitress's
# inbuf_overflow (512 KiB), so no request body is ever spooled to disk.
MAX_REQUEST_BODY_BYTES = errors.MAX_BODY_BYTES + 8 * 1024
# The request line and headers together; a longer path or header is 431.
MAX_REQUEST_HEADER_BYTES = 32 * 1024


@dataclass(frozen=True)
class Limits:
    """The waitress settings ``deployapi serve`` chooses (docs/operations.md, "Limits")."""

    threads: int = 4
    connection_limit: int = 100
    channel_timeout: int = 30
    outbuf_high_watermark: int = 4 * 2**20

    def adjustments(self) -> dict[str, int]:
        """Keyword arguments for ``waitress.create_server``."""
        return {
            "threads": self.threads,
            "connection_limit": self.connection_limit,
            "channel_timeout": self.channel_timeout,
            "outbuf_high_watermark": self.outbuf_high_watermark,
            "max_request_body_size": MAX_REQUEST_BODY_BYTES,
            "max_request_header_size": MAX_REQUEST_HEADER_BYTES,
            # Sweep for idle and stalled connections often enough for channel_timeout to mean what it says.
            "cleanup_interval": max(1, min(30, self.channel_timeout // 2)),
        }


def bind(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to each address ``host`` resolves to, as waitress would bind them, not yet listening.

    ``deployapi serve`` binds before it opens the database, so that a port in
    use creates no file; :func:`create_server` then listens on them.

    :raises OSError: an address cannot be bound (in use, not one of this machine's).
    :raises ValueError: ``host`` does not resolve (waitress's own message).
    """
    from waitress.adjustments import Adjustments

    sockets: list[socket.socket] = []
    try:
        # waitress's own resolution of host and port: the addresses it would listen on by itself.
        for family, socktype, proto, address in Adjustments(host=host, port=port).listen:
            sock = socket.socket(family, socktype, proto)
            sockets.append(sock)
            # As waitress sets them on the sockets it binds: a restart is not refused while the
            # connections of the previous process linger in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def create_server(app, *, sockets: list[socket.socket], limits: Limits):
    """A waitress server for ``app`` on ``sockets`` (from :func:`bind`), listening, with ``limits`` and the bounded
    channel, its loop not yet running."""
    import waitress

    server = waitress.create_server(app, sockets=sockets, **limits.adjustments())
    socket_map = getattr(server, "map", None) or server._map
    for listener in socket_map.values():
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = BoundedChannel
    return server


class ProblemErrorTask(ErrorTask):
    """waitress's own error answers (413, 431, 400, 501, 500) as the API's problem+json."""

    def execute(self) -> None:
        error = self.request.error
        status = error.code
        if status == 413:
            problem: Exception = RequestEntityTooLarge()
        elif status == 431:
            problem = errors.header_too_large("request line and headers", MAX_REQUEST_HEADER_BYTES)
        elif status < 500:
            problem = errors.ApiError(status, "bad_request", error.reason,
                                      f"malformed HTTP request: {errors.shorten(str(error.body))}")
        elif status == 501:
            # waitress's answer to a Transfer-Encoding other than chunked: HTTP's
            # status for a coding the server lacks, but the request is what to change.
            problem = errors.ApiError(status, "bad_request", error.reason,
                                      f"{errors.shorten(str(error.body))} Send the body with Content-Length, "
                                      "or with Transfer-Encoding: chunked")
        else:
            problem = errors.ApiError(status, "internal_error", error.reason,
                                      "the HTTP server failed to read the request")
        _, text, _ = errors.render_problem(problem)
        body = text.encode("utf-8")
        self.status = f"{status} {error.reason}"
        self.response_headers.append(("Content-Type", errors.PROBLEM_MIMETYPE))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class BoundedChannel(HTTPChannel):
    """waitress's channel, with a deadline for arriving requests and for clients that do not read."""

    error_task_class = ProblemErrorTask
    _request_began = 0.0

    def received(self, data: bytes) -> bool:
        # Called on the event loop with every chunk read; a request trickled
        # a byte at a time comes here for every byte, so its deadline is seen.
        if self.request is None:
            self._request_began = time.monotonic()
        accepted = super().received(data)
        if self.request is not None and time.monotonic() - self._request_began > self.adj.channel_timeout:
            logger.info("closing a connection from %s whose request did not arrive within %d s",
                        self.addr[0] if self.addr else "?", self.adj.channel_timeout)
            self.will_close = True
        elif self.request is None:
            self._request_began = time.monotonic()
        return accepted

    def _flush_outbufs_below_high_watermark(self) -> None:
        # waitress's version waits without end while the client reads nothing.
        if self.total_outbufs_len <= self.adj.outbuf_high_watermark:
            return
        with self.outbuf_lock:
            _, exception = self._flush_exception(self._flush_some, do_close=False)
            if exception:
                self.server.pull_trigger()
                self.outbuf_lock.wait(self.adj.channel_timeout)
                return
            waiting = self.total_outbufs_len
            deadline = time.monotonic() + self.adj.channel_timeout
            while self.connected and self.total_outbufs_len > self.adj.outbuf_high_watermark:
                self.server.pull_trigger()
                self.outbuf_lock.wait(min(1.0, max(0.0, deadline - time.monotonic())))
                if self.total_outbufs_len < waiting:  # the client took some: it is slow, not gone
                    waiting, deadline = self.total_outbufs_len, time.monotonic() + self.adj.channel_timeout
                elif time.monotonic() >= deadline:
                    logger.info("closing a connection from %s that took no output for %d s",
                                self.addr[0] if self.addr else "?", self.adj.channel_timeout)
                    # As waitress's own cancel(): the task stops at its next write, the loop closes the socket.
                    self.connected = False
                    self.will_close = True
                    self.server.pull_trigger()
                    return
