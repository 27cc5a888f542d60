"""IAM as AWS evaluates it, for the embedded AWS (the `local` environment): who may do what in the add-users workflow.

moto 5.2.5 has an IAM evaluator (`moto.iam.access_control`), but it is not right for this workflow: it judges every
non-S3 call against the resource `*`, evaluates conditions only for trust policies (and treats unknown operators as
matching), has no resource policies beyond a bucket policy without request context, and is off in server mode
unless every request, the deployer's included, is signed by a known IAM key. So the evaluation itself is here, and
dmp_deploy/local/moto_compat.py (section "issue 11: IAM enforced") hooks it in where AWS evaluates:

  - every request signed with an assumed role's (or an IAM user's) access key: the caller's identity policies
    together with the resource's policy (S3 bucket policy, KMS key policy), with AWS's same-account rules; S3's
    calls to KMS on the caller's behalf (SSE-KMS) too;
  - EventBridge starting a Step Functions target as the target's role (`deliver_as`);
  - Step Functions calling ECS, S3, ... as the state machine's role (its service calls are signed with a session
    of that role, so the rule above applies), and ECS's `iam:PassRole` check of the task's roles on RunTask;
  - `authorize_mount`: an EFS mount of a file system whose policy requires IAM, as the task's role.

Requests signed with the deployer's `local` key (or moto's internal `ak`, see UNRESTRICTED_KEYS) are not evaluated:
locally the deployer is the account's administrator, whom not even a resource policy's explicit deny stops (on AWS
it would). Any other key, unknown, inactive, or of a session that expired or was dropped by a reset, is refused
with AWS's `The security token included in the request is invalid` (S3: InvalidAccessKeyId). Unsigned requests are
not evaluated (AWS would answer MissingAuthenticationToken, or judge S3 ones as anonymous).

The rules (AWS IAM User Guide, "Policy evaluation logic"): an explicit Deny in any applicable policy wins; otherwise
a request is allowed when an identity policy or (same account) a resource policy allows it. A resource policy that
names the principal (the role, the session, the user, or `*`) grants by itself; one that names the account (root
or the account id) only delegates to the identity policies. KMS is stricter: the key policy must allow, directly or
by delegating to the account. Conditions: the string, ARN, Bool, Null and numeric operators, `...IfExists`, and
`ForAnyValue:` / `ForAllValues:`; a key the request does not carry fails every operator but the negated ones
(StringNotEquals, ArnNotLike, ...), `...IfExists` and `Null`. An operator this module does not know fails closed:
after the known conditions (one false: the statement does not apply), an Allow statement with it does not apply, a
Deny statement with it does.

Where a request's resource is not modelled (`api_request` and `s3_request` below model the workflow's calls),
evaluation fails closed: a Deny applies whatever its Resource, an Allow only when its Resource is `*`. `NotPrincipal`
applies a statement to every principal it does not list (a role session counts as listed only with its session ARN,
its role ARN and its account listed, as AWS documents). Trust policies are checked when a service assumes a role:
`trusts()`, `check_task_role_trust()` (ECS tasks), `check_machine_role_trust()` (Step Functions), `deliver_as()`
(EventBridge). Session policies and permissions boundaries are not evaluated; signatures are not verified (the
access key identifies the caller).

Every refusal is logged (logger `dmp_deploy.local.iam`) and kept in `denials()` for tests and tools.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

log = logging.getLogger("dmp_deploy.local.iam")

ECS_TASKS = "ecs-tasks.amazonaws.com"
_DENIALS: collections.deque = collections.deque(maxlen=500)
_DENIALS_LOCK = threading.Lock()


# --- the verdict ------------------------------------------------------------------------------------------------

class AccessDenied(Exception):
    """A request AWS would refuse. `str()` is AWS's own wording: who, what, on which resource, and why."""

    def __init__(self, principal: str, action: str, resource: str, reason: str):
        self.principal, self.action, self.resource, self.reason = principal, action, resource, reason
        super().__init__(f"User: {principal} is not authorized to perform: {action} on resource: {resource} "
                         f"because {reason}")


class MountRefused(PermissionError):
    """An EFS mount AWS would refuse (mount.efs reports `access denied by server`)."""


@dataclass(frozen=True)
class Denial:
    """One refusal, as kept by `denials()`."""
    at: str
    source: str          # "request", "eventbridge", "ecs", "efs"
    principal: str
    action: str
    resource: str
    message: str
    detail: dict = field(default_factory=dict)


