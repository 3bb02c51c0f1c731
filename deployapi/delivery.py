"""The deliverer: every event a webhook matches, POSTed to it in event-id order until it answers 2xx.

One :class:`Deliverer` per process that delivers (``deployapi serve`` with a
configuration file that has webhooks, or ``deployapi relay``), and one per
database at a time: a lease in the database (repository/deliveries.py) says
which.  The deliverer that holds it renews it every RENEW_SECONDS; another
one waits, and takes over when the lease is released (a clean stop), when it
expires, or at once when its holder is a process of the same host that no
longer runs.  A request is only sent while the lease has more than the
request's timeout left, so two deliverers are never both sending.

Each webhook has a thread of its own, so at most one request is in flight
per webhook and a receiver that hangs holds up no other webhook.  The thread
reads the events after the webhook's position, sends the ones it matches one
at a time, and after a 2xx moves the position past the event in the database
(the same transaction records the answer).  Anything else (a non-2xx status,
a redirect, which is not followed, a connection error, no whole answer within
the timeout) is retried, the same event again after retry_delay, until it
succeeds: no event is skipped.  Each failed attempt is one log line, with the
webhook's name and the status or error, never its URL's path or secret.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from . import webhooks
from .repository import Deliveries, Lease, Repository, utc_now
from .timestamps import format_timestamp
from .webhooks import Delivery, Webhook

logger = logging.getLogger("deployapi.webhooks")

LEASE_SECONDS = 30.0
RENEW_SECONDS = 5.0
# A request is sent only while the lease has this much left beyond the request's
# timeout: a deliverer paused past its renewal stops sending before another may start.
LEASE_MARGIN_SECONDS = 5.0
# How often a deliverer without the lease looks whether it can take it.
TAKEOVER_POLL_SECONDS = 1.0
# How often a webhook with nothing to send looks for new events written by other
# processes; writes of this process wake it at once (Repository.add_commit_listener).
POLL_SECONDS = 0.5
BATCH = 200
# At a stop, how long requests in flight may take to finish before they are abandoned,
# and how long the threads then have to end.
STOP_GRACE_SECONDS = 5.0
STOP_ABANDON_SECONDS = 2.0
# Of an answer's body, at most this much is read (and then the connection kept for the next request).
MAX_ANSWER_BYTES = 64 * 1024
# After an error of the database itself, the webhook's thread waits this long before it reads again.
DATABASE_RETRY_SECONDS = 1.0
# The part of a CPU that deliveries may take inside ``deployapi serve`` while
# requests come in.  Its requests and the deliverer share one interpreter lock,
# and a server under load has no lock time to spare: whatever the deliverer
# takes, the requests lose (docs/performance.md, "Webhooks", for what this share
# costs and delivers).  deployapi relay runs alone in its process and takes what it needs.
SERVE_SHARE = 0.1
PAUSE_AFTER_CPU_SECONDS = 0.01


class Deliverer:
    """Delivers the events of one database to its webhooks, in background threads, while it holds the lease.

    :meth:`start` registers every webhook's position and starts the threads;
    :meth:`stop` ends them (waiting up to a grace period for requests in
    flight, then abandoning them, to be sent again) and releases the lease.
    """

    def __init__(self, repository: Repository, hooks: Sequence[Webhook], *,
                 clock: Callable[[], datetime] = utc_now, wall: Callable[[], float] = time.time,
                 timeout: float = webhooks.TIMEOUT_SECONDS, lease_seconds: float = LEASE_SECONDS,
                 renew_seconds: float = RENEW_SECONDS, poll_seconds: float = POLL_SECONDS, share: float = 1.0,
                 busy: Callable[[], bool] | None = None):
        """``share`` (0 < share <= 1) is the part of one CPU the deliverer's threads may take together
        while ``busy()`` says the process has other work (always, without ``busy``): below 1, each thread
        rests after its work for as long as that work took, scaled.  ``deployapi serve`` gives SERVE_SHARE
        and "a request came in lately", so that delivering never takes the interpreter from its requests
        and an idle server delivers at full speed.  The other arguments replace defaults, for tests."""
        if not 0 < share <= 1:
            raise ValueError("share must be above 0 and at most 1")
        if lease_seconds <= timeout + LEASE_MARGIN_SECONDS + renew_seconds:
            raise ValueError("the lease must outlast a renewal interval plus a request's timeout and margin")
        self._repository = repository
        self._deliveries = Deliveries(repository)
        self.webhooks = tuple(hooks)
        self._clock = clock
        self._wall = wall
        self._timeout = timeout
        self._lease_seconds = lease_seconds
        self._renew_seconds = renew_seconds
        self._poll_seconds = poll_seconds
        # Each webhook's thread gets its part of the share.
        self._pause_factor = 0.0 if share >= 1 else max(len(hooks), 1) / share - 1
        self._busy = busy or (lambda: True)
        self.host = _host_identity()
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._stopping = threading.Event()
        self._holding = threading.Event()
        self._lease_until = 0.0
        # Counts the terms this deliverer held the lease (see _keep_lease).
        self.generation = 0
        self._workers = [_Worker(self, hook) for hook in self.webhooks]
        self._lease_thread = threading.Thread(target=self._keep_lease, name="deployapi-webhooks-lease", daemon=True)

    @property
    def holding(self) -> bool:
        """Whether this deliverer holds the lease (and so is the one delivering)."""
        return self._holding.is_set()

    def start(self) -> None:
        self._deliveries.register([hook.name for hook in self.webhooks], format_timestamp(self._clock()))
        self._repository.add_commit_listener(self._wake_all)
        self._lease_thread.start()
        for worker in self._workers:
            worker.thread.start()

    def request_stop(self) -> None:
        """Begin stopping: no new request is sent; requests in flight go on.  Returns at once."""
        self._stopping.set()
        self._wake_all()

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop delivering: requests in flight have ``grace`` seconds to finish, then are abandoned
        (their events are sent again by the next deliverer).  Releases the lease."""
        self.request_stop()
        deadline = time.monotonic() + grace
        for worker in self._workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        for worker in self._workers:
            if worker.thread.is_alive():
                logger.info("webhook %s: abandoning the request in flight at stop; it will be sent again",
                            worker.hook.name)
                worker.sender.abort()
        # One deadline for all: a thread stuck where an abort cannot reach (a DNS lookup) must not make
        # the stop take seconds per webhook.
        deadline += STOP_ABANDON_SECONDS
        for worker in self._workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        self._lease_thread.join(max(0.0, deadline - time.monotonic()))
        self._holding.clear()
        # Whether or not this deliverer thinks it holds the lease (a renewal may have failed): the
        # statement is fenced by the holder, and a released lease lets another take over at once.
        with contextlib.suppress(Exception):
            self._deliveries.release_lease(self.holder)

    # --- the lease ----------------------------------------------------------------

    def _keep_lease(self) -> None:
        waiting_for = None
        while not self._stopping.is_set():
            now = self._wall()
            candidate = Lease(self.holder, self.host, os.getpid(), format_timestamp(self._clock()),
                              now + self._lease_seconds)
            try:
                lease = self._deliveries.take_lease(candidate, now, self._holder_gone)
            except Exception as error:  # the database refused (busy, a storage fault): try again soon
                # Not a lost lease: it has most of its time left, and _may_send stops new
                # requests once it has too little; aborting those in flight would only repeat them.
                logger.warning("webhooks: cannot renew the delivery lease: %s", error)
                self._stopping.wait(min(self._renew_seconds, TAKEOVER_POLL_SECONDS))
                continue
            if lease.holder == self.holder:
                self._lease_until = lease.expires_at
                if not self._holding.is_set():
                    logger.info("webhooks: delivering to %d webhook(s) (%s)", len(self.webhooks),
                                ", ".join(hook.name for hook in self.webhooks))
                    # A new term: batches read in an earlier one are stale (another deliverer may have
                    # moved the positions meanwhile), and their threads read their positions again.
                    self.generation += 1
                    self._holding.set()
                    self._wake_all()
                self._stopping.wait(self._renew_seconds)
                continue
            if self._holding.is_set():
                # Paused past the lease's expiry, and someone else took it: stop sending now.
                logger.warning("webhooks: the delivery lease went to %s; stopping deliveries", lease.holder)
                self._holding.clear()
                for worker in self._workers:
                    worker.sender.abort()
            if lease.holder != waiting_for:
                waiting_for = lease.holder
                logger.info("webhooks: waiting; deliverer %s holds the delivery lease", lease.holder)
            self._stopping.wait(TAKEOVER_POLL_SECONDS)

    def _holder_gone(self, lease: Lease) -> bool:
        return lease.host == self.host and lease.pid != os.getpid() and not _process_exists(lease.pid)

    def lease_left(self) -> float:
        """Seconds the lease has left, for a request about to be sent (0 when not holding it)."""
        return self._lease_until - self._wall() if self._holding.is_set() else 0.0

    def _may_send(self) -> bool:
        return self.lease_left() > self._timeout + LEASE_MARGIN_SECONDS

    def _wake_all(self) -> None:
        for worker in self._workers:
            worker.wake.set()


