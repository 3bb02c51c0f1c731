"""The write lock between processes (repository/process_lock.py) against real processes on a real file."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time

import pytest
from builders import new_deployment

from deployapi.repository import DatabaseBusy, DatabaseError, Repository
from deployapi.repository.connections import BUSY_SQLITE_LOCK
from deployapi.repository.process_lock import ProcessLock


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "deployapi.db"
    Repository(path).close()
    return path


def hold_in_another_process(path, seconds: float | None) -> int:
    """A child that takes the lock on ``path`` and holds it ``seconds`` (None: until killed); its pid, once it holds."""
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(path, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(ready_write, b"x")
            time.sleep(3600 if seconds is None else seconds)
        finally:
            os._exit(0)
    os.close(ready_write)
    assert os.read(ready_read, 1) == b"x"
    os.close(ready_read)
    return pid


def test_a_write_waits_for_another_process_holding_the_lock_and_goes_through_once_it_lets_go(database):
    repository = Repository(database, process_lock=True)
    try:
        holder = hold_in_another_process(database, 0.4)
        started = time.monotonic()
        created = repository.create_deployment(new_deployment())
        waited = time.monotonic() - started
        os.waitpid(holder, 0)
        assert waited >= 0.3
        assert repository.get_deployment(created.id) == created
    finally:
        repository.close()


def test_a_write_gives_up_after_the_busy_timeout_as_database_busy_and_writes_nothing(database):
    repository = Repository(database, process_lock=True, busy_timeout_ms=300)
    holder = hold_in_another_process(database, None)
    try:
        with pytest.raises(DatabaseBusy) as refused:
            repository.create_deployment(new_deployment())
        assert refused.value.reason == BUSY_SQLITE_LOCK
        _, refusals = repository.write_stats.snapshot()
        assert refusals[BUSY_SQLITE_LOCK] == 1
    finally:
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
    try:
        # The holder is gone, and with it its lock: the next write goes through, and it is the only one.
        repository.create_deployment(new_deployment())
        assert repository.status_counts()[0] == {"pending_approval": 1}
    finally:
        repository.close()


def test_the_lock_of_a_process_that_was_killed_is_free(database):
    holder = hold_in_another_process(database, None)
    lock = ProcessLock(str(database))
    try:
        assert not lock.acquire(0.1)
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
        assert lock.acquire(2)
        lock.release()
    finally:
        lock.close()


# Creates deployments through a Repository with the process lock for SECONDS, then prints how many.
WRITER = """
import sys, time
from deployapi.lifecycle import NewDeployment
from deployapi.repository import Repository
repository = Repository(sys.argv[1], process_lock=True, max_writers=2)
new = NewDeployment(service="billing", environment="staging", version="1", requester="alice",
                    work_refs=("JIRA-1",), rollback_plan="Redeploy.", risk=None)
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
count = 0
while time.time() < start + float(sys.argv[3]):
    repository.create_deployment(new)
    count += 1
repository.close()
print(count)
"""


def test_the_writers_of_two_processes_each_get_their_turn(database):
    """Each process writes as fast as it can for a while; neither is kept waiting until the other is done."""
    start = str(time.time() + 1.0)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(database), start, "1.5"], stdout=subprocess.PIPE,
                                text=True) for _ in range(2)]
    counts = [int(writer.communicate(timeout=30)[0]) for writer in writers]
    assert min(counts) > 0.25 * sum(counts), counts
    check = Repository(database)
    try:
        assert check.status_counts()[0] == {"pending_approval": sum(counts)}
    finally:
        check.close()


def test_a_repository_with_the_process_lock_closes_twice_and_refuses_writes_once_closed(database):
    repository = Repository(database, process_lock=True)
    repository.create_deployment(new_deployment())
    repository.close()
    repository.close()
    with pytest.raises(DatabaseError, match="closed"):
        repository.create_deployment(new_deployment())
