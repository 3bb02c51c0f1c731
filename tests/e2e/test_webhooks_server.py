"""Webhooks end to end: the real ``deployapi serve`` and ``deployapi relay`` delivering to real local receivers.

A thousand events to two filtered webhooks, a receiver that fails, hangs and goes
away while another stays healthy, SIGKILL mid-delivery, two deliverers on one
database, a clean stop with a request in flight, and the relay's start-up refusals.
Every receiver (tests/receivers.py) verifies each request with the
``standardwebhooks`` library and records what arrived.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import pytest
from builders import create_body
from receivers import OTHER_SECRET, SECRET, Arrival, Receiver, webhook_config
from server_process import DEPLOYAPI, run_command, wait_until

import deployapi

pytestmark = pytest.mark.e2e

# Servers, relays and commands run this checkout's code, not whatever the installed package points at.
CHECKOUT = str(Path(deployapi.__file__).resolve().parent.parent)
DB = "deployapi.db"
APPROVER = "bob@example.com"
# What a deliverer logs when it gets, or waits for, the delivery lease (deployapi/delivery.py).
HOLDS_THE_LEASE = "webhooks: delivering to"
WAITS_FOR_THE_LEASE = "webhooks: waiting; deliverer"
FAILED_ATTEMPT = re.compile(r" WARNING deployapi\.webhooks: webhook (\S+): event (\d+) not delivered "
                            r"\(attempt (\d+)\): (.+); next attempt in \S+ s$", re.MULTILINE)


# --- processes -------------------------------------------------------------------------------


def checkout_env(**variables: str) -> dict[str, str]:
    """The environment of a child process: this checkout first on the import path, plus ``variables``."""
    path = os.pathsep.join(filter(None, [CHECKOUT, os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, **variables}


class Relay:
    """A running ``deployapi relay``; its stderr is read continuously by a thread, as Server does."""

    def __init__(self, db: Path, config: Path, cwd: Path, timeout: float = 15):
        self.process = subprocess.Popen(
            [DEPLOYAPI, "relay", "--db", str(db), "--config", str(config)], cwd=cwd,
            env={**os.environ, **checkout_env()}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._stderr: list[str] = []
        self._stderr_reader = threading.Thread(target=self._stderr.extend, args=(self.process.stderr,), daemon=True)
        self._stderr_reader.start()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        self.first_line = self.process.stdout.readline() if ready else ""
        self.rest_of_stdout = ""
        if not self.first_line.startswith("deployapi relay delivering "):
            self.stop()
            raise RuntimeError(f"relay did not start: {self.first_line!r} {self.stderr_text}")

    @property
    def stderr_text(self) -> str:
        return "".join(self._stderr)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``sig`` (if still running) and wait for the exit code (which also reaps the process)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._stderr_reader.join(5)
        if not self.process.stdout.closed:
            self.rest_of_stdout = self.process.stdout.read()
            self.process.stdout.close()
        return code


@pytest.fixture
def receivers():
    """Start receivers (tests/receivers.py); every one is stopped after the test."""
    started: list[Receiver] = []

    def start(**options) -> Receiver:
        receiver = Receiver(**options)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
def config_file(tmp_path):
    """Write a configuration file with these ``[[webhooks]]`` into tmp_path."""

    def write(*hooks: dict, name: str = "deployapi.toml") -> Path:
        path = tmp_path / name
        path.write_text(webhook_config(*hooks), encoding="utf-8")
        return path

    return write


@pytest.fixture
def serve(start_server, tmp_path):
    """Start ``deployapi serve`` on tmp_path/deployapi.db with this checkout's code; ``config`` None for none."""

    def start(config: Path | None):
        config_args = ("--config", str(config)) if config is not None else ()
        return start_server("--db", str(tmp_path / DB), *config_args, env=checkout_env())

    return start


@pytest.fixture
def start_relay(tmp_path):
    """Start ``deployapi relay`` on tmp_path/deployapi.db; every relay is stopped after the test."""
    started: list[Relay] = []

    def start(config: Path) -> Relay:
        relay = Relay(tmp_path / DB, config, cwd=tmp_path)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()


def database_files(tmp_path: Path) -> list[str]:
    return sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(DB))


# --- the API -----------------------------------------------------------------------------------


def act(server, path: str, body: dict, expected: int = 200) -> dict:
    status, _, answer = server.request("POST", path, body)
    assert status == expected, (path, answer)
    return answer


