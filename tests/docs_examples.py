"""The examples of README.md and docs/api.md, read back and replayed: every printed answer is held to a run.

Every fenced ```console block is split into commands (``$ `` lines, with ``\\``
continuations and quotes that span lines) and the output printed under each.
The commands are replayed in the order of the page against in-process apps
(``deployapi.create_app`` through Werkzeug's test client), configured as the
page says: a ``deployapi serve …`` line starts a server on its port (the same
flags, read by deployapi's own parser, with the database and configuration file
mapped into a temporary directory; a ``cat FILE`` shown before it gives the
file), and a ```python block that calls ``waitress.serve`` does the same.  Each
``curl`` is read with shlex (``-X``, ``-H``, ``-d``/``--data``/``--data-binary``,
``-i``, ``-s``, ``-D -``, ``-o /dev/null``, ``-w``), sent to the server on its
URL's port, and its answer, piped through the real ``jq`` where the page does,
is compared with the printed one: the status line, the headers shown (any other
header must be one the pages leave out: ``Content-Length``, ``Date``, ``Server``,
``X-Request-Id``), and the body, JSON structurally and every other text exactly.

What differs by nature between two runs (deployment ids, event hashes, request
ids, cursors, timestamps, DORA durations, log times) is not compared as text but
**bound**: the first time a documented value appears in an answer it is bound
to the value of the run, and every later appearance, in an answer or in a
command, must be (and is sent as) that same value; two different documented
values cannot stand for one value of the run.  Timestamps are bound as instants,
so ``…T05:57:23.108318%2B01:00`` in a query is the run's ``…T04:57:23.108318Z``.
A timestamp with no fraction, or ``.000000``, is not by nature: it is compared.
``…`` or ``...`` elides: inside a string it matches any text, as an object
member any members, as the last item of an array any items.

What a page does not show, an HTML comment beside the example states, in one of
two forms (``tests/http/test_docs_examples.py`` runs them like the rest):

- ``<!-- docs-example: DIRECTIVE -->`` before a fenced block:
  ``after ### HEADING`` replays the block after the last block of that section
  (with the hidden blocks just before it), for a history shown before the
  actions that make it; ``the log of the block above`` (a ```text block: the
  log records of the console block before it, in ``deployapi serve``'s text
  format) and ``the output of the block above`` (a ```text block: what the
  ```python block before it prints).
- ``<!-- docs-example`` … ``-->`` on lines of their own: a console block not
  shown, replayed in place like a shown one (its output is compared too), for
  the state an example starts from.  Beside ``$`` commands it may hold
  ``@clock INSTANT`` (every app created from then on, and every app running,
  reads a clock that starts there and runs at the normal pace) and
  ``@hold-write-lock`` (another connection holds ``BEGIN IMMEDIATE`` on the
  database of the server the next command calls, until it is answered).

Blocks that are not replayed here are listed in ``ELSEWHERE`` (the test that
runs them, with a marker that test's file must contain) or ``NOT_RUN`` (the
page itself says that the suite does not run them).

``python -m tests.docs_examples`` (from the repository's root) prints what
differs; with ``--update`` it rewrites each printed answer that differs from the
run's, keeping the documented ids and times that the binding allows (and the
run's own for values never documented before).  Review the diff: the prose around
an example must still say what the new answer shows.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
import tomllib
from contextlib import redirect_stdout
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

from werkzeug.test import Client

from deployapi import config as settings_module
from deployapi import create_app, logs
from deployapi.cli import build_parser
from deployapi.config import app_from_settings, load_settings
from deployapi.config_file import load_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = (ROOT / "README.md", ROOT / "docs" / "api.md")

# Headers a page may leave out of a `curl -i` answer (docs/api.md says which).
OMITTED_HEADERS = frozenset({"content-length", "date", "server", "x-request-id"})

# Blocks run by another test, by page and first line: (that test's node id, a text its file must contain
# to show that it runs this very block).  A block of a page that is neither replayed here nor listed
# here (nor in NOT_RUN) fails tests/http/test_docs_examples.py.
ELSEWHERE: dict[tuple[str, str], tuple[str, str]] = {
    ("api.md", "$ python3 -m venv gen && . gen/bin/activate"): (
        "tests/e2e/test_generated_client.py::test_a_lifecycle_through_the_generated_client", "openapi_python_client"),
    ("api.md", '$ python -c "'): (
        "tests/e2e/test_generated_client.py::test_both_event_lists_parse_as_cloudevents_with_format_cdevents",
        '"CloudEventApprovalCreated"'),
    ("api.md", "$ deployapi serve --port 8080 --db /tmp/schemathesis.db &"): (
        "tests/e2e/test_schemathesis_cli.py::test_the_documented_schemathesis_run_passes_against_deployapi_serve",
        '"--config-file", "tests/conformance/schemathesis.toml", "run"'),
    ("api.md", "503 SERVICE UNAVAILABLE application/problem+json"): (
        "tests/http/test_docs_examples.py::test_the_health_check_of_a_closed_app_answers_as_shown",
        "503 SERVICE UNAVAILABLE application/problem+json"),
    ("api.md", "stateDiagram-v2"): (
        "tests/http/test_docs_examples.py::test_the_lifecycle_diagram_draws_exactly_the_transitions",
        "stateDiagram-v2"),
    ("api.md", 'after=0'): (
        "tests/e2e/test_docs_examples_processes.py::test_the_tailing_loop_hands_on_every_event_once_in_order",
        'after=0'),
    ("api.md", "# Record the deployment, idempotently: a re-run of this job sends the same key and body,"): (
        "tests/e2e/test_docs_examples_processes.py::test_the_github_actions_steps_record_one_deployment_per_run",
        "# Record the deployment, idempotently"),
    ("api.md", "# After the review: record the start, then the outcome, each with a key of its own."): (
        "tests/e2e/test_docs_examples_processes.py::test_the_github_actions_steps_record_one_deployment_per_run",
        "# After the review"),
    ("api.md", '{"commit_sha":"…'): (
        "tests/e2e/test_docs_examples_processes.py::test_the_github_actions_steps_record_one_deployment_per_run",
        '{"commit_sha":"'),
    ("api.md", "body=$(jq -n \\"): (
        "tests/e2e/test_docs_examples_processes.py::test_the_gitlab_job_records_one_deployment_per_pipeline",
        "body=$(jq -n"),
    ("api.md", '{"type":"urn:deployapi:problem:storage_unavailable","title":"Storage unavailable","status":503,'): (
        "tests/http/test_docs_examples.py::test_the_storage_fault_answer_is_the_one_shown",
        "storage_unavailable"),
    # Webhooks: their receivers, headers and bodies (tests/unit/test_docs_examples_webhooks.py reads them
    # from the page) and what a delivering server shows.
    ("api.md", "2026-12-02 13:47:00,077 WARNING deployapi.webhooks: webhook cd-events: event 7 not delivered "
               "(attempt 1): HTTP 503 Service Unavailable; next attempt in 1 s"): (
        "tests/e2e/test_webhooks_server.py::test_a_receiver_that_fails_hangs_and_goes_away_gets_its_backlog_in_order_"
        "and_holds_up_no_other", "FAILED_ATTEMPT.findall"),
    ("api.md", "POST /ingest?token=3f1c9a7e HTTP/1.1"): (
        "tests/unit/test_docs_examples_webhooks.py::test_each_signed_request_shown_names_its_event_and_is_signed_over_"
        "its_body", '"### Headers"'),
    ("api.md", "POST /deployapi HTTP/1.1"): (
        "tests/unit/test_docs_examples_webhooks.py::test_each_signed_request_shown_names_its_event_and_is_signed_over_"
        "its_body", '"#### json"'),
    ("api.md", "cloudevents {"): (
        "tests/unit/test_docs_examples_webhooks.py::test_each_signed_request_shown_names_its_event_and_is_signed_over_"
        "its_body", '"#### cloudevents"'),
    ("api.md", "POST /services/T0001/B0001/XXXXXXXXXXXXXXXXXXXXXXXX HTTP/1.1"): (
        "tests/unit/test_docs_examples_webhooks.py::test_each_slack_message_shown_is_the_one_deployapi_writes",
        '"#### slack"'),
    ("api.md", "*billing* 1.4.2 to *production*: requested by alice@example.com (01m8vg3zgqgwsh0hy4c08ktf04)"): (
        "tests/unit/test_docs_examples_webhooks.py::test_each_slack_message_shown_is_the_one_deployapi_writes",
        '"### Slack"'),
    ("api.md", '"""A receiver for deployapi\'s json webhooks: verify, skip repeats, handle in order."""'): (
        "tests/unit/test_docs_examples_webhooks.py::test_the_documented_receiver_handles_each_delivered_event_once_"
        "and_in_order", "receiver_example()"),
    ("api.md", "$ WEBHOOK_SECRET='whsec_iZ5atCTHnlAZaBc2g2ixULWKmQF/sbT037ZdoQqIDT0=' python3 receiver.py"): (
        "tests/unit/test_docs_examples_webhooks.py::test_the_documented_receiver_handles_each_delivered_event_once_"
        "and_in_order", "receiver_example()"),
    ("api.md", "$ curl -si -X POST http://127.0.0.1:9000/hooks/deployapi -H 'Content-Type: application/json' "
               "-H 'webhook-id: audit-sink-999-0123456789ab' -H \"webhook-timestamp: $(date +%s)\" "
               "-H 'webhook-signature: v1,Zm9yZ2Vk' -d '{\"event\": {}, \"deployment\": {}}'"): (
        "tests/unit/test_docs_examples_webhooks.py::test_the_documented_receiver_refuses_a_request_not_signed_with_"
        "its_secret", "OTHER_SECRET"),
    ("api.md", "$ curl -s http://localhost:8080/webhooks"): (
        "tests/e2e/test_webhooks_server.py::test_a_receiver_that_fails_hangs_and_goes_away_gets_its_backlog_in_order_"
        "and_holds_up_no_other", '"GET", "/webhooks"'),
}

