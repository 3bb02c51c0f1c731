"""The reference docs name exactly what the code has: fields, parameters, endpoints, errors, settings, flags.

In the manner of sqlite-utils' and datasette's ``test_docs.py``: each table or list
of docs/api.md and docs/operations.md is read back and compared, both ways, with
the object it describes: deployapi/openapi.json (which tests/http/test_openapi.py
holds against the code), the app's route ``Map``, the ``argparse`` parser of
deployapi/cli.py and the environment variables of deployapi/config.py and
deployapi/wsgi.py.  A row documented for something that does not exist fails, and
so does a thing of the code that no row documents.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deployapi import create_app, feed, insights, lifecycle, listing, webhooks
from deployapi.app import load_openapi
from deployapi.cli import build_parser
from deployapi.config import ENVIRONMENT_VARIABLES, HOSTED_VARIABLES
from deployapi.config_file import _WEBHOOK_KEYS
from deployapi.integrity import check_database

ROOT = Path(__file__).parents[2]
API = ROOT / "docs" / "api.md"
OPERATIONS = ROOT / "docs" / "operations.md"
# The documents a reader takes as the reference (docs/adr/ records decisions as they were taken).
REFERENCE_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCUMENT = load_openapi()
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# Variables the docs may name that the test suite reads, not deployapi (README.md, "Development").
TEST_SUITE_VARIABLES = {"DEPLOYAPI_REQUIRE_NGINX": ROOT / "tests" / "e2e" / "test_nginx.py",
                        "DEPLOYAPI_REQUIRE_JQ": ROOT / "tests" / "http" / "test_docs_examples.py"}
# Flags the docs name in inline code that belong to other programs: gunicorn's, py-spy's, the
# benchmark scripts' of tests/perf (docs/performance.md), uWSGI's and waitress-serve's.
OTHER_PROGRAMS_FLAGS = {
    "--timeout", "--graceful-timeout", "--preload", "--worker-connections", "--limit-request-line",
    "--limit-request-field_size",  # gunicorn
    "--gil",  # py-spy
    "--url-prefix", "--requester-only", "--new-filters-only", "--iterations", "--rounds", "--processes", "--ceiling",
    "--by-library",  # tests/perf
    "--recommend-options",  # datamodel-code-generator
    "--log-config", "--log-config-json",  # gunicorn
    "--lazy-apps", "--die-on-term", "--disable-logging",  # uWSGI
    "--call",  # waitress-serve
}


# --- reading Markdown ------------------------------------------------------------------------------------------

def section(path: Path, heading: str) -> str:
    """The text under the heading line ``heading``, up to the next heading of the same or a higher level."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert heading in lines, f"{path.name} has no heading {heading!r}"
    level = len(heading) - len(heading.lstrip("#"))
    body, fenced = [], False
    for line in lines[lines.index(heading) + 1:]:
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and re.match(rf"#{{1,{level}}} ", line):
            break
        body.append(line)
    return "\n".join(body)


def table(text: str, header: str) -> list[list[str]]:
    """The rows, as lists of cells, of the first Markdown table in ``text`` whose header row starts with ``header``."""
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if line.startswith(header):
            rows = []
            for row in lines[number + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip().strip("|").split(" | ")])
            return rows
    raise AssertionError(f"no table whose header starts with {header!r}")


def names(cell: str) -> list[str]:
    """The inline-code names of a cell: "`service`, `environment`" -> ["service", "environment"]."""
    return re.findall(r"`([^`]+)`", cell)


def first_column(text: str, header: str) -> list[str]:
    return [name for row in table(text, header) for name in names(row[0])]


def prose(path: Path) -> str:
    """The text of ``path`` outside fenced code blocks."""
    return re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)


# --- reading openapi.json --------------------------------------------------------------------------------------

def resolve(node: dict) -> dict:
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = DOCUMENT["components"][kind][name]
    return node


def properties(schema: str) -> list[str]:
    return list(DOCUMENT["components"]["schemas"][schema]["properties"])


def query_parameters(path: str) -> list[str]:
    operation = DOCUMENT["paths"][path]["get"]
    return [p["name"] for p in map(resolve, operation.get("parameters", ())) if p["in"] == "query"]


