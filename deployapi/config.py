"""Server settings from command-line flags and ``DEPLOYAPI_*`` environment variables, and the app they describe.

Only the server entry points (``deployapi serve``, and for other WSGI servers
:func:`app_from_environment` and ``deployapi.wsgi``) read the environment;
``create_app`` takes plain arguments.  Every entry point turns its settings into
an app with :func:`app_from_settings`, so that every setting means the same
under waitress and under gunicorn.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import logs
from .app import DeployAPI, create_app, production_set
from .server import Limits


class ConfigError(ValueError):
    """A setting has a value the server cannot start with."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    db: str = "./deployapi.db"
    threads: int = 4
    # None: not set, so the default (production), or the configuration file, decides.
    production_environments: frozenset[str] | None = None
    # The file's path; or its document, read once for every worker of serve --workers.
    config: str | Mapping[str, Any] | None = None
    log_level: str = "info"
    log_format: str = "text"
    trust_remote_user: bool = False
    remote_user_header: str | None = None
    remote_groups_header: str | None = None
    require_existing: bool = False
    metrics: bool = False
    read_only: bool = False
    connection_limit: int = Limits.connection_limit
    channel_timeout: int = Limits.channel_timeout
    outbuf_high_watermark: int = Limits.outbuf_high_watermark
    workers: int = 1


# deployapi serve --workers: processes at most (each has --threads threads and connections of its own).
MAX_WORKERS = 64

ENVIRONMENT_VARIABLES = {
    "host": "DEPLOYAPI_HOST",
    "port": "DEPLOYAPI_PORT",
    "db": "DEPLOYAPI_DB",
    "threads": "DEPLOYAPI_THREADS",
    "production_environments": "DEPLOYAPI_PRODUCTION_ENVIRONMENTS",
    "config": "DEPLOYAPI_CONFIG",
    "log_level": "DEPLOYAPI_LOG_LEVEL",
    "log_format": "DEPLOYAPI_LOG_FORMAT",
    "trust_remote_user": "DEPLOYAPI_TRUST_REMOTE_USER",
    "remote_user_header": "DEPLOYAPI_REMOTE_USER_HEADER",
    "remote_groups_header": "DEPLOYAPI_REMOTE_GROUPS_HEADER",
    "require_existing": "DEPLOYAPI_REQUIRE_EXISTING",
    "metrics": "DEPLOYAPI_METRICS",
    "read_only": "DEPLOYAPI_READ_ONLY",
    "connection_limit": "DEPLOYAPI_CONNECTION_LIMIT",
    "channel_timeout": "DEPLOYAPI_CHANNEL_TIMEOUT",
    "outbuf_high_watermark": "DEPLOYAPI_OUTBUF_HIGH_WATERMARK",
    "workers": "DEPLOYAPI_WORKERS",
}


