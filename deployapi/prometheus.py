"""GET /metrics: the app's measurements in the Prometheus text exposition format (version 0.0.4).

Opt-in (``create_app(metrics=True)``, ``deployapi serve --metrics``), written with
the standard library.  Every metric, its labels and the alerts worth having are
in docs/operations.md, "Metrics".  The measurements belong to the app that
takes them (:class:`Metrics`, one per DeployAPI), never to the module.

They come from three places:

- requests, as each is answered (:class:`RequestMetrics`: per request one
  lock, one dictionary lookup and a histogram observation);
- the database's writes: how long each waited for its turn and how many were
  refused as busy, counted by the Database itself (repository.WriteStats);
- what the database holds, read at each scrape: deployments by status (counted
  once, then kept up to date from the events since the previous scrape), the
  newest event, the files' sizes and each webhook's backlog.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from werkzeug.routing import Map

from . import lifecycle
from .histogram import Histogram, HistogramSnapshot
from .repository import Deliveries, Repository
from .webhooks import Webhook

logger = logging.getLogger("deployapi")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Upper bounds (seconds) of the request-duration histogram: a read takes under a
# millisecond, a write a few, and a request queued behind busy writes up to the
# busy timeout (5 s).
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# The route label of a request no route matched (404 and 405 from routing).
UNMATCHED_ROUTE = "unmatched"
# A request line may carry any token as its method: the ones HTTP defines keep their
# name, every other is counted as this one, so that clients cannot add series without bound.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})
OTHER_METHOD = "other"

# A rule's any() part takes a fixed set of values (the actions), each a path of
# its own in the OpenAPI document, and so a route label of its own.
_CHOICE = re.compile(r"<any\((?P<values>[^)]*)\):(?P<name>\w+)>")
_VARIABLE = re.compile(r"<(?:[^:>]+:)?(\w+)>")

# Keyed by the rule's path pattern (Rule objects are not hashable; rules of one pattern share a label).
RouteNames = dict[str, tuple[str | None, dict[str | None, str]]]


def route_names(url_map: Map) -> RouteNames:
    """For each rule's pattern: the name of its any() argument (or None), and its route label per value.

    The label is the rule's path as the OpenAPI document writes it
    (``/deployments/{deployment_id}/approve``), never the path requested:
    the number of label values stays that of the routes.
    """
    names: RouteNames = {}
    for rule in url_map.iter_rules():
        choice = _CHOICE.search(rule.rule)
        if choice is None:
            names[rule.rule] = (None, {None: _VARIABLE.sub(r"{\1}", rule.rule)})
            continue
        paths = {}
        for value in (item.strip().strip("'\"") for item in choice["values"].split(",")):
            paths[value] = _VARIABLE.sub(r"{\1}", rule.rule[:choice.start()] + value + rule.rule[choice.end():])
        names[rule.rule] = (choice["name"], paths)
    return names


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else OTHER_METHOD


class RequestMetrics:
    """Request durations by route, method and status, each series a histogram.  Thread-safe."""

    def __init__(self) -> None:
        # One lock for every series: held for a lookup and an observation,
        # far shorter than anything else a request does.
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str, int], Histogram] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        with self._lock:
            histogram = self._series.get(key)
            if histogram is None:
                histogram = self._series[key] = Histogram(REQUEST_BUCKETS)
            histogram.observe(seconds)

    def snapshot(self) -> dict[tuple[str, str, int], HistogramSnapshot]:
        with self._lock:
            return {key: histogram.snapshot() for key, histogram in self._series.items()}


class StatusCounts:
    """Deployments per status: counted in full at the first scrape, then moved by the events since.

    A full count reads the whole status index (linear in the deployments);
    the events since the previous scrape are a range of event ids, as few as
    the writes in between.  Thread-safe: scrapes at once take turns.
    """

    def __init__(self, repository: Repository):
        self._repository = repository
        self._lock = threading.Lock()
        self._counts: dict[str, int] | None = None
        self._through = 0

    def read(self) -> tuple[dict[str, int], int]:
        """The number of deployments in each status (every status, 0s included), and the newest event's id."""
        with self._lock:
            if self._counts is not None:
                changes, head = self._repository.status_changes_after(self._through)
                # Fewer events than counted already: not the history counted (a
                # restored file); count again.
                if head >= self._through:
                    for from_status, to_status, events in changes:
                        if from_status is not None:
                            self._counts[from_status] = self._counts.get(from_status, 0) - events
                        self._counts[to_status] = self._counts.get(to_status, 0) + events
                    self._through = head
                    return _every_status(self._counts), head
            self._counts, self._through = self._repository.status_counts()
            return _every_status(self._counts), self._through


def _every_status(counts: dict[str, int]) -> dict[str, int]:
    return {status: counts.get(status, 0) for status in lifecycle.STATUSES}


