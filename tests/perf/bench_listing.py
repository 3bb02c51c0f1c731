"""Load benchmark for ``GET /deployments`` at 10k, 100k and 1M deployments, and the write cost of its indexes.

Not part of the test suite: pytest collects ``test_*.py`` only, and this file
is ``bench_*.py``.  Run it from the project root::

    .venv/bin/python tests/perf/bench_listing.py --sizes 10000,100000,1000000 --db-dir /tmp/deployapi-bench

What it does, in order:

1. Seeds one SQLite file per size (``<db-dir>/listing-v1-<size>.db``) with
   deployments spread over 40 services of skewed popularity, five environments,
   realistic statuses with their full event histories, and two years of
   ``created_at``.  A file that already holds the right number of deployments
   is reused, so only the first run pays for seeding (5 to 7 minutes for 1M
   on 2 cores, 2.1 GiB).  The files live outside the tree; never commit them.
2. Through the real WSGI app in-process (``werkzeug.test.Client(create_app(path))``)
   measures p50 and p99 of ``GET /deployments`` for all 8 combinations of the
   service/environment/status filters, each without and with a
   ``created_after``/``created_before`` range, at the first page and at a deep
   page (``--deep-pages`` pages in, reached by following ``next_cursor``
   before timing starts).  Sizes and cases are interleaved in rounds so that
   noise from other work on the machine spreads over all of them alike.  Each
   request is timed by the wall clock and by the thread's CPU clock, and the
   repository call alone (SQL plus row mapping) is timed next to it, to split
   the time.  The plan SQLite uses for every case is recorded.
3. Times ``requester`` alone and combined with other filters (reported, not
   held to the targets): any query with ``requester`` walks the requester
   index and checks the other filters row by row, so its cost follows how
   many of that requester's deployments precede the 51st match.
4. Measures ``Repository.create_deployment`` throughput (one transaction each)
   with the schema's listing indexes and with them dropped after start-up, on
   fresh files and on copies of the largest seeded file: the write cost of
   those indexes.
5. Prints markdown tables, checks the targets (p99 at the largest size within
   2x of p99 at the smallest for every case; every first page under 5 ms p99;
   every plan a single index range scan) and writes the report to
   ``--output`` (default ``<db-dir>/bench_listing.md``) for docs/performance.md.

Exit status: 0 when every target is met on the wall clock and every plan is
right, 1 otherwise (on-CPU results are reported, not enforced).

``--requester-only`` runs step 3 alone (after seeding, which the seeded files
make a no-op), with nothing held to a target: under half a minute at 1M rows::

    .venv/bin/python tests/perf/bench_listing.py --requester-only --requester-iterations 50

``--environments`` times ``GET /environments`` (held to a p99 under 50 ms) and
``GET /metrics/dora`` (reported only) on the seeded files instead, interleaved
in rounds like the listing, and writes ``<db-dir>/bench_environments.md``::

    .venv/bin/python tests/perf/bench_listing.py --environments

To measure one commit while the working tree changes under you, export it and
put it first on the path::

    git archive HEAD | tar -x -C /tmp/deployapi-snapshot
    PYTHONPATH=/tmp/deployapi-snapshot .venv/bin/python tests/perf/bench_listing.py ...
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import dataclasses
import datetime as dt
import gc
import itertools
import math
import os
import random
import shlex
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlencode

from run_context import code_description, machine_description
from werkzeug.test import Client
from werkzeug.wrappers import Response

from deployapi import create_app, ids, lifecycle, listing
from deployapi.lifecycle import Deployment, Event, NewDeployment
from deployapi.repository import Repository, deployments

T = TypeVar("T")

# Bump when the generated data changes, so stale seeded files are not reused.
DATASET_VERSION = 1
SEED_BATCH = 5_000

# The seeded history ends here: fixed, so every run sees the same time windows.
END = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
SPAN = dt.timedelta(days=730)
# Deployments this recent may still be in flight (pending, approved, started).
IN_FLIGHT_WINDOW = dt.timedelta(days=2)
# The range case: the first half of 2026 (an auditor's "what went to production
# in H1"), inside the seeded two years so that both bounds cut the result.
RANGE_AFTER = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
RANGE_BEFORE = dt.datetime(2026, 7, 1, tzinfo=dt.timezone.utc)

FIRST_PAGE_TARGET_MS = 5.0
SCALE_TARGET_RATIO = 2.0
DEEP_CURSORS = 10  # the deep case rotates over the cursors of the last pages walked

SERVICES = (
    "checkout", "payments", "search", "catalog", "accounts", "orders", "auth", "inventory",
    "shipping", "notifications", "billing", "pricing", "cart", "recommendations", "gateway",
    "reporting", "analytics", "media", "reviews", "loyalty", "fraud", "ledger", "tax", "invoices",
    "email", "sms", "scheduler", "feature-flags", "config", "audit", "identity", "profile", "geo",
    "fulfilment", "returns", "warehouse", "ads", "status-page", "docs-site", "admin-console",
)
# Zipf-like popularity: checkout gets ~25% of deployments, admin-console ~0.5%.
SERVICE_WEIGHTS = tuple(1 / rank ** 1.05 for rank in range(1, len(SERVICES) + 1))
ENVIRONMENTS = ("dev", "staging", "production", "qa", "sandbox")
ENVIRONMENT_WEIGHTS = (34, 28, 24, 8, 6)
# Old deployments have (almost) all reached an end; a few requests were abandoned.
SETTLED_STATUSES = ("succeeded", "failed", "rolled_back", "rejected", "pending_approval", "approved", "started")
SETTLED_WEIGHTS = (85.5, 5.0, 3.0, 5.0, 1.0, 0.3, 0.2)
RECENT_STATUSES = SETTLED_STATUSES
RECENT_WEIGHTS = (50, 3, 2, 5, 25, 10, 5)
FIRST_NAMES = ("alice", "bob", "carol", "dan", "erin", "farid", "grace", "hiro", "ines", "jonas", "kemal",
               "lena", "mia", "noor", "oscar", "priya", "quinn", "rosa", "sven", "tariq", "uma", "vera",
               "wei", "xenia", "yusuf", "zoe")
LAST_NAMES = ("martin", "okafor", "schmidt", "tanaka", "silva", "novak")
PEOPLE = tuple(f"{first}.{last}" for first, last in itertools.product(FIRST_NAMES, LAST_NAMES))
ROBOTS = ("ci-bot", "release-train")
RISKS = ("Low: config-only change behind a feature flag.",
         "Medium: adds a nullable column; migration is online.",
         "Low: dependency bump, canary first.",
         "High: changes the payment capture path; watch error rates for 30 minutes.")
ROLLBACK_PLANS = ("Redeploy the previous version.", "Turn the feature flag off, then redeploy the previous version.",
                  "Run the down migration, then redeploy the previous version.")


# --- seeding -------------------------------------------------------------------


def db_path(db_dir: Path, size: int) -> Path:
    return db_dir / f"listing-v{DATASET_VERSION}-{size}.db"


def stored_count(path: Path) -> int | None:
    """How many deployments the file holds, or None when it is missing or not a seeded database."""
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            return conn.execute("SELECT count(*) FROM deployments").fetchone()[0]
    except sqlite3.Error:
        return None


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def copy_database(source: Path, destination: Path) -> None:
    """A consistent copy of ``source`` (SQLite's backup API), never opening it for writing."""
    with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as reader, \
            contextlib.closing(sqlite3.connect(destination)) as copy:
        reader.backup(copy)


def creation_times(count: int, rng: random.Random) -> list[dt.datetime]:
    """``count`` ascending instants over the two years before END, mostly on weekday working hours."""
    start = END - SPAN
    seconds = SPAN.total_seconds()
    times: list[float] = []
    while len(times) < count:
        offset = rng.random() * seconds
        moment = start + dt.timedelta(seconds=offset)
        weight = (0.15 if moment.weekday() >= 5 else 1.0) * (1.0 if 7 <= moment.hour < 19 else 0.25)
        if rng.random() < weight:
            times.append(offset)
    times.sort()
    return [start + dt.timedelta(seconds=offset) for offset in times]


def generated_deployments(count: int, seed: int) -> Iterator[tuple[Deployment, list[Event]]]:
    """Deployments with the status and full event history their lifecycle would have produced."""
    rng = random.Random(seed)
    cumulative_services = list(itertools.accumulate(SERVICE_WEIGHTS))
    versions = {service: [1, rng.randrange(0, 20), 0] for service in SERVICES}
    for created in creation_times(count, rng):
        service = SERVICES[bisect.bisect(cumulative_services, rng.random() * cumulative_services[-1])]
        environment = rng.choices(ENVIRONMENTS, ENVIRONMENT_WEIGHTS)[0]
        recent = END - created < IN_FLIGHT_WINDOW
        status = rng.choices(RECENT_STATUSES if recent else SETTLED_STATUSES,
                             RECENT_WEIGHTS if recent else SETTLED_WEIGHTS)[0]
        version = versions[service]
        version[2] += 1
        if rng.random() < 0.05:
            version[1:] = [version[1] + 1, 0]
        requester = rng.choice(ROBOTS) if rng.random() < 0.2 else rng.choice(PEOPLE)
        reviewer = rng.choice([p for p in rng.sample(PEOPLE, 2) if p != requester])
        work_refs = [f"{service.upper()[:4]}-{rng.randrange(100, 9999)}"]
        if rng.random() < 0.3:
            work_refs.append(f"https://git.example.com/acme/{service}/pull/{rng.randrange(1, 5000)}")
        deployment_id = ids.new_deployment_id(created)
        stamp = lifecycle.format_timestamp(created)
        events = [Event(id=None, deployment_id=deployment_id, sequence=1, type="created", actor=requester,
                        note=None, from_status=None, to_status="pending_approval", created_at=stamp)]
        reviewed_at = None
        moment = created
        for step in _history(status, rng):
            moment += dt.timedelta(seconds=rng.uniform(*step.delay_seconds))
            at = lifecycle.format_timestamp(moment)
            if step.event in ("approved", "rejected"):
                reviewed_at = at
            actor = reviewer if step.event in ("approved", "rejected") else rng.choice((requester, "release-train"))
            events.append(Event(id=None, deployment_id=deployment_id, sequence=len(events) + 1, type=step.event,
                                actor=actor, note=step.note, from_status=events[-1].to_status,
                                to_status=step.event, created_at=at))
        deployment = Deployment(
            id=deployment_id, service=service, environment=environment,
            version=f"{version[0]}.{version[1]}.{version[2]}", requester=requester, work_refs=tuple(work_refs),
            risk=rng.choice(RISKS) if environment == "production" or rng.random() < 0.3 else None,
            rollback_plan=rng.choice(ROLLBACK_PLANS), status=status,
            reviewed_by=reviewer if reviewed_at else None, reviewed_at=reviewed_at,
            created_at=stamp, updated_at=events[-1].created_at,
        )
        yield deployment, events


@dataclasses.dataclass(frozen=True)
class _Step:
    event: str
    delay_seconds: tuple[float, float]
    note: str | None = None


_APPROVE = _Step("approved", (120, 4 * 3600))
_START = _Step("started", (60, 1800))
_SUCCEED = _Step("succeeded", (120, 1500))
_FAIL = _Step("failed", (60, 1500), "health checks failed after rollout")
_ROLL_BACK = _Step("rolled_back", (300, 7200), "error rate rose; rolled back to the previous version")


def _history(status: str, rng: random.Random) -> list[_Step]:
    """The actions after creation that lead to ``status`` (the transition table, walked forwards)."""
    if status == "pending_approval":
        return []
    if status == "rejected":
        return [_Step("rejected", (120, 4 * 3600), "needs a rollback plan that covers the migration")]
    steps = [_APPROVE]
    if status == "approved":
        return steps
    steps.append(_START)
    if status == "started":
        return steps
    if status == "succeeded":
        return [*steps, _SUCCEED]
    if status == "failed":
        return [*steps, _FAIL]
    return [*steps, _SUCCEED if rng.random() < 0.7 else _FAIL, _ROLL_BACK]  # rolled_back


def seed(path: Path, size: int) -> float | None:
    """Fill a fresh file with ``size`` deployments; reuse it when it already has them.

    Returns the seconds spent seeding, or None when an existing file was reused.
    """
    if stored_count(path) == size:
        return None
    remove_database(path)
    started = time.perf_counter()
    repo = Repository(path)
    try:
        rows = generated_deployments(size, seed=20261126 + size)
        done = 0
        while done < size:
            batch = list(itertools.islice(rows, SEED_BATCH))
            # Seeding through create_deployment/apply_action would cost one
            # fsync'd transaction per action (about 4 million at 1M) and a
            # scripted clock to backdate two years of history.  So this reaches
            # for the repository's private transaction and row writers: many
            # rows per BEGIN IMMEDIATE, but the same INSERT statements,
            # constraints and triggers as the application, rather than a second
            # copy of its SQL that could drift from the schema.
            with repo._write() as conn:
                for deployment, events in batch:
                    deployments._insert_deployment(conn, deployment)
                    for event in events:
                        deployments._append_event(conn, event, deployments._chain_head(conn))
            done += len(batch)
            print(f"\r  seeding {path.name}: {done:,}/{size:,}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        repo.close()
    # Fold the WAL back into the main file so the timed runs start from a
    # checkpointed database, as a long-running server would mostly see.
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - started


# --- listing cases -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    filters: tuple[str, ...]  # which of service, environment and status are set
    ranged: bool  # whether created_after and created_before are set
    page: str  # "first" or "deep"

    def cells(self) -> str:
        return f"{'+'.join(self.filters) or '(none)'} | {'yes' if self.ranged else 'no'} | {self.page}"


def all_cases() -> list[Case]:
    combinations = [c for n in range(4) for c in itertools.combinations(("service", "environment", "status"), n)]
    return [Case(filters, ranged, page)
            for filters in combinations for ranged in (False, True) for page in ("first", "deep")]


@dataclasses.dataclass
class Prepared:
    """One case at one size, ready to time: its request URLs and the same queries for the repository."""

    urls: list[str]
    queries: list[listing.ListQuery]
    page_number: int  # the (deepest) page measured; 1 for the first page
    items: int  # items on that page
    http_ms: list[float] = dataclasses.field(default_factory=list)  # wall clock
    cpu_ms: list[float] = dataclasses.field(default_factory=list)  # on-CPU time of the same requests
    repo_ms: list[float] = dataclasses.field(default_factory=list)

    def clear(self) -> None:
        self.http_ms.clear()
        self.cpu_ms.clear()
        self.repo_ms.clear()


def prepare(client: Client, repo: Repository, case: Case, values: dict[str, str], deep_pages: int) -> Prepared | None:
    """Walk to the page the case measures, untimed.

    The deep case measures full pages only, so that it renders as many items
    at every size; it is None when the result has no full page after the first.
    """
    args = {name: values[name] for name in case.filters}
    if case.ranged:
        args["created_after"] = lifecycle.format_timestamp(RANGE_AFTER)
        args["created_before"] = lifecycle.format_timestamp(RANGE_BEFORE)

    def with_cursor(cursor: str | None) -> dict[str, str]:
        return args | {"cursor": cursor} if cursor else args

    def url(cursor: str | None) -> str:
        params = with_cursor(cursor)
        return f"/deployments?{urlencode(params)}" if params else "/deployments"

    page = _get_json(client, url(None))
    cursors: list[str | None] = [None]  # cursors[n - 1] opens page n
    sizes = [len(page["items"])]  # sizes[n - 1]: items on page n
    if case.page == "deep":
        while page["next_cursor"] is not None and len(cursors) < deep_pages:
            cursors.append(page["next_cursor"])
            page = _get_json(client, url(cursors[-1]))
            sizes.append(len(page["items"]))
        full = [n for n in range(2, len(cursors) + 1) if sizes[n - 1] == listing.DEFAULT_LIMIT]
        if not full:
            return None
        # Rotate over the last few full pages rather than hammering one.
        numbers = full[-DEEP_CURSORS:]
    else:
        numbers = [1]
    measured = [cursors[n - 1] for n in numbers]
    return Prepared(
        urls=[url(cursor) for cursor in measured],
        queries=[listing.parse_list_query({name: [value] for name, value in with_cursor(cursor).items()},
                                          bytes.fromhex(repo.setting("cursor_key")))
                 for cursor in measured],
        page_number=numbers[-1], items=sizes[numbers[-1] - 1],
    )


def _get_json(client: Client, url: str) -> dict:
    response = client.get(url)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}: {response.get_data(as_text=True)}")
    return response.get_json()


def time_requests(client: Client, repo: Repository, prepared: Prepared, count: int) -> None:
    """Time ``count`` requests through the WSGI app, each followed by the same query on the repository alone.

    Each request is timed twice: by the wall clock, which is what a client
    waits, and by this thread's CPU clock, which leaves out the time the
    thread sat descheduled while other work had the CPU.  On a shared machine
    the difference tells a slow request from a preempted one.
    """
    wall, cpu = time.perf_counter_ns, time.thread_time_ns
    for i in range(count):
        url, query = prepared.urls[i % len(prepared.urls)], prepared.queries[i % len(prepared.queries)]
        wall_start, cpu_start = wall(), cpu()
        response = client.get(url)
        response.get_data()
        cpu_end, wall_end = cpu(), wall()
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered {response.status_code}")
        prepared.http_ms.append((wall_end - wall_start) / 1e6)
        prepared.cpu_ms.append((cpu_end - cpu_start) / 1e6)
        wall_start = wall()
        repo.list_deployments(query)
        prepared.repo_ms.append((wall() - wall_start) / 1e6)


class GcPauses:
    """Python's garbage collections while it is installed: how many of each generation, and the longest."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.longest_ms = 0.0
        self._started = 0

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
        else:
            self.counts[info["generation"]] += 1
            self.longest_ms = max(self.longest_ms, (time.perf_counter_ns() - self._started) / 1e6)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest rank: the smallest sample with at least ``fraction`` of all samples at or below it."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def client_overhead_ms(iterations: int) -> float:
    """p50 of a request to a WSGI app that does nothing: what werkzeug.test.Client itself adds."""
    body = Response(b'{"items":[],"next_cursor":null}', mimetype="application/json")
    client = Client(lambda environ, start_response: body(environ, start_response))
    samples = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        client.get("/deployments?service=checkout&environment=production&status=succeeded").get_data()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return percentile(samples, 0.5)


def query_plan(repo: Repository, query: listing.ListQuery) -> str:
    """SQLite's plan for the statement ``list_deployments`` really runs for ``query`` (bound values inlined)."""
    statements: list[str] = []
    # The pool hands connections out last-in first-out, so on one thread the
    # connection borrowed here is the one list_deployments borrows next.
    with repo._read() as conn:
        conn.set_trace_callback(statements.append)
    try:
        repo.list_deployments(query)
    finally:
        with repo._read() as conn:
            conn.set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    if len(selects) != 1:
        raise RuntimeError(f"expected one SELECT from list_deployments, traced {statements!r}")
    with repo._read() as conn:
        return " / ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + selects[0]))


# --- requester combined with other filters (outside the targets) ----------------

# Any query with requester walks deployments_by_requester and checks the other
# filters row by row (deployapi.repository.pages._listing_index), so the cost follows how many
# of that requester's deployments precede the 51st match: small for a person
# (about 0.5% of the table each), large for a busy robot (ci-bot, about 10%)
# combined with a filter it rarely or never matches.  Until commit 035c2db such
# combinations walked the other filter's index instead; the "absent requester"
# rows are the ones that were slow then.  Timed at every size to show how the
# cost grows; not held to the targets.
REQUESTER_PROBES = (
    ("requester alone", {"requester": PEOPLE[0]}),
    ("requester + status", {"requester": PEOPLE[0], "status": "succeeded"}),
    ("absent requester + status", {"requester": "nobody.at-all", "status": "succeeded"}),
    ("absent requester + service + environment",
     {"requester": "nobody.at-all", "service": SERVICES[0], "environment": "production"}),
    ("busy requester (ci-bot) + status", {"requester": ROBOTS[0], "status": "succeeded"}),
    ("busy requester (ci-bot) + rare service", {"requester": ROBOTS[0], "service": SERVICES[-1]}),
    ("busy requester (ci-bot) + absent service", {"requester": ROBOTS[0], "service": "no-such-service"}),
)


def run_requester_probes(db_dir: Path, sizes: list[int], apps: dict, iterations: int
                         ) -> tuple[dict[tuple[int, str], tuple[list[float], list[float]]], dict[str, tuple[str, int]]]:
    """Time every requester probe at every size; the plan and index entries read at the largest size."""
    probes: dict[tuple[int, str], tuple[list[float], list[float]]] = {}
    probe_plans: dict[str, tuple[str, int]] = {}
    if not iterations:
        return probes, probe_plans
    clients = {size: Client(app) for size, app in apps.items()}
    largest = apps[sizes[-1]].repository
    for label, probe_args in REQUESTER_PROBES:
        print(f"requester probe: {label}", file=sys.stderr)
        for size in sizes:
            probes[size, label] = time_probe(clients[size], f"/deployments?{urlencode(probe_args)}", iterations)
        cursor_key = bytes.fromhex(largest.setting("cursor_key"))
        query = listing.parse_list_query({name: [value] for name, value in probe_args.items()}, cursor_key)
        probe_plans[label] = (query_plan(largest, query),
                              requester_entries_read(db_path(db_dir, sizes[-1]), probe_args, query.limit))
    return probes, probe_plans


def time_probe(client: Client, url: str, count: int, *, warm: bool = True) -> tuple[list[float], list[float]]:
    """Wall-clock and on-CPU milliseconds of ``count`` requests, after one untimed request if ``warm``."""
    if warm:
        _get_json(client, url)
    wall, cpu = [], []
    for _ in range(count):
        wall_start, cpu_start = time.perf_counter_ns(), time.thread_time_ns()
        response = client.get(url)
        response.get_data()
        cpu.append((time.thread_time_ns() - cpu_start) / 1e6)
        wall.append((time.perf_counter_ns() - wall_start) / 1e6)
    return wall, cpu


# --- GET /environments and GET /metrics/dora (--environments) ----------------------

# GET /environments seeks pair by pair (200 pairs in the seeded data) and
# returns up to IN_FLIGHT_SHOWN in-flight deployments per pair, so its answer
# grows with the in-flight deployments (abandoned approvals pile up with the
# table): it is held to an absolute budget, and its 1M/10k ratio is reported.
# GET /metrics/dora reads every deployment of its scope touched since `since`
# and their events, so it grows with the activity in its window, by design:
# reported, not held to a target.  The recent window is the last 30 days of
# the seeded history; the first half of 2026 shows what an old window costs
# (it also reads everything after it).
ENVIRONMENTS_TARGET_MS = 50.0
DORA_RECENT = (END - dt.timedelta(days=30), END)
DORA_HISTORICAL = (RANGE_AFTER, RANGE_BEFORE)


@dataclasses.dataclass(frozen=True)
class InsightCase:
    label: str
    path: str
    params: tuple[tuple[str, str], ...]
    held_to_target: bool

    def url(self) -> str:
        return f"{self.path}?{urlencode(self.params)}" if self.params else self.path


def insight_cases() -> list[InsightCase]:
    def window(bounds: tuple[dt.datetime, dt.datetime]) -> tuple[tuple[str, str], ...]:
        return ("since", lifecycle.format_timestamp(bounds[0])), ("until", lifecycle.format_timestamp(bounds[1]))

    pair = (("service", SERVICES[0]), ("environment", "production"))
    rare_pair = (("service", SERVICES[-1]), ("environment", "production"))
    return [
        InsightCase("environments: all", "/environments", (), True),
        InsightCase(f"environments: service={SERVICES[0]}", "/environments", (("service", SERVICES[0]),), True),
        InsightCase("environments: environment=production", "/environments", (("environment", "production"),),
                    True),
        InsightCase(f"dora: {SERVICES[-1]}/production, last 30 days", "/metrics/dora",
                    rare_pair + window(DORA_RECENT), False),
        InsightCase(f"dora: {SERVICES[0]}/production, last 30 days", "/metrics/dora",
                    pair + window(DORA_RECENT), False),
        InsightCase(f"dora: {SERVICES[0]}/production, 2026 H1", "/metrics/dora",
                    pair + window(DORA_HISTORICAL), False),
        InsightCase("dora: all services and environments, last 30 days", "/metrics/dora",
                    window(DORA_RECENT), False),
    ]


def run_insight_cases(sizes: list[int], apps: dict, iterations: int, dora_iterations: int, rounds: int
                      ) -> dict[tuple[int, InsightCase], tuple[list[float], list[float]]]:
    """Wall-clock and on-CPU ms of every case at every size, interleaved in shuffled rounds."""
    clients = {size: Client(app) for size, app in apps.items()}
    samples: dict[tuple[int, InsightCase], tuple[list[float], list[float]]] = {}
    runnable = [(size, case) for size in sizes for case in insight_cases()]
    for size, case in runnable:
        _get_json(clients[size], case.url())  # warm the page cache; fail early on a non-200
        samples[size, case] = ([], [])
    order = random.Random(2)
    for round_number in range(rounds):
        order.shuffle(runnable)
        for size, case in runnable:
            count = math.ceil((iterations if case.held_to_target else dora_iterations) / rounds)
            wall, cpu = time_probe(clients[size], case.url(), count, warm=False)
            samples[size, case][0].extend(wall)
            samples[size, case][1].extend(cpu)
        print(f"\r  insights timing: round {round_number + 1}/{rounds}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return samples


def insight_data(path: Path) -> dict[str, int]:
    """What the cases have to read in one seeded file: pairs, in-flight deployments, deployments and events in scope."""
    since = lifecycle.format_timestamp(DORA_RECENT[0])
    touched = ("SELECT count(*), sum((SELECT count(*) FROM deployment_events e WHERE e.deployment_id = d.id))"
               " FROM deployments d WHERE status IN ('approved', 'started', 'succeeded', 'failed', 'rolled_back')"
               " AND updated_at >= ?")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        pairs = conn.execute("SELECT count(*) FROM (SELECT DISTINCT service, environment FROM deployments)").fetchone()
        in_flight = conn.execute("SELECT count(*) FROM deployments WHERE status IN ('approved', 'started')").fetchone()
        everything = conn.execute(touched, (since,)).fetchone()
        one_pair = conn.execute(touched + " AND service = ? AND environment = 'production'",
                                (since, SERVICES[0])).fetchone()
    return {"pairs": pairs[0], "in flight": in_flight[0],
            "DORA, last 30 days, all: deployments": everything[0], "DORA, last 30 days, all: events": everything[1],
            f"DORA, last 30 days, {SERVICES[0]}/production: deployments": one_pair[0],
            f"DORA, last 30 days, {SERVICES[0]}/production: events": one_pair[1]}


def insight_plans(app) -> list[str]:
    """SQLite's plan for the statement GET /environments runs (traced, bound values inlined)."""
    repo = app.repository
    statements: list[str] = []
    with repo._read() as conn:
        conn.set_trace_callback(statements.append)
    try:
        _get_json(Client(app), "/environments")
    finally:
        with repo._read() as conn:
            conn.set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("WITH")]
    with repo._read() as conn:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + selects[0])]


