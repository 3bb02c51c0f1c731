"""The configuration file (``--config FILE``): TOML in, a validated :class:`policy.Policy` out.

This module owns the file's shape: which keys exist, their types and ranges,
how ``[defaults]`` and each ``[environments.NAME]`` table combine, and the two
rules that depend on how the server is started (who decides the production set,
and whether groups can be told at all).  It reads nothing but the file and
knows nothing of HTTP or SQL.

Every refusal is one :class:`ConfigFileError` whose message names the file,
the key (a dotted path such as ``environments.production.freeze[1].timezone``)
and the problem, and stops at the first problem: the server prints it and exits.
Values are echoed cut short and escaped, so a long value never floods the
message and an invisible character cannot disguise it.

``[[webhooks]]`` entries become :class:`webhooks.Webhook` values.  A secret is
never part of a message: a refused one is named by its key only, and
``secret_env`` is read from the environment here, at start-up, so that a
missing variable stops the server instead of its first delivery.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import identities, lifecycle
from .identities import IdentityRefused
from .policy import (
    GROUP_PREFIX,
    MAX_REQUIRED_APPROVALS,
    WEEKDAYS,
    EnvironmentPolicy,
    FixedWindow,
    FreezeWindow,
    Policy,
    WeeklyWindow,
)
from .webhooks import DEFAULT_FORMAT, DEFAULT_MAX_BACKOFF_SECONDS, FORMATS, SECRET_PREFIX, Webhook, decode_secret

MAPPING_SOURCE = "<config>"
MAX_APPROVERS = 100
MAX_WINDOWS = 50
MAX_REASON_LENGTH = 200
_MAX_SHOWN = 80

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# RFC 3339 date-time; the offset group is optional only so that a missing one gets its own message.
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?")
_WEEKLY = re.compile(rf"(?P<day>{'|'.join(WEEKDAYS)}) (?P<hour>[01]\d|2[0-3]):(?P<minute>[0-5]\d)")
# The shape of every IANA zone name.  It keeps out path tricks ("../", "/etc/...")
# and the zone directory's other files that ZoneInfo would load: "localtime"
# (a different zone on every machine), "posixrules", the "posix/" and "right/" copies.
_ZONE_NAME = re.compile(r"[A-Z][A-Za-z0-9_+-]*(?:/[A-Z][A-Za-z0-9_+-]*)*")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class ConfigFileError(ValueError):
    """The configuration file cannot be used; the message names the file, the key and the problem."""


@dataclass(frozen=True)
class Config:
    policy: Policy
    source: str  # the file's path as given, or "<config>" for a mapping
    webhooks: tuple[Webhook, ...] = ()


class _Refused(Exception):
    """One problem at one key; load_config adds the source."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.key = key
        self.problem = problem


def load_config(source: str | os.PathLike | Mapping[str, Any], *,
                production_environments: Collection[str] | None = None,
                groups_available: bool = False, environ: Mapping[str, str] = os.environ) -> Config:
    """Read and validate a configuration file (a path) or an already-parsed document (a mapping).

    ``production_environments`` is the v1 setting, None when the operator gave none;
    ``groups_available`` says whether callers' groups are known (trusted identity with a groups header);
    ``environ`` is where ``secret_env`` variables are looked up.

    :raises ConfigFileError: the file is unreadable, not TOML, or breaks a rule; the first problem only.
    """
    if isinstance(source, Mapping):
        name, document = MAPPING_SOURCE, source
    else:
        name = os.fsdecode(source)
        document = read_document(name)
    try:
        policy = _policy(document, production_environments, groups_available)
        hooks = _webhooks(document["webhooks"], "webhooks", environ) if "webhooks" in document else ()
    except _Refused as refused:
        raise ConfigFileError(f"{name}: {refused.key}: {refused.problem}") from None
    return Config(policy=policy, source=name, webhooks=hooks)


