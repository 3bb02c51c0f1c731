"""Group commit: writes that arrive while another is being written are committed together.

The writers of one process take turns.  A writer that finds no write in
progress becomes the leader: it takes every write queued so far (its own
included) and hands them to ``commit_batch``, which runs them in one
transaction.  Writers that arrive meanwhile queue and wait; when the leader is
done, it publishes every outcome at once and the next waiting writer leads the
next batch.  No writer is answered before the COMMIT that made its write
durable, and a batch costs one COMMIT (one fsync, and each changed page written
once) however many writes it holds.  Measured in docs/performance.md.

Pure threading: what a batch means for the database is ``commit_batch``'s
business (repository.py).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class QueueTimeout(RuntimeError):
    """A write waited for the writes before it for longer than the timeout."""


class PendingWrite(Generic[T]):
    """One queued write: its operation and, once its batch is done, its result or its error."""

    def __init__(self, operation: Callable[[Any], T]):
        self.operation = operation
        self.result: T | None = None
        self.error: BaseException | None = None
        self.taken = False  # part of a batch now being written
        self.finished = False  # the outcome is final

    def succeed(self, result: T) -> None:
        self.result, self.error = result, None

    def fail(self, error: BaseException) -> None:
        self.result, self.error = None, error

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommit:
    """Takes turns among this process's writers, batching the ones that wait.

    ``commit_batch(batch)`` runs the operations of one batch and records each
    one's outcome with ``succeed``/``fail``; if it raises, every write of the
    batch fails with that error.  A write that is still queued (not yet part of
    a batch) after ``timeout`` seconds fails with QueueTimeout.
    """

    def __init__(self, commit_batch: Callable[[list[PendingWrite]], None], timeout: float):
        self._commit_batch = commit_batch
        self._timeout = timeout
        self._turn = threading.Condition()
        self._queue: list[PendingWrite] = []
        self._writing = False

    def submit(self, operation: Callable[[Any], T]) -> T:
        """Run ``operation`` in a batch and return its result once committed (or raise its error)."""
        pending: PendingWrite[T] = PendingWrite(operation)
        deadline = time.monotonic() + self._timeout
        with self._turn:
            self._queue.append(pending)
            while self._writing and not pending.finished:
                remaining = deadline - time.monotonic()
                if remaining <= 0 and not pending.taken:
                    self._queue.remove(pending)
                    raise QueueTimeout("other writes of this process held the database past the busy timeout")
                # Once taken into a batch it cannot be abandoned: wait for the batch.
                self._turn.wait(remaining if not pending.taken else None)
            if pending.finished:
                return pending.outcome()
            batch, self._queue = self._queue, []
            for queued in batch:
                queued.taken = True
            self._writing = True
        try:
            self._commit_batch(batch)
        except BaseException as error:  # noqa: B036 - every writer of the batch must hear of it
            for queued in batch:
                queued.fail(error)
        finally:
            with self._turn:
                for queued in batch:
                    queued.finished = True
                self._writing = False
                self._turn.notify_all()
        return pending.outcome()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the turn for a block of the caller's own (no batching), as a lock would.

        :raises QueueTimeout: when the turn did not come within the timeout.
        """
        deadline = time.monotonic() + self._timeout
        with self._turn:
            while self._writing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QueueTimeout("other writes of this process held the database past the busy timeout")
                self._turn.wait(remaining)
            self._writing = True
        try:
            yield
        finally:
            with self._turn:
                self._writing = False
                self._turn.notify_all()
