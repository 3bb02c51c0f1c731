"""A read-only app (``create_app(..., read_only=True)``): a replica serving a copy made by a normal app.

Every GET answers from the copy what the app that wrote it answers; every write
route of the app's routing Map, with or without an Idempotency-Key, is ``503
read_only`` and leaves the file byte for byte as it was; the start-up refuses a
missing file and one whose schema is not this deployapi's, creating and changing
nothing.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from builders import StepClock, create_body
from werkzeug.test import Client

from deployapi import create_app, lifecycle
from deployapi.app import READ_METHODS, _url_map
from deployapi.errors import MAX_BODY_BYTES
from deployapi.repository import MIGRATIONS, SCHEMA_VERSION, DatabaseError, migrate

FIXTURES = Path(__file__).parents[1] / "integration" / "fixtures"
# A webhook whose receiver never answers: the primary registered it, so the copy holds its position.
CONFIG = {"webhooks": [{"name": "audit", "url": "http://127.0.0.1:9/hooks"}]}
DORA_WINDOW = "since=2026-11-01T00:00:00Z&until=2026-12-01T00:00:00Z"
ANY_CONVERTER = re.compile(r"<any\((?P<items>[^)]*)\):(?P<name>\w+)>")


# --- the copy -----------------------------------------------------------------------------------------------

def make_copy(path: Path) -> dict[str, str]:
    """A database written by a normal app: one deployment in each status an action starts from, and a webhook.

    Returns each deployment's id by status.
    """
    app = create_app(path, config=CONFIG, clock=StepClock())
    client = Client(app)
    steps = {lifecycle.PENDING_APPROVAL: (), lifecycle.APPROVED: ("approve",),
             lifecycle.STARTED: ("approve", "start"), lifecycle.SUCCEEDED: ("approve", "start", "succeed")}
    ids = {}
    try:
        for status, actions in steps.items():
            response = client.post("/deployments", json=create_body(version=f"1.0.{len(ids)}"))
            assert response.status_code == 201, response.get_json()
            ids[status] = response.get_json()["id"]
            for action in actions:
                response = client.post(f"/deployments/{ids[status]}/{action}",
                                       json={"actor": "bob@example.com", "note": "ok"})
                assert response.status_code == 200, response.get_json()
    finally:
        app.close()
    return ids


@pytest.fixture
def copy(tmp_path):
    """(path, ids by status) of a copy as the app that wrote it left it."""
    path = tmp_path / "copy.db"
    return path, make_copy(path)


@pytest.fixture
def replica(copy):
    """A read-only app on the copy, with GET /metrics and the primary's configuration."""
    app = create_app(copy[0], config=CONFIG, metrics=True, read_only=True)
    yield app
    app.close()


def unchanged(path: Path, before: bytes) -> bool:
    """The database file holds the same bytes, and nothing was written to a -wal beside it.

    SQLite's locking creates an empty -wal and a -shm beside a WAL file that a
    reader opens in a directory it may write; the -wal stays empty.
    """
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() == before and (not wal.exists() or wal.stat().st_size == 0)


# --- the routes -----------------------------------------------------------------------------------------------

def routed(methods_wanted) -> list[tuple[str, str, str]]:
    """(method, path template, endpoint) of each route of the app's Map (with /metrics) whose method
    ``methods_wanted`` accepts; ``<any(a, b):x>`` becomes one path per item."""
    found = []
    for rule in _url_map(metrics=True).iter_rules():
        match = ANY_CONVERTER.search(rule.rule)
        items = [item.strip().strip("'\"") for item in match["items"].split(",")] if match else [None]
        for item in items:
            path = rule.rule if item is None else rule.rule[:match.start()] + item + rule.rule[match.end():]
            for method in sorted(rule.methods):
                if methods_wanted(method):
                    found.append((method, path, rule.endpoint))
    return found


WRITES = routed(lambda method: method not in READ_METHODS)
READS = routed(lambda method: method == "GET")


def test_the_routes_listed_here_are_the_app_s_own(replica):
    assert sorted(rule.rule for rule in replica.url_map.iter_rules()) == sorted(
        rule.rule for rule in _url_map(metrics=True).iter_rules())
    # Every action, and the create: a write route added later joins WRITES by itself.
    assert {path for _, path, _ in WRITES} == {"/deployments", *(f"/deployments/<deployment_id>/{action}"
                                                                  for action in lifecycle.ACTIONS)}


def valid_write(method: str, path: str, ids: dict[str, str]) -> tuple[str, dict]:
    """The URL and a body that a writable app accepts for this write route.

    :raises AssertionError: for a write route this test does not know yet: add its valid request here.
    """
    if (method, path) == ("POST", "/deployments"):
        return path, create_body(version="2.0.0")
    action = path.rsplit("/", 1)[1]
    if method == "POST" and action in lifecycle.TRANSITIONS:
        status = next(status for status in ids if status in lifecycle.TRANSITIONS[action].from_statuses)
        return path.replace("<deployment_id>", ids[status]), {"actor": "bob@example.com", "note": "because"}
    raise AssertionError(f"no valid request known for {method} {path}: add one to valid_write")


