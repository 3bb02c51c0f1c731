"""Racing writers on one real database file: exactly one wins, history stays consistent."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from builders import new_deployment

from deployapi.lifecycle import ActionRequest, InvalidTransition
from deployapi.listing import ListQuery
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


class _CloseThenPause:
    """A connection whose close() waits after closing: the moment the -wal is gone."""

    def __init__(self, conn, closed: threading.Event, go: threading.Event):
        self._conn, self._closed, self._go = conn, closed, go

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def close(self):
        self._conn.close()
        self._closed.set()
        self._go.wait(timeout=5)


@pytest.mark.parametrize("third", ["write", "ping"])
def test_a_connection_closing_while_another_opens_is_not_taken_for_a_lost_wal(db_path, third):
    # SQLite deletes the -wal when the last connection closes, and a
    # connection opened a moment later starts a new one.  Thread A's
    # connection, the only one left once the writes' connection is let go,
    # closes as A ends; thread C opens one and writes (or runs the health
    # check) during that close.  Neither may be taken for a -wal removed
    # behind deployapi's back (a lasting fault: every write refused until
    # a restart).
    repo = Repository(db_path)
    closed, go, read, wrote = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    real_open = repo._open

    def open_pausing_in_a(**options):
        conn = real_open(**options)
        return _CloseThenPause(conn, closed, go) if threading.current_thread().name == "A" else conn

    repo._open = open_pausing_in_a
    outcomes = {}

    def read_then_end():
        repo.list_deployments(ListQuery())
        read.set()
        wrote.wait(timeout=5)

    def write(name):
        try:
            if name == "C" and third == "ping":  # the health check, on a thread with no connection yet
                repo.ping()
                outcomes[name] = "pending_approval"
            else:
                outcomes[name] = repo.create_deployment(new_deployment()).status
        except Exception as error:  # the outcome under test
            outcomes[name] = error

    try:
        a = threading.Thread(target=read_then_end, name="A")
        a.start()
        assert read.wait(timeout=5)
        write("before")  # the -wal is known now, A's connection open
        repo.release_connections()  # the writes' connection closed: A's is the last
        wrote.set()
        assert closed.wait(timeout=5)  # A ended, and its connection is closed: the -wal is gone
        c = threading.Thread(target=write, args=("C",), name="C")
        c.start()
        c.join(timeout=1)  # unless its opening waits for A's close to finish
        go.set()
        for thread in (a, c):
            thread.join()
        write("after")
        assert outcomes == dict.fromkeys(("before", "C", "after"), "pending_approval")
        assert repo.storage.fault is None
    finally:
        repo.close()
