"""The columns a read selects, the one mapping of each row to its domain object, and domain constants as SQL.

Shared by every module of the package that reads deployments or events, and by
``deployapi check`` (EVENTS_WITH_CONTENT_SQL, event_with_content).
"""

from __future__ import annotations

import json
import sqlite3

from .. import chain, lifecycle
from ..lifecycle import Deployment, Event

EVENT_COLUMNS = (
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
DEPLOYMENT_COLUMNS = (
    "id, service, environment, version, requester, work_refs, risk, rollback_plan,"
    " status, reviewed_by, reviewed_at, created_at, updated_at"
)


def sql_strings(*values: str) -> str:
    """Domain constants as SQL string literals, comma-separated, each quoted (quotes doubled).

    For the statements that cannot take them as parameters: a fragment other
    statements extend, or a fixed statement whose ``?`` are the request's.
    """
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


# Creation fields stored as JSON text rather than as a plain column value.
_JSON_COLUMNS = frozenset({"work_refs"})
# Every event in the form the chain hashes it: its fields, and for a created
# event its deployment's creation columns (NULL for other events).  The column
# names are the creation fields' names (lifecycle.CREATE_FIELDS).
EVENTS_WITH_CONTENT_SQL = (
    "SELECT e.id, e.deployment_id, e.sequence, e.type, e.actor, e.note, e.from_status, e.to_status,"
    " e.created_at, e.hash, d.id IS NOT NULL AS has_content, "
    + ", ".join(f"d.{field} AS content_{field}" for field in lifecycle.CREATE_FIELDS)
    + " FROM deployment_events e LEFT JOIN deployments d ON d.id = e.deployment_id"
    + f" AND e.type = {sql_strings(lifecycle.CREATED)}"
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


def row_to_deployment(row: sqlite3.Row) -> Deployment:
    return Deployment(
        id=row["id"], service=row["service"], environment=row["environment"],
        version=row["version"], requester=row["requester"],
        work_refs=tuple(json.loads(row["work_refs"])), risk=row["risk"],
        rollback_plan=row["rollback_plan"], status=row["status"],
        reviewed_by=row["reviewed_by"], reviewed_at=row["reviewed_at"],
        created_at=row["created_at"], updated_at=row["updated_at"],
    )


def row_to_event(row: sqlite3.Row) -> Event:
    return Event(
        id=row["id"], deployment_id=row["deployment_id"], sequence=row["sequence"],
        type=row["type"], actor=row["actor"], note=row["note"],
        from_status=row["from_status"], to_status=row["to_status"],
        created_at=row["created_at"], hash=row["hash"],
    )
