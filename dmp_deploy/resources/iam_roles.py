"""IAM roles: the shared ECS execution role, one task role per task definition family, and the roles other
features declare (the add-users workflow's Step Functions and EventBridge roles).

Every role lives under the path `names.IAM_PATH`. A role's canonical spec:

    {
      "path": "/dmp-deploy/",                   # immutable: a change is a replace
      "trust_policy": {...},                    # canonical.policy() form
      "inline_policies": {"NAME": {...}},       # by policy name, each in canonical.policy() form
      "managed_policy_arns": ["arn:..."],       # sorted
      "max_session_duration": 3600,             # seconds
      "tags": {...},                            # config.resource_tags() plus any extra tags
    }

Other features declare roles without editing this module: they put specs into
`state.resources["_extra_iam_roles"]` ({role name: spec}), and inline policies for a task role into
`state.resources["_extra_task_role_policies"]` ({template stem: {policy name: document}}), from their own
`desired()`, which must run before this kind's (list them before `IamRoles` in `resources/__init__.py`).
Policies may name the add-users KMS key by `kms_keys.arn_placeholder()`: it is resolved when a policy is put
and the owned key's ARN reads back as the placeholder. Only `trust_policy` is required; the
other keys default to none, none, 3600 and no extra tags, and documents may be in any form IAM accepts
(`role_spec()` fills the defaults and canonicalises; `service_trust()` builds the usual trust policy).

Reading is one paginated GetAccountAuthorizationDetails(Filter=[Role, LocalManagedPolicy]) series (trust
policy, inline and attached policies, tags for every role at once; the customer-managed policies for
iam_policies.py in the same pages) plus one ListRoles(PathPrefix=IAM_PATH) series, because the authorization
details leave out MaxSessionDuration (a declared field: without ListRoles its drift would go unseen). A role is ours when it is declared, or when it is
under IAM_PATH, named with this environment's prefix and tagged as managed by dmp-deploy in this
environment; only those are ever deleted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from dmp_deploy import canonical, names
from dmp_deploy import diff as diffing
from dmp_deploy.errors import ConfigError
from dmp_deploy.plan import FieldChange
from dmp_deploy.resources import kms_keys
from dmp_deploy.resources.base import Context, Live, ResourceKind

DEFAULT_MAX_SESSION_SECONDS = 3600
IAM_PAGE = 1000  # the most items IAM's list calls (and GetAccountAuthorizationDetails) return a page
EXECUTION_POLICY = "ecs-execution"
TASK_POLICY = "app-access"
ECS_EXEC_POLICY = "ecs-exec"

# An image in a private ECR registry: ACCOUNT.dkr.ecr[-fips].REGION.amazonaws.com/REPOSITORY[:TAG|@DIGEST]
ECR_IMAGE = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com"
                       r"/(?P<repository>[^:@]+)")

# dmutils.s3.S3, which the frontends use: save() puts the object and sets its ACL, list() lists the bucket,
# delete and move-out-of-the-way copy and delete objects, get_signed_url() reads them.
S3_OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:PutObjectAcl", "s3:DeleteObject")
S3_BUCKET_ACTIONS = ("s3:ListBucket",)
# antivirus-api scans an uploaded object version and tags it with the result (its app/s3.py, reached from
# app/callbacks/views/sns.py and app/main/views/scan.py): HeadObject and GetObject, GetObjectTagging twice and
# PutObjectTagging, every call with a VersionId. With a VersionId, S3 authorises GetObject and HeadObject by
# s3:GetObjectVersion alone ("the s3:GetObject permission is not required in this scenario"), and the tagging
# calls by s3:GetObjectTagging plus s3:GetObjectVersionTagging and s3:PutObjectTagging plus
# s3:PutObjectVersionTagging (S3 API reference, GetObject, GetObjectTagging and PutObjectTagging).
S3_SCAN_ACTIONS = ("s3:GetObjectVersion", "s3:GetObjectTagging", "s3:GetObjectVersionTagging",
                   "s3:PutObjectTagging", "s3:PutObjectVersionTagging")
# What the ECS Exec agent in the task needs to open its Session Manager channels.
ECS_EXEC_ACTIONS = ("ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
                    "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel")


@dataclass(frozen=True)
class AppAccess:
    """What an app's own code does with AWS. Values are keys of the config's [settings] table."""

    buckets: tuple[str, ...] = ()  # S3 buckets whose objects it reads and writes
    scanned_buckets: tuple[str, ...] = ()  # S3 buckets whose object versions it scans and tags (S3_SCAN_ACTIONS)
    topics: tuple[str, ...] = ()  # SNS topics (by name) it publishes to


# dmp-reference.md section 2. Apps and one-off tasks not listed need no AWS access: no inline policy.
APP_ACCESS = {
    "supplier-frontend": AppAccess(buckets=("agreements_bucket", "communications_bucket", "documents_bucket",
                                            "submissions_bucket")),
    "admin-frontend": AppAccess(buckets=("agreements_bucket", "communications_bucket", "reports_bucket",
                                         "documents_bucket")),
    # The buckets whose uploads notify antivirus-api (the old platform's antivirus-sns module: agreements,
    # communications, documents, submissions).
    "antivirus-api": AppAccess(scanned_buckets=("agreements_bucket", "communications_bucket", "documents_bucket",
                                                "submissions_bucket"),
                               topics=("callback_topic_name",)),
}


# --- desired roles -----------------------------------------------------------------------------------------

def service_trust(service: str, account_id: str) -> dict:
    """A trust policy letting one AWS service assume the role, only on behalf of this account
    (aws:SourceAccount guards against the confused deputy)."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
        }],
    }