def render_insights(write: Callable[[str], None], sizes: list[int],
                    samples: dict[tuple[int, InsightCase], tuple[list[float], list[float]]],
                    data: dict[int, dict[str, int]], plan: list[str]) -> list[str]:
    """The latency table, what each size holds, and the plan; returns the wall-clock target misses."""
    smallest, largest = sizes[0], sizes[-1]
    write("### GET /environments and GET /metrics/dora\n")
    write("Wall clock p50 / p99 and in brackets the on-CPU p99 (ms), through the WSGI app in-process. "
          f"`/environments` is held to a p99 under {ENVIRONMENTS_TARGET_MS:g} ms at every size; "
          "`/metrics/dora` is reported only.\n")
    write("| case | requests | " + " | ".join(f"{size_label(size)} p50 / p99 (CPU p99)" for size in sizes)
          + f" | p99 {size_label(largest)}/{size_label(smallest)} wall (CPU) |")
    write("|---|---:|" + "---:|" * len(sizes) + "---:|")
    misses: list[str] = []
    for case in insight_cases():
        cells = []
        for size in sizes:
            wall, cpu = samples[size, case]
            cells.append(f"{ms(percentile(wall, 0.5))} / {ms(percentile(wall, 0.99))} ({ms(percentile(cpu, 0.99))})")
        ratio_wall = percentile(samples[largest, case][0], 0.99) / percentile(samples[smallest, case][0], 0.99)
        ratio_cpu = percentile(samples[largest, case][1], 0.99) / percentile(samples[smallest, case][1], 0.99)
        for size in sizes:
            p99 = percentile(samples[size, case][0], 0.99)
            if case.held_to_target and p99 > ENVIRONMENTS_TARGET_MS:
                misses.append(f"{case.label}: p99 at {size_label(size)} is {ms(p99)} ms")
        write(f"| `{case.url()}` | {len(samples[largest, case][0])} | {' | '.join(cells)} | "
              f"{ratio_wall:.2f}x ({ratio_cpu:.2f}x) |")
    write("")
    write("What the cases read, per seeded file:\n")
    write("| | " + " | ".join(size_label(size) for size in sizes) + " |")
    write("|---|" + "---:|" * len(sizes))
    for name in data[smallest]:
        write(f"| {name} | " + " | ".join(f"{data[size][name] or 0:,}" for size in sizes) + " |")
    write("")
    write(f"Plan of the `GET /environments` statement at {size_label(largest)} (`EXPLAIN QUERY PLAN`):\n")
    write("```\n" + "\n".join(plan) + "\n```\n")
    write("- Target for `/environments`: " + (f"{len(misses)} missed." if misses else "met."))
    for miss in misses:
        write(f"  - {miss}")
    write("")
    return misses