# Blocks the suite does not run, by page and first line, with the words by which the page says so.
NOT_RUN: dict[tuple[str, str], str] = {
    ("api.md", "$ curl -s http://127.0.0.1:8080/openapi.json -o openapi.json"):
        "checked by hand, not by the test suite",
    ("api.md", "$ datamodel-codegen --input openapi.json --input-file-type openapi --output deployapi_models.py \\"):
        "checked by hand, not by the test suite",
}

DIRECTIVE = "docs-example"
DIRECTIVES = ("after ", "the log of the block above", "the output of the block above")


def shown_path(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


# --- reading the pages -----------------------------------------------------------------------------------------

@dataclasses.dataclass
class Block:
    """A fenced block of a page, or a console block in a ``<!-- docs-example`` comment (``hidden``)."""

    page: Path
    line: int  # index of the opening line (the fence, or the comment)
    language: str
    body: list[str]
    body_line: int  # index of the body's first line
    indent: str
    hidden: bool
    directives: list[str]
    heading: str  # the heading line the block is under
    heading_line: int

    @property
    def key(self) -> tuple[str, str]:
        """(page, first line): how ELSEWHERE and NOT_RUN name the block."""
        first = next((line for line in self.body if line.strip()), "")
        return self.page.name, first.strip()

    def matches(self, key: tuple[str, str]) -> bool:
        """Whether ``key`` names this block: (page, its first line), (page, the heading's text, a space and the
        first line) for a first line such as ``{``, or (page, the start of its first line and ``…``)."""
        page, first = self.key
        name = key[1]
        return key[0] == page and (name in (first, f"{self.heading.lstrip('#').strip()} {first}")
                                   or (name.endswith("…") and first.startswith(name[:-1])))

    def listed(self, table: dict):
        """The entry of ``table`` for this block, or None."""
        return next((entry for key, entry in table.items() if self.matches(key)), None)

    @property
    def where(self) -> str:
        return f"{shown_path(self.page)}:{self.line + 1}"

    def directive(self, name: str) -> str | None:
        return next((text for text in self.directives if text.startswith(name)), None)


def read_blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page`` and every console block in a docs-example comment, in page order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: list[str] = []
    heading, heading_line = "", -1
    number = 0
    while number < len(lines):
        line = lines[number]
        fence = re.match(r"^( *)```(\S*)\s*$", line)
        comment = re.match(rf"^<!-- {DIRECTIVE}\b(.*)$", line)
        if fence:
            indent, language = fence.groups()
            end = number + 1
            while end < len(lines) and not re.match(rf"^{indent}```\s*$", lines[end]):
                end += 1
            body = [text[len(indent):] if text.startswith(indent) else text.lstrip() for text in lines[number + 1:end]]
            blocks.append(Block(page, number, language, body, number + 1, indent, False, pending, heading,
                                heading_line))
            pending = []
            number = end + 1
            continue
        if comment:
            rest = comment[1]
            if rest.rstrip().endswith("-->"):
                text = rest.rstrip()[:-3].strip().removeprefix(":").strip()
                if not text.startswith(DIRECTIVES):
                    raise ValueError(f"{page.name}:{number + 1}: unknown docs-example directive {text!r}; "
                                     f"known: {', '.join(d.strip() for d in DIRECTIVES)}")
                pending.append(text)
                number += 1
                continue
            end = number + 1
            while end < len(lines) and lines[end].strip() != "-->":
                end += 1
            if end == len(lines):
                raise ValueError(f"{page.name}:{number + 1}: a docs-example comment without its closing -->")
            blocks.append(Block(page, number, "console", lines[number + 1:end], number + 1, "", True, [], heading,
                                heading_line))
            number = end + 1
            continue
        if re.match(r"^#{1,6} ", line):
            heading, heading_line = line, number
        number += 1
    return blocks


def section_end(page_lines: list[str], heading_line: int) -> int:
    """The index of the line after the section that the heading at ``heading_line`` opens."""
    level = len(page_lines[heading_line]) - len(page_lines[heading_line].lstrip("#"))
    fenced = False
    for number in range(heading_line + 1, len(page_lines)):
        line = page_lines[number]
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and re.match(rf"^#{{1,{level}}} ", line):
            return number
    return len(page_lines)


def replay_order(page: Path, blocks: list[Block]) -> list[Block]:
    """The blocks in the order they are replayed: page order, but a block with ``after ### HEADING`` (and the
    hidden blocks just before it) after the last block of that section."""
    lines = page.read_text(encoding="utf-8").splitlines()
    order: list[Block] = []
    deferred: list[tuple[int, list[Block]]] = []
    group: list[Block] = []
    for block in blocks:
        group.append(block)
        if block.hidden:
            continue
        after = block.directive("after ")
        if after:
            heading = after.removeprefix("after ").strip()
            if heading not in lines:
                raise ValueError(f"{block.where}: 'after {heading}': the page has no such heading")
            deferred.append((section_end(lines, lines.index(heading)), group))
        else:
            order.extend(group)
        group = []
    order.extend(group)
    for end, moved in deferred:
        place = max((number + 1 for number, block in enumerate(order) if block.line < end), default=0)
        order[place:place] = moved
    return order


@dataclasses.dataclass
class Command:
    """A ``$`` line (with its continuations) of a console block and the output printed under it."""

    block: Block
    text: str
    line: int  # index in the page
    output: list[str]
    output_line: int  # index in the page of the output's first line (where output goes if none is shown)

    @property
    def where(self) -> str:
        return f"{shown_path(self.block.page)}:{self.line + 1}"


def _complete(text: str) -> bool:
    if text.endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def commands_of(block: Block) -> list[Command]:
    """The commands of a console block (``@`` directives of a hidden block are commands too)."""
    commands: list[Command] = []
    body = block.body
    number = 0
    while number < len(body):
        line = body[number]
        if line.startswith("@"):
            commands.append(Command(block, line, block.body_line + number, [], block.body_line + number + 1))
            number += 1
            continue
        if not line.startswith("$ "):
            if line.strip():
                raise ValueError(f"{block.page.name}:{block.body_line + number + 1}: output before any command")
            number += 1
            continue
        start = number
        text = line[2:]
        while not _complete(text) and number + 1 < len(body):
            number += 1
            text = text + "\n" + body[number]
        number += 1
        output_start = number
        while number < len(body) and not body[number].startswith(("$ ", "@")):
            number += 1
        output = body[output_start:number]
        while output and not output[-1].strip():
            output.pop()
        commands.append(Command(block, text, block.body_line + start, output, block.body_line + output_start))
    return commands


# --- values that differ by nature between runs -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    pattern: str  # how a value of this kind is written in a page
    actual: str  # what may stand in its place in a run
    injective: bool = True  # whether two documented values must be two values of the run


TIMESTAMP = r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d\.\d{6}(?:Z|[+-]\d\d:\d\d|%2B\d\d:\d\d)"
KINDS = (
    Kind("event hash", r"(?<![0-9a-f:])[0-9a-f]{64}(?![0-9a-f])", r"(?<![0-9a-f:])[0-9a-f]{64}(?![0-9a-f])"),
    Kind("request id", r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])", r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])"),
    Kind("shortened hash", r"(?<![0-9a-f:])[0-9a-f]{7,63}(?=…|\.\.\.)", ""),  # actual: as many hex digits
    Kind("deployment id", r"(?<![0-9a-z])01[0-9a-hjkmnp-tv-z]{24}(?![0-9a-z])",
         r"(?<![0-9a-z])[0-9a-hjkmnp-tv-z]{26}(?![0-9a-z])"),
    # Written by a run: never a whole second (the fraction .000000 is written by whoever chose the time).
    Kind("timestamp", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.(?!000000)\d{6}(?:Z|[+-]\d\d:\d\d|%2B\d\d:\d\d)", TIMESTAMP),
    Kind("cursor", r"Wy[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"),
    Kind("log time", r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", False),
    Kind("duration", r"(?<![\d.])\d+\.\dms\b", r"\d+\.\dms", False),
)
MEASURE = Kind("measured duration", "", "", False)  # DORA's median and p90, compared as JSON numbers
TOKEN = re.compile("|".join(f"(?P<k{number}>{kind.pattern})" for number, kind in enumerate(KINDS)))
ELLIPSIS = r"(?:\.\.\.|…)"


def tokens(text: str):
    """(kind, start, end) of each value of a volatile kind in ``text``."""
    for match in TOKEN.finditer(text):
        number = int(match.lastgroup[1:])
        yield KINDS[number], match.start(), match.end()


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("%2B", "+").replace("z", "Z").replace("t", "T"))


