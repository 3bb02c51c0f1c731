"""Fixtures and tiny builders shared by every layer of the tests."""

from __future__ import annotations

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

