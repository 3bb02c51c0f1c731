"""Hostile input: fuzzed raw bodies and query strings must get a documented 4xx and change nothing.

Hypothesis sends the in-process app raw request bodies (arbitrary bytes, invalid
UTF-8, JSON of the wrong shape, deep nesting, huge numbers, NaN, duplicate keys,
lone surrogates, control characters and over-long strings in every field, odd
Content-Types) and raw query strings.  An oracle written from the contract (and,
where the contract is silent, from the choices in docs/api.md) decides which
statuses are acceptable; a 5xx never is.  Every refused request must leave the
SQLite file as it was, read directly with sqlite3.  Last, SQL metacharacters in
every string field and filter must round-trip as plain data.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client, create_environ, run_wsgi_app
from werkzeug.wrappers import Response

import deployapi
from deployapi import identities

pytestmark = pytest.mark.reliability

FUZZ = settings(
    max_examples=250,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# --- the contract, written out for this test ---------------------------------------

MAX_BODY = 65_536
STATUSES = ("pending_approval", "approved", "rejected", "started", "succeeded", "failed", "rolled_back")
# action -> (statuses it is allowed from, whether a note is required)
LIFECYCLE = {
    "approve": ({"pending_approval"}, False),
    "reject": ({"pending_approval"}, True),
    "start": ({"approved"}, False),
    "succeed": ({"started"}, False),
    "fail": ({"started"}, True),
    "rollback": ({"started", "succeeded", "failed"}, True),
}
# The pipeline metadata (api-contract.md, "Pipeline metadata"): all optional.
PIPELINE_FIELDS = ("commit_sha", "repository", "ref", "committed_at", "links", "labels")
CREATE_FIELDS = ("service", "environment", "version", "requester", "work_refs", "rollback_plan", "risk",
                 *PIPELINE_FIELDS)
ACTION_FIELDS = ("actor", "note")
LIST_PARAMETERS = ("service", "environment", "status", "requester", "created_after", "created_before", "limit",
                   "cursor", "version", "work_ref", "commit_sha", "label", "updated_after", "updated_before")
# The one listing parameter that may repeat, and how often.
REPEATABLE = {"label": 10}
BODY_CODES = {400: "malformed_json", 403: "self_approval", 404: "not_found", 409: "invalid_transition",
              413: "payload_too_large", 415: "unsupported_media_type", 422: "validation_failed"}
QUERY_CODES = {400: "invalid_cursor", 422: "validation_failed"}
SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
COMMIT = re.compile(r"[0-9a-f]{7,64}")
LABEL_KEY = re.compile(r"[a-z0-9][a-z0-9._/-]{0,62}")
RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})")
# committed_at values and what the API returns for them (None: refused).  The server's clock
# is the real one, so a commit must be in the past: these are long past or far ahead.
COMMITTED = {"2020-01-01T00:00:00Z": "2020-01-01T00:00:00.000000Z",
             "2000-02-29T23:59:59.5+05:30": "2000-02-29T18:29:59.500000Z",
             "1999-12-31t23:59:59.1234567z": "1999-12-31T23:59:59.123457Z",
             "2999-12-31T23:59:59Z": None, "2020-13-01T00:00:00Z": None, "2020-01-01T00:00:00": None,
             "2020-01-01": None, "yesterday": None}

# Content-Type header -> whether it means JSON (None: header not sent).
CONTENT_TYPES = {
    "application/json": True,
    "application/json; charset=utf-8": True,
    "Application/JSON; charset=UTF-8": True,
    "application/json;charset=utf8": True,
    'application/json; charset="utf-8"': True,
    None: False,
    "": False,
    "text/plain": False,
    "text/json": False,
    "application/x-www-form-urlencoded": False,
    "multipart/form-data; boundary=xyz": False,
    "application/merge-patch+json": False,
    "application/problem+json": False,
    "application/jsonx": False,
    "application/json; charset=latin-1": False,
    "application/json; charset=utf-16": False,
    "*/*": False,
    "application/*": False,
    "json": False,
}

# --- the oracle ---------------------------------------------------------------------
# Verdicts are tri-state: True (valid), False (invalid), None (the contract allows either).


def is_control(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc"


def has_surrogate(value: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in value)


def all_of(*verdicts: bool | None) -> bool | None:
    if False in verdicts:
        return False
    return None if None in verdicts else True


def slug_ok(value: Any) -> bool:
    return isinstance(value, str) and SLUG.fullmatch(value) is not None


def version_ok(value: Any) -> bool:
    return (isinstance(value, str) and not has_surrogate(value) and 1 <= len(value) <= 128
            and not any(ch.isspace() or is_control(ch) for ch in value))


def trimmed_ok(value: Any, max_length: int) -> bool | None:
    """requester, actor, a work ref: trimmed, then 1..max_length characters and no control characters."""
    if not isinstance(value, str) or has_surrogate(value):
        return False
    trimmed = value.strip()
    if not 1 <= len(trimmed) <= max_length or any(is_control(ch) for ch in trimmed):
        return False
    # Control characters that str.strip() removes (\x1c-\x1f, \x85, \t ...) are gone after
    # trimming; whether they were allowed before it, the contract does not say.
    return None if any(is_control(ch) for ch in value) else True


def identity_ok(value: Any) -> bool | None:
    """requester, actor: the identity rule (pinned character by character in tests/unit/test_identities.py)."""
    if not isinstance(value, str) or has_surrogate(value):
        return False
    try:
        identities.canonical(value)
    except identities.IdentityRefused:
        return False
    return None if any(is_control(ch) for ch in value) else True


def text_ok(value: Any, *, required: bool) -> bool:
    """rollback_plan, risk, note: null means not sent; tab, CR and LF are the only controls allowed."""
    if value is None:
        return not required
    if not isinstance(value, str) or has_surrogate(value):
        return False
    if required and not value.strip():
        return False
    return len(value) <= 10_000 and not any(is_control(ch) and ch not in "\t\n\r" for ch in value)


def work_refs_ok(value: Any) -> bool | None:
    if not isinstance(value, list) or not 1 <= len(value) <= 20:
        return False
    verdicts = [trimmed_ok(item, 512) for item in value]
    if False in verdicts:
        return False
    trimmed = [item.strip() for item in value]
    return all_of(*verdicts, len(set(trimmed)) == len(trimmed))


def plain_ok(value: Any, max_length: int, refused) -> bool:
    """repository, ref: 1..max_length characters in which ``refused`` finds no character, not blank."""
    return (isinstance(value, str) and not has_surrogate(value) and 1 <= len(value) <= max_length
            and not any(refused(ch) for ch in value) and bool(value.strip()))


def committed_at_ok(value: Any) -> bool | None:
    if not isinstance(value, str) or has_surrogate(value):
        return False
    if value in COMMITTED:
        return COMMITTED[value] is not None
    return None if RFC3339.fullmatch(value) else False  # a date-time whose day or time may not exist


def url_ok(value: Any) -> bool | None:
    if (not isinstance(value, str) or has_surrogate(value) or len(value) > 2048
            or any(ch.isspace() or is_control(ch) for ch in value)):
        return False
    if re.match(r"https?://[^/]", value):
        return True
    return None if re.match(r"(?i)https?://[^/]", value) else False  # "HTTPS://": the contract does not say


def links_ok(value: Any) -> bool | None:
    """At most 20 distinct {"rel": slug, "url": http(s) URL} objects."""
    if not isinstance(value, list) or len(value) > 20:
        return False
    verdicts: list[bool | None] = []
    for link in value:
        if not isinstance(link, dict) or set(link) != {"rel", "url"}:
            return False
        verdicts += [slug_ok(link["rel"]), url_ok(link["url"])]
    pairs = [(link["rel"], link["url"]) for link in value]
    return all_of(*verdicts, len(set(pairs)) == len(pairs))


def labels_ok(value: Any) -> bool:
    return isinstance(value, dict) and len(value) <= 32 and all(
        LABEL_KEY.fullmatch(key) and isinstance(text, str) and not has_surrogate(text) and len(text) <= 256
        and not any(is_control(ch) for ch in text) for key, text in value.items())


def optional(value: Any, rule) -> bool | None:
    """null means not sent, for every pipeline field."""
    return True if value is None else rule(value)


def create_fields_ok(payload: dict) -> bool | None:
    environment = payload.get("environment")
    return all_of(
        all(name in CREATE_FIELDS for name in payload),
        optional(payload.get("commit_sha"), lambda v: isinstance(v, str) and COMMIT.fullmatch(v) is not None),
        optional(payload.get("repository"), lambda v: plain_ok(v, 512, lambda ch: ch.isspace() or is_control(ch))),
        optional(payload.get("ref"), lambda v: plain_ok(v, 256, is_control)),
        optional(payload.get("committed_at"), committed_at_ok),
        optional(payload.get("links"), links_ok),
        optional(payload.get("labels"), labels_ok),
        slug_ok(payload.get("service")),
        slug_ok(environment),
        version_ok(payload.get("version")),
        identity_ok(payload.get("requester")),
        work_refs_ok(payload.get("work_refs")),
        text_ok(payload.get("rollback_plan"), required=True),
        text_ok(payload.get("risk"), required=environment == "production"),
    )


def action_fields_ok(payload: dict, action: str) -> bool | None:
    return all_of(
        all(name in ACTION_FIELDS for name in payload),
        identity_ok(payload.get("actor")),
        text_ok(payload.get("note"), required=LIFECYCLE[action][1]),
    )


class Malformed(Exception):
    """The body is not one acceptable JSON text."""


def _pairs(pairs):
    if len({k for k, _ in pairs}) != len(pairs):
        raise Malformed("duplicate key")
    return dict(pairs)


def _constant(name):
    raise Malformed(name)


def parse_body(body: bytes) -> Any:
    """The JSON value of a body, by the contract's rules.

    :raises Malformed: not UTF-8, a BOM, not JSON, NaN/Infinity, duplicate keys, integers over 4,300 digits.
    :raises RecursionError: nested deeper than Python can parse.
    """
    try:
        text = body.decode("utf-8")
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError included
        raise Malformed(str(error)) from None


def nesting(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [child for v in level if isinstance(v, (list, dict))
                 for child in (v.values() if isinstance(v, dict) else v)]
    return depth


def body_statuses(content_type: str | None, body: bytes, fields_ok, success: int) -> set[int]:
    """The statuses the contract allows for a POST body, before existence and transitions are checked."""
    if len(body) > MAX_BODY:
        return {413}
    if not body:
        return {415} if content_type and not CONTENT_TYPES[content_type] else {400}
    if not CONTENT_TYPES[content_type]:
        return {415}
    try:
        value = parse_body(body)
    except Malformed:
        return {400}
    except RecursionError:
        return {400, 422}  # "nested too deeply": where exactly depends on the stack depth
    if not isinstance(value, dict):
        return {400}
    verdict = fields_ok(value)
    statuses = {success} if verdict else {422} if verdict is False else {success, 422}
    if nesting(value) > 100:
        statuses.add(400)  # the parser's depth limit is "about a thousand levels", minus the stack in use
    return statuses


# --- building raw bodies ----------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text written as is: numbers Python cannot hold, NaN, deep nesting."""

    text: str


