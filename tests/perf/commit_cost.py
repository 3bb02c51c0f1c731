"""What synchronous=FULL costs a create compared with NORMAL: one thread, the project's own transaction.

    python tests/perf/commit_cost.py                   # 2,000 creates at each level, alternating, 3 rounds
    python tests/perf/commit_cost.py --creates 500 --rounds 5 --dir /var/tmp

Each round creates a fresh database per level in ``--dir`` (put it on the disk
the service will use: the cost is the disk's fsync) and times, per create,
BEGIN IMMEDIATE, the writes (`WriteTransaction.create_deployment`: the row, the
event and its hash) and COMMIT, in wall-clock and CPU time.  In WAL mode FULL
adds one fsync of the WAL per COMMIT; NORMAL syncs only at checkpoints.  Not
part of the test run; results in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time

from deployapi.lifecycle import NewDeployment
from deployapi.repository import Repository, WriteTransaction, utc_now

NEW = NewDeployment(service="billing", environment="staging", version="1.4.2", requester="alice@example.com",
                    work_refs=("JIRA-1",), rollback_plan="Redeploy the previous version.", risk=None)
PARTS = ("begin", "writes", "commit")


def measure(directory: str, level: str, creates: int) -> dict[str, list[tuple[float, float]]]:
    path = os.path.join(directory, f"commit-cost-{level.lower()}.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    Repository(path).close()  # the schema, WAL mode
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA synchronous = {level}")
    conn.execute("PRAGMA foreign_keys = ON")
    samples: dict[str, list[tuple[float, float]]] = {part: [] for part in PARTS}
    for _ in range(creates):
        marks = [(time.perf_counter(), time.process_time())]
        conn.execute("BEGIN IMMEDIATE")
        marks.append((time.perf_counter(), time.process_time()))
        WriteTransaction(conn, utc_now).create_deployment(NEW)
        marks.append((time.perf_counter(), time.process_time()))
        conn.execute("COMMIT")
        marks.append((time.perf_counter(), time.process_time()))
        for part, (start, end) in zip(PARTS, zip(marks, marks[1:], strict=False), strict=True):
            samples[part].append(((end[0] - start[0]) * 1e6, (end[1] - start[1]) * 1e6))
    conn.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the databases go (default: a new temporary directory)")
    args = parser.parse_args()
    directory = args.dir or tempfile.mkdtemp(prefix="deployapi-commit-cost-")
    totals: dict[str, list[float]] = {"FULL": [], "NORMAL": []}
    print("| round | synchronous | BEGIN µs (wall/CPU) | writes µs | COMMIT µs p50 | COMMIT µs p99 | create µs p50 |")
    print("|---|---|---|---|---|---|---|")
    for round_number in range(1, args.rounds + 1):
        for level in ("FULL", "NORMAL"):
            samples = measure(directory, level, args.creates)
            walls = {part: [wall for wall, _ in samples[part]] for part in PARTS}
            cpus = {part: [cpu for _, cpu in samples[part]] for part in PARTS}
            whole = [sum(parts) for parts in zip(*walls.values(), strict=True)]
            totals[level].append(statistics.median(whole))
            commit = sorted(walls["commit"])
            print(f"| {round_number} | {level} | {statistics.median(walls['begin']):.0f} / "
                  f"{statistics.median(cpus['begin']):.0f} | {statistics.median(walls['writes']):.0f} / "
                  f"{statistics.median(cpus['writes']):.0f} | {statistics.median(commit):.0f} / "
                  f"{statistics.median(cpus['commit']):.0f} | {commit[int(0.99 * len(commit))]:.0f} | "
                  f"{statistics.median(whole):.0f} |")
    ratio = statistics.median(f / n for f, n in zip(totals["FULL"], totals["NORMAL"], strict=True))
    print(f"\nFULL / NORMAL, median create time, median over rounds: {ratio:.2f}x")


if __name__ == "__main__":
    main()
