"""POST /deployments/{id}/{action}: every endpoint's success and error paths."""

from __future__ import annotations

import pytest

ACTION_PATH = "/deployments/{id}/{action}"


def act(client, deployment_id, action, **body):
    return client.post(ACTION_PATH.format(id=deployment_id, action=action), json=body)


def advance(client, deployment, *steps):
    """Apply the (action, actor, note) steps, each of which must succeed; return the final deployment."""
    for action, actor, note in steps:
        response = act(client, deployment["id"], action, actor=actor, note=note)
        assert response.status_code == 200, response.get_json()
        deployment = response.get_json()
    return deployment


APPROVED = [("approve", "bob", None)]
STARTED = APPROVED + [("start", "ci", None)]


@pytest.mark.parametrize(
    "before, action, note, status",
    [
        ([], "approve", None, "approved"),
        ([], "reject", "missing tests", "rejected"),
        (APPROVED, "start", None, "started"),
        (STARTED, "succeed", "all green", "succeeded"),
        (STARTED, "fail", "health checks red", "failed"),
        (STARTED, "rollback", "error rate", "rolled_back"),
        (STARTED + [("succeed", "ci", None)], "rollback", "late regression", "rolled_back"),
        (STARTED + [("fail", "ci", "red")], "rollback", "restore service", "rolled_back"),
        ([], "cancel", "superseded by 1.1", "cancelled"),
        (APPROVED, "cancel", "change window missed", "cancelled"),
    ],
)
def test_each_action_moves_the_deployment_and_records_an_event(client, created, before, action, note, status):
    deployment = created(requester="alice")
    advance(client, deployment, *before)
    response = act(client, deployment["id"], action, actor="oncall", note=note)
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == status and body["id"] == deployment["id"]
    assert body["updated_at"] > deployment["updated_at"]
    events = client.get(f"/deployments/{deployment['id']}/events").get_json()["items"]
    assert len(events) == len(before) + 2
    last = events[-1]
    assert (last["type"], last["actor"], last["note"], last["to_status"], last["sequence"]) == (
        status, "oncall", note, status, len(before) + 2)
    assert last["created_at"] == body["updated_at"]
    assert client.get(f"/deployments/{deployment['id']}").get_json() == body


def test_approve_and_reject_record_the_reviewer(client, created):
    approved = advance(client, created(), ("approve", "bob", None))
    rejected = advance(client, created(), ("reject", "carol", "no rollback tested"))
    assert approved["reviewed_by"] == "bob" and approved["reviewed_at"] == approved["updated_at"]
    assert rejected["reviewed_by"] == "carol" and rejected["status"] == "rejected"
    started = advance(client, approved, ("start", "ci", None))
    assert (started["reviewed_by"], started["reviewed_at"]) == (approved["reviewed_by"], approved["reviewed_at"])


def test_an_invalid_transition_is_409_with_the_current_status(client, created):
    deployment = created()
    response = act(client, deployment["id"], "start", actor="ci")
    assert response.status_code == 409
    body = response.get_json()
    assert (body["code"], body["current_status"], body["action"]) == ("invalid_transition", "pending_approval",
                                                                      "start")


@pytest.mark.parametrize("terminal", [[("reject", "bob", "no")], STARTED + [("rollback", "ci", "undo")],
                                      [("cancel", "alice", "not needed")]],
                         ids=["rejected", "rolled_back", "cancelled"])
@pytest.mark.parametrize("action", ["approve", "reject", "start", "succeed", "fail", "rollback", "cancel"])
def test_terminal_deployments_accept_no_action(client, created, terminal, action):
    deployment = advance(client, created(), *terminal)
    response = act(client, deployment["id"], action, actor="zed", note="n")
    assert response.status_code == 409
    assert response.get_json()["current_status"] == deployment["status"]


@pytest.mark.parametrize("actor", ["alice", "ALICE", "  Alice  "])
def test_the_requester_approving_their_own_deployment_is_403(client, created, actor):
    deployment = created(requester="alice")
    response = act(client, deployment["id"], "approve", actor=actor)
    assert response.status_code == 403
    assert response.get_json()["code"] == "self_approval"
    assert client.get(f"/deployments/{deployment['id']}").get_json() == deployment


