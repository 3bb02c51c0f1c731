"""Every error the document promises can really happen, and looks as documented.

For each (operation, status, code) in deployapi/openapi.json, one request that
provokes it; the answer must then match the documented response: status, media
type, body schema and required headers.  Conditions no client can cause on
purpose (a bug, a locked or dead database) are set up directly.
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from builders import create_body
from jsonschema import Draft202012Validator
from werkzeug.test import Client

from deployapi import create_app
from deployapi.app import HANDLERS, load_openapi
from deployapi.repository import DatabaseBusy
from deployapi.storage import StorageFault

DOCUMENT = load_openapi()
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
UNKNOWN_ID = "01m8bqmwd0jcr9fbtk1cqdh4gs"


def resolve(node: dict) -> dict:
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = DOCUMENT["components"][kind][name]
    return node


PROBLEM = DOCUMENT["components"]["schemas"]["Problem"]


def response_codes(schema: dict) -> set[str]:
    """The codes a documented problem response admits: the `const` or `enum` on `code` in its own schema."""
    schema = resolve(schema)
    if schema is PROBLEM:
        return set()  # the base schema, whose `code` admits every code
    code = resolve(schema.get("properties", {}).get("code", {}))
    if "const" in code:
        return {code["const"]}
    if "enum" in code:
        return set(code["enum"])
    parts = [*schema.get("allOf", ()), *schema.get("oneOf", ()), *schema.get("anyOf", ())]
    return set().union(*(response_codes(part) for part in parts))


def documented_errors():
    for path, item in DOCUMENT["paths"].items():
        for method in HTTP_METHODS:
            if method not in item:
                continue
            for status, response in item[method]["responses"].items():
                if int(status) >= 400:
                    schema = resolve(response)["content"]["application/problem+json"]["schema"]
                    for code in sorted(response_codes(schema)):
                        yield pytest.param(method.upper(), path, int(status), code,
                                           id=f"{method.upper()} {path} {status} {code}")


def assert_as_documented(method: str, path: str, response) -> None:
    """The response's status, media type, body and required headers are the ones documented."""
    responses = DOCUMENT["paths"][path][method.lower()]["responses"]
    assert str(response.status_code) in responses, f"{response.status_code} is not documented for {method} {path}"
    documented = resolve(responses[str(response.status_code)])
    assert response.mimetype in documented["content"]
    schema = {**documented["content"][response.mimetype]["schema"], "components": DOCUMENT["components"]}
    errors = sorted(Draft202012Validator(schema).iter_errors(response.get_json()), key=str)
    assert not errors, [error.message for error in errors]
    for name, header in documented.get("headers", {}).items():
        if header.get("required"):
            assert name in response.headers, f"required header {name} is missing"
            pattern = resolve(header["schema"]).get("pattern")
            assert pattern is None or re.search(pattern, response.headers[name])


# --- how to provoke each code -------------------------------------------------------


def concrete(path: str, deployment_id: str = UNKNOWN_ID) -> str:
    return path.replace("{deployment_id}", deployment_id)


def action_of(path: str) -> str | None:
    match = re.fullmatch(r"/deployments/\{deployment_id\}/(\w+)", path)
    return match[1] if match and match[1] != "events" else None


def valid_body(path: str) -> dict | None:
    if path == "/deployments":
        return create_body()
    if action_of(path):
        return {"actor": "bob", "note": "because"}
    return None


def send(client, method, path, *, deployment_id=UNKNOWN_ID, **kwargs):
    if "json" not in kwargs and "data" not in kwargs and method == "POST":
        kwargs["json"] = valid_body(path)
    return client.open(concrete(path, deployment_id), method=method, **kwargs)


def deployment_that_can(client, action: str) -> str:
    """A deployment from whose status `action` is allowed."""
    deployment_id = client.post("/deployments", json=create_body(requester="alice")).get_json()["id"]
    before = {"approve": [], "reject": [], "start": ["approve"], "succeed": ["approve", "start"],
              "fail": ["approve", "start"], "rollback": ["approve", "start"], "cancel": []}[action]
    for step in before:
        client.post(f"/deployments/{deployment_id}/{step}", json={"actor": "bob", "note": "because"})
    return deployment_id


