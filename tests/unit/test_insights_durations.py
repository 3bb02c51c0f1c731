"""Nearest-rank medians and 90th percentiles of durations (docs/metrics.md, Percentiles)."""

from __future__ import annotations

import pytest

from deployapi.insights import Durations, durations


@pytest.mark.parametrize("values, expected", [
    pytest.param([], Durations(0, None, None), id="none"),
    pytest.param([7.5], Durations(1, 7.5, 7.5), id="one-value-is-every-percentile"),
    pytest.param([4.0, 1.0, 3.0, 2.0], Durations(4, 2.0, 4.0), id="median-of-four-is-the-second"),
    pytest.param([float(v) for v in range(10, 0, -1)], Durations(10, 5.0, 9.0), id="ten-values"),
    pytest.param([float(v) for v in range(1, 12)], Durations(11, 6.0, 10.0), id="p90-of-eleven-is-the-tenth"),
    pytest.param([1.500001, 1.500001, 0.000001], Durations(3, 1.500001, 1.500001), id="ties-and-microseconds"),
])
def test_percentiles_are_values_that_occurred_at_the_nearest_rank(values, expected):
    assert durations(values) == expected