def test_the_requester_may_reject_their_own_deployment(client, created):
    deployment = created(requester="alice")
    assert act(client, deployment["id"], "reject", actor="Alice", note="withdrawn").status_code == 200


@pytest.mark.parametrize("action", ["reject", "fail", "rollback", "cancel"])
@pytest.mark.parametrize("note", [None, "", "  "], ids=["missing", "empty", "blank"])
def test_a_missing_note_is_422_before_404_and_409(client, created, action, note):
    body = {"actor": "bob"} if note is None else {"actor": "bob", "note": note}
    for deployment_id in ("no-such-id", created()["id"]):
        response = client.post(f"/deployments/{deployment_id}/{action}", json=body)
        assert response.status_code == 422
        assert [e["field"] for e in response.get_json()["errors"]] == ["note"]


@pytest.mark.parametrize("before", [STARTED, STARTED + [("succeed", "ci", None)], STARTED + [("fail", "ci", "red")]],
                         ids=["started", "succeeded", "failed"])
def test_a_deployment_that_has_started_cannot_be_cancelled_and_nothing_is_appended(client, created, before):
    deployment = advance(client, created(), *before)
    events = client.get(f"/deployments/{deployment['id']}/events").get_json()["items"]
    response = act(client, deployment["id"], "cancel", actor="alice", note="too late")
    assert response.status_code == 409
    body = response.get_json()
    assert (body["code"], body["current_status"], body["action"]) == ("invalid_transition", deployment["status"],
                                                                      "cancel")
    assert client.get(f"/deployments/{deployment['id']}").get_json() == deployment
    assert client.get(f"/deployments/{deployment['id']}/events").get_json()["items"] == events


def test_anyone_may_cancel_the_requester_included_and_the_review_is_kept(client, created):
    mine = created(requester="alice")
    assert act(client, mine["id"], "cancel", actor="Alice", note="duplicate").get_json()["status"] == "cancelled"
    approved = advance(client, created(requester="alice"), *APPROVED)
    cancelled = act(client, approved["id"], "cancel", actor="release-manager", note="freeze").get_json()
    assert (cancelled["reviewed_by"], cancelled["reviewed_at"]) == (approved["reviewed_by"], approved["reviewed_at"])
    listed = client.get("/deployments?status=cancelled").get_json()["items"]
    assert {d["id"] for d in listed} == {mine["id"], approved["id"]}


def test_a_bad_body_is_reported_before_an_unknown_id(client):
    assert client.post("/deployments/nope/approve", data="{", content_type="application/json").status_code == 400
    assert client.post("/deployments/nope/approve", json={}).status_code == 422
    assert act(client, "nope", "approve", actor="bob").status_code == 404


def test_an_unknown_id_is_reported_before_the_transition(client):
    response = act(client, "nope", "succeed", actor="bob")
    assert response.status_code == 404 and response.get_json()["code"] == "not_found"


def test_the_transition_is_checked_before_self_approval(client, created):
    deployment = advance(client, created(requester="alice"), ("approve", "bob", None))
    assert act(client, deployment["id"], "approve", actor="alice").status_code == 409


@pytest.mark.parametrize("body", [{}, {"actor": ""}, {"actor": 3}, {"actor": "bob", "note": 5},
                                  {"actor": "bob", "extra": True}],
                         ids=["no actor", "blank actor", "numeric actor", "numeric note", "unknown field"])
def test_a_bad_action_body_is_422_and_changes_nothing(client, created, body):
    deployment = created()
    response = client.post(f"/deployments/{deployment['id']}/approve", json=body)
    assert response.status_code == 422 and response.get_json()["code"] == "validation_failed"
    assert len(client.get(f"/deployments/{deployment['id']}/events").get_json()["items"]) == 1


def test_an_unknown_action_is_404_and_a_get_on_an_action_is_405(client, created):
    deployment = created()
    assert client.post(f"/deployments/{deployment['id']}/explode", json={"actor": "x"}).status_code == 404
    response = client.get(f"/deployments/{deployment['id']}/approve")
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
