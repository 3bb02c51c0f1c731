"""``deployapi serve --workers 2``: two real processes on one socket and one database file.

Requests land on both workers; writes racing from many clients across them lose
nothing and keep the chain valid; an idempotency key and an exclusive start race
across processes as they do across threads; each event reaches a webhook once, in
order; a killed worker is replaced; SIGTERM stops them all and leaves only the file.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from builders import create_body
from receivers import SECRET, Receiver, webhook_config
from server_process import run_command, wait_until

pytestmark = pytest.mark.e2e

DB = "deployapi.db"
ACCESS_LINE = re.compile(r" INFO deployapi\.access\[(\d+)\]: \S+ \S+ \d{3} \S+ request_id=(\S+)$", re.MULTILINE)


def workers_of(server) -> set[int]:
    """The pids of the server's worker processes (its children)."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(child) for child in children}


def answered_by(server) -> dict[str, int]:
    """Which process answered each request, by request id, from the access log."""
    return {request_id: int(pid) for pid, request_id in ACCESS_LINE.findall(server.stderr_text)}


@pytest.fixture
def two_workers(start_server, tmp_path):
    def start(*args: str):
        server = start_server("--db", str(tmp_path / DB), "--workers", "2", *args)
        assert wait_until(lambda: len(workers_of(server)) == 2), server.stderr_text
        return server

    return start


def create(server, **overrides) -> dict:
    status, _, body = server.request("POST", "/deployments", create_body(**overrides))
    assert status == 201, body
    return body


def test_two_workers_each_answer_requests_with_connections_of_their_own(two_workers):
    server = two_workers()
    assert "2 workers, 4 threads each" in server.first_line

    def get(index: int) -> int:
        return server.request("GET", "/healthz", headers={"X-Request-ID": f"probe-{index}"})[0]

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(get, range(80))) == {200}
    assert wait_until(lambda: len([rid for rid in answered_by(server) if rid.startswith("probe-")]) == 80)
    pids = {pid for rid, pid in answered_by(server).items() if rid.startswith("probe-")}
    assert pids == workers_of(server)
    assert server.process.pid not in pids


def test_creates_and_approves_from_many_clients_across_workers_lose_no_event_and_keep_the_chain(
        two_workers, tmp_path):
    server = two_workers()

    def one(index: int) -> str:
        deployment = create(server, version=f"1.0.{index}")
        status, _, body = server.request("POST", f"/deployments/{deployment['id']}/approve", {"actor": "bob"})
        assert status == 200, body
        return deployment["id"]

    with ThreadPoolExecutor(12) as pool:
        ids = list(pool.map(one, range(120)))

    assert len(set(ids)) == 120
    status, _, page = server.request("GET", "/events?after=0&limit=1000")
    assert status == 200
    events = page["items"]
    assert [event["id"] for event in events] == list(range(1, 241))
    by_deployment: dict[str, list[str]] = {}
    for event in events:
        by_deployment.setdefault(event["deployment_id"], []).append(event["type"])
    assert by_deployment == {deployment_id: ["created", "approved"] for deployment_id in ids}
    assert len({pid for pid in answered_by(server).values()}) == 2
    assert server.stop() == 0
    checked = run_command("check", "--db", str(tmp_path / DB), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_one_idempotency_key_raced_across_workers_makes_one_deployment(two_workers):
    server = two_workers()
    barrier = threading.Barrier(12)

    def post(_: int):
        barrier.wait()
        return server.request("POST", "/deployments", create_body(version="7.7.7"),
                              headers={"Idempotency-Key": "ci-run-42-create"})

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(post, range(12)))

    assert {status for status, _, _ in answers} == {201}
    assert len({body["id"] for _, _, body in answers}) == 1
    assert sum(1 for _, headers, _ in answers if headers.get("Idempotent-Replayed") == "true") == 11
    _, _, listing = server.request("GET", "/deployments?version=7.7.7")
    assert len(listing["items"]) == 1