# --- write cost of the listing indexes --------------------------------------------


def open_variants(variants: dict[str, Path], base: Path | None,
                  strip: dict[str, Callable[[sqlite3.Connection], None]]) -> dict[str, Repository]:
    """A repository on each file, fresh or a copy of ``base``; then ``strip[variant]`` on a variant's file.

    After start-up, because start-up runs schema.sql, which would create again
    whatever a strip drops.
    """
    for path in variants.values():
        remove_database(path)
        if base is not None:
            copy_database(base, path)
    repos = {variant: Repository(path) for variant, path in variants.items()}
    for variant, strip_variant in strip.items():
        with contextlib.closing(sqlite3.connect(variants[variant])) as conn:
            strip_variant(conn)
    return repos


def alternating(repos: dict[str, Repository], items: Sequence[T], rounds: int) -> Iterator[tuple[str, Repository, T]]:
    """Each item once per variant, the variants taking turns in ``rounds`` chunks.

    So that a burst of other work on the machine hits every variant alike.
    """
    chunk = math.ceil(len(items) / rounds)
    for start in range(0, len(items), chunk):
        for variant, repo in repos.items():
            for item in items[start:start + chunk]:
                yield variant, repo, item


def measure_creates(db_dir: Path, creates: int, rounds: int, base: Path | None) -> dict[str, object]:
    """create_deployment throughput, one transaction each, with and without the listing indexes.

    Both files start empty, or as copies of ``base``.  They are fed alternately
    in ``rounds`` chunks, so that a burst of other work on the machine hits both
    variants alike.
    """
    variants = {"with the listing indexes": db_dir / "creates-indexed.db",
                "without them": db_dir / "creates-bare.db"}
    dropped: list[str] = []

    def drop_listing_indexes(conn: sqlite3.Connection) -> None:
        dropped.extend(row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'"
            " AND (name = 'deployments_newest_first' OR name LIKE 'deployments\\_by\\_%' ESCAPE '\\')"
            " ORDER BY name"))
        for name in dropped:
            conn.execute(f'DROP INDEX "{name}"')

    repos = open_variants(variants, base, {"without them": drop_listing_indexes})
    rng = random.Random(7)
    requests = [_new_deployment(rng) for _ in range(creates)]
    samples: dict[str, list[float]] = {variant: [] for variant in variants}
    try:
        for variant, repo, request in alternating(repos, requests, rounds):
            began = time.perf_counter_ns()
            repo.create_deployment(request)
            samples[variant].append((time.perf_counter_ns() - began) / 1e6)
    finally:
        for repo in repos.values():
            repo.close()
        for path in variants.values():
            remove_database(path)
    return {"dropped": dropped, "samples": samples}


