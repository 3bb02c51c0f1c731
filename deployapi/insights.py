"""Questions about the whole record: what is live in each environment, and the DORA metrics.

Pure parsing and validation of the ``GET /environments`` and ``GET /metrics/dora``
query strings, and the values the repository answers them with.  The SQL is in
repository/insights_sql.py; the definitions of every number are in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import lifecycle, query
from .lifecycle import FieldProblem, ValidationFailed
from .listing import canonical_timestamp

ENVIRONMENTS_PARAMETERS = ("service", "environment")
DORA_PARAMETERS = ("service", "environment", "since", "until")
# The DORA window when the client gives no bound: the 30 days before now.
DEFAULT_WINDOW = timedelta(days=30)
# The longest DORA window: the longest calendar quarter.  An answer reads every
# step of its scope in its window (percentiles need every duration), so
# without a bound one request could read the whole history.
MAX_WINDOW = timedelta(days=92)
# In-flight deployments listed per environment, newest first; in_flight_count
# counts them all.  Approved deployments that are never started stay approved
# (no action leaves that status but start), so without a bound the answer would
# grow with every abandoned request.
IN_FLIGHT_SHOWN = 5


# --- queries ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvironmentsQuery:
    """Which (service, environment) pairs to describe: exact matches, ANDed."""

    service: str | None = None
    environment: str | None = None


@dataclass(frozen=True, slots=True)
class DoraQuery:
    """The scope and the half-open window ``[since, until)`` of the DORA metrics (canonical timestamps)."""

    since: str
    until: str
    service: str | None = None
    environment: str | None = None


def parse_environments_query(args: Mapping[str, Sequence[str]]) -> EnvironmentsQuery:
    """Validate the query string of ``GET /environments`` (each name mapped to all its values).

    :raises ValidationFailed: listing every unknown, repeated or malformed parameter.
    """
    problems: list[FieldProblem] = []
    values = query.single_values(args, ENVIRONMENTS_PARAMETERS, problems)
    fields = query.slugs(values, ("service", "environment"), problems)
    if problems:
        raise ValidationFailed(problems)
    return EnvironmentsQuery(**fields)


def parse_dora_query(args: Mapping[str, Sequence[str]], now: datetime) -> DoraQuery:
    """Validate the query string of ``GET /metrics/dora``; a missing bound defaults from ``now``.

    ``until`` defaults to ``now`` and ``since`` to 30 days before ``until``.

    :raises ValidationFailed: listing every unknown, repeated or malformed parameter.
    """
    problems: list[FieldProblem] = []
    values = query.single_values(args, DORA_PARAMETERS, problems)
    fields: dict[str, str] = query.slugs(values, ("service", "environment"), problems)
    bounds: dict[str, str] = {}
    for name in ("since", "until"):
        if name in values:
            try:
                bounds[name] = canonical_timestamp(values[name])
            except ValueError as error:
                problems.append(FieldProblem(name, str(error)))
    if problems:
        raise ValidationFailed(problems)

    until = bounds.get("until", lifecycle.format_timestamp(now))
    since = bounds.get("since") or _before(until, DEFAULT_WINDOW)
    # Canonical timestamps compare as text in time order.  since == until is an
    # empty window, answered with zeros; a reversed one is a mistake.
    if since > until:
        if "until" in bounds:
            problems.append(FieldProblem("until", "must not be earlier than since"))
        else:
            problems.append(FieldProblem("since", f"must not be later than until, which defaults to now ({until})"))
        raise ValidationFailed(problems)
    earliest = _before(until, MAX_WINDOW)
    if since < earliest:
        problems.append(FieldProblem("since", f"the window may be at most {MAX_WINDOW.days} days long: since must "
                                              f"be {earliest} or later (until is {until}); ask for longer periods "
                                              "window by window"))
        raise ValidationFailed(problems)
    return DoraQuery(since=since, until=until, **fields)


def _before(until: str, length: timedelta) -> str:
    """The canonical timestamp ``length`` before ``until``, or the first instant of year 1 if that is earlier."""
    moment = datetime.fromisoformat(until.removesuffix("Z")).replace(tzinfo=timezone.utc)
    try:
        return lifecycle.format_timestamp(moment - length)
    except OverflowError:  # an until in the first days of year 1
        return lifecycle.format_timestamp(datetime.min.replace(tzinfo=timezone.utc))


# --- answers ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveVersion:
    """The deployment whose version runs in an environment, by the record."""

    deployment_id: str
    version: str
    succeeded_at: str


@dataclass(frozen=True, slots=True)
class InFlight:
    """An approved or started deployment: about to change the environment, or changing it."""

    deployment_id: str
    version: str
    status: str
    updated_at: str  # when it reached that status


@dataclass(frozen=True, slots=True)
class EnvironmentState:
    """What is live in one (service, environment), and what is on its way."""

    service: str
    environment: str
    current: LiveVersion | None
    in_flight: tuple[InFlight, ...]  # the newest IN_FLIGHT_SHOWN
    in_flight_count: int
    last_change_at: str | None


@dataclass(frozen=True, slots=True)
class Durations:
    """A set of durations in seconds: how many, and their nearest-rank median and 90th percentile."""

    count: int
    median: float | None
    p90: float | None


def durations(values: Sequence[float]) -> Durations:
    """How many ``values`` (seconds) there are, and their nearest-rank median and 90th percentile.

    Of n sorted values the p-th percentile is the one at rank ceil(p * n),
    computed as (100p * n + 99) // 100 in integer arithmetic (docs/metrics.md).
    """
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return Durations(0, None, None)
    return Durations(n, ordered[(50 * n + 99) // 100 - 1], ordered[(90 * n + 99) // 100 - 1])


@dataclass(frozen=True, slots=True)
class DoraMetrics:
    """The DORA metrics of one scope and window (see docs/metrics.md)."""

    query: DoraQuery
    succeeded: int
    started: int
    failed_changes: int
    unrestored_failures: int
    deployment_frequency_per_day: float
    change_failure_rate: float | None
    time_to_restore: Durations
    approval_lead_time: Durations
    deploy_duration: Durations
    # From each success's commit (committed_at) to the success, for deployments that name one.
    lead_time_for_changes: Durations
