"""Schemathesis hooks for deployapi: keys used as the API asks, and the refusals no schema can state.

Loaded by tests/conformance/schemathesis.toml, so a `schemathesis run` with
that file and the project's conformance test (test_schemathesis.py) apply the
same rules.  docs/api.md ("Checking the API with Schemathesis") lists them with
their reasons:

- An ``Idempotency-Key`` is for one request.  Schemathesis draws keys without
  regard to the request (``0`` for one operation after another), and a key
  sent again with a different request is refused by design.  Each valid key is
  therefore made the request's own: the drawn key plus a digest of the method,
  path and body.  The same request sent twice keeps its key, so replays are
  still exercised.
- Positive data refused only for a rule that JSON Schema cannot express is not
  a failure of positive_data_acceptance: a cursor the API did not issue for
  these filters, ranges whose bounds are reversed, instants outside years
  1-9999 once converted to UTC, a DORA window over 92 days or one whose default
  end (now) is before its start, a commit time later than now, work_refs equal
  once trimmed, an identity over 128 characters once in NFKC form, and a body
  over 64 KiB.  Each rule is checked against the request that was sent, and a
  refusal is excused only when every field it names is one of these.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import unicodedata
from collections import Counter
from datetime import datetime, timedelta, timezone

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

IDEMPOTENCY_KEY = "Idempotency-Key"
MAX_KEY_LENGTH = 255
_VALID_KEY = re.compile(r"[\x20-\x7e]*[\x21-\x7e][\x20-\x7e]*")
MAX_BODY_BYTES = 65_536
MAX_IDENTITY = 128
MAX_DORA_WINDOW = timedelta(days=92)
LISTING = "GET /deployments"
DORA = "GET /metrics/dora"
_RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
                      r"([Zz]|[+-][0-9]{2}:[0-9]{2})")

# Which rule excused how many refusals, for the conformance test's summary.
EXCUSED: Counter[str] = Counter()
# Every next_cursor the listing returned, with the filters it was issued for.
_issued_cursors: set[tuple[str, tuple]] = set()
_lock = threading.Lock()


# --- keys: one per request ----------------------------------------------------------


@schemathesis.hook
def before_call(context, case, kwargs):
    """Make each valid Idempotency-Key the request's own (invalid ones stay, to be refused)."""
    headers = case.headers or {}
    key = headers.get(IDEMPOTENCY_KEY)
    if isinstance(key, str) and len(key) <= MAX_KEY_LENGTH and _VALID_KEY.fullmatch(key):
        digest = hashlib.sha256(json.dumps([case.method, case.formatted_path, case.media_type, _plain(case.body)],
                                           sort_keys=True, default=repr).encode()).hexdigest()[:32]
        headers[IDEMPOTENCY_KEY] = f"{key[:MAX_KEY_LENGTH - len(digest) - 1]}.{digest}"


def _plain(body):
    """The body as JSON-able data (Schemathesis marks a missing body with a sentinel)."""
    return body if isinstance(body, (dict, list, str, int, float, bool, type(None))) else repr(body)


# --- cursors: remember what the API issued --------------------------------------------


@schemathesis.hook
def after_call(context, case, response):
    if case.operation.label == LISTING and response.status_code == 200:
        cursor = response.json().get("next_cursor")
        if cursor:
            with _lock:
                _issued_cursors.add((cursor, _filters(case.query)))


def _filters(query) -> tuple:
    """The listing filters of a query: everything but limit and cursor, in a comparable form."""
    return tuple(sorted((name, json.dumps(value, sort_keys=True, default=str))
                        for name, value in (query or {}).items() if name not in ("limit", "cursor")))


