"""The CDEvents mapping: every event type, the required CloudEvents and CDEvents fields, stable ids.

The required fields are written out here from the CDEvents schemas of spec
0.6.0-draft and the CloudEvents 1.0 specification; the tests never read the
schema files.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from deployapi import cdevents, lifecycle
from deployapi.lifecycle import Deployment, Event

DEPLOYMENT = Deployment(
    id="01m8bqmwd0jcr9fbtk1cqdh4gs", service="billing-api", environment="production",
    version="2026.11.26-3f9c2e1", requester="alice@example.com",
    work_refs=("JIRA-4812", "https://git.example.com/billing/pull/311"), risk="additive",
    rollback_plan="Redeploy the previous build.", status="rolled_back", reviewed_by="bob@example.com",
    reviewed_at="2026-11-26T10:50:34.158510Z", created_at="2026-11-26T10:50:30.176620Z",
    updated_at="2026-11-26T10:50:34.849317Z",
)
STATUS_AFTER = {"created": "pending_approval", "approved": "approved", "rejected": "rejected",
                "started": "started", "succeeded": "succeeded", "failed": "failed",
                "rolled_back": "rolled_back", "cancelled": "cancelled", "paused": "paused"}


def make_event(event_type: str, **overrides) -> Event:
    fields = dict(id=42, deployment_id=DEPLOYMENT.id, sequence=3, type=event_type, actor="bob@example.com",
                  note=None, from_status=None if event_type == "created" else "started",
                  to_status=STATUS_AFTER[event_type], created_at="2026-11-26T10:50:34.330840Z")
    fields.update(overrides)
    return Event(**fields)


def export(event_type: str, *, first_success: bool = False, mount: str = "", **overrides) -> dict:
    return cdevents.cloudevent(make_event(event_type, **overrides), DEPLOYMENT,
                               first_success=first_success, mount=mount)


# What each deployapi event becomes, written out independently of cdevents.py.
EXPECTED_TYPES = [
    pytest.param("created", False, "dev.cdevents.approval.created.0.1.0", id="created"),
    pytest.param("approved", False, "dev.cdevents.approval.closed.0.1.0", id="approved"),
    pytest.param("rejected", False, "dev.cdevents.approval.closed.0.1.0", id="rejected"),
    pytest.param("succeeded", True, "dev.cdevents.service.deployed.0.3.0", id="first-success"),
    pytest.param("succeeded", False, "dev.cdevents.service.upgraded.0.3.0", id="later-success"),
    pytest.param("rolled_back", False, "dev.cdevents.service.rolledback.0.3.0", id="rolled_back"),
    pytest.param("started", False, "dev.deployapi.deployment.started.v1", id="started"),
    pytest.param("failed", False, "dev.deployapi.deployment.failed.v1", id="failed"),
    pytest.param("cancelled", False, "dev.deployapi.deployment.cancelled.v1", id="cancelled"),
]
CDEVENT_TYPES = [p for p in EXPECTED_TYPES if p.values[2].startswith("dev.cdevents.")]

# Required members per CDEvents schema (spec 0.6.0-draft), top level down to subject.content.
REQUIRED_CONTENT = {
    "dev.cdevents.approval.created.0.1.0": {"approvalDetailsUrl", "resourceTargetUrl", "requestor"},
    "dev.cdevents.approval.closed.0.1.0": {"approvalDetailsUrl", "resourceTargetUrl", "responder",
                                            "decision", "status"},
    "dev.cdevents.service.deployed.0.3.0": {"environment", "artifactId"},
    "dev.cdevents.service.upgraded.0.3.0": {"environment", "artifactId"},
    "dev.cdevents.service.rolledback.0.3.0": {"environment", "artifactId"},
}
# Every member the schemas allow (they all say additionalProperties: false).
ALLOWED_TOP = {"context", "subject", "customData", "customDataContentType"}
ALLOWED_CONTEXT = {"specversion", "id", "source", "type", "timestamp", "schemaUri", "chainId", "links"}
ALLOWED_SUBJECT = {"id", "source", "content"}

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
# RFC 8141: "urn:" NID ":" NSS, with the NSS percent-encoded (no spaces, quotes or brackets).
URN = re.compile(r"^urn:[A-Za-z0-9][A-Za-z0-9-]{0,30}[A-Za-z0-9]:([A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-F]{2})+$")


@pytest.mark.parametrize("event_type, first_success, expected", EXPECTED_TYPES)
def test_every_event_type_maps_to_its_documented_type(event_type, first_success, expected):
    assert export(event_type, first_success=first_success)["type"] == expected


def test_a_partial_approval_closes_no_approval_and_is_exported_as_the_projects_own_type():
    details = {"approvals": 1, "required_approvals": 2}
    event = export("approved", from_status="pending_approval", to_status="pending_approval", details=details)
    assert event["type"] == "dev.deployapi.deployment.partially_approved.v1"
    assert event["data"]["details"] == details
    final = export("approved", from_status="pending_approval", details={"approvals": 2, "required_approvals": 2})
    assert final["type"] == "dev.cdevents.approval.closed.0.1.0"
    assert final["data"]["customData"]["details"] == {"approvals": 2, "required_approvals": 2}


def test_a_creation_that_needs_no_approval_opens_none_and_is_exported_as_the_projects_own_type():
    event = export("created", to_status="approved")
    assert event["type"] == "dev.deployapi.deployment.created.v1"
    assert event["data"]["to_status"] == "approved"


def test_a_start_that_overrode_a_freeze_carries_the_window_in_its_data():
    overridden = {"freeze_overridden": {"reason": "holidays", "ends_at": "2026-12-27T00:00:00.000000Z",
                                        "window": {"start": "2026-12-24T00:00:00.000000Z",
                                                   "end": "2026-12-27T00:00:00.000000Z", "reason": "holidays"}}}
    event = export("started", note="hotfix", details=overridden, policy_digest="sha256:" + "0" * 64)
    assert event["data"]["details"] == overridden
    assert event["data"]["policy_digest"] == "sha256:" + "0" * 64


def test_every_event_type_of_the_lifecycle_has_an_expected_export():
    assert {p.values[0] for p in EXPECTED_TYPES} == set(lifecycle.EVENT_TYPES)


def test_an_event_type_cdevents_has_no_mapping_for_is_exported_as_the_projects_own_type():
    # A type added to the lifecycle before anyone maps it must not turn ?format=cdevents into a 500.
    exported = export("paused")
    assert exported["type"] == "dev.deployapi.deployment.paused.v1"
    assert exported["subject"] == DEPLOYMENT.id and exported["data"]["type"] == "paused"


@pytest.mark.parametrize("event_type, first_success, expected", EXPECTED_TYPES)
def test_every_export_carries_the_required_cloudevents_attributes(event_type, first_success, expected):
    event = export(event_type, first_success=first_success)
    assert event["specversion"] == "1.0"
    for attribute in ("id", "source", "type", "subject", "time", "datacontenttype"):
        assert isinstance(event[attribute], str) and event[attribute], attribute
    assert event["source"] == f"/deployments/{DEPLOYMENT.id}"
    assert event["time"] == "2026-11-26T10:50:34.330840Z"
    assert event["datacontenttype"] == "application/json"
    assert isinstance(event["data"], dict)
    json.dumps(event)  # structured mode: plain JSON all the way down


@pytest.mark.parametrize("event_type, first_success, expected", CDEVENT_TYPES)
def test_cdevents_have_every_required_field_and_nothing_the_schema_forbids(event_type, first_success, expected):
    cdevent = export(event_type, first_success=first_success)["data"]
    assert set(cdevent) <= ALLOWED_TOP and {"context", "subject"} <= set(cdevent)
    context = cdevent["context"]
    assert set(context) <= ALLOWED_CONTEXT
    assert {"specversion", "id", "source", "type", "timestamp"} <= set(context)
    assert context["specversion"] == "0.6.0-draft"
    assert context["type"] == expected
    assert RFC3339_UTC.match(context["timestamp"])
    subject = cdevent["subject"]
    assert set(subject) <= ALLOWED_SUBJECT and {"id", "content"} <= set(subject)
    assert subject["id"]
    assert set(subject["content"]) == REQUIRED_CONTENT[expected]
    assert all(value for value in subject["content"].values())


@pytest.mark.parametrize("event_type, first_success, expected", CDEVENT_TYPES)
def test_the_cloudevent_repeats_the_cdevent_context_as_the_binding_asks(event_type, first_success, expected):
    event = export(event_type, first_success=first_success)
    context = event["data"]["context"]
    assert (event["id"], event["source"], event["type"], event["time"]) == (
        context["id"], context["source"], context["type"], context["timestamp"])
    assert event["subject"] == event["data"]["subject"]["id"]


def test_a_created_event_opens_the_approval_requested_by_the_requester():
    subject = export("created", actor="alice@example.com")["data"]["subject"]
    assert subject == {
        "id": DEPLOYMENT.id,
        "content": {
            "approvalDetailsUrl": f"/deployments/{DEPLOYMENT.id}/events",
            "resourceTargetUrl": f"/deployments/{DEPLOYMENT.id}",
            "requestor": "urn:deployapi:actor:alice@example.com",
        },
    }


@pytest.mark.parametrize("event_type", ["approved", "rejected"])
def test_a_review_closes_the_approval_with_its_decision_as_the_status(event_type):
    content = export(event_type, actor="bob@example.com")["data"]["subject"]["content"]
    assert (content["decision"], content["status"]) == (event_type, event_type)
    assert content["responder"] == "urn:deployapi:actor:bob@example.com"


def test_created_and_closed_name_the_same_approval():
    assert export("created")["subject"] == export("approved")["subject"] == DEPLOYMENT.id


@pytest.mark.parametrize("name, urn", [
    ("bob", "urn:deployapi:actor:bob"),
    ("Anne Straße", "urn:deployapi:actor:Anne%20Stra%C3%9Fe"),
    ("o'neil <ci/cd>", "urn:deployapi:actor:o%27neil%20%3Cci%2Fcd%3E"),
])
def test_actors_become_percent_encoded_urns(name, urn):
    assert cdevents.actor_urn(name) == urn
    assert URN.match(urn)


@pytest.mark.parametrize("event_type, first_success", [("succeeded", True), ("succeeded", False),
                                                       ("rolled_back", False)])
def test_service_events_name_the_service_its_environment_and_the_artifact_as_a_purl(event_type, first_success):
    subject = export(event_type, first_success=first_success)["data"]["subject"]
    assert subject == {
        "id": "billing-api",
        "content": {"environment": {"id": "production"},
                    "artifactId": "pkg:generic/billing-api@2026.11.26-3f9c2e1"},
    }


@pytest.mark.parametrize("version, purl", [
    ("1.4.2", "pkg:generic/billing-api@1.4.2"),
    ("sha256:0b31b1c0", "pkg:generic/billing-api@sha256%3A0b31b1c0"),
    ("2.0+build/7#ä?", "pkg:generic/billing-api@2.0%2Bbuild%2F7%23%C3%A4%3F"),
])
def test_versions_are_percent_encoded_in_the_purl(version, purl):
    assert cdevents.artifact_purl("billing-api", version) == purl


def test_the_first_success_flag_only_matters_for_succeeded_events():
    for event_type in ("created", "approved", "rolled_back", "started"):
        assert export(event_type, first_success=True) == export(event_type, first_success=False)


@pytest.mark.parametrize("event_type", ["started", "failed"])
def test_started_and_failed_are_plain_cloudevents_carrying_the_deployapi_event(event_type):
    event = export(event_type, note="boom" if event_type == "failed" else None)
    assert event["subject"] == DEPLOYMENT.id
    data = event["data"]
    assert "context" not in data
    assert (data["id"], data["deployment_id"], data["type"], data["sequence"]) == (42, DEPLOYMENT.id, event_type, 3)
    assert data["deployment"] == {
        "id": DEPLOYMENT.id, "service": "billing-api", "environment": "production",
        "version": "2026.11.26-3f9c2e1", "requester": "alice@example.com",
        "work_refs": ["JIRA-4812", "https://git.example.com/billing/pull/311"],
        "required_approvals": 1, "policy_digest": None,
    }


def test_cdevents_carry_the_deployapi_record_as_custom_data():
    cdevent = export("rolled_back", note="error rate doubled", actor="carol")["data"]
    assert cdevent["customDataContentType"] == "application/json"
    assert cdevent["customData"]["note"] == "error rate doubled"
    assert cdevent["customData"]["actor"] == "carol"
    assert cdevent["customData"]["deployment"]["work_refs"] == list(DEPLOYMENT.work_refs)


def test_the_hash_of_a_chained_event_is_exported():
    chained = dataclasses.replace(make_event("started"), hash="ab" * 32)
    exported = cdevents.cloudevent(chained, DEPLOYMENT, first_success=False)
    assert exported["data"]["hash"] == "ab" * 32


def test_ids_are_derived_from_the_event_id_and_stable_across_exports():
    first = export("approved", id=7)
    assert first == export("approved", id=7)
    assert first["id"] == first["data"]["context"]["id"] == "7"
    assert export("approved", id=8)["id"] != first["id"]


def test_a_mount_prefix_goes_into_source_and_the_approval_links():
    event = export("created", mount="/deploy")
    assert event["source"] == f"/deploy/deployments/{DEPLOYMENT.id}"
    content = event["data"]["subject"]["content"]
    assert content["resourceTargetUrl"] == f"/deploy/deployments/{DEPLOYMENT.id}"
    assert content["approvalDetailsUrl"] == f"/deploy/deployments/{DEPLOYMENT.id}/events"


def test_an_unstored_event_cannot_be_exported():
    with pytest.raises(ValueError, match="stored"):
        export("created", id=None)


def test_an_event_of_another_deployment_is_refused():
    with pytest.raises(ValueError, match="belongs to"):
        export("created", deployment_id="someone-else")
