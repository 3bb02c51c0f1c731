"""The configuration file: TOML in, a validated policy out, or one message naming file, key and problem."""

from __future__ import annotations

import tomllib
from datetime import datetime, time, timezone

import pytest

from deployapi import policy
from deployapi.config_file import MAPPING_SOURCE, Config, ConfigFileError, load_config
from deployapi.policy import EnvironmentPolicy, FixedWindow, WeeklyWindow

# The policy parts of the contract's example file.
CONTRACT_EXAMPLE = """
[defaults]                     # every environment without a table of its own
required_approvals = 1

[environments.production]
production = true              # risk required at creation
required_approvals = 2         # distinct approvers, none of them the requester
approvers = ["group:sre", "dana@example.com"]   # who may approve; default: anyone but the requester
exclusive = true               # at most one started deployment per service here
freeze = [
  { start = "2026-12-24T00:00:00Z", end = "2026-12-27T00:00:00Z", reason = "holidays" },
  { weekly_start = "fri 18:00", weekly_end = "mon 08:00", timezone = "Europe/Berlin", reason = "weekend" },
]

[environments.dev]
required_approvals = 0         # created already approved
"""

UTC = timezone.utc


@pytest.fixture
def load(tmp_path):
    """Write TOML text to a file and load it by path."""
    def load_text(text: str, **options) -> Config:
        path = tmp_path / "deployapi.toml"
        path.write_text(text, encoding="utf-8")
        return load_config(path, **options)
    return load_text


@pytest.fixture
def refusal(tmp_path):
    """Write TOML text to a file and return the message of its refusal."""
    def refuse(text: str, **options) -> str:
        path = tmp_path / "deployapi.toml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigFileError) as caught:
            load_config(path, **options)
        message = str(caught.value)
        assert message.startswith(f"{path}: ")
        assert "\n" not in message
        return message
    return refuse


# --- what a valid file means ------------------------------------------------------------


def test_the_contract_example_loads_as_the_policy_it_describes(load, tmp_path):
    config = load(CONTRACT_EXAMPLE, groups_available=True)

    assert config.source == str(tmp_path / "deployapi.toml")
    assert config.policy.defaults == EnvironmentPolicy(required_approvals=1)
    assert set(config.policy.environments) == {"production", "dev"}
    assert config.policy.for_environment("production") == EnvironmentPolicy(
        production=True, required_approvals=2, approvers=("group:sre", "dana@example.com"), exclusive=True,
        freeze=(FixedWindow(datetime(2026, 12, 24, tzinfo=UTC), datetime(2026, 12, 27, tzinfo=UTC), "holidays"),
                WeeklyWindow(4, time(18, 0), 0, time(8, 0), "Europe/Berlin", "weekend")))
    assert config.policy.for_environment("dev") == EnvironmentPolicy(required_approvals=0)


def test_a_parsed_document_loads_like_the_file_it_came_from(load):
    from_file = load(CONTRACT_EXAMPLE, groups_available=True)
    from_mapping = load_config(tomllib.loads(CONTRACT_EXAMPLE), groups_available=True)

    assert from_mapping.source == MAPPING_SOURCE
    assert from_mapping.policy == from_file.policy
    assert from_mapping.policy.digest == from_file.policy.digest


def test_the_source_is_the_path_as_given(tmp_path):
    path = tmp_path / "deployapi.toml"
    path.write_text("", encoding="utf-8")

    assert load_config(path).source == str(path)
    assert load_config(str(path)).source == str(path)


def test_an_empty_file_is_the_v1_policy(load):
    assert load("").policy.digest == policy.default_policy().digest
    assert load("", production_environments=["prod", "live"]).policy.digest == \
        policy.default_policy(["prod", "live"]).digest


def test_a_byte_order_mark_is_not_part_of_the_file(tmp_path):
    path = tmp_path / "deployapi.toml"
    path.write_bytes(b"\xef\xbb\xbf[defaults]\nrequired_approvals = 2\n")

    assert load_config(path).policy.defaults.required_approvals == 2


