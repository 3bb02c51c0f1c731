"""The one timestamp form the API stores and shows, and the parsing of timestamps clients send."""

import re
from datetime import datetime, timedelta, timezone

# [0-9], not \d: in a str pattern \d also matches other scripts' digits ("٢٠٢٦"),
# which int() accepts but RFC 3339 does not.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z``: the only timestamp form we store."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    # Not strftime("%Y"): it writes years before 1000 with fewer than four
    # digits, and stored timestamps are compared as text.
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def canonical_timestamp(text: str) -> str:
    """An RFC 3339 timestamp in the stored form (UTC, microseconds, ``Z``).

    Fractions finer than a microsecond round up, which keeps both ends of the
    half-open range exact against stored microsecond timestamps.

    :raises ValueError: when ``text`` is not an RFC 3339 date-time with an offset.
    """
    match = _RFC3339.fullmatch(text)
    if not match:
        raise ValueError("must be an RFC 3339 date-time with offset, e.g. 2026-11-26T10:15:30Z")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    fraction = fraction or ""
    micro = int((fraction + "000000")[:6])
    round_up = any(ch != "0" for ch in fraction[6:])
    # A leap second (:60) counts as the last microsecond of the minute before.
    leap = second == "60"
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute),
                          59 if leap else int(second), 999_999 if leap else micro,
                          tzinfo=timezone.utc)
        if offset not in ("Z", "z"):
            sign = 1 if offset[0] == "+" else -1
            hours, minutes = int(offset[1:3]), int(offset[4:6])
            if hours > 23 or minutes > 59:
                raise ValueError("offset out of range")
            moment -= sign * timedelta(hours=hours, minutes=minutes)
        if round_up:
            moment += timedelta(microseconds=1)
    except (ValueError, OverflowError):
        raise ValueError("is not a real date and time") from None
    if moment.year < 1 or moment.year > 9999:
        raise ValueError("is not a real date and time")
    return format_timestamp(moment)
