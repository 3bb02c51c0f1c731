"""Review policies as values: freeze windows across DST changes, approvers, the digest (deployapi/policy.py).

Every expected instant is worked out by hand from the zones' rules for 2026
(the offsets are in the comments), never by asking policy.py:

- Europe/Berlin: CET +01:00, CEST +02:00; summer time from 2026-03-29 01:00Z
  (02:00 CET -> 03:00 CEST) to 2026-10-25 01:00Z (03:00 CEST -> 02:00 CET).
- America/New_York: EST -05:00, EDT -04:00; from 2026-03-08 07:00Z
  (02:00 EST -> 03:00 EDT) to 2026-11-01 06:00Z (02:00 EDT -> 01:00 EST).
- Australia/Sydney: AEST +10:00, AEDT +11:00; AEDT until 2026-04-04 16:00Z
  (Sunday 2026-04-05 03:00 AEDT -> 02:00 AEST), again from 2026-10-03 16:00Z
  (Sunday 2026-10-04 02:00 AEST -> 03:00 AEDT).
- Asia/Kolkata: IST +05:30 all year.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, time, timedelta, timezone

import pytest

from deployapi import identities
from deployapi.policy import (
    EnvironmentPolicy,
    FixedWindow,
    Policy,
    WeeklyWindow,
    default_policy,
    freeze_at,
)

TICK = timedelta(microseconds=1)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def utc(text: str) -> datetime:
    """An instant in UTC, written without its offset: ``utc("2026-03-27T17:00:00")``."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def aware(text: str) -> datetime:
    """An instant written with its own offset: ``aware("2026-12-24T01:00:00+01:00")``."""
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() is not None
    return moment


def weekly(start: str, end: str, zone: str, reason: str | None = None) -> WeeklyWindow:
    """A weekly window from its configuration-file form: ``weekly("fri 18:00", "mon 08:00", "Europe/Berlin")``."""
    (start_day, start_time), (end_day, end_time) = (_weekly_time(start), _weekly_time(end))
    return WeeklyWindow(start_day, start_time, end_day, end_time, zone, reason)


def _weekly_time(text: str) -> tuple[int, time]:
    day, wall = text.split()
    return DAYS.index(day), time.fromisoformat(wall)


def fixed(start: str, end: str, reason: str | None = None) -> FixedWindow:
    return FixedWindow(utc(start), utc(end), reason)


def ends_at(windows, now: datetime) -> datetime | None:
    """When the freeze in force at ``now`` ends, or None when starts are allowed."""
    freeze = freeze_at(windows, now)
    return freeze.ends_at if freeze is not None else None


def occurrence(label: str, window: WeeklyWindow | FixedWindow, start: str, end: str) -> list:
    """The four instants that pin one occurrence down: one microsecond before and at its start and its end."""
    first, last = utc(start), utc(end)
    return [
        pytest.param(window, first - TICK, None, id=f"{label}, one microsecond before the start"),
        pytest.param(window, first, last, id=f"{label}, at the start"),
        pytest.param(window, last - TICK, last, id=f"{label}, one microsecond before the end"),
        pytest.param(window, last, None, id=f"{label}, at the end"),
    ]


def inside(label: str, window: WeeklyWindow | FixedWindow, now: datetime, end: str | None) -> list:
    """One more instant of a window: frozen until ``end``, or not frozen (None)."""
    return [pytest.param(window, now, utc(end) if end else None, id=label)]


# --- weekly windows --------------------------------------------------------------------

BERLIN_WEEKEND = weekly("fri 18:00", "mon 08:00", "Europe/Berlin", reason="weekend")
NEW_YORK_SKIPPED_START = weekly("sun 02:30", "sun 05:00", "America/New_York")
NEW_YORK_REPEATED_START = weekly("sun 01:30", "sun 03:00", "America/New_York")
NEW_YORK_REPEATED_END = weekly("sun 00:00", "sun 01:30", "America/New_York")
NEW_YORK_REPEATED_QUARTER = weekly("sun 01:30", "sun 01:45", "America/New_York")
KOLKATA_WEEKEND = weekly("fri 18:00", "mon 08:00", "Asia/Kolkata")
UTC_WEEKEND = weekly("fri 18:00", "mon 08:00", "UTC")
BERLIN_LUNCH = weekly("wed 12:00", "wed 14:00", "Europe/Berlin")
ALMOST_A_WEEK = weekly("mon 08:00", "mon 07:00", "UTC")
SYDNEY_WEEKEND = weekly("fri 18:00", "mon 08:00", "Australia/Sydney")