def _new_deployment(rng: random.Random) -> NewDeployment:
    service = rng.choices(SERVICES, SERVICE_WEIGHTS)[0]
    environment = rng.choices(ENVIRONMENTS, ENVIRONMENT_WEIGHTS)[0]
    return NewDeployment(
        service=service, environment=environment, version=f"1.{rng.randrange(50)}.{rng.randrange(500)}",
        requester=rng.choice(PEOPLE), work_refs=(f"{service.upper()[:4]}-{rng.randrange(100, 9999)}",),
        rollback_plan=rng.choice(ROLLBACK_PLANS), risk=rng.choice(RISKS) if environment == "production" else None,
    )


# --- report --------------------------------------------------------------------


def size_label(size: int) -> str:
    for unit, suffix in ((1_000_000, "M"), (1_000, "k")):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return f"{size:,}"


def ms(value: float) -> str:
    return f"{value:.2f}"


def target_misses(case: Case, by_size: list[Prepared | None], sizes: list[int], clock: str) -> list[str]:
    """What the case misses of the targets, judged on p99 of the wall clock or of on-CPU time."""
    found = []
    p99s = [None if p is None else percentile(p.http_ms if clock == "wall" else p.cpu_ms, 0.99) for p in by_size]
    if case.page == "first":
        found += [f"first page {ms(p99)} ms at {size_label(size)}"
                  for size, p99 in zip(sizes, p99s, strict=True) if p99 is not None and p99 >= FIRST_PAGE_TARGET_MS]
    if len(sizes) > 1 and p99s[0] is not None and p99s[-1] is not None \
            and p99s[-1] > SCALE_TARGET_RATIO * p99s[0]:
        found.append(f"p99 {p99s[-1] / p99s[0]:.1f}x of {size_label(sizes[0])}")
    return found


