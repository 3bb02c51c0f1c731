"""The one place where errors become HTTP responses (RFC 9457 problem+json).

Handlers and the layers below raise exceptions that know nothing about HTTP
(lifecycle and repository errors) or an :class:`ApiError` for problems found at
the HTTP edge.  :data:`ERRORS` maps each exception type to its status, ``code``
and title, looked up along the exception's MRO (as Starlette's and Falcon's
error handlers are), so a subclass is answered as its nearest mapped parent; an
ApiError carries its own.  :func:`problem_response` renders the answer;
anything the table does not know is logged with its traceback and answered
with a generic 500 that leaks nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from werkzeug.exceptions import MethodNotAllowed, NotFound, RequestEntityTooLarge, default_exceptions
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Response

from .encoding import json_text
from .lifecycle import (
    ActorMismatch,
    DeployFreeze,
    DuplicateApproval,
    EnvironmentBusy,
    InvalidTransition,
    NotAnApprover,
    SelfApproval,
    ValidationFailed,
)
from .repository import DatabaseBusy, DatabaseReadOnly, DeploymentNotFound
from .responses import text_response
from .storage import StorageFault

logger = logging.getLogger("deployapi")

PROBLEM_MIMETYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:deployapi:problem:"
MAX_BODY_BYTES = 65_536
RETRY_AFTER_SECONDS = "1"
# A full disk or a failed volume is not over in a second.
STORAGE_RETRY_AFTER_SECONDS = "10"
# A 422 lists at most this many problems (with their total in errors_total):
# a 64 KiB body or query string of unknown names would otherwise be answered
# with megabytes.  No valid request of this API comes near it.
MAX_LISTED_PROBLEMS = 50
# Client text echoed in a problem (a path id, an unknown field name) is cut
# to this many characters.
MAX_ECHOED = 80


def _nothing(error: BaseException) -> dict:
    return {}


@dataclass(frozen=True)
class ErrorKind:
    """How one type of exception is answered: status, code and title, the rest taken from the exception.

    ``detail`` gives the problem's ``detail`` (by default ``str(error)``),
    ``extra`` its members beyond the standard ones, ``headers`` the response's
    headers.
    """

    status: int
    code: str
    title: str
    detail: Callable[[Any], str] = str
    extra: Callable[[Any], dict[str, Any]] = _nothing
    headers: Callable[[Any], dict[str, str]] = _nothing


class ApiError(Exception):
    """A problem found at the HTTP edge, already carrying its status and code."""

    def __init__(self, status: int, code: str, title: str, detail: str, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.extra = extra
        self.kind = ErrorKind(status, code, title, extra=_own_extra)


def _own_extra(error: ApiError) -> dict[str, Any]:
    return error.extra


def malformed_json(detail: str) -> ApiError:
    return ApiError(400, "malformed_json", "Malformed JSON", detail)


def invalid_cursor(detail: str) -> ApiError:
    return ApiError(400, "invalid_cursor", "Invalid cursor", detail)


def unsupported_media_type(content_type: str) -> ApiError:
    shown = content_type or "none"
    return ApiError(415, "unsupported_media_type", "Unsupported media type",
                    f"the request body must be sent as application/json (Content-Type was {shown})")


def unauthenticated(reason: str) -> ApiError:
    return ApiError(401, "unauthenticated", "Unauthenticated",
                    "this server records the authenticated user as the actor, and this request has none "
                    f"(no usable REMOTE_USER from the authenticating proxy or middleware: {reason})")


def service_unavailable(detail: str) -> ApiError:
    return ApiError(503, "unavailable", "Service unavailable", detail)


def header_too_large(name: str, limit: int) -> ApiError:
    return ApiError(431, "header_too_large", "Request header too large",
                    f"the {name} header must be at most {limit} bytes")


def shorten(text: str) -> str:
    """Client text as a problem may echo it: at most MAX_ECHOED characters, cut with an ellipsis."""
    return text if len(text) <= MAX_ECHOED else text[:MAX_ECHOED - 1] + "…"


def _listed_problems_detail(error: ValidationFailed) -> str:
    count = len(error.problems)
    detail = f"the request has {count} invalid field{'s' if count != 1 else ''}; see errors"
    if count > MAX_LISTED_PROBLEMS:
        detail += f" (the first {MAX_LISTED_PROBLEMS} are listed)"
    return detail


def _listed_problems(error: ValidationFailed) -> dict[str, Any]:
    return {"errors": [{"field": shorten(p.field), "message": p.message}
                       for p in error.problems[:MAX_LISTED_PROBLEMS]],
            "errors_total": len(error.problems)}


def _allowed_methods(error: MethodNotAllowed) -> list[str]:
    return sorted(error.valid_methods or ())


def _werkzeug_description(error: Any) -> str:
    return error.description or error.name


# Werkzeug's own 4xx (a malformed request it refused) keep their status, as bad_request.
_WERKZEUG_CLIENT_ERRORS: dict[type[BaseException], ErrorKind] = {
    exception: ErrorKind(status, "bad_request", HTTP_STATUS_CODES[status], detail=_werkzeug_description)
    for status, exception in default_exceptions.items() if status < 500
}

ERRORS: dict[type[BaseException], ErrorKind] = {
    **_WERKZEUG_CLIENT_ERRORS,
    ValidationFailed: ErrorKind(422, "validation_failed", "Validation failed",
                                detail=_listed_problems_detail, extra=_listed_problems),
    DeploymentNotFound: ErrorKind(404, "not_found", "Not found",
                                  detail=lambda e: f"no deployment has the id {shorten(e.deployment_id)!r}"),
    InvalidTransition: ErrorKind(409, "invalid_transition", "Invalid transition",
                                 extra=lambda e: {"current_status": e.current_status, "action": e.action}),
    SelfApproval: ErrorKind(403, "self_approval", "Self-approval"),
    NotAnApprover: ErrorKind(403, "not_an_approver", "Not an approver"),
    DuplicateApproval: ErrorKind(403, "duplicate_approval", "Duplicate approval"),
    DeployFreeze: ErrorKind(409, "deploy_freeze", "Deploy freeze", extra=lambda e: {"freeze": e.freeze.document()}),
    EnvironmentBusy: ErrorKind(409, "environment_busy", "Environment busy",
                               extra=lambda e: {"blocking_deployment_id": e.blocking_deployment_id}),
    ActorMismatch: ErrorKind(403, "actor_mismatch", "Actor mismatch"),
    DatabaseBusy: ErrorKind(503, "database_busy", "Database busy",
                            detail=lambda e: "the database is busy with other writes; retry shortly",
                            headers=lambda e: {"Retry-After": RETRY_AFTER_SECONDS}),
    # Logged once by the repository when the fault began, not per request.
    StorageFault: ErrorKind(503, "storage_unavailable", "Storage unavailable",
                            detail=lambda e: ("the database cannot keep writes right now (disk full, read-only or "
                                              "failing storage, or the file was removed or replaced); nothing was "
                                              "written, retry later"),
                            headers=lambda e: {"Retry-After": STORAGE_RETRY_AFTER_SECONDS}),
    # No Retry-After: this server never takes the write, however long the client waits.
    DatabaseReadOnly: ErrorKind(503, "read_only", "Read-only replica",
                                detail=lambda e: ("this server serves a read-only copy of the database and takes no "
                                                  "writes; nothing was written: send writes to the primary "
                                                  "deployapi server")),
    MethodNotAllowed: ErrorKind(405, "method_not_allowed", "Method not allowed",
                                detail=lambda e: f"this path allows only {', '.join(_allowed_methods(e))}",
                                headers=lambda e: {"Allow": ", ".join(_allowed_methods(e))}),
    NotFound: ErrorKind(404, "not_found", "Not found", detail=lambda e: "no resource at this path"),
    # Raised by Werkzeug when a body passes Request.max_content_length (see app.ApiRequest).
    RequestEntityTooLarge: ErrorKind(413, "payload_too_large", "Payload too large",
                                     detail=lambda e: f"the request body must be at most {MAX_BODY_BYTES} bytes"),
}


INTERNAL_ERROR = ErrorKind(500, "internal_error", "Internal server error",
                           detail=lambda e: "the server failed to handle the request; the error has been logged")


def error_kind(error: BaseException) -> ErrorKind | None:
    """How ``error`` is answered: an ApiError's own kind, else the entry of the nearest class in its MRO.

    None when nothing in the table matches: the error is a bug, answered 500.
    """
    if isinstance(error, ApiError):
        return error.kind
    for cls in type(error).__mro__:
        kind = ERRORS.get(cls)
        if kind is not None:
            return kind
    return None


def render_problem(error: BaseException, request_id: str = "") -> tuple[int, str, dict[str, str]]:
    """The status, problem+json text and headers answering ``error``; unknown ones a logged, generic 500."""
    kind = error_kind(error)
    if kind is None:
        logger.error("unhandled error while serving request %s", request_id or "(no id)", exc_info=error,
                     extra={"request_id": request_id})
        kind, error = INTERNAL_ERROR, None
    body = {"type": PROBLEM_TYPE_PREFIX + kind.code, "title": kind.title, "status": kind.status,
            "detail": kind.detail(error), "code": kind.code, **kind.extra(error)}
    return kind.status, json_text(body), kind.headers(error)


def problem_response(error: BaseException, request_id: str = "") -> Response:
    """Render any exception as a problem+json response; unknown ones as a logged, generic 500."""
    status, body, headers = render_problem(error, request_id)
    return text_response(body, status, headers=headers, content_type=PROBLEM_MIMETYPE)
