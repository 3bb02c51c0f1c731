"""How fast a backlog of events drains to one webhook with a fast receiver, by ``deployapi relay`` and by
``deployapi serve`` (whose deliverer keeps to delivery.SERVE_SHARE of a CPU).

    .venv/bin/python tests/perf/bench_webhooks.py [--events 5000] [--format json]

For each deliverer: a new database whose webhook is registered first (so that
every event after is its to receive), EVENTS deployments created in-process
(one created event each), then the real process started on it with the
receiver of tests/perf/webhook_receiver.py; the clock runs from the first
delivery's acknowledgement to the last (read from webhook_positions), and the
process's CPU time (user + system, /proc) is divided by the events.  Prints a
markdown table; the figures in docs/performance.md ("Webhooks") come from it.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from builders import create_body  # noqa: E402

from deployapi import create_app, lifecycle  # noqa: E402

DEPLOYAPI = str(Path(sys.executable).with_name("deployapi"))
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--format", default="json", choices=("json", "cloudevents", "slack"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        receiver = subprocess.Popen([sys.executable, str(ROOT / "tests/perf/webhook_receiver.py"), "fast",
                                     str(work_dir / "port")], stdout=subprocess.PIPE, text=True)
        try:
            port = _wait_for_file(work_dir / "port")
            config = work_dir / "hooks.toml"
            config.write_text(f'[[webhooks]]\nname = "bench"\nurl = "http://127.0.0.1:{port}/hook"\n'
                              f'secret = "{SECRET}"\nformat = "{args.format}"\n', encoding="utf-8")
            rows = [_drain(work_dir, config, args.events, command) for command in ("relay", "serve")]
        finally:
            receiver.terminate()
            receiver.wait()
    print("| deliverer | events | format | seconds | events/s | deliverer CPU ms/event |\n|---|---|---|---|---|---|")
    for command, seconds, cpu in rows:
        print(f"| deployapi {command} | {args.events} | {args.format} | {seconds:.2f} | {args.events / seconds:.0f} "
              f"| {cpu / args.events * 1000:.3f} |")
    return 0


def _drain(work_dir: Path, config: Path, events: int, command: str) -> tuple[str, float, float]:
    db = work_dir / f"{command}.db"
    app = create_app(db, config=config)  # registers the webhook at the (empty) head
    try:
        policy = app.context.policy
        for _ in range(events):
            new = lifecycle.validate_new_deployment(create_body(), policy, identity=None,
                                                    now=datetime.now(timezone.utc))
            app.repository.create_deployment(new, policy)
    finally:
        app.close()
    argv = [DEPLOYAPI, command, "--db", str(db), "--config", str(config)]
    if command == "serve":
        argv += ["--port", "0"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first = last = None
        conn = sqlite3.connect(db, timeout=10)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            through = conn.execute("SELECT delivered_through FROM webhook_positions").fetchone()[0]
            if first is None and through > 0:
                first = (time.monotonic(), through)
            if through >= events:
                last = time.monotonic()
                break
            time.sleep(0.005)
        conn.close()
        cpu = _cpu_seconds(process.pid)
    finally:
        process.terminate()
        process.wait(30)
    if first is None or last is None:
        raise SystemExit(f"{command}: the backlog did not drain")
    started, already = first
    # The clock starts at the first acknowledgement: scale to the events delivered after it.
    seconds = (last - started) * events / max(events - already, 1)
    return command, seconds, cpu


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for_file(path: Path) -> str:
    for _ in range(100):
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise SystemExit("the receiver did not start")


if __name__ == "__main__":
    raise SystemExit(main())