# --- fields and parameters -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("heading", "header", "schema", "left_out"), [
    pytest.param("### Deployment", "| field |", "Deployment", set(), id="Deployment"),
    pytest.param("### Event", "| field |", "Event", set(), id="Event"),
    pytest.param("### POST /deployments/{id}/{action}", "| field |", "ActionWithOptionalNote", set(),
                 id="action body"),
    pytest.param("### GET /environments", "| field |", "EnvironmentState", set(), id="Environment item"),
    # The answer echoes the scope and the window (said in the prose) and adds the fields of the table.
    pytest.param("### GET /metrics/dora", "| field |", "DoraMetrics", {"service", "environment", "since", "until"},
                 id="DORA metrics"),
    pytest.param("### GET /webhooks", "| field |", "Webhook", set(), id="Webhook item"),
])
def test_each_field_table_lists_exactly_the_fields_of_its_schema(heading, header, schema, left_out):
    documented = first_column(section(API, heading), header)
    assert len(documented) == len(set(documented)), "a field is listed twice"
    assert set(documented) == set(properties(schema)) - left_out


def test_the_action_body_rules_are_the_ones_of_both_action_schemas_and_of_the_code():
    assert properties("ActionWithOptionalNote") == properties("ActionWithRequiredNote")
    assert set(properties("ActionWithOptionalNote")) == set(lifecycle.ACTION_FIELDS)


def test_the_create_body_sentence_names_exactly_the_create_fields():
    text = section(API, "### POST /deployments")
    sentence = text[text.index("Body fields:"):text.index("Any other field")]
    assert set(names(sentence)) == set(properties("CreateDeployment")) == set(lifecycle.CREATE_FIELDS)


@pytest.mark.parametrize(("heading", "path", "parsed"), [
    pytest.param("### GET /deployments", "/deployments", listing.PARAMETERS, id="listing"),
    pytest.param("### GET /events (the event feed)", "/events", feed.PARAMETERS, id="event feed"),
    pytest.param("### GET /deployments/{id}/events", "/deployments/{deployment_id}/events", feed.HISTORY_PARAMETERS,
                 id="one deployment's events"),
    pytest.param("### GET /environments", "/environments", insights.ENVIRONMENTS_PARAMETERS, id="environments"),
    pytest.param("### GET /metrics/dora", "/metrics/dora", insights.DORA_PARAMETERS, id="DORA metrics"),
])
def test_each_parameter_table_lists_exactly_the_query_parameters_of_its_operation(heading, path, parsed):
    documented = first_column(section(API, heading), "| parameter |")
    assert len(documented) == len(set(documented)), "a parameter is listed twice"
    assert set(documented) == set(query_parameters(path)) == set(parsed)


def test_the_webhook_keys_table_lists_exactly_the_keys_a_webhook_table_takes():
    rows = table(section(API, "### The `[[webhooks]]` keys"), "| key |")
    documented = [names(row[0])[0] for row in rows]
    assert sorted(documented) == sorted(_WEBHOOK_KEYS)
    formats = next(row for row in rows if names(row[0]) == ["format"])
    assert names(formats[1]) == list(webhooks.FORMATS) and names(formats[2]) == [webhooks.DEFAULT_FORMAT]


def test_the_event_lists_of_one_deployment_document_their_format_parameter():
    assert "format" in query_parameters("/deployments/{deployment_id}/events")
    assert "`?format=cdevents`" in section(API, "### GET /deployments/{id}/events")


# --- endpoints -------------------------------------------------------------------------------------------------

def documented_endpoints() -> set[tuple[str, str]]:
    """(method, path) of each row of the Endpoints table, with the path variables named as the routes name them."""
    endpoints = set()
    for row in table(section(API, "## Endpoints"), "| method, path |"):
        method, path = names(row[0])[0].split(" ", 1)
        endpoints.add((method, path.replace("{id}", "{deployment_id}")))
    return endpoints


def routed_endpoints(tmp_path) -> set[tuple[str, str]]:
    """(method, path) of each rule of the app's route Map; HEAD, which Werkzeug adds to each GET, left out."""
    app = create_app(tmp_path / "routes.db")
    try:
        return {(method, re.sub(r"<(?:[^>]*:)?(\w+)>", r"{\1}", rule.rule))
                for rule in app.url_map.iter_rules() for method in rule.methods - {"HEAD"}}
    finally:
        app.close()


def openapi_endpoints() -> set[tuple[str, str]]:
    """(method, path) of each operation of openapi.json, its one path per action folded back into ``{action}``."""
    actions = "|".join(lifecycle.ACTIONS)
    return {(method.upper(), re.sub(rf"/({actions})$", "/{action}", path))
            for path, item in DOCUMENT["paths"].items() for method in HTTP_METHODS if method in item}


