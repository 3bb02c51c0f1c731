"""The hash chain over all events: tamper evidence for the history.

Each event's ``hash`` is SHA-256 over a canonical encoding of its own fields
and the previous event's hash (one chain across every deployment, in id
order).  Editing, inserting or deleting any event breaks every link after it,
unless whoever edits also recomputes the rest of the chain, which is why the
latest hash is published for anchoring elsewhere (``GET /events/head``).
"""

from __future__ import annotations

import hashlib
import json

from .lifecycle import Event

# The "previous hash" of the very first event.
GENESIS = "0" * 64
# Names the encoding, so a future change of it cannot be confused with this one.
ENCODING = "deployapi-event-v1"


def event_hash(event: Event, previous_hash: str) -> str:
    """The hash of ``event`` (which must have its id) following ``previous_hash``."""
    if event.id is None:
        raise ValueError("an event is hashed only once it has its id")
    return link_hash(event, event.id, previous_hash)


def link_hash(event: Event, event_id: int, previous_hash: str) -> str:
    """The hash ``event`` gets as the event numbered ``event_id`` following ``previous_hash``.

    For the writer, which knows the id before the event is stored: no copy of the event is made.
    """
    canonical = json.dumps(
        [ENCODING, event_id, event.deployment_id, event.sequence, event.type, event.actor, event.note,
         event.from_status, event.to_status, event.created_at, previous_hash],
        ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
