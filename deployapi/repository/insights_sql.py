"""The SQL of what is live in each environment and of the DORA metrics (docs/metrics.md).

deployapi/insights.py parses the queries and computes the figures; the
statements here read the rows those need.
"""

from __future__ import annotations

import sqlite3

from .. import lifecycle
from ..insights import EnvironmentState, InFlight, LiveVersion
from .rows import sql_strings

# The steps of deployment_steps, as schema.sql's views name them (a test holds
# them to its CHECK): an approval, a start, a success and a failure are the
# events of those types; a started deployment's next event finishes it; a
# failed change is a failure, or a rollback of a deployment that had not failed.
STEP_APPROVED, STEP_STARTED, STEP_SUCCEEDED, STEP_FAILED = (
    lifecycle.APPROVED, lifecycle.STARTED, lifecycle.SUCCEEDED, lifecycle.FAILED)
STEP_FINISHED = "finished"
STEP_FAILED_CHANGE = "failed_change"
STEPS = (STEP_APPROVED, STEP_STARTED, STEP_SUCCEEDED, STEP_FINISHED, STEP_FAILED, STEP_FAILED_CHANGE)

# Both start from the (service, environment) pairs that have a deployment and
# then seek, pair by pair, into deployments_by_service_environment_status_updated
# (schema.sql): cost follows the number of pairs and the rows each answer
# needs, not the size of the table.  The definitions are in docs/metrics.md.

# Every (service, environment) pair in order, narrowed to the service and
# environment of the statement's `parameters` CTE when they are not NULL (each
# statement defines that CTE first, so that every `?` is bound once, in order).
# The pairs are found by hopping from one to the next through the index (a
# loose index scan): 200 seeks for 200 pairs, where SELECT DISTINCT reads every
# entry of the index.
_SCOPE_CTE = """
pairs (service, environment) AS (
    SELECT service, environment FROM (
        SELECT service, environment FROM deployments INDEXED BY deployments_by_service_environment
        ORDER BY service, environment LIMIT 1)
    UNION ALL
    SELECT next.service, next.environment
    FROM pairs JOIN deployments AS next ON next.rowid = coalesce(
        -- the next environment of the same service, else the first one of the next service
        (SELECT rowid FROM deployments INDEXED BY deployments_by_service_environment
         WHERE service = pairs.service AND environment > pairs.environment
         ORDER BY environment LIMIT 1),
        (SELECT rowid FROM deployments INDEXED BY deployments_by_service_environment
         WHERE service > pairs.service
         ORDER BY service, environment LIMIT 1))
),
scope (service, environment) AS (
    SELECT pairs.service, pairs.environment FROM pairs, parameters
    WHERE pairs.service = coalesce(parameters.service, pairs.service)
      AND pairs.environment = coalesce(parameters.environment, pairs.environment)
)"""

# One max(updated_at) per status that changes what runs (lifecycle.CHANGE_STATUSES),
# each the end of one index range, then the largest of them.
_LAST_CHANGE_AT = ",\n            ".join(
    "coalesce((SELECT max(updated_at) FROM deployments WHERE service = scope.service"
    f"\n                      AND environment = scope.environment AND status = {sql_strings(status)}), '')"
    for status in lifecycle.CHANGE_STATUSES)

# Per pair: the live version (the newest deployment whose status is still
# succeeded, by when it succeeded: its updated_at), the in-flight deployments
# (approved or started; their count, and the newest few as rows), and the last
# change (the newest started, succeeded, failed or rolled_back event, which is
# the updated_at of a deployment now in that status).  One row per in-flight
# deployment shown, or one row with NULLs when there is none.
ENVIRONMENTS_SQL = f"""
WITH RECURSIVE
parameters (service, environment, in_flight_shown) AS (VALUES (?, ?, ?)),
{_SCOPE_CTE},
-- MATERIALIZED (SQLite 3.35+): flattened into the join below, the subqueries
-- would run once per in-flight row instead of once per pair.
summaries AS MATERIALIZED (
    SELECT scope.service, scope.environment,
        (SELECT id FROM deployments INDEXED BY deployments_by_service_environment_status_updated
         WHERE service = scope.service AND environment = scope.environment
           AND status = {sql_strings(lifecycle.LIVE_STATUS)}
         ORDER BY updated_at DESC, id DESC LIMIT 1) AS live_id,
        (SELECT count(*) FROM deployments INDEXED BY deployments_by_service_environment_status_updated
         WHERE service = scope.service AND environment = scope.environment
           AND status IN ({sql_strings(*lifecycle.IN_FLIGHT_STATUSES)})) AS in_flight_count,
        -- max() of several arguments is NULL if any is: '' stands for "none" instead.
        nullif(max(
            {_LAST_CHANGE_AT}
        ), '') AS last_change_at
    FROM scope
)
SELECT summaries.service, summaries.environment, summaries.in_flight_count, summaries.last_change_at,
    live.id AS live_id, live.version AS live_version, live.updated_at AS live_succeeded_at,
    flight.id AS flight_id, flight.version AS flight_version, flight.status AS flight_status,
    flight.updated_at AS flight_updated_at
FROM summaries
LEFT JOIN deployments AS live ON live.id = summaries.live_id
LEFT JOIN deployments AS flight ON flight.rowid IN (
    SELECT rowid FROM deployments INDEXED BY deployments_by_service_environment_status_updated
    WHERE service = summaries.service AND environment = summaries.environment
      AND status IN ({sql_strings(*lifecycle.IN_FLIGHT_STATUSES)})
    ORDER BY updated_at DESC, id DESC LIMIT (SELECT in_flight_shown FROM parameters))
ORDER BY summaries.service, summaries.environment, flight.updated_at DESC, flight.id DESC
"""


