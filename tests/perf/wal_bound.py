"""The WAL checkpoint interval: what it costs a write, how big the -wal grows, how many writes live only there.

    .venv/bin/python tests/perf/wal_bound.py                      # 1000, 2000, 4000, 10000 pages; 3 rounds
    .venv/bin/python tests/perf/wal_bound.py --pages 1000,10000 --writes 4000 --dir /var/tmp

Each round and interval starts from a copy of one seeded file (``--seed``
deployments, approved), then does ``--writes`` writes on one thread through the
Repository's own settings with ``wal_autocheckpoint`` and ``journal_size_limit``
replaced: half creates, half approves, alternating.  Reported per interval: the
median write time and its p99 (the p99 is where the checkpoints show: each runs
inside the commit that crosses the interval, holding the write lock), the
largest -wal seen, the -wal left afterwards, and how many acknowledged writes at
most sit only in the -wal (interval / WAL pages per write): those are what a
lost or damaged -wal loses after a crash.  Put --dir on the disk the service
uses.  Not part of the test run; results in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

from deployapi import repository
from deployapi.lifecycle import ActionRequest, NewDeployment
from deployapi.repository import Repository

NEW = NewDeployment(service="billing", environment="staging", version="1.4.2", requester="alice@example.com",
                    work_refs=("JIRA-1",), rollback_plan="Redeploy the previous version.", risk=None)
PAGE = 4096


def seed(path: str, deployments: int) -> None:
    repo = Repository(path)
    for _ in range(deployments):
        deployment = repo.create_deployment(NEW)
        repo.apply_action(deployment.id, ActionRequest("approve", "bob", None))
    repo.close()


def run(seeded: str, directory: str, pages: int, limit: int, writes: int) -> dict[str, float]:
    path = os.path.join(directory, f"wal-{pages}.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    shutil.copyfile(seeded, path)
    repository.WAL_AUTOCHECKPOINT_PAGES, repository.JOURNAL_SIZE_LIMIT_BYTES = pages, limit
    repo = Repository(path)
    times, largest, pending = [], 0, []
    for n in range(writes):
        started = time.perf_counter()
        if n % 2 == 0:
            pending.append(repo.create_deployment(NEW).id)
        else:
            repo.apply_action(pending.pop(), ActionRequest("approve", "bob", None))
        times.append((time.perf_counter() - started) * 1000)
        largest = max(largest, os.path.getsize(path + "-wal"))
    left = os.path.getsize(path + "-wal")
    repo.close()
    times.sort()
    return {"p50": statistics.median(times), "p99": times[int(0.99 * len(times))],
            "mean": statistics.fmean(times), "largest": largest, "left": left}


def wal_pages_per_write(seeded: str, directory: str, writes: int = 400) -> float:
    """WAL frames one write appends, counted with checkpoints off."""
    path = os.path.join(directory, "frames.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    shutil.copyfile(seeded, path)
    repository.WAL_AUTOCHECKPOINT_PAGES = 0
    repo = Repository(path)
    before = os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0
    pending = []
    for n in range(writes):
        if n % 2 == 0:
            pending.append(repo.create_deployment(NEW).id)
        else:
            repo.apply_action(pending.pop(), ActionRequest("approve", "bob", None))
    frames = (os.path.getsize(path + "-wal") - before) / (PAGE + 24)
    repo.close()
    return frames / writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", default="1000,2000,4000,10000")
    parser.add_argument("--writes", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit-mib", type=float, default=None,
                        help="journal_size_limit (default: the interval's size, rounded up to MiB)")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    directory = args.dir or tempfile.mkdtemp(prefix="deployapi-wal-")
    seeded = os.path.join(directory, "seeded.db")
    seed(seeded, args.seed)
    per_write = wal_pages_per_write(seeded, directory)
    intervals = [int(p) for p in args.pages.split(",")]
    results: dict[int, list[dict[str, float]]] = {p: [] for p in intervals}
    for _ in range(args.rounds):
        for pages in intervals:
            limit = int((args.limit_mib or -(-pages * PAGE // 2**20)) * 2**20)
            results[pages].append(run(seeded, directory, pages, limit, args.writes))
    print("| wal_autocheckpoint (pages) | write ms p50 | write ms p99 | mean | largest -wal MiB | -wal left MiB |"
          " WAL pages / write | writes only in the -wal, at most |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for pages, rounds in results.items():
        def med(key, rounds=rounds):
            return statistics.median(r[key] for r in rounds)
        print(f"| {pages:,} | {med('p50'):.3f} | {med('p99'):.3f} | {med('mean'):.3f} | {med('largest') / 2**20:.1f} |"
              f" {med('left') / 2**20:.1f} | {per_write:.1f} | {pages / per_write:.0f} |")


if __name__ == "__main__":
    main()
