"""CDEvents export over HTTP: ?format=cdevents or Accept: application/cloudevents-batch+json."""

from __future__ import annotations

import re

import pytest
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client
from werkzeug.wrappers import Response

BATCH = "application/cloudevents-batch+json"


def advance(client, deployment_id, *steps):
    for action, actor, note in steps:
        response = client.post(f"/deployments/{deployment_id}/{action}", json={"actor": actor, "note": note})
        assert response.status_code == 200, response.get_json()


SHIPPED = (("approve", "bob", None), ("start", "ci", None), ("succeed", "ci", None))


def types(batch):
    return [event["type"] for event in batch]


@pytest.fixture
def rolled_back(client, created):
    """billing 1.0 shipped to staging, then 1.1 shipped and rolled back."""
    first = created(service="billing", environment="staging", version="1.0", requester="alice")
    advance(client, first["id"], *SHIPPED)
    second = created(service="billing", environment="staging", version="1.1", requester="alice")
    advance(client, second["id"], *SHIPPED, ("rollback", "carol", "error rate doubled"))
    return first, second


def test_a_deployment_history_is_exported_with_format_cdevents(client, rolled_back):
    _, second = rolled_back
    response = client.get(f"/deployments/{second['id']}/events?format=cdevents")
    assert response.status_code == 200
    assert response.mimetype == BATCH
    assert types(response.get_json()) == [
        "dev.cdevents.approval.created.0.1.0",
        "dev.cdevents.approval.closed.0.1.0",
        "dev.deployapi.deployment.started.v1",
        "dev.cdevents.service.upgraded.0.3.0",
        "dev.cdevents.service.rolledback.0.3.0",
    ]


def test_a_deployment_history_is_exported_when_accept_asks_for_cloudevents(client, rolled_back):
    _, second = rolled_back
    by_header = client.get(f"/deployments/{second['id']}/events", headers={"Accept": BATCH})
    assert by_header.mimetype == BATCH
    assert by_header.get_json() == client.get(f"/deployments/{second['id']}/events?format=cdevents").get_json()


def test_every_exported_event_is_a_structured_cloudevent_of_its_deployment(client, rolled_back):
    _, second = rolled_back
    plain = client.get(f"/deployments/{second['id']}/events").get_json()["items"]
    batch = client.get(f"/deployments/{second['id']}/events?format=cdevents").get_json()
    for event, exported in zip(plain, batch, strict=True):
        assert exported["specversion"] == "1.0"
        assert exported["id"] == str(event["id"])
        assert exported["source"] == f"/deployments/{second['id']}"
        assert exported["time"] == event["created_at"]
        assert exported["datacontenttype"] == "application/json"
        assert exported["subject"]


def test_the_rollback_names_the_service_environment_and_version_rolled_back(client, rolled_back):
    _, second = rolled_back
    rollback = client.get(f"/deployments/{second['id']}/events?format=cdevents").get_json()[-1]
    assert rollback["subject"] == "billing"
    assert rollback["data"]["subject"]["content"] == {
        "environment": {"id": "staging"}, "artifactId": "pkg:generic/billing@1.1"}
    assert rollback["data"]["customData"]["note"] == "error rate doubled"


def test_the_first_success_in_an_environment_is_deployed_and_a_second_is_upgraded(client, rolled_back):
    first, second = rolled_back
    successes = [e for e in client.get("/events?format=cdevents").get_json()
                 if e["type"].startswith("dev.cdevents.service.") and "rolledback" not in e["type"]]
    assert [(e["type"], e["data"]["customData"]["deployment_id"]) for e in successes] == [
        ("dev.cdevents.service.deployed.0.3.0", first["id"]),
        ("dev.cdevents.service.upgraded.0.3.0", second["id"]),
    ]


def test_the_first_success_is_the_first_to_succeed_not_the_first_created(client, created):
    older, newer = created(version="1.0"), created(version="1.1")
    advance(client, newer["id"], *SHIPPED)
    advance(client, older["id"], *SHIPPED)
    last = {d["id"]: client.get(f"/deployments/{d['id']}/events?format=cdevents").get_json()[-1]["type"]
            for d in (older, newer)}
    assert last == {newer["id"]: "dev.cdevents.service.deployed.0.3.0",
                    older["id"]: "dev.cdevents.service.upgraded.0.3.0"}


def test_a_first_success_in_another_environment_or_of_another_service_is_deployed_again(client, created, rolled_back):
    for overrides in ({"environment": "production", "risk": "low"}, {"service": "search"}):
        deployment = created(**overrides)
        advance(client, deployment["id"], *SHIPPED)
        batch = client.get(f"/deployments/{deployment['id']}/events?format=cdevents").get_json()
        assert batch[-1]["type"] == "dev.cdevents.service.deployed.0.3.0"


def test_a_failed_deployment_is_exported_as_the_project_type(client, created):
    deployment = created()
    advance(client, deployment["id"], ("approve", "bob", None), ("start", "ci", None), ("fail", "ci", "timeout"))
    failed = client.get(f"/deployments/{deployment['id']}/events?format=cdevents").get_json()[-1]
    assert failed["type"] == "dev.deployapi.deployment.failed.v1"
    assert failed["subject"] == deployment["id"]
    assert (failed["data"]["type"], failed["data"]["note"]) == ("failed", "timeout")


