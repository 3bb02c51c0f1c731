"""The part of a CPU a deliverer takes (``share``): what keeps ``deployapi serve``'s deliveries from
taking the interpreter from its requests.  Ratios of drain times measured side by side, never absolute
times: a resting deliverer takes several times as long as one that does not rest, and one whose process
is not busy does not rest.
"""

from __future__ import annotations

import time

import pytest
from builders import create_body, new_deployment
from receivers import SECRET, Receiver

from deployapi.delivery import Deliverer
from deployapi.repository import Deliveries, Repository
from deployapi.webhooks import Webhook, decode_secret

EVENTS = 400
NOW = "2026-11-26T10:00:00.000000Z"


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


def drain_seconds(tmp_path, receiver, name: str, **options) -> float:
    """Seconds a new deliverer takes to deliver a backlog of EVENTS created events, from its first delivery.

    Timed from the first event delivered, not from ``start()``: a deliverer's thread that starts before
    the lease is taken waits for it in steps of 0.2 s, a start-up cost that would be a step of the same
    size as a whole drain on a fast machine, and that has nothing to do with the share.
    """
    repository = Repository(tmp_path / f"{name}.db")
    try:
        Deliveries(repository).register(["audit"], NOW)
        for _ in range(EVENTS):
            repository.create_deployment(new_deployment(**create_body()))
        hook = Webhook("audit", receiver.url, "json", decode_secret(SECRET))
        deliverer = Deliverer(repository, [hook], **options)
        deliverer.start()
        try:
            deliveries = Deliveries(repository)
            while deliveries.position("audit").delivered_through == 0:
                time.sleep(0.002)
            started = time.perf_counter()
            while deliveries.position("audit").delivered_through < EVENTS:
                time.sleep(0.01)
            return time.perf_counter() - started
        finally:
            deliverer.stop(1)
    finally:
        repository.close()


def test_a_deliverer_keeping_to_a_small_share_drains_a_backlog_several_times_slower_while_busy(tmp_path, receiver):
    full = drain_seconds(tmp_path, receiver, "full")
    resting = drain_seconds(tmp_path, receiver, "resting", share=0.05, busy=lambda: True)

    # At 1/20 of a CPU it rests 19 times as long as it works; its work is part of each
    # delivery's wall time (the receiver's is the rest), so at least three times as long in all.
    assert resting > 3 * full, (resting, full)


def test_a_deliverer_whose_process_is_idle_does_not_rest(tmp_path, receiver):
    full = drain_seconds(tmp_path, receiver, "full")
    idle = drain_seconds(tmp_path, receiver, "idle", share=0.05, busy=lambda: False)

    assert idle < 2 * full, (idle, full)