def record(source: str, error: AccessDenied, **detail) -> Denial:
    denial = Denial(datetime.now(timezone.utc).isoformat(), source, error.principal, error.action,
                    error.resource, str(error), detail)
    with _DENIALS_LOCK:
        _DENIALS.append(denial)
    log.warning("denied (%s): %s%s", source, error,
                "".join(f"; {k}={v}" for k, v in sorted(detail.items())))
    return denial


def denials() -> list[Denial]:
    """The refusals since the last `clear_denials()` (or the embedded AWS's reset), oldest first."""
    with _DENIALS_LOCK:
        return list(_DENIALS)


def clear_denials() -> None:
    with _DENIALS_LOCK:
        _DENIALS.clear()


# --- principals ----------------------------------------------------------------------------------------------

@dataclass
class Principal:
    """Who signed a request: an assumed role's session or an IAM user, with its identity policies."""
    arn: str                    # arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION, or the user's ARN
    account: str
    identity_arns: tuple        # what a resource policy may name to mean this principal
    policies: list = field(default_factory=list)  # identity policy documents (dicts)


def _documents(values: Iterable[Any]) -> list[dict]:
    out = []
    for value in values:
        if isinstance(value, str):
            out.append(json.loads(value))
        elif isinstance(value, dict) and "policy_document" in value:
            out.append(_as_dict(value["policy_document"]))
        elif hasattr(value, "versions"):  # a managed policy: its default version
            version = next(v for v in value.versions if v.is_default)
            out.append(_as_dict(version.document))
        elif isinstance(value, dict):
            out.append(value)
    return out


def _as_dict(document: Any) -> dict:
    return json.loads(document) if isinstance(document, str) else document


def _iam(account: str):
    from moto.iam.models import iam_backends
    return iam_backends[account]["aws"]


def role_principal(role_arn: str, session: str, account: str | None = None) -> Principal:
    """A session of the role `role_arn` (an IAM role ARN, with its path), with the role's policies."""
    account = account or role_arn.split(":")[4]
    role = _iam(account).get_role_by_arn(role_arn)
    policies = _documents(list(role.policies.values()) + list(role.managed_policies.values()))
    session_arn = f"arn:aws:sts::{account}:assumed-role/{role.name}/{session}"
    return Principal(session_arn, account, (role_arn, session_arn), policies)


# The keys that are not evaluated: the deployer's (dmp_deploy.session.LOCAL_CREDENTIALS; locally the deployer is the
# account's administrator) and moto's own for its service integrations (Step Functions' `boto_client_for` signs with
# `ak` when a state has no role). Any other key that is neither a live STS session's nor an active IAM user's is
# refused, as AWS refuses a key it does not know.
UNRESTRICTED_KEYS = frozenset({"local", "ak"})


class InvalidCredentials(ValueError):
    """A request signed with a key AWS would not accept. `code` is S3's error code for it (the JSON and query
    APIs answer UnrecognizedClientException / InvalidClientTokenId with the same message)."""

    def __init__(self, message: str, s3_code: str):
        super().__init__(message)
        self.s3_code = s3_code


INVALID_TOKEN = "The security token included in the request is invalid."


def principal_for_key(access_key_id: str, session_token: str | None, account: str) -> Principal | None:
    """The principal an access key belongs to: an assumed role's session or an IAM user; None for an unsigned
    request and for UNRESTRICTED_KEYS. Raises InvalidCredentials (a ValueError) for a session key sent with the
    wrong session token, an expired session, and any other key (unknown, inactive, or of a session the embedded
    AWS no longer has: after a reset or expiry)."""
    from moto.sts.models import sts_backends

    if not access_key_id or access_key_id in UNRESTRICTED_KEYS:
        return None
    assumed = sts_backends[account]["aws"].get_assumed_role_from_access_key(access_key_id)
    if assumed is not None:
        if session_token != assumed.session_token:
            raise InvalidCredentials(INVALID_TOKEN, "InvalidToken")
        if assumed.expiration.replace(tzinfo=timezone.utc) < datetime.now(timezone.utc):
            raise InvalidCredentials("The security token included in the request is expired", "ExpiredToken")
        try:
            return role_principal(assumed.role_arn, assumed.session_name, account)
        except Exception:  # noqa: BLE001 - moto's NotFoundException: the role was deleted, nothing is allowed
            name = assumed.role_arn.rsplit("/", 1)[-1]
            session_arn = f"arn:aws:sts::{account}:assumed-role/{name}/{assumed.session_name}"
            return Principal(session_arn, account, (assumed.role_arn, session_arn), [])
    iam = _iam(account)
    for user in iam.users.values():
        if any(k.access_key_id == access_key_id and k.status == "Active" for k in user.access_keys):
            policies = list(user.policies.values()) + list(user.managed_policies.values())
            for group in iam.get_groups_for_user(user.name):
                policies += list(group.policies.values()) + list(group.managed_policies.values())
            return Principal(user.arn, account, (user.arn,), _documents(policies))
    raise InvalidCredentials(INVALID_TOKEN, "InvalidAccessKeyId")