# --- reads ------------------------------------------------------------------------------------------------------

def read_urls(ids: dict[str, str]) -> dict[str, str]:
    """A URL for each GET route of the Map, about a deployment with history where the route takes one."""
    deployment = ids[lifecycle.SUCCEEDED]
    queries = {"dora_metrics": DORA_WINDOW, "list_deployments": "limit=2", "list_event_feed": "limit=3"}
    urls = {}
    for _, path, endpoint in READS:
        url = path.replace("<deployment_id>", deployment)
        urls[endpoint] = url + (f"?{queries[endpoint]}" if endpoint in queries else "")
    return urls


def test_every_get_endpoint_answers_from_the_copy_what_the_app_that_wrote_it_answers(tmp_path):
    path = tmp_path / "copy.db"
    ids = make_copy(path)
    urls = read_urls(ids)
    assert set(urls) == set(endpoint for _, _, endpoint in READS)
    primary = create_app(path, config=CONFIG, metrics=True)
    try:
        expected = {endpoint: Client(primary).get(url) for endpoint, url in urls.items()}
    finally:
        primary.close()
    before = path.read_bytes()
    replica = create_app(path, config=CONFIG, metrics=True, read_only=True)
    try:
        client = Client(replica)
        for endpoint, url in urls.items():
            response = client.get(url)
            assert response.status_code == 200, (url, response.get_data(as_text=True))
            assert response.mimetype == expected[endpoint].mimetype
            if endpoint == "metrics":  # counts this app's own requests: compared by the deployments it reports
                assert 'deployapi_deployments{status="succeeded"} 1\n' in response.get_data(as_text=True)
            else:
                assert response.get_json() == expected[endpoint].get_json(), url
        # A page on from the first: the cursor the copy signs is the one the primary signed (a setting of the file).
        cursor = client.get(urls["list_deployments"]).get_json()["next_cursor"]
        assert len(client.get(f"/deployments?limit=2&cursor={cursor}").get_json()["items"]) == 2
        # HEAD answers wherever GET does.
        assert client.head(urls["list_deployments"]).status_code == 200
    finally:
        replica.close()
    assert unchanged(path, before)


def test_get_webhooks_shows_the_positions_the_copy_holds(replica, copy):
    [item] = Client(replica).get("/webhooks").get_json()["items"]
    # Registered by the primary before its first event; no deliverer ran since, in either app.
    assert (item["name"], item["delivered_through"], item["pending"]) == ("audit", 0, 10)


# --- writes -------------------------------------------------------------------------------------------------------

def assert_read_only_refusal(response) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert (body["code"], body["type"], body["title"], body["status"]) == (
        "read_only", "urn:deployapi:problem:read_only", "Read-only replica", 503)
    assert "read-only copy" in body["detail"] and "primary" in body["detail"]
    # Retrying here can never succeed.
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize("key", [None, "retry-1"], ids=["without Idempotency-Key", "with Idempotency-Key"])
@pytest.mark.parametrize(("method", "path"), [(method, path) for method, path, _ in WRITES],
                         ids=[f"{method} {path}" for method, path, _ in WRITES])
def test_every_write_route_is_refused_with_503_read_only_and_changes_nothing(tmp_path, copy, method, path, key):
    db, ids = copy
    url, body = valid_write(method, path, ids)
    headers = {"Idempotency-Key": key} if key else {}
    before = db.read_bytes()
    replica = create_app(db, config=CONFIG, read_only=True)
    try:
        client = Client(replica)
        head = client.get("/events/head").get_json()
        assert_read_only_refusal(client.open(url, method=method, json=body, headers=headers))
        # The same key again is refused the same way: nothing was stored to replay.
        assert_read_only_refusal(client.open(url, method=method, json=body, headers=headers))
        assert client.get("/events/head").get_json() == head
    finally:
        replica.close()
    assert unchanged(db, before)
    # The request is one a writable server accepts: only the read-only setting refused it.
    writable_copy = tmp_path / "writable.db"
    writable_copy.write_bytes(before)
    writable = create_app(writable_copy)
    try:
        assert Client(writable).open(url, method=method, json=body, headers=headers).status_code in (200, 201)
    finally:
        writable.close()


@pytest.mark.parametrize("request_options", [
    pytest.param({"data": b"{", "content_type": "application/json"}, id="malformed JSON"),
    pytest.param({"data": b'{"service": "billing"}', "content_type": "text/plain"}, id="not application/json"),
    pytest.param({"data": b"{}", "content_type": "application/json"}, id="invalid fields"),
    pytest.param({"data": b"x" * (MAX_BODY_BYTES + 1), "content_type": "application/json"}, id="too large"),
    pytest.param({"json": create_body(), "headers": {"Idempotency-Key": "not a valid key \u00e9"}},
                 id="malformed Idempotency-Key"),
])
def test_a_write_is_refused_before_its_body_or_key_is_read(replica, copy, request_options):
    before = copy[0].read_bytes()
    assert_read_only_refusal(Client(replica).post("/deployments", **request_options))
    assert unchanged(copy[0], before)


