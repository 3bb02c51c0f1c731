"""Pipeline metadata over HTTP: creating with it, a rollback's to_version, the listing's new filters and their
cursors, and the lead time for changes in /metrics/dora (api-contract.md, "Pipeline metadata")."""

from __future__ import annotations

import pytest
from builders import START, StepClock, assert_invalid_fields, create_body
from histories import Timeline, at, shipped
from werkzeug.test import Client

from deployapi import create_app

SHA = "3f9c2e1d4b5a69788796a5b4c3d2e1f0a9b8c7d6"
PIPELINE = {
    "commit_sha": SHA,
    "repository": "https://github.com/acme/billing",
    "ref": "refs/heads/main",
    "committed_at": "2026-11-26T10:45:00.5+02:00",
    "links": [{"rel": "pipeline", "url": "https://github.com/acme/billing/actions/runs/981"},
              {"rel": "pull-request", "url": "https://github.com/acme/billing/pull/42"}],
    "labels": {"team": "payments", "tier": "1", "github.com/workflow": "deploy"},
}


@pytest.fixture
def stepped(db_path):
    """A client of an app whose clock moves 1 ms per read, so created_at and updated_at order is known."""
    app = create_app(db_path, clock=StepClock())
    yield Client(app)
    app.close()


def create(client: Client, **overrides) -> dict:
    response = client.post("/deployments", json=create_body(**overrides))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def act(client: Client, deployment: dict, action: str, **body) -> dict:
    response = client.post(f"/deployments/{deployment['id']}/{action}", json={"actor": "zed", **body})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def events_of(client: Client, deployment: dict) -> list[dict]:
    return client.get(f"/deployments/{deployment['id']}/events").get_json()["items"]


def state(client: Client) -> tuple:
    """What a client can see of the whole record: every deployment and the head of the chain."""
    return client.get("/deployments", query_string={"limit": 200}).get_json(), client.get("/events/head").get_json()


# --- creating with pipeline metadata ------------------------------------------------------


def test_a_deployment_created_with_every_pipeline_field_returns_them_normalised(stepped):
    deployment = create(stepped, **PIPELINE)
    assert {field: deployment[field] for field in PIPELINE} == {
        **PIPELINE, "committed_at": "2026-11-26T08:45:00.500000Z"}
    assert list(deployment["labels"].items()) == list(PIPELINE["labels"].items())
    assert deployment["rolled_back_to"] is None


def test_get_and_the_listing_show_the_pipeline_metadata_as_created(stepped):
    deployment = create(stepped, **PIPELINE)
    assert stepped.get(f"/deployments/{deployment['id']}").get_json() == deployment
    assert stepped.get("/deployments").get_json()["items"] == [deployment]


@pytest.mark.parametrize("sent", ["absent", "null"])
def test_absent_pipeline_fields_come_back_as_null_an_empty_array_and_an_empty_object(stepped, sent):
    body = create_body()
    if sent == "null":
        body.update(dict.fromkeys(PIPELINE))
    response = stepped.post("/deployments", json=body)
    assert response.status_code == 201, response.get_json()
    deployment = response.get_json()
    expected = {"commit_sha": None, "repository": None, "ref": None, "committed_at": None, "links": [],
                "labels": {}, "rolled_back_to": None}
    assert {field: deployment[field] for field in expected} == expected
    assert stepped.get(f"/deployments/{deployment['id']}").get_json() == deployment


def test_a_bad_body_is_refused_naming_every_field_and_changes_nothing(stepped):
    create(stepped, **PIPELINE)
    before = state(stepped)
    response = stepped.post("/deployments", json=create_body(
        commit_sha="3F9C2E1", repository="acme billing", ref="main\n", committed_at="2026-11-26T10:00:00",
        links=[{"rel": "ci", "url": "ftp://ci.example/1"}, {"rel": "ci", "url": "https://ci.example/1", "foo": 1}],
        labels={"Team": "payments", "tier": 1}))
    assert_invalid_fields(response, ["commit_sha", "repository", "ref", "committed_at", "links[0].url",
                                     "links[1].foo", "labels.Team", "labels.tier"])
    assert state(stepped) == before


