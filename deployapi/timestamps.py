"""The one timestamp form the API stores and shows."""

from datetime import datetime, timezone


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z``: the only timestamp form we store."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    # Not strftime("%Y"): it writes years before 1000 with fewer than four
    # digits, and stored timestamps are compared as text.
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