def run_deployments(server, count: int, services: tuple[str, ...] = ("billing", "search"), threads: int = 4) -> None:
    """Create ``count`` deployments and take each one through approve, start and an outcome: 4 events each.

    A few client threads at once, as a busy pipeline would; every fourth deployment fails.
    """

    def one(index: int) -> None:
        deployment = act(server, "/deployments", create_body(service=services[index % len(services)],
                                                             version=f"1.0.{index}"), expected=201)
        path = f"/deployments/{deployment['id']}"
        act(server, f"{path}/approve", {"actor": APPROVER})
        act(server, f"{path}/start", {"actor": APPROVER})
        if index % 4 == 3:
            act(server, f"{path}/fail", {"actor": APPROVER, "note": "smoke tests failed"})
        else:
            act(server, f"{path}/succeed", {"actor": APPROVER})

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(count)))


def feed(server, **filters: str) -> list[dict]:
    """Every event GET /events lists with these filters (JSON), oldest first, following next_after."""
    events: list[dict] = []
    after = 0
    while True:
        status, _, body = server.request("GET", f"/events?{urlencode({'after': after, 'limit': 1000, **filters})}")
        assert status == 200, body
        if not body["items"]:
            return events
        events += body["items"]
        after = body["next_after"]


def cloudevents_feed(server, **filters: str) -> list[dict]:
    """Every event GET /events lists with these filters as CloudEvents, oldest first (X-Next-After pages)."""
    documents: list[dict] = []
    after = 0
    while True:
        query = urlencode({"after": after, "limit": 1000, "format": "cdevents", **filters})
        status, headers, body = server.request("GET", f"/events?{query}")
        assert status == 200, body
        if not body:
            return documents
        documents += body
        after = int(headers["X-Next-After"])


def webhook_statuses(server) -> dict[str, dict]:
    """GET /webhooks, by webhook name."""
    status, _, body = server.request("GET", "/webhooks")
    assert status == 200, body
    return {item["name"]: item for item in body["items"]}


def all_delivered(server, newest: int) -> bool:
    return all(item["pending"] == 0 and item["delivered_through"] == newest
               for item in webhook_statuses(server).values())


# --- what arrived --------------------------------------------------------------------------------


def webhook_id(name: str, event: dict) -> str:
    """The webhook-id of ``event`` (as GET /events or a body shows it) sent to webhook ``name``:
    "<webhook name>-<event id>-<first 12 hex digits of the event's hash>"."""
    assert re.fullmatch(r"[0-9a-f]{64}", event["hash"]), event
    return f"{name}-{event['id']}-{event['hash'][:12]}"


def parsed_webhook_id(arrival: Arrival) -> tuple[str, int, str]:
    """(webhook name, event id, hash digits) of a request's webhook-id; a name may hold "-" itself."""
    name, event, digits = arrival.webhook_id.rsplit("-", 2)
    assert re.fullmatch(r"[0-9a-f]{12}", digits), arrival.webhook_id
    return name, int(event), digits


def event_id(arrival: Arrival) -> int:
    """The event a request carried, by its webhook-id."""
    return parsed_webhook_id(arrival)[1]


def carried_event(document: dict) -> dict:
    """The deployapi event in a body (a request's or GET /events'): json's "event"; for cloudevents the
    deployapi record in "data" (the data itself for this project's own types, "customData" for CDEvents')."""
    if "event" in document:
        return document["event"]
    if document["type"].startswith("dev.deployapi."):
        return document["data"]
    return document["data"]["customData"]


def event_ids(arrivals: list[Arrival]) -> list[int]:
    return [event_id(arrival) for arrival in arrivals]


def first_occurrences(ids: list[int]) -> list[int]:
    return list(dict.fromkeys(ids))


def assert_each_names_its_event(arrivals: list[Arrival], name: str) -> None:
    """Every request's webhook-id is its webhook's name, and the id and hash of the event in its body:
    so one event always travels under one webhook-id, however often it is sent."""
    for arrival in arrivals:
        assert arrival.webhook_id == webhook_id(name, carried_event(arrival.document))
        assert arrival.verified, arrival.headers


# --- 1. volume ---------------------------------------------------------------------------------