@pytest.mark.parametrize("overrides, field", [
    pytest.param({"commit_sha": "3f9c2e"}, "commit_sha", id="commit_sha too short"),
    pytest.param({"links": [{"rel": "ci", "url": "https://ci.example/1"}] * 2}, "links[1]", id="a duplicate link"),
    pytest.param({"links": [{"rel": f"r{n}", "url": "https://ci.example/1"} for n in range(21)]}, "links",
                 id="21 links"),
    pytest.param({"labels": {f"k{n}": "v" for n in range(33)}}, "labels", id="33 labels"),
    pytest.param({"labels": {"note": "x" * 257}}, "labels.note", id="a label value too long"),
])
def test_each_refused_pipeline_field_is_named_and_nothing_is_recorded(stepped, overrides, field):
    before = state(stepped)
    assert_invalid_fields(stepped.post("/deployments", json=create_body(**overrides)), [field])
    assert state(stepped) == before


@pytest.fixture
def stopped(db_path):
    """A client of an app whose clock stands still at builders.START."""
    app = create_app(db_path, clock=lambda: START)
    yield Client(app)
    app.close()


def test_a_commit_may_be_as_late_as_the_creation_but_not_later(stopped):
    assert create(stopped, committed_at="2026-11-26T10:00:00Z")["committed_at"] == "2026-11-26T10:00:00.000000Z"
    later = stopped.post("/deployments", json=create_body(committed_at="2026-11-26T11:00:00.000001+01:00"))
    assert_invalid_fields(later, ["committed_at"])


# --- a rollback's to_version -----------------------------------------------------------------


def started(client: Client, **overrides) -> dict:
    deployment = create(client, **overrides)
    act(client, deployment, "approve")
    return act(client, deployment, "start")


def test_a_rollback_to_a_version_shows_it_on_the_deployment_and_in_the_event(stepped):
    deployment = started(stepped, version="1.4.2")
    rolled_back = act(stepped, deployment, "rollback", note="errors up", to_version="1.4.1")
    assert (rolled_back["status"], rolled_back["version"], rolled_back["rolled_back_to"]) == (
        "rolled_back", "1.4.2", "1.4.1")
    assert stepped.get(f"/deployments/{deployment['id']}").get_json() == rolled_back
    last = events_of(stepped, deployment)[-1]
    assert (last["type"], last["note"], last["details"]) == ("rolled_back", "errors up", {"to_version": "1.4.1"})


def test_a_rollback_without_to_version_shows_none(stepped):
    deployment = started(stepped)
    assert act(stepped, deployment, "rollback", note="errors up")["rolled_back_to"] is None
    assert events_of(stepped, deployment)[-1]["details"] is None


@pytest.mark.parametrize("to_version", ["1.4 1", "", 141], ids=["with a space", "empty", "a number"])
def test_a_rollback_with_a_bad_to_version_is_422_naming_it_and_changes_nothing(stepped, to_version):
    deployment = started(stepped)
    before = state(stepped)
    response = stepped.post(f"/deployments/{deployment['id']}/rollback",
                            json={"actor": "bob", "note": "n", "to_version": to_version})
    assert_invalid_fields(response, ["to_version"])
    assert state(stepped) == before


@pytest.mark.parametrize("action", ["approve", "reject", "cancel"])
def test_only_a_rollback_takes_to_version(stepped, action):
    deployment = create(stepped)
    before = state(stepped)
    response = stepped.post(f"/deployments/{deployment['id']}/{action}",
                            json={"actor": "bob", "note": "n", "to_version": "1.4.1"})
    assert response.status_code == 422
    assert {e["field"] for e in response.get_json()["errors"]} == {"to_version"}
    assert state(stepped) == before


# --- the listing's new filters --------------------------------------------------------------

# Seven deployments, named a to g in the order they are created (the listing shows g first).
SEEDS = {
    "a": dict(version="2.0", requester="alice", work_refs=["JIRA-1", "PR-10"], commit_sha="abc1234" + "0" * 33,
              labels={"team": "payments", "tier": "1"}),
    "b": dict(version="2.0", requester="bob", service="search", work_refs=["JIRA-2"],
              commit_sha="abc1234" + "f" * 33, labels={"team": "payments", "tier": "2"}),
    "c": dict(version="2.1", requester="alice", work_refs=["JIRA-1"], commit_sha="abc1235" + "0" * 33,
              labels={"team": "search", "tier": "1"}),
    "d": dict(version="2.0.1", requester="carol", work_refs=["PR-10"]),
    "e": dict(version="2.0", requester="carol", work_refs=["JIRA-1 and more", "jira-1"],
              commit_sha="abd1234" + "0" * 33, labels={"tier": "1", "team": "payments"}),
    "f": dict(version="V2.0", requester="alice", service="search", work_refs=["JIRA-3"], commit_sha="abc1234",
              labels={"team": "payments-eu"}),
    "g": dict(version="3.0", requester="bob", work_refs=["JIRA-4"], labels={"team": "", "expr": "a=b"}),
}


