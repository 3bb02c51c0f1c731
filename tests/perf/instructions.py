"""CPU instructions a request costs the WSGI app, counted by valgrind (callgrind): repeatable on a noisy machine.

    python tests/perf/instructions.py                      # get list create approve, 200 requests each
    python tests/perf/instructions.py get --requests 300
    python tests/perf/instructions.py get create --metrics   # with GET /metrics switched on
    python tests/perf/instructions.py create --ceiling --by-library   # the bench's write ceiling, by library

For each workload the app runs twice under ``valgrind --tool=callgrind``, once
with the set-up alone (a fresh database, 480 deployments over 8 services) and
once with the set-up and N requests; the difference divided by N is the cost of
one request: routing, validation, SQLite, rendering and the access log (written
to /dev/null), as the server runs them, without waitress.  The requests are
the bench's (`../shared/bench/wrk/*.lua`): GET by id, a page of 50 of one
service, a valid create, an approve.  Instruction counts do not move with the
machine's load, which wall-clock and CPU times here do by ±20 %; they do not
see time spent waiting (fsync, locks), so they rank CPU work only.

``--ceiling`` counts the same requests against the bench's ceiling app
(``sqlite_wsgi.py`` of ``$BENCH``, default ``../shared/bench``, with
``synchronous=FULL`` as the bench's sqlite-write-full target runs it), so a
request's cost can be set beside what the bare design needs.  ``--by-library``
also splits each count by the shared object the instructions ran in (the
interpreter, SQLite, the C library, ``_json``, OpenSSL's libcrypto), read
from callgrind's output file.

Needs valgrind (`apt-get install -y valgrind`).  Not part of the test run.
"""

from __future__ import annotations

import argparse
import collections
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


def bench_dir() -> str:
    return os.path.realpath(os.environ.get("BENCH", os.path.join(os.path.dirname(__file__), "../../../shared/bench")))


def measured_app(metrics: bool, ceiling: bool):
    """deployapi's WSGI app as the server runs it, or the bench's ceiling app, on a fresh database."""
    path = os.path.join(tempfile.mkdtemp(), "instructions.db")
    if ceiling:
        sys.path.insert(0, bench_dir())
        import sqlite_wsgi  # the bench's, not deployapi's

        return sqlite_wsgi.make_app(path, synchronous="FULL")
    from deployapi import logs
    from deployapi.app import create_app

    logs.configure("info", "text")
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run
    return create_app(path, metrics=metrics)


def run_requests(workload: str, count: int, metrics: bool = False, ceiling: bool = False) -> None:
    """The measured program: set up, then ``count`` requests of ``workload`` (each must answer 2xx)."""
    from werkzeug.test import EnvironBuilder

    app = measured_app(metrics, ceiling)
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
    if not ceiling:
        app.close()


def instructions(workload: str, count: int, metrics: bool = False, ceiling: bool = False) -> collections.Counter:
    """The instructions of one run: ``total``, and each shared object's (by :func:`library_name`)."""
    with tempfile.TemporaryDirectory() as work:
        out = os.path.join(work, "callgrind.out")
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
             "--run", workload, "--requests", str(count), *(["--metrics"] if metrics else []),
             *(["--ceiling"] if ceiling else [])],
            capture_output=True, text=True, check=True)
        match = re.search(r"Collected : (\d+)", result.stderr)
        if match is None:
            raise RuntimeError(f"no instruction count from valgrind:\n{result.stderr[-2000:]}")
        with open(out) as profile:
            counts = instructions_by_object(profile)
    collected = int(match.group(1))
    # The split must add up to valgrind's count, or the file was read wrong.
    if counts.total() != collected:
        raise RuntimeError(f"the shared objects' instructions add up to {counts.total():,}, "
                           f"valgrind counted {collected:,}")
    counts["total"] = collected
    return counts


def instructions_by_object(profile) -> collections.Counter:
    """The self cost in a callgrind output file of each shared object, by :func:`library_name`.

    The format (valgrind's callgrind format specification): ``ob=`` names the
    object of the ``fn=`` lines after it, names compressed as ``(3) name`` the
    first time (there or in a callee's ``cob=``) and ``(3)`` after; a cost line
    is its positions (as many as the ``positions:`` line names: ``line``, or
    ``instr line`` with ``--dump-instr=yes``) and then its costs, the first
    event's (``Ir``) first; a ``calls=`` line is followed by the cost line of
    that call, which is the callee's inclusive cost and so not this function's own.
    """
    names: dict[str, str] = {}
    counts: collections.Counter = collections.Counter()
    object_, function_object, call_cost_next, positions = "?", "?", False, 1
    for line in profile:
        if line.startswith("positions:"):
            positions = len(line.split()) - 1
        elif line.startswith(("ob=", "cob=")):  # one namespace: a name may first appear as a callee's object
            value = line.partition("=")[2].strip()
            if value.startswith("("):  # compressed: "(3) name" defines it, "(3)" uses it
                compressed, _, name = value.partition(" ")
                named = names.setdefault(compressed, library_name(name)) if name else names[compressed]
            else:  # --compress-strings=no
                named = library_name(value)
            if line.startswith("ob="):
                object_ = named
        elif line.startswith("fn="):
            function_object = object_
        elif line.startswith("calls="):
            call_cost_next = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if call_cost_next:
                call_cost_next = False
                continue
            fields = line.split()
            if len(fields) > positions:
                counts[function_object] += int(fields[positions])
    return counts


def library_name(path: str) -> str:
    """``libsqlite3`` for ``/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6``; ``_json`` for the extension module."""
    return os.path.basename(path).split(".")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                        help=f"any of {', '.join(WORKLOADS)} (default: all)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--metrics", action="store_true",
                        help="with GET /metrics switched on (create_app(metrics=True))")
    parser.add_argument("--ceiling", action="store_true",
                        help="count the bench's ceiling app (sqlite_wsgi.py of $BENCH, synchronous=FULL) instead")
    parser.add_argument("--by-library", action="store_true",
                        help="also split each count by the shared object the instructions ran in")
    parser.add_argument("--run", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_requests(args.run, args.requests, args.metrics, args.ceiling)
        return
    if args.ceiling and args.metrics:
        parser.error("--metrics is deployapi's: the ceiling has no GET /metrics")
    if args.ceiling and not os.path.exists(os.path.join(bench_dir(), "sqlite_wsgi.py")):
        parser.error(f"--ceiling needs the bench harness: no sqlite_wsgi.py in {bench_dir()} (set BENCH)")
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if args.requests > SEEDED:
        parser.error(f"--requests must be at most {SEEDED} (approve needs that many pending deployments)")
    for workload in args.workloads or WORKLOADS:
        with_requests = instructions(workload, args.requests, args.metrics, args.ceiling)
        with_requests.subtract(instructions(workload, 0, args.metrics, args.ceiling))
        print(f"{workload:8s} {with_requests['total'] / args.requests:12,.0f} instructions a request", flush=True)
        if args.by_library:
            for library, count in sorted(with_requests.items(), key=lambda item: -item[1]):
                if library != "total" and count / args.requests >= 1000:
                    print(f"  {library:24s} {count / args.requests:12,.0f}", flush=True)


if __name__ == "__main__":
    main()
