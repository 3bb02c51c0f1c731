"""Embedding: mounted under a prefix, inside another WSGI app, two apps in one process."""

from __future__ import annotations

import pytest
from builders import create_body
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client
from werkzeug.wrappers import Response

from deployapi import create_app


def test_under_a_script_name_prefix_the_location_includes_the_prefix(app):
    client = Client(app)
    response = client.post("/deployments", json=create_body(), base_url="http://localhost/deploy")
    assert response.status_code == 201
    assert response.headers["Location"] == f"/deploy/deployments/{response.get_json()['id']}"


def test_mounted_with_dispatcher_middleware_every_route_works_under_the_prefix(app):
    host = DispatcherMiddleware(Response("host app", mimetype="text/plain"), {"/deploy": app})
    client = Client(host)
    created = client.post("/deploy/deployments", json=create_body())
    assert created.status_code == 201
    location = created.headers["Location"]
    assert location.startswith("/deploy/deployments/")
    assert client.get(location).get_json() == created.get_json()
    assert client.post(f"{location}/approve", json={"actor": "bob"}).get_json()["status"] == "approved"
    assert len(client.get(f"{location}/events").get_json()["items"]) == 2
    assert client.get("/deploy/deployments").get_json()["items"][0]["id"] == created.get_json()["id"]
    assert client.get("/deploy/healthz").status_code == 200
    assert client.get("/deploy/nowhere").get_json()["code"] == "not_found"
    assert client.get("/").get_data(as_text=True) == "host app"


def test_two_apps_on_two_databases_live_in_one_process(tmp_path):
    first = create_app(tmp_path / "one.db")
    second = create_app(tmp_path / "two.db", production_environments=("live",))
    try:
        one, two = Client(first), Client(second)
        created = one.post("/deployments", json=create_body()).get_json()
        assert two.get(f"/deployments/{created['id']}").status_code == 404
        assert two.get("/deployments").get_json()["items"] == []
        body = create_body(environment="live", risk=None)
        assert one.post("/deployments", json=body).status_code == 201
        assert two.post("/deployments", json=body).status_code == 422
    finally:
        first.close()
        second.close()


def test_create_app_refuses_an_invalid_production_set(tmp_path):
    for bad in ((), ("Prod",), ("",)):
        with pytest.raises(ValueError):
            create_app(tmp_path / "x.db", production_environments=bad)


def test_tenants_mounted_side_by_side_keep_their_own_records_and_chain_heads(tmp_path):
    # docs/operations.md, "When one file is no longer enough": one app per tenant, one file each.
    tenants = {name: create_app(tmp_path / f"{name}.db") for name in ("acme", "globex")}
    try:
        client = Client(DispatcherMiddleware(NotFound(), {f"/{name}": app for name, app in tenants.items()}))
        created = client.post("/acme/deployments", json=create_body())
        assert created.status_code == 201
        assert created.headers["Location"] == f"/acme/deployments/{created.get_json()['id']}"
        assert client.get(f"/globex/deployments/{created.get_json()['id']}").status_code == 404
        assert client.get("/globex/events/head").get_json()["id"] is None
        assert client.post("/globex/deployments", json=create_body()).status_code == 201
        heads = {name: client.get(f"/{name}/events/head").get_json() for name in tenants}
        assert heads["acme"]["id"] == heads["globex"]["id"] == 1
        assert heads["acme"]["hash"] != heads["globex"]["hash"]
        assert client.get("/deployments").status_code == 404
    finally:
        for app in tenants.values():
            app.close()
