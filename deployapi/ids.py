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


def new_deployment_id(now: datetime) -> str:
    """A fresh id for a deployment created at ``now``."""
    milliseconds = int(now.timestamp() * 1000) & ((1 << 48) - 1)
    value = (milliseconds << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))
