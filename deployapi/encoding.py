"""The one JSON encoder for every response body: success, problem and OpenAPI alike.

As ADR 0011 says: compact separators and UTF-8 as it is (no ``\\u`` escapes
for non-ASCII characters), which is also how SQLite writes the documents that
reads answer with, so a body reads the same byte for byte whichever path
rendered it.
"""

from __future__ import annotations

import json
import re
from typing import Any

# json.loads accepts "\ud800", so client text echoed back (an unknown field's
# name) can hold a lone surrogate, which has no UTF-8 form: sending it would
# fail while the response is encoded, a 500.
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(value: Any) -> str:
    """``value`` as the JSON text of a response body: compact, non-ASCII unescaped.

    A lone surrogate is written as its ``\\u`` escape, the same JSON string,
    so that every body can be sent as UTF-8.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    # isascii() is a flag check, so the usual body pays nothing for this.
    if not text.isascii() and _SURROGATE.search(text):
        text = _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
    return text
