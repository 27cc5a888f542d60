"""Preflight: before anything mutates, check that what the plan refers to but does not create exists.

What a plan refers to is found from its changes: the task definitions it registers and the services it
creates or updates (and, for `run-task`, the one task definition it runs). For those:
  - images: ECR images (`ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG`) with DescribeImages; images in other
    registries (Docker Hub, public.ecr.aws) cannot be asked about here and are listed as not checked;
  - secrets: Secrets Manager secrets with DescribeSecret, SSM parameters with DescribeParameters. Neither
    returns a value: a secret's value is never read;
  - roles: the task and execution roles, with GetRole, unless the plan creates them or they were just read;
  - target groups: every one the services name, in one DescribeTargetGroups (one per ARN only to tell which
    is missing when that fails);
  - certificates: the ACM certificate of every HTTPS listener the plan creates or changes, with
    DescribeCertificate: it must exist and be ISSUED (a certificate pending validation cannot serve);
  - subnets were already resolved by the lookups (lookups.py) before the plan was built.
Every missing thing is reported at once, as a PlanError: nothing has been changed at that point.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

import structlog

from dmp_deploy import names
from dmp_deploy.aws import error_code
from dmp_deploy.errors import PlanError

if TYPE_CHECKING:
    from dmp_deploy.plan import Plan
    from dmp_deploy.planner import Reconciliation
    from dmp_deploy.resources.base import Context

log = structlog.get_logger()

ECR_IMAGE = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/"
                       r"(?P<repository>[^:@]+)(?::(?P<tag>[^@]+))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")
# DescribeParameters' Name filter takes at most 50 values, and a page holds up to 50 parameters when asked for
# (10 otherwise): one page, one round trip, per batch of 50 names; the batches are looked up at the same time.
SSM_NAMES_PER_CALL = 50


@dataclass
class References:
    """What a plan needs to exist, each with who needs it (for the report)."""

    images: dict[str, set[str]] = field(default_factory=dict)
    secrets: dict[str, set[str]] = field(default_factory=dict)
    roles: dict[str, set[str]] = field(default_factory=dict)  # role ARN -> users
    target_groups: dict[str, set[str]] = field(default_factory=dict)
    certificates: dict[str, set[str]] = field(default_factory=dict)  # ACM certificate ARN -> listeners

    def add(self, what: dict[str, set[str]], key: str | None, user: str) -> None:
        if key:
            what.setdefault(key, set()).add(user)

    def add_task_definition(self, family: str, document: dict) -> None:
        self.add(self.roles, document.get("executionRoleArn"), f"{family} (execution role)")
        self.add(self.roles, document.get("taskRoleArn"), f"{family} (task role)")
        for container in document.get("containerDefinitions", []):
            where = f"{family} container {container.get('name')}"
            self.add(self.images, container.get("image"), where)
            for secret in container.get("secrets") or []:
                self.add(self.secrets, secret.get("valueFrom"), f"{where} {secret.get('name')}")


def references_of_plan(plan: "Plan", desired, lookups: dict | None = None) -> References:
    """The references of the task definitions and services the plan registers, creates or updates."""
    config = desired.config
    stems = {names.family(config, stem): stem for stem in desired.task_definitions}
    refs = References()
    for change in plan.changes:
        if change.action == "delete":
            continue
        if change.kind in ("task_definition", "service") and change.name in stems:
            refs.add_task_definition(change.name, desired.task_definitions[stems[change.name]])
        if change.kind == "listener":
            spec = desired.resources.get("listener", {}).get(change.name) or {}
            certificate = spec.get("certificate")
            if certificate and not certificate.startswith("arn:"):  # named by domain: what the lookup found
                certificate = (lookups or {}).get("certificate_arn")
            refs.add(refs.certificates, certificate, f"listener {change.name}")
        if change.kind == "service":
            spec = desired.resources.get("service", {}).get(change.name) or {}
            for lb in spec.get("load_balancers") or []:
                if (lb.get("targetGroupArn") or "").startswith("arn:"):  # not ours (ours are named, and planned)
                    refs.add(refs.target_groups, lb.get("targetGroupArn"), f"service {change.name}")
    return refs


def check_plan(rec: "Reconciliation") -> None:
    """apply's preflight: after planning, before the first change."""
    created = {c.name for c in rec.plan.changes if c.kind == "iam_role" and c.action in ("create", "replace")}
    known = set(rec.live.get("iam_role", {}))
    check(rec.ctx, references_of_plan(rec.plan, rec.desired, rec.ctx.lookups), roles_present=known,
          roles_created=created)


