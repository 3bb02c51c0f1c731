"""Drive a real server through a client that openapi-python-client generated from its document.

Run by tests/e2e/test_generated_client.py in a child process, with the generated
package ``deployapi_client`` on the import path:

    python generated_client_driver.py URL DATABASE REPLICA_URL

REPLICA_URL is a ``deployapi serve --read-only`` on a copy of the database.

Each request goes through the generated operation (``sync_detailed``), except the
few a generated client cannot send (a body that is not JSON, one that is not
``application/json``, a method the document does not list): those are sent with
the client's own httpx client and read by the same operation's response parser.
Prints one JSON object: for each named case, the status and the parsed answer
described by ``describe``, so the test can hold every expectation.
"""

from __future__ import annotations

import datetime
import enum
import json
import sys
from pathlib import Path

import attrs
from deployapi_client import Client
from deployapi_client.api.deployments import create_deployment, get_deployment, list_deployments
from deployapi_client.api.events import event_head, list_deployment_events, list_event_feed
from deployapi_client.api.insights import dora_metrics, list_environments
from deployapi_client.api.lifecycle import (
    approve_deployment,
    cancel_deployment,
    fail_deployment,
    reject_deployment,
    rollback_deployment,
    start_deployment,
    succeed_deployment,
)
from deployapi_client.api.operations import health, openapi_document
from deployapi_client.api.policy import get_policy
from deployapi_client.api.webhooks import list_webhooks
from deployapi_client.models import (
    ActionWithOptionalNote,
    ActionWithRequiredNote,
    CreateDeployment,
    ListDeploymentEventsFormat,
    ListEventFeedFormat,
    RollbackAction,
    StartAction,
)
from deployapi_client.types import Unset

UNKNOWN_ID = "01m8bqmwd0jcr9fbtk1cqdh4gs"
HEADER = "X-Remote-User"


def describe(value):
    """The parsed answer as plain JSON that keeps its types: a model is ``{"model": class, field: ...}``
    (with ``additional_properties`` only when the body had members the model has no field for), an enum
    ``"EnumClass:value"``, a date-time ``"datetime:…"``, an unset field ``"UNSET"``, and anything the
    generator left untyped (a plain dict) ``{"untyped": …}``."""
    if attrs.has(type(value)):
        described = {"model": type(value).__name__}
        for field in attrs.fields(type(value)):
            item = getattr(value, field.name)
            if field.name != "additional_properties":
                described[field.name] = describe(item)
            elif item:  # a map's entries, or members the model has no field for
                described[field.name] = {key: describe(entry) for key, entry in item.items()}
        return described
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}:{value.value}"
    if isinstance(value, datetime.datetime):
        return f"datetime:{value.isoformat()}"
    if isinstance(value, Unset):
        return "UNSET"
    if isinstance(value, list):
        return [describe(item) for item in value]
    if isinstance(value, dict):
        return {"untyped": value}
    return value


