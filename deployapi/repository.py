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
import os
import sqlite3
import threading
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

BUSY_TIMEOUT_MS = 5000
# A checkpoint every ~40 MB of WAL rather than SQLite's ~4 MB: a create
# writes ~20 pages, so the default stalled the write queue for a checkpoint
# every ~50 commits, each copying mostly the same hot index pages again
# (ADR 0007).
WAL_AUTOCHECKPOINT_PAGES = 10_000
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


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error, the original error kept.

    A failing ROLLBACK never hides the error that caused it; a connection left
    in a transaction is discarded by Repository._connection().
    """
    conn.execute("BEGIN IMMEDIATE")
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

    Thread-safe: each thread uses a connection of its own, opened on its first call.
    Call :meth:`close` to close them all.
    """

    def __init__(self, db_path: str | Path, *, clock: Clock = utc_now,
                 busy_timeout_ms: int = BUSY_TIMEOUT_MS):
        self.db_path = str(db_path)
        self._clock = clock
        self._busy_timeout_ms = busy_timeout_ms
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
        self._closed = False
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
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
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
        # A connection of its own, closed afterwards rather than kept: an app
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
            with _immediate(conn):
                migrate(conn, schema_sql(), MIGRATIONS, SCHEMA_VERSION)
            key = conn.execute("SELECT value FROM settings WHERE name = 'cursor_key'").fetchone()
        except sqlite3.DatabaseError as error:
            raise DatabaseError(f"cannot use database {self.db_path!r}: {error}") from error
        finally:
            conn.close()
        self.cursor_key = bytes.fromhex(key["value"])

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, kept between calls; discarded after an SQLite error."""
        if self._closed:
            raise DatabaseError("the repository is closed")
        held = getattr(self._local, "connection", None)
        if held is not None and held.in_use:
            # A call made while this thread's connection is busy (a read
            # inside a write's transaction) gets a connection of its own.
            yield from _one_off(self._open())
            return
        if held is None or held.pid != os.getpid():
            held = self._local.connection = self._keep(self._open())
        held.in_use = True
        keep = False
        try:
            yield held.conn
            keep = True
        except sqlite3.Error:
            raise  # the connection may be what failed: never use it again
        except BaseException:
            keep = True  # a domain error (not found, invalid transition) leaves it as good as it was
            raise
        finally:
            held.in_use = False
            # Left in a transaction only if something interrupted one.
            if not keep or held.conn.in_transaction:
                self._discard(held)

    def _keep(self, conn: sqlite3.Connection) -> _ThreadConnection:
        held = _ThreadConnection(conn)
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

        :raises DatabaseBusy: another process held the write lock past the busy timeout.
        """
        # Bounded like SQLite's own wait, so a queue of writers in this process
        # cannot hold a request longer than the busy timeout either.
        if not self._write_lock.acquire(timeout=self._busy_timeout_ms / 1000):
            raise DatabaseBusy("other writes of this process held the database past the busy timeout")
        try:
            with self._connection() as conn:
                try:
                    with _immediate(conn):
                        yield conn
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
        """Close every thread's connection; later calls fail with DatabaseError."""
        self._closed = True
        with self._threads_lock:
            held, self._threads = list(self._threads), weakref.WeakSet()
        for connection in held:
            connection.close()
        self._fold_wal_back()

    def _fold_wal_back(self) -> None:
        # SQLite copies the WAL into the file and removes it when the last
        # connection closes, if that close gets the file to itself.  Worker
        # threads that end together close their connections together, and then
        # no close is the last: the WAL stayed after 1-3 of 6 clean stops.  One
        # more connection, closed after theirs, is the last.
        with contextlib.suppress(sqlite3.Error):
            # mode=rw: never create a file that is gone by now; timeout=0: never
            # hold up a shutdown for another process.
            conn = sqlite3.connect(Path(self.db_path).resolve().as_uri() + "?mode=rw", uri=True, timeout=0)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
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
        """The DORA metrics of the query's scope and window (see docs/metrics.md).

        Read from deployment_steps, or from the events themselves while it does
        not hold them all (a database made before it, not yet backfilled).
        """
        with self._read() as conn:
            sql = _DORA_SQL if _derived_rows_cover(conn, 0) else _DORA_FROM_EVENTS_SQL
            values = dict(conn.execute(sql, (query.service, query.environment, query.since, query.until)))
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
        narrowed by service or environment is read from deployment_event_scopes
        once that holds every event after ``after``.
        """
        scope = {name: value for name, value in (("service", service), ("environment", environment))
                 if value is not None}
        with self._read() as conn:
            if scope and _derived_rows_cover(conn, after):
                sql, parameters = _scoped_feed_sql(after, limit, scope, event_type)
            else:
                sql, parameters = _feed_sql(after, limit, scope, event_type)
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

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        # After a fork the child must not use its parent's connections.
        self.pid = os.getpid()
        self.in_use = False
        self.close = weakref.finalize(self, conn.close)


def _one_off(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    try:
        yield conn
    finally:
        conn.close()


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
        _append_event(self._conn, event, _chain_head(self._conn))
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
# The answers are those of _DORA_FROM_EVENTS_SQL (docs/metrics.md).
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


# The same answers from the events themselves, for a database whose older
# events deployment_steps does not hold yet (see _derived_rows_cover).  Every
# event a metric needs belongs to a deployment whose last event (updated_at)
# is at or after `since`, and which is neither pending nor rejected; those
# deployments are found by index and their events by the (deployment_id,
# sequence) index.  So a window in the past also reads every deployment
# changed after it.
_DORA_FROM_EVENTS_SQL = f"""
WITH RECURSIVE
parameters (service, environment, since, until) AS (VALUES (?, ?, ?, ?)),
{_SCOPE_CTE},
touched AS (
    SELECT d.id, d.service, d.environment
    FROM scope CROSS JOIN parameters
    CROSS JOIN deployments AS d INDEXED BY deployments_by_service_environment_status_updated
    WHERE d.service = scope.service AND d.environment = scope.environment
      AND d.status IN ('approved', 'started', 'succeeded', 'failed', 'rolled_back')
      AND d.updated_at >= parameters.since
),
-- One row per deployment: when each step happened (each happens at most once).
-- Stored timestamps are fixed-width UTC, so text order is time order.
lifecycles AS (
    SELECT touched.service, touched.environment,
        max(CASE WHEN e.type = 'created' THEN e.created_at END) AS created_at,
        max(CASE WHEN e.type = 'approved' THEN e.created_at END) AS approved_at,
        max(CASE WHEN e.type = 'started' THEN e.created_at END) AS started_at,
        max(CASE WHEN e.from_status = 'started' THEN e.created_at END) AS finished_at,
        max(CASE WHEN e.type = 'succeeded' THEN e.created_at END) AS succeeded_at,
        min(CASE WHEN e.type IN ('failed', 'rolled_back') THEN e.created_at END) AS failed_at
    FROM touched JOIN deployment_events AS e ON e.deployment_id = touched.id
    GROUP BY touched.id
),
outcomes (service, environment, at, is_success) AS (
    SELECT service, environment, succeeded_at, 1 FROM lifecycles WHERE succeeded_at IS NOT NULL
    UNION ALL
    SELECT service, environment, failed_at, 0 FROM lifecycles WHERE failed_at IS NOT NULL
),
-- Each failed change and the first success strictly after it on the same
-- service and environment (NULL if none yet).  Newest first, with failures
-- before successes of the same instant, the rows before a failure are exactly
-- the outcomes strictly later than it.
restores AS (
    SELECT at AS failed_at, restored_at FROM (
        SELECT at, is_success, min(CASE WHEN is_success THEN at END) OVER (
            PARTITION BY service, environment ORDER BY at DESC, is_success
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS restored_at
        FROM outcomes)
    WHERE NOT is_success
)
SELECT 'succeeded' AS metric, count(*) AS value FROM lifecycles, parameters
WHERE succeeded_at >= since AND succeeded_at < until
UNION ALL SELECT 'started', count(*) FROM lifecycles, parameters WHERE started_at >= since AND started_at < until
UNION ALL SELECT 'failed_changes', count(*) FROM lifecycles, parameters
WHERE started_at >= since AND started_at < until AND failed_at IS NOT NULL
UNION ALL SELECT 'time_to_restore', json_group_array({_microseconds_between('failed_at', 'restored_at')})
FROM restores, parameters WHERE failed_at >= since AND failed_at < until
UNION ALL SELECT 'approval_lead_time', json_group_array({_microseconds_between('created_at', 'approved_at')})
FROM lifecycles, parameters WHERE approved_at >= since AND approved_at < until
UNION ALL SELECT 'deploy_duration', json_group_array({_microseconds_between('started_at', 'finished_at')})
FROM lifecycles, parameters WHERE finished_at >= since AND finished_at < until
UNION ALL {_WINDOW_DAYS}
"""


def _derived_rows_cover(conn: sqlite3.Connection, after: int) -> bool:
    """Whether deployment_event_scopes and deployment_steps hold every event with an id above ``after``.

    The schema's trigger fills them from the first event appended after it was
    created (the ``derived_from_event`` setting); a database made before has
    older events without rows there until a migration backfills them.  With
    the setting gone, they hold everything.
    """
    return bool(conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM deployment_events WHERE id > ? AND id < ("
        "SELECT CAST(value AS INTEGER) FROM settings WHERE name = 'derived_from_event'))", (after,)).fetchone()[0])


def backfill_derived_rows(conn: sqlite3.Connection) -> None:
    """Give deployment_event_scopes and deployment_steps the events appended before their trigger existed.

    Not called by deployapi itself: the statements for a migration, to run in
    its transaction once the tables and views exist.  The rows come from the
    views the trigger inserts from, so they are the trigger's rows.  It reads
    the events below ``derived_from_event`` (every event while that setting is
    not written yet), skips rows already there, and sets the setting to 1, so
    it can run again harmlessly; afterwards the reads use the tables for every
    event (_derived_rows_cover).
    """
    before = ("coalesce((SELECT CAST(value AS INTEGER) FROM settings WHERE name = 'derived_from_event'),"
              " (SELECT coalesce(max(id), 0) + 1 FROM deployment_events))")
    conn.execute("INSERT OR IGNORE INTO deployment_event_scopes (service, environment, type, event_id)"
                 " SELECT service, environment, type, event_id FROM deployment_event_scope_rows"
                 f" WHERE event_id < {before}")
    conn.execute("INSERT OR IGNORE INTO deployment_steps"
                 " (service, environment, step, at, event_id, from_at, microseconds)"
                 " SELECT service, environment, step, at, event_id, from_at, microseconds FROM deployment_step_rows"
                 f" WHERE event_id < {before}")
    conn.execute("INSERT OR REPLACE INTO settings (name, value) VALUES ('derived_from_event', '1')")


def _feed_sql(after: int, limit: int, scope: dict[str, str], event_type: str | None) -> tuple[str, list[object]]:
    """SQL for a page of the feed read from the events in id order, each joined to its deployment.

    With a type and no scope, one range of deployment_events_by_type.  With a
    scope, each event is checked against its deployment: the fallback for
    events that deployment_event_scopes does not hold.  (The join also keeps
    out an event whose deployment is gone, which only a hand edit can make,
    as the scoped read does: such an event has no scope row.)
    """
    conditions, parameters = ["e.id > ?"], [after]
    for column, value in (("d.service", scope.get("service")), ("d.environment", scope.get("environment")),
                          ("e.type", event_type)):
        if value is not None:
            conditions.append(f"{column} = ?")
            parameters.append(value)
    by_type = " INDEXED BY deployment_events_by_type" if event_type is not None and not scope else ""
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


def _append_event(conn: sqlite3.Connection, event: Event, head: ChainHead) -> None:
    """Insert the event with its id and its link in the hash chain.

    Only inside a write transaction, with ``head`` read in that transaction: the
    id and the previous hash are read and used under the same write lock, so no
    other writer can slip in between.
    """
    last_id, last_hash, used = head
    event_id = max(last_id or 0, used or 0) + 1
    conn.execute(
        "INSERT INTO deployment_events (id, deployment_id, sequence, type, actor, note,"
        " from_status, to_status, created_at, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (event_id, event.deployment_id, event.sequence, event.type, event.actor, event.note,
         event.from_status, event.to_status, event.created_at,
         chain.link_hash(event, event_id, last_hash or chain.GENESIS)),
    )


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
