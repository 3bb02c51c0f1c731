"""GET /deployments as a client sees it: filters, order, pages, cursors, bad parameters."""

from __future__ import annotations

import threading

import pytest
from builders import StepClock, create_body
from werkzeug.test import Client

from deployapi import create_app


@pytest.fixture
def stepped_app(db_path):
    """An app whose clock moves 1 ms per write, so created_at order is known."""
    app = create_app(db_path, clock=StepClock())
    yield app
    app.close()


@pytest.fixture
def listing(stepped_app):
    client = Client(stepped_app)

    def get(**params):
        return client.get("/deployments", query_string=params)

    get.client = client
    return get


@pytest.fixture
def seeded(listing):
    """12 deployments over 2 services x 2 environments, some approved or rejected; returned oldest first."""
    client = listing.client
    made = []
    for n in range(12):
        body = create_body(service=("billing", "search")[n % 2], environment=("staging", "production")[n // 6],
                           requester=("alice", "bob", "carol")[n % 3], version=f"1.{n}", risk="r")
        deployment = client.post("/deployments", json=body).get_json()
        if n % 4 == 1:
            deployment = client.post(f"/deployments/{deployment['id']}/approve", json={"actor": "zed"}).get_json()
        elif n % 4 == 3:
            deployment = client.post(f"/deployments/{deployment['id']}/reject",
                                     json={"actor": "zed", "note": "no"}).get_json()
        made.append(deployment)
    return made


def versions(response):
    assert response.status_code == 200, response.get_json()
    return [d["version"] for d in response.get_json()["items"]]


def walk(listing, **params):
    """Every item of every page, following next_cursor."""
    items, pages = [], 0
    while True:
        body = listing(**params).get_json()
        items += body["items"]
        pages += 1
        if body["next_cursor"] is None:
            return items, pages
        params["cursor"] = body["next_cursor"]


def test_the_listing_is_newest_first_with_every_field(listing, seeded):
    response = listing()
    assert versions(response) == [d["version"] for d in reversed(seeded)]
    assert response.get_json()["items"][0] == seeded[-1]
    assert response.get_json()["next_cursor"] is None


def test_an_empty_database_lists_nothing(listing):
    assert listing().get_json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"service": "billing"}, lambda d: d["service"] == "billing"),
        ({"environment": "production"}, lambda d: d["environment"] == "production"),
        ({"status": "approved"}, lambda d: d["status"] == "approved"),
        ({"requester": "bob"}, lambda d: d["requester"] == "bob"),
        ({"service": "search", "environment": "staging"},
         lambda d: d["service"] == "search" and d["environment"] == "staging"),
        ({"service": "billing", "status": "pending_approval"},
         lambda d: d["service"] == "billing" and d["status"] == "pending_approval"),
        ({"environment": "production", "status": "rejected"},
         lambda d: d["environment"] == "production" and d["status"] == "rejected"),
        ({"service": "search", "environment": "production", "status": "approved"},
         lambda d: (d["service"], d["environment"], d["status"]) == ("search", "production", "approved")),
        ({"service": "billing", "requester": "alice"},
         lambda d: d["service"] == "billing" and d["requester"] == "alice"),
        ({"service": "nothing-here"}, lambda d: False),
    ],
    ids=lambda v: "+".join(v) if isinstance(v, dict) else "",
)
def test_filters_are_exact_and_combine_with_and(listing, seeded, params, expected):
    assert versions(listing(**params)) == [d["version"] for d in reversed(seeded) if expected(d)]


def test_the_created_range_is_half_open(listing, seeded):
    start, end = seeded[3]["created_at"], seeded[7]["created_at"]
    got = versions(listing(created_after=start, created_before=end))
    assert got == [d["version"] for d in reversed(seeded[3:7])]
    assert versions(listing(created_after=seeded[10]["created_at"])) == ["1.11", "1.10"]
    assert versions(listing(created_before=seeded[1]["created_at"])) == ["1.0"]


def test_the_created_range_accepts_offsets(listing, seeded):
    # seeded[3] is at 10:00:00.00Nxxx UTC; the same instant written at +02:00.
    start = seeded[3]["created_at"].replace("T10:", "T12:").replace("Z", "+02:00")
    assert versions(listing(created_after=start))[-1] == "1.3"


