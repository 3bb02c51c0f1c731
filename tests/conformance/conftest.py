"""The app the conformance run drives, and a tally of what the run sent and got back."""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path

import hypothesis.configuration
import pytest

from deployapi import create_app

TALLY_KEY = pytest.StashKey["Tally"]()


def pytest_configure(config):
    # Hypothesis keeps caches (charmap, constants) under ./.hypothesis even with
    # the example database off, some written while this directory's test module
    # is imported and some as the process exits: keep them in the temporary
    # directory instead, where they also survive from one run to the next.
    hypothesis.configuration.set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "deployapi-hypothesis")


class ResettableApp:
    """A WSGI app whose database can be swapped for an empty one.

    Hypothesis replays a stateful scenario while generating and shrinking it; a
    replay only makes the same calls if every scenario starts from the same
    (empty) database, so each one gets a fresh file.
    """

    def __init__(self, directory):
        self.directory = directory
        self.databases = 0
        self.app = None
        self.reset()

    def reset(self) -> None:
        if self.app is not None:
            self.app.close()
        self.databases += 1
        self.app = create_app(self.directory / f"conformance-{self.databases}.db")

    def close(self) -> None:
        self.app.close()

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


class Tally:
    """Requests sent by the run, by kind, and the (kind, operation, status, code) of each answer."""

    def __init__(self):
        self.requests: Counter[str] = Counter()
        self.answers: Counter[tuple[str, str, int, str | None]] = Counter()
        self.seconds = 0.0

    def record(self, kind: str, case, response) -> None:
        self.requests[kind] += 1
        code = None
        if response.headers.get("content-type", [""])[0].startswith("application/problem+json"):
            code = response.json().get("code")
        self.answers[(kind, case.operation.label, response.status_code, code)] += 1

    def statuses(self, kind: str, operation: str) -> set[int]:
        return {status for (k, label, status, _) in self.answers if (k, label) == (kind, operation)}

    def codes(self) -> set[str]:
        return {code for (_, _, _, code) in self.answers if code is not None}


@pytest.fixture(scope="session")
def tally(request) -> Tally:
    return request.config.stash.setdefault(TALLY_KEY, Tally())


@pytest.fixture(scope="module")
def app_under_test(tmp_path_factory):
    app = ResettableApp(tmp_path_factory.mktemp("conformance"))
    yield app
    app.close()


def pytest_terminal_summary(terminalreporter, config):
    tally = config.stash.get(TALLY_KEY, None)
    if tally is None or not tally.requests:
        return
    total = sum(tally.requests.values())
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(tally.requests.items()))
    terminalreporter.write_sep("-", "schemathesis conformance run")
    terminalreporter.write_line(f"{total} generated requests ({kinds}) in {tally.seconds:.1f} s")
    terminalreporter.write_line(f"problem codes reached: {', '.join(sorted(tally.codes()))}")
    hooks = sys.modules.get("schemathesis_hooks")
    if hooks is not None and hooks.EXCUSED:
        excused = ", ".join(f"{rule} ({count})" for rule, count in sorted(hooks.EXCUSED.items()))
        terminalreporter.write_line(f"schema-valid requests refused by the rules no schema can state: {excused}")
