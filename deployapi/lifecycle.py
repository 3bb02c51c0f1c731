"""The deployment domain: statuses, the transition table, validation and events.

Pure functions over frozen dataclasses.  Nothing here knows about HTTP or SQL,
and "now" is always passed in, so every rule can be tested with plain values.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Container, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import identities
from .identities import IdentityRefused
from .policy import V1_RULES, EnvironmentPolicy, Freeze
from .timestamps import canonical_timestamp, format_timestamp

PENDING_APPROVAL = "pending_approval"
APPROVED = "approved"
REJECTED = "rejected"
STARTED = "started"
SUCCEEDED = "succeeded"
FAILED = "failed"
ROLLED_BACK = "rolled_back"
CANCELLED = "cancelled"

STATUSES = (PENDING_APPROVAL, APPROVED, REJECTED, STARTED, SUCCEEDED, FAILED, ROLLED_BACK, CANCELLED)

CREATED = "created"
EVENT_TYPES = (CREATED, APPROVED, REJECTED, STARTED, SUCCEEDED, FAILED, ROLLED_BACK, CANCELLED)


@dataclass(frozen=True, slots=True)
class Transition:
    """What one action does: the statuses it leaves from, where it goes, what it needs."""

    action: str
    from_statuses: frozenset[str]
    to_status: str
    event_type: str
    note_required: bool
    is_review: bool = False


# The lifecycle, in one place.  Every other rule (terminal statuses, which
# actions need a note, which set review metadata) is derived from this table.
TRANSITIONS: Mapping[str, Transition] = {
    t.action: t
    for t in (
        Transition("approve", frozenset({PENDING_APPROVAL}), APPROVED, APPROVED,
                   note_required=False, is_review=True),
        Transition("reject", frozenset({PENDING_APPROVAL}), REJECTED, REJECTED,
                   note_required=True, is_review=True),
        Transition("start", frozenset({APPROVED}), STARTED, STARTED, note_required=False),
        Transition("succeed", frozenset({STARTED}), SUCCEEDED, SUCCEEDED, note_required=False),
        Transition("fail", frozenset({STARTED}), FAILED, FAILED, note_required=True),
        Transition("rollback", frozenset({STARTED, SUCCEEDED, FAILED}), ROLLED_BACK, ROLLED_BACK,
                   note_required=True),
        Transition("cancel", frozenset({PENDING_APPROVAL, APPROVED}), CANCELLED, CANCELLED, note_required=True),
    )
}

ACTIONS = tuple(TRANSITIONS)

TERMINAL_STATUSES = frozenset(
    s for s in STATUSES if not any(s in t.from_statuses for t in TRANSITIONS.values())
)

# The groups the queries need, derived from the table above and bound into SQL
# from here (deployapi/repository, deployapi/integrity.py); a test holds
# schema.sql's own copies to these.
# Where a started deployment can end: succeeded, failed, rolled_back.
OUTCOME_STATUSES = tuple(s for s in STATUSES
                         if any(STARTED in t.from_statuses and t.to_status == s for t in TRANSITIONS.values()))
# Statuses in which a deployment changed what runs in its environment: started and its outcomes.
CHANGE_STATUSES = (STARTED, *OUTCOME_STATUSES)
# Approved but not finished: on its way to the environment or being deployed there.
IN_FLIGHT_STATUSES = (APPROVED, STARTED)
# The status of a deployment whose version is the one live in its environment (the newest such).
LIVE_STATUS = SUCCEEDED
# The events of a review, each of which sets reviewed_by and reviewed_at.
REVIEW_EVENT_TYPES = tuple(t.event_type for t in TRANSITIONS.values() if t.is_review)

DEFAULT_PRODUCTION_ENVIRONMENTS = ("production",)

SLUG_PATTERN = r"[a-z0-9][a-z0-9._-]{0,62}"
_SLUG = re.compile(SLUG_PATTERN)
MAX_VERSION = 128
MAX_NAME = identities.MAX_LENGTH  # requester and actor
MAX_WORK_REFS = 20
MAX_WORK_REF = 512
MAX_TEXT = 10_000  # risk, rollback_plan and note

# Where a deployment comes from, all optional (docs/api.md, "Pipeline metadata").
PIPELINE_FIELDS = ("commit_sha", "repository", "ref", "committed_at", "links", "labels")
CREATE_FIELDS = ("service", "environment", "version", "requester", "work_refs",
                 "rollback_plan", "risk", *PIPELINE_FIELDS)
ACTION_FIELDS = ("actor", "note")
# The break-glass flag of a start inside a freeze window (docs/api.md, "Review policies").
OVERRIDE_FREEZE = "override_freeze"
# The version a rollback went back to.
TO_VERSION = "to_version"
# The fields each action's body may have beyond ACTION_FIELDS.
ACTION_EXTRA_FIELDS: Mapping[str, tuple[str, ...]] = {"start": (OVERRIDE_FREEZE,), "rollback": (TO_VERSION,)}

_COMMIT_SHA = re.compile("[0-9a-f]{7,64}")
MAX_REPOSITORY = 512
MAX_REF = 256
MAX_LINKS = 20
MAX_URL = 2048
MAX_LABELS = 32
MAX_LABEL_VALUE = 256
LABEL_KEY_PATTERN = r"[a-z0-9][a-z0-9._/-]{0,62}"
_LABEL_KEY = re.compile(LABEL_KEY_PATTERN)


# --- errors ---------------------------------------------------------------


class DomainError(Exception):
    """Base of every rule violation this module reports."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    field: str
    message: str