def test_environment_tables_overlay_the_defaults_key_by_key(load):
    config = load("""
        [defaults]
        required_approvals = 2
        exclusive = true
        approvers = ["ann", "bob", "cid"]

        [environments.staging]
        exclusive = false

        [environments.qa]
    """)

    staging = config.policy.for_environment("staging")
    assert (staging.required_approvals, staging.exclusive, staging.approvers) == (2, False, ("ann", "bob", "cid"))
    assert config.policy.for_environment("qa") == config.policy.defaults
    assert config.policy.for_environment("anything-else") == config.policy.defaults
    assert config.policy.defaults == EnvironmentPolicy(required_approvals=2, exclusive=True,
                                                       approvers=("ann", "bob", "cid"))


def test_a_fixed_window_is_kept_in_utc(load):
    config = load("""
        [defaults]
        freeze = [{ start = "2026-12-24T01:00:00+01:00", end = 2026-12-27T00:00:00-05:00 }]
    """)

    (window,) = config.policy.defaults.freeze
    assert window == FixedWindow(datetime(2026, 12, 24, tzinfo=UTC), datetime(2026, 12, 27, 5, tzinfo=UTC))
    assert window.start.tzinfo is UTC and window.end.tzinfo is UTC


def test_approvers_are_stored_canonical_with_groups_first(load):
    config = load("""
        [defaults]
        approvers = ["  Zoe ", " Group: SRE ", "ａｌｉｃｅ", "group:dba"]
    """, groups_available=True)

    assert config.policy.defaults.approvers == ("group:dba", "group:SRE", "alice", "Zoe")


def test_the_same_approvers_in_another_order_give_the_same_digest(load):
    first = load('[defaults]\napprovers = ["group:sre", "dana@example.com", "Bob"]', groups_available=True)
    second = load('[defaults]\napprovers = ["Bob", "group:sre", "dana@example.com"]', groups_available=True)

    assert first.policy.digest == second.policy.digest


def test_toml_date_times_and_rfc_3339_strings_of_one_instant_give_the_same_digest(load):
    as_toml = load("[defaults]\nfreeze = [{ start = 2026-12-24T00:00:00Z, end = 2026-12-27T01:00:00+01:00 }]")
    as_strings = load('[defaults]\nfreeze = [{ start = "2026-12-24T01:00:00+01:00", end = "2026-12-27T00:00:00z" }]')
    as_mapping = load_config({"defaults": {"freeze": [{"start": "2026-12-24 00:00:00Z",
                                                       "end": "2026-12-27T00:00:00.000000+00:00"}]}})

    assert as_toml.policy.digest == as_strings.policy.digest == as_mapping.policy.digest


def test_the_limits_themselves_are_allowed(load):
    approvers = ", ".join(f'"person{n}"' for n in range(100))
    windows = ", ".join(f'{{ weekly_start = "mon {n % 24:02d}:00", weekly_end = "tue 00:30", timezone = "UTC" }}'
                        for n in range(50))
    config = load(f"[defaults]\nrequired_approvals = 10\napprovers = [{approvers}]\nfreeze = [{windows}]\n"
                  f'[environments.dev]\nfreeze = [{{ start = 2026-01-01T00:00:00Z, end = 2026-01-02T00:00:00Z, '
                  f'reason = "{"r" * 200}" }}]')

    assert len(config.policy.defaults.approvers) == 100
    assert len(config.policy.defaults.freeze) == 50
    assert config.policy.for_environment("dev").freeze[0].reason == "r" * 200


# --- who decides the production set -----------------------------------------------------------