@pytest.mark.parametrize("before", [[], [("approve", "bob", None)]], ids=["pending", "approved"])
def test_a_cancelled_deployment_is_exported_as_the_project_type(client, created, before):
    deployment = created()
    advance(client, deployment["id"], *before, ("cancel", "alice", "superseded"))
    cancelled = client.get(f"/deployments/{deployment['id']}/events?format=cdevents").get_json()[-1]
    assert cancelled["type"] == "dev.deployapi.deployment.cancelled.v1"
    assert cancelled["subject"] == deployment["id"]
    assert (cancelled["data"]["type"], cancelled["data"]["note"]) == ("cancelled", "superseded")


def test_the_global_feed_is_exported_both_ways(client, rolled_back):
    by_param = client.get("/events?format=cdevents")
    by_header = client.get("/events", headers={"Accept": BATCH})
    assert by_param.mimetype == by_header.mimetype == BATCH
    assert by_param.get_json() == by_header.get_json()
    plain = client.get("/events").get_json()["items"]
    assert [e["id"] for e in by_param.get_json()] == [str(e["id"]) for e in plain]


def test_the_feed_export_pages_with_the_next_after_and_link_headers(client, rolled_back):
    plain = client.get("/events").get_json()["items"]
    seen, after = [], 0
    while True:
        response = client.get(f"/events?format=cdevents&limit=3&service=billing&after={after}")
        page = response.get_json()
        next_after = int(response.headers["X-Next-After"])
        assert response.headers["Link"] == (
            f'</events?after={next_after}&limit=3&service=billing&format=cdevents>; rel="next"')
        if not page:
            assert next_after == after
            break
        assert next_after == int(page[-1]["id"])
        seen += page
        after = next_after
    assert [e["id"] for e in seen] == [str(e["id"]) for e in plain]


def test_following_the_link_header_walks_the_feed(client, rolled_back):
    response = client.get("/events", query_string={"limit": 4}, headers={"Accept": BATCH})
    seen = []
    while response.get_json():
        seen += response.get_json()
        link = re.fullmatch(r'<([^>]*)>; rel="next"', response.headers["Link"])[1]
        response = client.get(link)
    assert len(seen) == len(client.get("/events").get_json()["items"])


def test_ids_are_stable_across_requests_and_endpoints(client, rolled_back):
    _, second = rolled_back
    history = client.get(f"/deployments/{second['id']}/events?format=cdevents").get_json()
    assert history == client.get(f"/deployments/{second['id']}/events?format=cdevents").get_json()
    feed = {e["id"]: e for e in client.get("/events?format=cdevents").get_json()}
    assert all(feed[e["id"]] == e for e in history)


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "text/html",
                                    f"application/json, {BATCH}", f"{BATCH};q=0.2, application/json"])
def test_without_a_preference_for_cloudevents_the_json_lists_are_unchanged(client, rolled_back, accept):
    _, second = rolled_back
    headers = {"Accept": accept} if accept else {}
    for path, members in ((f"/deployments/{second['id']}/events", {"items"}), ("/events", {"items", "next_after"})):
        response = client.get(path, headers=headers)
        assert response.mimetype == "application/json"
        assert set(response.get_json()) == members
        assert response.headers["Vary"] == "Accept"


def test_format_json_wins_over_an_accept_header_asking_for_cloudevents(client, rolled_back):
    _, second = rolled_back
    for path in (f"/deployments/{second['id']}/events?format=json", "/events?format=json"):
        response = client.get(path, headers={"Accept": BATCH})
        assert response.mimetype == "application/json"
        assert "items" in response.get_json()


@pytest.mark.parametrize("path", ["/deployments/{id}/events", "/events"])
@pytest.mark.parametrize("query_string", ["format=xml", "format=", "format=CDEvents", "format=cdevents&format=json"])
def test_an_unknown_or_repeated_format_is_422(client, created, path, query_string):
    response = client.get(f"{path.format(id=created()['id'])}?{query_string}")
    assert response.status_code == 422
    assert [e["field"] for e in response.get_json()["errors"]] == ["format"]


def test_an_unknown_deployment_is_404_in_either_format(client):
    for query_string in ("", "?format=cdevents"):
        assert client.get(f"/deployments/nope/events{query_string}").status_code == 404


def test_a_bad_format_is_reported_before_an_unknown_deployment(client):
    assert client.get("/deployments/nope/events?format=yaml").status_code == 422


def test_an_empty_feed_exports_an_empty_array_and_keeps_the_position(client):
    response = client.get("/events?format=cdevents&after=41")
    assert response.status_code == 200
    assert response.get_json() == []
    assert response.headers["X-Next-After"] == "41"


def test_under_a_prefix_sources_and_links_include_it(app):
    client = Client(DispatcherMiddleware(Response("host app"), {"/deploy": app}))
    deployment = client.post("/deploy/deployments", json={
        "service": "billing", "environment": "staging", "version": "1.0", "requester": "alice",
        "work_refs": ["JIRA-1"], "rollback_plan": "Redeploy 0.9."}).get_json()
    exported = client.get(f"/deploy/deployments/{deployment['id']}/events?format=cdevents").get_json()[0]
    assert exported["source"] == f"/deploy/deployments/{deployment['id']}"
    assert exported["data"]["subject"]["content"]["resourceTargetUrl"] == f"/deploy/deployments/{deployment['id']}"
    feed = client.get("/deploy/events?format=cdevents")
    assert feed.headers["Link"].startswith("</deploy/events?after=")
