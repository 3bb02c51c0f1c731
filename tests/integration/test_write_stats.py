"""What the Database counts for GET /metrics: each write's wait, each busy refusal by its reason, and the status
counts with the changes the events carry."""

from __future__ import annotations

import sqlite3
import threading
import time

from builders import StepClock, new_deployment

from deployapi.lifecycle import ActionRequest
from deployapi.repository import BUSY_REASONS, DatabaseBusy, Repository


def refusals(repository: Repository) -> dict[str, int]:
    return repository.write_stats.snapshot()[1]


def test_each_write_that_began_records_its_wait_and_none_is_refused_alone(repo):
    for _ in range(3):
        repo.create_deployment(new_deployment())
    waits, refused = repo.write_stats.snapshot()
    assert waits.count == 3 and waits.total >= 0
    assert refused == dict.fromkeys(BUSY_REASONS, 0)


def test_a_write_behind_this_process_s_other_writes_past_the_busy_timeout_is_a_process_queue_refusal(tmp_path):
    repository = Repository(tmp_path / "queue.db", busy_timeout_ms=100, clock=StepClock())
    inside = threading.Event()

    def slow_write():
        with repository.transaction() as tx:
            tx.create_deployment(new_deployment())
            inside.set()
            time.sleep(0.4)

    holder = threading.Thread(target=slow_write)
    holder.start()
    try:
        assert inside.wait(5)
        try:
            repository.create_deployment(new_deployment())
        except DatabaseBusy as busy:
            assert busy.reason == "process_queue"
        else:
            raise AssertionError("the queued write was not refused")
    finally:
        holder.join(5)
        repository.close()
    assert refusals(repository) == {**dict.fromkeys(BUSY_REASONS, 0), "process_queue": 1}
    # The slow write began (and waited for nothing); the refused one never did.
    assert repository.write_stats.snapshot()[0].count == 1


def test_writes_beyond_max_writers_behind_another_process_are_writers_stuck_refusals(tmp_path):
    path = tmp_path / "stuck.db"
    repository = Repository(path, busy_timeout_ms=2000, max_writers=1, clock=StepClock())
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    first: list[str] = []

    def waiting_write():
        try:
            repository.create_deployment(new_deployment())
            first.append("created")
        except DatabaseBusy as busy:
            first.append(busy.reason)

    waiting = threading.Thread(target=waiting_write)
    waiting.start()
    try:
        time.sleep(0.5)  # past STUCK_WRITE_SECONDS in BEGIN IMMEDIATE
        try:
            repository.create_deployment(new_deployment())
        except DatabaseBusy as busy:
            assert busy.reason == "writers_stuck"
        else:
            raise AssertionError("the write beyond max_writers was not refused")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        waiting.join(5)
        repository.close()
    # The one holding the slot got the lock once the other process let go.
    assert first == ["created"]
    assert refusals(repository) == {**dict.fromkeys(BUSY_REASONS, 0), "writers_stuck": 1}
    waits = repository.write_stats.snapshot()[0]
    assert waits.count == 1 and waits.total >= 0.5


def test_status_counts_plus_the_changes_since_are_the_counts_now(repo):
    created = [repo.create_deployment(new_deployment(version=f"1.0.{i}")) for i in range(3)]
    counts, head = repo.status_counts()
    assert counts == {"pending_approval": 3} and head == 3

    repo.apply_action(created[0].id, ActionRequest("approve", "bob@example.com", None))
    repo.apply_action(created[0].id, ActionRequest("start", "bob@example.com", None))
    repo.apply_action(created[1].id, ActionRequest("reject", "bob@example.com", "no"))
    repo.create_deployment(new_deployment(version="2.0.0"))
    changes, later = repo.status_changes_after(head)
    assert sorted(changes, key=str) == sorted([("pending_approval", "approved", 1), ("approved", "started", 1),
                                               ("pending_approval", "rejected", 1), (None, "pending_approval", 1)],
                                              key=str)
    assert later == 7
    assert repo.status_changes_after(later) == ([], 7)
    assert repo.status_counts() == ({"pending_approval": 2, "started": 1, "rejected": 1}, 7)
