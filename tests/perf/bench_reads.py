"""Load benchmark for the event feed (filtered, and from a time) and ``GET /metrics/dora`` at 100k and 1M deployments.

Not part of the test suite (pytest collects ``test_*.py`` only).  From the
project root::

    .venv/bin/python tests/perf/bench_reads.py --sizes 100000,1000000 --db-dir /tmp/deployapi-bench

What it does, in order:

1. Seeds the files of bench_listing.py that are missing (``listing-v9-<size>.db``),
   then copies each to ``reads-v9-<size>-<flavour>.db`` and opens the copy
   with the deployapi under test, so the shared seeded files are never
   changed.  ``flavour`` is ``derived`` when that deployapi has the tables
   derived from events (deployment_event_scopes, deployment_steps; the copy
   is then backfilled with ``repository.backfill_derived_rows``, timed) and
   ``events`` otherwise (an older build: measure it with ``PYTHONPATH``).
   Copies are reused on later runs.
2. Through the real WSGI app in-process times every feed and DORA case,
   interleaved over sizes and cases in shuffled rounds, by the wall clock and
   the thread's CPU clock, and counts the SQLite VM steps of one more request
   of each (deterministic: what grows with the history shows there first).
   For each ``since`` case it also counts (and times once) the steps of the
   same page read from ``after`` without the bound the repository finds in
   deployment_events_by_created_at: what the index saves.  ``--cases TEXT``
   keeps the cases whose label contains TEXT.
3. ``--server``: starts ``deployapi serve --threads 4`` on the largest copy and
   times ``GET /healthz`` alone, then while four clients keep asking for the
   most expensive DORA window the build accepts (the measured defect: four of
   them pushed /healthz to seconds).
4. ``--writes N``: a create and three actions (approve, start, succeed), each
   its own transaction, N times, on files fed in turn: the schema as it is,
   and the same without each part of what the derived tables and the feed's
   indexes add (dropped after start-up; WRITE_VARIANTS, or the ones named by
   ``--write-variants``).  Once on fresh files, once on copies of the largest
   file.  That is the write cost of each part.
5. Prints a markdown report and writes it to ``--output`` (default
   ``<db-dir>/bench_reads.md``); docs/performance.md quotes it.

To measure the build before a change, export it and put it first on the path::

    git archive <commit> | tar -x -C /tmp/deployapi-before
    PYTHONPATH=/tmp/deployapi-before .venv/bin/python tests/perf/bench_reads.py ...
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import math
import os
import random
import shlex
import sqlite3
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlencode

from bench_listing import (
    DATASET_VERSION,
    END,
    SERVICES,
    _new_deployment,
    alternating,
    copy_database,
    db_path,
    ms,
    open_variants,
    percentile,
    remove_database,
    render_header,
    seed,
    size_label,
    stored_count,
)
from werkzeug.test import Client

from deployapi import create_app, lifecycle, listing, repository
from deployapi.lifecycle import ActionRequest
from deployapi.repository import Repository, pages

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from server_process import Server  # noqa: E402  (tests/server_process.py)

DERIVED = hasattr(repository, "backfill_derived_rows")
SINCE = hasattr(pages, "SINCE_FIRST_ID_SQL")  # a build whose feed takes since
FLAVOUR = "derived" if DERIVED else "events"
# How far behind the head the tailing feed cases start: a consumer a few
# minutes behind at 1M deployments' rate.
TAIL = 2_000
RARE_SERVICE = SERVICES[-1]


def stamp(moment: dt.datetime) -> str:
    return lifecycle.format_timestamp(moment)


@dataclasses.dataclass(frozen=True)
class ReadCase:
    label: str
    path: str
    params: tuple[tuple[str, str], ...]
    tail: bool = False  # the feed starts TAIL events behind the head
    iterations: int = 1  # multiplier of --iterations (expensive cases get fewer)

    def url(self, head: int) -> str:
        params = self.params + ((("after", str(head - TAIL)),) if self.tail else ())
        return f"{self.path}?{urlencode(params)}" if params else self.path

    def shown(self) -> str:
        return self.url(TAIL).replace(f"after={TAIL - TAIL}", f"after=head-{TAIL}") if self.tail else self.url(0)


def read_cases() -> list[ReadCase]:
    recent = (("since", stamp(END - dt.timedelta(days=30))), ("until", stamp(END)))
    quarter = (("since", stamp(END - dt.timedelta(days=92))), ("until", stamp(END)))
    past_quarter = (("since", "2025-01-01T00:00:00Z"), ("until", "2025-04-01T00:00:00Z"))
    everything = (("since", "2000-01-01T00:00:00Z"), ("until", stamp(END)))
    pair = (("service", SERVICES[0]), ("environment", "production"))

    def since(delta: dt.timedelta, *more: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        return (("since", stamp(END - delta)), *more)

    day = dt.timedelta(days=1)
    return [
        ReadCase("feed: since an hour before the end, from the start", "/events", since(dt.timedelta(hours=1))),
        ReadCase("feed: since a day before the end, from the start", "/events", since(day)),
        ReadCase("feed: since 30 days before the end, from the start", "/events", since(30 * day)),
        ReadCase("feed: since a year before the end (mid-history), from the start", "/events", since(365 * day)),
        ReadCase("feed: since 700 days before the end, from the start", "/events", since(700 * day)),
        ReadCase("feed: since 2000 (before the history), from the start", "/events",
                 (("since", "2000-01-01T00:00:00Z"),)),
        ReadCase("feed: since 30 days before the end, tailing", "/events", since(30 * day), tail=True),
        ReadCase("feed: since a day before the end&type=rejected, from the start", "/events",
                 since(day, ("type", "rejected"))),
        ReadCase(f"feed: since a day before the end&service={SERVICES[0]}, from the start", "/events",
                 since(day, ("service", SERVICES[0]))),
        ReadCase("feed: type=rejected, from the start", "/events", (("type", "rejected"),)),
        ReadCase("feed: type=rejected, tailing", "/events", (("type", "rejected"),), tail=True),
        ReadCase(f"feed: service={SERVICES[0]}, from the start", "/events", (("service", SERVICES[0]),)),
        ReadCase(f"feed: service={SERVICES[0]}, tailing", "/events", (("service", SERVICES[0]),), tail=True),
        ReadCase(f"feed: service={RARE_SERVICE}, from the start", "/events", (("service", RARE_SERVICE),)),
        ReadCase("feed: environment=production, tailing", "/events", (("environment", "production"),), tail=True),
        ReadCase(f"feed: service={RARE_SERVICE}&environment=sandbox&type=rolled_back, from the start",
                 "/events", (("service", RARE_SERVICE), ("environment", "sandbox"), ("type", "rolled_back"))),
        ReadCase(f"dora: {SERVICES[0]}/production, last 30 days", "/metrics/dora", pair + recent),
        ReadCase(f"dora: {SERVICES[0]}/production, 2025 Q1", "/metrics/dora", pair + past_quarter),
        ReadCase("dora: all, last 30 days", "/metrics/dora", recent),
        ReadCase("dora: all, last 92 days", "/metrics/dora", quarter),
        ReadCase("dora: all, 2025 Q1", "/metrics/dora", past_quarter),
        ReadCase("dora: all, since 2000 (all of history)", "/metrics/dora", everything, iterations=0),
    ]


# --- files ------------------------------------------------------------------------


def reads_copy(db_dir: Path, size: int) -> tuple[Path, dict[str, float]]:
    """The copy of the seeded file this build reads, made (and backfilled) when missing; what that took."""
    # Named after the seeded data too, so that a copy of older data is not reused.
    source, path = db_path(db_dir, size), db_dir / f"reads-v{DATASET_VERSION}-{size}-{FLAVOUR}.db"
    timings: dict[str, float] = {}
    if stored_count(path) != size:
        remove_database(path)
        started = time.perf_counter()
        copy_database(source, path)
        timings["copy s"] = time.perf_counter() - started
    started = time.perf_counter()
    # Start-up: schema.sql builds any new index, table and trigger, and a
    # migration fills the derived tables for the events already there.
    repo = Repository(path)
    timings["start-up s"] = time.perf_counter() - started
    repo.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path, timings


# --- in-process reads ---------------------------------------------------------------


def timed_get(client: Client, url: str) -> tuple[float, float, int]:
    wall_start, cpu_start = time.perf_counter_ns(), time.thread_time_ns()
    response = client.get(url)
    response.get_data()
    return (time.perf_counter_ns() - wall_start) / 1e6, (time.thread_time_ns() - cpu_start) / 1e6, \
        response.status_code


def vm_steps(app, url: str) -> tuple[int, int]:
    """SQLite VM steps of one request (counted in hundreds by a progress handler), and its status."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    with app.repository._read() as conn:
        conn.set_progress_handler(count, 100)
    try:
        status = Client(app).get(url).status_code
    finally:
        with app.repository._read() as conn:
            conn.set_progress_handler(None, 100)
    return steps * 100, status