# --- policy evaluation ------------------------------------------------------------------------------------------

ALLOW, DENY, NEUTRAL = "allow", "deny", "neutral"


def _list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _glob(pattern: str, value: str, case_sensitive: bool = True) -> bool:
    """IAM wildcards: `*` any run of characters (newlines too: an object key may hold one), `?` any one
    character; nothing else is special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL if case_sensitive else re.IGNORECASE | re.DOTALL) is not None


def _action_matches(patterns: Any, action: str) -> bool:
    return any(_glob(p, action, case_sensitive=False) for p in _list(patterns))


def _resource_matches(patterns: Any, resource: str | None, effect: str | None = None) -> bool:
    """Whether a statement's Resource covers `resource`. A request whose resource is not modelled (None) fails
    closed: a Deny applies whatever its Resource (it may name the resource), an Allow only when its Resource is
    all wildcards (`*`), which would cover any resource."""
    if resource is None:
        return effect == "Deny" or any(set(str(p)) == {"*"} for p in _list(patterns))
    return any(_glob(p, resource) for p in _list(patterns))


def _arn_like(pattern: str, value: str) -> bool:
    parts, values = pattern.split(":", 5), value.split(":", 5)
    return len(parts) == len(values) == 6 and all(_glob(p, v) for p, v in zip(parts, values))


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_MATCHERS = {
    "StringEquals": lambda p, v: p == v,
    "StringEqualsIgnoreCase": lambda p, v: p.lower() == v.lower(),
    "StringLike": lambda p, v: _glob(p, v),
    "ArnEquals": _arn_like,
    "ArnLike": _arn_like,
    "Bool": lambda p, v: p.lower() == v.lower(),
    "NumericEquals": lambda p, v: _number(p) is not None and _number(p) == _number(v),
    "NumericLessThan": lambda p, v: None not in (_number(p), _number(v)) and _number(v) < _number(p),
    "NumericLessThanEquals": lambda p, v: None not in (_number(p), _number(v)) and _number(v) <= _number(p),
    "NumericGreaterThan": lambda p, v: None not in (_number(p), _number(v)) and _number(v) > _number(p),
    "NumericGreaterThanEquals": lambda p, v: None not in (_number(p), _number(v)) and _number(v) >= _number(p),
}
_NEGATED = {"StringNotEquals": "StringEquals", "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
            "StringNotLike": "StringLike", "ArnNotEquals": "ArnEquals", "ArnNotLike": "ArnLike",
            "NumericNotEquals": "NumericEquals"}


class _UnknownOperator(Exception):
    pass


def _condition_holds(operator: str, key: str, wanted: Any, context: dict) -> bool:
    """One operator on one key (AWS: "Condition operators"; "Single-valued vs. multivalued context keys")."""
    qualifier = ""
    if ":" in operator:
        qualifier, operator = operator.split(":", 1)
    if_exists = operator.endswith("IfExists")
    operator = operator[:-len("IfExists")] if if_exists else operator
    present = key.lower() in context
    values = [str(v).lower() if isinstance(v, bool) else str(v) for v in _list(context.get(key.lower()))]
    wanted = [str(w).lower() if isinstance(w, bool) else str(w) for w in _list(wanted)]
    if operator == "Null":
        return all((w.lower() == "true") != present for w in wanted)
    negated = operator in _NEGATED
    base = _NEGATED.get(operator, operator)
    if base not in _MATCHERS:
        raise _UnknownOperator(operator)
    if not present:
        return if_exists or negated or qualifier == "ForAllValues"
    match = _MATCHERS[base]

    def one(value: str) -> bool:
        hit = any(match(w, value) for w in wanted)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(one(v) for v in values)
    if negated and qualifier != "ForAnyValue":
        return all(one(v) for v in values)  # "not equal to any": no value may match
    return any(one(v) for v in values)


def _conditions_hold(statement: dict, context: dict) -> bool:
    """All conditions hold (AND). Every known operator is evaluated first: one that fails means the statement
    does not apply, whatever it is. Only then does an operator this module does not know fail closed: an Allow
    with it does not apply, a Deny with it does."""
    unknown = []
    for operator, pairs in (statement.get("Condition") or {}).items():
        for key, wanted in pairs.items():
            try:
                if not _condition_holds(operator, key, wanted, context):
                    return False
            except _UnknownOperator:
                unknown.append(operator)
    if unknown:
        log.warning("condition operator(s) %s not evaluated by the embedded AWS: the statement %s fails closed",
                    ", ".join(sorted(set(unknown))), statement.get("Sid", ""))
        return statement.get("Effect") == "Deny"
    return True


def _principal_match(statement: dict, principal: Principal | None, service: str | None) -> str | None:
    """'direct' when the statement's Principal names this principal (or everyone), 'account' when it names the
    principal's account (delegation to its identity policies), None otherwise."""
    if "NotPrincipal" in statement:
        return _not_principal_match(statement["NotPrincipal"], principal, service)
    named = statement.get("Principal")
    if named is None:
        return "direct"  # an identity policy
    if named == "*":
        return "direct"
    named = named or {}
    if service and service in _list(named.get("Service", [])):
        return "direct"
    if principal is None:
        return None
    for value in _list(named.get("AWS", [])):
        if value == "*" or value in principal.identity_arns:
            return "direct"
        if value in (principal.account, f"arn:aws:iam::{principal.account}:root"):
            return "account"
    return None


