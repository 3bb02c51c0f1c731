"""Every example of README.md and docs/api.md is run, so a changed answer fails: replayed, or run by a named test.

tests/docs_examples.py replays the console blocks in page order against
in-process apps and compares each printed answer with the run's (binding what
differs by nature: ids, times, hashes, cursors); ELSEWHERE and NOT_RUN there
list the blocks it does not replay.  The tests below hold each block to its
answers, every block to one of the three, each entry of those tables to a block
and a test, and the comparison itself to failing when a page is wrong.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import docs_examples as examples
import pytest
from docs_examples import ELSEWHERE, NOT_RUN, PAGES, ROOT, DocJSON, Replay, read_blocks, replayed, update
from werkzeug.test import Client

from deployapi import create_app, lifecycle

FIX = ("if the answer changed on purpose, regenerate the page's answers with `python -m tests.docs_examples "
       "--update` and review the diff (README.md, \"Development\")")


@pytest.fixture(scope="module")
def replays(tmp_path_factory) -> dict[str, Replay]:
    """Each page replayed once, in a directory of its own."""
    done = {}
    for page in PAGES:
        replay = Replay(page, tmp_path_factory.mktemp(page.stem))
        replay.run()
        done[page.name] = replay
    return done


def anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.lstrip("#").strip().lower()).replace(" ", "-")


def replayed_blocks() -> list:
    found = []
    for page in PAGES:
        seen: dict[str, int] = {}
        for block in read_blocks(page):
            if not replayed(block) or Replay.handled_elsewhere(block):
                continue
            where = anchor(block.heading) or "top"
            seen[where] = seen.get(where, 0) + 1
            kind = "hidden" if block.hidden else block.language
            found.append(pytest.param(page.name, block.line, id=f"{page.name}#{where}-{seen[where]}-{kind}"))
    return found


@pytest.mark.parametrize(("page", "line"), replayed_blocks())
def test_each_example_answers_as_its_page_shows(replays, page, line):
    if shutil.which("jq") is None and "| jq " in replays[page].page.read_text(encoding="utf-8"):
        if os.environ.get("DEPLOYAPI_REQUIRE_JQ") == "1":
            pytest.fail("DEPLOYAPI_REQUIRE_JQ=1 but jq is not installed")
        pytest.skip("the page pipes answers into jq, which is not installed (apt-get install jq)")
    outcomes = replays[page].by_block[line]
    problems = [f"{outcome.command.where}: {problem}" for outcome in outcomes for problem in outcome.problems]
    assert not problems, "\n".join(problems) + "\n" + FIX


# --- every block is run, and the tables name real blocks and tests -------------------------------------------

def every_block():
    return [block for page in PAGES for block in read_blocks(page)]


def test_every_block_is_replayed_run_by_a_named_test_or_said_on_its_page_not_to_be_run():
    unaccounted = [f"{block.where}: ```{block.language} {block.key[1][:60]!r}" for block in every_block()
                   if not replayed(block) and block.listed(ELSEWHERE) is None and block.listed(NOT_RUN) is None]
    assert not unaccounted, (
        "blocks that nothing runs:\n" + "\n".join(unaccounted) + "\nMake each one replayable (a console block of "
        "curl, cat and deployapi serve; a text block marked <!-- docs-example: the output of the block above -->), "
        "or run it in a test and add (page, first line): (node id, marker) to ELSEWHERE in tests/docs_examples.py")


@pytest.mark.parametrize("key", [*ELSEWHERE, *NOT_RUN], ids=lambda key: f"{key[0]}:{key[1][:50]}")
def test_each_listed_block_is_on_its_page_once(key):
    found = [block.where for block in every_block() if block.matches(key)]
    assert len(found) == 1, f"{key} names {len(found)} blocks ({found}): write a key that names one (see Block.keys)"


@pytest.mark.parametrize("key", list(ELSEWHERE), ids=lambda key: f"{key[0]}:{key[1][:50]}")
def test_each_block_run_elsewhere_names_a_test_that_exists_and_reads_it(key):
    node, marker = ELSEWHERE[key]
    path, _, function = node.partition("::")
    text = (ROOT / path).read_text(encoding="utf-8")
    assert re.search(rf"^def {re.escape(function)}\(", text, re.MULTILINE), f"{path} has no test {function}"
    assert marker in text, f"{path} does not contain {marker!r}, the sign that it runs this block"


@pytest.mark.parametrize("key", list(NOT_RUN), ids=lambda key: f"{key[0]}:{key[1][:50]}")
def test_each_block_not_run_is_said_on_its_page_not_to_be_run(key):
    block = next(block for block in every_block() if block.matches(key))
    lines = block.page.read_text(encoding="utf-8").splitlines()
    section = "\n".join(lines[block.heading_line:examples.section_end(lines, block.heading_line)])
    assert NOT_RUN[key] in section, f"the section of {block.where} does not say {NOT_RUN[key]!r}"


# --- blocks this file runs itself ------------------------------------------------------------------------------

def listed_block(first_line: str):
    return next(block for block in every_block() if block.matches(("api.md", first_line)))


def test_the_health_check_of_a_closed_app_answers_as_shown(tmp_path):
    # As the page says it was produced: Werkzeug's test client, an app whose connections were closed.
    shown = "\n".join(listed_block("503 SERVICE UNAVAILABLE application/problem+json").body).strip()
    app = create_app(tmp_path / "closed.db")
    app.close()
    response = Client(app).get("/healthz")
    printed = f"{response.status} {response.content_type}\n{json.dumps(response.get_json(), indent=2)}"
    assert printed == shown


def test_the_storage_fault_answer_is_the_one_shown(tmp_path):
    # One of the faults the page names: the database file removed while the server has it open.
    block = listed_block('{"type":"urn:deployapi:problem:storage_unavailable","title":"Storage unavailable",'
                         '"status":503,')
    [shown] = DocJSON.values("\n".join(block.body))
    app = create_app(tmp_path / "gone.db")
    try:
        client = Client(app)
        body = {"service": "billing", "environment": "staging", "version": "1.4.2", "requester": "alice",
                "work_refs": ["JIRA-1"], "rollback_plan": "Redeploy 1.4.1."}
        assert client.post("/deployments", json=body).status_code == 201
        os.remove(tmp_path / "gone.db")
        response = client.post("/deployments", json={**body, "version": "1.4.3"})
    finally:
        app.close()
    assert response.status_code == 503 and response.headers["Retry-After"] == "10"
    assert response.get_json() == shown.members and not shown.open


def test_the_lifecycle_diagram_draws_exactly_the_transitions():
    block = listed_block("stateDiagram-v2")
    drawn = set()
    for line in block.body[1:]:
        match = re.fullmatch(r"\s*(\S+) --> (\S+)(?:: (.*))?", line)
        assert match, line
        source, target, label = match.groups()
        if source == "[*]":
            continue  # creation: pending_approval, or approved when no approval is needed
        if target == "[*]":
            assert source in lifecycle.TERMINAL_STATUSES, line
            continue
        drawn.add((source, target, label.split()[0]))
    expected = {(source, transition.to_status, transition.action)
                for transition in lifecycle.TRANSITIONS.values() for source in transition.from_statuses}
    # An approval that is not the last one needed leaves the deployment pending (review policies).
    expected.add((lifecycle.PENDING_APPROVAL, lifecycle.PENDING_APPROVAL, "approve"))
    assert drawn == expected
    drawn_terminal = {re.fullmatch(r"\s*(\S+) --> \[\*\]", line)[1] for line in block.body
                      if line.strip().endswith("--> [*]")}
    assert drawn_terminal == set(lifecycle.TERMINAL_STATUSES)


# --- the comparison fails when a page is wrong -----------------------------------------------------------------

README = (ROOT / "README.md").read_text(encoding="utf-8")


def replay_of(text: str, directory: Path) -> Replay:
    directory.mkdir(exist_ok=True)
    page = directory / "README.md"
    page.write_text(text, encoding="utf-8")
    replay = Replay(page, directory)
    replay.run()
    return replay


def problems_of(replay: Replay) -> list[str]:
    return [problem for outcome in replay.outcomes for problem in outcome.problems]


def test_the_readme_as_written_replays_without_a_difference(tmp_path):
    assert problems_of(replay_of(README, tmp_path)) == []


@pytest.mark.parametrize(("old", "new", "said"), [
    pytest.param('"rollback_plan":"Redeploy 1.4.1.","status":"pending_approval"',
                 '"rollback_plan":"Redeploy 1.4.1.","status":"approved"', "$.status", id="a changed field"),
    pytest.param("HTTP/1.1 201 CREATED", "HTTP/1.1 200 OK", "status line", id="a changed status"),
    pytest.param('"reviewed_by":"bob@example.com"', '"reviewed_by":"bob"', "$.reviewed_by",
                 id="a field inside an elided answer"),
    pytest.param('$ ID=01m8bxx6bvfspr107mz4q9z371\n$ curl -s http://127.0.0.1:8080/deployments/$ID ',
                 '$ ID=01m8bxx6bvfspr107mz4q9z371\n$ curl -s http://127.0.0.1:8080/deployments/$ID ', None,
                 id="nothing changed"),
    pytest.param('{"id":"01m8bxx6bvfspr107mz4q9z371", ... "status":"approved"',
                 '{"id":"01m8bxx6bvfspr107mz4q9z372", ... "status":"approved"', "where it wrote",
                 id="an id that should repeat"),
    pytest.param('"created_at":"2026-11-26T12:39:56.350816Z","hash":"acbe8751…"',
                 '"created_at":"2026-11-26T12:39:53.979922Z","hash":"acbe8751…"', "stands for",
                 id="a time that should not repeat"),
    pytest.param('"to_status":"approved",\n', '"to_status":"approved","extra":1,\n', "the run has no 'extra'",
                 id="a field the answer does not have"),
    pytest.param("Location: /deployments/01m8bxx6bvfspr107mz4q9z371\n", "", "Location",
                 id="a header left out"),
])
def test_a_page_that_differs_from_the_run_fails_naming_the_difference(tmp_path, old, new, said):
    assert old in README
    problems = problems_of(replay_of(README.replace(old, new, 1), tmp_path))
    if said is None:
        assert problems == []
    else:
        assert problems and any(said in problem for problem in problems), problems


def test_the_update_writes_the_answers_of_the_run_and_keeps_the_documented_ids(tmp_path):
    stale = README.replace('"required_approvals":1,"approvals":[],', "", 1)
    assert stale != README
    replay = replay_of(stale, tmp_path / "run")
    assert problems_of(replay)
    update(tmp_path / "run" / "README.md", replay)
    updated = (tmp_path / "run" / "README.md").read_text(encoding="utf-8")
    assert '"required_approvals":1' in updated and "01m8bxx6bvfspr107mz4q9z371" in updated
    (tmp_path / "again").mkdir()
    assert problems_of(replay_of(updated, tmp_path / "again")) == []
