"""How long writes wait when several processes write one database: the lock between processes compared.

    python tests/perf/cross_process_writes.py                       # 2 processes x 3 writers, 5 s, 3 rounds
    python tests/perf/cross_process_writes.py --processes 2 --writers 3 --seconds 5 --rounds 3 --dir /var/tmp

Each round runs every variant in turn on a fresh database in ``--dir``: the
given number of processes (forked, each with a Repository of its own, as the
workers of ``deployapi serve --workers``) each run ``--writers`` threads that
create deployments back to back (``Repository.create_deployment``: the writer
slots, the thread lock, BEGIN IMMEDIATE, the row, the event and its hash, a
durable COMMIT) until the time is up.  Variants:

- ``sqlite``: no lock between processes; a writer that finds SQLite's lock
  taken waits in SQLite's busy handler (the busy timeout), as with
  ``--workers 1`` beside another process;
- ``retry``: the same, but BEGIN IMMEDIATE with no busy timeout, tried again
  after 0.1 ms, doubling up to 1 ms;
- ``flock-poll``: an exclusive ``flock`` on the database file before BEGIN
  IMMEDIATE, tried again (``LOCK_NB``) after 0.1 ms, doubling up to 1 ms;
- ``flock``: ``process_lock=True`` as ``deployapi serve --workers`` has it
  (repository/process_lock.py): the same lock, waited for in the kernel by a
  thread of the process, so that it is handed over as soon as it is let go;
- ``one-process``: the reference: one process with all the writers
  (processes x writers threads), queued on its thread lock alone, as
  ``--workers 1``.

Prints, per variant and round, the creates per second, each process's share,
and the latency of a create (from the call to its return) at p50, p99 and the
maximum, and how many were refused as busy.  Not part of the test run; results
in docs/performance.md ("Several workers").
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time

from deployapi.cli import GIL_SWITCH_INTERVAL
from deployapi.lifecycle import NewDeployment
from deployapi.repository import DatabaseBusy, Repository, connections
from deployapi.repository.process_lock import ProcessLock

NEW = NewDeployment(service="billing", environment="staging", version="1.4.2", requester="alice@example.com",
                    work_refs=("JIRA-1",), rollback_plan="Redeploy the previous version.", risk=None)
VARIANTS = ("sqlite", "retry", "flock-poll", "flock", "one-process")


class PollingLock(ProcessLock):
    def acquire(self, timeout: float) -> bool:
        deadline, pause = time.monotonic() + timeout, 0.0001
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(pause)
                pause = min(pause * 2, 0.001)


@contextlib.contextmanager
def _immediate_retrying(conn, began=None, begin=None):
    """connections._immediate, with BEGIN IMMEDIATE tried again by us rather than by SQLite's busy handler."""
    conn.execute("PRAGMA busy_timeout = 0")
    deadline, pause = time.monotonic() + connections.BUSY_TIMEOUT_MS / 1000, 0.0001
    try:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.001)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {connections.BUSY_TIMEOUT_MS}")
    if began is not None:
        began()
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def worker(path: str, variant: str, writers: int, start_at: float, seconds: float, results) -> None:
    # As deployapi serve sets it: threads of one process hand the interpreter to each other as fast.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    if variant == "retry":
        connections._immediate = _immediate_retrying
    repository = Repository(path, max_writers=writers, process_lock=variant.startswith("flock"))
    if variant == "flock-poll":
        repository._process_lock.close()
        repository._process_lock = PollingLock(path)
    latencies: list[float] = []
    busy = [0]
    lock = threading.Lock()

    def run() -> None:
        mine = []
        while time.time() < start_at:
            time.sleep(0.001)
        end = start_at + seconds
        while time.time() < end:
            began = time.perf_counter()
            try:
                repository.create_deployment(NEW)
            except DatabaseBusy:
                with lock:
                    busy[0] += 1
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    repository.close()
    results.send((os.getpid(), latencies, busy[0]))
    results.close()


def measure(directory: str, variant: str, processes: int, writers: int, seconds: float) -> dict:
    path = os.path.join(directory, f"cross-process-{variant}.db")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)
    logging.getLogger("deployapi").setLevel(logging.ERROR)  # not the warning that the file is new
    Repository(path).close()
    context = multiprocessing.get_context("fork")
    start_at = time.time() + 0.5
    pipes, children = [], []
    if variant == "one-process":
        processes, writers = 1, processes * writers
    for _ in range(processes):
        receiving, sending = context.Pipe(duplex=False)
        child = context.Process(target=worker, args=(path, variant, writers, start_at, seconds, sending))
        child.start()
        sending.close()
        pipes.append(receiving)
        children.append(child)
    outcomes = [pipe.recv() for pipe in pipes]
    for child in children:
        child.join()
    every = sorted(latency for _, latencies, _ in outcomes for latency in latencies)
    return {
        "rate": len(every) / seconds,
        "shares": [len(latencies) / len(every) for _, latencies, _ in outcomes],
        "p50": every[len(every) // 2] * 1000,
        "p99": every[int(len(every) * 0.99)] * 1000,
        "max": every[-1] * 1000,
        "busy": sum(busy for _, _, busy in outcomes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--writers", type=int, default=3, help="writing threads per process")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--dir", default=None, help="where the databases go (default: a new temporary directory)")
    args = parser.parse_args()
    directory = args.dir or tempfile.mkdtemp(prefix="deployapi-cross-process-")
    variants = args.variants.split(",")
    print(f"{args.processes} processes x {args.writers} writers, {args.seconds:g} s a run, {os.cpu_count()} CPUs\n")
    print("| round | variant | creates/s | shares | p50 ms | p99 ms | max ms | busy |")
    print("|---|---|---|---|---|---|---|---|")
    p99s: dict[str, list[float]] = {variant: [] for variant in variants}
    for round_number in range(1, args.rounds + 1):
        for variant in variants:
            result = measure(directory, variant, args.processes, args.writers, args.seconds)
            p99s[variant].append(result["p99"])
            shares = "/".join(f"{share:.2f}" for share in result["shares"])
            print(f"| {round_number} | {variant} | {result['rate']:.0f} | {shares} | {result['p50']:.1f} | "
                  f"{result['p99']:.1f} | {result['max']:.0f} | {result['busy']} |", flush=True)
    print()
    for variant in variants:
        print(f"{variant}: median p99 {statistics.median(p99s[variant]):.1f} ms")


if __name__ == "__main__":
    main()
