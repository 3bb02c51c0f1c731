"""Connections and transactions: a connection per reading thread, one for the writes, BEGIN IMMEDIATE, writer slots.

:class:`Database` opens the file (migrating its schema at start-up), hands each
thread a connection of its own for its reads, runs every write as one ``BEGIN
IMMEDIATE`` transaction on the one connection of the writes, behind this
process's write lock and a bounded number of writer slots, and turns SQLite's
errors into the ones callers handle: DatabaseBusy ("database is locked"),
StorageFault (the storage failed), DatabaseError (the file cannot be used),
DatabaseReadOnly (a write to a database opened read-only).  The queries are the
Repository's, built on it.

Opened with ``read_only=True`` (a replica serving a restored or replicated
copy), it writes nothing to the file, ever: no schema.sql, no migration, no
journal-mode switch, no checkpoint; every connection is SQLite's ``mode=ro``
(through read_only.connect_read_only, so a copy in a directory that refuses
SQLite's ``-shm`` is read too) with ``PRAGMA query_only`` as a second guard,
and :meth:`Database._write` refuses before it takes a connection.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from .. import lifecycle
from ..filesystem import SIDECARS, describe, directory_problem, why_unreadable, why_unwritable
from ..histogram import Histogram, HistogramSnapshot
from ..storage import FileWatch, StorageFault, storage_reason
from .group_commit import QueuedWrite, TimedOut, WriteQueue
from .process_lock import ProcessLock
from .read_only import connect_read_only
from .schema import MIGRATIONS, SCHEMA_VERSION, SchemaTooNew, migrate, schema_sql, too_new_message

logger = logging.getLogger("deployapi")

BUSY_TIMEOUT_MS = 5000
# A write that has waited this long in BEGIN IMMEDIATE waits for another
# process: writes beyond max_writers are then refused at once (see _write).
STUCK_WRITE_SECONDS = 0.25
# A writer holding the process lock tries BEGIN IMMEDIATE again after this
# pause, doubled up to the longest (Database._begin_in_turn).
FIRST_BEGIN_PAUSE_SECONDS = 0.0001
LONGEST_BEGIN_PAUSE_SECONDS = 0.001
# What the health check writes while writes are failing (see ping): twice the
# largest request body, more than a create with its event and indexes writes.
WRITE_PROBE_BYTES = 128 * 1024
# A checkpoint every 1,000 pages (~4 MB) of WAL, SQLite's default.  Until a
# checkpoint copies them into the main file, acknowledged writes live only in
# the -wal (~20 pages a write, so ~50 of them here): the interval bounds what a
# lost or damaged -wal can take with it.  ADR 0007 weighs this against the
# cost, which the server's throughput does not show (docs/performance.md).
WAL_AUTOCHECKPOINT_PAGES = 1000
# After a checkpoint has reset the WAL, SQLite truncates the -wal file to this
# size rather than keeping the largest size it ever reached (a long read holds
# checkpoints back and lets the -wal grow past the interval meanwhile).
JOURNAL_SIZE_LIMIT_BYTES = 8 * 2**20
# The page cache of the writes' connection (_writer_connection), a quarter of
# SQLite's default that every other connection keeps: the pages a write changes
# are the same few edges of each B-tree, and the default would add its 2 MB to a
# process's peak memory for the last few re-reads (docs/performance.md).
WRITER_CACHE_KIB = 512
# Window functions, row values and AS MATERIALIZED: what the queries below use.
MIN_SQLITE = (3, 35, 0)

Clock = Callable[[], datetime]
T = TypeVar("T")

# SQLite's result codes for a file it could not open, create or write, whose reason it does not give.
_FILE_ERRORS = frozenset({sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_IOERR})


# Why a DatabaseBusy was raised (WriteStats.refusals, GET /metrics).
BUSY_SQLITE_LOCK = "sqlite_lock"  # SQLite's lock stayed taken past the busy timeout (another process)
BUSY_PROCESS_QUEUE = "process_queue"  # other writes of this process held the database past the busy timeout
BUSY_WRITERS_STUCK = "writers_stuck"  # max_writers writes wait behind another process: refused at once
BUSY_REASONS = (BUSY_SQLITE_LOCK, BUSY_PROCESS_QUEUE, BUSY_WRITERS_STUCK)

# Upper bounds (seconds) of the write-wait histogram: a write alone waits
# microseconds, one queued behind others about a millisecond each, and none
# longer than the busy timeout.
WRITE_WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class DatabaseBusy(RuntimeError):
    """SQLite stayed locked by another writer for longer than the busy timeout.

    ``reason`` is one of BUSY_REASONS.
    """

    def __init__(self, message: str, reason: str = BUSY_SQLITE_LOCK):
        super().__init__(message)
        self.reason = reason


class WriteStats:
    """How long this database's writes waited for their turn, and how many were refused as busy.

    Thread-safe; kept by the Database for GET /metrics.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waits = Histogram(WRITE_WAIT_BUCKETS)
        self._refusals = dict.fromkeys(BUSY_REASONS, 0)

    def waited(self, seconds: float) -> None:
        with self._lock:
            self._waits.observe(seconds)

    def refused(self, busy: DatabaseBusy) -> DatabaseBusy:
        """Count ``busy`` and return it, to be raised where it was made."""
        with self._lock:
            self._refusals[busy.reason] += 1
        return busy

    def snapshot(self) -> tuple[HistogramSnapshot, dict[str, int]]:
        """The wait histogram, and the refusals by reason."""
        with self._lock:
            return self._waits.snapshot(), dict(self._refusals)


