"""Webhooks as values: which events a webhook takes, the request that carries one, and the waits after failures.

The signatures are checked with ``standardwebhooks``, the Standard Webhooks
reference library a receiver would use, never with deployapi's own code.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import time

import pytest
from standardwebhooks import Webhook as Verifier
from standardwebhooks import WebhookVerificationError

from deployapi import cdevents, lifecycle
from deployapi.documents import deployment_json, event_json
from deployapi.lifecycle import Deployment, Event
from deployapi.webhooks import FORMATS, Webhook, decode_secret, delivery, retry_delay, signature

# The secret of the contract's example file (and of the Standard Webhooks specification's test vector).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_" + base64.b64encode(b"another key, thirty-two bytes!!!").decode()
# An event's hash as chain.py writes it: 64 hex digits (distinct ones, so that a cut shows where it falls).
HASH = "3f9c2e1a7b4d" + "0123456789abcdef" * 3 + "5e6f7a8b9c0d1e2f"

DEPLOYMENT = Deployment(
    id="01m8bqmwd0jcr9fbtk1cqdh4gs", service="billing-api", environment="production",
    version="2026.11.26-3f9c2e1", requester="alice@example.com",
    work_refs=("JIRA-4812",), risk="additive", rollback_plan="Redeploy the previous build.",
    status="succeeded", reviewed_by="bob@example.com", reviewed_at="2026-11-26T10:50:34.158510Z",
    created_at="2026-11-26T10:50:30.176620Z", updated_at="2026-11-26T10:50:34.849317Z",
)
# A plausible status before and after each event type.
STATUSES = {
    "created": (None, "pending_approval"), "approved": ("pending_approval", "approved"),
    "rejected": ("pending_approval", "rejected"), "started": ("approved", "started"),
    "succeeded": ("started", "succeeded"), "failed": ("started", "failed"),
    "rolled_back": ("succeeded", "rolled_back"), "cancelled": ("approved", "cancelled"),
}


def make_deployment(**overrides) -> Deployment:
    return dataclasses.replace(DEPLOYMENT, **overrides)


def make_event(event_type: str = "succeeded", **overrides) -> Event:
    from_status, to_status = STATUSES[event_type]
    fields = dict(id=42, deployment_id=DEPLOYMENT.id, sequence=3, type=event_type, actor="carol@example.com",
                  note=None, from_status=from_status, to_status=to_status,
                  created_at="2026-11-26T10:50:34.330840Z", hash=HASH)
    fields.update(overrides)
    return Event(**fields)


def hook(**overrides) -> Webhook:
    fields = dict(name="audit-sink", url="https://hooks.example.com/deployapi", secret=decode_secret(SECRET))
    fields.update(overrides)
    return Webhook(**fields)


def deliver(webhook: Webhook | None = None, event: Event | None = None, deployment: Deployment = DEPLOYMENT,
            first_success: bool = False):
    return delivery(webhook or hook(), event or make_event(), deployment, first_success=first_success)


def slack_text_of(event: Event, deployment: Deployment = DEPLOYMENT) -> str:
    body = json.loads(deliver(hook(format="slack"), event, deployment).body)
    assert set(body) == {"text"}
    return body["text"]


def now() -> int:
    # standardwebhooks refuses a timestamp more than five minutes from its own clock.
    return int(time.time())


# --- which events a webhook takes ------------------------------------------------------------

NARROW = hook(types=frozenset({"started", "failed"}), services=frozenset({"billing-api"}),
              environments=frozenset({"production", "staging"}))


@pytest.mark.parametrize("webhook, event_type, service, environment, expected", [
    pytest.param(hook(), "started", "billing-api", "production", True, id="no filter: an event"),
    pytest.param(hook(), "rolled_back", "any-service", "any-env", True, id="no filter: any other event"),
    pytest.param(hook(), "paused", "x", "y", True, id="no filter: a type added later"),
    pytest.param(NARROW, "failed", "billing-api", "staging", True, id="every filter admits it"),
    pytest.param(NARROW, "succeeded", "billing-api", "production", False, id="another type"),
    pytest.param(NARROW, "started", "payments", "production", False, id="another service"),
    pytest.param(NARROW, "started", "billing-api", "dev", False, id="another environment"),
    pytest.param(hook(types=frozenset({"created"})), "created", "s", "e", True, id="types alone admits"),
    pytest.param(hook(types=frozenset({"created"})), "approved", "s", "e", False, id="types alone refuses"),
    pytest.param(hook(services=frozenset({"s"})), "approved", "s", "e", True, id="services alone admits"),
    pytest.param(hook(services=frozenset({"s"})), "approved", "t", "e", False, id="services alone refuses"),
    pytest.param(hook(environments=frozenset({"e"})), "failed", "s", "e", True, id="environments alone admits"),
    pytest.param(hook(environments=frozenset({"e"})), "failed", "s", "f", False, id="environments alone refuses"),
])
def test_a_webhook_takes_the_events_every_one_of_its_filters_admits(webhook, event_type, service, environment,
                                                                     expected):
    assert webhook.matches(event_type, service, environment) is expected


@pytest.mark.parametrize("url, shown", [
    pytest.param("https://hooks.slack.com/services/T/B/X", "https://hooks.slack.com", id="slack"),
    pytest.param("http://127.0.0.1:8080/hooks/deployapi?token=path-secret", "http://127.0.0.1:8080",
                 id="port kept, path and query left out"),
    pytest.param("https://hooks.example.com?token=query-secret", "https://hooks.example.com", id="query only"),
    pytest.param("https://hooks.example.com", "https://hooks.example.com", id="nothing after the host"),
    pytest.param("https://[::1]:8443/p", "https://[::1]:8443", id="an IPv6 address"),
    pytest.param("https://user:password@hooks.example.com/p", "https://hooks.example.com",
                 id="user and password left out"),
])
def test_the_url_shown_is_the_scheme_and_the_host_only(url, shown):
    assert hook(url=url).shown_url == shown


# --- secrets ------------------------------------------------------------------------------------


def test_the_contracts_example_secret_decodes_to_its_key():
    assert decode_secret(SECRET) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert len(decode_secret(SECRET)) == 24


@pytest.mark.parametrize("size", [24, 32, 64])
def test_a_secret_of_24_to_64_bytes_decodes(size):
    key = bytes(range(size))

    assert decode_secret("whsec_" + base64.b64encode(key).decode()) == key


def encoded(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


@pytest.mark.parametrize("secret, problem", [
    pytest.param("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'", id="no prefix"),
    pytest.param("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'", id="prefix in upper case"),
    pytest.param("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!", "is not whsec_ followed by standard base64",
                 id="a character outside base64"),
    pytest.param("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwX", "is not whsec_ followed by standard base64",
                 id="bad padding"),
    pytest.param("whsec_MfKQ9r8GKYqrTwjU PD8ILPZIo2LaLaSw", "is not whsec_ followed by standard base64",
                 id="a space inside"),
    pytest.param("whsec_" + base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(),
                 "is not whsec_ followed by standard base64", id="url-safe base64"),
    pytest.param(encoded(b"k" * 23), "must decode to 24 to 64 bytes, not 23", id="23 bytes"),
    pytest.param(encoded(b"k" * 65), "must decode to 24 to 64 bytes, not 65", id="65 bytes"),
    pytest.param("whsec_", "must decode to 24 to 64 bytes, not 0", id="nothing after the prefix"),
])
def test_a_secret_that_is_not_whsec_and_base64_of_24_to_64_bytes_is_refused_without_showing_it(secret, problem):
    with pytest.raises(ValueError) as caught:
        decode_secret(secret)

    message = str(caught.value)
    assert problem in message
    body = secret.partition("_")[2]
    assert secret not in message
    assert not body or body[:8] not in message


# --- waits after failures ------------------------------------------------------------------------


@pytest.mark.parametrize("max_backoff_seconds", [1, 600, 86_400])
def test_the_first_retry_comes_within_two_seconds(max_backoff_seconds):
    assert 0 < retry_delay(1, max_backoff_seconds) <= 2


def test_each_retry_waits_twice_as_long_as_the_one_before():
    delays = [retry_delay(attempts, 86_400) for attempts in range(1, 12)]

    assert [delay / delays[0] for delay in delays] == [2 ** n for n in range(11)], delays


@pytest.mark.parametrize("max_backoff_seconds", [1, 5, 600, 86_400])
def test_no_wait_is_longer_than_max_backoff_seconds_and_the_longest_is_reached(max_backoff_seconds):
    delays = [retry_delay(attempts, max_backoff_seconds) for attempts in range(1, 200)]

    assert max(delays) == max_backoff_seconds
    assert delays == sorted(delays)


@pytest.mark.parametrize("attempts", [10**3, 10**6, 10**100])
def test_a_huge_number_of_failures_waits_the_longest_without_overflowing(attempts):
    assert retry_delay(attempts, 600) == 600
    assert retry_delay(attempts, 86_400) == 86_400


# --- signatures ------------------------------------------------------------------------------------


def test_the_signature_is_the_standard_webhooks_specifications_test_vector():
    signed = signature(decode_secret(SECRET), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')

    assert signed == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("format", FORMATS)
def test_standard_webhooks_verifies_a_signed_delivery(format):
    sent = deliver(hook(format=format))
    at = now()
    headers = sent.headers(at)

    assert Verifier(SECRET).verify(sent.body, headers) == json.loads(sent.body)
    assert headers["webhook-timestamp"] == str(at)


@pytest.mark.parametrize("format", FORMATS)
def test_standard_webhooks_refuses_a_body_changed_by_one_byte(format):
    sent = deliver(hook(format=format))
    headers = sent.headers(now())
    changed = sent.body[:-1] + b" "

    with pytest.raises(WebhookVerificationError):
        Verifier(SECRET).verify(changed, headers)


@pytest.mark.parametrize("format", FORMATS)
def test_standard_webhooks_refuses_the_signature_with_another_timestamp(format):
    sent = deliver(hook(format=format))
    at = now()
    headers = {**sent.headers(at), "webhook-timestamp": str(at - 1)}

    with pytest.raises(WebhookVerificationError):
        Verifier(SECRET).verify(sent.body, headers)


@pytest.mark.parametrize("format", FORMATS)
def test_standard_webhooks_refuses_a_delivery_signed_with_another_secret(format):
    sent = deliver(hook(format=format, secret=decode_secret(OTHER_SECRET)))

    with pytest.raises(WebhookVerificationError):
        Verifier(SECRET).verify(sent.body, sent.headers(now()))
    assert Verifier(OTHER_SECRET).verify(sent.body, sent.headers(now()))


def test_a_webhook_without_a_secret_sends_no_signature():
    headers = deliver(hook(secret=None)).headers(now())

    assert "webhook-signature" not in {name.lower() for name in headers}
    assert headers["webhook-id"] and headers["webhook-timestamp"]


def test_every_attempt_at_one_event_carries_the_same_webhook_id_and_body():
    first = deliver()
    again = deliver()  # as after a restart: built anew from the same stored event
    at = now()

    ids = {first.headers(at)["webhook-id"], first.headers(at + 60)["webhook-id"], again.headers(at + 600)["webhook-id"]}
    assert len(ids) == 1
    assert again.body == first.body


def test_the_webhook_id_differs_between_events_and_between_webhooks():
    at = now()
    ids = [
        deliver(hook(name="audit-sink"), make_event(id=42)).headers(at)["webhook-id"],
        deliver(hook(name="audit-sink"), make_event(id=43)).headers(at)["webhook-id"],
        deliver(hook(name="chat"), make_event(id=42)).headers(at)["webhook-id"],
        # Names and ids that would run together if the id were a bare concatenation.
        deliver(hook(name="audit-sink-4"), make_event(id=2)).headers(at)["webhook-id"],
        deliver(hook(name="audit-sink-42"), make_event(id=1)).headers(at)["webhook-id"],
        deliver(hook(name="audit-sink-4"), make_event(id=21)).headers(at)["webhook-id"],
    ]

    assert len(set(ids)) == len(ids), ids


def test_the_webhook_id_is_the_name_the_event_id_and_the_first_12_hex_digits_of_the_hash():
    at = now()
    sent = deliver(hook(name="audit-sink"), make_event(id=42, hash=HASH))

    assert sent.headers(at)["webhook-id"] == sent.message_id == "audit-sink-42-3f9c2e1a7b4d"
    # The signature covers that id: standardwebhooks checks it against the header as sent.
    assert Verifier(SECRET).verify(sent.body, sent.headers(at)) == json.loads(sent.body)


def test_a_new_event_under_an_old_id_as_after_a_restore_gets_another_webhook_id():
    # A restored backup gives event 42 out again, to a new event: another hash, so another webhook-id,
    # which a receiver that has seen the old event's does not drop as a repeat.
    at = now()
    before = make_event(id=42, hash=HASH)
    after_the_restore = make_event(id=42, hash="9d0e" + HASH[4:], actor="dave@example.com")
    old, new = (deliver(hook(name="audit-sink"), event).headers(at)["webhook-id"]
                for event in (before, after_the_restore))

    assert old != new
    assert (old, new) == ("audit-sink-42-3f9c2e1a7b4d", "audit-sink-42-9d0e2e1a7b4d")
    # The same event, sent again after the restore (the position went back), keeps its webhook-id.
    assert deliver(hook(name="audit-sink"), before).headers(at + 60)["webhook-id"] == old


def test_an_event_without_a_hash_is_named_by_its_id_alone():
    # A history from before the hash chain: nothing to add.
    assert deliver(hook(name="audit-sink"), make_event(id=42, hash=None)).headers(now())["webhook-id"] \
        == "audit-sink-42"


def test_an_event_not_yet_stored_is_not_delivered():
    with pytest.raises(ValueError):
        deliver(event=make_event(id=None))


# --- bodies ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type, first_success", [
    pytest.param(event_type, first_success, id=f"{event_type}{'-first' if first_success else ''}")
    for event_type in lifecycle.EVENT_TYPES for first_success in ((False, True) if event_type == "succeeded"
                                                                   else (False,))
])
def test_a_cloudevents_body_is_the_cdevents_export_of_the_event(event_type, first_success):
    event = make_event(event_type, note="ship it")
    sent = deliver(hook(format="cloudevents"), event, first_success=first_success)

    assert json.loads(sent.body) == cdevents.cloudevent(event, DEPLOYMENT, first_success=first_success)
    assert sent.headers(now())["Content-Type"] == "application/cloudevents+json"


def test_a_first_success_and_a_later_one_are_different_cloudevents():
    first = json.loads(deliver(hook(format="cloudevents"), first_success=True).body)
    later = json.loads(deliver(hook(format="cloudevents"), first_success=False).body)

    assert first["type"] != later["type"]


@pytest.mark.parametrize("event_type", lifecycle.EVENT_TYPES)
def test_a_json_body_is_the_event_and_its_deployment_as_the_api_shows_them(event_type):
    event = make_event(event_type, note="by the book", details={"approvals": 1, "required_approvals": 1})
    deployment = make_deployment(labels={"team": "payments"})
    sent = deliver(hook(format="json"), event, deployment)

    assert json.loads(sent.body) == {"event": event_json(event), "deployment": deployment_json(deployment)}
    assert sent.headers(now())["Content-Type"] == "application/json"


def test_a_slack_body_is_json_with_a_text():
    sent = deliver(hook(format="slack"))

    assert set(json.loads(sent.body)) == {"text"}
    assert sent.headers(now())["Content-Type"] == "application/json"


# What a Slack reader should see happened, written out apart from webhooks.py.
HAPPENED = {
    "created": "requested", "approved": "approved", "rejected": "rejected", "started": "started",
    "succeeded": "succeeded", "failed": "failed", "rolled_back": "rolled back", "cancelled": "cancelled",
}


def test_every_event_type_says_in_slack_what_happened():
    assert set(HAPPENED) == set(lifecycle.EVENT_TYPES)


@pytest.mark.parametrize("event_type", lifecycle.EVENT_TYPES)
def test_a_slack_text_names_service_environment_version_what_happened_and_who(event_type):
    text = slack_text_of(make_event(event_type, actor="carol@example.com"))

    assert DEPLOYMENT.service in text
    assert DEPLOYMENT.environment in text
    assert DEPLOYMENT.version in text
    assert re.search(rf"\b{HAPPENED[event_type]}\b", text), text
    assert "by carol@example.com" in text


def test_slack_texts_of_different_event_types_differ():
    texts = {slack_text_of(make_event(event_type)) for event_type in lifecycle.EVENT_TYPES}

    assert len(texts) == len(lifecycle.EVENT_TYPES)


def test_a_partial_approval_says_how_many_of_how_many_in_slack():
    partial = make_event("approved", to_status="pending_approval", details={"approvals": 1, "required_approvals": 2})

    assert "(1 of 2)" in slack_text_of(partial)


def test_a_rollback_to_a_named_version_says_which_in_slack():
    text = slack_text_of(make_event("rolled_back"), make_deployment(status="rolled_back",
                                                                    rolled_back_to="2026.11.20-a1b2c3d"))

    assert "rolled back to 2026.11.20-a1b2c3d" in text


def test_a_note_is_in_the_slack_text():
    assert "JIRA-4812 verified on the canary" in slack_text_of(make_event(note="JIRA-4812 verified on the canary"))


def test_a_long_note_is_cut_in_the_slack_text():
    note = "".join(f"step {n} done; " for n in range(1000))

    text = slack_text_of(make_event(note=note))

    assert note[:200] in text
    assert note not in text and "step 999 done" not in text
    assert len(text) < 600


@pytest.mark.parametrize("field, value", [
    pytest.param("version", "1.0<b>&c", id="version"),
    pytest.param("note", "ping <!channel> & <@U024BE7LH>", id="note"),
    pytest.param("actor", "<https://evil.example|carol>", id="actor"),
])
def test_slack_markup_characters_in_client_text_are_escaped(field, value):
    event = make_event(**{field: value}) if field != "version" else make_event()
    deployment = make_deployment(version=value) if field == "version" else DEPLOYMENT

    text = slack_text_of(event, deployment)

    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert escaped in text
    assert "<" not in text and ">" not in text
    assert "&" not in re.sub("&(amp|lt|gt);", "", text)


@pytest.mark.parametrize("format", FORMATS)
def test_non_ascii_text_is_sent_as_utf_8_and_still_verifies(format):
    note = "déploiement réussi 🚀"
    sent = deliver(hook(format=format), make_event(note=note))

    assert note.encode("utf-8") in sent.body
    assert Verifier(SECRET).verify(sent.body, sent.headers(now())) == json.loads(sent.body.decode("utf-8"))