@pytest.mark.parametrize("text, production_environments, production, ordinary", [
    pytest.param("[environments.staging]\nrequired_approvals = 2", None, {"production"}, {"staging", "prod"},
                 id="no table sets it: the v1 default, production"),
    pytest.param("", ["prod", "live"], {"prod", "live"}, {"production"},
                 id="no table sets it: the v1 setting given replaces the default"),
    pytest.param("[environments.production]\nproduction = true", None, {"production"}, {"prod"},
                 id="a table sets it: the file decides"),
    pytest.param("[environments.live]\nproduction = true\n[environments.production]", None, {"live"},
                 {"production"}, id="a table sets it: production is then an ordinary environment"),
    pytest.param("[environments.live]\nproduction = false", None, set(), {"live", "production"},
                 id="production = false is setting it too"),
    pytest.param("[defaults]\nproduction = true\n[environments.dev]\nproduction = false", None,
                 {"production", "anything"}, {"dev"}, id="the defaults table sets it for every other environment"),
])
def test_the_production_set(load, text, production_environments, production, ordinary):
    rules = load(text, production_environments=production_environments).policy

    assert {name for name in production | ordinary if name in rules} == production


def test_an_environment_of_the_v1_set_keeps_its_table_and_one_without_a_table_gets_the_defaults(load):
    rules = load("[defaults]\nexclusive = true\n[environments.prod]\nrequired_approvals = 3",
                 production_environments=["prod", "live"]).policy

    assert rules.for_environment("prod") == EnvironmentPolicy(production=True, required_approvals=3, exclusive=True)
    assert rules.for_environment("live") == EnvironmentPolicy(production=True, exclusive=True)
    assert rules.defaults == EnvironmentPolicy(exclusive=True)


def test_setting_production_in_the_file_and_passing_a_production_set_too_is_refused(refusal):
    message = refusal("[environments.live]\nproduction = true", production_environments=["live"])

    assert ": environments.live.production: the file sets production" in message
    assert "--production-environments" in message and "DEPLOYAPI_PRODUCTION_ENVIRONMENTS" in message


def test_a_production_set_given_as_one_string_is_a_programming_error():
    with pytest.raises(TypeError):
        load_config({}, production_environments="prod")


def test_a_production_set_with_an_invalid_name_is_refused():
    with pytest.raises(ConfigFileError, match=r'^<config>: production_environments: "Prod" is not a valid'):
        load_config({}, production_environments=["Prod"])


# --- groups ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, key", [
    pytest.param('[environments.production]\napprovers = ["dana", "group:sre"]', "environments.production.approvers",
                 id="in an environment"),
    pytest.param('[environments.dev]\napprovers = ["group:dev"]\n[defaults]\napprovers = ["group:sre"]',
                 "defaults.approvers", id="the defaults first"),
])
def test_a_group_needs_trusted_identity_with_a_groups_header(refusal, load, text, key):
    message = refusal(text)

    assert f": {key}: names a group, which needs trusted identity with a groups header" in message
    assert "--trust-remote-user" in message and "--remote-groups-header" in message
    assert load(text, groups_available=True).policy.names_groups


# --- refusals --------------------------------------------------------------------------------

FIXED = 'start = "2026-12-24T00:00:00Z", end = "2026-12-27T00:00:00Z"'


def weekly_in(zone: str) -> str:
    """A [defaults] table with one weekly window whose timezone is the TOML value ``zone``."""
    return f'[defaults]\nfreeze = [{{ weekly_start = "fri 18:00", weekly_end = "mon 08:00", timezone = {zone} }}]'


