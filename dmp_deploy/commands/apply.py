"""`apply --env E [--json] [--image APP=TAG] [--allow-destroy] [--yes] [--migrate]`: plan, show, carry out, record.

Services roll out in start order (apps.START_ORDER). With --migrate, the db-migration task runs (and must exit
0) after the task definitions are registered and before the first service changes.

Exit 0 on success (including nothing to do), 1 on failure. Asks for confirmation only on an interactive
terminal (never when stdin is not a terminal, never with --yes or --json, never for the embedded local AWS).
"""

import sys

import structlog

from dmp_deploy import preflight, session
from dmp_deploy.commands import run_task
from dmp_deploy.commands.output import add_env, add_images, add_json, emit_json, emit_text
from dmp_deploy.deploy import deploy
from dmp_deploy.errors import UserError

log = structlog.get_logger()


def add_parser(sub):
    p = sub.add_parser("apply", help="plan, show the plan and carry it out (exit 0 ok, 1 failure)")
    add_env(p)
    add_json(p)
    add_images(p)
    p.add_argument("--allow-destroy", action="store_true",
                   help="allow deleting or replacing resources that hold data")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation on a terminal")
    p.add_argument("--migrate", action="store_true",
                   help="run the db-migration task before any service rolls out, and stop unless it exits 0 "
                        "(a new database, or a release with a new schema)")
    p.add_argument("--migrate-timeout", type=int, default=3600, metavar="SECONDS",
                   help="how long --migrate follows the migration before failing (default 3600)")
    return p


def confirmer(args, env):
    def confirm(plan) -> bool:
        if args.yes or args.json or env.config.environment.embedded_aws or not sys.stdin.isatty():
            return True
        answer = input(f"Apply {len(plan.changes)} change(s) to {env.config.env}? Type 'yes' to go on: ")
        return answer.strip() == "yes"
    return confirm


def run(args) -> int:
    env = session.open_environment(args.env, args.image, check=True)
    if args.image and env.config.environment.embedded_aws:
        # Locally there is no CI to push the build `--image` names: push it into the embedded ECR, as CI would.
        from dmp_deploy.local.seed import seed_images
        seed_images(env.aws.endpoint_url, env.config, env.ctx.desired.task_definitions)
    document = {"env": args.env, "changes": [], "applied": 0, "release": None, "status": "ok"}
    migration: dict = {}
    if args.migrate:
        env.ctx.before_services.append(run_task.migration_step(args.migrate_timeout, migration))
    try:
        outcome = deploy(env, allow_destroy=args.allow_destroy, quiet=args.json, command="apply",
                         confirm=confirmer(args, env), preflight=preflight.check_plan)
        document.update(outcome.plan.as_dict(), applied=outcome.applied, release=outcome.release,
                        replanned=outcome.replanned)
    except UserError as exc:
        if not args.json:
            raise
        document.update(status="failed", error=str(exc))
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
