"""Webhooks as values: what one subscribes to, and the request that carries one event to it.

Pure: no I/O, no clock (the caller passes the time), no SQL.  The
configuration file builds :class:`Webhook` values (config_file.py); the
deliverer (delivery.py) asks this module which events match, what the body
and the headers of a delivery are, and how long to wait after a failure.

The headers are those of Standard Webhooks (https://www.standardwebhooks.com):
``webhook-id`` names one event for one webhook and is the same on every
attempt, so a receiver that sees it twice knows the second is a repeat
(:func:`message_id`);
``webhook-timestamp`` is the attempt's time in Unix seconds; and
``webhook-signature`` is ``v1,`` and the base64 HMAC-SHA256, keyed by the
bytes the ``whsec_`` secret decodes to, of ``"{id}.{timestamp}.{body}"``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from . import cdevents, lifecycle
from .documents import deployment_json, event_json
from .encoding import json_text
from .lifecycle import Deployment, Event

FORMATS = ("cloudevents", "json", "slack")
DEFAULT_FORMAT = "json"
DEFAULT_MAX_BACKOFF_SECONDS = 600
# No answer (status line, headers and body) within this long is a failed attempt.
TIMEOUT_SECONDS = 10.0
# The first retry comes this long after the first failure; each later one waits
# twice as long as the one before, up to the webhook's max_backoff_seconds.
FIRST_RETRY_SECONDS = 1.0
SECRET_PREFIX = "whsec_"
# Of the event's hash in webhook-id: 48 bits, so that a new event under a reused id has another webhook-id.
MESSAGE_ID_HASH_DIGITS = 12
# The secret sizes Standard Webhooks recommends (its specification, "Signature scheme").
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64

CLOUDEVENT_MEDIA_TYPE = "application/cloudevents+json"
JSON_MEDIA_TYPE = "application/json"
USER_AGENT = "deployapi-webhooks/1"

# A Slack message names what happened in words; the rest of the line is the same for every type.
_SLACK_VERBS = {
    lifecycle.CREATED: "requested", lifecycle.APPROVED: "approved", lifecycle.REJECTED: "rejected",
    lifecycle.STARTED: "started", lifecycle.SUCCEEDED: "succeeded", lifecycle.FAILED: "failed",
    lifecycle.ROLLED_BACK: "rolled back", lifecycle.CANCELLED: "cancelled",
}
MAX_SLACK_NOTE = 300


@dataclass(frozen=True)
class Webhook:
    """One ``[[webhooks]]`` entry of the configuration file, validated.

    ``types``, ``services`` and ``environments`` are None when the entry does
    not narrow by them (every value matches).  ``secret`` is the key the
    ``whsec_`` secret decodes to, None for unsigned deliveries; it is left out
    of ``repr`` so that it cannot reach a log by accident.
    """

    name: str
    # Out of repr too: a Slack incoming webhook's path is its credential (shown_url is what may be shown).
    url: str = field(repr=False)
    format: str = DEFAULT_FORMAT
    secret: bytes | None = field(default=None, repr=False)
    types: frozenset[str] | None = None
    services: frozenset[str] | None = None
    environments: frozenset[str] | None = None
    max_backoff_seconds: int = DEFAULT_MAX_BACKOFF_SECONDS

    def matches(self, event_type: str, service: str, environment: str) -> bool:
        """Whether an event of this type, of a deployment of this service and environment, goes to this webhook."""
        return (_admits(self.types, event_type) and _admits(self.services, service)
                and _admits(self.environments, environment))

    @property
    def shown_url(self) -> str:
        """The URL's scheme and host (and port), all that GET /webhooks and the logs show.

        The rest may be a secret: a Slack incoming webhook's path is its credential.
        """
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _admits(allowed: Collection[str] | None, value: str) -> bool:
    return allowed is None or value in allowed


def decode_secret(secret: str) -> bytes:
    """The HMAC key a ``whsec_<base64>`` secret stands for.

    :raises ValueError: not ``whsec_`` and standard base64 of 24 to 64 bytes; the message never holds the secret.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with {SECRET_PREFIX!r} (the Standard Webhooks form: whsec_ and base64)")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except ValueError:
        raise ValueError(f"is not {SECRET_PREFIX} followed by standard base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"must decode to {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, not {len(key)} "
                         "(Standard Webhooks' recommendation)")
    return key


def retry_delay(failed_attempts: int, max_backoff_seconds: int) -> float:
    """Seconds to wait before the next attempt, after ``failed_attempts`` (>= 1) in a row for one event."""
    exponent = min(failed_attempts - 1, 32)  # 2**32 s is past any max_backoff_seconds allowed
    return min(FIRST_RETRY_SECONDS * 2 ** exponent, float(max_backoff_seconds))


def message_id(webhook_name: str, event_id: int, event_hash: str | None) -> str:
    """``webhook-id``: one event to one webhook, the same on every attempt and after a restart.

    ``<name>-<event id>-<12 hex digits of the event's hash>``.  The id alone
    would not do: a database restored from a backup gives out the ids after
    the backup's newest event again, to new events, and a receiver that drops
    ids it has seen would drop those.  The hash seals the event and all history
    before it (chain.py), so a new event under an old id has another one.
    """
    if event_hash is None:  # not stored yet, or a history from before the hash chain
        return f"{webhook_name}-{event_id}"
    return f"{webhook_name}-{event_id}-{event_hash[:MESSAGE_ID_HASH_DIGITS]}"


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header of Standard Webhooks for one attempt."""
    digest = hmac.new(key, b"%s.%d.%s" % (msg_id.encode(), timestamp, body), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class Delivery:
    """What is sent for one event to one webhook: the body and its type, the same on every attempt."""

    webhook: Webhook
    event_id: int
    event_hash: str | None
    body: bytes
    content_type: str

    @property
    def message_id(self) -> str:
        return message_id(self.webhook.name, self.event_id, self.event_hash)

    def headers(self, timestamp: int) -> dict[str, str]:
        """The request headers of an attempt made at ``timestamp`` (Unix seconds)."""
        headers = {
            "Content-Type": self.content_type,
            "User-Agent": USER_AGENT,
            "webhook-id": self.message_id,
            "webhook-timestamp": str(timestamp),
        }
        if self.webhook.secret is not None:
            headers["webhook-signature"] = signature(self.webhook.secret, self.message_id, timestamp, self.body)
        return headers


def delivery(webhook: Webhook, event: Event, deployment: Deployment, *, first_success: bool) -> Delivery:
    """The delivery of a stored ``event`` of ``deployment`` to ``webhook``, in the webhook's format.

    ``first_success``: whether a ``succeeded`` event is the first success of its
    service in its environment (the CDEvents type depends on it).
    """
    if event.id is None:
        raise ValueError("only stored events (with an id) are delivered")
    if webhook.format == "cloudevents":
        document: Any = cdevents.cloudevent(event, deployment, first_success=first_success)
        content_type = CLOUDEVENT_MEDIA_TYPE
    elif webhook.format == "json":
        document = {"event": event_json(event), "deployment": deployment_json(deployment)}
        content_type = JSON_MEDIA_TYPE
    else:
        document = {"text": slack_text(event, deployment)}
        content_type = JSON_MEDIA_TYPE
    return Delivery(webhook, event.id, event.hash, json_text(document).encode("utf-8"), content_type)


def slack_text(event: Event, deployment: Deployment) -> str:
    """One line for a Slack channel: service, version, environment, what happened, who did it, and the note.

    Slack reads ``&``, ``<`` and ``>`` as markup (links, mentions), so client
    text is escaped as its message formatting asks.
    """
    verb = _SLACK_VERBS.get(event.type, event.type.replace("_", " "))
    if event.type == lifecycle.APPROVED and event.to_status != lifecycle.APPROVED and event.details:
        verb += f" ({event.details.get('approvals')} of {event.details.get('required_approvals')})"
    if event.type == lifecycle.ROLLED_BACK and deployment.rolled_back_to:
        verb += f" to {deployment.rolled_back_to}"
    text = (f"*{deployment.service}* {deployment.version} to *{deployment.environment}*: "
            f"{verb} by {event.actor}")
    if event.note:
        note = event.note if len(event.note) <= MAX_SLACK_NOTE else event.note[:MAX_SLACK_NOTE - 3] + "..."
        text += f": {note}"
    return _slack_escape(f"{text} ({deployment.id})")


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
