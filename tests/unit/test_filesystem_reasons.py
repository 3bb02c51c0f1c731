"""The reasons given for a file that cannot be read, written or created name the part of the path at fault."""

from __future__ import annotations

import pytest

from deployapi.filesystem import SIDECARS, directory_problem, why_not_creatable, why_unreadable, why_unwritable


@pytest.fixture
def regular_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a directory\n")
    return path


def test_a_missing_directory_is_named_at_its_first_missing_part(tmp_path):
    expected = f"the directory {str(tmp_path / 'gone')!r} does not exist"
    assert directory_problem(tmp_path / "gone" / "deeper") == expected
    for why in (why_unreadable, why_unwritable, why_not_creatable):
        assert why(tmp_path / "gone" / "deeper" / "x.db") == expected


def test_a_path_through_a_regular_file_names_that_file(regular_file):
    expected = f"{str(regular_file)!r} is not a directory"
    for path in (regular_file / "x.db", regular_file / "sub" / "x.db"):
        for why in (why_unreadable, why_unwritable, why_not_creatable):
            assert why(path) == expected


def test_a_directory_where_a_file_should_be_is_said_to_be_one(tmp_path):
    for why in (why_unreadable, why_unwritable, why_not_creatable):
        assert why(tmp_path) == "it is a directory"


def test_a_missing_file_cannot_be_read_and_an_existing_one_cannot_be_created(tmp_path, regular_file):
    assert why_unreadable(tmp_path / "missing.db") == "no such file"
    assert why_not_creatable(regular_file) == "it exists already"


def test_paths_that_can_be_used_have_no_reason_and_are_left_as_they_were(tmp_path, regular_file):
    assert why_unreadable(regular_file) is None
    assert why_unwritable(regular_file, sidecars=SIDECARS) is None
    assert why_unwritable(tmp_path / "new.db", sidecars=SIDECARS) is None
    assert why_not_creatable(tmp_path / "new.db") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_directory_that_refuses_new_files_is_named_with_what_could_not_be_made(tmp_path, read_only_directory):
    directory = tmp_path / "ro"
    directory.mkdir()
    (directory / "live.db").write_bytes(b"")
    read_only_directory(directory)
    assert why_not_creatable(directory / "copy.db") == f"permission denied: cannot create files in {str(directory)!r}"
    # Refused by its mode (EACCES), or as root by the immutable attribute (EPERM).
    assert why_unwritable(directory / "live.db") in ("permission denied", "operation not permitted")
    assert why_unreadable(directory / "live.db") is None


def test_a_sidecar_that_a_read_only_directory_cannot_take_is_named(tmp_path, read_only_directory):
    directory = tmp_path / "ro"
    directory.mkdir()
    (directory / "live.db").write_bytes(b"")
    read_only_directory(directory, files_too=False)
    assert why_unwritable(directory / "live.db") is None
    assert why_unwritable(directory / "live.db", sidecars=SIDECARS) == (
        f"permission denied: cannot create 'live.db-wal' in {str(directory)!r}")