def render_header(write: Callable[[str], None], command: str, sizes: list[int],
                  seeding: dict[int, tuple[float | None, int]], runtime_s: float) -> None:
    """When, where and on which code the report was made, the command, and the seeded files."""
    write(f"Run on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {machine_description()}.")
    write(f"Measured {code_description()}. Total run time {runtime_s / 60:.1f} min.\n")
    write(f"```\n{command}\n```\n")
    write("Seeded files (reused between runs when they already hold the right number of deployments):\n")
    write("| deployments | file size | seeding time |")
    write("|---:|---:|---:|")
    for size in sizes:
        seconds, nbytes = seeding[size]
        write(f"| {size:,} | {nbytes / 2**20:,.0f} MiB | {'reused' if seconds is None else f'{seconds:.0f} s'} |")
    write("")


def render_probes(write: Callable[[str], None], sizes: list[int],
                  probes: dict[tuple[int, str], tuple[list[float], list[float]]],
                  probe_plans: dict[str, tuple[str, int]]) -> None:
    """The requester table: wall p50 / max and on-CPU p50 per size, the plan and the index entries read."""
    largest = sizes[-1]
    count = len(next(iter(probes.values()))[0])
    write("### Outside the targets: requester alone and combined with other filters\n")
    write("Any query with `requester` walks `deployments_by_requester` and checks the other filters row by row, "
          "so it reads that requester's deployments, newest first, until 51 match (one more than the page) or "
          f"they run out. First page; `requester={PEOPLE[0]}` (a person, about 0.5% of deployments), "
          f"`{ROBOTS[0]}` (a robot, about 10%) or `nobody.at-all` (none); rare service `{SERVICES[-1]}` "
          f"(about 0.5% of deployments). {count} requests each after one untimed one: wall clock p50 / max, "
          "and in brackets the on-CPU p50 (ms). The last column counts the requester-index entries the "
          f"query reads at {size_label(largest)}.\n")
    write("| query | " + " | ".join(f"{size_label(size)} p50 / max (CPU p50)" for size in sizes)
          + f" | plan at {size_label(largest)} | entries read at {size_label(largest)} |")
    write("|---|" + "---:|" * len(sizes) + "---|---:|")
    for label, _ in REQUESTER_PROBES:
        cells = []
        for size in sizes:
            wall, cpu = probes[size, label]
            cells.append(f"{ms(percentile(wall, 0.5))} / {ms(max(wall))} ({ms(percentile(cpu, 0.5))})")
        plan, entries = probe_plans[label]
        write(f"| {label} | {' | '.join(cells)} | `{plan}` | {entries:,} |")
    write("")


