"""``deployapi check``: SQLite's own checks plus the invariants that tie state to history.

Read-only SQL against the schema in schema.sql, run in one read transaction so
every check sees the same snapshot, even while a server keeps writing.  Each
check returns the ids of the deployments that break it, so an operator can go
straight to them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from . import chain, lifecycle
from .lifecycle import Event

# How many offending ids a report lists per check.
SHOWN_IDS = 20


@dataclass(frozen=True)
class CheckResult:
    name: str
    offenders: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.offenders


@dataclass(frozen=True)
class Report:
    path: str
    deployments: int | str  # "?" when a damaged file cannot be counted
    events: int | str
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def lines(self) -> list[str]:
        """A human-readable summary, one line per check and a verdict."""
        out = []
        for result in self.results:
            if result.ok:
                out.append(f"ok      {result.name}")
            else:
                shown = ", ".join(result.offenders[:SHOWN_IDS])
                more = f" (+{len(result.offenders) - SHOWN_IDS} more)" if len(result.offenders) > SHOWN_IDS else ""
                out.append(f"FAILED  {result.name}: {len(result.offenders)} — {shown}{more}")
        failed = sum(not r.ok for r in self.results)
        verdict = "all checks passed" if not failed else f"{failed} of {len(self.results)} checks failed"
        out.append(f"{self.path}: {self.deployments} deployments, {self.events} events; {verdict}")
        return out


def _legal_transitions() -> list[tuple[str, str, str]]:
    return [
        (from_status, t.event_type, t.to_status)
        for t in lifecycle.TRANSITIONS.values()
        for from_status in sorted(t.from_statuses)
    ]


# name -> query returning the offending deployment ids.  Each is a plain read of
# schema.sql's tables; "legal" is the transition table of lifecycle.py, supplied
# as a common table expression.
DOMAIN_CHECKS: dict[str, str] = {
    "every deployment has its created event": """
        SELECT d.id FROM deployments d
        WHERE NOT EXISTS (
            SELECT 1 FROM deployment_events e
            WHERE e.deployment_id = d.id AND e.sequence = 1 AND e.type = 'created'
              AND e.from_status IS NULL AND e.to_status = 'pending_approval'
              AND e.actor = d.requester AND e.created_at = d.created_at)
        ORDER BY d.id""",
    "event sequences are 1..n without gaps": """
        SELECT deployment_id FROM deployment_events
        GROUP BY deployment_id
        HAVING min(sequence) <> 1 OR max(sequence) <> count(*)
        ORDER BY deployment_id""",
    "status and updated_at match the last event": """
        SELECT d.id FROM deployments d
        JOIN deployment_events e ON e.deployment_id = d.id
        WHERE e.sequence = (SELECT max(sequence) FROM deployment_events WHERE deployment_id = d.id)
          AND (e.to_status IS NOT d.status OR e.created_at IS NOT d.updated_at)
        ORDER BY d.id""",
    "reviewed_by and reviewed_at match the review event": """
        SELECT d.id FROM deployments d
        LEFT JOIN deployment_events r ON r.deployment_id = d.id AND r.type IN ('approved', 'rejected')
        WHERE r.actor IS NOT d.reviewed_by OR r.created_at IS NOT d.reviewed_at
        GROUP BY d.id
        ORDER BY d.id""",
    "every event is a legal transition from the one before": """
        SELECT DISTINCT e.deployment_id FROM deployment_events e
        LEFT JOIN deployment_events p ON p.deployment_id = e.deployment_id AND p.sequence = e.sequence - 1
        WHERE (e.sequence = 1 AND e.type <> 'created')
           OR (e.sequence > 1 AND (
                p.to_status IS NOT e.from_status
                OR NOT EXISTS (SELECT 1 FROM legal l
                               WHERE l.from_status = e.from_status AND l.type = e.type
                                 AND l.to_status = e.to_status)))
        ORDER BY e.deployment_id""",
}


def check_database(path: str | Path) -> Report:
    """Run every check on the database file at ``path`` without changing it.

    :raises FileNotFoundError: when there is no file at ``path``.
    :raises sqlite3.DatabaseError: when the file is not SQLite, or not a deployapi database.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no database file at {str(path)!r}")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")
        # Not SQLite at all, or not a deployapi database: nothing to check (exit 2, not 1).
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"deployments", "deployment_events"} <= tables:
            raise sqlite3.DatabaseError("not a deployapi database (no deployments and deployment_events tables)")
        results = [
            CheckResult("SQLite integrity_check", tuple(
                line for line in _offenders(conn, "PRAGMA integrity_check") if line != "ok")),
            CheckResult("SQLite foreign_key_check", _offenders(
                conn, "SELECT \"table\" || ' rowid ' || rowid || ' -> ' || parent FROM pragma_foreign_key_check")),
        ]
        legal = _legal_transitions()
        legal_cte = ("WITH legal (from_status, type, to_status) AS (VALUES "
                     + ", ".join(["(?, ?, ?)"] * len(legal)) + ") ")
        for name, sql in DOMAIN_CHECKS.items():
            if "legal" in sql:
                results.append(CheckResult(name, _offenders(conn, legal_cte + sql, _flatten(legal))))
            else:
                results.append(CheckResult(name, _offenders(conn, sql)))
        results.append(CheckResult("hash chain links every event to the one before", _first_broken_link(conn)))
        deployments = _count(conn, "SELECT count(*) FROM deployments")
        events = _count(conn, "SELECT count(*) FROM deployment_events")
    finally:
        # Read-only: nothing to commit, and a damaged file may have ended the transaction already.
        conn.close()
    return Report(str(path), deployments, events, tuple(results))


def _first_broken_link(conn: sqlite3.Connection) -> tuple[str, ...]:
    """The first event whose stored hash is not the one its fields and predecessor give, if any.

    Only the first is named: every hash after an edit is wrong too, but the
    edit is at (or just before) the first mismatch.
    """
    previous = chain.GENESIS
    try:
        rows = conn.execute(
            "SELECT id, deployment_id, sequence, type, actor, note, from_status, to_status, created_at, hash"
            " FROM deployment_events ORDER BY id")
        for row in rows:
            event = Event(*row)
            expected = chain.event_hash(event, previous)
            if event.hash != expected:
                return (f"event {event.id} of deployment {event.deployment_id} (sequence {event.sequence})",)
            previous = expected
    except sqlite3.DatabaseError as error:
        return (f"could not be checked: {error}",)
    return ()


def _flatten(rows: list[tuple[str, ...]]) -> list[str]:
    return [value for row in rows for value in row]


def _offenders(conn: sqlite3.Connection, sql: str, parameters: list[str] = ()) -> tuple[str, ...]:
    try:
        return tuple(str(row[0]) for row in conn.execute(sql, parameters))
    except sqlite3.DatabaseError as error:
        # A damaged file can fail a query outright; that is a failed check, not a crash.
        return (f"could not be checked: {error}",)


def _count(conn: sqlite3.Connection, sql: str) -> int | str:
    try:
        return conn.execute(sql).fetchone()[0]
    except sqlite3.DatabaseError:
        return "?"
