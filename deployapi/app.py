"""The composition root: ``create_app`` wires the repository, the routes and the handlers.

Routes are data: one ``werkzeug.routing.Map`` and one explicit table from
endpoint name to handler.  Werkzeug's router already answers 404 for unknown
paths and 405 (with the allowed methods) for known paths.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from . import handlers, lifecycle, logs, prometheus
from .config_file import load_config
from .errors import MAX_BODY_BYTES, problem_response, unauthenticated
from .handlers import Context
from .policy import Policy, default_policy
from .repository import DatabaseReadOnly, Deliveries, Repository, utc_now
from .timestamps import format_timestamp
from .webhooks import Webhook

Handler = Callable[..., Response]

HANDLERS: dict[str, Handler] = {
    "create_deployment": handlers.create_deployment,
    "list_deployments": handlers.list_deployments,
    "get_deployment": handlers.get_deployment,
    "list_deployment_events": handlers.list_deployment_events,
    "act_on_deployment": handlers.act_on_deployment,
    "health": handlers.health,
    "openapi_document": handlers.openapi_document,
    "list_event_feed": handlers.list_event_feed,
    "list_environments": handlers.list_environments,
    "dora_metrics": handlers.dora_metrics,
    "event_head": handlers.event_head,
    "get_policy": handlers.get_policy,
    "list_webhooks": handlers.list_webhooks,
    "metrics": handlers.metrics,
}

# Where IdentityHeader leaves the reason a header named nobody.
IDENTITY_REFUSED = "deployapi.identity_refused"

# Reachable without an authenticated user even when REMOTE_USER is trusted,
# so load balancers can probe the service and Prometheus scrape it (scrapers
# carry no identity; docs/operations.md, "Metrics").
PUBLIC_ENDPOINTS = frozenset({"health", "metrics"})

# What a read-only app answers; every other method a route allows is a write, refused with 503 read_only.
# By method rather than by route, so that a write route added later is refused without a list to keep.
READ_METHODS = frozenset({"GET", "HEAD"})


def _url_map(*, metrics: bool = False) -> Map:
    actions = ", ".join(lifecycle.ACTIONS)
    # Only when switched on: otherwise /metrics is 404 as every path the contract does not list.
    optional = [Rule("/metrics", methods=["GET"], endpoint="metrics")] if metrics else []
    return Map(
        [
            Rule("/deployments", methods=["POST"], endpoint="create_deployment"),
            Rule("/deployments", methods=["GET"], endpoint="list_deployments"),
            Rule("/deployments/<deployment_id>", methods=["GET"], endpoint="get_deployment"),
            Rule("/deployments/<deployment_id>/events", methods=["GET"],
                 endpoint="list_deployment_events"),
            Rule(f"/deployments/<deployment_id>/<any({actions}):action>", methods=["POST"],
                 endpoint="act_on_deployment"),
            Rule("/healthz", methods=["GET"], endpoint="health"),
            Rule("/openapi.json", methods=["GET"], endpoint="openapi_document"),
            Rule("/events", methods=["GET"], endpoint="list_event_feed"),
            Rule("/environments", methods=["GET"], endpoint="list_environments"),
            Rule("/metrics/dora", methods=["GET"], endpoint="dora_metrics"),
            Rule("/events/head", methods=["GET"], endpoint="event_head"),
            Rule("/policy", methods=["GET"], endpoint="get_policy"),
            Rule("/webhooks", methods=["GET"], endpoint="list_webhooks"),
            *optional,
        ],
        merge_slashes=False,
    )


class ApiRequest(Request):
    """A request whose body Werkzeug itself limits: past 64 KiB, reading it raises RequestEntityTooLarge (413)."""

    max_content_length = MAX_BODY_BYTES


class DeployAPI:
    """The WSGI application.  Holds its own repository: no module-level state.

    Build it with :func:`create_app`, which opens the repository it holds.
    """

    def __init__(self, repository: Repository, policy: Policy, *, webhooks: Sequence[Webhook] = (),
                 trust_remote_user: bool = False, remote_user_header: str | None = None,
                 remote_groups_header: str | None = None, clock: Callable[[], datetime] = utc_now,
                 metrics: bool = False):
        self.repository = repository
        # A replica: its repository was opened read-only, and dispatch refuses every write.
        self.read_only = repository.read_only
        # The configuration file's webhooks: GET /webhooks shows them, and whoever
        # delivers (deployapi serve, deployapi relay, a delivery.Deliverer) reads them here.
        self.webhooks = tuple(webhooks)
        # time.perf_counter() when the latest request arrived: how a deliverer in this
        # process tells that requests are being served (cli.serve).
        self.last_request_at = float("-inf")
        self._identity_header = IdentityHeader(remote_user_header) if remote_user_header else None
        self.url_map = _url_map(metrics=metrics)
        # GET /metrics's measurements, None when it is not served (nothing is measured then).
        self.metrics = prometheus.Metrics(repository, webhooks=self.webhooks, clock=clock) if metrics else None
        self._route_names = prometheus.route_names(self.url_map)
        # Bound once, not per request (bind_to_environ is not free): matching
        # needs only the path and the method.  The host it is bound to would
        # only appear in a redirect, and no route redirects (none ends in "/").
        self._routes = self.url_map.bind("localhost")
        self.context = Context(repository=repository, policy=policy,
                               openapi=load_openapi(), cursor_key=bytes.fromhex(repository.setting("cursor_key")),
                               clock=clock, trust_remote_user=trust_remote_user, groups_header=remote_groups_header,
                               webhooks=self.webhooks, deliveries=Deliveries(repository), metrics=self.metrics)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = self.last_request_at = time.perf_counter()
        if self._identity_header is not None:
            self._identity_header.set_remote_user(environ)
        request = ApiRequest(environ)
        request_id = logs.request_id_from(request.headers.get("X-Request-ID"))
        route, response = self.dispatch(request, request_id)
        elapsed = time.perf_counter() - started
        response.headers["X-Request-ID"] = request_id
        path = request.script_root + request.path
        if request.query_string:
            path += "?" + request.query_string.decode("latin-1")
        logs.log_access(request.method, path, response.status_code, elapsed * 1000, request_id)
        if self.metrics is not None:
            self.metrics.requests.observe(route, prometheus.method_label(request.method), response.status_code,
                                          elapsed)
        return response(environ, start_response)

    def dispatch(self, request: Request, request_id: str = "") -> tuple[str, Response]:
        """The route the request matched (its path template, or ``unmatched``) and the response."""
        route = prometheus.UNMATCHED_ROUTE
        try:
            # websocket=False: an Upgrade header must not turn a request into a 400.
            rule, arguments = self._routes.match(request.path, request.method, websocket=False, return_rule=True)
            choice, paths = self._route_names[rule.rule]
            route = paths[arguments[choice] if choice else None]
            if self.read_only and request.method not in READ_METHODS:
                # Before the identity, the body and the Idempotency-Key: none of them can make it succeed here.
                raise DatabaseReadOnly(f"{request.method} {rule.rule} on a read-only app")
            if self.context.trust_remote_user and rule.endpoint not in PUBLIC_ENDPOINTS:
                _require_identity(request.environ)
            return route, HANDLERS[rule.endpoint](request, self.context, **arguments)
        except Exception as error:
            return route, problem_response(error, request_id)

    def close(self) -> None:
        """Close the database connections this app holds."""
        self.repository.close()


class IdentityHeader:
    """Sets the WSGI ``REMOTE_USER`` from a request header that an authenticating proxy writes.

    For servers that cannot pass REMOTE_USER themselves (waitress, gunicorn).
    Only safe when every request comes through a proxy that sets or removes
    the header: otherwise any client can name itself.

    The header's bytes are decoded as UTF-8 (WSGI hands them over as Latin-1
    text).  A value that is not UTF-8, or that holds a comma, names nobody:
    servers join repeated header lines with ", ", so a comma is what a second
    identity smuggled past the proxy looks like.  The request is then 401
    with the reason (``IDENTITY_REFUSED`` in the environ).
    """

    def __init__(self, header: str):
        self.header = header
        self.environ_key = "HTTP_" + header.upper().replace("-", "_")

    def set_remote_user(self, environ: dict) -> None:
        """Replace any ``REMOTE_USER`` in ``environ`` by the header's identity, or record why there is none."""
        environ.pop("REMOTE_USER", None)
        raw = environ.get(self.environ_key)
        if not raw:
            return
        try:
            user = raw.encode("latin-1").decode("utf-8")
        except UnicodeError:
            environ[IDENTITY_REFUSED] = f"the {self.header} header is not valid UTF-8"
            return
        if "," in user:
            environ[IDENTITY_REFUSED] = (f"the {self.header} header holds a comma: more than one "
                                         "identity, or a header sent twice")
        else:
            environ["REMOTE_USER"] = user