def deployment_in_wrong_status(client, action: str) -> str:
    """A deployment from whose status `action` is not allowed."""
    deployment = client.post("/deployments", json=create_body(requester="alice")).get_json()
    if action in ("approve", "reject", "cancel"):
        client.post(f"/deployments/{deployment['id']}/reject", json={"actor": "bob", "note": "no"})
    return deployment["id"]


@pytest.fixture
def trusting_app(tmp_path):
    """An app that takes the actor and requester from REMOTE_USER."""
    app = create_app(tmp_path / "trusting.db", trust_remote_user=True)
    yield app
    app.close()


def review_policies(now: datetime) -> dict:
    """A configuration (as tomllib would parse it) with one environment per policy refusal to provoke."""
    day = timedelta(days=1)
    return {"environments": {
        "approvers-only": {"approvers": ["dana@example.com"]},
        "two-approvals": {"required_approvals": 2},
        "frozen": {"freeze": [{"start": (now - day).isoformat(), "end": (now + day).isoformat(),
                               "reason": "conformance freeze"}]},
        "exclusive": {"exclusive": True, "required_approvals": 0},
    }}


@pytest.fixture
def policy_app(tmp_path):
    """Builds, when first called, an app judged by review_policies (with a freeze around now)."""
    built = []

    def build():
        if not built:
            built.append(create_app(tmp_path / "policy.db", config=review_policies(datetime.now(timezone.utc))))
        return built[0]

    yield build
    for app in built:
        app.close()


@pytest.fixture
def fragile_app(tmp_path):
    """An app that gives up on a locked database after 50 ms instead of 5 s."""
    app = create_app(tmp_path / "fragile.db", busy_timeout_ms=50)
    yield app
    app.close()


@pytest.fixture
def replica_of():
    """Builds a read-only app on another app's database file, as a replica on the same host would be."""
    built = []

    def build(app):
        built.append(create_app(app.repository.db_path, read_only=True))
        return built[-1]

    yield build
    for app in built:
        app.close()


def provoke(method, path, code, *, app, client, monkeypatch, trusting_app, policy_app, replica_of):
    action = action_of(path)
    if code in POLICY_REFUSALS:
        return provoke_policy_refusal(method, path, code, Client(policy_app()))
    if code == "unauthenticated":
        return send(Client(trusting_app), method, path)
    if code == "actor_mismatch":
        as_carol = Client(trusting_app)
        carol = {"environ_base": {"REMOTE_USER": "carol"}}
        if path == "/deployments":
            return send(as_carol, method, path, json=create_body(requester="dave"), **carol)
        deployment = as_carol.post("/deployments", json=create_body(requester=None), **carol).get_json()
        return send(as_carol, method, path, deployment_id=deployment["id"],
                    json={"actor": "dave", "note": "because"}, **carol)
    if code == "idempotency_key_reused":
        # Only an answer that changed something is kept: the first request must succeed.
        key = {"Idempotency-Key": "key-1"}
        target = deployment_that_can(client, action) if action else UNKNOWN_ID
        assert send(client, method, path, deployment_id=target, headers=key).status_code < 300
        return send(client, method, path, deployment_id=target, headers=key,
                    json={**valid_body(path), "note": "another request"} if action else create_body(version="2.0"))
    if code == "malformed_json":
        return send(client, method, path, data=b"{", content_type="application/json")
    if code == "invalid_cursor":
        return send(client, method, path, query_string={"cursor": "not-one-of-ours"})
    if code == "self_approval":
        deployment = client.post("/deployments", json=create_body(requester="alice")).get_json()
        return send(client, method, path, deployment_id=deployment["id"], json={"actor": " ALICE "})
    if code == "not_found":
        return send(client, method, path)
    if code == "method_not_allowed":
        return send(client, "DELETE", path, json=None)
    if code == "invalid_transition":
        return send(client, method, path, deployment_id=deployment_in_wrong_status(client, action))
    if code == "payload_too_large":
        return send(client, method, path, data=json.dumps({"note": "x" * 70_000}), content_type="application/json")
    if code == "unsupported_media_type":
        return send(client, method, path, data=json.dumps(valid_body(path)), content_type="text/plain")
    if code == "validation_failed":
        if path == "/deployments/{deployment_id}/events":
            # This operation reads only `format`, `after` and `limit` and ignores other parameters.
            return send(client, method, path, query_string={"format": "xml"})
        if method == "GET":
            return send(client, method, path, query_string={"limit": "0"})
        return send(client, method, path, json={})
    if code == "header_too_large":
        return send(client, method, path, headers={"Accept": "application/json;q=0.5, " * 60})
    if code == "internal_error":
        failing_handler(RuntimeError("a bug"), method, path, app=app, monkeypatch=monkeypatch)
        return send(client, method, path)
    if code == "database_busy":
        return provoke_database_busy(method, path, app=app, client=client, monkeypatch=monkeypatch)
    if code == "storage_unavailable":
        if method == "POST":
            # The file removed while the server has it open: nothing may be acknowledged into it.
            target = deployment_that_can(client, action) if action else UNKNOWN_ID
            Path(app.repository.db_path).rename(app.repository.db_path + ".moved")
            return send(client, method, path, deployment_id=target)
        # Reads meet it when the storage fails under them (an I/O error, a damaged page).
        failing_handler(StorageFault("disk I/O error"), method, path, app=app, monkeypatch=monkeypatch)
        return send(client, method, path)
    if code == "read_only":
        # A request the primary would accept, sent to the replica.
        target = deployment_that_can(client, action) if action else UNKNOWN_ID
        return send(Client(replica_of(app)), method, path, deployment_id=target)
    if code == "unavailable":
        app.repository.close()
        return send(client, method, path)
    raise AssertionError(f"no recipe for {code}: add one")


