"""Operating a database file: check, backup, and schema versions."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from builders import new_deployment

from deployapi import chain
from deployapi.integrity import check_database
from deployapi.lifecycle import ActionRequest
from deployapi.repository import (
    EVENTS_WITH_CONTENT_SQL,
    MIGRATIONS,
    SCHEMA_VERSION,
    DatabaseError,
    Migration,
    Repository,
    backup_database,
    event_with_content,
    migrate,
    schema_sql,
    split_statements,
)

FIXTURES = Path(__file__).parent / "fixtures"


def populate(repo: Repository, *, cancelled: bool = True) -> list[str]:
    """A few deployments in every kind of state (``cancelled``: that one too); returns their ids."""
    ids = []
    for steps in ([], [("approve", None)], [("reject", "no")], [("approve", None), ("start", None)],
                  [("approve", None), ("start", None), ("succeed", None), ("rollback", "bad")],
                  [("approve", None), ("start", None), ("fail", "red")],
                  *([[("cancel", "superseded")], [("approve", None), ("cancel", "window missed")]] if cancelled
                    else [])):
        deployment = repo.create_deployment(new_deployment(requester="alice"))
        for action, note in steps:
            repo.apply_action(deployment.id, ActionRequest(action, "bob", note))
        ids.append(deployment.id)
    return ids


def tamper(path, *statements) -> None:
    """Edit the file behind the API's back, as a careless operator or a bug could."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("DROP TRIGGER deployment_events_no_update")
        conn.execute("DROP TRIGGER deployment_events_no_delete")
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()
    restore_triggers(path)


def restore_triggers(path) -> None:
    """Put schema.sql's triggers back, as someone covering their tracks would."""
    conn = sqlite3.connect(path)
    try:
        for statement in split_statements(schema_sql()):
            if "CREATE TRIGGER" in statement:
                conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def failed_checks(path) -> dict[str, tuple[str, ...]]:
    return {r.name: r.offenders for r in check_database(path).results if not r.ok}


def test_a_healthy_database_passes_every_check(db_path, repo):
    populate(repo)
    report = check_database(db_path)
    assert report.ok and report.deployments == 8 and report.events == 22
    assert report.lines()[-1].endswith("all checks passed")


