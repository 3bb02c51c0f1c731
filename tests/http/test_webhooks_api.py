"""GET /webhooks over HTTP: what each configured webhook shows, and that nothing secret is in it.

The positions behind the answer are written by create_app (each new webhook at
the newest event) and moved by the deliverer; no deliverer runs here but in the
last test, so every event written after start-up is pending.
"""

from __future__ import annotations

import base64
import time

import pytest
from builders import create_body
from receivers import Receiver
from werkzeug.test import Client

from deployapi import create_app
from deployapi.config_file import ConfigFileError
from deployapi.delivery import Deliverer

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_KEY = base64.b64decode(SECRET.removeprefix("whsec_"))
# A Slack incoming webhook's path is its credential, like a token in a query string.
SLACK_URL = "https://hooks.slack.com/services/T0001/B0001/XXXXXXXXXXXXXXXXXXXXXXXX"
AUDIT_URL = "http://127.0.0.1:9000/hooks/deployapi?token=path-secret"


def hook(name: str, **keys) -> dict:
    return {"name": name, "url": AUDIT_URL, **keys}


@pytest.fixture
def start_app(db_path):
    """create_app on the test's database with ``[[webhooks]]`` tables; every app is closed after the test."""
    apps = []

    def start(*hooks: dict, **options) -> Client:
        config = {"webhooks": list(hooks)} if hooks else None
        application = create_app(db_path, config=config, **options)
        apps.append(application)
        return Client(application)

    yield start
    for application in apps:
        application.close()


def webhooks(client: Client) -> list[dict]:
    response = client.get("/webhooks")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()["items"]


def write_history(client: Client, **overrides) -> dict:
    """A deployment created, approved, started and succeeded: four events."""
    deployment = client.post("/deployments", json=create_body(**overrides)).get_json()
    for action in ("approve", "start", "succeed"):
        response = client.post(f"/deployments/{deployment['id']}/{action}", json={"actor": "bob@example.com"})
        assert response.status_code == 200, response.get_json()
    return deployment


def newest_event_id(client: Client) -> int:
    return client.get("/events/head").get_json()["id"]


def test_without_a_configuration_file_no_webhook_is_listed(start_app):
    assert start_app().get("/webhooks").get_json() == {"items": []}


def test_a_configuration_file_without_webhooks_lists_none(db_path):
    application = create_app(db_path, config={"defaults": {"required_approvals": 2}})
    try:
        assert Client(application).get("/webhooks").get_json() == {"items": []}
    finally:
        application.close()


def test_each_webhook_is_one_item_in_the_order_of_the_file_with_every_field(start_app):
    client = start_app(hook("zeta", format="cloudevents"), hook("alpha"), hook("mid", url=SLACK_URL, format="slack"))
    items = webhooks(client)
    assert [item["name"] for item in items] == ["zeta", "alpha", "mid"]
    assert [item["format"] for item in items] == ["cloudevents", "json", "slack"]  # json when the file says none
    assert items[1] == {
        "name": "alpha", "url": "http://127.0.0.1:9000", "format": "json", "delivered_through": 0,
        "pending": 0, "failed_attempts": 0, "last_attempt_at": None, "last_error": None,
        "next_attempt_at": None,
    }


def test_the_url_shows_only_the_scheme_and_host_and_no_secret_is_anywhere_in_the_answer(start_app, monkeypatch):
    monkeypatch.setenv("AUDIT_SECRET", SECRET)
    client = start_app(hook("audit", url="https://audit.example.com:8443/in?token=path-secret", secret=SECRET),
                       hook("audit-env", secret_env="AUDIT_SECRET"),
                       hook("releases", url=SLACK_URL, format="slack"))
    body = client.get("/webhooks").get_data(as_text=True)
    assert [item["url"] for item in webhooks(client)] == [
        "https://audit.example.com:8443", "http://127.0.0.1:9000", "https://hooks.slack.com"]
    hidden = (SECRET, SECRET.removeprefix("whsec_"), base64.b64encode(SECRET_KEY).decode().rstrip("="),
              SECRET_KEY.hex(), "AUDIT_SECRET", "path-secret", "token", "/hooks/deployapi", "/services/", "/in",
              "XXXXXXXXXXXX")
    assert [text for text in hidden if text in body] == []


def test_a_new_webhook_starts_at_the_newest_event_written_before_it_was_configured(start_app):
    write_history(start_app())
    client = start_app(hook("audit"))
    assert newest_event_id(client) == 4
    [item] = webhooks(client)
    assert (item["delivered_through"], item["pending"]) == (4, 0)


