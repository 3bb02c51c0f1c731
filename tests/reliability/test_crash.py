"""Crash safety: SIGKILL the real server mid-burst and prove no acknowledged write was lost.

Run alone with ``pytest -m crash``.
"""

from __future__ import annotations

import http.client
import signal
import sqlite3
import threading
import time
import urllib.error
from dataclasses import dataclass, field

import pytest
from builders import create_body
from server_process import run_command

pytestmark = [pytest.mark.reliability, pytest.mark.crash]

CLIENTS = 6
# Seconds into the burst at which the server is killed: early, mid, late.
KILL_POINTS = [0.2, 0.5, 0.9, 1.4]


@dataclass
class Ledger:
    """What the clients were told, from which durability is judged."""

    created: dict[str, dict] = field(default_factory=dict)  # id -> body answered with 201
    acted: list[tuple[str, str]] = field(default_factory=list)  # (id, event type) answered with 200
    refused_creates: list[str] = field(default_factory=list)  # versions answered with 422
    refused_rejects: list[str] = field(default_factory=list)  # ids whose reject got 409
    in_doubt: int = 0  # requests cut off by the kill: either outcome is allowed
    surprises: list[str] = field(default_factory=list)  # answers the clients did not expect
    lock: threading.Lock = field(default_factory=threading.Lock)


def client_loop(server, ledger: Ledger, client: int, stop: threading.Event) -> None:
    n = 0
    try:
        while not stop.is_set():
            n += 1
            # A request the API must refuse: it may never show up after the crash.
            bad_version = f"refused-{client}-{n}"
            status, _, _ = server.request("POST", "/deployments",
                                          create_body(environment="production", risk=None, version=bad_version))
            assert status == 422, status
            with ledger.lock:
                ledger.refused_creates.append(bad_version)

            body = create_body(version=f"ok-{client}-{n}", requester=f"dev-{client}")
            status, _, created = server.request("POST", "/deployments", body)
            assert status == 201, status
            with ledger.lock:
                ledger.created[created["id"]] = created
            for action, note, event in (("approve", None, "approved"), ("start", None, "started"),
                                        ("succeed" if n % 2 else "fail", "done", "succeeded" if n % 2 else "failed")):
                status, _, _ = server.request("POST", f"/deployments/{created['id']}/{action}",
                                              {"actor": f"ops-{client}", "note": note})
                assert status == 200, (action, status)
                with ledger.lock:
                    ledger.acted.append((created["id"], event))
                if action == "approve":
                    # Refused: the deployment is no longer pending, so no rejected event may ever exist.
                    status, _, _ = server.request("POST", f"/deployments/{created['id']}/reject",
                                                  {"actor": "x", "note": "late"})
                    assert status == 409, ("reject", status)
                    with ledger.lock:
                        ledger.refused_rejects.append(created["id"])
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        with ledger.lock:
            ledger.in_doubt += 1  # the server died under this request
    except AssertionError as error:
        with ledger.lock:
            ledger.surprises.append(repr(error))


@pytest.mark.parametrize("kill_after", KILL_POINTS, ids=[f"kill-at-{t}s" for t in KILL_POINTS])
def test_sigkill_mid_burst_loses_no_acknowledged_write(tmp_path, start_server, kill_after):
    db = tmp_path / "crash.db"
    server = start_server("--db", str(db), "--threads", "4")
    ledger = Ledger()
    stop = threading.Event()
    clients = [threading.Thread(target=client_loop, args=(server, ledger, c, stop)) for c in range(CLIENTS)]
    for c in clients:
        c.start()
    time.sleep(kill_after)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    stop.set()
    for c in clients:
        c.join(15)
    assert not ledger.surprises, ledger.surprises
    assert ledger.created, "the burst acknowledged nothing before the kill; raise the kill point"

    restarted = start_server("--db", str(db))
    with sqlite3.connect(db) as conn:
        rows = {r[0]: r for r in conn.execute("SELECT id, version, status FROM deployments")}
        events = set(conn.execute("SELECT deployment_id, type FROM deployment_events"))
        refused = conn.execute(
            "SELECT count(*) FROM deployments WHERE version LIKE 'refused-%'").fetchone()[0]
        rejected = conn.execute("SELECT count(*) FROM deployment_events WHERE type = 'rejected'").fetchone()[0]

    # Every 2xx is durable ...
    missing = [i for i in ledger.created if i not in rows]
    assert not missing, f"{len(missing)} acknowledged creates lost"
    for deployment_id, created in ledger.created.items():
        assert rows[deployment_id][1] == created["version"]
    lost_actions = [a for a in ledger.acted if a not in events]
    assert not lost_actions, f"acknowledged actions lost: {lost_actions[:5]}"
    # ... and nothing that was refused appears.
    assert refused == 0 and rejected == 0
    # State and history agree, and the server takes writes again.
    result = run_command("check", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert restarted.request("POST", "/deployments", create_body())[0] == 201
