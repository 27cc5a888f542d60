"""Truthful rollouts: waiting for ECS services to run exactly the task definition apply asked for.

"Stable" is not "succeeded" (field-notes.md, "Rollouts that lie"): after a circuit-breaker rollback a service
is stable again, on the OLD task definition. A rollout succeeded only when the PRIMARY deployment runs exactly
the revision we asked for, its rolloutState is COMPLETED, every older deployment has drained and the running
count equals the desired count. It failed when that deployment's rolloutState is FAILED, when the primary
runs another revision (ECS rolled back, or another deploy replaced ours), when the service is gone, or when
the deadline (config deployment.rollout_timeout_seconds) passes first.

`assess` is the pure decision on one DescribeServices answer; `wait` polls every changed service at once
(DescribeServices in batches of 10, jittered intervals), logs progress and each new service event once, a
heartbeat at least every 15 s ("n of m services done", elapsed time), and
on failure collects the stopped tasks' reasons (ListTasks desiredStatus=STOPPED, DescribeTasks by 100).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import structlog

if TYPE_CHECKING:
    from dmp_deploy.resources.base import Context

log = structlog.get_logger()

IN_PROGRESS, SUCCEEDED, FAILED = "in progress", "succeeded", "failed"
DESCRIBE_SERVICES_BATCH = 10  # DescribeServices takes at most 10 services
DESCRIBE_TASKS_BATCH = 100  # DescribeTasks takes at most 100 tasks
REASONS_SHOWN = 5
HEARTBEAT_SECONDS = 15.0  # a progress line at least this often while rollouts are followed


@dataclass(frozen=True)
class Verdict:
    state: str  # IN_PROGRESS, SUCCEEDED or FAILED
    progress: str  # "1/2 running, rollout IN_PROGRESS, 2 deployments": what a progress line shows
    reason: str = ""  # why it failed
    running_task_definition: str | None = None  # what the PRIMARY deployment runs now


@dataclass(frozen=True)
class Target:
    """A service to wait for: the revision it must end up running, and the events that were already there
    (from the CreateService/UpdateService answer) so that only new ones are logged."""

    service: str
    task_definition_arn: str
    known_events: frozenset[str] = frozenset()


@dataclass
class Outcome:
    service: str
    wanted: str
    verdict: Verdict
    stopped_reasons: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.verdict.state == FAILED


def revision(task_definition_arn: str | None) -> str:
    """`arn:aws:ecs:...:task-definition/dmp-local-api:7` -> `dmp-local-api:7`."""
    return (task_definition_arn or "(none)").rsplit("/", 1)[-1]


def assess(service: dict | None, wanted: str) -> Verdict:
    """Where one service's rollout to `wanted` (a task definition revision ARN) stands."""
    if not service or service.get("status") != "ACTIVE":
        state = service.get("status") if service else "missing"
        return Verdict(FAILED, f"service {state}", f"the service is {state}")
    deployments = service.get("deployments") or []
    primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
    if primary is None:
        return Verdict(IN_PROGRESS, "no primary deployment yet")
    running, desired = primary.get("runningCount", 0), service.get("desiredCount", 0)
    rollout_state = primary.get("rolloutState")
    progress = (f"{running}/{desired} running, rollout {rollout_state or 'unknown'}"
                + (f", {len(deployments)} deployments" if len(deployments) > 1 else ""))
    now_runs = primary.get("taskDefinition")

    if now_runs != wanted:
        ours = next((d for d in deployments if d.get("taskDefinition") == wanted), None)
        if ours is not None and ours.get("rolloutState") == "FAILED":
            why = ours.get("rolloutStateReason") or "deployment failed"
            return Verdict(FAILED, progress, f"ECS rolled back: the deployment of {revision(wanted)} failed ({why}); "
                                             f"the service runs {revision(now_runs)} again", now_runs)
        return Verdict(FAILED, progress, f"the service runs {revision(now_runs)}, not {revision(wanted)}: "
                                         f"ECS rolled back, or another deployment replaced this one", now_runs)
    if rollout_state == "FAILED":
        why = primary.get("rolloutStateReason") or "deployment failed"
        return Verdict(FAILED, progress, f"the deployment of {revision(wanted)} failed ({why}) and there was "
                                         f"nothing to roll back to", now_runs)
    drained = len(deployments) == 1 and running == desired
    if drained and rollout_state in ("COMPLETED", None):  # None: a deployment controller without rollout states
        return Verdict(SUCCEEDED, progress, running_task_definition=now_runs)
    return Verdict(IN_PROGRESS, progress, running_task_definition=now_runs)


