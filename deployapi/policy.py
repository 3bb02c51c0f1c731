"""Review policies: per environment, how many must approve, who may, when starts are frozen, one start at a time.

Pure values and the rules they answer (no I/O, "now" passed in).  The
configuration file becomes a :class:`Policy` in config_file.py; lifecycle.py
judges each creation and action by the :class:`EnvironmentPolicy` of the
deployment's environment.  Without a file the policy is :func:`default_policy`:
the v1 rules (one approval by anyone but the requester, risk required in the
production set).

A policy has one canonical JSON document (``GET /policy``) and the SHA-256 of
it, the digest that every deployment and event records: the same rules always
give the same digest, so the history shows which rules judged each decision.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from . import identities
from .timestamps import format_timestamp

GROUP_PREFIX = "group:"
MAX_REQUIRED_APPROVALS = 10
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DIGEST_PREFIX = "sha256:"


# --- freeze windows ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FixedWindow:
    """A freeze from one instant to another: ``start <= now < end``."""

    start: datetime  # aware
    end: datetime
    reason: str | None = None

    def end_of_occurrence_at(self, now: datetime) -> datetime | None:
        """When the occurrence of this window that holds ``now`` ends; None when ``now`` is outside it."""
        return self.end if self.start <= now < self.end else None

    def document(self) -> dict[str, Any]:
        return {"start": format_timestamp(self.start), "end": format_timestamp(self.end), "reason": self.reason}


@dataclass(frozen=True, slots=True)
class WeeklyWindow:
    """A freeze every week, from a weekday and wall-clock time to the next given weekday and time, in an IANA zone.

    Wall-clock times follow the zone's daylight-saving changes: "fri 18:00" in
    Europe/Berlin is 17:00Z in winter and 16:00Z in summer.  A time that a
    change skips is read with the offset from before the change (zoneinfo's
    fold=0): 02:30 on the spring-forward day is 03:30 summer time.  A time
    that a change repeats is its first occurrence.  Whether the window ends
    the same day or a week later is decided on the wall-clock times, so a
    skipped hour never makes an occurrence a week longer or shorter.
    """

    start_day: int  # 0 = Monday, as date.weekday()
    start_time: time
    end_day: int
    end_time: time
    timezone: str
    reason: str | None = None

    def end_of_occurrence_at(self, now: datetime) -> datetime | None:
        """When the occurrence of this window that holds ``now`` ends; None when ``now`` is outside it."""
        zone = ZoneInfo(self.timezone)
        today = now.astimezone(zone).date()
        # The latest start at or before now: this week's, or the one a week earlier.
        back = (today.weekday() - self.start_day) % 7
        for start_date in (today - timedelta(days=back), today - timedelta(days=back + 7)):
            start = _instant(start_date, self.start_time, zone)
            if start <= now:
                break
        else:  # pragma: no cover - a start a week before today is always in the past
            return None
        # The window runs to the first end after its start on the wall clock
        # (start and end differ, so that is within a week).
        ahead = (self.end_day - self.start_day) % 7
        if ahead == 0 and self.end_time <= self.start_time:
            ahead = 7
        end = _instant(start_date + timedelta(days=ahead), self.end_time, zone)
        return end if start <= now < end else None

    def document(self) -> dict[str, Any]:
        return {"weekly_start": weekly_text(self.start_day, self.start_time),
                "weekly_end": weekly_text(self.end_day, self.end_time),
                "timezone": self.timezone, "reason": self.reason}


FreezeWindow = FixedWindow | WeeklyWindow


def _instant(day: date, wall: time, zone: ZoneInfo) -> datetime:
    # Through UTC and back: a wall time the zone skips becomes a real instant
    # (fold=0 takes the offset from before the change), and comparisons
    # between instants are exact.
    return datetime.combine(day, wall, tzinfo=zone).astimezone(timezone.utc)


def weekly_text(day: int, wall: time) -> str:
    """The ``"ddd HH:MM"`` form of a weekly time."""
    return f"{WEEKDAYS[day]} {wall.hour:02d}:{wall.minute:02d}"


@dataclass(frozen=True, slots=True)
class Freeze:
    """A freeze in force: the reason of the window that holds now, and when starts are allowed again.

    ``ends_at`` is None when the windows leave no gap in sight (they chain
    without end, as windows covering the whole week do).
    """

    reason: str | None
    ends_at: datetime | None
    window: FreezeWindow

    def document(self) -> dict[str, Any]:
        """The ``freeze`` member of a 409 deploy_freeze, and of a start's details when overridden."""
        ends_at = format_timestamp(self.ends_at) if self.ends_at is not None else None
        return {"reason": self.reason, "ends_at": ends_at, "window": self.window.document()}


