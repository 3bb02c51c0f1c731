"""Copies of a live database: SQLite's online backup into a new self-contained file."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def backup_database(source: str | Path, destination: str | Path) -> None:
    """Copy a database, live or not, into a new self-contained file.

    SQLite's online backup API copies one consistent snapshot while writers
    carry on (WAL mode lets them).  The copy is written beside ``destination``
    and renamed into place only when complete.

    :raises FileNotFoundError: no database at ``source``.
    :raises FileExistsError: ``destination`` exists already (a backup never overwrites).
    """
    source, destination = Path(source), Path(destination)
    if not source.is_file():
        raise FileNotFoundError(f"no database file at {str(source)!r}")
    if destination.exists():
        raise FileExistsError(f"{str(destination)!r} exists already; choose a new file name")
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        writer = sqlite3.connect(partial)
        try:
            reader.backup(writer)
            # One file that restores by copying: no -wal or -shm beside it.
            writer.execute("PRAGMA journal_mode = DELETE")
        finally:
            writer.close()
        partial.replace(destination)
    finally:
        reader.close()
        partial.unlink(missing_ok=True)  # only left when the copy failed
