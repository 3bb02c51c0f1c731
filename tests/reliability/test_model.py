"""Model-based test of the lifecycle over HTTP: random histories against a tiny model of the contract.

Hypothesis drives the in-process app through random sequences of creations and
actions (valid and refused, on real and unknown ids, by the requester in other
spellings and by other people).  A model written from the contract's lifecycle
table, not imported from ``deployapi.lifecycle``, predicts every status code and
every new status.  After every step the invariants compare the stored state, its
event history and the filtered listings with the model.
"""

from __future__ import annotations

import shutil
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from werkzeug.test import Client

import deployapi

pytestmark = pytest.mark.reliability

# --- the contract, written out for this test ---------------------------------------

STATUSES = ("pending_approval", "approved", "rejected", "started", "succeeded", "failed", "rolled_back",
            "cancelled")

# action -> (statuses it is allowed from, status it leads to, whether a note is required)
LIFECYCLE = {
    "approve": ({"pending_approval"}, "approved", False),
    "reject": ({"pending_approval"}, "rejected", True),
    "start": ({"approved"}, "started", False),
    "succeed": ({"started"}, "succeeded", False),
    "fail": ({"started"}, "failed", True),
    "rollback": ({"started", "succeeded", "failed"}, "rolled_back", True),
    "cancel": ({"pending_approval", "approved"}, "cancelled", True),
}
ACTIONS = tuple(LIFECYCLE)
REVIEW_ACTIONS = {"approve", "reject"}
REVIEW_EVENTS = {"approved", "rejected"}
ERROR_CODES = {403: "self_approval", 404: "not_found", 409: "invalid_transition", 422: "validation_failed"}

PEOPLE = ("alice", "bob", "carol")  # requesters; also actors, so self-approval happens
OTHERS = ("ci-bot", "Dave")
SERVICES = ("billing", "search", "web_api")  # "_" is a LIKE wildcard: it must stay plain data
ENVIRONMENTS = ("production", "staging")
OMITTED = object()  # a note left out of the body altogether
MAX_DEPLOYMENTS = 15  # per run: enough for several pages, few enough to keep each step cheap
PAGE = 3  # small, so the listing invariants walk several pages


def valid_name(value: str) -> bool:
    """The requester/actor rule: 1-128 characters after trimming, no control characters."""
    trimmed = value.strip()
    return 1 <= len(trimmed) <= 128 and not any(unicodedata.category(ch) == "Cc" for ch in trimmed)


