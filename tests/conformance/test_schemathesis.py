"""Property-based conformance: Schemathesis drives the real WSGI app from the document it serves.

Every operation gets the examples, coverage (boundary values, wrong types,
missing and duplicate parameters, undocumented methods, wrong media types) and
fuzzing phases in positive and negative mode; then a stateful run follows the
document's links (create -> get / action -> next action / events), each
scenario on an empty database.  Every response must pass every built-in check:
no 5xx, documented status, content type, headers and body, schema-violating
requests rejected, undocumented methods answered 405 with ``Allow``.

Budget: about a minute on two cores, some thousands of requests; the totals are
printed at the end of the pytest run.  Generation is derandomised so CI runs the
same cases every time; raise the budget below to explore further.
"""

from __future__ import annotations

import re
import time
import unicodedata
import uuid
from datetime import datetime, timedelta, timezone

import hypothesis
import pytest
import schemathesis

from deployapi.app import load_openapi
from deployapi.insights import MAX_WINDOW

FUZZING_EXAMPLES = 50  # per operation, on top of the examples and coverage phases
STATEFUL_SCENARIOS = 60
STATEFUL_STEPS = 20

# Changes to Schemathesis' defaults, each with its reason.
CONFIG = schemathesis.Config.from_dict({
    "generation": {"deterministic": True, "database": "none"},
    "phases": {
        # "Each parameter may appear at most once": repeated parameters must be a 422.
        "coverage": {"generate-duplicate-query-parameters": True},
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
    "checks": {
        # Disabled and replaced by `schema_valid_requests_are_accepted` below: a
        # few rules cannot be written in JSON Schema, so a schema-valid request
        # can still be refused for them.  The replacement allows exactly those
        # refusals and nothing else.
        "positive_data_acceptance": {"enabled": False},
        # Schemathesis' default list plus 413: a body over 64 KiB is refused for
        # its size before it is parsed, which is a rejection too.
        "negative_data_rejection": {
            "expected-statuses": ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428",
                                  "429", "5xx"],
        },
    },
})

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


# --- positive data: accepted unless a rule JSON Schema cannot express refuses it ------


ACCEPTED = {401, 403, 404, 409, 429}  # Schemathesis' list for positive data (5xx is caught by not_a_server_error)
MAX_BODY_BYTES = 65_536
_RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
                      r"([Zz]|[+-][0-9]{2}:[0-9]{2})")


def _instant(text: str) -> datetime | None:
    """The UTC instant of a schema-valid created_after/created_before, None if outside years 1-9999."""
    year, month, day, hour, minute, second, fraction, offset = _RFC3339.fullmatch(text).groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), min(int(second), 59),
                          tzinfo=timezone.utc)
        if offset not in ("Z", "z"):
            sign = 1 if offset[0] == "+" else -1
            moment -= sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
        return moment + timedelta(microseconds=int((fraction or "0").ljust(9, "0")) / 1000)
    except (ValueError, OverflowError):
        return None


