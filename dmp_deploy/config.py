"""Per-environment configuration: `config/<env>.toml`, validated on load into frozen dataclasses.

Every unknown key, wrong type and missing value is reported at once, with the file and the dotted key.
config/README.md documents each key.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from dmp_deploy import schema
from dmp_deploy.apps import APPS
from dmp_deploy.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "config"

# CloudWatch Logs accepts only these retention periods.
RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                  2922, 3288, 3653)
SECRET_ARN = re.compile(r"^arn:aws:(secretsmanager:[a-z0-9-]+:\d{12}:secret:.+|ssm:[a-z0-9-]+:\d{12}:parameter/.+)$")
FARGATE_CPU_MEMORY = {  # cpu units -> allowed memory (MiB) for Fargate tasks
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
}


# Settings that were URLs of other apps, hand-written per environment: now derived from the Cloud Map names
# (names.internal_url). Setting key -> the app whose URL it was.
DERIVED_SETTINGS = {"data_api_url": "api", "search_api_url": "search-api", "antivirus_api_url": "antivirus-api"}


@dataclass(frozen=True)
class Lookup:
    """Something that exists before this tool runs, found by id(s) or by tags."""

    id: str | None = None
    ids: list[str] | None = None
    tags: dict[str, str] | None = None

    def check(self):
        given = [k for k in ("id", "ids", "tags") if getattr(self, k) is not None]
        if len(given) != 1:
            return [("", f"give exactly one of id, ids or tags (got {', '.join(given) or 'none'})")]
        return []


@dataclass(frozen=True)
class Environment:
    name: str
    region: str
    account_id: str
    name_prefix: str  # every resource name starts with it, e.g. "dmp-staging"
    embedded_aws: bool = False  # true only for `local`: target the embedded moto server

    def check(self):
        problems = []
        if not re.fullmatch(r"\d{12}", self.account_id or ""):
            problems.append(("account_id", f"must be 12 digits, got {self.account_id!r}"))
        if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", self.region or ""):
            problems.append(("region", f"is not an AWS region name: {self.region!r}"))
        if not re.fullmatch(r"[a-z][a-z0-9-]{1,20}", self.name_prefix or ""):
            problems.append(("name_prefix", "must be 2-21 lowercase letters, digits or hyphens"))
        return problems


@dataclass(frozen=True)
class Network:
    vpc: Lookup
    subnets: Lookup  # the private subnets tasks run in (and the internal load balancer)
    # The security group of a load balancer the tool does not own: only with public_entry.existing_target_group_arn.
    load_balancer_security_group: Lookup | None = None
    https_egress_cidrs: list[str] = ("0.0.0.0/0",)  # AWS APIs, ECR, Notify (or VPC endpoints' ranges)

    def check(self):
        problems = []
        for i, cidr in enumerate(self.https_egress_cidrs):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                problems.append((f"https_egress_cidrs[{i}]", f"{cidr!r} is not an IPv4 or IPv6 CIDR block"))
        return problems


@dataclass(frozen=True)
class Logs:
    retention_days: int
    add_users_retention_days: int = 3  # the add-users task's logs: short, even though passwords are redacted
    kms_key_arn: str | None = None

    def check(self):
        return [(k, f"must be one of CloudWatch's retention periods {RETENTION_DAYS}")
                for k in ("retention_days", "add_users_retention_days") if getattr(self, k) not in RETENTION_DAYS]


@dataclass(frozen=True)
class Cluster:
    container_insights: Literal["enabled", "enhanced", "disabled"] = "enabled"
    default_capacity_provider: Literal["FARGATE", "FARGATE_SPOT"] = "FARGATE"


MAX_CONCURRENT_CHANGES = 32


@dataclass(frozen=True)
class Deployment:
    minimum_healthy_percent: int = 100
    maximum_percent: int = 200
    rollout_timeout_seconds: int = 900
    # Between two DescribeServices polls while waiting for rollouts (jittered by +-20%). AWS's own waiter
    # polls every 15 s; the embedded AWS steps a rollout on every describe, so local polls fast.
    rollout_poll_seconds: float = 10.0
    keep_revisions: int = 10  # ACTIVE task definition revisions kept per family (those a service runs, too)
    lock_lease_seconds: int = 300  # a deploy lock not renewed for this long is expired and may be taken over
    lock_wait_seconds: int = 600  # how long a second apply waits for the lock before failing
    # Changes apply carries out at the same time, each once the changes it depends on are done (executor.py).
    # 1: one at a time, in the plan's order. At most 32: botocore keeps 32 connections per client (aws.py).
    concurrent_changes: int = 8

    def check(self):
        problems = [] if self.keep_revisions >= 1 else [("keep_revisions", "must be 1 or more")]
        if not 1 <= self.concurrent_changes <= MAX_CONCURRENT_CHANGES:
            problems.append(("concurrent_changes", f"must be from 1 (one change at a time, in the plan's order) "
                                                   f"to {MAX_CONCURRENT_CHANGES}"))
        if not isinstance(self.rollout_poll_seconds, (int, float)) or not 0 < self.rollout_poll_seconds <= 300:
            problems.append(("rollout_poll_seconds", "must be a number of seconds above 0 and at most 300"))
        return problems


@dataclass(frozen=True)
class AppConfig:
    image_tag: str
    desired_count: int
    cpu: int
    memory: int
    target_group_arn: str | None = None  # retired: refused with a pointer to [public_entry]
    enable_execute_command: bool = False

    def check(self):
        if self.target_group_arn is not None:
            return [("target_group_arn", "is no longer used: the tool creates the public load balancer and the "
                                         "router's target group itself. Remove this key; to keep serving from a load "
                                         "balancer that already exists, put this ARN in [public_entry] "
                                         "existing_target_group_arn instead (see config/README.md)")]
        allowed = FARGATE_CPU_MEMORY.get(self.cpu)
        if allowed is None:
            return [("cpu", f"must be a Fargate CPU size {tuple(FARGATE_CPU_MEMORY)}, got {self.cpu}")]
        if self.memory not in allowed:
            return [("memory", f"{self.memory} MiB is not allowed with cpu {self.cpu} (allowed: {allowed})")]
        if self.desired_count < 0:
            return [("desired_count", "must be 0 or more")]
        return []


SSL_POLICY = re.compile(r"^ELBSecurityPolicy-[A-Za-z0-9-]+$")


@dataclass(frozen=True)
class PublicEntry:
    """The internet's way in: an internet-facing ALB the tool owns (HTTPS 443 with the certificate, HTTP 80
    redirecting to it) forwarding to the router's target group. Or, with `existing_target_group_arn`, a load
    balancer the account already has: the tool then creates no public ALB and registers the router with that
    target group (its security group is network.load_balancer_security_group)."""

    subnets: Lookup | None = None  # the public subnets the internet-facing ALB lives in
    certificate_arn: str | None = None  # the ACM certificate the HTTPS listener serves ...
    certificate_domain: str | None = None  # ... or found by its domain name (one of the two)
    ssl_policy: str = "ELBSecurityPolicy-TLS13-1-2-2021-06"  # TLS 1.2 and 1.3 only
    existing_target_group_arn: str | None = None

    def check(self):
        if self.existing_target_group_arn:
            extra = [k for k in ("subnets", "certificate_arn", "certificate_domain") if getattr(self, k)]
            problems = [(k, "remove it: with existing_target_group_arn the tool creates no public load balancer, "
                            "so this key would be ignored") for k in extra]
            if not re.match(r"^arn:aws:elasticloadbalancing:[a-z0-9-]+:\d{12}:targetgroup/.+$",
                            self.existing_target_group_arn):
                problems.append(("existing_target_group_arn", "must be a target group ARN "
                                 "(arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID)"))
            return problems
        problems = []
        if self.subnets is None:
            problems.append(("subnets", "missing: the public subnets of the internet-facing load balancer, e.g. "
                                        "subnets = { tags = { \"dmp:tier\" = \"public\" } }"))
        if bool(self.certificate_arn) == bool(self.certificate_domain):
            problems.append(("certificate_arn", "give exactly one of certificate_arn or certificate_domain (the "
                                                "ACM certificate the HTTPS listener serves)"))
        if self.certificate_arn and not re.match(r"^arn:aws:acm:[a-z0-9-]+:\d{12}:certificate/.+$",
                                                 self.certificate_arn):
            problems.append(("certificate_arn", "must be an ACM certificate ARN "
                                                "(arn:aws:acm:REGION:ACCOUNT:certificate/ID)"))
        if not SSL_POLICY.match(self.ssl_policy):
            problems.append(("ssl_policy", f"must be an ELB security policy name (ELBSecurityPolicy-...), "
                                           f"got {self.ssl_policy!r}"))
        return problems

    @property
    def owned(self) -> bool:
        """Whether the tool creates and owns the internet-facing load balancer."""
        return not self.existing_target_group_arn


@dataclass(frozen=True)
class Images:
    registry: str  # e.g. "123456789012.dkr.ecr.eu-west-2.amazonaws.com"
    aws_cli_image: str = "public.ecr.aws/aws-cli/aws-cli:2.22.0"  # the add-users copier and cleaner
    clamav_image: str = "clamav/clamav:1.4"  # antivirus-api's clamd sidecar (ClamAV's own image, or a mirror)


# Bounds of add_users settings: the add-users task (512 MiB of memory) holds the whole file, parsed; a Step
# Functions standard execution, and so any task timeout in it, lasts at most one year.
MAX_USERS_FILE_BYTES = 64 * 1024 * 1024
MAX_TASK_TIMEOUT_SECONDS = 365 * 24 * 60 * 60


@dataclass(frozen=True)
class AddUsers:
    RETIRED_KEYS: ClassVar[dict[str, str]] = {
        "api_internal_url": "the api's internal URL is now derived from the environment's service discovery "
                            "namespace (http://api.<name_prefix>.internal:8080); remove the key"}
    bucket_name: str
    upload_prefix: str = "uploads/"
    kms_key_arn: str | None = None  # none: the tool creates and owns a key (alias/<prefix>-add-users)
    # Deny non-TLS requests and unencrypted puts in the bucket policy. Only config/local turns this off,
    # because moto ignores the policy's conditions and would deny every request (see moto_compat.py).
    enforce_tls_in_bucket_policy: bool = True
    max_file_bytes: int = 1_048_576
    task_timeout_seconds: int = 900
    # What adds the users in the api image: "bundled", the tool's add-users program shipped in the task
    # definition (dmp_deploy/container/add_users_program.py; the api image does not contain
    # scripts/add_users.py), or "api_script", that script, for an api image that ships it (after the same
    # checks, its output redacted by the program).
    program: Literal["bundled", "api_script"] = "bundled"
    # The EFS file system the tasks share the uploaded file through (dmp_deploy/resources/efs.py).
    efs_kms_key_arn: str | None = None  # none: the add-users key (kms_key_arn, or the one the tool owns)
    access_point_path: str = "/add-users"  # the access point's root directory, created with mode 0700
    posix_uid: int = 1000  # the POSIX user every access through the access point acts as
    posix_gid: int = 1000
    # The operative's access (dmp_deploy/resources/add_users_access.py): "role", an IAM role operatives assume
    # (trusted by the account root: the account's own IAM policies say who may assume it), or "group_policy",
    # a managed policy to attach to the operatives' IAM group.
    operative_access: Literal["role", "group_policy"] = "role"
    operative_requires_mfa: bool = True  # "role": assuming it needs MFA
    # Lets `add-users` follow the run it started (states:ListExecutions, DescribeExecution, GetExecutionHistory);
    # off: operatives can only upload, and use --no-wait.
    operative_follows_executions: bool = True
    execution_log_level: Literal["ERROR", "ALL"] = "ERROR"  # Step Functions logging; never execution data

    def check(self):
        if not self.upload_prefix.endswith("/") or self.upload_prefix.startswith("/"):
            return [("upload_prefix", "must end with '/' and not start with one, e.g. 'uploads/'")]
        if "*" in self.upload_prefix or "?" in self.upload_prefix:
            # it becomes an IAM resource (`<bucket>/<prefix>*`), where they are wildcards
            return [("upload_prefix", "must not contain '*' or '?' (IAM policies read them as wildcards)")]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.bucket_name or ""):
            return [("bucket_name", "is not a valid S3 bucket name")]
        problems = []
        if self.efs_kms_key_arn and not re.match(r"^arn:aws:kms:[a-z0-9-]+:\d{12}:key/.+$", self.efs_kms_key_arn):
            problems.append(("efs_kms_key_arn", "must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)"))
        path = self.access_point_path
        if (not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", path or "") or len(path) > 100
                or any(part in (".", "..") for part in path.split("/"))):
            problems.append(("access_point_path", f"must be an absolute directory below / such as '/add-users' "
                                                  f"(letters, digits, . _ -; at most 100 characters), got {path!r}"))
        for key in ("posix_uid", "posix_gid"):
            if not 1 <= getattr(self, key) <= 4_294_967_295:
                problems.append((key, "must be a POSIX id from 1 to 4294967295 (never root)"))
        if not 1 <= self.max_file_bytes <= MAX_USERS_FILE_BYTES:
            problems.append(("max_file_bytes", f"must be from 1 to {MAX_USERS_FILE_BYTES} bytes: the add-users task "
                                               f"(512 MiB) reads and checks the whole file in memory"))
        if not 60 <= self.task_timeout_seconds <= MAX_TASK_TIMEOUT_SECONDS:
            problems.append(("task_timeout_seconds", f"must be from 60 (a Fargate task takes about a minute to "
                                                     f"start) to {MAX_TASK_TIMEOUT_SECONDS} seconds (a Step Functions "
                                                     f"standard execution lasts at most a year)"))
        return problems


# The programs a runnable image's containers may start locally: what its entry point or command names first.
RUNNABLE_PROGRAMS = ("aws", "python", "sh")


@dataclass(frozen=True)
class LocalRunner:
    """Only with embedded_aws: which containers the embedded ECS runs as local processes
    (dmp_deploy/local/task_runner.py). `runnable_images` maps an image repository (the image without its tag)
    to the programs of that image the local machine provides (from the tool's .venv first, then the system):
    a container runs when its image is listed and its entry point (or command) starts with one of them."""

    runnable_images: dict[str, list[str]] = field(default_factory=dict)

    def check(self):
        problems = []
        for image, programs in self.runnable_images.items():
            if ":" in image.rsplit("/", 1)[-1] or "@" in image:
                problems.append((f"runnable_images.{image}", "name the image repository without a tag or digest, "
                                                             "e.g. \"public.ecr.aws/aws-cli/aws-cli\""))
            unknown = [p for p in programs if p not in RUNNABLE_PROGRAMS]
            if unknown or not programs:
                problems.append((f"runnable_images.{image}", f"must list programs from {', '.join(RUNNABLE_PROGRAMS)} "
                                                             f"(got {', '.join(programs) or 'none'})"))
        return problems


@dataclass(frozen=True)
class Config:
    environment: Environment
    network: Network
    logs: Logs
    images: Images
    add_users: AddUsers
    apps: dict[str, AppConfig]
    public_entry: PublicEntry
    secrets: dict[str, str]  # logical secret name (used by templates) -> Secrets Manager or SSM ARN
    settings: dict[str, str] = field(default_factory=dict)  # plain values the templates use
    cluster: Cluster = Cluster()
    deployment: Deployment = Deployment()
    tags: dict[str, str] = field(default_factory=dict)  # extra tags on every resource
    # A customer-managed KMS key encrypting the secrets: the execution role may then kms:Decrypt through
    # Secrets Manager and SSM only. None: the secrets use the AWS-managed keys, which need no grant.
    secrets_kms_key_arn: str | None = None
    # Only for the embedded AWS: the containers its ECS runs as local processes (None: none runs).
    local_runner: LocalRunner | None = None

    def check(self):
        problems = []
        for name in sorted(set(APPS) - set(self.apps)):
            problems.append((f"apps.{name}", "missing: every Digital Marketplace app needs an [apps.NAME] table"))
        for name in sorted(set(self.apps) - set(APPS)):
            problems.append((f"apps.{name}", f"unknown app (known: {', '.join(sorted(APPS))})"))
        for key, arn in self.secrets.items():
            if not SECRET_ARN.match(arn):
                problems.append((f"secrets.{key}", "must be a Secrets Manager secret ARN or an SSM parameter "
                                                   "ARN (the value itself never goes in config)"))
        namespace = f"{self.environment.name_prefix}.internal"  # names.namespace (names.py imports this module)
        for key, value in sorted(self.settings.items()):
            host = _host(value)
            if host.endswith(f".{namespace}") and host.removesuffix(f".{namespace}") not in APPS:
                problems.append((f"settings.{key}", f"{host} is inside the service discovery namespace {namespace}, "
                                                    f"where only the apps are registered: it would not resolve. "
                                                    f"Use the service's own endpoint (e.g. an OpenSearch domain's "
                                                    f"VPC endpoint)"))
        for key in sorted(set(self.settings) & set(DERIVED_SETTINGS)):
            problems.append((f"settings.{key}", f"no longer a setting: {DERIVED_SETTINGS[key]} is now derived from "
                                                f"the environment's service discovery namespace "
                                                f"(templates: internal_url(\"{DERIVED_SETTINGS[key]}\")); remove the key"))
        for key in self.tags:
            if key.startswith(("dmp:", "aws:")):
                problems.append((f"tags.{key}", "the dmp: and aws: prefixes are reserved"))
        if self.public_entry and self.network:
            lb_group = self.network.load_balancer_security_group
            if self.public_entry.owned and lb_group is not None:
                problems.append(("network.load_balancer_security_group",
                                 "remove it: the tool owns the public load balancer and its security group; it is "
                                 "only for [public_entry] existing_target_group_arn"))
            if not self.public_entry.owned and lb_group is None:
                problems.append(("network.load_balancer_security_group",
                                 "missing: with [public_entry] existing_target_group_arn, name the security group "
                                 "of that load balancer (the router admits port 80 from it)"))
        if self.local_runner is not None and self.environment and not self.environment.embedded_aws:
            problems.append(("local_runner", "only for the embedded AWS (environment.embedded_aws = true): real ECS "
                                             "runs the containers' images; remove the table"))
        if self.secrets_kms_key_arn and not re.match(r"^arn:aws:kms:[a-z0-9-]+:\d{12}:key/.+$", self.secrets_kms_key_arn):
            problems.append(("secrets_kms_key_arn", "must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)"))
        return problems

    @property
    def env(self) -> str:
        return self.environment.name

    @property
    def prefix(self) -> str:
        return self.environment.name_prefix

    def resource_tags(self, **extra: str) -> dict[str, str]:
        """The tags every owned resource carries: ownership first, so that a lost state never duplicates."""
        return {**self.tags, **extra, "dmp:env": self.env, "dmp:managed-by": "dmp-deploy"}


def _host(value) -> str:
    """The host name in a URL (or a bare host[:port]) setting, lower-cased; "" when there is none."""
    if not isinstance(value, str):
        return ""
    rest = value.split("://", 1)[-1]
    return rest.split("/", 1)[0].split("@")[-1].rsplit(":", 1)[0].lower() if rest else ""


def available_environments(config_dir: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (config_dir or CONFIG_DIR).glob("*.toml"))


def load_config(env: str, config_dir: Path | None = None) -> Config:
    config_dir = config_dir or CONFIG_DIR
    path = config_dir / f"{env}.toml"
    if not path.is_file():
        known = ", ".join(available_environments(config_dir)) or "none"
        raise ConfigError(f"no configuration for environment {env!r}: {path} does not exist "
                          f"(environments: {known})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}. Fix the syntax and run again.") from None
    config = schema.load(Config, data, str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
    if config.environment.name != env:
        raise ConfigError(f"{path}: environment.name is {config.environment.name!r} but the file is for {env!r}")
    return config