@pytest.mark.parametrize("text, key, problem", [
    # the document
    pytest.param('colour = "blue"', "colour", "unknown key; allowed keys are: defaults, environments, webhooks",
                 id="unknown top-level key"),
    pytest.param('[webhooks]\nname = "audit-sink"\nurl = "https://hooks.example.com/"', "webhooks",
                 "must be an array of tables: write [[webhooks]]", id="webhooks as one table"),
    pytest.param("defaults = 1", "defaults", "must be a table, not an integer", id="defaults not a table"),
    pytest.param("environments = []", "environments", "must be a table, not an array", id="environments not a table"),
    pytest.param("environments.dev = true", "environments.dev", "must be a table, not a boolean",
                 id="an environment not a table"),
    pytest.param("[environments.Prod]", "environments.Prod", "not a valid environment name",
                 id="environment name in upper case"),
    pytest.param('[environments."live env"]', 'environments."live env"', "not a valid environment name",
                 id="environment name with a space, quoted in the key"),
    pytest.param('[environments."a.b"]\nexclusive = 1', 'environments."a.b".exclusive',
                 "must be a boolean, not an integer", id="a valid environment name with a dot, quoted in the key"),
    pytest.param('[environments."-live"]', "environments.-live", "not a valid environment name",
                 id="environment name starting with a dash"),
    pytest.param(f'[environments."{"e" * 64}"]', f"environments.{'e' * 64}", "not a valid environment name",
                 id="environment name too long"),
    # policy keys
    pytest.param("[defaults]\nrequired_approval = 2", "defaults.required_approval",
                 "unknown key; allowed keys are: production, required_approvals, approvers, exclusive, freeze",
                 id="unknown policy key"),
    pytest.param('[environments.dev]\nproduction = "yes"', "environments.dev.production",
                 "must be a boolean, not a string", id="production a string"),
    pytest.param("[defaults]\nexclusive = 1", "defaults.exclusive", "must be a boolean, not an integer",
                 id="exclusive an integer"),
    pytest.param("[defaults]\nrequired_approvals = -1", "defaults.required_approvals",
                 "must be between 0 and 10, not -1", id="required_approvals -1"),
    pytest.param("[defaults]\nrequired_approvals = 11", "defaults.required_approvals",
                 "must be between 0 and 10, not 11", id="required_approvals 11"),
    pytest.param("[defaults]\nrequired_approvals = true", "defaults.required_approvals",
                 "must be an integer, not a boolean", id="required_approvals true"),
    pytest.param("[defaults]\nrequired_approvals = 1.5", "defaults.required_approvals",
                 "must be an integer, not a float", id="required_approvals 1.5"),
    pytest.param('[defaults]\nrequired_approvals = "2"', "defaults.required_approvals",
                 "must be an integer, not a string", id="required_approvals a string"),
    pytest.param('[defaults]\napprovers = "dana"', "defaults.approvers", "must be an array, not a string",
                 id="approvers a string"),
    pytest.param('[defaults]\nfreeze = { start = "2026-12-24T00:00:00Z" }', "defaults.freeze",
                 "must be an array, not a table", id="freeze a table"),
    # approvers
    pytest.param("[defaults]\napprovers = []", "defaults.approvers",
                 "would admit no one; leave approvers out to admit anyone but the requester", id="approvers empty"),
    pytest.param('[defaults]\napprovers = ["Alice", "bob", "alice"]', "defaults.approvers[2]",
                 "names the same person as approvers[0]", id="approvers duplicate by case"),
    pytest.param('[defaults]\napprovers = ["group:sre", "group:SRE "]', "defaults.approvers[1]",
                 "names the same group as approvers[0]", id="approvers duplicate group"),
    pytest.param('[defaults]\napprovers = ["dana", "  "]', "defaults.approvers[1]", "must not be blank",
                 id="approvers blank"),
    pytest.param('[defaults]\napprovers = ["al\\u0007ice"]', "defaults.approvers[0]",
                 "must not contain control characters", id="approvers control character"),
    pytest.param('[defaults]\napprovers = ["ali\\u200bce"]', "defaults.approvers[0]",
                 "must not contain invisible", id="approvers zero-width space"),
    pytest.param(f'[defaults]\napprovers = ["{"a" * 129}"]', "defaults.approvers[0]", "at most 128 characters",
                 id="approvers identity too long"),
    pytest.param('[defaults]\napprovers = ["group: "]', "defaults.approvers[0]", "the group name must not be blank",
                 id="approvers group with blank name"),
    pytest.param('[defaults]\napprovers = ["group:sre,dba"]', "defaults.approvers[0]",
                 "the group name must not contain a comma", id="approvers group with a comma"),
    pytest.param("[defaults]\napprovers = [7]", "defaults.approvers[0]", "must be a string, not an integer",
                 id="approvers entry not a string"),
    pytest.param("[defaults]\napprovers = [" + ", ".join(f'"p{n}"' for n in range(101)) + "]",
                 "defaults.approvers", "must have at most 100 entries, not 101", id="approvers 101 entries"),
    pytest.param('[defaults]\nrequired_approvals = 3\napprovers = ["ann", "bob"]', "defaults",
                 "required_approvals is 3 but approvers admit only 2", id="more approvals than approvers"),
    pytest.param('[defaults]\nrequired_approvals = 2\n[environments.prod]\napprovers = ["ann"]',
                 "environments.prod", "required_approvals is 2 but approvers admit only 1",
                 id="more approvals than approvers, with the defaults"),
    # freeze windows
    pytest.param("[defaults]\nfreeze = [1]", "defaults.freeze[0]", "must be a table, not an integer",
                 id="window not a table"),
    pytest.param(f"[defaults]\nfreeze = [{{ {FIXED}, weekly_start = \"fri 18:00\" }}]", "defaults.freeze[0]",
                 "mixes a fixed window (start, end) with a weekly one (weekly_start)", id="window mixes the forms"),
    pytest.param('[defaults]\nfreeze = [{ reason = "why" }]', "defaults.freeze[0]",
                 "needs start and end, or weekly_start, weekly_end and timezone", id="window of neither form"),
    pytest.param('[defaults]\nfreeze = [{ start = "2026-12-24T00:00:00Z" }]', "defaults.freeze[0].end",
                 "missing; a fixed window needs start, end", id="window missing end"),
    pytest.param('[defaults]\nfreeze = [{ weekly_start = "fri 18:00", weekly_end = "mon 08:00" }]',
                 "defaults.freeze[0].timezone", "missing; a weekly window needs weekly_start, weekly_end, timezone",
                 id="window missing timezone"),
    pytest.param(f"[defaults]\nfreeze = [{{ {FIXED}, until = 3 }}]", "defaults.freeze[0].until",
                 "unknown key; allowed keys are: start, end, reason (a fixed window) or weekly_start", id="window key"),
    pytest.param('[defaults]\nfreeze = [{ start = "2026-12-27T00:00:00Z", end = "2026-12-24T00:00:00Z" }]',
                 "defaults.freeze[0].end", "must be later than start", id="start after end"),
    pytest.param('[defaults]\nfreeze = [{ start = "2026-12-24T01:00:00+01:00", end = "2026-12-24T00:00:00Z" }]',
                 "defaults.freeze[0].end", "must be later than start", id="start at end, in other offsets"),
    pytest.param("[defaults]\nfreeze = [{ start = 2026-12-24T00:00:00, end = 2026-12-27T00:00:00Z }]",
                 "defaults.freeze[0].start", "needs a UTC offset or Z", id="start a TOML local date-time"),
    pytest.param('[defaults]\nfreeze = [{ start = "2026-12-24T00:00:00Z", end = "2026-12-27T00:00:00" }]',
                 "defaults.freeze[0].end", "needs a UTC offset or Z", id="end a string without offset"),
    pytest.param("[defaults]\nfreeze = [{ start = 2026-12-24, end = 2026-12-27T00:00:00Z }]",
                 "defaults.freeze[0].start", "must be a date-time with a UTC offset or Z, not a local date",
                 id="start a TOML local date"),
    pytest.param('[defaults]\nfreeze = [{ start = "tomorrow", end = "2026-12-27T00:00:00Z" }]',
                 "defaults.freeze[0].start", 'must be an RFC 3339 date-time such as "2026-12-24T00:00:00Z", not '
                 '"tomorrow"', id="start not a date-time"),
    pytest.param('[defaults]\nfreeze = [{ start = "20261224T000000Z", end = "2026-12-27T00:00:00Z" }]',
                 "defaults.freeze[0].start", "must be an RFC 3339 date-time", id="start ISO 8601 but not RFC 3339"),
    pytest.param('[defaults]\nfreeze = [{ start = "2026-02-30T00:00:00Z", end = "2026-12-27T00:00:00Z" }]',
                 "defaults.freeze[0].start", "is not a valid date-time", id="start an impossible date"),
    pytest.param('[defaults]\nfreeze = [{ start = 1, end = "2026-12-27T00:00:00Z" }]', "defaults.freeze[0].start",
                 "must be a date-time with a UTC offset or Z, not an integer", id="start an integer"),
    pytest.param('[defaults]\nfreeze = [{ weekly_start = "fry 18:00", weekly_end = "mon 08:00", timezone = "UTC" }]',
                 "defaults.freeze[0].weekly_start", 'must be "ddd HH:MM"', id="bad weekday"),
    pytest.param('[defaults]\nfreeze = [{ weekly_start = "Fri 18:00", weekly_end = "mon 08:00", timezone = "UTC" }]',
                 "defaults.freeze[0].weekly_start", 'not "Fri 18:00"', id="weekday in upper case"),
    pytest.param('[defaults]\nfreeze = [{ weekly_start = "fri 18:00", weekly_end = "fri 24:00", timezone = "UTC" }]',
                 "defaults.freeze[0].weekly_end", 'must be "ddd HH:MM"', id="fri 24:00"),
    pytest.param('[defaults]\nfreeze = [{ weekly_start = "fri 8:00", weekly_end = "mon 08:00", timezone = "UTC" }]',
                 "defaults.freeze[0].weekly_start", 'must be "ddd HH:MM"', id="fri 8:00"),
    pytest.param('[defaults]\nfreeze = [{ weekly_start = "fri 18:60", weekly_end = "mon 08:00", timezone = "UTC" }]',
                 "defaults.freeze[0].weekly_start", 'must be "ddd HH:MM"', id="fri 18:60"),
    pytest.param('[defaults]\nfreeze = [{ weekly_start = 5, weekly_end = "mon 08:00", timezone = "UTC" }]',
                 "defaults.freeze[0].weekly_start", "must be a string, not an integer", id="weekly_start an integer"),
    pytest.param('[defaults]\nfreeze = [{ weekly_start = "fri 18:00", weekly_end = "fri 18:00", timezone = "UTC" }]',
                 "defaults.freeze[0].weekly_end", "must differ from weekly_start", id="weekly start equals end"),
    pytest.param(f'[environments.production]\nfreeze = [{{ {FIXED} }}, '
                 '{ weekly_start = "fri 18:00", weekly_end = "mon 08:00", timezone = "Mars/Base" }]',
                 "environments.production.freeze[1].timezone", 'unknown time zone "Mars/Base"', id="unknown zone"),
    pytest.param('[defaults]\nfreeze = [{ weekly_start = "fri 18:00", weekly_end = "mon 08:00", timezone = "" }]',
                 "defaults.freeze[0].timezone", "must be an IANA time zone name", id="empty zone"),
    pytest.param(weekly_in('"../../etc/passwd"'),
                 "defaults.freeze[0].timezone", "must be an IANA time zone name", id="zone path climbing up"),
    pytest.param(weekly_in('"/usr/share/zoneinfo/UTC"'),
                 "defaults.freeze[0].timezone", "must be an IANA time zone name", id="zone absolute path"),
    pytest.param(weekly_in('"Europe/../Europe/Berlin"'),
                 "defaults.freeze[0].timezone", "must be an IANA time zone name", id="zone path not normalised"),
    pytest.param(weekly_in('"localtime"'),
                 "defaults.freeze[0].timezone", "must be an IANA time zone name", id="zone the machine's localtime"),
    pytest.param(weekly_in('"europe/berlin"'),
                 "defaults.freeze[0].timezone", "must be an IANA time zone name", id="zone in lower case"),
    pytest.param(weekly_in("1"),
                 "defaults.freeze[0].timezone", "must be a string, not an integer", id="zone an integer"),
    pytest.param(f'[defaults]\nfreeze = [{{ {FIXED}, reason = "{"r" * 201}" }}]', "defaults.freeze[0].reason",
                 "must be at most 200 characters", id="reason too long"),
    pytest.param(f'[defaults]\nfreeze = [{{ {FIXED}, reason = " " }}]', "defaults.freeze[0].reason",
                 "must not be blank", id="reason blank"),
    pytest.param(f'[defaults]\nfreeze = [{{ {FIXED}, reason = "line\\nbreak" }}]', "defaults.freeze[0].reason",
                 "must not contain control characters", id="reason with a control character"),
    pytest.param(f"[defaults]\nfreeze = [{{ {FIXED}, reason = true }}]", "defaults.freeze[0].reason",
                 "must be a string, not a boolean", id="reason not a string"),
    pytest.param("[defaults]\nfreeze = [" + ", ".join([f"{{ {FIXED} }}"] * 51) + "]", "defaults.freeze",
                 "must have at most 50 entries, not 51", id="51 windows"),
])
def test_a_file_breaking_a_rule_is_refused_naming_the_key_and_the_problem(refusal, tmp_path, text, key, problem):
    message = refusal(text)

    assert message.startswith(f"{tmp_path / 'deployapi.toml'}: {key}: ")
    assert problem in message


