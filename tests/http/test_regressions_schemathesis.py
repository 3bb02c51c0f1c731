"""Regressions found by the Schemathesis conformance run (tests/conformance), each as a plain test."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from deployapi import lifecycle, listing


def test_a_range_starting_before_the_year_1000_is_not_refused_as_empty(client, created):
    # Schemathesis sent created_after=0221-…, created_before=1461-…: a 422 "must be
    # later than created_after", because year 221 was written "221-…" and
    # compared as text with "1461-…".
    response = client.get("/deployments", query_string={"created_after": "0221-06-12T08:03:07+00:55",
                                                         "created_before": "1461-06-26T04:52:43+16:28"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["items"] == []


def test_a_lower_bound_before_the_year_1000_still_lists_every_deployment(client, created):
    # The same bug in the query: created_at >= "221-…" matched nothing, as "2026-…" < "221-…".
    deployment = created()
    response = client.get("/deployments", query_string={"created_after": "0999-12-31T23:59:59Z"})
    assert [d["id"] for d in response.get_json()["items"]] == [deployment["id"]]


@pytest.mark.parametrize("moment, text", [
    (datetime(221, 6, 12, 7, 8, 7, tzinfo=timezone.utc), "0221-06-12T07:08:07.000000Z"),
    (datetime(1, 1, 1, tzinfo=timezone.utc), "0001-01-01T00:00:00.000000Z"),
    (datetime(2026, 11, 26, 10, 15, 30, 123456, tzinfo=timezone.utc), "2026-11-26T10:15:30.123456Z"),
])
def test_timestamps_always_have_four_digit_years(moment, text):
    assert lifecycle.format_timestamp(moment) == text
    assert listing.canonical_timestamp(text) == text


def test_only_ascii_digits_make_a_timestamp(client):
    # Found while writing the document's pattern: \d also matched "٢٠٢٦" (Arabic-Indic digits).
    response = client.get("/deployments", query_string={"created_after": "٢٠٢٦-01-01T00:00:00Z"})
    assert response.status_code == 422
    assert [e["field"] for e in response.get_json()["errors"]] == ["created_after"]