@pytest.fixture
def seeded(stepped) -> dict[str, dict]:
    """SEEDS created in order; then b and c approved, in that order, so they are updated after g was created."""
    made = {name: create(stepped, **overrides) for name, overrides in SEEDS.items()}
    made["b"] = act(stepped, made["b"], "approve")
    made["c"] = act(stepped, made["c"], "approve")
    return made


class Seeded:
    """The seeds over HTTP: listings by parameters in which "@b.updated_at" stands for that seed's value."""

    def __init__(self, client: Client, made: dict[str, dict]):
        self.client, self.made = client, made
        self.by_id = {deployment["id"]: name for name, deployment in made.items()}

    def get(self, params: dict):
        return self.client.get("/deployments", query_string={name: self.value(v) for name, v in params.items()})

    def value(self, value):
        if isinstance(value, str) and value.startswith("@"):
            seed, field = value[1:].split(".")
            return self.made[seed][field]
        return value

    def names(self, response) -> str:
        """The seeds a listing returned, as their letters in the order listed."""
        assert response.status_code == 200, response.get_json()
        return "".join(self.by_id[item["id"]] for item in response.get_json()["items"])

    def listed(self, params: dict) -> str:
        return self.names(self.get(params))


@pytest.fixture
def listing(stepped, seeded) -> Seeded:
    return Seeded(stepped, seeded)


@pytest.mark.parametrize("params, expected", [
    pytest.param({"version": "2.0"}, "eba", id="version is exact"),
    pytest.param({"version": "2.0", "service": "billing"}, "ea", id="version and service"),
    pytest.param({"version": "2.0", "status": "approved"}, "b", id="version and status"),
    pytest.param({"version": "2"}, "", id="a version prefix finds nothing"),
    pytest.param({"work_ref": "JIRA-1"}, "ca", id="work_ref is one item, exactly"),
    pytest.param({"work_ref": "PR-10"}, "da", id="a deployment with two refs is found by the other"),
    pytest.param({"work_ref": "jira-1"}, "e", id="work_ref is case-sensitive"),
    pytest.param({"work_ref": "JIRA"}, "", id="a part of a ref finds nothing"),
    pytest.param({"work_ref": "JIRA-1", "requester": "alice", "service": "billing"}, "ca",
                 id="work_ref, requester and service"),
    pytest.param({"work_ref": "JIRA-1", "status": "pending_approval"}, "a", id="work_ref and status"),
    pytest.param({"commit_sha": "abc1234"}, "fba", id="a 7-character prefix"),
    pytest.param({"commit_sha": "abc12340"}, "a", id="a longer prefix"),
    pytest.param({"commit_sha": "abc1234" + "0" * 33}, "a", id="the full commit id"),
    pytest.param({"commit_sha": "abc1235"}, "c", id="the next prefix"),
    pytest.param({"commit_sha": "abc1234", "service": "search"}, "fb", id="commit_sha and service"),
    pytest.param({"commit_sha": "abc1234", "version": "2.0"}, "ba", id="commit_sha and version"),
    pytest.param({"label": "team=payments"}, "eba", id="one label"),
    pytest.param({"label": ["team=payments", "tier=1"]}, "ea", id="two labels, both must match"),
    pytest.param({"label": ["tier=1", "team=payments"]}, "ea", id="two labels in the other order"),
    pytest.param({"label": ["team=payments", "team=search"]}, "", id="two values of one key"),
    pytest.param({"label": "team="}, "g", id="a label with an empty value"),
    pytest.param({"label": "expr=a=b"}, "g", id="a value with an equals sign"),
    pytest.param({"label": "team=pay"}, "", id="a value prefix finds nothing"),
    pytest.param({"label": "team=payments", "service": "billing", "status": "pending_approval"}, "ea",
                 id="a label, service and status"),
    pytest.param({"label": "tier=1", "work_ref": "JIRA-1", "commit_sha": "abc1235"}, "c",
                 id="label, work_ref and commit_sha"),
    pytest.param({"updated_after": "@b.updated_at"}, "cb", id="updated_after includes its bound"),
    pytest.param({"updated_before": "@c.updated_at"}, "gfedba", id="updated_before excludes its bound"),
    pytest.param({"updated_after": "@b.updated_at", "updated_before": "@c.updated_at"}, "b",
                 id="updated_after and updated_before"),
    pytest.param({"updated_before": "@e.updated_at", "label": "team=payments"}, "a",
                 id="updated_before sees b's later update"),
    pytest.param({"created_before": "@e.created_at", "label": "team=payments"}, "ba",
                 id="where created_before does not"),
    pytest.param({"updated_after": "@a.created_at", "service": "search"}, "fb", id="updated_after and service"),
    pytest.param({"updated_after": "@d.updated_at", "created_before": "@d.created_at"}, "cb",
                 id="updated_after with created_before"),
    pytest.param({"updated_after": "@b.updated_at", "version": "2.1", "requester": "alice"}, "c",
                 id="updated_after, version and requester"),
])
def test_each_new_filter_matches_as_the_contract_says_and_combines_with_the_others(listing, params, expected):
    assert listing.listed(params) == expected