# --- refusals the schema cannot predict ------------------------------------------------


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keep every failure but a schema-valid request refused for a rule JSON Schema cannot state."""
    if not isinstance(failure, RejectedPositiveData):
        return True
    rule = refused_by_design(case, response)
    if rule is None:
        return True
    with _lock:
        EXCUSED[rule] += 1
    return False


def refused_by_design(case, response) -> str | None:
    """The rule that refused this schema-valid request, if it is one no schema can state; else None."""
    status = response.status_code
    if status == 413:
        return "body over 64 KiB" if len(response.request.body or b"") > MAX_BODY_BYTES else None
    problem = response.json()
    if status == 400 and problem.get("code") == "invalid_cursor":
        cursor = (case.query or {}).get("cursor")
        with _lock:
            issued = (cursor, _filters(case.query)) in _issued_cursors
        return "a cursor the API did not issue for these filters" if cursor and not issued else None
    if status != 422 or problem.get("code") != "validation_failed":
        return None
    rules = {_field_rule(case, error["field"]) for error in problem["errors"]}
    if None in rules:
        return None
    return " + ".join(sorted(rules))


def _field_rule(case, field: str) -> str | None:
    query, body = case.query or {}, case.body if isinstance(case.body, dict) else {}
    label = case.operation.label
    if field.startswith("work_refs["):
        refs = [ref.strip() for ref in body.get("work_refs", ())]
        index = int(field[len("work_refs["):-1])
        return "work_refs equal once trimmed" if refs[index] in refs[:index] else None
    if field in ("created_after", "created_before", "updated_after", "updated_before"):
        value = _instant(query[field])
        if value is None:
            return "an instant outside years 1-9999 in UTC"
        low = field.replace("_before", "_after")
        after = _instant(query[low]) if low != field and low in query else None
        return "a range that ends before it starts" if after is not None and after > value else None
    if field == "committed_at":
        value = _instant(body[field])
        if value is None:
            return "an instant outside years 1-9999 in UTC"
        return "a commit time later than now" if value > datetime.now(timezone.utc) else None
    if field in ("requester", "actor"):
        value = body.get(field, query.get(field))
        if isinstance(value, str) and len(unicodedata.normalize("NFKC", value.strip()).strip()) > MAX_IDENTITY:
            return "an identity over 128 characters in NFKC form"
        return None
    if field in ("since", "until") and label == DORA:
        return _dora_window_rule(query, field)
    if field == "since" and label == "GET /events":
        return "an instant outside years 1-9999 in UTC" if _instant(query[field]) is None else None
    return None


def _dora_window_rule(query: dict, field: str) -> str | None:
    """Why GET /metrics/dora may refuse ``field`` for its window, with the defaults applied.

    until defaults to now; since to 30 days before until, but no earlier than the
    start of year 1 (so it is never after until); since may be at most 92 days
    before until.
    """
    value = _instant(query[field])
    if value is None:
        return "an instant outside years 1-9999 in UTC"
    if field == "until":
        since = _instant(query["since"]) if "since" in query else None
        return "a range that ends before it starts" if since is not None and since > value else None
    if "until" in query:  # a since after until is reported on until
        until = _instant(query["until"])
        if until is None or until - value > MAX_DORA_WINDOW:
            return "a DORA window over 92 days"
        return None
    now = datetime.now(timezone.utc)
    if value > now:
        return "a DORA window whose default end (now) is before its start"
    return "a DORA window over 92 days" if now - value > MAX_DORA_WINDOW else None


def _instant(text: str) -> datetime | None:
    """The UTC instant of a schema-valid RFC 3339 date-time as the API reads it; None if outside years 1-9999.

    Written apart from deployapi.timestamps, so that a bug there is not excused here:
    a leap second (:60) is the last microsecond of its minute, and digits past
    the microsecond round up.
    """
    year, month, day, hour, minute, second, fraction, offset = _RFC3339.fullmatch(text).groups()
    nanoseconds = int((fraction or "0").ljust(9, "0"))
    try:
        if second == "60":
            moment = datetime(int(year), int(month), int(day), int(hour), int(minute), 59, 999_999,
                              tzinfo=timezone.utc)
        else:
            moment = (datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                               tzinfo=timezone.utc) + timedelta(microseconds=-(-nanoseconds // 1000)))
        if offset not in ("Z", "z"):
            sign = 1 if offset[0] == "+" else -1
            moment -= sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
    except (ValueError, OverflowError):
        return None
    return moment
