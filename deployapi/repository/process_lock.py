"""The write lock between processes: an exclusive ``flock`` on the database file, taken before ``BEGIN IMMEDIATE``.

SQLite's own lock keeps the writers of several processes apart, but a
writer that finds it taken waits in SQLite's busy handler, which sleeps
1, 2, 5, 10 … up to 100 ms between attempts, while the writers of the
process holding the lock follow each other without a gap: the other
process's writes wait tens of milliseconds and more, some for seconds.
The workers of ``deployapi serve --workers N`` queue here first
(docs/adr/0020-pre-fork-workers-and-the-write-lock-between-them.md).

The lock is ``flock(2)`` on a descriptor of the database file itself, of
this process's own (a ``flock`` belongs to the open file, so the threads of
one process share it: they queue on Database's thread lock first).  No file
is added beside the database, and the kernel releases the lock of a process
that dies.  SQLite locks with ``fcntl(2)``, which on Linux is independent of
``flock``; but every ``fcntl`` lock a process holds on a file goes when the
process closes any descriptor of that file, so this one is closed only after
every SQLite connection of the process is (:meth:`close`, from Database.close).

Writers take turns.  A write holds the lock only until its BEGIN IMMEDIATE
has SQLite's lock (Database._begin_in_turn), so the holder is always the one
writer waiting for SQLite's lock, and the process writing now cannot take it
for its next write until another process's writer, already waiting, has had
its turn.  A write that finds the lock taken hands the wait to this
process's waiting thread, which blocks in ``flock`` and is woken by the
kernel as soon as it is let go.  The writer waits for the thread's word for
at most its timeout (``flock`` has none), so a write still gives up after the
busy timeout (503 ``database_busy``), even when the holder is a stopped
process.

The lock only shortens waits: SQLite's lock, taken next, still decides,
among others for the processes that do not take this one (``deployapi
relay``, a ``sqlite3`` shell).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading


class ProcessLock:
    """An exclusive lock on ``path`` shared with other processes, released by :meth:`release` or at exit.

    For one writer at a time per process (Database's thread lock is held around it).
    """

    def __init__(self, path: str):
        self._path = path
        self._open()

    def _open(self) -> None:
        self._pid = os.getpid()
        self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        self._changed = threading.Condition()
        self._wanted = False  # a writer waits for the waiting thread to take the lock for it
        self._granted = False  # the waiting thread took it for that writer
        self._closed = False
        self._waiting: threading.Thread | None = None
        self._idle = True  # whether the waiting thread is outside flock

    def acquire(self, timeout: float) -> bool:
        """Take the lock within ``timeout`` seconds; False if other processes held it all that time."""
        if self._pid != os.getpid():
            # Forked: an inherited descriptor is the same open file as the parent's, and so would
            # hold the same lock, and the parent's waiting thread is not here.  A process of its own
            # needs its own.
            self._open()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        with self._changed:
            self._wanted = True
            if self._waiting is None:
                self._waiting = threading.Thread(target=self._wait_in_kernel, name="deployapi-process-lock",
                                                 daemon=True)
                self._waiting.start()
            self._changed.notify_all()
            taken = self._changed.wait_for(lambda: self._granted, max(timeout, 0))
            self._wanted = self._granted = False
            return taken

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the descriptor: only once the process has no SQLite connection to the file left open."""
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
            # A waiting thread blocked in flock closes it itself when it wakes (a descriptor closed
            # under a blocked call could be reused for another file meanwhile).
            if self._waiting is None or self._idle:
                os.close(self._fd)

    def _wait_in_kernel(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._closed or (self._wanted and not self._granted))
                if self._closed:
                    return
                self._idle = False
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except OSError:
                # Not granted: the writer waiting times out (503), the next one starts a new thread.
                with self._changed:
                    self._idle, self._waiting = True, None
                    if self._closed:
                        os.close(self._fd)
                raise
            else:
                with self._changed:
                    self._idle = True
                    if self._wanted and not self._closed:
                        self._granted = True
                        self._changed.notify_all()
                    else:  # the writer gave up meanwhile, or the database is closing: nobody's now
                        with contextlib.suppress(OSError):
                            fcntl.flock(self._fd, fcntl.LOCK_UN)
                        if self._closed:
                            os.close(self._fd)
                            return