def new_events(service: dict | None, seen: set[str]) -> list[dict]:
    """The service's events not logged yet, oldest first (DescribeServices lists the newest first)."""
    fresh = [e for e in (service or {}).get("events") or [] if e.get("id") not in seen]
    return list(reversed(fresh))


def describe_services(ctx: "Context", cluster: str, services: list[str]) -> dict[str, dict]:
    """{service name: description}, in batches of 10, the batches concurrently."""
    batches = [services[i:i + DESCRIBE_SERVICES_BATCH] for i in range(0, len(services), DESCRIBE_SERVICES_BATCH)]
    answers = ctx.map(lambda batch: ctx.aws.call("ecs", "describe_services", cluster=cluster,
                                                 services=batch).get("services", []), batches)
    return {s["serviceName"]: s for answer in answers for s in answer}


def stopped_task_reasons(ctx: "Context", cluster: str, service: str, task_definition_arn: str | None = None,
                         limit: int = REASONS_SHOWN) -> list[str]:
    """Why the service's tasks stopped, most frequent first: each distinct stoppedReason with the containers'
    exit codes and reasons, and how many tasks it applies to. Tasks of `task_definition_arn` (the revision
    that failed) are preferred when there are any."""
    arns = ctx.aws.pages("ecs", "list_tasks", "taskArns", cluster=cluster, serviceName=service,
                         desiredStatus="STOPPED")
    batches = [arns[i:i + DESCRIBE_TASKS_BATCH] for i in range(0, len(arns), DESCRIBE_TASKS_BATCH)]
    tasks = [t for answer in ctx.map(lambda b: ctx.aws.call("ecs", "describe_tasks", cluster=cluster,
                                                            tasks=b).get("tasks", []), batches) for t in answer]
    ours = [t for t in tasks if t.get("taskDefinitionArn") == task_definition_arn]
    return summarise_stopped_tasks(ours or tasks, limit)


def summarise_stopped_tasks(tasks: list[dict], limit: int = REASONS_SHOWN) -> list[str]:
    counts: Counter = Counter()
    for task in tasks:
        details = []
        for c in task.get("containers") or []:
            bits = []
            if c.get("exitCode") not in (None, 0):
                bits.append(f"exit code {c['exitCode']}")
            if c.get("reason") and c["reason"] != task.get("stoppedReason"):
                bits.append(c["reason"])
            if bits:
                details.append(f"{c.get('name')}: {', '.join(bits)}")
        text = task.get("stoppedReason") or "stopped without a reason"
        if details:
            text += f" ({'; '.join(details)})"
        counts[text] += 1
    return [f"{text} [{n} task{'s' if n != 1 else ''}]" for text, n in counts.most_common(limit)]


