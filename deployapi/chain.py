"""The hash chain over all events: tamper evidence for the history and for what was requested.

Each event's ``hash`` is SHA-256 over a canonical encoding of its own fields
and the previous event's hash (one chain across every deployment, in id
order).  A ``created`` event's hash also covers the deployment's creation
content (service, environment, version, requester, work_refs, risk,
rollback_plan, and since schema version 8 the pipeline metadata:
``lifecycle.CREATE_FIELDS``; since schema version 7 also the approvals it
needs and the digest of the policy it was created under), so
rewriting what was approved, or the rules it was judged by, breaks the chain
as surely as rewriting the history.  An event written under a policy (one
with a ``policy_digest``) is hashed under POLICY_ENCODING, which adds the
digest and its ``details``; events from before keep the encoding they were
sealed with.  Editing, inserting or
deleting anything covered breaks every link after it, unless whoever edits
also recomputes the rest of the chain, which is why the latest hash is
published for anchoring elsewhere (``GET /events/head``) and ``deployapi check
--expect-head`` compares against it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from . import lifecycle
from .lifecycle import Deployment, Event

# The "previous hash" of the very first event.
GENESIS = "0" * 64
# Names the encoding, so that no other encoding can be confused with this one.
ENCODING = "deployapi-event-v2"
# Events that carry a policy digest or details (schema version 7 on): the
# encoding above with both added.  Which of the two an event was sealed with
# follows from the event itself, and the encoding's name is inside the hash,
# so removing an event's digest to pass it off as an older one breaks its link.
POLICY_ENCODING = "deployapi-event-v3"
# The encoding before schema version 4, which did not cover creation content.
# Kept to verify heads anchored before the upgrade (deployapi check --expect-head)
# and to read databases not yet upgraded.
LEGACY_ENCODING = "deployapi-event-v1"

Content = Mapping[str, Any]

# The canonical encodings, built once: json.dumps with options builds an encoder
# at every call, which was half the cost of hashing an event.  An encoder keeps
# no state between calls, so the threads that write share these.
_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)
_LEGACY_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def creation_content(deployment: Deployment) -> dict[str, Any]:
    """What a ``created`` event seals of its deployment: every creation field that has a value.

    With a policy digest, also the approvals it needs and that digest (a
    deployment created before policies has neither sealed: its
    ``required_approvals`` is the v1 rule's 1).
    """
    fields = {field: getattr(deployment, field) for field in lifecycle.CREATE_FIELDS}
    fields["links"] = [link.document() for link in deployment.links]
    fields["labels"] = dict(deployment.labels)
    if deployment.policy_digest is not None:
        fields.update(required_approvals=deployment.required_approvals, policy_digest=deployment.policy_digest)
    return content_of(fields)


def content_of(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The sealed form of creation fields: sequences as lists; null, empty lists and empty objects left out.

    Leaving out what is empty means a creation field added later, empty for
    older deployments, changes no earlier hash.
    """
    content: dict[str, Any] = {}
    for field, value in fields.items():
        if isinstance(value, tuple):
            value = list(value)
        if value is None or value == [] or value == {}:
            continue
        content[field] = value
    return content


def link_hash(event: Event, event_id: int, previous_hash: str, content: Content | None = None) -> str:
    """The hash ``event`` gets as the event numbered ``event_id`` following ``previous_hash``.

    ``content`` is the deployment's creation content (:func:`creation_content`)
    for a ``created`` event, and None for every other event.
    """
    fields = [event_id, event.deployment_id, event.sequence, event.type, event.actor, event.note,
              event.from_status, event.to_status, event.created_at, previous_hash, content]
    if event.policy_digest is None and event.details is None:
        sealed = [ENCODING, *fields]
    else:
        sealed = [POLICY_ENCODING, *fields, event.policy_digest, event.details]
    return hashlib.sha256(_CANONICAL.encode(sealed).encode("utf-8")).hexdigest()


def event_hash(event: Event, previous_hash: str, content: Content | None = None) -> str:
    """The hash of a stored ``event`` (which must have its id) following ``previous_hash``."""
    if event.id is None:
        raise ValueError("an event is hashed only once it has its id")
    return link_hash(event, event.id, previous_hash, content)


def legacy_event_hash(event: Event, previous_hash: str) -> str:
    """The hash the event had under LEGACY_ENCODING (schema versions 3 and before)."""
    if event.id is None:
        raise ValueError("an event is hashed only once it has its id")
    canonical = _LEGACY_CANONICAL.encode(
        [LEGACY_ENCODING, event.id, event.deployment_id, event.sequence, event.type, event.actor, event.note,
         event.from_status, event.to_status, event.created_at, previous_hash])
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
