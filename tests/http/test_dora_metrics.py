"""GET /metrics/dora on hand-built histories whose answers are worked out by hand (see docs/metrics.md)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from builders import START, assert_invalid_fields
from histories import Timeline, at, shipped

from deployapi.lifecycle import format_timestamp

DAY = 24 * 60  # minutes


@pytest.fixture
def timeline(db_path):
    t = Timeline(db_path)
    yield t
    t.close()


def metrics(timeline, since=0, until=2 * DAY, **params) -> dict:
    return timeline.get("/metrics/dora", since=at(since), until=at(until), **params)


def minutes(*values: float) -> list[float]:
    return [value * 60.0 for value in values]


def known_history(timeline: Timeline) -> Timeline:
    """Two days of billing deployments, in minutes from the window's start (window: minutes 0 to 2880).

    | deployment | env        | requested | approved | started | outcome                         |
    |------------|------------|-----------|----------|---------|---------------------------------|
    | d1         | production | -60       | -30      | 10      | succeeded 20                    |
    | d2         | production | 30        | 40       | 50      | failed 55                       |
    | d3         | production | 60        | 90       | 100     | succeeded 115, rolled back 200  |
    | d4         | production | 210       | 215      | 220     | succeeded 245                   |
    | d5         | production | 300       | 320      | 330     | still running                   |
    | d6         | production | 2800      | 2850     | 2870    | failed 2875, never restored     |
    | s1         | staging    | 0         | 1        | 2       | succeeded 3                     |

    d1 was committed at -120, d2 at 0, d3 at 0 and d4 at 200; the others name no commit.
    """
    timeline.deploy(-60, "1.0.0", steps=shipped(-30, 10, 20), committed=-120)
    timeline.deploy(30, "1.1.0", steps={"approve": 40, "start": 50, "fail": 55}, committed=0)
    d3 = timeline.deploy(60, "1.2.0", steps=shipped(90, 100, 115), committed=0)
    timeline.act(d3, "rollback", 200)
    timeline.deploy(210, "1.3.0", steps=shipped(215, 220, 245), committed=200)
    timeline.deploy(300, "1.4.0", steps={"approve": 320, "start": 330})
    timeline.deploy(2800, "1.5.0", steps={"approve": 2850, "start": 2870, "fail": 2875})
    timeline.deploy(0, "2.0.0", environment="staging", steps=shipped(1, 2, 3))
    return timeline


@pytest.fixture
def history(timeline):
    return known_history(timeline)


def test_every_metric_of_a_known_history(history):
    assert metrics(history) == {
        "service": None, "environment": None, "since": at(0), "until": at(2 * DAY),
        # d1, d3, d4 and s1 succeeded in two days.
        "deployment_frequency_per_day": 2.0,
        # Of the 7 started (d1-d6, s1), d2 and d6 failed and d3 was rolled back.
        "change_failure_rate": pytest.approx(3 / 7),
        # d2's failure at 55 until d3 succeeded at 115; d3's rollback at 200 until d4 at 245.
        "time_to_restore_seconds": {"median": 2700.0, "p90": 3600.0, "count": 2, "unrestored": 1},
        # d2 10, d3 30, d4 5, d5 20, d6 50, s1 1 minutes; d1 was approved before the window.
        "approval_lead_time_seconds": {"median": 600.0, "p90": 3000.0, "count": 6},
        # d1 10, d2 5, d3 15, d4 25, d6 5, s1 1 minutes; d5 has not finished.
        "deploy_duration_seconds": {"median": 300.0, "p90": 1500.0, "count": 6},
        # Commit to success: d4 45, d3 115, d1 140 minutes; d2 failed, s1 names no commit.
        "lead_time_for_changes_seconds": {"median": 6900.0, "p90": 8400.0, "count": 3},
        "counts": {"succeeded": 4, "started": 7, "failed_changes": 3},
    }


def test_cancelled_deployments_count_in_no_metric_but_their_approval(history, tmp_path):
    same = known_history(Timeline(tmp_path / "same.db"))
    try:
        for timeline, cancelled in ((history, True), (same, False)):
            # Approved, then cancelled or left approved; requested, then cancelled or left pending.
            timeline.deploy(400, "1.6.0", steps={"approve": 410, **({"cancel": 420} if cancelled else {})})
            timeline.deploy(500, "1.7.0", steps={"cancel": 510} if cancelled else {})
        assert metrics(history) == metrics(same)
        assert metrics(history)["approval_lead_time_seconds"]["count"] == 7
    finally:
        same.close()


def test_environment_and_service_narrow_the_scope(history):
    production = metrics(history, environment="production")
    assert production["environment"] == "production"
    assert production["deployment_frequency_per_day"] == 1.5
    assert production["change_failure_rate"] == 0.5
    assert production["approval_lead_time_seconds"] == {"median": 1200.0, "p90": 3000.0, "count": 5}
    assert production["deploy_duration_seconds"] == {"median": 600.0, "p90": 1500.0, "count": 5}

    staging = metrics(history, service="billing", environment="staging")
    assert (staging["service"], staging["environment"]) == ("billing", "staging")
    assert staging["deployment_frequency_per_day"] == 0.5
    assert staging["change_failure_rate"] == 0.0
    assert staging["time_to_restore_seconds"] == {"median": None, "p90": None, "count": 0, "unrestored": 0}
    assert staging["deploy_duration_seconds"] == {"median": 60.0, "p90": 60.0, "count": 1}

    assert metrics(history, service="search")["counts"] == {"succeeded": 0, "started": 0, "failed_changes": 0}


def test_an_empty_window_has_zero_frequency_and_no_rates_or_durations(history):
    assert metrics(history, since=3 * DAY, until=4 * DAY) == {
        "service": None, "environment": None, "since": at(3 * DAY), "until": at(4 * DAY),
        "deployment_frequency_per_day": 0.0,
        "change_failure_rate": None,  # nothing started: 0 / 0
        "time_to_restore_seconds": {"median": None, "p90": None, "count": 0, "unrestored": 0},
        "approval_lead_time_seconds": {"median": None, "p90": None, "count": 0},
        "deploy_duration_seconds": {"median": None, "p90": None, "count": 0},
        "lead_time_for_changes_seconds": {"median": None, "p90": None, "count": 0},
        "counts": {"succeeded": 0, "started": 0, "failed_changes": 0},
    }


def test_an_empty_record_has_no_metrics(timeline):
    body = metrics(timeline)
    assert body["deployment_frequency_per_day"] == 0.0
    assert body["change_failure_rate"] is None


# --- deployment frequency -----------------------------------------------------------


def test_the_window_includes_since_and_excludes_until(timeline):
    timeline.deploy(-10, steps=shipped(-5, -2, 0))  # succeeds exactly at since
    timeline.deploy(-10, steps=shipped(-5, -2, DAY - 1))
    timeline.deploy(-10, steps=shipped(-5, -2, DAY))  # exactly at until

    body = metrics(timeline, since=0, until=DAY)
    assert body["counts"]["succeeded"] == 2
    assert body["deployment_frequency_per_day"] == 2.0


def test_an_empty_window_answers_zeros_even_with_a_success_at_that_instant(history):
    # [since, until) with since == until holds nothing: not a 422, and no division by a zero length.
    assert metrics(history, since=20, until=21)["counts"]["succeeded"] == 1  # d1, at minute 20
    body = metrics(history, since=20, until=20)
    assert body == {
        "service": None, "environment": None, "since": at(20), "until": at(20),
        "deployment_frequency_per_day": 0.0, "change_failure_rate": None,
        "time_to_restore_seconds": {"median": None, "p90": None, "count": 0, "unrestored": 0},
        "approval_lead_time_seconds": {"median": None, "p90": None, "count": 0},
        "deploy_duration_seconds": {"median": None, "p90": None, "count": 0},
        "lead_time_for_changes_seconds": {"median": None, "p90": None, "count": 0},
        "counts": {"succeeded": 0, "started": 0, "failed_changes": 0},
    }


def test_a_window_that_ends_before_it_starts_is_422_on_until(history):
    response = history.client.get("/metrics/dora", query_string={"since": at(21), "until": at(20)})
    assert_invalid_fields(response, ["until"])


def test_frequency_is_per_day_of_the_window_and_counts_successes_later_rolled_back(timeline):
    rolled_back = timeline.deploy(0, steps=shipped(1, 2, 3))
    timeline.act(rolled_back, "rollback", 4)
    timeline.deploy(10, steps={"approve": 11, "start": 12, "fail": 13})  # not a success

    assert metrics(timeline, since=0, until=4 * DAY)["deployment_frequency_per_day"] == 0.25
    assert metrics(timeline, since=0, until=12 * 60)["deployment_frequency_per_day"] == 2.0


# --- change failure rate ----------------------------------------------------------------


def test_change_failure_rate_counts_each_failed_deployment_started_in_the_window_once(timeline):
    timeline.deploy(0, steps=shipped(1, 2, 3))
    timeline.deploy(0, steps={"approve": 1, "start": 2, "fail": 3})
    failed_then_rolled_back = timeline.deploy(0, steps={"approve": 1, "start": 2, "fail": 3})
    timeline.act(failed_then_rolled_back, "rollback", 4)  # one failed change, not two
    timeline.deploy(0, steps={"approve": 1, "start": 2, "rollback": 3})  # rolled back mid-rollout

    body = metrics(timeline, since=0, until=DAY)
    assert body["counts"] == {"succeeded": 1, "started": 4, "failed_changes": 3}
    assert body["change_failure_rate"] == 0.75


def test_change_failure_rate_belongs_to_the_window_of_the_start(timeline):
    # Started before the window, failed inside it: in neither count.
    timeline.deploy(-30, steps={"approve": -20, "start": -10, "fail": 10})
    # Started inside the window, rolled back after it: a failed change of this window.
    late = timeline.deploy(0, steps=shipped(1, 2, 3))
    timeline.act(late, "rollback", 2 * DAY)
    # Started inside the window and still running: started, not (yet) failed.
    timeline.deploy(0, steps={"approve": 5, "start": 6})

    body = metrics(timeline, since=0, until=DAY)
    assert body["counts"] == {"succeeded": 1, "started": 2, "failed_changes": 1}
    assert body["change_failure_rate"] == 0.5


# --- time to restore ---------------------------------------------------------------------


def test_each_failure_is_restored_by_the_next_success_on_the_same_service_and_environment(timeline):
    timeline.deploy(0, steps={"approve": 1, "start": 2, "fail": 100})
    timeline.deploy(0, steps={"approve": 1, "start": 2, "fail": 130})
    # A success elsewhere restores nothing here.
    timeline.deploy(0, environment="staging", steps=shipped(1, 2, 140))
    timeline.deploy(0, service="search", steps=shipped(1, 2, 150))
    timeline.deploy(0, steps=shipped(1, 2, 160))

    # Two failed changes before one success: each has its own restore time (60 and 30 minutes).
    expected = {"median": 1800.0, "p90": 3600.0, "count": 2, "unrestored": 0}
    scoped = metrics(timeline, since=0, until=DAY, service="billing", environment="production")
    assert scoped["time_to_restore_seconds"] == expected
    # Unscoped too, the other environments' successes do not restore production.
    assert metrics(timeline, since=0, until=DAY)["time_to_restore_seconds"] == expected


def test_a_success_at_the_same_instant_as_a_failure_does_not_restore_it(timeline):
    failed = timeline.deploy(0, steps={"approve": 1, "start": 2})
    same_instant = timeline.deploy(0, steps={"approve": 1, "start": 2})
    timeline.act(failed, "fail", 10)
    timeline.act(same_instant, "succeed", 10)
    timeline.deploy(0, steps=shipped(1, 2, 25))

    assert metrics(timeline, since=0, until=DAY)["time_to_restore_seconds"] == {
        "median": 900.0, "p90": 900.0, "count": 1, "unrestored": 0}


def test_a_rollback_starts_the_clock_and_a_failure_then_rollback_starts_it_once(timeline):
    shipped_then_rolled_back = timeline.deploy(0, steps=shipped(1, 2, 10))
    timeline.act(shipped_then_rolled_back, "rollback", 50)
    timeline.deploy(0, steps=shipped(1, 2, 80))  # 30 minutes after the rollback
    failed = timeline.deploy(0, steps={"approve": 1, "start": 90, "fail": 100})
    timeline.act(failed, "rollback", 110)  # the same failed change: its clock started at 100
    timeline.deploy(0, steps=shipped(1, 2, 145))  # 45 minutes after the failure

    body = metrics(timeline, since=0, until=DAY)
    assert body["time_to_restore_seconds"] == {"median": 1800.0, "p90": 2700.0, "count": 2, "unrestored": 0}


def test_a_failure_with_no_later_success_is_unrestored_not_a_restore_time(timeline):
    timeline.deploy(0, steps=shipped(1, 2, 3))  # a success before the failure restores nothing
    timeline.deploy(0, steps={"approve": 1, "start": 2, "fail": 10})

    assert metrics(timeline, since=0, until=DAY)["time_to_restore_seconds"] == {
        "median": None, "p90": None, "count": 0, "unrestored": 1}


def test_restore_time_belongs_to_the_window_of_the_failure(timeline):
    before = timeline.deploy(-60, steps={"approve": -50, "start": -40, "fail": -30})  # failed before the window
    timeline.act(before, "rollback", 5)  # the same failed change, so still a failure before the window
    timeline.deploy(-60, steps=shipped(-50, -40, 30))  # restores it inside the window: not counted
    timeline.deploy(0, steps={"approve": 1, "start": DAY - 20, "fail": DAY - 10})  # failed inside
    timeline.deploy(0, steps=shipped(1, 2, DAY + 50))  # restored after the window: counted

    assert metrics(timeline, since=0, until=DAY)["time_to_restore_seconds"] == {
        "median": 3600.0, "p90": 3600.0, "count": 1, "unrestored": 0}


# --- approval lead time and deploy duration ------------------------------------------------


def test_approval_lead_time_runs_from_request_to_approval_in_the_window(timeline):
    timeline.deploy(-30, steps={"approve": 10})  # requested before the window: 40 minutes
    timeline.deploy(20, steps={"approve": 25})  # 5 minutes
    timeline.deploy(20, steps={"reject": 30})  # rejected: no approval
    timeline.deploy(20, steps={"approve": DAY + 1})  # approved after the window
    timeline.request(20)  # never reviewed

    assert metrics(timeline, since=0, until=DAY)["approval_lead_time_seconds"] == {
        "median": 300.0, "p90": 2400.0, "count": 2}


def test_deploy_duration_runs_from_start_to_whatever_ends_the_rollout(timeline):
    timeline.deploy(0, steps=shipped(1, 10, 20))  # succeeded: 10 minutes
    timeline.deploy(0, steps={"approve": 1, "start": 10, "fail": 13})  # failed: 3
    timeline.deploy(0, steps={"approve": 1, "start": 10, "rollback": 17})  # rolled back mid-rollout: 7
    timeline.deploy(-60, steps=shipped(-50, -40, 40))  # started before the window, finished inside: 80
    timeline.deploy(0, steps={"approve": 1, "start": DAY - 5, "succeed": DAY + 5})  # finished after it
    timeline.deploy(0, steps={"approve": 1, "start": 2})  # still running

    assert metrics(timeline, since=0, until=DAY)["deploy_duration_seconds"] == {
        "median": 420.0, "p90": 4800.0, "count": 4}


def test_percentiles_are_nearest_rank(timeline):
    # Approval lead times of 1 to 10 minutes: the median is the 5th value, p90 the 9th.
    for n in range(1, 11):
        timeline.deploy(0, steps={"approve": n})
    assert metrics(timeline, since=0, until=DAY)["approval_lead_time_seconds"] == {
        "median": 300.0, "p90": 540.0, "count": 10}

    # One more (11 values): ranks ceil(5.5) = 6 and ceil(9.9) = 10.
    timeline.deploy(0, steps={"approve": 11})
    assert metrics(timeline, since=0, until=DAY)["approval_lead_time_seconds"] == {
        "median": 360.0, "p90": 600.0, "count": 11}


def test_durations_are_exact_to_the_microsecond(timeline):
    deployment_id = timeline.request(0)
    timeline.clock.now += timedelta(seconds=1.5, microseconds=1)
    response = timeline.client.post(f"/deployments/{deployment_id}/approve", json={"actor": "bob"})
    assert response.status_code == 200

    assert metrics(timeline, since=0, until=DAY)["approval_lead_time_seconds"]["median"] == 1.500001


# --- the window ------------------------------------------------------------------------------


def test_the_default_window_is_the_30_days_before_now(timeline):
    timeline.deploy(0, steps=shipped(1, 2, 3))  # 40 days before now: outside
    timeline.deploy(10 * DAY, steps=shipped(10 * DAY + 1, 10 * DAY + 2, 10 * DAY + 3))  # 30 days before: inside
    timeline.set_now(40 * DAY)

    body = timeline.get("/metrics/dora")
    assert (body["since"], body["until"]) == (at(10 * DAY), at(40 * DAY))
    assert body["counts"]["succeeded"] == 1
    assert body["deployment_frequency_per_day"] == pytest.approx(1 / 30)


def test_a_missing_bound_defaults_from_the_other_or_from_now(timeline):
    timeline.set_now(40 * DAY)

    only_since = timeline.get("/metrics/dora", since=at(35 * DAY))
    assert (only_since["since"], only_since["until"]) == (at(35 * DAY), at(40 * DAY))
    only_until = timeline.get("/metrics/dora", until=at(5 * DAY))
    assert (only_until["since"], only_until["until"]) == (at(-25 * DAY), at(5 * DAY))


def test_bounds_in_other_offsets_are_answered_in_utc(timeline):
    body = timeline.get("/metrics/dora", since="2026-11-26T11:00:00+01:00", until="2026-11-27T10:00:00.5Z")
    assert (body["since"], body["until"]) == ("2026-11-26T10:00:00.000000Z", "2026-11-27T10:00:00.500000Z")


@pytest.mark.parametrize("query, fields", [
    pytest.param("team=payments", ["team"], id="unknown"),
    pytest.param("since=2026-11-01T00:00:00Z&since=2026-11-02T00:00:00Z", ["since"], id="repeated"),
    pytest.param("since=yesterday", ["since"], id="malformed-since"),
    pytest.param("until=2026-11-26", ["until"], id="date-without-time"),
    pytest.param("since=2026-11-02T00:00:00Z&until=2026-11-01T00:00:00Z", ["until"], id="until-before-since"),
    pytest.param("since=2026-11-01T00:00:00Z&until=2026-11-01T01:00:00+01:00", ["until"], id="empty-window"),
    pytest.param("since=2030-01-01T00:00:00Z", ["since"], id="since-after-now"),
    pytest.param("service=Billing&environment=&since=x&limit=1", ["service", "environment", "since", "limit"],
                 id="every-problem-at-once"),
])
def test_bad_query_parameters_are_422_listing_every_one(timeline, query, fields):
    timeline.set_now(0)
    assert_invalid_fields(timeline.client.get(f"/metrics/dora?{query}"), fields)


def test_an_until_in_the_first_days_of_year_one_does_not_break_the_default_since(timeline):
    body = timeline.get("/metrics/dora", until="0001-01-05T00:00:00Z")
    assert body["since"] == "0001-01-01T00:00:00.000000Z"
    assert body["counts"]["succeeded"] == 0


def test_the_last_days_of_the_calendar_are_a_valid_window(timeline):
    timeline.deploy(0, steps=shipped(1, 2, 3))
    body = timeline.get("/metrics/dora", since="9999-09-30T23:59:59.999999Z", until="9999-12-31T23:59:59.999999Z")
    assert body["counts"]["succeeded"] == 0
    assert body["deployment_frequency_per_day"] == 0.0


def test_a_window_of_92_days_is_answered_and_a_longer_one_is_422_saying_how_long_it_may_be(timeline):
    timeline.deploy(0, steps=shipped(1, 2, 3))
    timeline.deploy(92 * DAY - 5, steps=shipped(92 * DAY - 4, 92 * DAY - 3, 92 * DAY - 2))

    longest = metrics(timeline, since=0, until=92 * DAY)
    assert longest["counts"]["succeeded"] == 2
    assert longest["deployment_frequency_per_day"] == pytest.approx(2 / 92)

    one_microsecond_more = timeline.client.get("/metrics/dora", query_string={
        "since": format_timestamp(START - timedelta(microseconds=1)), "until": at(92 * DAY)})
    assert_invalid_fields(one_microsecond_more, ["since"])
    assert one_microsecond_more.get_json()["errors"][0]["message"] == (
        f"the window may be at most 92 days long: since must be {at(0)} or later "
        f"(until is {at(92 * DAY)}); ask for longer periods window by window")


@pytest.mark.parametrize("query", [
    pytest.param({"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59.999999Z"}, id="the-whole-calendar"),
    pytest.param({"since": "2000-01-01T00:00:00Z"}, id="since-alone-years-before-now"),
])
def test_all_of_history_in_one_window_is_422(timeline, query):
    timeline.set_now(0)
    assert_invalid_fields(timeline.client.get("/metrics/dora", query_string=query), ["since"])