@dataclass(frozen=True)
class Obj:
    """A JSON object as its pairs, so that a key can appear twice."""

    pairs: tuple[tuple[str, Any], ...]


def to_json(value: Any, ensure_ascii: bool) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, (Obj, dict)):
        pairs = value.pairs if isinstance(value, Obj) else value.items()
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=ensure_ascii)}: {to_json(v, ensure_ascii)}"
                               for k, v in pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json(v, ensure_ascii) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ensure_ascii)  # float("inf") becomes Infinity: invalid JSON


CONTROLS = [chr(c) for c in (*range(0x20), 0x7F, 0x85, 0x9F)]
ODD = ["\u00a0", "\u2028", "\u200b", "\ufeff", "\ud800", "\udfff", "\udc00\ud800", "\ud83d\ude80", "\U0001f680",
       "é", "ß", "İ", "\uffff", "\ufffd"]
SQLISH = ["'", '"', "--", ";", "%", "_", "\\", "' OR 1=1 --", "'; DROP TABLE deployments; --"]
BOUNDARY_LENGTHS = [62, 63, 64, 127, 128, 129, 511, 512, 513, 9_999, 10_000, 10_001, 40_000]
HUGE_NUMBERS = ["1e400", "-1e400", "1E+999999999", "1e-400", "-0", "0.0000000000000000000001", "9" * 4300,
                "9" * 4301, "1" * 10_000, "-" + "1" * 5_000, "1." + "0" * 5_000 + "1", "123456789012345678901234567890"]