@pytest.mark.parametrize("content, problem", [
    pytest.param(b"[defaults\n", "not valid TOML: ", id="not TOML"),
    pytest.param(b"[defaults]\nrequired_approvals = 1\nrequired_approvals = 2\n", "not valid TOML: ", id="key twice"),
    pytest.param(b'[defaults]\nreason = "\xff"\n', "not valid TOML: not UTF-8 text (at line 2, column 11)",
                 id="not UTF-8"),
    pytest.param(b"[defaults]\nrequired_approvals = " + b"9" * 5000, "not valid TOML: ", id="an integer too long"),
])
def test_a_file_that_is_not_toml_is_refused(tmp_path, content, problem):
    path = tmp_path / "deployapi.toml"
    path.write_bytes(content)

    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: {problem}")


def test_tomls_message_says_where_the_problem_is(tmp_path):
    path = tmp_path / "deployapi.toml"
    path.write_text("[defaults]\nrequired_approvals = \n")

    with pytest.raises(ConfigFileError, match=r"not valid TOML: .*\(at line 2, column 22\)$"):
        load_config(path)


@pytest.mark.parametrize("name, reason", [
    pytest.param("absent.toml", "No such file or directory", id="missing"),
    pytest.param(".", "Is a directory", id="a directory"),
    pytest.param("nul\0.toml", "embedded null byte", id="a NUL in the path"),
])
def test_a_file_that_cannot_be_read_is_refused(tmp_path, name, reason):
    path = tmp_path / name

    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: cannot read the file: {reason}"


