"""The filtered feed and the DORA metrics read what their answer needs, not the history around it.

Boundedness is measured in SQLite virtual-machine steps (a progress handler
called on every one), side by side on two files that differ only in history
the answer does not depend on: ten times as much of it in one.  The answers
must be equal, and the work within BOUNDED_RATIO.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import pytest
from builders import START, StepClock, new_deployment

from deployapi import lifecycle, repository
from deployapi.insights import DoraQuery
from deployapi.lifecycle import ActionRequest
from deployapi.repository import Repository, insights_sql, pages, rows
from deployapi.repository.insights_sql import _microseconds_between

# Deeper B-trees in the larger file cost a few steps per seek; reading the
# unrelated history would cost about ten times as many.
BOUNDED_RATIO = 1.5

# The actions after creation of each kind of deployment these tests record.
PATHS = {
    "succeeded": ("approve", "start", "succeed"),
    "failed": ("approve", "start", "fail"),
    "failed, rolled back": ("approve", "start", "fail", "rollback"),
    "rolled back mid-rollout": ("approve", "start", "rollback"),
    "succeeded, rolled back": ("approve", "start", "succeed", "rollback"),
    "rejected": ("reject",),
    "running": ("approve", "start"),
    "approved": ("approve",),
    "pending": (),
}
SERVICES = ("billing", "search", "ledger")
ENVIRONMENTS = ("production", "staging")


def record(repo: Repository, deployments: Iterable[tuple[str, str, tuple[str, ...]]]) -> None:
    """Create each (service, environment, actions) and apply its actions, all in one transaction."""
    with repo.transaction() as tx:
        for service, environment, actions in deployments:
            deployment = tx.create_deployment(new_deployment(service=service, environment=environment))
            for action in actions:
                tx.apply_action(deployment.id, ActionRequest(action, "bob", f"{action}: noted"))


def unrelated_block() -> list[tuple[str, str, tuple[str, ...]]]:
    """History the probes below do not ask about: every pair, no rejection."""
    kinds = [path for name, path in PATHS.items() if name != "rejected"]
    return [(service, environment, path)
            for service, environment in itertools.product(SERVICES, ENVIRONMENTS) for path in kinds]


def vm_steps(repo: Repository, call: Callable[[], object]) -> tuple[object, int]:
    """What ``call`` returns, and how many SQLite VM steps this thread's connection ran for it."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    with repo._read() as conn:  # the thread's connection, which call() uses too
        conn.set_progress_handler(count, 1)
    try:
        answer = call()
    finally:
        with repo._read() as conn:
            conn.set_progress_handler(None, 1)
    return answer, steps


class Histories:
    """Two files: the same probed history in the middle, 1x and 10x unrelated history before and after it."""

    WINDOW_START = START + timedelta(days=30)
    WINDOW = (lifecycle.format_timestamp(WINDOW_START),
              lifecycle.format_timestamp(WINDOW_START + timedelta(hours=1)))

    def __init__(self, tmp_path):
        self.repos: dict[int, Repository] = {}
        self.before: dict[int, int] = {}  # the last event id before the probed history
        for times in (1, 10):
            clock = StepClock()
            repo = Repository(tmp_path / f"history-{times}x.db", clock=clock)
            record(repo, unrelated_block() * times)
            self.before[times] = repo.event_head().id
            clock.now = self.WINDOW_START
            record(repo, [("billing", "production", PATHS[name]) for name in (
                "succeeded", "failed", "succeeded", "rejected", "succeeded, rolled back", "rejected")])
            record(repo, [("search", "staging", PATHS["succeeded"])])
            clock.now = self.WINDOW_START + timedelta(days=1)
            record(repo, unrelated_block() * times)
            self.repos[times] = repo

    def close(self) -> None:
        for repo in self.repos.values():
            repo.close()


