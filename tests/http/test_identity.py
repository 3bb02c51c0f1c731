"""Trusted identity: with trust_remote_user, REMOTE_USER is the actor and the requester."""

from __future__ import annotations

import pytest
from builders import create_body
from werkzeug.test import Client

from deployapi import create_app


class FakeAuth:
    """A tiny authenticating middleware: 'Authorization: User NAME' becomes REMOTE_USER."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        header = environ.get("HTTP_AUTHORIZATION", "")
        if header.startswith("User "):
            environ["REMOTE_USER"] = header[len("User "):]
        return self.app(environ, start_response)


@pytest.fixture
def trusted(db_path):
    app = create_app(db_path, trust_remote_user=True)
    yield Client(FakeAuth(app))
    app.close()


def as_user(name):
    return {"Authorization": f"User {name}"}


def test_the_authenticated_user_is_the_requester_and_the_actor(trusted):
    body = create_body()
    del body["requester"]
    created = trusted.post("/deployments", json=body, headers=as_user("alice")).get_json()
    assert created["requester"] == "alice"
    approved = trusted.post(f"/deployments/{created['id']}/approve", json={}, headers=as_user("bob")).get_json()
    assert approved["reviewed_by"] == "bob"
    events = trusted.get(f"/deployments/{created['id']}/events", headers=as_user("carol")).get_json()["items"]
    assert [e["actor"] for e in events] == ["alice", "bob"]


def test_a_body_naming_the_same_person_is_accepted(trusted):
    created = trusted.post("/deployments", json=create_body(requester=" Alice "), headers=as_user("alice"))
    assert created.status_code == 201 and created.get_json()["requester"] == "alice"


def test_a_body_naming_someone_else_is_403_actor_mismatch(trusted):
    response = trusted.post("/deployments", json=create_body(requester="mallory"), headers=as_user("alice"))
    assert response.status_code == 403 and response.get_json()["code"] == "actor_mismatch"
    created = trusted.post("/deployments", json=create_body(requester="alice"), headers=as_user("alice")).get_json()
    response = trusted.post(f"/deployments/{created['id']}/approve", json={"actor": "bob"}, headers=as_user("eve"))
    assert response.status_code == 403 and response.get_json()["code"] == "actor_mismatch"
    assert trusted.get("/deployments", headers=as_user("alice")).get_json()["items"] == [created]


def test_self_approval_is_still_refused_for_the_authenticated_requester(trusted):
    created = trusted.post("/deployments", json=create_body(requester=None), headers=as_user("alice")).get_json()
    response = trusted.post(f"/deployments/{created['id']}/approve", json={}, headers=as_user("ALICE"))
    assert response.status_code == 403 and response.get_json()["code"] == "self_approval"


@pytest.mark.parametrize("method, path", [("GET", "/deployments"), ("POST", "/deployments"),
                                          ("GET", "/deployments/x"), ("GET", "/events")])
def test_a_request_without_remote_user_is_401(trusted, method, path):
    response = trusted.open(path, method=method, json=create_body() if method == "POST" else None)
    assert response.status_code == 401 and response.get_json()["code"] == "unauthenticated"


def test_the_health_check_needs_no_identity(trusted):
    assert trusted.get("/healthz").status_code == 200


def test_without_trust_the_body_names_the_actor_and_remote_user_is_ignored(client):
    created = client.post("/deployments", json=create_body(requester="alice"),
                          environ_base={"REMOTE_USER": "mallory"}).get_json()
    assert created["requester"] == "alice"
    assert client.post("/deployments", json=create_body(requester=None)).status_code == 422


# --- the identity header of an authenticating proxy (remote_user_header) ------------


@pytest.fixture
def behind_proxy(db_path):
    app = create_app(db_path, trust_remote_user=True, remote_user_header="X-Remote-User")
    yield Client(app)
    app.close()


def from_proxy(name: str) -> dict:
    """The header as WSGI hands it to the app: its bytes (UTF-8 on the wire) as Latin-1 text."""
    return {"HTTP_X_REMOTE_USER": name.encode("utf-8").decode("latin-1")}


@pytest.mark.parametrize("name", ["josé", "Łukasz", "山田太郎"])
def test_a_utf8_name_in_the_identity_header_is_read_as_utf8(behind_proxy, name):
    response = behind_proxy.post("/deployments", json=create_body(requester=None), environ_base=from_proxy(name))
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["requester"] == name


def test_an_identity_header_that_is_not_utf8_is_401(behind_proxy):
    response = behind_proxy.post("/deployments", json=create_body(requester=None),
                                 environ_base={"HTTP_X_REMOTE_USER": "jos\xe9"})
    assert response.status_code == 401 and "UTF-8" in response.get_json()["detail"]


def test_two_identity_header_lines_merged_by_the_server_are_401_and_change_nothing(behind_proxy):
    created = behind_proxy.post("/deployments", json=create_body(requester=None),
                                environ_base=from_proxy("alice")).get_json()
    # What waitress and gunicorn make of "X-Remote-User: reviewer" and "X-Remote-User: alice".
    response = behind_proxy.post(f"/deployments/{created['id']}/approve", json={},
                                 environ_base=from_proxy("reviewer, alice"))
    assert response.status_code == 401 and "comma" in response.get_json()["detail"]
    after = behind_proxy.get(f"/deployments/{created['id']}", environ_base=from_proxy("alice")).get_json()
    assert after["status"] == "pending_approval"


@pytest.mark.parametrize("name", ["alice\u200b", "\u202ealice", "al\u00adice"])
def test_an_invisible_character_in_the_trusted_identity_is_401(trusted, name):
    response = trusted.post("/deployments", json=create_body(requester=None), headers=as_user(name))
    assert response.status_code == 401 and response.get_json()["code"] == "unauthenticated"


def test_a_fullwidth_spelling_of_the_requester_is_still_self_approval(trusted):
    created = trusted.post("/deployments", json=create_body(requester=None), headers=as_user("alice")).get_json()
    response = trusted.post(f"/deployments/{created['id']}/approve", json={}, headers=as_user("ａｌｉｃｅ"))
    assert response.status_code == 403 and response.get_json()["code"] == "self_approval"