class ValidationFailed(DomainError):
    """Input broke one or more rules; ``problems`` lists every one of them."""

    def __init__(self, problems: list[FieldProblem]):
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = tuple(problems)


class InvalidTransition(DomainError):
    """The action is not allowed from the deployment's current status."""

    def __init__(self, action: str, current_status: str):
        allowed = ", ".join(sorted(TRANSITIONS[action].from_statuses))
        super().__init__(
            f"cannot {action} a deployment that is {current_status}; "
            f"{action} is allowed only from: {allowed}"
        )
        self.action = action
        self.current_status = current_status


class ActorMismatch(DomainError):
    """The body names a different person than the authenticated caller."""

    def __init__(self, field: str, given: str, identity: str):
        super().__init__(
            f"{field} {given!r} is not the authenticated user {identity!r}; "
            f"omit {field} or send your own name"
        )
        self.field = field


class SelfApproval(DomainError):
    """The requester tried to approve their own deployment."""

    def __init__(self, actor: str):
        super().__init__(
            f"{actor!r} requested this deployment and cannot approve it; "
            "another person must review it"
        )
        self.actor = actor


class NotAnApprover(DomainError):
    """The environment's policy names who may approve, and the actor is not one of them."""

    def __init__(self, actor: str, environment: str):
        super().__init__(
            f"{actor!r} may not approve deployments to {environment!r}: the policy's approvers do not "
            "include them or a group of theirs (GET /policy lists the approvers)"
        )
        self.actor = actor


class DuplicateApproval(DomainError):
    """The actor has approved this deployment already; each approval must come from someone else."""

    def __init__(self, actor: str, required: int):
        super().__init__(
            f"{actor!r} has already approved this deployment; it needs {required} approvals "
            "from different people"
        )
        self.actor = actor


class DeployFreeze(DomainError):
    """A start inside a freeze window of the environment's policy, without the override."""

    def __init__(self, freeze: Freeze):
        reason = f" ({freeze.reason})" if freeze.reason else ""
        super().__init__(
            f"starts are frozen{reason} until {freeze.document()['ends_at']}; to start anyway, send "
            f'"{OVERRIDE_FREEZE}": true with a note saying why'
        )
        self.freeze = freeze


