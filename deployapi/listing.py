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

from . import lifecycle, query
from .lifecycle import FieldProblem, ValidationFailed
from .timestamps import canonical_timestamp

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
EQUALITY_FILTERS = ("service", "environment", "status", "requester", "version")
RANGE_FILTERS = ("created_after", "created_before", "updated_after", "updated_before")
# Filters matched otherwise than by equality with a column: one of the
# deployment's work references, a prefix of its commit, and its labels.
OTHER_FILTERS = ("work_ref", "commit_sha", "label")
PARAMETERS = (*EQUALITY_FILTERS, *RANGE_FILTERS, *OTHER_FILTERS, "limit", "cursor")
# The one parameter that may be given more than once: every label must match.
REPEATABLE = ("label",)
MAX_LABEL_FILTERS = 10
_COMMIT_PREFIX = re.compile("[0-9a-f]{7,64}")

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
    version: str | None = None
    created_after: str | None = None  # inclusive, canonical timestamp
    created_before: str | None = None  # exclusive, canonical timestamp
    updated_after: str | None = None  # inclusive
    updated_before: str | None = None  # exclusive
    work_ref: str | None = None
    commit_sha: str | None = None  # a prefix of the commit id
    label: tuple[str, ...] = ()  # "key=value" each, sorted
    limit: int = DEFAULT_LIMIT
    after: Position | None = None

    def filters(self) -> dict[str, object]:
        """The filters that are set: what a cursor is bound to (``limit`` may change between pages)."""
        names = (*EQUALITY_FILTERS, *RANGE_FILTERS, *OTHER_FILTERS)
        return {name: list(value) if isinstance(value, tuple) else value
                for name in names if (value := getattr(self, name)) not in (None, ())}


def parse_list_query(args: Mapping[str, Sequence[str]], cursor_key: bytes) -> ListQuery:
    """Validate the query string (each name mapped to all its values).

    :raises ValidationFailed: listing every unknown, repeated or malformed parameter.
    :raises InvalidCursor: when the parameters are fine but the cursor is not ours.
    """
    problems: list[FieldProblem] = []
    values = query.single_values({name: given for name, given in args.items() if name not in REPEATABLE},
                                 PARAMETERS, problems)
    fields: dict[str, object] = query.slugs(values, ("service", "environment"), problems)
    if "version" in values:
        version = values["version"]
        if lifecycle.is_version(version):
            fields["version"] = version
        else:
            problems.append(FieldProblem("version", f"must be 1-{lifecycle.MAX_VERSION} characters without "
                                                    "whitespace or control characters"))
    if "work_ref" in values:
        work_ref = values["work_ref"].strip()
        if 1 <= len(work_ref) <= lifecycle.MAX_WORK_REF:
            fields["work_ref"] = work_ref  # stored trimmed, so compared trimmed
        else:
            problems.append(FieldProblem("work_ref", f"must be 1-{lifecycle.MAX_WORK_REF} characters"))
    if "commit_sha" in values:
        if _COMMIT_PREFIX.fullmatch(values["commit_sha"]):
            fields["commit_sha"] = values["commit_sha"]
        else:
            problems.append(FieldProblem("commit_sha", "must be 7-64 lowercase hexadecimal characters "
                                                       "(a prefix of the commit id)"))
    if "label" in args:
        fields["label"] = _labels(args["label"], problems)
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
    for low, high in (("created_after", "created_before"), ("updated_after", "updated_before")):
        # Equal bounds are an empty range, which a client computing windows can
        # meet (a window ending where it starts); reversed ones are a mistake.
        if low in fields and high in fields and fields[low] > fields[high]:
            problems.append(FieldProblem(high, f"must not be earlier than {low}"))
    if "limit" in values:
        fields["limit"] = query.whole_number(values, "limit", 1, MAX_LIMIT, problems)
    if problems:
        raise ValidationFailed(problems)

    parsed = ListQuery(**fields)  # type: ignore[arg-type]
    # An empty cursor is no cursor: the first page, for clients that always send
    # the previous page's next_cursor and start from an empty one.
    if values.get("cursor"):
        position = decode_cursor(values["cursor"], parsed.filters(), cursor_key)
        parsed = ListQuery(**fields, after=position)  # type: ignore[arg-type]
    return parsed


def _labels(given: Sequence[str], problems: list[FieldProblem]) -> tuple[str, ...]:
    """``key=value`` filters, each as the deployment_labels table holds it; sorted, so their order does not matter."""
    if len(given) > MAX_LABEL_FILTERS:
        problems.append(FieldProblem("label", f"may be given at most {MAX_LABEL_FILTERS} times"))
        return ()
    labels: set[str] = set()
    for text in given:
        key, equals, value = text.partition("=")
        if not equals or not lifecycle.is_label_key(key) or not lifecycle.is_label_value(value):
            problems.append(FieldProblem("label", "must be key=value with a label key and a value of at most "
                                                  f"{lifecycle.MAX_LABEL_VALUE} characters without control "
                                                  f"characters, not {text[:80]!r}"))
        else:
            labels.add(text)
    return tuple(sorted(labels))


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