POLICY_REFUSALS = ("not_an_approver", "duplicate_approval", "deploy_freeze", "environment_busy")


def provoke_policy_refusal(method, path, code, client):
    """A refusal by one of review_policies' environments."""
    def deployment_in(environment):
        response = client.post("/deployments", json=create_body(environment=environment, requester="alice"))
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def act(deployment_id, action, actor="bob"):
        response = client.post(f"/deployments/{deployment_id}/{action}", json={"actor": actor, "note": "because"})
        assert response.status_code == 200, response.get_json()

    if code == "not_an_approver":
        return send(client, method, path, deployment_id=deployment_in("approvers-only"))
    if code == "duplicate_approval":
        target = deployment_in("two-approvals")
        act(target, "approve")  # the first of two: still pending_approval
        return send(client, method, path, deployment_id=target, json={"actor": " BOB "})
    if code == "deploy_freeze":
        target = deployment_in("frozen")
        act(target, "approve")
        return send(client, method, path, deployment_id=target)
    # environment_busy: created approved (no approval needed), one started, another started after it.
    act(deployment_in("exclusive"), "start")
    return send(client, method, path, deployment_id=deployment_in("exclusive"))


def provoke_database_busy(method, path, *, app, client, monkeypatch):
    if method == "POST":
        # Another connection holds the write lock, as another process would.
        deployment = client.post("/deployments", json=create_body()).get_json()
        blocker = sqlite3.connect(app.repository.db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            return send(client, method, path, deployment_id=deployment["id"])
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

    # Readers do not wait for writers in WAL mode; SQLite reports a busy read only
    # in rarer cases (WAL recovery, another process in exclusive locking mode), so
    # the handler is made to meet one.
    failing_handler(DatabaseBusy("database is locked"), method, path, app=app, monkeypatch=monkeypatch)
    return send(client, method, path)


def failing_handler(error, method, path, *, app, monkeypatch):
    """Make the handler of (method, path) raise ``error``, as a bug or a failing database would."""
    endpoint, _ = app.url_map.bind("localhost").match(concrete(path), method=method)

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setitem(HANDLERS, endpoint, fail)


@pytest.mark.parametrize("method, path, status, code", list(documented_errors()))
def test_every_documented_error_happens_as_documented(fragile_app, trusting_app, policy_app, replica_of, monkeypatch,
                                                     method, path, status, code):
    client = Client(fragile_app)
    response = provoke(method, path, code, app=fragile_app, client=client, monkeypatch=monkeypatch,
                       trusting_app=trusting_app, policy_app=policy_app, replica_of=replica_of)
    assert (response.status_code, response.get_json()["code"]) == (status, code), response.get_json()
    # The schemas leave `status` a plain integer (generators cannot merge a `const` per response): it is held here.
    assert response.get_json()["status"] == status
    assert_as_documented(method, path, response)
    # A write's 503 documents Retry-After as optional, for read_only has none; the other two always have it.
    if code in ("database_busy", "storage_unavailable"):
        assert re.fullmatch(r"[0-9]+", response.headers.get("Retry-After", ""))
    if code == "read_only":
        assert "Retry-After" not in response.headers
