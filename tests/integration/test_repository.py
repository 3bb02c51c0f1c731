"""The repository against real SQLite files: schema, atomic writes, persistence, history."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
from builders import StepClock, new_deployment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployapi.handlers import deployment_json
from deployapi.integrity import check_database
from deployapi.lifecycle import ActionRequest, InvalidTransition, SelfApproval
from deployapi.listing import ListQuery, Position
from deployapi.repository import (
    JOURNAL_SIZE_LIMIT_BYTES,
    WAL_AUTOCHECKPOINT_PAGES,
    DatabaseError,
    DeploymentNotFound,
    Repository,
    schema_sql,
)


def table_names(path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")}


def count(path, sql, *params) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, params).fetchone()[0]


def inject_event_failure(path) -> None:
    """Make every event insert fail, as a full disk or a bug in the event write would."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TRIGGER fail_events BEFORE INSERT ON deployment_events"
                     " BEGIN SELECT RAISE(ABORT, 'injected failure'); END")


def test_start_up_creates_the_schema_in_wal_mode(db_path, repo):
    assert {"deployments", "deployment_events", "settings", "deployment_events_no_update",
            "deployment_events_no_delete", "deployments_no_delete"} <= table_names(db_path)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_connections_commit_to_disk_and_checkpoint_every_thousand_pages(repo):
    # Per-connection settings (ADR 0007): each connection the repository opens carries them.
    with repo._read() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_AUTOCHECKPOINT_PAGES == 1000
        assert conn.execute("PRAGMA journal_size_limit").fetchone()[0] == JOURNAL_SIZE_LIMIT_BYTES == 8 * 2**20