def _microseconds_between(start: str, end: str) -> str:
    """SQL for the microseconds from one stored timestamp to another, as an exact integer.

    julianday() would round to milliseconds.  The whole seconds come from
    strftime('%s') on the date and time without the fraction, the microseconds
    from the fixed-width fraction (characters 21-26 of every stored timestamp).
    """
    def microseconds(column: str) -> str:
        return (f"(CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) * 1000000"
                f" + CAST(substr({column}, 21, 6) AS INTEGER))")
    return f"({microseconds(end)} - {microseconds(start)})"


def _seconds_between(start: str, end: str) -> str:
    """SQL for the seconds from one stored timestamp to another, exact to the microsecond."""
    return f"{_microseconds_between(start, end)} / 1e6"


# The last rows of both DORA statements, whose answers are rows of (metric,
# value): one row each of the counts `succeeded`, `started` and
# `failed_changes`; one row each of `time_to_restore` (a null for a failure not
# restored yet), `approval_lead_time`, `deploy_duration` and `lead_time_for_changes` whose value is a
# JSON array of the window's durations in integer microseconds; and
# `window_days`.  Arrays rather than a row per duration: the sqlite3 module
# takes the GIL back for every row, and with a few hundred thousand rows a
# request and other threads waiting, those hand-offs cost more than the query.
# Medians and percentiles are taken in Python (insights.durations), where
# sorting costs a third of what SQLite's window functions did.
_WINDOW_DAYS = f"SELECT 'window_days', {_seconds_between('since', 'until')} / 86400 FROM parameters"


def _steps_in_window(step: str) -> str:
    """SQL (a FROM clause) for the deployment_steps rows ``s`` of one step in the scope and window.

    One range of the table's primary key per (service, environment) pair:
    the cost follows the steps in the window, not the history around it.
    """
    return ("scope CROSS JOIN parameters CROSS JOIN deployment_steps AS s"
            " WHERE s.service = scope.service AND s.environment = scope.environment"
            f" AND s.step = {sql_strings(step)} AND s.at >= parameters.since AND s.at < parameters.until")


# From deployment_steps, which the schema's trigger fills as events are
# appended (schema.sql): every count and duration is one range per pair and
# step, and each failure's restore is one seek for the first later success.
# The answers are those the events give (docs/metrics.md); a test computes
# them from the events too and compares.
DORA_SQL = f"""
WITH RECURSIVE
parameters (service, environment, since, until) AS (VALUES (?, ?, ?, ?)),
{_SCOPE_CTE},
-- Each failed change failed in the window, and the first success strictly
-- after it on the same service and environment (NULL if none yet), which may
-- come after `until`.
failures AS (
    SELECT s.at AS failed_at,
        (SELECT later.at FROM deployment_steps AS later
         WHERE later.service = s.service AND later.environment = s.environment
           AND later.step = {sql_strings(STEP_SUCCEEDED)} AND later.at > s.at
         ORDER BY later.at LIMIT 1) AS restored_at
    FROM {_steps_in_window(STEP_FAILED)}
)
SELECT 'succeeded' AS metric, count(*) AS value FROM {_steps_in_window(STEP_SUCCEEDED)}
UNION ALL SELECT 'started', count(*) FROM {_steps_in_window(STEP_STARTED)}
-- filed under the time their deployment started
UNION ALL SELECT 'failed_changes', count(*) FROM {_steps_in_window(STEP_FAILED_CHANGE)}
UNION ALL SELECT 'time_to_restore', json_group_array({_microseconds_between('failed_at', 'restored_at')})
FROM failures
UNION ALL SELECT 'approval_lead_time', json_group_array(s.microseconds) FROM {_steps_in_window(STEP_APPROVED)}
UNION ALL SELECT 'deploy_duration', json_group_array(s.microseconds) FROM {_steps_in_window(STEP_FINISHED)}
-- a success's microseconds run from its commit; without a committed_at they are NULL and not counted
UNION ALL SELECT 'lead_time_for_changes', json_group_array(s.microseconds) FILTER (WHERE s.microseconds IS NOT NULL)
FROM {_steps_in_window(STEP_SUCCEEDED)}
UNION ALL {_WINDOW_DAYS}
"""


def rows_to_environment_state(rows: list[sqlite3.Row]) -> EnvironmentState:
    first = rows[0]
    current = None
    if first["live_id"] is not None:
        current = LiveVersion(first["live_id"], first["live_version"], first["live_succeeded_at"])
    in_flight = tuple(InFlight(row["flight_id"], row["flight_version"], row["flight_status"], row["flight_updated_at"])
                      for row in rows if row["flight_id"] is not None)
    return EnvironmentState(first["service"], first["environment"], current, in_flight,
                            first["in_flight_count"], first["last_change_at"])