def test_a_write_to_an_unknown_deployment_is_refused_as_read_only_too(replica):
    assert_read_only_refusal(Client(replica).post("/deployments/01m8bqmwd0jcr9fbtk1cqdh4gs/approve",
                                                  json={"actor": "bob"}))


def test_with_trusted_identity_a_write_without_one_is_refused_as_read_only(copy):
    app = create_app(copy[0], trust_remote_user=True, read_only=True)
    try:
        client = Client(app)
        assert_read_only_refusal(client.post("/deployments", json=create_body()))
        assert client.get("/deployments").status_code == 401  # reads keep their rules
    finally:
        app.close()


@pytest.mark.parametrize(("method", "path"), [
    ("DELETE", "/deployments"), ("PUT", "/deployments/{id}"), ("POST", "/events"), ("PATCH", "/webhooks"),
    ("POST", "/healthz"),
])
def test_a_method_no_route_allows_stays_405(replica, copy, method, path):
    response = Client(replica).open(path.replace("{id}", copy[1][lifecycle.SUCCEEDED]), method=method)
    assert response.status_code == 405 and response.get_json()["code"] == "method_not_allowed"
    assert response.headers["Allow"]


def test_the_metrics_count_refused_writes_under_their_route(replica):
    Client(replica).post("/deployments", json=create_body())
    text = Client(replica).get("/metrics").get_data(as_text=True)
    assert re.search(r'deployapi_http_requests_total\{route="/deployments",method="POST",status="503"\} 1\n', text)


# --- another process changes the file -------------------------------------------------------------------------

def test_what_another_process_commits_to_the_file_is_served_at_the_next_request(replica, copy):
    client = Client(replica)
    assert len(client.get("/deployments").get_json()["items"]) == 4
    primary = create_app(copy[0])
    try:
        created = Client(primary).post("/deployments", json=create_body(version="3.0.0")).get_json()
        # Read by a connection the replica opened before the commit (its thread's, kept between requests).
        assert client.get(f"/deployments/{created['id']}").status_code == 200
        assert client.get("/events/head").get_json() == Client(primary).get("/events/head").get_json()
    finally:
        primary.close()


def test_a_file_replaced_under_the_replica_makes_healthz_503_until_it_is_restarted(replica, copy, tmp_path):
    client = Client(replica)
    assert client.get("/healthz").status_code == 200
    other = tmp_path / "other.db"
    make_copy(other)
    other.replace(copy[0])
    response = client.get("/healthz")
    assert response.status_code == 503 and response.get_json()["code"] == "unavailable"


# --- start-up refusals ----------------------------------------------------------------------------------------

def test_a_missing_file_is_refused_and_nothing_is_created(tmp_path):
    with pytest.raises(DatabaseError, match="no database at .*missing.db.*read-only is set"):
        create_app(tmp_path / "missing.db", read_only=True)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_file_is_refused_and_left_empty(tmp_path):
    (tmp_path / "empty.db").touch()
    with pytest.raises(DatabaseError, match="missing or empty file"):
        create_app(tmp_path / "empty.db", read_only=True)
    assert [(p.name, p.stat().st_size) for p in tmp_path.iterdir()] == [("empty.db", 0)]


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    (tmp_path / "notes.db").write_text("not a database\n" * 100)
    with pytest.raises(DatabaseError, match="file is not a database"):
        create_app(tmp_path / "notes.db", read_only=True)


def version_8_database(path: Path) -> Path:
    """An empty database at schema version 8, made from that version's frozen schema."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")
    migrate(conn, (FIXTURES / "schema_v8.sql").read_text(encoding="utf-8"),
            tuple(m for m in MIGRATIONS if m.version <= 8), 8)
    conn.execute("COMMIT")
    conn.close()
    return path


def test_an_older_schema_is_refused_with_how_to_upgrade_it_and_left_as_it_was(tmp_path):
    path = version_8_database(tmp_path / "old.db")
    before = path.read_bytes()
    with pytest.raises(DatabaseError) as refused:
        create_app(path, read_only=True)
    assert f"schema version 8 and this deployapi serves version {SCHEMA_VERSION}" in str(refused.value)
    assert "upgrade the primary's database with a normal start" in str(refused.value)
    assert unchanged(path, before)
    # What the message says to do works: a normal start upgrades it, and then it is served read-only.
    create_app(path).close()
    create_app(path, read_only=True).close()


def test_a_newer_schema_is_refused_as_a_normal_start_refuses_it(copy):
    path = copy[0]
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match=f"schema version {SCHEMA_VERSION + 1}, but this deployapi knows"):
        create_app(path, read_only=True)
    assert unchanged(path, before)


def test_a_configuration_file_with_a_webhook_the_copy_never_registered_writes_no_position(copy):
    before = copy[0].read_bytes()
    app = create_app(copy[0], config={"webhooks": [{"name": "new-hook", "url": "http://127.0.0.1:9/"}]},
                     read_only=True)
    try:
        [item] = Client(app).get("/webhooks").get_json()["items"]
        assert item["name"] == "new-hook"
    finally:
        app.close()
    assert unchanged(copy[0], before)