def _not_principal_match(excluded: Any, principal: Principal | None, service: str | None) -> str | None:
    """`NotPrincipal`: the statement applies to every principal it does not list ('direct'), None to one it
    lists. As AWS documents ("AWS JSON policy elements: NotPrincipal"), a principal is excluded only when every
    ARN it is known by is listed with its account: for a role session, the session's ARN, the role's ARN and the
    account (`arn:aws:iam::ACCOUNT:root` or the id); for a user, its ARN and the account. Listing only the role
    does not exempt its sessions (the conservative reading: a Deny then still applies)."""
    if excluded == "*":
        return None
    excluded = excluded if isinstance(excluded, dict) else {}
    if service:
        return None if service in _list(excluded.get("Service", [])) else "direct"
    if principal is None:
        return "direct"
    listed = set(_list(excluded.get("AWS", [])))
    account_listed = bool({principal.account, f"arn:aws:iam::{principal.account}:root"} & listed)
    if account_listed and all(arn in listed for arn in principal.identity_arns):
        return None
    return "direct"


def evaluate(document: dict, action: str, resource: str | None, context: dict,
             principal: Principal | None = None, service: str | None = None,
             resource_policy: bool = False) -> tuple[str, str | None]:
    """(ALLOW | DENY | NEUTRAL, how the principal was named) for one policy document. Deny wins within it."""
    verdict, how = NEUTRAL, None
    for statement in _list(document.get("Statement", [])):
        if "NotAction" in statement:
            if _action_matches(statement["NotAction"], action):
                continue
        elif not _action_matches(statement.get("Action", []), action):
            continue
        effect = statement.get("Effect")
        if "NotResource" in statement:
            if resource is None and effect != "Deny":
                continue  # not modelled: an Allow that excludes resources might exclude it (fail closed)
            if resource is not None and _resource_matches(statement["NotResource"], resource):
                continue
        elif "Resource" in statement and not _resource_matches(statement["Resource"], resource, effect):
            continue
        named = _principal_match(statement, principal, service) if resource_policy else "direct"
        if named is None or not _conditions_hold(statement, context):
            continue
        if statement.get("Effect") == "Deny":
            return DENY, named
        verdict, how = ALLOW, (how if how == "direct" else named)
    return verdict, how