def test_check_does_not_create_a_missing_database(tmp_path):
    with pytest.raises(FileNotFoundError):
        check_database(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize(
    "statements, broken",
    [
        (["DELETE FROM deployment_events WHERE sequence = 1 AND deployment_id = '{id}'"],
         "every deployment has its created event"),
        (["DELETE FROM deployment_events WHERE sequence = 2 AND deployment_id = '{id}'"],
         "event sequences are 1..n without gaps"),
        (["UPDATE deployments SET status = 'succeeded' WHERE id = '{id}'"],
         "status and updated_at match the last event"),
        (["UPDATE deployments SET reviewed_by = 'mallory' WHERE id = '{id}'"],
         "reviewed_by and reviewed_at match the review event"),
        (["UPDATE deployment_events SET type = 'succeeded', to_status = 'succeeded'"
          " WHERE sequence = 3 AND deployment_id = '{id}'",
          "UPDATE deployments SET status = 'succeeded' WHERE id = '{id}'"],
         "every event is a legal transition from the one before"),
        (["PRAGMA foreign_keys = OFF",
          "INSERT INTO deployment_events (deployment_id, sequence, type, actor, to_status, created_at)"
          " VALUES ('ghost', 1, 'created', 'x', 'pending_approval', '2026-01-01T00:00:00.000000Z')"],
         "SQLite foreign_key_check"),
    ],
    ids=["missing created event", "sequence gap", "status drift", "review metadata drift",
         "illegal transition", "event of no deployment"],
)
def test_each_invariant_catches_a_hand_edit(db_path, repo, statements, broken):
    ids = populate(repo)
    victim = ids[3]  # approved then started: created, approved, started
    tamper(db_path, *(s.format(id=victim) for s in statements))
    failures = failed_checks(db_path)
    assert broken in failures
    if broken != "SQLite foreign_key_check":
        assert victim in failures[broken]
        # Only the victim is named (edits to events also break the hash chain and
        # may leave a hole in the event ids, reported by event).
        for by_event in ("hash chain links every event to the one before", "event ids are 1..n without gaps",
                         "the read tables derived from the events hold exactly their rows"):
            failures.pop(by_event, None)
        assert set().union(*failures.values()) == {victim}


def test_a_cancel_after_the_start_is_an_illegal_transition(db_path, repo):
    ids = populate(repo)
    victim = ids[5]  # created, approved, started, failed
    tamper(db_path, f"UPDATE deployment_events SET type = 'cancelled', to_status = 'cancelled'"
                    f" WHERE sequence = 4 AND deployment_id = '{victim}'",
           f"UPDATE deployments SET status = 'cancelled' WHERE id = '{victim}'")
    assert failed_checks(db_path)["every event is a legal transition from the one before"] == (victim,)


def test_sqlite_corruption_is_reported(tmp_path, repo, db_path):
    populate(repo)
    repo.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db_path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    data[page_size * 2 + 100: page_size * 3 - 100] = b"\xff" * (page_size - 200)  # scribble over page 3
    broken = tmp_path / "broken.db"
    broken.write_bytes(bytes(data))
    assert not check_database(broken).ok


def test_a_backup_taken_during_writes_is_consistent(db_path, repo, tmp_path):
    populate(repo)
    stop = threading.Event()
    written = []

    def keep_writing():
        while not stop.is_set():
            d = repo.create_deployment(new_deployment())
            repo.apply_action(d.id, ActionRequest("approve", "bob", None))
            written.append(d.id)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        copies = []
        for n in range(3):
            copy = tmp_path / f"backup-{n}.db"
            backup_database(db_path, copy)
            copies.append(copy)
    finally:
        stop.set()
        writer.join()
    assert written  # the writer really ran alongside
    for copy in copies:
        assert check_database(copy).ok
        assert not Path(f"{copy}-wal").exists()
    # The copy opens as a working database.
    restored = Repository(copies[-1])
    try:
        assert restored.get_deployment(written[0]).status == "approved"
    finally:
        restored.close()


def test_a_backup_never_overwrites(db_path, repo, tmp_path):
    target = tmp_path / "exists.db"
    target.write_text("precious")
    with pytest.raises(FileExistsError):
        backup_database(db_path, target)
    assert target.read_text() == "precious"


def test_a_new_database_records_the_current_schema_version(db_path, repo):
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_version_1_database_is_upgraded_on_start_up_keeping_its_history(tmp_path):
    path = tmp_path / "v1.db"
    shutil.copyfile(_build_v1_database(tmp_path), path)
    before = check_database(path)
    assert before.ok, before.lines()  # a version-1 file has no chain yet, and that is no failure
    repository = Repository(path)
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            # Version 2 added the idempotency table.
            assert conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 0
        after = check_database(path)
        assert after.ok and (after.deployments, after.events) == (before.deployments, before.events)
        [deployment] = repository.list_events("01v1deployment000000000000")[:1]
        assert deployment.type == "created"
        assert repository.apply_action("01v1deployment000000000000",
                                       ActionRequest("approve", "bob", None)).status == "approved"
    finally:
        repository.close()


def _build_v1_database(tmp_path) -> Path:
    """A database made by the version-1 schema (a frozen copy in fixtures/) with one deployment."""
    path = tmp_path / "built-v1.db"
    conn = sqlite3.connect(path)
    conn.executescript((FIXTURES / "schema_v1.sql").read_text())
    conn.executescript("""
        INSERT INTO deployments VALUES ('01v1deployment000000000000', 'billing', 'staging', '1.0', 'alice',
            '["JIRA-1"]', NULL, 'redeploy', 'pending_approval', NULL, NULL,
            '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z');
        INSERT INTO deployment_events (deployment_id, sequence, type, actor, note, from_status, to_status,
            created_at) VALUES ('01v1deployment000000000000', 1, 'created', 'alice', NULL, NULL,
            'pending_approval', '2026-01-01T00:00:00.000000Z');
        PRAGMA user_version = 1;
    """)
    conn.close()
    return path


def test_a_database_from_a_newer_version_is_refused_clearly(db_path, repo):
    repo.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(DatabaseError, match="newer database"):
        Repository(db_path)


def test_migration_steps_run_in_order_and_only_once(tmp_path):
    path = tmp_path / "m.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, schema_sql(), MIGRATIONS, SCHEMA_VERSION)
    v = SCHEMA_VERSION
    steps = (*MIGRATIONS,
             Migration(v + 1, ("CREATE TABLE step_log (n INTEGER)", f"INSERT INTO step_log VALUES ({v + 1})")),
             Migration(v + 2, (f"INSERT INTO step_log VALUES ({v + 2})",)))
    assert migrate(conn, schema_sql(), steps, v + 2) == v
    assert migrate(conn, schema_sql(), steps, v + 2) == v + 2  # already there: nothing runs again
    assert [r[0] for r in conn.execute("SELECT n FROM step_log")] == [v + 1, v + 2]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == v + 2
    conn.close()


def test_a_failing_migration_step_leaves_the_database_as_it_was(tmp_path):
    path = tmp_path / "m.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, schema_sql(), MIGRATIONS, SCHEMA_VERSION)
    steps = (*MIGRATIONS, Migration(SCHEMA_VERSION + 1, ("CREATE TABLE half_done (n INTEGER)",
                                                         "INSERT INTO no_such_table VALUES (1)")))
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, schema_sql(), steps, SCHEMA_VERSION + 1)
    conn.execute("ROLLBACK")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[0] == 0
    conn.close()