def read_document(name: str) -> Mapping[str, Any]:
    """The file's TOML document, not yet checked (:func:`load_config` checks it).

    :raises ConfigFileError: the file is unreadable or not TOML.
    """
    try:
        data = Path(name).read_bytes()
    except (OSError, ValueError) as error:  # ValueError: a path with a NUL character
        reason = getattr(error, "strerror", None) or error
        raise ConfigFileError(f"{name}: cannot read the file: {reason}") from None
    try:
        # utf-8-sig: a byte order mark (which some editors write) is not the file's content.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ConfigFileError(f"{name}: not valid TOML: not UTF-8 text (at line {line}, column {column})") from None
    try:
        return tomllib.loads(text)
    except ValueError as error:  # TOMLDecodeError, or an integer too long for int() (sys.get_int_max_str_digits)
        raise ConfigFileError(f"{name}: not valid TOML: {error}") from None


# --- the document ------------------------------------------------------------------------


def _policy(document: Mapping[str, Any], production_environments: Collection[str] | None,
            groups_available: bool) -> Policy:
    defaults: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {}  # environment name -> its own validated keys
    for key, value in document.items():
        path = _child("", key)
        if key == "defaults":
            defaults = _policy_table(value, path)
        elif key == "environments":
            tables = _environments(value, path)
        elif key != "webhooks":  # read by _webhooks
            raise _Refused(path, "unknown key; allowed keys are: defaults, environments, webhooks")

    tables = _apply_production(defaults, tables, production_environments)
    policy = Policy(defaults=EnvironmentPolicy(**defaults),
                    environments={name: EnvironmentPolicy(**{**defaults, **own}) for name, own in tables.items()})
    _check_reachable(policy)
    if not groups_available:
        _refuse_groups(defaults, tables)
    return policy


def _environments(value: Any, path: str) -> dict[str, dict[str, Any]]:
    tables = {}
    for name, table in _table(value, path).items():
        key = _child(path, name)
        if not isinstance(name, str) or not lifecycle.is_slug(name):
            raise _Refused(key, f"not a valid environment name (^{lifecycle.SLUG_PATTERN}$)")
        tables[name] = _policy_table(table, key)
    return tables


def _apply_production(defaults: dict[str, Any], tables: dict[str, dict[str, Any]],
                      production_environments: Collection[str] | None) -> dict[str, dict[str, Any]]:
    """Who decides the production set: the file when any table sets ``production``, else the v1 setting."""
    setting = next((path for path, table in _tables_in_order(defaults, tables) if "production" in table), None)
    if setting is not None:
        if production_environments is not None:
            raise _Refused(_child(setting, "production"), (
                "the file sets production, so --production-environments, DEPLOYAPI_PRODUCTION_ENVIRONMENTS "
                "and create_app(production_environments=...) must not be given too"))
        return tables
    if isinstance(production_environments, str):
        # A string is a collection of characters: "prod" would name "p", "r", "o" and "d".
        raise TypeError("production_environments must be a collection of names, not a string")
    names = lifecycle.DEFAULT_PRODUCTION_ENVIRONMENTS if production_environments is None else production_environments
    resolved = dict(tables)
    for name in names:
        if not lifecycle.is_slug(name):
            raise _Refused("production_environments", f"{_shown(name)} is not a valid environment name")
        resolved[name] = {**resolved.get(name, {}), "production": True}
    return resolved


def _check_reachable(policy: Policy) -> None:
    # Approvers that are all identities admit a known number of people; asking
    # for more approvals than that would leave every deployment pending forever.
    paths = [("defaults", policy.defaults), *((_child("environments", n), p) for n, p in policy.environments.items())]
    for path, rules in paths:
        if rules.approvers is not None and not rules.names_groups and rules.required_approvals > len(rules.approvers):
            raise _Refused(path, f"required_approvals is {rules.required_approvals} but approvers admit only "
                                 f"{len(rules.approvers)}, so no deployment could ever be approved")


def _refuse_groups(defaults: dict[str, Any], tables: dict[str, dict[str, Any]]) -> None:
    for path, table in _tables_in_order(defaults, tables):
        if any(_is_group(entry) for entry in table.get("approvers") or ()):
            raise _Refused(_child(path, "approvers"), (
                "names a group, which needs trusted identity with a groups header "
                "(--trust-remote-user and --remote-groups-header)"))


def _tables_in_order(defaults: dict[str, Any], tables: dict[str, dict[str, Any]]):
    yield "defaults", defaults
    for name, table in tables.items():
        yield _child("environments", name), table