def test_of_starts_raced_across_workers_on_an_exclusive_environment_exactly_one_wins(two_workers, tmp_path):
    config = tmp_path / "policy.toml"
    config.write_text("[environments.production]\nproduction = true\nexclusive = true\n", encoding="utf-8")
    server = two_workers("--config", str(config))
    for round_number in range(3):
        ids = []
        for index in range(6):
            deployment = create(server, environment="production", risk="low",
                                version=f"{round_number}.{index}")
            assert server.request("POST", f"/deployments/{deployment['id']}/approve", {"actor": "bob"})[0] == 200
            ids.append(deployment["id"])
        barrier = threading.Barrier(len(ids))

        def start(deployment_id: str, barrier: threading.Barrier = barrier) -> int:
            barrier.wait()
            return server.request("POST", f"/deployments/{deployment_id}/start", {"actor": "bob"})[0]

        with ThreadPoolExecutor(len(ids)) as pool:
            statuses = list(pool.map(start, ids))
        assert sorted(statuses) == [200] + [409] * 5
        winner = ids[statuses.index(200)]
        assert server.request("POST", f"/deployments/{winner}/succeed", {"actor": "bob"})[0] == 200


def test_each_event_reaches_a_webhook_once_in_order_with_two_workers(two_workers, tmp_path):
    with Receiver() as receiver:
        config = tmp_path / "hooks.toml"
        config.write_text(webhook_config({"name": "audit", "url": receiver.url, "secret": SECRET}),
                          encoding="utf-8")
        server = two_workers("--config", str(config))

        def one(index: int) -> None:
            deployment = create(server, version=f"2.0.{index}")
            assert server.request("POST", f"/deployments/{deployment['id']}/approve", {"actor": "bob"})[0] == 200

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(40)))
        receiver.wait_for(80, timeout=30)
        time.sleep(0.5)  # time enough for a duplicate to arrive, if one were sent
        ids = [arrival.document["event"]["id"] for arrival in receiver.arrivals]
        assert ids == list(range(1, 81))
        assert all(arrival.verified and arrival.answered == 204 for arrival in receiver.arrivals)
        assert server.stderr_text.count("webhooks: delivering to 1 webhook(s)") == 1


def test_a_killed_worker_is_replaced_and_the_others_go_on_serving(two_workers):
    server = two_workers()
    before = workers_of(server)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    assert wait_until(lambda: len(workers_of(server) - before) == 1, timeout=10), server.stderr_text
    assert victim not in workers_of(server)
    assert f"(pid {victim}) was killed by signal 9 (SIGKILL)" in server.stderr_text
    assert wait_until(lambda: " serving" in server.stderr_text.split("SIGKILL", 1)[1])
    for index in range(10):
        create(server, version=f"3.0.{index}")


def test_sigterm_stops_every_worker_and_leaves_only_the_database_file(two_workers, tmp_path):
    server = two_workers()
    pids = workers_of(server)
    for index in range(20):
        create(server, version=f"4.0.{index}")
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(DB)) != [DB]

    assert server.stop(signal.SIGTERM) == 0

    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(DB)) == [DB]
    assert server.process.stdout.closed


@pytest.mark.parametrize(("args", "env", "message"), [
    pytest.param(("--workers", "0"), {}, "deployapi: --workers: 0 is outside 1-64", id="zero"),
    pytest.param(("--workers", "abc"), {}, "deployapi: --workers: 'abc' is not a whole number", id="not-a-number"),
    pytest.param((), {"DEPLOYAPI_WORKERS": "65"}, "deployapi: DEPLOYAPI_WORKERS: 65 is outside 1-64", id="too-many"),
    pytest.param(("--workers", "2", "--metrics"), {}, "deployapi: --metrics cannot be used with --workers above 1",
                 id="with-metrics"),
])
def test_a_bad_number_of_workers_is_refused_before_anything_is_created(tmp_path, args, env, message):
    result = run_command("serve", "--port", "0", "--db", str(tmp_path / DB), *args, cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert not (tmp_path / DB).exists()
