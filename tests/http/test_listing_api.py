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


@pytest.mark.parametrize("low, high, field", [("created_after", "created_before", "created_at"),
                                              ("updated_after", "updated_before", "updated_at")])
def test_equal_bounds_list_nothing_not_even_what_happened_at_that_instant(listing, seeded, low, high, field):
    instant = seeded[5][field]
    assert versions(listing(**{low: instant})) != []
    assert listing(**{low: instant, high: instant}).get_json() == {"items": [], "next_cursor": None}


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


# --- walks under the filters of pipeline metadata while deployments are created and updated ------------------
#
# The listing is ordered by created_at and id, which never change, and a cursor is a
# position in that order.  So a walk under a filter returns, exactly once and in listing
# order, every deployment that matches the filter at the start and still matches when its
# page is read; deployments created during the walk are newer than its position and never
# appear.  version, work_ref, commit_sha and label are fixed at creation, so a walk under
# them returns exactly what matched at the start.  status, updated_after and updated_before
# are not: a deployment updated during the walk may move into or out of the filter, and then
# appears at most once, where its created_at puts it.  That is all the walk guarantees.


@pytest.fixture
def pipeline_seeded(listing):
    """30 deployments with pipeline metadata, then the odd ones approved or rejected in order.

    Returns every deployment as last written, oldest first, and ``bound``: the updated_at of
    the action on deployment 15, the middle of the updates.
    """
    client = listing.client
    made = []
    for n in range(30):
        body = create_body(
            version=("2.0", "2.1", "2.2")[n % 3],
            work_refs=["JIRA-7", f"PR-{n}"] if n % 2 == 0 else ["JIRA-8"],
            commit_sha=None if n % 5 == 0 else ("abc1234" if n % 3 == 1 else "abd1234") + f"{n:033x}",
            labels={"team": ("payments", "search")[n % 2], "tier": str(n % 3)},
        )
        made.append(client.post("/deployments", json=body).get_json())
    bound = None
    for n in range(1, 30, 2):
        action, note = ("approve", None) if n % 4 == 1 else ("reject", "no")
        made[n] = client.post(f"/deployments/{made[n]['id']}/{action}", json={"actor": "zed", "note": note}).get_json()
        if n == 15:
            bound = made[n]["updated_at"]
    return made, bound


# (query parameters, where "@bound" stands for pipeline_seeded's bound; whether a listed deployment
# matches them; a body that matches them and one that does not, for the deployments created mid-walk)
PIPELINE_WALKS = [
    pytest.param({"version": "2.0"}, lambda d, bound: d["version"] == "2.0",
                 {"version": "2.0"}, {"version": "2.1"}, id="version"),
    pytest.param({"work_ref": "JIRA-7"}, lambda d, bound: "JIRA-7" in d["work_refs"],
                 {"work_refs": ["JIRA-7"]}, {"work_refs": ["JIRA-8"]}, id="work_ref"),
    pytest.param({"commit_sha": "abc1234"}, lambda d, bound: (d["commit_sha"] or "").startswith("abc1234"),
                 {"commit_sha": "abc1234" + "e" * 33}, {"commit_sha": "abd1234" + "e" * 33}, id="commit_sha prefix"),
    pytest.param({"label": "team=payments"}, lambda d, bound: d["labels"].get("team") == "payments",
                 {"labels": {"team": "payments"}}, {"labels": {"team": "search"}}, id="label"),
    pytest.param({"label": ["team=payments", "tier=1"]},
                 lambda d, bound: (d["labels"].get("team"), d["labels"].get("tier")) == ("payments", "1"),
                 {"labels": {"team": "payments", "tier": "1"}}, {"labels": {"team": "payments", "tier": "2"}},
                 id="label+label"),
    pytest.param({"updated_after": "@bound"}, lambda d, bound: d["updated_at"] >= bound,
                 {}, {}, id="updated_after"),  # whatever is created now is updated after the bound
    pytest.param({"updated_before": "@bound"}, lambda d, bound: d["updated_at"] < bound,
                 {}, {}, id="updated_before"),  # and never before it
    pytest.param({"version": "2.0", "status": "pending_approval"},
                 lambda d, bound: (d["version"], d["status"]) == ("2.0", "pending_approval"),
                 {"version": "2.0"}, {"version": "2.1"},
                 id="version+status"),
]


