"""All SQL: the schema at start-up, connections, transactions, and intent-named queries.

Current state lives in ``deployments``; history in the append-only
``deployment_events``.  Every write is one ``BEGIN IMMEDIATE`` transaction that
changes the deployment row and appends its event together, so state and history
can never disagree.  Reads of current state never replay events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from . import chain, lifecycle
from .ids import new_deployment_id
from .lifecycle import ActionRequest, Deployment, Event, NewDeployment
from .listing import EQUALITY_FILTERS, ListQuery

BUSY_TIMEOUT_MS = 5000
# Idempotency keys answer replays for at least this long; older ones are
# pruned a batch at a time by later idempotent writes.
IDEMPOTENCY_RETENTION = timedelta(hours=24)
IDEMPOTENCY_PRUNE_BATCH = 100
# Connections kept open between requests; more are opened under load and
# closed again when returned to a full pool.
IDLE_CONNECTIONS = 8

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
SCHEMA_VERSION = 3


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


def _chain_existing_events(conn: sqlite3.Connection) -> None:
    previous = chain.GENESIS
    rows = conn.execute(
        "SELECT id, deployment_id, sequence, type, actor, note, from_status, to_status, created_at"
        " FROM deployment_events ORDER BY id"
    ).fetchall()
    for row in rows:
        event = Event(*row)
        previous = chain.event_hash(event, previous)
        conn.execute("UPDATE deployment_events SET hash = ? WHERE id = ?", (previous, event.id))


# Ordered by version.
MIGRATIONS: tuple[Migration, ...] = (
    # 2: the idempotency_keys table, which schema.sql creates; no other change.
    Migration(2, ()),
    # 3: the hash chain over events (chain.py), computed for the history so far.
    Migration(3, ("ALTER TABLE deployment_events ADD COLUMN hash TEXT",
                  # Lifted for the backfill only; schema.sql puts it back in the same transaction.
                  "DROP TRIGGER IF EXISTS deployment_events_no_update"),
              backfill=_chain_existing_events),
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
    if not fresh:
        # A database from before versioning has user_version 0 and the version-1 tables.
        for step in migrations:
            if max(found, 1) < step.version <= target:
                for statement in step.statements:
                    conn.execute(statement)
                if step.backfill is not None:
                    step.backfill(conn)
    for statement in _statements(schema):
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {int(target)}")
    return found


def _too_new_message(found: int, known: int) -> str:
    return (f"the database is at schema version {found}, but this deployapi knows versions up to "
            f"{known}; upgrade deployapi instead of opening a newer database with an older one")


def _statements(script: str) -> list[str]:
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

    Thread-safe: each call borrows its own connection from a small pool.
    Call :meth:`close` to close the pooled connections.
    """

    def __init__(self, db_path: str | Path, *, clock: Clock = utc_now,
                 busy_timeout_ms: int = BUSY_TIMEOUT_MS):
        self.db_path = str(db_path)
        self._clock = clock
        self._busy_timeout_ms = busy_timeout_ms
        self._idle: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        # Writers of this process queue here rather than in SQLite's busy
        # handler, which sleeps up to 100 ms between retries and so turns
        # contention into long tail latency.  Other processes on the same file
        # are still kept apart by BEGIN IMMEDIATE and the busy timeout.
        self._write_lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        self._initialise()

    # --- connections and transactions -------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: the sqlite3 module must not open transactions
            # behind our back; we issue BEGIN IMMEDIATE ourselves.
            conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        except sqlite3.OperationalError as error:
            raise DatabaseError(f"cannot open database {self.db_path!r}: {error}") from error
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            conn.execute("PRAGMA foreign_keys = ON")
            # FULL: a commit is on disk before we answer, so an acknowledged write
            # survives power loss as well as a process crash (see docs/adr).
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as error:
            conn.close()
            raise DatabaseError(f"cannot use database {self.db_path!r}: {error}") from error
        conn.row_factory = sqlite3.Row
        return conn

    def _initialise(self) -> None:
        # A connection of its own, closed afterwards rather than pooled: an app
        # built before a server forks its workers must not hand one SQLite
        # connection to several processes.
        conn = self._open()
        try:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:  # refuse before changing anything, even the journal mode
                raise SchemaTooNew(_too_new_message(found, SCHEMA_VERSION))
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise DatabaseError(f"cannot switch {self.db_path!r} to WAL mode (got {mode!r})")
            conn.execute("BEGIN IMMEDIATE")
            try:
                migrate(conn, schema_sql(), MIGRATIONS, SCHEMA_VERSION)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            key = conn.execute("SELECT value FROM settings WHERE name = 'cursor_key'").fetchone()
        except sqlite3.DatabaseError as error:
            raise DatabaseError(f"cannot use database {self.db_path!r}: {error}") from error
        finally:
            conn.close()
        self.cursor_key = bytes.fromhex(key["value"])

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise DatabaseError("the repository is closed")
        with self._pool_lock:
            if self._pid != os.getpid():
                # Forked since these were opened: they belong to the parent process.
                self._idle, self._pid = [], os.getpid()
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._open()
        reusable = False
        try:
            yield conn
            reusable = not conn.in_transaction
        except sqlite3.Error:
            raise  # the connection may be what failed: never hand it out again
        except BaseException:
            # Domain errors (not found, invalid transition) leave the connection
            # as good as it was, unless they interrupted a transaction.
            reusable = not conn.in_transaction
            raise
        finally:
            if reusable and not self._closed:
                with self._pool_lock:
                    if len(self._idle) < IDLE_CONNECTIONS:
                        self._idle.append(conn)
                        conn = None
            if conn is not None:
                conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed if the block returns, rolled back otherwise.

        :raises DatabaseBusy: another process held the write lock past the busy timeout.
        """
        # Bounded like SQLite's own wait, so a queue of writers in this process
        # cannot hold a request longer than the busy timeout either.
        if not self._write_lock.acquire(timeout=self._busy_timeout_ms / 1000):
            raise DatabaseBusy("other writes of this process held the database past the busy timeout")
        try:
            with self._connection() as conn:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield conn
                        conn.execute("COMMIT")
                    except BaseException:
                        # Never let a failing ROLLBACK hide the error that caused it;
                        # the connection is then discarded by _connection().
                        if conn.in_transaction:
                            with contextlib.suppress(sqlite3.Error):
                                conn.execute("ROLLBACK")
                        raise
                except sqlite3.OperationalError as error:
                    if _is_busy(error):
                        raise DatabaseBusy(str(error)) from error
                    raise
        finally:
            self._write_lock.release()

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn:
            try:
                yield conn
            except sqlite3.OperationalError as error:
                if _is_busy(error):
                    raise DatabaseBusy(str(error)) from error
                raise

    def close(self) -> None:
        """Close every pooled connection; later calls fail with DatabaseError."""
        self._closed = True
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # --- queries -----------------------------------------------------------

    def ping(self) -> None:
        """A real round trip to the database file.

        :raises DatabaseError: or sqlite3.Error when the database cannot answer.
        """
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

    def list_deployments(self, query: ListQuery) -> tuple[list[Deployment], bool]:
        """One page of deployments, newest first, and whether more follow it."""
        sql, parameters = listing_sql(query)
        with self._read() as conn:
            rows = conn.execute(sql, parameters).fetchall()
        return [_row_to_deployment(row) for row in rows[:query.limit]], len(rows) > query.limit

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
        the last id it saw misses nothing and sees nothing twice.
        """
        conditions, parameters = ["e.id > ?"], [after]
        for column, value in (("d.service", service), ("d.environment", environment), ("e.type", event_type)):
            if value is not None:
                conditions.append(f"{column} = ?")
                parameters.append(value)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM deployment_events e"
                " JOIN deployments d ON d.id = e.deployment_id"
                f" WHERE {' AND '.join(conditions)} ORDER BY e.id LIMIT ?",
                (*parameters, limit),
            ).fetchall()
        return [_row_to_event(row) for row in rows]


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
        _append_event(self._conn, event)
        return deployment

    def apply_action(self, deployment_id: str, request: ActionRequest) -> Deployment:
        """:raises DeploymentNotFound, lifecycle.InvalidTransition, lifecycle.SelfApproval:"""
        current = _fetch_deployment(self._conn, deployment_id)
        sequence = self._conn.execute(
            "SELECT max(sequence) + 1 FROM deployment_events WHERE deployment_id = ?",
            (deployment_id,),
        ).fetchone()[0]
        updated, event = lifecycle.apply_action(current, request, sequence, self._clock())
        self._conn.execute(
            "UPDATE deployments SET status = ?, reviewed_by = ?, reviewed_at = ?, updated_at = ? WHERE id = ?",
            (updated.status, updated.reviewed_by, updated.reviewed_at, updated.updated_at, deployment_id),
        )
        _append_event(self._conn, event)
        return updated

    def stored_response(self, key: str) -> StoredResponse | None:
        """The response stored under an idempotency key within its retention, if any."""
        row = self._conn.execute(
            "SELECT fingerprint, status, body, location FROM idempotency_keys"
            " WHERE key = ? AND created_at >= ?",
            (key, self._retention_cutoff()),
        ).fetchone()
        return StoredResponse(*row) if row else None

    def store_response(self, key: str, response: StoredResponse) -> None:
        """Keep a response for replays of its key; prune a bounded batch of expired keys."""
        cutoff = self._retention_cutoff()
        # A bounded batch per write keeps the cost of pruning flat however many expired.
        self._conn.execute(
            "DELETE FROM idempotency_keys WHERE key IN"
            " (SELECT key FROM idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT ?)",
            (cutoff, IDEMPOTENCY_PRUNE_BATCH),
        )
        # REPLACE: an expired key that was not pruned yet is simply reused.
        self._conn.execute(
            "INSERT OR REPLACE INTO idempotency_keys (key, fingerprint, status, body, location, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key, response.fingerprint, response.status, response.body, response.location,
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
    sql = (f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments INDEXED BY {_listing_index(query)}{where}"
           " ORDER BY created_at DESC, id DESC LIMIT ?")
    return sql, [*parameters, query.limit + 1]


def _listing_index(query: ListQuery) -> str:
    indexed = frozenset(c for c in ("service", "environment", "status") if getattr(query, c) is not None)
    if query.requester is not None:
        return "deployments_by_requester"
    return _LISTING_INDEXES[indexed]


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


def _insert_deployment(conn: sqlite3.Connection, deployment: Deployment) -> None:
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


def _append_event(conn: sqlite3.Connection, event: Event) -> Event:
    """Insert the event with its id and its link in the hash chain; return it as stored.

    Only inside a write transaction: the id and the previous hash are read and
    used under the same write lock, so no other writer can slip in between.
    """
    last = conn.execute("SELECT id, hash FROM deployment_events ORDER BY id DESC LIMIT 1").fetchone()
    # AUTOINCREMENT never reuses an id, even one whose row is gone: continue after the highest ever used.
    used = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'deployment_events'").fetchone()
    next_id = max(last["id"] if last else 0, used["seq"] if used else 0) + 1
    stored = dataclasses.replace(event, id=next_id)
    stored = dataclasses.replace(stored, hash=chain.event_hash(stored, last["hash"] if last else chain.GENESIS))
    conn.execute(
        "INSERT INTO deployment_events (id, deployment_id, sequence, type, actor, note,"
        " from_status, to_status, created_at, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (stored.id, stored.deployment_id, stored.sequence, stored.type, stored.actor, stored.note,
         stored.from_status, stored.to_status, stored.created_at, stored.hash),
    )
    return stored


def _row_to_deployment(row: sqlite3.Row) -> Deployment:
    return Deployment(
        id=row["id"], service=row["service"], environment=row["environment"],
        version=row["version"], requester=row["requester"],
        work_refs=tuple(json.loads(row["work_refs"])), risk=row["risk"],
        rollback_plan=row["rollback_plan"], status=row["status"],
        reviewed_by=row["reviewed_by"], reviewed_at=row["reviewed_at"],
        created_at=row["created_at"], updated_at=row["updated_at"],
    )


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
