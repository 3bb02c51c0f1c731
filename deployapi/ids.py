"""Deployment ids: 26 lowercase characters, time-ordered, unguessable, URL-safe.

The layout is ULID's (48 bits of milliseconds since the epoch, then 80 random
bits, in Crockford's base32), written in lowercase.  Time first means new rows
land at the right edge of the primary-key index instead of at random pages, which
keeps inserts cheap at millions of rows; clients must still treat the id as
opaque.
"""

from __future__ import annotations

import secrets
from datetime import datetime

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford: no i, l, o, u
# Every pair of characters, indexed by the 10 bits they encode: 13 lookups
# write an id instead of 26 shifts (a create spends its time under the GIL).
_PAIRS = tuple(high + low for high in _ALPHABET for low in _ALPHABET)


def new_deployment_id(now: datetime) -> str:
    """A fresh id for a deployment created at ``now``."""
    milliseconds = int(now.timestamp() * 1000) & ((1 << 48) - 1)
    value = (milliseconds << 80) | secrets.randbits(80)
    # 26 characters are 130 bits: the first pair carries the top 8 bits of 128.
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(120, -1, -10)])
