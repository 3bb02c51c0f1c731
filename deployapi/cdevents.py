"""The CDEvents export: one deployapi event as a CloudEvents 1.0 event in structured JSON.

Pure mapping, no SQL and no HTTP.  The versions below are pinned; see the
"CDEvents export" section of docs/api.md for the mapping and the reasons:

- ``created``                -> ``dev.cdevents.approval.created.0.1.0``
- ``approved``, ``rejected`` -> ``dev.cdevents.approval.closed.0.1.0``
- ``succeeded``              -> ``dev.cdevents.service.deployed.0.3.0`` for the first success
                                of a service in an environment, else ``...service.upgraded.0.3.0``
- ``rolled_back``            -> ``dev.cdevents.service.rolledback.0.3.0``
- every other type (``started``, ``failed``, ``cancelled``) -> ``dev.deployapi.deployment.<type>.v1``:
  the CDEvents spec has no type for them, so they are plain CloudEvents of this API's
  own types.  A type added to the lifecycle is exported this way until it is mapped.

Two events of review policies are not what the CDEvents types say, and are
exported as own types too: a partial approval (an ``approved`` event that
leaves the deployment ``pending_approval``) closes no approval, so it is
``dev.deployapi.deployment.partially_approved.v1``; and a ``created`` event of
a deployment that needs no approval opens none, so it is
``dev.deployapi.deployment.created.v1``.  The event's ``details`` (the count of
approvals, a freeze overridden at a start) travel in ``data``.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote

from . import lifecycle
from .lifecycle import Deployment, Event

CLOUDEVENTS_SPEC_VERSION = "1.0"
# cdevents/spec main at commit 8917b18: the approval.* types exist only in this draft.
CDEVENTS_SPEC_VERSION = "0.6.0-draft"

# The media type of a JSON array of structured-mode CloudEvents (CloudEvents JSON format, batch).
BATCH_MEDIA_TYPE = "application/cloudevents-batch+json"

APPROVAL_CREATED = "dev.cdevents.approval.created.0.1.0"
APPROVAL_CLOSED = "dev.cdevents.approval.closed.0.1.0"
SERVICE_DEPLOYED = "dev.cdevents.service.deployed.0.3.0"
SERVICE_UPGRADED = "dev.cdevents.service.upgraded.0.3.0"
SERVICE_ROLLED_BACK = "dev.cdevents.service.rolledback.0.3.0"

# The event types the CDEvents spec has a type for (_cdevent_subject).
CDEVENT_MAPPED = frozenset({lifecycle.CREATED, lifecycle.APPROVED, lifecycle.REJECTED,
                            lifecycle.SUCCEEDED, lifecycle.ROLLED_BACK})


def own_type(event_type: str) -> str:
    """This API's CloudEvents type for an event type CDEvents has none for."""
    return f"dev.deployapi.deployment.{event_type}.v1"


# Every own type exported today, by event type.
OWN_TYPES = {t: own_type(t) for t in lifecycle.EVENT_TYPES if t not in CDEVENT_MAPPED}
# An approval that leaves the review open, and a creation that needs no review.
PARTIALLY_APPROVED = own_type("partially_approved")
CREATED_APPROVED = own_type(lifecycle.CREATED)


def _own_type_of(event: Event) -> str | None:
    """This API's own type for ``event``, or None when a CDEvents type says what it is."""
    if event.type not in CDEVENT_MAPPED:
        return own_type(event.type)
    if event.type == lifecycle.APPROVED and event.to_status != lifecycle.APPROVED:
        return PARTIALLY_APPROVED
    if event.type == lifecycle.CREATED and event.to_status != lifecycle.PENDING_APPROVAL:
        return CREATED_APPROVED
    return None


