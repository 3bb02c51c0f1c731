"""What a GET /metrics scrape costs on a big database: the first (deployments counted in full) and the later ones.

    python tests/perf/bench_metrics.py                       # 100,000 deployments in a temporary file
    python tests/perf/bench_metrics.py --deployments 1000000 --writes 100

The deployments are written straight into the table (random statuses, no
events): the full count reads the status index only, and the later scrapes
read the events written since the previous one, which the ``--writes``
creates between two scrapes make (through the app, as requests).  Prints the
first scrape, the full count alone (warm), and the later scrapes with and
without writes between them, in milliseconds.  Not part of the test run.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from builders import create_body  # noqa: E402
from werkzeug.test import Client  # noqa: E402

from deployapi import create_app, lifecycle  # noqa: E402


def seed(path: Path, count: int) -> None:
    create_app(path).close()
    rng = random.Random(21)
    rows = ((f"seed{i:010d}", f"service-{i % 50}", ("staging", "production", "dev")[i % 3], f"1.{i}",
             "seed@example.com", '["OPS-1"]', "Redeploy.", rng.choice(lifecycle.STATUSES),
             f"2026-01-01T00:00:00.{i % 1_000_000:06d}Z") for i in range(count))
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO deployments (id, service, environment, version, requester, work_refs, rollback_plan,"
            " status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?9)", rows)
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()


def milliseconds(call) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=100_000)
    parser.add_argument("--writes", type=int, default=100, help="creates between two of the later scrapes")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        run(Path(directory) / "metrics.db", args)


def run(path: Path, args: argparse.Namespace) -> None:
    seed(path, args.deployments)
    app = create_app(path, metrics=True)
    try:
        client = Client(app)
        first = milliseconds(lambda: client.get("/metrics"))
        full = [milliseconds(app.repository.status_counts) for _ in range(args.rounds)]
        after_writes = []
        for round_number in range(args.rounds):
            for i in range(args.writes):
                client.post("/deployments", json=create_body(version=f"9.{round_number}.{i}"))
            after_writes.append(milliseconds(lambda: client.get("/metrics")))
        idle = [milliseconds(lambda: client.get("/metrics")) for _ in range(args.rounds)]
    finally:
        app.close()
    print(f"{args.deployments:,} deployments")
    print(f"first scrape                        {first:8.2f} ms")
    print(f"full count alone (median, warm)     {statistics.median(full):8.2f} ms")
    print(f"scrape after {args.writes} creates (median)    {statistics.median(after_writes):8.2f} ms")
    print(f"scrape with no write since (median) {statistics.median(idle):8.2f} ms")


if __name__ == "__main__":
    main()
