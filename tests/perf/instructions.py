"""CPU instructions a request costs the WSGI app, counted by valgrind (callgrind): repeatable on a noisy machine.

    python tests/perf/instructions.py                      # get list create approve, 200 requests each
    python tests/perf/instructions.py get --requests 300
    python tests/perf/instructions.py get create --metrics   # with GET /metrics switched on

For each workload the app runs twice under ``valgrind --tool=callgrind``, once
with the set-up alone (a fresh database, 480 deployments over 8 services) and
once with the set-up and N requests; the difference divided by N is the cost of
one request: routing, validation, SQLite, rendering and the access log (written
to /dev/null), as the server runs them, without waitress.  The requests are
the bench's (`../shared/bench/wrk/*.lua`): GET by id, a page of 50 of one
service, a valid create, an approve.  Instruction counts do not move with the
machine's load, which wall-clock and CPU times here do by ±20 %; they do not
see time spent waiting (fsync, locks), so they rank CPU work only.

Needs valgrind (`apt-get install -y valgrind`).  Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile

WORKLOADS = ("get", "list", "create", "approve")
SERVICES = ("auth", "billing", "search", "web", "api", "worker", "gateway", "ledger")
SEEDED = 480


def body(i: int) -> dict:
    return {"service": SERVICES[i % 8], "environment": "staging", "version": f"1.4.{i}",
            "requester": f"bench-{i % 2}@example.com", "work_refs": [f"JIRA-{i}", f"https://ci.example/run/{i}"],
            "rollback_plan": "Redeploy the previous version from the release pipeline.",
            "risk": "low: config-only change"}


def run_requests(workload: str, count: int, metrics: bool = False) -> None:
    """The measured program: set up, then ``count`` requests of ``workload`` (each must answer 2xx)."""
    from werkzeug.test import EnvironBuilder

    from deployapi import logs
    from deployapi.app import create_app

    logs.configure("info", "text")
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run
    app = create_app(os.path.join(tempfile.mkdtemp(), "instructions.db"), metrics=metrics)
    status: list[str] = []

    def call(method: str, path: str, payload: dict | None = None) -> bytes:
        environ = EnvironBuilder(method=method, path=path, data=json.dumps(payload) if payload else None,
                                 content_type="application/json" if payload else None).get_environ()
        data = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
        if not status[-1].startswith("2"):
            raise RuntimeError(f"{method} {path} answered {status[-1]}")
        return data

    ids = [json.loads(call("POST", "/deployments", body(i)))["id"] for i in range(SEEDED)]
    for i in range(count):
        if workload == "get":
            call("GET", f"/deployments/{ids[i % SEEDED]}")
        elif workload == "list":
            call("GET", f"/deployments?service={SERVICES[i % 8]}&limit=50")
        elif workload == "create":
            call("POST", "/deployments", body(i))
        else:
            call("POST", f"/deployments/{ids[-1 - i]}/approve", {"actor": "approver@example.com", "note": "lgtm"})
    app.close()


def instructions(workload: str, count: int, metrics: bool = False) -> int:
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
         "--run", workload, "--requests", str(count), *(["--metrics"] if metrics else [])],
        capture_output=True, text=True, check=True)
    match = re.search(r"Collected : (\d+)", result.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count from valgrind:\n{result.stderr[-2000:]}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                        help=f"any of {', '.join(WORKLOADS)} (default: all)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--metrics", action="store_true",
                        help="with GET /metrics switched on (create_app(metrics=True))")
    parser.add_argument("--run", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_requests(args.run, args.requests, args.metrics)
        return
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if args.requests > SEEDED:
        parser.error(f"--requests must be at most {SEEDED} (approve needs that many pending deployments)")
    for workload in args.workloads or WORKLOADS:
        per_request = (instructions(workload, args.requests, args.metrics)
                       - instructions(workload, 0, args.metrics)) / args.requests
        print(f"{workload:8s} {per_request:12,.0f} instructions a request", flush=True)


if __name__ == "__main__":
    main()