class EnvironmentBusy(DomainError):
    """A start on an exclusive environment while another deployment of the service is started there."""

    def __init__(self, service: str, environment: str, blocking_deployment_id: str):
        super().__init__(
            f"{environment!r} allows one started deployment of {service!r} at a time, and "
            f"{blocking_deployment_id} is started; it must succeed, fail or be rolled back first"
        )
        self.blocking_deployment_id = blocking_deployment_id


# --- values ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewDeployment:
    """A validated creation request."""

    service: str
    environment: str
    version: str
    requester: str
    work_refs: tuple[str, ...]
    rollback_plan: str
    risk: str | None
    commit_sha: str | None = None
    repository: str | None = None
    ref: str | None = None
    committed_at: str | None = None
    links: tuple[Link, ...] = ()
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """A validated lifecycle action: who does it, and why.

    ``groups`` are the caller's groups from the trusted groups header (empty
    without one); ``override_freeze`` is a start's break-glass flag.
    """

    action: str
    actor: str
    note: str | None
    override_freeze: bool = False
    groups: frozenset[str] = frozenset()
    to_version: str | None = None


@dataclass(frozen=True, slots=True)
class Link:
    """A link from a deployment to what it came from or concerns (a pipeline run, a dashboard)."""

    rel: str
    url: str

    def document(self) -> dict[str, str]:
        """The link as the API shows, stores and seals it."""
        return {"rel": self.rel, "url": self.url}


