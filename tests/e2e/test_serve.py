"""The real ``deployapi serve`` process: HTTP, restarts, configuration and failures."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
from urllib.parse import urlsplit

import pytest
from builders import create_body
from server_process import run_command

pytestmark = pytest.mark.e2e


def test_data_survives_a_sigterm_and_restart_on_the_same_file(tmp_path, start_server):
    db = tmp_path / "data" / "deployapi.db"
    db.parent.mkdir()
    server = start_server("--db", str(db))
    status, headers, created = server.request("POST", "/deployments", create_body())
    assert status == 201 and headers["Location"] == f"/deployments/{created['id']}"
    status, _, approved = server.request("POST", f"/deployments/{created['id']}/approve", {"actor": "bob"})
    assert status == 200
    assert server.stop(signal.SIGTERM) == 0

    restarted = start_server("--db", str(db))
    status, _, fetched = restarted.request("GET", f"/deployments/{created['id']}")
    assert status == 200 and fetched == approved
    _, _, events = restarted.request("GET", f"/deployments/{created['id']}/events")
    assert [e["type"] for e in events["items"]] == ["created", "approved"]
    assert restarted.stop(signal.SIGINT) == 0


def test_a_clean_stop_leaves_only_the_database_file(tmp_path, start_server):
    db = tmp_path / "deployapi.db"
    server = start_server("--db", str(db))
    assert server.request("POST", "/deployments", create_body())[0] == 201
    for _ in range(6):  # reads spread over the worker threads
        assert server.request("GET", "/deployments?limit=1")[0] == 200
    assert server.stop(signal.SIGTERM) == 0
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("deployapi.db")) == ["deployapi.db"]


def test_the_default_database_is_deployapi_db_in_the_working_directory(tmp_path, start_server):
    server = start_server(cwd=tmp_path)
    assert server.request("POST", "/deployments", create_body())[0] == 201
    assert (tmp_path / "deployapi.db").is_file()
    assert "127.0.0.1" in server.url


def test_environment_variables_configure_the_server_and_flags_override_them(tmp_path, start_server):
    env = {"DEPLOYAPI_DB": str(tmp_path / "env.db"), "DEPLOYAPI_PORT": "0", "DEPLOYAPI_THREADS": "2",
           "DEPLOYAPI_PRODUCTION_ENVIRONMENTS": "prod,live"}
    server = start_server(env=env)
    assert "env.db" in server.first_line and "2 threads" in server.first_line
    assert server.request("POST", "/deployments", create_body(environment="live", risk=None))[0] == 422
    assert server.request("POST", "/deployments", create_body(environment="production", risk=None))[0] == 201

    overridden = start_server("--db", str(tmp_path / "flag.db"), "--production-environments", "production", env=env)
    assert "flag.db" in overridden.first_line
    assert overridden.request("POST", "/deployments", create_body(environment="live", risk=None))[0] == 201


def test_every_status_of_the_contract_is_served_over_real_http(start_server):
    server = start_server()
    status, _, body = server.request("GET", "/healthz")
    assert (status, body) == (200, {"status": "ok"})
    assert server.request("GET", "/nowhere")[0] == 404
    status, headers, body = server.request("DELETE", "/deployments")
    assert status == 405 and "POST" in headers["Allow"] and body["code"] == "method_not_allowed"
    assert server.request("POST", "/deployments", {"service": "x"})[0] == 422
    status, headers, _ = server.request("POST", "/deployments", {}, headers={"Content-Type": "text/plain"})
    assert status == 415 and headers["Content-Type"] == "application/problem+json"


def test_a_chunked_body_over_64_kib_is_refused_with_413(start_server):
    server = start_server()
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    chunks = [b'{"rollback_plan": "'] + [b"x" * 8192] * 9 + [b'"}']
    conn.request("POST", "/deployments", body=iter(chunks), encode_chunked=True,
                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["code"] == "payload_too_large"
    conn.close()


def test_simultaneous_approvals_through_the_server_have_one_winner(start_server):
    server = start_server("--threads", "8")
    _, _, created = server.request("POST", "/deployments", create_body(requester="alice"))
    barrier = threading.Barrier(12)
    statuses = []

    def approve(n):
        barrier.wait()
        statuses.append(server.request("POST", f"/deployments/{created['id']}/approve", {"actor": f"r{n}"})[0])

    threads = [threading.Thread(target=approve, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [409] * 11
    _, _, events = server.request("GET", f"/deployments/{created['id']}/events")
    assert [e["type"] for e in events["items"]] == ["created", "approved"]


def test_a_port_in_use_is_a_one_line_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_command("serve", "--port", str(port), "--db", str(tmp_path / "x.db"), cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_a_file_that_is_not_a_database_is_a_one_line_error(tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not a database\n" * 200)
    result = run_command("serve", "--port", "0", "--db", str(bogus), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "cannot use database" in result.stderr


def test_invalid_settings_are_one_line_errors(tmp_path):
    for args, message in ((["--port", "http"], "--port"), (["--threads", "0"], "--threads"),
                          (["--production-environments", "Prod"], "--production-environments"),
                          (["--remote-user-header", "X-User"], "--remote-user-header")):
        result = run_command("serve", *args, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_trusted_proxy_header_names_the_actor_over_real_http(start_server):
    server = start_server("--trust-remote-user", "--remote-user-header", "X-Remote-User")
    status, _, created = server.request("POST", "/deployments", create_body(requester=None),
                                        headers={"X-Remote-User": "alice"})
    assert status == 201 and created["requester"] == "alice"
    status, _, body = server.request("POST", f"/deployments/{created['id']}/approve", {},
                                     headers={"X-Remote-User": "alice"})
    assert status == 403 and body["code"] == "self_approval"
    assert server.request("GET", "/deployments")[0] == 401
    assert server.request("GET", "/healthz")[0] == 200


def test_a_retried_create_over_real_http_is_written_once(start_server):
    server = start_server()
    key = {"Idempotency-Key": "deploy-42-attempt"}
    first = server.request("POST", "/deployments", create_body(), headers=key)
    second = server.request("POST", "/deployments", create_body(), headers=key)
    assert first[0] == second[0] == 201 and first[2] == second[2]
    assert second[1]["Idempotent-Replayed"] == "true"
    assert len(server.request("GET", "/deployments")[2]["items"]) == 1