def authorize(principal: Principal, action: str, resource: str | None, context: dict | None = None,
              resource_policy: dict | None = None, resource_policy_required: bool = False) -> None:
    """Raise AccessDenied unless AWS would allow `principal` to do `action` on `resource`.

    `resource_policy`: the resource's own policy (bucket, key, file system), if it has one.
    `resource_policy_required`: the service requires the resource policy to allow (KMS key policies; EFS file
    system policies of IAM-authorised mounts), directly or by delegating to the account's identity policies."""
    context = {k.lower(): v for k, v in _base_context(principal).items()} | \
        {k.lower(): v for k, v in (context or {}).items()}
    shown = resource or "*"
    identity = [evaluate(d, action, resource, context) for d in principal.policies]
    if any(v == DENY for v, _ in identity):
        raise AccessDenied(principal.arn, action, shown, "with an explicit deny in an identity-based policy")
    allowed_by_identity = any(v == ALLOW for v, _ in identity)
    if resource_policy is not None:
        verdict, how = evaluate(resource_policy, action, resource, context, principal, resource_policy=True)
        if verdict == DENY:
            raise AccessDenied(principal.arn, action, shown, "with an explicit deny in a resource-based policy")
        if verdict == ALLOW and how == "direct":
            return
        if resource_policy_required and verdict != ALLOW:
            raise AccessDenied(principal.arn, action, shown, "no resource-based policy allows the "
                                                             f"{action} action")
    elif resource_policy_required:
        raise AccessDenied(principal.arn, action, shown, f"no resource-based policy allows the {action} action")
    if not allowed_by_identity:
        raise AccessDenied(principal.arn, action, shown, f"no identity-based policy allows the {action} action")


def _base_context(principal: Principal) -> dict:
    """The global condition keys every request carries. The embedded endpoint is plain HTTP."""
    return {"aws:PrincipalArn": principal.identity_arns[0], "aws:PrincipalAccount": principal.account,
            "aws:SecureTransport": "false"}


def trusts(role_arn: str, service: str, source_arn: str | None = None) -> bool:
    """Whether the role's trust policy lets `service` (e.g. events.amazonaws.com) assume it on behalf of the
    role's account (`aws:SourceAccount`) and of `source_arn` (`aws:SourceArn`, e.g. the rule)."""
    account = role_arn.split(":")[4]
    try:
        role = _iam(account).get_role_by_arn(role_arn)
    except Exception:  # noqa: BLE001 - moto's NotFoundException: a missing role trusts no one
        return False
    document = _as_dict(role.assume_role_policy_document)
    context = {"aws:sourceaccount": account} | ({"aws:sourcearn": source_arn} if source_arn else {})
    verdict, _ = evaluate(document, "sts:AssumeRole", None, context, None, service=service, resource_policy=True)
    return verdict == ALLOW


def check_task_role_trust(role_arn: str) -> None:
    """Raise AccessDenied (sts:AssumeRole on the role) unless the role trusts ecs-tasks.amazonaws.com, as ECS
    needs to hand a task its role's credentials (a role trusting ecs.amazonaws.com instead is a common mistake)."""
    if not trusts(role_arn, ECS_TASKS):
        raise AccessDenied(ECS_TASKS, "sts:AssumeRole", role_arn,
                           f"the role's trust policy does not allow {ECS_TASKS} to assume it (sts:AssumeRole); "
                           "verify the role's trust relationship")


def check_machine_role_trust(role_arn: str) -> None:
    """Raise AccessDenied unless the state machine's role trusts states.amazonaws.com (Step Functions assumes it
    for every service call the machine makes)."""
    if not trusts(role_arn, "states.amazonaws.com"):
        raise AccessDenied("states.amazonaws.com", "sts:AssumeRole", role_arn,
                           "the role's trust policy does not allow states.amazonaws.com to assume it")


# --- the workflow's authorisations by services, not requests ------------------------------------------------------

def deliver_as(role_arn: str, target_arn: str, rule_arn: str | None = None) -> None:
    """EventBridge starting a Step Functions target (a machine, version or alias ARN) as `role_arn`.
    Step Functions authorises a start through a version or alias against the UNQUALIFIED machine ARN, with the
    version number or alias name as `states:StateMachineQualifier` (AWS: "Authorization for versions and
    aliases"). Raises AccessDenied naming the role and the action."""
    parts = target_arn.split(":")
    machine, qualifier = ":".join(parts[:7]), parts[7] if len(parts) > 7 else None
    if not role_arn:
        raise AccessDenied("events.amazonaws.com", "states:StartExecution", machine,
                           "the target has no role (a Step Functions target needs one)")
    if not trusts(role_arn, "events.amazonaws.com", rule_arn):
        raise AccessDenied("events.amazonaws.com", "sts:AssumeRole", role_arn,
                           "the role's trust policy does not allow events.amazonaws.com to assume it")
    principal = role_principal(role_arn, "eventbridge-delivery")
    context = {"states:StateMachineQualifier": qualifier} if qualifier else {}
    authorize(principal, "states:StartExecution", machine, context)