class _Worker:
    """One webhook's thread: its position, its retries, its connection."""

    def __init__(self, deliverer: Deliverer, hook: Webhook):
        self.deliverer = deliverer
        self.hook = hook
        self.sender = Sender(hook.url, deliverer._timeout)
        self.wake = threading.Event()
        self._cpu_mark = 0.0
        self.thread = threading.Thread(target=self.run, name=f"deployapi-webhook-{hook.name}", daemon=True)

    def run(self) -> None:
        stopping = self.deliverer._stopping
        self._cpu_mark = time.thread_time()
        try:
            while not stopping.is_set():
                try:
                    self._deliver_next()
                    self._pause()
                except Exception:  # the database (busy, a storage fault) or a bug: never end the thread for it
                    logger.exception("webhook %s: delivery interrupted; trying again", self.hook.name)
                    stopping.wait(DATABASE_RETRY_SECONDS)
        finally:
            self.sender.close()

    def _deliver_next(self) -> None:
        deliverer, hook = self.deliverer, self.hook
        if not self._wait_until(deliverer._may_send):
            return
        generation = deliverer.generation
        self.wake.clear()  # before reading: a commit after the read wakes the wait below
        position = deliverer._deliveries.position(hook.name)
        batch = deliverer._deliveries.events_after(position.delivered_through, BATCH)
        if not batch:
            self.wake.wait(deliverer._poll_seconds)
            return
        matching = [item.event for item in batch if hook.matches(item.event.type, item.service, item.environment)]
        if not matching:
            # Nothing here for this webhook: the position passes these events, so they are not read again.
            deliverer._deliveries.record_delivered(hook.name, batch[-1].event.id, deliverer.holder, None)
            return
        context = deliverer._repository.event_context(matching)
        failed = position.failed_attempts
        due = _instant(position.next_attempt_at)
        if due is not None:
            # Recorded under a clock that ran ahead, it could be a day away: never more than the longest back-off.
            due = min(due, deliverer._wall() + hook.max_backoff_seconds)
        self.sender.rearm()
        for event in matching:
            deployment, first_success = context[event.id]
            if not self._deliver(webhooks.delivery(hook, event, deployment, first_success=first_success),
                                 failed, due, generation):
                return
            failed, due = 0, None

    def _deliver(self, delivery: Delivery, failed: int, due: float | None, generation: int) -> bool:
        """Send ``delivery`` until a 2xx.  False when stopped, or when the lease was lost or is too short
        to send now, or this batch belongs to an earlier term of the lease: the caller reads the
        position again (so an event another deliverer acknowledged meanwhile is not sent again)."""
        deliverer, hook = self.deliverer, self.hook
        while True:
            if due is not None and deliverer._stopping.wait(max(0.0, due - deliverer._wall())):
                return False
            if deliverer._stopping.is_set() or not deliverer._may_send() or deliverer.generation != generation:
                return False
            at = deliverer._clock()
            answer = self.sender.send(delivery.body, delivery.headers(int(deliverer._wall())))
            self._pause()
            if answer.ok:
                if not deliverer._deliveries.record_delivered(hook.name, delivery.event_id, deliverer.holder,
                                                              format_timestamp(at)):
                    return False
                if failed:
                    logger.info("webhook %s: event %d delivered after %d failed attempt(s)", hook.name,
                                delivery.event_id, failed)
                return True
            if deliverer._stopping.is_set() or not deliverer.holding or deliverer.generation != generation:
                return False  # abandoned: the next deliverer sends it again
            failed += 1
            delay = webhooks.retry_delay(failed, hook.max_backoff_seconds)
            due = deliverer._wall() + delay
            next_at = datetime.fromtimestamp(due, timezone.utc)
            logger.warning("webhook %s: event %d not delivered (attempt %d): %s; next attempt in %g s",
                           hook.name, delivery.event_id, failed, answer.error, delay)
            if not deliverer._deliveries.record_failure(hook.name, failed, answer.error, format_timestamp(at),
                                                        format_timestamp(next_at), deliverer.holder):
                return False

    def _pause(self) -> None:
        """Keep to this thread's share of a CPU: rest in proportion to the CPU used since the last rest."""
        if self.deliverer._pause_factor:
            used = time.thread_time() - self._cpu_mark
            # A few milliseconds of work, then one longer rest: a thread woken after
            # every event finds its caches cold each time, which costs more than the
            # event's own work.
            if used >= PAUSE_AFTER_CPU_SECONDS:
                if self.deliverer._busy():
                    self.deliverer._stopping.wait(used * self.deliverer._pause_factor)
                self._cpu_mark = time.thread_time()

    def _wait_until(self, ready: Callable[[], bool]) -> bool:
        """Wait until ``ready()``; False when stopping first."""
        stopping = self.deliverer._stopping
        while not ready():
            if stopping.wait(0.2):
                return False
        return not stopping.is_set()


