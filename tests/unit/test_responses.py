"""responses.text_response answers exactly as Werkzeug's own Response would: status, headers in order, body."""

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response

from deployapi.responses import JSON, text_response


def sent(response: Response, method: str = "GET", script_root: str = "") -> tuple[str, list, bytes]:
    environ = EnvironBuilder(method=method, path="/deployments", base_url=f"http://localhost{script_root}").get_environ()
    started: list = []
    body = b"".join(response(environ, lambda status, headers, exc_info=None: started.append((status, headers))))
    (status, headers), = started
    return status, headers, body


LOCATIONS = [
    "/deployments/01kbfy1p0n6y4d8tjmx4f2q7ha",
    "/api/v1/deployments/01kbfy1p0n6y4d8tjmx4f2q7ha",
    "/d\u00e9ploiements/x",  # not ASCII: iri_to_uri quotes it
    "/a b/c",  # a space
    "//elsewhere/deployments/x",  # reads as a host
    "/a//b",
    "/%2e%2e/x",
    "",
]


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
@pytest.mark.parametrize("location", LOCATIONS)
def test_an_answer_with_a_location_is_sent_as_werkzeug_sends_it(method, location):
    text = '{"id":"01kbfy1p0n6y4d8tjmx4f2q7ha","note":"caf\u00e9"}'
    ours = text_response(text, 201, headers={"Location": location})
    theirs = Response(text, status=201, headers={"Location": location}, mimetype="application/json")
    for response in (ours, theirs):
        response.headers["X-Request-ID"] = "abc"
    assert sent(ours, method) == sent(theirs, method)


@pytest.mark.parametrize("status", [200, 204, 304, 404, 422, 503])
@pytest.mark.parametrize("headers", [None, {}, {"Retry-After": "1"}, {"Vary": "Accept", "X-Next-After": "7"}])
@pytest.mark.parametrize("content_type", [JSON, "application/problem+json", "text/plain; version=0.0.4; charset=utf-8"])
def test_any_status_headers_and_type_are_sent_as_werkzeug_sends_them(status, headers, content_type):
    ours = text_response('{"status":"ok"}', status, headers=headers, content_type=content_type)
    theirs = Response('{"status":"ok"}', status=status, headers=headers, content_type=content_type)
    assert sent(ours) == sent(theirs)
    assert (ours.status_code, ours.get_data(as_text=True), ours.headers.get("Location")) == \
        (theirs.status_code, theirs.get_data(as_text=True), theirs.headers.get("Location"))


def test_a_header_value_with_a_line_break_is_refused_as_werkzeug_refuses_it():
    with pytest.raises(ValueError, match="newline"):
        text_response("{}", 201, headers={"Location": "/deployments/x\r\nSet-Cookie: a=b"})


def test_an_answer_changed_after_it_was_made_is_sent_as_changed():
    ours, theirs = text_response("{}"), Response("{}", mimetype="application/json")
    for response in (ours, theirs):
        response.headers["Location"] = "/d\u00e9j\u00e0"
        response.set_data(b'{"a":1}')
    assert sent(ours) == sent(theirs)
    ours.response = theirs.response = [b"{", b"}"]
    del ours.headers["Content-Length"], theirs.headers["Content-Length"]
    assert sent(ours) == sent(theirs)