printable = st.characters(exclude_categories=("Cc", "Cs"))
valid_text = st.text(printable, min_size=1, max_size=40).filter(lambda s: s.strip())
long_strings = st.builds(lambda ch, n: ch * n, st.sampled_from(["x", "é", " ", "\U0001f680", "'"]),
                         st.sampled_from(BOUNDARY_LENGTHS))
hostile_strings = st.one_of(
    st.text(max_size=20),
    st.sampled_from(CONTROLS + ODD + SQLISH + ["", " ", " \t\n ", "null", "production"]),
    long_strings,
    st.builds(lambda a, ch, b: a + ch + b, valid_text, st.sampled_from(CONTROLS + ODD), valid_text),
)
odd_numbers = st.sampled_from(["NaN", "Infinity", "-Infinity", *HUGE_NUMBERS]).map(Raw)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), hostile_strings, odd_numbers)
deep = st.builds(lambda n, shape: Raw(shape[0] * n + shape[1] + shape[2] * n),
                 st.sampled_from([2, 10, 100, 500, 900, 990, 1000, 1010, 1500, 3000, 10_000, 10_900]),
                 st.sampled_from([("[", "", "]"), ('{"a": ', "1", "}"), ("[{\"k\": ", "[]", "}]")]))
hostile_values = st.one_of(
    scalars,
    st.lists(hostile_strings, max_size=25),
    st.lists(scalars, max_size=5),
    st.dictionaries(hostile_strings, scalars, max_size=3),
    deep,
)
hostile_keys = st.one_of(st.sampled_from(["id", "status", "Service", "service ", " risk", "", "\x00", "\ud800",
                                          "__proto__", "risk\x00", "work_refs[0]"]), st.text(max_size=10))


services = st.one_of(st.sampled_from(["billing", "x_y", "a"]), st.from_regex(SLUG, fullmatch=True))
versions = st.one_of(
    st.sampled_from(["1.0", "2026.11.26-3f9c2e1", "v" * 128]),
    st.text(st.characters(exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), min_size=1, max_size=20)
    .filter(lambda s: not any(c.isspace() for c in s)),
)
names = st.one_of(st.sampled_from(["alice", " Bob ", "Straße", "ALICE", " alice "]), valid_text)
work_refs = st.lists(valid_text, min_size=1, max_size=20, unique_by=str.strip)
free_text = st.one_of(st.sampled_from(["Redeploy 1.0.", "line\none\ttab\r\n", "  "]), valid_text)
environments = st.sampled_from(["staging", "production", "prod", "dev-1"])
pipeline_values = {
    "commit_sha": st.from_regex(COMMIT, fullmatch=True),
    "repository": st.one_of(st.sampled_from(["acme/billing", "https://github.com/acme/billing", "r" * 512,
                                             "git@github.com:acme/billing.git"]),
                            st.text(st.characters(exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), min_size=1,
                                    max_size=30).filter(lambda s: not any(c.isspace() for c in s))),
    "ref": st.one_of(st.sampled_from(["main", "refs/heads/main", "release 1.4", "x" * 256]), valid_text),
    "committed_at": st.sampled_from([text for text, stored in COMMITTED.items() if stored]),
    "links": st.lists(st.fixed_dictionaries({"rel": st.from_regex(SLUG, fullmatch=True),
                                             "url": st.integers(0, 30).map(lambda n: f"https://ci.example/{n}")}),
                      max_size=20, unique_by=lambda link: (link["rel"], link["url"])),
    "labels": st.dictionaries(st.from_regex(LABEL_KEY, fullmatch=True), st.text(printable, max_size=40),
                              max_size=32),
}


@st.composite
def valid_create_payloads(draw) -> dict:
    """A create body the contract accepts (a blank risk outside production included)."""
    payload = {"service": draw(services), "environment": draw(environments), "version": draw(versions),
               "requester": draw(names), "work_refs": draw(work_refs), "rollback_plan": draw(valid_text)}
    if payload["environment"] == "production" or draw(st.booleans()):
        payload["risk"] = draw(valid_text if payload["environment"] == "production" else free_text)
    for field, values in pipeline_values.items():
        if draw(st.booleans()):
            payload[field] = draw(values)
    return payload


@st.composite
def valid_action_payloads(draw) -> dict:
    """An action body with a valid actor; the note may be missing, which some actions refuse."""
    payload = {"actor": draw(names)}
    note = draw(st.one_of(st.none(), st.just("omit"), free_text))
    if note != "omit":
        payload["note"] = note
    return payload


