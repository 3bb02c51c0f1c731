"""Time the upgrade to schema version 4 (the chain rehashed with creation content) on a large version-3 file.

Builds a version-3 database from the frozen schema in tests/integration/fixtures
(N deployments, each created, approved, started and succeeded: 4N events,
hashed under the legacy encoding), then opens it with the current Repository,
which migrates it, and prints how long that took and what check says after.

    .venv/bin/python tests/perf/upgrade_v4.py --deployments 250000 --db /tmp/upgrade-v4.db
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from pathlib import Path

from deployapi import chain
from deployapi.integrity import Anchor, check_database
from deployapi.lifecycle import Event
from deployapi.repository import Repository

FIXTURE = Path(__file__).parents[1] / "integration" / "fixtures" / "schema_v3.sql"
STEPS = (("created", None, "pending_approval", "alice"), ("approved", "pending_approval", "approved", "bob"),
         ("started", "approved", "started", "ci"), ("succeeded", "started", "succeeded", "ci"))


def build(path: Path, deployments: int) -> Anchor:
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(FIXTURE.read_text())
    conn.execute("BEGIN")
    previous, event_id = chain.GENESIS, 0
    for n in range(deployments):
        deployment_id = f"01v3{n:022d}"
        at = f"2026-01-01T00:00:{(n // 1_000_000) % 60:02d}.{n % 1_000_000:06d}Z"
        conn.execute("INSERT INTO deployments VALUES (?, ?, 'production', ?, 'alice', '[\"JIRA-1\"]', 'low',"
                     " 'Redeploy the previous version.', 'succeeded', 'bob', ?, ?, ?)",
                     (deployment_id, f"service-{n % 40}", f"1.{n}", at, at, at))
        for sequence, (kind, source, target, actor) in enumerate(STEPS, start=1):
            event_id += 1
            event = Event(event_id, deployment_id, sequence, kind, actor, None, source, target, at)
            previous = chain.legacy_event_hash(event, previous)
            conn.execute("INSERT INTO deployment_events VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?)",
                         (event_id, deployment_id, sequence, kind, actor, source, target, at, previous))
    conn.execute("COMMIT")
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    return Anchor(event_id, previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=250_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/upgrade-v4.db"))
    args = parser.parse_args()
    started = time.perf_counter()
    anchor = build(args.db, args.deployments)
    print(f"built a version-3 file: {args.deployments:,} deployments, {anchor.event_id:,} events, "
          f"{args.db.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    Repository(args.db).close()
    print(f"upgrade to version 4 (Repository start-up): {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    report = check_database(args.db, [anchor])
    print(f"check with the version-3 head as anchor: {'ok' if report.ok else 'FAILED'} in "
          f"{time.perf_counter() - started:.1f} s")
    if not report.ok:
        print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