@pytest.mark.parametrize("params, expected", [
    pytest.param({"label": "team=payments"}, "eba", id="label"),
    pytest.param({"work_ref": "JIRA-1"}, "ca", id="work_ref"),
    pytest.param({"commit_sha": "abc1234"}, "fba", id="commit_sha"),
    pytest.param({"version": "2.0"}, "eba", id="version"),
    pytest.param({"updated_before": "@c.updated_at"}, "gfedba", id="updated_before"),
])
def test_walking_a_new_filter_one_item_a_page_returns_its_matches_in_order(listing, params, expected):
    walked, query = "", dict(params, limit=1)
    while True:
        page = listing.get(query)
        walked += listing.names(page)
        if page.get_json()["next_cursor"] is None:
            break
        query["cursor"] = page.get_json()["next_cursor"]
    assert walked == expected


# --- bad parameters ------------------------------------------------------------------------


@pytest.mark.parametrize("query_string, fields", [
    pytest.param("label=team", ["label"], id="a label without ="),
    pytest.param("label=Team=payments", ["label"], id="a label key in uppercase"),
    pytest.param("label==payments", ["label"], id="a label without a key"),
    pytest.param("label=team=" + "x" * 257, ["label"], id="a label value too long"),
    pytest.param("&".join(["label=team=payments"] * 11), ["label"], id="label given 11 times"),
    pytest.param("commit_sha=abc123", ["commit_sha"], id="a commit prefix of 6"),
    pytest.param("commit_sha=ABC1234", ["commit_sha"], id="a commit prefix in uppercase"),
    pytest.param("commit_sha=abc123g", ["commit_sha"], id="a commit prefix not hex"),
    pytest.param("commit_sha=" + "a" * 65, ["commit_sha"], id="a commit prefix of 65"),
    pytest.param("version=2.0%20beta", ["version"], id="a version with a space"),
    pytest.param("version=", ["version"], id="an empty version"),
    pytest.param("version=" + "v" * 129, ["version"], id="a version too long"),
    pytest.param("work_ref=", ["work_ref"], id="an empty work_ref"),
    pytest.param("work_ref=%20%20", ["work_ref"], id="a blank work_ref"),
    pytest.param("work_ref=" + "x" * 513, ["work_ref"], id="a work_ref too long"),
    pytest.param("updated_after=yesterday", ["updated_after"], id="updated_after not a timestamp"),
    pytest.param("updated_before=2026-11-26T10:00:00", ["updated_before"], id="updated_before without an offset"),
    pytest.param("updated_after=2026-11-26T10:00:00Z&updated_before=2026-11-26T09:59:59.999999Z", ["updated_before"],
                 id="updated_before a microsecond before updated_after"),
    pytest.param("updated_after=2026-11-26T10:00:00Z&updated_before=2026-11-26T11:00:00%2B02:00", ["updated_before"],
                 id="updated_before earlier than updated_after once offsets apply"),
    pytest.param("version=1&version=2", ["version"], id="version repeated"),
    pytest.param("work_ref=A&work_ref=B", ["work_ref"], id="work_ref repeated"),
    pytest.param("commit_sha=abc1234&commit_sha=abc1235", ["commit_sha"], id="commit_sha repeated"),
    pytest.param("updated_after=2026-11-26T10:00:00Z&updated_after=2026-11-26T11:00:00Z", ["updated_after"],
                 id="updated_after repeated"),
])
def test_a_bad_new_parameter_is_422_naming_it(stepped, query_string, fields):
    assert_invalid_fields(stepped.get(f"/deployments?{query_string}"), fields)