WEEKLY_INSTANTS = [
    # Fri 2026-01-09 18:00 CET (+1) = 17:00Z; Mon 2026-01-12 08:00 CET = 07:00Z.
    *occurrence("Berlin in winter", BERLIN_WEEKEND, "2026-01-09T17:00:00", "2026-01-12T07:00:00"),
    # Fri 2026-07-10 18:00 CEST (+2) = 16:00Z; Mon 2026-07-13 08:00 CEST = 06:00Z.
    *occurrence("Berlin in summer", BERLIN_WEEKEND, "2026-07-10T16:00:00", "2026-07-13T06:00:00"),
    # Spring forward on Sunday 2026-03-29: Fri 18:00 CET (+1) = 17:00Z, Mon 08:00 CEST (+2) = 06:00Z (61 h).
    *occurrence("Berlin, spring-forward weekend", BERLIN_WEEKEND, "2026-03-27T17:00:00", "2026-03-30T06:00:00"),
    *inside("Berlin, the first instant of summer time (03:00 CEST)", BERLIN_WEEKEND,
            utc("2026-03-29T01:00:00"), "2026-03-30T06:00:00"),
    # Fall back on Sunday 2026-10-25: Fri 18:00 CEST (+2) = 16:00Z, Mon 08:00 CET (+1) = 07:00Z (63 h).
    *occurrence("Berlin, fall-back weekend", BERLIN_WEEKEND, "2026-10-23T16:00:00", "2026-10-26T07:00:00"),
    *inside("Berlin, 02:30 CEST, the first of the repeated hour", BERLIN_WEEKEND,
            utc("2026-10-25T00:30:00"), "2026-10-26T07:00:00"),
    *inside("Berlin, 02:30 CET, the second of the repeated hour", BERLIN_WEEKEND,
            utc("2026-10-25T01:30:00"), "2026-10-26T07:00:00"),
    *inside("Berlin, on a Wednesday", BERLIN_WEEKEND, utc("2026-01-14T12:00:00"), None),
    # New York, Sunday 2026-03-08: 02:30 does not exist; fold=0 reads it with the offset from
    # before the change (EST, -5): 07:30Z, which is 03:30 EDT.  05:00 EDT (-4) = 09:00Z.
    *occurrence("New York, a start the spring-forward skips", NEW_YORK_SKIPPED_START,
                "2026-03-08T07:30:00", "2026-03-08T09:00:00"),
    *inside("New York, 03:00 EDT, right after the jump, is before the skipped start", NEW_YORK_SKIPPED_START,
            utc("2026-03-08T07:00:00"), None),
    # The Sundays either side: 02:30 EST (-5) = 07:30Z to 05:00 EST = 10:00Z; 02:30 EDT (-4) = 06:30Z to 09:00Z.
    *occurrence("New York, the Sunday before the spring-forward", NEW_YORK_SKIPPED_START,
                "2026-03-01T07:30:00", "2026-03-01T10:00:00"),
    *occurrence("New York, the Sunday after the spring-forward", NEW_YORK_SKIPPED_START,
                "2026-03-15T06:30:00", "2026-03-15T09:00:00"),
    # New York, Sunday 2026-11-01: 01:30 happens at 05:30Z (EDT, -4) and at 06:30Z (EST, -5); the
    # first counts.  03:00 EST (-5) = 08:00Z.
    *occurrence("New York, a start the fall-back repeats", NEW_YORK_REPEATED_START,
                "2026-11-01T05:30:00", "2026-11-01T08:00:00"),
    # 00:00 EDT (-4) = 04:00Z to the first 01:30 (EDT) = 05:30Z ...
    *occurrence("New York, an end the fall-back repeats", NEW_YORK_REPEATED_END,
                "2026-11-01T04:00:00", "2026-11-01T05:30:00"),
    # ... and when the clocks read 01:15 again (06:15Z, EST) the window is over.
    *inside("New York, 01:15 EST, the wall clock back inside an ended window", NEW_YORK_REPEATED_END,
            utc("2026-11-01T06:15:00"), None),
    # 01:30 to 01:45, first occurrences (EDT, -4): 05:30Z to 05:45Z; 01:35 EST (06:35Z) is outside.
    *occurrence("New York, a quarter hour in the repeated hour", NEW_YORK_REPEATED_QUARTER,
                "2026-11-01T05:30:00", "2026-11-01T05:45:00"),
    *inside("New York, the second 01:35 (EST)", NEW_YORK_REPEATED_QUARTER, utc("2026-11-01T06:35:00"), None),
    # Kolkata, +05:30 all year: Fri 18:00 = 12:30Z, Mon 08:00 = 02:30Z, in January and in July alike.
    *occurrence("Kolkata in January", KOLKATA_WEEKEND, "2026-01-09T12:30:00", "2026-01-12T02:30:00"),
    *occurrence("Kolkata in July", KOLKATA_WEEKEND, "2026-07-10T12:30:00", "2026-07-13T02:30:00"),
    # UTC: the wall clock is the instant.
    *occurrence("UTC", UTC_WEEKEND, "2026-07-10T18:00:00", "2026-07-13T08:00:00"),
    # Within one day: Wed 2026-01-14 12:00 CET (+1) = 11:00Z to 14:00 CET = 13:00Z.
    *occurrence("a window within one Wednesday", BERLIN_LUNCH, "2026-01-14T11:00:00", "2026-01-14T13:00:00"),
    *inside("the same hour on Thursday", BERLIN_LUNCH, utc("2026-01-15T12:00:00"), None),
    *inside("the same hour on Tuesday", BERLIN_LUNCH, utc("2026-01-13T12:00:00"), None),
    # "mon 08:00" to "mon 07:00": from Monday 08:00 to the Monday 07:00 a week later (6 days 23 hours).
    *occurrence("almost a week", ALMOST_A_WEEK, "2026-01-12T08:00:00", "2026-01-19T07:00:00"),
    *inside("almost a week, on the Wednesday in between", ALMOST_A_WEEK,
            utc("2026-01-14T12:00:00"), "2026-01-19T07:00:00"),
    *inside("almost a week, in the hour between two occurrences", ALMOST_A_WEEK,
            utc("2026-01-19T07:30:00"), None),
    *occurrence("almost a week, the next occurrence", ALMOST_A_WEEK, "2026-01-19T08:00:00", "2026-01-26T07:00:00"),
    # Sydney, AEDT (+11) ends on Sunday 2026-04-05: Fri 2026-04-03 18:00 AEDT = 07:00Z,
    # Mon 2026-04-06 08:00 AEST (+10) = Sun 2026-04-05 22:00Z.
    *occurrence("Sydney, the weekend summer time ends", SYDNEY_WEEKEND, "2026-04-03T07:00:00", "2026-04-05T22:00:00"),
    # AEDT starts on Sunday 2026-10-04: Fri 2026-10-02 18:00 AEST (+10) = 08:00Z,
    # Mon 2026-10-05 08:00 AEDT (+11) = Sun 2026-10-04 21:00Z.
    *occurrence("Sydney, the weekend summer time starts", SYDNEY_WEEKEND,
                "2026-10-02T08:00:00", "2026-10-04T21:00:00"),
    # Southern winter, AEST (+10): Fri 2026-07-10 08:00Z to Sun 2026-07-12 22:00Z.
    *occurrence("Sydney in July", SYDNEY_WEEKEND, "2026-07-10T08:00:00", "2026-07-12T22:00:00"),
]


