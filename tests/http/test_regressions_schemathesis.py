"""Regressions found by the Schemathesis conformance run (tests/conformance), each as a plain test."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from builders import create_body
from jsonschema import Draft202012Validator

from deployapi import lifecycle, listing
from deployapi.app import load_openapi


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


# --- found by the run with every check, positive_data_acceptance included ------------------


def test_an_empty_cursor_among_other_filters_is_the_first_page(client, created):
    # GET /deployments?…&cursor= was a 400 invalid_cursor although the document allows an
    # empty string; it now means no cursor.
    deployment = created(service="billing-api")
    response = client.get("/deployments", query_string={"service": "billing-api", "limit": "50", "cursor": ""})
    assert response.status_code == 200, response.get_json()
    assert [d["id"] for d in response.get_json()["items"]] == [deployment["id"]]


def test_equal_updated_bounds_are_an_empty_range(client, created):
    # Schemathesis sent updated_after = updated_before = 9426-07-12t20:05:09.632592z: a 422
    # "must be later than updated_after" for a range the document cannot call invalid.
    created()
    response = client.get("/deployments", query_string={"updated_after": "9426-07-12t20:05:09.632592z",
                                                         "updated_before": "9426-07-12t20:05:09.632592z"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"items": [], "next_cursor": None}


def test_a_dora_window_ending_where_it_starts_is_answered(client, created):
    # GET /metrics/dora?since=X&until=X was a 422 "until must be later than since".
    created()
    response = client.get("/metrics/dora", query_string={"environment": "billing-api", "service": "billing-api",
                                                         "since": "2026-12-02T14:40:40.473135Z",
                                                         "until": "2026-12-02T14:40:40.473135Z"})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["since"], body["until"]) == ("2026-12-02T14:40:40.473135Z",) * 2
    assert body["counts"] == {"succeeded": 0, "started": 0, "failed_changes": 0}
    assert body["deployment_frequency_per_day"] == 0.0


def test_no_idempotency_key_example_for_tools_to_reuse_with_other_bodies():
    # Schemathesis sent the document's one example key, deploy-4812-approve, with every
    # POST and every body: 422 idempotency_key_reused from the second on, by design.
    document = load_openapi()
    key = document["components"]["parameters"]["IdempotencyKey"]
    assert "example" not in key and "examples" not in key and "examples" not in key["schema"]


CREATE = load_openapi()["components"]["schemas"]["CreateDeployment"]
OPTIONAL = sorted(set(CREATE["properties"]) - set(CREATE["required"]))


@pytest.mark.parametrize("field", OPTIONAL)
def test_an_optional_field_sent_as_null_is_allowed_by_the_document_as_by_the_server(client, field):
    # "labels": null was accepted (null counts as not sent) while the document said an
    # object: a schema-violating request accepted.  Now the document says null too.
    body = {**create_body(), field: None}
    validator = Draft202012Validator({**CREATE, "components": load_openapi()["components"]})
    assert not [error.message for error in validator.iter_errors(body)]
    assert client.post("/deployments", json=body).status_code == 201