@st.composite
def mutated(draw, payloads, fields) -> Obj:
    """A valid payload with 0-3 hostile changes: replaced, injected, dropped, unknown or repeated fields."""
    pairs = list(draw(payloads).items())
    for _ in range(draw(st.integers(0, 3))):
        operation = draw(st.sampled_from(["replace", "inject", "number", "drop", "unknown", "repeat", "null"]))
        field = draw(st.sampled_from(fields))
        index = next((i for i, (name, _) in enumerate(pairs) if name == field), None)
        if operation == "unknown" or (index is None and operation != "drop"):
            pairs.append((draw(hostile_keys) if operation == "unknown" else field, draw(hostile_values)))
        elif operation == "replace":
            pairs[index] = (field, draw(hostile_values))
        elif operation == "null":
            pairs[index] = (field, None)
        elif operation == "number":
            pairs[index] = (field, draw(odd_numbers))
        elif operation == "drop":
            if index is not None:
                del pairs[index]
        elif operation == "repeat":
            pairs.append((field, draw(st.one_of(st.just(pairs[index][1]), hostile_values))))
        else:  # inject a control or odd character into a string (one work ref, link url or label value)
            value = pairs[index][1]
            char = draw(st.sampled_from(CONTROLS + ODD))
            where = draw(st.integers(0, 2))
            if isinstance(value, list) and value and isinstance(value[0], str):
                value = [*value]
                value[0] = inject(value[0], char, where)
            elif isinstance(value, list) and value and isinstance(value[0], dict) and "url" in value[0]:
                value = [{**value[0], "url": inject(str(value[0]["url"]), char, where)}, *value[1:]]
            elif isinstance(value, dict) and value:
                key = next(iter(value))
                value = {**value, key: inject(str(value[key]), char, where)}
            elif isinstance(value, str):
                value = inject(value, char, where)
            pairs[index] = (field, value)
    return Obj(tuple(pairs))