def _instant(timestamp: str | None) -> float | None:
    if timestamp is None:
        return None
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


# --- HTTP --------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """How one attempt ended: a status (any, 2xx or not), or an error before one arrived."""

    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Sender:
    """POSTs to one URL over a kept-alive connection, each request bounded by one deadline in all.

    ``timeout`` bounds the whole request: connecting, sending, and receiving the
    status, the headers and up to MAX_ANSWER_BYTES of the body.  A socket
    timeout alone bounds each read, so a receiver trickling a byte at a time
    would hold a request for ever; here every read and write is given only
    what is left of the deadline.  Redirects are not followed (http.client
    never does).  Not thread-safe, except :meth:`abort`.
    """

    def __init__(self, url: str, timeout: float):
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._context = _tls_context() if self._https else None
        self._connection: _Connection | None = None
        self._aborted = False

    def send(self, body: bytes, headers: dict[str, str]) -> Answer:
        if self._aborted:
            return Answer(error="abandoned (the deliverer is stopping or lost its lease)")
        deadline = time.monotonic() + self._timeout
        reused = self._connection is not None
        try:
            return self._exchange(body, headers, deadline)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as error:
            self.close()
            if not reused or self._aborted:
                return Answer(error=_describe(error, self._timeout))
        except Exception as error:
            self.close()
            return Answer(error=_describe(error, self._timeout))
        # A kept-alive connection the receiver had closed meanwhile: once more on a new one.
        try:
            return self._exchange(body, headers, deadline)
        except Exception as error:
            self.close()
            return Answer(error=_describe(error, self._timeout))

    def _exchange(self, body: bytes, headers: dict[str, str], deadline: float) -> Answer:
        if self._connection is None:
            self._connection = _Connection(self._host, self._port, self._context)
        connection = self._connection
        connection.deadline = deadline
        connection.request("POST", self._target, body=body, headers=headers)
        response = connection.getresponse()
        content = response.read(MAX_ANSWER_BYTES)
        if response.will_close or not response.isclosed() or len(content) >= MAX_ANSWER_BYTES:
            self.close()
        if 300 <= response.status < 400:
            return Answer(response.status, f"HTTP {response.status} {response.reason} (redirects are not followed)")
        if not 200 <= response.status < 300:
            return Answer(response.status, f"HTTP {response.status} {response.reason}".strip())
        return Answer(response.status)

    def rearm(self) -> None:
        """Send again after an abort: the worker's call, when it starts a batch in a new term of the lease."""
        self._aborted = False

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def abort(self) -> None:
        """From another thread: end the request in flight now (it fails, to be retried)."""
        # Before the shutdown: the error it causes must not pass for a kept-alive connection gone stale.
        self._aborted = True
        connection = self._connection
        sock = connection.sock if connection is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _DeadlineMixin:
    """Every read and write of the socket gets what is left of ``deadline`` (time.monotonic) as its timeout."""

    deadline: float | None = None

    def _arm(self) -> None:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request's deadline passed")
            self.settimeout(left)  # type: ignore[attr-defined]

    def recv_into(self, *args, **kwargs):
        self._arm()
        return super().recv_into(*args, **kwargs)  # type: ignore[misc]

    def recv(self, *args, **kwargs):
        self._arm()
        return super().recv(*args, **kwargs)  # type: ignore[misc]

    def sendall(self, *args, **kwargs):
        self._arm()
        return super().sendall(*args, **kwargs)  # type: ignore[misc]

    def send(self, *args, **kwargs):
        self._arm()
        return super().send(*args, **kwargs)  # type: ignore[misc]


