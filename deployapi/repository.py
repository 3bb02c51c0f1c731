"""All SQL: the schema at start-up, connections, transactions, and intent-named queries.

Current state lives in ``deployments``; history in the append-only
``deployment_events``.  Every write is one ``BEGIN IMMEDIATE`` transaction that
changes the deployment row and appends its event together, so state and history
can never disagree.  Reads of current state never replay events.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from . import chain, lifecycle
from .ids import new_deployment_id
from .insights import (
    IN_FLIGHT_SHOWN,
    DoraMetrics,
    DoraQuery,
    EnvironmentsQuery,
    EnvironmentState,
    InFlight,
    LiveVersion,
    durations,
)
from .lifecycle import ActionRequest, Deployment, Event, NewDeployment
from .listing import EQUALITY_FILTERS, ListQuery, Position
from .storage import FileWatch, StorageFault, storage_reason  # noqa: F401 (StorageFault: raised from here)

logger = logging.getLogger("deployapi")

BUSY_TIMEOUT_MS = 5000
# A write that has waited this long in BEGIN IMMEDIATE waits for another
# process: writes beyond max_writers are then refused at once (see _write).
STUCK_WRITE_SECONDS = 0.25
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
# Window functions, row values and AS MATERIALIZED: what the queries below use.
MIN_SQLITE = (3, 35, 0)
# Idempotency keys answer replays for at least this long; older ones are
# pruned a batch at a time by later idempotent writes.
IDEMPOTENCY_RETENTION = timedelta(hours=24)
IDEMPOTENCY_PRUNE_BATCH = 100

Clock = Callable[[], datetime]


class DeploymentNotFound(LookupError):
    """No deployment has the given id."""

    def __init__(self, deployment_id: str):
        super().__init__(f"no deployment has the id {deployment_id!r}")
        self.deployment_id = deployment_id


class DatabaseBusy(RuntimeError):
    """SQLite stayed locked by another writer for longer than the busy timeout."""


class DatabaseError(RuntimeError):
    """The database file cannot be opened or used (missing directory, not SQLite, read-only)."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def schema_sql() -> str:
    """The text of ``schema.sql``.

    An installed wheel carries a copy at ``deployapi/_schema/schema.sql`` (see
    setup.cfg); a source checkout or editable install reads the top-level file.
    """
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "_schema" / "schema.sql", package_dir.parent / "schema.sql"):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    raise FileNotFoundError(f"schema.sql not found next to {package_dir}")


# --- schema versions -------------------------------------------------------------

# The version schema.sql describes, recorded in PRAGMA user_version.
SCHEMA_VERSION = 5


@dataclass(frozen=True)
class Migration:
    """The statements that bring a database from ``version - 1`` to ``version``.

    Only what ``CREATE ... IF NOT EXISTS`` in schema.sql cannot express belongs
    here (new columns, backfills, changed triggers): schema.sql runs after the
    steps and creates any new table or index itself.
    """

    version: int
    statements: tuple[str, ...]
    # Python work SQL cannot do (such as hashing), run after the statements.
    backfill: Callable[[sqlite3.Connection], None] | None = None
    # Run once schema.sql has run too, for what needs its new tables.
    after_schema: Callable[[sqlite3.Connection], None] | None = None


def _chain_existing_events(conn: sqlite3.Connection) -> None:
    # Version 3 chained events under the legacy encoding; version 4 rehashes them.
    previous = chain.GENESIS
    rows = conn.execute(
        "SELECT id, deployment_id, sequence, type, actor, note, from_status, to_status, created_at"
        " FROM deployment_events ORDER BY id"
    ).fetchall()
    for row in rows:
        event = Event(*row)
        previous = chain.legacy_event_hash(event, previous)
        conn.execute("UPDATE deployment_events SET hash = ? WHERE id = ?", (previous, event.id))


class ChainBroken(sqlite3.DatabaseError):
    """The history no longer fits its hash chain: upgrading would seal the change."""


def _rechain_with_creation_content(conn: sqlite3.Connection) -> None:
    # Every event again under chain.ENCODING, created events sealing their
    # deployment's content.  Heads anchored before stay verifiable: check
    # recomputes the legacy chain up to the event recorded here.  The legacy
    # chain is verified on the way: rehashing a history edited since it was
    # hashed would make the edit look as if it had always been there.
    previous = legacy = chain.GENESIS
    last_id = 0
    while True:
        batch = conn.execute(f"{EVENTS_WITH_CONTENT_SQL} WHERE e.id > ? ORDER BY e.id LIMIT 10000",
                             (last_id,)).fetchall()
        if not batch:
            break
        updates = []
        for row in batch:
            event, content = event_with_content(row)
            legacy = chain.legacy_event_hash(event, legacy)
            if event.hash != legacy:
                raise ChainBroken(
                    f"the history does not fit its hash chain from event {event.id} (deployment "
                    f"{event.deployment_id}): run deployapi check on it before upgrading; the upgrade to schema "
                    "version 4 rehashes the history and would make that change look original")
            previous = chain.event_hash(event, previous, content)
            updates.append((previous, event.id))
        conn.executemany("UPDATE deployment_events SET hash = ? WHERE id = ?", updates)
        last_id = batch[-1]["id"]
    conn.execute("INSERT OR REPLACE INTO settings (name, value) VALUES ('chain_rehashed_through', ?)",
                 (str(last_id),))


# Ordered by version.
MIGRATIONS: tuple[Migration, ...] = (
    # 2: the idempotency_keys table, which schema.sql creates; no other change.
    Migration(2, ()),
    # 3: the hash chain over events (chain.py), computed for the history so far.
    Migration(3, ("ALTER TABLE deployment_events ADD COLUMN hash TEXT",
                  # Lifted for the backfill only; schema.sql puts it back in the same transaction.
                  "DROP TRIGGER IF EXISTS deployment_events_no_update"),
              backfill=_chain_existing_events),
    # 4: created events seal the deployment's content (the chain rehashed under
    # chain.ENCODING); idempotency keys belong to their caller, and only
    # answers that changed something are kept.
    Migration(4, (
        "DROP TRIGGER IF EXISTS deployment_events_no_update",
        # The version-2 table, for a database that comes from version 1.
        "CREATE TABLE IF NOT EXISTS idempotency_keys (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,"
        " status INTEGER NOT NULL, body TEXT NOT NULL, location TEXT, created_at TEXT NOT NULL)",
        # SQLite cannot change a primary key in place: a new table, the rows, a rename.
        "CREATE TABLE idempotency_keys_v4 (caller TEXT NOT NULL, key TEXT NOT NULL,"
        " fingerprint TEXT NOT NULL, status INTEGER NOT NULL, body TEXT NOT NULL, location TEXT,"
        " created_at TEXT NOT NULL, PRIMARY KEY (caller, key))",
        "INSERT INTO idempotency_keys_v4 (caller, key, fingerprint, status, body, location, created_at)"
        " SELECT '', key, fingerprint, status, body, location, created_at FROM idempotency_keys"
        " WHERE status < 400",
        "DROP TABLE idempotency_keys",
        "ALTER TABLE idempotency_keys_v4 RENAME TO idempotency_keys",
    ), backfill=_rechain_with_creation_content),
    # 5: the read tables derived from each event (deployment_event_scopes,
    # deployment_steps), which schema.sql creates with their trigger; filled
    # here for the events appended before.
    Migration(5, (), after_schema=lambda conn: backfill_derived_rows(conn)),
)


