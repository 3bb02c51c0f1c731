"""The error model: problem+json bodies, status codes, and nothing changed by a refused request."""

from __future__ import annotations

import io
import json
import sqlite3

import pytest
from builders import create_body
from werkzeug.exceptions import ClientDisconnected
from werkzeug.test import Client, create_environ, run_wsgi_app

from deployapi import create_app
from deployapi.repository import DeploymentNotFound

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


def assert_problem(response, status, code):
    assert response.status_code == status, response.data
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert PROBLEM_FIELDS <= set(body)
    assert (body["status"], body["code"]) == (status, code)
    assert body["detail"] and body["title"]
    return body


def deployment_count(app) -> int:
    with sqlite3.connect(app.repository.db_path) as conn:
        return conn.execute("SELECT count(*) FROM deployments").fetchone()[0]


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"[]", b'"text"', b"null", b"42", b'{"service": "a",}', b"\xff\xfe{}",
     b'{"a": NaN}', b'{"a": Infinity}', b'{"service": "a", "service": "b"}', b"[" * 60_000],
    ids=["empty", "truncated", "array", "string", "null", "number", "trailing comma", "not UTF-8",
         "NaN", "Infinity", "duplicate key", "deep nesting"],
)
def test_a_body_that_is_not_a_json_object_is_400_malformed_json(app, client, data):
    response = client.post("/deployments", data=data, content_type="application/json")
    assert_problem(response, 400, "malformed_json")
    assert deployment_count(app) == 0


def test_a_body_that_starts_with_a_byte_order_mark_is_malformed_json_and_says_so(app, client):
    body = b"\xef\xbb\xbf" + json.dumps(create_body()).encode()
    response = client.post("/deployments", data=body, content_type="application/json")
    assert_problem(response, 400, "malformed_json")
    assert "byte order mark" in response.get_json()["detail"]
    assert deployment_count(app) == 0


def test_an_empty_body_without_a_content_type_is_malformed_json(client):
    assert_problem(client.post("/deployments"), 400, "malformed_json")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/json-patch+json", "application/json; charset=latin-1"])
def test_a_body_not_sent_as_json_is_415(app, client, content_type):
    response = client.post("/deployments", data=json.dumps(create_body()), content_type=content_type)
    assert_problem(response, 415, "unsupported_media_type")
    assert deployment_count(app) == 0


def test_a_body_without_a_content_type_is_415(client):
    response = client.post("/deployments", data=json.dumps(create_body()), headers={"Content-Type": ""})
    assert_problem(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON; charset=UTF-8"])
def test_json_with_or_without_a_utf8_charset_is_accepted(client, content_type):
    response = client.post("/deployments", data=json.dumps(create_body()), content_type=content_type)
    assert response.status_code == 201


def test_a_body_of_exactly_64_kib_is_read(client):
    body = json.dumps(create_body(rollback_plan="x")).encode()
    padded = body[:-1] + b" " * (65_536 - len(body)) + b"}"
    assert len(padded) == 65_536
    assert client.post("/deployments", data=padded, content_type="application/json").status_code == 201


def test_a_body_over_64_kib_is_413(app, client):
    body = json.dumps(create_body()).encode()
    padded = body[:-1] + b" " * (65_537 - len(body)) + b"}"
    assert_problem(client.post("/deployments", data=padded, content_type="application/json"), 413,
                   "payload_too_large")
    assert deployment_count(app) == 0


def test_a_chunked_body_over_64_kib_is_413(app):
    # A chunked upload reaches the app with no Content-Length; the limit must still hold.
    environ = create_environ("/deployments", method="POST", content_type="application/json")
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": io.BytesIO(b'{"rollback_plan": "' + b"x" * 70_000 + b'"}'),
                    "wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"})
    app_iter, status, headers = run_wsgi_app(app, environ)
    assert status.startswith("413")
    assert json.loads(b"".join(app_iter))["code"] == "payload_too_large"


def event_count(app) -> int:
    with sqlite3.connect(app.repository.db_path) as conn:
        return conn.execute("SELECT count(*) FROM deployment_events").fetchone()[0]


def chunked(path: str, body: bytes, content_type: str = "application/json") -> dict:
    """The environ of a chunked upload as waitress hands it over: no Content-Length, input terminated."""
    environ = create_environ(path, method="POST", content_type=content_type)
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True,
                    "HTTP_TRANSFER_ENCODING": "chunked"})
    return environ


def padded_to(size: int, body: dict) -> bytes:
    text = json.dumps(body).encode()
    return text[:-1] + b" " * (size - len(text)) + b"}"