def test_the_endpoints_table_lists_every_route_and_only_routes(tmp_path):
    assert documented_endpoints() == routed_endpoints(tmp_path)


def test_the_endpoints_table_lists_every_operation_of_the_openapi_document():
    assert documented_endpoints() == openapi_endpoints()


def test_each_endpoint_has_a_section_of_its_own():
    headings = set(re.findall(r"^### (GET|POST) (/\S*)", API.read_text(encoding="utf-8"), re.MULTILINE))
    documented = {(method, path.replace("{deployment_id}", "{id}")) for method, path in documented_endpoints()}
    assert documented <= headings


# --- errors ----------------------------------------------------------------------------------------------------

def documented_errors() -> list[tuple[int, str]]:
    return [(int(row[0]), names(row[1])[0]) for row in table(section(API, "## Errors"), "| status | `code` |")]


def openapi_statuses_by_code() -> dict[str, set[int]]:
    """code -> the statuses under which some operation of openapi.json promises it."""
    problem = DOCUMENT["components"]["schemas"]["Problem"]

    def codes(schema: dict) -> set[str]:
        schema = resolve(schema)
        if schema is problem:
            return set()
        code = resolve(schema.get("properties", {}).get("code", {}))
        found = set(code.get("enum", ())) | ({code["const"]} if "const" in code else set())
        parts = [*schema.get("allOf", ()), *schema.get("oneOf", ()), *schema.get("anyOf", ())]
        return found.union(*(codes(part) for part in parts))

    statuses: dict[str, set[int]] = {}
    for item in DOCUMENT["paths"].values():
        for method in HTTP_METHODS:
            for status, response in item.get(method, {}).get("responses", {}).items():
                for media in resolve(response).get("content", {}).values():
                    for code in codes(media["schema"]):
                        statuses.setdefault(code, set()).add(int(status))
    return statuses


def test_the_error_table_lists_every_problem_code_once():
    codes = [code for _, code in documented_errors()]
    assert len(codes) == len(set(codes)), "a code is listed twice"
    # ProblemCode is the set of codes the code can produce (tests/http/test_openapi.py).
    assert set(codes) == set(DOCUMENT["components"]["schemas"]["ProblemCode"]["enum"])


def test_each_error_has_the_status_the_openapi_document_gives_it():
    statuses = openapi_statuses_by_code()
    for status, code in documented_errors():
        if code == "bad_request":  # promised by no operation: waitress's refusal of a malformed request
            assert status == 400
        else:
            assert statuses[code] == {status}, code


# --- settings, environment variables and flags -----------------------------------------------------------------

def subcommands() -> dict[str, object]:
    return build_parser()._subparsers._group_actions[0].choices


def top_level_flags() -> set[str]:
    """The options of ``deployapi`` itself, before a subcommand (``--version``)."""
    return {option for action in build_parser()._actions for option in action.option_strings
            if option.startswith("--") and option != "--help"}


def flags_of(command: str) -> set[str]:
    return {option for action in subcommands()[command]._actions for option in action.option_strings
            if option.startswith("--") and option != "--help"}


def configuration_table() -> list[tuple[str, str]]:
    text = section(OPERATIONS, "## Configuration")
    return re.findall(r"^\| `(--[a-z-]+)` \| `(DEPLOYAPI_[A-Z_]+)` \|", text, re.MULTILINE)


def test_every_serve_flag_and_variable_is_in_the_configuration_table_and_nothing_else():
    documented = configuration_table()
    assert {flag for flag, _ in documented} == flags_of("serve")
    assert {variable for _, variable in documented} == set(ENVIRONMENT_VARIABLES.values())


def test_each_documented_flag_falls_back_to_the_variable_beside_it():
    for flag, variable in configuration_table():
        assert ENVIRONMENT_VARIABLES[flag[2:].replace("-", "_")] == variable


@pytest.mark.parametrize("path", REFERENCE_DOCS, ids=lambda path: path.name)
def test_every_environment_variable_the_docs_name_is_one_the_code_reads(path):
    named = set(re.findall(r"\bDEPLOYAPI_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")))
    unknown = named - set(ENVIRONMENT_VARIABLES.values()) - set(TEST_SUITE_VARIABLES)
    assert not unknown


def test_the_variables_the_test_suite_reads_are_read_by_it():
    for variable, source in TEST_SUITE_VARIABLES.items():
        assert variable in source.read_text(encoding="utf-8")