def check(ctx: "Context", refs: References, roles_present: Iterable[str] = (),
          roles_created: Iterable[str] = ()) -> None:
    """Look every reference up (concurrently); raise one PlanError listing everything missing."""
    roles_present, roles_created = set(roles_present), set(roles_created)
    roles = {arn: users for arn, users in refs.roles.items()
             if role_name(arn) not in roles_present | roles_created}
    checks = [lambda: _missing_images(ctx, refs.images), lambda: _missing_secrets(ctx, refs.secrets),
              lambda: _missing_roles(ctx, roles), lambda: _missing_target_groups(ctx, refs.target_groups),
              lambda: _unusable_certificates(ctx, refs.certificates)]
    missing: list[str] = [line for found in ctx.map(lambda f: f(), checks) for line in found]
    if not ctx.lookups.get("subnet_ids"):
        missing.append("subnets: network.subnets resolved to no subnet")
    if missing:
        raise PlanError(f"Preflight: {len(missing)} thing(s) the plan needs do not exist. Nothing was changed.\n"
                        + "\n".join(f"  - {m}" for m in sorted(missing))
                        + "\nCreate them (or fix the configuration) and run again.")
    log.info("preflight passed", images=len(refs.images), secrets=len(refs.secrets), roles=len(refs.roles),
             target_groups=len(refs.target_groups))