def policy_document(statements: list[dict]) -> dict | None:
    """A policy from the statements that grant something; None when none does (IAM rejects empty lists)."""
    kept = [s for s in statements if s.get("Resource")]
    return {"Version": "2012-10-17", "Statement": kept} if kept else None


def role_spec(config, trust_policy, inline_policies: dict | None = None, managed_policy_arns=(),
              max_session_duration: int = DEFAULT_MAX_SESSION_SECONDS, tags: dict | None = None,
              path: str = names.IAM_PATH) -> dict:
    """A role's canonical spec (see the module docstring). Inline policies that are None are left out."""
    return {
        "path": path,
        "trust_policy": canonical.policy(trust_policy),
        "inline_policies": {name: canonical.policy(doc) for name, doc in sorted((inline_policies or {}).items())
                            if doc is not None},
        "managed_policy_arns": sorted(set(managed_policy_arns)),
        "max_session_duration": max_session_duration,
        "tags": config.resource_tags(**(tags or {})),
    }


def ecr_repository_arns(state) -> list[str]:
    """The ECR repositories the task definitions' images come from; images outside ECR need no grant."""
    arns = set()
    for document in state.task_definitions.values():
        for container in document.get("containerDefinitions", []):
            match = ECR_IMAGE.match(container.get("image", ""))
            if match:
                arns.add(f"arn:aws:ecr:{match['region']}:{match['account']}:repository/{match['repository']}")
    return sorted(arns)


def log_stream_arns(state) -> list[str]:
    """The log groups the task definitions write to, as the ARNs their streams live under."""
    config = state.config
    arns = set()
    for document in state.task_definitions.values():
        for container in document.get("containerDefinitions", []):
            options = (container.get("logConfiguration") or {}).get("options") or {}
            if options.get("awslogs-group"):
                region = options.get("awslogs-region", config.environment.region)
                arns.add(f"arn:aws:logs:{region}:{config.environment.account_id}:log-group:"
                         f"{options['awslogs-group']}:*")
    return sorted(arns)


def secret_resource(value_from: str) -> str:
    """The ARN IAM authorises for a task definition secret: a Secrets Manager reference may end in
    `:json-key:version-stage:version-id`, which is not part of the secret's ARN."""
    if ":secretsmanager:" in value_from:
        return ":".join(value_from.split(":")[:7])
    return value_from


