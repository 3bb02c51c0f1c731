"""The lifecycle vocabulary is named once, in lifecycle.py: the copies that must exist agree with it.

schema.sql's CHECK lists and views cannot take parameters, and the OpenAPI
document lists its enums: each copy is read here and held to the domain's
constants, so that a status or event type added in one place only fails.
"""

from __future__ import annotations

import json
import re
import sqlite3
from importlib import resources

import pytest

from deployapi import cdevents, lifecycle
from deployapi.repository import schema_sql, split_statements
from deployapi.repository.insights_sql import STEPS
from deployapi.repository.rows import sql_strings

STRING_LITERAL = re.compile(r"'((?:[^']|'')*)'")


def schema_objects() -> dict[str, str]:
    """Each table, view and trigger of a fresh schema.sql: its SQL without comments."""
    conn = sqlite3.connect(":memory:")
    try:
        for statement in split_statements(schema_sql()):
            conn.execute(statement)
        return {name: re.sub(r"--[^\n]*", "", sql) for name, sql in
                conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")}
    finally:
        conn.close()


def check_list(sql: str, column: str) -> list[str]:
    """The values of ``CHECK (column IN (...))`` in a table's SQL, in order."""
    [values] = re.findall(rf"CHECK \({column} IN \(([^)]*)\)\)", sql)
    return [literal.replace("''", "'") for literal in STRING_LITERAL.findall(values)]


def openapi() -> dict:
    return json.loads(resources.files("deployapi").joinpath("openapi.json").read_text(encoding="utf-8"))


def disagreements() -> list[str]:
    """Every copy of the vocabulary that differs from lifecycle.py's constants (empty when all agree)."""
    objects = schema_objects()
    document = openapi()
    schemas = document["components"]["schemas"]
    [events_type] = [p["schema"]["enum"] for p in document["paths"]["/events"]["get"]["parameters"]
                     if p.get("name") == "type"]
    copies = {
        "schema.sql deployments.status CHECK": (check_list(objects["deployments"], "status"), lifecycle.STATUSES),
        "schema.sql deployment_events.type CHECK": (check_list(objects["deployment_events"], "type"),
                                                    lifecycle.EVENT_TYPES),
        "schema.sql deployment_steps.step CHECK": (check_list(objects["deployment_steps"], "step"), STEPS),
        "openapi Status": (schemas["Status"]["enum"], lifecycle.STATUSES),
        "openapi Event.type": (schemas["Event"]["properties"]["type"]["enum"], lifecycle.EVENT_TYPES),
        "openapi GET /events type": (events_type, lifecycle.EVENT_TYPES),
        "openapi TransitionProblem.action": (
            schemas["TransitionProblem"]["allOf"][1]["properties"]["action"]["enum"], lifecycle.ACTIONS),
        "openapi InFlightDeployment.status": (
            schemas["InFlightDeployment"]["properties"]["status"]["enum"], lifecycle.IN_FLIGHT_STATUSES),
        "openapi ApprovalClosedContent.decision": (
            schemas["ApprovalClosedContent"]["properties"]["decision"]["enum"], lifecycle.REVIEW_EVENT_TYPES),
    }
    return [f"{where}: {list(found)} != {list(expected)}" for where, (found, expected) in copies.items()
            if list(found) != list(expected)]


def test_schema_checks_and_openapi_enums_agree_with_the_lifecycle_vocabulary():
    assert disagreements() == []


def test_a_status_added_to_lifecycle_only_is_caught(monkeypatch):
    monkeypatch.setattr(lifecycle, "STATUSES", (*lifecycle.STATUSES, "paused"))
    found = disagreements()
    assert any(line.startswith("schema.sql deployments.status CHECK") for line in found)
    assert any(line.startswith("openapi Status") for line in found)


def test_an_event_type_added_to_lifecycle_only_is_caught(monkeypatch):
    monkeypatch.setattr(lifecycle, "EVENT_TYPES", (*lifecycle.EVENT_TYPES, "paused"))
    assert {line.split(":")[0] for line in disagreements()} == {
        "schema.sql deployment_events.type CHECK", "openapi Event.type", "openapi GET /events type"}


@pytest.mark.parametrize("name", ["deployment_step_rows", "deployment_events_derive"])
def test_the_views_and_triggers_name_only_the_domains_statuses_event_types_and_steps(name):
    # A view or trigger body cannot be bound from lifecycle.py: every name it
    # spells out must at least be one the domain (or deployment_steps) knows.
    words = {literal for literal in STRING_LITERAL.findall(schema_objects()[name]) if re.fullmatch(r"[a-z_]+", literal)}
    assert words
    assert words <= {*lifecycle.STATUSES, *lifecycle.EVENT_TYPES, *STEPS}


def test_the_fixed_content_trigger_and_the_deployments_table_cover_every_creation_field():
    # schema.sql spells the creation fields out twice (the columns, and the
    # trigger that refuses to change them), lifecycle.CREATE_FIELDS once.
    objects = schema_objects()
    [listed] = re.findall(r"BEFORE UPDATE OF (.*?)\s+ON deployments", objects["deployments_creation_is_fixed"], re.S)
    fixed = {column.strip() for column in listed.split(",")}
    assert fixed - set(lifecycle.CREATE_FIELDS) == {"id", "created_at", "required_approvals", "policy_digest"}
    assert set(lifecycle.CREATE_FIELDS) <= fixed
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(objects["deployments"])
        columns = {row[1] for row in conn.execute("PRAGMA table_info(deployments)")}
    finally:
        conn.close()
    assert set(lifecycle.CREATE_FIELDS) <= columns
    # What changes after creation is the status and the review, and what a rollback went back to.
    assert columns - fixed == {"status", "reviewed_by", "reviewed_at", "updated_at", "approvals", "rolled_back_to"}


def test_the_derived_groups_follow_the_transition_table():
    assert lifecycle.OUTCOME_STATUSES == (lifecycle.SUCCEEDED, lifecycle.FAILED, lifecycle.ROLLED_BACK)
    assert lifecycle.CHANGE_STATUSES == (lifecycle.STARTED, *lifecycle.OUTCOME_STATUSES)
    assert lifecycle.REVIEW_EVENT_TYPES == (lifecycle.APPROVED, lifecycle.REJECTED)
    assert set(lifecycle.IN_FLIGHT_STATUSES).isdisjoint({*lifecycle.TERMINAL_STATUSES, *lifecycle.OUTCOME_STATUSES})


def test_sql_strings_quotes_each_value_as_one_sqlite_string():
    values = ("started", "it's", "")
    conn = sqlite3.connect(":memory:")
    try:
        assert conn.execute(f"SELECT {sql_strings(*values)}").fetchone() == values
    finally:
        conn.close()


def test_the_cdevents_mapping_covers_every_event_type_and_its_own_types_are_the_documented_ones():
    assert cdevents.CDEVENT_MAPPED | set(cdevents.OWN_TYPES) == set(lifecycle.EVENT_TYPES)
    assert not cdevents.CDEVENT_MAPPED & set(cdevents.OWN_TYPES)
    schemas = openapi()["components"]["schemas"]
    own = schemas["CloudEventDeployapi"]["allOf"][1]["properties"]["type"]["enum"]
    assert own == [cdevents.OWN_TYPES[t] for t in lifecycle.EVENT_TYPES if t in cdevents.OWN_TYPES]
    assert set(own) <= set(schemas["CloudEventEnvelope"]["properties"]["type"]["enum"])