def unbounded_since_read(app, case: ReadCase, head: int) -> tuple[int, float] | None:
    """VM steps and ms of a ``since`` case's page read from ``after`` as is, without the bound; None for others."""
    params = dict(case.params + ((("after", str(head - TAIL)),) if case.tail else ()))
    if not SINCE or case.path != "/events" or "since" not in params:
        return None
    since = listing.canonical_timestamp(params["since"])
    scope = {name: params[name] for name in ("service", "environment") if name in params}
    after, event_type = int(params.get("after", 0)), params.get("type")
    sql, parameters = (pages.scoped_feed_sql(after, 100, scope, event_type, since) if scope
                       else pages.feed_sql(after, 100, event_type, since))
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    with app.repository._read() as conn:
        conn.set_progress_handler(count, 100)
        try:
            started = time.perf_counter()
            conn.execute(sql, parameters).fetchall()
            elapsed = (time.perf_counter() - started) * 1000
        finally:
            conn.set_progress_handler(None, 100)
    return steps * 100, elapsed


@dataclasses.dataclass
class Samples:
    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)
    status: int = 0
    items: int | None = None
    steps: int = 0
    unbounded: tuple[int, float] | None = None  # a since case read without the bound: VM steps, ms


def run_reads(apps: dict, heads: dict[int, int], iterations: int, rounds: int,
              cases: list[ReadCase]) -> dict[tuple[int, ReadCase], Samples]:
    clients = {size: Client(app) for size, app in apps.items()}
    samples: dict[tuple[int, ReadCase], Samples] = {}
    runnable = []
    for size in apps:
        for case in cases:
            url = case.url(heads[size])
            response = clients[size].get(url)
            body = response.get_json()
            s = samples[size, case] = Samples(status=response.status_code)
            if response.status_code == 200 and "items" in body:
                s.items = len(body["items"])
            s.steps, _ = vm_steps(apps[size], url)
            s.unbounded = unbounded_since_read(apps[size], case, heads[size])
            runnable.append((size, case))
            print(f"  {size_label(size)} {case.label}: {response.status_code}, {s.steps:,} VM steps",
                  file=sys.stderr)
    order = random.Random(3)
    for round_number in range(rounds):
        order.shuffle(runnable)
        for size, case in runnable:
            count = math.ceil(iterations * case.iterations / rounds) or (1 if round_number < 2 else 0)
            for _ in range(count):
                wall, cpu, _ = timed_get(clients[size], case.url(heads[size]))
                samples[size, case].wall.append(wall)
                samples[size, case].cpu.append(cpu)
        print(f"\r  reads: round {round_number + 1}/{rounds}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return samples


# --- /healthz under DORA load (--server) --------------------------------------------------


def heaviest_dora_url() -> str:
    """The most expensive DORA request this build answers: all of history, or the longest window allowed."""
    try:
        from deployapi.insights import MAX_WINDOW
    except ImportError:
        since = "2000-01-01T00:00:00Z"
    else:
        since = stamp(END - MAX_WINDOW)
    return f"/metrics/dora?{urlencode({'since': since, 'until': stamp(END)})}"


def health_under_load(path: Path, seconds: float, clients: int) -> dict[str, object]:
    def get(url: str) -> tuple[float, int]:
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=600) as response:
            response.read()
            return (time.perf_counter() - started) * 1000, response.status

    server = Server("--db", str(path), "--threads", "4", cwd=path.parent, timeout=600)
    try:
        idle = [get(server.url + "/healthz")[0] for _ in range(20)]
        heavy = heaviest_dora_url()
        stop = threading.Event()
        dora_ms: list[float] = []
        statuses: set[int] = set()

        def load() -> None:
            while not stop.is_set():
                elapsed, status = get(server.url + heavy)
                dora_ms.append(elapsed)
                statuses.add(status)

        threads = [threading.Thread(target=load, daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(1)
        loaded, deadline = [], time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            loaded.append(get(server.url + "/healthz")[0])
            time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        server.stop()
    return {"idle": idle, "loaded": loaded, "dora": dora_ms, "url": heavy, "statuses": sorted(statuses)}


# --- write cost (--writes) ----------------------------------------------------------------

# What this change adds to every write, and the variants that go without
# parts of it (dropped after start-up): the differences between them are the
# write cost of each part.
_TYPE_INDEX = "DROP INDEX IF EXISTS deployment_events_by_type"
_CREATED_AT_INDEX = "DROP INDEX IF EXISTS deployment_events_by_created_at"
_TRIGGER = "DROP TRIGGER IF EXISTS deployment_events_derive"
_SCOPE_INDEXES = tuple(f"DROP INDEX IF EXISTS deployment_event_scopes_by_{name}"
                       for name in ("service", "environment"))
WRITE_VARIANTS = {
    "as committed": (),
    "without deployment_events_by_type": (_TYPE_INDEX,),
    "without the two deployment_event_scopes indexes": _SCOPE_INDEXES,
    "without the trigger (no derived rows)": (_TRIGGER,),
    "without any of it (the write path before)": (_TYPE_INDEX, _TRIGGER, *_SCOPE_INDEXES),
    "without deployment_events_by_created_at (GET /events?since=)": (_CREATED_AT_INDEX,),
}


def measure_writes(db_dir: Path, count: int, rounds: int, base: Path | None,
                   chosen: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """ms per transaction of a create and of each action, in each of the ``chosen`` WRITE_VARIANTS."""
    def dropping(statements: tuple[str, ...]) -> Callable[[sqlite3.Connection], None]:
        return lambda conn: [conn.execute(statement) for statement in statements]

    variants = {variant: db_dir / f"writes-{number}.db" for number, variant in enumerate(WRITE_VARIANTS)
                if variant in chosen}
    repos = open_variants(variants, base, {variant: dropping(WRITE_VARIANTS[variant]) for variant in variants})
    rng = random.Random(11)
    requests = [_new_deployment(rng) for _ in range(count)]
    samples = {variant: {"create": [], "action": []} for variant in variants}
    try:
        for variant, repo, request in alternating(repos, requests, rounds):
            began = time.perf_counter_ns()
            deployment = repo.create_deployment(request)
            samples[variant]["create"].append((time.perf_counter_ns() - began) / 1e6)
            for action, actor in (("approve", "reviewer.bench"), ("start", "ci-bot"), ("succeed", "ci-bot")):
                began = time.perf_counter_ns()
                repo.apply_action(deployment.id, ActionRequest(action, actor, None))
                samples[variant]["action"].append((time.perf_counter_ns() - began) / 1e6)
    finally:
        for repo in repos.values():
            repo.close()
        for path in variants.values():
            remove_database(path)
    return samples


# --- report -----------------------------------------------------------------------------


def render(write: Callable[[str], None], sizes: list[int], samples: dict[tuple[int, ReadCase], Samples],
           timings: dict[int, dict[str, float]], health: dict[str, object] | None,
           writes: dict[str, dict[str, dict[str, list[float]]]], cases: list[ReadCase]) -> None:
    write(f"Build: {'with' if DERIVED else 'without'} the derived tables (copies `reads-v1-<size>-{FLAVOUR}.db`).\n")
    write("| copy | " + " | ".join(size_label(size) for size in sizes) + " |")
    write("|---|" + "---:|" * len(sizes))
    for name in ("copy s", "start-up s", "backfill s"):
        write(f"| {name} | " + " | ".join(f"{timings[size][name]:.1f}" if name in timings[size] else "–"
                                          for size in sizes) + " |")
    write("")
    write("Wall clock p50 / p99 (on-CPU p99) in ms; status, items on the page (feed) and SQLite VM steps "
          "of one request.\n")
    write("| case | " + " | ".join(f"{size_label(size)}" for size in sizes) + " |")
    write("|---|" + "---|" * len(sizes))
    for case in cases:
        cells = []
        for size in sizes:
            s = samples[size, case]
            timing = (f"{ms(percentile(s.wall, 0.5))} / {ms(percentile(s.wall, 0.99))} "
                      f"({ms(percentile(s.cpu, 0.99))})") if s.wall else "–"
            items = f", {s.items} items" if s.items is not None else ""
            cells.append(f"{timing}; {s.status}{items}, {s.steps:,} steps, n={len(s.wall)}")
        write(f"| `{case.shown()}` | {' | '.join(cells)} |")
    write("")
    unbounded = [case for case in cases if samples[sizes[0], case].unbounded is not None]
    if unbounded:
        write("The `since` cases' page read from `after` as is, without the bound from "
              "`deployment_events_by_created_at` (one read each): VM steps, ms.\n")
        write("| case | " + " | ".join(size_label(size) for size in sizes) + " |")
        write("|---|" + "---:|" * len(sizes))
        for case in unbounded:
            cells = [f"{samples[size, case].unbounded[0]:,} steps, {ms(samples[size, case].unbounded[1])}"
                     for size in sizes]
            write(f"| `{case.shown()}` | {' | '.join(cells)} |")
        write("")
    if health:
        write(f"`GET /healthz` on `deployapi serve --threads 4` ({size_label(sizes[-1])}), alone and while four "
              f"clients loop on `{health['url']}` (statuses {health['statuses']}):\n")
        write("| | requests | p50 ms | max ms |")
        write("|---|---:|---:|---:|")
        for name in ("idle", "loaded", "dora"):
            values = health[name]
            if values:
                write(f"| {name} | {len(values)} | {ms(statistics.median(values))} | {ms(max(values))} |")
        write("")
    for base, by_variant in writes.items():
        write(f"Writes on {base}, one transaction each (p50 / p99 ms):\n")
        write("| variant | creates | create p50 / p99 | actions | action p50 / p99 |")
        write("|---|---:|---:|---:|---:|")
        for variant, kinds in by_variant.items():
            create, action = kinds["create"], kinds["action"]
            write(f"| {variant} | {len(create):,} | {ms(percentile(create, 0.5))} / {ms(percentile(create, 0.99))} "
                  f"| {len(action):,} | {ms(percentile(action, 0.5))} / {ms(percentile(action, 0.99))} |")
        write("")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated sizes (default %(default)s)")
    parser.add_argument("--db-dir", type=Path, default=Path("/tmp/deployapi-bench"),
                        help="where the seeded files and the copies are kept (default %(default)s)")
    parser.add_argument("--iterations", type=int, default=20, help="timed requests per case and size (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaving rounds (default 5)")
    parser.add_argument("--server", action="store_true", help="also time /healthz under DORA load on the largest size")
    parser.add_argument("--server-seconds", type=float, default=20, help="length of the loaded phase (default 20)")
    parser.add_argument("--writes", type=int, default=0, help="deployments (create + 3 actions) per write variant")
    parser.add_argument("--write-variants", help="comma-separated names of WRITE_VARIANTS to measure (default all)")
    parser.add_argument("--cases", help="only the read cases whose label contains this text")
    parser.add_argument("--output", type=Path, help="markdown report (default <db-dir>/bench_reads.md)")
    args = parser.parse_args(argv)
    sizes = sorted({int(size.replace("_", "")) for size in args.sizes.split(",")})
    cases = [case for case in read_cases() if args.cases is None or args.cases in case.label]
    chosen = list(WRITE_VARIANTS) if args.write_variants is None else args.write_variants.split(",")
    unknown = set(chosen) - set(WRITE_VARIANTS)
    if unknown:
        parser.error(f"unknown write variants: {', '.join(sorted(unknown))}; known: {', '.join(WRITE_VARIANTS)}")
    args.db_dir.mkdir(parents=True, exist_ok=True)
    output = args.output or args.db_dir / "bench_reads.md"
    command = " ".join([os.path.relpath(sys.executable), *map(shlex.quote, sys.argv)])
    began = time.perf_counter()

    seeding, copies, timings = {}, {}, {}
    for size in sizes:
        seconds = seed(db_path(args.db_dir, size), size)
        seeding[size] = (seconds, db_path(args.db_dir, size).stat().st_size)
        copies[size], timings[size] = reads_copy(args.db_dir, size)
        print(f"{size:,}: {copies[size]} {timings[size]}", file=sys.stderr)

    apps = {size: create_app(copies[size]) for size in sizes}
    try:
        heads = {size: apps[size].repository.event_head().id for size in sizes}
        samples = run_reads(apps, heads, args.iterations, args.rounds, cases)
    finally:
        for app in apps.values():
            app.close()
    health = health_under_load(copies[sizes[-1]], args.server_seconds, 4) if args.server else None
    writes = {}
    if args.writes:
        writes["fresh files"] = measure_writes(args.db_dir, args.writes, args.rounds, None, chosen)
        writes[f"copies of the {size_label(sizes[-1])} file"] = measure_writes(
            args.db_dir, args.writes, args.rounds, copies[sizes[-1]], chosen)

    out: list[str] = []
    render_header(out.append, command, sizes, seeding, time.perf_counter() - began)
    render(out.append, sizes, samples, timings, health, writes, cases)
    report = "\n".join(out) + "\n"
    print(report)
    output.write_text(report, encoding="utf-8")
    print(f"report written to {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
