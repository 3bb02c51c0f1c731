"""Review policies over HTTP: the configuration given to create_app, GET /policy, and the answers each rule gives."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from builders import create_body
from werkzeug.test import Client

from deployapi import create_app
from deployapi.config_file import ConfigFileError

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=timezone.utc)  # a Wednesday

CONFIG = {
    "defaults": {"required_approvals": 1},
    "environments": {
        "production": {
            "production": True, "required_approvals": 2, "approvers": ["group:sre", "dana@example.com"],
            "exclusive": True,
        },
        "staging": {"freeze": [{"start": NOW - timedelta(hours=1), "end": NOW + timedelta(hours=1),
                                "reason": "incident"}]},
        "dev": {"required_approvals": 0},
    },
}
USER, GROUPS = "X-Forwarded-User", "X-Forwarded-Groups"


@pytest.fixture
def policy_client(db_path):
    application = create_app(db_path, config=CONFIG, trust_remote_user=True, remote_user_header=USER,
                             remote_groups_header=GROUPS, clock=lambda: NOW)
    yield Client(application)
    application.close()


class Caller:
    """Requests as one person with some groups, through the trusted headers."""

    def __init__(self, client: Client, user: str, groups: str = ""):
        self.client, self.headers = client, {USER: user, GROUPS: groups}

    def post(self, path: str, body: dict | None = None):
        return self.client.post(path, json=body or {}, headers=self.headers)

    def get(self, path: str):
        return self.client.get(path, headers=self.headers)

    def create(self, **overrides) -> dict:
        response = self.post("/deployments", create_body(requester=None, **overrides))
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def act(self, deployment: dict, action: str, body: dict | None = None):
        return self.post(f"/deployments/{deployment['id']}/{action}", body)


def events_of(caller: Caller, deployment: dict) -> list[dict]:
    return caller.get(f"/deployments/{deployment['id']}/events").get_json()["items"]


def test_get_policy_shows_every_key_filled_in_and_the_digest_every_write_records(policy_client):
    alice = Caller(policy_client, "alice")
    policy = alice.get("/policy").get_json()
    assert policy["defaults"] == {"production": False, "required_approvals": 1, "approvers": None,
                                  "exclusive": False, "freeze": []}
    assert policy["environments"]["production"] == {
        "production": True, "required_approvals": 2, "approvers": ["group:sre", "dana@example.com"],
        "exclusive": True, "freeze": []}
    assert policy["environments"]["staging"]["freeze"] == [
        {"start": "2026-12-02T11:00:00.000000Z", "end": "2026-12-02T13:00:00.000000Z", "reason": "incident"}]
    deployment = alice.create(environment="dev")
    assert deployment["policy_digest"] == policy["digest"]
    assert [e["policy_digest"] for e in events_of(alice, deployment)] == [policy["digest"]]


def test_two_approvers_from_the_policy_are_needed_in_production(policy_client):
    alice, erin, dana = (Caller(policy_client, "alice"), Caller(policy_client, "erin", "dev, sre"),
                         Caller(policy_client, "dana@example.com"))
    deployment = alice.create(environment="production")
    assert deployment["required_approvals"] == 2 and deployment["approvals"] == []

    first = erin.act(deployment, "approve", {"note": "looks fine"})
    assert first.status_code == 200
    body = first.get_json()
    assert body["status"] == "pending_approval" and body["reviewed_by"] is None
    assert [(a["actor"], a["note"]) for a in body["approvals"]] == [("erin", "looks fine")]

    again = erin.act(deployment, "approve")
    assert (again.status_code, again.get_json()["code"]) == (403, "duplicate_approval")
    outsider = Caller(policy_client, "mallory", "dev").act(deployment, "approve")
    assert (outsider.status_code, outsider.get_json()["code"]) == (403, "not_an_approver")
    own = Caller(policy_client, "alice", "sre").act(deployment, "approve")
    assert (own.status_code, own.get_json()["code"]) == (403, "self_approval")

    final = dana.act(deployment, "approve").get_json()
    assert final["status"] == "approved" and final["reviewed_by"] == "dana@example.com"
    assert [a["actor"] for a in final["approvals"]] == ["erin", "dana@example.com"]
    events = events_of(alice, deployment)
    assert [(e["type"], e["from_status"], e["to_status"], e["details"]) for e in events] == [
        ("created", None, "pending_approval", None),
        ("approved", "pending_approval", "pending_approval", {"approvals": 1, "required_approvals": 2}),
        ("approved", "pending_approval", "approved", {"approvals": 2, "required_approvals": 2}),
    ]


def test_the_dora_approval_lead_time_counts_the_approval_that_completed_the_review(policy_client):
    alice, erin, dana = (Caller(policy_client, "alice"), Caller(policy_client, "erin", "sre"),
                         Caller(policy_client, "dana@example.com"))
    deployment = alice.create(environment="production")
    erin.act(deployment, "approve")
    dana.act(deployment, "approve")
    alice.create(environment="dev")  # created approved: nothing was waited for
    metrics = alice.get("/metrics/dora?since=2026-12-01T00:00:00Z&until=2026-12-03T00:00:00Z").get_json()
    assert metrics["approval_lead_time_seconds"]["count"] == 1


def test_a_refused_approval_changes_nothing_and_appends_no_event(policy_client):
    alice = Caller(policy_client, "alice")
    deployment = alice.create(environment="production")
    head = alice.get("/events/head").get_json()
    for caller in (Caller(policy_client, "mallory"), Caller(policy_client, "alice", "sre")):
        assert caller.act(deployment, "approve").status_code == 403
    assert alice.get("/events/head").get_json() == head
    assert alice.get(f"/deployments/{deployment['id']}").get_json() == deployment


def test_anyone_may_reject_a_deployment_waiting_for_more_approvals(policy_client):
    alice = Caller(policy_client, "alice")
    deployment = alice.create(environment="production")
    Caller(policy_client, "erin", "sre").act(deployment, "approve")
    rejected = Caller(policy_client, "mallory").act(deployment, "reject", {"note": "wrong build"}).get_json()
    assert (rejected["status"], rejected["reviewed_by"]) == ("rejected", "mallory")


def test_a_deployment_to_an_environment_needing_no_approval_is_created_approved(policy_client):
    alice = Caller(policy_client, "alice")
    deployment = alice.create(environment="dev")
    assert (deployment["status"], deployment["required_approvals"]) == ("approved", 0)
    assert deployment["reviewed_by"] is None and deployment["reviewed_at"] is None
    [event] = events_of(alice, deployment)
    assert (event["type"], event["to_status"]) == ("created", "approved")
    assert alice.act(deployment, "start").get_json()["status"] == "started"


def test_a_start_inside_a_freeze_is_409_with_when_it_ends_and_the_override_needs_a_note(policy_client):
    alice, bob = Caller(policy_client, "alice"), Caller(policy_client, "bob")
    deployment = alice.create(environment="staging")
    bob.act(deployment, "approve")
    head = alice.get("/events/head").get_json()

    frozen = bob.act(deployment, "start")
    assert frozen.status_code == 409
    problem = frozen.get_json()
    assert problem["code"] == "deploy_freeze"
    assert (problem["freeze"]["reason"], problem["freeze"]["ends_at"]) == ("incident", "2026-12-02T13:00:00.000000Z")
    without_note = bob.act(deployment, "start", {"override_freeze": True})
    assert without_note.status_code == 422
    assert [e["field"] for e in without_note.get_json()["errors"]] == ["note"]
    assert alice.get("/events/head").get_json() == head

    started = bob.act(deployment, "start", {"override_freeze": True, "note": "fix for INC-7"})
    assert started.get_json()["status"] == "started"
    event = events_of(alice, deployment)[-1]
    assert event["note"] == "fix for INC-7"
    assert event["details"]["freeze_overridden"]["reason"] == "incident"


def test_an_exclusive_environment_refuses_a_second_start_naming_the_deployment_in_the_way(policy_client):
    alice = Caller(policy_client, "alice")
    erin, dana = Caller(policy_client, "erin", "sre"), Caller(policy_client, "dana@example.com")
    first, second = alice.create(environment="production"), alice.create(environment="production")
    other_service = alice.create(environment="production", service="search")
    for deployment in (first, second, other_service):
        erin.act(deployment, "approve")
        dana.act(deployment, "approve")
    assert erin.act(first, "start").status_code == 200
    busy = erin.act(second, "start")
    assert busy.status_code == 409
    assert (busy.get_json()["code"], busy.get_json()["blocking_deployment_id"]) == ("environment_busy", first["id"])
    assert erin.act(other_service, "start").status_code == 200  # another service is not in the way
    erin.act(first, "succeed")
    assert erin.act(second, "start").status_code == 200


def test_the_check_order_is_body_existence_transition_policy_identity(policy_client):
    alice, mallory = Caller(policy_client, "alice"), Caller(policy_client, "mallory")
    deployment = alice.create(environment="staging")
    assert mallory.act(deployment, "start", {"override_freeze": "yes"}).status_code == 422
    assert mallory.post("/deployments/01m8bqmwd0jcr9fbtk1cqdh4gs/start").status_code == 404
    # pending: the transition is refused before the freeze is looked at
    assert mallory.act(deployment, "start").get_json()["code"] == "invalid_transition"


def test_a_groups_header_needs_trusted_identity_and_group_approvers_need_a_groups_header(db_path):
    with pytest.raises(ValueError, match="trust_remote_user"):
        create_app(db_path, remote_groups_header=GROUPS)
    with pytest.raises(ConfigFileError, match="groups"):
        create_app(db_path, config=CONFIG, trust_remote_user=True, remote_user_header=USER)
    assert not db_path.exists()


def test_a_configuration_that_cannot_be_used_creates_no_database(db_path):
    with pytest.raises(ConfigFileError, match=r"environments\.dev\.required_approvals"):
        create_app(db_path, config={"environments": {"dev": {"required_approvals": 11}}})
    with pytest.raises(ConfigFileError, match="production"):
        create_app(db_path, config={"environments": {"prod": {"production": True}}},
                   production_environments=("prod",))
    assert not db_path.exists()


def test_the_production_setting_of_the_file_decides_where_risk_is_required(db_path):
    application = create_app(db_path, config={"environments": {"live": {"production": True}}})
    try:
        client = Client(application)
        assert client.post("/deployments", json=create_body(environment="production", risk=None)).status_code == 201
        refused = client.post("/deployments", json=create_body(environment="live", risk=None))
        assert refused.status_code == 422 and [e["field"] for e in refused.get_json()["errors"]] == ["risk"]
    finally:
        application.close()


def test_without_a_configuration_get_policy_shows_the_v1_rules(client, created):
    policy = client.get("/policy").get_json()
    assert policy["defaults"]["required_approvals"] == 1 and policy["defaults"]["approvers"] is None
    assert list(policy["environments"]) == ["production"]
    assert policy["environments"]["production"]["production"] is True
    assert created()["policy_digest"] == policy["digest"]
