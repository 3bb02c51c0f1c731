"""Racing writers on one real database file: exactly one wins, history stays consistent."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from builders import new_deployment

from deployapi.lifecycle import ActionRequest, InvalidTransition
from deployapi.integrity import check_database
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


# --- group commit: several writes in one transaction ---------------------------------------

def hold_the_turn(repository):
    """Start a write that stays open until released, so that writes submitted meanwhile queue as one batch."""
    inside, release = threading.Event(), threading.Event()

    def slow(tx):
        inside.set()
        release.wait(5)
        return tx.create_deployment(new_deployment(service="first"))

    thread = threading.Thread(target=repository.write, args=(slow,))
    thread.start()
    inside.wait(5)
    return thread, release


def submit_all(repository, operations):
    outcomes = [None] * len(operations)

    def run(index, operation):
        try:
            outcomes[index] = repository.write(operation)
        except Exception as error:  # the outcome under test
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(i, op)) for i, op in enumerate(operations)]
    for thread in threads:
        thread.start()
    return threads, outcomes


def wait_for_queue(repository, length):
    for _ in range(5000):
        if len(repository._writes._queue) == length:
            return
        threading.Event().wait(0.001)
    raise AssertionError("the writes did not queue")


def test_a_refused_write_in_a_batch_leaves_the_others_written(db_path):
    repository = Repository(db_path)
    pending = repository.create_deployment(new_deployment(requester="alice@example.com"))

    def write_then_refuse(tx):
        tx.create_deployment(new_deployment(service="undone"))
        raise ValueError("refused after writing")

    first, release = hold_the_turn(repository)
    threads, outcomes = submit_all(repository, [
        write_then_refuse,
        lambda tx: tx.create_deployment(new_deployment(service="kept-one")),
        lambda tx: tx.apply_action(pending.id, ActionRequest("approve", "alice@example.com", None)),  # self-approval
        lambda tx: tx.apply_action("no-such-id", ActionRequest("approve", "bob@example.com", None)),
        lambda tx: tx.create_deployment(new_deployment(service="kept-two")),
    ])
    wait_for_queue(repository, 5)
    release.set()
    for thread in [first, *threads]:
        thread.join(5)
    assert [type(o).__name__ for o in outcomes] == [
        "ValueError", "Deployment", "SelfApproval", "DeploymentNotFound", "Deployment"]
    with sqlite3.connect(db_path) as conn:
        services = {r[0] for r in conn.execute("SELECT service FROM deployments")}
        statuses = conn.execute("SELECT status FROM deployments WHERE id = ?", (pending.id,)).fetchone()
        events = conn.execute("SELECT count(*) FROM deployment_events").fetchone()[0]
    assert services == {"billing", "first", "kept-one", "kept-two"} and statuses == ("pending_approval",)
    assert events == 4  # one created event each; nothing from the refused actions
    assert check_database(db_path).ok
    repository.close()


def test_an_sqlite_error_in_a_batch_fails_only_the_write_that_caused_it(db_path):
    repository = Repository(db_path)
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TRIGGER refuse_boom BEFORE INSERT ON deployments WHEN NEW.service = 'boom'"
                     " BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    first, release = hold_the_turn(repository)
    threads, outcomes = submit_all(repository, [
        lambda tx: tx.create_deployment(new_deployment(service="before")),
        lambda tx: tx.create_deployment(new_deployment(service="boom")),
        lambda tx: tx.create_deployment(new_deployment(service="after")),
    ])
    wait_for_queue(repository, 3)
    release.set()
    for thread in [first, *threads]:
        thread.join(5)
    assert isinstance(outcomes[1], sqlite3.IntegrityError)
    assert {o.service for o in (outcomes[0], outcomes[2])} == {"before", "after"}
    with sqlite3.connect(db_path) as conn:
        assert {r[0] for r in conn.execute("SELECT service FROM deployments")} == {"first", "before", "after"}
    assert check_database(db_path).ok
    repository.close()


def test_many_concurrent_writers_all_durable_with_an_intact_chain(db_path):
    repository = Repository(db_path)
    created = race([lambda: repository.create_deployment(new_deployment()) for _ in range(RACERS)])
    approved = race([lambda d=d: repository.apply_action(d.id, ActionRequest("approve", "bob@example.com", None))
                     for d in created])
    assert all(a.status == "approved" for a in approved)
    repository.close()
    reopened = Repository(db_path)
    assert {reopened.get_deployment(d.id).status for d in created} == {"approved"}
    assert check_database(db_path).ok
    reopened.close()
