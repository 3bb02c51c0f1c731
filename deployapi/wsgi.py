"""``deployapi.wsgi:app`` for other WSGI servers (gunicorn, mod_wsgi, uWSGI, waitress-serve).

The app that :func:`config.app_from_environment` makes, once, at import:
configured from the same ``DEPLOYAPI_*`` environment variables as ``deployapi
serve`` (database, production environments, configuration file, logging,
trusted identity, metrics, read-only serving) and built by the same function;
host, port and threads belong to the hosting server.  For a server that calls a factory instead, use
``deployapi:app_from_environment`` itself.
"""

from .config import app_from_environment

app = app_from_environment()
