"""``deployapi serve --read-only``, the real process, on copies of a real server's database.

A copy made by ``deployapi backup`` in a directory that refuses every change
answers every GET as the primary did and refuses every write with 503
``read_only``, creating no file and changing no byte; its webhooks are not
delivered. A copy of a live WAL database in such a directory is read with the
commits of its ``-wal``; a replica on the primary's own file sees each commit at
its next request; a missing or older database stops the start-up.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

import pytest
from builders import create_body
from receivers import SECRET, Receiver, webhook_config
from server_process import http_request, run_command

import deployapi
from deployapi import lifecycle

pytestmark = pytest.mark.e2e

CHECKOUT = str(Path(deployapi.__file__).resolve().parent.parent)
APPROVER = "bob@example.com"
# How long a replica is watched for a delivery: a writable server on the same copy sends its first batch at once.
QUIET_SECONDS = 2.0


def checkout_env() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [CHECKOUT, os.environ.get("PYTHONPATH")]))}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def receiver():
    started = Receiver()
    yield started
    started.stop()


def hooks_file(path: Path, url: str) -> Path:
    """A configuration file with one webhook, ``audit``, to ``url``."""
    path.write_text(webhook_config({"name": "audit", "url": url, "secret": SECRET}), encoding="utf-8")
    return path


@pytest.fixture
def primary(tmp_path, start_server):
    """A server with a deployment in each status an action starts from; ``ids`` by status.

    Its database holds the position of a webhook ``audit`` registered before the first event and never
    attempted since (a first start with it configured, a second without), so in every copy each event is
    due for delivery now.
    """
    live = tmp_path / "live" / "deployapi.db"
    live.parent.mkdir()
    config = hooks_file(tmp_path / "primary.toml", "http://127.0.0.1:9/hooks")
    assert start_server("--db", str(live), "--config", str(config), env=checkout_env()).stop() == 0
    server = start_server("--db", str(live), env=checkout_env())
    server.db = live
    server.ids = {}
    steps = {lifecycle.PENDING_APPROVAL: (), lifecycle.APPROVED: ("approve",),
             lifecycle.STARTED: ("approve", "start"), lifecycle.SUCCEEDED: ("approve", "start", "succeed")}
    for status, actions in steps.items():
        status_code, _, body = server.request("POST", "/deployments", create_body(version=f"1.0.{len(server.ids)}"))
        assert status_code == 201, body
        server.ids[status] = body["id"]
        for action in actions:
            assert server.request("POST", f"/deployments/{body['id']}/{action}",
                                  {"actor": APPROVER, "note": "ok"})[0] == 200
    return server


def read_paths(ids: dict[str, str]) -> list[str]:
    """One request for each GET endpoint of the API (GET /metrics is compared apart)."""
    deployment = ids[lifecycle.SUCCEEDED]
    now = datetime.now(timezone.utc)
    window = urlencode({"since": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "until": (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")})
    return ["/deployments", "/deployments?limit=2", f"/deployments/{deployment}",
            f"/deployments/{deployment}/events", f"/deployments/{deployment}/events?format=cdevents",
            "/events", "/events?format=cdevents", "/events/head", "/environments", f"/metrics/dora?{window}",
            "/policy", "/healthz", "/openapi.json"]


def write_requests(ids: dict[str, str]) -> list[tuple[str, dict]]:
    """Every write the API has, each one the primary would accept."""
    writes = [("/deployments", create_body(version="9.9.9"))]
    for action, transition in lifecycle.TRANSITIONS.items():
        status = next(status for status in ids if status in transition.from_statuses)
        writes.append((f"/deployments/{ids[status]}/{action}", {"actor": APPROVER, "note": "because"}))
    return writes


def test_a_replica_on_a_backup_in_a_read_only_directory_serves_reads_refuses_writes_and_delivers_nothing(
        tmp_path, primary, start_server, receiver, read_only_directory):
    paths = read_paths(primary.ids)
    expected = {path: primary.request("GET", path) for path in paths}
    copy = tmp_path / "replica" / "deployapi.db"
    copy.parent.mkdir()
    backup = run_command("backup", "--db", str(primary.db), str(copy), cwd=tmp_path, env=checkout_env())
    assert backup.returncode == 0, backup.stdout + backup.stderr
    read_only_directory(copy.parent)
    before = digest(copy)
    # The replica's webhook goes to a receiver that answers: were anything delivered, it would arrive.
    config = hooks_file(tmp_path / "replica.toml", receiver.url)
    replica = start_server("--read-only", "--db", str(copy), "--config", str(config), "--metrics",
                           env=checkout_env())

    for path in paths:
        status, _, body = replica.request("GET", path)
        assert (status, body) == (expected[path][0], expected[path][2]), path
        assert status == 200
    status, _, webhooks = replica.request("GET", "/webhooks")
    [hook] = webhooks["items"]
    assert (status, hook["name"], hook["delivered_through"], hook["pending"]) == (200, "audit", 0, 10)
    status, headers, text = http_request("GET", replica.url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert b'deployapi_deployments{status="succeeded"} 1\n' in text

    for path, body in write_requests(primary.ids):
        for key in (None, f"key-{path}"):
            status, headers, problem = replica.request("POST", path, body,
                                                       headers={"Idempotency-Key": key} if key else None)
            assert (status, problem["code"], headers["Content-Type"]) == (
                503, "read_only", "application/problem+json"), (path, problem)
            assert "Retry-After" not in headers
    assert replica.request("GET", "/events/head")[2] == expected["/events/head"][2]

    time.sleep(QUIET_SECONDS)
    assert receiver.arrivals == []
    assert replica.stop() == 0
    assert "read-only: no webhook is delivered" in replica.stderr_text
    assert files_in(copy.parent) == ["deployapi.db"]
    assert digest(copy) == before

    # The control: a writable server on the same bytes with the same configuration delivers the ten events at once.
    writable = tmp_path / "writable" / "deployapi.db"
    writable.parent.mkdir()
    shutil.copy(copy, writable)
    start_server("--db", str(writable), "--config", str(config), env=checkout_env())
    assert len(receiver.wait_for(10, timeout=QUIET_SECONDS * 5)) == 10


def test_a_copy_of_a_live_wal_database_in_a_read_only_directory_is_served_with_the_commits_of_its_wal(
        tmp_path, primary, start_server, read_only_directory):
    assert primary.db.with_name("deployapi.db-wal").stat().st_size > 0  # no checkpoint yet: the events are there
    copy = tmp_path / "cp" / "deployapi.db"
    copy.parent.mkdir()
    for suffix in ("", "-wal"):
        shutil.copy(f"{primary.db}{suffix}", f"{copy}{suffix}")
    read_only_directory(copy.parent)
    before = {name: digest(copy.parent / name) for name in files_in(copy.parent)}
    replica = start_server("--read-only", "--db", str(copy), env=checkout_env())
    assert replica.request("GET", "/events/head")[2] == primary.request("GET", "/events/head")[2]
    assert len(replica.request("GET", "/deployments")[2]["items"]) == 4
    assert replica.request("POST", "/deployments", create_body())[0] == 503
    assert replica.stop() == 0
    assert "read without locks, as a copy nothing writes to" in replica.stderr_text
    assert {name: digest(copy.parent / name) for name in files_in(copy.parent)} == before


def test_a_replica_on_the_primary_s_own_file_serves_each_commit_at_its_next_request(primary, start_server):
    replica = start_server("--read-only", "--db", str(primary.db), env=checkout_env())
    assert len(replica.request("GET", "/deployments")[2]["items"]) == 4
    status, _, created = primary.request("POST", "/deployments", create_body(version="5.0.0"))
    assert status == 201
    assert replica.request("GET", f"/deployments/{created['id']}")[0] == 200
    assert replica.request("GET", "/events/head")[2] == primary.request("GET", "/events/head")[2]
    assert replica.stop() == 0
    # The primary goes on writing after the replica stopped, and its file passes every check.
    assert primary.request("POST", "/deployments", create_body(version="5.0.1"))[0] == 201
    assert primary.stop() == 0
    check = run_command("check", "--db", str(primary.db), cwd=primary.db.parent, env=checkout_env())
    assert check.returncode == 0, check.stdout
    assert check.stdout.splitlines()[-1].endswith("6 deployments, 12 events; all checks passed")


def test_a_missing_database_stops_the_start_up_and_nothing_is_created(tmp_path):
    result = run_command("serve", "--read-only", "--port", "0", "--db", str(tmp_path / "missing.db"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (f"deployapi: no database at {str(tmp_path / 'missing.db')!r} (missing or empty file), "
                             "and read-only is set: a read-only server serves an existing database and creates "
                             "nothing\n")
    assert list(tmp_path.iterdir()) == []


def test_a_database_at_an_older_schema_stops_the_start_up_unchanged(tmp_path, primary):
    assert primary.stop() == 0
    old = tmp_path / "old.db"
    shutil.copy(primary.db, old)
    conn = sqlite3.connect(old)
    conn.execute("PRAGMA user_version = 8")  # what the version number alone decides
    conn.close()
    before = digest(old)
    result = run_command("serve", "--read-only", "--port", "0", "--db", str(old), cwd=tmp_path)
    assert result.returncode == 2
    assert "is at schema version 8 and this deployapi serves version 9; a read-only server upgrades nothing" \
        in result.stderr
    assert digest(old) == before


def test_a_replica_with_two_workers_serves_refuses_writes_and_writes_nothing_at_its_stop(tmp_path, primary,
                                                                                         start_server):
    # A cp'd WAL copy in a writable directory: a checkpoint at the stop would change the file's bytes.
    copy = tmp_path / "workers" / "deployapi.db"
    copy.parent.mkdir()
    for suffix in ("", "-wal"):
        shutil.copy(f"{primary.db}{suffix}", f"{copy}{suffix}")
    before = digest(copy)
    replica = start_server("--read-only", "--workers", "2", "--db", str(copy), env=checkout_env())
    head = primary.request("GET", "/events/head")[2]
    for _ in range(20):
        assert replica.request("GET", "/events/head")[2] == head
        status, _, problem = replica.request("POST", "/deployments", create_body())
        assert (status, problem["code"]) == (503, "read_only")
    assert replica.stop() == 0
    assert digest(copy) == before
