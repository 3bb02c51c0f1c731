"""``deployapi check``: SQLite's own checks plus the invariants that tie state to history.

Read-only SQL against the schema in schema.sql, run in one read transaction so
every check sees the same snapshot, even while a server keeps writing.  Each
check returns what breaks it (mostly deployment ids), so an operator can go
straight there.

What a read-only connection cannot do is left to this module rather than to
SQLite: SQLite does not even parse CHECK constraints of a database opened
read-only, so ``PRAGMA integrity_check`` passes rows that break them.  The
constraints of schema.sql (the schema this deployapi expects, not the one the
file claims) are evaluated here by queries of their own.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import chain, lifecycle
from .repository import (
    PIPELINE_COLUMNS_SINCE,
    POLICY_COLUMNS_SINCE,
    SCHEMA_VERSION,
    connect_read_only,
    event_with_content,
    events_with_content_sql,
    schema_sql,
    split_statements,
)

# How many offending ids a report lists per check.
SHOWN_IDS = 20
# Tables and triggers that schema.sql has but a database of an older version
# does not yet (the server adds them when it upgrades the file): name -> version.
ADDED_IN = {"idempotency_keys": 2, "deployments_creation_is_fixed": 4, "write_probe": 4,
            "deployment_event_scopes": 5, "deployment_steps": 5, "deployment_events_derive": 5,
            "deployment_work_refs": 8, "deployment_labels": 8, "deployments_derive": 8,
            "webhook_positions": 9, "webhook_deliverer": 9}
# Triggers whose text schema.sql changed since they were added: an older
# database keeps its own text (present is what counts) until the upgrade.
CHANGED_IN = {"deployments_creation_is_fixed": 8}
# The read tables derived from each event or deployment, and the views that define their rows (schema.sql).
DERIVED = {"deployment_event_scopes": "deployment_event_scope_rows", "deployment_steps": "deployment_step_rows",
           "deployment_work_refs": "deployment_work_ref_rows", "deployment_labels": "deployment_label_rows"}
# What each table's rows belong to, for a check from a head (Scope): the rows
# of the deployments in scope, or of their events.  Other tables are checked whole.
SCOPED_BY = {"deployments": "{deployments: id}", "deployment_events": "{deployments: deployment_id}",
             "deployment_event_scopes": "{events: event_id}", "deployment_steps": "{events: event_id}",
             "deployment_work_refs": "{deployments: deployment_id}",
             "deployment_labels": "{deployments: deployment_id}"}
# The hash chain exists from schema version 3 on.
CHAIN_SINCE = 3
_ANCHOR = re.compile(r"([0-9]{1,19}):([0-9a-f]{64})")


@dataclass(frozen=True)
class CheckResult:
    name: str
    offenders: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.offenders


@dataclass(frozen=True)
class Anchor:
    """A chain head recorded elsewhere (``GET /events/head``): the history must still contain it."""

    event_id: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """``ID:HASH`` as ``/events/head`` gives them.

        :raises ValueError: for anything else.
        """
        match = _ANCHOR.fullmatch(text.strip().lower())
        if not match:
            raise ValueError(f"{text!r} is not ID:HASH (an event id, a colon and 64 hex digits)")
        return cls(int(match[1]), match[2])


@dataclass(frozen=True)
class Report:
    path: str
    deployments: int | str  # "?" when a damaged file cannot be counted
    events: int | str
    results: tuple[CheckResult, ...]
    schema_version: int | str = "?"
    # How the file was read, when not the usual way (a copy in a directory that refuses a -shm).
    note: str | None = None
    # What a check from a head left out (Scope.summary); None for a check of the whole file.
    scope: str | None = None

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
        if self.scope:
            out.append(f"scope   {self.scope}")
        if self.note:
            out.append(f"note    {self.note}")
        failed = sum(not r.ok for r in self.results)
        verdict = "all checks passed" if not failed else f"{failed} of {len(self.results)} checks failed"
        older = ""
        if isinstance(self.schema_version, int) and self.schema_version < SCHEMA_VERSION:
            older = f" (schema version {self.schema_version}: deployapi serve upgrades it to {SCHEMA_VERSION})"
        out.append(f"{self.path}: {self.deployments} deployments, {self.events} events; {verdict}{older}")
        return out


def _legal_transitions() -> list[tuple[str, str, str]]:
    legal = [
        (from_status, t.event_type, t.to_status)
        for t in lifecycle.TRANSITIONS.values()
        for from_status in sorted(t.from_statuses)
    ]
    # A partial approval keeps the status (how many approvals a deployment
    # needs is checked by "approved events move the status at the last approval needed").
    approve = lifecycle.TRANSITIONS["approve"]
    legal += [(from_status, approve.event_type, from_status) for from_status in sorted(approve.from_statuses)]
    return legal


# The approvals a deployment needs: its column from schema version 7, the v1 rule's 1 before.
_REQUIRED = "{required_approvals}"
# Where a check of a whole file is narrowed to what a check from a head covers
# (Scope): "{deployments: COLUMN}" keeps the rows whose COLUMN names a deployment
# in scope, "{events: COLUMN}" those whose COLUMN names one of their events.
_IN_SCOPE = re.compile(r"\{(deployments|events): ([\w.]+)\}")
# A parameter that stands for the last event before the checked range (0 for the whole history).
CHECKED_FROM = object()

# name -> (query returning the offending deployment ids, its parameters).  Each
# is a plain read of schema.sql's tables, with lifecycle.py's statuses and event
# types bound as parameters; "legal" is its transition table, supplied as a
# common table expression (whose parameters come first).  Legality depends on
# the policy each deployment recorded: how many approvals it needs.
DOMAIN_CHECKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "every deployment has its created event": (f"""
        SELECT d.id FROM deployments d
        WHERE {{deployments: d.id}} AND NOT EXISTS (
            SELECT 1 FROM deployment_events e
            WHERE e.deployment_id = d.id AND e.sequence = 1 AND e.type = ?
              AND e.from_status IS NULL AND e.to_status = CASE WHEN {_REQUIRED} = 0 THEN ? ELSE ? END
              AND e.actor = d.requester AND e.created_at = d.created_at)
        ORDER BY d.id""", (lifecycle.CREATED, lifecycle.APPROVED, lifecycle.PENDING_APPROVAL)),
    "event sequences are 1..n without gaps": ("""
        SELECT deployment_id FROM deployment_events
        WHERE {deployments: deployment_id}
        GROUP BY deployment_id
        HAVING min(sequence) <> 1 OR max(sequence) <> count(*)
        ORDER BY deployment_id""", ()),
    "status and updated_at match the last event": ("""
        SELECT d.id FROM deployments d
        JOIN deployment_events e ON e.deployment_id = d.id
        WHERE {deployments: d.id}
          AND e.sequence = (SELECT max(sequence) FROM deployment_events WHERE deployment_id = d.id)
          AND (e.to_status IS NOT d.status OR e.created_at IS NOT d.updated_at)
        ORDER BY d.id""", ()),
    # The review event is the one that ended the review (a partial approval does not).
    "reviewed_by and reviewed_at match the review event": (f"""
        SELECT d.id FROM deployments d
        LEFT JOIN deployment_events r ON r.deployment_id = d.id
         AND r.type IN ({", ".join(["?"] * len(lifecycle.REVIEW_EVENT_TYPES))})
         AND r.to_status IS NOT r.from_status
        WHERE {{deployments: d.id}} AND (r.actor IS NOT d.reviewed_by OR r.created_at IS NOT d.reviewed_at)
        GROUP BY d.id
        ORDER BY d.id""", lifecycle.REVIEW_EVENT_TYPES),
    "every event is a legal transition from the one before": ("""
        SELECT DISTINCT e.deployment_id FROM deployment_events e
        LEFT JOIN deployment_events p ON p.deployment_id = e.deployment_id AND p.sequence = e.sequence - 1
        WHERE {deployments: e.deployment_id}
          AND ((e.sequence = 1 AND e.type <> ?)
               OR (e.sequence > 1 AND (
                   p.to_status IS NOT e.from_status
                   OR NOT EXISTS (SELECT 1 FROM legal l
                                  WHERE l.from_status = e.from_status AND l.type = e.type
                                    AND l.to_status = e.to_status))))
        ORDER BY e.deployment_id""", (lifecycle.CREATED,)),
    "approved events move the status at the last approval needed": (f"""
        SELECT DISTINCT e.deployment_id FROM deployments d
        JOIN deployment_events e ON e.deployment_id = d.id AND +e.type = ?
        WHERE {{deployments: d.id}}
          AND e.to_status IS NOT CASE
              WHEN (SELECT count(*) FROM deployment_events a
                    WHERE a.deployment_id = e.deployment_id AND a.type = e.type AND a.sequence <= e.sequence)
                   >= {_REQUIRED} THEN ? ELSE e.from_status END
        ORDER BY e.deployment_id""", (lifecycle.APPROVED, lifecycle.APPROVED)),
    # Ids are given out one after another inside the writing transaction, so
    # every id from 1 (from the head a check starts from) to the last is there;
    # a hole is an event removed.
    "event ids are 1..n without gaps": ("""
        SELECT CASE WHEN first = last THEN 'event ' || first || ' is missing'
                    ELSE 'events ' || first || '-' || last || ' are missing' END
        FROM (SELECT e.id + 1 AS first,
                     (SELECT min(n.id) FROM deployment_events n WHERE n.id > e.id) - 1 AS last
              FROM (SELECT ? AS id UNION ALL SELECT id FROM deployment_events WHERE id > ?) e
              WHERE e.id < (SELECT max(id) FROM deployment_events)
                AND NOT EXISTS (SELECT 1 FROM deployment_events n WHERE n.id = e.id + 1))
        ORDER BY first""", (CHECKED_FROM, CHECKED_FROM)),
    # AUTOINCREMENT's counter only ever reaches the id of an event that was
    # committed, so a counter past the last event means events were removed
    # from the end (which leaves the rest of the chain valid).
    "the event id counter matches the last event": ("""
        SELECT 'the counter is at ' || s.seq || ' but the last event is '
               || coalesce((SELECT max(id) FROM deployment_events), 'none')
               || ': the events after it were removed'
        FROM sqlite_sequence s
        WHERE s.name = 'deployment_events' AND s.seq > coalesce((SELECT max(id) FROM deployment_events), 0)""", ()),
}
# Checks of columns that exist from schema version 8 on.
PIPELINE_CHECKS: dict[str, tuple[str, tuple[str, ...]]] = {
    # The event's details are under the chain; the deployment's copy is not.
    # The unary + keeps SQLite from reaching r through the type index, which
    # would read every rollback of the history for each deployment: the
    # deployment's own events are one range of (deployment_id, sequence).
    "rolled_back_to matches the rollback event": ("""
        SELECT d.id FROM deployments d
        LEFT JOIN deployment_events r ON r.deployment_id = d.id AND +r.type = ?
        WHERE {deployments: d.id} AND d.rolled_back_to IS NOT json_extract(r.details, '$.to_version')
        ORDER BY d.id""", (lifecycle.ROLLED_BACK,)),
}
# Checks of columns that exist from schema version 7 on.
POLICY_CHECKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "approvals list the approved events": ("""
        SELECT d.id FROM deployments d
        WHERE {deployments: d.id} AND json(d.approvals) IS NOT (
            SELECT json_group_array(json_object('actor', actor, 'note', note, 'created_at', created_at))
            FROM (SELECT actor, note, created_at FROM deployment_events
                  WHERE deployment_id = d.id AND type = ? ORDER BY sequence))
        ORDER BY d.id""", (lifecycle.APPROVED,)),
}


def check_database(path: str | Path, anchors: Iterable[Anchor] = (), from_head: Anchor | None = None) -> Report:
    """Run every check on the database file at ``path`` without changing it.

    Each of ``anchors`` (heads recorded elsewhere) must still be in the history, unchanged.

    With ``from_head`` (a head recorded earlier), check only the history after
    it (Scope): that event must still have its hash; the chain is recomputed
    from that hash to the head, and the checks of deployments and their events
    cover every deployment with an event after it (all of its events).  What
    lies before it is taken on trust.  ``anchors`` must then be at or after it.

    :raises FileNotFoundError: when there is no file at ``path``.
    :raises OSError: when the file cannot be read (naming the file at fault and the reason).
    :raises sqlite3.DatabaseError: when the file is not SQLite, or not a deployapi database.
    :raises ValueError: when one of ``anchors`` is before ``from_head``.
    """
    path = Path(path)
    anchors = tuple(anchors)
    if from_head is not None:
        early = [a for a in anchors if a.event_id < from_head.event_id]
        if early:
            raise ValueError(f"the head {early[0].event_id}:{early[0].hash[:12]}… is before event "
                             f"{from_head.event_id}, where the check starts: the history before it is not checked")
    conn, note = connect_read_only(path)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("BEGIN")
        # Not SQLite at all, or not a deployapi database: nothing to check (exit 2, not 1).
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"deployments", "deployment_events"} <= tables:
            raise sqlite3.DatabaseError("not a deployapi database (no deployments and deployment_events tables)")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        scope = Scope.everything() if from_head is None else Scope.after(conn, from_head)
        expected = _expected_schema()
        results = [*scope.head_results(conn, version), *_sqlite_results(conn, scope),
                   CheckResult("every row keeps the schema's CHECK and NOT NULL constraints",
                               _constraint_offenders(conn, expected, version, scope)),
                   CheckResult("the append-only and fixed-content triggers are in place",
                               _trigger_offenders(conn, expected, version))]
        expected.close()
        legal = _legal_transitions()
        legal_cte = ("WITH legal (from_status, type, to_status) AS (VALUES "
                     + ", ".join(["(?, ?, ?)"] * len(legal)) + ") ")
        checks = dict(DOMAIN_CHECKS)
        if version >= POLICY_COLUMNS_SINCE:
            checks.update(POLICY_CHECKS)
        if version >= PIPELINE_COLUMNS_SINCE:
            checks.update(PIPELINE_CHECKS)
        required = "d.required_approvals" if version >= POLICY_COLUMNS_SINCE else "1"
        for name, (sql, parameters) in checks.items():
            sql = scope.narrow(sql.replace(_REQUIRED, required))
            parameters = [scope.checked_from if p is CHECKED_FROM else p for p in parameters]
            if "legal" in sql:
                results.append(CheckResult(name, _offenders(conn, legal_cte + sql, [*_flatten(legal), *parameters])))
            else:
                results.append(CheckResult(name, _offenders(conn, sql, parameters)))
        results.append(CheckResult("the read tables derived from the events hold exactly their rows",
                                   _derived_offenders(conn, version, scope)))
        results += _chain_results(conn, version, anchors, scope)
        deployments = _count(conn, "SELECT count(*) FROM deployments")
        events = _count(conn, "SELECT count(*) FROM deployment_events")
    finally:
        # Read-only: nothing to commit, and a damaged file may have ended the transaction already.
        conn.close()
    return Report(str(path), deployments, events, tuple(results), version, note, scope.summary())


@dataclass(frozen=True)
class Scope:
    """What a check covers: the whole file, or what follows a head recorded earlier (``--from-head``).

    From a head, the events after it and every deployment with one of them
    (with all of that deployment's events, before the head too) are checked;
    their ids are gathered once into two temporary tables of the read
    connection, which the queries of a whole-file check are narrowed to
    (_IN_SCOPE).  Each such query starts from the deployments (or events) in
    scope, so SQLite reaches their rows through the primary key and reads
    little else of the events before the head.
    """

    head: Anchor | None = None
    deployments: int = 0  # in scope, from a head
    events: int = 0  # after the head

    @classmethod
    def everything(cls) -> Scope:
        return cls()

    @classmethod
    def after(cls, conn: sqlite3.Connection, head: Anchor) -> Scope:
        """The deployments with an event after ``head`` and all their events, gathered on ``conn``."""
        conn.execute("CREATE TEMP TABLE scope_deployments (id TEXT PRIMARY KEY) WITHOUT ROWID")
        # OR IGNORE, not DISTINCT: SQLite would read the whole (deployment_id,
        # sequence) index in order to give distinct ids, instead of the events after the head.
        conn.execute("INSERT OR IGNORE INTO temp.scope_deployments"
                     " SELECT deployment_id FROM deployment_events WHERE id > ?", (head.event_id,))
        conn.execute("CREATE TEMP TABLE scope_events (id INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO temp.scope_events SELECT e.id FROM deployment_events e"
                     " WHERE e.deployment_id IN temp.scope_deployments")
        deployments = conn.execute("SELECT count(*) FROM temp.scope_deployments").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM deployment_events WHERE id > ?", (head.event_id,)).fetchone()[0]
        return cls(head, deployments, events)

    @property
    def checked_from(self) -> int:
        """The id after which every event is checked link by link (0: all of them)."""
        return self.head.event_id if self.head else 0

    def narrow(self, sql: str) -> str:
        """``sql`` of a whole-file check, kept to the rows in scope."""
        if self.head is None:
            return _IN_SCOPE.sub("1", sql)
        return _IN_SCOPE.sub(lambda m: f"{m[2]} IN temp.scope_{m[1]}", sql)

    def one_by_one(self, conn: sqlite3.Connection, condition: str) -> Iterator[tuple[str, tuple[int | str]]]:
        """``condition`` (one ``{events: column}`` or ``{deployments: column}``) as ``column = ?``, per id in scope.

        With ``column = ?`` SQLite pushes the term into each branch of a
        compound view (deployment_step_rows) and starts each from that row,
        as the trigger that fills the table does.  Given ``column IN
        temp.scope_events`` it evaluated the whole view, over all the history
        before the head, and given an IN list of more than a few ids it started
        the branches that join an event's start from every start.
        """
        match = _IN_SCOPE.fullmatch(condition)
        assert match is not None, condition
        within = f"{match[2]} = ?"
        for (key,) in conn.execute(f"SELECT id FROM temp.scope_{match[1]} ORDER BY id").fetchall():
            yield within, (key,)

    def head_results(self, conn: sqlite3.Connection, version: int) -> list[CheckResult]:
        """From a head: that the history still has it, with the hash recorded."""
        if self.head is None:
            return []
        return [CheckResult(f"the history contains the head it is checked from {self.head.event_id}:"
                            f"{self.head.hash[:12]}…", _from_head_problem(conn, self.head, version))]

    def summary(self) -> str | None:
        """The report's line on what was not checked, from a head."""
        if self.head is None:
            return None
        return (f"checked from event {self.head.event_id}: the {self.events} events after it, and the "
                f"{self.deployments} deployments they belong to with all their events; the rest of the "
                "history before it is not checked")


def _from_head_problem(conn: sqlite3.Connection, head: Anchor, version: int) -> tuple[str, ...]:
    if version < CHAIN_SINCE:
        return (f"this file has no hash chain yet (schema version {version}): check it whole",)
    row = conn.execute("SELECT hash FROM deployment_events WHERE id = ?", (head.event_id,)).fetchone()
    if row is None:
        last = conn.execute("SELECT max(id) FROM deployment_events").fetchone()[0] or 0
        if head.event_id > last:
            return (f"the history ends at event {last}, before event {head.event_id}: events were removed from "
                    "the end (a truncated file, a lost -wal) or this is an older copy",)
        return (f"event {head.event_id} is missing",)
    if row[0] == head.hash:
        return ()
    if version >= 4 and head.event_id <= _setting_int(conn, "chain_rehashed_through"):
        return (f"event {head.event_id} was rehashed when the file was upgraded to schema version 4; a head "
                "recorded before the upgrade is checked against the whole history (--expect-head)",)
    return (f"event {head.event_id} has the hash {row[0]}, not the recorded {head.hash}: it, or the history "
            "before it, was changed after the head was recorded",)


def _sqlite_results(conn: sqlite3.Connection, scope: Scope) -> list[CheckResult]:
    """SQLite's own checks: of the whole file, or from a head its foreign keys in scope."""
    if scope.head is None:
        return [
            CheckResult("SQLite integrity_check", tuple(
                line for line in _offenders(conn, "PRAGMA integrity_check") if line != "ok")),
            CheckResult("SQLite foreign_key_check", _offenders(
                conn, "SELECT \"table\" || ' rowid ' || rowid || ' -> ' || parent FROM pragma_foreign_key_check")),
        ]
    # integrity_check (and even quick_check) reads every page of the file, which
    # is what a check from a head is there to avoid; a page it does read that is
    # damaged still fails the check that reads it ("could not be checked").
    return [CheckResult("SQLite foreign_key_check", _offenders(conn, """
        SELECT 'deployment_events rowid ' || e.id || ' -> deployments' FROM deployment_events e
        WHERE e.id IN temp.scope_events AND NOT EXISTS (SELECT 1 FROM deployments d WHERE d.id = e.deployment_id)
        ORDER BY e.id"""))]


def _derived_offenders(conn: sqlite3.Connection, version: int, scope: Scope) -> tuple[str, ...]:
    """Rows missing from or extra in each table derived from others (DERIVED), counted per table."""
    offenders: list[str] = []
    for table, view in DERIVED.items():
        if version < ADDED_IN[table]:
            continue
        rows = SCOPED_BY[table]
        names = [row[1] for row in conn.execute(f"PRAGMA table_info({view})")]
        columns = ", ".join(names)
        if scope.head is not None:
            # From a head, only that the rows of the events in scope are there,
            # each found through the table's primary key: which rows are extra
            # only a read of the whole table can tell.
            same = " AND ".join(f"t.{name} IS v.{name}" for name in names)
            missing = 0
            for within, parameters in scope.one_by_one(conn, rows):
                sql = (f"SELECT count(*) FROM (SELECT DISTINCT {columns} FROM {view} WHERE {within}) v"
                       f" WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {same})")
                try:
                    missing += conn.execute(sql, parameters).fetchone()[0]
                except sqlite3.DatabaseError as error:
                    offenders.append(f"{table}: could not be checked: {error}")
                    break
            else:
                if missing:
                    offenders.append(f"{table}: {missing} rows missing")
            continue
        # One pass over both sides, grouped by every column: a row only the view
        # gives is missing, one only the table holds is extra (distinct rows, as
        # EXCEPT counts them).  Two EXCEPTs evaluated the view twice and sorted twice.
        sql = (f"SELECT coalesce(sum(last = 1), 0), coalesce(sum(first = 2), 0)"
               f" FROM (SELECT min(side) AS first, max(side) AS last"
               f" FROM (SELECT {columns}, 1 AS side FROM {view} WHERE {rows}"
               f" UNION ALL SELECT {columns}, 2 FROM {table} WHERE {rows}) GROUP BY {columns})")
        try:
            missing, extra = conn.execute(scope.narrow(sql)).fetchone()
        except sqlite3.DatabaseError as error:
            offenders.append(f"{table}: could not be checked: {error}")
            continue
        offenders += [f"{table}: {count} rows {name}" for name, count in (("missing", missing), ("extra", extra))
                      if count]
    return tuple(offenders)


# --- the hash chain -------------------------------------------------------------------


def _chain_results(conn: sqlite3.Connection, version: int, anchors: tuple[Anchor, ...],
                   scope: Scope) -> list[CheckResult]:
    """The chain recomputed from the first event (or the head checked from), the content each created
    event seals, and the anchors.

    One pass in id order.  From schema version 4 every event is hashed under
    chain.ENCODING with its creation content; older files, and heads anchored
    before the file was upgraded (up to ``chain_rehashed_through``), under the
    legacy encoding.
    """
    if version < CHAIN_SINCE:
        # Nothing to recompute yet: the server chains the history when it upgrades the file.
        return [CheckResult("hash chain links every event to the one before"), *(
            CheckResult(f"the history contains the anchored head {a.event_id}:{a.hash[:12]}…",
                        (f"this file has no hash chain yet (schema version {version})",)) for a in anchors)]
    legacy_only = version < 4
    rehashed_through = 0 if legacy_only else _setting_int(conn, "chain_rehashed_through")
    # From a head, the chain goes on from that event's hash (the legacy one, in a version-3 file).
    legacy_wanted = legacy_only or (scope.head is None and any(a.event_id <= rehashed_through for a in anchors))
    anchored = {a.event_id for a in anchors}
    seen: dict[int, tuple[str, str]] = {}  # anchored id -> (recomputed hash, recomputed legacy hash)
    broken: tuple[str, ...] = ()
    content_offenders: list[str] = []
    expected = legacy = stored_before = scope.head.hash if scope.head else chain.GENESIS
    last_id = 0
    try:
        if scope.head:
            row = conn.execute("SELECT id, hash FROM deployment_events WHERE id <= ? ORDER BY id DESC LIMIT 1",
                               (scope.checked_from,)).fetchone()
            last_id = row[0] if row else 0
            if row and row[0] == scope.checked_from:
                # From the hash it has: when that is not the one recorded, the
                # head's own line says so, and this one whether the rest still links up.
                expected = legacy = stored_before = row[1] or ""
                seen[row[0]] = (expected, legacy)
            # The created events of deployments in scope that come before the head.
            content_offenders += _sealed_before(conn, version, scope)
        for row in conn.execute(f"{events_with_content_sql(version)} WHERE e.id > ? ORDER BY e.id",
                                (scope.checked_from,)):
            event, content = event_with_content(row)
            if legacy_wanted:
                legacy = chain.legacy_event_hash(event, legacy)
            if legacy_only:
                expected = legacy
            else:
                recomputed_before, expected = expected, chain.event_hash(event, expected, content)
                # The link alone (from the stored previous hash): whether this
                # created event's hash still fits the deployment row as it is now.
                # While the chain holds, the stored previous hash is the recomputed
                # one, and so the link is the hash just computed.
                if content is not None:
                    link = (expected if stored_before == recomputed_before
                            else chain.event_hash(event, stored_before, content))
                    if link != event.hash:
                        content_offenders.append(event.deployment_id)
            if not broken and event.hash != expected:
                broken = (f"event {event.id} of deployment {event.deployment_id} (sequence {event.sequence})",)
            if event.id in anchored:
                seen[event.id] = (expected, legacy)
            stored_before = event.hash or ""
            last_id = event.id
    except sqlite3.DatabaseError as error:
        broken = (f"could not be checked: {error}",)
    results = [CheckResult("hash chain links every event to the one before", broken)]
    if not legacy_only:
        results.append(CheckResult("each created event's hash seals its deployment's creation content",
                                   tuple(content_offenders)))
    for anchor in anchors:
        results.append(CheckResult(f"the history contains the anchored head {anchor.event_id}:{anchor.hash[:12]}…",
                                   _anchor_problem(anchor, seen, last_id, rehashed_through, legacy_only)))
    return results


def _sealed_before(conn: sqlite3.Connection, version: int, scope: Scope) -> list[str]:
    """Deployments in scope created before the head whose row no longer fits their created event's hash.

    Each link from the stored hash of the event before, as the pass in
    _chain_results does for the created events after the head.  The unary
    ``+`` keeps SQLite from the index on type, which would have it read every
    created event before the head; the deployments in scope are few.
    """
    if version < 4:
        return []
    offenders = []
    for row in conn.execute(f"""
            SELECT c.*, coalesce((SELECT p.hash FROM deployment_events p WHERE p.id < c.id
                                  ORDER BY p.id DESC LIMIT 1), ?) AS stored_before
            FROM ({events_with_content_sql(version)}
                  WHERE e.deployment_id IN temp.scope_deployments AND +e.id <= ? AND +e.type = ?) c
            ORDER BY c.id""", (chain.GENESIS, scope.checked_from, lifecycle.CREATED)):
        event, content = event_with_content(row)
        if chain.event_hash(event, row["stored_before"] or "", content) != event.hash:
            offenders.append(event.deployment_id)
    return offenders


def _anchor_problem(anchor: Anchor, seen: dict[int, tuple[str, str]], last_id: int, rehashed_through: int,
                    legacy_only: bool) -> tuple[str, ...]:
    if anchor.event_id > last_id:
        return (f"the history ends at event {last_id}, before event {anchor.event_id}: events were removed from "
                "the end (a truncated file, a lost -wal) or this is an older copy",)
    if anchor.event_id not in seen:
        return (f"event {anchor.event_id} is missing",)
    recomputed, legacy = seen[anchor.event_id]
    if recomputed == anchor.hash:
        return ()
    if (legacy_only or anchor.event_id <= rehashed_through) and legacy == anchor.hash:
        return ()  # recorded before the upgrade to schema version 4, and still what the history gives
    return (f"the history up to event {anchor.event_id} hashes to {recomputed}, not to the anchored "
            f"{anchor.hash}: it was changed after the head was recorded",)


def _setting_int(conn: sqlite3.Connection, name: str) -> int:
    try:
        row = conn.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0
    except (sqlite3.DatabaseError, ValueError):
        return 0


# --- the schema this deployapi expects -------------------------------------------------


def _expected_schema() -> sqlite3.Connection:
    """schema.sql built in memory: what the file's tables and triggers should be."""
    conn = sqlite3.connect(":memory:")
    for statement in split_statements(schema_sql()):
        conn.execute(statement)
    return conn


def check_constraints(schema: str) -> list[tuple[str, str]]:
    """Every ``CHECK (...)`` of the CREATE TABLE statements in ``schema``, as (table, expression)."""
    found = []
    for statement in split_statements(schema):
        sql = _without_comments(statement).strip()
        table = re.match(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", sql, re.IGNORECASE)
        if table:
            found += [(table[1], expression) for expression in _check_expressions(sql)]
    return found


def _without_comments(sql: str) -> str:
    # '--' starts a comment only outside a string literal.
    return re.sub(r"('(?:[^']|'')*')|--[^\n]*", lambda m: m[1] or "", sql)


def _check_expressions(sql: str) -> list[str]:
    expressions = []
    for match in re.finditer(r"\bCHECK\s*\(", sql, re.IGNORECASE):
        depth, start, position = 1, match.end(), match.end()
        while depth:
            if sql[position] == "'":
                position = sql.index("'", position + 1)
                while sql.startswith("''", position):
                    position = sql.index("'", position + 2)
            elif sql[position] == "(":
                depth += 1
            elif sql[position] == ")":
                depth -= 1
            position += 1
        expressions.append(sql[start:position - 1].strip())
    return expressions


def _constraint_offenders(conn: sqlite3.Connection, expected: sqlite3.Connection, version: int,
                          scope: Scope) -> tuple[str, ...]:
    """Rows that break a CHECK or NOT NULL of schema.sql, one scan per table."""
    checks: dict[str, list[tuple[str, str]]] = {}
    for table, expression in check_constraints(schema_sql()):
        checks.setdefault(table, []).append((f"CHECK ({expression})", f"NOT coalesce(({expression}), 1)"))
    tables = [row[0] for row in expected.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                                 " AND name NOT LIKE 'sqlite_%'")]
    offenders: list[str] = []
    for table in tables:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not present:
            if version >= ADDED_IN.get(table, 0):
                offenders.append(f"table {table} is missing")
            continue
        columns = list(expected.execute(f"PRAGMA table_info({table})"))
        # A column an older version does not have yet (the upgrade adds it) has no rule to keep.
        absent = [c[1] for c in columns if c[1] not in present]
        rules = [*(rule for rule in checks.get(table, ())
                   if not any(re.search(rf"\b{column}\b", rule[0]) for column in absent)),
                 *((f"NOT NULL {c[1]}", f"{c[1]} IS NULL") for c in columns if c[3] and c[1] in present)]
        if not rules:
            continue
        key = next((c[1] for c in sorted(columns, key=lambda c: c[5]) if c[5] and c[1] in present), "rowid")
        cases = " ".join(f"WHEN {condition} THEN ?" for _, condition in rules)
        if scope.head is not None and table in DERIVED:
            continue  # from a head, compared with their views instead (_derived_offenders)
        rows = scope.narrow(SCOPED_BY.get(table, "1"))
        try:
            offenders += [f"{table} {key} {row[0]}: {row[1]}" for row in conn.execute(
                f"SELECT {key}, broken FROM (SELECT {key}, CASE {cases} END AS broken FROM {table} WHERE {rows})"
                " WHERE broken IS NOT NULL", [name for name, _ in rules])]
        except sqlite3.DatabaseError:
            # An expression that raises on some row (json_type of text that is
            # not JSON) fails the whole scan: find the rows one by one.
            offenders += _rows_failing_one_by_one(conn, table, key, rules, rows)
    return tuple(offenders)


def _rows_failing_one_by_one(conn: sqlite3.Connection, table: str, key: str,
                             rules: list[tuple[str, str]], rows: str) -> list[str]:
    offenders = []
    try:
        rowids = [row[0] for row in conn.execute(f"SELECT rowid FROM {table} WHERE {rows}")]
    except sqlite3.DatabaseError as error:
        return [f"{table}: could not be checked: {error}"]
    for rowid in rowids:
        label = conn.execute(f"SELECT {key} FROM {table} WHERE rowid = ?", (rowid,)).fetchone()[0]
        for name, condition in rules:
            try:
                broken = conn.execute(f"SELECT {condition} FROM {table} WHERE rowid = ?", (rowid,)).fetchone()[0]
            except sqlite3.DatabaseError as error:
                offenders.append(f"{table} {key} {label}: {name} ({error})")
                break
            if broken:
                offenders.append(f"{table} {key} {label}: {name}")
                break
    return offenders


def _trigger_offenders(conn: sqlite3.Connection, expected: sqlite3.Connection, version: int) -> tuple[str, ...]:
    found = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall())
    offenders = []
    for name, sql in expected.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name"):
        if version < ADDED_IN.get(name, 0):
            continue
        if name not in found:
            offenders.append(f"{name} is missing")
        elif found[name] != sql and version >= CHANGED_IN.get(name, 0):
            offenders.append(f"{name} differs from schema.sql")
    return tuple(offenders)


# --- helpers --------------------------------------------------------------------------


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
