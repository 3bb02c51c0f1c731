"""Schema upgrades that rebuild a table (repository.schema.rebuild_tables), by SQLite's procedure."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_operations import populate

from deployapi import chain
from deployapi.integrity import check_database
from deployapi.lifecycle import ActionRequest
from deployapi.repository import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    Repository,
    StoredResponse,
    event_with_content,
    events_with_content_sql,
    migrate,
    schema_sql,
    split_statements,
)
from deployapi.repository.schema import ForeignKeysViolated

SCHEMA_V5 = (Path(__file__).parent / "fixtures" / "schema_v5.sql").read_text(encoding="utf-8")

NEXT = SCHEMA_VERSION + 1
# The next version's schema: one more status allowed, as a new status would need.
WIDER_SCHEMA = schema_sql().replace("'cancelled')),", "'cancelled', 'archived')),", 1)
REBUILD_BOTH = (*MIGRATIONS, Migration(NEXT, rebuild=("deployments", "deployment_events")))


def snapshot(conn: sqlite3.Connection) -> dict[str, object]:
    tables = [name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {
        "rows": {table: sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr) for table in tables},
        "objects": conn.execute("SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                                " ORDER BY type, name").fetchall(),
        "counters": conn.execute("SELECT name, seq FROM sqlite_sequence ORDER BY name").fetchall(),
    }


@pytest.fixture
def populated(db_path):
    repo = Repository(db_path)
    populate(repo)
    repo.close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    yield conn
    conn.close()


def upgrade(conn: sqlite3.Connection, schema: str = WIDER_SCHEMA, steps=REBUILD_BOTH) -> None:
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("BEGIN IMMEDIATE")
    try:
        migrate(conn, schema, steps, NEXT)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def test_a_rebuild_keeps_every_row_index_trigger_view_and_id_counter(populated):
    assert "'archived'" in WIDER_SCHEMA  # the replacement found its CHECK list
    # A counter past the last id (the ids of events rolled back): still never handed out again.
    populated.execute("UPDATE sqlite_sequence SET seq = seq + 3 WHERE name = 'deployment_events'")
    before = snapshot(populated)
    upgrade(populated)
    assert snapshot(populated) == before
    assert populated.execute("PRAGMA user_version").fetchone()[0] == NEXT
    assert populated.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_rebuilt_table_has_the_new_definition_and_its_triggers_still_guard_it(populated):
    upgrade(populated)
    populated.execute("UPDATE deployments SET status = 'archived' WHERE rowid = 1")  # the wider CHECK
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        populated.execute("UPDATE deployments SET status = 'bogus' WHERE rowid = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        populated.execute("UPDATE deployment_events SET note = 'rewritten' WHERE id = 1")
    with pytest.raises(sqlite3.IntegrityError):
        populated.execute("UPDATE deployments SET version = '6.6.6' WHERE rowid = 1")


def test_events_appended_after_a_rebuild_take_new_ids_and_their_derived_rows(db_path, populated):
    last = populated.execute("SELECT max(id) FROM deployment_events").fetchone()[0]
    derived = populated.execute("SELECT count(*) FROM deployment_event_scopes").fetchone()[0]
    upgrade(populated)
    populated.close()
    # The real upgrade path would refuse NEXT; what matters is what the file does now.
    conn = sqlite3.connect(db_path, isolation_level=None)
    deployment_id = conn.execute("SELECT id FROM deployments WHERE status = 'pending_approval'").fetchone()[0]
    conn.execute("INSERT INTO deployment_events (deployment_id, sequence, type, actor, from_status, to_status,"
                 " created_at) VALUES (?, 2, 'approved', 'bob', 'pending_approval', 'approved',"
                 " '2030-01-01T00:00:00.000000Z')", (deployment_id,))
    assert conn.execute("SELECT max(id) FROM deployment_events").fetchone()[0] == last + 1
    assert conn.execute("SELECT count(*) FROM deployment_event_scopes").fetchone()[0] == derived + 1
    conn.close()


def test_a_rebuild_refuses_to_run_with_foreign_keys_on_and_changes_nothing(populated):
    before = snapshot(populated)
    populated.execute("PRAGMA foreign_keys = ON")
    populated.execute("BEGIN IMMEDIATE")
    with pytest.raises(RuntimeError, match="foreign_keys = OFF"):
        migrate(populated, WIDER_SCHEMA, REBUILD_BOTH, NEXT)
    populated.execute("ROLLBACK")
    assert snapshot(populated) == before
    assert populated.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_rebuild_that_would_orphan_rows_is_refused_and_rolled_back(populated):
    before = snapshot(populated)
    # A step that loses deployments the events still point to.
    steps = (*MIGRATIONS, Migration(NEXT, ("DROP TRIGGER deployments_no_delete",
                                           "DELETE FROM deployments WHERE rowid = 1"),
                                    rebuild=("deployments",)))
    with pytest.raises(ForeignKeysViolated, match="deployment_events"):
        upgrade(populated, steps=steps)
    assert snapshot(populated) == before
    assert populated.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_table_schema_sql_does_not_define_cannot_be_rebuilt(populated):
    steps = (*MIGRATIONS, Migration(NEXT, rebuild=("no_such_table",)))
    with pytest.raises(RuntimeError, match="no_such_table"):
        upgrade(populated, steps=steps)
    assert populated.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


# --- version 5 to 6: cancelled in the CHECK lists ---------------------------------


def rechain_as_before_policies(conn: sqlite3.Connection, schema: str) -> None:
    """Seal the copied events as a version before 7 did: without the policy digest they no longer have."""
    conn.execute("DROP TRIGGER deployment_events_no_update")
    conn.row_factory = sqlite3.Row
    previous = chain.GENESIS
    for row in conn.execute(f"{events_with_content_sql(5)} ORDER BY e.id").fetchall():
        event, content = event_with_content(row)
        previous = chain.event_hash(event, previous, content)
        conn.execute("UPDATE deployment_events SET hash = ? WHERE id = ?", (previous, event.id))
    for statement in split_statements(schema):  # the trigger back, as the version had it
        conn.execute(statement)


def version_5_database(tmp_path: Path) -> Path:
    """A version-5 file with a history in every state, an idempotency key and the chain's settings."""
    source = tmp_path / "source.db"
    repo = Repository(source)
    populate(repo, cancelled=False)  # a status version 5 does not know
    with repo.transaction() as tx:
        tx.store_response("alice", "key-1", StoredResponse("f" * 64, 201, "{}", "/deployments/x"))
    repo.close()
    return copy_at_version(source, tmp_path / "v5.db", SCHEMA_V5, 5,
                           ("deployments", "deployment_events", "idempotency_keys", "settings"))