# --- EFS -----------------------------------------------------------------------------------------------------------

def authorize_mount(task_role_arn: str, file_system_id: str, access_point_id: str, read_only: bool) -> None:
    """Raise MountRefused unless EFS would let a task with role `task_role_arn` mount `file_system_id` through
    `access_point_id` with IAM authorisation (`iam: ENABLED`): `elasticfilesystem:ClientMount`, and for a
    read-write mount also `elasticfilesystem:ClientWrite`, on the file system's ARN with the condition keys
    `elasticfilesystem:AccessPointArn` and `elasticfilesystem:AccessedViaMountTarget`, against the role's identity
    policies and the file system policy (no policy: EFS's default allows every client that can reach a mount
    target). The mount is over TLS (the task definition's transitEncryption), so `aws:SecureTransport` is true."""
    from moto.efs.models import efs_backends

    if not access_point_id:
        access_point_id = ""
    if not task_role_arn or not task_role_arn.startswith("arn:aws:iam::"):
        raise MountRefused(f"EFS refused the mount of {file_system_id} through {access_point_id}: the task has "
                           f"no IAM role ({task_role_arn!r}), and the mount requires IAM authorisation")
    account = task_role_arn.split(":")[4]
    backend = next((b for region, b in efs_backends[account].items() if file_system_id in b.file_systems_by_id),
                   None)
    if backend is None:
        raise MountRefused(f"EFS refused the mount: file system {file_system_id} does not exist")
    file_system = backend.file_systems_by_id[file_system_id]
    access_point = backend.access_points.get(access_point_id) if access_point_id else None
    if access_point_id and (access_point is None or access_point.file_system_id != file_system_id):
        raise MountRefused(f"EFS refused the mount of {file_system_id}: access point {access_point_id} does not "
                           f"exist on that file system")
    try:
        principal = role_principal(task_role_arn, "ecs-task")
    except Exception:  # noqa: BLE001 - moto's NotFoundException
        raise MountRefused(f"EFS refused the mount of {file_system_id}: the task role {task_role_arn} does not "
                           f"exist") from None
    policy = _as_dict(file_system.file_system_policy) if file_system.file_system_policy else None
    context = {"elasticfilesystem:AccessedViaMountTarget": "true", "aws:SecureTransport": "true"}
    if access_point is not None:  # a mount of the file system's root carries no access point key
        context["elasticfilesystem:AccessPointArn"] = access_point.access_point_arn
    actions = ["elasticfilesystem:ClientMount"] + ([] if read_only else ["elasticfilesystem:ClientWrite"])
    for action in actions:
        try:
            if policy is None:
                continue  # the default file system policy: full access to clients of a mount target
            authorize(principal, action, file_system.file_system_arn, context, policy)
        except AccessDenied as exc:
            record("efs", exc, file_system=file_system_id, access_point=access_point_id)
            raise MountRefused(f"EFS refused the mount of {file_system_id} through {access_point_id} "
                               f"({'read-only' if read_only else 'read-write'}): {exc}") from None


# --- requests: who signed them, and what they ask for --------------------------------------------------------------

def _header(headers, name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in dict(headers).items() if k.lower() == name.lower()), None)
    return value


def request_key(headers, querystring: dict) -> tuple[str | None, str | None]:
    """(access key id, session token) of a SigV4 request: from the Authorization header or a presigned URL."""
    auth = _header(headers, "Authorization") or ""
    found = re.search(r"Credential=([^/,\s]+)/", auth)
    key = found.group(1) if found else None
    token = _header(headers, "X-Amz-Security-Token")
    if key is None:
        credential = (querystring or {}).get("X-Amz-Credential")
        credential = credential[0] if isinstance(credential, list) else credential
        key = credential.split("/")[0] if credential else None
        token = token or _first((querystring or {}).get("X-Amz-Security-Token"))
    return key, token


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


