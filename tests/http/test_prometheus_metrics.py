"""GET /metrics over HTTP: off by default (404 like any unlisted path), and when on, what Prometheus reads.

The answers are parsed with prometheus_client's own parser, so what passes here
is what a Prometheus server (or anything built on that client) accepts.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from datetime import datetime, timedelta

import pytest
from builders import StepClock, create_body
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from deployapi import create_app, lifecycle
from deployapi.app import load_openapi
from deployapi.repository import BUSY_REASONS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUESTS = "deployapi_http_requests"  # a counter's family name, as the parser gives it: without _total
DURATIONS = "deployapi_http_request_duration_seconds"


@pytest.fixture
def start_app(db_path):
    """create_app(metrics=True) on the test's database; every app is closed after the test."""
    apps = []

    def start(**options):
        application = create_app(db_path, **{"metrics": True, **options})
        apps.append(application)
        return application

    yield start
    for application in apps:
        application.close()


def scrape(client: Client) -> dict:
    """GET /metrics parsed: family name -> family."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    return {family.name: family for family in text_string_to_metric_families(response.get_data(as_text=True))}


def value(families: dict, family: str, sample: str | None = None, **labels) -> float:
    """The one sample of ``family`` named ``sample`` (default: the family's name) with exactly ``labels``."""
    found = [s.value for s in families[family].samples
             if s.name == (sample or family) and s.labels == labels]
    assert len(found) == 1, (family, labels, families[family].samples)
    return found[0]


def request_counts(families: dict) -> dict[tuple[str, str, str], float]:
    return {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value
            for s in families[REQUESTS].samples}


def act(client: Client, deployment_id: str, action: str, **body) -> dict:
    response = client.post(f"/deployments/{deployment_id}/{action}", json={"actor": "bob@example.com", **body})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# --- off by default --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_without_the_setting_metrics_is_answered_exactly_as_an_unknown_path(client, method):
    metrics = client.open("/metrics", method=method)
    unknown = client.open("/no-such-path", method=method)
    assert metrics.status_code == unknown.status_code == 404
    assert metrics.get_data() == unknown.get_data()
    assert {k: v for k, v in metrics.headers if k != "X-Request-ID"} == \
        {k: v for k, v in unknown.headers if k != "X-Request-ID"}


def test_with_the_setting_only_get_and_head_are_allowed(start_app):
    client = Client(start_app())
    assert client.head("/metrics").status_code == 200
    response = client.post("/metrics")
    assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD"


# --- requests --------------------------------------------------------------------------------------------------

def test_requests_are_counted_by_route_method_and_status(start_app):
    client = Client(start_app())
    deployment = client.post("/deployments", json=create_body()).get_json()
    client.post("/deployments", json=create_body(service="Not A Slug"))  # 422
    for _ in range(3):
        client.get(f"/deployments/{deployment['id']}")
    client.get("/deployments/01nosuchdeployment0000000")  # 404 on a route
    act(client, deployment["id"], "approve")
    client.post(f"/deployments/{deployment['id']}/approve", json={"actor": "bob@example.com"})  # 409
    client.get("/no/such/path")
    client.get("/no/such/path?x=1")
    client.delete("/deployments")  # 405
    client.open("/deployments", method="BREW")  # not an HTTP method

    counts = request_counts(scrape(client))
    assert counts == {
        ("/deployments", "POST", "201"): 1,
        ("/deployments", "POST", "422"): 1,
        ("/deployments/{deployment_id}", "GET", "200"): 3,
        ("/deployments/{deployment_id}", "GET", "404"): 1,
        ("/deployments/{deployment_id}/approve", "POST", "200"): 1,
        ("/deployments/{deployment_id}/approve", "POST", "409"): 1,
        ("unmatched", "GET", "404"): 2,
        ("unmatched", "DELETE", "405"): 1,
        ("unmatched", "other", "405"): 1,
    }
    # The scrape itself is counted once it is answered: the next one sees it.
    assert request_counts(scrape(client))[("/metrics", "GET", "200")] == 1


def test_every_route_label_is_a_path_of_the_openapi_document(start_app):
    app = start_app()
    client = Client(app)
    deployment = client.post("/deployments", json=create_body()).get_json()
    for action in lifecycle.ACTIONS:
        client.post(f"/deployments/{deployment['id']}/{action}", json={"actor": "bob@example.com", "note": "n"})
    for path in ("/deployments", f"/deployments/{deployment['id']}", f"/deployments/{deployment['id']}/events",
                 "/events", "/events/head", "/environments", "/metrics/dora", "/policy", "/webhooks", "/healthz",
                 "/openapi.json", "/metrics"):
        client.get(path)
    routes = {route for route, _, _ in request_counts(scrape(client))}
    documented = set(load_openapi()["paths"])
    assert routes == documented | {"/metrics"}


def test_each_duration_histogram_is_cumulative_and_agrees_with_its_count_and_sum(start_app):
    client = Client(start_app())
    for i in range(5):
        client.post("/deployments", json=create_body(version=f"1.0.{i}"))
    for _ in range(7):
        client.get("/healthz")
    families = scrape(client)
    histograms: dict[tuple, dict] = {}
    for sample in families[DURATIONS].samples:
        labels = dict(sample.labels)
        le = labels.pop("le", None)
        key = tuple(sorted(labels.items()))
        entry = histograms.setdefault(key, {"buckets": []})
        if sample.name.endswith("_bucket"):
            entry["buckets"].append((float(le), sample.value))
        else:
            entry[sample.name.rsplit("_", 1)[1]] = sample.value
    assert len(histograms) == 2
    counts = request_counts(families)
    for key, entry in histograms.items():
        bounds = [bound for bound, _ in entry["buckets"]]
        cumulative = [count for _, count in entry["buckets"]]
        assert bounds == sorted(bounds) and bounds[-1] == math.inf
        assert cumulative == sorted(cumulative), "buckets must be cumulative"
        assert cumulative[-1] == entry["count"]
        labels = dict(key)
        assert entry["count"] == counts[(labels["route"], labels["method"], labels["status"])]
        # Every request took some time, and no more than the slowest bucket holding it allows.
        assert 0 < entry["sum"] <= entry["count"] * next(b for b, c in entry["buckets"] if c == entry["count"])
    assert histograms[(("method", "GET"), ("route", "/healthz"), ("status", "200"))]["count"] == 7
    assert histograms[(("method", "POST"), ("route", "/deployments"), ("status", "201"))]["count"] == 5


def test_concurrent_requests_are_all_counted(start_app):
    app = start_app()
    threads, each = 8, 50
    barrier = threading.Barrier(threads)

    def client_thread(number: int) -> None:
        client = Client(app)
        barrier.wait()
        for i in range(each):
            if i % 10 == 0:
                assert client.post("/deployments", json=create_body(version=f"{number}.{i}")).status_code == 201
            else:
                assert client.get("/healthz").status_code == 200

    workers = [threading.Thread(target=client_thread, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    families = scrape(Client(app))
    counts = request_counts(families)
    assert counts == {("/healthz", "GET", "200"): threads * each * 9 / 10,
                      ("/deployments", "POST", "201"): threads * each / 10}
    assert value(families, DURATIONS, f"{DURATIONS}_count", route="/healthz", method="GET", status="200") \
        == threads * each * 9 / 10
    assert value(families, "deployapi_deployments", status="pending_approval") == threads * each / 10
    assert value(families, "deployapi_db_write_wait_seconds", "deployapi_db_write_wait_seconds_count") \
        == threads * each / 10


# --- what the database holds -----------------------------------------------------------------------------------

def test_deployments_by_status_and_events_total_match_what_was_done(start_app, db_path):
    client = Client(start_app())
    families = scrape(client)
    assert {s.labels["status"]: s.value for s in families["deployapi_deployments"].samples} \
        == dict.fromkeys(lifecycle.STATUSES, 0)
    assert value(families, "deployapi_events", "deployapi_events_total") == 0

    ids = [client.post("/deployments", json=create_body(version=f"2.0.{i}")).get_json()["id"] for i in range(6)]
    act(client, ids[0], "approve")
    act(client, ids[0], "start")
    act(client, ids[0], "succeed")
    act(client, ids[1], "reject", note="no")
    act(client, ids[2], "approve")
    act(client, ids[3], "cancel", note="not needed")
    families = scrape(client)
    assert {s.labels["status"]: s.value for s in families["deployapi_deployments"].samples} == {
        "pending_approval": 2, "approved": 1, "rejected": 1, "started": 0, "succeeded": 1, "failed": 0,
        "rolled_back": 0, "cancelled": 1}
    assert value(families, "deployapi_events", "deployapi_events_total") == 6 + 6

    # Kept up to date from the events between scrapes: the same as counting again.
    act(client, ids[0], "rollback", note="broke checkout")
    act(client, ids[2], "start")
    act(client, ids[2], "fail", note="timeout")
    families = scrape(client)
    with sqlite3.connect(db_path) as conn:
        counted = dict(conn.execute("SELECT status, count(*) FROM deployments GROUP BY status").fetchall())
        events = conn.execute("SELECT count(*) FROM deployment_events").fetchone()[0]
    assert {s.labels["status"]: s.value for s in families["deployapi_deployments"].samples} \
        == {status: counted.get(status, 0) for status in lifecycle.STATUSES}
    assert counted["rolled_back"] == 1 and counted["failed"] == 1
    assert value(families, "deployapi_events", "deployapi_events_total") == events == 15


def test_a_second_app_on_the_same_database_sees_the_first_ones_writes(start_app):
    # As gunicorn's workers do: each process counts from the shared file, not from its own requests.
    first, second = Client(start_app()), Client(start_app())
    scrape(second)
    deployment = first.post("/deployments", json=create_body()).get_json()
    act(first, deployment["id"], "approve")
    families = scrape(second)
    assert value(families, "deployapi_deployments", status="approved") == 1
    assert value(families, "deployapi_deployments", status="pending_approval") == 0
    assert value(families, "deployapi_events", "deployapi_events_total") == 2


def test_partial_approvals_leave_the_status_count_alone(start_app):
    config = {"environments": {"production": {"production": True, "required_approvals": 2}}}
    client = Client(start_app(config=config))
    deployment = client.post("/deployments", json=create_body(environment="production")).get_json()
    scrape(client)
    act(client, deployment["id"], "approve")
    families = scrape(client)
    assert value(families, "deployapi_deployments", status="pending_approval") == 1
    act(client, deployment["id"], "approve", actor="carol@example.com")
    families = scrape(client)
    assert value(families, "deployapi_deployments", status="pending_approval") == 0
    assert value(families, "deployapi_deployments", status="approved") == 1


def test_database_and_wal_sizes_are_those_of_the_files(start_app, db_path):
    client = Client(start_app())
    client.post("/deployments", json=create_body())
    families = scrape(client)
    assert value(families, "deployapi_database_size_bytes") == db_path.stat().st_size > 0
    wal = db_path.with_name(db_path.name + "-wal")
    assert value(families, "deployapi_database_wal_size_bytes") == wal.stat().st_size > 0


def test_a_database_that_cannot_be_read_is_reported_and_the_requests_still_are(start_app, db_path):
    client = Client(start_app())
    client.get("/healthz")
    with sqlite3.connect(db_path) as conn:
        conn.execute("ALTER TABLE deployments RENAME TO deployments_away")
    try:
        families = scrape(client)
    finally:
        with sqlite3.connect(db_path) as conn:
            conn.execute("ALTER TABLE deployments_away RENAME TO deployments")
    assert value(families, "deployapi_database_up") == 0
    assert "deployapi_deployments" not in families
    assert request_counts(families)[("/healthz", "GET", "200")] == 1
    assert value(scrape(client), "deployapi_database_up") == 1


# --- writes ----------------------------------------------------------------------------------------------------

def test_writes_refused_because_another_process_holds_the_lock_are_counted(start_app, db_path):
    client = Client(start_app(busy_timeout_ms=50))
    client.post("/deployments", json=create_body())
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        refused = client.post("/deployments", json=create_body(version="9.9.9"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert refused.status_code == 503 and refused.get_json()["code"] == "database_busy"
    families = scrape(client)
    assert {s.labels["reason"]: s.value for s in families["deployapi_db_busy"].samples} \
        == {**dict.fromkeys(BUSY_REASONS, 0), "sqlite_lock": 1}
    assert request_counts(families)[("/deployments", "POST", "503")] == 1
    # The refused write waited its whole busy timeout, and was never counted as a write that began.
    waits = value(families, "deployapi_db_write_wait_seconds", "deployapi_db_write_wait_seconds_count")
    assert waits == 1


# --- webhooks --------------------------------------------------------------------------------------------------

def test_a_webhook_without_a_deliverer_shows_its_backlog_and_its_age(start_app):
    clock = StepClock()
    hooks = [{"name": "audit", "url": "http://127.0.0.1:9/hooks"},
             {"name": "starts-only", "url": "http://127.0.0.1:9/hooks", "types": ["started"]}]
    client = Client(start_app(config={"webhooks": hooks}, clock=clock))
    families = scrape(client)
    assert value(families, "deployapi_webhook_pending_events", webhook="audit") == 0
    assert value(families, "deployapi_webhook_lag_seconds", webhook="audit") == 0

    deployment = client.post("/deployments", json=create_body()).get_json()
    act(client, deployment["id"], "approve")
    clock.now += timedelta(minutes=5)
    families = scrape(client)
    assert value(families, "deployapi_webhook_pending_events", webhook="audit") == 2
    assert value(families, "deployapi_webhook_pending_events", webhook="starts-only") == 0
    # From the created event (stamped by the clock) to the clock's reading at the scrape.
    lag = value(families, "deployapi_webhook_lag_seconds", webhook="audit")
    assert lag == pytest.approx((clock.now - datetime.fromisoformat(deployment["created_at"])).total_seconds(),
                                abs=0.01)
    assert lag > 300
    assert value(families, "deployapi_webhook_lag_seconds", webhook="starts-only") == 0
    assert value(families, "deployapi_webhook_failed_attempts", webhook="audit") == 0


def test_without_webhooks_there_are_no_webhook_metrics(start_app):
    families = scrape(Client(start_app()))
    assert not [name for name in families if name.startswith("deployapi_webhook_")]


# --- identity --------------------------------------------------------------------------------------------------

def test_with_trusted_identity_metrics_needs_none_as_healthz(start_app):
    client = Client(start_app(trust_remote_user=True))
    assert client.get("/deployments").status_code == 401
    assert client.get("/healthz").status_code == 200
    families = scrape(client)
    assert request_counts(families)[("/deployments", "GET", "401")] == 1


def test_under_a_prefix_metrics_is_under_it_and_routes_are_labelled_without_it(start_app):
    client = Client(start_app())
    client.get("/deployments", base_url="http://localhost/deploy")
    response = client.get("/metrics", base_url="http://localhost/deploy")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    assert request_counts(families) == {("/deployments", "GET", "200"): 1}
