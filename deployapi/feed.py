"""The event feed's query: ``GET /events?after=&limit=&service=&environment=&type=&format=``.

Pure parsing and validation; the repository reads the events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import lifecycle, query
from .lifecycle import FieldProblem, ValidationFailed

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PARAMETERS = ("after", "limit", "service", "environment", "type", "format")
# Representations of an event list: deployapi's own JSON, or CloudEvents carrying CDEvents.
FORMATS = ("json", "cdevents")


@dataclass(frozen=True, slots=True)
class FeedQuery:
    after: int = 0
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
    if "limit" in values:
        fields["limit"] = query.whole_number(values, "limit", 1, MAX_LIMIT, problems)
    if "type" in values:
        fields["event_type"] = query.one_of(values, "type", lifecycle.EVENT_TYPES, problems)
    if "format" in values:
        fields["output_format"] = query.one_of(values, "format", FORMATS, problems)
    if problems:
        raise ValidationFailed(problems)
    return FeedQuery(**fields)  # type: ignore[arg-type]


def parse_format(args: Mapping[str, Sequence[str]]) -> str | None:
    """The ``format`` of ``GET /deployments/{id}/events``, None when not given; other parameters are ignored.

    :raises ValidationFailed: ``format`` is repeated or not one of FORMATS.
    """
    problems: list[FieldProblem] = []
    values = query.single_values({"format": args["format"]} if "format" in args else {}, ("format",), problems)
    output_format = query.one_of(values, "format", FORMATS, problems)
    if problems:
        raise ValidationFailed(problems)
    return output_format