@pytest.mark.parametrize("window, now, expected_end", WEEKLY_INSTANTS)
def test_a_weekly_window_freezes_from_its_wall_clock_start_up_to_but_not_including_its_end(window, now, expected_end):
    assert ends_at([window], now) == expected_end
    assert window.end_of_occurrence_at(now) == expected_end


def test_the_freeze_of_a_weekly_window_names_the_window_and_its_reason():
    freeze = freeze_at([BERLIN_WEEKEND], utc("2026-01-10T12:00:00"))
    assert (freeze.reason, freeze.window) == ("weekend", BERLIN_WEEKEND)
    # Mon 2026-01-12 08:00 CET (+1).
    assert freeze.document() == {
        "reason": "weekend",
        "ends_at": "2026-01-12T07:00:00.000000Z",
        "window": {"weekly_start": "fri 18:00", "weekly_end": "mon 08:00", "timezone": "Europe/Berlin",
                   "reason": "weekend"},
    }


@pytest.mark.parametrize("window, now, expected_end", [
    # "sun 03:00" to "sun 02:30": frozen all week but the half hour before 03:00 on Sunday.  On the
    # spring-forward Sunday it starts at 03:00 EDT (-4) = 07:00Z, and the next Sunday 02:30 comes
    # on 2026-03-15 (EDT) = 06:30Z.  Compared as instants, the skipped 02:30 of the same day reads
    # as 07:30Z, after the start: the occurrence would end 30 minutes after it began.
    pytest.param(weekly("sun 03:00", "sun 02:30", "America/New_York"), utc("2026-03-10T12:00:00"),
                 utc("2026-03-15T06:30:00"),
                 id="a week-long window starting the spring-forward Sunday still freezes the week"),
    # "sun 02:30" to "sun 03:10": forty minutes on a Sunday night.  On the spring-forward Sunday the
    # skipped 02:30 reads as 07:30Z (03:30 EDT), after 03:10 EDT (07:10Z); compared as instants, the
    # occurrence would run to the next Sunday's 03:10 (2026-03-15 07:10Z) and freeze the whole week.
    pytest.param(weekly("sun 02:30", "sun 03:10", "America/New_York"), utc("2026-03-09T12:00:00"), None,
                 id="a forty-minute Sunday window does not freeze the Monday after the spring-forward"),
])
def test_a_weekly_window_whose_wall_time_the_clocks_skip_keeps_its_length_in_wall_clock_time(
        window, now, expected_end):
    assert ends_at([window], now) == expected_end