def _inexpressible_refusal(case, response) -> bool:
    """Whether a schema-valid request was refused only for a rule the document states in words.

    The rules: a cursor must be one the API issued; an Idempotency-Key may not
    be sent again with a different request; created_before must be later
    than created_after, and both must be instants in years 1-9999 once converted
    to UTC, as must updated_before and updated_after; the same for the DORA
    window's since and until, where a missing until is now (so a since alone
    must be in the past); committed_at must be such an instant and not later
    than now; a work_ref must not be blank once trimmed; work_refs must differ
    after trimming; the whole body must fit in 64 KiB (10,000 non-ASCII
    characters can be 60 KB of JSON escapes); a requester or actor must be
    at most 128 characters in NFKC form (one character can spell 18).
    """
    if response.status_code == 413:
        return len(response.request.body or b"") > MAX_BODY_BYTES
    problem = response.json()
    if response.status_code == 400 and problem["code"] == "invalid_cursor":
        return "cursor" in (case.query or {})
    if response.status_code == 422 and problem["code"] == "idempotency_key_reused":
        return "Idempotency-Key" in (case.headers or {})
    if response.status_code != 422:
        return False
    for error in problem["errors"]:
        field = error["field"]
        if field.startswith("work_refs["):
            refs = [ref.strip() for ref in case.body["work_refs"]]
            index = int(field[len("work_refs["):-1])
            if refs[index] not in refs[:index]:
                return False
        elif field in ("created_after", "created_before", "updated_after", "updated_before"):
            value = _instant(case.query[field])
            low = field.replace("_before", "_after")
            after = _instant(case.query[low]) if low != field and low in case.query else None
            if value is None or (after is not None and after >= value):
                continue
            return False
        elif field == "committed_at":
            # An instant in years 1-9999, and not later than the creation.
            value = _instant(case.body[field])
            if value is None or value > datetime.now(timezone.utc):
                continue
            return False
        elif field == "work_ref":
            if not case.query[field].strip():  # blank once trimmed, as Python trims
                continue
            return False
        elif field in ("requester", "actor"):
            value = unicodedata.normalize("NFKC", case.body[field].strip()).strip()
            if len(value) <= 128:
                return False
        elif field in ("since", "until"):
            if _dora_window_refused(case.query, field):
                continue
            return False
        else:
            return False
    return True


def _dora_window_refused(query: dict, field: str) -> bool:
    """Whether GET /metrics/dora may refuse ``field`` for its window: not an instant in years 1-9999, a
    window that does not end after it starts, with the defaults applied (until: now; since: 30 days
    before until, but no earlier than the start of year 1, so only an until at that very start), or a
    since more than MAX_WINDOW before until."""
    value = _instant(query[field])
    if value is None:
        return True
    if field == "until":
        since = _instant(query["since"]) if "since" in query else datetime(1, 1, 1, tzinfo=timezone.utc)
        return since is not None and since >= value
    if "until" in query:  # a since at or after until is reported on until
        until = _instant(query["until"])
        return until is None or until - value > MAX_WINDOW
    now = datetime.now(timezone.utc)
    return value >= now or now - value > MAX_WINDOW


def schema_valid_requests_are_accepted(ctx, response, case):
    """Like Schemathesis' positive_data_acceptance, minus the refusals JSON Schema cannot predict."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 400 or status in ACCEPTED or status >= 500 or _inexpressible_refusal(case, response):
        return None
    raise AssertionError(f"a schema-valid request was refused with {status}: {response.text[:2000]}")


# --- the run ------------------------------------------------------------------------------


@schema.parametrize()
@hypothesis.settings(max_examples=FUZZING_EXAMPLES, **SETTINGS)
def test_every_operation_answers_as_documented(case, app_under_test, tally):
    response = case.call_and_validate(app=app_under_test, additional_checks=[schema_valid_requests_are_accepted])
    tally.record("stateless", case, response)


def test_linked_operations_answer_as_documented(app_under_test, tally):
    served = schemathesis.openapi.from_wsgi("/openapi.json", app_under_test, config=CONFIG)

    class Workflow(served.as_state_machine()):
        def setup(self):
            app_under_test.reset()

        def before_call(self, case):
            # Generated keys repeat (the document's example, for one), and a key sent
            # again with another request is refused by design: give each call its
            # own key, as a client does, so that the scenario can move on.
            if "Idempotency-Key" in case.headers:
                case.headers["Idempotency-Key"] = uuid.uuid4().hex

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            tally.record("stateful", case, response)
            checks = [schema_valid_requests_are_accepted, *(additional_checks or [])]
            super().validate_response(response, case, additional_checks=checks, **kwargs)

    Workflow.run(settings=hypothesis.settings(max_examples=STATEFUL_SCENARIOS, stateful_step_count=STATEFUL_STEPS,
                                              **SETTINGS))

    # The links were followed, not just declared: create -> action -> events.
    assert 201 in tally.statuses("stateful", "POST /deployments")
    assert 200 in tally.statuses("stateful", "POST /deployments/{deployment_id}/approve")
    assert 200 in tally.statuses("stateful", "POST /deployments/{deployment_id}/start")
    assert 200 in tally.statuses("stateful", "GET /deployments/{deployment_id}/events")
