"""Property-based conformance: Schemathesis drives the real WSGI app from the document it serves.

Every operation gets the examples, coverage (boundary values, wrong types,
missing and duplicate parameters, undocumented methods, wrong media types) and
fuzzing phases in positive and negative mode; then a stateful run follows the
document's links (create -> get / action -> next action / events), each
scenario on an empty database.  Every response must pass every built-in check,
positive_data_acceptance included: no 5xx, documented status, content type,
headers and body, schema-valid requests accepted and schema-violating ones
rejected, undocumented methods answered 405 with ``Allow``.  The settings and
the hooks are those of schemathesis.toml beside this file, which a run by hand
uses too: one key per request, and the refusals no schema can state excused
(schemathesis_hooks.py, docs/api.md).

Budget: about half a minute on two cores, some thousands of requests; the
totals are printed at the end of the pytest run.  Generation is derandomised
so CI runs the same cases every time; raise the budget below to explore further.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import hypothesis
import pytest
import schemathesis
import schemathesis_hooks  # noqa: F401 (registers the hooks that schemathesis.toml names)

from deployapi.app import load_openapi

FUZZING_EXAMPLES = 50  # per operation, on top of the examples and coverage phases
STATEFUL_SCENARIOS = 60
STATEFUL_STEPS = 20

# The shared settings, and this run's changes to them, each with its reason.
SHARED = tomllib.loads((Path(__file__).with_name("schemathesis.toml")).read_text())
del SHARED["hooks"]  # imported above: the path in the file is relative to the repository's root
RUN = {
    "generation": {"deterministic": True, "database": "none"},
    "phases": {
        "stateful": {
            # Negative inputs are already sent to every operation by the stateless
            # test; in the stateful run every step should move a deployment along.
            "generation": {"mode": "positive"},
            # Only the links the document declares: Schemathesis would infer some
            # fifty more (from every response holding a Deployment to every
            # action), spreading the same budget thinner.
            "inference": {"algorithms": []},
        },
    },
}


def merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied, tables merged key by key."""
    result = dict(base)
    for key, value in changes.items():
        result[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return result


CONFIG = schemathesis.Config.from_dict(merged(SHARED, RUN))
SETTINGS = dict(deadline=None, database=None, derandomize=True)


# Loaded at import, so that pytest reports each operation as a test of its own;
# the requests go to the app in the `app_under_test` fixture.  The stateful test
# loads the document the app serves.
schema = schemathesis.openapi.from_dict(load_openapi(), config=CONFIG)


@pytest.fixture(scope="module", autouse=True)
def timed(tally):
    start = time.perf_counter()
    yield
    tally.seconds += time.perf_counter() - start


# --- the run ------------------------------------------------------------------------------


@schema.parametrize()
@hypothesis.settings(max_examples=FUZZING_EXAMPLES, **SETTINGS)
def test_every_operation_answers_as_documented(case, app_under_test, tally):
    response = case.call_and_validate(app=app_under_test)
    tally.record("stateless", case, response)


def test_linked_operations_answer_as_documented(app_under_test, tally):
    served = schemathesis.openapi.from_wsgi("/openapi.json", app_under_test, config=CONFIG)

    class Workflow(served.as_state_machine()):
        def setup(self):
            app_under_test.reset()

        def validate_response(self, response, case, **kwargs):
            tally.record("stateful", case, response)
            super().validate_response(response, case, **kwargs)

    Workflow.run(settings=hypothesis.settings(max_examples=STATEFUL_SCENARIOS, stateful_step_count=STATEFUL_STEPS,
                                              **SETTINGS))

    # The links were followed, not just declared: create -> action -> events.
    assert 201 in tally.statuses("stateful", "POST /deployments")
    assert 200 in tally.statuses("stateful", "POST /deployments/{deployment_id}/approve")
    assert 200 in tally.statuses("stateful", "POST /deployments/{deployment_id}/start")
    assert 200 in tally.statuses("stateful", "GET /deployments/{deployment_id}/events")
