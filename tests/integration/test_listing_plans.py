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
    assert plan.startswith("SEARCH d USING INDEX") or plan == "SCAN d USING INDEX deployments_newest_first", plan
    assert "TEMP B-TREE" not in plan, plan  # no sort step: rows come out in listing order
    # The index's leading column is the most selective filter given: requester if
    # present, else every one of service, environment and status.
    leading = ["requester"] if "requester" in filters else [c for c in ("service", "environment", "status")
                                                               if c in filters]
    for column in leading:
        assert f"{column}=?" in plan, plan
    # The query also runs and returns rows.
    plan_conn.execute(sql, parameters).fetchall()


# The filters of version 8, each driving the query from its own index or table:
# (filters, what the plan's first step must be, whether the few matches are sorted).
SELECTIVE_CASES = [
    pytest.param({"version": "1.4.2"}, "SEARCH d USING INDEX deployments_by_version (version=?", False,
                 id="version"),
    pytest.param({"version": "1.4.2", "service": "billing", "label": ("team=payments",)},
                 "SEARCH d USING INDEX deployments_by_version (version=?", False, id="version+service+label"),
    pytest.param({"commit_sha": "abc1234"},
                 "SEARCH d USING INDEX deployments_by_commit_sha (commit_sha>? AND commit_sha<?)", True,
                 id="commit_sha prefix"),
    pytest.param({"work_ref": "JIRA-1"}, "SEARCH w USING PRIMARY KEY (work_ref=?", False, id="work_ref"),
    pytest.param({"work_ref": "JIRA-1", "status": "succeeded", "updated_after": "2026-11-26T00:00:00.000000Z"},
                 "SEARCH w USING PRIMARY KEY (work_ref=?", False, id="work_ref+status+updated_after"),
    pytest.param({"label": ("team=payments", "tier=1")}, "SEARCH w USING PRIMARY KEY (label=?", False,
                 id="two labels"),
    pytest.param({"updated_after": "2026-11-26T00:00:00.000000Z", "service": "billing"},
                 "SEARCH d USING INDEX deployments_by_service (service=?", False, id="a broad updated range"),
]


@pytest.mark.parametrize("filters, first_step, sorted_", SELECTIVE_CASES)
def test_each_new_filter_drives_the_listing_from_its_own_index(plan_conn, filters, first_step, sorted_):
    for with_cursor in (False, True):
        after = Position("2026-11-26T10:00:00.000000Z", "01zz") if with_cursor else None
        sql, parameters = listing_sql(ListQuery(**filters, after=after))
        plan = " | ".join(row[3] for row in plan_conn.execute("EXPLAIN QUERY PLAN " + sql, parameters))
        assert plan.startswith(first_step), plan
        assert ("TEMP B-TREE" in plan) is sorted_, plan
        assert "SCAN" not in plan.replace("SCAN d USING INDEX deployments_newest_first", ""), plan
        plan_conn.execute(sql, parameters).fetchall()


def test_a_narrow_updated_range_drives_the_listing_from_the_updated_index(plan_conn):
    query = ListQuery(updated_after="2026-11-26T00:00:00.000000Z", status="started")
    sql, parameters = listing_sql(query, updated_range_is_narrow=True)
    steps = [row[3] for row in plan_conn.execute("EXPLAIN QUERY PLAN " + sql, parameters)]
    # The range of the updated index gives the matches' keys, which are sorted;
    # only the page's rows are then read, by rowid, to build their documents.
    assert "SEARCH d USING INDEX deployments_by_updated (updated_at>?)" in steps, steps
    assert steps[0] == "SEARCH d USING INTEGER PRIMARY KEY (rowid=?)", steps
    plan_conn.execute(sql, parameters).fetchall()