class SchemaTooNew(sqlite3.DatabaseError):
    """The database was written by a newer deployapi than this one."""


def migrate(conn: sqlite3.Connection, schema: str, migrations: tuple[Migration, ...], target: int) -> int:
    """Bring the database to ``target``: the version's steps in order, then schema.sql.

    Runs inside the caller's transaction, so a failing step leaves the database
    as it was.  Returns the version the database was at.

    :raises SchemaTooNew: when the database is already past ``target``.
    """
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > target:
        raise SchemaTooNew(_too_new_message(found, target))
    fresh = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'deployments'").fetchone()[0] == 0
    ran = []
    if not fresh:
        # A database from before versioning has user_version 0 and the version-1 tables.
        for step in migrations:
            if max(found, 1) < step.version <= target:
                for statement in step.statements:
                    conn.execute(statement)
                if step.backfill is not None:
                    step.backfill(conn)
                ran.append(step)
    for statement in split_statements(schema):
        conn.execute(statement)
    for step in ran:
        if step.after_schema is not None:
            step.after_schema(conn)
    conn.execute(f"PRAGMA user_version = {int(target)}")
    return found


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection, began: Callable[[], None] | None = None) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error, the original error kept.

    A failing ROLLBACK never hides the error that caused it; a connection left
    in a transaction is discarded by Repository._connection().  ``began`` is
    called once SQLite's write lock is taken.
    """
    conn.execute("BEGIN IMMEDIATE")
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


def _too_new_message(found: int, known: int) -> str:
    return (f"the database is at schema version {found}, but this deployapi knows versions up to "
            f"{known}; upgrade deployapi instead of opening a newer database with an older one")


def split_statements(script: str) -> list[str]:
    """Split a SQL script into whole statements (trigger bodies contain semicolons)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    leftover = [line for line in pending.splitlines() if line.strip() and not line.strip().startswith("--")]
    if leftover:
        raise ValueError(f"incomplete SQL statement at the end of the schema: {leftover[0]!r}")
    return statements


