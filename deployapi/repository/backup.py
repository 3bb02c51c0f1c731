"""Copies of a live database: SQLite's online backup into a new self-contained file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..filesystem import describe, directory_problem, why_not_creatable
from .read_only import connect_read_only


def backup_database(source: str | Path, destination: str | Path) -> None:
    """Copy a database, live or not, into a new self-contained file.

    SQLite's online backup API copies one consistent snapshot while writers
    carry on (WAL mode lets them).  The copy is written beside ``destination``
    and renamed into place only when complete.

    :raises FileNotFoundError: no database at ``source``.
    :raises FileExistsError: ``destination`` exists already (a backup never overwrites).
    :raises OSError: ``source`` cannot be read, or ``destination`` cannot be written (each naming the path and
        the reason).
    :raises sqlite3.DatabaseError: ``source`` is not an SQLite database, or SQLite cannot read it.
    """
    source, destination = Path(source), Path(destination)
    # Before the source is opened: a destination that cannot be written is known without reading anything.
    problem = directory_problem(destination.parent)
    if problem:
        raise OSError(f"cannot write {str(destination)!r}: {problem}")
    if destination.exists() or destination.is_symlink():
        raise FileExistsError(f"{str(destination)!r} exists already; choose a new file name")
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    reader, _ = connect_read_only(source)
    try:
        try:
            writer = sqlite3.connect(partial)
            try:
                reader.backup(writer)
                # One file that restores by copying: no -wal or -shm beside it.
                writer.execute("PRAGMA journal_mode = DELETE")
            finally:
                writer.close()
            partial.replace(destination)
        except (OSError, sqlite3.OperationalError) as error:
            if isinstance(error, sqlite3.Error) and error.sqlite_errorcode & 0xFF not in _WRITE_ERRORS:
                raise  # a failure to read the source, which SQLite's message describes
            # SQLite says only "unable to open database file" for a directory that takes no new file.
            reason = (not partial.exists() and why_not_creatable(partial)) or (
                describe(error) if isinstance(error, OSError) else str(error))
            raise OSError(f"cannot write {str(destination)!r}: {reason}") from error
    finally:
        reader.close()
        partial.unlink(missing_ok=True)  # only left when the copy failed


# What SQLite reports when the copy cannot be written (rather than the source read).
_WRITE_ERRORS = frozenset({sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY,
                           sqlite3.SQLITE_PERM})
