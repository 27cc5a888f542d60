"""How every owned resource is named. Names are derived, so a lost local state never causes duplicates:
the tool finds its resources again by name (and by the dmp:env / dmp:managed-by tags)."""

from __future__ import annotations

from dmp_deploy.apps import APPS
from dmp_deploy.config import Config

IAM_PATH = "/dmp-deploy/"


def cluster(config: Config) -> str:
    return config.prefix


def family(config: Config, stem: str) -> str:
    """Task definition family (and service name) for an app or one-off task."""
    return f"{config.prefix}-{stem}"


def log_group(config: Config, stem: str) -> str:
    return f"/{config.prefix}/{stem}"


def log_group_prefix(config: Config) -> str:
    return f"/{config.prefix}/"


def execution_role(config: Config) -> str:
    return f"{config.prefix}-ecs-execution"


def task_role(config: Config, stem: str) -> str:
    return f"{config.prefix}-{stem}-task"


def role_arn(config: Config, role_name: str) -> str:
    return f"arn:aws:iam::{config.environment.account_id}:role{IAM_PATH}{role_name}"


def security_group(config: Config, stem: str) -> str:
    return f"{config.prefix}-{stem}"


def add_users_key_alias(config: Config) -> str:
    return f"alias/{config.prefix}-add-users"


# Load balancers and target groups: ELB names are at most 32 characters and name_prefix at most 21, so the stems
# are short. `www` is the internal path router in front of the frontends; `public` the internet-facing entry.
WWW_LOAD_BALANCER = "www"
PUBLIC_LOAD_BALANCER = "public"
TARGET_GROUP_STEMS = {
    "buyer-frontend": "buyer",
    "supplier-frontend": "supplier",
    "briefs-frontend": "briefs",
    "brief-responses-frontend": "responses",
    "admin-frontend": "admin",
    "user-frontend": "user",
    "router": "router",
}


def load_balancer(config: Config, stem: str) -> str:
    return f"{config.prefix}-{stem}"


def target_group(config: Config, app: str) -> str:
    """The target group an app's tasks register with (at most 31 characters: see TARGET_GROUP_STEMS)."""
    return f"{config.prefix}-{TARGET_GROUP_STEMS[app]}"


def listener(load_balancer_name: str, port: int) -> str:
    """A listener is named by its load balancer and port: a load balancer has one listener per port."""
    return f"{load_balancer_name}:{port}"


def load_balancer_group(config: Config, stem: str) -> str:
    """The security group of one of our load balancers."""
    return security_group(config, f"{stem}-alb")


def namespace(config: Config) -> str:
    """The environment's private DNS namespace (Cloud Map), e.g. `dmp-staging.internal`: every app is found
    inside the VPC as `<app>.<namespace>`."""
    return f"{config.prefix}.internal"


def discovery_service(config: Config, app: str) -> str:
    """An app's Cloud Map service, by its DNS name: `api.dmp-staging.internal`."""
    return f"{app}.{namespace(config)}"


def internal_url(config: Config, app: str) -> str:
    """The URL other tasks in the VPC reach an app on, through its Cloud Map name: `http://api.dmp-staging.internal:8080`.
    Plain HTTP inside the VPC, on the app's port (apps.py)."""
    if app not in APPS:
        raise KeyError(f"unknown app {app!r} (apps: {', '.join(sorted(APPS))})")
    return f"http://{discovery_service(config, app)}:{APPS[app].port}"
