"""What a deliverer does when its hold on the lease wavers: a renewal the database refused, and a lease
that went to another deliverer and came back.  Found in review: in both, events were sent again, the
second time out of order (after the other deliverer had delivered them and more).  Real databases,
deliverers and receivers, as in test_webhook_deliveries.py.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from builders import new_deployment
from receivers import SECRET, Receiver

from deployapi.delivery import Deliverer
from deployapi.repository import Deliveries, Repository
from deployapi.webhooks import Webhook, decode_secret


def hook(name: str, receiver: Receiver, **fields) -> Webhook:
    return Webhook(name, receiver.url, secret=decode_secret(SECRET), **{"max_backoff_seconds": 1, **fields})


def wait_until(ready, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.02)


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


def test_a_renewal_the_database_refuses_does_not_abort_the_request_in_flight(db_path, receiver):
    repo = Repository(db_path, busy_timeout_ms=200)
    receiver.delay = 2.5  # the answer comes after at least one renewal (every 0.5 s) was refused
    deliverer = Deliverer(repo, [hook("audit", receiver)], timeout=5, lease_seconds=12, renew_seconds=0.5,
                          poll_seconds=0.1)
    blocker = sqlite3.connect(db_path, isolation_level=None, timeout=5, check_same_thread=False)
    try:
        deliverer.start()
        wait_until(lambda: deliverer.holding)
        repo.create_deployment(new_deployment())
        wait_until(lambda: receiver.in_flight == 1)
        # Another process holds the write lock past the busy timeout: the renewals in the meantime fail.
        blocker.execute("BEGIN IMMEDIATE")
        threading.Timer(1.2, lambda: blocker.execute("COMMIT")).start()
        wait_until(lambda: Deliveries(repo).position("audit").delivered_through == 1)

        assert [arrival.answered for arrival in receiver.arrivals] == [204]
    finally:
        deliverer.stop(0.5)
        blocker.close()
        repo.close()


def test_a_deliverer_that_gets_the_lease_back_reads_its_position_again_instead_of_resending_old_events(db_path):
    options = {"timeout": 2, "lease_seconds": 10, "renew_seconds": 0.5, "poll_seconds": 0.1}
    first_repo, second_repo = Repository(db_path), Repository(db_path)
    with Receiver(mode="fail") as receiver:
        first = Deliverer(first_repo, [hook("audit", receiver, max_backoff_seconds=3)], **options)
        second = Deliverer(second_repo, [hook("audit", receiver, max_backoff_seconds=3)], **options)
        try:
            first.start()
            wait_until(lambda: first.holding)
            second.start()
            for _ in range(3):
                first_repo.create_deployment(new_deployment())
            wait_until(lambda: len(receiver.arrivals) >= 2)  # the first deliverer backs off (2 s) from event 1
            receiver.set_mode("ok")
            # The lease goes to the second deliverer, as when the first's renewals failed past its
            # expiry; the first sees it at its next renewal, within its back-off.
            with sqlite3.connect(db_path, timeout=5) as conn:
                conn.execute("UPDATE webhook_deliverer SET holder = ?, expires_at = ?",
                             (second.holder, time.time() + 60))
            wait_until(lambda: not first.holding)
            wait_until(lambda: Deliveries(second_repo).position("audit").delivered_through == 3)
            second.stop(0.5)  # released: the first takes the lease back, its old batch (events 1-3) in hand
            wait_until(lambda: first.holding)
            time.sleep(1.5)  # for the resend there must not be

            delivered = [arrival.webhook_id.split("-")[1] for arrival in receiver.accepted()]
            assert delivered == ["1", "2", "3"]
        finally:
            first.stop(0.5)
            second.stop(0.5)
            first_repo.close()
            second_repo.close()
