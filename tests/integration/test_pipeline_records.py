"""Pipeline metadata in the repository: what is stored and derived for the listing, what check guards,
and the upgrade from schema version 7."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from builders import new_deployment
from test_integrity import CONTENT, edit, head
from test_operations import populate
from test_schema_rebuild import assert_upgraded_like_a_fresh_database, copy_at_version, rows

from deployapi.integrity import Anchor, check_database
from deployapi.lifecycle import ActionRequest, Link
from deployapi.listing import ListQuery
from deployapi.policy import EnvironmentPolicy, Policy
from deployapi.repository import SCHEMA_VERSION, Repository, StoredResponse
from deployapi.repository.pages import UPDATED_RANGE_PROBE, updated_range_probe_sql

SCHEMA_V7 = (Path(__file__).parent / "fixtures" / "schema_v7.sql").read_text(encoding="utf-8")
DERIVED = "the read tables derived from the events hold exactly their rows"
SHA = "3f9c2e1d4b5a69788796a5b4c3d2e1f0a9b8c7d6"

POLICY = Policy(environments={"production": EnvironmentPolicy(production=True, required_approvals=2)})


def failed_checks(path, anchors=()) -> dict[str, tuple[str, ...]]:
    return {r.name: r.offenders for r in check_database(path, anchors).results if not r.ok}


def listed(repo: Repository, **filters) -> list[str]:
    """The ids of a listing's first page (at most 200), newest first."""
    return [json.loads(item)["id"] for item in repo.list_deployments(ListQuery(**filters, limit=200)).documents]


def with_metadata(**overrides):
    return new_deployment(**{
        "work_refs": ("JIRA-1", "PR-2"), "commit_sha": SHA, "repository": "acme/billing", "ref": "main",
        "committed_at": "2026-11-26T09:00:00.000000Z",
        "links": (Link("ci", "https://ci.example/1"), Link("pr", "https://git.example/pr/2")),
        "labels": {"team": "payments", "tier": "1"}, **overrides})


# --- stored, derived, guarded ---------------------------------------------------------------


def test_the_pipeline_metadata_is_stored_as_created_and_its_listing_rows_are_derived(db_path, repo):
    deployment = repo.create_deployment(with_metadata())
    assert repo.get_deployment(deployment.id) == deployment
    with repo._read() as conn:
        work_refs = {tuple(row) for row in conn.execute("SELECT * FROM deployment_work_refs")}
        labels = {tuple(row) for row in conn.execute("SELECT * FROM deployment_labels")}
    key = (deployment.created_at, deployment.id)
    assert work_refs == {("JIRA-1", *key), ("PR-2", *key)}
    assert labels == {("team=payments", *key), ("tier=1", *key)}
    assert check_database(db_path).ok, check_database(db_path).lines()


@pytest.mark.parametrize("column, value", [
    ("commit_sha", "'0000000'"), ("repository", "'evil/billing'"), ("ref", "'other'"),
    ("committed_at", "'2026-11-26T09:00:00.000001Z'"), ("links", "'[]'"), ("labels", "'{\"team\":\"search\"}'"),
])
def test_the_pipeline_metadata_is_fixed_at_creation(db_path, repo, column, value):
    deployment = repo.create_deployment(with_metadata())
    repo.close()
    conn = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="fixed at creation"):
            conn.execute(f"UPDATE deployments SET {column} = {value} WHERE id = ?", (deployment.id,))
    finally:
        conn.close()


@pytest.mark.parametrize("column, value", [
    ("commit_sha", "'0000000'"), ("commit_sha", "NULL"), ("repository", "'evil/billing'"), ("ref", "'other'"),
    ("committed_at", "'2026-11-26T08:00:00.000000Z'"),
    ("links", """'[{"rel":"ci","url":"https://evil.example/1"},{"rel":"pr","url":"https://git.example/pr/2"}]'"""),
    ("links", """'[{"rel":"pr","url":"https://git.example/pr/2"},{"rel":"ci","url":"https://ci.example/1"}]'"""),
    ("labels", """'{"team":"payments","tier":"2"}'"""), ("labels", "'{}'"),
])
def test_pipeline_metadata_rewritten_behind_the_apis_back_breaks_the_seal_of_its_deployment(
        db_path, repo, column, value):
    other = repo.create_deployment(with_metadata())
    deployment = repo.create_deployment(with_metadata())
    repo.close()
    edit(db_path, f"UPDATE deployments SET {column} = {value} WHERE id = '{deployment.id}'")
    failed = failed_checks(db_path)
    assert failed[CONTENT] == (deployment.id,)
    assert other.id not in failed[CONTENT]


def test_labels_rewritten_behind_the_apis_back_leave_the_listing_copy_wrong_and_check_says_so(db_path, repo):
    deployment = repo.create_deployment(with_metadata())
    repo.close()
    edit(db_path, f"""UPDATE deployments SET labels = '{{"team":"search"}}' WHERE id = '{deployment.id}'""")
    assert set(failed_checks(db_path)[DERIVED]) == {"deployment_labels: 1 rows missing",
                                                     "deployment_labels: 2 rows extra"}