@dataclass
class Request:
    """What one API request asks: an action, its resources (None when not modelled), condition context, and the
    resource policy that applies (with whether the service requires it to allow)."""
    action: str
    resources: list = field(default_factory=lambda: [None])
    context: dict = field(default_factory=dict)
    resource_policy: dict | None = None
    resource_policy_required: bool = False
    then: list = field(default_factory=list)  # further checks made on the caller's behalf (S3 -> KMS)


def check_request(principal: Principal, request: Request) -> None:
    for resource in request.resources:
        authorize(principal, request.action, resource, request.context, request.resource_policy,
                  request.resource_policy_required)
    for follow_up in request.then:
        check_request(principal, follow_up)


# S3: moto's action names (ACTION_MAP) to the IAM actions AWS authorises, by whether a version is named.
_S3_VERSIONED = {"GetObject": "GetObjectVersion", "DeleteObject": "DeleteObjectVersion",
                 "GetObjectTagging": "GetObjectVersionTagging", "PutObjectTagging": "PutObjectVersionTagging",
                 "DeleteObjectTagging": "DeleteObjectVersionTagging", "GetObjectAcl": "GetObjectVersionAcl"}
_S3_HEADERS = ("x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id", "x-amz-acl",
               "x-amz-copy-source", "x-amz-storage-class")


def s3_request(response, bucket_name: str | None, key_name: str | None) -> Request:
    """An S3 request as IAM sees it (AWS: "Amazon S3 condition key examples"; S3 API reference per operation)."""
    from moto.s3.models import s3_backends

    action = response.data.get("Action") or "*"
    query = response.querystring or {}
    version = _first(query.get("versionId"))
    if key_name and version:  # any versionId, "null" included, asks for the version's own permission
        action = _S3_VERSIONED.get(action, action)
    if action == "ListBucket" and "versions" in query:
        action = "ListBucketVersions"
    headers = response.headers
    context: dict = {}
    for name in _S3_HEADERS:
        value = _header(headers, name)
        if value is not None:
            context[f"s3:{name}"] = value
    if_none_match = _header(headers, "If-None-Match")
    if if_none_match is not None and action == "PutObject":
        context["s3:if-none-match"] = if_none_match
    if version:
        context["s3:versionid"] = version
    if _first(query.get("prefix")) is not None:
        context["s3:prefix"] = _first(query.get("prefix"))
    resource = f"arn:aws:s3:::{bucket_name}" + (f"/{key_name}" if key_name else "") if bucket_name else None
    backend = s3_backends[response.current_account]["aws"]
    bucket = backend.buckets.get(bucket_name) if bucket_name else None
    policy = json.loads(bucket.policy) if bucket is not None and bucket.policy else None
    request = Request(f"s3:{action}", [resource], context, policy)
    if bucket is not None and key_name:
        request.then = _s3_kms(response, backend, bucket, key_name, action, context, version)
    return request


def _s3_kms(response, backend, bucket, key_name: str, action: str, context: dict, version) -> list[Request]:
    """S3 calls KMS on the caller's behalf for SSE-KMS objects: GenerateDataKey to write, Decrypt to read; the
    caller needs those on the key, with `kms:ViaService` = s3.<region>.amazonaws.com."""
    region = response.region
    via = {"kms:ViaService": f"s3.{region}.amazonaws.com", "kms:CallerAccount": response.current_account}
    if action == "PutObject":
        encryption = context.get("s3:x-amz-server-side-encryption")
        key_id = context.get("s3:x-amz-server-side-encryption-aws-kms-key-id")
        if encryption is None and bucket.encryption:
            rule = _first(_list(bucket.encryption.get("Rule", []))) or {}
            default = rule.get("ApplyServerSideEncryptionByDefault", {})
            encryption, key_id = default.get("SSEAlgorithm"), default.get("KMSMasterKeyID")
        if encryption == "aws:kms" and key_id:
            return [kms_request(response.current_account, region, "kms:GenerateDataKey", key_id, via)]
    elif action in ("GetObject", "GetObjectVersion"):
        try:
            stored = backend.get_object(bucket.name, key_name, version_id=version if version else None)
        except Exception:  # noqa: BLE001 - a missing object is S3's own answer, after authorisation
            stored = None
        if stored is not None and stored.encryption == "aws:kms" and stored.kms_key_id:
            return [kms_request(response.current_account, region, "kms:Decrypt", stored.kms_key_id, via)]
    return []


