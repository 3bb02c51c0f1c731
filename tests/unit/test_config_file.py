"""The configuration file: TOML in, a validated policy out, or one message naming file, key and problem."""

from __future__ import annotations

import base64
import tomllib
from datetime import datetime, time, timezone

import pytest
from receivers import webhook_config

from deployapi import policy
from deployapi.config_file import MAPPING_SOURCE, Config, ConfigFileError, load_config
from deployapi.policy import EnvironmentPolicy, FixedWindow, WeeklyWindow
from deployapi.webhooks import Webhook

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


# --- webhooks ------------------------------------------------------------------------------------

# The webhook part of the contract's example file.
CONTRACT_WEBHOOK = """
[[webhooks]]
name = "audit-sink"            # slug, unique
url = "https://hooks.example.com/deployapi"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"   # or secret_env = "VARIABLE"
format = "cloudevents"         # cloudevents | json | slack
types = ["created", "approved", "started", "succeeded", "failed", "rolled_back"]   # optional
services = ["billing"]         # optional
environments = ["production"]  # optional
"""
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
OTHER_SECRET = "whsec_" + base64.b64encode(b"another key, thirty-two bytes!!!").decode()
SHORT_SECRET = "whsec_" + base64.b64encode(b"sixteen bytes!!!").decode()
# What the tables below find in the environment (never os.environ: load_config is given this).
ENVIRON = {"AUDIT_SECRET": OTHER_SECRET, "EMPTY_SECRET": "", "SHORT_SECRET": SHORT_SECRET,
           "PLAIN_SECRET": "correct-horse-battery-staple"}


def entry(**keys) -> dict:
    """A valid [[webhooks]] table; keyword arguments replace keys or (with None) remove them."""
    table = {"name": "audit-sink", "url": "https://hooks.example.com/deployapi"}
    table.update(keys)
    return {key: value for key, value in table.items() if value is not None}


def encoded(size: int) -> str:
    """A valid-looking whsec_ secret of ``size`` bytes."""
    return "whsec_" + base64.b64encode(bytes(range(size))).decode()


def test_the_contracts_example_webhook_loads_as_the_webhook_it_describes(load):
    config = load(CONTRACT_EXAMPLE + CONTRACT_WEBHOOK, groups_available=True)

    assert config.webhooks == (Webhook(
        name="audit-sink", url="https://hooks.example.com/deployapi", format="cloudevents", secret=KEY,
        types=frozenset({"created", "approved", "started", "succeeded", "failed", "rolled_back"}),
        services=frozenset({"billing"}), environments=frozenset({"production"}), max_backoff_seconds=600),)


def test_webhooks_are_no_part_of_the_policy(load):
    with_webhooks = load(CONTRACT_EXAMPLE + CONTRACT_WEBHOOK, groups_available=True)
    without = load(CONTRACT_EXAMPLE, groups_available=True)

    assert with_webhooks.policy == without.policy
    assert with_webhooks.policy.digest == without.policy.digest
    assert without.webhooks == ()


def test_a_webhook_with_only_a_name_and_a_url_gets_the_defaults(load):
    (webhook,) = load(webhook_config(entry(name="chat", url="https://hooks.slack.com/services/T/B/X"))).webhooks

    assert (webhook.name, webhook.url) == ("chat", "https://hooks.slack.com/services/T/B/X")
    assert webhook.format == "json"
    assert webhook.max_backoff_seconds == 600
    assert (webhook.types, webhook.services, webhook.environments) == (None, None, None)
    assert webhook.secret is None
    assert webhook.matches("cancelled", "anything", "anywhere")


def test_webhooks_keep_the_order_of_the_file(load):
    config = load(webhook_config(entry(name="zeta", format="slack"), entry(name="alpha", url="http://10.0.0.7:9000/"),
                                 entry(name="mid", max_backoff_seconds=1)))

    assert [(hook.name, hook.format, hook.max_backoff_seconds) for hook in config.webhooks] == [
        ("zeta", "slack", 600), ("alpha", "json", 600), ("mid", "json", 1)]