class Repository:
    """Deployments and their events in one SQLite file.

    Thread-safe: each thread uses a connection of its own, opened on its first call.
    Call :meth:`close` to close them all.
    """

    def __init__(self, db_path: str | Path, *, clock: Clock = utc_now,
                 busy_timeout_ms: int = BUSY_TIMEOUT_MS, require_existing: bool = False,
                 max_writers: int | None = None):
        """``max_writers`` bounds the writes in progress or waiting at once (None: no bound): one more
        waits for a slot, or is refused at once with DatabaseBusy when the write in progress is stuck, so
        waiting writers cannot occupy every server thread.

        :raises DatabaseError: the file cannot be used, or (``require_existing``) there is none.
        """
        self.db_path = str(db_path)
        self._uri = Path(self.db_path).resolve().as_uri() + "?mode=rw"
        self._clock = clock
        self._busy_timeout_ms = busy_timeout_ms
        self._require_existing = require_existing
        self._writer_slots = threading.BoundedSemaphore(max_writers) if max_writers else None
        self._max_writers = max_writers
        # One connection per thread that uses the repository, opened on its
        # first call and kept for the next: no pool lock and no set-up per
        # request.  Each is closed by close(), or when its thread ends.
        self._local = threading.local()
        self._threads: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._threads_lock = threading.Lock()
        # Writers of this process queue here rather than in SQLite's busy
        # handler, which sleeps up to 100 ms between retries and so turns
        # contention into long tail latency.  Other processes on the same file
        # are still kept apart by BEGIN IMMEDIATE and the busy timeout.
        self._write_lock = threading.Lock()
        # When the write holding _write_lock began waiting in BEGIN IMMEDIATE
        # for SQLite's lock, while it still waits (None otherwise).
        self._sqlite_lock_wait_since: float | None = None
        self._closed = False
        self._initialise()
        # The path as given, made absolute now (a later chdir must not move it);
        # not resolved, so that a symlink pointed elsewhere is a replaced file.
        self.storage = FileWatch(str(Path(self.db_path).absolute()))

    # --- connections and transactions -------------------------------------

    def _open(self, *, create: bool = False) -> sqlite3.Connection:
        # Only start-up may create the file: a connection opened later, after
        # the file was removed, must fail rather than start a new, empty one.
        target, uri = (self.db_path, False) if create else (self._uri, True)
        try:
            # isolation_level=None: the sqlite3 module must not open transactions
            # behind our back; we issue BEGIN IMMEDIATE ourselves.
            conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, uri=uri)
        except sqlite3.OperationalError as error:
            raise DatabaseError(f"cannot open database {self.db_path!r}: {error}") from error
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
        except sqlite3.DatabaseError as error:
            conn.close()
            raise DatabaseError(f"cannot use database {self.db_path!r}: {error}") from error
        conn.row_factory = sqlite3.Row
        return conn

    def _initialise(self) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            # Fail at start-up, not with a 500 on the first query that needs it.
            raise DatabaseError(
                f"deployapi needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer (for MATERIALIZED common "
                f"table expressions); this Python uses SQLite {sqlite3.sqlite_version}")
        # A mistyped path or an unmounted volume must not pass for a fresh start.
        path = Path(self.db_path)
        missing = not path.is_file() or path.stat().st_size == 0
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
                raise SchemaTooNew(_too_new_message(found, SCHEMA_VERSION))
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise DatabaseError(f"cannot switch {self.db_path!r} to WAL mode (got {mode!r})")
            with _immediate(conn):
                migrate(conn, schema_sql(), MIGRATIONS, SCHEMA_VERSION)
            key = conn.execute("SELECT value FROM settings WHERE name = 'cursor_key'").fetchone()
        except sqlite3.DatabaseError as error:
            raise DatabaseError(f"cannot use database {self.db_path!r}: {error}") from error
        finally:
            conn.close()
        self.cursor_key = bytes.fromhex(key["value"])
        if missing:
            logger.warning("no database at %s: created a new, empty one (set require-existing to refuse instead)",
                           self.db_path)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, kept between calls; discarded after an SQLite error."""
        if self._closed:
            raise DatabaseError("the repository is closed")
        held = getattr(self._local, "connection", None)
        if held is not None and held.in_use:
            # A call made while this thread's connection is busy (a read
            # inside a write's transaction) gets a connection of its own.
            yield from _one_off(self._open_for_request(), self.storage)
            return
        if held is None or held.pid != os.getpid():
            held = self._local.connection = self._keep(self._open_for_request())
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
        held = _ThreadConnection(conn, self.storage.connection_closed)
        with self._threads_lock:
            self._threads.add(held)
        return held

    def _discard(self, held: _ThreadConnection) -> None:
        if getattr(self._local, "connection", None) is held:
            self._local.connection = None
        held.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed if the block returns, rolled back otherwise.

        A write waits at most the busy timeout in all: queued behind the other
        writes of this process, then for SQLite's lock (another process).

        :raises DatabaseBusy: too many writes waiting already, or the lock stayed taken past the busy timeout.
        :raises StorageFault: the file is not the one at its path any more, or the storage failed.
        """
        # A damaged file stays refused, though a write that misses the damaged pages would succeed.
        self.storage.verify_undamaged()
        started = time.monotonic()
        self._take_writer_slot(started)
        try:
            left = started + self._busy_timeout_ms / 1000 - time.monotonic()
            if not self._write_lock.acquire(timeout=max(left, 0)):
                raise DatabaseBusy("other writes of this process held the database past the busy timeout")
            try:
                with self._connection() as conn, self._busy_wait_left(conn, started), self._storage_errors():
                    try:
                        self._sqlite_lock_wait_since = time.monotonic()
                        with _immediate(conn, began=self._stop_waiting):
                            yield conn
                            # Last, so that nothing is committed into a file nobody will open again.
                            self.storage.verify_path()
                            self.storage.verify_wal()
                    except sqlite3.OperationalError as error:
                        if _is_busy(error):
                            raise DatabaseBusy(str(error)) from error
                        raise
                    finally:
                        self._sqlite_lock_wait_since = None
                self.storage.write_succeeded()
            finally:
                self._write_lock.release()
        finally:
            if self._writer_slots is not None:
                self._writer_slots.release()

    def _stop_waiting(self) -> None:
        self._sqlite_lock_wait_since = None

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
        if self._writer_slots is None or self._writer_slots.acquire(blocking=False):
            return
        deadline = started + self._busy_timeout_ms / 1000
        while True:
            since = self._sqlite_lock_wait_since
            if since is not None and time.monotonic() - since > STUCK_WRITE_SECONDS:
                raise DatabaseBusy(f"{self._max_writers} writes are waiting for a database lock that another "
                                   f"process has held for over {STUCK_WRITE_SECONDS} s")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseBusy("other writes of this process held the database past the busy timeout")
            if self._writer_slots.acquire(timeout=min(remaining, STUCK_WRITE_SECONDS / 5)):
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

    @contextlib.contextmanager
    def _storage_errors(self) -> Iterator[None]:
        """SQLite errors that mean the storage failed, as StorageFault (recorded, logged once)."""
        try:
            yield
        except sqlite3.Error as error:
            reason = storage_reason(error)
            if reason is None:
                raise
            # A file removed or replaced under SQLite surfaces as I/O errors:
            # report that cause, if it is the one.
            self.storage.verify_path()
            self.storage.verify_wal(learn=False)
            raise self.storage.failed(reason, error) from error

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn, self._storage_errors():
            try:
                yield conn
            except sqlite3.OperationalError as error:
                if _is_busy(error):
                    raise DatabaseBusy(str(error)) from error
                raise

    def close(self) -> None:
        """Close every thread's connection; later calls fail with DatabaseError."""
        self._closed = True
        self.checkpoint()
        with self._threads_lock:
            held, self._threads = list(self._threads), weakref.WeakSet()
        for connection in held:
            connection.close()
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
        own checkpoint at the last close does this, and with a statement run
        here on a worker's connection the -wal was seen to stay behind after
        some clean stops.
        """
        if self.storage.fault is None:
            return
        with self._threads_lock:
            held = list(self._threads)
        for connection in held:
            if connection.close.alive and not connection.in_use:
                with contextlib.suppress(sqlite3.Error):
                    connection.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                return

    def _fold_wal_back(self) -> None:
        # SQLite copies the WAL into the file and removes it when the last
        # connection closes, if that close gets the file to itself.  Worker
        # threads that end together close their connections together, and then
        # no close is the last: the WAL stayed after 1-3 of 6 clean stops.  One
        # more connection, closed after theirs, is the last.
        with contextlib.suppress(sqlite3.Error):
            # mode=rw: never create a file that is gone by now; timeout=0: never
            # hold up a shutdown for another process.
            conn = sqlite3.connect(self._uri, uri=True, timeout=0)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                conn.close()

    # --- queries -----------------------------------------------------------

    def ping(self) -> None:
        """A real round trip to the database file, and while writes are failing, a real write.

        :raises StorageFault: the file is not the one at its path, was found damaged, or writes still fail.
        :raises DatabaseError: or sqlite3.Error when the database cannot answer.
        """
        self.storage.verify_undamaged()
        self.storage.verify_path()
        self.storage.verify_wal(learn=False)
        if self.storage.fault is not None:
            # Nobody may write while the health check says 503 (a load balancer
            # takes the server out), so the check itself tries one.
            with self._write() as conn:
                # As large as the largest write a request makes, so that a disk
                # with room for a few pages but not for a create is still full.
                conn.execute("INSERT OR REPLACE INTO write_probe (id, payload, written_at) VALUES (1, zeroblob(?), ?)",
                             (WRITE_PROBE_BYTES, lifecycle.format_timestamp(self._clock())))
        with self._read() as conn:
            conn.execute("SELECT count(*) FROM settings").fetchone()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[WriteTransaction]:
        """One ``BEGIN IMMEDIATE`` transaction for several writes that must stand or fall together.

        :raises DatabaseBusy: the database stayed locked past the busy timeout.
        """
        with self._write() as conn:
            yield WriteTransaction(conn, self._clock)

    def create_deployment(self, request: NewDeployment) -> Deployment:
        """Store a new deployment and its ``created`` event in one transaction."""
        with self.transaction() as tx:
            return tx.create_deployment(request)

    def get_deployment(self, deployment_id: str) -> Deployment:
        """The deployment's current state.

        :raises DeploymentNotFound:
        """
        with self._read() as conn:
            return _fetch_deployment(conn, deployment_id)

    def deployment_document(self, deployment_id: str) -> str:
        """The deployment's current state as the API's JSON object, rendered by SQLite.

        :raises DeploymentNotFound:
        """
        with self._read() as conn:
            row = conn.execute(f"SELECT {DEPLOYMENT_DOCUMENT} FROM deployments WHERE id = ?",
                               (deployment_id,)).fetchone()
        if row is None:
            raise DeploymentNotFound(deployment_id)
        return row[0]

    def list_events(self, deployment_id: str) -> list[Event]:
        """The deployment's history, oldest first.

        :raises DeploymentNotFound:
        """
        with self._read() as conn:
            # One read transaction, so the existence check and the events agree.
            conn.execute("BEGIN")
            try:
                _fetch_deployment(conn, deployment_id)
                rows = conn.execute(
                    "SELECT id, deployment_id, sequence, type, actor, note, from_status,"
                    " to_status, created_at, hash"
                    " FROM deployment_events WHERE deployment_id = ? ORDER BY sequence",
                    (deployment_id,),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        return [_row_to_event(row) for row in rows]

    def list_deployments(self, query: ListQuery) -> ListingPage:
        """One page of deployments, newest first, as the API's JSON objects rendered by SQLite."""
        sql, parameters = listing_sql(query)
        with self._read() as conn:
            rows = conn.execute(sql, parameters).fetchall()
        page = rows[:query.limit]
        more = len(rows) > query.limit
        return ListingPage([row[2] for row in page], Position(page[-1][0], page[-1][1]) if more else None)

    def now(self) -> datetime:
        """The time by the repository's clock, the one its writes are stamped with."""
        return self._clock()

    def list_environments(self, query: EnvironmentsQuery) -> list[EnvironmentState]:
        """What is live in every (service, environment) that has a deployment, ordered by both names."""
        with self._read() as conn:
            rows = conn.execute(_ENVIRONMENTS_SQL, (query.service, query.environment, IN_FLIGHT_SHOWN)).fetchall()
        # One row per in-flight deployment shown (or one row when none is), pair by pair.
        pairs = itertools.groupby(rows, key=lambda row: (row["service"], row["environment"]))
        return [_rows_to_environment_state(list(pair_rows)) for _, pair_rows in pairs]

    def dora_metrics(self, query: DoraQuery) -> DoraMetrics:
        """The DORA metrics of the query's scope and window (see docs/metrics.md), from deployment_steps."""
        with self._read() as conn:
            values = dict(conn.execute(_DORA_SQL, (query.service, query.environment, query.since, query.until)))
        # Integer microseconds in, seconds out: us / 1e6 is the double the SQL's division made.
        seconds = {metric: [us / 1e6 for us in json.loads(values[metric]) if us is not None]
                   for metric in ("time_to_restore", "approval_lead_time", "deploy_duration")}
        succeeded, started, failed_changes = values["succeeded"], values["started"], values["failed_changes"]
        return DoraMetrics(
            query=query, succeeded=succeeded, started=started, failed_changes=failed_changes,
            unrestored_failures=json.loads(values["time_to_restore"]).count(None),
            deployment_frequency_per_day=succeeded / values["window_days"],
            change_failure_rate=failed_changes / started if started else None,
            time_to_restore=durations(seconds["time_to_restore"]),
            approval_lead_time=durations(seconds["approval_lead_time"]),
            deploy_duration=durations(seconds["deploy_duration"]),
        )

    def apply_action(self, deployment_id: str, request: ActionRequest) -> Deployment:
        """Read, check and change the deployment and append its event, all in one transaction.

        :raises DeploymentNotFound:
        :raises lifecycle.InvalidTransition:
        :raises lifecycle.SelfApproval:
        """
        with self.transaction() as tx:
            return tx.apply_action(deployment_id, request)

    def event_head(self) -> Event | None:
        """The latest event, whose hash seals the whole history before it; None when there is none."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM deployment_events e ORDER BY e.id DESC LIMIT 1").fetchone()
        return _row_to_event(row) if row else None

    def list_events_after(self, after: int, limit: int, *, service: str | None = None,
                          environment: str | None = None, event_type: str | None = None) -> list[Event]:
        """Events of every deployment with ids above ``after``, in id (= commit) order.

        Ids are assigned inside the single writing transaction, so every
        snapshot holds a gap-free prefix of them: a reader that resumes after
        the last id it saw misses nothing and sees nothing twice.  A page
        narrowed by service or environment is read from deployment_event_scopes.
        """
        scope = {name: value for name, value in (("service", service), ("environment", environment))
                 if value is not None}
        if scope:
            sql, parameters = _scoped_feed_sql(after, limit, scope, event_type)
        else:
            sql, parameters = _feed_sql(after, limit, event_type)
        with self._read() as conn:
            rows = conn.execute(sql, parameters).fetchall()
        return [_row_to_event(row) for row in rows]

    def event_context(self, events: list[Event]) -> dict[int, tuple[Deployment, bool]]:
        """What the CDEvents export needs besides each stored event, keyed by event id.

        For every event: its deployment, and whether it is the first success of
        that service in that environment (a ``succeeded`` event with no earlier
        ``succeeded`` event, by id, of the same service and environment).  Two
        queries however many events.  No read transaction is needed: nothing
        read here changes once written (a deployment's service, environment and
        version; which success came first).
        """
        deployment_ids = sorted({e.deployment_id for e in events})
        successes = sorted(e.id for e in events if e.type == lifecycle.SUCCEEDED and e.id is not None)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(deployment_ids),),
            ).fetchall()
            first_successes = {row["id"] for row in conn.execute(
                "SELECT e.id FROM deployment_events AS e JOIN deployments AS d ON d.id = e.deployment_id"
                " WHERE e.id IN (SELECT value FROM json_each(?))"
                "   AND NOT EXISTS ("
                "       SELECT 1 FROM deployments AS earlier INDEXED BY deployments_by_service_environment"
                "       JOIN deployment_events AS success ON success.deployment_id = earlier.id"
                "       WHERE earlier.service = d.service AND earlier.environment = d.environment"
                # A deployment is created before its events, so this bound lets the
                # index skip every later deployment (assuming, as the listing order
                # does, that the clock never steps back).  With 50,000 deployments
                # of one service a page of 1,000 events took 8 ms; taking the
                # smallest success id per service and environment took 0.6 s.
                "         AND earlier.created_at <= e.created_at"
                "         AND success.type = 'succeeded' AND success.id < e.id)",
                (json.dumps(successes),),
            )} if successes else set()
        deployments = {row["id"]: _row_to_deployment(row) for row in rows}
        return {e.id: (deployments[e.deployment_id], e.id in first_successes) for e in events if e.id is not None}


class _ThreadConnection:
    """A thread's kept connection; closed when the thread ends and drops it, or by Repository.close()."""

    def __init__(self, conn: sqlite3.Connection, closed: Callable[[], None]):
        self.conn = conn
        # After a fork the child must not use its parent's connections.
        self.pid = os.getpid()
        self.in_use = False
        self.close = weakref.finalize(self, _close, conn, closed)


