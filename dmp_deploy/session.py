"""Opening an environment: config, desired state, the AWS seam (embedded or real) and a context."""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import structlog

from dmp_deploy import desired as desired_state
from dmp_deploy import validation
from dmp_deploy.aws import Aws
from dmp_deploy.config import Config, load_config
from dmp_deploy.errors import UserError
from dmp_deploy.resources import all_kinds
from dmp_deploy.resources.base import Context, ResourceKind

log = structlog.get_logger()
LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
# Called with every new seam before its first AWS call. Empty in normal runs; tests and benchmarks append here to
# attach fault injectors or hooks to the seam a CLI command opens (tests/faults.py).
ON_CONNECT: list[Callable[[Aws], None]] = []


@dataclass
class Environment:
    config: Config
    kinds: list[ResourceKind]
    ctx: Context
    # The deploy lock as read beside the account guard (`open_environment(observe_lock=True)`), before any of the
    # plan's reads: deploy.py takes it once (`take_lock_observation`).
    lock_seen: Any = None

    def take_lock_observation(self):
        seen, self.lock_seen = self.lock_seen, None
        return seen

    @property
    def aws(self) -> Aws:
        return self.ctx.aws

    def fresh_context(self) -> Context:
        """A new context (empty registry and lookups, same pins) on the same seam and desired state."""
        ctx = Context(self.config, self.ctx.aws, self.ctx.desired)
        ctx.pins.update(self.ctx.pins)
        ctx.before_services.extend(self.ctx.before_services)
        return ctx


def connect(config: Config, read_only: bool = False, as_operative: bool = False,
            alongside: Callable[[Aws], None] | None = None) -> Aws:
    """The seam for this environment: the embedded AWS (started when needed) or the real account.

    `as_operative`: in the embedded AWS, sign as the add-users operative role (dmp_deploy/local/operative.py), so
    its policies are enforced as AWS enforces them; on AWS the caller's own credentials are the operative's.
    Refuses to go on when the credentials belong to another account than the config names.
    `alongside(aws)`: a read made at the same time as the account guard's (its error, if any, is raised only once the
    account is known to be the right one).
    """
    if config.environment.embedded_aws:
        from dmp_deploy.local import control, operative
        endpoint = control.ensure(config.env)["endpoint"]
        credentials = (as_operative and operative.credentials(config, endpoint, LOCAL_CREDENTIALS)) or \
            LOCAL_CREDENTIALS
        aws = Aws(config.environment.region, endpoint_url=endpoint, read_only=read_only,
                  credentials=credentials)
    else:
        aws = Aws(config.environment.region, read_only=read_only)
    for attach_to in list(ON_CONNECT):
        attach_to(aws)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="connect") as pool:
        beside = pool.submit(contextvars.copy_context().run, alongside, aws) if alongside else None
        identity = aws.call("sts", "get_caller_identity")
        aws.identity = identity.get("Arn", "unknown")
        account = identity["Account"]
        if account != config.environment.account_id:
            raise UserError(f"the AWS credentials in use belong to account {account}, but config/{config.env}.toml "
                            f"is for account {config.environment.account_id}. Nothing was changed. Use "
                            f"credentials for the right account.")
        if beside is not None:
            beside.result()
    return aws


def open_environment(env: str, image_overrides: list[str] | None = None, read_only: bool = False,
                     aws: Aws | None = None, check: bool = False, observe_lock: bool = False) -> Environment:
    """Load and validate everything locally first (no AWS call), then connect.

    `check`: also run validation.check (what `validate` checks: placeholders, public URLs, the rendered
    documents) before connecting, so that plan, apply and run-task refuse a bad config without any AWS call.
    `observe_lock`: read the deploy lock beside the account guard (apply: its plan stands when the lock has not
    changed hands since, see deploy.py), which saves that read a round trip of its own before the plan."""
    config = load_config(env)
    kinds = all_kinds()
    overrides = desired_state.parse_image_overrides(image_overrides or [], config)
    state = desired_state.build(config, kinds, overrides)
    if check:
        validation.check(state)
    seen: dict = {}
    if aws is None:
        aws = connect(config, read_only=read_only,
                      alongside=(lambda seam: seen.update(lock=_observe_lock(config, seam))) if observe_lock else None)
    environment = attach(config, kinds, state, aws, read_only)
    environment.lock_seen = seen.get("lock")
    return environment


def _observe_lock(config: Config, aws: Aws):
    from dmp_deploy.lock import observe
    from dmp_deploy.state_store import StateStore

    return observe(StateStore(config, aws))


def attach(config: Config, kinds: list[ResourceKind], state, aws: Aws, read_only: bool = False,
           pins: dict | None = None) -> Environment:
    """An environment for a given desired state (rendered from config, or loaded from a release record)."""
    if read_only and not aws.read_only:
        aws = aws.read_only_view()
    ctx = Context(config, aws, state)
    ctx.pins.update(pins or {})
    return Environment(config, kinds, ctx)


def render_only(env: str, image_overrides: list[str] | None = None):
    config = load_config(env)
    kinds = all_kinds()
    overrides = desired_state.parse_image_overrides(image_overrides or [], config)
    return desired_state.build(config, kinds, overrides)


__all__ = ["Environment", "connect", "open_environment", "render_only", "UserError"]
