"""The transition table and the action rules, over every (status, action) pair."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import datetime, timezone

import pytest

from deployapi import lifecycle
from deployapi.lifecycle import (
    ACTIONS,
    STATUSES,
    TERMINAL_STATUSES,
    ActionRequest,
    Deployment,
    InvalidTransition,
    SelfApproval,
    ValidationFailed,
    apply_action,
    validate_action,
)

NOW = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=timezone.utc)

# The contract's lifecycle table, written out independently of lifecycle.TRANSITIONS.
VALID = {
    ("pending_approval", "approve"): "approved",
    ("pending_approval", "reject"): "rejected",
    ("approved", "start"): "started",
    ("started", "succeed"): "succeeded",
    ("started", "fail"): "failed",
    ("started", "rollback"): "rolled_back",
    ("succeeded", "rollback"): "rolled_back",
    ("failed", "rollback"): "rolled_back",
    ("pending_approval", "cancel"): "cancelled",
    ("approved", "cancel"): "cancelled",
}
ALL_PAIRS = list(itertools.product(STATUSES, ACTIONS))


def deployment(status="pending_approval", requester="alice") -> Deployment:
    return Deployment(
        id="01abc", service="billing", environment="staging", version="1.0", requester=requester,
        work_refs=("JIRA-1",), risk=None, rollback_plan="redeploy", status=status,
        reviewed_by=None, reviewed_at=None, created_at="2026-11-26T09:00:00.000000Z",
        updated_at="2026-11-26T09:00:00.000000Z",
    )


@pytest.mark.parametrize("status, action", ALL_PAIRS, ids=[f"{s}-{a}" for s, a in ALL_PAIRS])
def test_every_status_action_pair_follows_the_contract(status, action):
    request = ActionRequest(action=action, actor="bob", note="because")
    if (status, action) in VALID:
        updated, event = apply_action(deployment(status), request, sequence=4, now=NOW)
        assert updated.status == VALID[(status, action)]
        assert updated.updated_at == "2026-11-26T12:00:00.123456Z"
        assert (event.from_status, event.to_status) == (status, updated.status)
        assert event.sequence == 4 and event.actor == "bob" and event.note == "because"
    else:
        with pytest.raises(InvalidTransition) as caught:
            apply_action(deployment(status), request, sequence=4, now=NOW)
        assert (caught.value.current_status, caught.value.action) == (status, action)


def test_rejected_rolled_back_and_cancelled_are_the_terminal_statuses():
    assert TERMINAL_STATUSES == {"rejected", "rolled_back", "cancelled"}


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_only_rollback_leaves_a_finished_deployment(status):
    allowed = [a for a in ACTIONS if (status, a) in VALID]
    assert allowed == ["rollback"]


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_review_actions_record_who_reviewed_and_when(action):
    updated, _ = apply_action(deployment(), ActionRequest(action, "bob", "n"), 2, NOW)
    assert updated.reviewed_by == "bob"
    assert updated.reviewed_at == updated.updated_at == "2026-11-26T12:00:00.123456Z"


@pytest.mark.parametrize("status, action", [("approved", "start"), ("started", "succeed"), ("started", "fail"),
                                            ("approved", "cancel")])
def test_other_actions_keep_the_review_metadata(status, action):
    reviewed = dataclasses.replace(deployment(status), reviewed_by="carol", reviewed_at="2026-11-26T10:00:00.000000Z")
    updated, _ = apply_action(reviewed, ActionRequest(action, "bob", "n"), 3, NOW)
    assert (updated.reviewed_by, updated.reviewed_at) == ("carol", "2026-11-26T10:00:00.000000Z")


@pytest.mark.parametrize(
    "requester, actor",
    [("alice", "alice"), ("alice", "Alice"), ("alice", "  ALICE "), (" Alice ", "alice"),
     ("straße", "STRASSE")],
    ids=["same", "different case", "padded and upper case", "padded requester", "casefolded"],
)
def test_the_requester_cannot_approve_their_own_deployment(requester, actor):
    with pytest.raises(SelfApproval):
        apply_action(deployment(requester=requester), ActionRequest("approve", actor, None), 2, NOW)


@pytest.mark.parametrize("status", ["pending_approval", "approved"])
def test_the_requester_may_cancel_their_own_deployment_and_the_review_is_untouched(status):
    request = ActionRequest("cancel", "alice", "dup")
    updated, event = apply_action(deployment(status, requester="alice"), request, 2, NOW)
    assert (updated.status, event.type, event.note) == ("cancelled", "cancelled", "dup")
    assert (updated.reviewed_by, updated.reviewed_at) == (None, None)


def test_the_requester_may_reject_their_own_deployment():
    updated, _ = apply_action(deployment(requester="alice"), ActionRequest("reject", "Alice", "oops"), 2, NOW)
    assert updated.status == "rejected"


def test_an_invalid_transition_is_reported_before_self_approval():
    with pytest.raises(InvalidTransition):
        apply_action(deployment("approved", requester="alice"), ActionRequest("approve", "alice", None), 3, NOW)


@pytest.mark.parametrize("action", ["reject", "fail", "rollback", "cancel"])
@pytest.mark.parametrize("note", [None, "", "   ", "\n\t"], ids=["missing", "empty", "spaces", "whitespace"])
def test_reject_fail_rollback_and_cancel_need_a_note(action, note):
    payload = {"actor": "bob"} if note is None else {"actor": "bob", "note": note}
    with pytest.raises(ValidationFailed) as caught:
        validate_action(action, payload)
    assert [p.field for p in caught.value.problems] == ["note"]


@pytest.mark.parametrize("action", ["approve", "start", "succeed"])
@pytest.mark.parametrize("payload", [{"actor": "bob"}, {"actor": "bob", "note": None}, {"actor": "bob", "note": "ok"}])
def test_approve_start_and_succeed_take_an_optional_note(action, payload):
    request = validate_action(action, payload)
    assert request.note == payload.get("note")


@pytest.mark.parametrize(
    "payload, field",
    [({}, "actor"), ({"actor": "  "}, "actor"), ({"actor": 5}, "actor"), ({"actor": "a" * 129}, "actor"),
     ({"actor": "bo\x00b"}, "actor"), ({"actor": "bob", "note": 1}, "note"),
     ({"actor": "bob", "note": "x" * (lifecycle.MAX_TEXT + 1)}, "note"), ({"actor": "bob", "by": "x"}, "by")],
    ids=["missing actor", "blank actor", "numeric actor", "long actor", "actor with NUL", "numeric note",
         "long note", "unknown field"],
)
def test_action_bodies_are_validated(payload, field):
    with pytest.raises(ValidationFailed) as caught:
        validate_action("approve", payload)
    assert field in [p.field for p in caught.value.problems]


def test_the_actor_is_trimmed():
    assert validate_action("start", {"actor": "  bob "}).actor == "bob"


def test_timestamps_must_be_timezone_aware():
    with pytest.raises(ValueError):
        lifecycle.format_timestamp(datetime(2026, 1, 1))