def requester_entries_read(path: Path, probe_args: dict[str, str], limit: int) -> int:
    """How many deployments_by_requester entries a first page reads before ``limit + 1`` rows match."""
    others = {name: value for name, value in probe_args.items() if name != "requester"}
    matched = read = 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT service, environment, status FROM deployments INDEXED BY deployments_by_requester"
                            " WHERE requester = ? ORDER BY created_at DESC, id DESC", (probe_args["requester"],))
        for service, environment, status in rows:
            read += 1
            row = {"service": service, "environment": environment, "status": status}
            matched += all(row[name] == value for name, value in others.items())
            if matched > limit:
                break
    return read


def render_report(*, command: str, sizes: list[int], values: dict[str, str], iterations: int, deep_pages: int,
                  seeding: dict[int, tuple[float | None, int]], prepared: dict[tuple[int, Case], Prepared | None],
                  plans: dict[Case, str], overhead: float, gc_pauses: GcPauses,
                  probes: dict[tuple[int, str], tuple[list[float], list[float]]],
                  probe_plans: dict[str, tuple[str, int]], creates: dict[str, dict[str, object]],
                  runtime_s: float) -> tuple[str, dict[str, list[str]]]:
    """The markdown report, and the missed targets judged on the wall clock, on CPU time, and by query plan."""
    smallest, largest = sizes[0], sizes[-1]
    cases = all_cases()
    misses: dict[str, list[str]] = {"wall": [], "CPU": [], "plan": []}
    out: list[str] = []
    write = out.append

    render_header(write, command, sizes, seeding, runtime_s)
    write(f"Filter values: `service={values['service']}`, `environment={values['environment']}`, "
          f"`status={values['status']}`; range: `created_after={lifecycle.format_timestamp(RANGE_AFTER)}`, "
          f"`created_before={lifecycle.format_timestamp(RANGE_BEFORE)}` ({(RANGE_BEFORE - RANGE_AFTER).days} days). "
          f"Limit {listing.DEFAULT_LIMIT} (the default). Deep page: page {deep_pages}, reached by following "
          f"`next_cursor` before timing starts, or the last full page when the result is shorter; the timed "
          f"requests rotate over the cursors of the last {DEEP_CURSORS} full pages walked, and the case is "
          f"n/a when no full page follows the first. {iterations} timed requests per case and size, "
          f"interleaved over sizes and cases in rounds. Times in milliseconds, in-process through "
          f"`werkzeug.test.Client(create_app(path))`, response body read.\n")

    write("### GET /deployments latency (ms)\n")
    write("Wall clock p50 / p99, and in brackets the p99 of the thread's on-CPU time for the same requests "
          "(which leaves out time spent descheduled while other processes ran; see the reading below).\n")
    header = " | ".join(f"{size_label(size)} p50 / p99 (CPU p99)" for size in sizes)
    write(f"| filters | range | page | {header} | p99 {size_label(largest)}/{size_label(smallest)} wall (CPU) "
          "| targets on wall clock | on CPU time |")
    write("|---|---|---|" + "---:|" * len(sizes) + "---:|---|---|")
    for case in cases:
        cells = []
        for size in sizes:
            p = prepared.get((size, case))
            cells.append("n/a" if p is None else f"{ms(percentile(p.http_ms, 0.5))} / "
                         f"{ms(percentile(p.http_ms, 0.99))} ({ms(percentile(p.cpu_ms, 0.99))})")
        small, large = prepared.get((smallest, case)), prepared.get((largest, case))
        ratio = ""
        if small and large and len(sizes) > 1:
            ratio = (f"{percentile(large.http_ms, 0.99) / percentile(small.http_ms, 0.99):.2f}x "
                     f"({percentile(large.cpu_ms, 0.99) / percentile(small.cpu_ms, 0.99):.2f}x)")
        verdicts = {}
        for clock in ("wall", "CPU"):
            found = target_misses(case, [prepared.get((size, case)) for size in sizes], sizes, clock)
            verdicts[clock] = "MISS: " + "; ".join(found) if found else "ok"
            misses[clock] += [f"{case.cells().replace(' | ', ', ')}: {miss}" for miss in found]
        write(f"| {case.cells()} | {' | '.join(cells)} | {ratio} | {verdicts['wall']} | {verdicts['CPU']} |")
    write("")
    stalled = {size: [wall - cpu for (at, _), p in prepared.items() if p is not None and at == size
                      for wall, cpu in zip(p.http_ms, p.cpu_ms, strict=True)] for size in sizes}
    write("Requests whose wall time exceeded their on-CPU time by more than 1 ms (descheduled, or waiting for "
          "I/O): " + ", ".join(
              f"{size_label(size)} {sum(d > 1 for d in gaps) / len(gaps):.1%} of {len(gaps):,}"
              for size, gaps in stalled.items() if gaps) + ". "
          f"Python garbage collections during timing: gen0 {gc_pauses.counts[0]:,}, gen1 {gc_pauses.counts[1]:,}, "
          f"gen2 {gc_pauses.counts[2]:,}; the longest took {ms(gc_pauses.longest_ms)} ms.\n")

    write("### Where the time goes\n")
    write("The repository call alone (`Repository.list_deployments`: SQL and SQLite's JSON), timed right after "
          "each request, next to the page number the deep case reached and the items on it. "
          f"What werkzeug.test.Client itself adds to a request (a do-nothing WSGI app): {ms(overhead)} ms p50.\n")
    header = " | ".join(f"repository {size_label(size)} p50 / p99" for size in sizes)
    write(f"| filters | range | page | page no. (items) {' / '.join(size_label(s) for s in sizes)} | "
          f"{header} | HTTP − repository p50 at {size_label(largest)} |")
    write("|---|---|---|---:|" + "---:|" * len(sizes) + "---:|")
    for case in cases:
        pages, cells = [], []
        for size in sizes:
            p = prepared.get((size, case))
            pages.append("–" if p is None else f"{p.page_number} ({p.items})")
            cells.append("–" if p is None else f"{ms(percentile(p.repo_ms, 0.5))} / {ms(percentile(p.repo_ms, 0.99))}")
        large = prepared.get((largest, case))
        rest = ms(percentile(large.http_ms, 0.5) - percentile(large.repo_ms, 0.5)) if large else "–"
        write(f"| {case.cells()} | {' / '.join(pages)} | {' | '.join(cells)} | {rest} |")
    write("")

    write(f"### Query plans at {size_label(largest)}\n")
    write("`EXPLAIN QUERY PLAN` of the statement the repository ran (captured with a trace callback) for the "
          "deep page of each case; the first page's plan is the same without the `(created_at,id)<(?,?)` term.\n")
    write("| filters | range | plan |")
    write("|---|---|---|")
    for case in cases:
        if case.page == "deep" and case in plans:
            write(f"| {case.cells().rsplit(' | ', 1)[0]} | `{plans[case]}` |")
    # One pass over one index in listing order: SEARCH with a range, or SCAN in
    # index order for the unfiltered first page; never a sort (TEMP B-TREE).
    bad = [case for case, plan in plans.items()
           if not plan.startswith(("SEARCH deployments USING INDEX", "SCAN deployments USING INDEX"))
           or "TEMP B-TREE" in plan or " / " in plan]
    for case in bad:
        misses["plan"].append(f"{case.cells().replace(' | ', ', ')}: not one index range scan: {plans[case]}")
    write("")

    if probes:
        render_probes(write, sizes, probes, probe_plans)

    if creates:
        dropped = next(iter(creates.values()))["dropped"]
        write("### Write cost of the listing indexes\n")
        write("`Repository.create_deployment`, one `BEGIN IMMEDIATE` transaction (`synchronous=FULL`) each, "
              "on two files fed alternately in chunks: one with the schema as it is, one where these indexes "
              f"were dropped after start-up: {', '.join(dropped)}.\n")  # type: ignore[arg-type]
        write("| database | variant | creates | creates/s | p50 ms | p99 ms |")
        write("|---|---|---:|---:|---:|---:|")
        ratios = []
        for database, result in creates.items():
            rates = []
            for variant, values_ms in result["samples"].items():  # type: ignore[union-attr]
                rates.append(len(values_ms) / (sum(values_ms) / 1000))
                write(f"| {database} | {variant} | {len(values_ms):,} | {rates[-1]:,.0f} | "
                      f"{ms(percentile(values_ms, 0.5))} | {ms(percentile(values_ms, 0.99))} |")
            with_rate, without_rate = rates
            ratios.append(f"{database}: throughput with the indexes is {with_rate / without_rate:.2f}x of "
                          f"without, {(1 / with_rate - 1 / without_rate) * 1000:+.2f} ms per create")
        write("")
        for line in ratios:
            write(f"- {line}.")
        write("")

    write("### Targets\n")
    write(f"p99 at {size_label(largest)} within {SCALE_TARGET_RATIO:g}x of p99 at {size_label(smallest)} "
          f"for every case; every first page under {FIRST_PAGE_TARGET_MS:g} ms p99; every plan one index "
          "range scan without a sort.\n")
    for kind, title in (("wall", "On the wall clock"), ("CPU", "On on-CPU time"), ("plan", "Query plans")):
        write(f"- {title}: " + (f"{len(misses[kind])} missed" if misses[kind] else "all met") + ".")
        for miss in misses[kind]:
            write(f"  - {miss}")
    return "\n".join(out) + "\n", misses


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="comma-separated numbers of deployments (default %(default)s)")
    parser.add_argument("--db-dir", type=Path, default=Path("/tmp/deployapi-bench"),
                        help="where the seeded files are kept between runs (default %(default)s)")
    parser.add_argument("--iterations", type=int, default=1000,
                        help="timed requests per case and size (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaving rounds (default 10)")
    parser.add_argument("--deep-pages", type=int, default=200, help="page number of the deep case (default 200)")
    parser.add_argument("--creates", type=int, default=3000, help="creates per variant, 0 to skip (default 3000)")
    parser.add_argument("--creates-on-largest", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure creates on two copies of the largest seeded file (default on)")
    parser.add_argument("--requester-iterations", type=int, default=20,
                        help="requests per requester probe and size, 0 to skip (default %(default)s)")
    parser.add_argument("--requester-only", action="store_true",
                        help="time only the requester probes (no listing cases, no creates; nothing enforced); "
                             "report in <db-dir>/bench_listing_requester.md unless --output is given")
    parser.add_argument("--environments", action="store_true",
                        help="time only GET /environments and GET /metrics/dora (no listing cases, no creates); "
                             "report in <db-dir>/bench_environments.md unless --output is given")
    parser.add_argument("--environments-iterations", type=int, default=300,
                        help="timed GET /environments requests per case and size (default %(default)s)")
    parser.add_argument("--dora-iterations", type=int, default=20,
                        help="timed GET /metrics/dora requests per case and size (default %(default)s)")
    parser.add_argument("--service", default=SERVICES[0], help="value of the service filter (default %(default)s)")
    parser.add_argument("--environment", default="production", help="default %(default)s")
    parser.add_argument("--status", default="succeeded", help="default %(default)s")
    parser.add_argument("--output", type=Path, help="markdown report (default <db-dir>/bench_listing.md)")
    args = parser.parse_args(argv)
    sizes = sorted({int(size.replace("_", "")) for size in args.sizes.split(",")})
    values = {"service": args.service, "environment": args.environment, "status": args.status}
    args.db_dir.mkdir(parents=True, exist_ok=True)
    output = args.output or args.db_dir / ("bench_listing_requester.md" if args.requester_only
                                           else "bench_environments.md" if args.environments else "bench_listing.md")
    command = " ".join([os.path.relpath(sys.executable), *map(shlex.quote, sys.argv)])
    began = time.perf_counter()
    print(machine_description(), file=sys.stderr)

    seeding: dict[int, tuple[float | None, int]] = {}
    for size in sizes:
        path = db_path(args.db_dir, size)
        seconds = seed(path, size)
        seeding[size] = (seconds, path.stat().st_size)
        print(f"{size:,} deployments in {path} ({'reused' if seconds is None else f'seeded in {seconds:.0f} s'})",
              file=sys.stderr)

    apps = {size: create_app(db_path(args.db_dir, size)) for size in sizes}
    if args.requester_only:
        try:
            probes, probe_plans = run_requester_probes(args.db_dir, sizes, apps, args.requester_iterations or 20)
        finally:
            for app in apps.values():
                app.close()
        out: list[str] = []
        render_header(out.append, command, sizes, seeding, time.perf_counter() - began)
        render_probes(out.append, sizes, probes, probe_plans)
        report = "\n".join(out) + "\n"
        print(report)
        output.write_text(report, encoding="utf-8")
        print(f"report written to {output}", file=sys.stderr)
        return 0

    if args.environments:
        try:
            insight_samples = run_insight_cases(sizes, apps, args.environments_iterations, args.dora_iterations,
                                                args.rounds)
            plan = insight_plans(apps[sizes[-1]])
        finally:
            for app in apps.values():
                app.close()
        data = {size: insight_data(db_path(args.db_dir, size)) for size in sizes}
        out = []
        render_header(out.append, command, sizes, seeding, time.perf_counter() - began)
        insight_misses = render_insights(out.append, sizes, insight_samples, data, plan)
        report = "\n".join(out) + "\n"
        print(report)
        output.write_text(report, encoding="utf-8")
        print(f"report written to {output}", file=sys.stderr)
        return 1 if insight_misses else 0

    clients = {size: Client(app) for size, app in apps.items()}
    cases = all_cases()
    prepared: dict[tuple[int, Case], Prepared | None] = {}
    plans: dict[Case, str] = {}
    try:
        for size in sizes:
            started = time.perf_counter()
            for case in cases:
                p = prepare(clients[size], apps[size].repository, case, values, args.deep_pages)
                prepared[size, case] = p
                if p is not None:
                    # Warm the pooled connection's page cache, then forget the samples.
                    time_requests(clients[size], apps[size].repository, p, 10)
                    p.clear()
                    if size == sizes[-1]:
                        plans[case] = query_plan(apps[size].repository, p.queries[0])
            print(f"{size_label(size)}: cases prepared in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        overhead = client_overhead_ms(1000)

        runnable = [(size, case) for (size, case), p in prepared.items() if p is not None]
        order = random.Random(1)
        per_round = math.ceil(args.iterations / args.rounds)
        with GcPauses() as gc_pauses:
            for round_number in range(args.rounds):
                # A fresh order each round, so no size or case always follows the same neighbour.
                order.shuffle(runnable)
                for size, case in runnable:
                    time_requests(clients[size], apps[size].repository, prepared[size, case], per_round)
                print(f"\r  timing: round {round_number + 1}/{args.rounds}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)

        probes, probe_plans = run_requester_probes(args.db_dir, sizes, apps, args.requester_iterations)
    finally:
        for app in apps.values():
            app.close()

    creates: dict[str, dict[str, object]] = {}
    if args.creates:
        print(f"creates: {args.creates:,} per variant on fresh files", file=sys.stderr)
        creates["fresh file"] = measure_creates(args.db_dir, args.creates, args.rounds, None)
        if args.creates_on_largest:
            largest = f"copy of the {size_label(sizes[-1])} file"
            print(f"creates: {args.creates:,} per variant on a {largest}", file=sys.stderr)
            creates[largest] = measure_creates(args.db_dir, args.creates, args.rounds, db_path(args.db_dir, sizes[-1]))

    report, misses = render_report(
        command=command, sizes=sizes, values=values, iterations=per_round * args.rounds,
        deep_pages=args.deep_pages, seeding=seeding, prepared=prepared, plans=plans, overhead=overhead,
        gc_pauses=gc_pauses, probes=probes, probe_plans=probe_plans, creates=creates,
        runtime_s=time.perf_counter() - began)
    print(report)
    output.write_text(report, encoding="utf-8")
    print(f"report written to {output}", file=sys.stderr)
    return 1 if misses["wall"] or misses["plan"] else 0


if __name__ == "__main__":
    sys.exit(main())