def execution_policy(state) -> dict | None:
    config = state.config
    secrets = [secret_resource(a) for a in state.secret_arns()]
    repositories = ecr_repository_arns(state)
    statements = [
        # The registry token is account-wide; it is only worth having when some image is in ECR.
        {"Sid": "EcrToken", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken",
         "Resource": ["*"] if repositories else []},
        {"Sid": "PullImages", "Effect": "Allow",
         "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
         "Resource": repositories},
        {"Sid": "WriteLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": log_stream_arns(state)},
        {"Sid": "ReadSecrets", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
         "Resource": sorted({a for a in secrets if ":secretsmanager:" in a})},
        {"Sid": "ReadParameters", "Effect": "Allow", "Action": "ssm:GetParameters",
         "Resource": sorted({a for a in secrets if ":ssm:" in a})},
    ]
    if config.secrets_kms_key_arn and secrets:
        region = config.environment.region
        statements.append({
            "Sid": "DecryptSecrets", "Effect": "Allow", "Action": "kms:Decrypt",
            "Resource": [config.secrets_kms_key_arn],
            # Only as Secrets Manager or SSM decrypt a secret for this role, never directly.
            "Condition": {"StringEquals": {"kms:ViaService": [f"secretsmanager.{region}.amazonaws.com",
                                                              f"ssm.{region}.amazonaws.com"]}},
        })
    return policy_document(statements)


def _setting(config, key: str, stem: str) -> str:
    if key not in config.settings:
        raise ConfigError(f"settings.{key}: missing; the {stem} task role needs it "
                          f"(see APP_ACCESS in dmp_deploy/resources/iam_roles.py). Add it to "
                          f"config/{config.env}.toml [settings].")
    return config.settings[key]


def app_access_policy(config, stem: str) -> dict | None:
    access = APP_ACCESS.get(stem, AppAccess())
    buckets = sorted({_setting(config, key, stem) for key in access.buckets})
    scanned = sorted({_setting(config, key, stem) for key in access.scanned_buckets})
    env = config.environment
    topics = sorted({f"arn:aws:sns:{env.region}:{env.account_id}:{_setting(config, key, stem)}"
                     for key in access.topics})
    return policy_document([
        {"Sid": "BucketObjects", "Effect": "Allow", "Action": list(S3_OBJECT_ACTIONS),
         "Resource": [f"arn:aws:s3:::{b}/*" for b in buckets]},
        {"Sid": "ListBuckets", "Effect": "Allow", "Action": list(S3_BUCKET_ACTIONS),
         "Resource": [f"arn:aws:s3:::{b}" for b in buckets]},
        {"Sid": "ScanObjectVersions", "Effect": "Allow", "Action": list(S3_SCAN_ACTIONS),
         "Resource": [f"arn:aws:s3:::{b}/*" for b in scanned]},
        {"Sid": "PublishCallbacks", "Effect": "Allow", "Action": "sns:Publish", "Resource": topics},
    ])


def ecs_exec_policy(config, stem: str) -> dict | None:
    app = config.apps.get(stem)
    if not (app and app.enable_execute_command):
        return None
    # ssmmessages has no resource-level permissions: "*" is the only possible resource.
    return policy_document([{"Sid": "EcsExec", "Effect": "Allow", "Action": list(ECS_EXEC_ACTIONS),
                             "Resource": ["*"]}])


def declared_roles(state) -> dict[str, dict]:
    """Every role this environment should have, {name: canonical spec}: the ECS execution role, one task
    role per task definition template stem, and the roles other features put in `_extra_iam_roles`."""
    config = state.config
    ecs_trust = service_trust("ecs-tasks.amazonaws.com", config.environment.account_id)
    roles = {names.execution_role(config): role_spec(
        config, ecs_trust, {EXECUTION_POLICY: execution_policy(state)})}
    extra_task_policies = state.resources.get("_extra_task_role_policies", {})  # {stem: {policy name: doc}}
    for stem in sorted(state.task_definitions):
        roles[names.task_role(config, stem)] = role_spec(config, ecs_trust, {
            TASK_POLICY: app_access_policy(config, stem),
            ECS_EXEC_POLICY: ecs_exec_policy(config, stem),
            **extra_task_policies.get(stem, {}),
        })
    for name, spec in sorted(state.resources.get("_extra_iam_roles", {}).items()):
        if name in roles:
            raise ConfigError(f"IAM role {name!r} is declared twice: as an ECS role and in _extra_iam_roles")
        roles[name] = role_spec(config, spec["trust_policy"], spec.get("inline_policies"),
                                spec.get("managed_policy_arns", ()),
                                spec.get("max_session_duration", DEFAULT_MAX_SESSION_SECONDS),
                                spec.get("tags"))
    return roles