def _require_identity(environ: dict) -> None:
    """:raises ApiError: 401 when the request carries no usable trusted identity, saying why."""
    refused = environ.get(IDENTITY_REFUSED)
    if refused:
        raise unauthenticated(refused)
    try:
        lifecycle.trusted_identity(environ.get("REMOTE_USER"))
    except lifecycle.IdentityRefused as refusal:
        raise unauthenticated(f"REMOTE_USER {refusal}") from None


def load_openapi() -> dict:
    """The OpenAPI document shipped in the package (``deployapi/openapi.json``)."""
    return json.loads(Path(__file__).with_name("openapi.json").read_text(encoding="utf-8"))


def create_app(
    db_path: str | Path | None = None,
    *,
    production_environments: Collection[str] | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    trust_remote_user: bool = False,
    remote_user_header: str | None = None,
    remote_groups_header: str | None = None,
    require_existing: bool = False,
    max_writers: int | None = None,
    clock: Callable[[], datetime] | None = None,
    busy_timeout_ms: int | None = None,
    metrics: bool = False,
    read_only: bool = False,
    process_lock: bool = False,
) -> DeployAPI:
    """A WSGI application serving the API on the SQLite file at ``db_path``.

    The file and its schema are created if missing (with a warning logged), or,
    with ``require_existing``, refused.  ``production_environments`` is the set
    of environments in which a deployment must state its risk (default
    ``production``).  ``config`` is the configuration file (a path, or the
    document as ``tomllib`` parses it) holding review policies per environment;
    without one every environment has the v1 rules.  With
    ``trust_remote_user``, the WSGI ``REMOTE_USER`` set by an authenticating
    middleware or proxy is the actor and requester of every write, and requests
    without one are 401; ``remote_user_header`` then names a request header
    that the proxy in front sets, from which the app takes ``REMOTE_USER``
    itself, and ``remote_groups_header`` one holding the caller's groups
    (comma-separated), matched against ``group:NAME`` approvers.
    ``max_writers`` bounds the writes in progress or waiting at once;
    one more is 503 at once (give it fewer than the server's threads, so that
    waiting writers never hold every thread).  With ``process_lock``, writes queue
    first on a lock shared with the other processes that take it (``flock`` on the
    database file), which keeps waits short when several processes write the file at
    once (``deployapi serve --workers``, docs/adr/0020).  With ``metrics``, ``GET /metrics``
    answers in the Prometheus text format (docs/operations.md, "Metrics");
    without it that path is 404 like any other the API does not list.
    With ``read_only`` (a replica on a restored or replicated copy), the file
    must exist at this deployapi's schema version and is never written: every
    GET answers from it, every write is ``503 read_only``, and the configuration
    file's webhooks are shown but not registered (docs/operations.md, "A
    read-only replica").
    ``clock`` (returning an aware UTC datetime) and ``busy_timeout_ms`` replace
    the repository's defaults, for tests.

    ``db_path`` is required.  Without it (a server calling ``create_app`` as a
    zero-argument factory) the TypeError names :func:`config.app_from_environment`,
    the factory that reads the ``DEPLOYAPI_*`` variables: this function reads none,
    and a default database would silently ignore ``DEPLOYAPI_DB``.

    :raises TypeError: without ``db_path``.
    :raises ValueError: for an empty or invalid set of production environments, or a
        ``remote_user_header`` or ``remote_groups_header`` without ``trust_remote_user``.
    :raises config_file.ConfigFileError: (a ValueError) for a configuration file that cannot be
        used, naming the file, the key and the problem; nothing is opened or created then.
    :raises repository.DatabaseError: when the file cannot be opened as a database, or is missing
        and ``require_existing`` or ``read_only`` is set, or (``read_only``) its schema is older.
    """
    if db_path is None:
        raise TypeError("create_app() needs db_path, and reads no environment variables; as a zero-argument "
                        "factory (waitress-serve --call, gunicorn 'module:factory()') use "
                        "deployapi:app_from_environment, which reads DEPLOYAPI_DB and the other DEPLOYAPI_* variables")
    environments = None if production_environments is None else production_set(production_environments)
    if remote_user_header and not trust_remote_user:
        raise ValueError("remote_user_header only makes sense with trust_remote_user")
    if remote_groups_header and not trust_remote_user:
        raise ValueError("remote_groups_header only makes sense with trust_remote_user")
    # Before the database: a configuration that cannot be used creates nothing.
    if config is None:
        policy, hooks = default_policy(environments or lifecycle.DEFAULT_PRODUCTION_ENVIRONMENTS), ()
    else:
        loaded = load_config(config, production_environments=environments,
                             groups_available=bool(remote_groups_header))
        policy, hooks = loaded.policy, loaded.webhooks
    clock = clock or utc_now
    # Only what the caller chose: the repository keeps its own default.
    timeout = {} if busy_timeout_ms is None else {"busy_timeout_ms": busy_timeout_ms}
    repository = Repository(db_path, require_existing=require_existing, max_writers=max_writers, clock=clock,
                            read_only=read_only, process_lock=process_lock, **timeout)
    if hooks and not read_only:
        # Now, not when a deliverer first runs: the events written from here on are each webhook's to
        # receive, even when the deliverer is another process started later (deployapi relay).  Read-only,
        # nothing is registered: a replica delivers nothing, and GET /webhooks shows the copy's positions.
        try:
            Deliveries(repository).register([hook.name for hook in hooks], format_timestamp(clock()))
            repository.release_connections()
        except BaseException:
            repository.close()
            raise
    return DeployAPI(repository, policy, webhooks=hooks, trust_remote_user=trust_remote_user,
                     remote_user_header=remote_user_header, remote_groups_header=remote_groups_header, clock=clock,
                     metrics=metrics)


def production_set(names: Collection[str] | str) -> frozenset[str]:
    """A validated set of production environment names (a comma-separated string works too).

    :raises ValueError: when empty or when a name is not a valid environment slug.
    """
    if isinstance(names, str):
        names = names.split(",")
    cleaned = frozenset(name.strip() for name in names if name.strip())
    invalid = sorted(name for name in cleaned if not lifecycle.is_slug(name))
    if invalid:
        raise ValueError(f"not valid environment names: {', '.join(invalid)}")
    if not cleaned:
        raise ValueError("at least one production environment must be configured")
    return cleaned
