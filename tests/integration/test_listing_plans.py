"""Every listing filter combination is served by an index in listing order."""

from __future__ import annotations

import itertools
import sqlite3

import pytest
from builders import new_deployment

from deployapi.listing import ListQuery, Position
from deployapi.repository import listing_sql

COMBINATIONS = [
    dict(zip(("service", "environment", "status"), values, strict=True))
    for values in itertools.product(("billing", None), ("production", None), ("approved", None))
]
RANGES = [{}, {"created_after": "2026-01-01T00:00:00.000000Z"},
          {"created_after": "2026-01-01T00:00:00.000000Z", "created_before": "2026-12-01T00:00:00.000000Z"}]
CASES = [
    pytest.param({**{k: v for k, v in combo.items() if v}, **extra}, after,
                 id="+".join([k for k, v in combo.items() if v] or ["none"])
                 + (f"+{'+'.join(extra)}" if extra else "") + ("+cursor" if after else ""))
    for combo in COMBINATIONS for extra in RANGES for after in (False, True)
] + [pytest.param({"requester": "alice", **extra}, after, id="requester" + "".join(f"+{k}" for k in extra)
                  + ("+cursor" if after else ""))
     for extra in ({}, {"service": "billing"}, {"status": "approved", "environment": "production"})
     for after in (False, True)]


@pytest.fixture
def plan_conn(db_path, repo):
    # Some rows, and no ANALYZE statistics: the plan must not depend on them.
    for service, environment in itertools.product(("billing", "search"), ("production", "staging")):
        repo.create_deployment(new_deployment(service=service, environment=environment, risk="r"))
    conn = sqlite3.connect(db_path)
    yield conn
    conn.close()


@pytest.mark.parametrize("filters, with_cursor", CASES)
def test_the_listing_query_uses_an_index_in_listing_order(plan_conn, filters, with_cursor):
    after = Position("2026-11-26T10:00:00.000000Z", "01zz") if with_cursor else None
    sql, parameters = listing_sql(ListQuery(**filters, after=after))
    plan = " | ".join(row[3] for row in plan_conn.execute("EXPLAIN QUERY PLAN " + sql, parameters))
    assert plan.startswith("SEARCH deployments USING INDEX") or plan == (
        "SCAN deployments USING INDEX deployments_newest_first"), plan
    assert "TEMP B-TREE" not in plan, plan  # no sort step: rows come out in listing order
    # The index's leading column is the most selective filter given: requester if
    # present, else every one of service, environment and status.
    leading = ["requester"] if "requester" in filters else [c for c in ("service", "environment", "status")
                                                               if c in filters]
    for column in leading:
        assert f"{column}=?" in plan, plan
    # The query also runs and returns rows.
    plan_conn.execute(sql, parameters).fetchall()