# --- one policy table ----------------------------------------------------------------------


def _policy_table(value: Any, path: str) -> dict[str, Any]:
    """The EnvironmentPolicy fields that a ``[defaults]`` or ``[environments.NAME]`` table sets."""
    fields = {}
    for key, item in _table(value, path).items():
        rule = _POLICY_KEYS.get(key)
        if rule is None:
            raise _Refused(_child(path, key), f"unknown key; allowed keys are: {', '.join(_POLICY_KEYS)}")
        fields[key] = rule(item, _child(path, key))
    return fields


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _Refused(path, f"must be a boolean, not {_type_name(value)}")
    return value


def _required_approvals(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):  # bool is an int subclass: true is not 1 approval
        raise _Refused(path, f"must be an integer, not {_type_name(value)}")
    if not 0 <= value <= MAX_REQUIRED_APPROVALS:
        raise _Refused(path, f"must be between 0 and {MAX_REQUIRED_APPROVALS}, not {_shown(value)}")
    return value


def _approvers(value: Any, path: str) -> tuple[str, ...]:
    entries = _array(value, path, MAX_APPROVERS)
    if not entries:
        raise _Refused(path, "would admit no one; leave approvers out to admit anyone but the requester")
    seen: dict[str, int] = {}  # identities.key -> index of the first entry with it
    canonical = []
    for index, entry in enumerate(entries):
        key = f"{path}[{index}]"
        approver = _approver(entry, key)
        first = seen.setdefault(identities.key(approver), index)
        if first != index:
            raise _Refused(key, f"names the same {'group' if _is_group(approver) else 'person'} "
                                f"as {path.rpartition('.')[2]}[{first}]")
        canonical.append(approver)
    # One order for one set, so that the same approvers always give the same digest.
    return tuple(sorted(canonical, key=lambda entry: (not _is_group(entry), identities.key(entry), entry)))


def _approver(entry: Any, path: str) -> str:
    """The canonical form of one approvers entry: an identity, or ``group:NAME``."""
    if not isinstance(entry, str):
        raise _Refused(path, f"must be a string, not {_type_name(entry)}")
    try:
        name = identities.canonical(entry)
    except IdentityRefused as refused:
        raise _Refused(path, str(refused)) from None
    # The prefix compares as identities do: " Group:sre" must not become a person called that.
    if not name.casefold().startswith(GROUP_PREFIX):
        return name
    try:
        group = identities.canonical(name[len(GROUP_PREFIX):])
    except IdentityRefused as refused:
        raise _Refused(path, f"the group name {refused}") from None
    if "," in group:
        # The groups header is comma-separated: such a group could never match.
        raise _Refused(path, "the group name must not contain a comma")
    return GROUP_PREFIX + group


def _is_group(entry: str) -> bool:
    return entry.startswith(GROUP_PREFIX)


def _freeze(value: Any, path: str) -> tuple[FreezeWindow, ...]:
    return tuple(_window(item, f"{path}[{index}]") for index, item in enumerate(_array(value, path, MAX_WINDOWS)))


_POLICY_KEYS: dict[str, Callable[[Any, str], Any]] = {
    "production": _boolean,
    "required_approvals": _required_approvals,
    "approvers": _approvers,
    "exclusive": _boolean,
    "freeze": _freeze,
}


# --- freeze windows --------------------------------------------------------------------------

_FIXED_KEYS = ("start", "end")
_WEEKLY_KEYS = ("weekly_start", "weekly_end", "timezone")
_WINDOW_KEYS_TEXT = "start, end, reason (a fixed window) or weekly_start, weekly_end, timezone, reason (a weekly one)"