def test_the_wal_shrinks_back_after_a_long_read_let_it_grow(db_path, repo):
    reader = sqlite3.connect(db_path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM deployments").fetchone()  # holds a snapshot: no checkpoint can pass it
    for _ in range(800):
        repo.create_deployment(new_deployment())
    wal = db_path.with_name(db_path.name + "-wal")
    grown = wal.stat().st_size
    reader.execute("COMMIT")
    reader.close()
    for _ in range(200):  # the next checkpoints complete, the WAL starts over and is cut back
        repo.create_deployment(new_deployment())
    assert grown > 3 * JOURNAL_SIZE_LIMIT_BYTES
    assert wal.stat().st_size <= JOURNAL_SIZE_LIMIT_BYTES


def test_start_up_is_idempotent_and_keeps_data(db_path, repo):
    deployment = repo.create_deployment(new_deployment())
    again = Repository(db_path)
    try:
        assert again.get_deployment(deployment.id) == deployment
    finally:
        again.close()


def test_schema_sql_has_no_drop_statement():
    assert "DROP " not in schema_sql().upper()


def test_create_writes_the_deployment_and_its_created_event_together(db_path, repo):
    deployment = repo.create_deployment(new_deployment(requester="alice"))
    assert deployment.status == "pending_approval"
    assert deployment.created_at == deployment.updated_at
    [event] = repo.list_events(deployment.id)
    assert (event.type, event.sequence, event.actor, event.from_status, event.to_status) == (
        "created", 1, "alice", None, "pending_approval")
    assert event.created_at == deployment.created_at


def test_data_survives_closing_and_reopening_the_file(db_path):
    first = Repository(db_path)
    deployment = first.create_deployment(new_deployment(work_refs=("JIRA-1", "PR-2")))
    first.apply_action(deployment.id, ActionRequest("approve", "bob", "looks fine"))
    first.close()

    second = Repository(db_path)
    try:
        stored = second.get_deployment(deployment.id)
        assert stored.status == "approved" and stored.work_refs == ("JIRA-1", "PR-2")
        assert [e.type for e in second.list_events(deployment.id)] == ["created", "approved"]
    finally:
        second.close()


def test_a_failed_event_insert_leaves_no_deployment_behind(db_path, repo):
    inject_event_failure(db_path)
    with pytest.raises(sqlite3.DatabaseError, match="injected failure"):
        repo.create_deployment(new_deployment())
    assert count(db_path, "SELECT count(*) FROM deployments") == 0


def test_a_failed_event_insert_leaves_the_deployment_unchanged(db_path, repo):
    deployment = repo.create_deployment(new_deployment())
    inject_event_failure(db_path)
    with pytest.raises(sqlite3.DatabaseError, match="injected failure"):
        repo.apply_action(deployment.id, ActionRequest("approve", "bob", None))
    assert repo.get_deployment(deployment.id) == deployment
    assert count(db_path, "SELECT count(*) FROM deployment_events") == 1


def test_the_repository_keeps_working_after_a_failed_write(db_path, repo):
    inject_event_failure(db_path)
    with pytest.raises(sqlite3.DatabaseError):
        repo.create_deployment(new_deployment())
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP TRIGGER fail_events")
    assert repo.create_deployment(new_deployment()).status == "pending_approval"


def test_every_action_appends_exactly_one_event_and_updates_the_state(db_path, repo):
    deployment = repo.create_deployment(new_deployment(requester="alice"))
    steps = [("approve", "bob", None, "approved"), ("start", "ci-bot", None, "started"),
             ("succeed", "ci-bot", "green", "succeeded"), ("rollback", "oncall", "error spike", "rolled_back")]
    for number, (action, actor, note, status) in enumerate(steps, start=2):
        updated = repo.apply_action(deployment.id, ActionRequest(action, actor, note))
        events = repo.list_events(deployment.id)
        assert len(events) == number
        assert updated.status == events[-1].to_status == status
        assert (events[-1].sequence, events[-1].actor, events[-1].note) == (number, actor, note)
        assert events[-1].created_at == updated.updated_at
        assert repo.get_deployment(deployment.id) == updated
    final = repo.get_deployment(deployment.id)
    assert (final.reviewed_by, final.reviewed_at) == ("bob", repo.list_events(deployment.id)[1].created_at)


def test_event_ids_increase_in_commit_order_across_deployments(repo):
    a = repo.create_deployment(new_deployment())
    b = repo.create_deployment(new_deployment())
    repo.apply_action(a.id, ActionRequest("approve", "bob", None))
    ids = [e.id for e in repo.list_events(a.id) + repo.list_events(b.id)]
    assert sorted(ids) == [ids[0], ids[2], ids[1]]


def test_a_refused_action_changes_nothing(db_path, repo):
    deployment = repo.create_deployment(new_deployment(requester="alice"))
    with pytest.raises(SelfApproval):
        repo.apply_action(deployment.id, ActionRequest("approve", "ALICE", None))
    with pytest.raises(InvalidTransition):
        repo.apply_action(deployment.id, ActionRequest("start", "bob", None))
    assert repo.get_deployment(deployment.id) == deployment
    assert len(repo.list_events(deployment.id)) == 1


def test_unknown_ids_are_not_found(repo):
    for call in (repo.get_deployment, repo.list_events,
                 lambda i: repo.apply_action(i, ActionRequest("approve", "bob", None))):
        with pytest.raises(DeploymentNotFound):
            call("no-such-id")


@pytest.mark.parametrize(
    "statement",
    ["UPDATE deployment_events SET note = 'rewritten'", "DELETE FROM deployment_events",
     "DELETE FROM deployments"],
    ids=["update an event", "delete an event", "delete a deployment"],
)
def test_the_database_refuses_to_rewrite_history(db_path, repo, statement):
    repo.create_deployment(new_deployment())
    with sqlite3.connect(db_path) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute(statement)
    assert count(db_path, "SELECT count(*) FROM deployment_events WHERE note IS NULL") == 1


def test_sql_metacharacters_are_stored_as_data(repo):
    text = "'); DROP TABLE deployments; -- \" % _ \\"
    deployment = repo.create_deployment(new_deployment(requester=text, rollback_plan=text, work_refs=(text,)))
    stored = repo.get_deployment(deployment.id)
    assert stored.requester == stored.rollback_plan == stored.work_refs[0] == text


def test_ping_is_a_real_round_trip(repo):
    repo.ping()
    repo.close()
    with pytest.raises(DatabaseError):
        repo.ping()


def test_a_file_that_is_not_sqlite_is_refused_clearly(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(DatabaseError, match="cannot use database"):
        Repository(path)


def test_a_missing_directory_is_refused_clearly(tmp_path):
    with pytest.raises(DatabaseError, match="cannot open database"):
        Repository(tmp_path / "missing" / "deployapi.db")


def test_timestamps_come_from_the_clock_in_the_stored_form(db_path):
    clock = StepClock()
    repository = Repository(db_path, clock=clock)
    try:
        deployment = repository.create_deployment(new_deployment())
        assert deployment.created_at == "2026-11-26T10:00:00.001000Z"
    finally:
        repository.close()


# --- the JSON SQLite renders for reads -------------------------------------------------

# Text that JSON encoders treat differently: quotes, backslashes, the control
# characters free text may hold, non-ASCII, astral characters, and U+2028.
AWKWARD_TEXT = 'a "quoted" \\ back\\slash\ttab\r\nline ünï 日本 🚀 \u2028 </script>'


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\r\n"),
                    min_size=1, max_size=40).filter(str.strip),
       risk=st.none() | st.just(AWKWARD_TEXT))
