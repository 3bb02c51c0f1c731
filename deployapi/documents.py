"""The API's JSON form of a Deployment and of an Event, for whatever renders one from the dataclasses.

Reads of stored deployments are rendered by SQLite (repository.DEPLOYMENT_DOCUMENT,
ADR 0011); the answers of writes, the event lists and the webhook bodies are
rendered here, with the same keys in the same order.
"""

from __future__ import annotations

from typing import Any

from .lifecycle import Deployment, Event


def deployment_json(d: Deployment) -> dict[str, Any]:
    """A Deployment as the API shows it (the same keys, in order, as repository.DEPLOYMENT_DOCUMENT)."""
    return {
        "id": d.id, "service": d.service, "environment": d.environment, "version": d.version,
        "requester": d.requester, "work_refs": list(d.work_refs), "risk": d.risk,
        "rollback_plan": d.rollback_plan, "status": d.status, "reviewed_by": d.reviewed_by,
        "reviewed_at": d.reviewed_at, "created_at": d.created_at, "updated_at": d.updated_at,
        "required_approvals": d.required_approvals,
        "approvals": [approval.document() for approval in d.approvals],
        "policy_digest": d.policy_digest, "commit_sha": d.commit_sha, "repository": d.repository, "ref": d.ref,
        "committed_at": d.committed_at, "links": [link.document() for link in d.links],
        "labels": dict(d.labels), "rolled_back_to": d.rolled_back_to,
    }


def event_json(e: Event) -> dict[str, Any]:
    """An Event as the API shows it."""
    return {
        "id": e.id, "deployment_id": e.deployment_id, "sequence": e.sequence, "type": e.type,
        "actor": e.actor, "note": e.note, "from_status": e.from_status,
        "to_status": e.to_status, "created_at": e.created_at, "hash": e.hash,
        "details": e.details, "policy_digest": e.policy_digest,
    }