class _DeadlineSocket(_DeadlineMixin, socket.socket):
    pass


class _DeadlineSSLSocket(_DeadlineMixin, ssl.SSLSocket):
    pass


class _Connection(http.client.HTTPConnection):
    """http.client's connection on a deadline socket, with TLS (verified as the system's defaults say) for https."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None):
        super().__init__(host, port)
        self._tls = context
        self.deadline = time.monotonic()

    def connect(self) -> None:
        sock = _open_socket(self.host, self.port, self.deadline)
        if self._tls is not None:
            # The handshake runs inside wrap_socket on the socket's own timeout: what is left, not what was.
            sock.settimeout(max(self.deadline - time.monotonic(), 0.001))
            sock = self._tls.wrap_socket(sock, server_hostname=self.host)
            sock.deadline = self.deadline
        self.sock = sock

    def request(self, *args, **kwargs) -> None:
        if self.sock is not None:
            self.sock.deadline = self.deadline
        super().request(*args, **kwargs)


def _open_socket(host: str, port: int, deadline: float) -> socket.socket:
    error: OSError | None = None
    addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for index, (family, kind, proto, _, address) in enumerate(addresses):
        sock = _DeadlineSocket(family, kind, proto)
        try:
            # An equal part of what is left for each address still to try: an address that drops
            # packets (a broken IPv6 route) must not take the whole deadline from one that answers.
            sock.settimeout(max((deadline - time.monotonic()) / (len(addresses) - index), 0.001))
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.deadline = deadline
            return sock
        except OSError as failure:
            error = failure
            sock.close()
    raise error or OSError(f"no address for {host}")


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.sslsocket_class = _DeadlineSSLSocket
    return context


def _describe(error: BaseException, timeout: float) -> str:
    """A short, secret-free account of why an attempt got no answer."""
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error.reason or error}"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host: {error.strerror}"
    if isinstance(error, http.client.RemoteDisconnected):
        return "the receiver closed the connection without answering"
    if isinstance(error, http.client.HTTPException):
        return f"not an HTTP answer ({type(error).__name__})"
    if isinstance(error, OSError):
        return error.strerror or str(error) or type(error).__name__
    return f"{type(error).__name__}: {error}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    # A killed process that its parent has not reaped yet (no init in a container,
    # a shell that does not wait) still answers kill(0): Linux says it is a zombie.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _host_identity() -> str:
    """This host, and its process-id namespace: a pid only means something within both."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}/{namespace}"