# --- live roles --------------------------------------------------------------------------------------------

def live_spec(detail: dict, max_session_duration: int | None) -> dict:
    """A role from GetAccountAuthorizationDetails (plus its MaxSessionDuration) in canonical form."""
    return {
        "path": detail["Path"],
        "trust_policy": canonical.policy(detail["AssumeRolePolicyDocument"]),
        "inline_policies": {p["PolicyName"]: canonical.policy(p["PolicyDocument"])
                            for p in sorted(detail.get("RolePolicyList", []), key=lambda p: p["PolicyName"])},
        "managed_policy_arns": sorted(p["PolicyArn"] for p in detail.get("AttachedManagedPolicies", [])),
        "max_session_duration": int(max_session_duration) if max_session_duration else None,
        "tags": canonical.tags_from_list(detail.get("Tags")),
    }


def owned(config, detail: dict, declared: set[str]) -> bool:
    if detail["RoleName"] in declared:
        return True
    tags = canonical.tags_from_list(detail.get("Tags"))
    return (detail["Path"] == names.IAM_PATH
            and detail["RoleName"].startswith(f"{config.prefix}-")
            and tags.get("dmp:managed-by") == "dmp-deploy"
            and tags.get("dmp:env") == config.env)


@dataclass(frozen=True)
class AuthorizationDetails:
    roles: list[dict]  # RoleDetailList: every role of the account
    policies: list[dict]  # Policies: every customer-managed policy of the account, with its versions


def authorization_details(ctx: Context) -> AuthorizationDetails:
    """GetAccountAuthorizationDetails for roles and customer-managed policies together, every page (up to 1000
    items a page), once per run: this kind and iam_policies.py share it (memoised on the context)."""
    def read() -> AuthorizationDetails:
        roles: list[dict] = []
        policies: list[dict] = []
        marker: dict = {}
        while True:
            page = ctx.aws.call("iam", "get_account_authorization_details",
                                Filter=["Role", "LocalManagedPolicy"], MaxItems=IAM_PAGE, **marker)
            roles += page.get("RoleDetailList") or []
            policies += page.get("Policies") or []
            if not page.get("IsTruncated"):
                return AuthorizationDetails(roles, policies)
            marker = {"Marker": page["Marker"]}

    return ctx.memo("iam: account authorization details", read)


LISTED = "iam: roles"  # prefetched for the read (Context.take)