def test_a_chunked_body_of_exactly_64_kib_is_read(app):
    app_iter, status, _ = run_wsgi_app(app, chunked("/deployments", padded_to(65_536, create_body())))
    assert status.startswith("201"), b"".join(app_iter)


def test_a_chunked_action_body_over_64_kib_is_413_and_appends_no_event(app, created):
    deployment = created()
    body = padded_to(65_537, {"actor": "bob@example.com"})
    app_iter, status, _ = run_wsgi_app(app, chunked(f"/deployments/{deployment['id']}/approve", body))
    assert status.startswith("413") and json.loads(b"".join(app_iter))["code"] == "payload_too_large"
    assert event_count(app) == 1
    assert Client(app).get(f"/deployments/{deployment['id']}").get_json()["status"] == "pending_approval"


def test_a_declared_length_over_64_kib_is_413_before_the_media_type_is_looked_at(app, client):
    response = client.post("/deployments", data=b"x" * 65_537, content_type="text/plain")
    body = assert_problem(response, 413, "payload_too_large")
    assert body["detail"] == "the request body must be at most 65536 bytes"
    assert deployment_count(app) == 0


def test_422_lists_every_problem_with_field_and_message(client):
    response = client.post("/deployments", json={"service": "Bad", "work_refs": "x", "nickname": "y"})
    body = assert_problem(response, 422, "validation_failed")
    fields = [e["field"] for e in body["errors"]]
    assert set(fields) == {"service", "environment", "version", "requester", "work_refs", "rollback_plan",
                           "nickname"}
    assert all(set(e) == {"field", "message"} and e["message"] for e in body["errors"])


@pytest.mark.parametrize("path", ["/", "/deployment", "/deployments/", "/deployments/x/events/",
                                  "/deployments/x/approve/extra", "//deployments", "/openapi"])
def test_unknown_paths_are_404_not_found(client, path):
    assert_problem(client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    "method, path, allow",
    [("DELETE", "/deployments", {"GET", "HEAD", "POST"}), ("PUT", "/deployments/x", {"GET", "HEAD"}),
     ("PATCH", "/deployments/x", {"GET", "HEAD"}), ("POST", "/deployments/x/events", {"GET", "HEAD"}),
     ("POST", "/healthz", {"GET", "HEAD"}), ("DELETE", "/deployments/x/approve", {"POST"})],
)
def test_a_wrong_method_on_a_known_path_is_405_with_allow(client, method, path, allow):
    response = client.open(path, method=method)
    assert_problem(response, 405, "method_not_allowed")
    assert {m.strip() for m in response.headers["Allow"].split(",")} == allow


def test_an_unexpected_error_is_a_generic_500_that_leaks_nothing(app, client, caplog):
    def explode(*args, **kwargs):
        raise RuntimeError("secret internals at /srv/deployapi")

    app.repository.deployment_document = explode
    response = client.get("/deployments/abc")
    body = assert_problem(response, 500, "internal_error")
    assert "secret" not in response.get_data(as_text=True) and "Traceback" not in body["detail"]
    assert "secret internals" in caplog.text


def test_a_locked_database_is_503_with_retry_after(tmp_path):
    path = tmp_path / "locked.db"
    # A short busy timeout keeps the test fast; another connection holds the write lock.
    app = create_app(path, busy_timeout_ms=50)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        response = Client(app).post("/deployments", json=create_body())
        assert_problem(response, 503, "database_busy")
        assert response.headers["Retry-After"] == "1"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        app.close()


def test_an_upgrade_header_does_not_change_routing(client):
    headers = {"Upgrade": "websocket", "Connection": "Upgrade"}
    assert client.get("/healthz", headers=headers).status_code == 200
    assert client.get("/deployments/nope", headers=headers).get_json()["code"] == "not_found"


# --- bounded answers to unbounded input ----------------------------------------------


def test_a_body_with_thousands_of_unknown_fields_lists_the_first_50_and_counts_them_all(client):
    body = {**create_body(), **{f"unknown_{i}_{'x' * 40}": i for i in range(1000)}}
    response = client.post("/deployments", json=body)
    problem = response.get_json()
    assert response.status_code == 422 and problem["errors_total"] == 1000
    assert len(problem["errors"]) == 50 and "the first 50 are listed" in problem["detail"]
    assert len(response.data) < 20_000


def test_sixty_kilobytes_of_unknown_query_parameters_get_a_small_422(client):
    query = "&".join(f"p{i}={'v' * 10}" for i in range(4000))
    response = client.get(f"/deployments?{query}")
    assert response.status_code == 422 and response.get_json()["errors_total"] == 4000
    assert len(response.data) < 20_000


