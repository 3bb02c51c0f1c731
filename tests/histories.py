"""Hand-built deployment histories at exact times, for tests of what the record adds up to."""

from __future__ import annotations

from datetime import timedelta

from builders import START, StepClock, create_body
from werkzeug.test import Client

from deployapi import create_app
from deployapi.lifecycle import format_timestamp


def at(minute: float) -> str:
    """The stored timestamp ``minute`` minutes after builders.START."""
    return format_timestamp(START + timedelta(minutes=minute))


class Timeline:
    """Drives the API over HTTP with a stopped clock that each step sets to an exact minute."""

    def __init__(self, db_path):
        self.clock = StepClock(step=timedelta(0))
        self.app = create_app(db_path, clock=self.clock)
        self.client = Client(self.app)

    def close(self) -> None:
        self.app.close()

    def set_now(self, minute: float) -> None:
        self.clock.now = START + timedelta(minutes=minute)

    def request(self, minute: float, version: str = "1.0.0", *, service: str = "billing",
                environment: str = "production", committed: float | None = None) -> str:
        """Create a deployment at ``minute`` (of a commit made at ``committed``, if given); return its id."""
        self.set_now(minute)
        response = self.client.post("/deployments", json=create_body(
            service=service, environment=environment, version=version, requester="alice",
            committed_at=at(committed) if committed is not None else None))
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def act(self, deployment_id: str, action: str, minute: float) -> None:
        """Apply ``action`` at ``minute`` (by bob, with a note where one is required)."""
        self.set_now(minute)
        response = self.client.post(f"/deployments/{deployment_id}/{action}",
                                    json={"actor": "bob", "note": f"{action} at minute {minute}"})
        assert response.status_code == 200, response.get_json()

    def deploy(self, minute: float, version: str = "1.0.0", *, steps: dict[str, float],
               service: str = "billing", environment: str = "production", committed: float | None = None) -> str:
        """Request at ``minute``, then apply each action at its minute, in order (e.g. approve, start, succeed)."""
        deployment_id = self.request(minute, version, service=service, environment=environment,
                                     committed=committed)
        for action, action_minute in steps.items():
            self.act(deployment_id, action, action_minute)
        return deployment_id

    def get(self, path: str, **params) -> dict:
        response = self.client.get(path, query_string=params)
        assert response.status_code == 200, response.get_json()
        return response.get_json()


def shipped(approve: float, start: float, succeed: float) -> dict[str, float]:
    """The steps of a deployment that went out: approved, started and succeeded at these minutes."""
    return {"approve": approve, "start": start, "succeed": succeed}
