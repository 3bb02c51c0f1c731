"""The composition root: ``create_app`` wires the repository, the routes and the handlers.

Routes are data: one ``werkzeug.routing.Map`` and one explicit table from
endpoint name to handler.  Werkzeug's router already answers 404 for unknown
paths and 405 (with the allowed methods) for known paths.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from . import handlers, lifecycle, logs
from .errors import problem_response
from .handlers import Context
from .repository import Repository

Handler = Callable[..., Response]

HANDLERS: dict[str, Handler] = {
    "create_deployment": handlers.create_deployment,
    "list_deployments": handlers.list_deployments,
    "get_deployment": handlers.get_deployment,
    "list_deployment_events": handlers.list_deployment_events,
    "act_on_deployment": handlers.act_on_deployment,
    "health": handlers.health,
    "openapi_document": handlers.openapi_document,
}


def _url_map() -> Map:
    actions = ", ".join(lifecycle.ACTIONS)
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
        ],
        merge_slashes=False,
    )


class DeployAPI:
    """The WSGI application.  Holds its own repository: no module-level state."""

    def __init__(self, repository: Repository, production_environments: Collection[str]):
        self.repository = repository
        self.url_map = _url_map()
        self.context = Context(repository=repository,
                               production_environments=frozenset(production_environments),
                               openapi=load_openapi())

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        request = Request(environ)
        request_id = logs.request_id_from(request.headers.get("X-Request-ID"))
        response = self.dispatch(request, request_id)
        response.headers["X-Request-ID"] = request_id
        path = request.script_root + request.path
        if request.query_string:
            path += "?" + request.query_string.decode("latin-1")
        logs.log_access(request.method, path, response.status_code,
                        (time.perf_counter() - started) * 1000, request_id)
        return response(environ, start_response)

    def dispatch(self, request: Request, request_id: str = "") -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            # websocket=False: an Upgrade header must not turn a request into a 400.
            endpoint, arguments = adapter.match(websocket=False)
            return HANDLERS[endpoint](request, self.context, **arguments)
        except Exception as error:
            return problem_response(error, request_id)

    def close(self) -> None:
        """Close the database connections this app holds."""
        self.repository.close()


def load_openapi() -> dict:
    """The OpenAPI document shipped in the package (``deployapi/openapi.json``)."""
    return json.loads(Path(__file__).with_name("openapi.json").read_text(encoding="utf-8"))


def create_app(
    db_path: str | Path,
    *,
    production_environments: Collection[str] = lifecycle.DEFAULT_PRODUCTION_ENVIRONMENTS,
) -> DeployAPI:
    """A WSGI application serving the API on the SQLite file at ``db_path``.

    The file and its schema are created if missing.  ``production_environments``
    is the set of environments in which a deployment must state its risk.

    :raises ValueError: for an empty or invalid set of production environments.
    :raises repository.DatabaseError: when the file cannot be opened as a database.
    """
    environments = production_set(production_environments)
    return DeployAPI(Repository(db_path), environments)


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
