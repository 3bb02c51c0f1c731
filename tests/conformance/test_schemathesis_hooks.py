"""The hooks of schemathesis.toml excuse exactly the refusals no schema can state, and key each request."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import schemathesis_hooks as hooks


def test_the_shared_settings_turn_every_check_on_and_load_these_hooks():
    settings = tomllib.loads(Path(__file__).with_name("schemathesis.toml").read_text())
    assert settings["hooks"] == "tests/conformance/schemathesis_hooks.py"
    assert settings["checks"]["enabled"] is True
    assert not [name for name, check in settings["checks"].items() if isinstance(check, dict)
                and check.get("enabled") is False]


def case(label="GET /deployments", query=None, body=None, headers=None, path=None):
    method, template = label.split(" ", 1)
    return SimpleNamespace(operation=SimpleNamespace(label=label), method=method, formatted_path=path or template,
                           media_type="application/json" if body is not None else None,
                           query=query, body=body, headers=headers)


def answer(status, problem=None, sent=b""):
    body = problem or {}
    return SimpleNamespace(status_code=status, json=lambda: body, request=SimpleNamespace(body=sent))


def invalid(*fields):
    return answer(422, {"code": "validation_failed", "errors": [{"field": f, "message": "…"} for f in fields]})


def excused(sent, refusal) -> bool:
    return hooks.refused_by_design(sent, refusal) is not None


@pytest.mark.parametrize("query, field", [
    ({"created_after": "2026-11-02T00:00:00Z", "created_before": "2026-11-01T00:00:00Z"}, "created_before"),
    ({"updated_after": "2026-11-01T00:00:00.000001Z", "updated_before": "2026-11-01T00:00:00Z"}, "updated_before"),
    ({"created_after": "0001-01-01T00:30:00+01:00"}, "created_after"),
    ({"created_before": "9999-12-31T23:59:59.9999991Z"}, "created_before"),
])
def test_reversed_bounds_and_instants_outside_the_years_are_excused(query, field):
    assert excused(case(query=query), invalid(field))


@pytest.mark.parametrize("query, field", [
    ({"created_after": "2026-11-01T00:00:00Z", "created_before": "2026-11-01T01:00:00+01:00"}, "created_before"),
    ({"created_after": "2026-12-31T23:59:60Z", "created_before": "2026-12-31T23:59:59.9999991Z"}, "created_before"),
    ({"created_after": "0001-01-01T00:30:00Z"}, "created_after"),
])
def test_equal_bounds_and_real_instants_are_not(query, field):
    assert not excused(case(query=query), invalid(field))


def test_a_refusal_naming_any_field_outside_the_rules_is_kept():
    reversed_range = {"created_after": "2026-11-02T00:00:00Z", "created_before": "2026-11-01T00:00:00Z",
                      "service": "billing"}
    assert not excused(case(query=reversed_range), invalid("created_before", "service"))
    assert not excused(case(query=reversed_range), answer(422, {"code": "idempotency_key_reused", "errors": []}))
    assert not excused(case(query=reversed_range), answer(400, {"code": "malformed_json"}))


def test_a_cursor_is_excused_only_when_the_api_did_not_issue_it_for_these_filters():
    refused = answer(400, {"code": "invalid_cursor"})
    assert excused(case(query={"cursor": "page2"}), refused)
    assert not excused(case(query={"cursor": ""}), refused)  # an empty cursor is the first page
    hooks.after_call(None, case(query={"service": "billing", "limit": 2}),
                     SimpleNamespace(status_code=200, json=lambda: {"items": [], "next_cursor": "abc.def"}))
    assert not excused(case(query={"service": "billing", "cursor": "abc.def", "limit": 5}), refused)
    assert excused(case(query={"service": "search", "cursor": "abc.def"}), refused)


@pytest.mark.parametrize("query, field, expected", [
    ({"since": "2026-11-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "until", False),
    ({"since": "2026-11-01T00:00:01Z", "until": "2026-11-01T00:00:00Z"}, "until", True),
    ({"since": "2026-07-01T00:00:00Z", "until": "2026-10-01T00:00:00Z"}, "since", False),  # 92 days
    ({"since": "2026-06-30T23:59:59Z", "until": "2026-10-01T00:00:00Z"}, "since", True),
    ({"since": "9000-01-01T00:00:00Z"}, "since", True),  # until defaults to now
    ({"since": "2000-01-01T00:00:00Z"}, "since", True),
])
def test_the_dora_window_rules(query, field, expected):
    assert excused(case("GET /metrics/dora", query=query), invalid(field)) is expected


@pytest.mark.parametrize("body, field, expected", [
    ({"work_refs": ["JIRA-1", " JIRA-1 "]}, "work_refs[1]", True),
    ({"work_refs": ["JIRA-1", "JIRA-2"]}, "work_refs[1]", False),
    ({"committed_at": "9000-01-01T00:00:00Z"}, "committed_at", True),
    ({"committed_at": "2000-01-01T00:00:00Z"}, "committed_at", False),
    ({"requester": "\ufdfa" * 8}, "requester", True),  # 8 characters, 144 in NFKC form
    ({"requester": "a" * 128}, "requester", False),
])
def test_the_creation_rules(body, field, expected):
    assert excused(case("POST /deployments", body=body), invalid(field)) is expected


def test_a_413_is_excused_only_for_a_body_over_64_kib():
    sent = case("POST /deployments", body={})
    assert excused(sent, answer(413, sent=b"x" * 65_537))
    assert not excused(sent, answer(413, sent=b"x" * 65_536))


def keyed(key, body, path="/deployments"):
    sent = case("POST /deployments", body=body, headers={"Idempotency-Key": key}, path=path)
    hooks.before_call(None, sent, {})
    return sent.headers["Idempotency-Key"]


def test_each_valid_key_becomes_the_requests_own_and_a_repeat_keeps_it():
    body = {"service": "billing"}
    assert keyed("0", body) == keyed("0", json.loads(json.dumps(body)))
    assert keyed("0", body) != keyed("0", {"service": "search"})
    assert keyed("0", body) != keyed("0", body, path="/deployments/x/approve")
    assert keyed("0", body).startswith("0.")
    assert len(keyed("k" * 255, body)) == 255


@pytest.mark.parametrize("key", ["", "   ", "caf\u00e9", "a\x7fb", "k" * 256])
def test_an_invalid_key_is_sent_as_drawn_to_be_refused(key):
    assert keyed(key, {"service": "billing"}) == key