def test_a_thousand_events_reach_two_filtered_webhooks_exactly_once_in_order_and_signed(
        receivers, config_file, serve):
    audit, billing = receivers(), receivers(secret=OTHER_SECRET)
    config = config_file(
        {"name": "audit", "url": audit.url, "secret": SECRET, "format": "cloudevents",
         "types": ["created", "succeeded", "failed"]},
        {"name": "billing-feed", "url": billing.url, "secret": OTHER_SECRET, "format": "json",
         "services": ["billing"]},
    )
    server = serve(config)

    run_deployments(server, 250, threads=4)

    _, _, head = server.request("GET", "/events/head")
    assert head["id"] == 1000
    for_audit = sorted((document for event_type in ("created", "succeeded", "failed")
                        for document in cloudevents_feed(server, type=event_type)), key=lambda d: int(d["id"]))
    for_billing = feed(server, service="billing")
    assert (len(for_audit), len(for_billing)) == (500, 500)  # each filter lets half of the events through
    audit.wait_for(len(for_audit), timeout=60)
    billing.wait_for(len(for_billing), timeout=60)
    assert wait_until(lambda: all_delivered(server, 1000), timeout=10), webhook_statuses(server)

    # Every request arrived once, was accepted, and verified; none came beyond those.
    assert [arrival.document for arrival in audit.arrivals] == for_audit
    assert [arrival.webhook_id for arrival in audit.arrivals] == [webhook_id("audit", carried_event(d))
                                                                  for d in for_audit]
    assert [arrival.document["event"] for arrival in billing.arrivals] == for_billing
    assert [arrival.webhook_id for arrival in billing.arrivals] == [webhook_id("billing-feed", e)
                                                                    for e in for_billing]
    for receiver in (audit, billing):
        ids = event_ids(receiver.arrivals)
        assert ids == sorted(set(ids))
        assert all(arrival.verified and arrival.answered == 204 for arrival in receiver.arrivals)
        assert receiver.max_in_flight == 1
    assert {arrival.headers["content-type"] for arrival in audit.arrivals} == {"application/cloudevents+json"}
    assert {arrival.document["deployment"]["service"] for arrival in billing.arrivals} == {"billing"}


# --- 2. a failing receiver -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_receiver_that_fails_hangs_and_goes_away_gets_its_backlog_in_order_and_holds_up_no_other(
        receivers, config_file, serve):
    flaky, steady = receivers(mode="fail"), receivers(secret=OTHER_SECRET)
    config = config_file(
        {"name": "flaky", "url": flaky.url, "secret": SECRET, "max_backoff_seconds": 1},
        {"name": "steady", "url": steady.url, "secret": OTHER_SECRET},
    )
    server = serve(config)

    # 500s: retried about every second (max_backoff_seconds = 1), the other webhook is served at once.
    run_deployments(server, 5)
    steady.wait_for(20, timeout=5)
    assert wait_until(lambda: len(flaky.arrivals) >= 3, timeout=10)
    assert wait_until(lambda: webhook_statuses(server)["flaky"]["last_error"] is not None)
    failing = webhook_statuses(server)
    assert failing["flaky"]["last_error"] == "HTTP 500 Internal Server Error"
    assert failing["flaky"]["next_attempt_at"] is not None
    assert (failing["flaky"]["pending"], failing["flaky"]["delivered_through"]) == (20, 0)
    assert (failing["steady"]["pending"], failing["steady"]["delivered_through"]) == (0, 20)
    assert failing["steady"]["last_error"] is None

    # A hang: the attempt in flight runs into the 10 s timeout; the listener closes meanwhile,
    # so the attempts after it are refused.  The other webhook gets new events while it hangs.
    flaky.set_mode("hang")
    assert wait_until(lambda: flaky.hanging == 1, timeout=5)
    flaky.close_listener()
    run_deployments(server, 5)
    steady.wait_for(40, timeout=5)
    assert flaky.hanging == 1
    assert wait_until(lambda: "no answer within 10 s" in server.stderr_text, timeout=15)
    assert wait_until(lambda: server.stderr_text.count("connection refused") >= 2, timeout=10)
    refused = webhook_statuses(server)
    assert refused["flaky"]["last_error"] == "connection refused"
    assert refused["flaky"]["next_attempt_at"] is not None
    assert (refused["flaky"]["pending"], refused["flaky"]["delivered_through"]) == (40, 0)
    assert (refused["steady"]["pending"], refused["steady"]["delivered_through"]) == (0, 40)

    flaky.set_mode("ok")
    flaky.reopen()
    flaky.wait_for(40, timeout=10)
    assert wait_until(lambda: all_delivered(server, 40), timeout=5), webhook_statuses(server)
    recovered = webhook_statuses(server)["flaky"]
    assert (recovered["last_error"], recovered["next_attempt_at"]) == (None, None)

    events = feed(server)
    expected = [event["id"] for event in events]
    assert event_ids(flaky.accepted()) == expected  # in order, nothing skipped, nothing twice
    assert event_ids(steady.accepted()) == expected and len(steady.arrivals) == 40
    # Every request that was not accepted was a retry of the first event, under its webhook-id.
    retries = [arrival for arrival in flaky.arrivals if arrival.answered != 204]
    assert {arrival.webhook_id for arrival in retries} == {webhook_id("flaky", events[0])}
    assert_each_names_its_event(flaky.arrivals, "flaky")
    assert_each_names_its_event(steady.arrivals, "steady")

    # One log line per failed attempt, naming the webhook and what went wrong, numbered in order.
    log = server.stderr_text
    failures = FAILED_ATTEMPT.findall(log)
    assert len(failures) == log.count(" not delivered ")
    assert {name for name, *_ in failures} == {"flaky"}
    assert [int(attempt) for _, _, attempt, _ in failures] == list(range(1, len(failures) + 1))
    assert {int(event) for _, event, _, _ in failures} == {expected[0]}
    errors = [error for *_, error in failures]
    assert errors.count("HTTP 500 Internal Server Error") == sum(a.answered == 500 for a in retries) >= 3
    assert errors.count("no answer within 10 s") == sum(a.answered is None for a in retries) == 1
    assert errors.count("connection refused") >= 2
    assert len(errors) == sum(errors.count(e) for e in
                              ("HTTP 500 Internal Server Error", "no answer within 10 s", "connection refused"))
    assert f"webhook flaky: event {expected[0]} delivered after {len(failures)} failed attempt(s)" in log
    # Neither the URL's path and query nor a secret reaches the log or GET /webhooks.
    _, _, listing = server.request("GET", "/webhooks")
    for shown in (log, str(listing)):
        for secret in ("token=path-secret", "/hooks/deployapi", SECRET, SECRET.removeprefix("whsec_"),
                       OTHER_SECRET.removeprefix("whsec_")):
            assert secret not in shown


