"""Tiny builders of valid inputs; tests override only the fields they are about."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from deployapi.lifecycle import NewDeployment

START = datetime(2026, 11, 26, 10, 0, 0, tzinfo=timezone.utc)


def create_body(**overrides) -> dict:
    """A valid POST /deployments body; keyword arguments replace or (with None) remove fields."""
    body = {
        "service": "billing",
        "environment": "staging",
        "version": "1.4.2",
        "requester": "alice@example.com",
        "work_refs": ["JIRA-123", "https://github.com/acme/billing/pull/42"],
        "rollback_plan": "Redeploy 1.4.1 from the release pipeline.",
        "risk": "low: config-only change",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def new_deployment(**overrides) -> NewDeployment:
    """A validated creation request for the repository layer."""
    fields = {
        "service": "billing",
        "environment": "staging",
        "version": "1.4.2",
        "requester": "alice@example.com",
        "work_refs": ("JIRA-123",),
        "rollback_plan": "Redeploy 1.4.1.",
        "risk": None,
    }
    fields.update(overrides)
    return NewDeployment(**fields)


class StepClock:
    """A clock that moves one millisecond every time it is read."""

    def __init__(self, start: datetime = START, step: timedelta = timedelta(milliseconds=1)):
        self.now = start
        self.step = step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


def assert_invalid_fields(response, fields) -> None:
    """A 422 validation_failed whose errors name exactly ``fields`` (in any order)."""
    assert response.status_code == 422, response.data
    body = response.get_json()
    assert body["code"] == "validation_failed"
    assert sorted(e["field"] for e in body["errors"]) == sorted(fields)