def role_name(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def _users(users: set[str]) -> str:
    shown = sorted(users)
    return ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")


# --- images ----------------------------------------------------------------------------------------------


def parse_image(image: str) -> dict | None:
    """An ECR image reference's parts, or None for any other registry."""
    match = ECR_IMAGE.match(image)
    if not match:
        return None
    parts = match.groupdict()
    if not parts["tag"] and not parts["digest"]:
        parts["tag"] = "latest"
    return parts


def _missing_images(ctx: "Context", images: dict[str, set[str]]) -> list[str]:
    ecr, skipped = {}, []
    for image in sorted(images):
        parts = parse_image(image)
        if parts is None or parts["region"] != ctx.aws.region:
            skipped.append(image)
        else:
            ecr[image] = parts
    if skipped:
        log.info("images not checked: only ECR images in this region can be asked about", images=skipped)

    def missing(image: str) -> str | None:
        parts = ecr[image]
        image_id = {"imageDigest": parts["digest"]} if parts["digest"] else {"imageTag": parts["tag"]}
        try:
            ctx.aws.call("ecr", "describe_images", registryId=parts["account"],
                         repositoryName=parts["repository"], imageIds=[image_id])
        except Exception as exc:
            if error_code(exc) == "ImageNotFoundException":
                return f"image {image}: no such tag in ECR repository {parts['repository']} (used by {_users(images[image])})"
            if error_code(exc) == "RepositoryNotFoundException":
                return f"image {image}: ECR repository {parts['repository']} does not exist (used by {_users(images[image])})"
            raise
        return None

    return [m for m in ctx.map(missing, sorted(ecr)) if m]


# --- secrets ---------------------------------------------------------------------------------------------


def secret_reference(value_from: str) -> tuple[str, str]:
    """("secretsmanager", secret ARN) or ("ssm", parameter name) for a container secret's valueFrom.
    A Secrets Manager reference may name a JSON key and version after the ARN: those are dropped."""
    parts = value_from.split(":")
    if value_from.startswith("arn:") and len(parts) >= 7 and parts[2] == "secretsmanager":
        return "secretsmanager", ":".join(parts[:7])
    if value_from.startswith("arn:") and parts[2] == "ssm":
        rest = value_from.split(":parameter/", 1)[1]
        return "ssm", f"/{rest}" if "/" in rest else rest
    return "ssm", value_from  # a bare parameter name (same account and region)


def _missing_secrets(ctx: "Context", secrets: dict[str, set[str]]) -> list[str]:
    by_store: dict[str, dict[str, str]] = {"secretsmanager": {}, "ssm": {}}
    for value_from in sorted(secrets):
        store, key = secret_reference(value_from)
        by_store[store][key] = value_from

    def secret_missing(arn: str) -> str | None:
        try:
            ctx.aws.call("secretsmanager", "describe_secret", SecretId=arn)  # metadata only, never the value
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                value_from = by_store["secretsmanager"][arn]
                return f"secret {value_from}: not found in Secrets Manager (used by {_users(secrets[value_from])})"
            raise
        return None

    def parameters_found(batch: list[str]) -> set[str]:
        # One page holds the batch. AWS may still end a page early (its answers are "best effort"): then the
        # pages that follow are read too, so that every name is asked about.
        found = ctx.aws.pages("ssm", "describe_parameters", "Parameters",  # metadata only, never the value
                              ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": batch}],
                              MaxResults=SSM_NAMES_PER_CALL)
        return {p["Name"] for p in found}

    ssm_names = sorted(by_store["ssm"])
    batches = [ssm_names[i:i + SSM_NAMES_PER_CALL] for i in range(0, len(ssm_names), SSM_NAMES_PER_CALL)]
    # The parameter batches and the secrets at the same time: neither waits for the other's answers.
    answers = ctx.map(lambda job: job(), [*(lambda b=b: parameters_found(b) for b in batches),
                                          *(lambda a=a: secret_missing(a) for a in sorted(by_store["secretsmanager"]))])
    found = set().union(*answers[:len(batches)])
    missing = [f"secret {by_store['ssm'][n]}: no such SSM parameter (used by {_users(secrets[by_store['ssm'][n]])})"
               for n in ssm_names if n not in found]
    missing += [m for m in answers[len(batches):] if m]
    return missing


# --- roles and target groups -----------------------------------------------------------------------------


def _missing_roles(ctx: "Context", roles: dict[str, set[str]]) -> list[str]:
    def missing(arn: str) -> str | None:
        try:
            ctx.aws.call("iam", "get_role", RoleName=role_name(arn))
        except Exception as exc:
            if error_code(exc) == "NoSuchEntity":
                return f"role {arn}: does not exist and the plan does not create it (used by {_users(roles[arn])})"
            raise
        return None

    return [m for m in ctx.map(missing, sorted(roles)) if m]


def _missing_target_groups(ctx: "Context", groups: dict[str, set[str]]) -> list[str]:
    if not groups:
        return []
    arns = sorted(groups)
    try:
        ctx.aws.call("elbv2", "describe_target_groups", TargetGroupArns=arns)
        return []
    except Exception as exc:
        if error_code(exc) != "TargetGroupNotFound":
            raise

    def missing(arn: str) -> str | None:  # only now, one by one: which of them is missing
        try:
            ctx.aws.call("elbv2", "describe_target_groups", TargetGroupArns=[arn])
        except Exception as exc:
            if error_code(exc) == "TargetGroupNotFound":
                return f"target group {arn}: not found (used by {_users(groups[arn])})"
            raise
        return None

    return [m for m in ctx.map(missing, arns) if m]


# --- certificates ----------------------------------------------------------------------------------------


def _unusable_certificates(ctx: "Context", certificates: dict[str, set[str]]) -> list[str]:
    def unusable(arn: str) -> str | None:
        try:
            status = ctx.aws.call("acm", "describe_certificate", CertificateArn=arn)["Certificate"].get("Status")
        except Exception as exc:
            if error_code(exc) in ("ResourceNotFoundException", "ValidationException"):
                return f"certificate {arn}: not found in ACM (used by {_users(certificates[arn])})"
            raise
        if status != "ISSUED":
            return (f"certificate {arn}: is {status}, not ISSUED: complete its validation (or name another in "
                    f"[public_entry]) (used by {_users(certificates[arn])})")
        return None

    return [m for m in ctx.map(unusable, sorted(certificates)) if m]
