"""The ``deployapi`` command: ``deployapi serve`` runs the API under waitress."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from .app import create_app
from .config import ConfigError, load_settings
from .repository import DatabaseError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deployapi", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="serve the API under waitress",
        description="Serve the API under waitress. Each flag falls back to its DEPLOYAPI_* "
                    "environment variable, then to its default.")
    serve.add_argument("--host", help="address to bind (DEPLOYAPI_HOST; default 127.0.0.1)")
    serve.add_argument("--port", help="port to bind, 0 for any free port (DEPLOYAPI_PORT; default 8080)")
    serve.add_argument("--db", help="SQLite database file, created if missing (DEPLOYAPI_DB; default ./deployapi.db)")
    serve.add_argument("--threads", help="worker threads (DEPLOYAPI_THREADS; default 4)")
    serve.add_argument("--production-environments", dest="production_environments",
                       metavar="A,B",
                       help="environments whose deployments must state a risk "
                            "(DEPLOYAPI_PRODUCTION_ENVIRONMENTS; default production)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(vars(args))
    return 2  # unreachable: argparse rejects unknown commands


def serve(flags: dict) -> int:
    """Run the server until SIGINT or SIGTERM; return the process exit code."""
    import waitress

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(flags)
        app = create_app(settings.db, production_environments=settings.production_environments)
    except (ConfigError, ValueError, DatabaseError) as error:
        print(f"deployapi: {error}", file=sys.stderr)
        return 2
    try:
        server = waitress.create_server(app, host=settings.host, port=settings.port,
                                        threads=settings.threads)
    except OSError as error:
        print(f"deployapi: cannot listen on {settings.host}:{settings.port}: {error.strerror or error}",
              file=sys.stderr)
        app.close()
        return 1

    def stop(signum: int, frame: object) -> None:
        # waitress's run() loop treats SystemExit as "stop": it closes the
        # listening socket and lets worker threads finish their current request.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host = server.effective_host
    shown = f"[{host}]" if ":" in str(host) else host
    print(f"deployapi listening on http://{shown}:{server.effective_port}/ "
          f"(database {settings.db}, {settings.threads} threads)", flush=True)
    try:
        server.run()
    finally:
        app.close()
    print("deployapi stopped", flush=True)
    return 0
