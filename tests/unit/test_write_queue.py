"""The write queue on its own: which writes go into one group, which thread runs it, who gets which outcome."""

from __future__ import annotations

import threading
import time

import pytest

from deployapi.repository.group_commit import TimedOut, WriteQueue

WAIT = 5  # seconds: the longest any step below may take before the test fails


class Recorder:
    """A commit_group that records each group (as the writes' labels), runs it, and can be held at a gate."""

    def __init__(self):
        self.groups: list[list[str]] = []
        self.threads: list[int] = []
        self.gates: dict[str, threading.Event] = {}  # a group that holds this label waits here first
        # Group number -> how many of its writes run before the leading thread is interrupted.
        self.interrupt: dict[int, int] = {}
        self.entered = threading.Event()

    def __call__(self, group):
        labels = [write.operation.label for write in group]
        self.groups.append(labels)
        self.threads.append(threading.get_ident())
        self.entered.set()
        for label in labels:
            if label in self.gates:
                assert self.gates[label].wait(WAIT)
        for number, write in enumerate(group):
            if self.interrupt.get(len(self.groups) - 1) == number:
                raise KeyboardInterrupt  # as an interruption of the leading thread would
            try:
                write.result = write.operation(None)
            except Exception as error:  # the outcome under test, raised in the write's own thread
                write.error = error


def labelled(label, result=None, error=None):
    def operation(conn):
        if error is not None:
            raise error
        return result if result is not None else label
    operation.label = label
    return operation


def submit(queue, operation, outcomes, deadline=WAIT):
    """Run ``operation`` through the queue on a thread of its own; its outcome lands in ``outcomes``."""
    def run():
        try:
            outcomes[operation.label] = ("ok", queue.run(operation, time.monotonic(), time.monotonic() + deadline,
                                                        time.monotonic), threading.get_ident())
        except BaseException as error:  # noqa: BLE001 - recorded for the test to look at
            outcomes[operation.label] = ("error", error, threading.get_ident())
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_until(condition):
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_a_write_alone_runs_at_once_as_a_group_of_one_on_its_own_thread():
    recorder = Recorder()
    queue = WriteQueue(recorder)
    assert queue.run(labelled("a", 42), time.monotonic(), time.monotonic() + WAIT, time.monotonic) == 42
    assert recorder.groups == [["a"]] and recorder.threads == [threading.get_ident()]
    assert queue.waiting() == 0


class HeldQueue:
    """A queue whose first write, "a", is held inside its group until release(): what queues meanwhile is the next."""

    def __init__(self):
        self.recorder = Recorder()
        self.queue = WriteQueue(self.recorder)
        self.recorder.gates["a"] = threading.Event()
        self.outcomes = {}
        self.threads = [submit(self.queue, labelled("a"), self.outcomes)]
        assert self.recorder.entered.wait(WAIT)

    def queue_behind(self, operation, deadline=WAIT):
        """Submit ``operation`` and wait until it has queued."""
        waiting = self.queue.waiting()
        self.threads.append(submit(self.queue, operation, self.outcomes, deadline))
        wait_until(lambda: self.queue.waiting() == waiting + 1)

    def release(self):
        self.recorder.gates["a"].set()
        for thread in self.threads:
            thread.join(WAIT)


def test_writes_that_queue_while_a_group_runs_are_the_next_group_led_by_the_first_of_them():
    held = HeldQueue()
    for label in "bcd":
        held.queue_behind(labelled(label))
    held.release()
    assert held.recorder.groups == [["a"], ["b", "c", "d"]]
    # Each thread got its own result; the second group ran on b's thread, the first to queue.
    assert {label: outcome[:2] for label, outcome in held.outcomes.items()} == {
        label: ("ok", label) for label in "abcd"}
    assert held.recorder.threads == [held.outcomes["a"][2], held.outcomes["b"][2]]
    assert held.queue.waiting() == 0


def test_an_error_of_one_write_is_raised_in_its_own_thread_only():
    held = HeldQueue()
    refusal = ValueError("refused")
    held.queue_behind(labelled("b", error=refusal))
    held.queue_behind(labelled("c"))
    held.release()
    assert held.recorder.groups == [["a"], ["b", "c"]]
    assert held.outcomes["b"][:2] == ("error", refusal)
    assert held.outcomes["a"][:2] == ("ok", "a") and held.outcomes["c"][:2] == ("ok", "c")


def test_a_write_still_waiting_at_its_deadline_leaves_the_queue_and_is_in_no_group():
    held = HeldQueue()
    late = submit(held.queue, labelled("late"), held.outcomes, deadline=0.05)
    late.join(WAIT)
    assert held.outcomes["late"][0] == "error" and isinstance(held.outcomes["late"][1], TimedOut)
    assert held.queue.waiting() == 0
    held.queue_behind(labelled("b"))
    held.release()
    assert held.recorder.groups == [["a"], ["b"]]
    assert held.outcomes["b"][:2] == ("ok", "b")


def test_a_write_whose_deadline_passes_while_its_group_runs_waits_for_its_outcome():
    held = HeldQueue()
    held.recorder.gates["b"] = threading.Event()
    held.queue_behind(labelled("b"))
    held.queue_behind(labelled("c"), deadline=1.0)
    held.recorder.gates["a"].set()
    wait_until(lambda: len(held.recorder.groups) == 2)  # b and c taken, held at b's gate past c's deadline
    time.sleep(1.1)
    held.recorder.gates["b"].set()
    held.release()
    assert held.recorder.groups == [["a"], ["b", "c"]]
    assert held.outcomes["c"][:2] == ("ok", "c")


def test_a_group_that_is_interrupted_fails_its_writes_and_hands_the_lead_on():
    held = HeldQueue()
    held.recorder.interrupt[0] = 0
    held.queue_behind(labelled("b"))
    held.release()
    assert isinstance(held.outcomes["a"][1], KeyboardInterrupt)
    assert held.outcomes["b"][:2] == ("ok", "b")
    assert held.recorder.groups == [["a"], ["b"]]


def test_a_write_of_an_interrupted_group_that_never_ran_is_told_so():
    held = HeldQueue()
    held.recorder.interrupt[1] = 1  # b's group: b runs, then the interruption, before c's turn
    held.queue_behind(labelled("b"))
    held.queue_behind(labelled("c"))
    held.release()
    assert held.recorder.groups == [["a"], ["b", "c"]]
    assert held.outcomes["a"][:2] == ("ok", "a")
    assert held.outcomes["b"][0] == "error" and isinstance(held.outcomes["b"][1], KeyboardInterrupt)  # b's thread led
    assert held.outcomes["c"][0] == "error" and isinstance(held.outcomes["c"][1], RuntimeError)
    assert "not run" in str(held.outcomes["c"][1])


@pytest.mark.parametrize("writers", [2, 8])
def test_every_write_of_many_threads_runs_exactly_once(writers):
    ran = []
    lock = threading.Lock()

    def commit_group(group):
        for write in group:
            write.result = write.operation(None)

    queue = WriteQueue(commit_group)

    def operation_for(label):
        def operation(conn):
            with lock:
                ran.append(label)
            return label
        return operation

    results = {}

    def writer(n):
        for i in range(200):
            label = (n, i)
            results[label] = queue.run(operation_for(label), time.monotonic(), time.monotonic() + WAIT,
                                       time.monotonic)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(ran) == sorted(results) and len(ran) == writers * 200
    assert all(results[label] == label for label in results)
    assert queue.waiting() == 0
