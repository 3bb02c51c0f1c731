"""GET /metrics from the real ``deployapi serve``: switched on by flag or variable, exact under waitress's threads."""

from __future__ import annotations

import threading

import pytest
from builders import create_body
from prometheus_client.parser import text_string_to_metric_families
from server_process import http_request

pytestmark = pytest.mark.e2e


def scrape(server) -> dict:
    status, headers, body = http_request("GET", server.url + "/metrics")
    assert status == 200 and headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def test_requests_from_many_connections_at_once_are_all_counted(start_server):
    server = start_server("--metrics", "--threads", "4")
    clients, each = 6, 40
    failures: list[object] = []

    def client(number: int) -> None:
        for i in range(each):
            if i % 4 == 0:
                status = server.request("POST", "/deployments", create_body(version=f"{number}.{i}"))[0]
                expected = 201
            else:
                status, expected = server.request("GET", "/healthz")[0], 200
            if status != expected:
                failures.append(status)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    families = scrape(server)
    counts = {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value
              for s in families["deployapi_http_requests"].samples}
    assert counts == {("/healthz", "GET", "200"): clients * each * 3 / 4,
                      ("/deployments", "POST", "201"): clients * each / 4}
    pending = [s.value for s in families["deployapi_deployments"].samples if s.labels["status"] == "pending_approval"]
    assert pending == [clients * each / 4]


def test_the_variable_switches_metrics_on_and_without_it_metrics_is_404(start_server):
    assert http_request("GET", start_server("--db", "off.db").url + "/metrics")[0] == 404
    families = scrape(start_server("--db", "on.db", env={"DEPLOYAPI_METRICS": "true"}))
    assert [s.value for s in families["deployapi_database_up"].samples] == [1]
