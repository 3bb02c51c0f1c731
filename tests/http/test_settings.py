"""Settings into an app: ``deployapi serve`` and ``deployapi.wsgi`` build it the same way."""

from __future__ import annotations

import runpy

import pytest
from builders import create_body
from werkzeug.test import Client

from deployapi import create_app
from deployapi.config import ConfigError, app_from_settings, load_settings
from deployapi.repository import DatabaseError

TRUSTING_A_HEADER = {"DEPLOYAPI_TRUST_REMOTE_USER": "true", "DEPLOYAPI_REMOTE_USER_HEADER": "X-Forwarded-User"}


def assert_the_header_names_the_requester(app) -> None:
    client = Client(app)
    response = client.post("/deployments", json=create_body(requester=None), headers={"X-Forwarded-User": "dana"})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["requester"] == "dana"
    # REMOTE_USER from anywhere else is not the proxy's word.
    anonymous = client.post("/deployments", json=create_body(requester=None), environ_base={"REMOTE_USER": "eve"})
    assert anonymous.status_code == 401 and anonymous.get_json()["code"] == "unauthenticated"


def test_settings_with_a_trusted_identity_header_give_an_app_that_reads_it(tmp_path):
    settings = load_settings({"db": str(tmp_path / "s.db")}, TRUSTING_A_HEADER)
    app = app_from_settings(settings, configure_logging=False)
    try:
        assert_the_header_names_the_requester(app)
    finally:
        app.close()


def test_the_wsgi_module_reads_the_trusted_identity_header_as_serve_does(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYAPI_DB", str(tmp_path / "w.db"))
    for name, value in TRUSTING_A_HEADER.items():
        monkeypatch.setenv(name, value)
    for name in ("DEPLOYAPI_LOG_LEVEL", "DEPLOYAPI_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)  # logging stays the test runner's
    # run_module imports it afresh, without leaving it in sys.modules.
    app = runpy.run_module("deployapi.wsgi")["app"]
    try:
        assert_the_header_names_the_requester(app)
    finally:
        app.close()


def test_an_identity_header_without_trusting_identities_is_refused(tmp_path):
    with pytest.raises(ValueError, match="trust_remote_user"):
        create_app(tmp_path / "x.db", remote_user_header="X-Forwarded-User")
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize(("flags", "environ", "served"), [
    pytest.param({}, {}, False, id="default: off"),
    pytest.param({}, {"DEPLOYAPI_METRICS": "true"}, True, id="variable"),
    pytest.param({"metrics": "true"}, {}, True, id="flag"),
    pytest.param({}, {"DEPLOYAPI_METRICS": "0"}, False, id="variable off"),
])
def test_the_metrics_setting_decides_whether_metrics_is_served(tmp_path, flags, environ, served):
    app = app_from_settings(load_settings({"db": str(tmp_path / "m.db"), **flags}, environ), configure_logging=False)
    try:
        response = Client(app).get("/metrics")
        assert response.status_code == (200 if served else 404)
    finally:
        app.close()


def test_a_metrics_setting_that_is_not_a_boolean_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="DEPLOYAPI_METRICS: 'often' is not one of"):
        load_settings({"db": str(tmp_path / "m.db")}, {"DEPLOYAPI_METRICS": "often"})


def test_the_wsgi_module_serves_metrics_when_the_variable_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYAPI_DB", str(tmp_path / "w.db"))
    monkeypatch.setenv("DEPLOYAPI_METRICS", "true")
    for name in ("DEPLOYAPI_LOG_LEVEL", "DEPLOYAPI_LOG_FORMAT", "DEPLOYAPI_TRUST_REMOTE_USER"):
        monkeypatch.delenv(name, raising=False)
    app = runpy.run_module("deployapi.wsgi")["app"]
    try:
        response = Client(app).get("/metrics")
        assert response.status_code == 200 and response.mimetype == "text/plain"
    finally:
        app.close()


def existing_database(path) -> str:
    create_app(path).close()
    return str(path)


@pytest.mark.parametrize(("flags", "environ", "read_only"), [
    pytest.param({}, {}, False, id="default: off"),
    pytest.param({}, {"DEPLOYAPI_READ_ONLY": "yes"}, True, id="variable"),
    pytest.param({"read_only": "true"}, {}, True, id="flag"),
    pytest.param({}, {"DEPLOYAPI_READ_ONLY": "false"}, False, id="variable off"),
])
def test_the_read_only_setting_decides_whether_writes_are_refused(tmp_path, flags, environ, read_only):
    settings = load_settings({"db": existing_database(tmp_path / "r.db"), **flags}, environ)
    app = app_from_settings(settings, configure_logging=False)
    try:
        response = Client(app).post("/deployments", json=create_body())
        assert (response.status_code, response.get_json()["code"] if read_only else None) == (
            (503, "read_only") if read_only else (201, None))
    finally:
        app.close()


def test_a_read_only_setting_that_is_not_a_boolean_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="DEPLOYAPI_READ_ONLY: 'replica' is not one of"):
        load_settings({"db": str(tmp_path / "r.db")}, {"DEPLOYAPI_READ_ONLY": "replica"})


def test_the_wsgi_module_serves_read_only_when_the_variable_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYAPI_DB", existing_database(tmp_path / "w.db"))
    monkeypatch.setenv("DEPLOYAPI_READ_ONLY", "1")
    for name in ("DEPLOYAPI_LOG_LEVEL", "DEPLOYAPI_LOG_FORMAT", "DEPLOYAPI_TRUST_REMOTE_USER"):
        monkeypatch.delenv(name, raising=False)
    app = runpy.run_module("deployapi.wsgi")["app"]
    try:
        client = Client(app)
        assert client.get("/deployments").status_code == 200
        assert client.post("/deployments", json=create_body()).get_json()["code"] == "read_only"
    finally:
        app.close()


def test_the_wsgi_module_read_only_refuses_a_missing_database(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYAPI_DB", str(tmp_path / "missing.db"))
    monkeypatch.setenv("DEPLOYAPI_READ_ONLY", "true")
    for name in ("DEPLOYAPI_LOG_LEVEL", "DEPLOYAPI_LOG_FORMAT", "DEPLOYAPI_TRUST_REMOTE_USER"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(DatabaseError, match="read-only is set"):
        runpy.run_module("deployapi.wsgi")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("flags", "environ", "workers"), [
    pytest.param({}, {}, 1, id="default: one process"),
    pytest.param({}, {"DEPLOYAPI_WORKERS": "4"}, 4, id="variable"),
    pytest.param({"workers": "2"}, {"DEPLOYAPI_WORKERS": "4"}, 2, id="the flag beats the variable"),
    pytest.param({"workers": "1", "metrics": "true"}, {}, 1, id="one worker serves metrics"),
])
def test_the_workers_setting_gives_the_number_of_processes(flags, environ, workers):
    assert load_settings(flags, environ).workers == workers


@pytest.mark.parametrize(("flags", "environ", "message"), [
    pytest.param({"workers": "0"}, {}, "--workers: 0 is outside 1-64", id="zero"),
    pytest.param({}, {"DEPLOYAPI_WORKERS": "65"}, "DEPLOYAPI_WORKERS: 65 is outside 1-64", id="too many"),
    pytest.param({"workers": "two"}, {}, "--workers: 'two' is not a whole number", id="not a number"),
    pytest.param({"workers": "2"}, {"DEPLOYAPI_METRICS": "true"},
                 "DEPLOYAPI_METRICS cannot be used with --workers above 1", id="with metrics"),
])
def test_a_workers_setting_the_server_cannot_start_with_is_refused(flags, environ, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(flags, environ)
