"""deployapi check against forgeries and damage: content under the chain, constraints, truncation, anchors."""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from builders import StepClock, new_deployment

from deployapi import chain
from deployapi.integrity import Anchor, check_database
from deployapi.lifecycle import ActionRequest, Event
from deployapi.repository import SCHEMA_VERSION, Repository

FIXTURES = Path(__file__).parent / "fixtures"
CHAIN = "hash chain links every event to the one before"
CONTENT = "each created event's hash seals its deployment's creation content"
CONSTRAINTS = "every row keeps the schema's CHECK and NOT NULL constraints"
TRIGGERS = "the append-only and fixed-content triggers are in place"
ID_GAPS = "event ids are 1..n without gaps"
COUNTER = "the event id counter matches the last event"


def populate(repo: Repository, count: int = 4) -> list[str]:
    ids = []
    for n in range(count):
        deployment = repo.create_deployment(new_deployment(environment="production", risk="low", version=f"1.{n}"))
        repo.apply_action(deployment.id, ActionRequest("approve", "bob", None))
        ids.append(deployment.id)
    return ids


def edit(path, *statements, restore_triggers=True) -> None:
    """Write to the file behind the API's back: triggers dropped first and put back after, as anyone
    holding the file can."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
        for name, _ in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        for statement in statements:
            conn.execute(statement)
        if restore_triggers:
            for _, sql in triggers:
                conn.execute(sql)
    finally:
        conn.close()


def failed(path, anchors=()) -> dict[str, tuple[str, ...]]:
    return {r.name: r.offenders for r in check_database(path, anchors).results if not r.ok}


def head(path) -> Anchor:
    with sqlite3.connect(path) as conn:
        event_id, digest = conn.execute("SELECT id, hash FROM deployment_events ORDER BY id DESC LIMIT 1").fetchone()
    return Anchor(event_id, digest)


# --- what was approved -------------------------------------------------------------


def test_the_database_refuses_to_change_what_a_deployment_requested(db_path, repo):
    [victim, *_] = populate(repo)
    conn = sqlite3.connect(db_path)
    for column, value in (("version", "'6.6.6'"), ("environment", "'staging'"), ("risk", "NULL"),
                          ("rollback_plan", "'none'"), ("work_refs", "'[]'"), ("requester", "'bob'"),
                          ("service", "'other'"), ("created_at", "'2020-01-01T00:00:00.000000Z'"),
                          ("id", "'x'")):
        with pytest.raises(sqlite3.IntegrityError, match="fixed at creation"):
            conn.execute(f"UPDATE deployments SET {column} = {value} WHERE id = ?", (victim,))
    conn.close()


def test_a_rewritten_deployment_breaks_the_chain_and_names_the_deployment(db_path, repo):
    ids = populate(repo)
    anchor = head(db_path)
    victim = ids[1]
    edit(db_path, f"UPDATE deployments SET version = '6.6.6', environment = 'staging', risk = NULL"
                  f" WHERE id = '{victim}'")
    failures = failed(db_path, [anchor])
    assert failures[CONTENT] == (victim,)
    assert failures[CHAIN][0].startswith("event 3 ")  # the victim's created event
    assert any(name.startswith("the history contains the anchored head") for name in failures)
    # The published head did not move: only the recomputation shows the forgery.
    assert head(db_path) == anchor


def test_a_rewritten_deployment_with_the_chain_recomputed_still_misses_the_anchor(db_path, repo):
    ids = populate(repo)
    anchor = head(db_path)
    edit(db_path, f"UPDATE deployments SET version = '6.6.6' WHERE id = '{ids[0]}'")
    rechain(db_path)
    failures = failed(db_path)
    assert not failures.get(CHAIN) and not failures.get(CONTENT)  # consistent again, by hand
    [problem] = failed(db_path, [anchor])[f"the history contains the anchored head {anchor.event_id}:"
                                           f"{anchor.hash[:12]}…"]
    assert "was changed after the head was recorded" in problem


# --- constraints a read-only connection does not check -------------------------------


@pytest.mark.parametrize("statement, expected", [
    ("UPDATE deployments SET work_refs = 'not json' WHERE rowid = 1", "CHECK (json_valid(work_refs)"),
    ("UPDATE deployments SET status = 'hacked' WHERE rowid = 2", "CHECK (status IN"),
    ("UPDATE deployment_events SET sequence = 0 WHERE id = 2", "CHECK (sequence >= 1)"),
    ("UPDATE deployment_events SET type = 'teleported' WHERE id = 2", "CHECK (type IN"),
], ids=["work_refs not JSON", "unknown status", "sequence 0", "unknown event type"])
def test_rows_that_break_a_check_constraint_fail_the_check(db_path, repo, statement, expected):
    populate(repo)
    edit(db_path, "PRAGMA ignore_check_constraints = ON", statement)
    [offender] = failed(db_path)[CONSTRAINTS]
    assert expected in offender


def test_missing_triggers_fail_the_check(db_path, repo):
    populate(repo)
    edit(db_path, restore_triggers=False)
    assert set(failed(db_path)[TRIGGERS]) == {"deployment_events_no_update is missing",
                                               "deployment_events_no_delete is missing",
                                               "deployments_no_delete is missing",
                                               "deployments_creation_is_fixed is missing",
                                               "deployment_events_derive is missing",
                                               "deployments_derive is missing"}


# --- truncation, a lost -wal, a stale copy ----------------------------------------------


def test_an_event_removed_from_the_middle_leaves_a_hole_in_the_ids(db_path, repo):
    populate(repo)
    edit(db_path, "DELETE FROM deployment_events WHERE id IN (4, 5)")
    assert failed(db_path)[ID_GAPS] == ("events 4-5 are missing",)


def test_events_removed_from_the_end_leave_the_id_counter_ahead(db_path, repo):
    populate(repo)
    edit(db_path, "DELETE FROM deployment_events WHERE id > 6")
    failures = failed(db_path)
    assert failures[COUNTER] == ("the counter is at 8 but the last event is 6: the events after it were removed",)
    assert CHAIN not in failures  # what is left is a valid chain: only the counter tells


def test_a_truncated_tail_with_the_counter_fixed_is_caught_by_the_anchor(db_path, repo):
    ids = populate(repo)
    anchor = head(db_path)
    # The last deployment and both its events gone, as whole transactions are
    # when the end of a -wal is lost; the counter put back to match.
    edit(db_path, "DELETE FROM deployment_events WHERE id > 6", f"DELETE FROM deployments WHERE id = '{ids[-1]}'",
         "DELETE FROM deployment_event_scopes WHERE event_id > 6", "DELETE FROM deployment_steps WHERE event_id > 6",
         f"DELETE FROM deployment_work_refs WHERE deployment_id = '{ids[-1]}'", "UPDATE sqlite_sequence SET seq = 6")
    failures = failed(db_path, [anchor])
    assert set(failures) == {f"the history contains the anchored head 8:{anchor.hash[:12]}…"}
    assert "the history ends at event 6, before event 8" in failures.popitem()[1][0]


def test_a_lost_wal_is_caught_by_the_anchor(tmp_path):
    path = tmp_path / "live.db"
    repository = Repository(path)
    populate(repository)
    copy = tmp_path / "main-file-only.db"
    shutil.copyfile(path, copy)  # the -wal, which holds every commit so far, is not copied
    anchor = head(path)
    repository.close()
    [problem] = failed(copy, [anchor]).popitem()[1]
    assert "before event 8" in problem


def test_a_stale_copy_is_caught_by_a_newer_anchor(tmp_path, repo, db_path):
    from deployapi.repository import backup_database

    populate(repo, 2)
    backup_database(db_path, tmp_path / "yesterday.db")
    populate(repo, 1)
    assert check_database(tmp_path / "yesterday.db").ok
    assert not check_database(tmp_path / "yesterday.db", [head(db_path)]).ok
    assert check_database(db_path, [head(db_path), Anchor(2, head_at(db_path, 2))]).ok


def head_at(path, event_id: int) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT hash FROM deployment_events WHERE id = ?", (event_id,)).fetchone()[0]


def test_an_anchor_is_id_colon_hash():
    assert Anchor.parse("12:" + "ab" * 32) == Anchor(12, "ab" * 32)
    for text in ("12", "x:" + "ab" * 32, "12:abc", "12:" + "g" * 64):
        with pytest.raises(ValueError):
            Anchor.parse(text)


# --- checking from a head recorded earlier (--from-head) ---------------------------------


def from_head_history(repo, db_path) -> tuple[list[str], Anchor]:
    """Four deployments (events 1-8), a head recorded at event 4, then the first deployment started (event 9).

    In scope from that head: the last two deployments (events 5-8) and the
    first (event 9, with its events 1 and 2); the second (events 3 and 4) is not.
    """
    ids = populate(repo)
    recorded = Anchor(4, head_at(db_path, 4))
    repo.apply_action(ids[0], ActionRequest("start", "alice", None))
    return ids, recorded


def from_head(path, recorded: Anchor, anchors=()) -> dict[str, tuple[str, ...]]:
    return {r.name: r.offenders for r in check_database(path, anchors, from_head=recorded).results if not r.ok}


def test_a_check_from_a_head_passes_an_untouched_history_and_says_what_it_left_out(db_path, repo):
    _, recorded = from_head_history(repo, db_path)
    report = check_database(db_path, from_head=recorded)
    assert report.ok, report.lines()
    assert report.results[0].name == f"the history contains the head it is checked from 4:{recorded.hash[:12]}…"
    names = [r.name for r in report.results]
    assert "SQLite integrity_check" not in names and "SQLite foreign_key_check" in names
    assert report.scope == ("checked from event 4: the 5 events after it, and the 3 deployments they belong to "
                            "with all their events; the rest of the history before it is not checked")
    assert f"scope   {report.scope}" in report.lines()


def test_an_event_rewritten_after_the_head_breaks_the_chain_from_it(db_path, repo):
    _, recorded = from_head_history(repo, db_path)
    edit(db_path, "UPDATE deployment_events SET actor = 'mallory' WHERE id = 6")
    assert from_head(db_path, recorded)[CHAIN][0].startswith("event 6 ")


def test_a_deployment_with_an_event_after_the_head_is_checked_with_all_its_events(db_path, repo):
    ids, recorded = from_head_history(repo, db_path)
    # Its approval (event 2) and its creation content are before the head; its start (event 9) is after.
    edit(db_path, "UPDATE deployment_events SET from_status = 'started' WHERE id = 2",
         f"UPDATE deployments SET version = '6.6.6', status = 'succeeded' WHERE id = '{ids[0]}'")
    failures = from_head(db_path, recorded)
    assert failures["every event is a legal transition from the one before"] == (ids[0],)
    assert failures["status and updated_at match the last event"] == (ids[0],)
    assert failures[CONTENT] == (ids[0],)
    assert CHAIN not in failures  # event 2 is before the head: its link is not recomputed


def test_a_read_table_row_missing_for_an_event_after_the_head_is_caught_from_it(db_path, repo):
    _, recorded = from_head_history(repo, db_path)
    edit(db_path, "DELETE FROM deployment_steps WHERE event_id = 9", "DELETE FROM deployment_event_scopes"
                  " WHERE event_id = 3")  # event 9 is after the head; event 3 is before, out of scope
    assert from_head(db_path, recorded)["the read tables derived from the events hold exactly their rows"] == (
        "deployment_steps: 1 rows missing",)


def test_what_lies_wholly_before_the_head_is_not_checked_from_it(db_path, repo):
    ids, recorded = from_head_history(repo, db_path)
    # The second deployment has no event after the head: out of scope, by design.
    edit(db_path, "UPDATE deployment_events SET actor = 'mallory' WHERE id = 3",
         f"UPDATE deployments SET version = '6.6.6', status = 'rejected' WHERE id = '{ids[1]}'")
    assert check_database(db_path, from_head=recorded).ok
    whole = failed(db_path)
    assert whole[CHAIN][0].startswith("event 3 ") and whole[CONTENT] == (ids[1],)


def test_a_head_whose_hash_is_not_the_one_recorded_fails_with_both_hashes(db_path, repo):
    from_head_history(repo, db_path)
    stored = head_at(db_path, 4)
    [problem] = from_head(db_path, Anchor(4, "ab" * 32))["the history contains the head it is checked from "
                                                          "4:abababababab…"]
    assert problem == (f"event 4 has the hash {stored}, not the recorded {'ab' * 32}: it, or the history before it, "
                       "was changed after the head was recorded")


def test_a_head_after_the_end_of_the_history_or_removed_from_it_fails(db_path, repo):
    _, recorded = from_head_history(repo, db_path)
    name = f"the history contains the head it is checked from 99:{recorded.hash[:12]}…"
    assert from_head(db_path, Anchor(99, recorded.hash))[name] == (
        "the history ends at event 9, before event 99: events were removed from the end (a truncated file, "
        "a lost -wal) or this is an older copy",)
    edit(db_path, "DELETE FROM deployment_events WHERE id = 4")
    failures = from_head(db_path, recorded)
    assert failures[f"the history contains the head it is checked from 4:{recorded.hash[:12]}…"] == (
        "event 4 is missing",)
    assert CHAIN not in failures  # event 5 still links to the hash recorded for event 4


def test_a_check_from_a_head_verifies_later_anchors_and_refuses_earlier_ones(db_path, repo):
    _, recorded = from_head_history(repo, db_path)
    latest = head(db_path)
    assert check_database(db_path, [latest, recorded], from_head=recorded).ok
    wrong = Anchor(latest.event_id, "cd" * 32)
    assert list(from_head(db_path, recorded, [wrong])) == [
        f"the history contains the anchored head 9:{'cd' * 6}…"]
    with pytest.raises(ValueError, match="before event 4, where the check starts"):
        check_database(db_path, [Anchor(2, head_at(db_path, 2))], from_head=recorded)


def vm_steps_of_check_from_head(monkeypatch, path, recorded: Anchor) -> int:
    """SQLite VM steps (in hundreds) that ``check_database(path, from_head=recorded)`` runs, all its queries."""
    from deployapi import integrity

    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    def counted(path):
        conn, note = connect(path)
        conn.set_progress_handler(count, 100)
        return conn, note

    connect = integrity.connect_read_only
    monkeypatch.setattr(integrity, "connect_read_only", counted)
    assert check_database(path, from_head=recorded).ok
    return steps


def a_history_then_a_head_then_three_rollouts(tmp_path, name: str, before: int) -> tuple[Path, Anchor]:
    """``before`` deployments through to success, the head after them, then three more through to success."""
    path = tmp_path / name
    repository = Repository(path, clock=StepClock())
    try:
        def roll_out(n):
            deployment = repository.create_deployment(new_deployment(version=f"1.{n}"))
            for action in ("approve", "start", "succeed"):
                repository.apply_action(deployment.id, ActionRequest(action, "bob", None))
        for n in range(before):
            roll_out(n)
        recorded = head(path)
        for n in range(before, before + 3):
            roll_out(n)
    finally:
        repository.close()
    return path, recorded


def test_the_work_of_a_check_from_a_head_does_not_grow_with_the_history_before_it(tmp_path, monkeypatch):
    # The same three rollouts after the head, behind 10 or 400 rollouts: each
    # query of a check from a head starts from what is in scope, so forty times
    # the history before it costs about the same number of SQLite VM steps.
    short = vm_steps_of_check_from_head(monkeypatch, *a_history_then_a_head_then_three_rollouts(tmp_path, "a.db", 10))
    long = vm_steps_of_check_from_head(monkeypatch, *a_history_then_a_head_then_three_rollouts(tmp_path, "b.db", 400))
    assert long < 1.2 * short, (short, long)


# --- upgrading a version-3 database -------------------------------------------------------


def test_a_version_3_database_is_rechained_and_its_old_anchors_still_verify(tmp_path):
    path = build_v3_database(tmp_path)
    old_anchor = head(path)
    assert check_database(path, [old_anchor]).ok  # a version-3 file verifies under its own encoding
    repository = Repository(path)
    try:
        [deployment] = [d for d in ("01v3deployment000000000001",)]
        repository.apply_action(deployment, ActionRequest("approve", "bob", None))
    finally:
        repository.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    new_anchor = head(path)
    report = check_database(path, [old_anchor, new_anchor])
    assert report.ok, report.lines()
    # The upgraded chain covers the content of deployments made before the upgrade too.
    edit(path, "UPDATE deployments SET version = '6.6.6' WHERE id = '01v3deployment000000000001'")
    assert failed(path)[CONTENT] == ("01v3deployment000000000001",)


def test_a_version_3_database_whose_chain_is_already_broken_is_not_upgraded_over_it(tmp_path):
    from deployapi.repository import DatabaseError

    path = build_v3_database(tmp_path)
    edit(path, "UPDATE deployment_events SET actor = 'mallory' WHERE id = 1")
    with sqlite3.connect(path) as conn:
        before = conn.execute("SELECT id, actor, hash FROM deployment_events ORDER BY id").fetchall()
    with pytest.raises(DatabaseError, match="does not fit its hash chain from event 1"):
        Repository(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert conn.execute("SELECT id, actor, hash FROM deployment_events ORDER BY id").fetchall() == before
    assert failed(path)[CHAIN][0].startswith("event 1 ")  # still there for check to show


def test_keys_stored_before_the_upgrade_keep_only_answers_that_changed_something(tmp_path):
    path = build_v3_database(tmp_path)
    Repository(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT caller, key, status FROM idempotency_keys").fetchall() == [("", "k-created", 201)]


def build_v3_database(tmp_path) -> Path:
    """A database made by the version-3 schema (a frozen copy in fixtures/): two deployments, legacy chain."""
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript((FIXTURES / "schema_v3.sql").read_text())
    previous = chain.GENESIS
    for n in (1, 2):
        deployment_id = f"01v3deployment00000000000{n}"
        created_at = f"2026-01-0{n}T00:00:00.000000Z"
        conn.execute("INSERT INTO deployments VALUES (?, 'billing', 'production', '1.0', 'alice', '[\"JIRA-1\"]',"
                     " 'low', 'redeploy', 'pending_approval', NULL, NULL, ?, ?)",
                     (deployment_id, created_at, created_at))
        event = Event(n, deployment_id, 1, "created", "alice", None, None, "pending_approval", created_at)
        previous = chain.legacy_event_hash(event, previous)
        conn.execute("INSERT INTO deployment_events VALUES (?, ?, 1, 'created', 'alice', NULL, NULL,"
                     " 'pending_approval', ?, ?)", (n, deployment_id, created_at, previous))
    conn.execute("INSERT INTO idempotency_keys VALUES ('k-created', 'f', 201, '{}', NULL, '2026-01-01T00:00:00Z')")
    conn.execute("INSERT INTO idempotency_keys VALUES ('k-refused', 'f', 409, '{}', NULL, '2026-01-01T00:00:00Z')")
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    return path


def rechain(path) -> None:
    """Recompute every hash, as someone who knows the encoding and wants the chain to look intact."""
    from deployapi.repository import EVENTS_WITH_CONTENT_SQL, event_with_content

    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    rows = conn.execute(f"{EVENTS_WITH_CONTENT_SQL} ORDER BY e.id").fetchall()
    conn.close()
    previous, updates = chain.GENESIS, []
    for row in rows:
        event, content = event_with_content(row)
        previous = chain.event_hash(event, previous, content)
        updates.append(f"UPDATE deployment_events SET hash = '{previous}' WHERE id = {event.id}")
    edit(path, *updates)


def test_operations_md_lists_every_check_by_its_name(db_path, repo):
    populate(repo, 1)
    text = (Path(__file__).parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text[text.index("## deployapi check"):text.index("## Schema upgrades")]
    documented = re.findall(r"^\| `([^`]+)` \|", section, re.MULTILINE)
    names = [r.name for r in check_database(db_path, [head(db_path)]).results]
    assert documented[:-1] == names[:-1]
    assert names[-1].startswith("the history contains the anchored head ") and documented[-1] == \
        "the history contains the anchored head ID:HASH…"