def test_only_the_first_problem_is_reported(refusal):
    message = refusal('[defaults]\nrequired_approvals = -1\nexclusive = "yes"')

    assert "required_approvals" in message and "exclusive" not in message


def test_a_refused_mapping_is_named_as_such():
    with pytest.raises(ConfigFileError, match=r"^<config>: defaults\.exclusive: must be a boolean, not null$"):
        load_config({"defaults": {"exclusive": None}})


def test_a_mapping_may_hold_strings_where_toml_has_date_times():
    config = load_config({"defaults": {"freeze": [{"start": "2026-12-24T00:00:00Z", "end": "2026-12-25T00:00:00Z"}]}})

    assert config.policy.defaults.freeze[0].end == datetime(2026, 12, 25, tzinfo=UTC)


# --- what messages never show ------------------------------------------------------------------


def test_a_webhook_is_refused_without_showing_its_secret(refusal):
    message = refusal('[[webhooks]]\nname = "audit-sink"\nsecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"')

    assert "whsec_" not in message and "MfKQ9r8" not in message


def test_a_long_value_is_cut_in_the_message(refusal):
    message = refusal(weekly_in(f'"Europe/{"x" * 500}"'))

    assert "x" * 100 not in message and "x" * 50 in message and "..." in message
    assert len(message) < 400


def test_a_long_key_is_cut_in_the_message(refusal):
    message = refusal(f'["{"k" * 500}"]')

    assert "k" * 100 not in message and "..." in message


def test_invisible_characters_are_escaped_in_the_message(refusal):
    message = refusal('[defaults]\nfreeze = [{ weekly_start = "fri\\u202e 18:00", weekly_end = "mon 08:00", '
                      'timezone = "UTC" }]')

    assert "\u202e" not in message and "\\u202e" in message