@pytest.fixture(scope="module")
def histories(tmp_path_factory):
    h = Histories(tmp_path_factory.mktemp("bounded"))
    yield h
    h.close()


def feed_page(events) -> list[tuple[str, str]]:
    """A page without its ids, which differ between the two files: (type, from_status) per event."""
    return [(e.type, e.from_status) for e in events]


# The probed history is six billing/production deployments (3 successes, 2
# rejections) and one search/staging success, so each page below lies inside it.
@pytest.mark.parametrize("filters, after_probed_history, limit", [
    pytest.param({"event_type": "rejected"}, False, 20, id="a-rare-type-from-the-start"),
    pytest.param({"service": "billing"}, True, 20, id="service-after-its-older-history"),
    pytest.param({"environment": "production"}, True, 20, id="environment-after-its-older-history"),
    pytest.param({"service": "billing", "environment": "production"}, True, 20, id="service-and-environment"),
    pytest.param({"service": "billing", "environment": "production", "event_type": "succeeded"}, True, 3,
                 id="service-environment-and-type"),
    pytest.param({"environment": "production", "event_type": "rejected"}, False, 20,
                 id="environment-and-a-rare-type-from-the-start"),
])
def test_a_filtered_feed_page_costs_the_same_however_much_unrelated_history_there_is(
        histories, filters, after_probed_history, limit):
    answers, steps = {}, {}
    for times, repo in histories.repos.items():
        after = histories.before[times] if after_probed_history else 0
        events, steps[times] = vm_steps(repo, lambda: repo.list_events_after(after, limit, **filters))  # noqa: B023
        answers[times] = feed_page(events)
    assert answers[1] == answers[10] and answers[1]
    assert steps[10] / steps[1] < BOUNDED_RATIO, steps


@pytest.fixture(scope="module")
def histories_before(tmp_path_factory):
    """Two files: the same recent history after 1x and 10x unrelated older history; and when it begins."""
    repos, began = {}, None
    for times in (1, 10):
        clock = StepClock()
        repo = Repository(tmp_path_factory.mktemp("since") / f"history-{times}x.db", clock=clock)
        record(repo, unrelated_block() * times)
        clock.now = Histories.WINDOW_START
        began = lifecycle.format_timestamp(clock.now)
        record(repo, [("billing", "production", PATHS[name]) for name in ("succeeded", "rejected", "failed")])
        repos[times] = repo
    yield repos, began
    for repo in repos.values():
        repo.close()


@pytest.mark.parametrize("filters, limit", [
    pytest.param({}, 20, id="everything"),
    pytest.param({"event_type": "rejected"}, 20, id="a-type"),
    pytest.param({"service": "billing", "environment": "production"}, 20, id="a-scope"),
    pytest.param({}, 3, id="a-short-page"),
])
def test_a_first_feed_page_since_a_recent_time_costs_the_same_however_much_history_came_before(
        histories_before, filters, limit):
    repos, since = histories_before
    answers, steps = {}, {}
    for times, repo in repos.items():
        events, steps[times] = vm_steps(repo, lambda: repo.list_events_after(0, limit, since=since, **filters))  # noqa: B023
        answers[times] = feed_page(events)
        assert all(e.created_at >= since for e in events)
    assert answers[1] == answers[10] and answers[1]
    assert steps[10] / steps[1] < BOUNDED_RATIO, steps


def test_a_feed_page_since_before_the_history_costs_the_page_however_long_the_history(histories_before):
    repos, _ = histories_before
    answers, steps = {}, {}
    for times, repo in repos.items():
        answers[times], steps[times] = vm_steps(
            repo, lambda: feed_page(repo.list_events_after(0, 20, since="2000-01-01T00:00:00.000000Z")))  # noqa: B023
    assert answers[1] == answers[10] and len(answers[1]) == 20
    assert steps[10] / steps[1] < BOUNDED_RATIO, steps