# Windows that follow one another without a gap freeze as one: ends_at is
# where the last of them ends.  Bounded, for windows that chain forever
# (back-to-back weekly windows covering the whole week).
_MAX_CHAINED_WINDOWS = 64


def freeze_at(windows: Collection[FreezeWindow], now: datetime) -> Freeze | None:
    """The freeze the ``windows`` put in force at ``now``, or None when starts are allowed."""
    holding = _holding(windows, now)
    if not holding:
        return None
    window, ends_at = max(holding, key=lambda pair: pair[1])
    for _ in range(_MAX_CHAINED_WINDOWS):
        following = _holding(windows, ends_at)
        if not following:
            return Freeze(reason=window.reason, ends_at=ends_at, window=window)
        ends_at = max(end for _, end in following)
    return Freeze(reason=window.reason, ends_at=None, window=window)


def _holding(windows: Collection[FreezeWindow], moment: datetime) -> list[tuple[FreezeWindow, datetime]]:
    ends = ((window, window.end_of_occurrence_at(moment)) for window in windows)
    return [(window, end) for window, end in ends if end is not None]


# --- the rules of one environment ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvironmentPolicy:
    """The rules deployments of one environment are judged by."""

    production: bool = False
    required_approvals: int = 1
    # Canonical identities and "group:NAME" entries; None admits anyone but the requester.
    approvers: tuple[str, ...] | None = None
    exclusive: bool = False
    freeze: tuple[FreezeWindow, ...] = ()

    def admits(self, actor: str, groups: Collection[str] = ()) -> bool:
        """Whether ``approvers`` admit ``actor``, a member of ``groups`` (compared as identities are)."""
        if self.approvers is None:
            return True
        actor_key = identities.key(actor)
        group_keys = {identities.key(group) for group in groups}
        for entry in self.approvers:
            if entry.startswith(GROUP_PREFIX):
                if identities.key(entry[len(GROUP_PREFIX):]) in group_keys:
                    return True
            elif identities.key(entry) == actor_key:
                return True
        return False

    def freeze_at(self, now: datetime) -> Freeze | None:
        """The freeze on starts at ``now``, if any."""
        return freeze_at(self.freeze, now) if self.freeze else None

    @property
    def names_groups(self) -> bool:
        return any(entry.startswith(GROUP_PREFIX) for entry in self.approvers or ())

    def document(self) -> dict[str, Any]:
        """Every key filled in, as GET /policy shows it and the digest covers it."""
        return {"production": self.production, "required_approvals": self.required_approvals,
                "approvers": list(self.approvers) if self.approvers is not None else None,
                "exclusive": self.exclusive, "freeze": [window.document() for window in self.freeze]}


# The rules of an environment without a configuration file: one approval by anyone but the requester.
V1_RULES = EnvironmentPolicy()


@dataclass(frozen=True)
class Policy:
    """The rules of every environment: its own table's, or the defaults.

    Build it with :func:`default_policy` or config_file.load_config; each
    environment's rules are already complete (defaults filled in).
    """

    defaults: EnvironmentPolicy = EnvironmentPolicy()
    environments: Mapping[str, EnvironmentPolicy] = field(default_factory=dict)
    digest: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        canonical = json.dumps(self._rules_document(), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        object.__setattr__(self, "digest", DIGEST_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest())

    def for_environment(self, environment: str) -> EnvironmentPolicy:
        """The rules deployments of ``environment`` are judged by."""
        return self.environments.get(environment, self.defaults)

    def is_production(self, environment: str) -> bool:
        """Whether a deployment to ``environment`` must state its risk."""
        return self.for_environment(environment).production

    def __contains__(self, environment: object) -> bool:
        # The set of production environments, for lifecycle.validate_new_deployment.
        return isinstance(environment, str) and self.is_production(environment)

    @property
    def names_groups(self) -> bool:
        """Whether any approvers entry names a group (which needs trusted identity and a groups header)."""
        return self.defaults.names_groups or any(p.names_groups for p in self.environments.values())

    def document(self) -> dict[str, Any]:
        """The body of GET /policy: the digest and the rules, every key filled in."""
        return {"digest": self.digest, **self._rules_document()}

    def _rules_document(self) -> dict[str, Any]:
        return {"defaults": self.defaults.document(),
                "environments": {name: self.environments[name].document() for name in sorted(self.environments)}}


def default_policy(production_environments: Collection[str] = ("production",)) -> Policy:
    """The v1 rules: one approval by anyone but the requester; risk required in ``production_environments``."""
    if isinstance(production_environments, str):
        raise TypeError("production_environments is a collection of names, not one string")
    production = EnvironmentPolicy(production=True)
    return Policy(environments={name: production for name in production_environments})