# --- fixed windows ---------------------------------------------------------------------

HOLIDAYS = fixed("2026-12-24T00:00:00", "2026-12-27T00:00:00", reason="holidays")
# The same instants written in Berlin winter time (+01:00).
HOLIDAYS_IN_BERLIN = FixedWindow(aware("2026-12-24T01:00:00+01:00"), aware("2026-12-27T01:00:00+01:00"), "holidays")

FIXED_INSTANTS = [
    *occurrence("in UTC", HOLIDAYS, "2026-12-24T00:00:00", "2026-12-27T00:00:00"),
    *occurrence("bounds written at +01:00", HOLIDAYS_IN_BERLIN, "2026-12-24T00:00:00", "2026-12-27T00:00:00"),
    *inside("now at +01:00, at the start", HOLIDAYS, aware("2026-12-24T01:00:00+01:00"), "2026-12-27T00:00:00"),
    *inside("now at -05:00, one microsecond before the start", HOLIDAYS,
            aware("2026-12-23T18:59:59.999999-05:00"), None),
    *inside("now at -05:00, one microsecond before the end", HOLIDAYS,
            aware("2026-12-26T18:59:59.999999-05:00"), "2026-12-27T00:00:00"),
    *inside("now at +05:30, at the end", HOLIDAYS, aware("2026-12-27T05:30:00+05:30"), None),
    *inside("a year later", HOLIDAYS, utc("2027-12-25T00:00:00"), None),
]


@pytest.mark.parametrize("window, now, expected_end", FIXED_INSTANTS)
def test_a_fixed_window_freezes_from_its_start_inclusive_to_its_end_exclusive(window, now, expected_end):
    assert ends_at([window], now) == expected_end
    assert window.end_of_occurrence_at(now) == expected_end


def test_a_fixed_window_is_shown_in_utc_whatever_offset_it_was_written_in():
    assert HOLIDAYS_IN_BERLIN.document() == {"start": "2026-12-24T00:00:00.000000Z",
                                             "end": "2026-12-27T00:00:00.000000Z", "reason": "holidays"}


# --- several windows -------------------------------------------------------------------