def _close(conn: sqlite3.Connection, closed: Callable[[], None]) -> None:
    conn.close()
    closed()


def _one_off(conn: sqlite3.Connection, storage: FileWatch) -> Iterator[sqlite3.Connection]:
    try:
        yield conn
    finally:
        _close(conn, storage.connection_closed)


@dataclass(frozen=True)
class ListingPage:
    """One page of a listing: each deployment as JSON text, and where the next page starts (None at the end)."""

    documents: list[str]
    next_position: Position | None


@dataclass(frozen=True)
class StoredResponse:
    """The answer first given to a request carrying an Idempotency-Key."""

    fingerprint: str
    status: int
    body: str
    location: str | None


class WriteTransaction:
    """The writes available inside one ``Repository.transaction()``."""

    def __init__(self, conn: sqlite3.Connection, clock: Clock):
        self._conn = conn
        self._clock = clock

    def create_deployment(self, request: NewDeployment) -> Deployment:
        now = self._clock()
        deployment, event = lifecycle.new_deployment(new_deployment_id(now), request, now)
        _insert_deployment(self._conn, deployment)
        _append_event(self._conn, event, _chain_head(self._conn), chain.creation_content(deployment))
        return deployment

    def apply_action(self, deployment_id: str, request: ActionRequest) -> Deployment:
        """:raises DeploymentNotFound, lifecycle.InvalidTransition, lifecycle.SelfApproval:"""
        # One statement for everything the action reads: the deployment, its
        # next sequence number and the chain's head.
        row = self._conn.execute(
            f"SELECT {_DEPLOYMENT_COLUMNS},"
            " (SELECT max(sequence) + 1 FROM deployment_events WHERE deployment_id = deployments.id),"
            f" {_CHAIN_HEAD_COLUMNS} FROM deployments WHERE id = ?", (deployment_id,)).fetchone()
        if row is None:
            raise DeploymentNotFound(deployment_id)
        current, sequence, head = _row_to_deployment(row), row[-4], tuple(row[-3:])
        updated, event = lifecycle.apply_action(current, request, sequence, self._clock())
        self._conn.execute(
            "UPDATE deployments SET status = ?, reviewed_by = ?, reviewed_at = ?, updated_at = ? WHERE id = ?",
            (updated.status, updated.reviewed_by, updated.reviewed_at, updated.updated_at, deployment_id),
        )
        _append_event(self._conn, event, head)
        return updated

    def stored_response(self, caller: str, key: str) -> StoredResponse | None:
        """The response stored under ``caller``'s idempotency key within its retention, if any."""
        row = self._conn.execute(
            "SELECT fingerprint, status, body, location FROM idempotency_keys"
            " WHERE caller = ? AND key = ? AND created_at >= ?",
            (caller, key, self._retention_cutoff()),
        ).fetchone()
        return StoredResponse(*row) if row else None

    def store_response(self, caller: str, key: str, response: StoredResponse) -> None:
        """Keep a response for replays of its key; prune a bounded batch of expired keys."""
        cutoff = self._retention_cutoff()
        # A bounded batch per write keeps the cost of pruning flat however many expired.
        self._conn.execute(
            "DELETE FROM idempotency_keys WHERE rowid IN"
            " (SELECT rowid FROM idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT ?)",
            (cutoff, IDEMPOTENCY_PRUNE_BATCH),
        )
        # REPLACE: an expired key that was not pruned yet is simply reused.
        self._conn.execute(
            "INSERT OR REPLACE INTO idempotency_keys (caller, key, fingerprint, status, body, location,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (caller, key, response.fingerprint, response.status, response.body, response.location,
             lifecycle.format_timestamp(self._clock())),
        )

    def _retention_cutoff(self) -> str:
        return lifecycle.format_timestamp(self._clock() - IDEMPOTENCY_RETENTION)


