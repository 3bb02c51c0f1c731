"""The SQL of the paged reads: a page of deployments, and a page of the event feed.

Each builds its statement from a fixed set of columns and index names (never
from the request) and binds every value as a parameter.
"""

from __future__ import annotations

from .. import lifecycle
from ..listing import EQUALITY_FILTERS, ListQuery
from .rows import DEPLOYMENT_DOCUMENT, EVENT_COLUMNS

# Every combination of the service, environment and status filters has an index
# in listing order (see schema.sql).  Naming it with INDEXED BY keeps the plan
# independent of table statistics: without them SQLite may pick a shorter index
# and filter row by row.
_LISTING_INDEXES = {
    frozenset(): "deployments_newest_first",
    frozenset({"service"}): "deployments_by_service",
    frozenset({"environment"}): "deployments_by_environment",
    frozenset({"status"}): "deployments_by_status",
    frozenset({"service", "environment"}): "deployments_by_service_environment",
    frozenset({"service", "status"}): "deployments_by_service_status",
    frozenset({"environment", "status"}): "deployments_by_environment_status",
    frozenset({"service", "environment", "status"}): "deployments_by_service_environment_status",
}
# The filters that pick out few deployments, in the order they are preferred to
# drive the query (each read from its own index or table; every other filter is
# then checked row by row on those few): an exact version, a commit prefix, a
# work reference, a label, a requester.  One person's deployments are few next
# to a service's; the slow case left is a very busy requester (a CI bot) with a
# rare other filter (docs/performance.md, "Listing at scale").
_SELECTIVE = ("version", "commit_sha", "work_ref", "label", "requester")
# updated_after / updated_before drive the query from deployments_by_updated
# when they hold fewer deployments than this; more, and the listing reads in
# listing order and filters, which finds a page among so many quickly.
UPDATED_RANGE_PROBE = 1000
# Side tables that hold a filter's rows in listing order (schema.sql, version 8).
_SIDE_TABLES = {"work_ref": ("deployment_work_refs", "work_ref"), "label": ("deployment_labels", "label")}
# Drivers whose index is not in listing order and whose matches may be many
# (up to UPDATED_RANGE_PROBE): the page is those matches sorted by their keys
# alone.  (A commit prefix is out of listing order too, but names few.)
_SORTED_BY_KEY = ("updated",)


def listing_sql(query: ListQuery, *, updated_range_is_narrow: bool = False) -> tuple[str, list[object]]:
    """The statement and parameters of one listing page (``limit + 1`` rows, to tell if more follow).

    ``updated_range_is_narrow``: what :func:`updated_range_probe_sql` found, for a
    query whose updated range is its only selective filter.
    """
    driver = next((name for name in _SELECTIVE if getattr(query, name) not in (None, ())), None)
    if driver is None and updated_range_is_narrow:
        driver = "updated"
    conditions, parameters = _row_conditions(query, driver)
    if driver in _SIDE_TABLES:
        table, column = _SIDE_TABLES[driver]
        value = query.label[0] if driver == "label" else query.work_ref
        order = ("w.deployment_created_at", "w.deployment_id")
        source = f"{table} AS w CROSS JOIN deployments AS d ON d.id = w.deployment_id"
        conditions.insert(0, f"w.{column} = ?")
        parameters.insert(0, value)
    else:
        order = ("d.created_at", "d.id")
        source = f"deployments AS d INDEXED BY {_deployments_index(query, driver)}"
    position, position_parameters = _position(query, *order)
    conditions += position
    parameters += position_parameters
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    if driver in _SORTED_BY_KEY:
        # SQLite computes every result column of a row before it sorts it, so
        # sorting the documents would build one per match.  The sort takes the
        # matches' rowids only; the page's documents are built after it.
        keys = f"SELECT d.rowid FROM {source}{where} ORDER BY {order[0]} DESC, {order[1]} DESC LIMIT ?"
        return (f"SELECT d.created_at, d.id, {DEPLOYMENT_DOCUMENT} FROM deployments AS d WHERE d.rowid IN ({keys})"
                " ORDER BY d.created_at DESC, d.id DESC", [*parameters, query.limit + 1])
    sql = (f"SELECT d.created_at, d.id, {DEPLOYMENT_DOCUMENT} FROM {source}{where}"
           f" ORDER BY {order[0]} DESC, {order[1]} DESC LIMIT ?")
    return sql, [*parameters, query.limit + 1]