def test_the_document_sqlite_renders_is_what_deployment_json_renders(repo, db_path, text, risk):
    # Reads answer with DEPLOYMENT_DOCUMENT, writes with handlers.deployment_json:
    # the same keys in the same order, the same values, whatever the text.
    deployment = repo.create_deployment(new_deployment(
        rollback_plan=text, risk=risk, work_refs=(text.strip()[:500], AWKWARD_TEXT)))
    deployment = repo.apply_action(deployment.id, ActionRequest("approve", "ünï 日本", text))
    expected = deployment_json(deployment)
    document = json.loads(repo.deployment_document(deployment.id))
    assert list(document) == list(expected)
    assert document == expected
    page = repo.list_deployments(ListQuery(limit=1))
    assert [json.loads(d) for d in page.documents] == [expected]
    # The approvals Python stored are the ones check rebuilds from the events with SQLite's JSON.
    assert check_database(db_path).ok


def test_a_listing_page_says_where_the_next_one_starts(repo):
    created = [repo.create_deployment(new_deployment()) for _ in range(3)]
    first = repo.list_deployments(ListQuery(limit=2))
    assert [json.loads(d)["id"] for d in first.documents] == [created[2].id, created[1].id]
    assert first.next_position == Position(created[1].created_at, created[1].id)
    last = repo.list_deployments(ListQuery(limit=2, after=first.next_position))
    assert [json.loads(d)["id"] for d in last.documents] == [created[0].id] and last.next_position is None


def test_the_document_of_an_unknown_id_is_not_found(repo):
    with pytest.raises(DeploymentNotFound):
        repo.deployment_document("no-such-id")


# --- connections: one per thread --------------------------------------------------------

def wal_file(db_path):
    # SQLite removes the -wal file when the last connection to the database closes.
    return db_path.with_name(db_path.name + "-wal")


def test_the_connection_of_a_thread_that_ended_is_closed(db_path):
    repository = Repository(db_path)

    def write_and_read():
        repository.create_deployment(new_deployment())  # on the writes' connection
        repository.list_deployments(ListQuery())  # on this thread's own

    # One after another: threads that end at the same moment may close together,
    # and then no close removes the WAL (the case close() covers, tested below).
    for _ in range(4):
        thread = threading.Thread(target=write_and_read)
        thread.start()
        thread.join()
    repository.release_connections()  # the writes' connection: the last one, unless a thread's stayed open
    assert wal_file(db_path).exists() is False
    assert len(repository.list_deployments(ListQuery()).documents) == 4
    repository.close()


def read_syscalls() -> int:
    """The read system calls this process has made so far (Linux)."""
    counters = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(counters["syscr"])


def test_writes_taking_turns_across_threads_find_the_pages_they_change_still_cached(db_path):
    # SQLite drops a connection's page cache when another connection wrote
    # since.  Were each thread to write on a connection of its own, threads
    # taking turns would read most pages each write changes from the file
    # again (8 to 12 reads a write here; about 40 a create under the server's
    # load); on the one connection of the writes they are still cached.
    repository = Repository(db_path)
    start = threading.Barrier(8)

    def write():
        start.wait(timeout=10)
        for _ in range(25):
            deployment = repository.create_deployment(new_deployment())
            repository.apply_action(deployment.id, ActionRequest("approve", "reviewer@example.com", None))

    threads = [threading.Thread(target=write) for _ in range(8)]
    before = read_syscalls()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reads = read_syscalls() - before
    assert len(repository.list_deployments(ListQuery(limit=200)).documents) == 200
    repository.close()
    # What is left: checkpoints reading back from the -wal the pages they copy.
    assert reads < 3 * 400, f"{reads / 400:.1f} reads of the file a write"


def interrupt_the_next_write_after_begin(repository: Repository) -> None:
    """Make the next write raise RuntimeError once SQLite's write lock is taken, before the block that rolls back."""
    interruptions = [RuntimeError("interrupted just after BEGIN IMMEDIATE")]

    def interrupted_once():
        if interruptions:
            raise interruptions.pop()

    repository._stop_waiting = interrupted_once  # called once BEGIN IMMEDIATE has the lock


