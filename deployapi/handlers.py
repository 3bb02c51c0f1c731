"""Handler functions: parse the request, call the domain through the repository, render.

No SQL and no lifecycle rule lives here; errors are raised, never rendered
(see errors.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from . import cdevents, errors, feed, idempotency, insights, lifecycle, listing, prometheus
from .documents import deployment_json, event_json
from .encoding import json_text
from .lifecycle import Deployment, Event
from .policy import Policy
from .repository import Deliveries, Repository, WebhookStatus, WriteTransaction
from .responses import text_response
from .storage import StorageFault
from .webhooks import Webhook


@dataclass(frozen=True)
class Context:
    """What every handler may use: the repository, the clock and the start-up configuration."""

    repository: Repository
    # The review policy every write is judged by (a default one without a configuration file).
    policy: Policy
    openapi: dict[str, Any]
    # The key that signs listing cursors, kept in the database so that cursors survive restarts.
    cursor_key: bytes
    # The clock the repository stamps writes with: "now" for the default DORA window.
    clock: Callable[[], datetime]
    trust_remote_user: bool = False
    # The request header holding the trusted caller's groups, if one is read.
    groups_header: str | None = None
    # The configuration file's webhooks, and where their positions are kept.
    webhooks: tuple[Webhook, ...] = ()
    deliveries: Deliveries | None = None
    # GET /metrics's measurements, when it is served.
    metrics: prometheus.Metrics | None = None


# --- handlers ------------------------------------------------------------------


def create_deployment(request: Request, ctx: Context) -> Response:
    """POST /deployments: validate the body, record the deployment and its created event; 201 with Location."""
    payload = read_json_object(request)
    caller = identity(request, ctx)
    new = lifecycle.validate_new_deployment(payload, ctx.policy, identity=caller, now=ctx.clock())

    def render(deployment: Deployment) -> Response:
        location = f"{request.script_root}/deployments/{deployment.id}"
        return json_response(deployment_json(deployment), 201, headers={"Location": location})

    return write_once(request, ctx, payload, caller, lambda tx: tx.create_deployment(new, ctx.policy), render)


def list_deployments(request: Request, ctx: Context) -> Response:
    """GET /deployments: one page of deployments, newest first, filtered, with the next page's cursor."""
    try:
        query = listing.parse_list_query(query_args(request), ctx.cursor_key)
    except listing.InvalidCursor as error:
        raise errors.invalid_cursor(str(error)) from None
    page = ctx.repository.list_deployments(query)
    next_cursor = None
    if page.next_position is not None:
        next_cursor = listing.encode_cursor(page.next_position, query.filters(), ctx.cursor_key)
    # The items arrive as JSON text (repository.DEPLOYMENT_DOCUMENT): joined, not re-encoded.
    body = f'{{"items":[{",".join(page.documents)}],"next_cursor":{json_text(next_cursor)}}}'
    return json_text_response(body)


def get_deployment(request: Request, ctx: Context, deployment_id: str) -> Response:
    """GET /deployments/{id}: the deployment as it is now."""
    return json_text_response(ctx.repository.deployment_document(deployment_id))


def list_deployment_events(request: Request, ctx: Context, deployment_id: str) -> Response:
    """GET /deployments/{id}/events: the deployment's history, oldest first, as JSON or CloudEvents.

    Every event in the v1 answer, or with ``after`` or ``limit`` one page by sequence and where the next starts.
    """
    query = feed.parse_history_query(query_args(request))
    as_cloudevents = wants_cloudevents(request, query.output_format)
    if query.limit is None:
        events = ctx.repository.list_events(deployment_id)
        if as_cloudevents:
            return cloudevents_response(request, ctx, events)
        return json_response({"items": [event_json(e) for e in events]}, headers=VARY_ACCEPT)
    page = ctx.repository.list_events_page(deployment_id, query.after, query.limit)
    if as_cloudevents:
        # As on the feed, a bare array: the position travels in headers, absent on the last page.
        headers = {}
        if page.next_after is not None:
            next_query = urlencode({"after": page.next_after, "limit": query.limit, "format": "cdevents"})
            headers = {"X-Next-After": str(page.next_after),
                       "Link": f'<{request.script_root}/deployments/{deployment_id}/events?{next_query}>; rel="next"'}
        return cloudevents_response(request, ctx, page.events, headers=headers)
    return json_response({"items": [event_json(e) for e in page.events], "next_after": page.next_after},
                         headers=VARY_ACCEPT)


