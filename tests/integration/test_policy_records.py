"""Review policies in the repository: what is stored and sealed, the upgrade to version 7, check, and the start race."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
from builders import new_deployment
from test_integrity import edit, head
from test_operations import populate
from test_schema_rebuild import assert_upgraded_like_a_fresh_database, copy_at_version

from deployapi.integrity import check_database
from deployapi.lifecycle import ActionRequest, EnvironmentBusy
from deployapi.policy import EnvironmentPolicy, Policy
from deployapi.repository import SCHEMA_VERSION, Repository

SCHEMA_V6 = (Path(__file__).parent / "fixtures" / "schema_v6.sql").read_text(encoding="utf-8")

POLICY = Policy(environments={
    "production": EnvironmentPolicy(production=True, required_approvals=2, exclusive=True),
    "dev": EnvironmentPolicy(required_approvals=0),
})


def failed_checks(path) -> dict[str, tuple[str, ...]]:
    return {r.name: r.offenders for r in check_database(path).results if not r.ok}


def test_what_a_policy_decided_is_stored_and_passes_check(db_path, repo):
    deployment = repo.create_deployment(new_deployment(environment="production", risk="low"), POLICY)
    repo.apply_action(deployment.id, ActionRequest("approve", "bob", "one"), POLICY)
    repo.apply_action(deployment.id, ActionRequest("approve", "carol", None), POLICY)
    repo.apply_action(deployment.id, ActionRequest("start", "carol", None), POLICY)
    dev = repo.create_deployment(new_deployment(environment="dev"), POLICY)
    stored = repo.get_deployment(deployment.id)
    assert (stored.status, stored.required_approvals, stored.policy_digest) == ("started", 2, POLICY.digest)
    assert [(a.actor, a.note) for a in stored.approvals] == [("bob", "one"), ("carol", None)]
    assert repo.get_deployment(dev.id).status == "approved"
    assert {e.policy_digest for e in repo.list_events(deployment.id)} == {POLICY.digest}
    assert check_database(db_path).ok, check_database(db_path).lines()


def test_the_policy_a_deployment_was_created_under_cannot_be_changed_or_dropped_unnoticed(db_path, repo):
    deployment = repo.create_deployment(new_deployment(environment="production", risk="low"), POLICY)
    repo.close()
    conn = sqlite3.connect(db_path)
    for column, value in (("required_approvals", "1"), ("policy_digest", "NULL")):
        with pytest.raises(sqlite3.IntegrityError, match="fixed at creation"):
            conn.execute(f"UPDATE deployments SET {column} = {value} WHERE id = ?", (deployment.id,))
    conn.close()
    # With the trigger dropped, the created event's seal gives it away.
    edit(db_path, f"UPDATE deployments SET required_approvals = 1 WHERE id = '{deployment.id}'")
    failed = failed_checks(db_path)
    assert deployment.id in failed["each created event's hash seals its deployment's creation content"]


def test_an_event_stripped_of_its_policy_digest_breaks_the_chain(db_path, repo):
    deployment = repo.create_deployment(new_deployment(), POLICY)
    repo.apply_action(deployment.id, ActionRequest("approve", "bob", None), POLICY)
    repo.close()
    edit(db_path, "UPDATE deployment_events SET policy_digest = NULL, details = NULL WHERE sequence = 2")
    assert "hash chain links every event to the one before" in failed_checks(db_path)


@pytest.mark.parametrize("forgery, check", [
    pytest.param("UPDATE deployment_events SET to_status = 'approved' WHERE sequence = 2",
                 "approved events move the status at the last approval needed",
                 id="a first approval of two that approved"),
    pytest.param("UPDATE deployment_events SET to_status = 'approved' WHERE sequence = 1",
                 "every deployment has its created event", id="created approved without a 0-approval policy"),
    pytest.param("UPDATE deployments SET approvals = '[]'", "approvals list the approved events",
                 id="approvals wiped"),
    pytest.param("UPDATE deployments SET reviewed_by = 'bob'", "reviewed_by and reviewed_at match the review event",
                 id="a partial approval taken for the review"),
])
def test_check_judges_each_history_by_the_approvals_its_deployment_recorded(db_path, repo, forgery, check):
    deployment = repo.create_deployment(new_deployment(environment="production", risk="low"), POLICY)
    repo.apply_action(deployment.id, ActionRequest("approve", "bob", None), POLICY)
    repo.close()
    assert check_database(db_path).ok
    edit(db_path, forgery)
    assert deployment.id in failed_checks(db_path).get(check, ())


def test_of_concurrent_starts_on_an_exclusive_environment_exactly_one_wins(db_path, repo):
    ids = []
    for _ in range(8):
        deployment = repo.create_deployment(new_deployment(environment="production", risk="low"), POLICY)
        for approver in ("bob", "carol"):
            repo.apply_action(deployment.id, ActionRequest("approve", approver, None), POLICY)
        ids.append(deployment.id)
    barrier = threading.Barrier(len(ids))
    outcomes: dict[str, object] = {}

    def start(deployment_id: str) -> None:
        barrier.wait()
        try:
            outcomes[deployment_id] = repo.apply_action(deployment_id, ActionRequest("start", "ci", None), POLICY)
        except EnvironmentBusy as busy:
            outcomes[deployment_id] = busy

    threads = [threading.Thread(target=start, args=(deployment_id,)) for deployment_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [d for d, outcome in outcomes.items() if not isinstance(outcome, EnvironmentBusy)]
    assert len(winners) == 1
    assert {outcome.blocking_deployment_id for outcome in outcomes.values()
            if isinstance(outcome, EnvironmentBusy)} == set(winners)
    assert check_database(db_path).ok


# --- version 6 to 7 ------------------------------------------------------------------


def version_6_database(tmp_path: Path) -> Path:
    """A version-6 file with a history in every state, sealed as version 6 sealed it."""
    source = tmp_path / "source.db"
    repo = Repository(source)
    populate(repo)
    repo.close()
    return copy_at_version(source, tmp_path / "v6.db", SCHEMA_V6, 6, ("deployments", "deployment_events", "settings"))



def test_a_version_6_database_is_upgraded_keeping_its_history_with_its_approvals_listed(tmp_path):
    path = version_6_database(tmp_path)
    old_head = head(path)
    assert check_database(path).ok
    repo = Repository(path)
    try:
        with repo._read() as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            rows = conn.execute("SELECT status, required_approvals, approvals, policy_digest FROM deployments"
                                " ORDER BY rowid").fetchall()
        # Every deployment keeps the v1 rule (one approval) and no policy; those approved list bob's approval.
        assert {(r[1], r[3]) for r in rows} == {(1, None)}
        approved = [json.loads(r[2]) for r in rows
                    if r[0] in ("approved", "started", "succeeded", "failed", "rolled_back")]
        assert approved and all([a["actor"] for a in approvals] == ["bob"] for approvals in approved)
        assert all(r[2] == "[]" for r in rows if r[0] == "pending_approval")
        # An old pending deployment is judged by what it recorded: one approval.
        [pending_id] = [d.id for d in (repo.get_deployment(i) for i in _ids(repo)) if d.status == "pending_approval"]
        assert repo.apply_action(pending_id, ActionRequest("approve", "carol", None), POLICY).status == "approved"
    finally:
        repo.close()
    report = check_database(path, [old_head])
    assert report.ok, report.lines()
    assert_upgraded_like_a_fresh_database(path, tmp_path)


def _ids(repo: Repository) -> list[str]:
    with repo._read() as conn:
        return [row[0] for row in conn.execute("SELECT id FROM deployments ORDER BY rowid")]
