"""The queries of the event lists: the feed (``GET /events?after=&since=&limit=&service=&environment=&type=&format=``)
and one deployment's history (``GET /deployments/{id}/events?after=&limit=&format=``).

Pure parsing and validation; the repository reads the events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import lifecycle, query
from .lifecycle import FieldProblem, ValidationFailed
from .listing import canonical_timestamp

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PARAMETERS = ("after", "since", "limit", "service", "environment", "type", "format")
# One deployment's history, paged by sequence when `after` or `limit` is given.
HISTORY_DEFAULT_LIMIT = 100
HISTORY_MAX_LIMIT = 200
HISTORY_PARAMETERS = ("after", "limit", "format")
# Representations of an event list: deployapi's own JSON, or CloudEvents carrying CDEvents.
FORMATS = ("json", "cdevents")


@dataclass(frozen=True, slots=True)
class FeedQuery:
    after: int = 0
    since: str | None = None  # inclusive lower bound on created_at, canonical timestamp
    limit: int = DEFAULT_LIMIT
    service: str | None = None
    environment: str | None = None
    event_type: str | None = None
    output_format: str | None = None  # None: not asked for; the Accept header decides


def parse_feed_query(args: Mapping[str, Sequence[str]]) -> FeedQuery:
    """Validate the query string (each name mapped to all its values).

    :raises ValidationFailed: listing every unknown, repeated or malformed parameter.
    """
    problems: list[FieldProblem] = []
    values = query.single_values(args, PARAMETERS, problems)
    fields: dict[str, object] = query.slugs(values, ("service", "environment"), problems)
    if "after" in values:
        fields["after"] = query.whole_number(values, "after", 0, 2**63 - 1, problems,
                                             "must be an event id: a whole number from 0")
    if "since" in values:
        try:
            fields["since"] = canonical_timestamp(values["since"])
        except ValueError as error:
            problems.append(FieldProblem("since", str(error)))
    if "limit" in values:
        fields["limit"] = query.whole_number(values, "limit", 1, MAX_LIMIT, problems)
    if "type" in values:
        fields["event_type"] = query.one_of(values, "type", lifecycle.EVENT_TYPES, problems)
    if "format" in values:
        fields["output_format"] = query.one_of(values, "format", FORMATS, problems)
    if problems:
        raise ValidationFailed(problems)
    return FeedQuery(**fields)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A validated ``GET /deployments/{id}/events``: every event (v1) unless ``after`` or ``limit`` asks for a page."""

    after: int = 0  # a sequence number: the page holds the events after it
    limit: int | None = None  # None: every event after ``after``, in the v1 answer
    output_format: str | None = None  # None: not asked for; the Accept header decides

    @property
    def paged(self) -> bool:
        return self.limit is not None


def parse_history_query(args: Mapping[str, Sequence[str]]) -> HistoryQuery:
    """Validate ``after``, ``limit`` and ``format``; other parameters are ignored, as in v1.

    :raises ValidationFailed: listing every repeated or malformed one of the three.
    """
    problems: list[FieldProblem] = []
    # v1 read only `format` and ignored the rest; parameters it never had stay ignored.
    values = query.single_values({name: args[name] for name in HISTORY_PARAMETERS if name in args},
                                 HISTORY_PARAMETERS, problems)
    after = query.whole_number(values, "after", 0, 2**63 - 1, problems,
                               "must be an event sequence number: a whole number from 0")
    limit = query.whole_number(values, "limit", 1, HISTORY_MAX_LIMIT, problems)
    output_format = query.one_of(values, "format", FORMATS, problems)
    if problems:
        raise ValidationFailed(problems)
    paged = "after" in values or "limit" in values
    return HistoryQuery(after=after or 0, limit=(limit or HISTORY_DEFAULT_LIMIT) if paged else None,
                        output_format=output_format)