@dataclass(frozen=True, slots=True)
class Approval:
    """One approval of a deployment: who, why, when."""

    actor: str
    note: str | None
    created_at: str

    def document(self) -> dict[str, str | None]:
        """The approval as the API shows and stores it (the fields of its approved event)."""
        return {"actor": self.actor, "note": self.note, "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class Deployment:
    id: str
    service: str
    environment: str
    version: str
    requester: str
    work_refs: tuple[str, ...]
    risk: str | None
    rollback_plan: str
    status: str
    reviewed_by: str | None
    reviewed_at: str | None
    created_at: str
    updated_at: str
    # Fixed at creation by the environment's policy (1 before policies existed).
    required_approvals: int = 1
    approvals: tuple[Approval, ...] = ()
    # The digest of the policy in force at creation (policy.Policy.digest); None before policies existed.
    policy_digest: str | None = None
    commit_sha: str | None = None
    repository: str | None = None
    ref: str | None = None
    committed_at: str | None = None
    links: tuple[Link, ...] = ()
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # The version a rollback went back to, when it said.
    rolled_back_to: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One immutable entry of a deployment's history.

    ``id`` and ``hash`` are None until the repository has stored it (see chain.py).
    """

    id: int | None
    deployment_id: str
    sequence: int
    type: str
    actor: str
    note: str | None
    from_status: str | None
    to_status: str
    created_at: str
    hash: str | None = None
    # Facts particular to this event (an approval's count, an overridden freeze), or None.
    details: Mapping[str, Any] | None = None
    # The digest of the policy in force when the event was written; None before policies existed.
    policy_digest: str | None = None


def is_slug(value: str) -> bool:
    """Whether ``value`` is a valid service or environment name."""
    return _SLUG.fullmatch(value) is not None


def is_version(value: str) -> bool:
    """Whether ``value`` is a valid version: 1-128 characters, no whitespace or control characters."""
    return 1 <= len(value) <= MAX_VERSION and not _WHITESPACE_OR_CONTROL.search(value)


def is_label_key(value: str) -> bool:
    """Whether ``value`` may be the key of a label."""
    return _LABEL_KEY.fullmatch(value) is not None


def is_label_value(value: str) -> bool:
    """Whether ``value`` may be the value of a label: at most 256 characters, no control characters."""
    return len(value) <= MAX_LABEL_VALUE and not _CONTROL.search(value)


# --- creation -------------------------------------------------------------


def validate_new_deployment(
    payload: Mapping[str, Any],
    production_environments: Container[str] = DEFAULT_PRODUCTION_ENVIRONMENTS,
    *,
    identity: str | None = None,
    now: datetime | None = None,
) -> NewDeployment:
    """Check a decoded creation body against every rule at once.

    ``now`` bounds ``committed_at``: a commit cannot be later than its deployment.

    ``production_environments`` holds the environments whose deployments must
    state a risk: a collection of names, or a policy.Policy.

    ``identity`` is the authenticated caller, when the server trusts one: it
    becomes the requester, and the body may omit ``requester`` or repeat it.

    :raises ValidationFailed: listing every problem found.
    :raises ActorMismatch: the body names someone other than ``identity`` (checked after validation).
    """
    problems: list[FieldProblem] = []
    problems += _unknown_fields(payload, CREATE_FIELDS)

    service = _slug(payload, "service", problems)
    environment = _slug(payload, "environment", problems)
    version = _version(payload, problems)
    requester = _optional_name(payload, "requester", problems, optional=identity is not None)
    work_refs = _work_refs(payload, problems)
    rollback_plan = _text(payload, "rollback_plan", problems, required=True)
    in_production = environment is not None and environment in production_environments
    risk = _text(payload, "risk", problems, required=in_production,
                 required_because=f"{environment!r} is a production environment")
    pipeline = {
        "commit_sha": _commit_sha(payload, problems),
        "repository": _bounded(payload, "repository", MAX_REPOSITORY, _WHITESPACE_OR_CONTROL,
                               "must not contain whitespace or control characters", problems),
        "ref": _bounded(payload, "ref", MAX_REF, _CONTROL, "must not contain control characters", problems),
        "committed_at": _committed_at(payload, now, problems),
        "links": _links(payload, problems),
        "labels": _labels(payload, problems),
    }

    if problems:
        raise ValidationFailed(problems)
    if identity is not None:
        requester = _bind_identity("requester", requester, identity)
    return NewDeployment(
        service=service, environment=environment, version=version, requester=requester,
        work_refs=work_refs, rollback_plan=rollback_plan, risk=risk, **pipeline,
    )


def new_deployment(deployment_id: str, request: NewDeployment, now: datetime, *,
                   rules: EnvironmentPolicy = V1_RULES,
                   policy_digest: str | None = None) -> tuple[Deployment, Event]:
    """The deployment a validated request creates, and its ``created`` event.

    ``rules`` are the policy of the deployment's environment, whose digest is
    ``policy_digest``: they fix how many approvals it needs, and with none it
    is created already approved.
    """
    timestamp = format_timestamp(now)
    status = APPROVED if rules.required_approvals == 0 else PENDING_APPROVAL
    deployment = Deployment(
        id=deployment_id,
        service=request.service,
        environment=request.environment,
        version=request.version,
        requester=request.requester,
        work_refs=request.work_refs,
        risk=request.risk,
        rollback_plan=request.rollback_plan,
        status=status,
        reviewed_by=None,
        reviewed_at=None,
        created_at=timestamp,
        updated_at=timestamp,
        required_approvals=rules.required_approvals,
        policy_digest=policy_digest,
        commit_sha=request.commit_sha, repository=request.repository, ref=request.ref,
        committed_at=request.committed_at, links=request.links, labels=request.labels,
    )
    event = Event(
        id=None, deployment_id=deployment_id, sequence=1, type=CREATED,
        actor=request.requester, note=None, from_status=None, to_status=status,
        created_at=timestamp, policy_digest=policy_digest,
    )
    return deployment, event


# --- actions --------------------------------------------------------------


def validate_action(action: str, payload: Mapping[str, Any], *, identity: str | None = None,
                    groups: frozenset[str] = frozenset()) -> ActionRequest:
    """Check a decoded action body: ``actor`` always, ``note`` where the action needs one.

    ``identity`` is the authenticated caller, when the server trusts one: it
    becomes the actor, and the body may omit ``actor`` or repeat it.
    ``groups`` are that caller's groups (from the trusted groups header).
    A start may carry ``override_freeze``; when true, it needs a note.

    :raises ValidationFailed: listing every problem found.
    :raises ActorMismatch: the body names someone other than ``identity`` (checked after validation).
    :raises KeyError: for an action that is not in the transition table.
    """
    transition = TRANSITIONS[action]
    problems = _unknown_fields(payload, ACTION_FIELDS + ACTION_EXTRA_FIELDS.get(action, ()))
    actor = _optional_name(payload, "actor", problems, optional=identity is not None)
    override_freeze = _boolean(payload, OVERRIDE_FREEZE, problems)
    because = f"{action} needs a note saying why"
    if override_freeze and not transition.note_required:
        because = f"{OVERRIDE_FREEZE} needs a note saying why the freeze is broken"
    note = _text(payload, "note", problems, required=transition.note_required or override_freeze,
                 required_because=because)
    # A field the action does not take is reported once, as unknown.
    to_version = (_version(payload, problems, TO_VERSION, required=False)
                  if TO_VERSION in ACTION_EXTRA_FIELDS.get(action, ()) else None)
    if problems:
        raise ValidationFailed(problems)
    if identity is not None:
        actor = _bind_identity("actor", actor, identity)
    return ActionRequest(action=action, actor=actor, note=note, override_freeze=override_freeze, groups=groups,
                         to_version=to_version)


def trusted_identity(value: str | None) -> str:
    """An authenticated user name (from REMOTE_USER) in its canonical form (see identities.py).

    :raises IdentityRefused: when there is none, or it breaks the identity rules.
    """
    if not isinstance(value, str) or not value.strip():
        raise IdentityRefused("is missing or blank")
    return identities.canonical(value)


def clean_identity(value: str | None) -> str | None:
    """Like :func:`trusted_identity`, but None instead of an error."""
    try:
        return trusted_identity(value)
    except IdentityRefused:
        return None


def _optional_name(payload, field, problems, *, optional):
    if optional and payload.get(field) is None:
        return None
    return _name(payload, field, problems)


def _bind_identity(field: str, given: str | None, identity: str) -> str:
    if given is not None and not identities.same_person(given, identity):
        raise ActorMismatch(field, given, identity)
    return identity


def apply_action(
    deployment: Deployment, request: ActionRequest, sequence: int, now: datetime, *,
    rules: EnvironmentPolicy = V1_RULES, policy_digest: str | None = None,
    blocking_deployment_id: str | None = None,
) -> tuple[Deployment, Event]:
    """The deployment after the action, and the event that records it.

    ``sequence`` is the number the new event takes in the deployment's
    history.  ``rules`` are the policy of the deployment's environment now,
    whose digest is ``policy_digest``; the number of approvals needed was
    fixed at creation.  ``blocking_deployment_id`` is another deployment of the
    same service and environment that is started, if there is one (the
    repository looks it up only for a start on an exclusive environment).

    Checked in the contract's order: the transition, then the policy (freeze,
    exclusive start), then who acts (self-approval, approvers, a second
    approval by the same person).

    :raises InvalidTransition: the action is not allowed from the current status.
    :raises DeployFreeze: a start inside a freeze window, without the override.
    :raises EnvironmentBusy: a start while ``blocking_deployment_id`` is started on an exclusive environment.
    :raises SelfApproval: the requester is approving their own deployment.
    :raises NotAnApprover: the policy's approvers do not admit the actor.
    :raises DuplicateApproval: the actor has approved this deployment already.
    """
    transition = TRANSITIONS[request.action]
    if deployment.status not in transition.from_statuses:
        raise InvalidTransition(request.action, deployment.status)
    timestamp = format_timestamp(now)
    changes: dict[str, Any] = {"status": transition.to_status, "updated_at": timestamp}
    details: dict[str, Any] | None = None
    if request.action == "start":
        details = _start_details(deployment, request, now, rules, blocking_deployment_id)
    elif request.action == "approve":
        approvals = _approvals_after(deployment, request, rules, timestamp)
        changes["approvals"] = approvals
        details = {"approvals": len(approvals), "required_approvals": deployment.required_approvals}
        if len(approvals) < deployment.required_approvals:
            changes["status"] = deployment.status  # a partial approval: the review goes on
    elif request.action == "rollback" and request.to_version is not None:
        changes["rolled_back_to"] = request.to_version
        details = {TO_VERSION: request.to_version}
    if transition.is_review and changes["status"] != deployment.status:
        changes.update(reviewed_by=request.actor, reviewed_at=timestamp)
    event = Event(
        id=None, deployment_id=deployment.id, sequence=sequence, type=transition.event_type,
        actor=request.actor, note=request.note, from_status=deployment.status,
        to_status=changes["status"], created_at=timestamp, details=details, policy_digest=policy_digest,
    )
    return dataclasses.replace(deployment, **changes), event


def _start_details(deployment: Deployment, request: ActionRequest, now: datetime, rules: EnvironmentPolicy,
                   blocking_deployment_id: str | None) -> dict[str, Any] | None:
    """What a start records beyond the common fields: the freeze it overrode, if any."""
    freeze = rules.freeze_at(now)
    if freeze is not None and not request.override_freeze:
        raise DeployFreeze(freeze)
    if rules.exclusive and blocking_deployment_id is not None and blocking_deployment_id != deployment.id:
        raise EnvironmentBusy(deployment.service, deployment.environment, blocking_deployment_id)
    return {"freeze_overridden": freeze.document()} if freeze is not None else None


def _approvals_after(deployment: Deployment, request: ActionRequest, rules: EnvironmentPolicy,
                     timestamp: str) -> tuple[Approval, ...]:
    """The deployment's approvals with this one added, if the actor may give it."""
    if identities.same_person(request.actor, deployment.requester):
        raise SelfApproval(request.actor)
    if not rules.admits(request.actor, request.groups):
        raise NotAnApprover(request.actor, deployment.environment)
    if any(identities.same_person(request.actor, given.actor) for given in deployment.approvals):
        raise DuplicateApproval(request.actor, deployment.required_approvals)
    return (*deployment.approvals, Approval(request.actor, request.note, timestamp))


