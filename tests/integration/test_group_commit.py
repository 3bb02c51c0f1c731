"""Writes that queue for the database together are committed together: what each of them sees and gets."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from builders import StepClock, new_deployment

from deployapi.integrity import check_database
from deployapi.lifecycle import ActionRequest, InvalidTransition
from deployapi.repository import DatabaseBusy, Repository

WAIT = 5


class HeldWrite:
    """A write that holds the lead of the write queue until released, so that the writes after it form one group."""

    def __init__(self, repository: Repository):
        self.inside = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=repository.write, args=(self._operation,))

    def _operation(self, tx):
        deployment = tx.create_deployment(new_deployment(version="held"))
        self.inside.set()
        assert self.release.wait(WAIT)
        return deployment

    def __enter__(self):
        self.thread.start()
        assert self.inside.wait(WAIT)
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.thread.join(WAIT)


def queue_writes(repository: Repository, operations):
    """Start one thread per operation, each queued after the previous; their outcomes, once they are done."""
    outcomes: dict[int, tuple[str, object]] = {}

    def run(n, operation):
        try:
            outcomes[n] = ("ok", repository.write(operation))
        except BaseException as error:  # noqa: BLE001 - the outcome under test, SystemExit included
            outcomes[n] = ("error", error)

    threads = []
    for n, operation in enumerate(operations):
        threads.append(threading.Thread(target=run, args=(n, operation)))
        threads[-1].start()
        deadline = time.monotonic() + WAIT
        while repository._write_queue.waiting() < n + 1:
            assert time.monotonic() < deadline, "the write did not queue"
            time.sleep(0.001)
    return threads, outcomes


def finish(threads):
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()


def versions(repository: Repository) -> list[str]:
    with repository._read() as conn:
        return [row[0] for row in conn.execute("SELECT version FROM deployments ORDER BY created_at")]


def creating(version, ran=None):
    def operation(tx):
        if ran is not None:
            ran.append(version)
        return tx.create_deployment(new_deployment(version=version)), threading.get_ident()
    return operation


def test_writes_queued_behind_another_run_on_one_thread_and_each_gets_its_own_deployment(repo):
    with HeldWrite(repo):
        threads, outcomes = queue_writes(repo, [creating(f"1.0.{n}") for n in range(3)])
    finish(threads)
    assert [outcomes[n][0] for n in range(3)] == ["ok"] * 3
    deployments = [outcomes[n][1][0] for n in range(3)]
    assert [d.version for d in deployments] == ["1.0.0", "1.0.1", "1.0.2"]
    assert len({outcomes[n][1][1] for n in range(3)}) == 1  # one thread ran the group: the first one queued
    assert versions(repo) == ["held", "1.0.0", "1.0.1", "1.0.2"]
    assert [repo.get_deployment(d.id) for d in deployments] == deployments
    assert check_database(repo.db_path).ok


def test_a_write_of_a_group_that_raises_undoes_only_its_own_changes(repo):
    def refused(tx):
        tx.create_deployment(new_deployment(version="refused"))
        raise LookupError("refused after writing")

    with HeldWrite(repo):
        threads, outcomes = queue_writes(repo, [creating("first"), refused, creating("last")])
    finish(threads)
    assert outcomes[1][0] == "error" and str(outcomes[1][1]) == "refused after writing"
    assert outcomes[0][0] == outcomes[2][0] == "ok"
    assert versions(repo) == ["held", "first", "last"]
    assert check_database(repo.db_path).ok


def test_when_the_transaction_of_a_group_fails_every_write_runs_again_alone(repo):
    ran = []

    def broken(tx):
        ran.append("broken")
        tx.create_deployment(new_deployment(version="broken"))
        tx._conn.execute("INSERT INTO no_such_table VALUES (1)")

    with HeldWrite(repo):
        threads, outcomes = queue_writes(repo, [creating("first", ran), broken, creating("last", ran)])
    finish(threads)
    assert outcomes[1][0] == "error" and isinstance(outcomes[1][1], sqlite3.OperationalError)
    assert outcomes[0][0] == outcomes[2][0] == "ok"
    # In the group (first, broken; last never reached), then each alone.
    assert ran == ["first", "broken", "first", "broken", "last"]
    assert versions(repo) == ["held", "first", "last"]
    # Each write's wait counted once (the held write's, then each run alone), not again for the failed group.
    assert repo.write_stats.snapshot()[0].count == 4
    assert check_database(repo.db_path).ok


def test_writes_judged_against_a_group_that_was_not_committed_are_judged_again(repo):
    # In the group, bob's approval succeeds and carol's is refused (already
    # approved); then the group fails.  Alone, bob's gives up: carol's, run
    # again, is judged against what was committed, and succeeds.
    deployment = repo.create_deployment(new_deployment())
    bob_attempts = []

    def bob_approves_only_the_first_time(tx):
        bob_attempts.append(1)
        if len(bob_attempts) > 1:
            raise LookupError("bob gives up")
        return tx.apply_action(deployment.id, ActionRequest("approve", "bob@example.com", None))

    carol_refused = []

    def carol_approves(tx):
        try:
            return tx.apply_action(deployment.id, ActionRequest("approve", "carol@example.com", None))
        except InvalidTransition:
            carol_refused.append(1)
            raise

    def broken(tx):
        tx._conn.execute("INSERT INTO no_such_table VALUES (1)")

    with HeldWrite(repo):
        threads, outcomes = queue_writes(repo, [bob_approves_only_the_first_time, carol_approves, broken])
    finish(threads)
    assert outcomes[0][0] == "error" and str(outcomes[0][1]) == "bob gives up"
    assert outcomes[1][0] == "ok" and outcomes[1][1].reviewed_by == "carol@example.com"
    assert repo.get_deployment(deployment.id).reviewed_by == "carol@example.com"
    assert carol_refused == [1]  # in the group


def test_an_interrupted_group_reports_no_write_of_it_as_done(repo):
    def interrupted(tx):
        tx.create_deployment(new_deployment(version="interrupted"))
        raise SystemExit  # as an interruption of the leading thread would

    with HeldWrite(repo):
        threads, outcomes = queue_writes(repo, [creating("first"), creating("second"), interrupted])
    finish(threads)
    assert outcomes[0][0] == "error" and isinstance(outcomes[0][1], SystemExit)  # the leading thread
    for n in (1, 2):  # "second" had run in its savepoint: it must not report that run
        assert outcomes[n][0] == "error" and isinstance(outcomes[n][1], RuntimeError), outcomes[n]
    assert versions(repo) == ["held"]


def test_a_group_that_gets_no_lock_in_time_is_refused_at_its_oldest_write_s_deadline(tmp_path):
    # busy timeout 0.4 s; "a" leads alone and is refused at 0.4 s; "b" (queued at 0) and "c"
    # (queued at 0.25 s) then form a group, refused at b's deadline: b's thread, which leads
    # it, is not kept waiting for c's deadline as well.
    repository = Repository(tmp_path / "busy.db", busy_timeout_ms=400, clock=StepClock())
    inside, release = threading.Event(), threading.Event()

    def holder():
        with repository.transaction() as tx:  # holds the write lock, outside the queue
            tx.create_deployment(new_deployment())
            inside.set()
            release.wait(WAIT)

    holding = threading.Thread(target=holder)
    holding.start()
    outcomes: dict[str, tuple[object, float]] = {}

    def write(label):
        started = time.monotonic()
        try:
            result = repository.write(creating(label))
        except Exception as error:  # the outcome under test
            result = error
        outcomes[label] = (result, time.monotonic() - started)

    try:
        assert inside.wait(WAIT)
        writers = {label: threading.Thread(target=write, args=(label,)) for label in "abc"}
        writers["a"].start()
        deadline = time.monotonic() + WAIT
        while repository._write_queue.waiting() or not repository._write_queue._leading:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        writers["b"].start()
        time.sleep(0.25)
        writers["c"].start()
        for writer in writers.values():
            writer.join(WAIT)
        assert all(isinstance(outcomes[label][0], DatabaseBusy) for label in "abc")
        assert outcomes["b"][1] < 0.55  # its own busy timeout, not c's deadline (0.65 s) too
        waits, refused = repository.write_stats.snapshot()
        assert refused["process_queue"] == 3 and waits.count == 1  # the holder's own wait only
    finally:
        release.set()
        holding.join(WAIT)
        repository.close()


@pytest.mark.parametrize("writers", [4, 12])
def test_many_threads_writing_at_once_each_get_their_write_once(tmp_path, writers):
    repository = Repository(tmp_path / "many.db", max_writers=writers)
    results: list = []
    lock = threading.Lock()

    def writer(n):
        for i in range(25):
            deployment = repository.create_deployment(new_deployment(version=f"{n}.{i}"))
            approved = repository.write(
                lambda tx, d=deployment: tx.apply_action(d.id, _approval()))
            with lock:
                results.append((deployment, approved))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    try:
        for thread in threads:
            thread.start()
        finish(threads)
        assert len(results) == writers * 25
        assert sorted(versions(repository)) == sorted(f"{n}.{i}" for n in range(writers) for i in range(25))
        for deployment, approved in results:
            assert repository.get_deployment(deployment.id) == approved
            assert [e.type for e in repository.list_events(deployment.id)] == ["created", "approved"]
        assert check_database(repository.db_path).ok
    finally:
        repository.close()


def _approval():
    return ActionRequest("approve", "reviewer@example.com", None)
