"""Read-only connections (``check``, ``backup``, ``serve --read-only``), to copies in read-only directories too.

SQLite's read-only mode (``mode=ro``) still locks and still keeps the WAL
index in the ``-shm`` beside the file, like any reader, so it must be able to
create a ``-shm`` (and a ``-wal``) that is not there.  In a directory the
reader may not write (a copy on read-only media, another user's directory, a
directory made immutable), SQLite refuses with "unable to open database file"
(https://www.sqlite.org/wal.html, "Read-Only Databases").  Then, and only when
no ``-shm`` exists (none exists while no process has the database open: every
process that opens a WAL database creates one), the file is read without
locks, as a copy that nothing writes to:

- with a ``-wal`` beside it (a copy taken with ``cp`` of the file and its
  ``-wal``), through SQLite's ``unix-none`` VFS in EXCLUSIVE locking mode, in
  which SQLite keeps the WAL index in the reader's own memory instead of the
  ``-shm`` (wal.html, "Use of WAL Without Shared-Memory"): the transactions the
  ``-wal`` holds are read;
- without one, as ``immutable=1``: the main file is the whole database.
  (``immutable`` ignores a ``-wal``, which is why it is not used when there is one.)
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..filesystem import why_unreadable


def connect_read_only(path: str | os.PathLike) -> tuple[sqlite3.Connection, str | None]:
    """A read-only connection (``isolation_level=None``) to the database at ``path``, and a note for the reader
    when it takes no locks (None otherwise).

    Errors raised here say "cannot read PATH: REASON".

    :raises FileNotFoundError: no file at ``path``.
    :raises OSError: the file, or the ``-shm`` beside it, cannot be read.
    :raises sqlite3.DatabaseError: the file is not an SQLite database, or SQLite cannot read it otherwise.
    """
    path = Path(path)
    problem = why_unreadable(path)
    if problem:
        raise (OSError if path.exists() else FileNotFoundError)(f"cannot read {str(path)!r}: {problem}")
    uri = path.resolve().as_uri()
    try:
        return _connect(f"{uri}?mode=ro"), None
    except sqlite3.OperationalError as error:
        if (error.sqlite_errorcode & 0xFF) != sqlite3.SQLITE_CANTOPEN:
            raise
        failure = error
    shm, wal = (path.with_name(path.name + suffix) for suffix in ("-shm", "-wal"))
    if shm.exists():
        # A -shm there means the database may be open elsewhere: reading without locks could see a write half done.
        reason = why_unreadable(shm)
        shown = f"{reason}: cannot read {str(shm)!r}" if reason else str(failure)
        raise OSError(f"cannot read {str(path)!r}: {shown}")
    if os.access(path.parent, os.W_OK | os.X_OK):
        raise failure  # the directory would take a -shm: something else is wrong, and SQLite said what
    note = (f"read without locks, as a copy nothing writes to: {str(path.parent)!r} refuses the {shm.name} "
            "that SQLite's locking needs")
    if wal.exists() and wal.stat().st_size > 0:
        return _connect(f"{uri}?mode=ro&vfs=unix-none", exclusive=True), note
    return _connect(f"{uri}?mode=ro&immutable=1"), note


def _connect(uri: str, *, exclusive: bool = False) -> sqlite3.Connection:
    # check_same_thread=False: a read-only server (Database) keeps one per thread and may close it from
    # another (a finaliser, close()); nothing here shares one between threads at once.
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        if exclusive:
            # Before the first read: from then on SQLite never asks for shared memory.
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        # sqlite3.connect opens lazily: the first read is what meets a -shm that cannot be made.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn
