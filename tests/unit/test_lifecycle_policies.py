"""Creations and actions judged by an environment's review policy: approvals, approvers, freezes, exclusive starts."""

from __future__ import annotations

import dataclasses
from datetime import datetime, time, timedelta, timezone

import pytest
from builders import new_deployment as new_request

from deployapi.lifecycle import (
    ActionRequest,
    Approval,
    DeployFreeze,
    Deployment,
    DuplicateApproval,
    EnvironmentBusy,
    InvalidTransition,
    NotAnApprover,
    SelfApproval,
    ValidationFailed,
    apply_action,
    new_deployment,
    validate_action,
)
from deployapi.policy import EnvironmentPolicy, FixedWindow, WeeklyWindow

NOW = datetime(2026, 12, 2, 12, 0, 0, 123456, tzinfo=timezone.utc)  # a Wednesday
DIGEST = "sha256:" + "ab" * 32

TWO_SRE = EnvironmentPolicy(production=True, required_approvals=2, approvers=("dana@example.com", "group:sre"))
FROZEN_NOW = FixedWindow(NOW - timedelta(hours=1), NOW + timedelta(hours=1), "incident")


def pending(required_approvals: int = 1, approvals: tuple[Approval, ...] = (), requester: str = "alice",
            status: str = "pending_approval") -> Deployment:
    return Deployment(
        id="01abc", service="billing", environment="production", version="1.0", requester=requester,
        work_refs=("JIRA-1",), risk="low", rollback_plan="redeploy", status=status,
        reviewed_by=None, reviewed_at=None, created_at="2026-12-02T09:00:00.000000Z",
        updated_at="2026-12-02T09:00:00.000000Z", required_approvals=required_approvals, approvals=approvals,
        policy_digest=DIGEST,
    )


def approval(actor: str) -> Approval:
    return Approval(actor, None, "2026-12-02T10:00:00.000000Z")


def approve(deployment: Deployment, actor: str, rules: EnvironmentPolicy, groups=()):
    request = ActionRequest("approve", actor, None, groups=frozenset(groups))
    return apply_action(deployment, request, len(deployment.approvals) + 2, NOW, rules=rules, policy_digest=DIGEST)


def start(rules: EnvironmentPolicy, *, override: bool = False, blocking: str | None = None, note=None):
    request = ActionRequest("start", "carol", note, override_freeze=override)
    return apply_action(pending(status="approved"), request, 3, NOW, rules=rules, policy_digest=DIGEST,
                        blocking_deployment_id=blocking)


# --- creation ---------------------------------------------------------------------


@pytest.mark.parametrize("required, status", [
    pytest.param(0, "approved", id="no approval needed: created approved"),
    pytest.param(1, "pending_approval", id="one approval: pending"),
    pytest.param(10, "pending_approval", id="ten approvals: pending"),
])
def test_the_environment_fixes_at_creation_how_many_approvals_a_deployment_needs(required, status):
    deployment, event = new_deployment("01abc", new_request(), NOW,
                                       rules=EnvironmentPolicy(required_approvals=required), policy_digest=DIGEST)
    assert (deployment.status, deployment.required_approvals, deployment.policy_digest) == (status, required, DIGEST)
    assert (event.type, event.from_status, event.to_status, event.policy_digest) == ("created", None, status, DIGEST)
    # Nobody reviewed it, even when it needs no review.
    assert deployment.reviewed_by is None and deployment.reviewed_at is None and deployment.approvals == ()


# --- approvals ---------------------------------------------------------------------


@pytest.mark.parametrize("required, given, status", [
    pytest.param(1, [], "approved", id="1 of 1 approves"),
    pytest.param(2, [], "pending_approval", id="1 of 2 keeps it pending"),
    pytest.param(2, ["bob"], "approved", id="2 of 2 approves"),
    pytest.param(3, ["bob"], "pending_approval", id="2 of 3 keeps it pending"),
    pytest.param(3, ["bob", "erin"], "approved", id="3 of 3 approves"),
])
def test_approvals_are_counted_until_the_required_number_is_reached(required, given, status):
    deployment = pending(required, tuple(approval(actor) for actor in given))
    updated, event = approve(deployment, "carol", EnvironmentPolicy(required_approvals=required))
    assert updated.status == status
    assert [a.actor for a in updated.approvals] == [*given, "carol"]
    assert (event.type, event.from_status, event.to_status) == ("approved", "pending_approval", status)
    assert event.details == {"approvals": len(given) + 1, "required_approvals": required}
    assert event.policy_digest == DIGEST
    if status == "approved":  # the approval that completes the review is the review
        assert (updated.reviewed_by, updated.reviewed_at) == ("carol", event.created_at)
    else:
        assert (updated.reviewed_by, updated.reviewed_at) == (None, None)
        assert updated.updated_at == event.created_at