def _window(value: Any, path: str) -> FreezeWindow:
    window = _table(value, path)
    for key in window:
        if key not in (*_FIXED_KEYS, *_WEEKLY_KEYS, "reason"):
            raise _Refused(_child(path, key), f"unknown key; allowed keys are: {_WINDOW_KEYS_TEXT}")
    fixed = [key for key in _FIXED_KEYS if key in window]
    weekly = [key for key in _WEEKLY_KEYS if key in window]
    if fixed and weekly:
        raise _Refused(path, f"mixes a fixed window ({', '.join(fixed)}) with a weekly one ({', '.join(weekly)}); "
                             "use start and end, or weekly_start, weekly_end and timezone")
    if not fixed and not weekly:
        raise _Refused(path, "needs start and end, or weekly_start, weekly_end and timezone")
    needed = _FIXED_KEYS if fixed else _WEEKLY_KEYS
    for key in needed:
        if key not in window:
            raise _Refused(_child(path, key), f"missing; a {'fixed' if fixed else 'weekly'} window needs "
                                              f"{', '.join(needed)}")
    reason = _reason(window["reason"], _child(path, "reason")) if "reason" in window else None
    return _fixed_window(window, path, reason) if fixed else _weekly_window(window, path, reason)


def _fixed_window(window: Mapping[str, Any], path: str, reason: str | None) -> FixedWindow:
    start = _instant(window["start"], _child(path, "start"))
    end = _instant(window["end"], _child(path, "end"))
    if not start < end:
        raise _Refused(_child(path, "end"), "must be later than start")
    return FixedWindow(start, end, reason)


def _instant(value: Any, path: str) -> datetime:
    """An aware datetime in UTC from a TOML offset date-time or an RFC 3339 string."""
    if isinstance(value, str):
        match = _DATE_TIME.fullmatch(value)
        if match is None:
            raise _Refused(path, f"must be an RFC 3339 date-time such as \"2026-12-24T00:00:00Z\", not {_shown(value)}")
        if match["offset"] is None:
            raise _Refused(path, "needs a UTC offset or Z: without one the instant depends on the server's zone")
        try:
            value = datetime.fromisoformat(re.sub("[Zz]$", "+00:00", value))
        except ValueError as error:  # a well-shaped impossible date: 2026-02-30, 25:00
            raise _Refused(path, f"is not a valid date-time ({error})") from None
    elif isinstance(value, datetime) and value.tzinfo is None:
        raise _Refused(path, "needs a UTC offset or Z: a local date-time depends on the server's zone")
    elif not isinstance(value, datetime):
        raise _Refused(path, f"must be a date-time with a UTC offset or Z, not {_type_name(value)}")
    return value.astimezone(timezone.utc)


def _weekly_window(window: Mapping[str, Any], path: str, reason: str | None) -> WeeklyWindow:
    start_day, start_time = _weekly_time(window["weekly_start"], _child(path, "weekly_start"))
    end_day, end_time = _weekly_time(window["weekly_end"], _child(path, "weekly_end"))
    if (start_day, start_time) == (end_day, end_time):
        raise _Refused(_child(path, "weekly_end"), "must differ from weekly_start")
    zone = _zone(window["timezone"], _child(path, "timezone"))
    return WeeklyWindow(start_day, start_time, end_day, end_time, zone, reason)


def _weekly_time(value: Any, path: str) -> tuple[int, time]:
    if not isinstance(value, str):
        raise _Refused(path, f"must be a string, not {_type_name(value)}")
    match = _WEEKLY.fullmatch(value)
    if match is None:
        raise _Refused(path, f"must be \"ddd HH:MM\" (mon ... sun, 24-hour clock, such as \"fri 18:00\"), "
                             f"not {_shown(value)}")
    return WEEKDAYS.index(match["day"]), time(int(match["hour"]), int(match["minute"]))