class DatabaseError(RuntimeError):
    """The database file cannot be opened or used (missing directory, not SQLite, read-only)."""


class DatabaseReadOnly(RuntimeError):
    """A write asked of a database this process opened read-only (a replica): nothing was written."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection, began: Callable[[], None] | None = None,
               begin: Callable[[sqlite3.Connection], None] | None = None) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error, the original error kept.

    A failing ROLLBACK never hides the error that caused it; a connection left
    in a transaction is discarded (Database._using; the writes' one rolled back
    first).  ``began`` is called once SQLite's write lock is taken; ``begin``, if
    given, issues the BEGIN IMMEDIATE itself.
    """
    if begin is None:
        conn.execute("BEGIN IMMEDIATE")
    else:
        begin(conn)
    if began is not None:
        began()
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


class Database:
    """One SQLite file: its connections, transactions and health.

    Thread-safe: each thread reads on a connection of its own, opened on its first call,
    and the writes share one.  Call :meth:`close` to close them all.
    """

    def __init__(self, db_path: str | Path, *, clock: Clock = utc_now,
                 busy_timeout_ms: int = BUSY_TIMEOUT_MS, require_existing: bool = False,
                 max_writers: int | None = None, read_only: bool = False, process_lock: bool = False):
        """``max_writers`` bounds the writes in progress or waiting at once (None: no bound): one more
        waits for a slot, or is refused at once with DatabaseBusy when the write in progress is stuck, so
        waiting writers cannot occupy every server thread.  ``read_only``: open an existing database at
        the current schema version without writing to it; every write raises DatabaseReadOnly.  With
        ``process_lock``, a write also takes the lock that the writers of other processes doing the same
        queue on (:class:`ProcessLock`), for processes that write the same file at once (``deployapi
        serve --workers``).

        :raises DatabaseError: the file cannot be used or is from a newer deployapi, or (``require_existing``
            or ``read_only``) there is none, or (``read_only``) its schema is older than this deployapi's.
        """
        self.db_path = str(db_path)
        self.read_only = read_only
        self._resolved = Path(self.db_path).resolve()
        self._uri = self._resolved.as_uri() + "?mode=rw"
        self._clock = clock
        self._busy_timeout_ms = busy_timeout_ms
        self._require_existing = require_existing
        self._writer_slots = _Slots(max_writers) if max_writers else None
        # The writes of Repository.write() queue here and are committed in groups (group_commit.py).
        self._write_queue = WriteQueue(self._commit_group)
        self._max_writers = max_writers
        # One connection per thread that reads, opened on its first call and
        # kept for the next: no pool lock and no set-up per request.  Each is
        # closed by close(), or when its thread ends.  The writes share one.
        self._local = threading.local()
        self._threads: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._threads_lock = threading.Lock()
        # Writers of this process queue here rather than in SQLite's busy
        # handler, which sleeps up to 100 ms between retries and so turns
        # contention into long tail latency.  Other processes on the same file
        # are still kept apart by BEGIN IMMEDIATE and the busy timeout, and
        # first by the process lock when they take it too.
        self._write_lock = threading.Lock()
        # The connection the writes run on, under _write_lock (_writer_connection).
        self._writer: _ThreadConnection | None = None
        # The writes' connection last discarded, open until its replacement is (_discard).
        self._retired_writer: _ThreadConnection | None = None
        # When the write holding _write_lock began waiting in BEGIN IMMEDIATE
        # for SQLite's lock, while it still waits (None otherwise).
        self._sqlite_lock_wait_since: float | None = None
        self.write_stats = WriteStats()
        self._closed = False
        self._initialise()
        # A read-only database takes no writes, so there is nothing to queue (and its file may be immutable).
        self._process_lock = ProcessLock(self.db_path) if process_lock and not read_only else None
        # The path as given, made absolute now (a later chdir must not move it);
        # not resolved, so that a symlink pointed elsewhere is a replaced file.
        self.storage = FileWatch(str(Path(self.db_path).absolute()))

    # --- connections and transactions -------------------------------------

    def _open(self, *, create: bool = False) -> sqlite3.Connection:
        if self.read_only:
            return self._open_read_only()[0]
        # Only start-up may create the file: a connection opened later, after
        # the file was removed, must fail rather than start a new, empty one.
        target, uri = (self.db_path, False) if create else (self._uri, True)
        try:
            # isolation_level=None: the sqlite3 module must not open transactions
            # behind our back; we issue BEGIN IMMEDIATE ourselves.
            conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, uri=uri)
        except sqlite3.OperationalError as error:
            raise self._unusable("open", error) from error
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            conn.execute("PRAGMA foreign_keys = ON")
            # FULL: a commit is on disk before we answer, so an acknowledged write
            # survives power loss as well as a process crash (see docs/adr).
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
            # Statement journals (the derived-table trigger's inserts keep one)
            # in memory, not in a file created and deleted inside the write lock.
            conn.execute("PRAGMA temp_store = MEMORY")
            # A read: from now on the connection holds the file, so SQLite does
            # not delete the -wal when another connection closes (see
            # _open_for_request).
            conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.DatabaseError as error:
            conn.close()
            raise self._unusable("use", error) from error
        conn.row_factory = sqlite3.Row
        return conn

    def _open_read_only(self) -> tuple[sqlite3.Connection, str | None]:
        """A ``mode=ro`` connection, and connect_read_only's note when it reads without locks."""
        try:
            conn, note = connect_read_only(self.db_path)
        except OSError as error:  # its message names the file and the reason
            raise DatabaseError(str(error)) from error
        except sqlite3.DatabaseError as error:
            raise self._unusable("open", error) from error
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            # mode=ro already refuses writes to the file; this refuses every statement that would change
            # data (temporary tables included) before it runs.
            conn.execute("PRAGMA query_only = 1")
            conn.execute("PRAGMA temp_store = MEMORY")
        except sqlite3.DatabaseError as error:
            conn.close()
            raise self._unusable("use", error) from error
        conn.row_factory = sqlite3.Row
        return conn, note

    def _initialise(self) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            # Fail at start-up, not with a 500 on the first query that needs it.
            raise DatabaseError(
                f"deployapi needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer (for MATERIALIZED common "
                f"table expressions); this Python uses SQLite {sqlite3.sqlite_version}")
        if self.read_only:
            self._initialise_read_only()
            return
        # A mistyped path or an unmounted volume must not pass for a fresh start.
        path = Path(self.db_path)
        try:
            missing = not path.is_file() or path.stat().st_size == 0
        except OSError as error:  # a directory on the way that may not be entered
            raise self._unusable("open", error) from error
        if missing and self._require_existing:
            raise DatabaseError(f"no database at {self.db_path!r}, and require-existing is set: "
                                "refusing to create a new, empty one")
        # A connection of its own, closed afterwards rather than kept: an app
        # built before a server forks its workers must not hand one SQLite
        # connection to several processes.
        conn = self._open(create=not self._require_existing)
        try:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:  # refuse before changing anything, even the journal mode
                raise SchemaTooNew(too_new_message(found, SCHEMA_VERSION))
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise DatabaseError(f"cannot switch {self.db_path!r} to WAL mode (got {mode!r})")
            # An upgrade that rebuilds a table needs foreign keys off, and SQLite
            # ignores the switch inside a transaction; migrate checks them at the
            # end instead.  This connection is closed below, never reused.
            conn.execute("PRAGMA foreign_keys = OFF")
            with _immediate(conn):
                migrate(conn, schema_sql(), MIGRATIONS, SCHEMA_VERSION)
        except sqlite3.DatabaseError as error:
            raise self._unusable("use", error) from error
        finally:
            conn.close()
        if missing:
            logger.warning("no database at %s: created a new, empty one (set require-existing to refuse instead)",
                           self.db_path)

    def _initialise_read_only(self) -> None:
        """Check, without writing anything, that the file is a deployapi database at this version's schema."""
        path = Path(self.db_path)
        try:
            missing = not path.exists() or (path.is_file() and path.stat().st_size == 0)
        except OSError as error:
            raise self._unusable("open", error) from error
        if missing and not directory_problem(path.parent):
            raise DatabaseError(f"no database at {self.db_path!r} (missing or empty file), and read-only is set: "
                                "a read-only server serves an existing database and creates nothing")
        conn, note = self._open_read_only()
        try:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise SchemaTooNew(too_new_message(found, SCHEMA_VERSION))
            if found < SCHEMA_VERSION:
                # Even a database from before versioning (user_version 0) needs the upgrade to be served.
                raise DatabaseError(
                    f"cannot use database {self.db_path!r}: it is at schema version {found} and this deployapi "
                    f"serves version {SCHEMA_VERSION}; a read-only server upgrades nothing: upgrade the "
                    "primary's database with a normal start of this deployapi (or start one, without read-only, "
                    "on a writable copy), then take the copy again")
        except sqlite3.DatabaseError as error:
            raise self._unusable("use", error) from error
        finally:
            conn.close()
        logger.info("serving %s read-only: writes are refused (503 read_only) and nothing is written to it",
                    self.db_path)
        if note:
            logger.info("%s: %s", self.db_path, note)

    def _unusable(self, verb: str, error: Exception) -> DatabaseError:
        """A DatabaseError naming the file and the reason: the system's, when SQLite only says it could not open or
        write a file (its message is the same for a missing directory, a read-only one and a full disk)."""
        reason = str(error)
        if isinstance(error, OSError) or getattr(error, "sqlite_errorcode", 0) & 0xFF in _FILE_ERRORS:
            why = why_unreadable(self.db_path) if self.read_only else why_unwritable(self.db_path, sidecars=SIDECARS)
            reason = why or (
                describe(error) if isinstance(error, OSError) else reason)
        return DatabaseError(f"cannot {verb} database {self.db_path!r}: {reason}")

    def _connection(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """This thread's connection for reads, kept between calls; discarded after an SQLite error.

        A plain function returning the context manager rather than one of its
        own: every read passes here, and each generator-based context manager
        layer costs each read about 10,000 CPU instructions, 2 % of a GET by id
        (docs/performance.md).
        """
        if self._closed:
            raise DatabaseError("the repository is closed")
        held = getattr(self._local, "connection", None)
        if held is not None and held.in_use:
            # A call made while this thread's connection is busy (a read
            # inside another) gets a connection of its own.
            return _one_off(self._open_for_request(), self.storage)
        if held is None or held.pid != os.getpid():
            held = self._local.connection = self._keep(self._open_for_request())
        return self._using(held)

    @contextlib.contextmanager
    def _writer_connection(self) -> Iterator[sqlite3.Connection]:
        """The connection every write of this process runs on, whichever thread writes (only under _write_lock).

        One connection for the writes rather than each thread's own: SQLite
        drops a connection's page cache whenever another connection has written
        since its last transaction, so writes taking turns on the connections
        of four threads read most pages they change again from the file (about
        forty reads a create), while the one connection that wrote last finds
        most of them still cached (docs/performance.md).
        """
        if self._closed:
            raise DatabaseError("the repository is closed")
        held = self._writer
        opened = held is None or held.pid != os.getpid()
        if opened:
            held = self._writer = self._keep(self._open_for_request())
            held.writes = True
            if self._retired_writer is not None:
                self._retired_writer, retired = None, self._retired_writer
                retired.close()
        with self._using(held) as conn:
            if opened:  # here, where an error discards it like any other
                conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            yield conn

    @contextlib.contextmanager
    def _using(self, held: _ThreadConnection) -> Iterator[sqlite3.Connection]:
        """``held``'s connection for one call; discarded after an SQLite error or an interrupted transaction."""
        held.in_use = True
        keep = False
        try:
            yield held.conn
            keep = True
        except sqlite3.Error:
            raise  # the connection may be what failed: never use it again
        except StorageFault as fault:
            # Kept when only a check of ours failed (no SQLite error behind
            # it): the connection is sound, and while it stays open a removed
            # -wal stays attached, to be copied into the file at a clean stop.
            keep = not isinstance(fault.__cause__, sqlite3.Error)
            raise
        except BaseException:
            keep = True  # a domain error (not found, invalid transition) leaves it as good as it was
            raise
        finally:
            held.in_use = False
            # Left in a transaction only if something interrupted one.
            if not keep or held.conn.in_transaction:
                self._discard(held)

    def _open_for_request(self) -> sqlite3.Connection:
        # No connection closes meanwhile (FileWatch.connections_changing), and
        # _open reads the file, after which this one holds it: so the -wal
        # known to the watch is still the one in use when the count goes up.
        with self.storage.connections_changing:
            # A new connection would start a new, empty -wal beside the database
            # if the one in use was removed: that must be noticed before, not after.
            self.storage.verify_undamaged()
            self.storage.verify_path()
            self.storage.verify_wal(learn=False)
            try:
                conn = self._open()
            except DatabaseError as error:
                reason = storage_reason(error.__cause__)
                if reason is None:
                    raise
                self.storage.verify_path()  # the file gone is the cause to report, if it is
                raise self.storage.failed(reason, error.__cause__) from error
            self.storage.connection_opened()
            return conn

    def _keep(self, conn: sqlite3.Connection) -> _ThreadConnection:
        held = _ThreadConnection(conn, self.storage.close_connection)
        with self._threads_lock:
            self._threads.add(held)
        return held

    def release_connections(self) -> None:
        """Close the calling thread's kept connection and the writes' connection, for a process about to fork.

        create_app writes at start-up (webhook positions) on the thread that builds the app, which is
        often a server's master process about to fork its workers: none of them may inherit a connection.
        """
        held = getattr(self._local, "connection", None)
        if held is not None and not held.in_use:
            self._discard(held)
        with self._write_lock:
            for writer in (self._writer, self._retired_writer):
                if writer is not None:
                    writer.close()
            self._writer = self._retired_writer = None

    def _discard(self, held: _ThreadConnection) -> None:
        if getattr(self._local, "connection", None) is held:
            self._local.connection = None
        if self._writer is held and held.pid == os.getpid():
            self._writer = None
            # A transaction something interrupted (between BEGIN IMMEDIATE and
            # the block that rolls back) holds SQLite's write lock, which kept
            # open it would keep from every other process: rolled back now, or
            # if that fails, closed now, which lets go of it.
            if _out_of_transaction(held.conn):
                # Closed once the next write has opened its replacement, not
                # now: it is often the last connection open on the file, and the
                # last close checkpoints the -wal into the file and removes it.
                # After a full disk refused a write, the space that frees would
                # let the health check's write probe pass, and the next write
                # fail again.
                self._retired_writer = held
                return
        held.close()

    @contextlib.contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed if the block returns, rolled back otherwise.

        A write waits at most the busy timeout in all: queued behind the other
        writes of this process, then for SQLite's lock (another process).
        ``durable=False`` commits without waiting for the disk (``synchronous =
        NORMAL`` for this transaction): a power loss may take the write back, a
        crash of the process cannot, and the next durable commit makes it durable
        too.  Only for writes that may be lost at that cost (webhook positions:
        losing one means a delivery made again).

        :raises DatabaseReadOnly: the database was opened read-only.
        :raises DatabaseBusy: too many writes waiting already, or the lock stayed taken past the busy timeout.
        :raises StorageFault: the file is not the one at its path any more, or the storage failed.
        """
        started = self._before_write()
        try:
            with self._locked_transaction(started, durable=durable, on_locked=self._waited_since(started)) as conn:
                yield conn
        finally:
            if self._writer_slots is not None:
                self._writer_slots.give_back()

    def _write_grouped(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """``operation(conn)`` in a durable write transaction, maybe with the writes of other threads (ADR 0022).

        The writes waiting for the database at the same time are committed
        together, each in a SAVEPOINT of one transaction: an error raised by
        one (a refusal such as an invalid transition) undoes only its own
        changes.  Should the transaction itself fail (an SQLite error, a
        storage fault, the commit), every write of the group runs again in a
        transaction of its own, so none is answered from a group that was not
        committed: ``operation`` may be run more than once, and on another
        thread, so it must do nothing but its work on ``conn``.  Should no lock
        come within the busy timeout of the group's oldest write, every write of
        the group is refused.

        :raises DatabaseReadOnly, DatabaseBusy, StorageFault: as :meth:`_write`.
        """
        started = self._before_write()
        try:
            return self._write_queue.run(operation, started, started + self._busy_timeout_ms / 1000, time.monotonic)
        except TimedOut:
            raise self._behind_this_process() from None
        finally:
            if self._writer_slots is not None:
                self._writer_slots.give_back()

    def _commit_group(self, group: list[QueuedWrite]) -> None:
        """Run and commit ``group`` (on the thread leading the write queue), setting every write's outcome."""
        if len(group) > 1:
            locked_at: list[float] = []
            try:
                oldest = min(write.started for write in group)
                with self._locked_transaction(oldest, on_locked=locked_at.append) as conn:
                    for write in group:
                        _run_in_savepoint(conn, write)
            except DatabaseBusy as busy:
                # No lock within the oldest write's busy timeout: nothing ran.  Each write is refused
                # (and counted) now rather than run again, which would keep this thread waiting for
                # the later deadlines of the others too.
                for write in group:
                    write.reset()
                    write.error = busy if write is group[0] else self.write_stats.refused(
                        DatabaseBusy(str(busy), busy.reason))
                return
            except Exception:  # noqa: BLE001 - each write, run on its own below, meets its own error
                for write in group:
                    write.reset()
            except BaseException:
                for write in group:  # rolled back: no write may report the result of its run
                    write.reset()
                raise
            else:
                for write in group:
                    self.write_stats.waited(locked_at[0] - write.started)
                return
        for write in group:
            try:
                with self._locked_transaction(write.started, on_locked=self._waited_since(write.started)) as conn:
                    write.result = write.operation(conn)
            except Exception as error:  # noqa: BLE001 - raised in the write's own thread (WriteQueue.run)
                write.reset()
                write.error = error
            except BaseException:
                write.reset()
                raise

    def _behind_this_process(self) -> DatabaseBusy:
        """The refusal of a write that other writes of this process kept waiting past the busy timeout (counted)."""
        return self.write_stats.refused(DatabaseBusy(
            "other writes of this process held the database past the busy timeout", BUSY_PROCESS_QUEUE))

    def _waited_since(self, started: float) -> Callable[[float], None]:
        """What _locked_transaction calls once the locks are taken: the wait of a write that began at ``started``."""
        return lambda locked: self.write_stats.waited(locked - started)

    def _before_write(self) -> float:
        """What every write does before it waits: refuse a read-only or damaged database, take a writer slot.

        Returns when the write began (``time.monotonic()``); the caller gives the slot back.
        """
        if self.read_only:
            raise DatabaseReadOnly(f"{self.db_path} was opened read-only")
        # A damaged file stays refused, though a write that misses the damaged pages would succeed.
        self.storage.verify_undamaged()
        started = time.monotonic()
        self._take_writer_slot(started)
        return started

    @contextlib.contextmanager
    def _locked_transaction(self, started: float, *, durable: bool = True,
                            on_locked: Callable[[float], None]) -> Iterator[sqlite3.Connection]:
        """A transaction behind this process's write lock, waiting no longer than the busy timeout from ``started``.

        ``on_locked`` is called with ``time.monotonic()`` once every lock is taken (for the write-wait histogram).
        """
        left = started + self._busy_timeout_ms / 1000 - time.monotonic()
        if not self._write_lock.acquire(timeout=max(left, 0)):
            raise self._behind_this_process()
        try:
            self._take_process_lock(started)
            try:
                with self._writer_connection() as conn, self._busy_wait_left(conn, started), self._storage_errors(), \
                        _synchronous(conn, durable):
                    try:
                        # With the process lock, the wait for SQLite's lock is a turn behind the
                        # write of another worker, however long that write takes: not stuck.
                        if self._process_lock is None:
                            self._sqlite_lock_wait_since = time.monotonic()
                        begin = None if self._process_lock is None else functools.partial(
                            self._begin_in_turn, started=started)
                        with self._busy_errors(), _immediate(conn, began=self._stop_waiting, begin=begin):
                            # Under the write locks, SQLite's lock taken: all the waiting is over.
                            on_locked(time.monotonic())
                            yield conn
                            # Last, so that nothing is committed into a file nobody will open again.
                            self.storage.verify_path()
                            self.storage.verify_wal()
                    finally:
                        self._sqlite_lock_wait_since = None
            finally:
                if self._process_lock is not None:
                    # Let go at BEGIN already, unless the write failed before: again is harmless.
                    self._process_lock.release()
            self.storage.write_succeeded()
        finally:
            self._write_lock.release()

    def _stop_waiting(self) -> None:
        self._sqlite_lock_wait_since = None

    def _begin_in_turn(self, conn: sqlite3.Connection, started: float) -> None:
        """BEGIN IMMEDIATE for a write that holds the process lock, which it lets go of once SQLite's lock is taken.

        The holder of the process lock is the one writer, of all the processes
        that take it, waiting for SQLite's lock; the others wait for the
        process lock, in the kernel (process_lock.py).  Letting go of it at
        BEGIN rather than at COMMIT is what makes writers take turns: while
        this write goes on, the next process's writer takes it and waits here,
        and this process's next writer, which cannot take it, waits behind.
        The one writer waiting tries BEGIN again after short pauses, not in
        SQLite's busy handler, whose pauses (up to 100 ms) would leave the
        database idle between two writes; for what is left of the busy
        timeout, as every write.

        :raises sqlite3.OperationalError: "database is locked" past the busy timeout.
        """
        deadline = started + self._busy_timeout_ms / 1000
        pause = FIRST_BEGIN_PAUSE_SECONDS
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as error:
                    if "database is locked" not in str(error).lower() or time.monotonic() >= deadline:
                        raise
                time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
                pause = min(pause * 2, LONGEST_BEGIN_PAUSE_SECONDS)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        self._process_lock.release()

    def _take_process_lock(self, started: float) -> None:
        """Wait for the writers of the other processes, for what is left of the busy timeout.

        :raises DatabaseBusy:
        """
        if self._process_lock is None:
            return
        if self._closed:  # its descriptor too
            raise DatabaseError("the repository is closed")
        left = started + self._busy_timeout_ms / 1000 - time.monotonic()
        if not self._process_lock.acquire(max(left, 0)):
            raise self.write_stats.refused(DatabaseBusy(
                "another process held the database past the busy timeout", BUSY_SQLITE_LOCK))

    def _take_writer_slot(self, started: float) -> None:
        """Wait for one of ``max_writers`` slots, unless the writes are stuck behind another process.

        A write takes about a millisecond, so slots free up quickly and a burst
        simply queues.  But while the write in front has waited in BEGIN
        IMMEDIATE for STUCK_WRITE_SECONDS (another process holds SQLite's
        lock; on its own, BEGIN takes microseconds), every write behind it
        would wait up to the busy timeout, soon on every server thread, with
        reads queued behind them: then one more write is refused at once.

        :raises DatabaseBusy:
        """
        if self._writer_slots is None or self._writer_slots.take():
            return
        deadline = started + self._busy_timeout_ms / 1000
        while True:
            since = self._sqlite_lock_wait_since
            if since is not None and time.monotonic() - since > STUCK_WRITE_SECONDS:
                raise self.write_stats.refused(DatabaseBusy(
                    f"{self._max_writers} writes are waiting for a database lock that another process has held "
                    f"for over {STUCK_WRITE_SECONDS} s", BUSY_WRITERS_STUCK))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._behind_this_process()
            if self._writer_slots.take(timeout=min(remaining, STUCK_WRITE_SECONDS / 5)):
                return

    @contextlib.contextmanager
    def _busy_wait_left(self, conn: sqlite3.Connection, started: float) -> Iterator[None]:
        # A write that queued here first waits for SQLite's lock only for what
        # is left of its busy timeout.  Set (and put back) only after a real
        # wait: two statements a write would otherwise cost for nothing.
        waited_ms = int((time.monotonic() - started) * 1000)
        if waited_ms < 10:
            yield
            return
        conn.execute(f"PRAGMA busy_timeout = {max(self._busy_timeout_ms - waited_ms, 0)}")
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")

    def _storage_errors(self) -> contextlib.AbstractContextManager[None]:
        """SQLite errors that mean the storage failed, as StorageFault (recorded, logged once)."""
        return _errors_as(self._storage_fault)

    def _storage_fault(self, error: sqlite3.Error) -> StorageFault | None:
        """The StorageFault that ``error`` means, if it means the storage failed (recorded, logged once)."""
        reason = storage_reason(error)
        if reason is None:
            return None
        # A file removed or replaced under SQLite surfaces as I/O errors:
        # report that cause, if it is the one.
        self.storage.verify_path()
        self.storage.verify_wal(learn=False)
        return self.storage.failed(reason, error)

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads, with its errors as _busy_errors and _storage_errors give them, in that order.

        Written out rather than with _errors_as: one context manager fewer on every read (see _connection).
        """
        with self._connection() as conn:
            try:
                yield conn
            except sqlite3.Error as error:
                meant = _meaning(error, self._busy_refusal, self._storage_fault)
                if meant is None:
                    raise
                raise meant from error

    def _busy_errors(self) -> contextlib.AbstractContextManager[None]:
        """SQLite's "database is locked" (the busy timeout ran out) as DatabaseBusy, counted.

        :raises DatabaseBusy:
        """
        return _errors_as(self._busy_refusal)

    def _busy_refusal(self, error: sqlite3.Error) -> DatabaseBusy | None:
        """The DatabaseBusy (counted) that ``error`` means, if it is SQLite's "database is locked"."""
        if not isinstance(error, sqlite3.OperationalError):
            return None
        message = str(error).lower()
        if "database is locked" in message or "database is busy" in message:
            return self.write_stats.refused(DatabaseBusy(str(error)))
        return None

    def close(self) -> None:
        """Close every thread's connection; later calls fail with DatabaseError."""
        self._closed = True
        self.checkpoint()
        with self._threads_lock:
            held, self._threads = list(self._threads), weakref.WeakSet()
        for connection in held:
            connection.close()
        if self._process_lock is not None:
            # After the connections: closing it before would drop their fcntl locks (process_lock.py).
            self._process_lock.close()
        if not self.read_only:
            self._fold_wal_back()

    def checkpoint(self) -> None:
        """Copy the WAL into the database file through a connection that already has it open.

        If the -wal was removed from the directory while in use, this is how
        its commits reach the file: a new connection would start an empty
        -wal, and SQLite's own checkpoint when the last connection closes may
        come too late (a connection with unfinished statements closes only
        when they are gone, maybe after the process).  ``deployapi serve``
        calls it when stopping, before its worker threads, which hold the
        connections, end.  Only while a storage fault lasts: otherwise SQLite's
        own checkpoint at the last close does this, and a statement run here
        on a worker's connection can leave the -wal behind at a clean stop
        (which tests/e2e/test_serve.py requires to leave only the file).  Never
        when read-only: a checkpoint writes the file.
        """
        if self.storage.fault is None or self.read_only:
            return
        with self._threads_lock:
            held = list(self._threads)
        for connection in held:
            if not connection.close.alive or connection.in_use:
                continue
            # The writes' connections are used under the write lock, by whichever
            # thread writes: only between two writes, and never waiting for one.
            writes = connection.writes
            if writes and not self._write_lock.acquire(blocking=False):
                continue
            try:
                connection.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                continue  # another connection may still do it
            finally:
                if writes:
                    self._write_lock.release()
            return

    def _fold_wal_back(self) -> None:
        fold_wal_back(self._resolved)

    # --- queries -----------------------------------------------------------

    def setting(self, name: str) -> str | None:
        """A value of the settings table (kept across restarts, such as the key that signs cursors)."""
        # On a connection of its own, closed at once: an app is often built
        # in a process that forks its workers later (Database._initialise).
        with _one_off(self._open_for_request(), self.storage) as conn:
            row = conn.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else row["value"]

    def ping(self) -> None:
        """A real round trip to the database file, and while writes are failing, a real write.

        :raises StorageFault: the file is not the one at its path, was found damaged, or writes still fail.
        :raises DatabaseError: or sqlite3.Error when the database cannot answer.
        """
        # Here too, even on a thread whose kept connection skips the checks of
        # an opening; and like an opening, not while a connection closes.
        with self.storage.connections_changing:
            self.storage.verify_undamaged()
            self.storage.verify_path()
            self.storage.verify_wal(learn=False)
        if self.storage.fault is not None and not self.read_only:
            # Nobody may write while the health check says 503 (a load balancer
            # takes the server out), so the check itself tries one.  (Read-only,
            # the read below is the whole check: it is all the server does.)
            with self._write() as conn:
                # As large as the largest write a request makes, so that a disk
                # with room for a few pages but not for a create is still full.
                conn.execute("INSERT OR REPLACE INTO write_probe (id, payload, written_at) VALUES (1, zeroblob(?), ?)",
                             (WRITE_PROBE_BYTES, lifecycle.format_timestamp(self._clock())))
        with self._read() as conn:
            conn.execute("SELECT count(*) FROM settings").fetchone()


def fold_wal_back(db_path: str | Path) -> None:
    """Copy the WAL into the database file and remove the -wal and -shm, if no other connection is open.

    SQLite does this when the last connection closes, if that close gets the
    file to itself; a close that meets another connection still open (a worker
    thread ending late, another process) does not.  One more connection, closed
    after all of a process's (Database.close), or after all the processes'
    (``deployapi serve --workers``, once its workers have exited), is the last.
    Harmless while others are open: a passive checkpoint, then nothing.
    """
    with contextlib.suppress(sqlite3.Error):
        # mode=rw: never create a file that is gone by now; timeout=0: never
        # hold up a shutdown for another process.
        conn = sqlite3.connect(Path(db_path).resolve().as_uri() + "?mode=rw", uri=True, timeout=0)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()


class _Slots:
    """A counting semaphore of ``count`` slots, for the path of every write.

    The slots are tokens in a ``queue.SimpleQueue``, whose ``get`` and ``put``
    run in C, under the GIL, without a Python frame; ``threading.Semaphore``
    runs a ``Condition`` in Python at every acquire and release.  Unbounded: a
    slot is given back only by the write that took it.
    """

    def __init__(self, count: int):
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(count):
            self._tokens.put(None)

    def take(self, timeout: float = 0) -> bool:
        """Take a slot, waiting up to ``timeout`` seconds for one (not at all with 0); whether one was taken."""
        try:
            self._tokens.get(block=timeout > 0, timeout=timeout)  # without blocking, the timeout is ignored
        except queue.Empty:
            return False
        return True

    def give_back(self) -> None:
        self._tokens.put(None)


class _ThreadConnection:
    """A kept connection (a thread's, or the writes'): closed when its thread ends and drops it, or by close()."""

    def __init__(self, conn: sqlite3.Connection, close: Callable[[sqlite3.Connection], None]):
        self.conn = conn
        # After a fork the child must not use its parent's connections.
        self.pid = os.getpid()
        self.in_use = False
        self.writes = False  # whether it is (or was) the connection of the writes, used under the write lock
        self.close = weakref.finalize(self, close, conn)


def _run_in_savepoint(conn: sqlite3.Connection, write: QueuedWrite) -> None:
    """One write of a group: its changes undone alone if it raises a refusal, the transaction's error raised on."""
    conn.execute("SAVEPOINT grouped_write")
    try:
        write.result = write.operation(conn)
    except (sqlite3.Error, StorageFault, DatabaseError, DatabaseBusy):
        raise  # the transaction may be gone with it: the group fails (Database._commit_group)
    except Exception as error:  # noqa: BLE001 - raised in the write's own thread (WriteQueue.run)
        conn.execute("ROLLBACK TO grouped_write")
        write.error = error
    conn.execute("RELEASE grouped_write")


def _out_of_transaction(conn: sqlite3.Connection) -> bool:
    """Whether ``conn`` is open and in no transaction, once any transaction it is in is rolled back."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return not conn.in_transaction
    except sqlite3.Error:  # closed already, or the rollback failed
        return False


@contextlib.contextmanager
def _errors_as(*meanings: Callable[[sqlite3.Error], Exception | None]) -> Iterator[None]:
    """An SQLite error raised as the first of ``meanings`` that gives one for it (caused by it), or as it is."""
    try:
        yield
    except sqlite3.Error as error:
        meant = _meaning(error, *meanings)
        if meant is None:
            raise
        raise meant from error


def _meaning(error: sqlite3.Error, *meanings: Callable[[sqlite3.Error], Exception | None]) -> Exception | None:
    """What the first of ``meanings`` that gives something for ``error`` gives, if one does."""
    for meaning in meanings:
        meant = meaning(error)
        if meant is not None:
            return meant
    return None


@contextlib.contextmanager
def _one_off(conn: sqlite3.Connection, storage: FileWatch) -> Iterator[sqlite3.Connection]:
    try:
        yield conn
    finally:
        storage.close_connection(conn)


@contextlib.contextmanager
def _synchronous(conn: sqlite3.Connection, durable: bool) -> Iterator[None]:
    # SQLite refuses to change the setting inside a transaction: before BEGIN, back after COMMIT.
    if durable:
        yield
        return
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        yield
    finally:
        # Not suppressed: an error here discards the connection (Database._using)
        # rather than leave it committing without waiting for the disk.  Not
        # tried inside a transaction something interrupted, where SQLite refuses
        # it and its error would hide the interruption's: such a connection is
        # discarded anyway, never to write again.
        if not conn.in_transaction:
            conn.execute("PRAGMA synchronous = FULL")