def main(url: str, database: str, replica_url: str) -> None:
    seen: dict[str, dict] = {}

    def record(case: str, response) -> object:
        seen[case] = {"status": int(response.status_code), "parsed": describe(response.parsed)}
        return response.parsed

    actors: dict[int, str] = {}

    def as_user(name: str, **headers: str) -> Client:
        # An undocumented status raises instead of coming back unparsed.
        client = Client(base_url=url, headers={HEADER: name, **headers}, raise_on_unexpected_status=True)
        actors[id(client)] = name
        return client

    alice, bob, deployer = as_user("alice@example.com"), as_user("bob@example.com"), as_user("deploy-bot")

    def create(case: str, environment: str = "staging", service: str = "billing-api", **fields):
        body = CreateDeployment.from_dict({
            "service": service, "environment": environment, "version": "1.4.2", "requester": "alice@example.com",
            "work_refs": ["JIRA-1"], "rollback_plan": "redeploy 1.4.1", "risk": "low", **fields})
        return record(case, create_deployment.sync_detailed(client=alice, body=body))

    def act(case: str, operation, client: Client, deployment_id: str, body_type=ActionWithOptionalNote, **fields):
        body = body_type.from_dict({"actor": actors[id(client)], "note": "because", **fields})
        return record(case, operation.sync_detailed(deployment_id, client=client, body=body))

    # --- a lifecycle, and every other way a deployment moves --------------------------------
    shipped = create("create").id
    act("approve", approve_deployment, bob, shipped)
    act("start", start_deployment, deployer, shipped, StartAction)
    act("succeed", succeed_deployment, deployer, shipped)
    record("get", get_deployment.sync_detailed(shipped, client=alice))

    rejected = create("create_rejected").id
    act("reject", reject_deployment, bob, rejected, ActionWithRequiredNote)
    cancelled = create("create_cancelled").id
    act("cancel", cancel_deployment, alice, cancelled)
    failed = create("create_failed").id
    act("approve_failed", approve_deployment, bob, failed)
    act("start_failed", start_deployment, deployer, failed, StartAction)
    act("fail", fail_deployment, deployer, failed, ActionWithRequiredNote)
    rolled_back = create("create_rolled_back", service="ledger").id
    act("approve_rolled_back", approve_deployment, bob, rolled_back)
    act("start_rolled_back", start_deployment, deployer, rolled_back, StartAction)
    act("rollback", rollback_deployment, deployer, rolled_back, RollbackAction)
    partly = create("create_two_approvals", environment="two-approvals").id
    act("partial_approval", approve_deployment, bob, partly)
    act("duplicate_approval", approve_deployment, bob, partly)
    unreviewed = create("create_unreviewed", environment="exclusive").id
    act("start_unreviewed", start_deployment, deployer, unreviewed, StartAction)
    busy = create("create_busy", environment="exclusive").id
    act("environment_busy", start_deployment, deployer, busy, StartAction)
    frozen = create("create_frozen", environment="frozen").id
    act("approve_frozen", approve_deployment, bob, frozen)
    act("deploy_freeze", start_deployment, deployer, frozen, StartAction)
    act("start_overriding_freeze", start_deployment, deployer, frozen, StartAction, override_freeze=True)

    # --- the reads --------------------------------------------------------------------------
    record("list", list_deployments.sync_detailed(client=alice, service="billing-api", limit=2))
    record("history", list_deployment_events.sync_detailed(shipped, client=alice))
    record("history_cdevents", list_deployment_events.sync_detailed(
        shipped, client=alice, format_=ListDeploymentEventsFormat.CDEVENTS))
    record("feed", list_event_feed.sync_detailed(client=alice))
    record("feed_cdevents", list_event_feed.sync_detailed(client=alice, format_=ListEventFeedFormat.CDEVENTS))
    record("feed_cdevents_empty", list_event_feed.sync_detailed(
        client=alice, after=10_000, format_=ListEventFeedFormat.CDEVENTS))
    record("head", event_head.sync_detailed(client=alice))
    record("environments", list_environments.sync_detailed(client=alice))
    record("dora", dora_metrics.sync_detailed(client=alice))
    record("policy", get_policy.sync_detailed(client=alice))
    record("webhooks", list_webhooks.sync_detailed(client=alice))
    record("health", health.sync_detailed(client=alice))
    record("openapi", openapi_document.sync_detailed(client=alice))

    # --- documented errors ------------------------------------------------------------------
    act("self_approval", approve_deployment, alice, create("create_own").id)
    dana_only = create("create_approvers_only", environment="approvers-only").id
    act("not_an_approver", approve_deployment, bob, dana_only)
    carol = as_user("carol@example.com")
    record("actor_mismatch_create", create_deployment.sync_detailed(client=carol, body=CreateDeployment.from_dict({
        "service": "billing-api", "environment": "staging", "version": "1", "requester": "dave@example.com",
        "work_refs": ["JIRA-1"], "rollback_plan": "redeploy"})))
    record("actor_mismatch_approve", approve_deployment.sync_detailed(
        shipped, client=carol, body=ActionWithOptionalNote(actor="dave@example.com")))
    record("actor_mismatch_succeed", succeed_deployment.sync_detailed(
        shipped, client=carol, body=ActionWithOptionalNote(actor="dave@example.com")))
    pending = create("create_pending").id
    act("start_pending", start_deployment, deployer, pending, StartAction)
    act("succeed_pending", succeed_deployment, deployer, pending)
    record("not_found", get_deployment.sync_detailed(UNKNOWN_ID, client=alice))
    act("approve_not_found", approve_deployment, bob, UNKNOWN_ID)
    record("unauthenticated", get_deployment.sync_detailed(shipped, client=Client(base_url=url)))
    record("invalid_cursor", list_deployments.sync_detailed(client=alice, cursor="not-one-of-ours"))
    create("validation_failed", service="Not A Slug", work_refs=[], version="")
    record("validation_failed_query", list_deployments.sync_detailed(client=alice, limit=0))
    record("validation_failed_history", list_deployment_events.sync_detailed(shipped, client=alice, limit=0))
    body = CreateDeployment.from_dict({"service": "billing-api", "environment": "staging", "version": "2",
                                       "requester": "alice@example.com", "work_refs": ["JIRA-2"],
                                       "rollback_plan": "redeploy"})
    record("idempotent_create", create_deployment.sync_detailed(client=alice, body=body, idempotency_key="gen-1"))
    body.version = "3"
    record("idempotency_key_reused", create_deployment.sync_detailed(client=alice, body=body,
                                                                     idempotency_key="gen-1"))
    create("payload_too_large", rollback_plan="x" * 70_000)
    record("header_too_large", list_event_feed.sync_detailed(
        client=as_user("alice@example.com", Accept=", ".join(["application/json;q=0.5"] * 60))))

    # What no generated operation can send, sent by its httpx client and read by the operation's parser.
    raw = alice.get_httpx_client()
    record("malformed_json", create_deployment._build_response(client=alice, response=raw.post(
        "/deployments", content=b"{", headers={"Content-Type": "application/json"})))
    record("unsupported_media_type", create_deployment._build_response(client=alice, response=raw.post(
        "/deployments", content=b"{}", headers={"Content-Type": "text/plain"})))
    record("method_not_allowed", get_deployment._build_response(client=alice, response=raw.delete(
        f"/deployments/{shipped}")))

    # A write sent to the read-only replica.
    replica = Client(base_url=replica_url, headers={HEADER: "alice@example.com"}, raise_on_unexpected_status=True)
    record("read_only", create_deployment.sync_detailed(client=replica, body=body))

    # Last: the database file taken away under the server, which then refuses every write.
    Path(database).rename(database + ".moved")
    create("storage_unavailable")
    record("health_unavailable", health.sync_detailed(client=alice))

    print(json.dumps(seen))


if __name__ == "__main__":
    main(*sys.argv[1:])