def _zone(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _Refused(path, f"must be a string, not {_type_name(value)}")
    if not _ZONE_NAME.fullmatch(value):
        raise _Refused(path, f"must be an IANA time zone name such as \"Europe/Berlin\", not {_shown(value)}")
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _Refused(path, f"unknown time zone {_shown(value)}") from None
    return value


def _reason(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _Refused(path, f"must be a string, not {_type_name(value)}")
    reason = value.strip()
    if not reason:
        raise _Refused(path, "must not be blank")
    if len(reason) > MAX_REASON_LENGTH:
        raise _Refused(path, f"must be at most {MAX_REASON_LENGTH} characters")
    if _CONTROL.search(reason):
        raise _Refused(path, "must not contain control characters")
    return reason


# --- webhooks ---------------------------------------------------------------------------------

MAX_WEBHOOKS = 50
MAX_URL_LENGTH = 2048
MAX_BACKOFF_LIMIT = 86_400
_WEBHOOK_KEYS = ("name", "url", "secret", "secret_env", "format", "types", "services", "environments",
                 "max_backoff_seconds")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f]")


def _webhooks(value: Any, path: str, environ: Mapping[str, str]) -> tuple[Webhook, ...]:
    if isinstance(value, Mapping):
        raise _Refused(path, "must be an array of tables: write [[webhooks]] (two brackets) above each one")
    entries = _array(value, path, MAX_WEBHOOKS)
    hooks: list[Webhook] = []
    for index, entry in enumerate(entries):
        hook = _webhook(entry, f"{path}[{index}]", environ)
        earlier = next((i for i, other in enumerate(hooks) if other.name == hook.name), None)
        if earlier is not None:
            raise _Refused(f"{path}[{index}].name", f"{_shown(hook.name)} is already the name of {path}[{earlier}]; "
                                                    "each webhook keeps its own position under its name")
        hooks.append(hook)
    return tuple(hooks)


def _webhook(value: Any, path: str, environ: Mapping[str, str]) -> Webhook:
    table = _table(value, path)
    for key in table:
        if key not in _WEBHOOK_KEYS:
            raise _Refused(_child(path, key), f"unknown key; allowed keys are: {', '.join(_WEBHOOK_KEYS)}")
    for key in ("name", "url"):
        if key not in table:
            raise _Refused(_child(path, key), "missing; every webhook needs a name and a url")
    if "secret" in table and "secret_env" in table:
        raise _Refused(_child(path, "secret_env"), "give secret or secret_env, not both")
    name = _string(table["name"], _child(path, "name"))
    if not lifecycle.is_slug(name):
        raise _Refused(_child(path, "name"), f"must be a slug (^{lifecycle.SLUG_PATTERN}$), not {_shown(name)}")
    secret = None
    if "secret" in table:
        secret = _secret(table["secret"], _child(path, "secret"))
    elif "secret_env" in table:
        secret = _secret_from_environment(table["secret_env"], _child(path, "secret_env"), environ)
    fields: dict[str, Any] = {
        "name": name,
        "url": _url(table["url"], _child(path, "url")),
        "secret": secret,
        "format": _choice(table.get("format", DEFAULT_FORMAT), _child(path, "format"), FORMATS),
        "max_backoff_seconds": _whole(table.get("max_backoff_seconds", DEFAULT_MAX_BACKOFF_SECONDS),
                                      _child(path, "max_backoff_seconds"), 1, MAX_BACKOFF_LIMIT),
    }
    if "types" in table:
        fields["types"] = _names(table["types"], _child(path, "types"), lambda item, key: _choice(
            item, key, lifecycle.EVENT_TYPES))
    for key in ("services", "environments"):
        if key in table:
            fields[key] = _names(table[key], _child(path, key), _slug)
    return Webhook(**fields)


def _url(value: Any, path: str) -> str:
    url = _string(value, path)
    if len(url) > MAX_URL_LENGTH:
        raise _Refused(path, f"must be at most {MAX_URL_LENGTH} characters")
    if _URL_UNSAFE.search(url):
        raise _Refused(path, "must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:  # a port out of range or not a number, a bracketed host that is no address
        raise _Refused(path, f"is not a valid URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise _Refused(path, "must be an http:// or https:// URL")
    if not parts.hostname:
        raise _Refused(path, "must name a host")
    if "@" in parts.netloc:
        # Nothing would send them, and GET /webhooks must not show them: a credential belongs in the secret.
        raise _Refused(path, "must not hold a user name or password")
    if not (parts.path + parts.query).isascii():
        # http.client sends the request line as ASCII: such a URL would fail at every attempt.
        raise _Refused(path, "has characters outside ASCII in its path or query: percent-encode them "
                             "(%C3%A9 for \u00e9)")
    if parts.fragment or url.endswith("#"):
        raise _Refused(path, "must not have a fragment (#...), which is never sent")
    if port == 0:
        raise _Refused(path, "port 0 cannot be connected to")
    return url


def _secret(value: Any, path: str) -> bytes:
    # Never echoed: a message about a secret names its key and the rule only.
    if not isinstance(value, str):
        raise _Refused(path, f"must be a string, not {_type_name(value)}")
    try:
        return decode_secret(value)
    except ValueError as error:
        raise _Refused(path, str(error)) from None


def _secret_from_environment(value: Any, path: str, environ: Mapping[str, str]) -> bytes:
    variable = _string(value, path)
    # Neither is echoed: what is written here by mistake may be the secret itself.
    if variable.startswith(SECRET_PREFIX):
        raise _Refused(path, "holds a secret, not the name of an environment variable: write the secret as "
                             "secret = \"whsec_...\", or put it in a variable and name that here")
    if not _VARIABLE_NAME.fullmatch(variable):
        raise _Refused(path, "must be the name of an environment variable (letters, digits and _, not starting "
                             "with a digit)")
    secret = environ.get(variable)
    if not secret:
        raise _Refused(path, f"the environment variable {variable} is not set, or empty")
    try:
        return decode_secret(secret)
    except ValueError as error:
        raise _Refused(path, f"the environment variable {variable} {error}") from None


def _names(value: Any, path: str, item_rule: Callable[[Any, str], str]) -> frozenset[str]:
    items = _array(value, path, 100)
    if not items:
        raise _Refused(path, "would match nothing; leave the key out to match everything")
    names = [item_rule(item, f"{path}[{index}]") for index, item in enumerate(items)]
    return frozenset(names)


def _slug(value: Any, path: str) -> str:
    name = _string(value, path)
    if not lifecycle.is_slug(name):
        raise _Refused(path, f"not a valid name (^{lifecycle.SLUG_PATTERN}$): {_shown(name)}")
    return name


def _choice(value: Any, path: str, choices: Collection[str]) -> str:
    text = _string(value, path)
    if text not in choices:
        raise _Refused(path, f"must be one of {', '.join(choices)}, not {_shown(text)}")
    return text


def _whole(value: Any, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refused(path, f"must be an integer, not {_type_name(value)}")
    if not low <= value <= high:
        raise _Refused(path, f"must be between {low} and {high}, not {_shown(value)}")
    return value


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _Refused(path, f"must be a string, not {_type_name(value)}")
    return value


# --- shapes and messages --------------------------------------------------------------------


def _table(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Refused(path, f"must be a table, not {_type_name(value)}")
    return value


def _array(value: Any, path: str, limit: int) -> list[Any] | tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise _Refused(path, f"must be an array, not {_type_name(value)}")
    if len(value) > limit:
        raise _Refused(path, f"must have at most {limit} entries, not {len(value)}")
    return value


def _type_name(value: Any) -> str:
    """The TOML name of a value's type, with its article."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, datetime):
        return "an offset date-time" if value.tzinfo is not None else "a local date-time"
    names = [(float, "a float"), (str, "a string"), (date, "a local date"), (time, "a local time"),
             (list, "an array"), (tuple, "an array"), (Mapping, "a table")]
    return next((name for kind, name in names if isinstance(value, kind)),
                "null" if value is None else f"a {type(value).__name__}")


def _child(path: str, key: object) -> str:
    """The dotted path of ``key`` in the table at ``path``, quoted as TOML would need it."""
    name = key if isinstance(key, str) else str(key)
    segment = name if _BARE_KEY.fullmatch(name) and len(name) <= _MAX_SHOWN else _shown(name)
    return f"{path}.{segment}" if path else segment


def _shown(value: Any) -> str:
    """A value for a message: cut to a readable length, quoted, and escaped if it holds invisible characters."""
    try:
        text = value if isinstance(value, str) else str(value)
    except ValueError:  # an integer too long for str() (sys.get_int_max_str_digits)
        return "(a value too long to show)"
    cut = text[:_MAX_SHOWN]
    # Non-printable characters (controls, bidi overrides, zero-width spaces) could
    # rewrite or hide what the operator reads: then everything non-ASCII is escaped.
    shown = json.dumps(cut, ensure_ascii=not cut.isprintable()) if isinstance(value, str) else cut
    return shown + ("..." if len(text) > _MAX_SHOWN else "")