def updated_range_probe_sql(query: ListQuery) -> tuple[str, list[object]] | None:
    """How many deployments the updated range holds, up to UPDATED_RANGE_PROBE: one short range of its index.

    None when the query needs no probe: no updated range, or another filter drives it.
    """
    if (query.updated_after is None and query.updated_before is None) \
            or any(getattr(query, name) not in (None, ()) for name in _SELECTIVE):
        return None
    conditions, parameters = _updated_range(query)
    return (f"SELECT count(*) FROM (SELECT 1 FROM deployments AS d INDEXED BY deployments_by_updated"
            f" WHERE {' AND '.join(conditions)} LIMIT ?)", [*parameters, UPDATED_RANGE_PROBE])


def _deployments_index(query: ListQuery, driver: str | None) -> str:
    if driver is not None:
        return {"version": "deployments_by_version", "commit_sha": "deployments_by_commit_sha",
                "requester": "deployments_by_requester", "updated": "deployments_by_updated"}[driver]
    return _LISTING_INDEXES[frozenset(c for c in ("service", "environment", "status") if getattr(query, c))]


def _row_conditions(query: ListQuery, driver: str | None) -> tuple[list[str], list[object]]:
    """Every filter but the driving one's own table, as conditions on the deployment ``d``."""
    conditions: list[str] = []
    parameters: list[object] = []
    # Column names come from this fixed tuple, never from the request.
    for column in EQUALITY_FILTERS:
        value = getattr(query, column)
        if value is not None:
            conditions.append(f"d.{column} = ?")
            parameters.append(value)
    if query.commit_sha is not None:
        # Commit ids are lowercase hexadecimal: "g" sorts after every one with this prefix.
        conditions.append("d.commit_sha >= ? AND d.commit_sha < ?")
        parameters += [query.commit_sha, query.commit_sha + "g"]
    updated, updated_parameters = _updated_range(query)
    conditions += updated
    parameters += updated_parameters
    if query.work_ref is not None and driver != "work_ref":
        conditions.append("EXISTS (SELECT 1 FROM deployment_work_refs AS x WHERE x.work_ref = ?"
                          " AND x.deployment_created_at = d.created_at AND x.deployment_id = d.id)")
        parameters.append(query.work_ref)
    for label in query.label[1:] if driver == "label" else query.label:
        conditions.append("EXISTS (SELECT 1 FROM deployment_labels AS x WHERE x.label = ?"
                          " AND x.deployment_created_at = d.created_at AND x.deployment_id = d.id)")
        parameters.append(label)
    return conditions, parameters


def _updated_range(query: ListQuery) -> tuple[list[str], list[object]]:
    conditions: list[str] = []
    parameters: list[object] = []
    if query.updated_after is not None:
        conditions.append("d.updated_at >= ?")
        parameters.append(query.updated_after)
    if query.updated_before is not None:
        conditions.append("d.updated_at < ?")
        parameters.append(query.updated_before)
    return conditions, parameters


def _position(query: ListQuery, created_at: str, deployment_id: str) -> tuple[list[str], list[object]]:
    """The created range and the cursor, on the driving table's listing-order columns."""
    conditions: list[str] = []
    parameters: list[object] = []
    if query.created_after is not None:
        conditions.append(f"{created_at} >= ?")
        parameters.append(query.created_after)
    # A deployment is updated no earlier than it was created, so updated_before
    # bounds created_at too: a scan in listing order starts below it.
    upper = min((bound for bound in (query.created_before, query.updated_before) if bound is not None), default=None)
    if query.after is not None:
        # A cursor is only ever issued for a position inside the range, so
        # it is a tighter upper bound than created_before.
        conditions.append(f"({created_at}, {deployment_id}) < (?, ?)")
        parameters += [query.after.created_at, query.after.deployment_id]
    elif upper is not None:
        conditions.append(f"{created_at} < ?")
        parameters.append(upper)
    return conditions, parameters