CHRISTMAS_DAY = fixed("2026-12-25T00:00:00", "2026-12-26T00:00:00", reason="christmas day")
# Fri 2026-01-09, up to the Berlin weekend's start (18:00 CET = 17:00Z).
RELEASE_DAY = fixed("2026-01-09T09:00:00", "2026-01-09T17:00:00", reason="release day")
AUDIT = fixed("2026-01-09T10:00:00", "2026-01-09T15:00:00", reason="audit")
ALMOST_TO_THE_WEEKEND = fixed("2026-01-09T09:00:00", "2026-01-09T16:59:59.999999", reason="release day")
# From the weekend's end (Mon 2026-01-12 08:00 CET = 07:00Z).
MONDAY_MORNING = fixed("2026-01-12T07:00:00", "2026-01-12T12:00:00", reason="monday morning")
FIRST_HALF = weekly("mon 00:00", "thu 00:00", "UTC", reason="first half")
SECOND_HALF = weekly("thu 00:00", "mon 00:00", "UTC", reason="second half")
ALL_WEEK = weekly("mon 00:00", "mon 00:00", "UTC", reason="all week")


@pytest.mark.parametrize("windows, now, expected", [
    pytest.param([], utc("2026-01-14T12:00:00"), None, id="no windows"),
    pytest.param([BERLIN_WEEKEND, HOLIDAYS], utc("2026-01-14T12:00:00"), None, id="none holds"),
    pytest.param([HOLIDAYS, CHRISTMAS_DAY], utc("2026-12-25T12:00:00"), ("holidays", "2026-12-27T00:00:00"),
                 id="overlapping windows end with the latest"),
    pytest.param([CHRISTMAS_DAY, HOLIDAYS], utc("2026-12-25T12:00:00"), ("holidays", "2026-12-27T00:00:00"),
                 id="overlapping windows end with the latest, whatever their order"),
    pytest.param([HOLIDAYS, CHRISTMAS_DAY], utc("2026-12-24T12:00:00"), ("holidays", "2026-12-27T00:00:00"),
                 id="a window that starts later inside another changes nothing"),
    pytest.param([RELEASE_DAY, BERLIN_WEEKEND], utc("2026-01-09T12:00:00"), ("release day", "2026-01-12T07:00:00"),
                 id="a fixed window ending where a weekly one starts runs on to the weekly one's end"),
    pytest.param([BERLIN_WEEKEND, MONDAY_MORNING, RELEASE_DAY], utc("2026-01-09T12:00:00"),
                 ("release day", "2026-01-12T12:00:00"), id="three back-to-back windows freeze as one"),
    pytest.param([BERLIN_WEEKEND, MONDAY_MORNING], utc("2026-01-10T12:00:00"), ("weekend", "2026-01-12T12:00:00"),
                 id="a weekly window runs on into a fixed window starting at its end"),
    pytest.param([ALMOST_TO_THE_WEEKEND, BERLIN_WEEKEND], utc("2026-01-09T12:00:00"),
                 ("release day", "2026-01-09T16:59:59.999999"),
                 id="a microsecond between two windows breaks the chain"),
    pytest.param([AUDIT, RELEASE_DAY, BERLIN_WEEKEND], utc("2026-01-09T12:00:00"),
                 ("release day", "2026-01-12T07:00:00"),
                 id="the reason is that of the window holding now that ends latest"),
    pytest.param([AUDIT, RELEASE_DAY], utc("2026-01-09T15:30:00"), ("release day", "2026-01-09T17:00:00"),
                 id="a window that has ended gives no reason"),
])
def test_freeze_at_answers_the_reason_and_the_end_of_the_freeze_in_force(windows, now, expected):
    freeze = freeze_at(windows, now)
    if expected is None:
        assert freeze is None
    else:
        reason, end = expected
        assert (freeze.reason, freeze.ends_at) == (reason, utc(end))
        assert freeze.window.reason == reason
        assert freeze.window.end_of_occurrence_at(now) is not None


@pytest.mark.parametrize("windows, reason", [
    pytest.param([FIRST_HALF, SECOND_HALF], "first half", id="two weekly windows covering the week"),
    pytest.param([SECOND_HALF, FIRST_HALF], "first half", id="the same two in the other order"),
    pytest.param([ALL_WEEK], "all week", id="one weekly window from monday 00:00 to monday 00:00"),
])
def test_windows_covering_the_whole_week_answer_a_freeze_without_an_end_and_without_hanging(windows, reason):
    now = utc("2026-01-14T12:00:00")  # a Wednesday
    freeze = freeze_at(windows, now)
    assert freeze.reason == reason
    assert freeze.ends_at is None
    assert freeze.document()["ends_at"] is None