# --- 3. SIGKILL mid-delivery -----------------------------------------------------------------------


@pytest.mark.parametrize("in_flight", ["hanging", "answering slowly"])
def test_after_a_sigkill_mid_delivery_a_restart_resumes_at_the_first_unacknowledged_event(
        in_flight, receivers, config_file, serve):
    receiver = receivers()
    receiver.delay = 0.02  # a backlog still draining when the kill comes
    config = config_file({"name": "audit", "url": receiver.url, "secret": SECRET, "max_backoff_seconds": 1})
    server = serve(config)
    run_deployments(server, 15)
    receiver.wait_for(20, timeout=10)
    if in_flight == "hanging":
        receiver.set_mode("hang")
        assert wait_until(lambda: receiver.hanging == 1, timeout=5)
    else:
        assert wait_until(lambda: receiver.in_flight == 1, timeout=5)

    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    receiver.set_mode("ok")  # the hung request, if any, ends (its client is gone) and is recorded
    assert wait_until(lambda: receiver.in_flight == 0, timeout=5)
    before_restart = list(receiver.arrivals)
    accepted_before = event_ids([arrival for arrival in before_restart if arrival.answered == 204])
    assert len(accepted_before) < 60  # the kill came mid-backlog

    restarted = serve(config)
    run_deployments(restarted, 5)
    expected = [event["id"] for event in feed(restarted)]
    assert len(expected) == 80
    assert wait_until(lambda: set(event_ids(receiver.accepted())) >= set(expected), timeout=30)
    assert wait_until(lambda: all_delivered(restarted, expected[-1]), timeout=5), webhook_statuses(restarted)

    resumed_at = event_id(receiver.arrivals[len(before_restart)])
    if in_flight == "hanging":
        # The hung event was never acknowledged, and everything before it was.
        assert before_restart[-1].answered is None
        assert resumed_at == event_id(before_restart[-1]) == expected[len(accepted_before)]
    else:
        # The last accepted event may have been answered a moment before its position was written.
        last = accepted_before[-1]
        assert resumed_at in (last, expected[expected.index(last) + 1])
    accepted = event_ids(receiver.accepted())
    assert set(accepted) == set(expected)
    assert first_occurrences(accepted) == expected
    assert len(accepted) - len(expected) <= 1  # at most the one event at the seam came twice
    assert_each_names_its_event(receiver.arrivals, "audit")