def copy_at_version(source: Path, path: Path, schema: str, version: int, tables: tuple[str, ...], *,
                    reseal: bool = True) -> Path:
    """A new file at schema ``version`` (its frozen ``schema``) holding the rows of ``source``'s ``tables``.

    The rows go in in id order, through that version's triggers (which derive
    their own rows), with only the columns the version has, and the chain is
    sealed again as versions before 7 sealed it (unless ``reseal`` is false:
    version 7 seals a history without pipeline metadata as today's code does).
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")
    migrate(conn, schema, [m for m in MIGRATIONS if m.version <= version], version)
    conn.execute("ATTACH ? AS source", (str(source),))
    for table in tables:
        columns = ", ".join(row[1] for row in conn.execute(f"PRAGMA main.table_info({table})"))
        conn.execute(f"INSERT OR REPLACE INTO main.{table} ({columns}) SELECT {columns} FROM source.{table}"
                     " ORDER BY rowid")
    if reseal:
        rechain_as_before_policies(conn, schema)
    conn.execute("COMMIT")
    conn.execute("DETACH source")
    conn.close()
    return path


def rows(path: Path) -> dict[str, list]:
    conn = sqlite3.connect(path)
    try:
        return snapshot(conn)["rows"] | {"user_version": conn.execute("PRAGMA user_version").fetchone()[0]}
    finally:
        conn.close()


def test_a_version_5_database_is_upgraded_with_every_row_and_the_chain_kept(tmp_path):
    path = version_5_database(tmp_path)
    assert check_database(path).ok
    before = rows(path)
    assert before["user_version"] == 5 and before["deployment_events"]

    repo = Repository(path)
    try:
        after = rows(path)
        assert after.pop("user_version") == SCHEMA_VERSION
        before.pop("user_version")
        # Later versions add columns at the end of both tables and tables of their own; the rows of
        # version 5's tables are otherwise the same.
        width = {table: len(table_rows[0]) for table, table_rows in before.items() if table_rows}
        assert {table: [row[:width.get(table, len(row))] for row in table_rows]
                for table, table_rows in after.items() if table in before} == before
        [pending_id] = [d[0] for d in after["deployments"] if "pending_approval" in d]
        assert repo.apply_action(pending_id, ActionRequest("cancel", "alice", "superseded")).status == "cancelled"
    finally:
        repo.close()
    report = check_database(path)
    assert report.ok, report
    fresh = sqlite3.connect(tmp_path / "fresh.db")
    upgraded = sqlite3.connect(path)
    try:
        migrate(fresh, schema_sql(), MIGRATIONS, SCHEMA_VERSION)
        objects = "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"

        def unquoted(found):  # a renamed table's SQL names it in quotes
            return [(kind, name, re.sub(r'^CREATE TABLE "(\w+)"', r"CREATE TABLE \1", sql))
                    for kind, name, sql in found]

        # The same tables, indexes, triggers and views as a new database, with the same SQL.
        assert unquoted(upgraded.execute(objects)) == unquoted(fresh.execute(objects))
    finally:
        fresh.close()
        upgraded.close()


KILLED_MID_UPGRADE = """
import sys, time
from deployapi.repository import Repository, schema
rebuild = schema.rebuild_tables

