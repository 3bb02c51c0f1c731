"""Webhook deliveries in the database: each webhook's position, its attempts, and the deliverer's lease.

The statements of webhook_positions and webhook_deliverer (schema.sql,
version 9), for the deliverer (deployapi/delivery.py) and for GET /webhooks.
Every write of the deliverer names the lease holder and changes nothing
unless that holder still has the lease, so a deliverer that lost it (it was
paused past its expiry and another took over) cannot move a position.
Those writes are not durable (Database._write): one lost to a power cut
means an event delivered again, which at-least-once delivery allows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..lifecycle import Event
from ..webhooks import Webhook
from .connections import Database
from .rows import EVENT_COLUMNS, row_to_event


@dataclass(frozen=True)
class WebhookPosition:
    """Where one webhook has got to, and how its attempts at the next event went."""

    name: str
    delivered_through: int
    failed_attempts: int = 0
    last_attempt_at: str | None = None
    last_error: str | None = None
    next_attempt_at: str | None = None


@dataclass(frozen=True)
class WebhookStatus:
    """One item of GET /webhooks: the position and the matching events after it."""

    position: WebhookPosition
    pending: int
    # When the oldest of those events was created (GET /metrics: the webhook's lag); None when none is
    # pending, or when not asked for.
    oldest_pending_at: str | None = None


@dataclass(frozen=True)
class Lease:
    """The row of webhook_deliverer: who delivers, since when, until when (Unix seconds) unless renewed."""

    holder: str
    host: str
    pid: int
    since: str
    expires_at: float


@dataclass(frozen=True)
class PendingEvent:
    """An event after a position, with what a webhook's filters look at."""

    event: Event
    service: str
    environment: str


