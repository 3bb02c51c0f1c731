"""GET /events: every event of every deployment in commit order, resumable by id, from a time with since."""

from __future__ import annotations

import random
import sqlite3
import threading
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from builders import START, assert_invalid_fields, create_body
from werkzeug.test import Client

from deployapi import create_app
from deployapi.lifecycle import format_timestamp


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


# --- since -----------------------------------------------------------------------------------------------------


class SteppedClock:
    """A stopped clock that each test sets to a minute after builders.START, forwards or back."""

    def __init__(self):
        self.now = START

    def set(self, minute: float) -> None:
        self.now = START + timedelta(minutes=minute)

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return SteppedClock()


@pytest.fixture
def timed_client(db_path, clock):
    application = create_app(db_path, clock=clock)
    yield Client(application)
    application.close()


def create_at(client, clock, minute, **overrides) -> dict:
    clock.set(minute)
    response = client.post("/deployments", json=create_body(**overrides))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def every_event(db_path) -> list[tuple[int, str]]:
    """(id, created_at) of every stored event, read from the table itself."""
    with sqlite3.connect(db_path) as conn:
        return list(conn.execute("SELECT id, created_at FROM deployment_events ORDER BY id"))


def test_since_keeps_the_events_created_at_or_after_it_and_the_bound_is_inclusive(timed_client, clock):
    for minute in (0, 10, 20):
        create_at(timed_client, clock, minute)
    at_ten = format_timestamp(START + timedelta(minutes=10))
    assert [e["created_at"] for e in feed(timed_client, since=at_ten)["items"]] == [
        at_ten, format_timestamp(START + timedelta(minutes=20))]
    # The same instant with an offset; a microsecond later; a fraction finer than one rounds up.
    assert len(feed(timed_client, since="2026-11-26T11:10:00+01:00")["items"]) == 2
    assert len(feed(timed_client, since="2026-11-26T10:10:00.000001Z")["items"]) == 1
    assert len(feed(timed_client, since="2026-11-26T10:10:00.0000001Z")["items"]) == 1
    assert len(feed(timed_client, since="2026-11-26T10:09:59.999999Z")["items"]) == 2
    assert feed(timed_client, since="2026-11-26T10:20:00.000001Z") == {"items": [], "next_after": 0}


def test_since_combines_with_after_limit_and_every_filter(client, history):
    everything = feed(client)["items"]
    since = everything[2]["created_at"]
    later = [e for e in everything if e["created_at"] >= since]
    assert tail(client, limit=1, since=since) == later
    assert feed(client, since=since, after=later[0]["id"])["items"] == later[1:]
    assert [e["type"] for e in feed(client, since=since, service="billing")["items"]] == ["approved", "started"]
    assert [e["type"] for e in feed(client, since=since, environment="staging")["items"]] == ["rejected"]
    assert [e["type"] for e in feed(client, since=since, type="created")["items"]] == []
    assert [e["type"] for e in feed(client, since=since, service="search", environment="staging",
                                    type="rejected")["items"]] == ["rejected"]


def test_an_event_of_a_clock_that_stepped_back_is_not_skipped(db_path, timed_client, clock):
    # The first event is stamped late, then the clock steps back: by id it
    # comes long before the others created at or after since, and a bound
    # taken from where those begin would skip it.
    create_at(timed_client, clock, 1000)
    for minute in range(1, 41):
        create_at(timed_client, clock, minute)
    for since_minute in (38, 2):  # few events at or after since, then many (both ways of finding the start)
        since = format_timestamp(START + timedelta(minutes=since_minute))
        expected = [event_id for event_id, created_at in every_event(db_path) if created_at >= since]
        assert expected[0] == 1
        assert [e["id"] for e in feed(timed_client, since=since)["items"]] == expected
        assert [e["id"] for e in tail(timed_client, limit=2, since=since)] == expected


def test_a_walk_with_since_returns_every_matching_event_once_in_id_order_however_the_clock_moved(
        db_path, timed_client, clock):
    rng = random.Random(19)
    for _ in range(60):
        create_at(timed_client, clock, rng.choice([rng.uniform(0, 100), rng.uniform(90, 100)]),
                  service=rng.choice(["billing", "search"]))
    stored = every_event(db_path)
    for since_minute in (0, 50, 95, 99.5, 101):
        since = format_timestamp(START + timedelta(minutes=since_minute))
        expected = [event_id for event_id, created_at in stored if created_at >= since]
        for limit in (1, 3, 100):
            assert [e["id"] for e in tail(timed_client, limit=limit, since=since)] == expected
        after = stored[len(stored) // 2][0]
        assert [e["id"] for e in tail(timed_client, after=after, limit=4, since=since)] == [
            event_id for event_id in expected if event_id > after]


def test_a_consumer_following_since_sees_events_appended_while_it_walks(timed_client, clock):
    for minute in range(5):
        create_at(timed_client, clock, minute)
    since = format_timestamp(START + timedelta(minutes=3))
    page = feed(timed_client, since=since, limit=1)
    seen = page["items"]
    create_at(timed_client, clock, 2)  # appended, but created before since
    create_at(timed_client, clock, 6)
    seen += tail(timed_client, after=page["next_after"], limit=1, since=since)
    assert [e["created_at"] for e in seen] == [
        format_timestamp(START + timedelta(minutes=minute)) for minute in (3, 4, 6)]


@pytest.mark.parametrize("since", ["yesterday", "2026-11-26", "2026-11-26T10:00:00", "", "2026-13-01T00:00:00Z"])
def test_a_since_that_is_not_an_rfc_3339_time_with_offset_is_422(client, since):
    assert_invalid_fields(client.get("/events", query_string={"since": since}), ["since"])


def test_every_bad_feed_parameter_is_reported_at_once(client):
    response = client.get("/events?since=soon&after=-1&limit=0&type=deleted&since2=x")
    assert_invalid_fields(response, ["since", "after", "limit", "type", "since2"])
    assert_invalid_fields(client.get("/events?since=2026-11-26T10:00:00Z&since=2026-11-27T10:00:00Z"), ["since"])


def test_the_cloudevents_link_keeps_since(timed_client, clock):
    for minute in range(4):
        create_at(timed_client, clock, minute)
    since = format_timestamp(START + timedelta(minutes=1))
    response = timed_client.get("/events", query_string={"since": "2026-11-26T11:01:00+01:00", "limit": 2,
                                                         "format": "cdevents"})
    assert [e["time"] for e in response.get_json()] == [since, format_timestamp(START + timedelta(minutes=2))]
    assert response.headers["X-Next-After"] == "3"
    assert response.headers["Link"] == (
        f'</events?{urlencode({"after": 3, "since": since, "limit": 2, "format": "cdevents"})}>; rel="next"')
    following = timed_client.get(response.headers["Link"][1:].split(">", 1)[0])
    assert [e["id"] for e in following.get_json()] == ["4"]