def cloudevent(event: Event, deployment: Deployment, *, first_success: bool, mount: str = "") -> dict[str, Any]:
    """The stored ``event`` of ``deployment`` as one structured-mode CloudEvent (a JSON object).

    ``first_success``: whether a ``succeeded`` event is the first success of the
    service in its environment (``service.deployed``) or not (``service.upgraded``);
    ignored for other types.  ``mount`` is the path prefix the API is served
    under (the WSGI ``SCRIPT_NAME``), used in ``source`` and the approval links.

    :raises ValueError: the event is not stored yet, or belongs to another deployment.
    """
    if event.id is None:
        raise ValueError("only stored events (with an id) can be exported")
    if event.deployment_id != deployment.id:
        raise ValueError(f"event {event.id} belongs to {event.deployment_id!r}, not {deployment.id!r}")

    source = f"{mount}/deployments/{deployment.id}"
    # Unique together with source (the deployment) and the same on every export.
    event_id = str(event.id)
    record = deployapi_record(event, deployment)
    own = _own_type_of(event)
    if own is not None:
        return _envelope(event_id, source, own, deployment.id, event.created_at, record)

    cdevent_type, subject = _cdevent_subject(event, deployment, source, first_success)
    cdevent = {
        "context": {
            "specversion": CDEVENTS_SPEC_VERSION,
            "id": event_id,
            "source": source,
            "type": cdevent_type,
            "timestamp": event.created_at,
        },
        "subject": subject,
        # The deployapi record travels along, so a consumer can tie the CDEvent
        # back to the deployment, its actor, note and work references.
        "customData": record,
        "customDataContentType": "application/json",
    }
    # The CDEvents CloudEvents binding: id, source, type, subject and time repeat the CDEvent's.
    return _envelope(event_id, source, cdevent_type, subject["id"], event.created_at, cdevent)


def deployapi_record(event: Event, deployment: Deployment) -> dict[str, Any]:
    """The deployapi event (every stored field, ``hash`` included when the event has one) and its deployment."""
    # asdict, not a field list: fields added to Event later are exported too.
    return {
        **dataclasses.asdict(event),
        "deployment": {
            "id": deployment.id, "service": deployment.service, "environment": deployment.environment,
            "version": deployment.version, "requester": deployment.requester,
            "work_refs": list(deployment.work_refs), "required_approvals": deployment.required_approvals,
            "policy_digest": deployment.policy_digest,
        },
    }


def artifact_purl(service: str, version: str) -> str:
    """The package URL of a service's version: ``pkg:generic/<service>@<percent-encoded version>``."""
    # A service is a slug, already purl-safe; a version may hold any visible character.
    return f"pkg:generic/{service}@{quote(version, safe='')}"


def actor_urn(name: str) -> str:
    """A person or system name as the URN CDEvents asks for (``urn:deployapi:actor:<percent-encoded>``)."""
    return f"urn:deployapi:actor:{quote(name, safe='@')}"


def _envelope(event_id: str, source: str, event_type: str, subject: str, time: str,
              data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": CLOUDEVENTS_SPEC_VERSION, "id": event_id, "source": source, "type": event_type,
        "subject": subject, "time": time, "datacontenttype": "application/json", "data": data,
    }


def _cdevent_subject(event: Event, deployment: Deployment, path: str,
                     first_success: bool) -> tuple[str, dict[str, Any]]:
    if event.type == lifecycle.CREATED:
        return APPROVAL_CREATED, _approval(deployment, path, requestor=actor_urn(event.actor))
    if event.type in (lifecycle.APPROVED, lifecycle.REJECTED):
        # The decision that ends the review closes the approval: it is also its terminal status.
        return APPROVAL_CLOSED, _approval(deployment, path, responder=actor_urn(event.actor),
                                          decision=event.type, status=event.type)
    if event.type == lifecycle.SUCCEEDED:
        return (SERVICE_DEPLOYED if first_success else SERVICE_UPGRADED), _service(deployment)
    if event.type == lifecycle.ROLLED_BACK:
        return SERVICE_ROLLED_BACK, _service(deployment)
    raise ValueError(f"no CDEvents mapping for event type {event.type!r}")


def _approval(deployment: Deployment, path: str, **content: str) -> dict[str, Any]:
    # A deployment has exactly one approval, so its id names the approval.
    return {
        "id": deployment.id,
        "content": {"approvalDetailsUrl": f"{path}/events", "resourceTargetUrl": path, **content},
    }


def _service(deployment: Deployment) -> dict[str, Any]:
    return {
        "id": deployment.service,
        "content": {
            "environment": {"id": deployment.environment},
            "artifactId": artifact_purl(deployment.service, deployment.version),
        },
    }
