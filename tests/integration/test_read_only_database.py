"""A Repository opened read-only: what it refuses itself, behind the app's refusal, and which copies it reads."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading

import pytest
from builders import new_deployment

from deployapi.lifecycle import ActionRequest
from deployapi.repository import DatabaseReadOnly, Deliveries, Repository


@pytest.fixture
def written(tmp_path):
    """A database a writable Repository left: two deployments, one approved."""
    path = tmp_path / "data" / "copy.db"
    path.parent.mkdir()
    repo = Repository(path)
    first = repo.create_deployment(new_deployment())
    repo.apply_action(first.id, ActionRequest("approve", "bob", None))
    repo.create_deployment(new_deployment(version="2.0"))
    repo.close()
    return path


def test_every_write_of_the_repository_raises_read_only_and_the_file_keeps_its_bytes(written):
    before = written.read_bytes()
    repo = Repository(written, read_only=True)
    try:
        pending = repo.list_events_after(0, 10)[-1].deployment_id  # the second deployment's created event
        writes = [
            lambda: repo.create_deployment(new_deployment(version="3.0")),
            lambda: repo.apply_action(pending, ActionRequest("approve", "bob", None)),
            lambda: Deliveries(repo).register(["hook"], "2026-12-02T00:00:00.000000Z"),
            lambda: repo.transaction().__enter__(),
        ]
        for write in writes:
            with pytest.raises(DatabaseReadOnly):
                write()
        repo.ping()
        repo.checkpoint()
    finally:
        repo.close()
    assert written.read_bytes() == before


def test_a_statement_that_writes_is_refused_by_sqlite_itself_on_a_read_only_connection(written):
    repo = Repository(written, read_only=True)
    try:
        with repo._read() as conn, pytest.raises(sqlite3.OperationalError, match="readonly|read-only"):
            conn.execute("INSERT INTO settings (name, value) VALUES ('x', 'y')")
        with repo._read() as conn, pytest.raises(sqlite3.OperationalError):
            conn.execute("PRAGMA user_version = 1")
        assert repo.setting("x") is None
    finally:
        repo.close()


def test_threads_read_through_connections_of_their_own(written):
    repo = Repository(written, read_only=True)
    seen = []
    try:
        threads = [threading.Thread(target=lambda: seen.append(repo.event_head().id)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        repo.close()  # closes the other threads' connections from this one
    assert seen == [3, 3, 3, 3]


def test_a_copy_with_its_wal_in_a_directory_that_refuses_new_files_is_read_with_the_wal_s_commits(
        tmp_path, written, read_only_directory, caplog):
    # A live database whose last commits are still only in its -wal, copied with cp into a read-only directory:
    # SQLite cannot create the -shm it locks with there, so the copy is read as read_only.py describes.
    live = Repository(written)
    try:
        live.create_deployment(new_deployment(version="4.0"))
        copy = tmp_path / "ro"
        copy.mkdir()
        for suffix in ("", "-wal"):
            shutil.copy(f"{written}{suffix}", copy / f"copy.db{suffix}")
    finally:
        live.close()
    read_only_directory(copy)
    with caplog.at_level(logging.INFO, logger="deployapi"):
        repo = Repository(copy / "copy.db", read_only=True)
    assert "read without locks, as a copy nothing writes to" in caplog.text
    try:
        assert repo.event_head().id == 4
        repo.ping()
    finally:
        repo.close()
    assert sorted(p.name for p in copy.iterdir()) == ["copy.db", "copy.db-wal"]
