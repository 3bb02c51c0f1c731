"""The schema at start-up: schema.sql, its versions and the migrations between them.

``migrate`` runs inside the caller's transaction: the steps of every version
passed, then schema.sql statement by statement, so a failing step leaves the
database as it was.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import chain
from ..lifecycle import Event
from .rows import event_with_content, events_with_content_sql


def schema_sql() -> str:
    """The text of ``schema.sql``.

    An installed wheel carries a copy at ``deployapi/_schema/schema.sql`` (see
    setup.cfg); a source checkout or editable install reads the top-level file.
    """
    # This module is deployapi/repository/schema.py: the package directory is two up.
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "_schema" / "schema.sql", package_dir.parent / "schema.sql"):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    raise FileNotFoundError(f"schema.sql not found next to {package_dir}")


# --- schema versions -------------------------------------------------------------

# The version schema.sql describes, recorded in PRAGMA user_version.
SCHEMA_VERSION = 9


@dataclass(frozen=True)
class Migration:
    """The statements that bring a database from ``version - 1`` to ``version``.

    Only what ``CREATE ... IF NOT EXISTS`` in schema.sql cannot express belongs
    here (new columns, backfills, changed triggers, changed tables): schema.sql
    runs after the steps and creates any new table or index itself.
    """

    version: int
    statements: tuple[str, ...] = ()
    # Tables whose definition in schema.sql changed in a way ALTER TABLE
    # cannot make (a CHECK list, a constraint): rebuilt from it, rows kept
    # (rebuild_tables).  Needs the connection's foreign keys off.
    rebuild: tuple[str, ...] = ()
    # Python work SQL cannot do (such as hashing), run after the statements.
    backfill: Callable[[sqlite3.Connection], None] | None = None
    # Run once schema.sql has run too, for what needs its new tables.
    after_schema: Callable[[sqlite3.Connection], None] | None = None


def _chain_existing_events(conn: sqlite3.Connection) -> None:
    # Version 3 chained events under the legacy encoding; version 4 rehashes them.
    previous = chain.GENESIS
    rows = conn.execute(
        "SELECT id, deployment_id, sequence, type, actor, note, from_status, to_status, created_at"
        " FROM deployment_events ORDER BY id"
    ).fetchall()
    for row in rows:
        event = Event(*row)
        previous = chain.legacy_event_hash(event, previous)
        conn.execute("UPDATE deployment_events SET hash = ? WHERE id = ?", (previous, event.id))


class ChainBroken(sqlite3.DatabaseError):
    """The history no longer fits its hash chain: upgrading would seal the change."""


def _rechain_with_creation_content(conn: sqlite3.Connection) -> None:
    # Every event again under chain.ENCODING, created events sealing their
    # deployment's content.  Heads anchored before stay verifiable: check
    # recomputes the legacy chain up to the event recorded here.  The legacy
    # chain is verified on the way: rehashing a history edited since it was
    # hashed would make the edit look as if it had always been there.
    previous = legacy = chain.GENESIS
    last_id = 0
    while True:
        # Version 4's columns only: the policy columns come with step 7.
        batch = conn.execute(f"{events_with_content_sql(4)} WHERE e.id > ? ORDER BY e.id LIMIT 10000",
                             (last_id,)).fetchall()
        if not batch:
            break
        updates = []
        for row in batch:
            event, content = event_with_content(row)
            legacy = chain.legacy_event_hash(event, legacy)
            if event.hash != legacy:
                raise ChainBroken(
                    f"the history does not fit its hash chain from event {event.id} (deployment "
                    f"{event.deployment_id}): run deployapi check on it before upgrading; the upgrade to schema "
                    "version 4 rehashes the history and would make that change look original")
            previous = chain.event_hash(event, previous, content)
            updates.append((previous, event.id))
        conn.executemany("UPDATE deployment_events SET hash = ? WHERE id = ?", updates)
        last_id = batch[-1]["id"]
    conn.execute("INSERT OR REPLACE INTO settings (name, value) VALUES ('chain_rehashed_through', ?)",
                 (str(last_id),))


# Ordered by version.
MIGRATIONS: tuple[Migration, ...] = (
    # 2: the idempotency_keys table, which schema.sql creates; no other change.
    Migration(2, ()),
    # 3: the hash chain over events (chain.py), computed for the history so far.
    Migration(3, ("ALTER TABLE deployment_events ADD COLUMN hash TEXT",
                  # Lifted for the backfill only; schema.sql puts it back in the same transaction.
                  "DROP TRIGGER IF EXISTS deployment_events_no_update"),
              backfill=_chain_existing_events),
    # 4: created events seal the deployment's content (the chain rehashed under
    # chain.ENCODING); idempotency keys belong to their caller, and only
    # answers that changed something are kept.
    Migration(4, (
        "DROP TRIGGER IF EXISTS deployment_events_no_update",
        # The version-2 table, for a database that comes from version 1.
        "CREATE TABLE IF NOT EXISTS idempotency_keys (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,"
        " status INTEGER NOT NULL, body TEXT NOT NULL, location TEXT, created_at TEXT NOT NULL)",
        # SQLite cannot change a primary key in place: a new table, the rows, a rename.
        "CREATE TABLE idempotency_keys_v4 (caller TEXT NOT NULL, key TEXT NOT NULL,"
        " fingerprint TEXT NOT NULL, status INTEGER NOT NULL, body TEXT NOT NULL, location TEXT,"
        " created_at TEXT NOT NULL, PRIMARY KEY (caller, key))",
        "INSERT INTO idempotency_keys_v4 (caller, key, fingerprint, status, body, location, created_at)"
        " SELECT '', key, fingerprint, status, body, location, created_at FROM idempotency_keys"
        " WHERE status < 400",
        "DROP TABLE idempotency_keys",
        "ALTER TABLE idempotency_keys_v4 RENAME TO idempotency_keys",
    ), backfill=_rechain_with_creation_content),
    # 5: the read tables derived from each event (deployment_event_scopes,
    # deployment_steps), which schema.sql creates with their trigger; filled
    # here for the events appended before.
    Migration(5, (), after_schema=lambda conn: backfill_derived_rows(conn)),
    # 6: the status and event type `cancelled` in the CHECK lists of the two
    # tables, which SQLite can only change by rebuilding them.
    Migration(6, rebuild=("deployments", "deployment_events")),
    # 7: review policies: what each deployment needs and has of approvals, and
    # the policy digest and details of deployments and events; the fixed-content
    # trigger covers the new creation columns; the DORA step "approved" is the
    # approval that completes a review, not a partial one (no older history
    # has partial approvals, so the derived rows stand).
    Migration(7, ("DROP TRIGGER IF EXISTS deployments_creation_is_fixed",
                  "DROP VIEW IF EXISTS deployment_step_rows"),
              backfill=lambda conn: _add_policy_columns(conn)),
    # 8: pipeline metadata on deployments and the version a rollback went back
    # to; the work references and labels in tables of their own for the
    # listing's filters, filled for the deployments so far; the DORA step
    # "succeeded" carries the time since the commit (older deployments name none,
    # so the derived rows stand).
    Migration(8, ("DROP TRIGGER IF EXISTS deployments_creation_is_fixed",
                  "DROP VIEW IF EXISTS deployment_step_rows"),
              backfill=lambda conn: _add_columns(conn, _PIPELINE_COLUMNS),
              after_schema=lambda conn: backfill_listing_rows(conn)),
    # 9: the webhook positions and the deliverer's lease, tables schema.sql
    # creates; no other change.
    Migration(9, ()),
)


# Version 7's columns, defined at the end of their tables in schema.sql.
_POLICY_COLUMNS = {"deployments": ("required_approvals", "approvals", "policy_digest"),
                   "deployment_events": ("details", "policy_digest")}
# Version 8's.
_PIPELINE_COLUMNS = {"deployments": ("commit_sha", "repository", "ref", "committed_at", "links", "labels",
                                     "rolled_back_to")}


def _add_columns(conn: sqlite3.Connection, added: dict[str, tuple[str, ...]]) -> None:
    # Only where the table lacks them: a database coming from version 5 or
    # before has them already, from step 6's rebuild (built from today's
    # schema.sql).  ADD COLUMN rewrites no row; the new columns take their
    # defaults, which say what older rows had: nothing.
    schema = schema_sql()
    for table, columns in added.items():
        present = {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
        for name in columns:
            if name not in present:
                conn.execute(f'ALTER TABLE "{table}" ADD COLUMN {column_definition(schema, table, name)}')


def _add_policy_columns(conn: sqlite3.Connection) -> None:
    _add_columns(conn, _POLICY_COLUMNS)
    # A deployment approved before policies has its one approval listed, from its approved event.
    conn.execute(
        "UPDATE deployments SET approvals = ("
        "  SELECT json_group_array(json_object('actor', actor, 'note', note, 'created_at', created_at))"
        "  FROM (SELECT actor, note, created_at FROM deployment_events"
        "        WHERE deployment_id = deployments.id AND type = 'approved' ORDER BY sequence))"
        " WHERE id IN (SELECT deployment_id FROM deployment_events WHERE type = 'approved')")


def column_definition(schema: str, table: str, column: str) -> str:
    """The line defining ``column`` in schema.sql's CREATE TABLE of ``table``, for ALTER TABLE ADD COLUMN.

    :raises RuntimeError: when schema.sql does not define it (one column per line).
    """
    for statement in split_statements(schema):
        match = _CREATE_TABLE.search(statement)
        if match is None or match.group(1) != table:
            continue
        for line in statement.splitlines():
            words = line.split(None, 1)
            if len(words) == 2 and words[0] == column:
                return f"{column} {words[1].rstrip().rstrip(',')}"
    raise RuntimeError(f"schema.sql has no line defining {table}.{column}")


class SchemaTooNew(sqlite3.DatabaseError):
    """The database was written by a newer deployapi than this one."""


class ForeignKeysViolated(sqlite3.DatabaseError):
    """A rebuilt table left rows whose foreign keys point nowhere."""


def migrate(conn: sqlite3.Connection, schema: str, migrations: tuple[Migration, ...], target: int) -> int:
    """Bring the database to ``target``: the version's steps in order, then schema.sql.

    Runs inside the caller's transaction, so a failing step leaves the database
    as it was.  A step that rebuilds tables needs the connection's foreign keys
    off, which SQLite only lets the caller switch outside a transaction.
    Returns the version the database was at.

    :raises SchemaTooNew: when the database is already past ``target``.
    :raises ForeignKeysViolated: a rebuild left rows whose parent is gone.
    """
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > target:
        raise SchemaTooNew(too_new_message(found, target))
    fresh = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'deployments'").fetchone()[0] == 0
    ran = []
    if not fresh:
        # A database from before versioning has user_version 0 and the version-1 tables.
        for step in migrations:
            if max(found, 1) < step.version <= target:
                for statement in step.statements:
                    conn.execute(statement)
                if step.rebuild:
                    rebuild_tables(conn, schema, step.rebuild)
                if step.backfill is not None:
                    step.backfill(conn)
                ran.append(step)
    for statement in split_statements(schema):
        conn.execute(statement)
    for step in ran:
        if step.after_schema is not None:
            step.after_schema(conn)
    if any(step.rebuild for step in ran):
        # What foreign_keys=ON would have enforced during the rebuild, checked once at the end.
        orphan = conn.execute("PRAGMA foreign_key_check").fetchone()
        if orphan is not None:
            raise ForeignKeysViolated(f"after the upgrade to schema version {target}, a row of {orphan[0]} "
                                      f"(rowid {orphan[1]}) refers to a missing row of {orphan[2]}")
    conn.execute(f"PRAGMA user_version = {int(target)}")
    return found


_CREATE_TABLE = re.compile(r"CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+(\w+)\s*\(", re.IGNORECASE)


def rebuild_tables(conn: sqlite3.Connection, schema: str, tables: tuple[str, ...]) -> None:
    """Re-create ``tables`` as schema.sql defines them now, every row kept, by SQLite's procedure.

    SQLite's ALTER TABLE cannot change a CHECK or a constraint; its documented
    way (https://www.sqlite.org/lang_altertable.html#otheralter) is a new table,
    the rows copied, the old one dropped and the new one renamed, with foreign
    keys off and foreign_key_check before the commit (migrate runs that).
    Every trigger and view is dropped first, because renaming a table makes
    SQLite re-read every trigger and view, and one that names a table dropped
    a moment before fails it; schema.sql, run next, creates them again, with
    the indexes the dropped tables took along.  Columns the new definition
    lacks are dropped; new ones take their defaults.  AUTOINCREMENT's counter
    is carried over, so an id is never handed out twice.

    :raises RuntimeError: the connection's foreign keys are on (DROP TABLE would
        delete or refuse through them), or a table has no definition in schema.sql.
    """
    if conn.execute("PRAGMA foreign_keys").fetchone()[0]:
        raise RuntimeError("rebuilding a table needs PRAGMA foreign_keys = OFF, set before the transaction")
    definitions = {match.group(1): statement for statement in split_statements(schema)
                   if (match := _CREATE_TABLE.search(statement)) is not None}
    missing = [table for table in tables if table not in definitions]
    if missing:
        raise RuntimeError(f"no CREATE TABLE IF NOT EXISTS in schema.sql for {', '.join(missing)}")
    for kind, name in conn.execute("SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'view')"
                                   " ORDER BY type, name").fetchall():
        conn.execute(f'DROP {kind.upper()} "{name}"')
    has_counters = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
    for table in tables:
        rebuilt = f"{table}_rebuilt"
        definition = definitions[table]
        match = _CREATE_TABLE.search(definition)
        conn.execute(f"{definition[:match.start()]}CREATE TABLE {rebuilt} ({definition[match.end():]}")
        old = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
        new = {row[1] for row in conn.execute(f'PRAGMA table_info("{rebuilt}")')}
        columns = ", ".join(f'"{column}"' for column in old if column in new)
        counter = (conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
                   if has_counters else None)
        conn.execute(f'INSERT INTO "{rebuilt}" ({columns}) SELECT {columns} FROM "{table}"')
        conn.execute(f'DROP TABLE "{table}"')
        conn.execute(f'ALTER TABLE "{rebuilt}" RENAME TO "{table}"')
        if counter is not None:
            conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (counter[0], table))


def too_new_message(found: int, known: int) -> str:
    return (f"the database is at schema version {found}, but this deployapi knows versions up to "
            f"{known}; upgrade deployapi instead of opening a newer database with an older one")


def split_statements(script: str) -> list[str]:
    """Split a SQL script into whole statements (trigger bodies contain semicolons)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    leftover = [line for line in pending.splitlines() if line.strip() and not line.strip().startswith("--")]
    if leftover:
        raise ValueError(f"incomplete SQL statement at the end of the schema: {leftover[0]!r}")
    return statements


