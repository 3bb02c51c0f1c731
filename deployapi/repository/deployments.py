"""Deployments and their events: the Repository's reads and writes, and idempotency storage.

Current state lives in ``deployments``; history in the append-only
``deployment_events``.  Every write is one ``BEGIN IMMEDIATE`` transaction that
changes the deployment row and appends its event together, so state and history
can never disagree.  Reads of current state never replay events.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from .. import chain, lifecycle
from ..ids import new_deployment_id
from ..insights import IN_FLIGHT_SHOWN, DoraMetrics, DoraQuery, EnvironmentsQuery, EnvironmentState, durations
from ..lifecycle import ActionRequest, Deployment, Event, NewDeployment
from ..listing import ListQuery, Position
from ..policy import Policy, default_policy
from .connections import Clock, Database
from .insights_sql import DORA_SQL, ENVIRONMENTS_SQL, rows_to_environment_state
from .pages import (
    SINCE_FIRST_ID_SQL,
    SINCE_PROBE_SQL,
    UPDATED_RANGE_PROBE,
    feed_sql,
    listing_sql,
    scoped_feed_sql,
    updated_range_probe_sql,
)
from .rows import (
    DEPLOYMENT_COLUMNS,
    DEPLOYMENT_DOCUMENT,
    EVENT_COLUMNS,
    approvals_json,
    links_json,
    row_to_deployment,
    row_to_event,
)

T = TypeVar("T")

# Idempotency keys answer replays for at least this long; older ones are
# pruned a batch at a time by later idempotent writes.
IDEMPOTENCY_RETENTION = timedelta(hours=24)
IDEMPOTENCY_PRUNE_BATCH = 100

# The rules a write is judged by when its caller names none: those of a server without a configuration file.
V1_POLICY = default_policy()


class DeploymentNotFound(LookupError):
    """No deployment has the given id."""

    def __init__(self, deployment_id: str):
        super().__init__(f"no deployment has the id {deployment_id!r}")
        self.deployment_id = deployment_id


class Repository(Database):
    """Deployments and their events in one SQLite file.

    Thread-safe: each thread reads on a connection of its own, opened on its first call,
    and the writes share one.  Call :meth:`close` to close them all.
    """

    _commit_listeners: tuple[Callable[[], None], ...] = ()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[WriteTransaction]:
        """One ``BEGIN IMMEDIATE`` transaction for several writes that must stand or fall together.

        :raises DatabaseBusy: the database stayed locked past the busy timeout.
        """
        with self._write() as conn:
            yield WriteTransaction(conn, self._clock)
        self._committed()

    def write(self, operation: Callable[[WriteTransaction], T]) -> T:
        """``operation`` in a write transaction, committed with the writes other threads make at the same time.

        The cheaper way to write when the writes are independent of one
        another (ADR 0022): the writes that queue for the database meanwhile
        share one transaction and one fsync.  ``operation`` runs on whichever
        thread leads the group, maybe more than once (when its group fails as
        a whole, each write runs again alone), so it must do nothing but its
        writes through ``tx`` and return what they give; an error it raises
        undoes its own writes only, and is raised here.

        :raises DatabaseBusy: the database stayed locked past the busy timeout.
        """
        result = self._write_grouped(lambda conn: operation(WriteTransaction(conn, self._clock)))
        self._committed()
        return result

    def _committed(self) -> None:
        for listener in self._commit_listeners:
            listener()

    def add_commit_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the writing thread, so it must be quick) after each committed transaction() or write().

        How a deliverer in the same process hears of new events at once, instead of at its next poll.
        """
        self._commit_listeners = (*self._commit_listeners, listener)

    def create_deployment(self, request: NewDeployment, policy: Policy = V1_POLICY) -> Deployment:
        """Store a new deployment and its ``created`` event in one transaction, under ``policy``."""
        return self.write(lambda tx: tx.create_deployment(request, policy))

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
                    f"SELECT {EVENT_COLUMNS} FROM deployment_events e WHERE e.deployment_id = ? ORDER BY e.sequence",
                    (deployment_id,),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        return [row_to_event(row) for row in rows]

    def list_events_page(self, deployment_id: str, after: int, limit: int) -> EventPage:
        """Up to ``limit`` of the deployment's events with a sequence above ``after``, oldest first.

        A deployment's sequence numbers are given out in its write
        transactions, one more each time, so a reader that resumes after the
        last sequence it saw misses nothing and sees nothing twice while events
        are appended.  One seek of the (deployment_id, sequence) key.

        :raises DeploymentNotFound:
        """
        with self._read() as conn:
            # One read transaction, so the existence check and the events agree.
            conn.execute("BEGIN")
            try:
                _fetch_deployment(conn, deployment_id)
                rows = conn.execute(
                    f"SELECT {EVENT_COLUMNS} FROM deployment_events e WHERE e.deployment_id = ? AND e.sequence > ?"
                    " ORDER BY e.sequence LIMIT ?",
                    (deployment_id, after, limit + 1),  # one more, to tell whether another page follows
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        events = [row_to_event(row) for row in rows[:limit]]
        return EventPage(events, events[-1].sequence if len(rows) > limit else None)

    def list_deployments(self, query: ListQuery) -> ListingPage:
        """One page of deployments, newest first, as the API's JSON objects rendered by SQLite."""
        with self._read() as conn:
            probe = updated_range_probe_sql(query)
            narrow = probe is not None and conn.execute(*probe).fetchone()[0] < UPDATED_RANGE_PROBE
            rows = conn.execute(*listing_sql(query, updated_range_is_narrow=narrow)).fetchall()
        page = rows[:query.limit]
        more = len(rows) > query.limit
        return ListingPage([row[2] for row in page], Position(page[-1][0], page[-1][1]) if more else None)

    def list_environments(self, query: EnvironmentsQuery) -> list[EnvironmentState]:
        """What is live in every (service, environment) that has a deployment, ordered by both names."""
        with self._read() as conn:
            rows = conn.execute(ENVIRONMENTS_SQL, (query.service, query.environment, IN_FLIGHT_SHOWN)).fetchall()
        # One row per in-flight deployment shown (or one row when none is), pair by pair.
        pairs = itertools.groupby(rows, key=lambda row: (row["service"], row["environment"]))
        return [rows_to_environment_state(list(pair_rows)) for _, pair_rows in pairs]

    def dora_metrics(self, query: DoraQuery) -> DoraMetrics:
        """The DORA metrics of the query's scope and window (see docs/metrics.md), from deployment_steps."""
        with self._read() as conn:
            values = dict(conn.execute(DORA_SQL, (query.service, query.environment, query.since, query.until)))
        # Integer microseconds in, seconds out: us / 1e6 is the double the SQL's division made.
        seconds = {metric: [us / 1e6 for us in json.loads(values[metric]) if us is not None]
                   for metric in ("time_to_restore", "approval_lead_time", "deploy_duration", "lead_time_for_changes")}
        succeeded, started, failed_changes = values["succeeded"], values["started"], values["failed_changes"]
        return DoraMetrics(
            query=query, succeeded=succeeded, started=started, failed_changes=failed_changes,
            unrestored_failures=json.loads(values["time_to_restore"]).count(None),
            # An empty window (since == until) holds no success: 0.0, as any window without one.
            deployment_frequency_per_day=succeeded / values["window_days"] if succeeded else 0.0,
            change_failure_rate=failed_changes / started if started else None,
            time_to_restore=durations(seconds["time_to_restore"]),
            approval_lead_time=durations(seconds["approval_lead_time"]),
            deploy_duration=durations(seconds["deploy_duration"]),
            lead_time_for_changes=durations(seconds["lead_time_for_changes"]),
        )

    def apply_action(self, deployment_id: str, request: ActionRequest, policy: Policy = V1_POLICY) -> Deployment:
        """Read, check and change the deployment and append its event, all in one transaction.

        :raises DeploymentNotFound:
        :raises lifecycle.DomainError: the action breaks the lifecycle or ``policy`` (see lifecycle.apply_action).
        """
        return self.write(lambda tx: tx.apply_action(deployment_id, request, policy))

    def event_head(self) -> Event | None:
        """The latest event, whose hash seals the whole history before it; None when there is none."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM deployment_events e ORDER BY e.id DESC LIMIT 1").fetchone()
        return row_to_event(row) if row else None

    def status_counts(self) -> tuple[dict[str, int], int]:
        """The number of deployments in each status (statuses without any left out), and the newest event's id
        (0 before the first), read in one snapshot.

        Reads every entry of the status index: linear in the deployments (docs/performance.md, "GET /metrics").
        """
        with self._read() as conn:
            conn.execute("BEGIN")
            try:
                counts = dict(conn.execute("SELECT status, count(*) FROM deployments GROUP BY status").fetchall())
                head = conn.execute("SELECT coalesce(max(id), 0) FROM deployment_events").fetchone()[0]
            finally:
                conn.execute("COMMIT")
        return counts, head

    def status_changes_after(self, after: int) -> tuple[list[tuple[str | None, str, int]], int]:
        """How the events with ids above ``after`` moved deployments between statuses, as ``(from_status,
        to_status, events)`` (``from_status`` None for creations), and the newest event's id, in one snapshot.

        Every change of a deployment's status appends its event in the same transaction, and ids follow commit
        order: counts read once (:meth:`status_counts`) plus these changes are the counts now, at the cost of
        the events since.
        """
        with self._read() as conn:
            conn.execute("BEGIN")
            try:
                changes = conn.execute(
                    "SELECT from_status, to_status, count(*) FROM deployment_events WHERE id > ?"
                    " GROUP BY from_status, to_status", (after,)).fetchall()
                head = conn.execute("SELECT coalesce(max(id), 0) FROM deployment_events").fetchone()[0]
            finally:
                conn.execute("COMMIT")
        return [tuple(change) for change in changes], head

    def list_events_after(self, after: int, limit: int, *, since: str | None = None, service: str | None = None,
                          environment: str | None = None, event_type: str | None = None) -> list[Event]:
        """Events of every deployment with ids above ``after``, in id (= commit) order.

        Ids are assigned inside the single writing transaction, so every
        snapshot holds a gap-free prefix of them: a reader that resumes after
        the last id it saw misses nothing and sees nothing twice.  A page
        narrowed by service or environment is read from deployment_event_scopes.
        ``since`` (a canonical timestamp) keeps the events created at or after it.
        """
        scope = {name: value for name, value in (("service", service), ("environment", environment))
                 if value is not None}
        with self._read() as conn:
            if since is None:
                rows = self._feed_page(conn, after, limit, scope, event_type, None)
            else:
                # One read transaction, so that the bound and the page see the same events.
                conn.execute("BEGIN")
                try:
                    rows = self._feed_page(conn, _since_bound(conn, after, since), limit, scope, event_type, since)
                finally:
                    conn.execute("COMMIT")
        return [row_to_event(row) for row in rows]

    @staticmethod
    def _feed_page(conn: sqlite3.Connection, after: int, limit: int, scope: dict[str, str],
                   event_type: str | None, since: str | None) -> list[sqlite3.Row]:
        if scope:
            sql, parameters = scoped_feed_sql(after, limit, scope, event_type, since)
        else:
            sql, parameters = feed_sql(after, limit, event_type, since)
        return conn.execute(sql, parameters).fetchall()

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
                f"SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id IN (SELECT value FROM json_each(?))",
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
                # does, that the clock never steps back), where the smallest success
                # id per service and environment would read every success.
                "         AND earlier.created_at <= e.created_at"
                "         AND success.type = ? AND success.id < e.id)",
                (json.dumps(successes), lifecycle.SUCCEEDED),
            )} if successes else set()
        deployments = {row["id"]: row_to_deployment(row) for row in rows}
        return {e.id: (deployments[e.deployment_id], e.id in first_successes) for e in events if e.id is not None}


@dataclass(frozen=True)
class EventPage:
    """One page of a deployment's history, and the sequence the next page starts after (None on the last)."""

    events: list[Event]
    next_after: int | None


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

    def create_deployment(self, request: NewDeployment, policy: Policy = V1_POLICY) -> Deployment:
        now = self._clock()
        deployment, event = lifecycle.new_deployment(
            new_deployment_id(now), request, now, rules=policy.for_environment(request.environment),
            policy_digest=policy.digest)
        _insert_deployment(self._conn, deployment)
        _append_event(self._conn, event, _chain_head(self._conn), chain.creation_content(deployment))
        return deployment

    def apply_action(self, deployment_id: str, request: ActionRequest, policy: Policy = V1_POLICY) -> Deployment:
        """:raises DeploymentNotFound, lifecycle.DomainError:"""
        # One statement for everything the action reads: the deployment, its
        # next sequence number and the chain's head.
        row = self._conn.execute(
            f"SELECT {DEPLOYMENT_COLUMNS},"
            " (SELECT max(sequence) + 1 FROM deployment_events WHERE deployment_id = deployments.id),"
            f" {_CHAIN_HEAD_COLUMNS} FROM deployments WHERE id = ?", (deployment_id,)).fetchone()
        if row is None:
            raise DeploymentNotFound(deployment_id)
        current, sequence, head = row_to_deployment(row), row[-4], tuple(row[-3:])
        rules = policy.for_environment(current.environment)
        blocking = None
        if rules.exclusive and request.action == "start":
            # Read under this transaction's write lock, so that of concurrent
            # starts exactly one finds no other deployment started.
            blocking = self._started_deployment(current.service, current.environment)
        updated, event = lifecycle.apply_action(current, request, sequence, self._clock(), rules=rules,
                                                policy_digest=policy.digest, blocking_deployment_id=blocking)
        self._conn.execute(
            "UPDATE deployments SET status = ?, reviewed_by = ?, reviewed_at = ?, updated_at = ?, approvals = ?,"
            " rolled_back_to = ? WHERE id = ?",
            (updated.status, updated.reviewed_by, updated.reviewed_at, updated.updated_at,
             approvals_json(updated.approvals), updated.rolled_back_to, deployment_id),
        )
        _append_event(self._conn, event, head)
        return updated

    def _started_deployment(self, service: str, environment: str) -> str | None:
        """A deployment of ``service`` that is started in ``environment``, if any."""
        row = self._conn.execute(
            "SELECT id FROM deployments WHERE service = ? AND environment = ? AND status = ? ORDER BY id LIMIT 1",
            (service, environment, lifecycle.STARTED)).fetchone()
        return row[0] if row else None

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


def _since_bound(conn: sqlite3.Connection, after: int, since: str) -> int:
    """An id at or above ``after`` below which no event after ``after`` was created at or after ``since``.

    The feed with ``since`` reads ids from there: the events it passes over
    were all created earlier, so raising ``after`` to it skips none of the
    page, whatever order the clock gave created_at (pages.SINCE_PROBE_SQL).
    """
    earliest, head = conn.execute(SINCE_PROBE_SQL, (since,)).fetchone()
    if earliest is None:
        # Nothing was created at or after since yet: every later event gets a larger id than head.
        return max(after, head or 0)
    if earliest - after <= head - earliest:
        # Reading ids from after passes over about earliest - after events
        # created too early (none once a reader is past them): no more than
        # the index range from since that the exact bound would read.
        return after
    # Not null: the range from since holds earliest.  (No `id > after` in
    # that read: a test on each entry of the range, and max() does the same.)
    return max(after, conn.execute(SINCE_FIRST_ID_SQL, (since,)).fetchone()[0] - 1)


def _fetch_deployment(conn: sqlite3.Connection, deployment_id: str) -> Deployment:
    row = conn.execute(
        f"SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ?", (deployment_id,)
    ).fetchone()
    if row is None:
        raise DeploymentNotFound(deployment_id)
    return row_to_deployment(row)


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
    # fourteen indexes that often passes the journal's 64 KiB in memory and goes
    # to a temporary file, created, written and deleted inside the write lock.
    # A separate SELECT of the chain head is cheaper (docs/performance.md).
    conn.execute(
        "INSERT INTO deployments (id, service, environment, version, requester,"
        " work_refs, risk, rollback_plan, status, reviewed_by, reviewed_at,"
        " created_at, updated_at, required_approvals, approvals, policy_digest, commit_sha, repository, ref,"
        " committed_at, links, labels)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (deployment.id, deployment.service, deployment.environment, deployment.version,
         deployment.requester, json.dumps(list(deployment.work_refs)), deployment.risk,
         deployment.rollback_plan, deployment.status, deployment.reviewed_by,
         deployment.reviewed_at, deployment.created_at, deployment.updated_at,
         deployment.required_approvals, approvals_json(deployment.approvals), deployment.policy_digest,
         deployment.commit_sha, deployment.repository, deployment.ref, deployment.committed_at,
         links_json(deployment.links), json.dumps(dict(deployment.labels), ensure_ascii=False)),
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
        " from_status, to_status, created_at, hash, details, policy_digest)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (event_id, event.deployment_id, event.sequence, event.type, event.actor, event.note,
         event.from_status, event.to_status, event.created_at,
         chain.link_hash(event, event_id, last_hash or chain.GENESIS, content),
         json.dumps(event.details, ensure_ascii=False) if event.details is not None else None,
         event.policy_digest),
    )

