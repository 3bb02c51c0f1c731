"""Idempotency-Key on every POST: a retry gets the first answer and writes nothing."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import timedelta

import pytest
from builders import StepClock, create_body
from werkzeug.test import Client

from deployapi import create_app


def counts(app) -> tuple[int, int]:
    with sqlite3.connect(app.repository.db_path) as conn:
        return (conn.execute("SELECT count(*) FROM deployments").fetchone()[0],
                conn.execute("SELECT count(*) FROM deployment_events").fetchone()[0])


def post(client, path, body, key):
    return client.post(path, json=body, headers={"Idempotency-Key": key})


def test_a_retried_create_gets_the_first_answer_and_writes_nothing(app, client):
    first = post(client, "/deployments", create_body(), "create-1")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    again = post(client, "/deployments", create_body(), "create-1")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    assert counts(app) == (1, 1)


def test_the_same_body_with_other_spacing_or_key_order_is_the_same_request(app, client):
    body = create_body()
    post(client, "/deployments", body, "k")
    reordered_text = json.dumps(dict(reversed(body.items())), indent=2)
    reordered = client.post("/deployments", data=reordered_text, content_type="application/json",
                            headers={"Idempotency-Key": "k"})
    assert reordered.status_code == 201 and reordered.headers["Idempotent-Replayed"] == "true"
    assert counts(app) == (1, 1)


def test_a_retried_approve_is_not_a_confusing_409(client, created):
    deployment = created(requester="alice")
    path = f"/deployments/{deployment['id']}/approve"
    first = post(client, path, {"actor": "bob"}, "approve-1")
    retry = post(client, path, {"actor": "bob"}, "approve-1")
    assert first.status_code == retry.status_code == 200
    assert retry.get_json() == first.get_json() and retry.headers["Idempotent-Replayed"] == "true"
    assert post(client, path, {"actor": "bob"}, "approve-2").status_code == 409  # a new key is a new request
    assert len(client.get(f"/deployments/{deployment['id']}/events").get_json()["items"]) == 2


@pytest.mark.parametrize(
    "second_path, second_body",
    [("/deployments", create_body(version="9.9")), ("/deployments/x/approve", {"actor": "bob"})],
    ids=["different body", "different path"],
)
def test_a_key_reused_for_a_different_request_is_422(app, client, second_path, second_body):
    post(client, "/deployments", create_body(), "shared")
    response = post(client, second_path, second_body, "shared")
    assert response.status_code == 422
    assert response.get_json()["code"] == "idempotency_key_reused"
    assert counts(app) == (1, 1)


def stored_keys(app) -> int:
    with sqlite3.connect(app.repository.db_path) as conn:
        return conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0]


def test_a_refused_action_is_not_stored_so_a_retry_runs_again(app, client, created):
    deployment = created(requester="alice")
    path = f"/deployments/{deployment['id']}/approve"
    first = post(client, path, {"actor": "Alice"}, "self")
    assert first.status_code == 403 and stored_keys(app) == 0
    again = post(client, path, {"actor": "Alice"}, "self")
    assert again.status_code == 403 and "Idempotent-Replayed" not in again.headers


def test_a_refusal_on_a_missing_deployment_leaves_no_key_behind(app, client):
    for attempt in range(20):
        response = post(client, f"/deployments/01m8bqmwd0jcr9fbtk1cqdh4g{attempt % 10}/start", {"actor": "ci"},
                        f"start-{attempt}")
        assert response.status_code == 404
    assert stored_keys(app) == 0


def test_a_409_is_not_replayed_once_the_action_becomes_possible(client, created):
    deployment = created()
    path = f"/deployments/{deployment['id']}/start"
    assert post(client, path, {"actor": "ci"}, "start-1").status_code == 409
    assert client.post(f"/deployments/{deployment['id']}/approve", json={"actor": "bob"}).status_code == 200
    started = post(client, path, {"actor": "ci"}, "start-1")
    assert started.status_code == 200 and started.get_json()["status"] == "started"


# --- keys belong to their caller when identities are trusted -------------------------


@pytest.fixture
def trusted_app(db_path):
    application = create_app(db_path, trust_remote_user=True)
    yield application
    application.close()


def as_user(name: str) -> dict:
    return {"REMOTE_USER": name}


def test_another_user_cannot_squat_a_predictable_key(trusted_app):
    client = Client(trusted_app)
    key = {"Idempotency-Key": "deploy-billing-1.4.2"}
    body = create_body(requester=None)
    mallory = client.post("/deployments", json=create_body(requester=None, version="6.6.6"), headers=key,
                          environ_base=as_user("mallory"))
    assert mallory.status_code == 201
    alice = client.post("/deployments", json=body, headers=key, environ_base=as_user("alice"))
    assert alice.status_code == 201 and alice.get_json()["requester"] == "alice"
    assert "Idempotent-Replayed" not in alice.headers
    replay = client.post("/deployments", json=body, headers=key, environ_base=as_user("alice"))
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.get_json() == alice.get_json()


def test_one_person_has_one_key_space_however_the_proxy_spells_them(trusted_app):
    client = Client(trusted_app)
    key = {"Idempotency-Key": "release-8"}
    body = create_body(requester=None)
    first = client.post("/deployments", json=body, headers=key, environ_base=as_user("Alice"))
    retry = client.post("/deployments", json=body, headers=key, environ_base=as_user("alice"))
    assert first.status_code == 201 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.get_json() == first.get_json()


def test_whether_someone_else_used_a_key_cannot_be_probed(trusted_app):
    client = Client(trusted_app)
    key = {"Idempotency-Key": "release-7"}
    assert client.post("/deployments", json=create_body(requester=None), headers=key,
                       environ_base=as_user("alice")).status_code == 201
    # Mallory's request with Alice's key is simply Mallory's own first request.
    probe = client.post("/deployments/01m8bqmwd0jcr9fbtk1cqdh4gs/approve", json={}, headers=key,
                        environ_base=as_user("mallory"))
    assert probe.status_code == 404 and probe.get_json()["code"] == "not_found"


def test_a_validation_failure_is_not_stored_so_a_corrected_retry_succeeds(app, client):
    assert post(client, "/deployments", create_body(rollback_plan=None), "fix-me").status_code == 422
    fixed = post(client, "/deployments", create_body(), "fix-me")
    assert fixed.status_code == 201 and "Idempotent-Replayed" not in fixed.headers
    assert counts(app) == (1, 1)


@pytest.mark.parametrize("key", ["", " ", "x" * 256, "tab\there", "ключ"], ids=["empty", "blank", "256 chars",
                                                                                  "control", "non-ASCII"])
def test_a_malformed_key_is_422_and_nothing_is_written(app, client, key):
    response = client.post("/deployments", json=create_body(), headers={"Idempotency-Key": key})
    assert response.status_code == 422
    assert [e["field"] for e in response.get_json()["errors"]] == ["Idempotency-Key"]
    assert counts(app) == (0, 0)


def test_a_key_of_255_printable_characters_is_accepted(client):
    assert post(client, "/deployments", create_body(), "~" * 255).status_code == 201


def test_concurrent_requests_with_one_key_write_once(app, db_path):
    racers = 12
    barrier = threading.Barrier(racers)
    answers = []

    def send():
        # A client of its own per thread, as separate retries would be.
        client = Client(app)
        barrier.wait()
        response = post(client, "/deployments", create_body(), "race")
        answers.append((response.status_code, response.get_json()["id"], "Idempotent-Replayed" in response.headers))

    threads = [threading.Thread(target=send) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {status for status, _, _ in answers} == {201}
    assert len({deployment_id for _, deployment_id, _ in answers}) == 1
    assert sorted(replayed for _, _, replayed in answers) == [False] + [True] * (racers - 1)
    assert counts(app) == (1, 1)


def test_keys_are_kept_for_24_hours_then_reusable(db_path):
    clock = StepClock()
    app = create_app(db_path, clock=clock)
    client = Client(app)
    try:
        first = post(client, "/deployments", create_body(), "daily")
        clock.now += timedelta(hours=23, minutes=59)
        assert post(client, "/deployments", create_body(), "daily").headers.get("Idempotent-Replayed") == "true"
        clock.now += timedelta(minutes=2)
        fresh = post(client, "/deployments", create_body(), "daily")
        assert fresh.status_code == 201 and "Idempotent-Replayed" not in fresh.headers
        assert fresh.get_json()["id"] != first.get_json()["id"]
        with sqlite3.connect(db_path) as conn:
            assert conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 1
    finally:
        app.close()


def test_expired_keys_are_pruned_by_later_idempotent_writes(db_path):
    clock = StepClock()
    app = create_app(db_path, clock=clock)
    client = Client(app)
    try:
        for n in range(5):
            post(client, "/deployments", create_body(), f"old-{n}")
        clock.now += timedelta(hours=25)
        post(client, "/deployments", create_body(), "new")
        with sqlite3.connect(db_path) as conn:
            assert [r[0] for r in conn.execute("SELECT key FROM idempotency_keys")] == ["new"]
    finally:
        app.close()
