"""The receiver of docs/api.md ("A receiver in Python"), run as written against deployapi's own deliveries,
and the signed requests the page shows, checked against their bodies.

The example is taken from the page, written to a file and started as a
process, exactly as a reader would run it; deployapi's Deliverer then sends it
real events, and the test reads what the example prints.  A repeat, a forged
request and a stale one are sent with deployapi's own Sender.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from builders import create_body
from docs_examples import Binder, Comparison
from werkzeug.test import Client

from deployapi import create_app, webhooks
from deployapi.delivery import Deliverer, Sender
from deployapi.repository import Deliveries

API = Path(__file__).parents[2] / "docs" / "api.md"
SECRET = "whsec_iZ5atCTHnlAZaBc2g2ixULWKmQF/sbT037ZdoQqIDT0="  # the one the page uses
# The secret of the page's cd-events webhook (its configuration file, under "## Webhooks").
CD_EVENTS_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def receiver_example() -> str:
    """The first ```python block under the heading "### A receiver in Python"."""
    text = API.read_text(encoding="utf-8")
    after = text[text.index("\n### A receiver in Python\n"):]
    section = after[:after.index("\n### ", 1)]
    return re.search(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ExampleProcess:
    """The example started with ``python receiver.py``; its stdout lines arrive in a queue."""

    def __init__(self, directory: Path, secret: str):
        script = directory / "receiver.py"
        script.write_text(receiver_example(), encoding="utf-8")
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, str(script)], cwd=directory, text=True,
                                        env={"WEBHOOK_SECRET": secret, "PORT": str(self.port)},
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._wait_until_listening()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/deployapi"

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def _wait_until_listening(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the example exited: {self.process.stderr.read()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise AssertionError("the example did not listen within 10 s")

    def next_line(self, timeout: float = 20) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the example printed nothing within {timeout} s") from None

    def stop(self) -> str:
        self.process.terminate()
        try:
            _, errors = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, errors = self.process.communicate()
        return errors


@pytest.fixture
def example(tmp_path):
    process = ExampleProcess(tmp_path, SECRET)
    yield process
    errors = process.stop()
    assert "Traceback" not in errors, errors


@pytest.fixture
def delivering(db_path, example):
    """An app whose one json webhook is the example, and a Deliverer sending to it; both stopped after."""
    app = create_app(db_path, config={"webhooks": [{"name": "audit-sink", "url": example.url, "secret": SECRET}]})
    deliverer = Deliverer(app.repository, app.webhooks)
    deliverer.start()
    yield app
    deliverer.stop(grace=1)
    app.close()


def act(client: Client, deployment: dict, action: str) -> None:
    response = client.post(f"/deployments/{deployment['id']}/{action}", json={"actor": "bob@example.com"})
    assert response.status_code == 200, response.get_json()


def stored_delivery(app, event_id: int) -> webhooks.Delivery:
    """The delivery of a stored event to the app's webhook, built as the deliverer builds it."""
    [event] = [item.event for item in Deliveries(app.repository).events_after(event_id - 1, 1)]
    deployment, first_success = app.repository.event_context([event])[event.id]
    return webhooks.delivery(app.webhooks[0], event, deployment, first_success=first_success)


def test_the_documented_receiver_handles_each_delivered_event_once_and_in_order(delivering, example):
    client = Client(delivering)
    deployment = client.post("/deployments", json=create_body()).get_json()
    act(client, deployment, "approve")
    assert example.next_line() == "1 created by alice@example.com: billing 1.4.2 to staging"
    assert example.next_line() == "2 approved by bob@example.com: billing 1.4.2 to staging"

    # Event 1 once more, as after a lost 2xx: answered 2xx, and not handled again.
    repeat = stored_delivery(delivering, 1)
    assert Sender(example.url, 10).send(repeat.body, repeat.headers(int(time.time()))).status == 204
    act(client, deployment, "start")
    # The receiver answers one request at a time, so had the repeat been handled, its line would come first.
    assert example.next_line() == "3 started by bob@example.com: billing 1.4.2 to staging"


def test_the_documented_receiver_refuses_a_request_not_signed_with_its_secret(delivering, example):
    Client(delivering).post("/deployments", json=create_body())
    assert example.next_line().startswith("1 created by ")
    delivery = stored_delivery(delivering, 1)
    forged = webhooks.Delivery(webhooks.Webhook("audit-sink", example.url, secret=webhooks.decode_secret(
        OTHER_SECRET)), delivery.event_id, delivery.event_hash, delivery.body, delivery.content_type)
    sender = Sender(example.url, 10)
    assert sender.send(forged.body, forged.headers(int(time.time()))).status == 401
    # Signed with the right secret, but six minutes old: a replay, refused too.
    assert sender.send(delivery.body, delivery.headers(int(time.time()) - 360)).status == 401
    unsigned = {key: value for key, value in delivery.headers(int(time.time())).items() if key != "webhook-signature"}
    assert sender.send(delivery.body, unsigned).status == 401


# --- the requests the page shows -------------------------------------------------------------------------


def page_section(heading: str) -> str:
    """The text under ``heading`` in the page's "## Webhooks", up to the next heading of any level."""
    text = API.read_text(encoding="utf-8")
    webhooks_part = text[text.index("\n## Webhooks\n"):]
    after = webhooks_part[webhooks_part.index(f"\n{heading}\n") + len(heading) + 2:]
    return re.split(r"^#{1,6} ", after, maxsplit=1, flags=re.MULTILINE)[0]


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def shown_request(heading: str) -> tuple[dict[str, str], str]:
    """The headers (lower-cased names) and the body text of the first request shown under ``heading``."""
    block = next(block for block in fenced(page_section(heading), "text") if block.startswith("POST "))
    head, _, body = block.partition("\n\n")
    lines = head.splitlines()[1:]
    return {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}, body


@pytest.mark.parametrize("headers_under, body_under, webhook, secret", [
    pytest.param("### Headers", "#### cloudevents", "cd-events", CD_EVENTS_SECRET, id="cloudevents"),
    pytest.param("#### json", "#### json", "audit-archive", SECRET, id="json"),
])
def test_each_signed_request_shown_names_its_event_and_is_signed_over_its_body(
        headers_under, body_under, webhook, secret):
    headers, body_text = shown_request(headers_under)
    if body_under != headers_under:
        body_text = fenced(page_section(body_under), "json")[0]
    document = json.loads(body_text)
    # Sent compact: what the page shows pretty-printed.
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    event = document["event"] if "event" in document else document["data"]["customData"]

    assert int(headers["content-length"]) == len(body)
    assert headers["webhook-id"] == f"{webhook}-{event['id']}-{event['hash'][:12]}"
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == expected


def test_every_webhook_id_the_page_shows_has_the_three_parts():
    text = API.read_text(encoding="utf-8")
    shown = re.findall(r"webhook-id: ([^\s']+)", text)
    assert len(shown) >= 4, shown
    for webhook_id in shown:
        assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*-[0-9]+-[0-9a-f]{12}", webhook_id), webhook_id


def test_each_slack_message_shown_is_the_one_deployapi_writes(db_path):
    """The first request to "releases-channel" (under "#### slack") and the five texts under "### Slack", against
    the events of the session they come from, rendered as the deliverer renders them."""
    app = create_app(db_path, config={"webhooks": [
        {"name": "releases-channel", "url": "http://127.0.0.1:9002/services/T0001/B0001/XXXXXXXXXXXXXXXXXXXXXXXX",
         "format": "slack", "environments": ["production"]}]})
    try:
        client = Client(app)
        released, rolled_back = (client.post("/deployments", json=create_body(
            environment="production", version=version, work_refs=["JIRA-123"], risk="low")).get_json()
            for version in ("1.4.2", "1.4.3"))
        for deployment, steps in ((released, [("approve", "bob@example.com", None), ("start", "deploy-bot", None),
                                              ("succeed", "deploy-bot", "canary healthy for 10 min")]),
                                  (rolled_back, [("approve", "bob@example.com", None), ("start", "deploy-bot", None),
                                                 ("rollback", "carol@example.com", "error rate up 3x after 1.4.3")])):
            for action, actor, note in steps:
                response = client.post(f"/deployments/{deployment['id']}/{action}", json={"actor": actor, "note": note})
                assert response.status_code == 200, response.get_json()
        # Event ids: 1 and 2 are the two creations, then the steps of each in turn.
        sent = {event_id: stored_delivery(app, event_id) for event_id in range(1, 9)}
    finally:
        app.close()
    binder = Binder()

    headers, body = shown_request("#### slack")
    first = sent[1]
    comparison = Comparison(binder, "the first request to releases-channel")
    comparison.text(body.strip(), first.body.decode("utf-8"))
    assert not comparison.problems, comparison.problems
    assert int(headers["content-length"]) == len(first.body)
    sent_headers = {key.lower(): value for key, value in first.headers(int(time.time())).items()}
    shown = {key: value for key, value in headers.items() if key not in ("host", "accept-encoding", "content-length")}
    assert set(sent_headers) == set(shown)  # and no webhook-signature: this webhook has no secret
    assert [sent_headers[key] for key in ("content-type", "user-agent")] == [
        shown[key] for key in ("content-type", "user-agent")]
    # The event's hash differs from run to run; the webhook's name and the event id do not.
    assert sent_headers["webhook-id"].rsplit("-", 1)[0] == shown["webhook-id"].rsplit("-", 1)[0]

    [messages] = [block for block in fenced(page_section("### Slack"), "text")]
    texts = [json.loads(sent[event_id].body)["text"] for event_id in (1, 3, 4, 5, 8)]
    comparison = Comparison(binder, "the texts under ### Slack")
    comparison.body(messages.splitlines(), "\n".join(texts))
    assert not comparison.problems, comparison.problems