def test_pending_counts_the_events_after_start_up_that_each_webhook_matches(start_app):
    client = start_app(
        hook("everything"),
        hook("successes", types=["succeeded"]),
        hook("billing", services=["billing"]),
        hook("production", environments=["production"]),
        hook("billing-production-starts", types=["started"], services=["billing"], environments=["production"]),
    )
    write_history(client, service="billing", environment="staging")
    write_history(client, service="billing", environment="production", risk="low")
    write_history(client, service="search", environment="production", risk="low")
    pending = {item["name"]: item["pending"] for item in webhooks(client)}
    assert pending == {"everything": 12, "successes": 3, "billing": 8, "production": 8,
                       "billing-production-starts": 1}
    assert {item["delivered_through"] for item in webhooks(client)} == {0}


def test_renaming_a_webhook_starts_over_at_the_head_and_its_old_name_resumes_where_it_was(start_app):
    first = start_app(hook("audit"))
    write_history(first)  # events 1-4, pending for "audit"
    renamed = start_app(hook("audit-v2"))
    assert [(item["delivered_through"], item["pending"]) for item in webhooks(renamed)] == [(4, 0)]
    write_history(renamed)  # events 5-8
    back = start_app(hook("audit"), hook("audit-v2"))
    assert [(item["name"], item["delivered_through"], item["pending"]) for item in webhooks(back)] == [
        ("audit", 0, 8), ("audit-v2", 4, 4)]


def test_unknown_and_repeated_query_parameters_are_ignored(start_app):
    client = start_app(hook("audit"))
    write_history(client)
    plain = client.get("/webhooks")
    for query in ("?name=other", "?limit=1&limit=2", "?format=slack", "?%ff=%fe"):
        response = client.get(f"/webhooks{query}")
        assert (response.status_code, response.get_json()) == (200, plain.get_json()), query


def test_only_get_and_head_are_allowed(start_app):
    client = start_app(hook("audit"))
    assert client.head("/webhooks").status_code == 200
    response = client.post("/webhooks", json={})
    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


def test_with_trusted_identity_the_list_needs_an_identity_like_every_endpoint_but_healthz(start_app):
    client = start_app(hook("audit"), trust_remote_user=True, remote_user_header="X-Forwarded-User")
    assert client.get("/webhooks").status_code == 401
    assert client.get("/webhooks", headers={"X-Forwarded-User": "ops@example.com"}).status_code == 200


@pytest.mark.parametrize(("hooks", "named"), [
    pytest.param([hook("audit", url="ftp://example.com/in")], r"webhooks\[0\]\.url", id="not http"),
    pytest.param([hook("audit", url="https://user:pass@example.com/in")], r"webhooks\[0\]\.url", id="userinfo"),
    pytest.param([hook("audit", secret="whsec_" + base64.b64encode(b"k" * 16).decode())],
                 r"webhooks\[0\]\.secret", id="secret too short"),
    pytest.param([hook("audit", secret_env="WEBHOOK_TEST_UNSET_SECRET")], r"webhooks\[0\]\.secret_env",
                 id="secret_env unset"),
    pytest.param([hook("audit"), hook("audit")], r"webhooks\[1\]\.name", id="duplicate name"),
    pytest.param([hook("audit", format="xml")], r"webhooks\[0\]\.format", id="unknown format"),
    pytest.param([hook("audit", types=[])], r"webhooks\[0\]\.types", id="empty filter"),
    pytest.param([hook("audit", max_backoff_seconds=0)], r"webhooks\[0\]\.max_backoff_seconds", id="backoff"),
    pytest.param([hook("audit", retries=3)], r"webhooks\[0\]\.retries", id="unknown key"),
])
def test_an_invalid_webhook_is_refused_before_any_database_is_created(db_path, monkeypatch, hooks, named):
    monkeypatch.delenv("WEBHOOK_TEST_UNSET_SECRET", raising=False)
    with pytest.raises(ConfigFileError, match=rf"^<config>: {named}: ") as refused:
        create_app(db_path, config={"webhooks": hooks})
    assert not db_path.exists()
    assert not list(db_path.parent.iterdir())  # no -wal, no -shm either
    assert "whsec_" not in str(refused.value)


def test_a_url_the_configuration_file_accepts_is_one_deliveries_can_reach(db_path):
    with Receiver(secret=None) as receiver:
        url = f"http://127.0.0.1:{receiver.port}/hooks/café"
        try:
            application = create_app(db_path, config={"webhooks": [hook("audit", url=url)]})
        except ConfigFileError:
            return  # refused at start-up, with a message: as good as delivered
        deliverer = Deliverer(application.repository, application.webhooks)
        deliverer.start()
        try:
            client = Client(application)
            client.post("/deployments", json=create_body())
            [item] = wait_for_an_outcome(client)
            assert (item["delivered_through"], item["last_error"]) == (1, None)
        finally:
            deliverer.stop(grace=1)
            application.close()


def wait_for_an_outcome(client: Client, timeout: float = 10) -> list[dict]:
    """GET /webhooks once the first webhook's first event was delivered or one attempt at it failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = webhooks(client)
        if items[0]["delivered_through"] > 0 or items[0]["failed_attempts"] > 0:
            return items
        time.sleep(0.02)
    raise AssertionError(f"no delivery and no failed attempt within {timeout} s")
