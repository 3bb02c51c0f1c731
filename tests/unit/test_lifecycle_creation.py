"""Creation rules of the lifecycle module, table-driven."""

from __future__ import annotations

import pytest
from builders import create_body

from deployapi.lifecycle import MAX_TEXT, ValidationFailed, validate_new_deployment


def problems_of(body, production=("production",)) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        validate_new_deployment(body, production)
    return {p.field: p.message for p in caught.value.problems}


def test_a_valid_body_becomes_a_new_deployment_with_trimmed_names():
    new = validate_new_deployment(create_body(requester="  alice  ", work_refs=[" JIRA-1 ", "PR-2"]))
    assert new.service == "billing"
    assert new.requester == "alice"
    assert new.work_refs == ("JIRA-1", "PR-2")
    assert new.risk == "low: config-only change"


@pytest.mark.parametrize(
    "overrides, field",
    [
        pytest.param({"service": ""}, "service", id="empty service"),
        pytest.param({"service": "Billing"}, "service", id="uppercase service"),
        pytest.param({"service": "-billing"}, "service", id="service starting with a dash"),
        pytest.param({"service": "bill ing"}, "service", id="service with a space"),
        pytest.param({"service": "a" * 64}, "service", id="service of 64 characters"),
        pytest.param({"service": "billing\n"}, "service", id="service with a trailing newline"),
        pytest.param({"service": 7}, "service", id="service that is a number"),
        pytest.param({"environment": "prod/eu"}, "environment", id="environment with a slash"),
        pytest.param({"environment": None}, "environment", id="missing environment"),
        pytest.param({"version": ""}, "version", id="empty version"),
        pytest.param({"version": "1.0 beta"}, "version", id="version with a space"),
        pytest.param({"version": "1.0\t"}, "version", id="version with a tab"),
        pytest.param({"version": "1.0\x00"}, "version", id="version with NUL"),
        pytest.param({"version": "v" * 129}, "version", id="version of 129 characters"),
        pytest.param({"requester": "   "}, "requester", id="blank requester"),
        pytest.param({"requester": "a" * 129}, "requester", id="requester of 129 characters"),
        pytest.param({"requester": "al\x07ice"}, "requester", id="requester with a control character"),
        pytest.param({"requester": None}, "requester", id="missing requester"),
        pytest.param({"work_refs": []}, "work_refs", id="no work refs"),
        pytest.param({"work_refs": "JIRA-1"}, "work_refs", id="work refs as a string"),
        pytest.param({"work_refs": [f"R-{i}" for i in range(21)]}, "work_refs", id="21 work refs"),
        pytest.param({"work_refs": ["JIRA-1", 2]}, "work_refs[1]", id="work ref that is a number"),
        pytest.param({"work_refs": ["JIRA-1", "  "]}, "work_refs[1]", id="blank work ref"),
        pytest.param({"work_refs": ["x" * 513]}, "work_refs[0]", id="work ref of 513 characters"),
        pytest.param({"work_refs": ["JIRA-1", " JIRA-1"]}, "work_refs[1]", id="duplicate work ref after trimming"),
        pytest.param({"rollback_plan": None}, "rollback_plan", id="missing rollback plan"),
        pytest.param({"rollback_plan": " \n "}, "rollback_plan", id="blank rollback plan"),
        pytest.param({"rollback_plan": "x" * (MAX_TEXT + 1)}, "rollback_plan", id="rollback plan too long"),
        pytest.param({"rollback_plan": "undo\x00"}, "rollback_plan", id="rollback plan with NUL"),
        pytest.param({"risk": "x" * (MAX_TEXT + 1)}, "risk", id="risk too long"),
        pytest.param({"risk": 3}, "risk", id="risk that is a number"),
        pytest.param({"version": "1.0\ud800"}, "version", id="version with a lone surrogate"),
        pytest.param({"id": "mine"}, "id", id="client-chosen id"),
        pytest.param({"status": "approved"}, "status", id="client-chosen status"),
    ],
)
def test_an_invalid_field_is_reported_by_name(overrides, field):
    assert field in problems_of(create_body(**overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"service": "a"}, id="one-character service"),
        pytest.param({"service": "a" * 63}, id="63-character service"),
        pytest.param({"service": "svc.name_v2-x"}, id="service with dot, underscore and dash"),
        pytest.param({"version": "v" * 128}, id="128-character version"),
        pytest.param({"requester": "r" * 128}, id="128-character requester"),
        pytest.param({"work_refs": [f"R-{i}" for i in range(20)]}, id="20 work refs"),
        pytest.param({"work_refs": ["x" * 512]}, id="512-character work ref"),
        pytest.param({"rollback_plan": "line 1\n\tline 2\r\n"}, id="multi-line rollback plan"),
        pytest.param({"rollback_plan": "x" * MAX_TEXT}, id="rollback plan at the length limit"),
        pytest.param({"risk": None}, id="no risk outside production"),
        pytest.param({"risk": "   "}, id="blank risk outside production"),
        pytest.param({"requester": "Zoë Ångström"}, id="non-ASCII requester"),
        pytest.param({"rollback_plan": "'; DROP TABLE deployments; --"}, id="SQL in free text"),
    ],
)
def test_a_body_at_the_edge_of_the_rules_is_accepted(overrides):
    validate_new_deployment(create_body(**overrides))


@pytest.mark.parametrize("risk", [None, "", "   "], ids=["missing", "empty", "blank"])
def test_production_requires_a_risk(risk):
    body = create_body(environment="production", risk=risk)
    if risk is None:
        body.pop("risk", None)
    assert "risk" in problems_of(body)


def test_production_with_a_risk_is_accepted():
    new = validate_new_deployment(create_body(environment="production", risk="medium"))
    assert new.risk == "medium"


def test_the_production_set_is_configurable_and_replaces_the_default():
    body = create_body(environment="production", risk=None)
    assert validate_new_deployment(body, ("prod", "live")).environment == "production"
    assert "risk" in problems_of(create_body(environment="live", risk=None), ("prod", "live"))


def test_every_problem_is_reported_at_once():
    problems = problems_of({"service": "Bad Name", "version": "", "work_refs": [], "colour": "red"})
    assert set(problems) == {"service", "environment", "version", "requester", "work_refs",
                             "rollback_plan", "colour"}


def test_unknown_fields_name_the_allowed_ones():
    assert "allowed fields" in problems_of(create_body(extra=1))["extra"]


def test_the_character_rules_are_exactly_unicode_control_whitespace_and_surrogates():
    # The validators scan with regular expressions; these must mean what the
    # rules say for every code point: control = category Cc, whitespace = str.isspace.
    import unicodedata

    from deployapi import lifecycle

    for code in range(0x110000):
        ch = chr(code)
        control = unicodedata.category(ch) == "Cc"
        assert bool(lifecycle._CONTROL.search(ch)) == control
        assert bool(lifecycle._CONTROL_BUT_BREAKS.search(ch)) == (control and ch not in "\t\n\r")
        assert bool(lifecycle._WHITESPACE_OR_CONTROL.search(ch)) == (control or ch.isspace())
        assert lifecycle._has_surrogate(ch) == (0xD800 <= code <= 0xDFFF)