def written_like(value: datetime, model: str) -> str:
    """``value`` written as the timestamp ``model`` is: same offset, same encoding of ``+``."""
    offset = re.search(r"(Z|[+-]\d\d:\d\d|%2B\d\d:\d\d)$", model)[1]
    if offset == "Z":
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sign = -1 if offset.startswith("-") else 1
    hours, minutes = map(int, offset[-5:].split(":"))
    local = value.astimezone(timezone(sign * timedelta(hours=hours, minutes=minutes)))
    return local.strftime("%Y-%m-%dT%H:%M:%S.%f") + offset


class Binder:
    """Documented values of the volatile kinds bound to the values of the run, both ways."""

    def __init__(self) -> None:
        self.forward: dict[tuple[str, object], object] = {}
        self.backward: dict[tuple[str, object], object] = {}
        self.first_seen: dict[tuple[str, object], str] = {}

    @staticmethod
    def _key(kind: Kind, value: str):
        return instant(value) if kind.name == "timestamp" else value

    def bind(self, kind: Kind, documented, actual, where: str) -> str | None:
        """Bind, or check the binding; the problem as a sentence, or None."""
        doc_key, actual_key = (kind.name, self._key(kind, documented)), (kind.name, self._key(kind, actual))
        if doc_key in self.forward:
            if self.forward[doc_key] != actual_key[1]:
                return (f"{documented} ({kind.name}) stands for {self._show(kind, self.forward[doc_key])} since "
                        f"{self.first_seen[doc_key]}, but here the run has {actual}")
            return None
        if kind.injective and actual_key in self.backward:
            other = self.backward[actual_key]
            return (f"the page writes {documented} where it wrote {self._show(kind, other)} before "
                    f"({self.first_seen[(kind.name, other)]}): both are {actual} in the run")
        self.forward[doc_key] = actual_key[1]
        self.backward[actual_key] = doc_key[1]
        self.first_seen[doc_key] = where
        return None

    @staticmethod
    def _show(kind: Kind, value) -> str:
        return written_like(value, "Z") if kind.name == "timestamp" else str(value)

    def to_run(self, text: str, where: str) -> str:
        """``text`` of a command with each bound documented value replaced by the run's; an unbound one is
        bound to itself (a made-up id stays as written)."""
        pieces, last = [], 0
        for kind, start, end in tokens(text):
            documented = text[start:end]
            key = (kind.name, self._key(kind, documented))
            if key not in self.forward:
                self.bind(kind, documented, documented, where)
            actual = self.forward[key]
            pieces += [text[last:start], written_like(actual, documented) if kind.name == "timestamp" else actual]
            last = end
        return "".join(pieces) + text[last:]

    def to_page(self, text: str) -> str:
        """``text`` of an answer with each value of the run that stands for a documented one written as documented."""
        pieces, last = [], 0
        for match in re.finditer(TIMESTAMP + "|" + "|".join(kind.actual for kind in KINDS if kind.actual
                                                            and kind.name != "timestamp"), text):
            value = match.group()
            replacement = value
            if re.fullmatch(TIMESTAMP, value):
                key = ("timestamp", instant(value))
                if key in self.backward:
                    replacement = written_like(self.backward[key], value)
            else:
                for kind in KINDS:
                    if kind.actual and (kind.name, value) in self.backward and re.fullmatch(kind.actual, value):
                        replacement = self.backward[(kind.name, value)]
                        break
            pieces += [text[last:match.start()], replacement]
            last = match.end()
        return "".join(pieces) + text[last:]


