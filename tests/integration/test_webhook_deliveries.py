"""Webhook delivery in one process: a real Repository on a temporary file, a real Deliverer, real receivers.

Every receiver (tests/receivers.py) is an HTTP server on 127.0.0.1 that
verifies each request with the ``standardwebhooks`` library, so a signature
the deliverer got wrong shows up as an unverified arrival.  The deliverers
run with short timeouts and leases, so that retries, timeouts and take-overs
happen within seconds.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime

import pytest
from builders import create_body, new_deployment
from receivers import SECRET, Receiver
from werkzeug.test import Client

from deployapi import create_app
from deployapi.config_file import load_config
from deployapi.delivery import TAKEOVER_POLL_SECONDS, Deliverer
from deployapi.lifecycle import ActionRequest
from deployapi.repository import Deliveries, Lease, Repository
from deployapi.repository.backup import backup_database
from deployapi.webhooks import Webhook, decode_secret, retry_delay

# Short enough for tests; Deliverer refuses a lease that does not outlast timeout + 5 s margin + a renewal.
FAST = {"timeout": 1, "lease_seconds": 8, "renew_seconds": 1, "poll_seconds": 0.1}
# For a receiver that must stay hung for the whole test: no timeout (and no second request) meanwhile.
PATIENT = {"timeout": 5, "lease_seconds": 12, "renew_seconds": 1, "poll_seconds": 0.1}
NOW = "2026-11-26T10:00:00.000000Z"
# What a deployment goes through in write_history: one event per step.
STEPS = ("approve", "start", "succeed")
RECEIVER_PATH = "/hooks/deployapi?token=path-secret"


@pytest.fixture
def receivers():
    """Make receivers (Receiver's keyword arguments); each is stopped after the test."""
    made: list[Receiver] = []

    def make(**options) -> Receiver:
        receiver = Receiver(**options)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.stop()


@pytest.fixture
def deliverers(receivers):
    """Start deliverers (FAST unless told); each is stopped after the test, before the receivers are."""
    started: list[Deliverer] = []

    def start(repository: Repository, *hooks: Webhook, **options) -> Deliverer:
        deliverer = Deliverer(repository, hooks, **{**FAST, **options})
        deliverer.start()
        started.append(deliverer)
        return deliverer

    yield start
    for deliverer in started:
        deliverer.stop(0.5)


@pytest.fixture
def second_repo(db_path):
    """Another Repository on the same file: what a second process would have."""
    repository = Repository(db_path)
    yield repository
    repository.close()


def hook(name: str, receiver: Receiver, **fields) -> Webhook:
    """A signed json webhook to ``receiver``, retrying every second unless told otherwise."""
    return Webhook(name, receiver.url, secret=decode_secret(SECRET), **{"max_backoff_seconds": 1, **fields})


def write_history(repo: Repository, deployments: int, *, services=("billing",), environments=("staging",)) -> None:
    """``deployments`` deployments, each created, approved, started and succeeded (4 events each), one after
    the other; service and environment taken in turn from the ones given."""
    for n in range(deployments):
        deployment = repo.create_deployment(new_deployment(
            service=services[n % len(services)], environment=environments[n % len(environments)], risk="low",
            version=f"1.{n}.0"))
        for action in STEPS:
            repo.apply_action(deployment.id, ActionRequest(action, "bob", None))


def stored_events(db_path, after: int = 0) -> list[tuple[int, str, str, str, str, str]]:
    """(id, type, deployment id, service, environment, hash) of every event after ``after``, read with sqlite3
    itself."""
    with sqlite3.connect(db_path) as conn:
        return conn.execute(
            "SELECT e.id, e.type, e.deployment_id, d.service, d.environment, e.hash FROM deployment_events e"
            " JOIN deployments d ON d.id = e.deployment_id WHERE e.id > ? ORDER BY e.id", (after,)).fetchall()


def head(db_path) -> int:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT coalesce(max(id), 0) FROM deployment_events").fetchone()[0]


def wait_until(ready, timeout: float = 10, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(0.02)


def position(repo: Repository, name: str):
    return Deliveries(repo).position(name)


def wait_delivered_through(repo: Repository, name: str, through: int, timeout: float = 10) -> None:
    wait_until(lambda: position(repo, name).delivered_through == through, timeout,
               f"{name}'s delivered_through reaching {through} (it is {position(repo, name).delivered_through})")


def webhook_id(name: str, event) -> str:
    """The webhook-id of a stored event (a row of stored_events) to webhook ``name``:
    ``<name>-<event id>-<first 12 hex digits of the event's hash>``."""
    event_id, event_hash = event[0], event[5]
    assert len(event_hash) == 64, event  # every event these tests write has its hash
    return f"{name}-{event_id}-{event_hash[:12]}"


def ids_of(name: str, events) -> list[str]:
    return [webhook_id(name, event) for event in events]


def instant(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


# --- order and completeness --------------------------------------------------------


def test_every_event_reaches_a_webhook_once_in_event_id_order_signed_and_named_by_webhook_and_event(
        db_path, repo, receivers, deliverers):
    receiver = receivers()
    hooks = [hook("audit", receiver)]
    deliverers(repo, *hooks)
    write_history(repo, 75, services=("billing", "search", "checkout"), environments=("staging", "production"))
    events = stored_events(db_path)
    assert len(events) == 300

    receiver.wait_for(300)
    wait_delivered_through(repo, "audit", events[-1][0])
    arrivals = receiver.arrivals
    assert [arrival.webhook_id for arrival in arrivals] == ids_of("audit", events)
    assert all(arrival.verified for arrival in arrivals)
    assert all(arrival.path == RECEIVER_PATH for arrival in arrivals)
    assert [(a.document["event"]["id"], a.document["event"]["type"], a.document["deployment"]["id"],
             a.document["deployment"]["service"], a.document["deployment"]["environment"],
             a.document["event"]["hash"]) for a in arrivals] == [tuple(event) for event in events]
    [status] = Deliveries(repo).statuses(hooks)
    assert (status.position.delivered_through, status.pending, status.position.failed_attempts,
            status.position.last_error) == (events[-1][0], 0, 0, None)
    assert receiver.max_in_flight == 1


# --- filters -------------------------------------------------------------------------


FILTERED = [
    {"name": "successes", "types": ["succeeded"]},
    {"name": "search", "services": ["search"]},
    {"name": "production", "environments": ["production"]},
    {"name": "search-production-starts", "types": ["started"], "services": ["search"],
     "environments": ["production"]},
]


def test_each_filtered_webhook_receives_exactly_the_matching_events_and_its_position_passes_the_others(
        db_path, repo, receivers, deliverers):
    receiver_of = {entry["name"]: receivers() for entry in FILTERED}
    config = load_config({"webhooks": [{**entry, "url": receiver_of[entry["name"]].url, "secret": SECRET,
                                        "max_backoff_seconds": 1} for entry in FILTERED]})
    hooks = config.webhooks
    deliverers(repo, *hooks)
    write_history(repo, 12, services=("billing", "search", "checkout"), environments=("staging", "production"))
    # The newest event matches none of the filters: each position must still reach it.
    repo.create_deployment(new_deployment(service="billing", environment="staging"))
    events = stored_events(db_path)

    for entry in FILTERED:
        wanted = [event for event in events
                  if event[1] in entry.get("types", [event[1]]) and event[3] in entry.get("services", [event[3]])
                  and event[4] in entry.get("environments", [event[4]])]
        assert wanted, entry  # the history has something for every filter
        wait_delivered_through(repo, entry["name"], events[-1][0])
        receiver = receiver_of[entry["name"]]
        assert [arrival.webhook_id for arrival in receiver.arrivals] == ids_of(entry["name"], wanted), entry
    assert [(status.position.name, status.position.delivered_through, status.pending)
            for status in Deliveries(repo).statuses(hooks)] == [(entry["name"], events[-1][0], 0)
                                                               for entry in FILTERED]


# --- where a webhook starts ------------------------------------------------------------


def test_a_webhook_added_to_a_database_with_a_history_is_sent_what_comes_next_and_registering_again_keeps_it(
        db_path, repo, receivers, deliverers):
    write_history(repo, 2)
    old_head = head(db_path)
    receiver = receivers()
    config = {"webhooks": [{"name": "audit", "url": receiver.url, "secret": SECRET, "max_backoff_seconds": 1}]}
    app = create_app(db_path, config=config)
    try:
        client = Client(app)
        [item] = client.get("/webhooks").get_json()["items"]
        assert (item["delivered_through"], item["pending"]) == (old_head, 0)
        first = deliverers(app.repository, *app.webhooks)
        created = client.post("/deployments", json=create_body()).get_json()
        client.post(f"/deployments/{created['id']}/approve", json={"actor": "bob"})
        new = stored_events(db_path, old_head)
        assert len(new) == 2
        receiver.wait_for(2)
        wait_delivered_through(app.repository, "audit", new[-1][0])
        first.stop()

        # Written while no deliverer runs; the next one (and the next app) registers the webhook again.
        client.post(f"/deployments/{created['id']}/start", json={"actor": "bob"})
        client.post(f"/deployments/{created['id']}/succeed", json={"actor": "bob"})
        create_app(db_path, config=config).close()
        assert position(repo, "audit").delivered_through == new[-1][0]
        deliverers(app.repository, *app.webhooks)
        later = stored_events(db_path, new[-1][0])
        receiver.wait_for(4)
        wait_delivered_through(app.repository, "audit", later[-1][0])
    finally:
        app.close()
    assert [arrival.webhook_id for arrival in receiver.arrivals] == ids_of("audit", new + later)
    assert all(arrival.verified for arrival in receiver.arrivals)


# --- retries -------------------------------------------------------------------------


def test_a_failing_receiver_gets_the_same_event_again_until_it_answers_then_the_backlog_in_order(
        db_path, repo, receivers, deliverers, caplog):
    caplog.set_level(logging.INFO, logger="deployapi.webhooks")
    failures = 3
    receiver = receivers(mode="fail")
    deliverers(repo, hook("flaky", receiver))
    write_history(repo, 2)
    events = stored_events(db_path)

    wait_until(lambda: position(repo, "flaky").failed_attempts == 1, what="the first failure recorded")
    failing = position(repo, "flaky")
    assert (failing.delivered_through, failing.last_error) == (0, "HTTP 500 Internal Server Error")
    # The next attempt is due one retry_delay after this one.
    assert 0 < instant(failing.next_attempt_at) - instant(failing.last_attempt_at) <= retry_delay(1, 1) + 0.5
    wait_until(lambda: len(receiver.arrivals) >= failures, what=f"{failures} attempts")
    receiver.set_mode("ok")
    receiver.wait_for(len(events))
    wait_delivered_through(repo, "flaky", events[-1][0])

    arrivals = receiver.arrivals
    assert [a.webhook_id for a in arrivals] == ids_of("flaky", events[:1]) * failures + ids_of("flaky", events)
    assert [a.answered for a in arrivals[:failures + 1]] == [500] * failures + [204]
    assert all(a.verified for a in arrivals)
    attempts = arrivals[:failures + 1]
    stamps = [int(a.headers["webhook-timestamp"]) for a in attempts]
    assert stamps == sorted(set(stamps)), "every attempt carries its own time"
    gaps = [later.at - earlier.at for earlier, later in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] < 2, "the first retry comes within 2 s"
    assert all(0.9 <= gap <= 1.9 for gap in gaps), gaps  # max_backoff_seconds = 1
    done = position(repo, "flaky")
    assert (done.failed_attempts, done.last_error, done.next_attempt_at) == (0, None, None)
    assert done.last_attempt_at is not None

    records = [r for r in caplog.records if r.name == "deployapi.webhooks"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == failures, warnings
    assert all("flaky" in message and "HTTP 500" in message for message in warnings), warnings
    for record in records:
        message = record.getMessage()
        assert "/hooks" not in message and "path-secret" not in message
        assert SECRET not in message and SECRET.removeprefix("whsec_") not in message


def test_retries_back_off_doubling_from_one_second(db_path, repo, receivers, deliverers):
    receiver = receivers(mode="fail")
    deliverers(repo, hook("flaky", receiver, max_backoff_seconds=600))
    repo.create_deployment(new_deployment())
    wait_until(lambda: len(receiver.arrivals) >= 2, what="two attempts")
    receiver.set_mode("ok")
    receiver.wait_for(1)
    first, second, third = receiver.arrivals
    assert 0.9 <= second.at - first.at < 2
    assert 1.9 <= third.at - second.at < 3
    assert first.webhook_id == second.webhook_id == third.webhook_id


@pytest.mark.parametrize("fault, mend, error", [
    pytest.param(lambda r: r.set_mode("hang"), lambda r: r.set_mode("ok"), "no answer within 1 s", id="hang"),
    pytest.param(lambda r: r.close_listener(), lambda r: r.reopen(), "connection refused", id="refused"),
    pytest.param(lambda r: r.set_mode("redirect"), lambda r: r.set_mode("ok"),
                 "HTTP 307 Temporary Redirect (redirects are not followed)", id="redirect"),
])
def test_an_attempt_without_a_2xx_is_recorded_with_its_reason_and_retried_until_the_receiver_mends(
        db_path, repo, receivers, deliverers, fault, mend, error):
    receiver = receivers()
    fault(receiver)
    deliverers(repo, hook("audit", receiver))
    repo.create_deployment(new_deployment())
    [event] = stored_events(db_path)

    wait_until(lambda: position(repo, "audit").last_error == error, what=f"last_error {error!r}")
    assert position(repo, "audit").delivered_through == 0
    mend(receiver)
    [accepted] = receiver.wait_for(1)
    assert accepted.webhook_id == webhook_id("audit", event) and accepted.verified
    wait_delivered_through(repo, "audit", event[0])
    assert position(repo, "audit").last_error is None
    # A redirect is an answer, not a new address: nothing was ever sent anywhere else.
    assert {arrival.path for arrival in receiver.arrivals} == {RECEIVER_PATH}


# --- isolation -------------------------------------------------------------------------


def test_a_hanging_receiver_holds_up_no_other_webhook_and_each_has_one_request_in_flight(
        db_path, repo, receivers, deliverers):
    stuck, fast = receivers(mode="hang"), receivers()
    deliverers(repo, hook("stuck", stuck), hook("fast", fast), **PATIENT)
    write_history(repo, 1)
    # The stuck webhook's first request hangs before the rest of the history is written: what follows is
    # delivered to the fast one while it hangs.
    wait_until(lambda: stuck.hanging == 1, timeout=4, what="the stuck webhook's first request")
    write_history(repo, 9)
    events = stored_events(db_path)

    fast.wait_for(len(events), timeout=4)  # well within the stuck request's 5 s timeout
    wait_delivered_through(repo, "fast", events[-1][0])
    assert [arrival.webhook_id for arrival in fast.accepted()] == ids_of("fast", events)
    assert (stuck.in_flight, stuck.max_in_flight, fast.max_in_flight) == (1, 1, 1)
    assert position(repo, "stuck").delivered_through == 0


# --- the lease -------------------------------------------------------------------------


def test_of_two_deliverers_on_one_database_one_delivers_and_the_other_takes_over_when_it_stops(
        db_path, repo, second_repo, receivers, deliverers):
    receiver = receivers()
    hooks = [hook("audit", receiver)]
    first, second = deliverers(repo, *hooks), deliverers(second_repo, *hooks)
    wait_until(lambda: first.holding or second.holding, what="one deliverer holding the lease")
    write_history(repo, 25)
    events = stored_events(db_path)
    receiver.wait_for(len(events))
    wait_delivered_through(repo, "audit", events[-1][0])
    assert [arrival.webhook_id for arrival in receiver.arrivals] == ids_of("audit", events)
    assert first.holding != second.holding
    holder, waiting = (first, second) if first.holding else (second, first)
    assert Deliveries(repo).lease().holder == holder.holder

    stopped = time.monotonic()
    holder.stop()
    wait_until(lambda: waiting.holding, timeout=TAKEOVER_POLL_SECONDS + 3, what="the other deliverer taking over")
    assert time.monotonic() - stopped < TAKEOVER_POLL_SECONDS + 3
    write_history(repo, 2)
    more = stored_events(db_path, events[-1][0])
    receiver.wait_for(len(events) + len(more))
    wait_delivered_through(repo, "audit", more[-1][0])
    assert [arrival.webhook_id for arrival in receiver.arrivals] == ids_of("audit", events + more)
    assert all(arrival.verified for arrival in receiver.arrivals)
    assert receiver.max_in_flight == 1


def put_lease(db_path, holder: str, host: str, pid: int, expires_at: float) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT OR REPLACE INTO webhook_deliverer (id, holder, host, pid, since, expires_at)"
                     " VALUES (1, ?, ?, ?, ?, ?)", (holder, host, pid, NOW, expires_at))


def exited_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_lease_left_by_a_process_of_this_host_that_has_exited_is_taken_over_at_once(
        db_path, repo, receivers, deliverers):
    receiver = receivers()
    hooks = [hook("audit", receiver)]
    this_host = Deliverer(repo, hooks, **FAST).host  # never started: only its idea of the host
    put_lease(db_path, "crashed", this_host, exited_pid(), time.time() + 3600)
    started = time.monotonic()
    deliverer = deliverers(repo, *hooks)
    wait_until(lambda: deliverer.holding, timeout=3, what="the deliverer taking the dead holder's lease")
    assert time.monotonic() - started < 3
    assert Deliveries(repo).lease().holder == deliverer.holder
    repo.create_deployment(new_deployment())
    [arrival] = receiver.wait_for(1)
    [event] = stored_events(db_path)
    assert arrival.webhook_id == webhook_id("audit", event)


def test_a_lease_of_a_live_holder_is_respected_until_it_expires(db_path, repo, receivers, deliverers, caplog):
    caplog.set_level(logging.INFO, logger="deployapi.webhooks")
    receiver = receivers()
    hooks = [hook("audit", receiver)]
    this_host = Deliverer(repo, hooks, **FAST).host
    # A process of this host that is alive (the one that started the tests): its lease counts until it expires.
    expires_in = 2.5
    expires_at, expires_monotonic = time.time() + expires_in, time.monotonic() + expires_in
    put_lease(db_path, "alive", this_host, os.getppid(), expires_at)
    deliverer = deliverers(repo, *hooks)
    wait_until(lambda: any("alive holds the delivery lease" in r.getMessage() for r in caplog.records),
               what="the deliverer seeing the live holder's lease")
    assert not deliverer.holding
    repo.create_deployment(new_deployment())

    [arrival] = receiver.wait_for(1, timeout=expires_in + 5)
    assert arrival.at >= expires_monotonic - 0.05, "sent before the live holder's lease expired"
    assert deliverer.holding and Deliveries(repo).lease().holder == deliverer.holder
    assert arrival.verified


def test_a_moved_wall_clock_lets_a_deliverer_take_a_lease_that_has_expired_by_it(
        db_path, repo, receivers, deliverers, caplog):
    caplog.set_level(logging.INFO, logger="deployapi.webhooks")
    receiver = receivers()
    hooks = [hook("audit", receiver)]
    shift = [0.0]
    put_lease(db_path, "elsewhere", "other-host/1", 1, time.time() + 120)
    deliverer = deliverers(repo, *hooks, wall=lambda: time.time() + shift[0])
    wait_until(lambda: any("elsewhere holds the delivery lease" in r.getMessage() for r in caplog.records),
               what="the deliverer seeing the other host's lease")
    repo.create_deployment(new_deployment())
    # Nothing tells a deliverer that waits that it is still waiting: only time passing shows it sends nothing.
    time.sleep(TAKEOVER_POLL_SECONDS * 1.5)
    assert not deliverer.holding and receiver.arrivals == []

    shift[0] = 121.0
    [arrival] = receiver.wait_for(1, timeout=TAKEOVER_POLL_SECONDS + 3)
    assert deliverer.holding
    assert arrival.verified  # its timestamp is by the moved clock, within the receivers' tolerance
    assert int(arrival.headers["webhook-timestamp"]) >= time.time() + 100


# --- stopping ------------------------------------------------------------------------------


@pytest.mark.parametrize("kept_alive", [
    pytest.param(False, id="first request"),
    pytest.param(True, id="on a kept-alive connection"),
])
def test_a_stop_abandons_a_hanging_request_after_its_grace_and_the_next_deliverer_sends_it_again(
        db_path, repo, receivers, deliverers, kept_alive):
    receiver = receivers()
    hooks = [hook("audit", receiver)]
    deliverer = deliverers(repo, *hooks, **PATIENT)
    if kept_alive:
        repo.create_deployment(new_deployment())
        receiver.wait_for(1)
        wait_delivered_through(repo, "audit", head(db_path))
    before = position(repo, "audit").delivered_through
    receiver.set_mode("hang")
    repo.create_deployment(new_deployment())
    hung = stored_events(db_path)[-1]
    wait_until(lambda: receiver.in_flight == 1, what="the request hanging")

    stopping = time.monotonic()
    deliverer.stop(0.5)
    assert time.monotonic() - stopping < 0.5 + 1
    assert receiver.in_flight == 1, "a request was sent after the stop"
    assert position(repo, "audit").delivered_through == before
    assert Deliveries(repo).lease() is None

    receiver.set_mode("ok")
    deliverers(repo, *hooks, **PATIENT)
    wait_delivered_through(repo, "audit", hung[0])
    abandoned = [a for a in receiver.arrivals if a.answered is None]
    resent = [a for a in receiver.accepted() if a.webhook_id == webhook_id("audit", hung)]
    assert [a.webhook_id for a in abandoned] == [webhook_id("audit", hung)]
    assert len(resent) == 1 and resent[0].verified


# --- the fence -------------------------------------------------------------------------------


@pytest.mark.parametrize("lease_holder", [pytest.param("other", id="another holds it"),
                                          pytest.param(None, id="nobody holds it")])
def test_a_position_write_by_a_deliverer_without_the_lease_changes_nothing(db_path, repo, lease_holder):
    deliveries = Deliveries(repo)
    deliveries.register(["audit"], NOW)
    write_history(repo, 1)
    if lease_holder is not None:
        deliveries.take_lease(Lease(lease_holder, "host/1", 1, NOW, time.time() + 60), time.time(),
                              lambda lease: False)
    before = deliveries.position("audit")

    assert deliveries.record_delivered("audit", 2, "me", NOW) is False
    assert deliveries.record_failure("audit", 1, "HTTP 500 Internal Server Error", NOW, NOW, "me") is False
    assert deliveries.position("audit") == before

    # The same writes by the holder do move the position.
    deliveries.take_lease(Lease("me", "host/1", 1, NOW, time.time() + 60), time.time(), lambda lease: True)
    assert deliveries.record_failure("audit", 1, "HTTP 500 Internal Server Error", NOW, NOW, "me") is True
    assert deliveries.position("audit").failed_attempts == 1
    assert deliveries.record_delivered("audit", 2, "me", NOW) is True
    assert (deliveries.position("audit").delivered_through, deliveries.position("audit").failed_attempts) == (2, 0)


# --- a restore ------------------------------------------------------------------------------


def test_after_a_restore_new_events_under_reused_ids_get_new_webhook_ids_and_old_ones_keep_theirs(
        db_path, tmp_path, receivers, deliverers):
    receiver = receivers()
    hooks = [hook("audit", receiver)]
    repository = Repository(db_path)
    try:
        first = deliverers(repository, *hooks)
        write_history(repository, 1)  # events 1-4, delivered before the backup
        receiver.wait_for(4)
        wait_delivered_through(repository, "audit", 4)
        first.stop()
        write_history(repository, 1)  # events 5-8: in the backup, not delivered by then
        backup_database(db_path, tmp_path / "backup.db")
        second = deliverers(repository, *hooks)
        write_history(repository, 1)  # events 9-12: lost with the restore
        receiver.wait_for(12)
        wait_delivered_through(repository, "audit", 12)
        second.stop()
    finally:
        repository.close()
    before = stored_events(db_path)
    assert [arrival.webhook_id for arrival in receiver.arrivals] == ids_of("audit", before)

    # The restore of operations.md: the database and its -wal and -shm out of the way, the backup in place.
    for path in tmp_path.glob(f"{db_path.name}*"):
        path.rename(tmp_path / f"before-restore-{path.name}")
    shutil.copyfile(tmp_path / "backup.db", db_path)
    restored = Repository(db_path)
    try:
        assert position(restored, "audit").delivered_through == 4
        third = deliverers(restored, *hooks)
        write_history(restored, 1)  # the counter went back: events 9-12 again, but new events
        receiver.wait_for(20)
        wait_delivered_through(restored, "audit", 12)
        third.stop()
    finally:
        restored.close()
    after = stored_events(db_path)
    assert after[:8] == before[:8] and [event[0] for event in after[8:]] == [9, 10, 11, 12]
    assert all(new[2] != old[2] and new[5] != old[5] for new, old in zip(after[8:], before[8:], strict=True))

    arrivals = receiver.arrivals[12:]
    assert len(arrivals) == 8 and all(arrival.verified for arrival in arrivals)
    # Events 5-8, which the restored position is behind on, come again under their old webhook-ids:
    # repeats, which a receiver deduplicating by webhook-id skips, as it should.
    assert [arrival.webhook_id for arrival in arrivals[:4]] == ids_of("audit", before[4:8])
    # The new events 9-12 come under webhook-ids never sent before: no receiver drops them as repeats.
    assert [arrival.webhook_id for arrival in arrivals[4:]] == ids_of("audit", after[8:])
    assert {arrival.webhook_id for arrival in receiver.arrivals[:12]}.isdisjoint(ids_of("audit", after[8:]))
    assert [arrival.document["event"]["hash"] for arrival in arrivals[4:]] == [event[5] for event in after[8:]]
