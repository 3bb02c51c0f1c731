"""Pipeline metadata on creation, a rollback's to_version, and what the created event seals of them, table-driven.

The rules are the contract's (api-contract.md, "Pipeline metadata"), written out
here independently of lifecycle.py's constants.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest
from builders import create_body

from deployapi import chain
from deployapi.lifecycle import (
    ACTIONS,
    Deployment,
    Event,
    Link,
    ValidationFailed,
    apply_action,
    new_deployment,
    validate_action,
    validate_new_deployment,
)

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=timezone.utc)
SHA = "3f9c2e1d4b5a69788796a5b4c3d2e1f0a9b8c7d6"  # 40 hex digits, as git prints one

FULL = {
    "commit_sha": SHA,
    "repository": "https://github.com/acme/billing",
    "ref": "refs/heads/main",
    "committed_at": "2026-11-26T12:30:00.25+02:00",
    "links": [{"rel": "pipeline", "url": "https://ci.example.com/acme/billing/-/pipelines/981"},
              {"rel": "pull-request", "url": "https://github.com/acme/billing/pull/42"}],
    "labels": {"team": "payments", "tier": "1", "ci.example.com/job": "deploy-prod"},
}


def validated(now: datetime = NOW, **overrides):
    return validate_new_deployment(create_body(**overrides), now=now)


def problems_of(now: datetime = NOW, **overrides) -> dict[str, str]:
    """Every problem of the body with ``overrides``, by field (the first message of each)."""
    with pytest.raises(ValidationFailed) as caught:
        validated(now, **overrides)
    problems: dict[str, str] = {}
    for problem in caught.value.problems:
        problems.setdefault(problem.field, problem.message)
    return problems


# --- accepted and normalised ------------------------------------------------------------


def test_a_body_with_every_pipeline_field_is_accepted_and_normalised():
    new = validated(**FULL)
    assert (new.commit_sha, new.repository, new.ref) == (SHA, "https://github.com/acme/billing", "refs/heads/main")
    assert new.committed_at == "2026-11-26T10:30:00.250000Z"
    assert new.links == (Link("pipeline", "https://ci.example.com/acme/billing/-/pipelines/981"),
                         Link("pull-request", "https://github.com/acme/billing/pull/42"))
    assert new.labels == {"team": "payments", "tier": "1", "ci.example.com/job": "deploy-prod"}


@pytest.mark.parametrize("sent", ["absent", "null"])
def test_each_pipeline_field_is_optional_and_defaults_to_nothing(sent):
    body = create_body()
    if sent == "null":
        body.update(dict.fromkeys(FULL))  # JSON null means not sent, as for the other optional fields
    new = validate_new_deployment(body, now=NOW)
    assert (new.commit_sha, new.repository, new.ref, new.committed_at, new.links, new.labels) == (
        None, None, None, None, (), {})


@pytest.mark.parametrize(
    "overrides, field, expected",
    [
        pytest.param({"commit_sha": "3f9c2e1"}, "commit_sha", "3f9c2e1", id="commit_sha of 7 (git's short id)"),
        pytest.param({"commit_sha": "a" * 64}, "commit_sha", "a" * 64, id="commit_sha of 64 (sha-256 objects)"),
        pytest.param({"commit_sha": "0123456789abcdef"}, "commit_sha", "0123456789abcdef",
                     id="commit_sha of every hex digit"),
        pytest.param({"repository": "acme/billing"}, "repository", "acme/billing", id="repository as owner/name"),
        pytest.param({"repository": "git@github.com:acme/billing.git"}, "repository",
                     "git@github.com:acme/billing.git", id="repository as an scp-like address"),
        pytest.param({"repository": "r" * 512}, "repository", "r" * 512, id="repository of 512 characters"),
        pytest.param({"repository": "gitea.example/zoë/façade"}, "repository", "gitea.example/zoë/façade",
                     id="repository with non-ASCII letters"),
        pytest.param({"ref": "main"}, "ref", "main", id="ref as a branch name"),
        pytest.param({"ref": "release 1.4 (hotfix)"}, "ref", "release 1.4 (hotfix)", id="ref with spaces inside"),
        pytest.param({"ref": "x" * 256}, "ref", "x" * 256, id="ref of 256 characters"),
        pytest.param({"ref": "v"}, "ref", "v", id="ref of one character"),
        pytest.param({"committed_at": "2026-11-26T13:00:00.5+02:00"}, "committed_at",
                     "2026-11-26T11:00:00.500000Z", id="committed_at with an east offset, in UTC"),
        pytest.param({"committed_at": "2026-11-25T23:30:00-05:00"}, "committed_at",
                     "2026-11-26T04:30:00.000000Z", id="committed_at with a west offset, across midnight"),
        pytest.param({"committed_at": "2026-11-26t12:00:00z"}, "committed_at", "2026-11-26T12:00:00.000000Z",
                     id="committed_at exactly now, lowercase t and z"),
        pytest.param({"committed_at": "2026-11-26T11:59:59.9999991Z"}, "committed_at",
                     "2026-11-26T12:00:00.000000Z", id="committed_at in nanoseconds rounded up to now"),
        pytest.param({"committed_at": "1999-12-31T23:59:59.123456Z"}, "committed_at",
                     "1999-12-31T23:59:59.123456Z", id="committed_at long ago"),
        pytest.param({"links": []}, "links", (), id="no links"),
        pytest.param({"links": [{"rel": "ci", "url": "http://jenkins.internal:8080/job/1"}]}, "links",
                     (Link("ci", "http://jenkins.internal:8080/job/1"),), id="a plain http link with a port"),
        pytest.param({"links": [{"url": "https://a.example/1", "rel": "run"}]}, "links",
                     (Link("run", "https://a.example/1"),), id="a link with its keys in the other order"),
        pytest.param({"links": [{"rel": f"r{n}", "url": f"https://ci.example/{n}"} for n in range(20, 0, -1)]},
                     "links", tuple(Link(f"r{n}", f"https://ci.example/{n}") for n in range(20, 0, -1)),
                     id="20 links in the order sent"),
        pytest.param({"links": [{"rel": "ci", "url": "https://a.example/1"},
                                {"rel": "ci", "url": "https://a.example/2"},
                                {"rel": "logs", "url": "https://a.example/1"}]}, "links",
                     (Link("ci", "https://a.example/1"), Link("ci", "https://a.example/2"),
                      Link("logs", "https://a.example/1")), id="the same rel or the same url twice"),
        pytest.param({"links": [{"rel": "a.b_c-d", "url": "https://" + "x" * 2040}]}, "links",
                     (Link("a.b_c-d", "https://" + "x" * 2040),), id="a url of 2048 characters"),
        pytest.param({"labels": {}}, "labels", {}, id="no labels"),
        pytest.param({"labels": {f"k{n}": str(n) for n in range(32)}}, "labels",
                     {f"k{n}": str(n) for n in range(32)}, id="32 labels"),
        pytest.param({"labels": {"a" + "/._-" * 15 + "z9": "v"}}, "labels", {"a" + "/._-" * 15 + "z9": "v"},
                     id="a key of 63 characters with slash, dot, underscore and dash"),
        pytest.param({"labels": {"0": ""}}, "labels", {"0": ""}, id="a digit key with an empty value"),
        pytest.param({"labels": {"owner": "Zoë Ångström, on call"}}, "labels", {"owner": "Zoë Ångström, on call"},
                     id="a value with spaces and non-ASCII letters"),
        pytest.param({"labels": {"note": "x" * 256}}, "labels", {"note": "x" * 256}, id="a value of 256 characters"),
    ],
)
def test_a_pipeline_value_within_the_rules_is_accepted(overrides, field, expected):
    assert getattr(validated(**overrides), field) == expected


def test_labels_keep_the_values_sent_whatever_the_order_of_their_keys():
    assert validated(labels={"b": "2", "a": "1"}).labels == validated(labels={"a": "1", "b": "2"}).labels


# --- refused, each problem named by its field ------------------------------------------------


@pytest.mark.parametrize(
    "overrides, field",
    [
        pytest.param({"commit_sha": "3F9C2E1"}, "commit_sha", id="commit_sha in uppercase"),
        pytest.param({"commit_sha": "3f9c2e"}, "commit_sha", id="commit_sha of 6"),
        pytest.param({"commit_sha": "a" * 65}, "commit_sha", id="commit_sha of 65"),
        pytest.param({"commit_sha": "3f9c2eg"}, "commit_sha", id="commit_sha with a letter that is not hex"),
        pytest.param({"commit_sha": " 3f9c2e1"}, "commit_sha", id="commit_sha with a leading space"),
        pytest.param({"commit_sha": ""}, "commit_sha", id="commit_sha empty"),
        pytest.param({"commit_sha": 39428573}, "commit_sha", id="commit_sha that is a number"),
        pytest.param({"commit_sha": ["3f9c2e1"]}, "commit_sha", id="commit_sha that is an array"),
        pytest.param({"repository": "acme/ billing"}, "repository", id="repository with a space"),
        pytest.param({"repository": "acme/\u00a0billing"}, "repository", id="repository with a no-break space"),
        pytest.param({"repository": "acme/billing\n"}, "repository", id="repository with a newline"),
        pytest.param({"repository": "acme/\x7fbilling"}, "repository", id="repository with a control character"),
        pytest.param({"repository": "r" * 513}, "repository", id="repository of 513 characters"),
        pytest.param({"repository": "   "}, "repository", id="repository blank"),
        pytest.param({"repository": ""}, "repository", id="repository empty"),
        pytest.param({"repository": 42}, "repository", id="repository that is a number"),
        pytest.param({"repository": "acme/\ud800"}, "repository", id="repository with a lone surrogate"),
        pytest.param({"ref": "main\x00"}, "ref", id="ref with NUL"),
        pytest.param({"ref": "ma\tin"}, "ref", id="ref with a tab"),
        pytest.param({"ref": "x" * 257}, "ref", id="ref of 257 characters"),
        pytest.param({"ref": "  \u3000 "}, "ref", id="ref blank"),
        pytest.param({"ref": ""}, "ref", id="ref empty"),
        pytest.param({"ref": True}, "ref", id="ref that is a boolean"),
        pytest.param({"committed_at": "2026-11-26T10:00:00"}, "committed_at", id="committed_at without an offset"),
        pytest.param({"committed_at": "2026-11-26 10:00:00Z"}, "committed_at", id="committed_at with a space"),
        pytest.param({"committed_at": "2026-11-26"}, "committed_at", id="committed_at a date only"),
        pytest.param({"committed_at": "yesterday"}, "committed_at", id="committed_at not a date"),
        pytest.param({"committed_at": "2026-02-30T10:00:00Z"}, "committed_at", id="committed_at not a real day"),
        pytest.param({"committed_at": "2026-11-26T12:00:00.000001Z"}, "committed_at",
                     id="committed_at a microsecond later than now"),
        pytest.param({"committed_at": "2026-11-26T13:00:01+01:00"}, "committed_at",
                     id="committed_at later than now once its offset is applied"),
        pytest.param({"committed_at": 1764158400}, "committed_at", id="committed_at as epoch seconds"),
        pytest.param({"links": {"rel": "ci", "url": "https://a.example"}}, "links", id="links not an array"),
        pytest.param({"links": "https://a.example"}, "links", id="links a string"),
        pytest.param({"links": [{"rel": f"r{n}", "url": f"https://a.example/{n}"} for n in range(21)]}, "links",
                     id="21 links"),
        pytest.param({"links": ["https://a.example"]}, "links[0]", id="a link that is a string"),
        pytest.param({"links": [{"rel": "ci", "url": "https://a.example"}, None]}, "links[1]",
                     id="a link that is null"),
        pytest.param({"links": [{"rel": "ci", "url": "https://a.example", "foo": "bar"}]}, "links[0].foo",
                     id="a link with an unknown key"),
        pytest.param({"links": [{"rel": "CI", "url": "https://a.example"}]}, "links[0].rel",
                     id="a rel that is not a slug"),
        pytest.param({"links": [{"rel": "", "url": "https://a.example"}]}, "links[0].rel", id="an empty rel"),
        pytest.param({"links": [{"url": "https://a.example"}]}, "links[0].rel", id="a link without a rel"),
        pytest.param({"links": [{"rel": 1, "url": "https://a.example"}]}, "links[0].rel", id="a rel that is a number"),
        pytest.param({"links": [{"rel": "ci"}]}, "links[0].url", id="a link without a url"),
        pytest.param({"links": [{"rel": "ci", "url": "ftp://a.example/x"}]}, "links[0].url", id="an ftp url"),
        pytest.param({"links": [{"rel": "ci", "url": "javascript:alert(1)"}]}, "links[0].url",
                     id="a javascript url"),
        pytest.param({"links": [{"rel": "ci", "url": "a.example/run/1"}]}, "links[0].url", id="a url without scheme"),
        pytest.param({"links": [{"rel": "ci", "url": "https://"}]}, "links[0].url", id="a url without a host"),
        pytest.param({"links": [{"rel": "ci", "url": "https://" + "x" * 2041}]}, "links[0].url",
                     id="a url of 2049 characters"),
        pytest.param({"links": [{"rel": "ci", "url": "https://a.example/run 1"}]}, "links[0].url",
                     id="a url with a space"),
        pytest.param({"links": [{"rel": "ci", "url": "https://a.example/\x00"}]}, "links[0].url",
                     id="a url with NUL"),
        pytest.param({"links": [{"rel": "ci", "url": ["https://a.example"]}]}, "links[0].url",
                     id="a url that is an array"),
        pytest.param({"links": [{"rel": "ci", "url": "https://a.example"}, {"url": "https://a.example", "rel": "ci"}]},
                     "links[1]", id="a duplicate link"),
        pytest.param({"labels": [["team", "payments"]]}, "labels", id="labels not an object"),
        pytest.param({"labels": "team=payments"}, "labels", id="labels a string"),
        pytest.param({"labels": {f"k{n}": "v" for n in range(33)}}, "labels", id="33 labels"),
        pytest.param({"labels": {"Team": "payments"}}, "labels.Team", id="a key in uppercase"),
        pytest.param({"labels": {"-team": "payments"}}, "labels.-team", id="a key starting with a dash"),
        pytest.param({"labels": {"/team": "payments"}}, "labels./team", id="a key starting with a slash"),
        pytest.param({"labels": {"my team": "payments"}}, "labels.my team", id="a key with a space"),
        pytest.param({"labels": {"a=b": "payments"}}, "labels.a=b", id="a key with an equals sign"),
        pytest.param({"labels": {"": "payments"}}, "labels.", id="an empty key"),
        pytest.param({"labels": {"k" * 64: "v"}}, "labels." + "k" * 64, id="a key of 64 characters"),
        pytest.param({"labels": {"tier": 1}}, "labels.tier", id="a value that is a number"),
        pytest.param({"labels": {"tier": None}}, "labels.tier", id="a value that is null"),
        pytest.param({"labels": {"tier": ["1"]}}, "labels.tier", id="a value that is an array"),
        pytest.param({"labels": {"note": "x" * 257}}, "labels.note", id="a value of 257 characters"),
        pytest.param({"labels": {"note": "line\nbreak"}}, "labels.note", id="a value with a newline"),
        pytest.param({"labels": {"note": "\x00"}}, "labels.note", id="a value with NUL"),
        pytest.param({"labels": {"note": "a\x85b"}}, "labels.note", id="a value with a C1 control"),
        pytest.param({"labels": {"note": "\udfff"}}, "labels.note", id="a value with a lone surrogate"),
    ],
)
def test_a_pipeline_value_that_breaks_a_rule_is_reported_by_its_field(overrides, field):
    assert list(problems_of(**overrides)) == [field]


def test_every_problem_of_the_pipeline_fields_is_listed_at_once_with_those_of_the_other_fields():
    problems = problems_of(
        version="1.0 beta", commit_sha="ABC1234", repository="acme billing", ref="\x00", committed_at="2026-11-26",
        links=[{"rel": "ci", "url": "ftp://a"}, {"rel": "ci", "url": "https://a.example", "foo": 1}, "x",
               {"rel": "Bad", "url": "https://a.example/ok"}],
        labels={"Team": "payments", "tier": 1, "ok": "fine", "note": "x" * 257},
        colour="red",
    )
    assert set(problems) == {"version", "commit_sha", "repository", "ref", "committed_at", "links[0].url",
                             "links[1].foo", "links[2]", "links[3].rel", "labels.Team", "labels.tier",
                             "labels.note", "colour"}


def test_a_link_with_both_a_bad_rel_and_a_bad_url_names_both():
    assert set(problems_of(links=[{"rel": "Not A Slug", "url": "mailto:a@b"}])) == {"links[0].rel", "links[0].url"}


def test_the_bound_on_committed_at_is_the_now_given():
    committed = "2026-11-26T12:00:00Z"
    assert validated(now=NOW, committed_at=committed).committed_at == "2026-11-26T12:00:00.000000Z"
    assert "committed_at" in problems_of(now=NOW - timedelta(microseconds=1), committed_at=committed)


def test_the_new_deployment_carries_the_pipeline_metadata_as_validated():
    deployment, event = new_deployment("01pipeline", validated(**FULL), NOW + timedelta(seconds=1))
    assert (deployment.commit_sha, deployment.repository, deployment.ref, deployment.committed_at) == (
        SHA, FULL["repository"], FULL["ref"], "2026-11-26T10:30:00.250000Z")
    assert [(link.rel, link.url) for link in deployment.links] == [(x["rel"], x["url"]) for x in FULL["links"]]
    assert deployment.labels == FULL["labels"]
    assert deployment.rolled_back_to is None
    assert event.details is None  # the metadata is sealed as the deployment's creation content, not in details


# --- a rollback's to_version -----------------------------------------------------------------


def deployment(status: str = "succeeded") -> Deployment:
    return Deployment(
        id="01abc", service="billing", environment="staging", version="1.4.2", requester="alice",
        work_refs=("JIRA-1",), risk=None, rollback_plan="redeploy 1.4.1", status=status,
        reviewed_by="bob", reviewed_at="2026-11-26T09:00:00.000000Z", created_at="2026-11-26T08:00:00.000000Z",
        updated_at="2026-11-26T09:30:00.000000Z",
    )


@pytest.mark.parametrize("status", ["started", "succeeded", "failed"])
def test_a_rollback_to_a_version_records_it_on_the_deployment_and_in_its_event(status):
    request = validate_action("rollback", {"actor": "bob", "note": "errors up", "to_version": "1.4.1"})
    assert request.to_version == "1.4.1"
    updated, event = apply_action(deployment(status), request, 5, NOW)
    assert (updated.status, updated.rolled_back_to) == ("rolled_back", "1.4.1")
    assert (event.type, event.details) == ("rolled_back", {"to_version": "1.4.1"})
    assert updated.version == "1.4.2"  # the version it rolled back from is still the deployment's own


@pytest.mark.parametrize("payload", [{"actor": "bob", "note": "n"}, {"actor": "bob", "note": "n", "to_version": None}],
                         ids=["absent", "null"])
def test_a_rollback_without_to_version_records_none(payload):
    request = validate_action("rollback", payload)
    updated, event = apply_action(deployment(), request, 5, NOW)
    assert (request.to_version, updated.rolled_back_to, event.details) == (None, None, None)


@pytest.mark.parametrize(
    "to_version",
    [pytest.param("1.4 1", id="with a space"), pytest.param("", id="empty"), pytest.param("v" * 129, id="129 long"),
     pytest.param("1.4.1\n", id="with a newline"), pytest.param(141, id="a number"),
     pytest.param({"version": "1.4.1"}, id="an object"), pytest.param("1.\ud8004", id="with a lone surrogate")],
)
def test_a_rollback_with_a_bad_to_version_is_refused_naming_it(to_version):
    with pytest.raises(ValidationFailed) as caught:
        validate_action("rollback", {"actor": "bob", "note": "n", "to_version": to_version})
    assert [p.field for p in caught.value.problems] == ["to_version"]


def test_a_to_version_at_the_edge_of_the_version_rules_is_accepted():
    assert validate_action("rollback", {"actor": "bob", "note": "n", "to_version": "v" * 128}).to_version == "v" * 128


@pytest.mark.parametrize("action", [a for a in ACTIONS if a != "rollback"])
def test_only_a_rollback_takes_to_version(action):
    with pytest.raises(ValidationFailed) as caught:
        validate_action(action, {"actor": "bob", "note": "n", "to_version": "1.4.1"})
    assert {p.field for p in caught.value.problems} == {"to_version"}


@pytest.mark.parametrize("status, action", [("pending_approval", "approve"), ("approved", "start"),
                                            ("started", "succeed"), ("started", "fail")])
def test_other_actions_leave_rolled_back_to_unset(status, action):
    updated, _ = apply_action(deployment(status), validate_action(action, {"actor": "carol", "note": "n"}), 3, NOW)
    assert updated.rolled_back_to is None


# --- what the created event seals ------------------------------------------------------------


def created_event(deployment_: Deployment) -> Event:
    return Event(id=None, deployment_id=deployment_.id, sequence=1, type="created", actor=deployment_.requester,
                 note=None, from_status=None, to_status=deployment_.status, created_at=deployment_.created_at,
                 policy_digest=deployment_.policy_digest)


def sealed(deployment_: Deployment) -> str:
    """The hash the created event of ``deployment_`` gets as the first event of the chain."""
    return chain.link_hash(created_event(deployment_), 1, chain.GENESIS, chain.creation_content(deployment_))


def golden(**changes) -> Deployment:
    return dataclasses.replace(Deployment(
        id="01golden", service="billing", environment="staging", version="1.4.2", requester="alice",
        work_refs=("JIRA-123",), risk=None, rollback_plan="Redeploy 1.4.1.", status="pending_approval",
        reviewed_by=None, reviewed_at=None, created_at="2026-11-26T10:00:00.000000Z",
        updated_at="2026-11-26T10:00:00.000000Z"), **changes)


# What version 7's chain.py (commit b76fc33) computed for golden() and for it under a policy.
VERSION_7_HASH = "6d49d96dd3c9e0e6ecae2decc40fef53065ee94c97e0d4619834b96a96a01eaf"
VERSION_7_HASH_UNDER_A_POLICY = "74cc229691ce116815d03357c1efa60bbd67fc33137ce0ccb3c615ef99679d1b"


@pytest.mark.parametrize("empty", [
    pytest.param({}, id="defaults"),
    pytest.param({"commit_sha": None, "repository": None, "ref": None, "committed_at": None, "links": (),
                  "labels": {}}, id="every field given as nothing"),
])
def test_a_deployment_without_pipeline_metadata_is_sealed_as_version_7_sealed_it(empty):
    assert chain.creation_content(golden(**empty)) == {
        "service": "billing", "environment": "staging", "version": "1.4.2", "requester": "alice",
        "work_refs": ["JIRA-123"], "rollback_plan": "Redeploy 1.4.1."}
    assert sealed(golden(**empty)) == VERSION_7_HASH
    assert sealed(golden(**empty, required_approvals=2, policy_digest="p" * 64)) == VERSION_7_HASH_UNDER_A_POLICY


def test_the_creation_content_covers_every_pipeline_field():
    full = golden(commit_sha=SHA, repository="acme/billing", ref="main", committed_at="2026-11-26T09:00:00.000000Z",
                  links=(Link("ci", "https://ci.example/1"),), labels={"team": "payments"})
    content = chain.creation_content(full)
    assert {field: content[field] for field in FULL} == {
        "commit_sha": SHA, "repository": "acme/billing", "ref": "main",
        "committed_at": "2026-11-26T09:00:00.000000Z", "links": [{"rel": "ci", "url": "https://ci.example/1"}],
        "labels": {"team": "payments"}}
    assert sealed(full) != VERSION_7_HASH


BASE = golden(commit_sha=SHA, repository="acme/billing", ref="main", committed_at="2026-11-26T09:00:00.000000Z",
              links=(Link("ci", "https://ci.example/1"), Link("pr", "https://git.example/pr/2")),
              labels={"team": "payments", "tier": "1"})


@pytest.mark.parametrize("changes", [
    pytest.param({"commit_sha": SHA[:-1] + "0"}, id="another commit"),
    pytest.param({"commit_sha": None}, id="the commit dropped"),
    pytest.param({"repository": "acme/billing2"}, id="another repository"),
    pytest.param({"ref": "main2"}, id="another ref"),
    pytest.param({"committed_at": "2026-11-26T09:00:00.000001Z"}, id="a commit a microsecond later"),
    pytest.param({"links": (Link("pr", "https://git.example/pr/2"), Link("ci", "https://ci.example/1"))},
                 id="the links in another order"),
    pytest.param({"links": (Link("ci", "https://ci.example/1"),)}, id="a link dropped"),
    pytest.param({"links": (Link("ci", "https://ci.example/9"), Link("pr", "https://git.example/pr/2"))},
                 id="a link's url changed"),
    pytest.param({"links": (Link("logs", "https://ci.example/1"), Link("pr", "https://git.example/pr/2"))},
                 id="a link's rel changed"),
    pytest.param({"labels": {"team": "search", "tier": "1"}}, id="a label's value changed"),
    pytest.param({"labels": {"team": "payments", "tier": "1", "x": ""}}, id="a label added"),
    pytest.param({"labels": {"team": "payments"}}, id="a label dropped"),
    pytest.param({"labels": {"team": "payments", "tier2": "1"}}, id="a label's key changed"),
])
def test_changing_any_pipeline_field_changes_the_created_events_hash(changes):
    assert sealed(dataclasses.replace(BASE, **changes)) != sealed(BASE)


def test_the_order_of_the_labels_does_not_change_the_hash():
    assert sealed(dataclasses.replace(BASE, labels={"tier": "1", "team": "payments"})) == sealed(BASE)


def test_what_a_rollback_went_back_to_is_not_creation_content():
    assert chain.creation_content(dataclasses.replace(BASE, rolled_back_to="1.4.1")) == chain.creation_content(BASE)
