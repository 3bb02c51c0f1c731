"""Group commit without a database: turns, batches, outcomes and timeouts."""

from __future__ import annotations

import threading
import time

import pytest

from deployapi.group_commit import GroupCommit, QueueTimeout


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


class Recorder:
    """A commit_batch that runs each operation, records the batch sizes, and can be held open."""

    def __init__(self):
        self.batches: list[list[str]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.inside = threading.Event()
        self.committed: list[str] = []

    def __call__(self, batch):
        self.inside.set()
        self.hold.wait()
        names = []
        for pending in batch:
            try:
                pending.succeed(pending.operation(None))
                names.append(pending.result)
            except ValueError as refusal:
                pending.fail(refusal)
        self.batches.append(names)
        self.committed += names  # "COMMIT": only now may anyone be answered


def submit_in_thread(group, operation, outcomes, name):
    def run():
        try:
            outcomes[name] = group.submit(operation)
        except Exception as error:
            outcomes[name] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_lone_write_is_a_batch_of_one():
    recorder = Recorder()
    group = GroupCommit(recorder, timeout=5)
    assert group.submit(lambda tx: "a") == "a"
    assert recorder.batches == [["a"]]


def test_writes_that_wait_are_committed_together_and_answered_only_after_the_commit():
    recorder = Recorder()
    recorder.hold.clear()
    group = GroupCommit(recorder, timeout=5)
    outcomes: dict[str, object] = {}
    first = submit_in_thread(group, lambda tx: "first", outcomes, "first")
    recorder.inside.wait(5)
    waiting = [submit_in_thread(group, lambda tx, n=n: n, outcomes, n) for n in ("b", "c", "d")]
    wait_until(lambda: len(group._queue) == 3)
    assert outcomes == {}  # nobody answered while the first batch is open
    recorder.hold.set()
    for thread in [first, *waiting]:
        thread.join(5)
    assert recorder.batches[0] == ["first"]
    assert sorted(recorder.batches[1]) == ["b", "c", "d"] and len(recorder.batches) == 2
    assert outcomes == {"first": "first", "b": "b", "c": "c", "d": "d"}


def test_a_refused_write_gets_its_own_error_and_the_others_their_results():
    recorder = Recorder()
    recorder.hold.clear()
    group = GroupCommit(recorder, timeout=5)
    outcomes: dict[str, object] = {}

    def refuse(tx):
        raise ValueError("refused")

    threads = [submit_in_thread(group, lambda tx: "first", outcomes, "first")]
    recorder.inside.wait(5)
    threads += [submit_in_thread(group, refuse, outcomes, "refused"),
                submit_in_thread(group, lambda tx: "kept", outcomes, "kept")]
    wait_until(lambda: len(group._queue) == 2)
    recorder.hold.set()
    for thread in threads:
        thread.join(5)
    assert isinstance(outcomes["refused"], ValueError) and outcomes["kept"] == "kept"


def test_when_the_batch_fails_every_write_in_it_fails():
    def broken(batch):
        raise OSError("disk full")

    group = GroupCommit(broken, timeout=5)
    with pytest.raises(OSError, match="disk full"):
        group.submit(lambda tx: "a")
    # The turn was given back: the next write runs.
    group._commit_batch = Recorder()
    assert group.submit(lambda tx: "b") == "b"


def test_a_write_still_queued_after_the_timeout_fails_and_is_never_run():
    recorder = Recorder()
    recorder.hold.clear()
    group = GroupCommit(recorder, timeout=0.05)
    outcomes: dict[str, object] = {}
    first = submit_in_thread(group, lambda tx: "first", outcomes, "first")
    recorder.inside.wait(5)
    with pytest.raises(QueueTimeout):
        group.submit(lambda tx: "late")
    recorder.hold.set()
    first.join(5)
    assert recorder.committed == ["first"] and group._queue == []


def test_exclusive_holds_the_turn_and_queued_writes_run_after_it():
    recorder = Recorder()
    group = GroupCommit(recorder, timeout=5)
    outcomes: dict[str, object] = {}
    with group.exclusive():
        thread = submit_in_thread(group, lambda tx: "after", outcomes, "after")
        wait_until(lambda: len(group._queue) == 1)
        assert outcomes == {}
    thread.join(5)
    assert outcomes == {"after": "after"}


def test_exclusive_waits_no_longer_than_the_timeout():
    group = GroupCommit(Recorder(), timeout=0.01)
    with group.exclusive():
        with pytest.raises(QueueTimeout), group.exclusive():
            pass
