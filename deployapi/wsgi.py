"""``deployapi.wsgi:app`` for other WSGI servers (gunicorn, mod_wsgi, uWSGI).

Configured from the same ``DEPLOYAPI_DB`` and ``DEPLOYAPI_PRODUCTION_ENVIRONMENTS``
environment variables as ``deployapi serve``; host, port and threads belong to
the hosting server.
"""

import os

from .app import create_app
from .config import ENVIRONMENT_VARIABLES, load_settings

# Only the variables this entry point uses: a DEPLOYAPI_PORT meant for
# "deployapi serve" must not stop another server from importing the app.
_used = {ENVIRONMENT_VARIABLES["db"], ENVIRONMENT_VARIABLES["production_environments"]}
_settings = load_settings({}, {name: value for name, value in os.environ.items() if name in _used})
app = create_app(_settings.db, production_environments=_settings.production_environments)
