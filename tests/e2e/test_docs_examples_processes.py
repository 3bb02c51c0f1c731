"""The examples of docs/api.md that need real processes, run as written: the lines ``deployapi serve`` prints,
the shell loop that tails the feed, and the CI steps that record deployments.

tests/http/test_docs_examples.py replays the curl examples in process and lists
these blocks in tests/docs_examples.py ELSEWHERE; here each one runs against a
real ``deployapi serve`` on a free port (the page's ``127.0.0.1:8080`` rewritten to
it, its files in a temporary directory), and its output is compared with the page's
the same way, values that differ by nature bound (docs_examples.Comparison).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from docs_examples import PAGES, Binder, Comparison, DocJSON, Replay, ShownObject, commands_of, read_blocks
from server_process import Server, wait_until

pytestmark = pytest.mark.e2e
# The loop and the CI steps call jq, as the page's examples do.
# .ci/run sets DEPLOYAPI_REQUIRE_JQ=1 once it has installed jq: then a missing jq fails.
needs_jq = pytest.mark.skipif(shutil.which("jq") is None and os.environ.get("DEPLOYAPI_REQUIRE_JQ") != "1",
                              reason="jq is not installed")

API = next(page for page in PAGES if page.name == "api.md")


def page_block(first_line: str):
    return next(block for block in read_blocks(API) if block.matches(("api.md", first_line)))


# --- what deployapi serve prints -------------------------------------------------------------------------------

def serve_lines() -> list:
    """Each ``deployapi serve`` command whose output a page shows, with the files shown (``cat``) before it."""
    found = []
    for page in PAGES:
        files: dict[str, str] = {}
        for block in read_blocks(page):
            if block.language != "console" or Replay.handled_elsewhere(block):
                continue
            for command in commands_of(block):
                if command.text.startswith("@"):
                    continue
                words = shlex.split(command.text, comments=True)
                if words[:1] == ["cat"] and len(words) == 2:
                    files[words[1]] = "\n".join(command.output) + "\n"
                environment = {}
                while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                    name, _, value = words.pop(0).partition("=")
                    environment[name] = value
                if words[:2] == ["deployapi", "serve"] and command.output:
                    found.append(pytest.param(words[2:], environment, dict(files), command.output,
                                              id=command.where))
    return found


@pytest.mark.parametrize(("arguments", "environment", "files", "shown"), serve_lines())
def test_each_deployapi_serve_line_prints_what_its_page_shows(tmp_path, arguments, environment, files, shown):
    replaced: dict[str, str] = {}  # what the page writes -> what this run has in its place

    def path_of(documented: str) -> str:
        if documented not in replaced:
            replaced[documented] = str(tmp_path / re.sub(r"[^\w.-]", "_", documented.strip("/")))
            if documented in files:
                Path(replaced[documented]).write_text(files[documented], encoding="utf-8")
        return replaced[documented]

    run, port, words = [], "8080", list(arguments)
    while words:
        word = words.pop(0)
        if word in ("--db", "--config"):
            run += [word, path_of(words.pop(0))]
        elif word == "--port":
            port = words.pop(0)
        else:
            run.append(word)
    if "--db" not in run:
        run += ["--db", path_of("./deployapi.db")]
    server = Server(*run, "--port", "0", cwd=tmp_path, env=environment)
    try:
        # What it prints on starting: stopping it would print more.
        logged = [line for line in shown if not line.startswith("deployapi listening on ")]
        wait_until(lambda: len(server.stderr_text.splitlines()) >= len(logged), timeout=10)
        printed = [server.first_line.rstrip("\n")] + server.stderr_text.splitlines()
    finally:
        server.stop()
    replaced[f"http://127.0.0.1:{port}/"] = server.url + "/"
    expected = []
    for line in shown:
        for documented, actual in replaced.items():
            line = line.replace(documented, actual)
        expected.append(line)
    comparison = Comparison(Binder(), "deployapi serve")
    comparison.body([line for line in expected if line.startswith("deployapi listening on ")] +
                    [line for line in expected if not line.startswith("deployapi listening on ")], "\n".join(printed))
    assert not comparison.problems, "\n".join(comparison.problems)


# --- the feed, tailed ------------------------------------------------------------------------------------------

@needs_jq
def test_the_tailing_loop_hands_on_every_event_once_in_order(start_server, tmp_path):
    server = start_server("--db", str(tmp_path / "deployapi.db"))
    body = {"service": "billing", "environment": "staging", "version": "1.4.2", "requester": "alice",
            "work_refs": ["JIRA-1"], "rollback_plan": "Redeploy 1.4.1."}
    _, _, deployment = server.request("POST", "/deployments", body)
    server.request("POST", f"/deployments/{deployment['id']}/approve", {"actor": "bob"})
    script = "\n".join(page_block("after=0").body).replace("http://127.0.0.1:8080", server.url)
    # The loop as written, for three rounds: `sleep` (a shell function, first in the lookup) ends it after the
    # third, and before the second a new deployment is created, which the second round must hand on alone.
    rounds = f"""sleep() {{
  rounds=$((rounds + 1))
  if [ "$rounds" -eq 2 ]; then
    curl -s -o /dev/null {server.url}/deployments -H 'Content-Type: application/json' -d '{json.dumps(body)}'
  fi
  [ "$rounds" -le 3 ]
}}
"""
    result = subprocess.run(["bash", "-c", rounds + script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr, result.stderr
    _, _, feed = server.request("GET", "/events")
    assert [json.loads(line) for line in result.stdout.splitlines()] == feed["items"]
    assert [event["type"] for event in feed["items"]] == ["created", "approved", "created"]


# --- CI ----------------------------------------------------------------------------------------------------------

COMMITTED = "2026-12-02T05:56:37+01:00"


@pytest.fixture
def checkout(tmp_path) -> tuple[Path, str, dict[str, str]]:
    """A git repository with one commit made at COMMITTED, its id, and git's environment for it.

    The commit's id follows from its content, author, committer and times, so it is the same on every run: the
    one docs/api.md shows.
    """
    directory = tmp_path / "checkout"
    directory.mkdir()
    people = {f"GIT_{role}_{part}": value for role in ("AUTHOR", "COMMITTER")
              for part, value in (("NAME", "Alice"), ("EMAIL", "alice@example.com"), ("DATE", COMMITTED))}
    git = {**os.environ, "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1", **people}
    subprocess.run(["git", "init", "-q"], cwd=directory, env=git, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "Release billing-api"], cwd=directory, env=git,
                   check=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, env=git, check=True, capture_output=True,
                         text=True).stdout.strip()
    return directory, sha, git


def run_step(block_first_line: str, directory: Path, environment: dict[str, str]) -> str:
    script = "\n".join(page_block(block_first_line).body)
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=directory, env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def github(server: Server, sha: str, git: dict[str, str], directory: Path) -> dict[str, str]:
    # The variables a run of acme/billing-api's "Deploy to production" workflow sets, as docs/api.md says.
    return {**git, "DEPLOY_RECORD_URL": server.url, "GITHUB_SHA": sha, "GITHUB_ACTOR": "alice",
            "GITHUB_REPOSITORY": "acme/billing-api", "GITHUB_REF": "refs/heads/main",
            "GITHUB_SERVER_URL": "https://github.com", "GITHUB_RUN_ID": "7012345678", "GITHUB_JOB": "deploy",
            "GITHUB_WORKFLOW": "Deploy to production", "GITHUB_OUTPUT": str(directory.parent / "github-output")}


RECORD = "# Record the deployment, idempotently: a re-run of this job sends the same key and body,"
REPORT = "# After the review: record the start, then the outcome, each with a key of its own."


@needs_jq
def test_the_github_actions_steps_record_one_deployment_per_run(start_server, tmp_path, checkout):
    directory, sha, git = checkout
    server = start_server("--db", str(tmp_path / "deployapi.db"))
    environment = github(server, sha, git, directory)
    for _ in range(2):  # the job, and a re-run of it
        run_step(RECORD, directory, environment)
    outputs = Path(environment["GITHUB_OUTPUT"]).read_text(encoding="utf-8").splitlines()
    assert len(outputs) == 2 and outputs[0] == outputs[1] and outputs[0].startswith("deployment_id=")
    deployment_id = outputs[0].removeprefix("deployment_id=")
    status, _, _ = server.request("POST", f"/deployments/{deployment_id}/approve", {"actor": "bob@example.com"})
    assert status == 200
    answers = [json.loads(text) for text in
               re.findall(r"^\{.*?^\}", run_step(REPORT, directory, {**environment, "DEPLOYMENT_ID": deployment_id})
                          + run_step(REPORT, directory, {**environment, "DEPLOYMENT_ID": deployment_id}),
                          re.MULTILINE | re.DOTALL)]
    assert [answer["status"] for answer in answers] == ["started", "succeeded"] * 2
    assert answers[2:] == answers[:2]  # the re-run's answers are the first run's, replayed
    _, _, history = server.request("GET", f"/deployments/{deployment_id}/events")
    assert [event["type"] for event in history["items"]] == ["created", "approved", "started", "succeeded"]

    _, _, deployment = server.request("GET", f"/deployments/{deployment_id}")
    [shown] = DocJSON.values("\n".join(page_block('{"commit_sha":"…').body))
    comparison = Comparison(Binder(), "the deployment the GitHub steps recorded")
    comparison.json(ShownObject(shown.members, open=True), deployment)
    assert not comparison.problems, comparison.problems


@needs_jq
def test_the_gitlab_job_records_one_deployment_per_pipeline(start_server, tmp_path, checkout):
    directory, sha, git = checkout
    server = start_server("--db", str(tmp_path / "deployapi.db"))
    project = "https://gitlab.example.com/acme/billing-api"
    environment = {**git, "DEPLOY_RECORD_URL": server.url, "CI_PROJECT_NAME": "billing-api",
                   "CI_ENVIRONMENT_NAME": "staging", "CI_COMMIT_SHORT_SHA": sha[:8], "GITLAB_USER_LOGIN": "alice",
                   "CI_COMMIT_SHA": sha, "CI_PROJECT_URL": project, "CI_COMMIT_REF_NAME": "main",
                   "CI_COMMIT_TIMESTAMP": COMMITTED, "CI_PIPELINE_URL": f"{project}/-/pipelines/4242",
                   "CI_PROJECT_ID": "77", "CI_PIPELINE_ID": "4242", "CI_JOB_NAME": "deploy"}
    answers = [json.loads(run_step("body=$(jq -n \\", directory, environment)) for _ in range(2)]
    assert answers[0] == answers[1] and answers[0]["status"] == "pending_approval"
    _, _, deployment = server.request("GET", f"/deployments/{answers[0]['id']}")
    assert deployment["committed_at"] == "2026-12-02T04:56:37.000000Z"

    # "Both it and the GitHub one are found by the short commit id", the one the page names.
    run_step(RECORD, directory, github(server, sha, git, directory))
    section = API.read_text(encoding="utf-8").split("### GitLab CI", 1)[1]
    short = re.search(r"`GET /deployments\?commit_sha=([0-9a-f]+)`", section)[1]
    assert sha.startswith(short)
    _, _, found = server.request("GET", f"/deployments?commit_sha={short}")
    assert sorted(item["environment"] for item in found["items"]) == ["production", "staging"]
