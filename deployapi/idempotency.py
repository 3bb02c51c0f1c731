"""Safe retries: an ``Idempotency-Key`` on a POST stores its answer with the write it made.

The first request with a key runs inside one write transaction that also
stores its response; a repeat with the same key and the same request gets
that response again (marked ``Idempotent-Replayed: true``) and writes nothing;
the same key with a different request is 422 ``idempotency_key_reused``.  A
concurrent repeat waits for the write lock and then finds the stored answer,
so a key never produces two writes.

Only answers that changed something (2xx) are stored.  A refusal (any 4xx,
whether by validation before the transaction or by the lifecycle inside it)
changed nothing, so a retry simply runs again: a corrected retry with the same
key succeeds, and a retry after the situation changed gets the new answer.

Keys belong to their caller when identities are trusted: the same key sent by
two people is two keys, so nobody can take or probe another's key.  Without
trusted identity there is no caller to tell apart, and keys are shared by
everyone who can reach the API (docs/api.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Request, Response

from . import identities
from .errors import PROBLEM_MIMETYPE, ApiError, problem_response
from .lifecycle import DomainError, FieldProblem, ValidationFailed
from .repository import DeploymentNotFound, Repository, StoredResponse, WriteTransaction
from .responses import JSON, text_response

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
_KEY = re.compile(r"[\x20-\x7e]{1,%d}" % MAX_KEY_LENGTH)

Operation = Callable[[WriteTransaction], Response]


def key_from(request: Request) -> str | None:
    """The request's idempotency key, or None when it sent none.

    :raises ValidationFailed: when the key is not 1-255 printable ASCII characters.
    """
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not _KEY.fullmatch(key) or not key.strip():
        raise ValidationFailed([FieldProblem(
            HEADER, f"must be 1-{MAX_KEY_LENGTH} printable ASCII characters, not blank")])
    return key


def fingerprint(request: Request, payload: dict[str, Any], identity: str | None) -> str:
    """What makes two requests "the same": method, path, caller and body (key order and spacing aside)."""
    person = identities.key(identity) if identity else None
    canonical = json.dumps([request.method, request.path, person, payload], sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def run_once(repository: Repository, caller: str | None, key: str, request_fingerprint: str,
             operation: Operation) -> Response:
    """Run ``operation`` in a write transaction unless ``caller``'s ``key`` already has an answer.

    ``caller`` is the trusted identity, or None when identities are not trusted.

    :raises ApiError: 422 idempotency_key_reused when the key answered a different request.
    """
    # One person, one key space, however the proxy spells them this time.
    owner = identities.key(caller) if caller else ""

    def once(tx: WriteTransaction) -> Response:
        stored = tx.stored_response(owner, key)
        if stored is not None:
            if stored.fingerprint != request_fingerprint:
                message = (f"the {HEADER} {key!r} was already used for a different request; "
                           "use a new key for a new request")
                # errors[] as on every 422, so clients handle all of them alike.
                raise ApiError(422, "idempotency_key_reused", "Idempotency key reused", message,
                               errors=[{"field": HEADER, "message": message}])
            return _replay(stored)
        try:
            response = operation(tx)
        except (DomainError, DeploymentNotFound) as refusal:
            # Raised before the operation wrote anything: nothing to remember.
            return problem_response(refusal)
        tx.store_response(owner, key, StoredResponse(
            fingerprint=request_fingerprint, status=response.status_code,
            body=response.get_data(as_text=True), location=response.headers.get("Location")))
        return response

    return repository.write(once)


def _replay(stored: StoredResponse) -> Response:
    headers = {REPLAYED_HEADER: "true"}
    if stored.location:
        headers["Location"] = stored.location
    content_type = PROBLEM_MIMETYPE if stored.status >= 400 else JSON
    return text_response(stored.body, stored.status, headers=headers, content_type=content_type)
