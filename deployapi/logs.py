"""Logging: the access log line, request ids, and the text or JSON format of ``deployapi serve``.

The app only emits records (loggers ``deployapi`` and ``deployapi.access``);
configuring handlers is left to whoever runs it: ``deployapi serve`` calls
:func:`configure`, an embedding application keeps its own setup.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from datetime import datetime, timezone

access_logger = logging.getLogger("deployapi.access")

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
# Fields an access record carries, for the JSON format and for log processors.
ACCESS_FIELDS = ("method", "path", "status", "duration_ms", "request_id")

_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


def request_id_from(header: str | None) -> str:
    """The caller's X-Request-ID if it is 1-128 visible ASCII characters, else a new one."""
    if header is not None and _REQUEST_ID.fullmatch(header):
        return header
    return secrets.token_hex(16)  # as random as uuid4().hex, without building a UUID


def log_access(method: str, path: str, status: int, duration_ms: float, request_id: str) -> None:
    access_logger.info(
        "%s %s %d %.1fms request_id=%s", method, path, status, duration_ms, request_id,
        extra={"method": method, "path": path, "status": status,
               "duration_ms": round(duration_ms, 3), "request_id": request_id},
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, access fields, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ACCESS_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "info", fmt: str = "text") -> None:
    """Send every log record at ``level`` or above to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Under load waitress warns "Task queue depth is N" for nearly every request
    # (a third of the log in the soak test); the access log's durations show
    # queueing already.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