# Every combination of the service, environment and status filters has an index
# in listing order (see schema.sql).  Naming it with INDEXED BY keeps the plan
# independent of table statistics: without them SQLite may pick a shorter index
# and filter row by row.  Any query with requester uses the requester index and
# checks the other filters row by row: one person's deployments are few next to
# a service's or a status's (measured at 1M rows: status + a rare requester took
# 856 ms on the status index, under 1 ms on the requester one).  The slow case
# left is a very busy requester (a CI bot) with a rare other filter.
_LISTING_INDEXES = {
    frozenset(): "deployments_newest_first",
    frozenset({"service"}): "deployments_by_service",
    frozenset({"environment"}): "deployments_by_environment",
    frozenset({"status"}): "deployments_by_status",
    frozenset({"service", "environment"}): "deployments_by_service_environment",
    frozenset({"service", "status"}): "deployments_by_service_status",
    frozenset({"environment", "status"}): "deployments_by_environment_status",
    frozenset({"service", "environment", "status"}): "deployments_by_service_environment_status",
}


def listing_sql(query: ListQuery) -> tuple[str, list[object]]:
    """The statement and parameters of one listing page (``limit + 1`` rows, to tell if more follow)."""
    conditions: list[str] = []
    parameters: list[object] = []
    # Column names come from this fixed tuple, never from the request.
    for column in EQUALITY_FILTERS:
        value = getattr(query, column)
        if value is not None:
            conditions.append(f"{column} = ?")
            parameters.append(value)
    if query.created_after is not None:
        conditions.append("created_at >= ?")
        parameters.append(query.created_after)
    if query.after is not None:
        # A cursor is only ever issued for a position inside the range, so
        # it is a tighter upper bound than created_before.
        conditions.append("(created_at, id) < (?, ?)")
        parameters += [query.after.created_at, query.after.deployment_id]
    elif query.created_before is not None:
        conditions.append("created_at < ?")
        parameters.append(query.created_before)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = (f"SELECT created_at, id, {DEPLOYMENT_DOCUMENT} FROM deployments INDEXED BY {_listing_index(query)}"
           f"{where}"
           " ORDER BY created_at DESC, id DESC LIMIT ?")
    return sql, [*parameters, query.limit + 1]