@pytest.mark.parametrize("service, environment", [
    pytest.param("billing", "production", id="one-pair"),
    pytest.param(None, None, id="every-pair"),
])
def test_dora_metrics_of_a_past_window_cost_the_same_however_much_history_came_after(
        histories, service, environment):
    query = DoraQuery(since=histories.WINDOW[0], until=histories.WINDOW[1], service=service, environment=environment)
    answers, steps = {}, {}
    for times, repo in histories.repos.items():
        answers[times], steps[times] = vm_steps(repo, lambda: repo.dora_metrics(query))  # noqa: B023
    assert answers[1] == answers[10] and answers[1].started
    assert steps[10] / steps[1] < BOUNDED_RATIO, steps


def plan(repo: Repository, sql: str, parameters) -> list[str]:
    with repo._read() as conn:
        return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", parameters)]


@pytest.mark.parametrize("scope", [{"service": "billing"}, {"environment": "production"},
                                   {"service": "billing", "environment": "production"}],
                         ids=lambda scope: "+".join(scope))
@pytest.mark.parametrize("event_type", [None, "approved"])
def test_a_feed_narrowed_by_scope_seeks_in_one_scope_index_for_each_type(repo, scope, event_type):
    lines = plan(repo, *pages.scoped_feed_sql(7, 100, scope, event_type))
    used = {("service",): "USING COVERING INDEX deployment_event_scopes_by_service (service=?",
            ("environment",): "USING COVERING INDEX deployment_event_scopes_by_environment (environment=?",
            ("service", "environment"): "USING PRIMARY KEY (service=? AND environment=?"}[tuple(scope)]
    searches = [line for line in lines if line.startswith("SEARCH deployment_event_scopes")]
    assert len(searches) == (1 if event_type else len(lifecycle.EVENT_TYPES))
    assert all(used in line and line.endswith(" AND type=? AND event_id>?)") for line in searches), lines
    assert not [line for line in lines if line.startswith("SCAN") and line != "SCAN page"], lines


def test_a_feed_of_one_type_is_one_range_of_the_type_index(repo):
    assert plan(repo, *pages.feed_sql(7, 100, "rejected")) == [
        "SEARCH e USING INDEX deployment_events_by_type (type=? AND rowid>?)",
        "SEARCH d USING COVERING INDEX sqlite_autoindex_deployments_1 (id=?)"]


def test_since_is_found_in_the_created_at_index_and_never_changes_the_feeds_order(repo):
    assert plan(repo, pages.SINCE_FIRST_ID_SQL, ("2026-11-26T10:00:00.000000Z",)) == [
        "SEARCH deployment_events USING COVERING INDEX deployment_events_by_created_at (created_at>?)"]
    assert "SEARCH deployment_events USING COVERING INDEX deployment_events_by_created_at (created_at>?)" in plan(
        repo, pages.SINCE_PROBE_SQL, ("2026-11-26T10:00:00.000000Z",))
    since = "2026-11-26T10:00:00.000000Z"
    assert plan(repo, *pages.feed_sql(7, 100, None, since))[0] == "SEARCH e USING INTEGER PRIMARY KEY (rowid>?)"
    assert plan(repo, *pages.feed_sql(7, 100, "rejected", since))[0] == (
        "SEARCH e USING INDEX deployment_events_by_type (type=? AND rowid>?)")
    lines = plan(repo, *pages.scoped_feed_sql(7, 100, {"service": "billing"}, None, since))
    searches = [line for line in lines if line.startswith("SEARCH deployment_event_scopes")]
    assert len(searches) == len(lifecycle.EVENT_TYPES)
    # Each range stays in id order: the created_at of its events is a rowid seek each, and nothing is sorted.
    assert lines.count("SEARCH c USING INTEGER PRIMARY KEY (rowid=?)") == len(lifecycle.EVENT_TYPES)
    assert [line for line in lines if "TEMP B-TREE" in line] == ["USE TEMP B-TREE FOR ORDER BY"]