class IamRoles(ResourceKind):
    kind = "iam_role"
    depends_on = ("kms_key",)  # policies may name the owned key by placeholder (kms_keys.arn_placeholder)
    replace_fields = frozenset({"path"})

    def desired(self, state) -> dict[str, dict]:
        return declared_roles(state)

    def prefetch(self, ctx: Context) -> None:
        ctx.memo(LISTED, lambda: self._listed(ctx))

    @staticmethod
    def _listed(ctx: Context) -> tuple[list[dict], list[dict]]:
        """The account's roles with their policies, and ListRoles under our path (for MaxSessionDuration)."""
        return tuple(ctx.map(lambda read: read(), [
            lambda: authorization_details(ctx).roles,
            lambda: ctx.aws.pages("iam", "list_roles", "Roles", PathPrefix=names.IAM_PATH, MaxItems=IAM_PAGE),
        ]))

    def read(self, ctx: Context) -> dict[str, Live]:
        details, listed = ctx.take(LISTED, lambda: self._listed(ctx))
        declared = set(ctx.desired.resources.get(self.kind, {}))
        ours = [d for d in details if owned(ctx.config, d, declared)]
        sessions = {r["RoleName"]: r.get("MaxSessionDuration") for r in listed}
        # A declared name outside our path (made by hand, or by an older layout) is about to be replaced;
        # one GetRole each keeps its plan honest. Rare, so no batching needed.
        elsewhere = [d["RoleName"] for d in ours if d["RoleName"] not in sessions]
        for name, role in zip(elsewhere, ctx.map(
                lambda n: ctx.aws.call("iam", "get_role", RoleName=n)["Role"], elsewhere)):
            sessions[name] = role.get("MaxSessionDuration")
        out = {}
        for d in ours:
            name = d["RoleName"]
            ctx.registry.put(self.kind, name, arn=d["Arn"])
            spec = live_spec(d, sessions.get(name))
            spec["inline_policies"] = {n: canonical.policy(kms_keys.with_placeholders(ctx.registry, doc))
                                       for n, doc in spec["inline_policies"].items()}
            out[name] = Live(spec=spec, ids={
                "arn": d["Arn"],
                "instance_profiles": [p["InstanceProfileName"] for p in d.get("InstanceProfileList", [])],
            })
        return out

    def diff(self, name: str, desired: dict, live: Live) -> list[FieldChange]:
        # Inline policies and tags are compared by name and key; the trust policy is one document.
        changes = diffing.field_changes(desired, live.spec, self.replace_fields, ignore=frozenset({"trust_policy"}))
        if desired["trust_policy"] != live.spec["trust_policy"]:
            changes.append(FieldChange("trust_policy", live.spec["trust_policy"], desired["trust_policy"]))
        return sorted(changes, key=lambda c: c.path)

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        role = ctx.aws.call("iam", "create_role", RoleName=name, Path=spec["path"],
                            AssumeRolePolicyDocument=json.dumps(spec["trust_policy"]),
                            MaxSessionDuration=spec["max_session_duration"],
                            Tags=canonical.tags_to_list(spec["tags"]))["Role"]
        ctx.registry.put(self.kind, name, arn=role["Arn"])
        for policy_name, document in spec["inline_policies"].items():
            ctx.aws.call("iam", "put_role_policy", RoleName=name, PolicyName=policy_name,
                         PolicyDocument=json.dumps(kms_keys.with_arns(ctx, document)))
        for arn in spec["managed_policy_arns"]:
            ctx.aws.call("iam", "attach_role_policy", RoleName=name, PolicyArn=arn)

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        have = live.spec
        if spec["trust_policy"] != have["trust_policy"]:
            ctx.aws.call("iam", "update_assume_role_policy", RoleName=name,
                         PolicyDocument=json.dumps(spec["trust_policy"]))
        for policy_name, document in spec["inline_policies"].items():
            if have["inline_policies"].get(policy_name) != document:
                ctx.aws.call("iam", "put_role_policy", RoleName=name, PolicyName=policy_name,
                             PolicyDocument=json.dumps(kms_keys.with_arns(ctx, document)))
        for policy_name in sorted(set(have["inline_policies"]) - set(spec["inline_policies"])):
            ctx.aws.call("iam", "delete_role_policy", RoleName=name, PolicyName=policy_name)
        attach, detach = diffing.set_difference(spec["managed_policy_arns"], have["managed_policy_arns"])
        for arn in detach:
            ctx.aws.call("iam", "detach_role_policy", RoleName=name, PolicyArn=arn)
        for arn in attach:
            ctx.aws.call("iam", "attach_role_policy", RoleName=name, PolicyArn=arn)
        if spec["max_session_duration"] != have["max_session_duration"]:
            ctx.aws.call("iam", "update_role", RoleName=name, MaxSessionDuration=spec["max_session_duration"])
        stale = sorted(set(have["tags"]) - set(spec["tags"]))
        if stale:
            ctx.aws.call("iam", "untag_role", RoleName=name, TagKeys=stale)
        changed = {k: v for k, v in spec["tags"].items() if have["tags"].get(k) != v}
        if changed:
            ctx.aws.call("iam", "tag_role", RoleName=name, Tags=canonical.tags_to_list(changed))

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        # IAM refuses to delete a role that still has policies or sits in an instance profile.
        for policy_name in sorted(live.spec["inline_policies"]):
            ctx.aws.call("iam", "delete_role_policy", RoleName=name, PolicyName=policy_name)
        for arn in live.spec["managed_policy_arns"]:
            ctx.aws.call("iam", "detach_role_policy", RoleName=name, PolicyArn=arn)
        for profile in live.ids.get("instance_profiles", []):
            ctx.aws.call("iam", "remove_role_from_instance_profile", RoleName=name, InstanceProfileName=profile)
        ctx.aws.call("iam", "delete_role", RoleName=name)