def test_a_write_interrupted_inside_begin_immediate_leaves_no_lock_behind_for_other_processes(db_path):
    # The writes' connection, once discarded, stays open until the next write
    # opens its replacement (Database._discard); an interruption between BEGIN
    # IMMEDIATE and the block that rolls back must not leave it holding
    # SQLite's write lock meanwhile, refusing every other process's writes.
    repository = Repository(db_path)
    repository.create_deployment(new_deployment())
    interrupt_the_next_write_after_begin(repository)
    with pytest.raises(RuntimeError, match="interrupted"):
        repository.create_deployment(new_deployment())
    other_process = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        other_process.execute("BEGIN IMMEDIATE")  # "database is locked" while the lock is still held
        other_process.execute("ROLLBACK")
    finally:
        other_process.close()
    repository.create_deployment(new_deployment())
    assert len(repository.list_deployments(ListQuery()).documents) == 2
    repository.close()


def test_an_interrupted_write_that_does_not_wait_for_the_disk_raises_its_own_error(db_path):
    # durable=False (webhook positions) sets synchronous = NORMAL for the one
    # write and puts FULL back after it, which SQLite refuses inside a
    # transaction: that refusal must not take the interruption's place.
    repository = Repository(db_path)
    interrupt_the_next_write_after_begin(repository)
    with pytest.raises(RuntimeError, match="interrupted"), repository._write(durable=False) as conn:
        conn.execute("SELECT 1")
    repository.create_deployment(new_deployment())
    with repository._write() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL, on the connection the writes use now
    repository.close()


def test_a_write_on_a_writes_connection_closed_under_it_fails_alone_and_the_next_opens_another(db_path):
    repository = Repository(db_path)
    repository.create_deployment(new_deployment())
    repository._writer.conn.close()  # as a close() racing a write would leave it
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        repository.create_deployment(new_deployment())
    for _ in range(2):
        repository.create_deployment(new_deployment())
    assert len(repository.list_deployments(ListQuery()).documents) == 3
    repository.close()


def test_a_checkpoint_during_a_storage_fault_waits_for_no_write_and_runs_on_the_writes_connection_between_two(db_path):
    repository = Repository(db_path)
    repository.create_deployment(new_deployment())  # the only connection kept: the writes'
    statements: list[str] = []
    repository._writer.conn.set_trace_callback(statements.append)
    repository.storage.failed("a write failed (the test's)")  # checkpoint() runs only during a fault
    with repository._write_lock:  # a write in its turn, before it has taken the connection
        repository.checkpoint()
    assert statements == []
    repository.checkpoint()
    assert statements == ["PRAGMA wal_checkpoint(PASSIVE)"]
    repository.close()


def test_close_folds_the_wal_back_even_when_no_thread_closed_last(db_path):
    # Worker threads that end together close their connections together, and
    # SQLite removes the WAL only on a close that has the file to itself.  A
    # read-only reader holding the file while they close stands in for that race.
    repository = Repository(db_path)
    reader = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM settings").fetchone()
    writers = [threading.Thread(target=repository.create_deployment, args=(new_deployment(),)) for _ in range(3)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    reader.execute("COMMIT")
    reader.close()
    assert wal_file(db_path).exists()
    repository.close()
    assert not wal_file(db_path).exists()


def test_close_does_not_recreate_a_database_file_that_was_removed(db_path):
    repository = Repository(db_path)
    repository.create_deployment(new_deployment())
    for path in (db_path, wal_file(db_path), db_path.with_name(db_path.name + "-shm")):
        path.unlink(missing_ok=True)
    repository.close()
    assert not db_path.exists()


def test_close_closes_the_connections_of_threads_still_running(db_path):
    repository = Repository(db_path)
    used, release = threading.Barrier(4), threading.Event()

    def work():
        repository.create_deployment(new_deployment())
        used.wait()
        release.wait()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    used.wait()
    assert wal_file(db_path).exists()
    repository.close()
    assert not wal_file(db_path).exists()
    release.set()
    for thread in threads:
        thread.join()
    with pytest.raises(DatabaseError, match="closed"):
        repository.get_deployment("any")


def test_a_read_inside_a_write_transaction_sees_only_committed_state(repo):
    with repo.transaction() as tx:
        deployment = tx.create_deployment(new_deployment())
        with pytest.raises(DeploymentNotFound):
            repo.get_deployment(deployment.id)
    assert repo.get_deployment(deployment.id) == deployment