@pytest.mark.parametrize("statement, offender", [
    ("DELETE FROM deployment_work_refs WHERE work_ref = 'PR-2'", "deployment_work_refs: 1 rows missing"),
    ("INSERT INTO deployment_work_refs SELECT 'JIRA-9', deployment_created_at, deployment_id"
     " FROM deployment_work_refs LIMIT 1", "deployment_work_refs: 1 rows extra"),
    ("DELETE FROM deployment_labels WHERE label = 'tier=1'", "deployment_labels: 1 rows missing"),
    ("UPDATE deployment_labels SET label = 'tier=2' WHERE label = 'tier=1'", "deployment_labels: 1 rows missing"),
])
def test_a_listing_row_removed_added_or_changed_fails_the_check(db_path, repo, statement, offender):
    repo.create_deployment(with_metadata())
    repo.close()
    edit(db_path, statement)
    assert offender in failed_checks(db_path)[DERIVED]


def started(repo: Repository, **overrides):
    deployment = repo.create_deployment(new_deployment(**overrides))
    repo.apply_action(deployment.id, ActionRequest("approve", "bob", None))
    return repo.apply_action(deployment.id, ActionRequest("start", "bob", None))


def test_a_rollback_to_a_version_is_stored_and_its_event_sealed(db_path, repo):
    deployment = started(repo)
    repo.apply_action(deployment.id, ActionRequest("rollback", "bob", "errors up", to_version="1.4.1"))
    assert repo.get_deployment(deployment.id).rolled_back_to == "1.4.1"
    assert repo.list_events(deployment.id)[-1].details == {"to_version": "1.4.1"}
    assert check_database(db_path).ok
    repo.close()
    edit(db_path, """UPDATE deployment_events SET details = '{"to_version":"0.0.1"}' WHERE sequence = 4""")
    assert "hash chain links every event to the one before" in failed_checks(db_path)


def test_a_rolled_back_to_rewritten_behind_the_apis_back_fails_the_check(db_path, repo):
    deployment = started(repo)
    repo.apply_action(deployment.id, ActionRequest("rollback", "bob", "errors up", to_version="1.4.1"))
    repo.close()
    # The API now shows a version the rollback never named; the event that did name one is intact.
    assert check_database(db_path).ok
    edit(db_path, f"UPDATE deployments SET rolled_back_to = '0.0.1' WHERE id = '{deployment.id}'")
    assert deployment.id in failed_checks(db_path)["rolled_back_to matches the rollback event"]


def test_the_listing_filters_read_the_derived_rows_in_listing_order(repo):
    ids = [repo.create_deployment(with_metadata(labels={"team": ("payments", "search")[n % 2]},
                                                work_refs=(f"JIRA-{n % 3}",))).id for n in range(9)]
    assert listed(repo, label=("team=payments",)) == ids[::-2]
    assert listed(repo, work_ref="JIRA-1") == [ids[7], ids[4], ids[1]]
    assert listed(repo, work_ref="JIRA-1", label=("team=search",)) == [ids[7], ids[1]]
    assert listed(repo, commit_sha=SHA[:7]) == ids[::-1]


def walked(repo: Repository, **filters) -> list[str]:
    """Every id of a listing, 50 a page, following each page's position."""
    ids, after = [], None
    while True:
        page = repo.list_deployments(ListQuery(**filters, limit=50, after=after))
        ids += [json.loads(item)["id"] for item in page.documents]
        if page.next_position is None:
            return ids
        after = page.next_position