def wait(ctx: "Context", cluster: str, targets: list[Target], timeout_seconds: float, poll_seconds: float,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
         jitter: Callable[[float, float], float] = random.uniform) -> list[Outcome]:
    """Wait for every target's rollout at once, until each has succeeded or failed, or the deadline passes.
    Returns one Outcome per target, in the targets' order; failed ones carry their stopped tasks' reasons."""
    deadline = clock() + timeout_seconds
    pending = {t.service: t for t in targets}
    seen = {t.service: set(t.known_events) for t in targets}
    shown: dict[str, str] = {}
    last: dict[str, Verdict] = {}
    verdicts: dict[str, Verdict] = {}
    if targets:
        log.info("waiting for service rollouts", services=sorted(pending), timeout_seconds=timeout_seconds)
    started = clock()
    next_beat = started + HEARTBEAT_SECONDS
    while pending:
        described = describe_services(ctx, cluster, sorted(pending))
        for name, target in sorted(pending.items()):
            service = described.get(name)
            for event in new_events(service, seen[name]):
                seen[name].add(event.get("id"))
                log.info(event.get("message", ""), service=name, service_event=event.get("id"))
            verdict = last[name] = assess(service, target.task_definition_arn)
            if shown.get(name) != verdict.progress:
                shown[name] = verdict.progress
                log.info(f"rollout {name}: {verdict.progress}", service=name, state=verdict.state,
                         task_definition=revision(target.task_definition_arn))
            if verdict.state != IN_PROGRESS:
                verdicts[name] = verdict
                del pending[name]
        if not pending:
            break
        remaining = deadline - clock()
        if remaining <= 0:
            for name in pending:
                verdicts[name] = Verdict(
                    FAILED, last[name].progress,
                    f"the rollout did not finish within {timeout_seconds:g} s (deployment.rollout_timeout_seconds)",
                    last[name].running_task_definition)
            break
        now = clock()
        if now >= next_beat:
            heartbeat(now - started, len(targets) - len(pending), len(targets), sorted(pending))
            next_beat = now + HEARTBEAT_SECONDS
        # Never quieter than the heartbeat, however long the poll interval.
        sleep(max(0.0, min(remaining, poll_seconds * jitter(0.8, 1.2), next_beat - now)))

    outcomes = [Outcome(t.service, t.task_definition_arn, verdicts[t.service]) for t in targets]
    failed = [o for o in outcomes if o.failed]
    for outcome, reasons in zip(failed, ctx.map(
            lambda o: stopped_task_reasons(ctx, cluster, o.service, o.wanted), failed)):
        outcome.stopped_reasons = reasons
    for outcome in outcomes:
        (log.error if outcome.failed else log.info)(
            f"rollout {outcome.service}: {outcome.verdict.state}", service=outcome.service,
            reason=outcome.verdict.reason or None, stopped_tasks=outcome.stopped_reasons or None)
    return outcomes


def heartbeat(elapsed: float, done: int, total: int, waiting_for: list[str]) -> None:
    """The line that says a long rollout is still being followed: elapsed time and "n of m services done" (the
    same as fields in JSON logs)."""
    log.info(f"rollouts: {done} of {total} services done, {elapsed:.0f} s elapsed", elapsed_seconds=round(elapsed),
             services_done=done, services_total=total, waiting_for=waiting_for)


def failure_message(outcomes: list[Outcome]) -> str:
    """The ApplyError text: each failed service, what it runs now, and why its tasks stopped."""
    failed = [o for o in outcomes if o.failed]
    lines = [f"{len(failed)} of {len(outcomes)} service rollout(s) failed:"]
    for o in failed:
        now = o.verdict.running_task_definition
        lines.append(f"  - {o.service}: {o.verdict.reason}.")
        lines.append(f"    Asked for {revision(o.wanted)}; "
                     + (f"the service now runs {revision(now)}" if now else "what it runs now is unknown")
                     + (f" ({o.verdict.progress})." if o.verdict.progress else "."))
        if o.stopped_reasons:
            lines.append("    Stopped tasks: " + "; ".join(o.stopped_reasons))
        else:
            lines.append("    No stopped tasks were found (ECS keeps them for about an hour).")
    succeeded = [o.service for o in outcomes if not o.failed]
    if succeeded:
        lines.append(f"Rolled out: {', '.join(succeeded)}.")
    lines.append("Fix the cause (see the service events above) and run apply again.")
    return "\n".join(lines)
