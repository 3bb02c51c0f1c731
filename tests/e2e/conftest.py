import pytest

from server import Server


@pytest.fixture
def start_server(tmp_path):
    """Start ``deployapi serve`` (port 0 unless given); every server is stopped after the test."""
    started: list[Server] = []

    def start(*args: str, cwd=None, env=None) -> Server:
        if "--port" not in args and "DEPLOYAPI_PORT" not in (env or {}):
            args = (*args, "--port", "0")
        server = Server(*args, cwd=cwd or tmp_path, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()

