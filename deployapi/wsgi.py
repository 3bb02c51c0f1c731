"""``deployapi.wsgi:app`` for other WSGI servers (gunicorn, mod_wsgi, uWSGI).

Configured from the same ``DEPLOYAPI_DB`` and ``DEPLOYAPI_PRODUCTION_ENVIRONMENTS``
environment variables as ``deployapi serve``; host, port and threads belong to
the hosting server.
"""

from .app import create_app
from .config import load_settings

_settings = load_settings({})
app = create_app(_settings.db, production_environments=_settings.production_environments)
