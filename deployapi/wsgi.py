"""``deployapi.wsgi:app`` for other WSGI servers (gunicorn, mod_wsgi, uWSGI).

Configured from the same ``DEPLOYAPI_*`` environment variables as ``deployapi
serve`` (database, production environments, configuration file, logging, trusted identity,
metrics), and built by the same function (:func:`config.app_from_settings`); host, port and
threads belong to the hosting server.
"""

import os

from .config import ENVIRONMENT_VARIABLES, app_from_settings, load_settings

# Only the variables this entry point uses: a DEPLOYAPI_PORT meant for
# "deployapi serve" must not stop another server from importing the app.
_used = {ENVIRONMENT_VARIABLES[name] for name in ("db", "production_environments", "config", "log_level",
                                                 "log_format", "trust_remote_user", "remote_user_header",
                                                 "remote_groups_header", "require_existing", "metrics")}
_environ = {name: value for name, value in os.environ.items() if name in _used}
# Logging asked for explicitly is configured as "deployapi serve" does;
# otherwise the hosting server's own logging configuration applies.
_log_asked = any(_environ.get(ENVIRONMENT_VARIABLES[name]) for name in ("log_level", "log_format"))
app = app_from_settings(load_settings({}, _environ), configure_logging=_log_asked)