# --- comparing -------------------------------------------------------------------------------------------------

WILDCARD = type("Elided", (), {"__repr__": lambda self: "…"})()


@dataclasses.dataclass
class ShownObject:
    """A JSON object as a page shows it; ``open`` when some of its members are elided."""

    members: dict
    open: bool


def shown(value) -> str:
    """A value as a page shows it, for a message."""
    if value is WILDCARD:
        return "…"
    if isinstance(value, ShownObject):
        members = [f"{json.dumps(name)}: {shown(item)}" for name, item in value.members.items()]
        return "{" + ", ".join(members + (["…"] if value.open else [])) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(shown, value)) + "]"
    return json.dumps(value, ensure_ascii=False)


class DocJSON:
    """A reader of JSON as pages write it: wrapped lines, and ``…`` or ``...`` for what is left out."""

    ELIDED = re.compile(rf"{ELLIPSIS}(?:[^\"{{}}\[\],.…]*?{ELLIPSIS})?")
    NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")

    def __init__(self, text: str):
        # A line that goes on with a space continues the one before: inside a string, the break was a space.
        self.text = text.replace("\n ", " ")
        self.at = 0

    @classmethod
    def values(cls, text: str) -> list | None:
        """Every JSON value in ``text``, or None if it is not JSON as a page writes it."""
        reader = cls(text)
        found = []
        try:
            while True:
                reader.space()
                if reader.at == len(reader.text):
                    return found
                found.append(reader.value())
        except (ValueError, IndexError):
            return None

    def space(self) -> None:
        while self.at < len(self.text) and self.text[self.at] in " \t\r\n":
            self.at += 1

    def value(self):
        self.space()
        char = self.text[self.at]
        elided = self.ELIDED.match(self.text, self.at)
        if elided:
            self.at = elided.end()
            return WILDCARD
        if char == "{":
            return self.object()
        if char == "[":
            return self.array()
        if char == '"':
            text, self.at = json.decoder.scanstring(self.text, self.at + 1)
            return text
        for word, value in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.at):
                self.at += len(word)
                return value
        number = self.NUMBER.match(self.text, self.at)
        if not number:
            raise ValueError(f"not JSON at {self.at}")
        self.at = number.end()
        return json.loads(number.group())

    def object(self) -> ShownObject:
        self.at += 1
        members, elided = {}, False
        while True:
            self.space()
            if self.text[self.at] == "}":
                self.at += 1
                return ShownObject(members, elided)
            found = self.ELIDED.match(self.text, self.at)
            if found:
                self.at, elided = found.end(), True
            else:
                if self.text[self.at] != '"':
                    raise ValueError("a member name must be a string")
                name, self.at = json.decoder.scanstring(self.text, self.at + 1)
                self.space()
                if self.text[self.at] != ":":
                    raise ValueError("':' expected")
                self.at += 1
                members[name] = self.value()
            self.space()
            if self.text[self.at] == ",":
                self.at += 1

    def array(self) -> list:
        self.at += 1
        items = []
        while True:
            self.space()
            if self.text[self.at] == "]":
                self.at += 1
                return items
            items.append(self.value())
            self.space()
            if self.text[self.at] == ",":
                self.at += 1


def json_values(text: str) -> list | None:
    """The JSON values of an answer, or None if it is not JSON."""
    decoder, at, found = json.JSONDecoder(), 0, []
    text = text.strip()
    try:
        while at < len(text):
            value, at = decoder.raw_decode(text, at)
            found.append(value)
            while at < len(text) and text[at] in " \t\r\n":
                at += 1
    except ValueError:
        return None
    return found


