"""Who someone is: the one rule for every identity (requester, actor, the trusted header).

Self-approval, the trusted caller and a review by "the same actor" all ask
whether two names mean one person.  Text that looks the same must not make two
people, so every identity goes through :func:`canonical` before it is stored or
compared:

- trimmed (``str.strip``), then Unicode NFKC: compatibility forms (fullwidth
  ``ａｌｉｃｅ``, mathematical ``𝐚𝐥𝐢𝐜𝐞``, ligatures, no-break spaces) become the
  plain characters they stand for, and a decomposed ``é`` becomes the composed
  one.  The stored name is this NFKC form, in its own case.
- refused when it holds a character that renders as nothing or rearranges
  what is around it: controls (Cc), format characters (Cf: zero-width space,
  soft hyphen, U+FEFF, word joiner, the bidi overrides such as U+202E), line
  and paragraph separators, spaces other than U+0020 that NFKC keeps (U+1680),
  and every other Default_Ignorable_Code_Point of Unicode (variation
  selectors, Hangul fillers, tags, U+034F).

Two names are one person when their :func:`key` is equal: the canonical name
casefolded (and NFKC again, as Unicode's caseless matching prescribes), runs of
spaces as one, trailing dots dropped (``alice@example.com.`` is the
fully-qualified spelling of the same address).

What this cannot catch are confusables across scripts (Cyrillic ``а`` for Latin
``a``): they are different letters that happen to look alike.  Only identities
from an authority (the trusted-identity proxy) rule those out; docs/api.md says so.
"""

from __future__ import annotations

import re
import unicodedata

MAX_LENGTH = 128

# Control characters (Unicode category Cc): U+0000-U+001F and U+007F-U+009F.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties.txt): code points
# that render as nothing where they are not supported.  Most are also Cf; these
# ranges add the rest (U+034F, Hangul fillers, Khmer inherent vowels,
# Mongolian and other variation selectors, U+FFA0, musical formatting, tags).
_DEFAULT_IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff]"
)
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SPACES = re.compile(" +")


class IdentityRefused(ValueError):
    """The text cannot name a person; the message says why."""


def canonical(value: str) -> str:
    """The stored form of an identity: trimmed and NFKC-normalised.

    :raises IdentityRefused: blank, longer than MAX_LENGTH, or holding a refused character.
    """
    name = value.strip()
    if _CONTROL.search(name):
        # Checked before NFKC, which maps no control character away.
        raise IdentityRefused("must not contain control characters")
    if not name.isascii():
        name = unicodedata.normalize("NFKC", name).strip()
        refused = next((ch for ch in name if is_refused(ch)), None)
        if refused is not None:
            raise IdentityRefused(
                "must not contain invisible, formatting or bidirectional characters "
                f"(found U+{ord(refused):04X} {unicodedata.name(refused, 'unnamed')})")
    if not name:
        raise IdentityRefused("must not be blank")
    if len(name) > MAX_LENGTH:
        raise IdentityRefused(f"must be at most {MAX_LENGTH} characters")
    return name


def is_refused(character: str) -> bool:
    """Whether one character (of an NFKC-normalised name) may not appear in an identity."""
    category = unicodedata.category(character)
    return (category in _REFUSED_CATEGORIES or (category == "Zs" and character != " ")
            or _DEFAULT_IGNORABLE.match(character) is not None)


def key(name: str) -> str:
    """What two names of one person have in common.

    Also right for names stored before this rule (trimmed only): NFKC is applied here as well.
    """
    if name.isascii():
        folded = name.casefold()
    else:
        folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return _SPACES.sub(" ", folded.strip()).rstrip(".")


def same_person(a: str, b: str) -> bool:
    """Whether two names mean one person."""
    return key(a) == key(b)
