"""The settings documented in docs/operations.md are the ones the code reads, flag for flag."""

from __future__ import annotations

import re
from pathlib import Path

from deployapi.cli import build_parser
from deployapi.config import ENVIRONMENT_VARIABLES

OPERATIONS = Path(__file__).parents[2] / "docs" / "operations.md"


def configuration_table() -> list[tuple[str, str]]:
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text[text.index("## Configuration"):text.index("## Running with deployapi serve")]
    return re.findall(r"^\| `(--[a-z-]+)` \| `(DEPLOYAPI_[A-Z_]+)` \|", section, re.MULTILINE)


def serve_flags() -> set[str]:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    return {option for action in serve._actions for option in action.option_strings if option.startswith("--")
            and option != "--help"}


def test_every_serve_flag_and_variable_is_in_the_configuration_table_and_nothing_else():
    documented = configuration_table()
    assert {flag for flag, _ in documented} == serve_flags()
    assert {variable for _, variable in documented} == set(ENVIRONMENT_VARIABLES.values())


def test_each_documented_flag_falls_back_to_the_variable_beside_it():
    for flag, variable in configuration_table():
        assert ENVIRONMENT_VARIABLES[flag[2:].replace("-", "_")] == variable