def _listing_index(query: ListQuery) -> str:
    indexed = frozenset(c for c in ("service", "environment", "status") if getattr(query, c) is not None)
    if query.requester is not None:
        return "deployments_by_requester"
    return _LISTING_INDEXES[indexed]


# --- environments and DORA metrics --------------------------------------------------
#
# Both start from the (service, environment) pairs that have a deployment and
# then seek, pair by pair, into deployments_by_service_environment_status_updated
# (schema.sql): cost follows the number of pairs and the rows each answer
# needs, not the size of the table.  The definitions are in docs/metrics.md.

# Every (service, environment) pair in order, narrowed to the service and
# environment of the statement's `parameters` CTE when they are not NULL (each
# statement defines that CTE first, so that every `?` is bound once, in order).
# The pairs are found by hopping from one to the next through the index (a
# loose index scan): 200 seeks for 200 pairs, where SELECT DISTINCT reads every
# entry of the index (190 ms at 1M rows).
_SCOPE_CTE = """
pairs (service, environment) AS (
    SELECT service, environment FROM (
        SELECT service, environment FROM deployments INDEXED BY deployments_by_service_environment
        ORDER BY service, environment LIMIT 1)
    UNION ALL
    SELECT next.service, next.environment
    FROM pairs JOIN deployments AS next ON next.rowid = coalesce(
        -- the next environment of the same service, else the first one of the next service
        (SELECT rowid FROM deployments INDEXED BY deployments_by_service_environment
         WHERE service = pairs.service AND environment > pairs.environment
         ORDER BY environment LIMIT 1),
        (SELECT rowid FROM deployments INDEXED BY deployments_by_service_environment
         WHERE service > pairs.service
         ORDER BY service, environment LIMIT 1))
),
scope (service, environment) AS (
    SELECT pairs.service, pairs.environment FROM pairs, parameters
    WHERE pairs.service = coalesce(parameters.service, pairs.service)
      AND pairs.environment = coalesce(parameters.environment, pairs.environment)
)"""

# Per pair: the live version (the newest deployment whose status is still
# succeeded, by when it succeeded: its updated_at), the in-flight deployments
# (approved or started; their count, and the newest few as rows), and the last
# change (the newest started, succeeded, failed or rolled_back event, which is
# the updated_at of a deployment now in that status).  One row per in-flight
# deployment shown, or one row with NULLs when there is none.
_ENVIRONMENTS_SQL = f"""
WITH RECURSIVE
parameters (service, environment, in_flight_shown) AS (VALUES (?, ?, ?)),
{_SCOPE_CTE},
-- MATERIALIZED (SQLite 3.35+): flattened into the join below, the subqueries
-- would run once per in-flight row instead of once per pair (19 ms instead of
-- 12 ms at 1M rows).
summaries AS MATERIALIZED (
    SELECT scope.service, scope.environment,
        (SELECT id FROM deployments INDEXED BY deployments_by_service_environment_status_updated
         WHERE service = scope.service AND environment = scope.environment AND status = 'succeeded'
         ORDER BY updated_at DESC, id DESC LIMIT 1) AS live_id,
        (SELECT count(*) FROM deployments INDEXED BY deployments_by_service_environment_status_updated
         WHERE service = scope.service AND environment = scope.environment
           AND status IN ('approved', 'started')) AS in_flight_count,
        -- max() of several arguments is NULL if any is: '' stands for "none" instead.
        nullif(max(
            coalesce((SELECT max(updated_at) FROM deployments WHERE service = scope.service
                      AND environment = scope.environment AND status = 'started'), ''),
            coalesce((SELECT max(updated_at) FROM deployments WHERE service = scope.service
                      AND environment = scope.environment AND status = 'succeeded'), ''),
            coalesce((SELECT max(updated_at) FROM deployments WHERE service = scope.service
                      AND environment = scope.environment AND status = 'failed'), ''),
            coalesce((SELECT max(updated_at) FROM deployments WHERE service = scope.service
                      AND environment = scope.environment AND status = 'rolled_back'), '')
        ), '') AS last_change_at
    FROM scope
)
SELECT summaries.service, summaries.environment, summaries.in_flight_count, summaries.last_change_at,
    live.id AS live_id, live.version AS live_version, live.updated_at AS live_succeeded_at,
    flight.id AS flight_id, flight.version AS flight_version, flight.status AS flight_status,
    flight.updated_at AS flight_updated_at
FROM summaries
LEFT JOIN deployments AS live ON live.id = summaries.live_id
LEFT JOIN deployments AS flight ON flight.rowid IN (
    SELECT rowid FROM deployments INDEXED BY deployments_by_service_environment_status_updated
    WHERE service = summaries.service AND environment = summaries.environment
      AND status IN ('approved', 'started')
    ORDER BY updated_at DESC, id DESC LIMIT (SELECT in_flight_shown FROM parameters))
ORDER BY summaries.service, summaries.environment, flight.updated_at DESC, flight.id DESC
"""


def _microseconds_between(start: str, end: str) -> str:
    """SQL for the microseconds from one stored timestamp to another, as an exact integer.

    julianday() would round to milliseconds.  The whole seconds come from
    strftime('%s') on the date and time without the fraction, the microseconds
    from the fixed-width fraction (characters 21-26 of every stored timestamp).
    """
    def microseconds(column: str) -> str:
        return (f"(CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) * 1000000"
                f" + CAST(substr({column}, 21, 6) AS INTEGER))")
    return f"({microseconds(end)} - {microseconds(start)})"


def _seconds_between(start: str, end: str) -> str:
    """SQL for the seconds from one stored timestamp to another, exact to the microsecond."""
    return f"{_microseconds_between(start, end)} / 1e6"


# The last rows of both DORA statements, whose answers are rows of (metric,
# value): one row each of the counts `succeeded`, `started` and
# `failed_changes`; one row each of `time_to_restore` (a null for a failure not
# restored yet), `approval_lead_time` and `deploy_duration` whose value is a
# JSON array of the window's durations in integer microseconds; and
# `window_days`.  Arrays rather than a row per duration: the sqlite3 module
# takes the GIL back for every row, and with a few hundred thousand rows a
# request and other threads waiting, those hand-offs cost more than the query.
# Medians and percentiles are taken in Python (insights.durations), where
# sorting costs a third of what SQLite's window functions did.
_WINDOW_DAYS = f"SELECT 'window_days', {_seconds_between('since', 'until')} / 86400 FROM parameters"


def _steps_in_window(step: str) -> str:
    """SQL (a FROM clause) for the deployment_steps rows ``s`` of one step in the scope and window.

    One range of the table's primary key per (service, environment) pair:
    the cost follows the steps in the window, not the history around it.
    """
    return ("scope CROSS JOIN parameters CROSS JOIN deployment_steps AS s"
            " WHERE s.service = scope.service AND s.environment = scope.environment"
            f" AND s.step = '{step}' AND s.at >= parameters.since AND s.at < parameters.until")