def test_dora_metrics_read_only_ranges_of_deployment_steps_besides_the_pairs(repo):
    record(repo, [("billing", "production", PATHS["succeeded"])])
    lines = plan(repo, insights_sql.DORA_SQL, (None, None, *Histories.WINDOW))
    assert not [line for line in lines if "deployment_events" in line]
    steps = [line for line in lines if "deployment_steps" in line or " s USING" in line or " later USING" in line]
    assert steps and all(line.startswith("SEARCH") and "USING PRIMARY KEY (service=? AND environment=? AND step=?"
                                                           in line for line in steps), steps


@pytest.mark.parametrize("view", ["deployment_event_scope_rows", "deployment_step_rows"])
def test_the_trigger_reads_only_the_appended_event_and_its_deployment(repo, view):
    # The trigger inserts `SELECT ... FROM view WHERE event_id = NEW.id`: SQLite
    # must push that into every branch of the view, or each write would read
    # the whole history.
    lines = plan(repo, f"SELECT * FROM {view} WHERE event_id = ?", (1,))
    tables = ("e", "d", "start", "deployment_events", "deployments")
    assert not [line for line in lines if line.split(" ")[:2] in (["SCAN", t] for t in tables)], lines
    assert [line for line in lines if line.startswith("SEARCH e ")] == [
        "SEARCH e USING INTEGER PRIMARY KEY (rowid=?)"] * (1 if view == "deployment_event_scope_rows" else 4)


# --- the answers are those of the reads from the events ---------------------------


class WanderingClock:
    """Time that moves on by a random step at each write, now and then not at all (ties)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.now = START

    def __call__(self) -> datetime:
        self.now += self.rng.choice((timedelta(0), timedelta(microseconds=1), timedelta(seconds=7),
                                     timedelta(minutes=13), timedelta(hours=5)))
        return self.now


def interleaved_history(repo: Repository, rng: random.Random, count: int) -> None:
    """``count`` deployments of random kinds and pairs whose actions interleave at random."""
    pending: list[tuple[str, list[str]]] = []
    created = 0
    with repo.transaction() as tx:
        while created < count or pending:
            if created < count and (not pending or rng.random() < 0.4):
                # Half of them name a commit, made at some moment before the history starts.
                committed = rng.choice([None, f"2026-11-{rng.randint(1, 25):02d}T0{rng.randint(0, 9)}:00:00."
                                              f"{rng.randint(0, 999999):06d}Z"])
                deployment = tx.create_deployment(new_deployment(
                    service=rng.choice(SERVICES), environment=rng.choice(ENVIRONMENTS), committed_at=committed))
                pending.append((deployment.id, list(rng.choice(list(PATHS.values())))))
                created += 1
                continue
            position = rng.randrange(len(pending))
            deployment_id, actions = pending[position]
            if not actions:
                pending.pop(position)
                continue
            tx.apply_action(deployment_id, ActionRequest(actions.pop(0), "bob", "noted"))


def stored_times(repo: Repository) -> list[str]:
    with repo._read() as conn:
        return [row[0] for row in conn.execute("SELECT DISTINCT created_at FROM deployment_events ORDER BY 1")]


def answer_values(rows) -> dict[str, object]:
    """A DORA statement's rows by metric, each array of durations as a multiset."""
    return {metric: Counter(json.loads(value)) if metric in DURATIONS else value for metric, value in rows}