def act_on_deployment(request: Request, ctx: Context, deployment_id: str, action: str) -> Response:
    """POST /deployments/{id}/{action}: apply a lifecycle action and append its event; the updated deployment."""
    # The contract's check order: body (400/413/415/422), then existence (404),
    # then transition (409), then policy (409), then identity (403).
    # Validation happens here, before the repository looks the deployment up.
    payload = read_json_object(request)
    caller = identity(request, ctx)
    action_request = lifecycle.validate_action(action, payload, identity=caller, groups=caller_groups(request, ctx))
    return write_once(request, ctx, payload, caller,
                      lambda tx: tx.apply_action(deployment_id, action_request, ctx.policy),
                      lambda deployment: json_response(deployment_json(deployment)))


def get_policy(request: Request, ctx: Context) -> Response:
    """GET /policy: the review policy in force, every key filled in, and its digest."""
    return json_response(ctx.policy.document())


def list_webhooks(request: Request, ctx: Context) -> Response:
    """GET /webhooks: each configured webhook's position, backlog and last attempt; no secret, no URL path."""
    statuses = ctx.deliveries.statuses(ctx.webhooks) if ctx.webhooks else []
    return json_response({"items": [webhook_json(hook, status)
                                    for hook, status in zip(ctx.webhooks, statuses, strict=True)]})


def event_head(request: Request, ctx: Context) -> Response:
    """GET /events/head: the id, hash and time of the newest event (all null before the first)."""
    # The newest id and hash: an external system that records them can later
    # prove the history up to that point was not rewritten.
    head = ctx.repository.event_head()
    return json_response({"id": head.id if head else None, "hash": head.hash if head else None,
                          "created_at": head.created_at if head else None})


def list_event_feed(request: Request, ctx: Context) -> Response:
    """GET /events: every event after a position, in commit order, as JSON or CloudEvents."""
    query = feed.parse_feed_query(query_args(request))
    events = ctx.repository.list_events_after(query.after, query.limit, since=query.since, service=query.service,
                                              environment=query.environment, event_type=query.event_type)
    next_after = events[-1].id if events else query.after
    if wants_cloudevents(request, query.output_format):
        # A CloudEvents batch is a bare array, so the position travels in headers.
        return cloudevents_response(request, ctx, events, headers={
            "X-Next-After": str(next_after),
            "Link": f'<{request.script_root}/events?{_next_feed_query(query, next_after)}>; rel="next"',
        })
    return json_response({"items": [event_json(e) for e in events], "next_after": next_after},
                         headers=VARY_ACCEPT)


def _next_feed_query(query: feed.FeedQuery, next_after: int) -> str:
    params = {"after": next_after, "since": query.since, "limit": query.limit, "service": query.service,
              "environment": query.environment, "type": query.event_type, "format": "cdevents"}
    return urlencode({name: value for name, value in params.items() if value is not None})


def list_environments(request: Request, ctx: Context) -> Response:
    """GET /environments: per service and environment, what is live and what is in flight."""
    query = insights.parse_environments_query(query_args(request))
    return json_response({"items": [environment_json(s) for s in ctx.repository.list_environments(query)]})


def dora_metrics(request: Request, ctx: Context) -> Response:
    """GET /metrics/dora: DORA-style metrics over a time window."""
    query = insights.parse_dora_query(query_args(request), ctx.clock())
    return json_response(dora_json(ctx.repository.dora_metrics(query)))


def openapi_document(request: Request, ctx: Context) -> Response:
    """GET /openapi.json: the OpenAPI document, its servers set to where the app is mounted."""
    # The mount prefix is only known per request: servers tells generated
    # clients where the API lives.
    return json_response({**ctx.openapi, "servers": [{"url": request.script_root or "/"}]})


def metrics(request: Request, ctx: Context) -> Response:
    """GET /metrics (routed only when switched on): the app's measurements in the Prometheus text format."""
    assert ctx.metrics is not None  # the route exists only with them
    return text_response(ctx.metrics.render(), content_type=prometheus.CONTENT_TYPE)


def health(request: Request, ctx: Context) -> Response:
    """GET /healthz: 200 after a real database round trip, 503 when the database cannot answer."""
    try:
        ctx.repository.ping()
    except StorageFault as error:  # logged by the repository when it began
        raise errors.service_unavailable("the database cannot keep writes (the server log says why)") from error
    except Exception as error:  # any failure to answer means unhealthy, not a 500
        errors.logger.warning("health check failed: %s", error)
        raise errors.service_unavailable("the database did not answer") from error
    return json_response({"status": "ok"})


