"""Which listing index does a query at 1M deployments need: each one dropped in turn, the query it serves timed.

    python tests/perf/index_need.py                       # 1,000,000 deployments (about a minute to build)
    python tests/perf/index_need.py --rows 100000 --db /tmp/index-need.db

Builds (or reuses, when it holds ``--rows`` deployments) a database of the
current schema whose deployments table is filled by SQL: 40 services, of which
the last few are rare, environments staging/production/dev and a rare
``sandbox``, every status with ``cancelled`` and ``started`` rare, 200 requesters
with a busy few, a version and (for half) a commit per deployment, updated a few
minutes after creation.  Then, for every index on ``deployments``, the first
listing page (50) of the query that index is there for, with a rare value
where there is one (the worst case for an index that is missing), is timed
with the index and, in a transaction rolled back afterwards, without it; the
statement is the one the repository runs (``listing_sql``, ``ENVIRONMENTS_SQL``),
without its ``INDEXED BY`` of the dropped index, so that SQLite picks the plan.
Prints a markdown table: plan with and without, median ms of 9 runs, and what
SQLite's VM did (steps, from a progress handler).  Not part of the test run;
results in docs/performance.md ("Which indexes the listing needs").
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import statistics
import time
from datetime import datetime, timedelta, timezone

from deployapi.insights import IN_FLIGHT_SHOWN
from deployapi.listing import ListQuery
from deployapi.repository import Repository, listing_sql
from deployapi.repository.insights_sql import ENVIRONMENTS_SQL

SERVICES = 40
REQUESTERS = 200
# The first deployment's created_at; each later one a minute after the one before.
EPOCH = datetime(2020, 1, 1, tzinfo=timezone.utc)
RARE_SERVICE = f"svc-{SERVICES - 1:02d}"


def cases(rows: int) -> list[tuple[str, str, tuple[str, list[object]]]]:
    """Each index with the queries it serves: a common value and a rare one, since a plan without the index
    either sorts every match (worst for a common value) or reads the table in listing order until the page is
    full (worst for a rare one)."""
    def page(**filters):
        return listing_sql(ListQuery(limit=50, **filters))

    def at(minutes: float) -> str:
        return (EPOCH + timedelta(minutes=minutes)).strftime(
            "%Y-%m-%dT%H:%M:%S.000000Z")

    rare = RARE_SERVICE
    return [
        ("deployments_newest_first", "no filter", page()),
        ("deployments_by_service", "service=svc-00 (2.7 %)", page(service="svc-00")),
        ("deployments_by_service", f"service={rare} (0.1 %)", page(service=rare)),
        ("deployments_by_environment", "environment=staging (60 %)", page(environment="staging")),
        ("deployments_by_environment", "environment=sandbox (0.1 %)", page(environment="sandbox")),
        ("deployments_by_status", "status=succeeded (70 %)", page(status="succeeded")),
        ("deployments_by_status", "status=cancelled (0.01 %)", page(status="cancelled")),
        ("deployments_by_service_environment", "svc-00, staging", page(service="svc-00", environment="staging")),
        ("deployments_by_service_environment", f"{rare}, sandbox", page(service=rare, environment="sandbox")),
        ("deployments_by_service_status", "svc-00, succeeded", page(service="svc-00", status="succeeded")),
        ("deployments_by_service_status", f"{rare}, failed", page(service=rare, status="failed")),
        ("deployments_by_environment_status", "staging, succeeded", page(environment="staging", status="succeeded")),
        ("deployments_by_environment_status", "sandbox, started", page(environment="sandbox", status="started")),
        ("deployments_by_service_environment_status", "svc-00, staging, succeeded",
         page(service="svc-00", environment="staging", status="succeeded")),
        ("deployments_by_service_environment_status", f"{rare}, production, failed",
         page(service=rare, environment="production", status="failed")),
        ("deployments_by_requester", "user-000 (10 %)", page(requester="user-000@example.com")),
        ("deployments_by_requester", "user-199 (0.25 %)", page(requester="user-199@example.com")),
        ("deployments_by_version", "one version", page(version="svc-07-1234")),
        ("deployments_by_commit_sha", "a commit prefix", page(commit_sha="abc12")),
        ("deployments_by_updated", "updated in 20 recent minutes (~20 rows)",
         listing_sql(ListQuery(limit=50, updated_after=at(rows - 45), updated_before=at(rows - 25)),
                     updated_range_is_narrow=True)),
        ("deployments_by_service_environment_status_updated", "GET /environments",
         (ENVIRONMENTS_SQL, [None, None, IN_FLIGHT_SHOWN])),
    ]


def build(path: str, rows: int) -> None:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    Repository(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deployments'"
                           " AND sql IS NOT NULL").fetchall()
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    conn.execute("DROP TRIGGER deployments_derive")  # work_refs and labels are not what is measured here
    start = EPOCH.strftime("%Y-%m-%d %H:%M:%S")
    # Rare values at the tails: services 36-39 hold ~0.1 % each, sandbox 0.1 %, cancelled 0.01 %, started 2 %.
    conn.execute(f"""
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {rows}),
        r AS (SELECT i, abs(random()) % 10000 AS a, abs(random()) % 10000 AS b, abs(random()) % 10000 AS c,
                     abs(random()) % 1000 AS d FROM n)
        INSERT INTO deployments (id, service, environment, version, requester, work_refs, risk, rollback_plan,
                                 status, created_at, updated_at, commit_sha)
        SELECT printf('dep_%020d', i),
               printf('svc-%02d', CASE WHEN a < 40 THEN 36 + a % 4 ELSE a % 36 END),
               CASE WHEN b < 10 THEN 'sandbox' WHEN b < 6010 THEN 'staging' WHEN b < 8510 THEN 'production'
                    ELSE 'dev' END,
               printf('svc-%02d-%d', a % 36, i / 36),
               printf('user-%03d@example.com', CASE WHEN d < 500 THEN d % 5 ELSE d % {REQUESTERS} END),
               '["JIRA-1"]', NULL, 'Redeploy the previous version.',
               CASE WHEN c < 1 THEN 'cancelled' WHEN c < 201 THEN 'started' WHEN c < 501 THEN 'approved'
                    WHEN c < 1001 THEN 'pending_approval' WHEN c < 1501 THEN 'rejected'
                    WHEN c < 2001 THEN 'failed' WHEN c < 3001 THEN 'rolled_back' ELSE 'succeeded' END,
               strftime('%Y-%m-%dT%H:%M:%S', '{start}', '+' || (i * 60) || ' seconds') || '.000000Z',
               strftime('%Y-%m-%dT%H:%M:%S', '{start}', '+' || (i * 60 + 300) || ' seconds') || '.000000Z',
               CASE WHEN i % 2 = 0 THEN lower(hex(randomblob(20))) END
        FROM r""")
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("COMMIT")
    conn.close()
    Repository(path).close()  # the triggers back (schema.sql at start-up)


def measure(conn: sqlite3.Connection, statement: tuple[str, list[object]]) -> tuple[str, float, int]:
    sql, parameters = statement
    plan = "; ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", parameters))
    steps = [0]

    def count() -> int:
        steps[0] += 1000
        return 0

    conn.set_progress_handler(count, 1000)
    conn.execute(sql, parameters).fetchall()
    conn.set_progress_handler(None, 0)
    times = []
    for _ in range(9):
        started = time.perf_counter()
        conn.execute(sql, parameters).fetchall()
        times.append((time.perf_counter() - started) * 1000)
    return plan, statistics.median(times), steps[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", default="/tmp/deployapi-index-need.db")
    args = parser.parse_args()
    if not os.path.exists(args.db) or sqlite3.connect(args.db).execute(
            "SELECT count(*) FROM deployments").fetchone()[0] != args.rows:
        started = time.monotonic()
        build(args.db, args.rows)
        print(f"built {args.db}: {args.rows:,} deployments in {time.monotonic() - started:.0f} s\n")
    conn = sqlite3.connect(args.db, isolation_level=None)
    print(f"{args.rows:,} deployments\n")
    print("| index | the query it serves (first page of 50) | with it: ms / VM steps | plan without it |"
          " without it: ms / VM steps |")
    print("|---|---|---|---|---|")
    for index, served, statement in cases(args.rows):
        _, with_ms, with_steps = measure(conn, statement)
        conn.execute("BEGIN")
        conn.execute(f"DROP INDEX {index}")
        # The repository names its index (INDEXED BY, so the plan cannot drift): without it, the planner chooses.
        sql, parameters = statement
        plan, without_ms, without_steps = measure(conn, (re.sub(rf"INDEXED BY {index}\b", "", sql), parameters))
        conn.execute("ROLLBACK")
        print(f"| `{index}` | {served} | {with_ms:.2f} / {with_steps:,} | `{plan}` | "
              f"{without_ms:.1f} / {without_steps:,} |", flush=True)


if __name__ == "__main__":
    main()
