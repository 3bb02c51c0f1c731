"""GET /environments: what is live in each (service, environment), and what is on its way."""

from __future__ import annotations

import pytest
from builders import assert_invalid_fields
from histories import Timeline, at, shipped

from deployapi.insights import IN_FLIGHT_SHOWN


@pytest.fixture
def timeline(db_path):
    t = Timeline(db_path)
    yield t
    t.close()


def only_item(timeline, **params) -> dict:
    items = timeline.get("/environments", **params)["items"]
    assert len(items) == 1, items
    return items[0]


def test_an_empty_record_has_no_environments(timeline):
    assert timeline.get("/environments") == {"items": []}


def test_the_newest_success_is_live(timeline):
    timeline.deploy(0, "1.0.0", steps=shipped(1, 2, 3))
    newest = timeline.deploy(10, "1.1.0", steps=shipped(11, 12, 13))

    assert only_item(timeline) == {
        "service": "billing", "environment": "production",
        "current": {"deployment_id": newest, "version": "1.1.0", "succeeded_at": at(13)},
        "in_flight": [], "in_flight_count": 0, "last_change_at": at(13),
    }


def test_when_the_newest_success_is_rolled_back_the_one_before_is_live_again(timeline):
    previous = timeline.deploy(0, "1.0.0", steps=shipped(1, 2, 3))
    newest = timeline.deploy(10, "1.1.0", steps=shipped(11, 12, 13))
    timeline.act(newest, "rollback", 20)

    item = only_item(timeline)
    assert item["current"] == {"deployment_id": previous, "version": "1.0.0", "succeeded_at": at(3)}
    assert item["last_change_at"] == at(20)


def test_rollbacks_fall_back_through_several_versions_and_then_to_none(timeline):
    first = timeline.deploy(0, "1.0.0", steps=shipped(1, 2, 3))
    second = timeline.deploy(10, "1.1.0", steps=shipped(11, 12, 13))
    third = timeline.deploy(20, "1.2.0", steps=shipped(21, 22, 23))
    timeline.act(third, "rollback", 30)
    timeline.act(second, "rollback", 31)
    assert only_item(timeline)["current"]["version"] == "1.0.0"

    timeline.act(first, "rollback", 32)
    item = only_item(timeline)
    assert item["current"] is None
    assert item["last_change_at"] == at(32)


def test_rolling_back_an_older_success_leaves_the_newer_one_live(timeline):
    older = timeline.deploy(0, "1.0.0", steps=shipped(1, 2, 3))
    newer = timeline.deploy(10, "1.1.0", steps=shipped(11, 12, 13))
    timeline.act(older, "rollback", 20)

    assert only_item(timeline)["current"]["deployment_id"] == newer


def test_the_live_version_is_the_one_that_succeeded_last_not_the_one_requested_last(timeline):
    # Requested first, but its rollout finished after the later request's did.
    slow = timeline.request(0, "1.0.0")
    fast = timeline.request(1, "1.1.0")
    timeline.act(slow, "approve", 2)
    timeline.act(fast, "approve", 3)
    timeline.act(slow, "start", 4)
    timeline.act(fast, "start", 5)
    timeline.act(fast, "succeed", 6)
    timeline.act(slow, "succeed", 7)

    assert only_item(timeline)["current"] == {"deployment_id": slow, "version": "1.0.0", "succeeded_at": at(7)}


def test_a_failure_leaves_the_previous_success_live_and_is_the_last_change(timeline):
    live = timeline.deploy(0, "1.0.0", steps=shipped(1, 2, 3))
    timeline.deploy(10, "1.1.0", steps={"approve": 11, "start": 12, "fail": 13})

    item = only_item(timeline)
    assert item["current"]["deployment_id"] == live
    assert item["in_flight"] == []
    assert item["last_change_at"] == at(13)


def test_approved_and_started_deployments_are_in_flight_newest_first(timeline):
    live = timeline.deploy(0, "1.0.0", steps=shipped(1, 2, 3))
    approved = timeline.deploy(10, "1.1.0", steps={"approve": 11})
    started = timeline.deploy(12, "1.2.0", steps={"approve": 13, "start": 14})
    timeline.request(15, "1.3.0")  # pending: not in flight
    timeline.deploy(16, "1.4.0", steps={"reject": 17})  # rejected: not in flight

    item = only_item(timeline)
    assert item["current"]["deployment_id"] == live
    assert item["in_flight"] == [
        {"deployment_id": started, "version": "1.2.0", "status": "started", "updated_at": at(14)},
        {"deployment_id": approved, "version": "1.1.0", "status": "approved", "updated_at": at(11)},
    ]
    assert item["in_flight_count"] == 2
    # Requests, approvals and rejections do not change the environment; a start does.
    assert item["last_change_at"] == at(14)


