"""The event feed's query: ``GET /events?after=&limit=&service=&environment=&type=``.

Pure parsing and validation; the repository reads the events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import lifecycle
from .lifecycle import FieldProblem, ValidationFailed

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PARAMETERS = ("after", "limit", "service", "environment", "type")


@dataclass(frozen=True, slots=True)
class FeedQuery:
    after: int = 0
    limit: int = DEFAULT_LIMIT
    service: str | None = None
    environment: str | None = None
    event_type: str | None = None


def parse_feed_query(args: Mapping[str, Sequence[str]]) -> FeedQuery:
    """Validate the query string (each name mapped to all its values).

    :raises ValidationFailed: listing every unknown, repeated or malformed parameter.
    """
    problems: list[FieldProblem] = []
    values: dict[str, str] = {}
    for name, given in args.items():
        if name not in PARAMETERS:
            problems.append(FieldProblem(name, f"unknown query parameter; allowed: {', '.join(PARAMETERS)}"))
        elif len(given) != 1:
            problems.append(FieldProblem(name, "must be given at most once"))
        else:
            values[name] = given[0]

    fields: dict[str, object] = {}
    if "after" in values:
        after = _whole_number(values["after"])
        if after is None or after > 2**63 - 1:
            problems.append(FieldProblem("after", "must be an event id: a whole number from 0"))
        else:
            fields["after"] = after
    if "limit" in values:
        limit = _whole_number(values["limit"])
        if limit is None or not 1 <= limit <= MAX_LIMIT:
            problems.append(FieldProblem("limit", f"must be a whole number from 1 to {MAX_LIMIT}"))
        else:
            fields["limit"] = limit
    for name in ("service", "environment"):
        if name in values:
            if lifecycle.is_slug(values[name]):
                fields[name] = values[name]
            else:
                problems.append(FieldProblem(name, "must be a valid service or environment name"))
    if "type" in values:
        if values["type"] in lifecycle.EVENT_TYPES:
            fields["event_type"] = values["type"]
        else:
            problems.append(FieldProblem("type", f"must be one of: {', '.join(lifecycle.EVENT_TYPES)}"))
    if problems:
        raise ValidationFailed(problems)
    return FeedQuery(**fields)  # type: ignore[arg-type]


def _whole_number(text: str) -> int | None:
    # isascii: str.isdigit() also accepts digits of other scripts, which int() would take.
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else None
