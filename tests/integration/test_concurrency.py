"""Racing writers on one real database file: exactly one wins, history stays consistent."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from builders import new_deployment

from deployapi.lifecycle import ActionRequest, InvalidTransition
from deployapi.repository import Repository

RACERS = 16


def race(calls):
    """Run the calls at the same moment; return each one's result or exception."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        try:
            return call()
        except Exception as error:  # the outcome under test
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.mark.parametrize("separate_repositories", [False, True],
                         ids=["one repository, many threads", "one repository per thread"])
def test_of_many_simultaneous_approvals_exactly_one_succeeds(db_path, separate_repositories):
    # Separate Repository objects do not share the in-process write lock, so
    # that case exercises SQLite's own BEGIN IMMEDIATE serialisation, as
    # separate server processes on one file would.
    repositories = [Repository(db_path) for _ in range(RACERS if separate_repositories else 1)]
    try:
        deployment = repositories[0].create_deployment(new_deployment(requester="alice"))

        def approve(n):
            repository = repositories[n % len(repositories)]
            return lambda: repository.apply_action(deployment.id, ActionRequest("approve", f"reviewer-{n}", None))

        outcomes = race([approve(n) for n in range(RACERS)])
        winners = [o for o in outcomes if not isinstance(o, Exception)]
        losers = [o for o in outcomes if isinstance(o, Exception)]
        assert len(winners) == 1
        assert len(losers) == RACERS - 1 and all(isinstance(o, InvalidTransition) for o in losers)
        events = repositories[0].list_events(deployment.id)
        assert [e.type for e in events] == ["created", "approved"]
        assert repositories[0].get_deployment(deployment.id).reviewed_by == winners[0].reviewed_by == events[1].actor
    finally:
        for repository in repositories:
            repository.close()


def test_concurrent_creates_and_actions_keep_state_and_history_in_step(db_path, repo):
    def lifecycle_run(n):
        d = repo.create_deployment(new_deployment(requester=f"dev-{n}"))
        for action, note in (("approve", None), ("start", None), ("fail", "boom"), ("rollback", "undo")):
            repo.apply_action(d.id, ActionRequest(action, f"ops-{n}", note))
        return d.id

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lifecycle_run, range(40)))

    with sqlite3.connect(db_path) as conn:
        drift = conn.execute(
            "SELECT d.id FROM deployments d JOIN deployment_events e ON e.deployment_id = d.id"
            " WHERE e.sequence = (SELECT max(sequence) FROM deployment_events WHERE deployment_id = d.id)"
            " AND e.to_status <> d.status"
        ).fetchall()
        sequences = conn.execute(
            "SELECT deployment_id, group_concat(sequence) FROM"
            " (SELECT deployment_id, sequence FROM deployment_events ORDER BY deployment_id, sequence)"
            " GROUP BY deployment_id"
        ).fetchall()
    assert drift == []
    assert len(ids) == 40 and {s for _, s in sequences} == {"1,2,3,4,5"}
