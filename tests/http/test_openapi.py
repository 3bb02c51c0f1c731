"""GET /openapi.json: the OpenAPI 3.1 document shipped in the package, and that it matches the code."""

from __future__ import annotations

import ast
import re
import unicodedata
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from werkzeug.test import Client

import deployapi
from deployapi import identities, lifecycle, listing
from deployapi.app import HANDLERS, load_openapi

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ANY_CONVERTER = re.compile(r"<any\((?P<items>[^)]*)\):(?P<name>\w+)>")
VARIABLE = re.compile(r"<(?:[^:>]+:)?(\w+)>")


def routed_operations(url_map) -> dict[tuple[str, str], str]:
    """(method, OpenAPI path) -> endpoint for every rule; `<any(a, b):x>` becomes one path per item."""
    operations = {}
    for rule in url_map.iter_rules():
        for path in expand(rule.rule):
            for method in rule.methods - {"HEAD"}:  # Werkzeug adds HEAD to every GET rule
                operations[(method, path)] = rule.endpoint
    return operations


def expand(rule: str) -> list[str]:
    match = ANY_CONVERTER.search(rule)
    if match is None:
        return [VARIABLE.sub(r"{\1}", rule)]
    items = [item.strip().strip("'\"") for item in match["items"].split(",")]
    return [path for item in items for path in expand(rule[:match.start()] + item + rule[match.end():])]


def documented_operations(document) -> dict[tuple[str, str], dict]:
    return {(method.upper(), path): item[method]
            for path, item in document["paths"].items() for method in HTTP_METHODS if method in item}


def modules_the_app_runs() -> list[Path]:
    """deployapi/app.py and every package module it imports, directly or not."""
    package = Path(deployapi.__file__).parent
    found: dict[str, Path] = {}
    pending = ["app"]
    while pending:
        name = pending.pop()
        source = package / f"{name}.py"
        if name in found or not source.is_file():
            continue
        found[name] = source
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                pending += [node.module.split(".")[0]] if node.module else [alias.name for alias in node.names]
    return list(found.values())


def codes_the_code_can_produce() -> set[str]:
    """Every problem `code` the app's modules write: ApiError(status, "code", …), the errors table's
    ErrorKind(status, "code", …) and `code = …` assignments."""
    codes = set()
    for source in modules_the_app_runs():
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call)
                    and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("ApiError", "ErrorKind")
                    and isinstance(node.args[1], ast.Constant)):
                codes.add(node.args[1].value)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple):
                for target in node.targets:
                    for name, value in zip(getattr(target, "elts", ()), node.value.elts, strict=False):
                        if getattr(name, "id", None) == "code" and isinstance(value, ast.Constant):
                            codes.add(value.value)
    return codes


def resolve(document, node):
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = document["components"][kind][name]
    return node


def documented_codes(document) -> set[str]:
    """Every `code` some operation documents in one of its responses."""
    problem = document["components"]["schemas"]["Problem"]

    def codes(schema):
        schema = resolve(document, schema)
        if schema is problem:
            return set()
        code = resolve(document, schema.get("properties", {}).get("code", {}))
        found = set(code.get("enum", ())) | ({code["const"]} if "const" in code else set())
        parts = [*schema.get("allOf", ()), *schema.get("oneOf", ()), *schema.get("anyOf", ())]
        return found.union(*(codes(part) for part in parts))

    return {code
            for operation in documented_operations(document).values()
            for response in operation["responses"].values()
            for media in resolve(document, response).get("content", {}).values()
            for code in codes(media["schema"])}