def test_an_environment_without_freeze_windows_is_never_frozen():
    assert EnvironmentPolicy().freeze_at(utc("2026-01-10T12:00:00")) is None


def test_an_environment_is_frozen_by_its_own_windows():
    policy = EnvironmentPolicy(freeze=(HOLIDAYS, BERLIN_WEEKEND))
    assert policy.freeze_at(utc("2026-01-10T12:00:00")).ends_at == utc("2026-01-12T07:00:00")
    assert policy.freeze_at(utc("2026-12-25T12:00:00")).reason == "holidays"
    assert policy.freeze_at(utc("2026-01-14T12:00:00")) is None


# --- approvers -------------------------------------------------------------------------

DANA = "dana@example.com"


@pytest.mark.parametrize("approvers, actor, groups, admitted", [
    pytest.param(None, "anyone@example.com", (), True, id="no approvers list admits anyone"),
    pytest.param(None, "anyone@example.com", ("ops",), True, id="no approvers list admits anyone, in any group"),
    pytest.param((), DANA, ("sre",), False, id="an empty approvers list admits no one"),
    pytest.param((DANA,), DANA, (), True, id="the identity itself"),
    pytest.param((DANA,), "DANA@Example.COM", (), True, id="the identity in another case"),
    pytest.param((DANA,), "dana@example.com.", (), True, id="the identity with a trailing dot"),
    pytest.param((DANA,), "ｄａｎａ@ｅｘａｍｐｌｅ.ｃｏｍ", (), True, id="the identity in fullwidth forms"),
    pytest.param((DANA,), "  dana@example.com ", (), True, id="the identity padded with spaces"),
    pytest.param(("Dana@Example.com.",), DANA, (), True, id="an entry in another spelling"),
    pytest.param((DANA,), "erin@example.com", (), False, id="another person"),
    pytest.param((DANA,), "dana@example.co", (), False, id="a prefix of the identity"),
    pytest.param((DANA,), "dаna@example.com", (), False, id="a Cyrillic а is another letter"),
    pytest.param((DANA,), "erin@example.com", ("dana@example.com",), False,
                 id="an identity entry is not matched against groups"),
    pytest.param(("group:sre",), "erin@example.com", ("SRE",), True, id="a group in upper case"),
    pytest.param(("group:sre",), "erin@example.com", ("sre",), True, id="a group in lower case"),
    pytest.param(("group:sre",), "erin@example.com", ("ops", "sre"), True, id="one of several groups"),
    pytest.param(("group:sre",), "erin@example.com", ("ｓｒｅ",), True, id="a group in fullwidth forms"),
    pytest.param(("group:sre",), "erin@example.com", ("sres",), False, id="a group whose name starts like it"),
    pytest.param(("group:sre",), "erin@example.com", ("sr",), False, id="a group whose name is a prefix of it"),
    pytest.param(("group:sre",), "erin@example.com", (), False, id="no groups"),
    pytest.param(("group:sre",), "group:sre", (), False, id="a person named group:sre without groups"),
    pytest.param(("group:sre",), "sre", (), False, id="a person named sre without groups"),
    pytest.param(("group:sre", DANA), DANA, (), True, id="a mixed list admits the identity"),
    pytest.param(("group:sre", DANA), "erin@example.com", ("sre",), True, id="a mixed list admits the group"),
    pytest.param(("group:sre", DANA), "erin@example.com", ("ops",), False, id="a mixed list admits no one else"),
])
def test_approvers_admit_identities_and_group_members_compared_as_identities_are(approvers, actor, groups, admitted):
    assert EnvironmentPolicy(approvers=approvers).admits(actor, groups) is admitted


@pytest.mark.parametrize("actor", ["DANA@Example.COM", "dana@example.com.", "ｄａｎａ@ｅｘａｍｐｌｅ.ｃｏｍ",
                                   "erin@example.com", "dаna@example.com"])
