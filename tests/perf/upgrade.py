"""Time the upgrade of a large version-5, -6 or -7 file to the current schema version.

Builds a database of the older version from its frozen schema in
tests/integration/fixtures (N deployments, each created, approved, started and
succeeded: 4N events, chained under the encoding of that version, the derived
tables filled by its trigger as the events go in), then opens it with the
current Repository, which upgrades it, and prints how long that took, the file
and -wal sizes, and what check says after with the old head as an anchor (no
upgrade since version 4 rehashes, so the head must be unchanged).  From
version 5 the upgrade rebuilds deployments and deployment_events (version 6);
from version 6 it adds the policy columns and lists each deployment's approval
(version 7); from version 7 it adds the pipeline columns, fills the work-reference
and label tables and builds the new listing indexes (version 8).

    .venv/bin/python tests/perf/upgrade.py --from-version 5 --deployments 1000000 --db /tmp/upgrade.db
    .venv/bin/python tests/perf/upgrade.py --from-version 6 --deployments 1000000 --db /tmp/upgrade.db
    .venv/bin/python tests/perf/upgrade.py --from-version 7 --deployments 1000000 --db /tmp/upgrade.db
"""

from __future__ import annotations

import argparse
import sqlite3
import threading
import time
from pathlib import Path

from deployapi import chain
from deployapi.integrity import Anchor, check_database
from deployapi.lifecycle import CREATE_FIELDS, Event
from deployapi.repository import SCHEMA_VERSION, Repository

FIXTURES = Path(__file__).parents[1] / "integration" / "fixtures"
STEPS = (("created", None, "pending_approval", "alice"), ("approved", "pending_approval", "approved", "bob"),
         ("started", "approved", "started", "ci"), ("succeeded", "started", "succeeded", "ci"))
BATCH = 5_000


def build(path: Path, deployments: int, version: int) -> Anchor:
    for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        stale.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA cache_size = -262144")  # 256 MiB: ten deployment indexes and the derived tables
    # The columns every version since 5 has; version 7's policy columns keep their defaults.
    conn.executescript((FIXTURES / f"schema_v{version}.sql").read_text())
    conn.execute("BEGIN")
    previous, event_id = chain.GENESIS, 0
    rows, events = [], []
    for n in range(deployments):
        deployment_id = f"01v5{n:022d}"
        at = f"2026-01-01T00:00:{(n // 1_000_000) % 60:02d}.{n % 1_000_000:06d}Z"
        creation = {"service": f"service-{n % 40}", "environment": "production", "version": f"1.{n}",
                    "requester": "alice", "work_refs": ["JIRA-1"], "rollback_plan": "Redeploy the previous version.",
                    "risk": "low"}
        content = chain.content_of({field: creation.get(field) for field in CREATE_FIELDS})
        rows.append((deployment_id, creation["service"], creation["version"], at, at, at))
        for sequence, (kind, source, target, actor) in enumerate(STEPS, start=1):
            event_id += 1
            event = Event(event_id, deployment_id, sequence, kind, actor, None, source, target, at)
            previous = chain.event_hash(event, previous, content if kind == "created" else None)
            events.append((event_id, deployment_id, sequence, kind, actor, source, target, at, previous))
        if len(rows) >= BATCH or n == deployments - 1:
            # Deployments first: the derive trigger joins each event to its deployment.
            conn.executemany("INSERT INTO deployments (id, service, environment, version, requester, work_refs,"
                             " risk, rollback_plan, status, reviewed_by, reviewed_at, created_at, updated_at)"
                             " VALUES (?, ?, 'production', ?, 'alice', '[\"JIRA-1\"]',"
                             " 'low', 'Redeploy the previous version.', 'succeeded', 'bob', ?, ?, ?)", rows)
            if version >= 7:  # as a version-7 server lists each approval
                conn.executemany("UPDATE deployments SET approvals = json_array(json_object("
                                 "'actor', 'bob', 'note', NULL, 'created_at', reviewed_at)) WHERE id = ?",
                                 [(row[0],) for row in rows])
            conn.executemany("INSERT INTO deployment_events (id, deployment_id, sequence, type, actor, note,"
                             " from_status, to_status, created_at, hash)"
                             " VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?)", events)
            rows, events = [], []
    conn.execute("COMMIT")
    conn.execute(f"PRAGMA user_version = {version}")
    scopes, steps = (conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                     for table in ("deployment_event_scopes", "deployment_steps"))
    conn.close()
    print(f"derived rows from the trigger: {scopes:,} event scopes, {steps:,} steps")
    return Anchor(event_id, previous)


class WalWatch(threading.Thread):
    """Polls the size of the -wal while the upgrade runs: its peak, and when it last grew."""

    def __init__(self, wal: Path):
        super().__init__(daemon=True)
        self.wal, self.peak, self.last_growth = wal, 0, 0.0
        self.started_at = time.perf_counter()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            try:
                size = self.wal.stat().st_size
            except FileNotFoundError:
                continue
            if size > self.peak:
                self.peak, self.last_growth = size, time.perf_counter() - self.started_at


def mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"


def wal_size(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def report_check(path: Path, anchor: Anchor, label: str) -> bool:
    started = time.perf_counter()
    report = check_database(path, [anchor])
    print(f"check {label}, with the old head as anchor: {'ok' if report.ok else 'FAILED'} in "
          f"{time.perf_counter() - started:.1f} s")
    if not report.ok:
        print("\n".join(report.lines()))
    return report.ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from-version", type=int, choices=(5, 6, 7), default=7)
    parser.add_argument("--deployments", type=int, default=250_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/upgrade.db"))
    parser.add_argument("--check-before", action="store_true", help="also check the old file before the upgrade")
    args = parser.parse_args()
    started = time.perf_counter()
    anchor = build(args.db, args.deployments, args.from_version)
    before = args.db.stat().st_size
    print(f"built a version-{args.from_version} file: {args.deployments:,} deployments, {anchor.event_id:,} events, "
          f"{mib(before)} in {time.perf_counter() - started:.1f} s")
    ok = report_check(args.db, anchor, "before the upgrade") if args.check_before else True
    watch = WalWatch(Path(f"{args.db}-wal"))
    watch.start()
    started = time.perf_counter()
    repo = Repository(args.db)
    upgraded = time.perf_counter() - started
    after_upgrade_wal = wal_size(args.db)
    repo.close()
    closed = time.perf_counter() - started
    watch.done.set()
    watch.join()
    print(f"upgrade from version {args.from_version} to {SCHEMA_VERSION} (Repository start-up): {upgraded:.1f} s;"
          f" the -wal last grew at {watch.last_growth:.1f} s (the commit), peaked at {mib(watch.peak)}, and was "
          f"{mib(after_upgrade_wal)} when start-up returned; Repository.close() done at {closed:.1f} s")
    with sqlite3.connect(args.db) as conn:
        free_pages, page_size = (conn.execute(f"PRAGMA {pragma}").fetchone()[0]
                                 for pragma in ("freelist_count", "page_size"))
    conn.close()
    print(f"file size: {mib(before)} before, {mib(args.db.stat().st_size)} after "
          f"({mib(free_pages * page_size)} of it free pages); -wal after close: {mib(wal_size(args.db))}")
    ok = report_check(args.db, anchor, "after the upgrade") and ok
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