def backfill_listing_rows(conn: sqlite3.Connection) -> None:
    """Give deployment_work_refs and deployment_labels the deployments inserted before their trigger existed.

    Migration 8 runs it, once schema.sql has created the tables, the views and
    the trigger; rows already there are skipped.
    """
    conn.execute("INSERT OR IGNORE INTO deployment_work_refs (work_ref, deployment_created_at, deployment_id)"
                 " SELECT work_ref, deployment_created_at, deployment_id FROM deployment_work_ref_rows")
    conn.execute("INSERT OR IGNORE INTO deployment_labels (label, deployment_created_at, deployment_id)"
                 " SELECT label, deployment_created_at, deployment_id FROM deployment_label_rows")


def backfill_derived_rows(conn: sqlite3.Connection) -> None:
    """Give deployment_event_scopes and deployment_steps the events appended before their trigger existed.

    Migration 5 runs it, once schema.sql has created the tables, the views and
    the trigger.  The rows come from the views the trigger inserts from, so
    they are the trigger's rows; rows already there are skipped.
    """
    conn.execute("INSERT OR IGNORE INTO deployment_event_scopes (service, environment, type, event_id)"
                 " SELECT service, environment, type, event_id FROM deployment_event_scope_rows")
    conn.execute("INSERT OR IGNORE INTO deployment_steps"
                 " (service, environment, step, at, event_id, from_at, microseconds)"
                 " SELECT service, environment, step, at, event_id, from_at, microseconds FROM deployment_step_rows")