@pytest.mark.parametrize("limit", [1, 2, 5, 11, 12, 200])
def test_walking_every_page_returns_each_match_once_in_order(listing, seeded, limit):
    items, pages = walk(listing, limit=limit)
    assert [d["id"] for d in items] == [d["id"] for d in reversed(seeded)]
    assert pages == -(-len(seeded) // limit)  # ceiling: no empty last page


def test_walking_a_filtered_listing_keeps_the_filter(listing, seeded):
    items, _ = walk(listing, service="billing", limit=2)
    assert [d["version"] for d in items] == [d["version"] for d in reversed(seeded) if d["service"] == "billing"]


def test_limit_may_change_between_pages(listing, seeded):
    first = listing(limit=3).get_json()
    second = listing(limit=5, cursor=first["next_cursor"]).get_json()
    assert [d["version"] for d in first["items"] + second["items"]] == [f"1.{n}" for n in range(11, 3, -1)]


def test_the_default_page_is_50(listing):
    for n in range(55):
        listing.client.post("/deployments", json=create_body(version=f"2.{n}"))
    body = listing().get_json()
    assert len(body["items"]) == 50 and body["next_cursor"] is not None
    assert len(listing(cursor=body["next_cursor"]).get_json()["items"]) == 5


def test_deployments_created_while_walking_do_not_disturb_the_walk(listing, seeded):
    first = listing(limit=5).get_json()
    for n in range(7):
        listing.client.post("/deployments", json=create_body(version=f"9.{n}"))
    rest, _ = walk(listing, limit=5, cursor=first["next_cursor"])
    walked = [d["id"] for d in first["items"] + rest]
    assert walked == [d["id"] for d in reversed(seeded)]


def test_a_walk_under_concurrent_inserts_sees_every_existing_deployment_exactly_once(db_path, listing, seeded):
    stop = threading.Event()
    writer_client = Client(create_app(db_path))

    def keep_creating():
        n = 0
        while not stop.is_set():
            writer_client.post("/deployments", json=create_body(version=f"c.{n}"))
            n += 1

    writer = threading.Thread(target=keep_creating)
    writer.start()
    try:
        items, _ = walk(listing, limit=2)
    finally:
        stop.set()
        writer.join()
    ids = [d["id"] for d in items]
    assert len(ids) == len(set(ids))
    assert {d["id"] for d in seeded} <= set(ids)
    # Only deployments created during the walk can be extra, and they come first.
    existing = [i for i in ids if i in {d["id"] for d in seeded}]
    assert existing == [d["id"] for d in reversed(seeded)]


@pytest.mark.parametrize(
    "query_string, field",
    [("limit=0", "limit"), ("limit=201", "limit"), ("limit=abc", "limit"), ("status=done", "status"),
     ("service=Not%20A%20Slug", "service"), ("colour=red", "colour"), ("service=a&service=b", "service"),
     ("created_after=last%20week", "created_after"), ("requester=", "requester")],
)
def test_bad_parameters_are_422_validation_failed(listing, query_string, field):
    response = listing.client.get(f"/deployments?{query_string}")
    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == "validation_failed" and field in [e["field"] for e in body["errors"]]


@pytest.mark.parametrize("cursor", ["", "garbage", "eyJhIjoxfQ", "a.b.c"])
def test_a_cursor_the_api_never_produced_is_400_invalid_cursor(listing, cursor):
    response = listing(cursor=cursor)
    assert response.status_code == 400 and response.get_json()["code"] == "invalid_cursor"


def test_a_cursor_reused_with_another_filter_is_400(listing, seeded):
    cursor = listing(service="billing", limit=2).get_json()["next_cursor"]
    for params in ({"service": "search"}, {}, {"service": "billing", "status": "approved"}):
        response = listing(cursor=cursor, **params)
        assert response.status_code == 400 and response.get_json()["code"] == "invalid_cursor"


def test_a_cursor_from_another_database_is_400(tmp_path, listing, seeded):
    cursor = listing(limit=2).get_json()["next_cursor"]
    other = create_app(tmp_path / "other.db")
    try:
        assert Client(other).get("/deployments", query_string={"cursor": cursor}).status_code == 400
    finally:
        other.close()


def test_a_cursor_survives_a_restart(db_path, listing, seeded):
    cursor = listing(limit=4).get_json()["next_cursor"]
    restarted = create_app(db_path)
    try:
        response = Client(restarted).get("/deployments", query_string={"cursor": cursor, "limit": 4})
        assert versions(response) == ["1.7", "1.6", "1.5", "1.4"]
    finally:
        restarted.close()
