"""POST /deployments, GET /deployments/{id}, GET /deployments/{id}/events, GET /healthz."""

from __future__ import annotations

import re

from builders import create_body

TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
# The contract's v1 fields, and the v2 additions of review policies.
DEPLOYMENT_FIELDS = {"id", "service", "environment", "version", "requester", "work_refs", "risk",
                     "rollback_plan", "status", "reviewed_by", "reviewed_at", "created_at", "updated_at",
                     "required_approvals", "approvals", "policy_digest", "commit_sha", "repository", "ref",
                     "committed_at", "links", "labels", "rolled_back_to"}
EVENT_FIELDS = {"id", "deployment_id", "sequence", "type", "actor", "note", "from_status", "to_status",
                "created_at", "hash", "details", "policy_digest"}


def test_create_answers_201_with_the_deployment_and_its_location(client):
    response = client.post("/deployments", json=create_body())
    assert response.status_code == 201
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == DEPLOYMENT_FIELDS
    assert response.headers["Location"] == f"/deployments/{body['id']}"
    assert re.fullmatch(r"[0-9a-z]{26}", body["id"])
    assert body["status"] == "pending_approval"
    assert body["reviewed_by"] is None and body["reviewed_at"] is None
    assert TIMESTAMP.fullmatch(body["created_at"]) and body["updated_at"] == body["created_at"]
    assert body["work_refs"] == create_body()["work_refs"]
    for field in ("service", "environment", "version", "requester", "rollback_plan", "risk"):
        assert body[field] == create_body()[field]


def test_a_created_deployment_can_be_fetched(client, created):
    deployment = created()
    response = client.get(f"/deployments/{deployment['id']}")
    assert response.status_code == 200
    assert response.get_json() == deployment


def test_a_new_deployment_has_one_created_event(client, created):
    deployment = created(requester="  carol ")
    response = client.get(f"/deployments/{deployment['id']}/events")
    assert response.status_code == 200
    [event] = response.get_json()["items"]
    assert set(event) == EVENT_FIELDS
    assert isinstance(event["id"], int)
    assert re.fullmatch(r"[0-9a-f]{64}", event["hash"])
    assert event | {"id": 0, "hash": ""} == {
        "id": 0, "hash": "", "deployment_id": deployment["id"], "sequence": 1, "type": "created", "actor": "carol",
        "note": None, "from_status": None, "to_status": "pending_approval", "created_at": deployment["created_at"],
        "details": None, "policy_digest": deployment["policy_digest"],
    }


def test_ids_are_unique(created):
    assert len({created()["id"] for _ in range(50)}) == 50


def test_risk_may_be_omitted_outside_production(created):
    assert created(risk=None)["risk"] is None


def test_production_without_risk_is_422_naming_risk(client):
    response = client.post("/deployments", json=create_body(environment="production", risk=None))
    assert response.status_code == 422
    assert [e["field"] for e in response.get_json()["errors"]] == ["risk"]


def test_the_configured_production_set_replaces_the_default(tmp_path):
    from werkzeug.test import Client

    from deployapi import create_app

    app = create_app(tmp_path / "p.db", production_environments=("prod", "live"))
    try:
        client = Client(app)
        assert client.post("/deployments", json=create_body(environment="production", risk=None)).status_code == 201
        assert client.post("/deployments", json=create_body(environment="live", risk=None)).status_code == 422
    finally:
        app.close()


def test_unknown_ids_are_404_not_found(client):
    for path in ("/deployments/nope", "/deployments/nope/events"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.get_json()["code"] == "not_found"


def test_healthz_reports_ok_after_a_database_round_trip(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_healthz_is_503_when_the_database_cannot_answer(app, client):
    app.repository.close()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"


def test_head_works_like_get_without_a_body(client, created):
    deployment = created()
    response = client.head(f"/deployments/{deployment['id']}")
    assert response.status_code == 200 and response.data == b""


def test_non_ascii_text_round_trips(client, created):
    deployment = created(requester="Zoë Ångström", rollback_plan="回滚到 1.4.1\n再部署")
    fetched = client.get(f"/deployments/{deployment['id']}").get_json()
    assert fetched["requester"] == "Zoë Ångström" and fetched["rollback_plan"] == "回滚到 1.4.1\n再部署"
