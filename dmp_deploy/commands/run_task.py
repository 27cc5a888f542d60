"""`run-task --env E NAME [-- COMMAND...]`: run a one-off ECS task, follow it, exit with its exit code.

NAME is a task definition stem: `db-migration`, or an app (its task definition, with COMMAND replacing the
command of its main container: `wsgi` where there is one). The task runs where the app's service runs: the
private subnets, no public IP, the app's security groups (db-migration: the api's). It runs the revision
apply registered for the current template; when the template has changed since, run apply first.

Before anything runs, preflight checks the task's images, secrets and roles. The command travels as an ECS
override, visible in the task's description and in CloudTrail: never put a secret on the command line; the
task gets its secrets from the task definition's `secrets`.

Exit code: the essential container's (the main one's, or the first non-zero), or 1 when the task could not
start, stopped without an exit code, or did not stop within --timeout (it is left running, and said so).
"""

from __future__ import annotations

import argparse
import random
import time

import structlog

from dmp_deploy import names, planner, preflight, session, validation
from dmp_deploy.apps import APPS
from dmp_deploy.commands.output import add_env, add_json, emit_json, emit_text
from dmp_deploy.errors import PlanError, UserError
from dmp_deploy.resources import services

log = structlog.get_logger()

RUNS_AS = {"db-migration": "api"}  # one-off task -> the app whose network setup it uses
MAIN_CONTAINER = "wsgi"  # the app's own code; COMMAND replaces its command
FAILED = 1
# ECS allows up to 128 letters, numbers, hyphens, forward slashes and underscores here (RunTask's documentation;
# the client does not check it, AWS refuses anything else): no space.
STARTED_BY = "dmp-deploy/run-task"


def add_parser(sub):
    p = sub.add_parser(
        "run-task", help="run a one-off task (db-migration, or an app with a command), exit with its exit code",
        usage="run.py run-task --env ENV [--json] [--timeout SECONDS] NAME [-- COMMAND...]",
        description="Run a one-off ECS task in the app's network setup and follow it until it stops.\n"
                    "COMMAND (after --) replaces the main container's command.\n\n"
                    "NEVER put secrets in COMMAND: it is passed as a task override, which ECS shows to\n"
                    "anyone who can describe the task and records in CloudTrail. Tasks get their secrets\n"
                    "from their task definition.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  run.py run-task --env staging db-migration\n"
               "  run.py run-task --env staging api -- flask shell-command --dry-run")
    add_env(p)
    add_json(p)
    p.add_argument("name", metavar="NAME", help="a task definition: db-migration, or an app (e.g. api)")
    # `-- COMMAND...` is split off by cli.main before parsing, into args.task_command.
    p.set_defaults(task_command=[])
    p.add_argument("--timeout", type=int, default=3600,
                   help="seconds to follow the task before giving up (it is left running); default 3600")
    return p


def runs_as(name: str) -> str:
    """The app whose subnets and security groups a one-off task uses."""
    if name in APPS:
        return name
    if name in RUNS_AS:
        return RUNS_AS[name]
    known = ", ".join(sorted([*RUNS_AS, *APPS]))
    raise UserError(f"run-task {name}: not a task run-task knows (known: {known})")


def main_container(document: dict) -> str:
    containers = document.get("containerDefinitions", [])
    names_ = [c["name"] for c in containers]
    if MAIN_CONTAINER in names_:
        return MAIN_CONTAINER
    essential = [c["name"] for c in containers if c.get("essential", True)]
    return (essential or names_)[0]


def exit_code(task: dict, main: str) -> tuple[int | None, str]:
    """(exit code, what happened) of a STOPPED task. The code is the main container's when it is essential
    and has one, else the first non-zero essential one, else 0; None when an essential container has no exit
    code (the task could not start, or was stopped before it exited)."""
    essential = [c for c in task.get("containers") or [] if c.get("essential", True)] or task.get("containers") or []
    stopped = f"{task.get('stopCode') or 'stopped'}: {task.get('stoppedReason') or 'no reason given'}"
    if not essential or any(c.get("exitCode") is None for c in essential):
        reasons = "; ".join(f"{c.get('name')}: {c['reason']}" for c in essential if c.get("reason"))
        return None, stopped + (f" ({reasons})" if reasons else "")
    by_name = {c.get("name"): c for c in essential}
    if main in by_name and by_name[main]["exitCode"] != 0:
        code = by_name[main]["exitCode"]
        return code, f"{main} exited with {code}"
    failing = next((c for c in essential if c["exitCode"] != 0), None)
    if failing:
        return failing["exitCode"], f"{failing.get('name')} exited with {failing['exitCode']}"
    return 0, f"{main} exited with 0"


