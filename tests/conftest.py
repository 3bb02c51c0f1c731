"""Fixtures and tiny builders shared by every layer of the tests."""

from __future__ import annotations

import os
import subprocess

import pytest
from builders import StepClock, create_body
from server_process import Server
from werkzeug.test import Client

from deployapi import create_app
from deployapi.repository import Repository


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "deployapi.db"


@pytest.fixture
def repo(db_path):
    repository = Repository(db_path, clock=StepClock())
    yield repository
    repository.close()


@pytest.fixture
def app(db_path):
    application = create_app(db_path)
    yield application
    application.close()


@pytest.fixture
def client(app):
    return Client(app)


@pytest.fixture
def created(client):
    """Create a deployment over HTTP and return its JSON."""

    def create(**overrides) -> dict:
        response = client.post("/deployments", json=create_body(**overrides))
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return create


@pytest.fixture
def start_server(tmp_path):
    """Start ``deployapi serve`` (port 0 unless given); every server is stopped after the test."""
    started: list[Server] = []

    def start(*args: str, cwd=None, env=None, **process) -> Server:
        if "--port" not in args and "DEPLOYAPI_PORT" not in (env or {}):
            args = (*args, "--port", "0")
        server = Server(*args, cwd=cwd or tmp_path, env=env, **process)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()



@pytest.fixture
def read_only_directory():
    """Make a directory (and, unless ``files_too=False``, the files in it) refuse every change, for real, for the
    user the tests run as.

    File modes do that for an ordinary user (chmod 555 and 444).  Root ignores
    them; the immutable attribute (``chattr +i``) stops root too, so as root it is
    set instead, and the test is skipped when the file system or the container
    does not allow it.  Either way the directory is shown to refuse a new file
    before the test goes on, and is made writable again afterwards.
    """
    undo: list = []

    def make(directory, *, files_too: bool = True):
        entries = sorted(directory.iterdir()) if files_too else []
        if os.geteuid() == 0:
            result = subprocess.run(["chattr", "+i", *map(str, entries), str(directory)],
                                    capture_output=True, text=True)
            if result.returncode:
                pytest.skip(f"as root only the immutable attribute makes a directory read-only: {result.stderr}")
            undo.append(lambda: subprocess.run(["chattr", "-i", str(directory), *map(str, entries)], check=True))
        else:
            modes = {path: path.stat().st_mode for path in (*entries, directory)}
            for path in entries:
                path.chmod(0o444)
            directory.chmod(0o555)
            undo.append(lambda: [path.chmod(mode) for path, mode in modes.items()])
        with pytest.raises(OSError):
            (directory / "probe").touch()
        return directory

    yield make
    for step in reversed(undo):
        step()