def test_a_cancelled_deployment_is_neither_in_flight_nor_a_change(timeline):
    live = timeline.deploy(0, "1.0.0", steps=shipped(1, 2, 3))
    timeline.deploy(10, "1.1.0", steps={"approve": 11, "cancel": 12})
    timeline.deploy(20, "1.2.0", steps={"cancel": 21})

    item = only_item(timeline)
    assert item["current"]["deployment_id"] == live
    assert (item["in_flight"], item["in_flight_count"]) == ([], 0)
    assert item["last_change_at"] == at(3)


def test_only_the_newest_in_flight_deployments_are_listed_but_all_are_counted(timeline):
    total = IN_FLIGHT_SHOWN + 2
    ids = [timeline.deploy(10 * n, f"1.{n}.0", steps={"approve": 10 * n + 1}) for n in range(total)]

    item = only_item(timeline)
    assert [f["deployment_id"] for f in item["in_flight"]] == ids[::-1][:IN_FLIGHT_SHOWN]
    assert item["in_flight_count"] == total


def test_an_environment_with_only_requests_is_listed_with_nothing_live(timeline):
    timeline.request(0, "1.0.0", environment="staging")

    assert only_item(timeline) == {
        "service": "billing", "environment": "staging", "current": None,
        "in_flight": [], "in_flight_count": 0, "last_change_at": None,
    }


def test_environments_are_ordered_by_service_then_environment_and_kept_apart(timeline):
    search_live = timeline.deploy(0, "9.0.0", service="search", environment="production", steps=shipped(1, 2, 3))
    billing_staging = timeline.deploy(4, "2.0.0", environment="staging", steps=shipped(5, 6, 7))
    billing_production = timeline.deploy(8, "1.0.0", steps=shipped(9, 10, 11))
    timeline.deploy(12, "2.1.0", environment="staging", steps={"approve": 13, "start": 14, "fail": 15})

    items = timeline.get("/environments")["items"]
    assert [(i["service"], i["environment"], i["current"]["deployment_id"], i["last_change_at"]) for i in items] == [
        ("billing", "production", billing_production, at(11)),
        ("billing", "staging", billing_staging, at(15)),
        ("search", "production", search_live, at(3)),
    ]


def test_service_and_environment_narrow_the_list(timeline):
    timeline.deploy(0, "9.0.0", service="search", environment="production", steps=shipped(1, 2, 3))
    timeline.deploy(4, "2.0.0", environment="staging", steps=shipped(5, 6, 7))
    timeline.deploy(8, "1.0.0", steps=shipped(9, 10, 11))

    def pairs(**params):
        return [(i["service"], i["environment"]) for i in timeline.get("/environments", **params)["items"]]

    assert pairs(service="billing") == [("billing", "production"), ("billing", "staging")]
    assert pairs(environment="production") == [("billing", "production"), ("search", "production")]
    assert pairs(service="search", environment="production") == [("search", "production")]
    assert pairs(service="search", environment="staging") == []
    assert pairs(service="unknown") == []


@pytest.mark.parametrize("query, fields", [
    pytest.param("region=eu", ["region"], id="unknown"),
    pytest.param("service=a&service=b", ["service"], id="repeated"),
    pytest.param("service=Billing%20API", ["service"], id="malformed-service"),
    pytest.param("environment=", ["environment"], id="empty-environment"),
    pytest.param("service=%ff", ["query"], id="not-utf-8"),
    pytest.param("service=Bad&environment=-x&limit=3", ["service", "environment", "limit"], id="every-problem-at-once"),
])
def test_bad_query_parameters_are_422_listing_every_one(timeline, query, fields):
    assert_invalid_fields(timeline.client.get(f"/environments?{query}"), fields)


def test_environments_accepts_only_get(timeline):
    response = timeline.client.post("/environments", json={})

    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