class Metrics:
    """The measurements of one app, and their exposition for GET /metrics."""

    def __init__(self, repository: Repository, *, webhooks: Sequence[Webhook] = (), clock: Callable[[], datetime]):
        # Read here, not at import: the package imports this module before it sets its version.
        from . import __version__

        self.requests = RequestMetrics()
        self._repository = repository
        self._webhooks = tuple(webhooks)
        self._deliveries = Deliveries(repository)
        self._clock = clock
        self._statuses = StatusCounts(repository)
        self._started_at = time.time()
        self._build = {"version": __version__, "python": platform.python_version(),
                       "sqlite": sqlite3.sqlite_version}

    def render(self) -> str:
        """The exposition text: every metric, the database's read now."""
        out = Exposition()
        out.family("deployapi_build_info", "gauge",
                   "Always 1; the labels name the deployapi, Python and SQLite versions running.")
        out.sample("deployapi_build_info", self._build, 1)
        out.family("deployapi_start_time_seconds", "gauge", "When this app was created, in Unix seconds.")
        out.sample("deployapi_start_time_seconds", {}, self._started_at)
        self._render_requests(out)
        self._render_writes(out)
        self._render_database(out)
        return out.text()

    def _render_requests(self, out: Exposition) -> None:
        series = sorted(self.requests.snapshot().items())
        out.family("deployapi_http_requests_total", "counter",
                   "Requests answered, by route (the path template, or unmatched), method and status.")
        for (route, method, status), snapshot in series:
            out.sample("deployapi_http_requests_total",
                       {"route": route, "method": method, "status": str(status)}, snapshot.count)
        out.family("deployapi_http_request_duration_seconds", "histogram",
                   "Time from a request's arrival in the app to its response being ready, by route, method "
                   "and status.")
        for (route, method, status), snapshot in series:
            out.histogram("deployapi_http_request_duration_seconds",
                          {"route": route, "method": method, "status": str(status)}, snapshot)

    def _render_writes(self, out: Exposition) -> None:
        waits, refusals = self._repository.write_stats.snapshot()
        out.family("deployapi_db_write_wait_seconds", "histogram",
                   "Time each database write waited before its transaction began: for a writer slot, "
                   "this process's write lock and SQLite's lock.")
        out.histogram("deployapi_db_write_wait_seconds", {}, waits)
        out.family("deployapi_db_busy_total", "counter",
                   "Database operations refused as busy (answered 503 database_busy), by reason.")
        for reason, count in sorted(refusals.items()):
            out.sample("deployapi_db_busy_total", {"reason": reason}, count)

    def _render_database(self, out: Exposition) -> None:
        try:
            statuses, head = self._statuses.read()
            webhooks = self._deliveries.statuses(self._webhooks, oldest_pending=True) if self._webhooks else []
        except Exception as error:  # a scrape still reports the requests when the database cannot answer
            logger.warning("metrics: cannot read the database: %s", error)
            statuses = None
        out.family("deployapi_database_up", "gauge",
                   "1 when this scrape could read the database, 0 when it could not (the metrics read from "
                   "it are then left out).")
        out.sample("deployapi_database_up", {}, 0 if statuses is None else 1)
        if statuses is not None:
            out.family("deployapi_deployments", "gauge", "Deployments in each status.")
            for status, count in statuses.items():
                out.sample("deployapi_deployments", {"status": status}, count)
            out.family("deployapi_events_total", "counter",
                       "Events recorded: the newest event's id (ids count up from 1 in commit order; events are "
                       "never deleted).")
            out.sample("deployapi_events_total", {}, head)
        for name, path, help_text in (
                ("deployapi_database_size_bytes", self._repository.db_path, "Size of the database file."),
                ("deployapi_database_wal_size_bytes", self._repository.db_path + "-wal",
                 "Size of the database's write-ahead log (-wal) file; 0 when there is none.")):
            size = _file_size(path)
            if size is not None:
                out.family(name, "gauge", help_text)
                out.sample(name, {}, size)
        if statuses is not None and self._webhooks:
            self._render_webhooks(out, webhooks)

    def _render_webhooks(self, out: Exposition, statuses) -> None:
        now = self._clock()
        out.family("deployapi_webhook_pending_events", "gauge",
                   "Events a webhook matches that it has not been delivered yet.")
        for status in statuses:
            out.sample("deployapi_webhook_pending_events", {"webhook": status.position.name}, status.pending)
        out.family("deployapi_webhook_lag_seconds", "gauge",
                   "Age of the oldest event a webhook still has to be delivered; 0 when none is pending.")
        for status in statuses:
            lag = 0.0
            if status.oldest_pending_at is not None:
                lag = max((now - datetime.fromisoformat(status.oldest_pending_at)).total_seconds(), 0.0)
            out.sample("deployapi_webhook_lag_seconds", {"webhook": status.position.name}, lag)
        out.family("deployapi_webhook_failed_attempts", "gauge",
                   "Failed attempts in a row at a webhook's next event; 0 once it is delivered.")
        for status in statuses:
            out.sample("deployapi_webhook_failed_attempts", {"webhook": status.position.name},
                       status.position.failed_attempts)


def _file_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        # No -wal at all is normal (it is removed when the last connection closes);
        # a missing database file is a storage fault, which /healthz reports.
        return 0 if path.endswith("-wal") else None
    except OSError as error:
        logger.warning("metrics: cannot read the size of %s: %s", path, error)
        return None


class Exposition:
    """Lines of the text format: each family's HELP and TYPE, then its samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self._lines.append(f"# HELP {name} {_escape(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        self._lines.append(f"{name}{_labels(labels.items())} {_number(value)}")

    def histogram(self, name: str, labels: dict[str, str], snapshot: HistogramSnapshot) -> None:
        for bound, count in zip((*snapshot.bounds, math.inf), snapshot.cumulative, strict=True):
            self._lines.append(f"{name}_bucket{_labels([*labels.items(), ('le', _number(bound))])} {count}")
        self.sample(f"{name}_sum", labels, snapshot.total)
        self.sample(f"{name}_count", labels, snapshot.count)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    text = ",".join(f'{name}="{_label_value(value)}"' for name, value in pairs)
    return f"{{{text}}}" if text else ""


def _escape(text: str) -> str:
    """A HELP text as the format writes it: backslash and line feed escaped."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_value(value: str) -> str:
    """A label value as the format writes it: a double quote escaped too."""
    return _escape(value).replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