# --- field rules ------------------------------------------------------------
# Each takes the payload, the field name and the problem list; it appends what
# is wrong and returns the cleaned value (or None when there is none to return).


def _unknown_fields(payload: Mapping[str, Any], known: tuple[str, ...]) -> list[FieldProblem]:
    return [
        FieldProblem(str(name), f"unknown field; allowed fields are: {', '.join(known)}")
        for name in payload
        if name not in known
    ]


def _string(payload: Mapping[str, Any], field: str, problems: list[FieldProblem],
            *, required: bool, required_because: str = "") -> str | None:
    """The field's value if it is a string, recording a problem otherwise."""
    value = payload.get(field)
    if value is None:
        if required:
            problems.append(FieldProblem(field, _required_message(required_because)))
        return None
    if not isinstance(value, str):
        problems.append(FieldProblem(field, f"must be a string, not {_json_type(value)}"))
        return None
    if _has_surrogate(value):
        problems.append(FieldProblem(field, "must be valid Unicode (contains a lone surrogate)"))
        return None
    return value


def _slug(payload, field, problems):
    value = _string(payload, field, problems, required=True)
    if value is None:
        return None
    if not _SLUG.fullmatch(value):
        problems.append(FieldProblem(
            field,
            "must be 1-63 characters of lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        ))
        return None
    return value


def _version(payload, problems, field="version", *, required=True):
    return _bounded(payload, field, MAX_VERSION, _WHITESPACE_OR_CONTROL,
                    "must not contain whitespace or control characters", problems, required=required)


def _bounded(payload, field, maximum, refused, refused_message, problems, *, required=False):
    """A string of 1 to ``maximum`` characters in which ``refused`` (a pattern) finds nothing."""
    value = _string(payload, field, problems, required=required)
    if value is None:
        return None
    if not 1 <= len(value) <= maximum:
        problems.append(FieldProblem(field, f"must be 1-{maximum} characters"))
        return None
    if refused.search(value):
        problems.append(FieldProblem(field, refused_message))
        return None
    if not value.strip():
        problems.append(FieldProblem(field, "must not be blank"))
        return None
    return value


def _commit_sha(payload, problems):
    value = _string(payload, "commit_sha", problems, required=False)
    if value is not None and not _COMMIT_SHA.fullmatch(value):
        problems.append(FieldProblem("commit_sha", "must be 7-64 lowercase hexadecimal characters (a git commit id)"))
        return None
    return value


def _committed_at(payload, now, problems):
    value = _string(payload, "committed_at", problems, required=False)
    if value is None:
        return None
    try:
        stamp = canonical_timestamp(value)
    except ValueError as error:
        problems.append(FieldProblem("committed_at", str(error)))
        return None
    if now is not None and stamp > format_timestamp(now):
        problems.append(FieldProblem("committed_at", "must not be later than now (the deployment's creation)"))
        return None
    return stamp


def _links(payload, problems):
    value = payload.get("links")
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(FieldProblem("links", f"must be an array of objects, not {_json_type(value)}"))
        return ()
    if len(value) > MAX_LINKS:
        problems.append(FieldProblem("links", f"must have at most {MAX_LINKS} items"))
        return ()
    links: list[Link] = []
    for index, item in enumerate(value):
        field = f"links[{index}]"
        if not isinstance(item, dict):
            problems.append(FieldProblem(field, f"must be an object with rel and url, not {_json_type(item)}"))
            continue
        before = len(problems)
        problems += [FieldProblem(f"{field}.{p.field}", p.message) for p in _unknown_fields(item, ("rel", "url"))]
        sub: list[FieldProblem] = []
        rel = _slug(item, "rel", sub)
        url = _string(item, "url", sub, required=True)
        if url is not None and not _is_web_url(url):
            sub.append(FieldProblem("url", f"must be an http:// or https:// URL of at most {MAX_URL} characters, "
                                           "without whitespace or control characters"))
        problems += [FieldProblem(f"{field}.{p.field}", p.message) for p in sub]
        if len(problems) == before:
            link = Link(rel, url)
            if link in links:
                problems.append(FieldProblem(field, f"duplicates links[{links.index(link)}]"))
            links.append(link)
    return tuple(links)


def _is_web_url(url: str) -> bool:
    if len(url) > MAX_URL or _WHITESPACE_OR_CONTROL.search(url):
        return False
    scheme, _, rest = url.partition("://")
    return scheme.lower() in ("http", "https") and bool(rest.split("/", 1)[0])


def _labels(payload, problems):
    value = payload.get("labels")
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(FieldProblem("labels", f"must be an object of strings, not {_json_type(value)}"))
        return {}
    if len(value) > MAX_LABELS:
        problems.append(FieldProblem("labels", f"must have at most {MAX_LABELS} entries"))
        return {}
    labels: dict[str, str] = {}
    for key, text in value.items():
        field = f"labels.{key}"
        if not _LABEL_KEY.fullmatch(key):
            problems.append(FieldProblem(field, "the key must be 1-63 characters of lowercase letters, digits, "
                                                "'.', '_', '/' or '-', starting with a letter or digit"))
        elif not isinstance(text, str):
            problems.append(FieldProblem(field, f"must be a string, not {_json_type(text)}"))
        elif _has_surrogate(text):
            problems.append(FieldProblem(field, "must be valid Unicode (contains a lone surrogate)"))
        elif len(text) > MAX_LABEL_VALUE:
            problems.append(FieldProblem(field, f"must be at most {MAX_LABEL_VALUE} characters"))
        elif _CONTROL.search(text):
            problems.append(FieldProblem(field, "must not contain control characters"))
        else:
            labels[key] = text
    return labels


def _name(payload, field, problems):
    """A person or system name (requester, actor) in its canonical form (identities.py)."""
    value = _string(payload, field, problems, required=True)
    if value is None:
        return None
    try:
        return identities.canonical(value)
    except IdentityRefused as refusal:
        problems.append(FieldProblem(field, str(refusal)))
        return None


def _work_refs(payload, problems):
    value = payload.get("work_refs")
    if value is None:
        problems.append(FieldProblem("work_refs", _required_message()))
        return None
    if not isinstance(value, list):
        problems.append(FieldProblem("work_refs", f"must be an array of strings, not {_json_type(value)}"))
        return None
    if not 1 <= len(value) <= MAX_WORK_REFS:
        problems.append(FieldProblem("work_refs", f"must have 1-{MAX_WORK_REFS} items"))
        return None
    refs: list[str] = []
    ok = True
    for index, item in enumerate(value):
        field = f"work_refs[{index}]"
        if not isinstance(item, str):
            problems.append(FieldProblem(field, f"must be a string, not {_json_type(item)}"))
            ok = False
            continue
        ref = item.strip()
        if _has_surrogate(ref):
            problems.append(FieldProblem(field, "must be valid Unicode (contains a lone surrogate)"))
        elif not ref:
            problems.append(FieldProblem(field, "must not be blank"))
        elif len(ref) > MAX_WORK_REF:
            problems.append(FieldProblem(field, f"must be at most {MAX_WORK_REF} characters"))
        elif _CONTROL.search(ref):
            problems.append(FieldProblem(field, "must not contain control characters"))
        elif ref in refs:
            problems.append(FieldProblem(field, f"duplicates work_refs[{refs.index(ref)}]"))
        else:
            refs.append(ref)
            continue
        ok = False
    return tuple(refs) if ok else None


def _boolean(payload, field, problems):
    value = payload.get(field)
    if value is None:  # absent or null, as for the other optional fields
        return False
    if not isinstance(value, bool):
        problems.append(FieldProblem(field, f"must be a boolean, not {_json_type(value)}"))
        return False
    return value


def _text(payload, field, problems, *, required, required_because=""):
    """Free text (rollback plan, risk, note): line breaks and tabs allowed, other controls not."""
    value = _string(payload, field, problems, required=required, required_because=required_because)
    if value is None:
        return None
    if required and not value.strip():
        reason = f": {required_because}" if required_because else ""
        problems.append(FieldProblem(field, "must not be blank" + reason))
        return None
    if len(value) > MAX_TEXT:
        problems.append(FieldProblem(field, f"must be at most {MAX_TEXT} characters"))
        return None
    if _CONTROL_BUT_BREAKS.search(value):
        problems.append(FieldProblem(field, "must not contain control characters other than tab and line breaks"))
        return None
    return value


def _required_message(because: str = "") -> str:
    return "is required" + (f": {because}" if because else "")


# Character classes as regular expressions, not per-character Python loops: a
# 10,000-character rollback plan is one C-level scan (the loops were a third of
# the CPU of a create).  Control characters are Unicode category Cc, exactly
# U+0000-U+001F and U+007F-U+009F; \s is str.isspace().
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_BREAKS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # tab, LF and CR allowed
_WHITESPACE_OR_CONTROL = re.compile("[\\s\x00-\x1f\x7f-\x9f]")
# json.loads accepts "\ud800"; such a string cannot be stored as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(value: str) -> bool:
    return _SURROGATE.search(value) is not None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    return "null"