# --- writes ----------------------------------------------------------------------


def write_once(request: Request, ctx: Context, payload: dict[str, Any], caller: str | None,
               write: Callable[[WriteTransaction], Deployment], render: Callable[[Deployment], Response]) -> Response:
    """Run a write in one transaction and render its result; with an Idempotency-Key, at most once per key."""
    key = idempotency.key_from(request)
    if key is None:
        deployment = ctx.repository.write(write)
        # Rendered after the commit: other writers wait only for the write itself.
        return render(deployment)
    fingerprint = idempotency.fingerprint(request, payload, caller)
    # The response is stored with the write, so here it is rendered inside the transaction.
    return idempotency.run_once(ctx.repository, caller, key, fingerprint, lambda tx: render(write(tx)))


def identity(request: Request, ctx: Context) -> str | None:
    """The authenticated caller when the server trusts REMOTE_USER, else None (the body names people).

    The app has already answered 401 when a trusted REMOTE_USER is missing.
    """
    if not ctx.trust_remote_user:
        return None
    return lifecycle.clean_identity(request.environ.get("REMOTE_USER"))


def caller_groups(request: Request, ctx: Context) -> frozenset[str]:
    """The trusted caller's groups, from the groups header the server reads (none without one).

    Comma-separated, as oauth2-proxy's X-Forwarded-Groups; each trimmed, blanks
    dropped.  Only read under trusted identity (app.create_app refuses the header otherwise).
    """
    if ctx.groups_header is None:
        return frozenset()
    raw = request.headers.get(ctx.groups_header, "")
    try:
        # WSGI hands header bytes over as Latin-1 text; proxies send UTF-8.
        text = raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise errors.unauthenticated(f"the {ctx.groups_header} header is not valid UTF-8") from None
    return frozenset(group.strip() for group in text.split(",") if group.strip())


# --- request parsing ----------------------------------------------------------------