def rebuild_then_hang(*args, **kwargs):
    rebuild(*args, **kwargs)
    open(sys.argv[2], "w").close()
    time.sleep(120)

schema.rebuild_tables = rebuild_then_hang
Repository(sys.argv[1])
"""


def test_an_upgrade_killed_after_the_tables_were_rebuilt_leaves_version_5_intact(tmp_path):
    path = version_5_database(tmp_path)
    before = rows(path)
    marker = tmp_path / "rebuilt"
    upgrade = subprocess.Popen([sys.executable, "-c", KILLED_MID_UPGRADE, str(path), str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert upgrade.poll() is None, "the upgrade ended before it was killed"
            assert time.monotonic() < deadline, "the upgrade never reached its rebuild"
            time.sleep(0.02)
        os.kill(upgrade.pid, signal.SIGKILL)
    finally:
        upgrade.kill()
        upgrade.wait()
    assert rows(path) == before
    assert check_database(path).ok
    Repository(path).close()  # and the next start upgrades it
    assert rows(path)["user_version"] == SCHEMA_VERSION


def assert_upgraded_like_a_fresh_database(path: Path, tmp_path: Path) -> None:
    """The upgraded file has a new database's columns, and the SQL of every other table, index, trigger and view.

    deployments and deployment_events are compared column by column: ALTER TABLE
    writes added columns into their CREATE TABLE text in its own way.
    """
    fresh = sqlite3.connect(tmp_path / "fresh.db")
    upgraded = sqlite3.connect(path)
    try:
        migrate(fresh, schema_sql(), MIGRATIONS, SCHEMA_VERSION)
        for table in ("deployments", "deployment_events"):
            assert [tuple(row[1:]) for row in upgraded.execute(f"PRAGMA table_info({table})")] == \
                [tuple(row[1:]) for row in fresh.execute(f"PRAGMA table_info({table})")]
        objects = ("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                   " AND name NOT IN ('deployments', 'deployment_events') ORDER BY type, name")
        assert upgraded.execute(objects).fetchall() == fresh.execute(objects).fetchall()
    finally:
        fresh.close()
        upgraded.close()
