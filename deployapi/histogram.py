"""Observations counted in fixed buckets, as Prometheus histograms count them.

:class:`Histogram` is not thread-safe: whoever shares one holds a lock around
:meth:`Histogram.observe` and :meth:`Histogram.snapshot`, so that a reader
never sees a count without its sum.  Each observation costs a bisection and
two additions; the buckets become cumulative only when read.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class HistogramSnapshot:
    """A histogram as read: ``cumulative[i]`` observations at most ``bounds[i]``, the last one ``+Inf``."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        return self.cumulative[-1]


class Histogram:
    """Counts of observations per bucket (upper bounds inclusive, as Prometheus's ``le``), and their sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]):
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("bucket bounds must be increasing")
        self.bounds = tuple(float(bound) for bound in bounds)
        # One more than the bounds: the +Inf bucket.
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le is inclusive).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def snapshot(self) -> HistogramSnapshot:
        cumulative, running = [], 0
        for count in self.counts:
            running += count
            cumulative.append(running)
        return HistogramSnapshot(self.bounds, tuple(cumulative), self.total)
