"""The listing query: parsing and validating its parameters, and its signed cursors.

Pure functions; the repository runs the query.  A cursor is the position of the
last item of a page (its ``created_at`` and ``id``) signed with HMAC-SHA256
over that position *and the filters it was issued for*, under a key kept in the
database.  So a cursor the API never produced, one that was edited, or one
replayed with different filters is refused instead of silently returning the
wrong rows, and cursors stay valid across restarts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import lifecycle, query
from .lifecycle import FieldProblem, ValidationFailed

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
EQUALITY_FILTERS = ("service", "environment", "status", "requester")
RANGE_FILTERS = ("created_after", "created_before")
PARAMETERS = (*EQUALITY_FILTERS, *RANGE_FILTERS, "limit", "cursor")

# [0-9], not \d: in a str pattern \d also matches other scripts' digits ("٢٠٢٦"),
# which int() accepts but RFC 3339 does not.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


class InvalidCursor(ValueError):
    """The cursor was not produced by this API for this query."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the listing resumes strictly after this item."""

    created_at: str
    deployment_id: str


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A validated listing request.  Filters are exact matches, ANDed; the range is half-open."""

    service: str | None = None
    environment: str | None = None
    status: str | None = None
    requester: str | None = None
    created_after: str | None = None  # inclusive, canonical timestamp
    created_before: str | None = None  # exclusive, canonical timestamp
    limit: int = DEFAULT_LIMIT
    after: Position | None = None

    def filters(self) -> dict[str, str]:
        """The filters that are set: what a cursor is bound to (``limit`` may change between pages)."""
        names = (*EQUALITY_FILTERS, *RANGE_FILTERS)
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def parse_list_query(args: Mapping[str, Sequence[str]], cursor_key: bytes) -> ListQuery:
    """Validate the query string (each name mapped to all its values).

    :raises ValidationFailed: listing every unknown, repeated or malformed parameter.
    :raises InvalidCursor: when the parameters are fine but the cursor is not ours.
    """
    problems: list[FieldProblem] = []
    values = query.single_values(args, PARAMETERS, problems)
    fields: dict[str, object] = query.slugs(values, ("service", "environment"), problems)
    if "status" in values:
        fields["status"] = query.one_of(values, "status", lifecycle.STATUSES, problems)
    if "requester" in values:
        # The form requesters are stored in (identities.canonical), so that a
        # fullwidth or decomposed spelling finds what was stored.
        requester = unicodedata.normalize("NFKC", values["requester"].strip()).strip()
        if requester and len(requester) <= lifecycle.MAX_NAME:
            fields["requester"] = requester
        else:
            problems.append(FieldProblem("requester", f"must be 1-{lifecycle.MAX_NAME} characters"))
    for name in RANGE_FILTERS:
        if name in values:
            try:
                fields[name] = canonical_timestamp(values[name])
            except ValueError as error:
                problems.append(FieldProblem(name, str(error)))
    if "created_after" in fields and "created_before" in fields \
            and fields["created_after"] >= fields["created_before"]:
        problems.append(FieldProblem("created_before", "must be later than created_after"))
    if "limit" in values:
        fields["limit"] = query.whole_number(values, "limit", 1, MAX_LIMIT, problems)
    if problems:
        raise ValidationFailed(problems)

    parsed = ListQuery(**fields)  # type: ignore[arg-type]
    if "cursor" in values:
        position = decode_cursor(values["cursor"], parsed.filters(), cursor_key)
        parsed = ListQuery(**fields, after=position)  # type: ignore[arg-type]
    return parsed


def canonical_timestamp(text: str) -> str:
    """An RFC 3339 timestamp in the stored form (UTC, microseconds, ``Z``).

    Fractions finer than a microsecond round up, which keeps both ends of the
    half-open range exact against stored microsecond timestamps.

    :raises ValueError: when ``text`` is not an RFC 3339 date-time with an offset.
    """
    match = _RFC3339.fullmatch(text)
    if not match:
        raise ValueError("must be an RFC 3339 date-time with offset, e.g. 2026-11-26T10:15:30Z")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    fraction = fraction or ""
    micro = int((fraction + "000000")[:6])
    round_up = any(ch != "0" for ch in fraction[6:])
    # A leap second (:60) counts as the last microsecond of the minute before.
    leap = second == "60"
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute),
                          59 if leap else int(second), 999_999 if leap else micro,
                          tzinfo=timezone.utc)
        if offset not in ("Z", "z"):
            sign = 1 if offset[0] == "+" else -1
            hours, minutes = int(offset[1:3]), int(offset[4:6])
            if hours > 23 or minutes > 59:
                raise ValueError("offset out of range")
            moment -= sign * timedelta(hours=hours, minutes=minutes)
        if round_up:
            moment += timedelta(microseconds=1)
    except (ValueError, OverflowError):
        raise ValueError("is not a real date and time") from None
    if moment.year < 1 or moment.year > 9999:
        raise ValueError("is not a real date and time")
    return lifecycle.format_timestamp(moment)


def encode_cursor(position: Position, filters: Mapping[str, str], key: bytes) -> str:
    """An opaque, URL-safe token for resuming after ``position`` with the same filters."""
    payload = _b64encode(json.dumps([position.created_at, position.deployment_id], separators=(",", ":")).encode())
    return f"{payload}.{_b64encode(_signature(payload, filters, key))}"


def decode_cursor(token: str, filters: Mapping[str, str], key: bytes) -> Position:
    """The position a cursor resumes after.

    :raises InvalidCursor: when it was not issued by this API for these filters.
    """
    payload, _, signature = token.partition(".")
    try:
        given = _b64decode(signature)
    except (binascii.Error, ValueError):
        raise InvalidCursor("the cursor is not one this API produced") from None
    if not hmac.compare_digest(given, _signature(payload, filters, key)):
        raise InvalidCursor(
            "the cursor is not one this API produced for these filters; "
            "send the same filters as the request that returned it"
        )
    created_at, deployment_id = json.loads(_b64decode(payload))
    return Position(created_at=created_at, deployment_id=deployment_id)


def _signature(payload: str, filters: Mapping[str, str], key: bytes) -> bytes:
    message = payload.encode("ascii", "replace") + b"\n" + json.dumps(filters, sort_keys=True).encode()
    return hmac.new(key, message, hashlib.sha256).digest()[:16]


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
