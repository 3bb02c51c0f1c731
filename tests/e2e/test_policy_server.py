"""The real ``deployapi serve`` with a TOML configuration file: review policies end to end.

Start-up refusals, a race of starts on an exclusive environment, group approvers
under trusted identity, freezes, environments without review, the policy digest
across restarts, and a v1 client against a server without a file.
"""

from __future__ import annotations

import os
import re
import socket
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from builders import create_body
from server_process import run_command

import deployapi

pytestmark = pytest.mark.e2e

# Servers and commands run this checkout's code, not whatever the installed package points at.
CHECKOUT = str(Path(deployapi.__file__).resolve().parent.parent)
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
DEPLOYER = {"actor": "deployer@example.com"}


# --- helpers ---------------------------------------------------------------------------


def checkout_env(**variables: str) -> dict[str, str]:
    """The environment of a child process: this checkout first on the import path, plus ``variables``."""
    path = os.pathsep.join(filter(None, [CHECKOUT, os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, **variables}


def write_config(directory: Path, text: str, name: str = "deployapi.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def serve(start_server, tmp_path):
    """Start ``deployapi serve`` on ``tmp_path/deployapi.db`` with this checkout's code, and ``config`` if given."""

    def start(*args: str, config: Path | None = None, env: dict[str, str] | None = None):
        config_args = ("--config", str(config)) if config is not None else ()
        return start_server("--db", str(tmp_path / "deployapi.db"), *config_args, *args,
                            env=checkout_env(**(env or {})))

    return start


def api_timestamp(moment: datetime) -> str:
    """How the API writes an instant: UTC, microseconds, Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def create(server, headers: dict | None = None, **overrides) -> dict:
    status, _, body = server.request("POST", "/deployments", create_body(**overrides), headers=headers)
    assert status == 201, body
    return body


def act(server, deployment_id: str, action: str, body: dict | None = None, headers: dict | None = None):
    """(status, body) of one lifecycle action."""
    status, _, answer = server.request("POST", f"/deployments/{deployment_id}/{action}",
                                       DEPLOYER if body is None else body, headers=headers)
    return status, answer


def approved_deployment(server, **overrides) -> dict:
    deployment = create(server, **overrides)
    status, body = act(server, deployment["id"], "approve", {"actor": "bob@example.com"})
    assert (status, body["status"]) == (200, "approved"), body
    return body


def fetch(server, deployment_id: str, headers: dict | None = None) -> dict:
    status, _, body = server.request("GET", f"/deployments/{deployment_id}", headers=headers)
    assert status == 200, body
    return body


def events_of(server, deployment_id: str, headers: dict | None = None) -> list[dict]:
    status, _, body = server.request("GET", f"/deployments/{deployment_id}/events", headers=headers)
    assert status == 200, body
    return body["items"]


def started_ids(server, service: str) -> list[str]:
    _, _, body = server.request("GET", f"/deployments?status=started&service={service}&limit=200")
    return [deployment["id"] for deployment in body["items"]]


def assert_the_database_checks_out(tmp_path: Path) -> None:
    result = run_command("check", "--db", str(tmp_path / "deployapi.db"), cwd=tmp_path, env=checkout_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout


# --- 1. start-up refusals ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def refused_start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``deployapi serve`` that must refuse to start; return its one line of stderr."""
    port = free_port()
    result = run_command("serve", "--db", str(tmp_path / "deployapi.db"), "--port", str(port), *args,
                         cwd=tmp_path, env=checkout_env(**(env or {})), timeout=10)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith("deployapi.db")] == []
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


GROUP_APPROVERS = """
    [environments.production]
    approvers = ["group:sre", "dana@example.com"]
"""
PRODUCTION_IN_THE_FILE = """
    [environments.live]
    production = true
"""
# (file text or None for no file, extra serve arguments, extra environment, the key named, the problem stated)
REFUSALS = [
    pytest.param(None, (), {}, None, "cannot read the file", id="a missing file"),
    pytest.param("[environments.production\nexclusive = true\n", (), {}, None, "not valid TOML",
                 id="a file that is not TOML"),
    pytest.param("[environments.production]\nrequired_approval = 2\n", (), {},
                 "environments.production.required_approval", "unknown key", id="an unknown key"),
    pytest.param("[environments.production]\nexclusive = \"yes\"\n", (), {},
                 "environments.production.exclusive", "must be a boolean, not a string", id="a wrong type"),
    pytest.param("[defaults]\nrequired_approvals = 11\n", (), {}, "defaults.required_approvals",
                 "between 0 and 10, not 11", id="required approvals out of range"),
    pytest.param(GROUP_APPROVERS, (), {}, "environments.production.approvers", "--remote-groups-header",
                 id="a group approver without trusted identity"),
    pytest.param(GROUP_APPROVERS, ("--trust-remote-user", "--remote-user-header", "X-Forwarded-User"), {},
                 "environments.production.approvers", "--remote-groups-header",
                 id="a group approver without a groups header"),
    pytest.param(PRODUCTION_IN_THE_FILE, ("--production-environments", "live,prod"), {},
                 "environments.live.production", "--production-environments",
                 id="production in the file and the production flag"),
    pytest.param(PRODUCTION_IN_THE_FILE, (), {"DEPLOYAPI_PRODUCTION_ENVIRONMENTS": "live,prod"},
                 "environments.live.production", "DEPLOYAPI_PRODUCTION_ENVIRONMENTS",
                 id="production in the file and the production variable"),
]


@pytest.mark.parametrize(("text", "args", "env", "key", "problem"), REFUSALS)
def test_a_configuration_file_the_server_cannot_use_stops_it_before_anything_is_served_or_created(
        tmp_path, text, args, env, key, problem):
    config = tmp_path / "deployapi.toml"
    if text is not None:
        write_config(tmp_path, text)
    message = refused_start(tmp_path, "--config", str(config), *args, env=env)
    assert str(config) in message and problem in message, message
    assert key is None or key in message, message


@pytest.mark.parametrize(("text", "problem"), [
    pytest.param(None, "cannot read the file", id="a missing file"),
    pytest.param("[environments.production]\nrequired_approvals = 11\n", "between 0 and 10, not 11",
                 id="required approvals out of range"),
])
def test_a_configuration_file_named_by_deployapi_config_is_refused_the_same_way(tmp_path, text, problem):
    config = tmp_path / "from-the-environment.toml"
    if text is not None:
        write_config(tmp_path, text, name=config.name)
    message = refused_start(tmp_path, env={"DEPLOYAPI_CONFIG": str(config)})
    assert str(config) in message and problem in message, message


def test_deployapi_config_gives_the_policy_and_the_config_flag_overrides_it(tmp_path, serve):
    dev_unreviewed = write_config(tmp_path, "[environments.dev]\nrequired_approvals = 0\n")
    server = serve(env={"DEPLOYAPI_CONFIG": str(dev_unreviewed)})
    assert create(server, environment="dev")["status"] == "approved"
    server.stop()
    server = serve(config=dev_unreviewed, env={"DEPLOYAPI_CONFIG": str(tmp_path / "missing.toml")})
    assert create(server, environment="dev")["status"] == "approved"


# --- 2. exclusive starts under a race -------------------------------------------------------

EXCLUSIVE = """
    [environments.production]
    exclusive = true
    required_approvals = 1
"""
CONTENDERS = 32
ROUNDS = 5


def start_retrying_while_busy(server, deployment_id: str, deadline: float) -> tuple[int, dict]:
    """Start a deployment; a 503 database_busy (all writer slots taken) is retried, as a client would."""
    while True:
        status, headers, body = server.request("POST", f"/deployments/{deployment_id}/start", DEPLOYER)
        if status != 503:
            return status, body
        assert body["code"] == "database_busy" and int(headers["Retry-After"]) > 0, body
        assert time.monotonic() < deadline, "still busy after retrying for the whole deadline"
        time.sleep(0.01)


def start_all_at_once(server, deployment_ids: list[str]) -> dict[str, tuple[int, dict]]:
    """Start every deployment at the same moment, each over its own connection: deployment id -> (status, body)."""
    barrier = threading.Barrier(len(deployment_ids))
    deadline = time.monotonic() + 20

    def start(deployment_id: str) -> tuple[int, dict]:
        barrier.wait(timeout=10)
        return start_retrying_while_busy(server, deployment_id, deadline)

    with ThreadPoolExecutor(max_workers=len(deployment_ids)) as pool:
        answers = list(pool.map(start, deployment_ids))
    return dict(zip(deployment_ids, answers, strict=True))


def the_one_winner(answers: dict[str, tuple[int, dict]]) -> str:
    """The id of the only start that succeeded; every other start was refused as blocked by it."""
    winners = [deployment_id for deployment_id, (status, _) in answers.items() if status == 200]
    assert len(winners) == 1, sorted(status for status, _ in answers.values())
    winner = winners[0]
    assert answers[winner][1]["status"] == "started"
    for deployment_id, (status, body) in answers.items():
        if deployment_id != winner:
            assert (status, body["code"], body["blocking_deployment_id"]) == (409, "environment_busy", winner), body
    return winner


def test_of_32_simultaneous_starts_on_an_exclusive_environment_exactly_one_succeeds_in_every_round(tmp_path, serve):
    server = serve("--threads", "8", config=write_config(tmp_path, EXCLUSIVE))
    service = "checkout"
    contenders = [approved_deployment(server, service=service, environment="production", version=f"1.{n}")["id"]
                  for n in range(CONTENDERS)]
    for round_number in range(ROUNDS):
        winner = the_one_winner(start_all_at_once(server, contenders))
        assert started_ids(server, service) == [winner]
        losers = [deployment_id for deployment_id in contenders if deployment_id != winner]
        for loser in losers:
            assert "started" not in [event["type"] for event in events_of(server, loser)]
            assert fetch(server, loser)["status"] == "approved"
        if round_number < ROUNDS - 1:
            # The environment is free again once the winner is rolled back; a new deployment joins the losers.
            assert act(server, winner, "rollback", {**DEPLOYER, "note": "next round"})[0] == 200
            fresh = approved_deployment(server, service=service, environment="production", version=f"2.{round_number}")
            contenders = [*losers, fresh["id"]]

    assert act(server, losers[0], "start")[1]["code"] == "environment_busy"
    assert act(server, winner, "succeed")[0] == 200
    status, body = act(server, losers[0], "start")
    assert (status, body["status"]) == (200, "started")
    assert started_ids(server, service) == [losers[0]]
    # One start at a time per service: another service starts beside it.
    other = approved_deployment(server, service="search", environment="production")
    assert act(server, other["id"], "start")[1]["status"] == "started"
    assert_the_database_checks_out(tmp_path)


# --- 3. group approvers under trusted identity -------------------------------------------------

GROUPS = """
    [environments.production]
    approvers = ["group:sre", "dana@example.com"]
    required_approvals = 2
"""
TRUSTED_IDENTITY = ("--trust-remote-user", "--remote-user-header", "X-Forwarded-User",
                    "--remote-groups-header", "X-Forwarded-Groups")


def caller(user: str, groups: str | None = None) -> dict[str, str]:
    """The headers the authenticating proxy sets for ``user``, a member of ``groups``."""
    return {"X-Forwarded-User": user, **({"X-Forwarded-Groups": groups} if groups is not None else {})}


def approve_as(server, deployment_id: str, user: str, groups: str | None = None) -> tuple[int, dict]:
    return act(server, deployment_id, "approve", {}, headers=caller(user, groups))


def test_group_approvers_admit_members_once_each_and_never_the_requester(tmp_path, serve):
    server = serve(*TRUSTED_IDENTITY, config=write_config(tmp_path, GROUPS))
    alice = caller("alice@example.com", "sre")
    deployment = create(server, headers=alice, environment="production", requester=None)
    assert deployment["required_approvals"] == 2
    deployment_id = deployment["id"]

    status, body = approve_as(server, deployment_id, "alice@example.com", "sre")
    assert (status, body["code"]) == (403, "self_approval")
    status, body = approve_as(server, deployment_id, "erin@example.com", "dev, qa")
    assert (status, body["code"]) == (403, "not_an_approver")

    status, body = approve_as(server, deployment_id, "bob@example.com", "dev, sre")
    assert status == 200 and body["status"] == "pending_approval" and body["reviewed_by"] is None
    assert [approval["actor"] for approval in body["approvals"]] == ["bob@example.com"]
    status, body = approve_as(server, deployment_id, "bob@example.com", "dev, sre")
    assert (status, body["code"]) == (403, "duplicate_approval")

    status, body = approve_as(server, deployment_id, "dana@example.com")
    assert (status, body["status"], body["reviewed_by"]) == (200, "approved", "dana@example.com")
    assert [approval["actor"] for approval in body["approvals"]] == ["bob@example.com", "dana@example.com"]
    history = [(e["type"], e["actor"], e["from_status"], e["to_status"])
               for e in events_of(server, deployment_id, headers=alice)]
    assert history == [("created", "alice@example.com", None, "pending_approval"),
                       ("approved", "bob@example.com", "pending_approval", "pending_approval"),
                       ("approved", "dana@example.com", "pending_approval", "approved")]
    assert_the_database_checks_out(tmp_path)


def test_a_groups_header_without_the_user_header_is_unauthenticated_and_changes_nothing(tmp_path, serve):
    server = serve(*TRUSTED_IDENTITY, config=write_config(tmp_path, GROUPS))
    alice = caller("alice@example.com")
    deployment = create(server, headers=alice, environment="production", requester=None)
    status, body = act(server, deployment["id"], "approve", {"actor": "mallory@example.com"},
                        headers={"X-Forwarded-Groups": "sre"})
    assert (status, body["code"]) == (401, "unauthenticated")
    assert fetch(server, deployment["id"], headers=alice) == deployment
    assert len(events_of(server, deployment["id"], headers=alice)) == 1


# --- 4. freezes ---------------------------------------------------------------------------------


def freeze_around_now() -> tuple[datetime, datetime, str]:
    """A fixed freeze from an hour ago to an hour from now, as a file states it: the start an RFC 3339 string
    in UTC, the end a TOML date-time in another offset (the API answers in UTC either way)."""
    now = datetime.now(timezone.utc)
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    local_end = end.astimezone(timezone(timedelta(hours=1))).isoformat(timespec="microseconds")
    text = f"""
        [environments.production]
        freeze = [{{ start = "{api_timestamp(start)}", end = {local_end}, reason = "incident" }}]
    """
    return start, end, text


def head(server) -> dict:
    return server.request("GET", "/events/head")[2]


def test_a_start_inside_a_freeze_is_refused_until_overridden_with_a_note(tmp_path, serve):
    start, end, text = freeze_around_now()
    server = serve(config=write_config(tmp_path, text))
    deployment = approved_deployment(server, environment="production")
    before = (head(server), events_of(server, deployment["id"]))

    status, body = act(server, deployment["id"], "start")
    assert (status, body["code"]) == (409, "deploy_freeze")
    assert body["freeze"]["reason"] == "incident"
    assert body["freeze"]["ends_at"] == api_timestamp(end) and TIMESTAMP.fullmatch(body["freeze"]["ends_at"])
    status, body = act(server, deployment["id"], "start", {**DEPLOYER, "override_freeze": True})
    assert (status, body["code"]) == (422, "validation_failed")
    assert [problem["field"] for problem in body["errors"]] == ["note"]
    assert (head(server), events_of(server, deployment["id"])) == before
    assert fetch(server, deployment["id"])["status"] == "approved"

    status, body = act(server, deployment["id"], "start",
                       {**DEPLOYER, "override_freeze": True, "note": "the hotfix for the incident itself"})
    assert (status, body["status"]) == (200, "started")
    started = events_of(server, deployment["id"])[-1]
    assert (started["type"], started["note"]) == ("started", "the hotfix for the incident itself")
    overridden = started["details"]["freeze_overridden"]
    assert (overridden["reason"], overridden["ends_at"]) == ("incident", api_timestamp(end))
    assert overridden["window"] == {"start": api_timestamp(start), "end": api_timestamp(end), "reason": "incident"}
    assert_the_database_checks_out(tmp_path)


# --- 5. environments without review ---------------------------------------------------------------


def test_an_environment_that_requires_no_approvals_creates_deployments_already_approved(tmp_path, serve):
    server = serve(config=write_config(tmp_path, "[environments.dev]\nrequired_approvals = 0\n"))
    deployment = create(server, environment="dev")
    assert (deployment["status"], deployment["required_approvals"]) == ("approved", 0)
    assert (deployment["reviewed_by"], deployment["reviewed_at"], deployment["approvals"]) == (None, None, [])
    history = [(e["type"], e["from_status"], e["to_status"]) for e in events_of(server, deployment["id"])]
    assert history == [("created", None, "approved")]
    assert act(server, deployment["id"], "approve", {"actor": "bob@example.com"})[1]["code"] == "invalid_transition"
    assert act(server, deployment["id"], "start")[1]["status"] == "started"
    assert create(server, environment="staging")["status"] == "pending_approval"  # the defaults still review
    assert_the_database_checks_out(tmp_path)


# --- 6. the policy document and its digest -----------------------------------------------------------

POLICY = """
    # Review rules, as the file states them.
    [defaults]
    required_approvals = 1

    [environments.production]
    production = true
    required_approvals = 2
    approvers = ["dana@example.com", "erin@example.com"]
    exclusive = true
    freeze = [
      { start = "2030-12-24T00:00:00Z", end = "2030-12-27T00:00:00Z", reason = "holidays" },
      { weekly_start = "sat 00:00", weekly_end = "sat 00:01", timezone = "Europe/Berlin" },
    ]

    [environments.dev]
    required_approvals = 0
"""
# The same rules in another order and layout, the default left out.
POLICY_REWRITTEN = """
    [environments.dev]
    required_approvals = 0
    [environments.production]
    freeze = [
      { reason = "holidays", end = 2030-12-27T01:00:00+01:00, start = "2030-12-24T00:00:00Z" },
      { timezone = "Europe/Berlin", weekly_end = "sat 00:01", weekly_start = "sat 00:00" },
    ]
    exclusive = true
    approvers = ["erin@example.com", "dana@example.com"]
    required_approvals = 2
    production = true
"""
NO_RULES = {"production": False, "required_approvals": 1, "approvers": None, "exclusive": False, "freeze": []}
POLICY_DOCUMENT = {
    "defaults": NO_RULES,
    "environments": {
        "dev": {**NO_RULES, "required_approvals": 0},
        "production": {
            "production": True, "required_approvals": 2, "approvers": ["dana@example.com", "erin@example.com"],
            "exclusive": True,
            "freeze": [
                {"start": "2030-12-24T00:00:00.000000Z", "end": "2030-12-27T00:00:00.000000Z", "reason": "holidays"},
                {"weekly_start": "sat 00:00", "weekly_end": "sat 00:01", "timezone": "Europe/Berlin", "reason": None},
            ],
        },
    },
}


def policy_of(server) -> dict:
    status, _, body = server.request("GET", "/policy")
    assert status == 200, body
    return body


def digests(server, deployment_id: str) -> list[str]:
    return [event["policy_digest"] for event in events_of(server, deployment_id)]


def test_the_served_policy_is_the_file_with_every_key_filled_in_and_its_digest_marks_what_it_judged(
        tmp_path, serve):
    server = serve(config=write_config(tmp_path, POLICY))
    policy = policy_of(server)
    digest = policy.pop("digest")
    assert policy == POLICY_DOCUMENT
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    production = create(server, environment="production")
    dev = create(server, environment="dev")
    assert act(server, production["id"], "approve", {"actor": "dana@example.com"})[1]["status"] == "pending_approval"
    assert production["policy_digest"] == dev["policy_digest"] == digest
    assert digests(server, production["id"]) == [digest, digest] and digests(server, dev["id"]) == [digest]
    server.stop()

    server = serve(config=write_config(tmp_path, POLICY_REWRITTEN, name="rewritten.toml"))
    assert policy_of(server) == {"digest": digest, **POLICY_DOCUMENT}
    server.stop()

    changed = POLICY.replace("required_approvals = 2", "required_approvals = 1")
    server = serve(config=write_config(tmp_path, changed, name="changed.toml"))
    new_digest = policy_of(server)["digest"]
    assert new_digest != digest
    # The deployment created under the old rules keeps them: its digest, and the two approvals it needs.
    status, body = act(server, production["id"], "approve", {"actor": "erin@example.com"})
    assert (status, body["status"], body["required_approvals"], body["policy_digest"]) == (
        200, "approved", 2, digest)
    assert digests(server, production["id"]) == [digest, digest, new_digest]
    assert fetch(server, dev["id"])["policy_digest"] == digest and digests(server, dev["id"]) == [digest]
    newer = create(server, environment="production")
    assert (newer["required_approvals"], newer["policy_digest"], digests(server, newer["id"])) == (
        1, new_digest, [new_digest])
    server.stop()
    assert_the_database_checks_out(tmp_path)


# --- 7. v1 clients without a configuration file ----------------------------------------------------

V1_DEPLOYMENT_FIELDS = {"id": str, "service": str, "environment": str, "version": str, "requester": str,
                        "work_refs": list, "risk": (str, type(None)), "rollback_plan": str, "status": str,
                        "reviewed_by": (str, type(None)), "reviewed_at": (str, type(None)), "created_at": str,
                        "updated_at": str}
V1_EVENT_FIELDS = {"id": int, "deployment_id": str, "sequence": int, "type": str, "actor": str,
                   "note": (str, type(None)), "from_status": (str, type(None)), "to_status": str, "created_at": str}


def assert_v1_shape(document: dict, fields: dict) -> None:
    for name, kind in fields.items():
        assert isinstance(document[name], kind), (name, document)
    for name in ("created_at", "updated_at", "reviewed_at"):
        assert document.get(name) is None or TIMESTAMP.fullmatch(document[name]), (name, document)


def test_a_v1_client_walks_a_deployment_through_a_server_without_a_file_as_before(tmp_path, serve):
    server = serve()
    status, headers, created = server.request("POST", "/deployments", create_body(environment="production"))
    assert status == 201 and headers["Location"] == f"/deployments/{created['id']}"
    assert (created["status"], created["reviewed_by"], created["reviewed_at"]) == ("pending_approval", None, None)
    assert server.request("POST", "/deployments", create_body(environment="production", risk=None))[0] == 422
    deployment_id = created["id"]

    status, body = act(server, deployment_id, "approve", {"actor": " ALICE@example.com "})
    assert (status, body["code"]) == (403, "self_approval")
    status, approved = act(server, deployment_id, "approve", {"actor": "bob@example.com", "note": "looks fine"})
    assert (status, approved["status"], approved["reviewed_by"]) == (200, "approved", "bob@example.com")
    status, body = act(server, deployment_id, "approve", {"actor": "carol@example.com"})
    assert (status, body["code"], body["current_status"], body["action"]) == (
        409, "invalid_transition", "approved", "approve")
    status, started = act(server, deployment_id, "start")
    assert (status, started["status"], started["reviewed_by"]) == (200, "started", "bob@example.com")
    status, succeeded = act(server, deployment_id, "succeed")
    assert (status, succeeded["status"], succeeded["reviewed_at"]) == (200, "succeeded", approved["reviewed_at"])
    for deployment in (created, approved, started, succeeded):
        assert_v1_shape(deployment, V1_DEPLOYMENT_FIELDS)
    assert fetch(server, deployment_id) == succeeded

    events = events_of(server, deployment_id)
    for event in events:
        assert_v1_shape(event, V1_EVENT_FIELDS)
    assert [(e["sequence"], e["type"], e["actor"], e["from_status"], e["to_status"]) for e in events] == [
        (1, "created", "alice@example.com", None, "pending_approval"),
        (2, "approved", "bob@example.com", "pending_approval", "approved"),
        (3, "started", "deployer@example.com", "approved", "started"),
        (4, "succeeded", "deployer@example.com", "started", "succeeded"),
    ]
    assert events[1]["note"] == "looks fine"
    assert_the_database_checks_out(tmp_path)
