"""The response every answer is made of: Werkzeug's, built and sent without redoing what its making settled.

A Werkzeug ``Response`` checks its headers again when it is sent
(``get_wsgi_headers``): it copies them, looks for a ``Location`` to pass
through ``iri_to_uri``, a ``Content-Length`` to fill in, a status that must
have no body.  An answer of this API is built here from a body already
encoded, with its ``Content-Length``, and a ``Location`` (if any) that is a
plain path: :class:`ApiResponse` then sends its headers as they are, which
is what Werkzeug would have sent.  Anything else (a ``Location`` that
``iri_to_uri`` would change, a status without a body, a body that is not one
encoded piece) goes Werkzeug's own way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from werkzeug.datastructures import Headers
from werkzeug.wrappers import Response

JSON = "application/json"

# A path that iri_to_uri leaves as it is: segments of unreserved characters
# (RFC 3986), none empty, so no leading "//" that would read as a host.
_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9._~-]+)+")
# Statuses whose answers Werkzeug sends without a body or a Content-Length.
_BODYLESS = frozenset({204, 304})


class ApiResponse(Response):
    """A Werkzeug Response that skips the header corrections it does not need when sent."""

    def get_wsgi_response(self, environ: dict) -> tuple[Iterable[bytes], str, list[tuple[str, str]]]:
        body = self.response
        status = self.status_code
        if (status < 200 or status in _BODYLESS or self._on_close or type(body) is not list or len(body) != 1
                or type(body[0]) is not bytes):
            return super().get_wsgi_response(environ)
        headers = self.headers.to_wsgi_list()
        has_length = False
        for key, value in headers:
            name = key.lower()
            if name == "content-length":
                has_length = True
            elif (name == "location" and not _PLAIN_PATH.fullmatch(value)) or name == "content-location":
                return super().get_wsgi_response(environ)
        if not has_length:
            return super().get_wsgi_response(environ)
        # As Werkzeug's get_app_iter: a HEAD request gets the headers alone.
        return (() if environ["REQUEST_METHOD"] == "HEAD" else body), self.status, headers


def text_response(text: str, status: int = 200, *, content_type: str = JSON,
                  headers: Mapping[str, str] | None = None) -> ApiResponse:
    """An answer whose body is ``text`` (sent as UTF-8), with ``headers`` before its Content-Type and -Length.

    The headers in the order ``Response(text, headers=headers, mimetype=...)``
    gives them; ``content_type`` is sent as it is (Werkzeug adds a charset to
    text types only, which no answer here is but GET /metrics, which names its own).
    """
    data = text.encode()
    own = [("Content-Type", content_type), ("Content-Length", str(len(data)))]
    return ApiResponse([data], status, Headers([*headers.items(), *own] if headers else own))
