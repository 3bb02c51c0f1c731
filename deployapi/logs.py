"""Logging: the access log line, request ids, and the text or JSON format of ``deployapi serve``.

The app only emits records (loggers ``deployapi`` and ``deployapi.access``);
configuring handlers is left to whoever runs it: ``deployapi serve`` calls
:func:`configure`, the entry points for other WSGI servers call
:func:`configure_hosted`, an embedding application keeps its own setup.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time
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
    # The fields travel as the record's args, in ACCESS_FIELDS order (not as
    # `extra`, which costs a dict and an attribute per field on every request).
    access_logger.info("%s %s %d %.1fms request_id=%s", method, path, status, duration_ms, request_id)


def access_fields(record: logging.LogRecord) -> dict[str, object]:
    """The fields of an access record by name; empty for any other record."""
    if record.name != access_logger.name or not isinstance(record.args, tuple) \
            or len(record.args) != len(ACCESS_FIELDS):
        return {}
    fields = dict(zip(ACCESS_FIELDS, record.args, strict=True))
    fields["duration_ms"] = round(fields["duration_ms"], 3)
    return fields


# What must not reach a log as it is: control characters (Cc; a newline would
# start a forged line, ESC a terminal escape), line and paragraph separators,
# and the bidirectional formatting characters that reorder what a terminal or
# viewer shows.  Request paths, methods and problem details carry client text.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_UNSAFE_BUT_LINE_BREAKS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape_one(match: re.Match) -> str:
    code = ord(match.group())
    return {0x09: "\\t", 0x0a: "\\n", 0x0d: "\\r"}.get(code) or (
        f"\\x{code:02x}" if code <= 0xff else f"\\u{code:04x}")


def escape(text: str) -> str:
    """``text`` with every character that could forge or hide part of a log line written as an escape."""
    return _UNSAFE.sub(_escape_one, text) if _UNSAFE.search(text) else text


class TextFormatter(logging.Formatter):
    """The standard text format, one record a line whatever the fields hold.

    The message is escaped (:func:`escape`), so a request path with a newline
    or an ESC cannot write a line or a terminal escape of its own.  A traceback
    keeps its line breaks, each of its lines indented: a line that starts at the
    left margin is always the start of a record.  The date and time are formatted
    once per second rather than per line.
    """

    _second: tuple[int, str] = (-1, "")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        return escape(super().formatMessage(record))

    def formatException(self, ei) -> str:  # noqa: N802 (logging's name)
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 (logging's name)
        return _indent(super().formatStack(stack_info))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        whole = int(record.created)
        second, text = self._second  # one tuple: threads see an old or a new pair, never a mix
        if whole != second:
            text = time.strftime(self.default_time_format, self.converter(whole))
            self._second = (whole, text)
        return self.default_msec_format % (text, record.msecs)


def _indent(text: str) -> str:
    return "\n".join("    " + _UNSAFE_BUT_LINE_BREAKS.sub(_escape_one, line) for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, (pid,) message, access fields, traceback.

    ``pid``: the process id to write in every line, for a server of several
    processes (``deployapi serve --workers``); None writes none.
    """

    def __init__(self, *args, pid: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._pid = {} if pid is None else {"pid": pid}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            **self._pid,
            "message": record.getMessage(),
        }
        entry.update(access_fields(record))
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        # json.dumps escapes U+0000-U+001F itself; C1 controls, separators and
        # bidi controls it would write as they are (ensure_ascii=False).
        text = json.dumps(entry, ensure_ascii=False)
        return _UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text) if _UNSAFE.search(text) else text


def stderr_handler(fmt: str = "text", *, pid: int | None = None) -> logging.Handler:
    """A handler writing to stderr in the text or JSON format; with ``pid``, each line names that process
    (text: ``logger[pid]:``, as syslog writes it; JSON: a ``pid`` field)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(pid=pid))
    else:
        # The pid written into the format once, not looked up per record (logging.logProcesses is off).
        process = "" if pid is None else f"[{pid}]"
        handler.setFormatter(TextFormatter(f"%(asctime)s %(levelname)s %(name)s{process}: %(message)s"))
    return handler


def configure(level: str = "info", fmt: str = "text", *, pid: int | None = None) -> None:
    """Send every log record at ``level`` or above to stderr in the chosen format.

    For a process that is deployapi's own (``deployapi serve``, ``deployapi relay``):
    it replaces the root logger's handlers.  ``pid``: written in every line
    (:func:`stderr_handler`), by each process of ``deployapi serve --workers``.
    """
    handler = stderr_handler(fmt, pid=pid)
    # What a record need not collect, since neither format prints it: the
    # caller's file and line, thread and process names (the "Optimization"
    # section of the logging HOWTO), which makes each access line cheaper
    # (docs/performance.md).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Under load waitress warns "Task queue depth is N" for nearly every request
    # (a third of the log in the soak test); the access log's durations show
    # queueing already.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


# Marks the handler configure_hosted adds, so that a second call replaces it rather than add another.
_HOSTED = "_deployapi_hosted"


def configure_hosted(level: str = "info", fmt: str = "text", *, asked: bool = False) -> bool:
    """Send deployapi's own records to stderr in its format, in a process another server runs.

    The process's logging is the hosting server's (gunicorn, waitress-serve,
    uWSGI), so only the logger ``deployapi`` is touched: it gets a stderr
    handler and ``level``, and stops passing its records up to the root logger
    (which waitress-serve gives a handler of its own after loading the app:
    every line would be written twice).  And only when the host has not
    decided already where they go: neither ``deployapi`` nor
    ``deployapi.access`` has a handler, and, unless deployapi's logging was
    ``asked`` for (a ``DEPLOYAPI_LOG_*`` variable set), the root logger has
    none either.  Unlike :func:`configure` it leaves the interpreter-wide
    logging switches alone, which the host's own formats may need.

    :returns: whether it configured the logger.
    """
    own = logging.getLogger("deployapi")
    ours = [handler for handler in own.handlers if getattr(handler, _HOSTED, False)]
    theirs = [handler for name in ("deployapi", "deployapi.access")
              for handler in logging.getLogger(name).handlers if not getattr(handler, _HOSTED, False)]
    if theirs or (logging.getLogger().handlers and not asked and not ours):
        return False
    for handler in ours:
        own.removeHandler(handler)
    handler = stderr_handler(fmt)
    setattr(handler, _HOSTED, True)
    own.addHandler(handler)
    own.setLevel(level.upper())
    own.propagate = False
    return True