def test_a_broad_and_a_narrow_updated_range_list_exactly_the_deployments_updated_in_it(repo):
    # With UPDATED_RANGE_PROBE deployments or more in the updated range, the listing reads in
    # listing order and filters; with fewer, it reads the range from deployments_by_updated
    # (repository/pages.py).  Either way it lists what each deployment's updated_at says.
    with repo.transaction() as tx:
        made = [tx.create_deployment(new_deployment(version=f"1.{n % 4}")) for n in range(UPDATED_RANGE_PROBE + 300)]
    with repo.transaction() as tx:
        for n in range(0, len(made), 7):
            made[n] = tx.apply_action(made[n].id, ActionRequest("approve", "bob", None))
    newest_first = sorted(made, key=lambda d: (d.created_at, d.id), reverse=True)
    first_update = min(d.updated_at for d in made if d.status == "approved")
    middle = sorted(d.updated_at for d in made)[len(made) // 2]
    cases = [
        ({"updated_after": made[0].created_at}, lambda d: True, True),
        ({"updated_before": first_update}, lambda d: d.updated_at < first_update, True),
        ({"updated_after": middle, "updated_before": first_update},
         lambda d: middle <= d.updated_at < first_update, False),
        ({"updated_after": first_update}, lambda d: d.updated_at >= first_update, False),
        ({"updated_after": first_update, "status": "approved"}, lambda d: d.status == "approved", False),
        ({"updated_before": first_update, "version": "1.1"},
         lambda d: d.updated_at < first_update and d.version == "1.1", None),  # version drives: no probe
    ]
    with repo._read() as conn:
        for filters, _, broad in cases:
            probe = updated_range_probe_sql(ListQuery(**filters))
            if broad is None:
                assert probe is None
            else:
                assert (conn.execute(*probe).fetchone()[0] == UPDATED_RANGE_PROBE) is broad, filters
    for filters, matches, _ in cases:
        assert walked(repo, **filters) == [d.id for d in newest_first if matches(d)], filters


# --- version 7 to 8 -------------------------------------------------------------------


def version_7_database(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A version-7 file with a history in every state, deployments under a policy and an idempotency key.

    Returns the file and the ids of three deployments: ``refs`` (two work references of its
    own), ``started`` and ``partial`` (one approval of the two its policy asks).  Version 7
    seals a deployment without pipeline metadata as today's code does, so the copy keeps
    the seals the source has.
    """
    source = tmp_path / "source.db"
    repo = Repository(source)
    populate(repo)
    refs = repo.create_deployment(new_deployment(work_refs=("JIRA-7", "https://git.example/pr/70"), version="7.0"))
    started_ = started(repo, version="7.1")
    partial = repo.create_deployment(new_deployment(environment="production", risk="low"), POLICY)
    repo.apply_action(partial.id, ActionRequest("approve", "bob", None), POLICY)
    with repo.transaction() as tx:
        tx.store_response("alice", "key-1", StoredResponse("f" * 64, 201, "{}", "/deployments/x"))
    repo.close()
    path = copy_at_version(source, tmp_path / "v7.db", SCHEMA_V7, 7,
                           ("deployments", "deployment_events", "idempotency_keys", "settings"), reseal=False)
    return path, {"refs": refs.id, "started": started_.id, "partial": partial.id}



def test_a_version_7_database_is_upgraded_keeping_every_row_and_its_deployments_are_found_by_the_new_filters(
        tmp_path):
    path, ids = version_7_database(tmp_path)
    with sqlite3.connect(path) as conn:
        old = conn.execute("SELECT id, created_at, work_refs FROM deployments ORDER BY created_at DESC, id DESC"
                           ).fetchall()
    before = rows(path)
    assert before.pop("user_version") == 7
    assert check_database(path).ok, check_database(path).lines()
    old_head = head(path)

    repo = Repository(path)
    try:
        after = rows(path)
        assert after.pop("user_version") == SCHEMA_VERSION
        # Version 8 adds columns at the end of deployments and two tables; every row of version 7's is kept.
        width = {table: len(table_rows[0]) for table, table_rows in before.items() if table_rows}
        assert {table: [row[:width.get(table, len(row))] for row in table_rows]
                for table, table_rows in after.items() if table in before} == before
        # The listing's tables hold the work references of every deployment so far, and no labels.
        assert set(after["deployment_work_refs"]) == {
            (ref, created_at, deployment_id) for deployment_id, created_at, refs in old for ref in json.loads(refs)}
        assert after["deployment_labels"] == []
        everyone = [deployment_id for deployment_id, _, _ in old]
        assert listed(repo, work_ref="JIRA-7") == listed(repo, work_ref="https://git.example/pr/70") == [ids["refs"]]
        assert listed(repo, work_ref="JIRA-123") == [i for i in everyone if i != ids["refs"]]
        assert listed(repo, version="7.0") == [ids["refs"]]
        assert listed(repo, updated_after="2000-01-01T00:00:00.000000Z") == everyone
        # An old deployment shows that it has no pipeline metadata.
        document = json.loads(repo.deployment_document(ids["refs"]))
        assert {field: document[field] for field in ("commit_sha", "repository", "ref", "committed_at", "links",
                                                     "labels", "rolled_back_to")} == {
            "commit_sha": None, "repository": None, "ref": None, "committed_at": None, "links": [], "labels": {},
            "rolled_back_to": None}
        # Old deployments go on: a rollback that names its version, the second approval a policy asked for.
        repo.apply_action(ids["started"], ActionRequest("rollback", "carol", "errors up", to_version="7.0"))
        assert repo.get_deployment(ids["started"]).rolled_back_to == "7.0"
        assert repo.apply_action(ids["partial"], ActionRequest("approve", "carol", None), POLICY).status == "approved"
        new = repo.create_deployment(with_metadata(version="8.0"))
        assert listed(repo, label=("team=payments",)) == listed(repo, commit_sha=SHA[:7]) == [new.id]
        assert listed(repo, work_ref="JIRA-1") == [new.id]
    finally:
        repo.close()

    report = check_database(path, [old_head])
    assert report.ok, report.lines()
    assert_upgraded_like_a_fresh_database(path, tmp_path)


def test_an_upgraded_version_7_database_passes_check_with_every_head_anchored_before(tmp_path):
    path, _ = version_7_database(tmp_path)
    with sqlite3.connect(path) as conn:
        anchors = [Anchor(*row) for row in conn.execute("SELECT id, hash FROM deployment_events ORDER BY id")]
    Repository(path).close()
    report = check_database(path, anchors)
    assert report.ok, report.lines()
