"""`apply --env E [--json] [--image APP=TAG] [--allow-destroy] [--yes] [--lock-timeout S] [--concurrency N] [--migrate]
[FILE]`:
plan, show, carry out, record. With FILE (saved by `plan --out FILE`), exactly that plan or nothing
(dmp_deploy/saved_plan.py).

Services roll out in start order (apps.START_ORDER). With --migrate, the db-migration task runs (and must exit
0) after the task definitions are registered and before the first service changes.

Exit 0 on success (including nothing to do), 1 on failure or when the plan was not approved. Against a real
account, changes are carried out only after `yes` typed on a terminal, or with --yes; with --json or without a
terminal, and without --yes, it refuses and changes nothing (dmp_deploy/approval.py). The embedded AWS
(`--env local`) never asks.
"""

import argparse

import structlog

from dmp_deploy import preflight, saved_plan, session
from dmp_deploy.approval import Approval
from dmp_deploy.commands import run_task
from dmp_deploy.commands.failures import UsageError, describe
from dmp_deploy.commands.output import (add_env, add_images, add_json, color_wanted, emit_json, emit_text,
                                        error_document)
from dmp_deploy.deploy import deploy
from dmp_deploy.errors import UserError

log = structlog.get_logger()


def add_parser(sub):
    p = sub.add_parser("apply", help="plan, show the plan and carry it out once approved (exit 0 ok, 1 failure)")
    add_env(p)
    add_json(p)
    add_images(p)
    p.add_argument("plan_file", nargs="?", metavar="FILE",
                   help="a plan saved by `plan --out FILE`: carry out exactly that plan, or refuse when the "
                        "configuration or the live state changed since")
    add_approval(p)
    p.add_argument("--allow-destroy", action="store_true",
                   help="allow deleting or replacing resources that hold data")
    p.add_argument("--migrate", action="store_true",
                   help="run the db-migration task before any service rolls out, and stop unless it exits 0 "
                        "(a new database, or a release with a new schema)")
    p.add_argument("--migrate-timeout", type=int, default=3600, metavar="SECONDS",
                   help="how long --migrate follows the migration before failing (default 3600)")
    return p


def add_approval(p) -> None:
    """The options apply and revert share: approval and the lock's wait."""
    p.add_argument("--yes", action="store_true",
                   help="carry out the plan without asking (needed with --json or without a terminal); stops "
                        "instead if the plan changes while waiting for the lock")
    p.add_argument("--lock-timeout", type=int, metavar="SECONDS",
                   help="wait at most this long for the deploy lock (default: deployment.lock_wait_seconds)")
    p.add_argument("--concurrency", type=concurrency, metavar="N",
                   help="carry out at most N changes at the same time, each once what it depends on is done "
                        "(default: deployment.concurrent_changes, 8); 1: one at a time in the plan's order")


def concurrency(value: str) -> int:
    """--concurrency's value: a whole number from 1 to config.MAX_CONCURRENT_CHANGES."""
    from dmp_deploy.config import MAX_CONCURRENT_CHANGES
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_CONCURRENT_CHANGES:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_CONCURRENT_CHANGES}, not {value!r}")
    return number


def approval(args, env, command: str) -> Approval:
    return Approval(env.config.env, command, embedded=env.config.environment.embedded_aws, yes=args.yes,
                    json_mode=args.json, color=color_wanted(getattr(args, "no_color", False)))


def failed(document: dict, exc: UserError) -> None:
    """Record a failure in a command's JSON document, in the CLI's error shape."""
    kind, message = describe(exc)
    document.update(error_document(kind, message))


def run(args) -> int:
    saved = check = None
    if args.plan_file:
        if args.image:
            raise UsageError("--image cannot be given with a saved plan: the plan holds the images it was made "
                             "with")
        saved = saved_plan.load(args.plan_file, args.env)
        args.image = list(saved.get("image_overrides") or [])
        check = saved_plan.checker(saved, args.plan_file)
    env = session.open_environment(args.env, args.image, check=True, observe_lock=True)
    if args.image and env.config.environment.embedded_aws:
        # Locally there is no CI to push the build `--image` names: push it into the embedded ECR, as CI would.
        from dmp_deploy.local.seed import seed_images
        seed_images(env.aws.endpoint_url, env.config, env.ctx.desired.task_definitions)
    document = {"env": args.env, "changes": [], "applied": 0, "release": None, "status": "ok"}
    approve = approval(args, env, "apply")
    migration: dict = {}
    if args.migrate:
        env.ctx.before_services.append(run_task.migration_step(args.migrate_timeout, migration))
    try:
        outcome = deploy(env, allow_destroy=args.allow_destroy, quiet=args.json, command="apply",
                         confirm=approve.confirm, confirm_again=approve.confirm_again,
                         preflight=preflight.check_plan, lock_wait_seconds=args.lock_timeout, color=approve.color,
                         check=check, concurrency=args.concurrency)
        document.update(outcome.plan.as_dict(), applied=outcome.applied, release=outcome.release,
                        replanned=outcome.replanned)
    except UserError as exc:
        if not args.json:
            raise
        failed(document, exc)
        if approve.shown is not None and not document["changes"]:
            document.update(approve.shown.as_dict())  # the plan that was refused or not approved
    if args.migrate:
        document["migration"] = migration or None
        if not migration and document["status"] == "ok":
            note = (f"--migrate: no service rolled out in this apply, so {run_task.MIGRATION} was not run. "
                    f"Run `run.py run-task --env {args.env} {run_task.MIGRATION}` to run it anyway.")
            document["migration_note"] = note
            if not args.json:
                emit_text(note)
    if args.json:
        emit_json({**document, "calls": env.aws.stats.as_dict()})
    elif document["applied"]:
        emit_text(f"Apply complete: {document['applied']} change(s) made to {args.env}; "
                  f"release {document['release']} recorded.")
    log.info("apply finished", env=args.env, status=document["status"], changes=document["applied"],
             calls=env.aws.stats.total, mutating_calls=env.aws.stats.total_mutating, retries=env.aws.stats.retries)
    return 0 if document["status"] == "ok" else 1