def query_args(request: Request) -> dict[str, list[str]]:
    """The query string, each name with all its values.

    Parsed here rather than by Werkzeug's request.args, whose strict UTF-8
    decoding raises (a 500) on bytes that are not UTF-8; here they are a 422.

    :raises ValidationFailed: when the query string, raw or percent-decoded, is not UTF-8.
    """
    try:
        pairs = parse_qsl(request.query_string.decode("utf-8"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise lifecycle.ValidationFailed(
            [lifecycle.FieldProblem("query", "the query string is not valid UTF-8")]) from None
    args: dict[str, list[str]] = {}
    for name, value in pairs:
        args.setdefault(name, []).append(value)
    return args



def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object.

    :raises errors.ApiError: 415 if not sent as JSON, 400 if not a JSON object.
    :raises RequestEntityTooLarge: 413 over 64 KiB (``max_content_length`` of app.ApiRequest).
    """
    # Werkzeug refuses a declared Content-Length over max_content_length when
    # the stream is first touched: here, so that 413 comes before 415.
    stream = request.stream
    _require_json_content_type(request)
    # A chunked body declares no length; Werkzeug's stream raises once it
    # passes max_content_length (it passes such bodies through only from
    # servers that set wsgi.input_terminated, as waitress does).
    body = stream.read()
    if len(body) == errors.MAX_BODY_BYTES and request.content_length is None:
        # Werkzeug's stream stops at the maximum without saying whether the
        # body went on (and would refuse any further read): one more byte of
        # the server's input tells a body of exactly 64 KiB from a longer one.
        if request.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()
    if not body:
        raise errors.malformed_json("the request body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise errors.malformed_json(
            f"the request body is not valid UTF-8 ({error.reason} at byte {error.start})") from None
    if text.startswith("\ufeff"):  # json.loads's own check, which a decoder's decode() lacks
        raise errors.malformed_json("the request body is not valid JSON: it starts with a UTF-8 byte order mark")
    try:
        value = _BODY_DECODER.decode(text)
    except RecursionError:
        raise errors.malformed_json("the JSON is nested too deeply") from None
    except ValueError as error:
        raise errors.malformed_json(f"the request body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise errors.malformed_json("the request body must be a JSON object")
    return value


def _require_json_content_type(request: Request) -> None:
    raw = request.headers.get("Content-Type", "")
    if not raw and not request.content_length and "chunked" not in request.headers.get("Transfer-Encoding", ""):
        return  # no body at all: reported as an empty body, which is clearer
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if request.mimetype != "application/json" or charset not in ("utf-8", "utf8"):
        raise errors.unsupported_media_type(raw)


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {duplicate!r}")
    return result


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


# Built once: json.loads with options builds a decoder (and its scanner) at every call.
_BODY_DECODER = json.JSONDecoder(object_pairs_hook=_object_without_duplicate_keys, parse_constant=_reject_constant)


# --- rendering ----------------------------------------------------------------------


def json_response(body: Any, status: int = 200, *, headers: dict[str, str] | None = None) -> Response:
    """``body`` encoded by the one JSON encoder (encoding.json_text), as application/json."""
    return json_text_response(json_text(body), status, headers=headers)


def json_text_response(text: str, status: int = 200, *, headers: dict[str, str] | None = None) -> Response:
    """A response whose body is already JSON text."""
    return text_response(text, status, headers=headers)


# Browsers send about 200 bytes; this leaves room for any real client.
MAX_ACCEPT_BYTES = 1024

# Event lists come in two representations chosen partly by Accept, so caches must key on it.
VARY_ACCEPT = {"Vary": "Accept"}


def wants_cloudevents(request: Request, output_format: str | None) -> bool:
    """Whether to answer an event list as CloudEvents: ``?format=`` when given, else the Accept header.

    Accept picks CloudEvents only when it prefers their batch type to JSON;
    anything else (none, ``*/*``, a tie, a type we do not serve) keeps JSON.
    """
    if output_format is not None:
        return output_format == "cdevents"
    # Werkzeug's parsing of Accept grows with its length: bounded before it is parsed.
    if len(request.headers.get("Accept", "")) > MAX_ACCEPT_BYTES:
        raise errors.header_too_large("Accept", MAX_ACCEPT_BYTES)
    best = request.accept_mimetypes.best_match(["application/json", cdevents.BATCH_MEDIA_TYPE])
    return best == cdevents.BATCH_MEDIA_TYPE


def cloudevents_response(request: Request, ctx: Context, events: list[Event], *,
                         headers: dict[str, str] | None = None) -> Response:
    """The events as a JSON array of CloudEvents (``application/cloudevents-batch+json``)."""
    context = ctx.repository.event_context(events)
    batch = []
    for event in events:
        deployment, first_success = context[event.id]
        batch.append(cdevents.cloudevent(event, deployment, first_success=first_success, mount=request.script_root))
    return text_response(json_text(batch), headers={**VARY_ACCEPT, **(headers or {})},
                         content_type=cdevents.BATCH_MEDIA_TYPE)


def webhook_json(hook: Webhook, status: WebhookStatus) -> dict[str, Any]:
    """One item of GET /webhooks."""
    position = status.position
    return {
        "name": hook.name, "url": hook.shown_url, "format": hook.format,
        "delivered_through": position.delivered_through, "pending": status.pending,
        "failed_attempts": position.failed_attempts, "last_attempt_at": position.last_attempt_at,
        "last_error": position.last_error, "next_attempt_at": position.next_attempt_at,
    }


def environment_json(s: insights.EnvironmentState) -> dict[str, Any]:
    """One item of GET /environments."""
    current = None
    if s.current is not None:
        current = {"deployment_id": s.current.deployment_id, "version": s.current.version,
                   "succeeded_at": s.current.succeeded_at}
    return {
        "service": s.service, "environment": s.environment, "current": current,
        "in_flight": [{"deployment_id": f.deployment_id, "version": f.version, "status": f.status,
                       "updated_at": f.updated_at} for f in s.in_flight],
        "in_flight_count": s.in_flight_count, "last_change_at": s.last_change_at,
    }


def dora_json(m: insights.DoraMetrics) -> dict[str, Any]:
    """The body of GET /metrics/dora."""
    def durations(d: insights.Durations) -> dict[str, Any]:
        return {"median": d.median, "p90": d.p90, "count": d.count}

    return {
        "service": m.query.service, "environment": m.query.environment,
        "since": m.query.since, "until": m.query.until,
        "deployment_frequency_per_day": m.deployment_frequency_per_day,
        "change_failure_rate": m.change_failure_rate,
        "time_to_restore_seconds": {**durations(m.time_to_restore), "unrestored": m.unrestored_failures},
        "approval_lead_time_seconds": durations(m.approval_lead_time),
        "deploy_duration_seconds": durations(m.deploy_duration),
        "lead_time_for_changes_seconds": durations(m.lead_time_for_changes),
        "counts": {"succeeded": m.succeeded, "started": m.started, "failed_changes": m.failed_changes},
    }
