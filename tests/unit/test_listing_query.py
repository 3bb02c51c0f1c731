"""Listing parameters and cursors: parsing, validation and tamper-evidence."""

from __future__ import annotations

import pytest

from deployapi.lifecycle import ValidationFailed
from deployapi.listing import (
    DEFAULT_LIMIT,
    InvalidCursor,
    Position,
    canonical_timestamp,
    decode_cursor,
    encode_cursor,
    parse_list_query,
)

KEY = b"k" * 32


def parse(**params):
    return parse_list_query({name: [value] for name, value in params.items()}, KEY)


def problem_fields(args) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        parse_list_query(args, KEY)
    return [p.field for p in caught.value.problems]


def test_no_parameters_means_no_filters_and_the_default_limit():
    query = parse()
    assert query.filters() == {} and query.limit == DEFAULT_LIMIT and query.after is None


def test_filters_are_kept_as_given():
    query = parse(service="billing", environment="prod", status="failed", requester=" alice ", limit="200")
    assert query.filters() == {"service": "billing", "environment": "prod", "status": "failed",
                               "requester": "alice"}
    assert query.limit == 200


@pytest.mark.parametrize(
    "params, field",
    [
        ({"limit": ["0"]}, "limit"), ({"limit": ["201"]}, "limit"), ({"limit": ["-1"]}, "limit"),
        ({"limit": ["1.5"]}, "limit"), ({"limit": ["ten"]}, "limit"), ({"limit": [""]}, "limit"),
        ({"limit": ["٣"]}, "limit"), ({"status": ["done"]}, "status"), ({"status": [""]}, "status"),
        ({"service": ["Billing"]}, "service"), ({"environment": [""]}, "environment"),
        ({"requester": ["   "]}, "requester"), ({"created_after": ["yesterday"]}, "created_after"),
        ({"created_before": ["2026-11-26"]}, "created_before"),
        ({"created_after": ["2026-02-30T00:00:00Z"]}, "created_after"),
        ({"created_after": ["2026-11-26T10:00:00Z"], "created_before": ["2026-11-26T09:59:59.999999Z"]},
         "created_before"),
        ({"updated_after": ["2026-11-26T10:00:00Z"], "updated_before": ["2026-11-26T10:00:00+00:01"]},
         "updated_before"),
        ({"sort": ["asc"]}, "sort"), ({"service": ["a", "b"]}, "service"),
    ],
    ids=lambda value: repr(value) if isinstance(value, dict) else value,
)
def test_bad_parameters_are_validation_problems(params, field):
    assert field in problem_fields(params)


@pytest.mark.parametrize("low, high", [("created_after", "created_before"), ("updated_after", "updated_before")])
def test_equal_bounds_are_an_empty_range_not_a_mistake(low, high):
    query = parse(**{low: "2026-11-26T10:00:00Z", high: "2026-11-26T11:00:00+01:00"})
    assert getattr(query, low) == getattr(query, high) == "2026-11-26T10:00:00.000000Z"


def test_an_empty_cursor_is_no_cursor():
    assert parse(cursor="").after is None
    assert parse(service="billing", cursor="", limit="7") == parse(service="billing", limit="7")


def test_a_repeated_empty_cursor_is_still_a_repeated_parameter():
    assert problem_fields({"cursor": ["", ""]}) == ["cursor"]


def test_every_bad_parameter_is_reported_at_once():
    assert set(problem_fields({"limit": ["0"], "status": ["x"], "page": ["2"]})) == {"limit", "status", "page"}


@pytest.mark.parametrize(
    "text, stored",
    [
        ("2026-11-26T10:15:30Z", "2026-11-26T10:15:30.000000Z"),
        ("2026-11-26t10:15:30.5z", "2026-11-26T10:15:30.500000Z"),
        ("2026-11-26T12:15:30.123456+02:00", "2026-11-26T10:15:30.123456Z"),
        ("2026-11-26T10:15:30.1234561Z", "2026-11-26T10:15:30.123457Z"),
        ("2026-11-26T10:15:30.1234560Z", "2026-11-26T10:15:30.123456Z"),
        ("2026-12-31T23:59:60Z", "2026-12-31T23:59:59.999999Z"),
    ],
)
def test_timestamps_are_normalised_to_the_stored_form(text, stored):
    assert canonical_timestamp(text) == stored


def test_a_cursor_round_trips_with_the_same_filters():
    position = Position("2026-11-26T10:15:30.000000Z", "01abc")
    token = encode_cursor(position, {"service": "billing"}, KEY)
    assert decode_cursor(token, {"service": "billing"}, KEY) == position
    assert parse(service="billing", cursor=token, limit="7").after == position


@pytest.mark.parametrize(
    "filters, key",
    [({"service": "search"}, KEY), ({}, KEY), ({"service": "billing", "status": "failed"}, KEY),
     ({"service": "billing"}, b"another database's key")],
    ids=["other filter value", "filter dropped", "filter added", "other database"],
)
def test_a_cursor_is_refused_with_other_filters_or_another_key(filters, key):
    token = encode_cursor(Position("2026-11-26T10:15:30.000000Z", "01abc"), {"service": "billing"}, KEY)
    with pytest.raises(InvalidCursor):
        decode_cursor(token, filters, key)


@pytest.mark.parametrize("token", ["", "abc", "a.b", "....", "é.é", "eyJ4IjoxfQ.AAAA"])
def test_strings_the_api_never_produced_are_refused(token):
    with pytest.raises(InvalidCursor):
        decode_cursor(token, {}, KEY)


def test_an_edited_cursor_is_refused():
    token = encode_cursor(Position("2026-11-26T10:15:30.000000Z", "01abc"), {}, KEY)
    payload, signature = token.split(".")
    forged = encode_cursor(Position("2099-01-01T00:00:00.000000Z", "zzz"), {}, b"guess").split(".")[0]
    with pytest.raises(InvalidCursor):
        decode_cursor(f"{forged}.{signature}", {}, KEY)
