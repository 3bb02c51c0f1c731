"""GET /deployments/{id}/events?after=&limit=: one deployment's history page by page, by sequence."""

from __future__ import annotations

import pytest
from builders import assert_invalid_fields, create_body
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client
from werkzeug.wrappers import Response

from deployapi import create_app, feed
from deployapi.app import load_openapi

BATCH = "application/cloudevents-batch+json"
APPROVERS = [f"approver{n}@example.com" for n in range(10)]


@pytest.fixture
def app(db_path):
    # Ten approvals each: a history of up to fourteen events, appended one action at a time.
    application = create_app(db_path, config={"environments": {"staging": {"required_approvals": 10}}})
    yield application
    application.close()


def act(client, deployment_id, action, actor="ci"):
    response = client.post(f"/deployments/{deployment_id}/{action}", json={"actor": actor, "note": "noted"})
    assert response.status_code == 200, response.get_json()


def page(client, deployment_id, **params):
    response = client.get(f"/deployments/{deployment_id}/events", query_string=params)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.fixture
def shipped(client, created):
    """A deployment approved by ten people, started, succeeded and rolled back: fourteen events."""
    deployment = created()
    for approver in APPROVERS:
        act(client, deployment["id"], "approve", approver)
    for action in ("start", "succeed", "rollback"):
        act(client, deployment["id"], action)
    return deployment["id"]


def test_without_after_or_limit_the_answer_is_the_v1_one(client, shipped):
    body = page(client, shipped)
    assert list(body) == ["items"]
    assert [e["sequence"] for e in body["items"]] == list(range(1, 15))
    # Parameters it never read are still ignored.
    assert page(client, shipped, limt="2", cursor="x") == body


def test_limit_pages_by_sequence_and_next_after_is_null_on_the_last_page(client, shipped):
    first = page(client, shipped, limit=5)
    assert [e["sequence"] for e in first["items"]] == [1, 2, 3, 4, 5] and first["next_after"] == 5
    middle = page(client, shipped, limit=5, after=5)
    assert [e["sequence"] for e in middle["items"]] == [6, 7, 8, 9, 10] and middle["next_after"] == 10
    last = page(client, shipped, limit=5, after=10)
    assert [e["sequence"] for e in last["items"]] == [11, 12, 13, 14] and last["next_after"] is None
    # A page that ends exactly at the last event is the last page.
    assert page(client, shipped, limit=4, after=10)["next_after"] is None
    assert page(client, shipped, limit=3, after=10)["next_after"] == 13
    assert page(client, shipped, after=14) == {"items": [], "next_after": None}
    assert page(client, shipped, after=99, limit=200) == {"items": [], "next_after": None}


def test_after_alone_gives_a_page_of_the_default_size_and_the_pages_hold_the_v1_items(client, shipped):
    everything = page(client, shipped)["items"]
    assert page(client, shipped, after=0) == {"items": everything, "next_after": None}
    assert page(client, shipped, after=11)["items"] == everything[11:]
    assert page(client, shipped, after=11, format="json")["items"] == everything[11:]


def test_a_walk_while_events_are_appended_returns_every_event_once_in_sequence_order(client, created):
    deployment_id = created()["id"]
    pending = [*(("approve", approver) for approver in APPROVERS), ("start", "ci"), ("succeed", "ci"),
               ("rollback", "ci")]
    seen, after = [], 0
    while True:
        body = page(client, deployment_id, after=after, limit=2)
        seen += body["items"]
        if body["next_after"] is not None:
            assert body["next_after"] == body["items"][-1]["sequence"]
        elif not pending:
            break
        # The last page so far is a place to poll from: the last sequence seen.
        after = seen[-1]["sequence"]
        # Between two pages the deployment moves on by one action or two.
        for _ in range(1 + len(seen) % 2):
            if pending:
                act(client, deployment_id, *pending.pop(0))
    assert [e["sequence"] for e in seen] == list(range(1, 15))
    assert seen == page(client, deployment_id)["items"]


@pytest.mark.parametrize("query_string, fields", [
    ("limit=0", ["limit"]), ("limit=201", ["limit"]), ("limit=x", ["limit"]), ("limit=", ["limit"]),
    ("after=-1", ["after"]), ("after=1.5", ["after"]), ("after=1&after=2", ["after"]),
    ("after=-1&limit=0&format=xml", ["after", "limit", "format"]),
])
def test_bad_paging_parameters_are_422_listing_every_one_before_the_deployment_is_looked_up(
        client, shipped, query_string, fields):
    assert_invalid_fields(client.get(f"/deployments/{shipped}/events?{query_string}"), fields)
    assert_invalid_fields(client.get(f"/deployments/01m8bqmwd0jcr9fbtk1cqdh4gz/events?{query_string}"), fields)


def test_the_limits_are_1_and_200(client, shipped):
    assert len(page(client, shipped, limit=1)["items"]) == 1
    assert len(page(client, shipped, limit=200)["items"]) == 14


def test_an_unknown_deployment_is_404_with_paging_too(client):
    assert client.get("/deployments/01m8bqmwd0jcr9fbtk1cqdh4gz/events?limit=5").status_code == 404


def test_cloudevents_pages_carry_the_position_in_headers_until_the_last_page(client, shipped):
    everything = client.get(f"/deployments/{shipped}/events?format=cdevents").get_json()
    response = client.get(f"/deployments/{shipped}/events?format=cdevents&limit=6&after=2")
    assert response.mimetype == BATCH
    assert response.get_json() == everything[2:8]
    assert response.headers["X-Next-After"] == "8"
    assert response.headers["Link"] == f'</deployments/{shipped}/events?after=8&limit=6&format=cdevents>; rel="next"'
    following = client.get(response.headers["Link"][1:].split(">", 1)[0])
    assert following.get_json() == everything[8:14]
    assert "X-Next-After" not in following.headers and "Link" not in following.headers
    by_accept = client.get(f"/deployments/{shipped}/events?limit=6&after=2", headers={"Accept": BATCH})
    assert by_accept.get_json() == response.get_json() and by_accept.headers["X-Next-After"] == "8"
    empty = client.get(f"/deployments/{shipped}/events?format=cdevents&after=14")
    assert empty.get_json() == [] and "Link" not in empty.headers


def test_the_cloudevents_link_includes_the_mount_prefix(app):
    client = Client(DispatcherMiddleware(Response("host app"), {"/deploy": app}))
    deployment_id = client.post("/deploy/deployments", json=create_body()).get_json()["id"]
    client.post(f"/deploy/deployments/{deployment_id}/approve", json={"actor": APPROVERS[0]})
    response = client.get(f"/deploy/deployments/{deployment_id}/events?format=cdevents&limit=1")
    assert response.headers["Link"] == (
        f'</deploy/deployments/{deployment_id}/events?after=1&limit=1&format=cdevents>; rel="next"')


def test_the_documented_paging_parameters_are_the_ones_the_code_reads():
    operation = load_openapi()["paths"]["/deployments/{deployment_id}/events"]["get"]
    limit = next(p for p in operation["parameters"] if p.get("name") == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (
        1, feed.HISTORY_MAX_LIMIT, feed.HISTORY_DEFAULT_LIMIT)