def test_every_bad_parameter_is_named_at_once(stepped):
    response = stepped.get("/deployments?label=team&label=Bad=1&commit_sha=abc123&version=2.0%20beta"
                           "&work_ref=&updated_after=2026-11-27T00:00:00Z&updated_before=2026-11-26T00:00:00Z"
                           "&status=done")
    assert_invalid_fields(response, ["label", "label", "commit_sha", "version", "work_ref", "updated_before",
                                     "status"])


def test_ten_labels_are_accepted(listing):
    labels = ["team=payments"] * 9 + ["tier=1"]
    assert listing.listed({"label": labels}) == "ea"


# --- cursors bound to the new filters ------------------------------------------------------------


@pytest.mark.parametrize("issued_for, replayed_with", [
    pytest.param({"label": "team=payments"}, {"label": "team=payments-eu"}, id="another label"),
    pytest.param({"label": "team=payments"}, {"label": ["team=payments", "tier=1"]}, id="one more label"),
    pytest.param({"label": ["team=payments", "tier=1"]}, {"label": "team=payments"}, id="one label less"),
    pytest.param({"label": "team=payments"}, {}, id="the label dropped"),
    pytest.param({"version": "2.0"}, {"version": "2.1"}, id="another version"),
    pytest.param({"version": "2.0"}, {"version": "2.0", "status": "pending_approval"}, id="a status added"),
    pytest.param({"work_ref": "JIRA-1"}, {"work_ref": "PR-10"}, id="another work_ref"),
    pytest.param({"commit_sha": "abc1234"}, {"commit_sha": "abc12340"}, id="a longer commit prefix"),
    pytest.param({"updated_before": "@c.updated_at"}, {"updated_before": "@b.updated_at"},
                 id="another updated_before"),
    pytest.param({"updated_before": "@c.updated_at"}, {"created_before": "@c.updated_at"},
                 id="the same bound on created_at"),
    pytest.param({"updated_after": "@a.created_at"}, {"updated_after": "@a.created_at", "label": "team=payments"},
                 id="a label added"),
])
def test_a_cursor_issued_for_one_filter_set_is_refused_with_another(listing, issued_for, replayed_with):
    cursor = listing.get({**issued_for, "limit": 1}).get_json()["next_cursor"]
    assert cursor is not None
    response = listing.get({**replayed_with, "cursor": cursor})
    assert response.status_code == 400 and response.get_json()["code"] == "invalid_cursor"


def test_a_cursor_issued_for_two_labels_continues_with_them_in_the_other_order(listing):
    first = listing.get({"label": ["team=payments", "tier=1"], "limit": 1})
    rest = listing.get({"label": ["tier=1", "team=payments"], "limit": 1, "cursor": first.get_json()["next_cursor"]})
    assert listing.names(first) + listing.names(rest) == "ea"
    assert rest.get_json()["next_cursor"] is None


# --- lead time for changes ---------------------------------------------------------------------------

DAY = 24 * 60  # minutes


@pytest.fixture
def timeline(db_path):
    t = Timeline(db_path)
    yield t
    t.close()


def dora(timeline: Timeline, **params) -> dict:
    return timeline.get("/metrics/dora", since=at(0), until=at(DAY), **params)


def lead_time_history(timeline: Timeline) -> Timeline:
    """One day's deployments, in minutes from the window's start (window: minutes 0 to 1440).

    | deployment     | committed | requested | outcome                          | lead time |
    |----------------|-----------|-----------|----------------------------------|-----------|
    | billing prod 1 | -30       | 0         | succeeded 10                     | 40        |
    | billing prod 2 | 10        | 15        | succeeded 70, rolled back 80     | 60        |
    | billing prod 3 | -2880     | -10       | succeeded 30 (committed earlier) | 2910      |
    | billing prod 4 | 0         | 5         | failed 8                         | -         |
    | billing prod 5 | (none)    | 5         | succeeded 20                     | -         |
    | billing prod 6 | 0         | 1         | succeeded 1450 (after the window)| -         |
    | billing stg    | 0         | 1         | succeeded 5                      | 5         |
    | search prod    | -100      | 0         | succeeded 140                    | 240       |
    """
    timeline.deploy(0, "1.0", steps=shipped(1, 2, 10), committed=-30)
    rolled_back = timeline.deploy(15, "1.1", steps=shipped(16, 17, 70), committed=10)
    timeline.act(rolled_back, "rollback", 80)
    timeline.deploy(-10, "1.2", steps=shipped(-5, -2, 30), committed=-2 * DAY)
    timeline.deploy(5, "1.3", steps={"approve": 6, "start": 7, "fail": 8}, committed=0)
    timeline.deploy(5, "1.4", steps=shipped(6, 7, 20))
    timeline.deploy(1, "1.5", steps=shipped(2, 3, DAY + 10), committed=0)
    timeline.deploy(1, "2.0", environment="staging", steps=shipped(2, 3, 5), committed=0)
    timeline.deploy(0, "3.0", service="search", steps=shipped(1, 2, 140), committed=-100)
    return timeline