def test_the_document_is_served_at_openapi_json(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = response.get_json()
    assert body["openapi"].startswith("3.1.")
    assert body["servers"] == [{"url": "/"}]
    assert {**body, "servers": None} == {**load_openapi(), "servers": None}


def test_under_a_prefix_servers_holds_the_prefix(app):
    response = Client(app).get("/openapi.json", base_url="http://localhost/deploy")
    assert response.status_code == 200
    assert response.get_json()["servers"] == [{"url": "/deploy"}]


def test_the_document_is_valid_openapi_3_1(client):
    validate(client.get("/openapi.json").get_json(), cls=OpenAPIV31SpecValidator)


def test_every_route_is_documented_and_every_documented_operation_is_routed(app):
    routed = routed_operations(app.url_map)
    assert {path.rsplit("/", 1)[1] for _, path in routed if path.startswith("/deployments/{deployment_id}/")} \
        == {*lifecycle.ACTIONS, "events"}
    assert set(routed) == set(documented_operations(load_openapi()))


def test_with_metrics_on_the_one_route_more_is_get_metrics_which_the_document_leaves_out(tmp_path):
    # Opt-in, Prometheus text rather than JSON, and absent from a default server: the document
    # describes the API every server of it answers (docs/operations.md, "Metrics").
    app = deployapi.create_app(tmp_path / "metrics.db", metrics=True)
    try:
        routed = routed_operations(app.url_map)
    finally:
        app.close()
    documented = documented_operations(load_openapi())
    assert set(routed) - set(documented) == {("GET", "/metrics")}
    assert set(documented) <= set(routed)
    assert "/metrics" not in load_openapi()["paths"]


def test_operation_ids_name_the_handlers(app):
    documented = documented_operations(load_openapi())
    for (method, path), endpoint in routed_operations(app.url_map).items():
        operation_id = documented[(method, path)]["operationId"]
        if endpoint == "act_on_deployment":
            assert operation_id == f"{path.rsplit('/', 1)[1]}_deployment"
        else:
            assert operation_id == endpoint and endpoint in HANDLERS


def test_every_error_code_the_code_can_produce_is_in_the_document():
    document = load_openapi()
    catalogue = set(document["components"]["schemas"]["ProblemCode"]["enum"])
    assert {"app", "handlers", "errors", "lifecycle", "listing"} <= {p.stem for p in modules_the_app_runs()}
    produced = codes_the_code_can_produce()
    assert {"validation_failed", "internal_error", "not_found"} <= produced  # the scan finds them
    assert produced == catalogue
    # Every code but the fallback for unexpected Werkzeug errors is promised by some operation.
    assert documented_codes(document) == produced - {"bad_request"}


def test_the_documented_body_rules_are_the_ones_the_code_checks():
    schemas = load_openapi()["components"]["schemas"]
    create, optional, required = (schemas[name] for name in
                                  ("CreateDeployment", "ActionWithOptionalNote", "ActionWithRequiredNote"))
    assert set(create["properties"]) == set(lifecycle.CREATE_FIELDS)
    assert set(optional["properties"]) == set(required["properties"]) == set(lifecycle.ACTION_FIELDS)
    assert all(schema["additionalProperties"] is False for schema in (create, optional, required))
    assert schemas["Slug"]["pattern"] == f"^{lifecycle.SLUG_PATTERN}$"
    assert schemas["Version"]["maxLength"] == lifecycle.MAX_VERSION
    assert schemas["RequiredText"]["maxLength"] == schemas["OptionalText"]["maxLength"] == lifecycle.MAX_TEXT
    work_refs = create["properties"]["work_refs"]
    assert (work_refs["minItems"], work_refs["maxItems"]) == (1, lifecycle.MAX_WORK_REFS)
    assert schemas["Status"]["enum"] == list(lifecycle.STATUSES)
    document = load_openapi()
    for action, transition in lifecycle.TRANSITIONS.items():
        body = document["paths"][f"/deployments/{{deployment_id}}/{action}"]["post"]["requestBody"]
        schema = body["content"]["application/json"]["schema"]["$ref"]
        extra = lifecycle.ACTION_EXTRA_FIELDS.get(action, ())
        if not extra:
            assert schema.endswith("ActionWithRequiredNote" if transition.note_required else "ActionWithOptionalNote")
            continue
        # An action with fields of its own (start's override_freeze) has a body schema of its own.
        own = resolve(document, {"$ref": schema})
        assert set(own["properties"]) == {*lifecycle.ACTION_FIELDS, *extra}
        assert own["additionalProperties"] is False
        assert own["required"] == (["actor", "note"] if transition.note_required else ["actor"])
    assert f"{{0,{lifecycle.MAX_NAME - 2}}}" in schemas["Name"]["pattern"]
    assert f"{{0,{lifecycle.MAX_WORK_REF - 2}}}" in schemas["WorkRef"]["pattern"]
    limit = next(p for p in document["paths"]["/deployments"]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["maximum"], limit["schema"]["default"]) == (listing.MAX_LIMIT, listing.DEFAULT_LIMIT)


# Strings at the edges of the rules: every whitespace and control character alone,
# leading, trailing and inside; lengths at and past the limits, padded or not.
SPECIAL = [chr(c) for c in range(0x110000) if chr(c).isspace() or unicodedata.category(chr(c)) == "Cc"]
TRICKY = sorted({
    "", "a", "Zoë", "🚀", "a b", "a\u00a0b", *SPECIAL,
    *(s for c in SPECIAL for s in (c + "a", "a" + c, "a" + c + "b", c + "a" + c, c * 3)),
    *(s for n in (126, 127, 128, 129, 511, 512, 513, 9_999, 10_000, 10_001)
      for s in ("x" * n, " " + "x" * n + " ", "\t" + "x" * n, "é" * n)),
})


def documented_verdict(schema: dict, value: str) -> bool:
    length_ok = schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value))
    # JSON Schema patterns are ECMA-262 regexes, whose `$` matches only at the very
    # end; Python's also matches before a final newline.
    pattern = re.sub(r"\$$", r"\\Z", schema["pattern"])
    return length_ok and re.search(pattern, value) is not None


def code_accepts(validate, value: str) -> bool:
    try:
        validate(value)
    except lifecycle.ValidationFailed:
        return False
    return True