def load_settings(flags: Mapping[str, str | None], environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from flags (given as strings, None when absent), else the environment, else defaults.

    :raises ConfigError: naming the flag or variable whose value is invalid.
    """
    raw: dict[str, tuple[str, str]] = {}
    for name, variable in ENVIRONMENT_VARIABLES.items():
        flag_value = flags.get(name)
        if flag_value is not None:
            raw[name] = (flag_value, "--" + name.replace("_", "-"))
        elif environ.get(variable):
            raw[name] = (environ[variable], variable)

    values: dict[str, object] = {}
    if "host" in raw:
        values["host"] = raw["host"][0]
    if "db" in raw:
        values["db"] = raw["db"][0]
    if "config" in raw:
        values["config"] = raw["config"][0]
    if "port" in raw:
        values["port"] = _integer(*raw["port"], low=0, high=65535)
    if "threads" in raw:
        values["threads"] = _integer(*raw["threads"], low=1, high=256)
    for name, low, high in (("connection_limit", 1, 100_000), ("channel_timeout", 1, 3600),
                            ("outbuf_high_watermark", 65_536, 2**30)):
        if name in raw:
            values[name] = _integer(*raw[name], low=low, high=high)
    if "workers" in raw:
        values["workers"] = _integer(*raw["workers"], low=1, high=MAX_WORKERS)
    for name, choices in (("log_level", logs.LEVELS), ("log_format", logs.FORMATS)):
        if name in raw:
            text, source = raw[name]
            if text.lower() not in choices:
                raise ConfigError(f"{source}: {text!r} is not one of {', '.join(choices)}")
            values[name] = text.lower()
    for name in ("trust_remote_user", "require_existing", "metrics", "read_only"):
        if name in raw:
            values[name] = _boolean(*raw[name])
    for name in ("remote_user_header", "remote_groups_header"):
        if name in raw:
            text, source = raw[name]
            if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", text):
                raise ConfigError(f"{source}: {text!r} is not an HTTP header name")
            values[name] = text
            if not values.get("trust_remote_user"):
                raise ConfigError(f"{source} only makes sense with --trust-remote-user")
    if values.get("metrics") and values.get("workers", 1) > 1:
        # A scrape reaches one worker, whose counts are its own: Prometheus would take the
        # changes between workers for resets (docs/operations.md, "Several workers").
        raise ConfigError(f"{raw['metrics'][1]} cannot be used with {raw['workers'][1]} above 1: each worker "
                          "would answer GET /metrics with the counts of its own requests only")
    if "production_environments" in raw:
        text, source = raw["production_environments"]
        try:
            values["production_environments"] = production_set(text)
        except ValueError as error:
            raise ConfigError(f"{source}: {error}") from None
    return Settings(**values)


def app_from_settings(settings: Settings, *, configure_logging: bool = True,
                      max_writers: int | None = None, process_lock: bool = False) -> DeployAPI:
    """The app that ``settings`` describe, as both server entry points serve it.

    With ``configure_logging``, log records go to stderr at the settings' level
    and format first (so that opening the database is logged as configured), as
    ``deployapi serve`` wants for a process of its own; :func:`app_from_environment`
    passes False, having configured deployapi's own loggers only.  Host, port, threads and the waitress
    limits are the server's business, not the app's.  ``max_writers`` and ``process_lock`` go to
    ``create_app``.

    :raises ValueError: for settings ``create_app`` refuses.
    :raises repository.DatabaseError: when the database cannot be opened (or is missing, with
        ``require_existing`` or ``read_only``; or, with ``read_only``, needs an upgrade).
    """
    if configure_logging:
        logs.configure(settings.log_level, settings.log_format)
    return create_app(settings.db, production_environments=settings.production_environments,
                      config=settings.config, trust_remote_user=settings.trust_remote_user,
                      remote_user_header=settings.remote_user_header,
                      remote_groups_header=settings.remote_groups_header,
                      require_existing=settings.require_existing, max_writers=max_writers,
                      metrics=settings.metrics, read_only=settings.read_only, process_lock=process_lock)


def _boolean(text: str, source: str) -> bool:
    if text.lower() not in ("1", "true", "yes", "0", "false", "no"):
        raise ConfigError(f"{source}: {text!r} is not one of 1, true, yes, 0, false, no")
    return text.lower() in ("1", "true", "yes")


def _integer(text: str, source: str, *, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{source}: {text!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{source}: {value} is outside {low}-{high}")
    return value


# What the entry points for other WSGI servers read: host, port, threads and the
# connection limits are the hosting server's.  So a DEPLOYAPI_PORT meant for
# "deployapi serve" cannot stop another server from loading the app.
HOSTED_SETTINGS = ("db", "production_environments", "config", "log_level", "log_format", "trust_remote_user",
                   "remote_user_header", "remote_groups_header", "require_existing", "metrics", "read_only")
HOSTED_VARIABLES = frozenset(ENVIRONMENT_VARIABLES[name] for name in HOSTED_SETTINGS)


def app_from_environment(environ: Mapping[str, str] | None = None) -> DeployAPI:
    """A new app configured from the ``DEPLOYAPI_*`` variables: the zero-argument factory for other WSGI servers.

    ``waitress-serve --call deployapi:app_from_environment``, gunicorn's
    ``'deployapi:app_from_environment()'``; ``deployapi.wsgi:app`` is one made at
    import.  It reads the variables of :data:`HOSTED_VARIABLES` from ``environ``
    (default ``os.environ``) and ignores the others.  deployapi's records go to
    stderr in its text or JSON format unless the host has configured where they
    go (:func:`logs.configure_hosted`).

    :raises ConfigError: naming the variable whose value is invalid.
    :raises ValueError: for a configuration file that cannot be used.
    :raises repository.DatabaseError: when the database cannot be opened (or is missing, with
        ``DEPLOYAPI_REQUIRE_EXISTING``).
    """
    environ = os.environ if environ is None else environ
    chosen = {name: value for name, value in environ.items() if name in HOSTED_VARIABLES}
    settings = load_settings({}, chosen)
    asked = any(chosen.get(ENVIRONMENT_VARIABLES[name]) for name in ("log_level", "log_format"))
    # Before the app: opening the database logs, as deployapi serve does.
    logs.configure_hosted(settings.log_level, settings.log_format, asked=asked)
    return app_from_settings(settings, configure_logging=False)
