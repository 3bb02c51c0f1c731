"""Pieces every query-string parser here shares: one value per name, whole numbers, names.

Each returns what it could parse and appends what is wrong to a problem list,
so a parser reports every bad parameter at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from . import lifecycle
from .lifecycle import FieldProblem

# Longer digit strings are refused before int() sees them (Python refuses
# over 4,300 digits with an error of its own).
MAX_DIGITS = 19


def single_values(args: Mapping[str, Sequence[str]], allowed: Sequence[str],
                  problems: list[FieldProblem]) -> dict[str, str]:
    """Each allowed parameter's one value; unknown and repeated parameters become problems."""
    values: dict[str, str] = {}
    for name, given in args.items():
        if name not in allowed:
            problems.append(FieldProblem(name, f"unknown query parameter; allowed: {', '.join(allowed)}"))
        elif len(given) != 1:
            problems.append(FieldProblem(name, "must be given at most once"))
        else:
            values[name] = given[0]
    return values


def whole_number(values: Mapping[str, str], name: str, low: int, high: int,
                 problems: list[FieldProblem], message: str = "") -> int | None:
    """``values[name]`` as a whole number from ``low`` to ``high``; None if absent or bad."""
    if name not in values:
        return None
    text = values[name]
    # isascii: str.isdigit() also accepts other scripts' digits, which int() would take.
    digits = text.lstrip("0") or "0"
    if text.isascii() and text.isdigit() and len(digits) <= MAX_DIGITS and low <= int(digits) <= high:
        return int(digits)
    problems.append(FieldProblem(name, message or f"must be a whole number from {low} to {high}"))
    return None


def slugs(values: Mapping[str, str], names: Sequence[str], problems: list[FieldProblem]) -> dict[str, str]:
    """The valid service/environment names among ``names``."""
    found: dict[str, str] = {}
    for name in names:
        if name in values:
            if lifecycle.is_slug(values[name]):
                found[name] = values[name]
            else:
                problems.append(FieldProblem(name, "must be a valid service or environment name"))
    return found


def one_of(values: Mapping[str, str], name: str, choices: Sequence[str],
           problems: list[FieldProblem]) -> str | None:
    if name not in values:
        return None
    if values[name] in choices:
        return values[name]
    problems.append(FieldProblem(name, f"must be one of: {', '.join(choices)}"))
    return None