class Comparison:
    """One command's answer against what its page prints; ``problems`` says what differs."""

    def __init__(self, binder: Binder, where: str):
        self.binder = binder
        self.where = where
        self.problems: list[str] = []

    def text(self, documented: str, actual: str, path: str = "") -> None:
        """A line or a string: literal text, bound values and ``…``."""
        pattern, groups, last = [], [], 0
        spans = [(kind, start, end) for kind, start, end in tokens(documented)]
        spans += [(None, match.start(), match.end()) for match in re.finditer(ELLIPSIS, documented)]
        spans.sort(key=lambda span: span[1])
        for kind, start, end in spans:
            if start < last:
                continue
            pattern.append(re.escape(documented[last:start]))
            if kind is None:
                pattern.append("(.*?)")
                groups.append(None)
            else:
                actual_pattern = kind.actual or rf"[0-9a-f]{{{end - start}}}"
                pattern.append(f"({actual_pattern})")
                groups.append((kind, documented[start:end]))
            last = end
        pattern.append(re.escape(documented[last:]) + "$")
        match = re.match("".join(pattern), actual, re.DOTALL)
        if not match:
            self.problems.append(f"{path or 'text'}: the page shows {documented!r}, the run has {actual!r}")
            return
        for group, value in zip(groups, match.groups(), strict=True):
            if group is not None:
                problem = self.binder.bind(group[0], group[1], value, self.where)
                if problem:
                    self.problems.append(f"{path or 'text'}: {problem}")

    def json(self, documented, actual, path: str = "$", measured: bool = False) -> None:
        if documented is WILDCARD:
            return
        if isinstance(documented, ShownObject):
            if not isinstance(actual, dict):
                self.problems.append(f"{path}: the page shows an object, the run has {json.dumps(actual)}")
                return
            for name, value in documented.members.items():
                if name not in actual:
                    self.problems.append(f"{path}: the run has no {name!r} (the page shows {shown(value)})")
                    continue
                self.json(value, actual[name], f"{path}.{name}",
                          measured=path.endswith("_seconds") and name in ("median", "p90"))
            if not documented.open:
                unshown = [name for name in actual if name not in documented.members]
                if unshown:
                    self.problems.append(f"{path}: the run also has {', '.join(unshown)}, which the page does not "
                                         "show")
        elif isinstance(documented, list):
            if not isinstance(actual, list):
                self.problems.append(f"{path}: the page shows an array, the run has {json.dumps(actual)}")
                return
            open_end = bool(documented) and documented[-1] is WILDCARD
            items = documented[:-1] if open_end else documented
            if len(actual) < len(items) or (not open_end and len(actual) != len(items)):
                self.problems.append(f"{path}: the page shows {len(items)} items, the run has {len(actual)}")
            for number, (item, value) in enumerate(zip(items, actual, strict=False)):
                self.json(item, value, f"{path}[{number}]")
        elif isinstance(documented, str):
            if not isinstance(actual, str):
                self.problems.append(f"{path}: the page shows {shown(documented)}, the run has "
                                     f"{json.dumps(actual)}")
            else:
                self.text(documented, actual, path)
        elif measured and isinstance(documented, float) and isinstance(actual, (int, float)) \
                and not isinstance(actual, bool):
            problem = self.binder.bind(MEASURE, repr(documented), repr(actual), self.where)
            if problem:
                self.problems.append(f"{path}: {problem}")
        elif type(documented) is not type(actual) or documented != actual:
            self.problems.append(f"{path}: the page shows {json.dumps(documented)}, the run has {json.dumps(actual)}")

    def body(self, documented: list[str], actual: str, what: str = "body") -> None:
        """A body or a program's output: JSON values if the page shows JSON, lines of text otherwise."""
        page_text = "\n".join(documented)
        values = DocJSON.values(page_text) if page_text.strip() else []
        if values:
            answered = json_values(actual)
            if answered is None:
                self.problems.append(f"{what}: the page shows JSON, the run has {actual[:200]!r}")
                return
            if len(answered) != len(values):
                self.problems.append(f"{what}: the page shows {len(values)} JSON values, the run has {len(answered)}")
            for number, (value, answer) in enumerate(zip(values, answered, strict=False)):
                self.json(value, answer, "$" if len(values) == 1 else f"${number}")
            return
        lines = actual.splitlines() if actual.strip() else []
        if len(lines) != len(documented):
            self.problems.append(f"{what}: the page shows {len(documented)} lines, the run has {len(lines)}: "
                                 f"{actual[:300]!r}")
        for number, (line, answer) in enumerate(zip(documented, lines, strict=False)):
            self.text(line, answer, f"{what} line {number + 1}")


def replayed(block: Block) -> bool:
    """Whether :class:`Replay` runs the block itself (unless ELSEWHERE or NOT_RUN lists it)."""
    return block.language in ("console", "python", "toml") or (block.language == "text" and bool(block.directives))


# --- replaying -------------------------------------------------------------------------------------------------

class Clock:
    """Real time until a page sets it (``@clock``); from then on, that instant plus the time since."""

    def __init__(self) -> None:
        self.start: datetime | None = None
        self.set_at = 0.0

    def set(self, value: datetime) -> None:
        self.start, self.set_at = value, time.monotonic()

    def __call__(self) -> datetime:
        if self.start is None:
            return datetime.now(timezone.utc)
        return self.start + timedelta(seconds=time.monotonic() - self.set_at)


@dataclasses.dataclass
class Served:
    """An app listening, as far as the page is concerned, on a port (under a prefix, as waitress's url_prefix)."""

    app: object
    prefix: str = ""


@dataclasses.dataclass
class Answer:
    """What one replayed command printed, in parts for comparing and rewriting."""

    status_line: str | None = None
    headers: list[tuple[str, str]] | None = None
    body: str = ""
    text: str | None = None  # the whole output when it is not a curl -i answer (jq, -w, cat, a program)
    json_body: bool = False  # text is a body as the server sent it (JSON is written in the page's style)


@dataclasses.dataclass
class Outcome:
    command: Command
    problems: list[str]
    answer: Answer | None = None
    compared: bool = True


class NotReplayable(Exception):
    """A command this replay cannot run; the block must be run by another test (ELSEWHERE)."""