# GET /events?since=: where the page starts reading (Repository.list_events_after).
# Ids follow commit order and created_at is stamped in the same transaction,
# but the two need not agree (a clock that stepped back, a history copied in):
# bisecting ids by created_at could skip an event created at or after `since`
# that has a lower id than earlier-stamped ones.  So the bound comes from an
# index on created_at, never from the order of ids.  First two seeks
# (SINCE_PROBE_SQL): the id of the earliest-stamped event at or after `since`,
# and the newest id.  When the events from there to the head are fewer than
# those between `after` and there, the smallest id in the index's range from
# `since` (SINCE_FIRST_ID_SQL, which reads that range: short for a recent
# `since`) is where the page starts; otherwise it reads ids from `after`,
# passing over no more events than that range holds.  The page keeps
# `created_at >= since` either way: the bound saves reading, it never decides
# what is returned.
SINCE_PROBE_SQL = (
    "SELECT (SELECT id FROM deployment_events INDEXED BY deployment_events_by_created_at"
    "        WHERE created_at >= ? ORDER BY created_at, id LIMIT 1),"
    " (SELECT id FROM deployment_events ORDER BY id DESC LIMIT 1)"
)
SINCE_FIRST_ID_SQL = (
    "SELECT min(id) FROM deployment_events INDEXED BY deployment_events_by_created_at WHERE created_at >= ?"
)


def feed_sql(after: int, limit: int, event_type: str | None, since: str | None = None) -> tuple[str, list[object]]:
    """SQL for a page of the feed in id order, each event joined to its deployment.

    With a type, one range of deployment_events_by_type; without, one range
    of ids (NOT INDEXED keeps the planner off deployment_events_by_created_at,
    whose order is not the feed's).  ``since`` is checked on each event of the
    range; the caller raises ``after`` past the events it would refuse.  (The
    join keeps out an event whose deployment is gone, which only a hand edit
    can make, as the scoped read does: such an event has no scope row.)
    """
    conditions, parameters = ["e.id > ?"], [after]
    if event_type is not None:
        conditions.append("e.type = ?")
        parameters.append(event_type)
    if since is not None:
        conditions.append("e.created_at >= ?")
        parameters.append(since)
    index = " INDEXED BY deployment_events_by_type" if event_type is not None else " NOT INDEXED"
    return (f"SELECT {EVENT_COLUMNS} FROM deployment_events e{index} JOIN deployments d ON d.id = e.deployment_id"
            f" WHERE {' AND '.join(conditions)} ORDER BY e.id LIMIT ?", [*parameters, limit])


# The deployment_event_scopes index for each combination of scope filters
# (both: the table's primary key).
_SCOPE_INDEXES = {
    ("service",): "INDEXED BY deployment_event_scopes_by_service",
    ("environment",): "INDEXED BY deployment_event_scopes_by_environment",
    ("service", "environment"): "",
}


def scoped_feed_sql(after: int, limit: int, scope: dict[str, str],
                     event_type: str | None, since: str | None = None) -> tuple[str, list[object]]:
    """SQL for a page of the feed narrowed by service and/or environment, from deployment_event_scopes.

    Within one scope and type the index is in event id order, so each type
    is one range starting after ``after``.  A compound SELECT ordered by id
    merges those ranges (SQLite's MERGE of UNION ALL reads each only as far
    as the page needs), so a page reads about ``limit`` entries per type
    asked for, however many events of other scopes lie in between.  With
    ``since`` each range looks up its events' created_at (one rowid seek
    each, which keeps the range in id order) before the page's LIMIT counts them.
    """
    names = tuple(scope)
    index = _SCOPE_INDEXES[names]
    match = " AND ".join(f"deployment_event_scopes.{name} = ?" for name in (*names, "type"))
    types = (event_type,) if event_type is not None else lifecycle.EVENT_TYPES
    created = " JOIN deployment_events c ON c.id = event_id" if since is not None else ""
    recent = " AND c.created_at >= ?" if since is not None else ""
    ranges = " UNION ALL ".join(
        f"SELECT event_id FROM deployment_event_scopes {index}{created}"
        f" WHERE {match} AND event_id > ?{recent}" for _ in types)
    parameters: list[object] = []
    for event_type_ in types:
        parameters += [*scope.values(), event_type_, after, *((since,) if since is not None else ())]
    return (f"SELECT {EVENT_COLUMNS} FROM ({ranges} ORDER BY event_id LIMIT ?) AS page"
            " JOIN deployment_events e ON e.id = page.event_id ORDER BY e.id", [*parameters, limit])
