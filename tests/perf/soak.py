"""Soak test: the real ``deployapi serve`` under mixed traffic from many concurrent clients.

Not part of the test suite: pytest collects ``test_*.py`` only.  Run it from
the project root::

    .venv/bin/python tests/perf/soak.py --duration 60 --clients 32

What it does, in order:

1. Starts ``deployapi serve`` (the console script next to ``sys.executable``)
   on 127.0.0.1 with ``--port 0`` and a fresh database in a temporary
   directory, ``--threads 4`` unless told otherwise, and its default logging
   (one access line per request on stderr).
2. Seeds ``--seed`` deployments over HTTP, from the same client processes,
   and walks a third of them through their lifecycle so that every status
   exists before the clock starts.
3. Runs ``--clients`` closed-loop clients for ``--duration`` seconds, spread
   over ``--processes`` client processes (so the clients' GIL does not
   throttle the server), each client one keep-alive ``http.client``
   connection that sends its next request as soon as the last one was
   answered (plus ``--think-ms``).  Each request is one of: 40% GET
   /deployments/{id}; 20% GET /deployments with filters (a quarter of those
   follow the cursor of the client's previous listing instead); 10% GET
   /deployments/{id}/events; 20% POST /deployments; 10% lifecycle actions.
4. Counts every answer by kind and status.  Every request is valid and every
   action legal by construction: a client acts only on deployments it owns
   (those it created, and a share of the unfinished seeded ones), knows their
   status, and approves as someone other than the requester, so a 409 or 403
   cannot happen and any answer but the kind's 200/201 is an error.  A 503
   with ``code`` ``database_busy`` is counted apart as SQLITE_BUSY seen by a
   client.  The server's stderr is searched for "database is locked",
   tracebacks and ERROR lines.
5. Samples the server's /proc/PID/status (VmHWM, the peak resident set, and
   VmRSS) and its CPU time, and the machine's load average.
6. Stops the server with SIGTERM, checks that the database holds exactly the
   deployments and events the clients were told were created, and runs
   ``deployapi check --db`` on it.

Prints a markdown report (and writes it to ``--output`` when given).  Exit
status 1 when any request failed, any client saw SQLITE_BUSY, the server log
shows a lock error or a traceback, the stored counts disagree with the
acknowledged writes, ``deployapi check`` fails or the server did not exit 0.

Latencies are measured by the clients, from sending the request to reading
the whole response, so they include waiting in waitress's queue (``--clients``
requests are always in flight against ``--threads`` workers) and any time the
client or server process spent descheduled: on a small shared machine the
clients and the server compete for the same cores.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import math
import multiprocessing
import os
import random
import re
import resource
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for server_process

from run_context import code_description, machine_description  # noqa: E402
from server_process import DEPLOYAPI, Server  # noqa: E402

# --- the traffic -------------------------------------------------------------------

GET_ONE = "GET /deployments/{id}"
LIST = "GET /deployments (first page)"
LIST_NEXT = "GET /deployments (next page)"
EVENTS = "GET /deployments/{id}/events"
CREATE = "POST /deployments"
ACTION = "POST /deployments/{id}/{action}"
KINDS = (GET_ONE, LIST, LIST_NEXT, EVENTS, CREATE, ACTION)
EXPECTED_STATUS = {GET_ONE: 200, LIST: 200, LIST_NEXT: 200, EVENTS: 200, CREATE: 201, ACTION: 200}
# What each client picks for its next request; LIST turns into LIST_NEXT a
# quarter of the time when the client's last listing had a next page, and
# ACTION into CREATE when the client owns nothing that can still move.
MIX = ((GET_ONE, 40), (LIST, 20), (EVENTS, 10), (CREATE, 20), (ACTION, 10))
FOLLOW_CURSOR = 0.25

SERVICES = ("checkout", "payments", "search", "catalog", "accounts", "orders", "auth", "inventory",
            "shipping", "notifications", "billing", "pricing", "cart", "gateway", "reporting", "ledger")
SERVICE_WEIGHTS = tuple(1 / rank for rank in range(1, len(SERVICES) + 1))
ENVIRONMENTS = ("dev", "staging", "production", "qa")
ENVIRONMENT_WEIGHTS = (35, 30, 25, 10)
PEOPLE = tuple(f"{first}.{last}@example.com" for first in ("alice", "bob", "carol", "dan", "erin", "farid",
                                                              "grace", "hiro", "ines", "jonas")
               for last in ("martin", "okafor", "tanaka", "silva"))
ROBOT = "ci-bot"
STATUSES = ("pending_approval", "approved", "rejected", "started", "succeeded", "failed", "rolled_back")
# Listing filters a client asks for, as the names of the filters set.
LIST_SHAPES = ((), ("service",), ("environment",), ("status",), ("requester",), ("service", "environment"),
               ("service", "status"), ("environment", "status"), ("requester", "status"),
               ("service", "environment", "status"), ("service", "created_after"))

REQUEST_TIMEOUT_S = 30


@dataclass
class Owned:
    """A deployment one client alone acts on, so that it always knows the status."""

    deployment_id: str
    requester: str
    status: str


def new_body(rng: random.Random) -> dict:
    service = rng.choices(SERVICES, SERVICE_WEIGHTS)[0]
    environment = rng.choices(ENVIRONMENTS, ENVIRONMENT_WEIGHTS)[0]
    body = {
        "service": service, "environment": environment,
        "version": f"{rng.randrange(1, 4)}.{rng.randrange(40)}.{rng.randrange(200)}",
        "requester": ROBOT if rng.random() < 0.15 else rng.choice(PEOPLE),
        "work_refs": [f"{service.upper()[:4]}-{rng.randrange(100, 9999)}"],
        "rollback_plan": "Redeploy the previous version.",
    }
    if environment == "production" or rng.random() < 0.3:
        body["risk"] = rng.choice(("low: config only", "medium: online migration", "high: payment path"))
    return body


def next_action(owned: Owned, rng: random.Random) -> tuple[str, dict] | None:
    """The next legal action on ``owned`` and its body, or None when it has reached an end."""
    status = owned.status
    if status == "pending_approval":
        reviewer = rng.choice([p for p in PEOPLE if p != owned.requester])
        if rng.random() < 0.05:
            return "reject", {"actor": reviewer, "note": "needs a rollback plan for the migration"}
        return "approve", {"actor": reviewer}
    if status == "approved":
        return "start", {"actor": rng.choice((owned.requester, "release-train"))}
    if status == "started":
        if rng.random() < 0.2:
            return "fail", {"actor": "release-train", "note": "health checks failed"}
        return "succeed", {"actor": "release-train"}
    if status == "succeeded" and rng.random() < 0.08 or status == "failed" and rng.random() < 0.5:
        return "rollback", {"actor": owned.requester, "note": "error rate rose; rolled back"}
    return None


ACTION_STATUS = {"approve": "approved", "reject": "rejected", "start": "started", "succeed": "succeeded",
                 "fail": "failed", "rollback": "rolled_back"}


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened after a transport error."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_S)

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT_S)
            raise

    def close(self) -> None:
        self.conn.close()


@dataclass
class Tally:
    """What one client process saw: answers by kind and status, every latency, a sample of the errors."""

    answers: Counter = field(default_factory=Counter)  # (kind, status or exception name) -> count
    busy: int = 0  # 503 database_busy
    samples: list = field(default_factory=list)  # (seconds since start at completion, kind index, ms)
    errors: list = field(default_factory=list)  # up to 20 (kind, path, status, body) examples
    created: int = 0
    actions: Counter = field(default_factory=Counter)  # action -> successful count
    cursor_pages: int = 0
    cpu_s: float = 0.0

    def merge(self, other: Tally) -> None:
        self.answers.update(other.answers)
        self.busy += other.busy
        self.samples += other.samples
        self.errors += other.errors[:max(0, 20 - len(self.errors))]
        self.created += other.created
        self.actions.update(other.actions)
        self.cursor_pages += other.cursor_pages
        self.cpu_s += other.cpu_s


class Client:
    """One closed-loop client: picks a request from the mix, sends it, records the answer, repeats."""

    def __init__(self, host: str, port: int, rng: random.Random, seeded_ids: list[str], owned: list[Owned],
                 tally: Tally, lock: threading.Lock):
        self.connection = Connection(host, port)
        self.rng = rng
        self.seeded_ids = seeded_ids
        self.mine: list[str] = []
        self.owned = owned
        self.tally = tally
        self.lock = lock
        self.last_listing: tuple[dict, str] | None = None  # params and next_cursor of the last listing
        kinds, weights = zip(*MIX, strict=True)
        self.kinds, self.cumulative = kinds, list(itertools.accumulate(weights))

    def run(self, start_at: float, end_at: float, think_s: float) -> None:
        time.sleep(max(0.0, start_at - time.monotonic()))
        try:
            while time.monotonic() < end_at:
                self.step(start_at)
                if think_s:
                    time.sleep(think_s)
        finally:
            self.connection.close()

    def any_id(self) -> str:
        index = self.rng.randrange(len(self.seeded_ids) + len(self.mine))
        return self.seeded_ids[index] if index < len(self.seeded_ids) else self.mine[index - len(self.seeded_ids)]

    def step(self, start_at: float) -> None:
        kind = self.rng.choices(self.kinds, cum_weights=self.cumulative)[0]
        body = None
        method, path = "GET", ""
        owned = None
        if kind == ACTION:
            owned, action = self.pick_action()
            if owned is None:
                kind = CREATE
            else:
                action, body = action
                method, path = "POST", f"/deployments/{owned.deployment_id}/{action}"
        if kind == CREATE:
            method, path, body = "POST", "/deployments", new_body(self.rng)
        elif kind == GET_ONE:
            path = f"/deployments/{self.any_id()}"
        elif kind == EVENTS:
            path = f"/deployments/{self.any_id()}/events"
        elif kind == LIST:
            if self.last_listing and self.rng.random() < FOLLOW_CURSOR:
                kind = LIST_NEXT
                params, cursor = self.last_listing
                params = {**params, "cursor": cursor}
            else:
                params = self.list_params()
            path = "/deployments" + (f"?{urlencode(params)}" if params else "")

        began = time.monotonic()
        try:
            status, data = self.connection.request(method, path, body)
        except (OSError, http.client.HTTPException) as error:
            ended = time.monotonic()
            with self.lock:
                self.tally.answers[kind, type(error).__name__] += 1
                self.tally.samples.append((ended - start_at, KINDS.index(kind), (ended - began) * 1000))
                if len(self.tally.errors) < 20:
                    self.tally.errors.append((kind, path, type(error).__name__, str(error)[:300]))
            return
        ended = time.monotonic()

        ok = status == EXPECTED_STATUS[kind]
        decoded = json.loads(data) if data and (not ok or kind in (CREATE, LIST, LIST_NEXT)) else None
        if ok and kind == CREATE:
            self.mine.append(decoded["id"])
            self.owned.append(Owned(decoded["id"], decoded["requester"], decoded["status"]))
        elif ok and kind == ACTION:
            owned.status = ACTION_STATUS[action]
        elif ok and kind in (LIST, LIST_NEXT):
            self.last_listing = (({k: v for k, v in params.items() if k != "cursor"}, decoded["next_cursor"])
                                 if decoded["next_cursor"] else None)
        with self.lock:
            self.tally.answers[kind, status] += 1
            self.tally.samples.append((ended - start_at, KINDS.index(kind), (ended - began) * 1000))
            if ok:
                self.tally.created += kind == CREATE
                self.tally.cursor_pages += kind == LIST_NEXT
                if kind == ACTION:
                    self.tally.actions[action] += 1
            elif status == 503 and isinstance(decoded, dict) and decoded.get("code") == "database_busy":
                self.tally.busy += 1
            if not ok and len(self.tally.errors) < 20:
                self.tally.errors.append((kind, path, status, data[:300].decode("utf-8", "replace")))

    def pick_action(self) -> tuple[Owned | None, tuple[str, dict] | None]:
        while self.owned:
            # One of the oldest few, so that deployments are walked to an end
            # (approve, start, succeed...) rather than mostly approved.
            index = self.rng.randrange(min(len(self.owned), 4))
            candidate = self.owned[index]
            action = next_action(candidate, self.rng)
            if action is not None:
                return candidate, action
            del self.owned[index]  # reached an end
        return None, None

    def list_params(self) -> dict:
        shape = self.rng.choice(LIST_SHAPES)
        params: dict[str, str] = {}
        for name in shape:
            if name == "service":
                params["service"] = self.rng.choices(SERVICES, SERVICE_WEIGHTS)[0]
            elif name == "environment":
                params["environment"] = self.rng.choices(ENVIRONMENTS, ENVIRONMENT_WEIGHTS)[0]
            elif name == "status":
                params["status"] = self.rng.choice(STATUSES)
            elif name == "requester":
                params["requester"] = ROBOT if self.rng.random() < 0.3 else self.rng.choice(PEOPLE)
            elif name == "created_after":
                # The last few seconds to minutes: "what was just requested for this service".
                since = time.time() - self.rng.choice((5, 30, 300))
                params["created_after"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
        if self.rng.random() < 0.5:
            params["limit"] = str(self.rng.choice((10, 20, 100)))
        return params


# --- client processes --------------------------------------------------------------


def seed_share(url: str, count: int, walk_fraction: float, threads: int, rng_seed: int
               ) -> tuple[list[tuple[str, str, str]], int, int]:
    """Create ``count`` deployments over HTTP and walk a share of them through the lifecycle.

    Returns (id, requester, status) of each, and how many creates and actions failed.
    """
    parts = urlsplit(url)
    results: list[tuple[str, str, str]] = []
    failures = [0]
    actions_done = [0]
    lock = threading.Lock()

    def work(thread_no: int) -> None:
        rng = random.Random(rng_seed * 1000 + thread_no)
        connection = Connection(parts.hostname, parts.port)
        try:
            for _ in range(count // threads + (thread_no < count % threads)):
                status, data = connection.request("POST", "/deployments", new_body(rng))
                if status != 201:
                    with lock:
                        failures[0] += 1
                    continue
                created = json.loads(data)
                owned = Owned(created["id"], created["requester"], created["status"])
                if rng.random() < walk_fraction:
                    # Walk to a random depth, so that every status is represented.
                    for _ in range(rng.randrange(1, 5)):
                        action = next_action(owned, rng)
                        if action is None:
                            break
                        name, body = action
                        status, _ = connection.request("POST", f"/deployments/{owned.deployment_id}/{name}", body)
                        if status != 200:
                            with lock:
                                failures[0] += 1
                            break
                        owned.status = ACTION_STATUS[name]
                        with lock:
                            actions_done[0] += 1
                with lock:
                    results.append((owned.deployment_id, owned.requester, owned.status))
        finally:
            connection.close()

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results, failures[0], actions_done[0]


def client_process(url: str, process_no: int, clients: int, seeded_ids: list[str], owned: list[list[Owned]],
                   think_s: float, rng_seed: int, ready, start_value, go, results) -> None:
    """Run ``clients`` Client threads in this process between the start and end times main sets."""
    parts = urlsplit(url)
    tally, lock = Tally(), threading.Lock()
    runners = [Client(parts.hostname, parts.port, random.Random(rng_seed * 1000 + process_no * 100 + n),
                      seeded_ids, owned[n], tally, lock) for n in range(clients)]
    ready.put(process_no)
    go.wait()
    start_at, end_at = start_value[0], start_value[1]
    before = resource.getrusage(resource.RUSAGE_SELF)
    threads = [threading.Thread(target=runner.run, args=(start_at, end_at, think_s)) for runner in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    tally.cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    results.put(tally)


# --- the server process from outside -------------------------------------------------


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS (KiB) and Threads from /proc/PID/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS", "Threads"):
            values[name] = int(rest.split()[0])
    return values


def proc_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of the process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class Sampler(threading.Thread):
    """Samples the server's memory and CPU, and the machine's load, every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, dict[str, int], float, float]] = []  # (t, status, cpu_s, load1)
        self.stopping = threading.Event()

    def sample(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            load1 = float(Path("/proc/loadavg").read_text().split()[0])
            self.samples.append((time.monotonic(), proc_status(self.pid), proc_cpu_s(self.pid), load1))

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.sample()


ACCESS_LINE = re.compile(r"deployapi\.access: (\S+) (\S+) (\d{3}) ([\d.]+)ms")
QUEUE_DEPTH = re.compile(r"Task queue depth is (\d+)")


def access_kind(method: str, path: str) -> str | None:
    path, _, query = path.partition("?")
    parts = path.strip("/").split("/")
    if method == "GET" and parts == ["deployments"]:
        return LIST_NEXT if "cursor=" in query else LIST
    if method == "POST" and parts == ["deployments"]:
        return CREATE
    if method == "GET" and len(parts) == 2:
        return GET_ONE
    if method == "GET" and len(parts) == 3 and parts[2] == "events":
        return EVENTS
    if method == "POST" and len(parts) == 3:
        return ACTION
    return None


# --- statistics and the report -------------------------------------------------------


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest rank: the smallest sample with at least ``fraction`` of all samples at or below it."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] if ordered else float("nan")


def stored_counts(db: Path) -> tuple[int, int, Counter]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        deployments = conn.execute("SELECT count(*) FROM deployments").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM deployment_events").fetchone()[0]
        statuses = Counter(dict(conn.execute("SELECT status, count(*) FROM deployments GROUP BY status")))
    return deployments, events, statuses


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60, help="seconds of traffic (default %(default)s)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent connections (default %(default)s)")
    parser.add_argument("--processes", type=int, default=4, help="client processes (default %(default)s)")
    parser.add_argument("--threads", type=int, default=4, help="the server's --threads (default %(default)s)")
    parser.add_argument("--seed", type=int, default=3000, help="deployments created before the clock starts "
                                                               "(default %(default)s)")
    parser.add_argument("--think-ms", type=float, default=0, help="pause after each answer (default 0)")
    parser.add_argument("--rng-seed", type=int, default=20261126)
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (database and log)")
    args = parser.parse_args(argv)
    if args.clients < args.processes:
        parser.error("--clients must be at least --processes")
    command = " ".join([os.path.relpath(sys.executable), *map(shlex.quote, sys.argv)])
    print(machine_description(), file=sys.stderr)

    workdir = Path(tempfile.mkdtemp(prefix="deployapi-soak-"))
    db = workdir / "soak.db"
    context = multiprocessing.get_context("spawn")
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    server = Server("--host", "127.0.0.1", "--port", "0", "--db", str(db), "--threads", str(args.threads),
                    cwd=workdir)
    pid = server.process.pid
    failed_reasons: list[str] = []
    try:
        # 1. Seed, from the client processes.
        print(f"server {server.url} (pid {pid}); seeding {args.seed:,} deployments", file=sys.stderr)
        seed_began = time.monotonic()
        shares = [args.seed // args.processes + (n < args.seed % args.processes) for n in range(args.processes)]
        per_process = math.ceil(args.clients / args.processes)
        with context.Pool(args.processes) as pool:
            seeded_parts = pool.starmap(seed_share, [(server.url, share, 1 / 3, per_process, args.rng_seed + n)
                                                     for n, share in enumerate(shares)])
        seeded = [row for rows, _, _ in seeded_parts for row in rows]
        seed_failures = sum(f for _, f, _ in seeded_parts)
        seed_actions = sum(a for _, _, a in seeded_parts)
        seed_seconds = time.monotonic() - seed_began
        if seed_failures:
            failed_reasons.append(f"{seed_failures} seeding requests failed")
        print(f"seeded in {seed_seconds:.1f} s ({seed_actions:,} actions)", file=sys.stderr)

        # 2. Hand the unfinished seeded deployments out, each to exactly one client.
        seeded_ids = [deployment_id for deployment_id, _, _ in seeded]
        unfinished = [Owned(d, r, s) for d, r, s in seeded if s in ("pending_approval", "approved", "started")]
        owned: list[list[Owned]] = [[] for _ in range(args.clients)]
        for n, item in enumerate(unfinished):
            owned[n % args.clients].append(item)
        counts = [args.clients // args.processes + (n < args.clients % args.processes) for n in range(args.processes)]
        ready, results, go = context.Queue(), context.Queue(), context.Event()
        start_value = context.Array("d", 2)
        processes = []
        first = 0
        for n, count in enumerate(counts):
            processes.append(context.Process(target=client_process, args=(
                server.url, n, count, seeded_ids, owned[first:first + count], args.think_ms / 1000,
                args.rng_seed, ready, start_value, go, results)))
            first += count
        for process in processes:
            process.start()
        for _ in processes:
            ready.get(timeout=60)

        # 3. Traffic.
        sampler = Sampler(pid)
        sampler.sample()
        rss_before = sampler.samples[-1][1]
        cpu_before = proc_cpu_s(pid)
        busy_before = machine_busy()
        start_at = time.monotonic() + 0.5
        start_value[0], start_value[1] = start_at, start_at + args.duration
        log_lines_before = len(server.stderr_text.splitlines())
        go.set()
        sampler.start()
        print(f"{args.clients} clients in {args.processes} processes for {args.duration:g} s", file=sys.stderr)
        tally = Tally()
        for _ in processes:
            tally.merge(results.get(timeout=args.duration + 3 * REQUEST_TIMEOUT_S))
        for process in processes:
            process.join(30)
        time.sleep(0.2)  # let the log reader catch up with the last access lines
        log_lines_during = server.stderr_text.splitlines()[log_lines_before:]
        elapsed = max((s[0] for s in tally.samples), default=args.duration)
        sampler.stopping.set()
        sampler.join()
        sampler.sample()
        cpu_server = proc_cpu_s(pid) - cpu_before
        busy_after = machine_busy()
        final = sampler.samples[-1][1]
        during = [s for s in sampler.samples if s[0] >= start_at]
        loads = [s[3] for s in during]
    finally:
        exit_code = server.stop(signal.SIGTERM, timeout=30)
    if exit_code != 0:
        failed_reasons.append(f"the server exited with {exit_code}")

    # 4. The server's log.
    log = server.stderr_text
    (workdir / "server.log").write_text(log)
    locked = log.count("database is locked")
    tracebacks = log.count("Traceback (most recent call last)")
    error_lines = sum(" ERROR " in line for line in log.splitlines())
    traffic_log = "\n".join(log_lines_during)
    depths = [int(m) for m in QUEUE_DEPTH.findall(traffic_log)]
    in_app: dict[str, list[float]] = defaultdict(list)
    access_statuses: Counter = Counter()
    for method, path, status, duration in ACCESS_LINE.findall(traffic_log):
        kind = access_kind(method, path)
        if kind is not None:
            in_app[kind].append(float(duration))
        access_statuses[status] += 1

    # 5. What the database holds, and deployapi check.
    deployments, events, statuses = stored_counts(db)
    expected_deployments = len(seeded) + tally.created
    expected_events = len(seeded) + seed_actions + tally.created + sum(tally.actions.values())
    check = subprocess.run([DEPLOYAPI, "check", "--db", str(db)], capture_output=True, text=True, timeout=300)
    db_bytes = sum(p.stat().st_size for p in workdir.glob("soak.db*"))

    # 6. The report.
    by_kind: dict[str, list[float]] = defaultdict(list)
    for _, kind_index, latency in tally.samples:
        by_kind[KINDS[kind_index]].append(latency)
    every = [latency for _, _, latency in tally.samples]
    total = len(every)
    errors = sum(n for (kind, status), n in tally.answers.items() if status != EXPECTED_STATUS[kind])
    other_errors = errors - tally.busy
    out: list[str] = []
    write = out.append
    write(f"Run on {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {machine_description()}.")
    write(f"Measured {code_description()}.\n")
    write(f"```\n{command}\n```\n")
    write(f"- Server: `deployapi serve --threads {args.threads}` (waitress), default logging (an access line per "
          f"request on stderr), fresh database in {workdir}.")
    write(f"- Seeded over HTTP before the clock started: {len(seeded):,} deployments and {seed_actions:,} actions "
          f"in {seed_seconds:.1f} s.")
    write(f"- Clients: {args.clients} keep-alive connections in {args.processes} processes, closed loop, "
          f"think time {args.think_ms:g} ms, for {args.duration:g} s (last answer at {elapsed:.1f} s).")
    write(f"- Load average (1 min) before: {load_before[0]}; during: {min(loads, default=float('nan')):.2f}"
          f"–{max(loads, default=float('nan')):.2f}. Machine CPU busy during the run: "
          f"{(busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1]):.0%} of "
          f"{os.cpu_count()} CPUs.\n")

    write("| kind | requests | share | req/s | p50 ms | p99 ms | max ms | in-app p50 / p99 ms |")
    write("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind in KINDS:
        values = by_kind.get(kind, [])
        if not values:
            continue
        app = in_app.get(kind, [])
        write(f"| {kind} | {len(values):,} | {len(values) / total:.0%} | {len(values) / elapsed:,.1f} | "
              f"{percentile(values, 0.5):.1f} | {percentile(values, 0.99):.1f} | {max(values):.1f} | "
              f"{percentile(app, 0.5):.1f} / {percentile(app, 0.99):.1f} |")
    everything_in_app = [v for values in in_app.values() for v in values]
    write(f"| **all** | **{total:,}** | 100% | **{total / elapsed:,.1f}** | **{percentile(every, 0.5):.1f}** | "
          f"**{percentile(every, 0.99):.1f}** | **{max(every, default=float('nan')):.1f}** | "
          f"{percentile(everything_in_app, 0.5):.1f} / {percentile(everything_in_app, 0.99):.1f} |")
    write("")
    write("Latency is the client's: request sent to whole response read, so it includes the wait in "
          "waitress's queue. \"In-app\" is the server's own access-log duration (WSGI call to response "
          "built), which leaves that wait out.\n")

    write("Over time, in 10-second windows: the clients' throughput and latency, the server's CPU use and its "
          "RSS at the window's end, and the machine's 1-minute load average then:\n")
    write("| window | requests | req/s | p50 ms | p99 ms | server CPU (of one core) | server RSS MiB | load avg |")
    write("|---|---:|---:|---:|---:|---:|---:|---:|")
    windows: dict[int, list[float]] = defaultdict(list)
    for at, _, latency in tally.samples:
        windows[min(int(at // 10), int(max(0, args.duration - 1) // 10))].append(latency)
    for window in sorted(windows):
        values = windows[window]
        span = min(10.0, elapsed - window * 10) if window == max(windows) else 10.0
        first = [x for x in sampler.samples if x[0] <= start_at + window * 10] or sampler.samples[:1]
        last = [x for x in sampler.samples if x[0] <= start_at + window * 10 + span] or sampler.samples[:1]
        cpu_share = (last[-1][2] - first[-1][2]) / max(1e-9, last[-1][0] - first[-1][0])
        write(f"| {window * 10}–{window * 10 + span:.0f} s | {len(values):,} | {len(values) / span:,.1f} | "
              f"{percentile(values, 0.5):.1f} | {percentile(values, 0.99):.1f} | {cpu_share:.0%} | "
              f"{last[-1][1].get('VmRSS', 0) / 1024:.1f} | {last[-1][3]:.2f} |")
    write("")

    answers = ", ".join(f"{kind} {status}: {n:,}" for (kind, status), n in sorted(tally.answers.items(),
                                                                                   key=lambda kv: str(kv[0])))
    write(f"- Answers by kind and status: {answers}.")
    write(f"- **Errors (any answer but the kind's 200/201): {errors}**; of which SQLITE_BUSY "
          f"(503 `database_busy`): **{tally.busy}**.")
    for example in tally.errors[:5]:
        write(f"  - e.g. `{example}`")
    actions = ", ".join(f"{action} {n:,}" for action, n in tally.actions.most_common())
    write(f"- Writes acknowledged during the run: {tally.created:,} creates, "
          f"{sum(tally.actions.values()):,} actions ({actions}); {tally.cursor_pages:,} listings followed a cursor.")
    access = ", ".join(f"{status}: {n:,}" for status, n in sorted(access_statuses.items()))
    write(f"- Server log (whole run, seeding included): {locked} \"database is locked\", {tracebacks} tracebacks, "
          f"{error_lines} ERROR lines. During the traffic: {sum(access_statuses.values()):,} access lines "
          f"({access}); waitress warned \"Task queue depth\" {len(depths):,} times, deepest {max(depths, default=0)}.")
    write(f"- Server memory: peak RSS (VmHWM) {final.get('VmHWM', 0) / 1024:.1f} MiB; RSS "
          f"{rss_before.get('VmRSS', 0) / 1024:.1f} MiB after seeding, {final.get('VmRSS', 0) / 1024:.1f} MiB at the "
          f"end; {final.get('Threads', 0)} threads.")
    write(f"- Server CPU during the run: {cpu_server:.1f} s in {elapsed:.1f} s ({cpu_server / elapsed:.0%} of one "
          f"core), {cpu_server / total * 1000:.2f} ms per request. Client processes: {tally.cpu_s:.1f} s "
          f"({tally.cpu_s / elapsed:.0%} of one core).")
    write(f"- Database after the run: {deployments:,} deployments (expected {expected_deployments:,}), "
          f"{events:,} events (expected {expected_events:,}), {db_bytes / 2**20:.1f} MiB with WAL; statuses "
          f"{', '.join(f'{s} {n:,}' for s, n in statuses.most_common())}.")
    check_lines = check.stdout.strip().splitlines()
    verdict = check_lines[-1] if check_lines else check.stderr.strip()
    write(f"- `deployapi check --db`: exit {check.returncode}, \"{verdict}\".")
    write(f"- Server exit status after SIGTERM: {exit_code}.")
    write("")

    if other_errors:
        failed_reasons.append(f"{other_errors} requests failed")
    if tally.busy:
        failed_reasons.append(f"clients saw SQLITE_BUSY {tally.busy} times")
    if locked or tracebacks:
        failed_reasons.append(f"server log: {locked} 'database is locked', {tracebacks} tracebacks")
    if (deployments, events) != (expected_deployments, expected_events):
        failed_reasons.append(f"stored {deployments} deployments and {events} events, expected "
                              f"{expected_deployments} and {expected_events}")
    if check.returncode != 0:
        failed_reasons.append(f"deployapi check exited {check.returncode}")
    write("Verdict: " + ("PASS" if not failed_reasons else "FAIL: " + "; ".join(failed_reasons)) + ".")
    report = "\n".join(out) + "\n"
    print(report)
    if args.output:
        args.output.write_text(report, encoding="utf-8")
    if args.keep or failed_reasons:
        print(f"kept {workdir} (soak.db, server.log)", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed_reasons else 0


if __name__ == "__main__":
    sys.exit(main())
