"""deployapi: the durable record of every deployment, from request to outcome, over HTTP."""

from .app import create_app

__all__ = ["create_app"]
__version__ = "0.1.0"
