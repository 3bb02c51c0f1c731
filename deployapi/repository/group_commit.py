"""Group commit: the writes of a process that wait for the database, committed several to one transaction.

Most of a write's time under the write lock is its COMMIT: the WAL frames of
every page it changed, then an fsync (``synchronous = FULL``).  Writes that
queue behind one another change many of the same pages (the ends of the
time-ordered indexes, the event table, the chain's head), so committing them
together writes those pages once and waits for the disk once (ADR 0022).

A write joins the queue; if no thread is leading, its own thread leads: it
takes every write queued so far as one *group*, has the database run and
commit it (``commit_group``), wakes their threads, and hands the lead to the
first write that queued meanwhile, then returns its own outcome.  Waiting
threads sleep on a lock of their own and are woken once, with their outcome
or with the lead, so a burst costs no polling and no thundering herd.  A
group is at most as large as the number of writes the Database lets wait at
once (its writer slots: ``deployapi serve`` has three).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

# A write's states, changed only under WriteQueue._lock.
_WAITING = "waiting"  # queued, not taken yet
_LEAD = "lead"  # queued, and handed the lead: its thread runs the next group
_TAKEN = "taken"  # in a group that is being run
_DONE = "done"  # outcome set

_NOT_RUN = object()


class QueuedWrite:
    """One write: what it runs, when it began waiting, and (once done) its result or its error."""

    __slots__ = ("operation", "started", "result", "error", "_state", "_wake")

    def __init__(self, operation: Callable[[Any], Any], started: float):
        self.operation = operation
        self.started = started
        self.result: Any = _NOT_RUN
        self.error: BaseException | None = None
        self._state = _WAITING
        # Held until the write's thread is to wake (outcome set, or the lead handed over).
        self._wake = threading.Lock()
        self._wake.acquire()

    def reset(self) -> None:
        """Forget the outcome of a run whose transaction was not committed: the write is to run again."""
        self.result, self.error = _NOT_RUN, None

    def outcome(self) -> Any:
        if self.error is not None:
            error, self.error = self.error, None  # raised once, in the write's own thread
            raise error
        if self.result is _NOT_RUN:  # the group was interrupted before this write's turn
            raise RuntimeError("the write was not run: the group it was in was interrupted")
        return self.result


class TimedOut(Exception):
    """A write waited its whole time in the queue without being taken into a group: it was left out of every one."""


class WriteQueue:
    """The writes of one Database waiting to be committed, and whose thread leads.

    ``commit_group(writes)`` runs a group and sets every write's outcome
    (result or error), never raising; it is called on the leading thread,
    one group at a time.
    """

    def __init__(self, commit_group: Callable[[list[QueuedWrite]], None]):
        self._commit_group = commit_group
        self._lock = threading.Lock()
        self._queued: deque[QueuedWrite] = deque()
        self._leading = False

    def waiting(self) -> int:
        """How many writes are queued and not taken into a group yet."""
        with self._lock:
            return len(self._queued)

    def run(self, operation: Callable[[Any], Any], started: float, deadline: float,
            clock: Callable[[], float]) -> Any:
        """Run ``operation`` in the next group and return its result (or raise its error).

        :raises TimedOut: ``deadline`` (a ``clock`` reading) passed while the write still waited to be taken.
        """
        write = QueuedWrite(operation, started)
        with self._lock:
            self._queued.append(write)
            lead = not self._leading
            if lead:
                write._state = _LEAD
                self._leading = True
        if not lead:
            self._wait(write, deadline, clock)
        if write._state == _LEAD:
            self._lead()
        return write.outcome()

    def _wait(self, write: QueuedWrite, deadline: float, clock: Callable[[], float]) -> None:
        """Sleep until the write is done or handed the lead; leave the queue at ``deadline`` if still waiting."""
        if write._wake.acquire(timeout=max(deadline - clock(), 0)):
            return
        with self._lock:
            if write._state == _WAITING:
                self._queued.remove(write)
                raise TimedOut()
        # Taken into a group or handed the lead just now: the wake is on its way.
        write._wake.acquire()

    def _lead(self) -> None:
        """Run everything queued as one group, then hand the lead to the first write queued since (or give it up)."""
        with self._lock:
            group = list(self._queued)
            self._queued.clear()
            for write in group:
                write._state = _TAKEN
        try:
            self._commit_group(group)
        finally:
            with self._lock:
                for write in group:
                    write._state = _DONE
                following = self._queued[0] if self._queued else None
                if following is None:
                    self._leading = False
                else:
                    following._state = _LEAD
            # Every wake is held here (since the write was made, or again since its thread woke
            # to lead): released once for each write of the group, the leader's own included.
            for write in group:
                write._wake.release()
            if following is not None:
                following._wake.release()