def test_a_newer_database_is_refused_without_being_changed(db_path, repo):
    repo.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(DatabaseError):
        Repository(db_path)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_write_waits_at_most_one_busy_timeout_for_a_slot_and_the_lock_together(tmp_path):
    from deployapi.repository import DatabaseBusy

    repository = Repository(tmp_path / "deadline.db", busy_timeout_ms=1000, max_writers=2)
    answered: list[float] = []
    started = time.monotonic()

    def slow_write():  # holds the lock 1.6 s inside its transaction (not waiting for SQLite)
        with repository.transaction() as tx:
            tx.create_deployment(new_deployment())
            time.sleep(1.6)

    def write():
        try:
            repository.create_deployment(new_deployment())
        except DatabaseBusy:
            pass
        answered.append(time.monotonic() - started)

    holder = threading.Thread(target=slow_write)
    holder.start()
    time.sleep(0.1)
    writers = [threading.Thread(target=write) for _ in range(2)]  # one waits for the lock, one for a slot
    for thread in writers:
        thread.start()
    for thread in (holder, *writers):
        thread.join(5)
    repository.close()
    assert len(answered) == 2 and max(answered) < 1.1 + 0.3, answered


def test_a_relative_database_path_still_works_after_the_process_changes_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    repository = Repository("relative.db")
    try:
        monkeypatch.chdir("/")
        assert repository.create_deployment(new_deployment()).status == "pending_approval"
    finally:
        repository.close()


def test_writers_queued_in_one_process_give_up_after_the_busy_timeout(tmp_path):
    from deployapi.repository import DatabaseBusy

    path = tmp_path / "queue.db"
    repository = Repository(path, busy_timeout_ms=200)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    outcomes = []

    def write():
        try:
            repository.create_deployment(new_deployment())
            outcomes.append("created")
        except DatabaseBusy:
            outcomes.append("busy")

    try:
        threads = [threading.Thread(target=write) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        # Every writer queued behind the in-process lock gets DatabaseBusy (a 503)
        # instead of waiting without bound.
        assert outcomes == ["busy"] * 4
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        repository.close()


@pytest.mark.parametrize(
    "statement, broken_event",
    [
        ("UPDATE deployment_events SET note = 'nothing to see' WHERE id = 5", 5),
        ("UPDATE deployment_events SET actor = 'mallory' WHERE id = 2", 2),
        ("DELETE FROM deployment_events WHERE id = 9", 10),
        ("UPDATE deployment_events SET created_at = '2020-01-01T00:00:00.000000Z' WHERE id = 1", 1),
    ],
    ids=["note rewritten", "actor rewritten", "event deleted", "time rewritten"],
)
def test_check_names_the_first_event_whose_hash_no_longer_fits(db_path, repo, statement, broken_event):
    populate(repo)
    assert check_database(db_path).ok
    tamper(db_path, statement)
    failures = failed_checks(db_path)
    [where] = failures["hash chain links every event to the one before"]
    assert where.startswith(f"event {broken_event} ")


def test_an_edit_that_recomputes_its_own_hash_still_breaks_the_next_link(db_path, repo):
    populate(repo)
    [(event, content)] = events_with_content(db_path, "WHERE e.id = 4")
    [(previous, _)] = events_with_content(db_path, "WHERE e.id = 3")
    forged = dataclasses.replace(event, actor="mallory")
    tamper(db_path, f"UPDATE deployment_events SET actor = 'mallory', hash = "
                    f"'{chain.event_hash(forged, previous.hash, content)}' WHERE id = 4")
    [where] = failed_checks(db_path)["hash chain links every event to the one before"]
    assert where.startswith("event 5 ")


def test_events_carry_their_chain_hashes(db_path, repo):
    populate(repo)
    previous = chain.GENESIS
    events = repo.list_events_after(0, 1000)
    for event in events:
        content = chain.creation_content(repo.get_deployment(event.deployment_id)) if event.type == "created" \
            else None
        assert event.hash == chain.event_hash(event, previous, content)
        previous = event.hash
    assert repo.event_head() == events[-1]


def events_with_content(path, where: str) -> list:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [event_with_content(row) for row in conn.execute(f"{EVENTS_WITH_CONTENT_SQL} {where}")]
    finally:
        conn.close()