class Deliveries:
    """The webhook tables of one database, through its connections and write lock."""

    def __init__(self, database: Database):
        self._db = database

    # --- positions ------------------------------------------------------------------

    def register(self, names: Iterable[str], now: str) -> None:
        """Give every webhook that has no position yet one at the newest event: it is sent what comes next."""
        with self._db._write() as conn:
            head = conn.execute("SELECT coalesce(max(id), 0) FROM deployment_events").fetchone()[0]
            conn.executemany(
                "INSERT OR IGNORE INTO webhook_positions (name, delivered_through, registered_at) VALUES (?, ?, ?)",
                [(name, head, now) for name in names])

    def position(self, name: str) -> WebhookPosition:
        """:raises LookupError: the webhook was never registered."""
        with self._db._read() as conn:
            row = conn.execute(f"SELECT {_POSITION_COLUMNS} FROM webhook_positions WHERE name = ?",
                               (name,)).fetchone()
        if row is None:
            raise LookupError(f"webhook {name!r} has no position")
        return WebhookPosition(*row)

    def events_after(self, after: int, limit: int) -> list[PendingEvent]:
        """Up to ``limit`` events with ids above ``after``, in id order, each with its deployment's scope."""
        with self._db._read() as conn:
            rows = conn.execute(
                f"SELECT {EVENT_COLUMNS}, d.service, d.environment FROM deployment_events e"
                " JOIN deployments d ON d.id = e.deployment_id WHERE e.id > ? ORDER BY e.id LIMIT ?",
                (after, limit)).fetchall()
        return [PendingEvent(row_to_event(row), row["service"], row["environment"]) for row in rows]

    def record_delivered(self, name: str, through: int, holder: str, at: str | None) -> bool:
        """Move the position to ``through``; ``at`` is the time of the 2xx that acknowledged it (None when
        ``through`` passes only events the webhook does not match).  False, and no change, when ``holder``
        no longer holds the lease, or the position is already there or past it (another deliverer got there
        while this one did not hold the lease): either way the caller reads the position again."""
        with self._db._write(durable=False) as conn:
            cursor = conn.execute(
                "UPDATE webhook_positions SET delivered_through = ?, failed_attempts = 0, last_error = NULL,"
                " next_attempt_at = NULL, last_attempt_at = coalesce(?, last_attempt_at)"
                f" WHERE name = ? AND delivered_through < ? AND {_HOLDS_LEASE}",
                (through, at, name, through, holder))
            return cursor.rowcount == 1

    def record_failure(self, name: str, failed_attempts: int, error: str, at: str, next_attempt_at: str,
                       holder: str) -> bool:
        """Record a failed attempt at the next event.  False, and no change, when ``holder`` lost the lease."""
        with self._db._write(durable=False) as conn:
            cursor = conn.execute(
                "UPDATE webhook_positions SET failed_attempts = ?, last_error = ?, last_attempt_at = ?,"
                f" next_attempt_at = ? WHERE name = ? AND {_HOLDS_LEASE}",
                (failed_attempts, error, at, next_attempt_at, name, holder))
            return cursor.rowcount == 1

    def statuses(self, webhooks: Sequence[Webhook], *, oldest_pending: bool = False) -> list[WebhookStatus]:
        """Each webhook's position and how many events it matches after it, in one read transaction; with
        ``oldest_pending``, also when the first of those was created."""
        statuses = []
        with self._db._read() as conn:
            conn.execute("BEGIN")
            try:
                for hook in webhooks:
                    row = conn.execute(f"SELECT {_POSITION_COLUMNS} FROM webhook_positions WHERE name = ?",
                                       (hook.name,)).fetchone()
                    position = WebhookPosition(*row) if row else WebhookPosition(hook.name, 0)
                    pending = _pending(conn, hook, position.delivered_through)
                    oldest = _oldest_pending_at(conn, hook, position.delivered_through) \
                        if oldest_pending and pending else None
                    statuses.append(WebhookStatus(position, pending, oldest))
            finally:
                conn.execute("COMMIT")
        return statuses

    # --- the lease ------------------------------------------------------------------

    def lease(self) -> Lease | None:
        with self._db._read() as conn:
            row = conn.execute("SELECT holder, host, pid, since, expires_at FROM webhook_deliverer").fetchone()
        return Lease(*row) if row else None

    def take_lease(self, candidate: Lease, now: float, holder_gone: Callable[[Lease], bool]) -> Lease:
        """Take the lease for ``candidate`` if it is free, expired, ours already, or held by a process that is
        gone (``holder_gone``); renew it when it is ours.  The lease as it is afterwards: whoever holds it."""
        with self._db._write(durable=False) as conn:
            row = conn.execute("SELECT holder, host, pid, since, expires_at FROM webhook_deliverer").fetchone()
            current = Lease(*row) if row else None
            if current is not None and current.holder == candidate.holder:
                candidate = Lease(candidate.holder, candidate.host, candidate.pid, current.since,
                                  candidate.expires_at)
            elif current is not None and current.expires_at > now and not holder_gone(current):
                return current
            conn.execute(
                "INSERT OR REPLACE INTO webhook_deliverer (id, holder, host, pid, since, expires_at)"
                " VALUES (1, ?, ?, ?, ?, ?)",
                (candidate.holder, candidate.host, candidate.pid, candidate.since, candidate.expires_at))
            return candidate

    def release_lease(self, holder: str) -> None:
        """Give the lease up, if ``holder`` has it, so that a waiting deliverer takes over at once."""
        with self._db._write(durable=False) as conn:
            conn.execute("DELETE FROM webhook_deliverer WHERE holder = ?", (holder,))


_POSITION_COLUMNS = "name, delivered_through, failed_attempts, last_attempt_at, last_error, next_attempt_at"
_HOLDS_LEASE = "EXISTS (SELECT 1 FROM webhook_deliverer WHERE holder = ?)"


def _pending(conn, hook: Webhook, after: int) -> int:
    source, parameters = _matching_after(hook, after)
    return conn.execute(f"SELECT count(*) {source}", parameters).fetchone()[0]


def _oldest_pending_at(conn, hook: Webhook, after: int) -> str | None:
    source, parameters = _matching_after(hook, after)
    row = conn.execute(f"SELECT e.created_at {source} ORDER BY e.id LIMIT 1", parameters).fetchone()
    return None if row is None else row[0]


def _matching_after(hook: Webhook, after: int) -> tuple[str, list]:
    """FROM … WHERE … of the events after ``after`` that ``hook`` matches, and its parameters."""
    conditions, parameters = ["e.id > ?"], [after]
    for column, allowed in (("e.type", hook.types), ("d.service", hook.services),
                            ("d.environment", hook.environments)):
        if allowed is not None:
            conditions.append(f"{column} IN (SELECT value FROM json_each(?))")
            parameters.append(json.dumps(sorted(allowed)))
    # Without a service or environment filter the events are a range of their rowids alone.
    join = "" if hook.services is None and hook.environments is None else \
        " JOIN deployments d ON d.id = e.deployment_id"
    return f"FROM deployment_events e{join} WHERE {' AND '.join(conditions)}", parameters
