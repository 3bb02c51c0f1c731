"""The write lock between processes: an exclusive ``flock`` on the database file, taken before ``BEGIN IMMEDIATE``.

SQLite's own lock keeps the writers of several processes apart, but a
writer that finds it taken waits in SQLite's busy handler, which sleeps
1, 2, 5, 10 … up to 100 ms between attempts: a process whose writes queue
behind another's sees waits of tens of milliseconds and more, while the
writes of the process holding the lock follow each other without a gap.
``deployapi serve --workers N`` puts its writers in this queue first
(docs/adr/0019-pre-fork-workers-and-the-write-lock-between-them.md).

The lock is ``flock(2)`` on a descriptor of the database file itself, of
this process's own (a ``flock`` belongs to the open file, so threads of
one process share it: they queue on Database's thread lock first).  No
file is added beside the database, and the kernel releases the lock of a
process that dies.  SQLite locks with ``fcntl(2)``, which on Linux is
independent of ``flock``; but every ``fcntl`` lock a process holds on a
file goes when the process closes any descriptor of that file, so this
one is closed only after every SQLite connection of the process is
(:meth:`close`, from Database.close).

Waiting polls with ``LOCK_NB``: ``flock`` has no timeout, and a write
must give up after the busy timeout (503 ``database_busy``), even when
the holder is a stopped process.  The lock only shortens waits: SQLite's
lock, taken next, still decides, for the processes that do not take this
one too (``deployapi relay``, a ``sqlite3`` shell).
"""

from __future__ import annotations

import fcntl
import os
import time

# Between two attempts: short at first, for a lock held for one write
# (about a millisecond); longer once the holder is evidently slower.
FIRST_PAUSE_SECONDS = 0.0001
LONGEST_PAUSE_SECONDS = 0.001


class ProcessLock:
    """An exclusive lock on ``path`` shared with other processes, released by :meth:`release` or at exit."""

    def __init__(self, path: str):
        self._path = path
        self._pid = os.getpid()
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def acquire(self, timeout: float) -> bool:
        """Take the lock within ``timeout`` seconds; False if another process held it all that time."""
        if self._pid != os.getpid():
            # Forked: an inherited descriptor is the same open file as the parent's,
            # and so would hold the same lock.  A process of its own needs its own.
            self._fd, self._pid = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC), os.getpid()
        deadline = time.monotonic() + timeout
        pause = FIRST_PAUSE_SECONDS
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, LONGEST_PAUSE_SECONDS)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the descriptor: only once the process has no SQLite connection to the file left open."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