def test_an_identity_entry_admits_exactly_the_spellings_identities_call_the_same_person(actor):
    assert EnvironmentPolicy(approvers=(DANA,)).admits(actor) is identities.same_person(actor, DANA)


# --- the policy and its digest ---------------------------------------------------------

PRODUCTION = EnvironmentPolicy(production=True, required_approvals=2, approvers=("group:sre", DANA), exclusive=True,
                               freeze=(HOLIDAYS, BERLIN_WEEKEND))
DEV = EnvironmentPolicy(required_approvals=0)


def make_policy(**production_overrides) -> Policy:
    """The contract's example policy; keyword arguments replace fields of its production rules."""
    production = dataclasses.replace(PRODUCTION, **production_overrides)
    return Policy(defaults=EnvironmentPolicy(), environments={"production": production, "dev": DEV})


def test_the_digest_is_sha256_in_hex():
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", make_policy().digest)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", default_policy().digest)


@pytest.mark.parametrize("policy", [
    pytest.param(Policy(defaults=EnvironmentPolicy(), environments={"dev": DEV, "production": PRODUCTION}),
                 id="environments in another insertion order"),
    pytest.param(Policy(environments={
        "dev": EnvironmentPolicy(required_approvals=0),
        "production": EnvironmentPolicy(production=True, required_approvals=2, approvers=("group:sre", DANA),
                                        exclusive=True, freeze=(
                                            fixed("2026-12-24T00:00:00", "2026-12-27T00:00:00", "holidays"),
                                            weekly("fri 18:00", "mon 08:00", "Europe/Berlin", "weekend")))}),
                 id="every value built again"),
    pytest.param(make_policy(freeze=(HOLIDAYS_IN_BERLIN, BERLIN_WEEKEND)),
                 id="a fixed window written at another offset"),
])
def test_the_same_rules_give_the_same_digest(policy):
    assert policy.digest == make_policy().digest
    assert policy == make_policy()


ANOTHER_WEEKEND = [
    pytest.param(weekly("fri 17:00", "mon 08:00", "Europe/Berlin", "weekend"), id="a weekly start time"),
    pytest.param(weekly("thu 18:00", "mon 08:00", "Europe/Berlin", "weekend"), id="a weekly start day"),
    pytest.param(weekly("fri 18:00", "mon 08:30", "Europe/Berlin", "weekend"), id="a weekly end time"),
    pytest.param(weekly("fri 18:00", "tue 08:00", "Europe/Berlin", "weekend"), id="a weekly end day"),
    pytest.param(weekly("fri 18:00", "mon 08:00", "Europe/Paris", "weekend"), id="a weekly time zone"),
    pytest.param(weekly("fri 18:00", "mon 08:00", "Europe/Berlin", "Weekend"), id="a weekly reason"),
    pytest.param(weekly("fri 18:00", "mon 08:00", "Europe/Berlin"), id="a weekly reason removed"),
]
ANOTHER_HOLIDAY = [
    pytest.param(fixed("2026-12-23T00:00:00", "2026-12-27T00:00:00", "holidays"), id="a fixed start"),
    pytest.param(fixed("2026-12-24T00:00:00.000001", "2026-12-27T00:00:00", "holidays"),
                 id="a fixed start by a microsecond"),
    pytest.param(fixed("2026-12-24T00:00:00", "2026-12-28T00:00:00", "holidays"), id="a fixed end"),
    pytest.param(fixed("2026-12-24T00:00:00", "2026-12-27T00:00:00", "christmas"), id="a fixed reason"),
    pytest.param(fixed("2026-12-24T00:00:00", "2026-12-27T00:00:00"), id="a fixed reason removed"),
]