def test_an_over_long_name_is_echoed_cut_short(client):
    response = client.post("/deployments", json={**create_body(), "y" * 5000: 1})
    field = response.get_json()["errors"][0]["field"]
    assert len(field) == 80 and field.endswith("…") and field.startswith("yyy")


def test_a_200_kb_path_id_is_not_echoed_back(client):
    response = client.get("/deployments/" + "a" * 200_000)
    assert response.status_code == 404 and len(response.data) < 1_000


def test_an_accept_header_over_1_kib_is_431_and_not_parsed(client, created):
    deployment = created()
    response = client.get(f"/deployments/{deployment['id']}/events", headers={"Accept": "a/b;q=0.5," * 200})
    assert response.status_code == 431 and response.get_json()["code"] == "header_too_large"
    assert client.get("/events", headers={"Accept": "a/b," * 300}).status_code == 431
    # Where the format is chosen by ?format=, Accept is not read at all.
    assert client.get("/events?format=json", headers={"Accept": "a/b," * 300}).status_code == 200


def test_damaged_pages_are_a_503_with_retry_after_and_one_log_line_not_a_500(tmp_path, caplog):
    path = tmp_path / "damaged.db"
    app = create_app(path)
    client = Client(app)
    for n in range(300):
        assert client.post("/deployments", json=create_body(version=f"1.{n}")).status_code == 201
    app.close()  # folds the WAL back: every page is in the main file now
    with sqlite3.connect(path) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    with open(path, "r+b") as damaged:
        damaged.seek((pages // 2) * 4096)
        damaged.write(b"\xde\xad" * 2048 * (pages // 2))
    app = create_app(path)
    try:
        client = Client(app)
        answers = [client.get("/deployments?limit=200"), client.get("/deployments?limit=200&environment=staging")]
        for response in answers:
            body = assert_problem(response, 503, "storage_unavailable")
            assert int(response.headers["Retry-After"]) > 0 and "nothing was written" in body["detail"]
        assert client.get("/healthz").status_code == 503
        # A write that misses the damaged pages would commit: it is refused all the same.
        assert_problem(client.post("/deployments", json=create_body()), 503, "storage_unavailable")
        faults = [r for r in caplog.records if "storage fault" in r.getMessage()]
        assert len(faults) == 1 and not any(r.exc_info for r in caplog.records)
    finally:
        app.close()


# --- one encoder for every body ------------------------------------------------------


def test_a_non_ascii_value_in_an_error_body_comes_back_unescaped_and_compact(client):
    response = client.post("/deployments", json={**create_body(), "naïve_zoë": 1})
    assert_problem(response, 422, "validation_failed")
    raw = response.get_data()
    assert '"field":"naïve_zoë"'.encode() in raw
    assert b"\\u00" not in raw and b'", "' not in raw and b'": ' not in raw
    assert raw.startswith(b'{"type":"urn:deployapi:problem:validation_failed","title":')


def test_error_and_success_bodies_are_encoded_alike(client, created):
    deployment = created(rollback_plan="Redeploy 1.4.1 — ask Zoë")
    success = client.get(f"/deployments/{deployment['id']}").get_data()
    error = client.get("/deployments/zoë").get_data()
    assert "— ask Zoë".encode() in success and b"\\u" not in success
    assert "'zoë'".encode() in error and b"\\u" not in error and b", " not in error.split(b'"detail"')[0]


def test_a_lone_surrogate_echoed_in_an_error_is_escaped_not_a_500(client):
    # json.loads accepts the escape; the name has no UTF-8 form, so it goes back escaped.
    data = json.dumps(create_body())[:-1].encode() + b', "x\\ud800": 1}'
    response = client.post("/deployments", data=data, content_type="application/json")
    assert_problem(response, 422, "validation_failed")
    assert b'"field":"x\\ud800"' in response.get_data()
    assert response.get_json()["errors"][0]["field"] == "x\ud800"


# --- errors as a table ----------------------------------------------------------------


class DeploymentGone(DeploymentNotFound):
    """A subclass the error table does not name."""


def test_a_subclass_of_a_mapped_exception_is_answered_as_its_parent(app, client):
    def gone(deployment_id):
        raise DeploymentGone(deployment_id)

    app.repository.deployment_document = gone
    body = assert_problem(client.get("/deployments/abc"), 404, "not_found")
    assert body["detail"] == "no deployment has the id 'abc'"


def test_a_subclass_of_a_werkzeug_client_error_keeps_its_status(app, client):
    def disconnected(deployment_id):
        raise ClientDisconnected()  # a BadRequest

    app.repository.deployment_document = disconnected
    body = assert_problem(client.get("/deployments/abc"), 400, "bad_request")
    assert body["title"] == "Bad Request"
