"""The ``deployapi`` command: ``serve``, ``relay``, ``check`` and ``backup``."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import logging
import os
import platform
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import __version__, delivery, logs, workers
from .config import ENVIRONMENT_VARIABLES, ConfigError, Settings, app_from_settings, load_settings
from .config_file import load_config, read_document
from .delivery import SERVE_SHARE, Deliverer
from .integrity import Anchor, check_database
from .repository import DatabaseError, Repository, backup_database, fold_wal_back
from .server import Limits, bind, create_server

logger = logging.getLogger("deployapi")

# How long a stopping server waits for requests already received to be answered.
DRAIN_SECONDS = 10.0

# How long a thread may hold the GIL while another waits for it (Python's
# default is 5 ms).  waitress's event-loop thread polls its sockets in pure
# Python and, while a worker's answer is being sent, finds that socket writable
# on every pass: a worker coming back from a socket send or an SQLite call then
# waits up to a whole interval for the GIL while the loop spins.  What it
# changes is measured in docs/adr/0010-gil-switch-interval.md.
GIL_SWITCH_INTERVAL = 0.00001

# How long the workers of serve --workers have to stop after SIGTERM: what one
# process takes at most (answering, stopping its deliveries, ending its threads).
WORKERS_STOP_SECONDS = DRAIN_SECONDS + delivery.STOP_GRACE_SECONDS + delivery.STOP_ABANDON_SECONDS + 3

# A server that got a request this recently is busy: its webhook deliveries keep to delivery.SERVE_SHARE.
BUSY_SECONDS = 0.5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deployapi", description="The deployment record over HTTP.")
    parser.add_argument("-V", "--version", action="version", version=version_line(),
                        help="show the versions of deployapi, Python, SQLite, waitress and Werkzeug, and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="serve the API under waitress",
        description="Serve the API under waitress. Each flag falls back to its DEPLOYAPI_* "
                    "environment variable, then to its default.")
    serve.add_argument("--host", help="address to bind (DEPLOYAPI_HOST; default 127.0.0.1)")
    serve.add_argument("--port", help="port, 0 for any free one (DEPLOYAPI_PORT; default 8080)")
    serve.add_argument("--db", help="SQLite file, created if missing (DEPLOYAPI_DB; default ./deployapi.db)")
    serve.add_argument("--threads", help="worker threads (DEPLOYAPI_THREADS; default 4)")
    serve.add_argument("--workers", metavar="N",
                       help="processes serving on the same socket, each with --threads threads "
                            "(DEPLOYAPI_WORKERS; default 1)")
    serve.add_argument("--production-environments", dest="production_environments", metavar="A,B",
                       help="environments whose deployments must state a risk "
                            "(DEPLOYAPI_PRODUCTION_ENVIRONMENTS; default production)")
    serve.add_argument("--config", metavar="FILE",
                       help="TOML file of review policies per environment; refused at start-up when it "
                            "cannot be used (DEPLOYAPI_CONFIG; default none: the v1 rules everywhere)")
    serve.add_argument("--trust-remote-user", dest="trust_remote_user", action="store_const", const="true",
                       help="record the authenticated user (WSGI REMOTE_USER) as actor and requester; "
                            "401 without one (DEPLOYAPI_TRUST_REMOTE_USER)")
    serve.add_argument("--remote-user-header", dest="remote_user_header", metavar="HEADER",
                       help="with --trust-remote-user: take REMOTE_USER from this header, which the "
                            "authenticating proxy in front must set (DEPLOYAPI_REMOTE_USER_HEADER)")
    serve.add_argument("--remote-groups-header", dest="remote_groups_header", metavar="HEADER",
                       help="with --trust-remote-user: the caller's groups, comma-separated, from this header "
                            "that the proxy sets, for group:NAME approvers (DEPLOYAPI_REMOTE_GROUPS_HEADER)")
    serve.add_argument("--connection-limit", dest="connection_limit", metavar="N",
                       help="open connections at most; more wait to be accepted (DEPLOYAPI_CONNECTION_LIMIT; "
                            "default 100)")
    serve.add_argument("--channel-timeout", dest="channel_timeout", metavar="SECONDS",
                       help="close a connection that is idle, whose request has not fully arrived, or whose "
                            "client has taken no output, for this long (DEPLOYAPI_CHANNEL_TIMEOUT; default 30)")
    serve.add_argument("--outbuf-high-watermark", dest="outbuf_high_watermark", metavar="BYTES",
                       help="a worker waits once this much output for one connection is unsent "
                            "(DEPLOYAPI_OUTBUF_HIGH_WATERMARK; default 4194304)")
    serve.add_argument("--require-existing", dest="require_existing", action="store_const", const="true",
                       help="refuse to start when there is no database at --db, instead of creating an empty "
                            "one (DEPLOYAPI_REQUIRE_EXISTING)")
    serve.add_argument("--log-level", dest="log_level", metavar="|".join(logs.LEVELS),
                       help="lowest level logged (DEPLOYAPI_LOG_LEVEL; default info)")
    serve.add_argument("--log-format", dest="log_format", metavar="|".join(logs.FORMATS),
                       help="log lines as text or one JSON object each (DEPLOYAPI_LOG_FORMAT; default text)")
    serve.add_argument("--metrics", dest="metrics", action="store_const", const="true",
                       help="serve GET /metrics in the Prometheus text format, without authentication; "
                            "default off: /metrics is 404 (DEPLOYAPI_METRICS)")
    serve.add_argument("--read-only", dest="read_only", action="store_const", const="true",
                       help="serve an existing copy (a restore, a backup) without writing to it: every GET "
                            "answers, every write is 503 read_only, no webhook is delivered (DEPLOYAPI_READ_ONLY)")

    relay = commands.add_parser(
        "relay", help="deliver webhooks without serving the API",
        description="Deliver the configuration file's webhooks for a database served by other processes "
                    "(gunicorn workers, say), until SIGINT or SIGTERM. One deliverer per database works at "
                    "a time: a second one waits and takes over when the first stops or dies. Each flag "
                    "falls back to its DEPLOYAPI_* environment variable, then to its default.")
    relay.add_argument("--db", help="SQLite file, created if missing (DEPLOYAPI_DB; default ./deployapi.db)")
    relay.add_argument("--config", metavar="FILE",
                       help="TOML file whose [[webhooks]] to deliver; required (DEPLOYAPI_CONFIG)")
    relay.add_argument("--require-existing", dest="require_existing", action="store_const", const="true",
                       help="refuse to start when there is no database at --db (DEPLOYAPI_REQUIRE_EXISTING)")
    relay.add_argument("--log-level", dest="log_level", metavar="|".join(logs.LEVELS),
                       help="lowest level logged (DEPLOYAPI_LOG_LEVEL; default info)")
    relay.add_argument("--log-format", dest="log_format", metavar="|".join(logs.FORMATS),
                       help="log lines as text or one JSON object each (DEPLOYAPI_LOG_FORMAT; default text)")

    check = commands.add_parser(
        "check", help="verify a database: SQLite integrity and the history invariants",
        description="Verify a database without changing it. Exit 0 when every check holds, "
                    "1 when one fails (listing the deployment ids), 2 when it cannot be read.")
    check.add_argument("--db", help="SQLite file (DEPLOYAPI_DB; default ./deployapi.db)")
    check.add_argument("--expect-head", dest="expect_head", action="append", default=[], metavar="ID:HASH",
                       help="a head recorded earlier from GET /events/head (id and hash); the history must "
                            "still contain it unchanged. Repeat for several.")
    check.add_argument("--from-head", dest="from_head", metavar="ID:HASH",
                       help="check only the history after a head recorded earlier: that event must still have "
                            "that hash, and the chain, the events after it and every deployment they belong to "
                            "are checked; the events before it are not")

    backup = commands.add_parser(
        "backup", help="copy a database consistently while it is being served",
        description="Copy a database with SQLite's online backup API, then check the copy. "
                    "The server may keep serving writes meanwhile.")
    backup.add_argument("--db", help="SQLite file to copy (DEPLOYAPI_DB; default ./deployapi.db)")
    backup.add_argument("destination", help="new file to write; must not exist yet")
    return parser


def version_line() -> str:
    """``deployapi 0.1.0 (Python …, SQLite …, waitress …, Werkzeug …)``: what a bug report needs.

    deployapi's own version is ``deployapi.__version__``, the one place it is
    written (setup.cfg reads it into the package's metadata), so a source
    checkout and an editable install whose metadata predates a change of
    version say the version of the code that runs.
    """
    def installed(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    return (f"deployapi {__version__} (Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"waitress {installed('waitress')}, Werkzeug {installed('werkzeug')})")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(vars(args))
    if args.command == "relay":
        return relay(vars(args))
    db = args.db or os.environ.get(ENVIRONMENT_VARIABLES["db"]) or Settings.db
    if args.command == "check":
        try:
            anchors = [Anchor.parse(text) for text in args.expect_head]
        except ValueError as error:
            print(f"deployapi check: --expect-head: {error}", file=sys.stderr)
            return 2
        try:
            from_head = Anchor.parse(args.from_head) if args.from_head is not None else None
        except ValueError as error:
            print(f"deployapi check: --from-head: {error}", file=sys.stderr)
            return 2
        early = [a for a in anchors if from_head is not None and a.event_id < from_head.event_id]
        if early:
            print(f"deployapi check: --expect-head {early[0].event_id}:… is before --from-head {from_head.event_id}:…, "
                  "where the check starts; check the whole file, or from an earlier head", file=sys.stderr)
            return 2
        return check(db, anchors, from_head)
    return backup(db, args.destination)


def check(path: str, anchors: Sequence[Anchor] = (), from_head: Anchor | None = None) -> int:
    """Print the check report; 0 when all hold, 1 when any fails, 2 when the file can't be read."""
    try:
        report = check_database(path, anchors, from_head)
    except OSError as error:  # says which file and why
        print(f"deployapi check: {error}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as error:
        print(f"deployapi check: cannot read {path!r}: {error}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def backup(source: str, destination: str) -> int:
    """Copy ``source`` to ``destination`` and check the copy."""
    try:
        backup_database(source, destination)
    except OSError as error:  # says which file and why
        print(f"deployapi backup: {error}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as error:
        print(f"deployapi backup: cannot read {source!r}: {error}", file=sys.stderr)
        return 2
    print(f"copied {source} to {destination}; checking the copy")
    return check(destination)


def serve(flags: dict) -> int:
    """Run the server until SIGINT or SIGTERM; return the process exit code."""
    try:
        settings = load_settings(flags)
    except ConfigError as error:
        print(f"deployapi: {error}", file=sys.stderr)
        return 2
    # The whole process is ours here; an application that embeds the app
    # decides this for its own process (docs/operations.md).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    # The port first: one in use must not leave a new database file behind.
    try:
        sockets = bind(settings.host, settings.port)
    except (OSError, ValueError) as error:  # ValueError: waitress could not resolve the host
        return _cannot_listen(settings, error)
    if settings.workers > 1:
        return _serve_workers(settings, sockets)
    return _serve_process(settings, sockets)


@dataclass(frozen=True)
class _WorkerRole:
    """What a worker of serve --workers is told: its slot, whom to tell it serves, where signals go."""

    slot: int
    ready: Callable[[], None]
    stopping: list[int]


def _serve_process(settings: Settings, sockets: list, worker: _WorkerRole | None = None) -> int:
    """Serve on ``sockets`` until SIGINT or SIGTERM: the whole server, or one ``worker`` of several."""
    try:
        # One thread fewer than waitress has may write or wait to write, so
        # that reads are answered while writes wait (ADR 0007).  Workers write
        # one file at once: they queue on the lock between processes too (ADR 0020).
        app = app_from_settings(settings, configure_logging=worker is None,
                                max_writers=max(1, settings.threads - 1), process_lock=worker is not None)
    except (ValueError, DatabaseError) as error:
        for sock in sockets:
            sock.close()
        print(f"deployapi: {error}", file=sys.stderr)
        return 2
    limits = Limits(threads=settings.threads, connection_limit=settings.connection_limit,
                    channel_timeout=settings.channel_timeout, outbuf_high_watermark=settings.outbuf_high_watermark)
    try:
        server = create_server(app, sockets=sockets, limits=limits)
    except (OSError, ValueError) as error:
        for sock in sockets:
            sock.close()
        app.close()
        return _cannot_listen(settings, error)

    stopping = _stop_on_signals() if worker is None else worker.stopping
    # Beside the server, never in its threads: a receiver that hangs holds up no request.
    # Of several workers, the first delivers (docs/operations.md, "Several workers").
    deliverer = None
    if app.webhooks and app.read_only:
        logger.info("read-only: no webhook is delivered; GET /webhooks shows the positions the copy holds")
    elif app.webhooks and (worker is None or worker.slot == 0):
        deliverer = Deliverer(app.repository, app.webhooks, share=SERVE_SHARE,
                              busy=lambda: time.perf_counter() - app.last_request_at < BUSY_SECONDS)
    if worker is None:
        print(f"deployapi listening on {_urls(server)} (database {settings.db}, {settings.threads} threads)",
              flush=True)
    else:
        worker.ready()
    try:
        if deliverer is not None:
            deliverer.start()

        def before_threads_end() -> None:
            if deliverer is not None:
                deliverer.stop()
            app.repository.checkpoint()

        _run_until_stopped(server, stopping, before_threads_end=before_threads_end,
                           on_signal=deliverer.request_stop if deliverer else lambda: None)
    finally:
        app.close()
    if worker is None:
        print("deployapi stopped", flush=True)
    return 0


def _serve_workers(settings: Settings, sockets: list) -> int:
    """Serve with ``settings.workers`` processes forked from this one, which supervises them (ADR 0020)."""
    logs.configure(settings.log_level, settings.log_format, pid=os.getpid())
    # Once, before the fork: the configuration read and checked, the database created or migrated,
    # each failure reported as one process reports it.  Every worker, a restarted one too, gets the
    # document read here: the file is read once per start of the service, as with one process.
    # The app is closed again: no connection may cross the fork.
    try:
        app_from_settings(settings, configure_logging=False).close()
        if settings.config is not None:
            settings = dataclasses.replace(settings, config=read_document(settings.config))
    except (ValueError, DatabaseError) as error:
        for sock in sockets:
            sock.close()
        print(f"deployapi: {error}", file=sys.stderr)
        return 2
    from waitress.adjustments import Adjustments

    # Listening from now on: connections wait in the backlog while workers start or restart.
    for sock in sockets:
        sock.listen(Adjustments.backlog)

    def run_worker(slot: int, ready: Callable[[], None], stopping: list[int]) -> int:
        logs.configure(settings.log_level, settings.log_format, pid=os.getpid())
        return _serve_process(settings, sockets, _WorkerRole(slot, ready, stopping))

    def announce() -> None:
        print(f"deployapi listening on {_socket_urls(sockets)} (database {settings.db}, {settings.workers} "
              f"workers, {settings.threads} threads each)", flush=True)

    database = os.path.abspath(settings.db)
    try:
        status = workers.Supervisor(settings.workers, run_worker, stop_grace=WORKERS_STOP_SECONDS).run(announce)
    finally:
        for sock in sockets:
            sock.close()
    # Every worker has exited: this process is the last to let go of the file, and so removes the
    # -wal and -shm that workers closing at the same moment each left to the other.  A read-only
    # replica writes nothing, that checkpoint included.
    if not settings.read_only:
        fold_wal_back(database)
    print("deployapi stopped", flush=True)
    return status


def _socket_urls(sockets: list) -> str:
    addresses = [sock.getsockname()[:2] for sock in sockets]
    return " ".join(f"http://{f'[{h}]' if ':' in str(h) else h}:{p}/" for h, p in addresses)


def _cannot_listen(settings: Settings, error: Exception) -> int:
    reason = getattr(error, "strerror", None) or error
    print(f"deployapi: cannot listen on {settings.host}:{settings.port}: {reason}", file=sys.stderr)
    return 1


def relay(flags: dict) -> int:
    """Deliver webhooks until SIGINT or SIGTERM; return the process exit code."""
    try:
        settings = load_settings({name: flags.get(name) for name in RELAY_SETTINGS},
                                 {name: value for name, value in os.environ.items()
                                  if name in {ENVIRONMENT_VARIABLES[setting] for setting in RELAY_SETTINGS}})
    except ConfigError as error:
        print(f"deployapi relay: {error}", file=sys.stderr)
        return 2
    if settings.config is None:
        print("deployapi relay: no configuration file: give --config FILE (or DEPLOYAPI_CONFIG) with [[webhooks]]",
              file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        # The relay serves nobody, so who may approve (groups need a groups header) is not its business.
        config = load_config(settings.config, groups_available=True)
    except ValueError as error:
        print(f"deployapi relay: {error}", file=sys.stderr)
        return 2
    if not config.webhooks:
        print(f"deployapi relay: {config.source} has no [[webhooks]]: nothing to deliver", file=sys.stderr)
        return 2
    try:
        repository = Repository(settings.db, require_existing=settings.require_existing)
    except DatabaseError as error:
        print(f"deployapi relay: {error}", file=sys.stderr)
        return 2
    stopping = _stop_on_signals()
    deliverer = Deliverer(repository, config.webhooks)
    try:
        deliverer.start()
        print(f"deployapi relay delivering {len(config.webhooks)} webhook(s) (database {settings.db})", flush=True)
        while not stopping:
            time.sleep(0.2)
        logger.info("stopping: finishing the deliveries in flight (signal %d)", stopping[0])
        deliverer.stop()
    finally:
        repository.close()
    print("deployapi relay stopped", flush=True)
    return 0


# What deployapi relay reads of the settings (flags, else variables, else defaults).
RELAY_SETTINGS = ("db", "config", "require_existing", "log_level", "log_format")


def _stop_on_signals() -> list[int]:
    """A list that SIGINT and SIGTERM append their number to, from now on."""
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.append(signum))
    return stopping


def _urls(server) -> str:
    listening = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    return " ".join(f"http://{f'[{h}]' if ':' in str(h) else h}:{p}/" for h, p in listening)


def _run_until_stopped(server, stopping: list[int], before_threads_end=lambda: None, on_signal=lambda: None) -> None:
    """Serve until a signal arrives, then stop accepting and answer what was already received.

    waitress's own run() stops its event loop at once on SIGINT, so answers
    that worker threads are still producing would never be sent.  This loop
    runs waitress's event loop one step at a time instead (a signal is seen
    after the current step, within asyncore_loop_timeout, 1 s by default),
    then keeps it running until no connection has a request in progress or
    unsent output, up to DRAIN_SECONDS.
    """
    from waitress import wasyncore
    from waitress.server import BaseWSGIServer

    socket_map = getattr(server, "map", None) or server._map
    timeout = server.adj.asyncore_loop_timeout
    while not stopping:
        wasyncore.loop(timeout=timeout, map=socket_map, count=1)

    on_signal()
    listeners = [s for s in list(socket_map.values()) if isinstance(s, BaseWSGIServer)]
    for listener in listeners:
        wasyncore.dispatcher.close(listener)  # stop accepting; keep the trigger that wakes the loop
    logger.info("stopping: answering requests in progress (signal %d)", stopping[0])
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline and any(_busy(listener) for listener in listeners):
        wasyncore.loop(timeout=0.05, map=socket_map, count=1)
    # While the worker threads, and the connections they hold, are still there.
    before_threads_end()
    for listener in listeners:
        listener.task_dispatcher.shutdown(timeout=1)
    wasyncore.close_all(socket_map)


def _busy(listener) -> bool:
    return any(channel.requests or channel.total_outbufs_len
               for channel in list(listener.active_channels.values()))
