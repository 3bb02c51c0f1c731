"""The pieces of GET /metrics that need no database: histograms, the text format's escaping, route labels."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from deployapi import lifecycle
from deployapi.app import _url_map
from deployapi.histogram import Histogram
from deployapi.prometheus import Exposition, method_label, route_names


def test_a_value_on_a_bound_falls_in_that_bounds_bucket_and_buckets_read_cumulative():
    histogram = Histogram([0.1, 1.0, 10.0])
    for value in (0.05, 0.1, 0.5, 1.0, 20.0):
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert snapshot.cumulative == (2, 4, 4, 5)
    assert snapshot.count == 5 and snapshot.total == pytest.approx(21.65)


def test_bucket_bounds_must_increase():
    with pytest.raises(ValueError):
        Histogram([1.0, 0.5])


def test_label_values_and_help_texts_are_escaped_as_the_format_requires():
    out = Exposition()
    out.family("x_total", "counter", 'a help with a \\ backslash\nand a line feed')
    out.sample("x_total", {"webhook": 'quote " back \\ newline \n end'}, 3)
    (family,) = text_string_to_metric_families(out.text())
    assert family.documentation == 'a help with a \\ backslash\nand a line feed'
    assert family.samples[0].labels == {"webhook": 'quote " back \\ newline \n end'}
    assert family.samples[0].value == 3


def test_a_histogram_is_written_with_its_buckets_sum_and_count():
    histogram = Histogram([0.5, 2.0])
    histogram.observe(0.25)
    histogram.observe(3.0)
    out = Exposition()
    out.family("h_seconds", "histogram", "h")
    out.histogram("h_seconds", {"route": "/x"}, histogram.snapshot())
    (family,) = text_string_to_metric_families(out.text())
    assert [(s.name, s.labels.get("le"), s.value) for s in family.samples] == [
        ("h_seconds_bucket", "0.5", 1), ("h_seconds_bucket", "2.0", 1), ("h_seconds_bucket", "+Inf", 2),
        ("h_seconds_sum", None, 3.25), ("h_seconds_count", None, 2)]


def test_each_action_has_a_route_label_of_its_own_and_the_other_rules_their_template():
    names = route_names(_url_map(metrics=True))
    choice, paths = names[next(rule for rule in names if "<any(" in rule)]
    assert choice == "action"
    assert paths == {action: f"/deployments/{{deployment_id}}/{action}" for action in lifecycle.ACTIONS}
    assert names["/deployments/<deployment_id>"] == (None, {None: "/deployments/{deployment_id}"})
    assert names["/metrics"] == (None, {None: "/metrics"})


@pytest.mark.parametrize(("method", "label"), [
    pytest.param("GET", "GET", id="GET"),
    pytest.param("PATCH", "PATCH", id="PATCH"),
    pytest.param("BREW", "other", id="not an HTTP method"),
    pytest.param("get", "other", id="methods are case-sensitive"),
])
def test_methods_http_does_not_define_share_one_label(method, label):
    assert method_label(method) == label