# From deployment_steps, which the schema's trigger fills as events are
# appended (schema.sql): every count and duration is one range per pair and
# step, and each failure's restore is one seek for the first later success.
# The answers are those the events give (docs/metrics.md); a test computes
# them from the events too and compares.
_DORA_SQL = f"""
WITH RECURSIVE
parameters (service, environment, since, until) AS (VALUES (?, ?, ?, ?)),
{_SCOPE_CTE},
-- Each failed change failed in the window, and the first success strictly
-- after it on the same service and environment (NULL if none yet), which may
-- come after `until`.
failures AS (
    SELECT s.at AS failed_at,
        (SELECT later.at FROM deployment_steps AS later
         WHERE later.service = s.service AND later.environment = s.environment
           AND later.step = 'succeeded' AND later.at > s.at
         ORDER BY later.at LIMIT 1) AS restored_at
    FROM {_steps_in_window('failed')}
)
SELECT 'succeeded' AS metric, count(*) AS value FROM {_steps_in_window('succeeded')}
UNION ALL SELECT 'started', count(*) FROM {_steps_in_window('started')}
-- filed under the time their deployment started
UNION ALL SELECT 'failed_changes', count(*) FROM {_steps_in_window('failed_change')}
UNION ALL SELECT 'time_to_restore', json_group_array({_microseconds_between('failed_at', 'restored_at')})
FROM failures
UNION ALL SELECT 'approval_lead_time', json_group_array(s.microseconds) FROM {_steps_in_window('approved')}
UNION ALL SELECT 'deploy_duration', json_group_array(s.microseconds) FROM {_steps_in_window('finished')}
UNION ALL {_WINDOW_DAYS}
"""


def backfill_derived_rows(conn: sqlite3.Connection) -> None:
    """Give deployment_event_scopes and deployment_steps the events appended before their trigger existed.

    Migration 5 runs it, once schema.sql has created the tables, the views and
    the trigger.  The rows come from the views the trigger inserts from, so
    they are the trigger's rows; rows already there are skipped.
    """
    conn.execute("INSERT OR IGNORE INTO deployment_event_scopes (service, environment, type, event_id)"
                 " SELECT service, environment, type, event_id FROM deployment_event_scope_rows")
    conn.execute("INSERT OR IGNORE INTO deployment_steps"
                 " (service, environment, step, at, event_id, from_at, microseconds)"
                 " SELECT service, environment, step, at, event_id, from_at, microseconds FROM deployment_step_rows")


def _feed_sql(after: int, limit: int, event_type: str | None) -> tuple[str, list[object]]:
    """SQL for a page of the feed in id order, each event joined to its deployment.

    With a type, one range of deployment_events_by_type.  (The join keeps out
    an event whose deployment is gone, which only a hand edit can make, as the
    scoped read does: such an event has no scope row.)
    """
    conditions, parameters = ["e.id > ?"], [after]
    if event_type is not None:
        conditions.append("e.type = ?")
        parameters.append(event_type)
    by_type = " INDEXED BY deployment_events_by_type" if event_type is not None else ""
    return (f"SELECT {_EVENT_COLUMNS} FROM deployment_events e{by_type} JOIN deployments d ON d.id = e.deployment_id"
            f" WHERE {' AND '.join(conditions)} ORDER BY e.id LIMIT ?", [*parameters, limit])


# The deployment_event_scopes index for each combination of scope filters
# (both: the table's primary key).
_SCOPE_INDEXES = {
    ("service",): "INDEXED BY deployment_event_scopes_by_service",
    ("environment",): "INDEXED BY deployment_event_scopes_by_environment",
    ("service", "environment"): "",
}


def _scoped_feed_sql(after: int, limit: int, scope: dict[str, str],
                     event_type: str | None) -> tuple[str, list[object]]:
    """SQL for a page of the feed narrowed by service and/or environment, from deployment_event_scopes.

    Within one scope and type the index is in event id order, so each type
    is one range starting after ``after``.  A compound SELECT ordered by id
    merges those ranges (SQLite's MERGE of UNION ALL reads each only as far
    as the page needs), so a page reads about ``limit`` entries per type
    asked for, however many events of other scopes lie in between.
    """
    names = tuple(scope)
    index = _SCOPE_INDEXES[names]
    match = " AND ".join(f"{name} = ?" for name in names)
    types = (event_type,) if event_type is not None else lifecycle.EVENT_TYPES
    ranges = " UNION ALL ".join(
        f"SELECT event_id FROM deployment_event_scopes {index}"
        f" WHERE {match} AND type = ? AND event_id > ?" for _ in types)
    parameters: list[object] = []
    for event_type_ in types:
        parameters += [*scope.values(), event_type_, after]
    return (f"SELECT {_EVENT_COLUMNS} FROM ({ranges} ORDER BY event_id LIMIT ?) AS page"
            " JOIN deployment_events e ON e.id = page.event_id ORDER BY e.id", [*parameters, limit])


# --- backup ---------------------------------------------------------------------


def backup_database(source: str | Path, destination: str | Path) -> None:
    """Copy a database, live or not, into a new self-contained file.

    SQLite's online backup API copies one consistent snapshot while writers
    carry on (WAL mode lets them).  The copy is written beside ``destination``
    and renamed into place only when complete.

    :raises FileNotFoundError: no database at ``source``.
    :raises FileExistsError: ``destination`` exists already (a backup never overwrites).
    """
    source, destination = Path(source), Path(destination)
    if not source.is_file():
        raise FileNotFoundError(f"no database file at {str(source)!r}")
    if destination.exists():
        raise FileExistsError(f"{str(destination)!r} exists already; choose a new file name")
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        writer = sqlite3.connect(partial)
        try:
            reader.backup(writer)
            # One file that restores by copying: no -wal or -shm beside it.
            writer.execute("PRAGMA journal_mode = DELETE")
        finally:
            writer.close()
        partial.replace(destination)
    finally:
        reader.close()
        partial.unlink(missing_ok=True)  # only left when the copy failed


# --- rows ---------------------------------------------------------------------