DURATIONS = ("time_to_restore", "approval_lead_time", "deploy_duration", "lead_time_for_changes")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dora_metrics_from_the_steps_equal_those_from_the_events(db_path, seed):
    rng = random.Random(seed)
    repo = Repository(db_path, clock=WanderingClock(rng))
    try:
        interleaved_history(repo, rng, 120)
        times = stored_times(repo)
        microsecond = timedelta(microseconds=1)
        bounds = [times[0], times[-1], *rng.sample(times, 6)]
        bounds += [lifecycle.format_timestamp(datetime.fromisoformat(t) + microsecond) for t in rng.sample(times, 4)]
        scopes = [(None, None), ("billing", None), (None, "production"), ("billing", "production"),
                  ("absent", None)]
        with repo._read() as conn:
            for since, until in itertools.combinations(sorted(set(bounds)), 2):
                for scope in scopes:
                    parameters = (*scope, since, until)
                    # The same counts and window, and the same durations in any order (null: not restored).
                    new, old = (answer_values(conn.execute(sql, parameters))
                                for sql in (insights_sql.DORA_SQL, DORA_FROM_EVENTS_SQL))
                    assert new == old, (scope, since, until)
    finally:
        repo.close()


@pytest.mark.parametrize("seed", [4, 5])
def test_the_feed_from_the_event_scopes_equals_the_feed_from_the_events(db_path, seed):
    rng = random.Random(seed)
    repo = Repository(db_path, clock=WanderingClock(rng))
    try:
        interleaved_history(repo, rng, 80)
        last = repo.event_head().id
        scopes = [{"service": "billing"}, {"environment": "staging"},
                  {"service": "ledger", "environment": "production"}, {"service": "absent"}]
        with repo._read() as conn:
            for scope, event_type, after, limit in itertools.product(
                    scopes, (None, *lifecycle.EVENT_TYPES), (0, last // 3, last - 5, last), (1, 7, 1000)):
                new = conn.execute(*pages.scoped_feed_sql(after, limit, scope, event_type)).fetchall()
                old = conn.execute(*feed_from_events_sql(after, limit, scope, event_type)).fetchall()
                assert list(map(tuple, new)) == list(map(tuple, old)), (scope, event_type, after, limit)
    finally:
        repo.close()


def test_the_derived_rows_are_the_rows_of_their_views_with_durations_in_exact_microseconds(db_path):
    rng = random.Random(6)
    repo = Repository(db_path, clock=WanderingClock(rng))
    try:
        interleaved_history(repo, rng, 60)
        with repo._read() as conn:
            for table, view in (("deployment_event_scopes", "deployment_event_scope_rows"),
                                ("deployment_steps", "deployment_step_rows")):
                stored = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4").fetchall()
                defined = conn.execute(f"SELECT * FROM {view} ORDER BY 1, 2, 3, 4").fetchall()
                assert list(map(tuple, stored)) == list(map(tuple, defined)) and stored
            drift = conn.execute(
                "SELECT count(*) FROM deployment_steps WHERE microseconds IS NOT"
                f" {_microseconds_between('from_at', 'at')}").fetchone()[0]
            counts = dict(conn.execute("SELECT step, count(*) FROM deployment_steps GROUP BY step").fetchall())
        assert drift == 0
        assert set(counts) == {"approved", "started", "succeeded", "finished", "failed", "failed_change"}
        assert counts["failed"] == counts["failed_change"]
    finally:
        repo.close()


def test_a_version_4_database_is_backfilled_on_upgrade_and_answers_as_the_events_say(tmp_path):
    from pathlib import Path

    from deployapi.repository import MIGRATIONS, migrate

    path = tmp_path / "v4.db"
    clock = StepClock()
    # A version-4 file with a history, made by this code with the frozen version-4 schema.
    repo = Repository(path, clock=clock)
    record(repo, [(s, e, PATHS[name]) for s, e in itertools.product(SERVICES, ENVIRONMENTS)
                  for name in ("succeeded", "failed", "succeeded, rolled back", "rejected")])
    repo.close()
    conn = sqlite3.connect(path, isolation_level=None)
    for name in ("deployment_events_derive",):
        conn.execute(f"DROP TRIGGER {name}")
    for name in ("deployment_event_scope_rows", "deployment_step_rows"):
        conn.execute(f"DROP VIEW {name}")
    for name in ("deployment_event_scopes", "deployment_steps"):
        conn.execute(f"DROP TABLE {name}")
    conn.execute("DROP INDEX deployment_events_by_type")
    conn.execute("PRAGMA user_version = 4")
    fixture = (Path(__file__).parent / "fixtures" / "schema_v4.sql").read_text()
    conn.execute("BEGIN IMMEDIATE")
    migrate(conn, fixture, MIGRATIONS[:3], 4)  # what version 4 left: no derived tables
    conn.execute("COMMIT")
    assert not conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'deployment_steps'").fetchone()[0]
    conn.close()

    repo = Repository(path, clock=clock)  # upgrades to 5: the tables, and their rows for the events so far
    try:
        with repo._read() as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == repository.SCHEMA_VERSION
            for table, view in (("deployment_event_scopes", "deployment_event_scope_rows"),
                                ("deployment_steps", "deployment_step_rows")):
                assert conn.execute(f"SELECT count(*) FROM (SELECT * FROM {table} EXCEPT SELECT * FROM {view}"
                                    f" UNION ALL SELECT * FROM {view} EXCEPT SELECT * FROM {table})").fetchone()[0] == 0
                assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0
        window = DoraQuery(since=lifecycle.format_timestamp(START), until=lifecycle.format_timestamp(clock.now),
                           service="billing")
        metrics = repo.dora_metrics(window)
        assert (metrics.started, metrics.failed_changes) == (6, 4)
        assert len(repo.list_events_after(0, 1000, service="billing")) == len(
            [e for e in repo.list_events_after(0, 1000) if repo.get_deployment(e.deployment_id).service == "billing"])
    finally:
        repo.close()


def test_the_backfill_can_run_again_harmlessly(repo):
    record(repo, [("billing", "production", PATHS["failed, rolled back"]), ("search", "staging", PATHS["rejected"])])
    for _ in range(2):
        with repo._write() as conn:
            repository.backfill_derived_rows(conn)
    with repo._read() as conn:
        for table, view in (("deployment_event_scopes", "deployment_event_scope_rows"),
                            ("deployment_steps", "deployment_step_rows")):
            stored, defined = (list(map(tuple, conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2, 3, 4")))
                               for name in (table, view))
            assert stored == defined and stored


def test_an_event_whose_deployment_is_gone_stays_out_of_every_page_as_before(db_path, repo):
    record(repo, [("billing", "production", PATHS["succeeded"])])
    conn = sqlite3.connect(db_path)  # a hand edit: foreign keys are off in a plain connection
    conn.execute("INSERT INTO deployment_events (deployment_id, sequence, type, actor, to_status, created_at)"
                 " VALUES ('ghost', 1, 'created', 'x', 'pending_approval', '2026-01-01T00:00:00.000000Z')")
    conn.commit()
    conn.close()
    for filters in ({}, {"event_type": "created"}, {"service": "billing"}, {"environment": "production"}):
        assert "ghost" not in {e.deployment_id for e in repo.list_events_after(0, 100, **filters)}, filters


# The reference the derived table is held to: the same answers computed from
# the events themselves (what the repository ran before deployment_steps).  Every
# event a metric needs belongs to a deployment whose last event (updated_at)
# is at or after `since`, and which is neither pending nor rejected; those
# deployments are found by index and their events by the (deployment_id,
# sequence) index.  So a window in the past also reads every deployment
# changed after it.
DORA_FROM_EVENTS_SQL = f"""
WITH RECURSIVE
parameters (service, environment, since, until) AS (VALUES (?, ?, ?, ?)),
{insights_sql._SCOPE_CTE},
touched AS (
    SELECT d.id, d.service, d.environment, d.committed_at
    FROM scope CROSS JOIN parameters
    CROSS JOIN deployments AS d INDEXED BY deployments_by_service_environment_status_updated
    WHERE d.service = scope.service AND d.environment = scope.environment
      AND d.status IN ('approved', 'started', 'succeeded', 'failed', 'rolled_back')
      AND d.updated_at >= parameters.since
),
-- One row per deployment: when each step happened (each happens at most once).
-- Stored timestamps are fixed-width UTC, so text order is time order.
lifecycles AS (
    SELECT touched.service, touched.environment, touched.committed_at,
        max(CASE WHEN e.type = 'created' THEN e.created_at END) AS created_at,
        max(CASE WHEN e.type = 'approved' THEN e.created_at END) AS approved_at,
        max(CASE WHEN e.type = 'started' THEN e.created_at END) AS started_at,
        max(CASE WHEN e.from_status = 'started' THEN e.created_at END) AS finished_at,
        max(CASE WHEN e.type = 'succeeded' THEN e.created_at END) AS succeeded_at,
        min(CASE WHEN e.type IN ('failed', 'rolled_back') THEN e.created_at END) AS failed_at
    FROM touched JOIN deployment_events AS e ON e.deployment_id = touched.id
    GROUP BY touched.id
),
outcomes (service, environment, at, is_success) AS (
    SELECT service, environment, succeeded_at, 1 FROM lifecycles WHERE succeeded_at IS NOT NULL
    UNION ALL
    SELECT service, environment, failed_at, 0 FROM lifecycles WHERE failed_at IS NOT NULL
),
-- Each failed change and the first success strictly after it on the same
-- service and environment (NULL if none yet).  Newest first, with failures
-- before successes of the same instant, the rows before a failure are exactly
-- the outcomes strictly later than it.
restores AS (
    SELECT at AS failed_at, restored_at FROM (
        SELECT at, is_success, min(CASE WHEN is_success THEN at END) OVER (
            PARTITION BY service, environment ORDER BY at DESC, is_success
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS restored_at
        FROM outcomes)
    WHERE NOT is_success
)
SELECT 'succeeded' AS metric, count(*) AS value FROM lifecycles, parameters
WHERE succeeded_at >= since AND succeeded_at < until
UNION ALL SELECT 'started', count(*) FROM lifecycles, parameters WHERE started_at >= since AND started_at < until
UNION ALL SELECT 'failed_changes', count(*) FROM lifecycles, parameters
WHERE started_at >= since AND started_at < until AND failed_at IS NOT NULL
UNION ALL SELECT 'time_to_restore', json_group_array({_microseconds_between('failed_at', 'restored_at')})
FROM restores, parameters WHERE failed_at >= since AND failed_at < until
UNION ALL SELECT 'approval_lead_time', json_group_array({_microseconds_between('created_at', 'approved_at')})
FROM lifecycles, parameters WHERE approved_at >= since AND approved_at < until
UNION ALL SELECT 'deploy_duration', json_group_array({_microseconds_between('started_at', 'finished_at')})
FROM lifecycles, parameters WHERE finished_at >= since AND finished_at < until
UNION ALL SELECT 'lead_time_for_changes', json_group_array({_microseconds_between('committed_at', 'succeeded_at')})
FROM lifecycles, parameters WHERE succeeded_at >= since AND succeeded_at < until AND committed_at IS NOT NULL
UNION ALL {insights_sql._WINDOW_DAYS}
"""


def feed_from_events_sql(after: int, limit: int, scope: dict[str, str], event_type: str | None):
    """The reference for a scoped feed page: the events in id order, each checked against its deployment."""
    conditions, parameters = ["e.id > ?"], [after]
    for column, value in (("d.service", scope.get("service")), ("d.environment", scope.get("environment")),
                          ("e.type", event_type)):
        if value is not None:
            conditions.append(f"{column} = ?")
            parameters.append(value)
    return (f"SELECT {rows.EVENT_COLUMNS} FROM deployment_events e JOIN deployments d"
            f" ON d.id = e.deployment_id WHERE {' AND '.join(conditions)} ORDER BY e.id LIMIT ?", [*parameters, limit])