def bound_params(params: dict, bound: str) -> dict:
    return {name: bound if value == "@bound" else value for name, value in params.items()}


def listing_order(deployments) -> list[str]:
    return [d["id"] for d in sorted(deployments, key=lambda d: (d["created_at"], d["id"]), reverse=True)]


@pytest.mark.parametrize("params, matches, matching, other", PIPELINE_WALKS)
def test_a_walk_under_a_new_filter_while_creating_returns_what_matched_at_the_start_exactly_once(
        listing, pipeline_seeded, params, matches, matching, other):
    made, bound = pipeline_seeded
    expected = listing_order(d for d in made if matches(d, bound))
    assert len(expected) >= 5  # more than one page of 3
    query, walked, pages = {**bound_params(params, bound), "limit": 3}, [], 0
    while True:
        page = listing(**query)
        assert page.status_code == 200, page.get_json()
        body = page.get_json()
        walked += body["items"]
        pages += 1
        if body["next_cursor"] is None:
            break
        query["cursor"] = body["next_cursor"]
        for overrides in (matching, other):  # one new match and one new non-match per page
            assert listing.client.post("/deployments", json=create_body(**overrides)).status_code == 201
    assert [d["id"] for d in walked] == expected
    assert all(matches(d, bound) for d in walked)
    assert pages == -(-len(expected) // 3)


@pytest.mark.parametrize("params, matches, matching, other",
                         [p for p in PIPELINE_WALKS if p.id in ("updated_after", "updated_before", "version+status")])
def test_a_walk_under_a_filter_on_what_changes_sees_each_deployment_at_most_once_and_every_untouched_match(
        listing, pipeline_seeded, params, matches, matching, other):
    made, bound = pipeline_seeded
    at_start = {d["id"] for d in made if matches(d, bound)}
    created_at = {d["id"]: d["created_at"] for d in made}
    pending = [d["id"] for d in made if d["status"] == "pending_approval"]
    query, walked, touched = {**bound_params(params, bound), "limit": 3}, [], set()
    while True:
        body = listing(**query).get_json()
        walked += body["items"]
        if body["next_cursor"] is None:
            break
        query["cursor"] = body["next_cursor"]
        listing.client.post("/deployments", json=create_body(**matching))
        listing.client.post("/deployments", json=create_body(**other))
        # Update the two newest pending deployments still ahead of the walk: each moves into
        # updated_after's range, out of updated_before's, and out of status=pending_approval.
        position = (walked[-1]["created_at"], walked[-1]["id"])
        ahead = [i for i in reversed(pending) if (created_at[i], i) < position and i not in touched][:2]
        for deployment_id in ahead:
            response = listing.client.post(f"/deployments/{deployment_id}/approve", json={"actor": "zed"})
            assert response.status_code == 200
            touched.add(deployment_id)
    assert touched  # the walk did see updates
    ids = [d["id"] for d in walked]
    assert len(ids) == len(set(ids))  # never twice
    assert [(d["created_at"], d["id"]) for d in walked] == sorted(
        ((d["created_at"], d["id"]) for d in walked), reverse=True)  # in listing order
    assert all(matches(d, bound) for d in walked)  # each as its page showed it matches
    assert at_start - touched <= set(ids)  # every match left alone is there
    assert set(ids) <= at_start | touched  # nothing created during the walk, nothing else


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


@pytest.mark.parametrize("cursor", ["garbage", "eyJhIjoxfQ", "a.b.c", "."])
def test_a_cursor_the_api_never_produced_is_400_invalid_cursor(listing, cursor):
    response = listing(cursor=cursor)
    assert response.status_code == 400 and response.get_json()["code"] == "invalid_cursor"


def test_an_empty_cursor_is_the_first_page(listing, seeded):
    # A client that always sends the previous page's cursor starts with an empty one.
    assert listing(service="billing", limit=2, cursor="").get_json() == listing(service="billing", limit=2).get_json()
    items, _ = walk(listing, limit=5, cursor="")
    assert [d["id"] for d in items] == [d["id"] for d in reversed(seeded)]


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