def run(args) -> int:
    app = runs_as(args.name)
    env = session.open_environment(args.env)
    validation.check(env.ctx.desired)
    ctx, config = env.ctx, env.config
    if args.name not in ctx.desired.task_definitions:
        raise UserError(f"run-task {args.name}: there is no task_definitions/{args.name}.json.j2")
    family = names.family(config, args.name)
    document = ctx.desired.task_definitions[args.name]

    # Read only what running needs: the cluster, the task definition, the security groups.
    wanted = {"cluster", "task_definition", "security_group"}
    kinds = [k for k in env.kinds if k.kind in wanted]
    live = planner.read_live(ctx, kinds)
    task_definitions = next(k for k in kinds if k.kind == "task_definition")
    groups = services.security_group_names(config, app)
    problems = []
    if not ctx.registry.find("cluster", names.cluster(config), "arn"):
        problems.append(f"the cluster {names.cluster(config)} does not exist")
    if family not in live["task_definition"]:
        problems.append(f"the task definition {family} is not registered")
    elif any(not c.path.startswith("tags.") for c in task_definitions.diff(
            family, ctx.desired.resources["task_definition"][family], live["task_definition"][family])):
        problems.append(f"the task definition {family} differs from task_definitions/{args.name}.json.j2")
    problems += [f"the security group {g} does not exist" for g in groups
                 if not ctx.registry.find("security_group", g, "id")]
    if problems:
        raise PlanError(f"run-task {args.name}: " + "; ".join(problems) + f". Run `run.py apply --env {args.env}` "
                        f"first. Nothing was run.")
    refs = preflight.References()
    refs.add_task_definition(family, document)
    preflight.check(ctx, refs, roles_present=[])

    main = main_container(document)
    params = {
        "cluster": names.cluster(config),
        "taskDefinition": ctx.registry.get("task_definition", family, "arn"),
        "count": 1,
        "capacityProviderStrategy": services.capacity_provider_strategy(config),
        "networkConfiguration": services.network_configuration(ctx, groups),
        "startedBy": STARTED_BY,
        "tags": [{"key": k, "value": v} for k, v in sorted(config.resource_tags(**{"dmp:task": args.name}).items())],
        "propagateTags": "TASK_DEFINITION",
        "enableECSManagedTags": True,
    }
    if args.task_command:
        params["overrides"] = {"containerOverrides": [{"name": main, "command": list(args.task_command)}]}
    answer = ctx.aws.call("ecs", "run_task", **params)
    if answer.get("failures") or not answer.get("tasks"):
        reasons = "; ".join(f"{f.get('arn', '')} {f.get('reason')} {f.get('detail', '')}".strip()
                            for f in answer.get("failures") or []) or "no task was started"
        return _finish(args, None, FAILED, f"run-task {args.name}: the task could not start: {reasons}")
    task = answer["tasks"][0]
    log.info(f"started task {task['taskArn']}", task=task["taskArn"], family=family, app_network=app,
             command=args.task_command or None, log_group=names.log_group(config, args.name))
    task = follow(ctx, params["cluster"], task, args.timeout, config.deployment.rollout_poll_seconds)
    if task.get("lastStatus") != "STOPPED":
        return _finish(args, task, FAILED,
                       f"run-task {args.name}: the task {task['taskArn']} did not stop within {args.timeout} s; "
                       f"it is still {task.get('lastStatus')} and was left running. Stop it with "
                       f"`aws ecs stop-task --cluster {params['cluster']} --task {task['taskArn']}`.")
    code, what = exit_code(task, main)
    if code is None:
        return _finish(args, task, FAILED, f"run-task {args.name}: the task stopped without an exit code: {what}")
    return _finish(args, task, code if 0 <= code <= 255 else FAILED, f"run-task {args.name}: {what}")


def follow(ctx, cluster: str, task: dict, timeout: int, poll_seconds: float) -> dict:
    """Poll the task until it stops or the timeout passes, logging each status change."""
    deadline = time.monotonic() + timeout
    status = None
    while True:
        if task.get("lastStatus") != status:
            status = task.get("lastStatus")
            log.info(f"task {status}", task=task["taskArn"], desired=task.get("desiredStatus"))
        if status == "STOPPED" or time.monotonic() >= deadline:
            return task
        time.sleep(min(max(0.0, deadline - time.monotonic()), poll_seconds * random.uniform(0.8, 1.2)))
        found = ctx.aws.call("ecs", "describe_tasks", cluster=cluster, tasks=[task["taskArn"]]).get("tasks")
        task = found[0] if found else task


def _finish(args, task: dict | None, code: int, message: str) -> int:
    if args.json:
        emit_json({"env": args.env, "task": args.name, "task_arn": (task or {}).get("taskArn"), "exit_code": code,
                   "message": message, "stop_code": (task or {}).get("stopCode"),
                   "stopped_reason": (task or {}).get("stoppedReason"),
                   "containers": [{"name": c.get("name"), "exit_code": c.get("exitCode"), "reason": c.get("reason")}
                                  for c in (task or {}).get("containers") or []]})
    else:
        emit_text(message)
    (log.info if code == 0 else log.error)("run-task finished", exit_code=code)
    return code
