"""``deployapi.wsgi:app`` for other WSGI servers (gunicorn, mod_wsgi, uWSGI).

Configured from the same ``DEPLOYAPI_*`` environment variables as ``deployapi
serve`` (database, production environments, logging, trusted identity); host,
port and threads belong to the hosting server.
"""

import os

from . import logs
from .app import create_app
from .config import ENVIRONMENT_VARIABLES, load_settings

# Only the variables this entry point uses: a DEPLOYAPI_PORT meant for
# "deployapi serve" must not stop another server from importing the app.
_used = {ENVIRONMENT_VARIABLES[name] for name in ("db", "production_environments", "log_level", "log_format",
                                                 "trust_remote_user", "remote_user_header", "require_existing")}
_settings = load_settings({}, {name: value for name, value in os.environ.items() if name in _used})
if any(ENVIRONMENT_VARIABLES[name] in os.environ for name in ("log_level", "log_format")):
    # Asked for explicitly: log as "deployapi serve" does.  Otherwise the
    # hosting server's own logging configuration applies.
    logs.configure(_settings.log_level, _settings.log_format)
app = create_app(_settings.db, production_environments=_settings.production_environments,
                 trust_remote_user=_settings.trust_remote_user, remote_user_header=_settings.remote_user_header,
                 require_existing=_settings.require_existing)
