"""Why a file cannot be read, written or created, in words that name the part of the path at fault.

SQLite answers "unable to open database file" whatever went wrong (a missing
directory, a path through a regular file, a directory that refuses new files,
a read-only file system), and Python's ``sqlite3`` does not pass on the errno
behind it.  These functions look again and give the reason, for messages of
the form "cannot open database PATH: REASON".  A reason names a path only when
it is not the file itself ("the directory '/srv/x' does not exist").

They change nothing, but for one last resort: when a directory looks writable
and a file could not be created in it all the same, creating a file there (of
a name of its own, removed at once) is the only way to learn why.  So call
:func:`why_unwritable` and :func:`why_not_creatable` after an attempt failed,
not instead of one.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

# What SQLite creates beside a database in WAL mode, in the same directory.
SIDECARS = ("-wal", "-shm")


def describe(error: OSError) -> str:
    """An OSError as "reason: 'path'", without the "[Errno N]" prefix."""
    reason = (error.strerror or str(error)).lower()
    return f"{reason}: {error.filename!r}" if error.filename else reason


def _place_problem(file: Path) -> str | None:
    """What is wrong with where ``file`` is, before the file itself: its directory, or a directory in its place."""
    return directory_problem(file.parent) or ("it is a directory" if file.is_dir() else None)


def why_unreadable(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be opened for reading, or None when it can."""
    file = Path(path)
    problem = _place_problem(file)
    if problem:
        return problem
    if not file.exists():
        return "no such file"
    return _open_problem(file, os.O_RDONLY, "read", file)


def why_unwritable(path: str | os.PathLike, *, sidecars: tuple[str, ...] = ()) -> str | None:
    """Why ``path`` cannot be opened for writing, or created if missing, or None when it can.

    ``sidecars``: suffixes of files that must be openable for writing beside it,
    or creatable in its directory (SQLite's ``-wal`` and ``-shm``).
    """
    file = Path(path)
    problem = _place_problem(file)
    if problem:
        return problem
    missing = []
    for candidate in (file, *(file.with_name(file.name + suffix) for suffix in sidecars)):
        if candidate.exists():
            problem = _open_problem(candidate, os.O_RDWR, "write", file)
            if problem:
                return problem
        else:
            missing.append(candidate)
    return _creation_problem(missing[0], file) if missing else None


def why_not_creatable(path: str | os.PathLike) -> str | None:
    """Why a new file cannot be created at ``path``, or None when it can."""
    file = Path(path)
    problem = _place_problem(file)
    if problem:
        return problem
    if file.exists() or file.is_symlink():
        return "it exists already"
    return _creation_problem(file, file)


def directory_problem(directory: str | os.PathLike) -> str | None:
    """What stops ``directory`` from being used as one (naming the first part of its path at fault), or None."""
    directory = Path(os.path.abspath(directory))
    try:
        os.stat(directory)
    except OSError as error:
        # From the root down to the first part that is missing, not a directory or not to be entered.
        for part in (*reversed(directory.parents), directory):
            try:
                os.stat(part)
            except FileNotFoundError:
                return f"the directory {str(part)!r} does not exist"
            except NotADirectoryError:
                return f"{str(part.parent)!r} is not a directory"
            except PermissionError:
                return f"permission denied: cannot enter {str(part.parent)!r}"
        return describe(error)
    if not directory.is_dir():
        return f"{str(directory)!r} is not a directory"
    if not os.access(directory, os.X_OK):
        return f"permission denied: cannot enter {str(directory)!r}"
    return None


def _open_problem(file: Path, flags: int, verb: str, subject: Path) -> str | None:
    # Opening an existing file without O_CREAT or O_TRUNC changes nothing.
    try:
        os.close(os.open(file, flags))
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        return reason if file == subject else f"{reason}: cannot {verb} {str(file)!r}"
    return None


def _creation_problem(file: Path, subject: Path) -> str | None:
    directory = file.parent
    where = f"cannot create {file.name!r} in {str(directory)!r}" if file != subject else \
        f"cannot create files in {str(directory)!r}"
    if not os.access(directory, os.W_OK | os.X_OK):
        reason = "permission denied"
        try:
            if os.statvfs(directory).f_flag & os.ST_RDONLY:
                reason = os.strerror(errno.EROFS).lower()
        except OSError:
            pass
        return f"{reason}: {where}"
    # The directory looks writable, and the caller could not create the file in it all the same (a file
    # system such as /proc, whose rules access() does not know, or no inode left): only trying tells
    # why.  Under a name of its own, removed at once: a file at the caller's path, even for a moment,
    # could be opened by another process as an empty database.
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".deployapi-probe-", dir=directory)
    except OSError as error:
        return f"{(error.strerror or str(error)).lower()}: {where}"
    os.close(descriptor)
    os.unlink(probe)
    return None
