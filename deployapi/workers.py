"""Several server processes on one listening socket: forked, watched, restarted, stopped (``serve --workers N``).

The parent binds and listens before it forks, so every worker accepts
connections on the same socket (the kernel hands each new connection to one
of the processes waiting in ``accept``), and a connection that arrives while
a worker restarts waits in the socket's backlog.  After the fork the parent
holds no database connection and runs no thread: it only waits, so that a
worker forked later, to replace one that died, starts from a process with
nothing a fork could break (ADR 0020).

What a worker runs is the caller's (``cli.serve``); this module owns the
processes: each worker reports once it can serve (one byte on a pipe), and
the parent

- at start-up waits until every worker has reported, and stops them all and
  exits with the worker's status if one exits first (the app or the server
  could not be built);
- restarts a worker that exits while the server runs, after a pause that
  doubles while the restarted ones die young (RESTART_DELAYS), so that a crash
  loop does not spin;
- on SIGTERM or SIGINT sends SIGTERM to every worker, waits for each to stop
  (at most ``stop_grace`` seconds, then SIGKILL), and returns.

A worker whose parent is gone (killed with SIGKILL) stops as if it had been sent
SIGTERM, rather than go on serving with nobody to restart or stop it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("deployapi")

# The pause before a worker that died is started again: the first, then doubled
# for each restarted worker of the same slot that dies within STABLE_SECONDS, up to the last.
RESTART_DELAYS = (0.5, 30.0)
STABLE_SECONDS = 10.0
# How long the workers have at start-up to build their apps and servers.
START_SECONDS = 60.0
# How often the parent looks at its workers, and a worker whether its parent is still there.
WATCH_SECONDS = 0.1
ORPHAN_CHECK_SECONDS = 1.0

# (slot, ready, stopping): builds and runs one worker, calls ready() once it can serve, returns its exit status
# once ``stopping`` (a list SIGTERM and SIGINT append their numbers to) is not empty and it has stopped.
RunWorker = Callable[[int, Callable[[], None], list[int]], int]


@dataclass
class _Worker:
    slot: int
    pid: int
    started: float
    ready: bool = False


class Supervisor:
    """``count`` worker processes running ``run_worker``, kept running until a signal stops them."""

    def __init__(self, count: int, run_worker: RunWorker, *, stop_grace: float):
        self._count = count
        self._run_worker = run_worker
        self._stop_grace = stop_grace
        self._workers: dict[int, _Worker] = {}  # by pid
        self._delays = [RESTART_DELAYS[0]] * count
        self._due: dict[int, float] = {}  # slot -> when to start it again
        self._stopping: list[int] = []
        self._announced = False
        self._ready_read, self._ready_write = os.pipe()
        os.set_blocking(self._ready_read, False)

    def run(self, on_ready: Callable[[], None]) -> int:
        """Start the workers, call ``on_ready`` once all serve, supervise until a signal; the exit status."""
        signal.signal(signal.SIGTERM, lambda signum, frame: self._stopping.append(signum))
        signal.signal(signal.SIGINT, lambda signum, frame: self._stopping.append(signum))
        try:
            status = self._start()
            if status:
                return status
            if not self._stopping:
                on_ready()
                self._announced = True
                self._supervise()
            return self._stop()
        finally:
            os.close(self._ready_read)
            os.close(self._ready_write)

    # --- the parent --------------------------------------------------------------

    def _start(self) -> int:
        for slot in range(self._count):
            self._fork(slot)
        deadline = time.monotonic() + START_SECONDS
        while not self._stopping and not all(worker.ready for worker in self._workers.values()):
            self._wait_for_reports(WATCH_SECONDS)
            for worker, status in self._reap():
                code = _exit_code(status)
                logger.error("worker %d (pid %d) could not start: it %s", worker.slot, worker.pid, _describe(status))
                self._stop()
                return code or 1
            if time.monotonic() > deadline:
                logger.error("the workers did not start within %.0f s", START_SECONDS)
                self._stop()
                return 1
        return 0

    def _supervise(self) -> None:
        while not self._stopping:
            self._wait_for_reports(WATCH_SECONDS)
            now = time.monotonic()
            for worker, status in self._reap():
                lived = now - worker.started
                delay = self._delays[worker.slot]
                if lived >= STABLE_SECONDS:
                    delay = 0.0
                    self._delays[worker.slot] = RESTART_DELAYS[0]
                else:
                    self._delays[worker.slot] = min(delay * 2, RESTART_DELAYS[1])
                logger.warning("worker %d (pid %d) %s after %.1f s; starting another in %.1f s",
                               worker.slot, worker.pid, _describe(status), lived, delay)
                self._due[worker.slot] = now + delay
            for slot, due in list(self._due.items()):
                if due <= now and not self._stopping:
                    del self._due[slot]
                    self._fork(slot)

    def _stop(self) -> int:
        """SIGTERM to every worker, then wait for each; SIGKILL for those still there after the grace."""
        for worker in self._workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        if self._stopping:
            logger.info("stopping: %d worker(s) answering the requests they have (signal %d)",
                        len(self._workers), self._stopping[0])
        deadline = time.monotonic() + self._stop_grace
        clean = True
        while self._workers:
            for worker, status in self._reap():
                if _exit_code(status) != 0:
                    clean = False
                    logger.warning("worker %d (pid %d) %s while stopping", worker.slot, worker.pid, _describe(status))
            if self._workers and time.monotonic() > deadline:
                for worker in self._workers.values():
                    logger.warning("worker %d (pid %d) did not stop within %.0f s: killing it",
                                   worker.slot, worker.pid, self._stop_grace)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGKILL)
                clean = False
                deadline = float("inf")
            time.sleep(WATCH_SECONDS / 2)
        return 0 if clean else 1

    def _fork(self, slot: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._be_worker(slot)  # never returns
        self._workers[pid] = _Worker(slot, pid, time.monotonic())

    def _wait_for_reports(self, timeout: float) -> None:
        readable, _, _ = select.select([self._ready_read], [], [], timeout)
        if not readable:
            return
        with contextlib.suppress(BlockingIOError):
            for pid_text in os.read(self._ready_read, 4096).split():
                worker = self._workers.get(int(pid_text))
                if worker is not None and not worker.ready:
                    worker.ready = True
                    # The first workers are announced together (on_ready), a restarted one by itself.
                    if self._announced:
                        logger.info("worker %d (pid %d) serving", worker.slot, worker.pid)

    def _reap(self) -> list[tuple[_Worker, int]]:
        """The workers that have exited, with their wait status; forgotten from now on."""
        ended = []
        while self._workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            worker = self._workers.pop(pid, None)
            if worker is not None:
                ended.append((worker, status))
        return ended

    # --- a worker ----------------------------------------------------------------

    def _be_worker(self, slot: int) -> None:
        code = 1
        try:
            os.close(self._ready_read)
            # The list the parent's signal handlers fill, copied by the fork: a signal that
            # arrives before the worker runs is not lost.  The parent forks only while it is empty.
            stopping = self._stopping
            parent = os.getppid()
            threading.Thread(target=_watch_parent, args=(parent, stopping), name="deployapi-parent-watch",
                             daemon=True).start()
            code = self._run_worker(slot, self._report_ready, stopping)
        except BaseException:  # noqa: BLE001 (whatever it was, the worker ends with a traceback and status 1)
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            # Never back into the parent's code: no finally blocks, no atexit handlers of the parent.
            os._exit(code)

    def _report_ready(self) -> None:
        os.write(self._ready_write, f"{os.getpid()}\n".encode())


def _watch_parent(parent: int, stopping: list[int]) -> None:
    while not stopping:
        if os.getppid() != parent:
            logger.warning("the parent process (pid %d) is gone: stopping", parent)
            stopping.append(signal.SIGTERM)
            return
        time.sleep(ORPHAN_CHECK_SECONDS)


def _exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"was killed by signal {-code} ({name})"
    return f"exited with status {code}"