@pytest.mark.parametrize("actor, groups, error", [
    pytest.param("alice", ["sre"], SelfApproval, id="the requester, even in the group"),
    pytest.param("ALICE.", [], SelfApproval, id="the requester spelled otherwise"),
    pytest.param("mallory", [], NotAnApprover, id="neither named nor in a group"),
    pytest.param("mallory", ["dev", "sres"], NotAnApprover, id="in other groups only"),
    pytest.param("group:sre", [], NotAnApprover, id="a person named like the group entry"),
    pytest.param("bob", ["sre"], DuplicateApproval, id="a member who approved already"),
    pytest.param("BOB", ["SRE"], DuplicateApproval, id="the same member spelled otherwise"),
    pytest.param("dana@example.com", [], None, id="a named approver"),
    pytest.param("Dana@Example.com", [], None, id="a named approver in another case"),
    pytest.param("erin", ["dev", "SRE"], None, id="a member of the approver group"),
])
def test_who_may_approve_is_what_the_policy_admits(actor, groups, error):
    deployment = pending(2, (approval("bob"),))
    if error is None:
        updated, _ = approve(deployment, actor, TWO_SRE, groups)
        assert updated.status == "approved"
    else:
        with pytest.raises(error):
            approve(deployment, actor, TWO_SRE, groups)


def test_without_approvers_anyone_but_the_requester_may_approve():
    updated, _ = approve(pending(), "anyone", EnvironmentPolicy())
    assert updated.status == "approved"
    with pytest.raises(SelfApproval):
        approve(pending(), "alice", EnvironmentPolicy())


def test_the_approvals_needed_stay_those_fixed_at_creation_when_the_policy_changes():
    # Created under a 2-approval policy; the server now runs with 1.
    updated, event = approve(pending(2), "bob", EnvironmentPolicy(required_approvals=1))
    assert updated.status == "pending_approval"
    assert event.details == {"approvals": 1, "required_approvals": 2}


@pytest.mark.parametrize("actor", ["mallory", "bob", "dana@example.com"])
def test_anyone_may_reject_and_one_rejection_ends_the_review(actor):
    deployment = pending(2, (approval("bob"),))
    updated, event = apply_action(deployment, ActionRequest("reject", actor, "not now"), 3, NOW, rules=TWO_SRE,
                                  policy_digest=DIGEST)
    assert updated.status == "rejected"
    assert (updated.reviewed_by, event.to_status) == (actor, "rejected")
    assert [a.actor for a in updated.approvals] == ["bob"]  # the earlier approval stays on record


def test_a_deployment_created_approved_cannot_be_approved_again():
    with pytest.raises(InvalidTransition):
        approve(pending(0, status="approved"), "bob", EnvironmentPolicy(required_approvals=0))


# --- freezes and exclusive starts ---------------------------------------------------


SATURDAYS_BERLIN = WeeklyWindow(5, time(0, 0), 6, time(0, 0), "Europe/Berlin", "saturday")
WEDNESDAY_NOON_BERLIN = WeeklyWindow(2, time(12, 0), 2, time(14, 0), "Europe/Berlin", "lunch")  # 11:00-13:00Z


@pytest.mark.parametrize("windows, frozen", [
    pytest.param((), False, id="no windows"),
    pytest.param((SATURDAYS_BERLIN,), False, id="a weekly window on another day"),
    pytest.param((WEDNESDAY_NOON_BERLIN,), True, id="a weekly window holding now"),
    pytest.param((FROZEN_NOW,), True, id="a fixed window holding now"),
    pytest.param((FixedWindow(NOW - timedelta(hours=1), NOW, "over"),), False, id="a fixed window that just ended"),
    pytest.param((FixedWindow(NOW, NOW + timedelta(hours=1), "now"),), True, id="a fixed window that starts now"),
])
def test_a_start_inside_a_freeze_window_is_refused_with_its_end(windows, frozen):
    rules = EnvironmentPolicy(freeze=windows)
    if not frozen:
        updated, event = start(rules)
        assert updated.status == "started" and event.details is None
        return
    with pytest.raises(DeployFreeze) as refused:
        start(rules)
    assert refused.value.freeze.ends_at is not None
    assert refused.value.freeze.document()["reason"] == windows[0].reason