_EVENT_COLUMNS = (
    "e.id, e.deployment_id, e.sequence, e.type, e.actor, e.note, e.from_status, e.to_status, e.created_at,"
    " e.hash"
)
# The API's JSON object for a deployment (docs/api.md), built by SQLite: reads
# answer with this text as it comes, with no Python object per row or field
# (docs/performance.md).  Keys, order and values are those of
# handlers.deployment_json, which renders the Deployment a write returns;
# tests/integration/test_repository.py holds the two together.
DEPLOYMENT_DOCUMENT = (
    "json_object('id', id, 'service', service, 'environment', environment, 'version', version,"
    " 'requester', requester, 'work_refs', json(work_refs), 'risk', risk, 'rollback_plan', rollback_plan,"
    " 'status', status, 'reviewed_by', reviewed_by, 'reviewed_at', reviewed_at,"
    " 'created_at', created_at, 'updated_at', updated_at)"
)
_DEPLOYMENT_COLUMNS = (
    "id, service, environment, version, requester, work_refs, risk, rollback_plan,"
    " status, reviewed_by, reviewed_at, created_at, updated_at"
)


def _fetch_deployment(conn: sqlite3.Connection, deployment_id: str) -> Deployment:
    row = conn.execute(
        f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ?", (deployment_id,)
    ).fetchone()
    if row is None:
        raise DeploymentNotFound(deployment_id)
    return _row_to_deployment(row)


# The chain's head (the last event's id and hash) and the highest event id ever
# used (AUTOINCREMENT never reuses one, even of a row that is gone), as three
# columns: an action's SELECT carries them along, one statement fewer.
_CHAIN_HEAD_COLUMNS = (
    "(SELECT id FROM deployment_events ORDER BY id DESC LIMIT 1),"
    " (SELECT hash FROM deployment_events ORDER BY id DESC LIMIT 1),"
    " (SELECT seq FROM sqlite_sequence WHERE name = 'deployment_events')"
)
ChainHead = tuple[int | None, str | None, int | None]


def _insert_deployment(conn: sqlite3.Connection, deployment: Deployment) -> None:
    # No RETURNING here: SQLite runs RETURNING as a trigger, which makes the
    # insert keep a statement journal of every page it changes; with the row's
    # eleven indexes that often passes the journal's 64 KiB in memory and goes
    # to a temporary file, created, written and deleted inside the write lock.
    # A separate SELECT of the chain head is cheaper (docs/performance.md).
    conn.execute(
        "INSERT INTO deployments (id, service, environment, version, requester,"
        " work_refs, risk, rollback_plan, status, reviewed_by, reviewed_at,"
        " created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (deployment.id, deployment.service, deployment.environment, deployment.version,
         deployment.requester, json.dumps(list(deployment.work_refs)), deployment.risk,
         deployment.rollback_plan, deployment.status, deployment.reviewed_by,
         deployment.reviewed_at, deployment.created_at, deployment.updated_at),
    )


def _chain_head(conn: sqlite3.Connection) -> ChainHead:
    """The head as it stands in this transaction (see _CHAIN_HEAD_COLUMNS)."""
    return tuple(conn.execute(f"SELECT {_CHAIN_HEAD_COLUMNS}").fetchone())


def _append_event(conn: sqlite3.Connection, event: Event, head: ChainHead,
                  content: chain.Content | None = None) -> None:
    """Insert the event with its id and its link in the hash chain.

    Only inside a write transaction, with ``head`` read in that transaction: the
    id and the previous hash are read and used under the same write lock, so no
    other writer can slip in between.  ``content`` is what a created event seals.
    """
    last_id, last_hash, used = head
    event_id = max(last_id or 0, used or 0) + 1
    conn.execute(
        "INSERT INTO deployment_events (id, deployment_id, sequence, type, actor, note,"
        " from_status, to_status, created_at, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (event_id, event.deployment_id, event.sequence, event.type, event.actor, event.note,
         event.from_status, event.to_status, event.created_at,
         chain.link_hash(event, event_id, last_hash or chain.GENESIS, content)),
    )


# Creation fields stored as JSON text rather than as a plain column value.
_JSON_COLUMNS = frozenset({"work_refs"})
# Every event in the form the chain hashes it: its fields, and for a created
# event its deployment's creation columns (NULL for other events).  The column
# names are the creation fields' names (lifecycle.CREATE_FIELDS).
EVENTS_WITH_CONTENT_SQL = (
    "SELECT e.id, e.deployment_id, e.sequence, e.type, e.actor, e.note, e.from_status, e.to_status,"
    " e.created_at, e.hash, d.id IS NOT NULL AS has_content, "
    + ", ".join(f"d.{field} AS content_{field}" for field in lifecycle.CREATE_FIELDS)
    + " FROM deployment_events e LEFT JOIN deployments d ON d.id = e.deployment_id AND e.type = 'created'"
)


def event_with_content(row: sqlite3.Row) -> tuple[Event, dict | None]:
    """An event of EVENTS_WITH_CONTENT_SQL and the creation content its hash covers (None if it covers none).

    A JSON column that does not parse is sealed as its raw text, so that a
    damaged row fails the chain instead of stopping the reader.
    """
    event = Event(*(row[i] for i in range(10)))
    if event.type != lifecycle.CREATED:
        return event, None
    if not row["has_content"]:
        return event, {}  # the deployment row is gone: no content can match the hash
    fields = {}
    for field in lifecycle.CREATE_FIELDS:
        value = row[f"content_{field}"]
        if field in _JSON_COLUMNS and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        fields[field] = value
    return event, chain.content_of(fields)


def _row_to_deployment(row: sqlite3.Row) -> Deployment:
    return Deployment(
        id=row["id"], service=row["service"], environment=row["environment"],
        version=row["version"], requester=row["requester"],
        work_refs=tuple(json.loads(row["work_refs"])), risk=row["risk"],
        rollback_plan=row["rollback_plan"], status=row["status"],
        reviewed_by=row["reviewed_by"], reviewed_at=row["reviewed_at"],
        created_at=row["created_at"], updated_at=row["updated_at"],
    )


def _rows_to_environment_state(rows: list[sqlite3.Row]) -> EnvironmentState:
    first = rows[0]
    current = None
    if first["live_id"] is not None:
        current = LiveVersion(first["live_id"], first["live_version"], first["live_succeeded_at"])
    in_flight = tuple(InFlight(row["flight_id"], row["flight_version"], row["flight_status"], row["flight_updated_at"])
                      for row in rows if row["flight_id"] is not None)
    return EnvironmentState(first["service"], first["environment"], current, in_flight,
                            first["in_flight_count"], first["last_change_at"])


def _row_to_event(row: sqlite3.Row) -> Event:
    return Event(
        id=row["id"], deployment_id=row["deployment_id"], sequence=row["sequence"],
        type=row["type"], actor=row["actor"], note=row["note"],
        from_status=row["from_status"], to_status=row["to_status"],
        created_at=row["created_at"], hash=row["hash"],
    )


def _is_busy(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return "database is locked" in message or "database is busy" in message