# --- 4. two deliverers -------------------------------------------------------------------------------


@pytest.mark.slow
def test_beside_a_delivering_server_a_relay_waits_and_takes_over_when_the_server_stops(
        receivers, config_file, serve, start_relay):
    receiver = receivers()
    receiver.delay = 0.01  # requests that last long enough for two senders to overlap
    config = config_file({"name": "audit", "url": receiver.url, "secret": SECRET})
    server = serve(config)
    assert wait_until(lambda: HOLDS_THE_LEASE in server.stderr_text)
    relay = start_relay(config)
    assert wait_until(lambda: WAITS_FOR_THE_LEASE in relay.stderr_text)

    run_deployments(server, 10)
    receiver.wait_for(40, timeout=15)
    assert wait_until(lambda: all_delivered(server, 40)), webhook_statuses(server)
    assert HOLDS_THE_LEASE not in relay.stderr_text

    assert server.stop(signal.SIGTERM) == 0
    assert wait_until(lambda: HOLDS_THE_LEASE in relay.stderr_text, timeout=10)
    api = serve(None)  # serves the API on the same database, delivers nothing
    run_deployments(api, 10)
    expected = [event["id"] for event in feed(api)]
    receiver.wait_for(80, timeout=15)

    assert relay.stop(signal.SIGTERM) == 0
    assert "deployapi relay stopped" in relay.rest_of_stdout
    assert event_ids(receiver.arrivals) == expected  # the relay went on at event 41; nothing twice
    assert receiver.max_in_flight == 1
    assert_each_names_its_event(receiver.arrivals, "audit")


@pytest.mark.slow
def test_a_server_takes_over_at_once_from_a_relay_killed_while_holding_the_lease(
        receivers, config_file, serve, start_relay):
    receiver = receivers()
    receiver.delay = 0.01
    config = config_file({"name": "audit", "url": receiver.url, "secret": SECRET})
    relay = start_relay(config)
    assert wait_until(lambda: HOLDS_THE_LEASE in relay.stderr_text)
    server = serve(config)
    assert wait_until(lambda: WAITS_FOR_THE_LEASE in server.stderr_text)

    run_deployments(server, 10)
    receiver.wait_for(40, timeout=15)
    assert wait_until(lambda: all_delivered(server, 40)), webhook_statuses(server)
    assert HOLDS_THE_LEASE not in server.stderr_text

    killed_at = time.monotonic()
    assert relay.stop(signal.SIGKILL) == -signal.SIGKILL
    # Well before the relay's 30 s lease would expire: its holder's pid is gone.
    assert wait_until(lambda: HOLDS_THE_LEASE in server.stderr_text, timeout=10)
    assert time.monotonic() - killed_at < 10
    run_deployments(server, 10)
    receiver.wait_for(80, timeout=15)
    assert wait_until(lambda: all_delivered(server, 80)), webhook_statuses(server)

    assert event_ids(receiver.arrivals) == [event["id"] for event in feed(server)]  # went on at event 41
    assert receiver.max_in_flight == 1
    assert_each_names_its_event(receiver.arrivals, "audit")


@pytest.mark.slow
def test_a_server_takes_over_at_once_from_a_killed_relay_its_parent_has_not_reaped_yet(
        receivers, config_file, serve, start_relay):
    receiver = receivers()
    config = config_file({"name": "audit", "url": receiver.url, "secret": SECRET})
    relay = start_relay(config)
    assert wait_until(lambda: HOLDS_THE_LEASE in relay.stderr_text)
    server = serve(config)
    assert wait_until(lambda: WAITS_FOR_THE_LEASE in server.stderr_text)

    # As under a parent that has not called wait() yet (a shell script, an init-less container).
    os.kill(relay.process.pid, signal.SIGKILL)
    assert wait_until(lambda: process_state(relay.process.pid) == "Z")
    # The waiting deliverer looks once a second: a few seconds is "at once", well short of the 30 s lease.
    assert wait_until(lambda: HOLDS_THE_LEASE in server.stderr_text, timeout=4)


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (R, S, Z …); reading it does not reap the process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0]


