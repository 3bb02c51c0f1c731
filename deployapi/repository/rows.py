"""The columns a read selects, the one mapping of each row to its domain object, and domain constants as SQL.

Shared by every module of the package that reads deployments or events, and by
``deployapi check`` (EVENTS_WITH_CONTENT_SQL, event_with_content).
"""

from __future__ import annotations

import json
import sqlite3

from .. import chain, lifecycle
from ..lifecycle import Approval, Deployment, Event, Link

EVENT_COLUMNS = (
    "e.id, e.deployment_id, e.sequence, e.type, e.actor, e.note, e.from_status, e.to_status, e.created_at,"
    " e.hash, e.details, e.policy_digest"
)
# The API's JSON object for a deployment (docs/api.md), built by SQLite: reads
# answer with this text as it comes, with no Python object per row or field
# (docs/performance.md).  Keys, order and values are those of
# documents.deployment_json, which renders the Deployment a write returns;
# tests/integration/test_repository.py holds the two together.
DEPLOYMENT_DOCUMENT = (
    "json_object('id', id, 'service', service, 'environment', environment, 'version', version,"
    " 'requester', requester, 'work_refs', json(work_refs), 'risk', risk, 'rollback_plan', rollback_plan,"
    " 'status', status, 'reviewed_by', reviewed_by, 'reviewed_at', reviewed_at,"
    " 'created_at', created_at, 'updated_at', updated_at, 'required_approvals', required_approvals,"
    " 'approvals', json(approvals), 'policy_digest', policy_digest, 'commit_sha', commit_sha,"
    " 'repository', repository, 'ref', ref, 'committed_at', committed_at, 'links', json(links),"
    " 'labels', json(labels), 'rolled_back_to', rolled_back_to)"
)
DEPLOYMENT_COLUMNS = (
    "id, service, environment, version, requester, work_refs, risk, rollback_plan,"
    " status, reviewed_by, reviewed_at, created_at, updated_at, required_approvals, approvals, policy_digest,"
    " commit_sha, repository, ref, committed_at, links, labels, rolled_back_to"
)


def sql_strings(*values: str) -> str:
    """Domain constants as SQL string literals, comma-separated, each quoted (quotes doubled).

    For the statements that cannot take them as parameters: a fragment other
    statements extend, or a fixed statement whose ``?`` are the request's.
    """
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


# Creation fields stored as JSON text rather than as a plain column value.
_JSON_COLUMNS = frozenset({"work_refs", "links", "labels"})
# The schema version whose columns record policies (repository/schema.py, migration 7).
POLICY_COLUMNS_SINCE = 7
# The schema version whose deployments have the pipeline metadata (migration 8).
PIPELINE_COLUMNS_SINCE = 8


def events_with_content_sql(version: int) -> str:
    """Every event in the form the chain hashes it, from a database at schema ``version``.

    Its fields, and for a created event its deployment's creation columns
    (NULL for other events), named after the creation fields
    (lifecycle.CREATE_FIELDS).  Before version 7 the policy columns do not
    exist yet: they read as NULL, which is what they hold after the upgrade.
    """
    policy = ("e.details, e.policy_digest, d.required_approvals AS content_required_approvals,"
              " d.policy_digest AS content_policy_digest" if version >= POLICY_COLUMNS_SINCE else
              "NULL AS details, NULL AS policy_digest, NULL AS content_required_approvals,"
              " NULL AS content_policy_digest")
    def creation_column(field: str) -> str:
        if field in lifecycle.PIPELINE_FIELDS and version < PIPELINE_COLUMNS_SINCE:
            return f"NULL AS content_{field}"
        return f"d.{field} AS content_{field}"

    return ("SELECT e.id, e.deployment_id, e.sequence, e.type, e.actor, e.note, e.from_status, e.to_status,"
            f" e.created_at, e.hash, {policy}, d.id IS NOT NULL AS has_content, "
            + ", ".join(creation_column(field) for field in lifecycle.CREATE_FIELDS)
            + " FROM deployment_events e LEFT JOIN deployments d ON d.id = e.deployment_id"
            + f" AND e.type = {sql_strings(lifecycle.CREATED)}")


EVENTS_WITH_CONTENT_SQL = events_with_content_sql(PIPELINE_COLUMNS_SINCE)


def event_with_content(row: sqlite3.Row) -> tuple[Event, dict | None]:
    """An event of events_with_content_sql and the creation content its hash covers (None if it covers none).

    A JSON column that does not parse is sealed as its raw text, so that a
    damaged row fails the chain instead of stopping the reader.
    """
    event = Event(*(row[i] for i in range(10)), details=_json_or_text(row["details"]),
                  policy_digest=row["policy_digest"])
    if event.type != lifecycle.CREATED:
        return event, None
    if not row["has_content"]:
        return event, {}  # the deployment row is gone: no content can match the hash
    fields = {}
    for field in lifecycle.CREATE_FIELDS:
        value = row[f"content_{field}"]
        fields[field] = _json_or_text(value) if field in _JSON_COLUMNS else value
    if row["content_policy_digest"] is not None:  # as chain.creation_content seals it
        fields.update(required_approvals=row["content_required_approvals"],
                      policy_digest=row["content_policy_digest"])
    return event, chain.content_of(fields)


def _json_or_text(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def row_to_deployment(row: sqlite3.Row) -> Deployment:
    return Deployment(
        id=row["id"], service=row["service"], environment=row["environment"],
        version=row["version"], requester=row["requester"],
        work_refs=tuple(json.loads(row["work_refs"])), risk=row["risk"],
        rollback_plan=row["rollback_plan"], status=row["status"],
        reviewed_by=row["reviewed_by"], reviewed_at=row["reviewed_at"],
        created_at=row["created_at"], updated_at=row["updated_at"],
        required_approvals=row["required_approvals"],
        approvals=tuple(Approval(a["actor"], a["note"], a["created_at"]) for a in json.loads(row["approvals"])),
        policy_digest=row["policy_digest"], commit_sha=row["commit_sha"], repository=row["repository"],
        ref=row["ref"], committed_at=row["committed_at"],
        links=tuple(Link(link["rel"], link["url"]) for link in json.loads(row["links"])),
        labels=json.loads(row["labels"]), rolled_back_to=row["rolled_back_to"],
    )


def links_json(links: tuple[Link, ...]) -> str:
    """The links column's text: the API's ``links`` array."""
    return json.dumps([link.document() for link in links], ensure_ascii=False)


def approvals_json(approvals: tuple[Approval, ...]) -> str:
    """The approvals column's text: the API's ``approvals`` array."""
    return json.dumps([approval.document() for approval in approvals], ensure_ascii=False)


def row_to_event(row: sqlite3.Row) -> Event:
    details = row["details"]
    return Event(
        id=row["id"], deployment_id=row["deployment_id"], sequence=row["sequence"],
        type=row["type"], actor=row["actor"], note=row["note"],
        from_status=row["from_status"], to_status=row["to_status"],
        created_at=row["created_at"], hash=row["hash"],
        details=json.loads(details) if details is not None else None, policy_digest=row["policy_digest"],
    )
