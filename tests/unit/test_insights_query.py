"""Parsing the query strings of GET /environments and GET /metrics/dora (pure functions)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from deployapi.insights import DoraQuery, EnvironmentsQuery, parse_dora_query, parse_environments_query
from deployapi.lifecycle import ValidationFailed

NOW = datetime(2026, 11, 26, 10, 15, 30, 123456, tzinfo=timezone.utc)


def fields(error: ValidationFailed) -> list[str]:
    return [problem.field for problem in error.problems]


def test_environments_take_an_optional_service_and_environment():
    assert parse_environments_query({}) == EnvironmentsQuery()
    assert parse_environments_query({"service": ["billing"], "environment": ["production"]}) == \
        EnvironmentsQuery(service="billing", environment="production")


def test_environments_report_every_bad_parameter():
    with pytest.raises(ValidationFailed) as caught:
        parse_environments_query({"service": ["Billing"], "environment": ["a", "b"], "status": ["approved"]})
    assert sorted(fields(caught.value)) == ["environment", "service", "status"]


@pytest.mark.parametrize("args, since, until", [
    pytest.param({}, "2026-10-27T10:15:30.123456Z", "2026-11-26T10:15:30.123456Z", id="no-bounds"),
    pytest.param({"since": ["2026-11-01T00:00:00Z"]}, "2026-11-01T00:00:00.000000Z",
                 "2026-11-26T10:15:30.123456Z", id="since-only"),
    pytest.param({"until": ["2026-03-01T00:00:00+01:00"]}, "2026-01-29T23:00:00.000000Z",
                 "2026-02-28T23:00:00.000000Z", id="until-only"),
    pytest.param({"since": ["2025-10-01T00:00:00Z"], "until": ["2026-01-01T00:00:00Z"]},
                 "2025-10-01T00:00:00.000000Z", "2026-01-01T00:00:00.000000Z", id="both"),
])
def test_a_missing_bound_defaults_to_now_or_30_days_before_until(args, since, until):
    assert parse_dora_query(args, NOW) == DoraQuery(since=since, until=until)


def test_scope_and_window_are_parsed_together():
    query = parse_dora_query({"service": ["billing"], "environment": ["production"],
                              "since": ["2026-11-01T00:00:00Z"]}, NOW)
    assert (query.service, query.environment) == ("billing", "production")


@pytest.mark.parametrize("args, field", [
    pytest.param({"since": ["2026-11-02T00:00:00Z"], "until": ["2026-11-01T00:00:00Z"]}, "until", id="reversed"),
    pytest.param({"since": ["2026-11-01T00:00:00.000001Z"], "until": ["2026-11-01T00:00:00Z"]}, "until",
                 id="reversed-by-a-microsecond"),
    pytest.param({"since": ["2026-11-26T10:15:30.123457Z"]}, "since", id="since-alone-after-now"),
])
def test_a_window_may_not_end_before_it_starts(args, field):
    with pytest.raises(ValidationFailed) as caught:
        parse_dora_query(args, NOW)
    assert fields(caught.value) == [field]


@pytest.mark.parametrize("args, instant", [
    pytest.param({"since": ["2026-11-01T00:00:00Z"], "until": ["2026-11-01T01:00:00+01:00"]},
                 "2026-11-01T00:00:00.000000Z", id="equal-bounds"),
    pytest.param({"since": ["2026-11-26T10:15:30.123456Z"]}, "2026-11-26T10:15:30.123456Z", id="since-alone-at-now"),
    pytest.param({"until": ["0001-01-01T00:00:00Z"]}, "0001-01-01T00:00:00.000000Z", id="until-at-the-first-instant"),
])
def test_an_empty_window_is_a_question_not_a_mistake(args, instant):
    assert parse_dora_query(args, NOW) == DoraQuery(since=instant, until=instant)


@pytest.mark.parametrize("args, longest", [
    pytest.param({"since": ["2025-07-01T00:00:00Z"], "until": ["2025-10-01T00:00:00Z"]}, True, id="a-quarter"),
    pytest.param({"since": ["2025-06-30T23:59:59.999999Z"], "until": ["2025-10-01T00:00:00Z"]}, False,
                 id="a-microsecond-more"),
    pytest.param({"since": ["2025-01-01T00:00:00Z"], "until": ["2026-01-01T00:00:00Z"]}, False, id="a-year"),
    pytest.param({"since": ["2026-08-26T10:15:30.123456Z"]}, True, id="since-alone-92-days-before-now"),
    pytest.param({"since": ["2000-01-01T00:00:00Z"]}, False, id="since-alone-years-before-now"),
])
def test_a_window_is_at_most_92_days_long(args, longest):
    if longest:
        assert parse_dora_query(args, NOW)
        return
    with pytest.raises(ValidationFailed) as caught:
        parse_dora_query(args, NOW)
    assert fields(caught.value) == ["since"]


def test_every_bad_dora_parameter_is_reported_at_once():
    with pytest.raises(ValidationFailed) as caught:
        parse_dora_query({"since": ["yesterday"], "until": ["2026-13-01T00:00:00Z"], "service": ["-x"],
                          "limit": ["5"], "environment": ["a", "b"]}, NOW)
    assert sorted(fields(caught.value)) == ["environment", "limit", "service", "since", "until"]


def test_the_default_since_stops_at_the_first_instant_of_year_one():
    query = parse_dora_query({"until": ["0001-01-05T00:00:00Z"]}, NOW)
    assert query.since == "0001-01-01T00:00:00.000000Z"
