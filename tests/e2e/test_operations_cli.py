"""Operating the real process: check, backup while serving, logs, and a graceful stop."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time

import pytest
from builders import create_body
from server_process import run_command

pytestmark = pytest.mark.e2e


def test_check_passes_on_a_served_database_and_fails_with_the_ids_on_a_tampered_one(tmp_path, start_server):
    db = tmp_path / "live.db"
    server = start_server("--db", str(db))
    _, _, created = server.request("POST", "/deployments", create_body())
    server.request("POST", f"/deployments/{created['id']}/approve", {"actor": "bob"})
    result = run_command("check", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert "all checks passed" in result.stdout

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE deployments SET status = 'succeeded' WHERE id = ?", (created["id"],))
    result = run_command("check", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 1
    assert f"FAILED  status and updated_at match the last event: 1 — {created['id']}" in result.stdout


def test_check_against_a_published_head_catches_a_copy_that_ends_earlier(tmp_path, start_server):
    db = tmp_path / "live.db"
    server = start_server("--db", str(db))
    server.request("POST", "/deployments", create_body())
    assert run_command("backup", "--db", str(db), str(tmp_path / "older.db"), cwd=tmp_path).returncode == 0
    server.request("POST", "/deployments", create_body(version="2.0"))
    head = server.request("GET", "/events/head")[2]
    anchor = f"{head['id']}:{head['hash']}"
    assert run_command("check", "--db", str(db), "--expect-head", anchor, cwd=tmp_path).returncode == 0
    result = run_command("check", "--db", str(tmp_path / "older.db"), "--expect-head", anchor, cwd=tmp_path)
    assert result.returncode == 1 and "the history ends at event 1, before event 2" in result.stdout
    bad = run_command("check", "--db", str(db), "--expect-head", "2:nothex", cwd=tmp_path)
    assert bad.returncode == 2 and "--expect-head" in bad.stderr


def test_check_from_a_recorded_head_passes_catches_later_tampering_and_refuses_bad_heads(tmp_path, start_server):
    db = tmp_path / "live.db"
    server = start_server("--db", str(db))
    server.request("POST", "/deployments", create_body())
    recorded = server.request("GET", "/events/head")[2]
    _, _, created = server.request("POST", "/deployments", create_body(version="2.0"))
    latest = server.request("GET", "/events/head")[2]
    from_head = f"{recorded['id']}:{recorded['hash']}"
    result = run_command("check", "--db", str(db), "--from-head", from_head,
                         "--expect-head", f"{latest['id']}:{latest['hash']}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert "scope   checked from event 1: the 1 events after it, and the 1 deployments" in result.stdout

    wrong = run_command("check", "--db", str(db), "--from-head", f"{recorded['id']}:{'0' * 64}", cwd=tmp_path)
    assert wrong.returncode == 1 and f"event 1 has the hash {recorded['hash']}, not the recorded" in wrong.stdout
    assert run_command("check", "--db", str(db), "--from-head", "1:nothex", cwd=tmp_path).returncode == 2
    early = run_command("check", "--db", str(db), "--from-head", f"{latest['id']}:{latest['hash']}",
                        "--expect-head", from_head, cwd=tmp_path)
    assert early.returncode == 2 and "is before --from-head" in early.stderr

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE deployments SET status = 'succeeded' WHERE id = ?", (created["id"],))
    result = run_command("check", "--db", str(db), "--from-head", from_head, cwd=tmp_path)
    assert result.returncode == 1
    assert f"FAILED  status and updated_at match the last event: 1 — {created['id']}" in result.stdout


def test_check_of_a_missing_file_is_exit_2_and_creates_nothing(tmp_path):
    result = run_command("check", "--db", str(tmp_path / "none.db"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"deployapi check: cannot read {str(tmp_path / 'none.db')!r}: no such file\n"
    assert not (tmp_path / "none.db").exists()


def test_backup_while_the_server_takes_writes_gives_a_checked_copy(tmp_path, start_server):
    db = tmp_path / "live.db"
    server = start_server("--db", str(db), "--threads", "4")
    stop = threading.Event()
    acknowledged = []

    def write():
        while not stop.is_set():
            status, _, body = server.request("POST", "/deployments", create_body())
            assert status == 201
            acknowledged.append(body["id"])

    writers = [threading.Thread(target=write) for _ in range(3)]
    for w in writers:
        w.start()
    try:
        time.sleep(0.3)
        result = run_command("backup", "--db", str(db), str(tmp_path / "copy.db"), cwd=tmp_path)
        time.sleep(0.2)
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout
    with sqlite3.connect(tmp_path / "copy.db") as conn:
        copied = conn.execute("SELECT count(*) FROM deployments").fetchone()[0]
    assert 0 < copied <= len(acknowledged)
    assert run_command("backup", "--db", str(db), str(tmp_path / "copy.db"), cwd=tmp_path).returncode == 2


def test_sigterm_lets_a_request_in_progress_finish(tmp_path, start_server):
    db = tmp_path / "drain.db"
    server = start_server("--db", str(db))
    # Hold SQLite's write lock from outside, so a create waits inside the server.
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    outcome = {}

    def create():
        outcome["status"], _, outcome["body"] = server.request("POST", "/deployments", create_body())

    request = threading.Thread(target=create)
    request.start()
    time.sleep(0.5)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    blocker.execute("COMMIT")
    blocker.close()
    request.join(10)
    assert outcome.get("status") == 201
    # It stops on the one SIGTERM; a second one (stop() would send it to a
    # process still exiting) could land after Python restored the default
    # handler and report the exit as death by signal.
    assert server.process.wait(15) == 0
    server.stop()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT id FROM deployments").fetchone()[0] == outcome["body"]["id"]


def test_every_request_is_logged_once_with_its_request_id(tmp_path, start_server):
    server = start_server("--log-format", "json")
    status, headers, _ = server.request("GET", "/healthz", headers={"X-Request-ID": "trace-abc-123"})
    assert status == 200 and headers["X-Request-ID"] == "trace-abc-123"
    _, headers, _ = server.request("GET", "/deployments/nope")
    generated = headers["X-Request-ID"]
    assert len(generated) == 32
    server.stop()
    records = [json.loads(line) for line in server.stderr_text.splitlines() if line.startswith("{")]
    access = [r for r in records if r["logger"] == "deployapi.access"]
    assert [(r["method"], r["path"], r["status"], r["request_id"]) for r in access] == [
        ("GET", "/healthz", 200, "trace-abc-123"), ("GET", "/deployments/nope", 404, generated)]
    assert all(r["duration_ms"] >= 0 for r in access)


def test_text_logs_and_level(tmp_path, start_server):
    server = start_server("--log-level", "warning")
    server.request("GET", "/healthz")
    server.stop()
    assert "deployapi.access" not in server.stderr_text
    verbose = start_server("--log-level", "info")
    verbose.request("GET", "/healthz")
    verbose.stop()
    assert "deployapi.access: GET /healthz 200" in verbose.stderr_text


@pytest.mark.parametrize("location", ["/proc/deployapi.db", "/proc/self/nope/deployapi.db", "."],
                         ids=["read-only file system", "missing directory", "a directory"])
def test_an_unusable_database_location_is_a_one_line_error(tmp_path, location):
    # Tests run as root in CI, so file modes cannot make a location unwritable;
    # /proc is read-only for everyone.
    result = run_command("serve", "--port", "0", "--db", location, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "database" in result.stderr


def test_check_of_a_file_that_is_not_a_deployapi_database_is_exit_2(tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (text)")
    (tmp_path / "text.db").write_text("plain text, not SQLite\n" * 100)
    for path in (other, tmp_path / "text.db"):
        result = run_command("check", "--db", str(path), cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


def test_check_and_backup_read_deployapi_db_from_the_environment(tmp_path, start_server):
    db = tmp_path / "env.db"
    server = start_server("--db", str(db))
    server.request("POST", "/deployments", create_body())
    env = {"DEPLOYAPI_DB": str(db)}
    assert run_command("check", cwd=tmp_path, env=env).returncode == 0
    assert run_command("backup", str(tmp_path / "copy.db"), cwd=tmp_path, env=env).returncode == 0
    assert not (tmp_path / "deployapi.db").exists()


def test_a_failed_backup_leaves_no_partial_file(tmp_path):
    (tmp_path / "text.db").write_text("plain text, not SQLite\n" * 100)
    result = run_command("backup", "--db", str(tmp_path / "text.db"), str(tmp_path / "copy.db"), cwd=tmp_path)
    assert result.returncode == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.db"]


def test_an_unresolvable_host_is_a_one_line_error(tmp_path):
    result = run_command("serve", "--host", "no-such-host.invalid", "--port", "0", "--db", str(tmp_path / "x.db"),
                         cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "cannot listen on no-such-host.invalid" in result.stderr


def test_serve_shortens_the_gil_switch_interval_for_its_own_process(tmp_path, monkeypatch):
    # In-process, with the interpreter-wide calls recorded rather than made,
    # so the test process keeps its own logging and switch interval.
    from deployapi import cli, logs

    intervals: list[float] = []
    monkeypatch.setattr(cli.sys, "setswitchinterval", intervals.append)
    monkeypatch.setattr(logs, "configure", lambda *args: None)
    status = cli.main(["serve", "--host", "no-such-host.invalid", "--port", "0", "--db", str(tmp_path / "x.db")])
    assert status == 1  # stopped at the unresolvable host, after tuning the interpreter
    assert intervals == [cli.GIL_SWITCH_INTERVAL] and cli.GIL_SWITCH_INTERVAL < 0.005
