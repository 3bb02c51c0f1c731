"""deployapi: the durable record of every deployment, from request to outcome, over HTTP."""

from .app import create_app
from .config import app_from_environment

__all__ = ["app_from_environment", "create_app"]
__version__ = "0.1.0"