@pytest.mark.parametrize("changed", [
    pytest.param(make_policy(production=False), id="production"),
    pytest.param(make_policy(required_approvals=3), id="required_approvals"),
    pytest.param(make_policy(approvers=None), id="approvers removed"),
    pytest.param(make_policy(approvers=()), id="approvers emptied"),
    pytest.param(make_policy(approvers=("group:sre",)), id="an approver removed"),
    pytest.param(make_policy(approvers=("group:sre", DANA, "erin@example.com")), id="an approver added"),
    pytest.param(make_policy(approvers=("group:ops", DANA)), id="an approver group"),
    pytest.param(make_policy(exclusive=False), id="exclusive"),
    pytest.param(make_policy(freeze=(HOLIDAYS,)), id="a freeze window removed"),
    pytest.param(make_policy(freeze=()), id="every freeze window removed"),
    *[pytest.param(make_policy(freeze=(HOLIDAYS, p.values[0])), id=p.id) for p in ANOTHER_WEEKEND],
    *[pytest.param(make_policy(freeze=(p.values[0], BERLIN_WEEKEND)), id=p.id) for p in ANOTHER_HOLIDAY],
    pytest.param(Policy(defaults=EnvironmentPolicy(required_approvals=2),
                        environments={"production": PRODUCTION, "dev": DEV}), id="the defaults"),
    pytest.param(Policy(environments={"production": PRODUCTION, "development": DEV}), id="an environment's name"),
    pytest.param(Policy(environments={"production": PRODUCTION}), id="an environment removed"),
])
def test_any_change_to_the_rules_changes_the_digest(changed):
    assert changed.digest != make_policy().digest


def test_the_document_holds_the_digest_and_every_key_of_every_environment():
    policy = make_policy()
    assert policy.document() == {
        "digest": policy.digest,
        "defaults": {"production": False, "required_approvals": 1, "approvers": None, "exclusive": False,
                     "freeze": []},
        "environments": {
            "dev": {"production": False, "required_approvals": 0, "approvers": None, "exclusive": False,
                    "freeze": []},
            "production": {
                "production": True, "required_approvals": 2, "approvers": ["group:sre", DANA], "exclusive": True,
                "freeze": [
                    {"start": "2026-12-24T00:00:00.000000Z", "end": "2026-12-27T00:00:00.000000Z",
                     "reason": "holidays"},
                    {"weekly_start": "fri 18:00", "weekly_end": "mon 08:00", "timezone": "Europe/Berlin",
                     "reason": "weekend"},
                ],
            },
        },
    }


@pytest.mark.parametrize("environment, expected", [
    pytest.param("production", PRODUCTION, id="an environment with its own rules"),
    pytest.param("dev", DEV, id="another environment with its own rules"),
    pytest.param("staging", EnvironmentPolicy(), id="an environment without rules falls back to the defaults"),
    pytest.param("Production", EnvironmentPolicy(), id="environment names are compared exactly"),
])
def test_each_environment_is_judged_by_its_own_rules_or_the_defaults(environment, expected):
    assert make_policy().for_environment(environment) == expected


@pytest.mark.parametrize("policy, environment, is_production", [
    pytest.param(default_policy(), "production", True, id="production is production by default"),
    pytest.param(default_policy(), "staging", False, id="staging is not production by default"),
    pytest.param(default_policy(), 42, False, id="a non-string is no environment"),
    pytest.param(default_policy(("prod", "live")), "prod", True, id="a named production environment"),
    pytest.param(default_policy(("prod", "live")), "live", True, id="another named production environment"),
    pytest.param(default_policy(("prod", "live")), "production", False,
                 id="production is not production when not named"),
    pytest.param(default_policy(()), "production", False, id="no production environments"),
    pytest.param(make_policy(), "production", True, id="a policy's production table"),
    pytest.param(make_policy(), "dev", False, id="a policy's other table"),
])
def test_the_production_set_is_the_environments_whose_rules_say_production(policy, environment, is_production):
    assert (environment in policy) is is_production


@pytest.mark.parametrize("production_environments", [("production",), ("prod", "live")])
@pytest.mark.parametrize("environment", ["production", "prod", "staging"])
def test_the_default_policy_asks_one_approval_by_anyone_but_the_requester_everywhere(production_environments,
                                                                                      environment):
    rules = default_policy(production_environments).for_environment(environment)
    assert (rules.required_approvals, rules.approvers, rules.exclusive, rules.freeze) == (1, None, False, ())
    assert rules.admits("anyone@example.com")


def test_the_default_policy_has_a_digest_of_its_own_production_set():
    assert default_policy().digest == default_policy(["production"]).digest
    assert default_policy().digest != default_policy(("prod", "live")).digest
    assert default_policy(("prod", "live")).digest == default_policy(("live", "prod")).digest
