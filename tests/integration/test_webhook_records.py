"""The webhook tables in the database file: the upgrade from schema version 8, which adds them."""

from __future__ import annotations

from pathlib import Path

from builders import new_deployment
from test_integrity import head
from test_operations import populate
from test_pipeline_records import POLICY, started, with_metadata
from test_schema_rebuild import assert_upgraded_like_a_fresh_database, copy_at_version, rows

from deployapi.integrity import check_database
from deployapi.lifecycle import ActionRequest
from deployapi.repository import SCHEMA_VERSION, Deliveries, Repository, StoredResponse
from deployapi.webhooks import Webhook

SCHEMA_V8 = (Path(__file__).parent / "fixtures" / "schema_v8.sql").read_text(encoding="utf-8")
WEBHOOK_TABLES = {"webhook_positions", "webhook_deliverer"}
NOW = "2026-12-02T12:00:00.000000Z"


def version_8_database(tmp_path: Path) -> Path:
    """A version-8 file with a history in every state, pipeline metadata, a rollback to a version,
    a deployment under a policy and an idempotency key.  Version 8 seals as today's code does."""
    source = tmp_path / "source.db"
    repo = Repository(source)
    populate(repo)
    repo.create_deployment(with_metadata(version="8.0"))
    rolled_back = started(repo, version="8.1")
    repo.apply_action(rolled_back.id, ActionRequest("rollback", "bob", "errors up", to_version="8.0"))
    partial = repo.create_deployment(new_deployment(environment="production", risk="low"), POLICY)
    repo.apply_action(partial.id, ActionRequest("approve", "bob", None), POLICY)
    with repo.transaction() as tx:
        tx.store_response("alice", "key-1", StoredResponse("f" * 64, 201, "{}", "/deployments/x"))
    repo.close()
    return copy_at_version(source, tmp_path / "v8.db", SCHEMA_V8, 8,
                           ("deployments", "deployment_events", "idempotency_keys", "settings"), reseal=False)


def test_a_version_8_database_is_upgraded_keeping_every_row_and_gains_the_two_webhook_tables_empty(tmp_path):
    path = version_8_database(tmp_path)
    before = rows(path)
    assert before.pop("user_version") == 8
    assert not WEBHOOK_TABLES & set(before)
    assert before["deployment_labels"] and before["deployment_work_refs"]  # the copy derived version 8's rows
    report = check_database(path)
    assert report.ok, report.lines()
    old_head = head(path)

    Repository(path).close()

    after = rows(path)
    assert after.pop("user_version") == SCHEMA_VERSION == 9
    # Version 9 changes no table of version 8's: every row is as it was, column for column.
    assert {table: after[table] for table in before} == before
    assert set(after) - set(before) == WEBHOOK_TABLES
    assert after["webhook_positions"] == after["webhook_deliverer"] == []
    report = check_database(path, [old_head])
    assert report.ok, report.lines()
    assert_upgraded_like_a_fresh_database(path, tmp_path)


def test_a_webhook_configured_on_an_upgraded_database_starts_after_its_old_history(tmp_path):
    path = version_8_database(tmp_path)
    old_head = head(path)
    repo = Repository(path)
    try:
        hooks = [Webhook("audit", "https://hooks.example/deployapi")]
        deliveries = Deliveries(repo)
        deliveries.register(["audit"], NOW)
        assert deliveries.position("audit").delivered_through == old_head.event_id
        repo.create_deployment(new_deployment())
        [status] = deliveries.statuses(hooks)
        assert (status.position.delivered_through, status.pending) == (old_head.event_id, 1)
    finally:
        repo.close()
    report = check_database(path, [old_head])
    assert report.ok, report.lines()