def test_the_webhook_limits_themselves_are_allowed(load):
    long_url = "https://hooks.example.com/" + "p" * (2048 - len("https://hooks.example.com/"))
    config = load(webhook_config(entry(url=long_url, max_backoff_seconds=86_400, secret=encoded(64)),
                                 *(entry(name=f"hook-{n}", secret=encoded(24)) for n in range(49))))

    assert len(config.webhooks) == 50
    assert (config.webhooks[0].url, config.webhooks[0].max_backoff_seconds) == (long_url, 86_400)
    assert len(config.webhooks[0].secret) == 64 and len(config.webhooks[1].secret) == 24


def test_secret_env_reads_the_variable_from_the_environment_given_to_load_config(load, refusal, monkeypatch):
    monkeypatch.setenv("DEPLOYAPI_TEST_WEBHOOK_SECRET", SECRET)
    text = webhook_config(entry(secret_env="DEPLOYAPI_TEST_WEBHOOK_SECRET"))

    (webhook,) = load(text, environ={"DEPLOYAPI_TEST_WEBHOOK_SECRET": OTHER_SECRET}).webhooks
    assert webhook.secret == base64.b64decode(OTHER_SECRET.removeprefix("whsec_"))
    assert "DEPLOYAPI_TEST_WEBHOOK_SECRET is not set" in refusal(text, environ={})


def test_secret_env_reads_the_process_environment_by_default(load, monkeypatch):
    monkeypatch.setenv("DEPLOYAPI_TEST_WEBHOOK_SECRET", SECRET)

    (webhook,) = load(webhook_config(entry(secret_env="DEPLOYAPI_TEST_WEBHOOK_SECRET"))).webhooks
    assert webhook.secret == KEY


WEBHOOK_KEYS = "name, url, secret, secret_env, format, types, services, environments, max_backoff_seconds"