def kms_request(account: str, region: str, action: str, key_id: str | None, context: dict | None = None) -> Request:
    """A KMS action on a key (any of its ids, ARN, alias or alias ARN), judged with the key policy, which KMS
    requires to allow (directly, or by naming the account, which delegates to IAM policies)."""
    from moto.kms.models import kms_backends

    backend = kms_backends[account][region]
    try:
        key = backend.describe_key(key_id) if key_id else None
    except Exception:  # noqa: BLE001 - an unknown key: KMS answers NotFound after authorisation
        key = None
    if key is None:
        return Request(action, [None], context or {})
    return Request(action, [key.arn], context or {}, json.loads(key.policy), resource_policy_required=True)


def _param(response, name: str) -> Any:
    try:
        return response._get_param(name)
    except Exception:  # noqa: BLE001 - a body that is not JSON: not one of the modelled calls
        return None


def api_request(response, service: str, action: str) -> list[Request]:
    """A non-S3 request as IAM sees it. The workflow's calls have their resources modelled; any other call is
    checked by action only."""
    account, region = response.current_account, response.region
    full = f"{service}:{action}"
    if service == "kms":
        return [kms_request(account, region, full, _param(response, "KeyId"))]
    if service == "ssm" and action in ("GetParameter", "GetParameters", "GetParametersByPath"):
        names = _param(response, "Names") or [_param(response, "Name") or _param(response, "Path")]
        return [Request(full, [f"arn:aws:ssm:{region}:{account}:parameter/{str(n).lstrip('/')}" for n in names])]
    if service == "secretsmanager" and action in ("GetSecretValue", "DescribeSecret"):
        secret = _param(response, "SecretId") or ""
        if not secret.startswith("arn:"):
            from moto.secretsmanager.models import secretsmanager_backends
            found = secretsmanager_backends[account][region].secrets.get(secret)
            secret = found.arn if found is not None else None
        return [Request(full, [secret])]
    if service == "logs":
        group, stream = _param(response, "logGroupName"), _param(response, "logStreamName")
        if group and action in ("CreateLogStream", "PutLogEvents", "GetLogEvents"):
            return [Request(full, [f"arn:aws:logs:{region}:{account}:log-group:{group}:log-stream:{stream or ''}"])]
        if group:
            return [Request(full, [f"arn:aws:logs:{region}:{account}:log-group:{group}"])]
    if service == "states":
        if action == "StartExecution":
            target = _param(response, "stateMachineArn") or ""
            parts = target.split(":")
            context = {"states:StateMachineQualifier": parts[7]} if len(parts) > 7 else {}
            return [Request(full, [":".join(parts[:7])], context)]
        arn = _param(response, "stateMachineArn") or _param(response, "executionArn")
        if arn:
            return [Request(full, [arn])]
    if service == "ecs":
        return _ecs_requests(response, account, region, full, action)
    if service == "sts" and action == "GetCallerIdentity":
        return []  # always allowed, whatever the policies say
    return [Request(full)]


def _ecs_requests(response, account: str, region: str, full: str, action: str) -> list[Request]:
    from moto.ecs.models import ecs_backends

    cluster = _param(response, "cluster") or "default"
    cluster_name = cluster.rsplit("/", 1)[-1]
    cluster_arn = f"arn:aws:ecs:{region}:{account}:cluster/{cluster_name}"
    if action == "RunTask":
        backend = ecs_backends[account][region]
        try:
            definition = backend.describe_task_definition(_param(response, "taskDefinition"))
        except Exception:  # noqa: BLE001 - ECS answers for a missing task definition itself
            return [Request(full, [None], {"ecs:cluster": cluster_arn})]
        overrides = _param(response, "overrides") or {}
        roles = [overrides.get("taskRoleArn") or getattr(definition, "task_role_arn", None),
                 overrides.get("executionRoleArn") or getattr(definition, "execution_role_arn", None)]
        return [Request(full, [definition.arn], {"ecs:cluster": cluster_arn})] + [
            Request("iam:PassRole", [role], {"iam:PassedToService": ECS_TASKS}) for role in roles if role]
    if action in ("DescribeTasks", "StopTask"):
        tasks = _param(response, "tasks") or [_param(response, "task")]
        arns = [t if str(t).startswith("arn:") else f"arn:aws:ecs:{region}:{account}:task/{cluster_name}/{t}"
                for t in tasks if t]
        return [Request(full, arns or [None], {"ecs:cluster": cluster_arn})]
    return [Request(full, [None], {"ecs:cluster": cluster_arn})]