def test_the_override_starts_inside_a_freeze_and_records_the_window_it_broke():
    updated, event = start(EnvironmentPolicy(freeze=(FROZEN_NOW,)), override=True, note="hotfix for INC-7")
    assert updated.status == "started"
    assert event.note == "hotfix for INC-7"
    assert event.details == {"freeze_overridden": {
        "reason": "incident", "ends_at": "2026-12-02T13:00:00.123456Z",
        "window": {"start": "2026-12-02T11:00:00.123456Z", "end": "2026-12-02T13:00:00.123456Z",
                   "reason": "incident"}}}


def test_the_override_outside_a_freeze_records_nothing():
    _, event = start(EnvironmentPolicy(), override=True, note="just in case")
    assert event.details is None


@pytest.mark.parametrize("exclusive, blocking, busy", [
    pytest.param(True, "01other", True, id="exclusive, another started: busy"),
    pytest.param(True, None, False, id="exclusive, none started"),
    pytest.param(False, "01other", False, id="not exclusive: starts side by side"),
])
def test_an_exclusive_environment_allows_one_started_deployment_per_service(exclusive, blocking, busy):
    rules = EnvironmentPolicy(exclusive=exclusive)
    if busy:
        with pytest.raises(EnvironmentBusy) as refused:
            start(rules, blocking=blocking)
        assert refused.value.blocking_deployment_id == blocking
    else:
        assert start(rules, blocking=blocking)[0].status == "started"


def test_the_freeze_override_does_not_bypass_an_exclusive_environment():
    rules = EnvironmentPolicy(exclusive=True, freeze=(FROZEN_NOW,))
    with pytest.raises(EnvironmentBusy):
        start(rules, override=True, note="hotfix", blocking="01other")


# --- the check order: transition, policy, identity -------------------------------------


def test_the_transition_is_checked_before_the_policy():
    rules = EnvironmentPolicy(exclusive=True, freeze=(FROZEN_NOW,), approvers=("dana",))
    with pytest.raises(InvalidTransition):
        apply_action(pending(), ActionRequest("start", "carol", None), 2, NOW, rules=rules,
                     blocking_deployment_id="01other")
    with pytest.raises(InvalidTransition):
        approve(pending(status="approved"), "mallory", rules)


def test_a_freeze_is_reported_before_a_busy_environment():
    with pytest.raises(DeployFreeze):
        start(EnvironmentPolicy(exclusive=True, freeze=(FROZEN_NOW,)), blocking="01other")


def test_self_approval_is_reported_before_the_approvers_and_duplicates():
    deployment = pending(2, (approval("alice"),))  # an approval by the requester, as a forged history might hold
    with pytest.raises(SelfApproval):
        approve(deployment, "alice", EnvironmentPolicy(required_approvals=2, approvers=("dana",)))


def test_a_refused_action_leaves_the_deployment_as_it_was():
    deployment = pending(2, (approval("bob"),))
    before = dataclasses.replace(deployment)
    for actor in ("alice", "bob", "mallory"):
        with pytest.raises((SelfApproval, DuplicateApproval, NotAnApprover)):
            approve(deployment, actor, TWO_SRE)
    assert deployment == before


# --- the start body -----------------------------------------------------------------


@pytest.mark.parametrize("payload, problems", [
    pytest.param({"actor": "carol", "override_freeze": True}, ["note"], id="override without a note"),
    pytest.param({"actor": "carol", "override_freeze": True, "note": "  "}, ["note"], id="override, blank note"),
    pytest.param({"actor": "carol", "override_freeze": "yes", "note": "x"}, ["override_freeze"], id="not a boolean"),
    pytest.param({"actor": "carol", "override_freeze": 1, "note": "x"}, ["override_freeze"], id="a number"),
])
def test_a_start_body_with_a_bad_override_is_refused_naming_the_fields(payload, problems):
    with pytest.raises(ValidationFailed) as refused:
        validate_action("start", payload)
    assert [p.field for p in refused.value.problems] == problems


@pytest.mark.parametrize("payload, override", [
    pytest.param({"actor": "carol"}, False, id="absent"),
    pytest.param({"actor": "carol", "override_freeze": None}, False, id="null"),
    pytest.param({"actor": "carol", "override_freeze": False}, False, id="false"),
    pytest.param({"actor": "carol", "override_freeze": True, "note": "INC-7"}, True, id="true with a note"),
])
def test_a_start_body_may_carry_the_override(payload, override):
    assert validate_action("start", payload).override_freeze is override


@pytest.mark.parametrize("action", ["approve", "reject", "succeed", "fail", "rollback", "cancel"])
def test_only_a_start_takes_the_override(action):
    with pytest.raises(ValidationFailed) as refused:
        validate_action(action, {"actor": "carol", "note": "x", "override_freeze": True})
    assert [p.field for p in refused.value.problems] == ["override_freeze"]