@pytest.mark.parametrize("text, key, problem", [
    # the array
    pytest.param('[webhooks]\nname = "audit-sink"\nurl = "https://hooks.example.com/"', "webhooks",
                 "must be an array of tables: write [[webhooks]] (two brackets) above each one",
                 id="webhooks as one table"),
    pytest.param('webhooks = "https://hooks.example.com/"', "webhooks", "must be an array, not a string",
                 id="webhooks a string"),
    pytest.param("webhooks = [1]", "webhooks[0]", "must be a table, not an integer", id="a webhook not a table"),
    pytest.param(webhook_config(*(entry(name=f"hook-{n}") for n in range(51))), "webhooks",
                 "must have at most 50 entries, not 51", id="51 webhooks"),
    pytest.param(webhook_config(entry(), entry(url="https://other.example.com/")), "webhooks[1].name",
                 '"audit-sink" is already the name of webhooks[0]', id="duplicate name"),
    pytest.param(webhook_config(entry(), entry(name="chat", url="ftp://hooks.example.com/")), "webhooks[1].url",
                 "must be an http:// or https:// URL", id="the second webhook is named by its index"),
    # keys
    pytest.param(webhook_config(entry(secrets=SECRET)), "webhooks[0].secrets",
                 f"unknown key; allowed keys are: {WEBHOOK_KEYS}", id="unknown key"),
    pytest.param(webhook_config(entry()) + '[webhooks.headers]\nX-Token = "t"', "webhooks[0].headers",
                 "unknown key; allowed keys are: ", id="unknown key holding a table"),
    pytest.param(webhook_config(entry(name=None)), "webhooks[0].name", "missing; every webhook needs a name and a url",
                 id="no name"),
    pytest.param(webhook_config(entry(url=None)), "webhooks[0].url", "missing; every webhook needs a name and a url",
                 id="no url"),
    # name
    pytest.param(webhook_config(entry(name="Audit Sink")), "webhooks[0].name", 'must be a slug', id="name not a slug"),
    pytest.param(webhook_config(entry(name="-audit")), "webhooks[0].name",
                 'must be a slug (^[a-z0-9][a-z0-9._-]{0,62}$), not "-audit"', id="name starting with a dash"),
    pytest.param(webhook_config(entry(name="a" * 64)), "webhooks[0].name", "must be a slug", id="name too long"),
    pytest.param(webhook_config(entry(name="")), "webhooks[0].name", "must be a slug", id="name empty"),
    pytest.param(webhook_config(entry(name=7)), "webhooks[0].name", "must be a string, not an integer",
                 id="name an integer"),
    # url
    pytest.param(webhook_config(entry(url="ftp://hooks.example.com/")), "webhooks[0].url",
                 "must be an http:// or https:// URL", id="ftp"),
    pytest.param(webhook_config(entry(url="file:///etc/passwd")), "webhooks[0].url",
                 "must be an http:// or https:// URL", id="file"),
    pytest.param(webhook_config(entry(url="hooks.example.com/deployapi")), "webhooks[0].url",
                 "must be an http:// or https:// URL", id="no scheme"),
    pytest.param(webhook_config(entry(url="https:///deployapi")), "webhooks[0].url", "must name a host",
                 id="no host"),
    pytest.param(webhook_config(entry(url="https://:8443/deployapi")), "webhooks[0].url", "must name a host",
                 id="a port but no host"),
    pytest.param(webhook_config(entry(url="https://deployapi:hunter2@hooks.example.com/")), "webhooks[0].url",
                 "must not hold a user name or password", id="user and password"),
    pytest.param(webhook_config(entry(url="https://token@hooks.example.com/")), "webhooks[0].url",
                 "must not hold a user name or password", id="user only"),
    pytest.param(webhook_config(entry(url="https://hooks.example.com/deployapi#top")), "webhooks[0].url",
                 "must not have a fragment", id="fragment"),
    pytest.param(webhook_config(entry(url="https://hooks.example.com/deployapi#")), "webhooks[0].url",
                 "must not have a fragment", id="empty fragment"),
    pytest.param(webhook_config(entry(url="https://hooks.example.com:0/")), "webhooks[0].url",
                 "port 0 cannot be connected to", id="port 0"),
    pytest.param(webhook_config(entry(url="https://hooks.example.com:65536/")), "webhooks[0].url",
                 "is not a valid URL: Port out of range", id="port 65536"),
    pytest.param(webhook_config(entry(url="https://hooks.example.com:99999999/")), "webhooks[0].url",
                 "is not a valid URL: Port out of range", id="port far out of range"),
    pytest.param(webhook_config(entry(url="https://hooks.example.com:-1/")), "webhooks[0].url",
                 "is not a valid URL", id="port negative"),
    pytest.param(webhook_config(entry(url="https://hooks.example.com:https/")), "webhooks[0].url",
                 "is not a valid URL", id="port not a number"),
    pytest.param(webhook_config(entry(url="https://[::1/deployapi")), "webhooks[0].url", "is not a valid URL",
                 id="unclosed IPv6 bracket"),
    pytest.param(webhook_config(entry(url="https://hooks.example.com/" + "p" * 2023)), "webhooks[0].url",
                 "must be at most 2048 characters", id="url of 2049 characters"),
    pytest.param(webhook_config(entry(url="https://hooks.example.com/deploy api")), "webhooks[0].url",
                 "must not contain spaces or control characters", id="space"),
    pytest.param(webhook_config(entry(url="https://hooks.example.com/deployapi\n")), "webhooks[0].url",
                 "must not contain spaces or control characters", id="line feed"),
    pytest.param(webhook_config(entry(url="https://hooks.example.com/\r\nX-Injected: 1")), "webhooks[0].url",
                 "must not contain spaces or control characters", id="header injection"),
    pytest.param(webhook_config(entry(url="https://hooks.example.com/\tdeployapi")), "webhooks[0].url",
                 "must not contain spaces or control characters", id="tab"),
    pytest.param(webhook_config(entry(url="https://hooks.example.com/\u007f")), "webhooks[0].url",
                 "must not contain spaces or control characters", id="delete"),
    pytest.param(webhook_config(entry(url="https://hooks.example.com/\u0085")), "webhooks[0].url",
                 "must not contain spaces or control characters", id="a C1 control"),
    pytest.param(webhook_config(entry(url=" https://hooks.example.com/")), "webhooks[0].url",
                 "must not contain spaces or control characters", id="leading space"),
    pytest.param(webhook_config(entry(url=["https://hooks.example.com/"])), "webhooks[0].url",
                 "must be a string, not an array", id="url an array"),
    # secret
    pytest.param(webhook_config(entry(secret=SECRET, secret_env="AUDIT_SECRET")), "webhooks[0].secret_env",
                 "give secret or secret_env, not both", id="secret and secret_env"),
    pytest.param(webhook_config(entry(secret="MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")), "webhooks[0].secret",
                 "must start with 'whsec_'", id="secret without its prefix"),
    pytest.param(webhook_config(entry(secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa$w")), "webhooks[0].secret",
                 "is not whsec_ followed by standard base64", id="secret not base64"),
    pytest.param(webhook_config(entry(secret=SHORT_SECRET)), "webhooks[0].secret",
                 "must decode to 24 to 64 bytes, not 16", id="secret too short"),
    pytest.param(webhook_config(entry(secret=encoded(65))), "webhooks[0].secret",
                 "must decode to 24 to 64 bytes, not 65", id="secret too long"),
    pytest.param(webhook_config(entry(secret="")), "webhooks[0].secret", "must start with 'whsec_'",
                 id="secret empty"),
    pytest.param(webhook_config(entry(secret=24)), "webhooks[0].secret", "must be a string, not an integer",
                 id="secret an integer"),
    # secret_env
    pytest.param(webhook_config(entry(secret_env="UNSET_SECRET")), "webhooks[0].secret_env",
                 "the environment variable UNSET_SECRET is not set, or empty", id="secret_env unset"),
    pytest.param(webhook_config(entry(secret_env="EMPTY_SECRET")), "webhooks[0].secret_env",
                 "the environment variable EMPTY_SECRET is not set, or empty", id="secret_env empty"),
    pytest.param(webhook_config(entry(secret_env="audit_secret")), "webhooks[0].secret_env",
                 "the environment variable audit_secret is not set, or empty", id="secret_env of another case"),
    pytest.param(webhook_config(entry(secret_env="SHORT_SECRET")), "webhooks[0].secret_env",
                 "the environment variable SHORT_SECRET must decode to 24 to 64 bytes, not 16",
                 id="secret_env holding a short secret"),
    pytest.param(webhook_config(entry(secret_env="PLAIN_SECRET")), "webhooks[0].secret_env",
                 "the environment variable PLAIN_SECRET must start with 'whsec_'",
                 id="secret_env holding a plain password"),
    pytest.param(webhook_config(entry(secret_env="AUDIT-SECRET")), "webhooks[0].secret_env",
                 "must be the name of an environment variable", id="secret_env with a dash"),
    pytest.param(webhook_config(entry(secret_env="1SECRET")), "webhooks[0].secret_env",
                 "must be the name of an environment variable", id="secret_env starting with a digit"),
    pytest.param(webhook_config(entry(secret_env="")), "webhooks[0].secret_env",
                 "must be the name of an environment variable", id="secret_env empty name"),
    pytest.param(webhook_config(entry(secret_env="$AUDIT_SECRET")), "webhooks[0].secret_env",
                 "must be the name of an environment variable", id="secret_env written as shell expands it"),
    pytest.param(webhook_config(entry(secret_env="S" * 129)), "webhooks[0].secret_env",
                 "must be the name of an environment variable", id="secret_env name too long"),
    pytest.param(webhook_config(entry(secret_env=["AUDIT_SECRET"])), "webhooks[0].secret_env",
                 "must be a string, not an array", id="secret_env an array"),
    # format
    pytest.param(webhook_config(entry(format="xml")), "webhooks[0].format",
                 'must be one of cloudevents, json, slack, not "xml"', id="unknown format"),
    pytest.param(webhook_config(entry(format="JSON")), "webhooks[0].format",
                 'must be one of cloudevents, json, slack, not "JSON"', id="format in upper case"),
    pytest.param(webhook_config(entry(format="cdevents")), "webhooks[0].format",
                 "must be one of cloudevents, json, slack", id="format cdevents"),
    pytest.param(webhook_config(entry(format=1)), "webhooks[0].format", "must be a string, not an integer",
                 id="format an integer"),
    # filters
    pytest.param(webhook_config(entry(types=["deployed"])), "webhooks[0].types[0]",
                 "must be one of created, approved, rejected, started, succeeded, failed, rolled_back, cancelled, "
                 'not "deployed"', id="unknown type"),
    pytest.param(webhook_config(entry(types=["started", "Failed"])), "webhooks[0].types[1]",
                 'not "Failed"', id="type in upper case, second"),
    pytest.param(webhook_config(entry(types="started")), "webhooks[0].types", "must be an array, not a string",
                 id="types a string"),
    pytest.param(webhook_config(entry(types=[1])), "webhooks[0].types[0]", "must be a string, not an integer",
                 id="type an integer"),
    pytest.param(webhook_config(entry(types=[])), "webhooks[0].types",
                 "would match nothing; leave the key out to match everything", id="types empty"),
    pytest.param(webhook_config(entry(services=[])), "webhooks[0].services",
                 "would match nothing; leave the key out to match everything", id="services empty"),
    pytest.param(webhook_config(entry(environments=[])), "webhooks[0].environments",
                 "would match nothing; leave the key out to match everything", id="environments empty"),
    pytest.param(webhook_config(entry(services=["billing", "Billing API"])), "webhooks[0].services[1]",
                 'not a valid name', id="service not a slug"),
    pytest.param(webhook_config(entry(environments=["prod*"])), "webhooks[0].environments[0]",
                 'not a valid name', id="environment a pattern"),
    pytest.param(webhook_config(entry(services="billing")), "webhooks[0].services", "must be an array, not a string",
                 id="services a string"),
    pytest.param(webhook_config(entry()) + 'environments = [{ name = "prod" }]', "webhooks[0].environments[0]",
                 "must be a string, not a table", id="environment a table"),
    pytest.param(webhook_config(entry(services=[f"s{n}" for n in range(101)])), "webhooks[0].services",
                 "must have at most 100 entries, not 101", id="101 services"),
    # max_backoff_seconds
    pytest.param(webhook_config(entry(max_backoff_seconds=0)), "webhooks[0].max_backoff_seconds",
                 "must be between 1 and 86400, not 0", id="max_backoff_seconds 0"),
    pytest.param(webhook_config(entry(max_backoff_seconds=86_401)), "webhooks[0].max_backoff_seconds",
                 "must be between 1 and 86400, not 86401", id="max_backoff_seconds 86401"),
    pytest.param(webhook_config(entry(max_backoff_seconds=-5)), "webhooks[0].max_backoff_seconds",
                 "must be between 1 and 86400, not -5", id="max_backoff_seconds negative"),
    pytest.param(webhook_config(entry(max_backoff_seconds=True)), "webhooks[0].max_backoff_seconds",
                 "must be an integer, not a boolean", id="max_backoff_seconds true"),
    pytest.param(webhook_config(entry(max_backoff_seconds=1.5)), "webhooks[0].max_backoff_seconds",
                 "must be an integer, not a float", id="max_backoff_seconds 1.5"),
    pytest.param(webhook_config(entry(max_backoff_seconds=600.0)), "webhooks[0].max_backoff_seconds",
                 "must be an integer, not a float", id="max_backoff_seconds 600.0"),
    pytest.param(webhook_config(entry(max_backoff_seconds="600")), "webhooks[0].max_backoff_seconds",
                 "must be an integer, not a string", id="max_backoff_seconds a string"),
])
def test_a_webhook_breaking_a_rule_is_refused_naming_the_key_and_the_problem(refusal, tmp_path, text, key, problem):
    message = refusal(text, environ=ENVIRON)

    assert message.startswith(f"{tmp_path / 'deployapi.toml'}: {key}: ")
    assert problem in message


def test_a_refused_secret_env_names_the_variable_but_never_its_value(refusal):
    for variable in ("SHORT_SECRET", "PLAIN_SECRET"):
        message = refusal(webhook_config(entry(secret_env=variable)), environ=ENVIRON)

        assert variable in message
        assert ENVIRON[variable] not in message and ENVIRON[variable][6:14] not in message


def fragments(secret: str) -> list[str]:
    """The secret and the pieces of it a message cut short or quoted could still show."""
    body = secret.removeprefix("whsec_")
    return [secret, body, body[:12], body[-12:]]


# Entries with a secret that are refused for one reason or another; the secret is the one set in the entry.
@pytest.mark.parametrize("text, secret", [
    pytest.param(webhook_config(entry(url=None, secret=SECRET)), SECRET, id="no url"),
    pytest.param(webhook_config(entry(name="Audit Sink", secret=SECRET)), SECRET, id="bad name"),
    pytest.param(webhook_config(entry(secret=SECRET), entry(secret=OTHER_SECRET)), OTHER_SECRET,
                 id="duplicate name"),
    pytest.param(webhook_config(entry(url="https://hooks.example.com/a b", secret=SECRET)), SECRET, id="bad url"),
    pytest.param(webhook_config(entry(url="https://user:pw@hooks.example.com/", secret=SECRET)), SECRET,
                 id="url with a password"),
    pytest.param(webhook_config(entry(format="xml", secret=SECRET)), SECRET, id="unknown format"),
    pytest.param(webhook_config(entry(types=["deployed"], secret=SECRET)), SECRET, id="unknown type"),
    pytest.param(webhook_config(entry(services=[], secret=SECRET)), SECRET, id="empty services"),
    pytest.param(webhook_config(entry(max_backoff_seconds=0, secret=SECRET)), SECRET, id="bad max_backoff_seconds"),
    pytest.param(webhook_config(entry(token=1, secret=SECRET)), SECRET, id="unknown key"),
    pytest.param(webhook_config(entry(secret=SECRET, secret_env="AUDIT_SECRET")), SECRET, id="secret and secret_env"),
    pytest.param(webhook_config(entry(secret=SECRET[6:])), SECRET[6:], id="secret without its prefix"),
    pytest.param(webhook_config(entry(secret=SECRET + "!")), SECRET + "!", id="secret not base64"),
    pytest.param(webhook_config(entry(secret=SECRET[:-4])), SECRET[:-4], id="secret cut short"),
    pytest.param(webhook_config(entry(secret=encoded(65))), encoded(65), id="secret too long"),
    pytest.param(webhook_config(entry(secret=SECRET.upper())), SECRET.upper(), id="secret in upper case"),
])
def test_a_refused_webhook_never_shows_its_secret(refusal, text, secret):
    message = refusal(text, environ=ENVIRON)

    for fragment in fragments(secret):
        assert fragment not in message


@pytest.mark.parametrize("secret", [
    pytest.param(SECRET, id="a secret that is also a valid variable name"),
    pytest.param(OTHER_SECRET, id="a secret with base64 punctuation"),
])
def test_a_secret_written_as_secret_env_by_mistake_is_refused_without_showing_it(refusal, secret):
    message = refusal(webhook_config(entry(secret_env=secret)), environ={})

    assert ": webhooks[0].secret_env: " in message
    for fragment in fragments(secret):
        assert fragment not in message


@pytest.mark.parametrize("url", [
    pytest.param("https://hooks.example.com/d\u00e9ploiement", id="in the path"),
    pytest.param("https://hooks.example.com/deployapi?team=\u00e9quipe", id="in the query"),
    pytest.param("https://hooks.example.com/deploy\u00a0api", id="a no-break space"),
])
def test_a_url_that_cannot_be_sent_as_it_is_is_refused_at_start_up(refusal, url):
    message = refusal(f'[[webhooks]]\nname = "audit-sink"\nurl = "{url}"')

    assert ": webhooks[0].url: " in message


def test_a_loaded_webhook_never_shows_its_secret_in_its_repr(load):
    config = load(CONTRACT_WEBHOOK + webhook_config(entry(name="chat", secret_env="AUDIT_SECRET")), environ=ENVIRON)
    keys = [hook.secret for hook in config.webhooks]

    assert all(keys)
    for shown in (repr(config.webhooks[0]), repr(config.webhooks[1]), repr(config), str(config)):
        assert "audit-sink" in shown or "chat" in shown
        for key in keys:
            assert repr(key) not in shown and key.hex() not in shown
            assert base64.b64encode(key).decode()[:12] not in shown