def create_with(**fields):
    """Validate a creation body that is valid but for ``fields``."""
    lifecycle.validate_new_deployment({
        "service": "billing", "environment": "staging", "version": "1.0", "requester": "alice",
        "work_refs": ["JIRA-1"], "rollback_plan": "redeploy", **fields})


def component(name):
    return lambda document: document["components"]["schemas"][name]


def list_parameter(name):
    return lambda document: next(parameter["schema"] for parameter in document["paths"]["/deployments"]["get"]
                                 ["parameters"] if parameter.get("name") == name)


@pytest.mark.parametrize("documented, validate", [
    (component("Slug"), lambda v: create_with(service=v)),
    (component("Version"), lambda v: create_with(version=v)),
    (component("Name"), lambda v: create_with(requester=v)),
    (component("WorkRef"), lambda v: create_with(work_refs=[v])),
    (component("RequiredText"), lambda v: create_with(rollback_plan=v)),
    (component("OptionalText"), lambda v: create_with(risk=v)),
    (component("Name"), lambda v: lifecycle.validate_action("approve", {"actor": v})),
    (component("RequiredText"), lambda v: lifecycle.validate_action("fail", {"actor": "bob", "note": v})),
    (component("OptionalText"), lambda v: lifecycle.validate_action("approve", {"actor": "bob", "note": v})),
    (list_parameter("requester"), lambda v: listing.parse_list_query({"requester": [v]}, b"key")),
    (list_parameter("work_ref"), lambda v: listing.parse_list_query({"work_ref": [v]}, b"key")),
], ids=["service", "version", "requester", "work_ref", "rollback_plan", "risk", "actor", "required_note",
        "optional_note", "requester_filter", "work_ref_filter"])
def test_documented_patterns_and_lengths_accept_exactly_what_the_code_accepts(documented, validate):
    schema = documented(load_openapi())
    disagreements = [value for value in TRICKY
                     if documented_verdict(schema, value) != code_accepts(validate, value)]
    assert not disagreements, [repr(value[:20]) for value in disagreements[:10]]


def test_the_name_pattern_refuses_exactly_the_characters_the_identity_rules_refuse():
    # Code points inside a name and at its end: the document's pattern and
    # identities.canonical agree on each (NFKC changes lengths, so only single
    # characters are compared here; validate_action uses canonical for actors).
    # Every one of planes 0, 1 and 14, where the refused ones are; elsewhere
    # (ideographs, unassigned, private use) one in 16, to keep this quick.
    pattern = re.compile(re.sub(r"\$$", r"\\Z", component("Name")(load_openapi())["pattern"]))

    def accepted(value):
        try:
            identities.canonical(value)
        except identities.IdentityRefused:
            return False
        return True

    disagreements = [f"U+{code:04X} in {value!r}" for code in range(0x110000)
                     if not 0xD800 <= code <= 0xDFFF and (code >> 16 in (0, 1, 14) or code % 16 == 0)
                     for value in ("a" + chr(code) + "b", "a" + chr(code))
                     if (pattern.search(value) is not None) != accepted(value)]
    assert not disagreements, disagreements[:10]


def test_every_example_in_the_document_is_valid_for_its_schema():
    document = load_openapi()

    def validator(schema):
        return Draft202012Validator({**schema, "components": document["components"]})

    checked = 0
    for name, schema in document["components"]["schemas"].items():
        for example in schema.get("examples", ()):
            assert not list(validator(schema).iter_errors(example)), name
            checked += 1
    media_types = [media for item in document["paths"].values() for method in HTTP_METHODS if method in item
                   for media in [*item[method].get("requestBody", {}).get("content", {}).values(),
                                 *(media for response in item[method]["responses"].values()
                                   for media in resolve(document, response).get("content", {}).values())]]
    for media in media_types:
        for name, example in media.get("examples", {}).items():
            assert not list(validator(media["schema"]).iter_errors(example["value"])), name
            checked += 1
    assert checked > 20


def schemas_in(node, path="#"):
    """(JSON pointer, schema object) of every object under ``node`` that holds a schema keyword."""
    if isinstance(node, dict):
        if {"allOf", "oneOf", "properties", "const", "type", "$ref"} & set(node):
            yield path, node
        for key, value in node.items():
            yield from schemas_in(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from schemas_in(item, f"{path}/{index}")


def test_the_document_keeps_to_what_code_generators_can_merge():
    # openapi-python-client (tests/e2e/test_generated_client.py runs it) builds a schema with `allOf` from the
    # `allOf` alone, so members or `required` beside it would be missing from the model without a warning; and it
    # cannot narrow an inherited member to a `const` ("int can't be merged with Literal[422]"), so a narrower
    # member inside an `allOf` is an `enum`.
    document = load_openapi()
    beside = [path for path, schema in schemas_in(document)
              if "allOf" in schema and {"properties", "required"} & set(schema)]
    narrowed = [f"{path}/properties/{name}" for path, schema in schemas_in(document)
                for part in schema.get("allOf", ()) for name, member in part.get("properties", {}).items()
                if "const" in member]
    assert (beside, narrowed) == ([], [])