def same_person(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def note_missing(note) -> bool:
    return note is None or note is OMITTED or not note.strip()


# --- strategies -------------------------------------------------------------------


def spellings(name: str) -> st.SearchStrategy[str]:
    """The same person written differently: case and surrounding whitespace."""
    return st.sampled_from([name, name.upper(), name.title(), f"  {name}", f"{name.upper()}\t", f" {name.title()} "])


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws (sampled_from favours its first elements, so False is listed first)."""
    return st.sampled_from([False] * (n - 1) + [True])


@st.composite
def actors(draw) -> str:
    if draw(one_in(10)):  # now and then a body the API must refuse
        return draw(st.sampled_from(["", "   ", "x" * 129, "bo\x00b", "\u0085"]))
    # Others first: Hypothesis favours early elements, and self-approval should be the exception.
    return draw(st.sampled_from(OTHERS + PEOPLE[::-1]).flatmap(spellings))


@st.composite
def notes(draw):
    if draw(one_in(4)):  # missing or blank: refused where a note is required
        return draw(st.sampled_from([None, OMITTED, "", "   "]))
    return draw(st.sampled_from(["checked", "line one\nline two", " padded "]))


UNKNOWN_IDS = ("upper", "suffix", "short", "zeros", "word")


@dataclass
class Known:
    """What the model knows about one deployment."""

    requester: str  # as stored: trimmed
    service: str
    status: str
    events: int
    reviewed_by: str | None
    updated_at: str


# --- the machine --------------------------------------------------------------------


class LifecycleMachine(RuleBasedStateMachine):
    deployments = Bundle("deployments")

    def __init__(self):
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="deployapi-model-")
        self.app = deployapi.create_app(Path(self.directory) / "model.db")
        self.client = Client(self.app)
        self.model: dict[str, Known] = {}
        self.touched: set[str] = set()  # deployments the last step acted on
        self.steps = 0

    def teardown(self):
        self.app.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- rules --------------------------------------------------------------

    @initialize(target=deployments)
    def a_first_deployment(self):
        return self.create_deployment("billing", "staging", "alice", None)

    @precondition(lambda self: len(self.model) < MAX_DEPLOYMENTS)
    @rule(target=deployments, service=st.sampled_from(SERVICES), environment=st.sampled_from(ENVIRONMENTS),
          requester=st.sampled_from(PEOPLE).flatmap(spellings), risk=st.sampled_from([None, "", "low: flag flip"]))
    def create(self, service, environment, requester, risk):
        return self.create_deployment(service, environment, requester, risk)

    @rule(deployment_id=deployments, data=st.data())
    def act(self, deployment_id, data):
        known = self.model[deployment_id]
        plausible = [a for a, (allowed_from, _, _) in LIFECYCLE.items() if known.status in allowed_from]
        # Mostly an action the status allows, so histories get past pending_approval.
        if plausible and not data.draw(one_in(4), label="any action"):
            action = data.draw(st.sampled_from(plausible), label="action")
        else:
            action = data.draw(st.sampled_from(ACTIONS), label="action")
        if data.draw(one_in(12), label="unknown id"):
            deployment_id = unknown_id(deployment_id, data.draw(st.sampled_from(UNKNOWN_IDS), label="mangle"))
        self.perform(deployment_id, action, data.draw(actors(), label="actor"), data.draw(notes(), label="note"))

    # --- what a rule does, and what the model predicts -----------------------

    def create_deployment(self, service, environment, requester, risk):
        self.steps += 1
        self.touched = set()
        body = {"service": service, "environment": environment, "version": f"1.0.{self.steps}",
                "requester": requester, "work_refs": [f"JIRA-{self.steps}"], "rollback_plan": "Redeploy 1.0.0."}
        if risk is not None:
            body["risk"] = risk
        expected = 422 if environment == "production" and (risk is None or not risk.strip()) else 201

        response = self.client.post("/deployments", json=body)
        got = response.get_json()
        assert response.status_code == expected, (body, got)
        if expected != 201:
            assert_problem(response, 422)
            assert [e["field"] for e in got["errors"]] == ["risk"]
            return multiple()
        assert (got["status"], got["requester"], got["reviewed_by"], got["reviewed_at"]) == (
            "pending_approval", requester.strip(), None, None)
        assert response.headers["Location"] == f"/deployments/{got['id']}"
        assert got["id"] not in self.model
        self.model[got["id"]] = Known(requester=requester.strip(), service=service, status="pending_approval",
                                      events=1, reviewed_by=None, updated_at=got["updated_at"])
        self.touched = {got["id"]}
        return got["id"]

    def predict(self, deployment_id, action, actor, note) -> int:
        """The status code the contract demands, in its check order."""
        allowed_from, _, note_required = LIFECYCLE[action]
        if not valid_name(actor) or (note_required and note_missing(note)):
            return 422
        if deployment_id not in self.model:
            return 404
        known = self.model[deployment_id]
        if known.status not in allowed_from:
            return 409
        if action == "approve" and same_person(actor, known.requester):
            return 403
        return 200

    def perform(self, deployment_id, action, actor, note):
        self.steps += 1
        self.touched = {deployment_id} if deployment_id in self.model else set()
        body = {"actor": actor} if note is OMITTED else {"actor": actor, "note": note}
        expected = self.predict(deployment_id, action, actor, note)

        response = self.client.post(f"/deployments/{deployment_id}/{action}", json=body)
        got = response.get_json()
        known = self.model.get(deployment_id)
        context = (deployment_id, action, body, known)
        assert response.status_code == expected, (context, got)

        if expected != 200:
            assert_problem(response, expected)
            if expected == 409:
                assert (got["current_status"], got["action"]) == (known.status, action), (context, got)
            if expected == 422:
                fields = {e["field"] for e in got["errors"]}
                assert fields and fields <= {"actor", "note"}, (context, got)
            return

        target = LIFECYCLE[action][1]
        assert (got["id"], got["status"], got["requester"]) == (deployment_id, target, known.requester), (context, got)
        assert got["updated_at"] != known.updated_at, "updated_at must change on every action"
        if action in REVIEW_ACTIONS:
            assert got["reviewed_by"] == actor.strip() and got["reviewed_at"] == got["updated_at"], (context, got)
            known.reviewed_by = actor.strip()
        else:
            assert got["reviewed_by"] == known.reviewed_by, (context, got)
        known.status, known.events, known.updated_at = target, known.events + 1, got["updated_at"]

    # --- invariants ----------------------------------------------------------

    def sample(self) -> list[str]:
        """All deployments while there are few; otherwise the last one touched and a rotating few."""
        ids = list(self.model)
        if len(ids) <= 6:
            return ids
        start = (self.steps * 3) % len(ids)
        return list(dict.fromkeys([*self.touched, *(ids[(start + k) % len(ids)] for k in range(3))]))

    @invariant()
    def state_and_history_agree_with_the_model(self):
        for deployment_id in self.sample():
            known = self.model[deployment_id]
            response = self.client.get(f"/deployments/{deployment_id}")
            assert response.status_code == 200
            deployment = response.get_json()
            events = self.client.get(f"/deployments/{deployment_id}/events").get_json()["items"]
            context = (deployment, events)

            assert deployment["status"] == known.status, context
            assert deployment["requester"] == known.requester, context
            assert len(events) == known.events, context
            assert [e["sequence"] for e in events] == list(range(1, known.events + 1)), context
            assert all(e["deployment_id"] == deployment_id for e in events), context
            assert events[-1]["to_status"] == deployment["status"], context
            assert deployment["updated_at"] == events[-1]["created_at"], context
            first = events[0]
            assert (first["type"], first["actor"], first["from_status"], first["to_status"]) == (
                "created", known.requester, None, "pending_approval"), context
            for before, after in zip(events, events[1:], strict=False):
                assert after["from_status"] == before["to_status"], context
                assert after["type"] == after["to_status"], context
                assert after["id"] > before["id"], context
            reviews = [e for e in events if e["type"] in REVIEW_EVENTS]
            assert len(reviews) <= 1, context
            if reviews:
                assert (deployment["reviewed_by"], deployment["reviewed_at"]) == (
                    reviews[0]["actor"], reviews[0]["created_at"]), context
                assert deployment["reviewed_by"] == known.reviewed_by, context
            else:
                assert (deployment["reviewed_by"], deployment["reviewed_at"]) == (None, None), context

    @invariant()
    def filtered_listings_return_exactly_the_models_matches(self):
        statuses = {STATUSES[self.steps % len(STATUSES)], *(self.model[i].status for i in self.touched)}
        for status in sorted(statuses):
            expected = {i for i, known in self.model.items() if known.status == status}
            self.assert_listing({"status": status}, expected)
        service = SERVICES[self.steps % len(SERVICES)]
        self.assert_listing({"service": service}, {i for i, k in self.model.items() if k.service == service})

    def assert_listing(self, filters: dict[str, str], expected: set[str]):
        items = walk(self.client, filters)
        ids = [d["id"] for d in items]
        assert len(ids) == len(set(ids)), f"{filters}: a deployment was listed twice"
        assert set(ids) == expected, (filters, sorted(set(ids) ^ expected))
        created = [d["created_at"] for d in items]
        assert created == sorted(created, reverse=True), f"{filters}: not newest first"
        for item in items:
            assert item["status"] == self.model[item["id"]].status, (filters, item)


def unknown_id(deployment_id: str, how: str) -> str:
    """An id near a real one that names no deployment (ids are lowercase, so upper case is another id)."""
    return {"upper": deployment_id.upper(), "suffix": deployment_id + "0", "short": deployment_id[:-1],
            "zeros": "0" * 26, "word": "nope"}[how]


def walk(client: Client, filters: dict[str, str]) -> list[dict]:
    """Every item of every page of a filtered listing, PAGE at a time."""
    params, items = {**filters, "limit": PAGE}, []
    for _ in range(1000):
        response = client.get("/deployments", query_string=params)
        assert response.status_code == 200, response.get_json()
        page = response.get_json()
        assert len(page["items"]) <= PAGE
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        params["cursor"] = page["next_cursor"]
    raise AssertionError(f"{filters}: the walk did not end")


def assert_problem(response, status: int) -> None:
    assert response.mimetype == "application/problem+json", response.data
    body = response.get_json(force=True)
    assert (body["status"], body["code"]) == (status, ERROR_CODES[status]), body
    assert body["type"] and body["title"] and body["detail"]


TestLifecycle = LifecycleMachine.TestCase
TestLifecycle.settings = settings(
    max_examples=35,
    stateful_step_count=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
