"""All SQL: the schema at start-up, connections, transactions, and intent-named queries.

A package by job; everything callers use is importable from here:

- ``connections``: per-thread connections for reads, one for writes, ``BEGIN IMMEDIATE`` transactions,
  writer slots, storage-error mapping (:class:`Database`);
- ``group_commit``: the queue whose writes are committed together (``Repository.write``);
- ``schema``: schema.sql, its versions and migrations;
- ``deployments``: the :class:`Repository`, its reads and writes of deployments
  and events, idempotency storage (:class:`WriteTransaction`);
- ``pages``, ``insights_sql``: the statements of the listing and feed
  pages, and of the environments and DORA metrics;
- ``rows``: the selected columns and the row-to-dataclass mapping;
- ``deliveries``: webhook positions and the deliverer's lease;
- ``backup``: online copies of a live database;
- ``read_only``: read-only connections, to copies in read-only directories too
  (``check``, ``backup``, and a Database opened with ``read_only=True``).
"""

from ..storage import StorageFault
from .backup import backup_database
from .connections import (
    BUSY_REASONS,
    BUSY_TIMEOUT_MS,
    JOURNAL_SIZE_LIMIT_BYTES,
    MIN_SQLITE,
    STUCK_WRITE_SECONDS,
    WAL_AUTOCHECKPOINT_PAGES,
    WRITE_PROBE_BYTES,
    Clock,
    Database,
    DatabaseBusy,
    DatabaseError,
    DatabaseReadOnly,
    fold_wal_back,
    utc_now,
)
from .deliveries import Deliveries, Lease, PendingEvent, WebhookPosition, WebhookStatus
from .deployments import (
    IDEMPOTENCY_PRUNE_BATCH,
    IDEMPOTENCY_RETENTION,
    ChainHead,
    DeploymentNotFound,
    EventPage,
    ListingPage,
    Repository,
    StoredResponse,
    WriteTransaction,
)
from .pages import listing_sql
from .read_only import connect_read_only
from .rows import (
    DEPLOYMENT_DOCUMENT,
    EVENTS_WITH_CONTENT_SQL,
    PIPELINE_COLUMNS_SINCE,
    POLICY_COLUMNS_SINCE,
    event_with_content,
    events_with_content_sql,
)
from .schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    ChainBroken,
    Migration,
    SchemaTooNew,
    backfill_derived_rows,
    migrate,
    schema_sql,
    split_statements,
)

__all__ = [
    "BUSY_REASONS", "BUSY_TIMEOUT_MS", "ChainBroken", "ChainHead", "Clock", "DEPLOYMENT_DOCUMENT", "Database",
    "DatabaseBusy", "DatabaseError", "DatabaseReadOnly", "Deliveries", "DeploymentNotFound",
    "EVENTS_WITH_CONTENT_SQL", "EventPage",
    "IDEMPOTENCY_PRUNE_BATCH", "IDEMPOTENCY_RETENTION", "JOURNAL_SIZE_LIMIT_BYTES", "Lease", "ListingPage",
    "MIGRATIONS", "MIN_SQLITE", "Migration", "PIPELINE_COLUMNS_SINCE", "POLICY_COLUMNS_SINCE", "PendingEvent",
    "Repository", "SCHEMA_VERSION", "STUCK_WRITE_SECONDS", "SchemaTooNew", "StorageFault", "StoredResponse",
    "WAL_AUTOCHECKPOINT_PAGES", "WRITE_PROBE_BYTES", "WebhookPosition", "WebhookStatus", "WriteTransaction",
    "backfill_derived_rows", "backup_database", "connect_read_only", "event_with_content", "events_with_content_sql",
    "fold_wal_back", "listing_sql", "migrate", "schema_sql", "split_statements", "utc_now"
]