@pytest.mark.parametrize("scope, expected", [
    # 5, 40, 60, 240, 2910 minutes: nearest rank 3 and 5.
    pytest.param({}, {"median": 3600.0, "p90": 174600.0, "count": 5}, id="everything"),
    # 40, 60, 240, 2910: ranks 2 and 4.
    pytest.param({"environment": "production"}, {"median": 3600.0, "p90": 174600.0, "count": 4}, id="production"),
    # 40, 60, 2910: ranks 2 and 3.
    pytest.param({"service": "billing", "environment": "production"},
                 {"median": 3600.0, "p90": 174600.0, "count": 3}, id="billing in production"),
    # 5, 40, 60, 2910: ranks 2 and 4.
    pytest.param({"service": "billing"}, {"median": 2400.0, "p90": 174600.0, "count": 4}, id="billing"),
    pytest.param({"environment": "staging"}, {"median": 300.0, "p90": 300.0, "count": 1}, id="staging"),
    pytest.param({"service": "search"}, {"median": 14400.0, "p90": 14400.0, "count": 1}, id="search"),
    pytest.param({"service": "nothing-here"}, {"median": None, "p90": None, "count": 0}, id="an empty scope"),
])
def test_lead_time_for_changes_runs_from_each_commit_to_its_success_in_the_window(timeline, scope, expected):
    assert dora(lead_time_history(timeline), **scope)["lead_time_for_changes_seconds"] == expected


def test_lead_time_belongs_to_the_window_of_the_success(timeline):
    lead_time_history(timeline)
    after = timeline.get("/metrics/dora", since=at(DAY), until=at(2 * DAY), service="billing")
    assert after["lead_time_for_changes_seconds"] == {"median": 87000.0, "p90": 87000.0, "count": 1}  # 1450 min


def test_a_failed_deployment_and_one_without_a_commit_count_in_no_lead_time(timeline):
    timeline.deploy(5, "1.3", steps={"approve": 6, "start": 7, "fail": 8}, committed=0)
    timeline.deploy(5, "1.4", steps=shipped(6, 7, 20))
    rolled_back_mid_rollout = timeline.deploy(5, "1.5", steps={"approve": 6, "start": 7}, committed=0)
    timeline.act(rolled_back_mid_rollout, "rollback", 9)
    timeline.deploy(5, "1.6", steps={"approve": 6}, committed=0)  # approved, never started
    body = dora(timeline)
    assert body["lead_time_for_changes_seconds"] == {"median": None, "p90": None, "count": 0}
    assert body["counts"]["succeeded"] == 1


def test_lead_time_is_exact_to_the_microsecond(timeline):
    timeline.set_now(0)
    response = timeline.client.post("/deployments", json=create_body(
        environment="production", committed_at="2026-11-26T09:59:58.499999Z"))  # 1.500001 s before minute 0
    assert response.status_code == 201, response.get_json()
    deployment_id = response.get_json()["id"]
    for action in ("approve", "start", "succeed"):
        timeline.act(deployment_id, action, 0)
    assert dora(timeline)["lead_time_for_changes_seconds"] == {"median": 1.500001, "p90": 1.500001, "count": 1}


def test_the_commit_time_is_read_in_utc_whatever_offset_it_was_sent_with(timeline):
    timeline.set_now(60)
    response = timeline.client.post("/deployments", json=create_body(
        environment="production", committed_at="2026-11-26T11:30:00+02:00"))  # 09:30Z: minute -30
    assert response.status_code == 201, response.get_json()
    deployment_id = response.get_json()["id"]
    for action, minute in shipped(61, 62, 90).items():
        timeline.act(deployment_id, action, minute)
    assert dora(timeline)["lead_time_for_changes_seconds"]["median"] == 120 * 60.0