class Replay:
    """Replays the blocks of one page, in order, in a directory of its own."""

    def __init__(self, page: Path, directory: Path):
        self.page = page
        self.directory = directory
        self.files: dict[str, Path] = {}  # a path the page writes -> where it is in this run
        self.servers: dict[int, Served] = {}
        self.variables: dict[str, str] = {}
        self.binder = Binder()
        self.clock = Clock()
        self.outcomes: list[Outcome] = []
        self.by_block: dict[int, list[Outcome]] = {}
        self.hold_lock = False
        self.logged: dict[int, list[str]] = {}  # block line -> log lines of deployapi while it ran
        self.printed: dict[int, str] = {}  # python block line -> what it printed
        self.blocks = read_blocks(page)

    # -- files ----------------------------------------------------------------------------------------------

    def file(self, documented: str) -> Path:
        """Where the file the page names ``documented`` is in this run."""
        if documented not in self.files:
            name = re.sub(r"[^\w.-]", "_", documented.strip("/")) or "file"
            self.files[documented] = self.directory / name
        return self.files[documented]

    # -- the whole page -------------------------------------------------------------------------------------

    def run(self) -> list[Outcome]:
        handler = _Capture()
        own = logging.getLogger("deployapi")
        level = own.level
        own.addHandler(handler)
        own.setLevel(logging.INFO)
        try:
            previous = None
            for block in replay_order(self.page, self.blocks):
                handler.lines.clear()
                self.run_block(block, previous)
                self.logged[block.line] = list(handler.lines)
                if not block.hidden:
                    previous = block
        finally:
            own.removeHandler(handler)
            own.setLevel(level)
            self.close()
        return self.outcomes

    def close(self) -> None:
        for served in self.servers.values():
            served.app.close()
        self.servers.clear()

    @staticmethod
    def handled_elsewhere(block: Block) -> bool:
        return block.listed(ELSEWHERE) is not None or block.listed(NOT_RUN) is not None

    def run_block(self, block: Block, previous: Block | None) -> None:
        outcomes = self.by_block.setdefault(block.line, [])
        if self.handled_elsewhere(block):
            return
        if block.language == "console":
            for command in commands_of(block):
                outcome = self.run_command(command)
                outcomes.append(outcome)
                self.outcomes.append(outcome)
        elif block.language in ("python", "toml"):
            command = Command(block, block.key[1], block.line, [], block.body_line)
            try:
                if block.language == "python":
                    self.run_python(block)
                else:
                    load_config(tomllib.loads("\n".join(block.body)))
                problems = []
            except Exception as error:  # the example does not run: that is the finding
                problems = [f"the ```{block.language} block fails: {type(error).__name__}: {error}"]
            outcome = Outcome(command, problems, compared=False)
            outcomes.append(outcome)
            self.outcomes.append(outcome)
        elif block.language == "text" and block.directives:
            printed = list(block.body)
            while printed and not printed[-1].strip():
                printed.pop()
            if block.directive("the log of the block above") is not None:
                actual = "\n".join(self.logged.get(previous.line, [])) if previous else ""
            else:
                actual = self.printed.get(previous.line, "") if previous else ""
            command = Command(block, block.key[1], block.line, printed, block.body_line)
            comparison = Comparison(self.binder, block.where)
            comparison.body(printed, actual, "output")
            outcome = Outcome(command, comparison.problems, Answer(text=actual))
            outcomes.append(outcome)
            self.outcomes.append(outcome)
        # Any other block is run elsewhere or not at all: tests/http/test_docs_examples.py holds every one to
        # ELSEWHERE and NOT_RUN.

    def run_python(self, block: Block) -> None:
        """Run a ```python block; its ``waitress.serve`` starts a server of this replay, its paths are mapped."""
        source = re.sub(r'"(/(?:tmp|var|etc)/[^"]+)"', lambda match: json.dumps(str(self.file(match[1]))),
                        "\n".join(block.body))

        def serve(app, host="0.0.0.0", port=8080, url_prefix="", **_):
            self.listen(int(port), Served(app, url_prefix.rstrip("/")))

        namespace = {"__name__": "__docs_example__"}
        printed = io.StringIO()
        with mock.patch("waitress.serve", serve), redirect_stdout(printed):
            exec(compile(source, block.where, "exec"), namespace)
        self.printed[block.line] = printed.getvalue()
        served = {id(served.app) for served in self.servers.values()}
        for value in namespace.values():
            if hasattr(value, "repository") and hasattr(value, "close") and id(value) not in served:
                value.close()

    def listen(self, port: int, served: Served) -> None:
        if port in self.servers:
            self.servers.pop(port).app.close()
        self.servers[port] = served

    # -- one command ----------------------------------------------------------------------------------------

    def run_command(self, command: Command) -> Outcome:
        try:
            return self._run_command(command)
        except NotReplayable as error:
            return Outcome(command, [f"not replayable: {error}"], compared=False)
        except Exception as error:  # the replay goes on: each command's failure is its own
            return Outcome(command, [f"{type(error).__name__}: {error}"], compared=False)

    def _run_command(self, command: Command) -> Outcome:
        if command.text.startswith("@"):
            return self.run_directive(command)
        text = command.text.strip()
        words = shlex.split(text, comments=True)
        if not words:
            return Outcome(command, [] if not command.output else ["a comment prints nothing"], compared=False)
        assignment = re.fullmatch(r"(\w+)=\$\((.*)\)", text, re.DOTALL)
        if assignment:
            answer = self.pipeline(self.prepare(assignment[2], command))
            self.variables[assignment[1]] = (answer.text if answer.text is not None else answer.body).strip()
            return Outcome(command, [] if not command.output else ["an assignment prints nothing"], compared=False)
        if all(re.fullmatch(r"\w+=.*", word, re.DOTALL) for word in words):
            for word in words:
                name, _, value = word.partition("=")
                self.variables[name] = self.binder.to_run(value, command.where)
            return Outcome(command, [] if not command.output else ["an assignment prints nothing"], compared=False)
        if words[0] == "cat" and len(words) == 2 and words[1] not in self.files:
            # The page shows a file: from here on the run has it, as shown.
            self.file(words[1]).write_text("\n".join(command.output) + "\n", encoding="utf-8")
            return Outcome(command, [], compared=False)
        answer = self.pipeline(self.prepare(text, command))
        if answer is None:  # deployapi serve: its printed lines are tests/e2e/test_docs_examples_processes.py's
            return Outcome(command, [], compared=False)
        comparison = Comparison(self.binder, command.where)
        if answer.status_line is not None:
            self.compare_curl(comparison, command.output, answer)
        else:
            comparison.body(command.output, answer.text, "output")
        return Outcome(command, comparison.problems, answer)

    def prepare(self, text: str, command: Command) -> str:
        """The command as the run sends it: documented values replaced by the run's, then variables expanded
        and the comment dropped, as a shell does (not inside single quotes; variables not inside them either)."""
        text = self.binder.to_run(text, command.where)
        out, quote, at = [], "", 0
        while at < len(text):
            char = text[at]
            if char in "'\"" and quote in ("", char):
                quote = "" if quote else char
            elif char == "\\" and quote != "'" and at + 1 < len(text):
                if text[at + 1] != "\n":  # a backslash-newline joins two lines
                    out.append(text[at:at + 2])
                at += 2
                continue
            elif char == "#" and not quote and (at == 0 or text[at - 1] in " \t\n"):
                break
            elif char == "$" and quote != "'":
                name = re.match(r"\{(\w+)\}|(\w+)", text[at + 1:])
                if name:
                    variable = name[1] or name[2]
                    if variable not in self.variables:
                        raise NotReplayable(f"${variable} is not set by the page")
                    out.append(self.variables[variable])
                    at += 1 + name.end()
                    continue
            out.append(char)
            at += 1
        return "".join(out)

    def run_directive(self, command: Command) -> Outcome:
        name, _, argument = command.text[1:].partition(" ")
        if name == "clock":
            self.clock.set(datetime.fromisoformat(argument.strip()))
        elif name == "hold-write-lock":
            self.hold_lock = True
        else:
            raise NotReplayable(f"{command.where}: unknown directive @{name}; known: @clock, @hold-write-lock")
        return Outcome(command, [], compared=False)

    def pipeline(self, text: str) -> Answer | None:
        lexer = shlex.shlex(text, posix=True, punctuation_chars="|&;<>")
        lexer.whitespace_split = True
        lexer.commenters = ""
        words = list(lexer)
        if words and words[-1] == "&":
            words.pop()
        stages, current = [], []
        for word in words:
            if word == "|":
                stages.append(current)
                current = []
            else:
                current.append(word)
        stages.append(current)
        first, rest = stages[0], stages[1:]
        environment = {}
        while first and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", first[0], re.DOTALL):
            name, _, value = first.pop(0).partition("=")
            environment[name] = value
        if not first:
            raise NotReplayable(f"nothing to run in {text!r}")
        program = first[0]
        if program == "curl":
            answer = self.curl(first[1:])
        elif program == "deployapi" and first[1:2] == ["serve"]:
            self.serve(first[1:], environment)
            return None
        elif program == "cat" and len(first) == 2 and not rest:
            return Answer(text=self.file(first[1]).read_text(encoding="utf-8").rstrip("\n"))
        elif program == "python3" and first[1:2] == ["-c"] and len(first) == 5 and first[3] == ">" and not rest:
            with open(self.file(first[4]), "wb") as output:
                subprocess.run([sys.executable, "-c", first[2]], stdout=output, check=True, cwd=self.directory)
            return Answer(text="")
        else:
            raise NotReplayable(f"cannot replay {program!r}: only curl (piped to jq), cat, deployapi serve and, "
                                "in a hidden block, python3 -c … > FILE")
        for stage in rest:
            if stage[:1] != ["jq"]:
                raise NotReplayable(f"cannot replay a pipe into {stage[:1]}: only into jq")
            answer = Answer(text=self.jq(stage[1:], answer.text))
        return answer

    @staticmethod
    def jq(arguments: list[str], text: str) -> str:
        if shutil.which("jq") is None:
            raise NotReplayable("jq is not installed: the page pipes answers into it (install jq to replay)")
        result = subprocess.run(["jq", *arguments], input=text, capture_output=True, text=True)
        if result.returncode:
            return f"jq: exit {result.returncode}: {result.stderr.strip()}"
        return result.stdout.rstrip("\n")

    def serve(self, arguments: list[str], environment: dict[str, str]) -> None:
        """Start the server a ``deployapi serve`` line describes, as the CLI reads it, in process."""
        flags = vars(build_parser().parse_args(arguments))
        settings = load_settings(flags, environment)
        config = settings.config
        if config is not None:
            if config not in self.files:
                raise NotReplayable(f"the page does not show the configuration file {config}: show it (cat {config}) "
                                    "before the deployapi serve line")
            config = str(self.files[config])
        settings = dataclasses.replace(settings, db=str(self.file(settings.db)), config=config)
        with mock.patch.dict(os.environ, environment), \
                mock.patch.object(settings_module, "create_app", partial(create_app, clock=self.clock)):
            app = app_from_settings(settings, configure_logging=False, max_writers=max(1, settings.threads - 1))
        self.listen(settings.port, Served(app))

    def curl(self, arguments: list[str]) -> Answer:
        method, headers, data, url = None, [], None, None
        include = dump = discard = False
        write_out = None
        words = list(arguments)
        while words:
            word = words.pop(0)
            if word in ("-X", "--request"):
                method = words.pop(0)
            elif word in ("-H", "--header"):
                name, _, value = words.pop(0).partition(":")
                headers.append((name.strip(), value.strip()))
            elif word in ("-d", "--data", "--data-binary", "--data-raw"):
                value = words.pop(0)
                if value.startswith("@") and word != "--data-raw":
                    value = self.file(value[1:]).read_bytes().decode("utf-8")
                    if word != "--data-binary":
                        value = value.replace("\r", "").replace("\n", "")
                data = value if data is None else data + "&" + value
            elif word in ("-o", "--output"):
                if words.pop(0) != "/dev/null":
                    raise NotReplayable("curl -o: only /dev/null")
                discard = True
            elif word in ("-D", "--dump-header"):
                if words.pop(0) != "-":
                    raise NotReplayable("curl -D: only -")
                dump = True
            elif word in ("-w", "--write-out"):
                write_out = words.pop(0)
            elif re.fullmatch(r"-[siS]+", word):
                include = include or "i" in word
            elif word.startswith("-"):
                raise NotReplayable(f"curl {word}: not an option this replay knows")
            else:
                url = word
        if url is None:
            raise NotReplayable("curl without a URL")
        parts = urlsplit(url)
        port = parts.port or 80
        if port not in self.servers:
            raise NotReplayable(f"no server on port {port}: start one with a deployapi serve line (shown, or in a "
                                "<!-- docs-example comment) before this command")
        served = self.servers[port]
        path = parts.path or "/"
        base = f"{parts.scheme}://{parts.netloc}"
        if served.prefix and (path == served.prefix or path.startswith(served.prefix + "/")):
            base, path = base + served.prefix, path[len(served.prefix):]
        sent = {"User-Agent": "curl/8.5.0", "Accept": "*/*"}
        if data is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        for name, value in headers:
            for existing in [key for key in sent if key.lower() == name.lower()]:
                del sent[existing]
            sent[name] = value
        lock = self.write_lock(served) if self.hold_lock else None
        try:
            response = Client(served.app).open(path + (f"?{parts.query}" if parts.query else ""), base_url=base,
                                               method=method or ("POST" if data is not None else "GET"),
                                               headers=list(sent.items()),
                                               data=data.encode("utf-8") if data is not None else None)
        finally:
            if lock is not None:
                lock.rollback()
                lock.close()
                self.hold_lock = False
        body = response.get_data(as_text=True)
        answer = Answer(f"HTTP/1.1 {response.status}", list(response.headers.items()), body)
        if not (include or dump) or write_out is not None or (discard and not dump):
            text = "" if discard else body
            if write_out is not None:
                text += write_out.replace("%{http_code}", str(response.status_code)).replace("\\n", "\n")
            if dump:
                text = "\n".join([answer.status_line, *(f"{k}: {v}" for k, v in answer.headers), "", text])
            return Answer(text=text.rstrip("\n"), json_body=not discard and write_out is None and not dump)
        if discard:
            answer.body = ""
        return answer

    @staticmethod
    def write_lock(served: Served) -> sqlite3.Connection:
        connection = sqlite3.connect(served.app.repository.db_path, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        return connection

    @staticmethod
    def compare_curl(comparison: Comparison, shown: list[str], answer: Answer) -> None:
        if not shown:
            comparison.problems.append("the page shows no answer")
            return
        blank = shown.index("") if "" in shown else len(shown)
        head, body = shown[:blank], shown[blank + 1:]
        comparison.text(head[0], answer.status_line, "status line")
        actual = {name.lower(): value for name, value in answer.headers}
        named = set()
        for line in head[1:]:
            name, _, value = line.partition(":")
            named.add(name.strip().lower())
            if name.strip().lower() not in actual:
                comparison.problems.append(f"header {name.strip()}: the run has none")
            else:
                comparison.text(value.strip(), actual[name.strip().lower()], f"header {name.strip()}")
        unshown = [f"{name}: {value}" for name, value in answer.headers
                   if name.lower() not in named and name.lower() not in OMITTED_HEADERS]
        if unshown:
            comparison.problems.append(f"the run also sends {'; '.join(unshown)}, which the page does not show")
        comparison.body(body, answer.body)


class _Capture(logging.Handler):
    """deployapi's log records while a block runs, as ``deployapi serve`` writes them in its text format."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logs.stderr_handler("text").formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


# --- rewriting the pages ---------------------------------------------------------------------------------------

WIDTH = 105  # of a wrapped JSON answer's lines


def render_json(value, style: str) -> str:
    if style == "pretty":
        return json.dumps(value, indent=2, ensure_ascii=False)
    compact = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if style == "compact":
        return compact
    # Wrapped, as README.md writes answers: compact, each line after the first starting with a space, broken
    # after a comma between values or at a space inside a string (which the line break then stands for).
    lines, line, last_break, quoted, escaped = [], "", None, False, False
    for char in compact:
        if quoted and char == " ":
            last_break = (len(line), True)
        line += char
        if quoted:
            quoted = not (char == '"' and not escaped)
            escaped = char == "\\" and not escaped
        elif char == '"':
            quoted = True
        elif char == ",":
            last_break = (len(line), False)
        if len(line) > WIDTH and last_break is not None:
            at, at_space = last_break
            lines.append(line[:at])
            line = " " + line[at + 1 if at_space else at:]
            last_break = None
    lines.append(line)
    return "\n".join(lines)


def style_of(shown: list[str], page: Path) -> str:
    if not shown:
        return "wrapped" if page.name == "README.md" else "pretty"
    if len(shown) == 1:
        return "compact"
    return "pretty" if shown[1].startswith("  ") and shown[0].rstrip() in ("{", "[") else "wrapped"


def rendered(outcome: Outcome, binder: Binder) -> list[str]:
    """The output the page should print for ``outcome``, documented values written as documented."""
    command, answer = outcome.command, outcome.answer
    shown = command.output
    if answer.status_line is None:
        values = json_values(answer.text) if answer.json_body else None
        if values and len(values) == 1:
            return binder.to_page(render_json(values[0], style_of(shown, command.block.page))).splitlines()
        return binder.to_page(answer.text or "").splitlines()
    blank = shown.index("") if "" in shown else len(shown)
    head, body = shown[:blank], shown[blank + 1:]
    shown_names = [line.partition(":")[0].strip().lower() for line in head[1:]]
    headers = dict((name.lower(), (name, value)) for name, value in answer.headers)
    lines = [answer.status_line]
    # The headers the page shows, as it spells them, then any other the page may not leave out.
    for line, name in zip(head[1:], shown_names, strict=True):
        if name in headers:
            lines.append(f"{line.partition(':')[0].strip()}: {headers[name][1]}")
    lines += [f"{name}: {value}" for name, value in answer.headers
              if name.lower() not in shown_names and name.lower() not in OMITTED_HEADERS]
    lines.append("")
    values = json_values(answer.body)
    if values and len(values) == 1:
        lines += render_json(values[0], style_of(body, command.block.page)).splitlines()
    else:
        lines += answer.body.splitlines()
    return binder.to_page("\n".join(lines)).splitlines()


def update(page: Path, replay: Replay) -> list[str]:
    """Rewrite each printed answer of ``page`` that differs from the run; what was rewritten, one line each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    edits, notes = [], []
    for outcome in replay.outcomes:
        if not outcome.problems or outcome.answer is None or not outcome.compared:
            continue
        command = outcome.command
        if command.text.startswith("cat "):
            continue
        new = rendered(outcome, replay.binder)
        if any(re.search(ELLIPSIS, line) for line in command.output):
            notes.append(f"{command.where}: an answer with elisions is written in full: shorten it again by hand")
        indent = command.block.indent
        end = command.output_line + len(command.output)
        edits.append((command.output_line, end, [indent + line if line else "" for line in new]))
        notes.append(f"{command.where}: rewritten ({outcome.problems[0]})")
    for start, end, new in sorted(edits, reverse=True):
        lines[start:end] = new
    page.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return notes


def main(argv: list[str]) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m tests.docs_examples", description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true", help="rewrite the printed answers that differ from the run")
    parser.add_argument("pages", nargs="*", type=Path, default=list(PAGES))
    args = parser.parse_args(argv)
    failed = 0
    for page in args.pages:
        page = page.resolve()
        with tempfile.TemporaryDirectory() as directory:
            replay = Replay(page, Path(directory))
            outcomes = replay.run()
        for outcome in outcomes:
            for problem in outcome.problems:
                print(f"{outcome.command.where}: {problem}")
                failed += 1
        if args.update:
            for note in update(page, replay):
                print(note)
    return 1 if failed and not args.update else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
