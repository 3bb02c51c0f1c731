"""GET /events: every event of every deployment in commit order, resumable by id."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from builders import create_body
from werkzeug.test import Client

from deployapi import create_app


def feed(client, **params):
    response = client.get("/events", query_string=params)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def tail(client, after=0, limit=3, **filters):
    """Follow next_after until a page comes back empty; return every event seen."""
    seen = []
    while True:
        page = feed(client, after=after, limit=limit, **filters)
        seen += page["items"]
        if not page["items"]:
            assert page["next_after"] == after
            return seen
        assert page["next_after"] == page["items"][-1]["id"]
        after = page["next_after"]


@pytest.fixture
def history(client, created):
    a = created(service="billing", environment="production", risk="r", requester="alice")
    b = created(service="search", environment="staging", requester="alice")
    client.post(f"/deployments/{a['id']}/approve", json={"actor": "bob"})
    client.post(f"/deployments/{b['id']}/reject", json={"actor": "bob", "note": "no"})
    client.post(f"/deployments/{a['id']}/start", json={"actor": "ci"})
    return a, b


def test_the_feed_lists_every_event_in_commit_order(client, history):
    a, b = history
    items = feed(client)["items"]
    assert [(e["deployment_id"], e["type"]) for e in items] == [
        (a["id"], "created"), (b["id"], "created"), (a["id"], "approved"), (b["id"], "rejected"),
        (a["id"], "started")]
    assert [e["id"] for e in items] == sorted(e["id"] for e in items)
    assert items[0] == client.get(f"/deployments/{a['id']}/events").get_json()["items"][0]


def test_resuming_after_the_last_seen_id_continues_exactly(client, history):
    everything = feed(client)["items"]
    assert tail(client, limit=2) == everything
    assert feed(client, after=everything[2]["id"])["items"] == everything[3:]


@pytest.mark.parametrize("params, expected", [
    ({"service": "billing"}, ["created", "approved", "started"]),
    ({"environment": "staging"}, ["created", "rejected"]),
    ({"type": "created"}, ["created", "created"]),
    ({"service": "search", "type": "rejected"}, ["rejected"]),
])
def test_filters_narrow_the_feed(client, history, params, expected):
    assert [e["type"] for e in feed(client, **params)["items"]] == expected


def test_an_empty_feed_keeps_the_position(client):
    assert feed(client) == {"items": [], "next_after": 0}
    assert feed(client, after=41) == {"items": [], "next_after": 41}


@pytest.mark.parametrize("query_string, field", [
    ("after=-1", "after"), ("after=x", "after"), ("limit=0", "limit"), ("limit=1001", "limit"),
    ("type=deleted", "type"), ("service=Bad", "service"), ("cursor=abc", "cursor"), ("after=1&after=2", "after"),
])
def test_bad_feed_parameters_are_422(client, query_string, field):
    response = client.get(f"/events?{query_string}")
    assert response.status_code == 422
    assert field in [e["field"] for e in response.get_json()["errors"]]


def test_a_tailing_consumer_misses_nothing_and_repeats_nothing_under_concurrent_writers(db_path):
    app = create_app(db_path)
    writers_done = threading.Event()

    def write(n):
        client = Client(app)
        for i in range(15):
            d = client.post("/deployments", json=create_body(version=f"{n}.{i}", requester=f"dev{n}")).get_json()
            client.post(f"/deployments/{d['id']}/approve", json={"actor": "ops"})

    writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for w in writers:
        w.start()
    consumer = Client(app)
    seen, after = [], 0
    try:
        while True:
            finished = writers_done.is_set()
            page = feed(consumer, after=after, limit=7)
            seen += page["items"]
            after = page["next_after"]
            if not page["items"]:
                if finished:
                    break
                if not any(w.is_alive() for w in writers):
                    writers_done.set()
    finally:
        for w in writers:
            w.join()
        app.close()
    with sqlite3.connect(db_path) as conn:
        all_ids = [r[0] for r in conn.execute("SELECT id FROM deployment_events ORDER BY id")]
    assert [e["id"] for e in seen] == all_ids
    assert len(all_ids) == 4 * 15 * 2


def test_the_head_is_the_latest_event_and_its_hash(client, history):
    items = feed(client)["items"]
    head = client.get("/events/head").get_json()
    assert head == {"id": items[-1]["id"], "hash": items[-1]["hash"], "created_at": items[-1]["created_at"]}
    assert len({e["hash"] for e in items}) == len(items)


def test_the_head_of_an_empty_history_is_null(client):
    assert client.get("/events/head").get_json() == {"id": None, "hash": None, "created_at": None}
