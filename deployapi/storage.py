"""Whether the database file can still keep what the API acknowledges.

A server that answers 201 for writes that are not kept is worse than one that
answers 503.  Two kinds of fault are watched here, for the Repository:

- **The file at the path is no longer the file that is open.**  SQLite keeps
  working on open descriptors when the file or its directory is removed, or
  another file is moved into its place: every write then lands in a file nobody
  will ever open again.  Before each commit the path is looked up
  (``os.stat``) and compared with the device and inode recorded at start-up.
  The same for the ``-wal`` beside it, which holds every commit since the last
  checkpoint: removed while the server runs, it takes those commits and every
  later one with it.
- **The storage refuses or damages writes**: disk full, read-only file system,
  I/O errors, a corrupt or unreadable file.  SQLite reports those with their
  own result codes (:data:`STORAGE_ERRORS`).

Either makes a :class:`StorageFault` (503 ``storage_unavailable`` with
``Retry-After``).  The first fault, and a change of reason, are logged as one
WARNING line; the recovery (a write that commits again) as one INFO line: no
traceback per request.  While a fault lasts, ``/healthz`` answers 503.  A
damaged file does not heal when a write succeeds: that fault lasts until the
server is restarted (after ``deployapi check`` and, if need be, a restore).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time

logger = logging.getLogger("deployapi")

# The same fault is logged again at most this often: a disk with room for
# small writes but not for large ones flips between failing and recovering.
REPEAT_LOG_SECONDS = 60.0

# SQLite's primary result codes (the low byte of an extended code) that mean
# the storage, not the request, failed.  DAMAGE: the ones a later successful
# write does not undo.
STORAGE_ERRORS = {
    sqlite3.SQLITE_PERM: "permission denied",
    sqlite3.SQLITE_READONLY: "read-only",
    sqlite3.SQLITE_IOERR: "I/O error",
    sqlite3.SQLITE_CORRUPT: "damaged database file",
    sqlite3.SQLITE_FULL: "disk full",
    sqlite3.SQLITE_CANTOPEN: "cannot open the database file",
    sqlite3.SQLITE_NOTADB: "not a database file",
}
DAMAGE = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


class StorageFault(RuntimeError):
    """The database cannot keep writes now: nothing was written by the request that met this."""


def storage_reason(error: BaseException) -> str | None:
    """What storage failure an SQLite error reports, or None when it is not one."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return None
    return STORAGE_ERRORS.get(code & 0xFF)


def is_damage(error: BaseException | None) -> bool:
    """Whether an SQLite error says the file itself is damaged."""
    return (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF in DAMAGE


class FileWatch:
    """The health of one database file: is it still the one at its path, and did the last write fail?"""

    def __init__(self, path: str):
        self.path = path
        self.wal_path = path + "-wal"
        self._identity = _identity(path)
        # The -wal this process writes to, learnt at the first commit while
        # connections are open.  SQLite removes the -wal when the last
        # connection closes and starts a new one after that, so it is forgotten
        # only then: while one stays open, a new -wal is another file.
        self._wal_identity: tuple[int, int] | None = None
        self._connections = 0
        # Held while a connection is opened or closed, with the count: SQLite
        # deletes the -wal when the last connection holding the file closes,
        # and one opened meanwhile would find it gone, or start a new one
        # while the old is still the one known here.  Reentrant: a connection
        # collected during an opening closes on the same thread.
        self.connections_changing = threading.RLock()
        self._fault: str | None = None
        self._damage: str | None = None  # a lasting fault: until restart
        self._logged: dict[str, float] = {}  # reason -> when last logged
        self._lock = threading.Lock()

    @property
    def fault(self) -> str | None:
        """Why writes are failing now, or None."""
        return self._fault

    def verify_undamaged(self) -> None:
        """:raises StorageFault: when a lasting fault (a damaged file, a lost -wal) was found since start-up."""
        if self._damage is not None:
            raise StorageFault(self._damage)

    def verify_path(self) -> None:
        """:raises StorageFault: when the path no longer names the file that is open."""
        try:
            found = _identity(self.path)
        except FileNotFoundError:
            raise self.failed(f"{self.path} no longer exists (removed, or its directory or volume gone) "
                              "while deployapi has it open", lasting=True) from None
        except OSError as error:
            raise self.failed(f"{self.path} cannot be looked up: {error.strerror}") from None
        if found != self._identity:
            raise self.failed(f"{self.path} is another file now (replaced while deployapi had it open)",
                              lasting=True)

    def verify_wal(self, *, learn: bool = True) -> None:
        """:raises StorageFault: when the -wal was removed or replaced.

        Inside a write transaction (the -wal is open then), ``learn`` records it
        when it is not known yet; outside one, pass ``learn=False``: only a -wal
        already known is checked.
        """
        if not learn and self._wal_identity is None:
            return
        try:
            found = _identity(self.wal_path)
        except FileNotFoundError:
            raise self.failed(f"{self.wal_path} no longer exists (removed while deployapi had it open); stop "
                              "deployapi cleanly (SIGTERM) so that it copies what the removed -wal holds into the "
                              "database, then run deployapi check", lasting=True) from None
        except OSError as error:
            raise self.failed(f"{self.wal_path} cannot be looked up: {error.strerror}") from None
        if self._wal_identity is None:
            self._wal_identity = found
        elif found != self._wal_identity:
            raise self.failed(f"{self.wal_path} is another file now (replaced while deployapi had it open); stop "
                              "deployapi cleanly, then run deployapi check", lasting=True)

    def connection_opened(self) -> None:
        """A connection was opened and has read the file (call under ``connections_changing``)."""
        with self._lock:
            self._connections += 1

    def close_connection(self, conn: sqlite3.Connection) -> None:
        """Close ``conn``; after the last one, the -wal may be new at the next commit."""
        with self.connections_changing:
            conn.close()
            with self._lock:
                self._connections -= 1
                if self._connections <= 0:
                    self._connections, self._wal_identity = 0, None

    def failed(self, reason: str, cause: BaseException | None = None, *, lasting: bool = False) -> StorageFault:
        """Record a fault (logged when it is new, at most once a minute per reason) and return the error to raise.

        ``lasting``: a later successful write does not end it (nor does it for a damaged file); a restart does.
        """
        now = time.monotonic()
        if is_damage(cause):
            reason += ": run deployapi check, restore from a backup if it fails, and restart"
            lasting = True
        with self._lock:
            self._fault = reason
            if lasting:
                self._damage = reason
            log = now - self._logged.get(reason, -REPEAT_LOG_SECONDS) >= REPEAT_LOG_SECONDS
            if log:
                self._logged[reason] = now
        if log:
            detail = f" ({cause})" if cause is not None else ""
            until = "deployapi is restarted" if lasting else "one succeeds"
            logger.warning("storage fault: %s%s; writes are refused with 503 until %s", reason, detail, until)
        return StorageFault(reason)

    def write_succeeded(self) -> None:
        """A write committed: the storage takes writes again."""
        if self._fault is None:  # the usual case: no lock
            return
        now = time.monotonic()
        with self._lock:
            was, self._fault = self._fault, None
            log = was is not None and now - self._logged.get("", -REPEAT_LOG_SECONDS) >= REPEAT_LOG_SECONDS
            if log:
                self._logged[""] = now
        if log:
            logger.info("storage recovered: a write committed again (after: %s)", was)


def _identity(path: str) -> tuple[int, int]:
    found = os.stat(path)
    return found.st_dev, found.st_ino
