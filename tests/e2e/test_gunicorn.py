"""deployapi.wsgi:app under another WSGI server (gunicorn), mounted under a prefix."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from builders import create_body

pytestmark = pytest.mark.e2e

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


@pytest.fixture
def gunicorn(tmp_path):
    if not Path(GUNICORN).exists() and not shutil.which("gunicorn"):
        pytest.fail("gunicorn is a test dependency: pip install '.[test]'")
    env = {**os.environ, "DEPLOYAPI_DB": str(tmp_path / "g.db"), "DEPLOYAPI_PRODUCTION_ENVIRONMENTS": "prod",
           "SCRIPT_NAME": "/deploy"}
    process = subprocess.Popen([GUNICORN, "--bind", "127.0.0.1:0", "--workers", "2", "deployapi.wsgi:app"],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = None
    deadline = time.monotonic() + 30
    while url is None and time.monotonic() < deadline:
        line = process.stderr.readline()
        match = re.search(r"Listening at: (http://\S+)", line)
        url = match.group(1) if match else None
    assert url, "gunicorn did not start"
    time.sleep(0.5)  # let both workers import the app
    yield url + "/deploy"
    process.send_signal(signal.SIGTERM)
    process.wait(20)
    process.stderr.close()


def call(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


def test_the_api_works_under_gunicorn_with_two_workers_on_one_file(gunicorn):
    status, headers, created = call("POST", f"{gunicorn}/deployments", create_body(environment="prod", risk="r"))
    assert status == 201 and headers["Location"] == f"/deploy/deployments/{created['id']}"
    # Requests land on either worker process; both see every write.
    for _ in range(6):
        assert call("GET", f"{gunicorn}/deployments/{created['id']}")[0] == 200
    assert call("POST", f"{gunicorn}/deployments", create_body(environment="prod", risk=None))[0] == 422
    status, _, approved = call("POST", f"{gunicorn}/deployments/{created['id']}/approve", {"actor": "bob"})
    assert status == 200 and approved["status"] == "approved"
    assert call("GET", f"{gunicorn}/healthz")[2] == {"status": "ok"}


def test_the_wsgi_module_ignores_settings_that_only_serve_uses(tmp_path):
    env = {**os.environ, "DEPLOYAPI_DB": str(tmp_path / "w.db"), "DEPLOYAPI_PORT": "not-a-port",
           "DEPLOYAPI_THREADS": "many"}
    result = subprocess.run([sys.executable, "-c", "import deployapi.wsgi as w; print(callable(w.app))"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "True", result.stderr
    assert (tmp_path / "w.db").is_file()
