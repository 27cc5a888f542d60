"""The shared flow of `apply` and `revert`: observe the lock, plan, show, lock, re-plan under the lock when the
lock changed hands, execute, record.

A plan with nothing to do ends before the lock: a no-op apply makes no mutating call at all (not even the lock's).
With changes, the lock is taken, so nothing acts on a plan another run made stale: the plan is rebuilt under it
unless the lock was taken from exactly the state read just before planning (If-Match on its ETag, see lock.py),
which proves no other apply or revert held it since the plan's reads, and the plan is recent
(`PLAN_STANDS_SECONDS`: a plan a person looked at for longer is made again). Only a run whose every change (and
rollout) succeeded writes a release record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import structlog

from dmp_deploy import executor, planner, releases
from dmp_deploy.commands.output import emit_text
from dmp_deploy.errors import PlanError
from dmp_deploy.lock import DeployLock, observe
from dmp_deploy.plan import Plan
from dmp_deploy.session import Environment
from dmp_deploy.state_store import StateStore, at_once

log = structlog.get_logger()

# How old a plan may be when the lock is taken and still be carried out without planning again, when nobody held
# the lock in between. Long enough for an unattended run (CI, --yes) to plan, check and lock; shorter than a person
# reading the plan, during which the live state may change by hand.
PLAN_STANDS_SECONDS = 60.0


@dataclass
class Outcome:
    plan: Plan
    applied: int = 0
    release: int | None = None
    replanned: bool = False
    notes: list[str] = field(default_factory=list)


def deploy(env: Environment, *, allow_destroy: bool, quiet: bool, command: str,
           confirm: Callable[[Plan], bool], kind: str = "apply", reverted_to: int | None = None,
           preflight: Callable | None = None, confirm_again: Callable[[Plan, Plan], bool] | None = None,
           lock_wait_seconds: int | None = None, color: bool = False, reverted: int | None = None,
           before_showing: Callable | None = None, check: Callable | None = None,
           concurrency: int | None = None) -> Outcome:
    """`confirm` approves the plan shown; `confirm_again(approved, now)` a different plan built under the lock
    (None: carry it out, saying so). `lock_wait_seconds` overrides the config's wait for the lock.
    `before_showing(rec)` runs on the first plan before it is shown (revert's header). `check(rec)` runs on both
    plans and raises to stop (a saved plan that no longer matches). `concurrency` overrides the config's
    deployment.concurrent_changes (how many changes are carried out at the same time)."""
    store = StateStore(env.config, env.aws)
    # Before the plan's reads: what the lock must still be for the plan to stand. Read beside the account guard when
    # the command asked for it (session.open_environment(observe_lock=True)), here otherwise.
    seen = env.take_lock_observation() or observe(store)
    planned_at = time.monotonic()
    rec = planner.build_plan(env.ctx, env.kinds)
    if check:
        check(rec)
    if before_showing:
        before_showing(rec)
    if not quiet:
        emit_text(rec.plan.render_text(color))
    if rec.plan.empty:
        return Outcome(rec.plan)
    executor.refuse_destroys(rec, allow_destroy)
    # Preflight and the state bucket's one read (is it complete?) at the same time: both only read. Preflight's
    # error, if any, is the one raised.
    _, complete = at_once(lambda job: job(), [lambda: preflight and preflight(rec), store.complete], limit=2)
    if not confirm(rec.plan):
        raise PlanError("Cancelled: nothing was changed.")

    store.ensure(concurrency, complete=complete)
    deployment = env.config.deployment
    wait = deployment.lock_wait_seconds if lock_wait_seconds is None else lock_wait_seconds
    with DeployLock(store, env.aws.identity, command, deployment.lock_lease_seconds, wait, seen=seen) as lock:
        if lock.undisturbed and time.monotonic() - planned_at <= PLAN_STANDS_SECONDS:
            locked = rec  # nobody held the lock since the plan's reads: the plan stands
            log.info("plan stands: the lock did not change hands since it was made")
        else:
            env.ctx = env.fresh_context()
            locked = planner.build_plan(env.ctx, env.kinds)
            if check:
                check(locked)
        outcome = Outcome(locked.plan, replanned=locked.plan.as_dict() != rec.plan.as_dict())
        if outcome.replanned:
            if confirm_again is None:
                if not quiet:
                    emit_text("\nThe live state changed while waiting for the lock; carrying out this plan "
                              "instead:\n" + locked.plan.render_text(color))
            elif not locked.plan.empty and not confirm_again(rec.plan, locked.plan):
                raise PlanError("Cancelled: nothing was changed.")
        if locked.plan.empty:
            return outcome
        if preflight and outcome.replanned:
            preflight(locked)
        executor.refuse_destroys(locked, allow_destroy)
        done = executor.execute(locked, allow_destroy=allow_destroy, before_each=lock.check,
                                concurrency=concurrency)
        outcome.applied = len(done)
        if all(c.kind == releases.RECORD_KIND and c.fields and c.fields[0].path == "index" for c in done):
            # Only the index of a release already recorded was repaired: that release is the current one.
            outcome.release = locked.live[releases.RECORD_KIND][env.config.env].ids["number"]
            return outcome
        record = releases.build_record(locked, env.aws.identity, kind=kind, reverted_to=reverted_to,
                                       reverted=reverted)
        outcome.release = releases.write(store, record, locked.ctx)
        log.info("release recorded", release=outcome.release, env=env.config.env)
    return outcome