# --- 5. a clean stop with a request in flight ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("deliverer", ["serve", "relay"])
def test_sigterm_with_a_request_in_flight_stops_cleanly_and_the_event_is_sent_after_a_restart(
        deliverer, tmp_path, receivers, config_file, serve, start_relay):
    receiver = receivers(mode="hang")
    config = config_file({"name": "audit", "url": receiver.url, "secret": SECRET})
    if deliverer == "serve":
        api = delivering = serve(config)
    else:
        api = serve(None)  # serves the API on the same database; the relay delivers
        delivering = start_relay(config)
    act(api, "/deployments", create_body(), expected=201)
    assert wait_until(lambda: receiver.hanging == 1, timeout=10)
    if delivering is not api:
        assert api.stop(signal.SIGTERM) == 0  # the relay is the last process on the database

    stopping_at = time.monotonic()
    assert delivering.stop(signal.SIGTERM, timeout=20) == 0
    assert time.monotonic() - stopping_at < 15  # the request in flight was abandoned after a grace period
    if deliverer == "relay":
        assert "deployapi relay stopped" in delivering.rest_of_stdout
    assert database_files(tmp_path) == [DB]

    receiver.set_mode("ok")
    assert wait_until(lambda: receiver.in_flight == 0, timeout=5)
    (abandoned,) = receiver.arrivals
    assert abandoned.answered is None
    restarted = serve(config)
    (delivered,) = receiver.wait_for(1, timeout=10)
    assert delivered.webhook_id == abandoned.webhook_id == webhook_id("audit", feed(restarted)[0])
    assert delivered.body == abandoned.body
    assert wait_until(lambda: all_delivered(restarted, 1)), webhook_statuses(restarted)


# --- 6. refusals ------------------------------------------------------------------------------------

INVALID_WEBHOOKS = [
    pytest.param({"name": "audit", "url": "ftp://hooks.example.com/deployapi"}, "webhooks[0].url",
                 "must be an http:// or https:// URL", id="a url that is not http"),
    pytest.param({"name": "audit", "url": "https://hooks.example.com/deployapi", "secret": "whsec_c2hvcnQ="},
                 "webhooks[0].secret", "must decode to 24 to 64 bytes", id="a secret too short"),
    pytest.param({"name": "audit", "url": "https://hooks.example.com/deployapi",
                  "secret_env": "DEPLOYAPI_E2E_UNSET_WEBHOOK_SECRET"}, "webhooks[0].secret_env",
                 "the environment variable DEPLOYAPI_E2E_UNSET_WEBHOOK_SECRET is not set", id="an unset secret_env"),
]


def refused(tmp_path: Path, *args: str) -> str:
    """Run a ``deployapi`` command that must refuse to start; return its one line of stderr."""
    result = run_command(*args, cwd=tmp_path, env=checkout_env(), timeout=10)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert database_files(tmp_path) == []
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_relay_without_a_configuration_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("DEPLOYAPI_CONFIG", raising=False)
    line = refused(tmp_path, "relay", "--db", str(tmp_path / DB))
    assert line == ("deployapi relay: no configuration file: give --config FILE (or DEPLOYAPI_CONFIG) "
                    "with [[webhooks]]")


def test_a_relay_with_a_file_without_webhooks_is_refused(tmp_path):
    config = tmp_path / "deployapi.toml"
    config.write_text("[defaults]\nrequired_approvals = 1\n", encoding="utf-8")
    line = refused(tmp_path, "relay", "--db", str(tmp_path / DB), "--config", str(config))
    assert line == f"deployapi relay: {config} has no [[webhooks]]: nothing to deliver"


@pytest.mark.parametrize("command", ["relay", "serve"])
@pytest.mark.parametrize(("hook", "key", "problem"), INVALID_WEBHOOKS)
def test_an_invalid_webhook_is_refused_at_start_naming_its_key(command, hook, key, problem, tmp_path, monkeypatch):
    monkeypatch.delenv("DEPLOYAPI_E2E_UNSET_WEBHOOK_SECRET", raising=False)
    config = tmp_path / "deployapi.toml"
    config.write_text(webhook_config(hook), encoding="utf-8")
    port = ("--port", "0") if command == "serve" else ()
    line = refused(tmp_path, command, "--db", str(tmp_path / DB), "--config", str(config), *port)
    prefix = "deployapi relay" if command == "relay" else "deployapi"
    assert line.startswith(f"{prefix}: {config}: {key}: {problem}")
    if "secret" in hook:
        assert hook["secret"].removeprefix("whsec_") not in line