def inject(text: str, char: str, where: int) -> str:
    return (char + text, text[: len(text) // 2] + char + text[len(text) // 2:], text + char)[where]


body_kinds = st.sampled_from(["fields"] * 5 + ["bytes", "mangled", "shape", "deep", "encoding", "size"])


@st.composite
def raw_bodies(draw, payloads, fields) -> bytes:
    """A request body: mostly a JSON object with hostile fields, sometimes anything at all."""
    kind = draw(body_kinds)
    ensure_ascii = draw(st.booleans())
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "shape":  # valid JSON (mostly) that is not an object
        value = draw(st.one_of(hostile_values, st.lists(payloads, max_size=2)))
        return to_json(value, ensure_ascii).encode("utf-8", "surrogatepass")
    if kind == "deep":
        field = draw(st.sampled_from(fields))
        value = draw(deep)
        body = value if draw(st.booleans()) else Obj(((field, value),))
        return to_json(body, ensure_ascii).encode()
    body = to_json(draw(mutated(payloads, fields)), ensure_ascii).encode("utf-8", "surrogatepass")
    if kind == "mangled":
        at = draw(st.integers(0, len(body)))
        cut = draw(st.sampled_from(["truncate", "insert", "replace"]))
        junk = draw(st.binary(min_size=1, max_size=4))
        return {"truncate": body[:at], "insert": body[:at] + junk + body[at:],
                "replace": body[:at] + junk + body[at + len(junk):]}[cut]
    if kind == "size":  # whitespace after the object, up to and just past the 64 KiB limit
        return body + b" " * max(0, draw(st.sampled_from([MAX_BODY - 1, MAX_BODY, MAX_BODY + 1])) - len(body))
    if kind == "encoding":
        text = body.decode("utf-8", "surrogatepass")
        choice = draw(st.sampled_from(["bom", "utf-16", "utf-32", "latin-1", "padded"]))
        if choice == "bom":
            return b"\xef\xbb\xbf" + body
        if choice == "padded":
            return b" \r\n\t" + body + b"\n "
        return text.encode(choice, "replace")
    return body


# Mostly JSON, so that most requests get past the media type check.
content_types = st.one_of(st.just("application/json"), st.just("application/json; charset=utf-8"),
                          st.sampled_from(list(CONTENT_TYPES)))


# --- the app and the database under test ----------------------------------------------


class Api:
    """One app on one SQLite file, with raw requests and direct reads of the file."""

    def __init__(self, db_path: Path):
        self.db_path = db_path
        self.app = deployapi.create_app(db_path)
        self.client = Client(self.app)
        self.targets: dict[str, str] = {}

    def post_raw(self, path: str, body: bytes, content_type: str | None):
        environ = create_environ(path, method="POST")
        environ.pop("CONTENT_TYPE", None)
        if content_type is not None:
            environ["CONTENT_TYPE"] = content_type
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input"] = io.BytesIO(body)
        return self.call(environ)

    def get_raw(self, path: str, query: bytes):
        environ = create_environ(path, method="GET")
        environ["QUERY_STRING"] = query.decode("latin-1")  # what a WSGI server hands over (PEP 3333)
        return self.call(environ)

    def call(self, environ: dict) -> Response:
        # Not Client.open(environ): it rebuilds the environ and would re-encode the query string.
        app_iter, status, headers = run_wsgi_app(self.app, environ, buffered=True)
        return Response(b"".join(app_iter), status=status, headers=headers)

    def fingerprint(self) -> tuple:
        """Row and event counts, and a digest of every row's state, read straight from the file."""
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute(
                "SELECT (SELECT count(*) FROM deployments), (SELECT count(*) FROM deployment_events),"
                " (SELECT max(id) FROM deployment_events),"
                " (SELECT group_concat(id || status || updated_at, ',') FROM deployments)"
            ).fetchone()

    def counts(self) -> tuple[int, int]:
        return self.fingerprint()[:2]

    def create(self, **overrides) -> dict:
        body = {"service": "billing", "environment": "staging", "version": "1.0", "requester": "alice",
                "work_refs": ["JIRA-1"], "rollback_plan": "Redeploy 0.9.", **overrides}
        response = self.client.post("/deployments", json=body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def act(self, deployment_id: str, action: str, actor: str, note: str | None = None) -> dict:
        response = self.client.post(f"/deployments/{deployment_id}/{action}", json={"actor": actor, "note": note})
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def target(self, status: str) -> dict:
        """A deployment requested by alice, in ``status`` (pending_approval or started), made anew once moved on."""
        deployment_id = self.targets.get(status)
        if deployment_id is not None:
            current = self.client.get(f"/deployments/{deployment_id}").get_json()
            if current["status"] == status:
                return current
        deployment = self.create()
        if status == "started":
            self.act(deployment["id"], "approve", "bob")
            deployment = self.act(deployment["id"], "start", "ci")
        self.targets[status] = deployment["id"]
        return deployment


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    instance = Api(tmp_path_factory.mktemp("hostile") / "hostile.db")
    yield instance
    instance.app.close()


def assert_answer(response, allowed: set[int], codes: dict[int, str], request) -> dict:
    """The status is one the contract allows (never a 5xx); errors are problem+json with the right code."""
    assert response.status_code < 500, (request, response.data[:2000])
    assert response.status_code in allowed, (request, sorted(allowed), response.data[:2000])
    body = response.get_json(force=True)
    if response.status_code >= 400:
        assert response.mimetype == "application/problem+json", (request, response.headers)
        assert (body["status"], body["code"]) == (response.status_code, codes[response.status_code]), body
        assert body["type"] and body["title"] and body["detail"], body
        if response.status_code == 422:
            assert body["errors"] and all(e["field"] is not None and e["message"] for e in body["errors"]), body
    else:
        assert response.mimetype == "application/json", (request, response.headers)
    return body


def shown(content_type, body: bytes):
    """A failing example, short enough to read."""
    if len(body) > 300:
        body = body[:150] + b"..." + body[-150:] + f" ({len(body)} bytes)".encode()
    return content_type, body


# --- POST bodies ----------------------------------------------------------------


@FUZZ
@given(content_type=content_types, body=raw_bodies(valid_create_payloads(), CREATE_FIELDS))
def test_hostile_create_bodies_get_a_documented_answer_and_a_refusal_changes_nothing(api, content_type, body):
    allowed = body_statuses(content_type, body, create_fields_ok, 201)
    before = api.fingerprint()

    response = api.post_raw("/deployments", body, content_type)
    got = assert_answer(response, allowed, BODY_CODES, shown(content_type, body))

    if response.status_code != 201:
        assert api.fingerprint() == before, "a refused create changed the database"
        return
    sent = parse_body(body)
    assert api.counts() == (before[0] + 1, before[1] + 1)
    expected = {**{k: sent[k] for k in ("service", "environment", "version", "rollback_plan")},
                "requester": identities.canonical(sent["requester"]),
                "work_refs": [r.strip() for r in sent["work_refs"]],
                "risk": sent.get("risk"), "status": "pending_approval", "reviewed_by": None, "reviewed_at": None,
                **{k: sent.get(k) for k in ("commit_sha", "repository", "ref")},
                "links": sent.get("links") or [], "labels": sent.get("labels") or {}}
    assert {k: got[k] for k in expected} == expected
    if sent.get("committed_at") is None:
        assert got["committed_at"] is None
    else:  # one the oracle cannot work out was allowed either way: it is at least in the stored form
        assert got["committed_at"] == COMMITTED.get(sent["committed_at"], got["committed_at"])
        assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z", got["committed_at"])
    assert api.client.get(f"/deployments/{got['id']}").get_json() == got


@FUZZ
@given(content_type=content_types, body=raw_bodies(valid_action_payloads(), ACTION_FIELDS),
       action=st.sampled_from(list(LIFECYCLE)), target=st.sampled_from(["pending_approval", "started", "unknown"]))
def test_hostile_action_bodies_get_a_documented_answer_in_the_contract_order(api, content_type, body, action, target):
    if target == "unknown":
        deployment_id, current = "0" * 26, None
    else:
        current = api.target(target)
        deployment_id = current["id"]
    allowed = body_statuses(content_type, body, lambda payload: action_fields_ok(payload, action), 200)
    if 200 in allowed:  # the body is (or may be) fine: existence, transition, self-approval come next
        allowed.discard(200)
        payload = parse_body(body)
        if current is None:
            allowed.add(404)
        elif current["status"] not in LIFECYCLE[action][0]:
            allowed.add(409)
        elif action == "approve" and identities.same_person(payload["actor"], current["requester"]):
            allowed.add(403)
        else:
            allowed.add(200)
    before = api.fingerprint()

    response = api.post_raw(f"/deployments/{deployment_id}/{action}", body, content_type)
    got = assert_answer(response, allowed, BODY_CODES, (action, target, *shown(content_type, body)))

    if response.status_code != 200:
        assert api.fingerprint() == before, "a refused action changed the database"
        if current is not None:
            assert api.client.get(f"/deployments/{deployment_id}").get_json() == current
        if response.status_code == 409:
            assert (got["current_status"], got["action"]) == (current["status"], action)
        return
    sent = parse_body(body)
    assert api.counts() == (before[0], before[1] + 1)
    events = api.client.get(f"/deployments/{deployment_id}/events").get_json()["items"]
    assert (events[-1]["actor"], events[-1]["note"], events[-1]["to_status"]) == (
        identities.canonical(sent["actor"]), sent.get("note"), got["status"])


def test_a_body_of_json_nested_past_the_recursion_limit_is_400_and_changes_nothing(api):
    for body in (b"[" * 30_000 + b"]" * 30_000, b'{"a": ' * 9_000 + b"1" + b"}" * 9_000,
                 b'{"actor": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"):
        assert len(body) <= MAX_BODY
        before = api.fingerprint()
        for path in ("/deployments", "/deployments/" + "0" * 26 + "/approve"):
            response = api.post_raw(path, body, "application/json")
            assert_answer(response, {400}, BODY_CODES, body[:20])
        assert api.fingerprint() == before


# --- query strings ------------------------------------------------------------------

TIMESTAMPS = {"2000-01-01T00:00:00Z": "2000-01-01T00:00:00+00:00",
              "2999-12-31T23:59:59.999999+01:00": "2999-12-31T23:59:59.999999+01:00",
              "yesterday": None, "2026-13-01T00:00:00Z": None, "2026-01-01": None, "": None}


def percent_encoded(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


ODD_KEYS = ["Service", "STATUS", "limit ", "%73ervice", "service%00", "status[]", "sort", "%ff", "", "service%5B%5D",
            "caf%C3%A9", "cursor%20", "+limit"]
raw_values = st.one_of(
    st.sampled_from(["billing", "x_y", "search", "production", "staging", "approved", "pending_approval",
                     "rolled_back", "alice", "%25", "%", "_", "3", "1", "200", "050"]),
    st.sampled_from(["%ff", "%FF%FE", "%", "%%", "%2", "%zz", "%00", "+", "%2B", "%20billing", "billing%20",
                     "bill%69ng", "%2525", "%c3%a9", "%ed%a0%80", "%c0%af", "%e2%80%ae", "APPROVED", "billing%0a",
                     "0", "-1", "+5", "5.0", "1e3", "201", "0x10", "%ef%bc%95", "%d9%a3", " 5", "%09"]),
    st.sampled_from(["9" * 10, "9" * 4300, "0" * 4297 + "100", "9" * 4301, "1" * 5000, "0" * 5000 + "5"]),
    hostile_strings.filter(lambda s: len(s) < 2000).map(percent_encoded),
    st.sampled_from(list(TIMESTAMPS)).map(percent_encoded),
    st.just("@cursor"),  # replaced by a cursor the API issued (see query_strings)
)


# Values meant for each parameter, mostly valid (percent-encoded where needed): most pairs use
# one, so that many queries are valid and the rest are wrong in one or two places, not everywhere.
GOOD_VALUES = {
    "service": ["billing", "search", "x_y", "nothing-here"],
    "environment": ["staging", "production"],
    "status": list(STATUSES),
    "requester": ["alice", "+alice+", "%25", "_", "%27%20OR%201%3D1%20--", "%00", "%ff"],
    "limit": ["1", "2", "50", "200", "050", "0", "201", "9" * 4301, "0" * 4400 + "5"],
    "created_after": ["2000-01-01T00%3A00%3A00Z"],
    "created_before": ["2999-12-31T23:59:59.999999%2B01:00"],
    "cursor": ["@cursor"],
    "version": ["1.0", "q.1", "q.2", "%20", "1.0%20beta", "v" * 129],
    "work_ref": ["JIRA-1", "%20JIRA-1%20", "PR-2", "%27%20OR%201%3D1%20--", "%00", "%20"],
    "commit_sha": ["abc1234", "0123456789abcdef", "ABC1234", "abc123", "abc123g", "a" * 65],
    "label": ["team%3Dpayments", "team=", "team", "Team=x", "=x", "expr=a=b", "k%3D%27%20OR%201%3D1"],
    "updated_after": ["2000-01-01T00%3A00%3A00Z"],
    "updated_before": ["2999-12-31T23:59:59.999999%2B01:00"],
}


@st.composite
def query_strings(draw) -> bytes:
    parts = []
    keys = draw(st.lists(st.sampled_from([*GOOD_VALUES] * 3 + ODD_KEYS), max_size=4, unique=True))
    if keys and draw(st.sampled_from([False] * 7 + [True])):
        keys.append(keys[-1])  # a repeated parameter
    for key in keys:
        if key in GOOD_VALUES and not draw(st.sampled_from([False] * 3 + [True])):
            value = draw(st.sampled_from(GOOD_VALUES[key]))
        else:
            value = draw(raw_values)
        if value == "@cursor":
            value = draw(st.sampled_from(["@issued", "@issued-edited", "@issued-half", "garbage", "", "a.b",
                                          "eyJhIjoxfQ", "%00.%00", "..", "%ff.%ff"]))
        shape = draw(st.sampled_from(["k=v"] * 10 + ["k", "=v", "k=v=v"]))
        parts.append({"k=v": f"{key}={value}", "k": key, "=v": f"={value}", "k=v=v": f"{key}={value}={value}"}[shape])
    separator = draw(st.sampled_from(["&"] * 6 + ["&&", ";"]))
    query = separator.join(parts) + draw(st.sampled_from(["", "", "&", "&&"]))
    return query.encode("ascii")


def whole_number(digits: str) -> int:
    """ASCII digits as a number; leading zeros are allowed (050 is 50), however many there are."""
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= 4 else 10_000


def query_statuses(pairs: list[tuple[str, str]], issued: dict[str, dict]) -> set[int]:
    """What the contract (and docs/api.md for the requester and created_* extensions) allows."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for key, value in pairs:
        grouped[key].append(value)
    ok = all(key in LIST_PARAMETERS and len(values) <= REPEATABLE.get(key, 1) for key, values in grouped.items())
    values = {key: values[0] for key, values in grouped.items()}
    if "version" in values:
        ok = ok and version_ok(values["version"])
    if "work_ref" in values:
        ok = ok and 1 <= len(values["work_ref"].strip()) <= 512
    if "commit_sha" in values:
        ok = ok and COMMIT.fullmatch(values["commit_sha"]) is not None
    for label in grouped.get("label", []):
        key, equals, text = label.partition("=")
        ok = ok and bool(equals) and LABEL_KEY.fullmatch(key) is not None and len(text) <= 256
    for name in ("service", "environment"):
        if name in values:
            ok = ok and slug_ok(values[name])
    if "status" in values:
        ok = ok and values["status"] in STATUSES
    if "requester" in values:
        ok = ok and 1 <= len(unicodedata.normalize("NFKC", values["requester"].strip()).strip()) <= 128
    moments = {}
    for name in ("created_after", "created_before", "updated_after", "updated_before"):
        if name in values:
            moment = TIMESTAMPS.get(values[name])
            ok = ok and moment is not None
            moments[name] = moment and datetime.fromisoformat(moment)
    for low, high in (("created_after", "created_before"), ("updated_after", "updated_before")):
        if ok and low in moments and high in moments:
            ok = moments[low] < moments[high]
    if "limit" in values:
        digits = values["limit"]
        ok = ok and digits.isascii() and digits.isdigit() and 1 <= whole_number(digits) <= 200
    if not ok:
        return {422}
    if "cursor" not in values:
        return {200}
    filters = {k: v.strip() if k == "requester" else v for k, v in values.items() if k not in ("limit", "cursor")}
    return {200} if issued.get(values["cursor"]) == filters else {400}


@pytest.fixture(scope="module")
def issued_cursors(api):
    """Cursors the API issued, and the filters each was issued for."""
    for n in range(4):
        api.create(version=f"q.{n}", service=("billing", "search")[n % 2])
    cursors = {}
    for filters in ({}, {"service": "billing"}, {"status": "pending_approval"}):
        page = api.client.get("/deployments", query_string={**filters, "limit": 1}).get_json()
        cursors[page["next_cursor"]] = filters
    return cursors


def matches(item: dict, name: str, value: str) -> bool:
    if name == "requester":
        return item["requester"] == value.strip()
    if name == "work_ref":
        return value.strip() in item["work_refs"]
    if name == "commit_sha":
        return (item["commit_sha"] or "").startswith(value)
    if name == "label":
        key, _, text = value.partition("=")
        return item["labels"].get(key) == text
    if name in ("created_after", "updated_after"):
        return datetime.fromisoformat(item[name.replace("_after", "_at")]) >= datetime.fromisoformat(TIMESTAMPS[value])
    if name in ("created_before", "updated_before"):
        return datetime.fromisoformat(item[name.replace("_before", "_at")]) < datetime.fromisoformat(TIMESTAMPS[value])
    return item[name] == value


@settings(FUZZ, max_examples=300)
@given(query=query_strings(), data=st.data())
def test_hostile_query_strings_get_a_documented_answer(api, issued_cursors, query, data):
    # Put real cursors (intact, edited or cut) where the strategy left placeholders.
    if b"@issued" in query:
        cursor = data.draw(st.sampled_from(list(issued_cursors)), label="issued cursor")
        payload, _, signature = cursor.partition(".")
        edited = ("A" if payload[0] != "A" else "B") + payload[1:] + "." + signature
        query = (query.replace(b"@issued-edited", edited.encode()).replace(b"@issued-half", cursor[:20].encode())
                 .replace(b"@issued", cursor.encode()))
    pairs = parse_qsl(query.decode("ascii"), keep_blank_values=True, errors="replace")
    try:
        parse_qsl(query.decode("ascii"), keep_blank_values=True, errors="strict")
        allowed = query_statuses(pairs, issued_cursors)
    except UnicodeDecodeError:
        allowed = {422}  # percent-escapes that are not UTF-8 (docs/api.md: the query string must be UTF-8)
    before = api.fingerprint()

    response = api.get_raw("/deployments", query)
    got = assert_answer(response, allowed, QUERY_CODES, [(k[:40], v[:40]) for k, v in pairs[:8]])

    assert api.fingerprint() == before, "a listing changed the database"
    if response.status_code == 200:
        values = dict(pairs)
        limit = whole_number(values.get("limit", "50"))
        assert len(got["items"]) <= limit and (got["next_cursor"] is None or isinstance(got["next_cursor"], str))
        created = [item["created_at"] for item in got["items"]]
        assert created == sorted(created, reverse=True)
        for name in ("service", "environment", "status", "requester", "created_after", "created_before",
                     "version", "work_ref", "commit_sha", "updated_after", "updated_before"):
            if name in values:
                assert all(matches(item, name, values[name]) for item in got["items"]), (name, values)
        for label in (value for key, value in pairs if key == "label"):
            assert all(matches(item, "label", label) for item in got["items"]), label


@pytest.mark.parametrize("query", [b"service=\xff", b"\xff=1", b"requester=caf\xe9", b"status=\xc3\x28"],
                         ids=["bad byte in a value", "bad byte in a key", "latin-1 value", "invalid UTF-8 pair"])
def test_raw_bytes_that_are_not_utf8_in_the_query_string_are_a_4xx(api, query):
    # PEP 3333 hands the query string over as latin-1 text, so any byte can reach the app
    # (waitress and gunicorn refuse such request lines themselves; other servers may not).
    before = api.fingerprint()
    response = api.get_raw("/deployments", query)
    assert_answer(response, {400, 422}, QUERY_CODES, query)
    assert api.fingerprint() == before


@pytest.mark.parametrize("digits, status", [("9" * 4301, 422), ("1" * 5000, 422), ("0" * 4400 + "5", 200)],
                         ids=["4301 nines", "5000 ones", "5 after 4400 zeros"])
def test_a_limit_of_thousands_of_digits_is_answered_not_500(api, digits, status):
    # Python refuses int() on more than 4,300 digits (CVE-2020-10735) with a ValueError.
    response = api.client.get(f"/deployments?limit={digits}")
    body = assert_answer(response, {status}, QUERY_CODES, digits[:20])
    if status == 422:
        assert [e["field"] for e in body["errors"]] == ["limit"]
    else:
        assert len(body["items"]) <= 5


# --- SQL metacharacters are data ------------------------------------------------------

META = ["'", "''", '"', "--", ";", "%", "_", "\\", "\\'", "' OR 1=1 --", "'; DROP TABLE deployments; --", "%%",
        "%_", "a%", "_a", "\\%", "*", "?", ":name", "$1", "/*", "*/", "NULL", "' OR ''='", "1; SELECT 1"]
META_SERVICES = ["meta_svc", "metaxsvc", "meta-svc", "meta.svc"]  # "_" would match any one character in LIKE


@pytest.fixture
def fresh_api(tmp_path):
    instance = Api(tmp_path / "meta.db")
    yield instance
    instance.app.close()


def test_sql_metacharacters_in_every_field_are_stored_and_returned_exactly(fresh_api):
    api = fresh_api
    made = {}
    for n, meta in enumerate(META):
        body = {"service": META_SERVICES[n % 4], "environment": META_SERVICES[(n + 1) % 4],
                "version": "v" + meta.replace(" ", ""), "requester": meta, "work_refs": [meta, f"{meta}|{n}"],
                "rollback_plan": meta, "risk": meta, "repository": "r" + meta.replace(" ", ""), "ref": meta,
                "links": [{"rel": "meta", "url": "https://x.example/" + meta.replace(" ", "")}],
                "labels": {"meta": meta, f"n{n}": meta}}
        deployment = api.create(**body)
        assert {k: deployment[k] for k in body} == body
        approved = api.act(deployment["id"], "approve", f"reviewer {meta}", meta)
        assert approved["reviewed_by"] == f"reviewer {meta}"
        events = api.client.get(f"/deployments/{deployment['id']}/events").get_json()["items"]
        assert [(e["actor"], e["note"]) for e in events] == [(meta, None), (f"reviewer {meta}", meta)]
        assert api.client.get(f"/deployments/{deployment['id']}").get_json() == approved
        made[deployment["id"]] = approved

    for meta in META:
        listed = walk(api, requester=meta)
        assert [d["requester"] for d in listed] == [meta], f"requester={meta!r} matched {len(listed)} deployments"
        for name, value in (("work_ref", meta), ("label", f"meta={meta}"), ("version", "v" + meta.replace(" ", ""))):
            listed = walk(api, **{name: value})
            assert [d["ref"] for d in listed] == [meta], f"{name}={value!r} matched {len(listed)} deployments"
    for service in META_SERVICES:
        for name in ("service", "environment"):
            listed = walk(api, **{name: service})
            assert {d["id"] for d in listed} == {i for i, d in made.items() if d[name] == service}, (name, service)
    assert len(walk(api, status="approved")) == len(META)


@pytest.mark.parametrize("meta", META)
def test_sql_metacharacters_in_filters_ids_and_cursors_are_refused_or_match_nothing(fresh_api, meta):
    api = fresh_api
    api.create(requester="alice", service="meta_svc")
    before = api.fingerprint()
    for name in ("service", "environment", "status"):
        response = api.client.get("/deployments", query_string={name: meta})
        assert_answer(response, {422}, QUERY_CODES, (name, meta))
    for name, value in (("requester", meta), ("work_ref", meta), ("label", f"meta={meta}")):
        response = api.client.get("/deployments", query_string={name: value})
        assert assert_answer(response, {200}, QUERY_CODES, (name, meta))["items"] == []
    response = api.client.get("/deployments", query_string={"version": meta})
    assert assert_answer(response, {422} if " " in meta else {200}, QUERY_CODES, meta).get("items", []) == []
    response = api.client.get("/deployments", query_string={"commit_sha": meta})
    assert_answer(response, {422}, QUERY_CODES, meta)
    response = api.client.get("/deployments", query_string={"cursor": meta})
    assert_answer(response, {400}, QUERY_CODES, meta)
    path = "/deployments/" + quote(meta, safe="")
    assert_answer(api.client.get(path), {404}, BODY_CODES, meta)
    assert_answer(api.client.get(path + "/events"), {404}, BODY_CODES, meta)
    response = api.client.post(path + "/approve", json={"actor": "bob"})
    assert_answer(response, {404}, BODY_CODES, meta)
    assert api.fingerprint() == before


@pytest.fixture(scope="module")
def meta_api(tmp_path_factory):
    instance = Api(tmp_path_factory.mktemp("meta") / "meta.db")
    instance.requesters = defaultdict(set)  # trimmed requester -> ids created with it
    yield instance
    instance.app.close()


metachars = "'\"%_\\;-*/= OR1x"


@settings(FUZZ, max_examples=100)
@given(requester=st.text(metachars, min_size=1, max_size=12).filter(lambda s: s.strip()),
       version=st.text(metachars.replace(" ", ""), min_size=1, max_size=12),
       note=st.text(metachars, min_size=1, max_size=30).filter(lambda s: s.strip()))
def test_generated_metacharacter_strings_round_trip_and_filter_exactly(meta_api, requester, version, note):
    api = meta_api
    deployment = api.create(requester=requester, version=version, rollback_plan=note, work_refs=[note])
    assert (deployment["requester"], deployment["version"], deployment["rollback_plan"], deployment["work_refs"]) == (
        requester.strip(), version, note, [note.strip()])
    api.requesters[requester.strip()].add(deployment["id"])
    rejected = api.act(deployment["id"], "reject", note, note)
    assert rejected["reviewed_by"] == note.strip()
    assert api.client.get(f"/deployments/{deployment['id']}/events").get_json()["items"][-1]["note"] == note
    listed = walk(api, requester=requester)
    assert {d["id"] for d in listed} == api.requesters[requester.strip()]


def walk(api: Api, **filters) -> list[dict]:
    """Every item of a filtered listing, two at a time."""
    params, items = {**filters, "limit": 2}, []
    while True:
        response = api.client.get("/deployments", query_string=params)
        assert response.status_code == 200, response.get_json()
        page = response.get_json()
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        params["cursor"] = page["next_cursor"]
