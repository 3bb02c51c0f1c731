"""The one place where errors become HTTP responses (RFC 9457 problem+json).

Handlers and the layers below raise exceptions that know nothing about HTTP
(lifecycle and repository errors) or an :class:`ApiError` for problems found at
the HTTP edge.  :func:`problem_response` picks the status and ``code`` by
exception type; anything it does not recognise is logged with its traceback and
answered with a generic 500 that leaks nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.wrappers import Response

from .lifecycle import ActorMismatch, InvalidTransition, SelfApproval, ValidationFailed
from .repository import DatabaseBusy, DeploymentNotFound
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


class ApiError(Exception):
    """A problem found at the HTTP edge, already carrying its status and code."""

    def __init__(self, status: int, code: str, title: str, detail: str, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.extra = extra


def malformed_json(detail: str) -> ApiError:
    return ApiError(400, "malformed_json", "Malformed JSON", detail)


def invalid_cursor(detail: str) -> ApiError:
    return ApiError(400, "invalid_cursor", "Invalid cursor", detail)


def unsupported_media_type(content_type: str) -> ApiError:
    shown = content_type or "none"
    return ApiError(415, "unsupported_media_type", "Unsupported media type",
                    f"the request body must be sent as application/json (Content-Type was {shown})")


def payload_too_large() -> ApiError:
    return ApiError(413, "payload_too_large", "Payload too large",
                    f"the request body must be at most {MAX_BODY_BYTES} bytes")


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


def problem_response(error: BaseException, request_id: str = "") -> Response:
    """Render any exception as problem+json; unknown ones as a logged, generic 500."""
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if isinstance(error, ApiError):
        status, code, title, detail = error.status, error.code, error.title, error.detail
        extra = error.extra
    elif isinstance(error, ValidationFailed):
        status, code, title = 422, "validation_failed", "Validation failed"
        count = len(error.problems)
        detail = f"the request has {count} invalid field{'s' if count != 1 else ''}; see errors"
        if count > MAX_LISTED_PROBLEMS:
            detail += f" (the first {MAX_LISTED_PROBLEMS} are listed)"
        extra = {"errors": [{"field": shorten(p.field), "message": p.message}
                            for p in error.problems[:MAX_LISTED_PROBLEMS]],
                 "errors_total": count}
    elif isinstance(error, DeploymentNotFound):
        status, code, title = 404, "not_found", "Not found"
        detail = f"no deployment has the id {shorten(error.deployment_id)!r}"
    elif isinstance(error, InvalidTransition):
        status, code, title, detail = 409, "invalid_transition", "Invalid transition", str(error)
        extra = {"current_status": error.current_status, "action": error.action}
    elif isinstance(error, SelfApproval):
        status, code, title, detail = 403, "self_approval", "Self-approval", str(error)
    elif isinstance(error, ActorMismatch):
        status, code, title, detail = 403, "actor_mismatch", "Actor mismatch", str(error)
    elif isinstance(error, DatabaseBusy):
        status, code, title = 503, "database_busy", "Database busy"
        detail = "the database is busy with other writes; retry shortly"
        headers["Retry-After"] = RETRY_AFTER_SECONDS
    elif isinstance(error, StorageFault):
        # Logged once by the repository when the fault began, not per request.
        status, code, title = 503, "storage_unavailable", "Storage unavailable"
        detail = ("the database cannot keep writes right now (disk full, read-only or failing storage, or the "
                  "file was removed or replaced); nothing was written, retry later")
        headers["Retry-After"] = STORAGE_RETRY_AFTER_SECONDS
    elif isinstance(error, MethodNotAllowed):
        status, code, title = 405, "method_not_allowed", "Method not allowed"
        allowed = sorted(error.valid_methods or ())
        detail = f"this path allows only {', '.join(allowed)}"
        headers["Allow"] = ", ".join(allowed)
    elif isinstance(error, NotFound):
        status, code, title, detail = 404, "not_found", "Not found", "no resource at this path"
    elif isinstance(error, RequestEntityTooLarge):
        return problem_response(payload_too_large())
    elif isinstance(error, HTTPException) and error.code is not None and error.code < 500:
        status, code = error.code, "bad_request"
        title, detail = error.name, error.description or error.name
    else:
        logger.error("unhandled error while serving request %s", request_id or "(no id)", exc_info=error,
                     extra={"request_id": request_id})
        status, code, title = 500, "internal_error", "Internal server error"
        detail = "the server failed to handle the request; the error has been logged"
    return problem(status, code, title, detail, headers=headers, **extra)


def problem(status: int, code: str, title: str, detail: str, *,
            headers: dict[str, str] | None = None, **extra: Any) -> Response:
    body = {"type": PROBLEM_TYPE_PREFIX + code, "title": title, "status": status,
            "detail": detail, "code": code, **extra}
    return Response(json.dumps(body), status=status, headers=headers,
                    mimetype=PROBLEM_MIMETYPE)