def test_the_wsgi_paragraph_names_exactly_the_variables_the_entry_points_for_other_servers_read():
    text = section(OPERATIONS, "## Configuration")
    paragraph = text[text.index("`deployapi.wsgi:app` and `deployapi:app_from_environment` (for other WSGI servers) "
                                "read"):].split("\n\n")[0]
    assert set(re.findall(r"DEPLOYAPI_[A-Z_]+", paragraph)) == HOSTED_VARIABLES


def deployapi_command_lines() -> list[tuple[str, str, str]]:
    """(document, subcommand, rest of the line) for each ``deployapi serve|relay|check|backup …`` the docs write."""
    found = []
    for path in REFERENCE_DOCS:
        text = path.read_text(encoding="utf-8").replace("\\\n", " ")
        for match in re.finditer(r"\bdeployapi (serve|relay|check|backup)\b([^\n`|&;)]*)", text):
            found.append((path.name, match[1], match[2]))
    return found


def test_every_flag_written_after_a_deployapi_command_is_a_flag_of_that_command():
    wrong = [(document, command, flag) for document, command, rest in deployapi_command_lines()
             for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", rest) if flag not in flags_of(command)]
    assert not wrong


@pytest.mark.parametrize("path", REFERENCE_DOCS, ids=lambda path: path.name)
def test_every_flag_named_in_inline_code_is_a_flag_of_deployapi_or_of_a_program_named_beside_it(path):
    ours = set().union(top_level_flags(), *(flags_of(command) for command in subcommands()))
    named = set(re.findall(r"`(--[a-z][a-z0-9_-]*)[^`]*`", prose(path)))
    assert not named - ours - OTHER_PROGRAMS_FLAGS


def test_the_help_shown_in_operations_md_is_what_deployapi_help_prints(monkeypatch):
    # argparse wraps to the terminal's width, which COLUMNS sets.
    monkeypatch.setenv("COLUMNS", "100")
    text = section(OPERATIONS, "## Install")
    shown = text[text.index("$ deployapi --help\n") + len("$ deployapi --help\n"):]
    assert shown[:shown.index("```")] == build_parser().format_help()


@pytest.mark.parametrize("command", ["relay", "check", "backup"])
def test_every_flag_of_relay_check_and_backup_is_shown_in_use_in_operations_md(command):
    used = {flag for document, name, rest in deployapi_command_lines() if document == OPERATIONS.name
            and name == command for flag in re.findall(r"--[a-z][a-z0-9-]*", rest)}
    assert flags_of(command) <= used


# --- deployapi check transcripts -------------------------------------------------------------------------------

def test_every_passing_check_shown_lists_exactly_the_checks_deployapi_check_runs(tmp_path):
    create_app(tmp_path / "fresh.db").close()
    checks = [result.name for result in check_database(tmp_path / "fresh.db").results]
    # From a head (--from-head, with an --expect-head after it): the names up to
    # the anchors' ids and hashes, which each transcript gives its own.
    from_head = ["the history contains the head it is checked from ", *(
        name for name in checks if not name.startswith("SQLite integrity_check")),
        "the history contains the anchored head "]
    shown = shown_from_head = 0
    for path in REFERENCE_DOCS:
        text = path.read_text(encoding="utf-8")
        for _, block in re.findall(r"^( *)```console\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL):
            if "; all checks passed" in block:
                listed = re.findall(r"^ *ok {6}(.+)$", block, re.MULTILINE)
                if "--from-head" in block:
                    assert [re.sub(r"\d+:[0-9a-f]{12}…$", "", name) for name in listed] == from_head, path.name
                    shown_from_head += 1
                else:
                    # One more line per --expect-head, after the others.
                    anchored = [line for line in listed if line.startswith("the history contains the anchored head ")]
                    assert listed == checks + anchored, path.name
                    shown += 1
    assert shown >= 3  # backup, restore and the copy made with cp (docs/operations.md)
    assert shown_from_head >= 1  # deployapi check (docs/operations.md)


def test_every_count_of_checks_in_the_docs_is_the_number_deployapi_check_runs(tmp_path):
    create_app(tmp_path / "fresh.db").close()
    total = len(check_database(tmp_path / "fresh.db").results)
    counts = [(path.name, int(failed_of or runs)) for path in REFERENCE_DOCS for failed_of, runs
              in re.findall(r"of (\d+) checks failed|runs the (\d+) checks", path.read_text(encoding="utf-8"))]
    assert counts
    assert all(count == total for _, count in counts), counts


def test_the_openapi_example_lists_every_path_of_the_document():
    text = section(API, "### GET /openapi.json")
    example = text[text.index('"paths": ['):]
    example = example[:example.index("]")]
    assert re.findall(r'"(/[^"]*)"', example) == sorted(DOCUMENT["paths"])


# --- links -----------------------------------------------------------------------------------------------------

def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {anchor(heading) for heading in re.findall(r"^#{1,6} (.+)$", prose(path), re.MULTILINE)}


@pytest.mark.parametrize("path", REFERENCE_DOCS, ids=lambda path: path.name)
def test_every_link_to_a_section_of_the_docs_finds_its_heading(path):
    broken = []
    for target, fragment in re.findall(r"\]\(([\w./-]*\.md)?#([\w-]+)\)", prose(path)):
        document = (path.parent / target) if target else path
        if fragment not in anchors(document):
            broken.append(f"{target}#{fragment}")
    assert not broken


# --- metrics ---------------------------------------------------------------------------------------------------

METRICS = "## Metrics"


def exposed_metrics(tmp_path) -> dict[str, tuple[str, set[str]]]:
    """name -> (type, label names) of every metric GET /metrics serves, from an app with a webhook and requests
    answered; counters under their ``_total`` name, histograms without ``le``."""
    from prometheus_client.parser import text_string_to_metric_families
    from werkzeug.test import Client

    app = create_app(tmp_path / "metrics.db", metrics=True,
                     config={"webhooks": [{"name": "audit", "url": "http://127.0.0.1:9/hooks"}]})
    try:
        client = Client(app)
        client.get("/healthz")
        text = client.get("/metrics").get_data(as_text=True)
    finally:
        app.close()
    exposed = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        exposed[name] = (family.type, {label for sample in family.samples for label in sample.labels} - {"le"})
    return exposed


def documented_metrics() -> dict[str, tuple[str, set[str]]]:
    rows = table(section(OPERATIONS, METRICS), "| metric |")
    return {names(row[0])[0]: (row[1], set(names(row[2]))) for row in rows}


def test_the_metrics_table_lists_exactly_the_metrics_served_with_their_types_and_labels(tmp_path):
    documented = documented_metrics()
    assert len(documented) == len(table(section(OPERATIONS, METRICS), "| metric |")), "a metric is listed twice"
    assert documented == exposed_metrics(tmp_path)


def yaml_blocks(text: str) -> list[object]:
    import yaml  # a dependency of schemathesis, a test extra

    return [yaml.safe_load(block) for block in re.findall(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)]


def test_the_scrape_config_scrapes_metrics():
    blocks = [block for block in yaml_blocks(section(OPERATIONS, METRICS)) if "scrape_configs" in block]
    assert len(blocks) == 1
    (job,) = blocks[0]["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"]


def test_every_alerting_rule_is_well_formed_and_names_only_metrics_that_exist():
    blocks = [block for block in yaml_blocks(section(OPERATIONS, METRICS)) if "groups" in block]
    assert len(blocks) == 1
    documented = documented_metrics()
    # A histogram is queried through its series: NAME_bucket, NAME_sum, NAME_count.
    metric_of = {name: name for name in documented}
    metric_of.update({f"{name}_{part}": name for name, (kind, _) in documented.items() if kind == "histogram"
                      for part in ("bucket", "sum", "count")})
    rules = [rule for group in blocks[0]["groups"] for rule in group["rules"]]
    assert len({rule["alert"] for rule in rules}) == len(rules) >= 10
    covered = set()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert isinstance(rule["expr"], str) and rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket") and rule["annotations"]["summary"], rule["alert"]
        named = set(re.findall(r"\bdeployapi_\w+", rule["expr"]))
        assert named <= set(metric_of), (rule["alert"], named - set(metric_of))
        covered |= {metric_of[series] for series in named}
        # An annotation names only labels its series can have: the target's, or the metrics' own.
        labels = {"instance", "job"}.union(*(documented[metric_of[series]][1] for series in named))
        for label in re.findall(r"\$labels\.(\w+)", rule["annotations"]["summary"]):
            assert label in labels, (rule["alert"], label)
    # The alerts the issue names: 5xx, p99 latency by route, busy refusals, webhook lag, WAL growth.
    assert {"deployapi_http_requests_total", "deployapi_http_request_duration_seconds", "deployapi_db_busy_total",
            "deployapi_webhook_lag_seconds", "deployapi_webhook_pending_events",
            "deployapi_database_wal_size_bytes"} <= covered
