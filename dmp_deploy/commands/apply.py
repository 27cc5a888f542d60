"""`apply --env E [--json] [--image APP=TAG] [--allow-destroy] [--yes]`: plan, show, carry out.

Exit 0 on success (including nothing to do), 1 on failure. Asks for confirmation only on an interactive
terminal (never when stdin is not a terminal, never with --yes, never for the embedded local AWS).
"""

import sys

import structlog

from dmp_deploy import executor, planner, session, validation
from dmp_deploy.commands.output import add_env, add_images, add_json, emit_json, emit_text
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
    return p


def confirm(args, env, count: int) -> bool:
    if args.yes or args.json or env.config.environment.embedded_aws or not sys.stdin.isatty():
        return True
    answer = input(f"Apply {count} change(s) to {env.config.env}? Type 'yes' to go on: ")
    return answer.strip() == "yes"


def run(args) -> int:
    env = session.open_environment(args.env, args.image)
    validation.check(env.ctx.desired)
    rec = planner.build_plan(env.ctx, env.kinds)
    if not args.json:
        emit_text(rec.plan.render_text())
    executor.refuse_destroys(rec, args.allow_destroy)
    if not rec.plan.empty and not confirm(args, env, len(rec.plan.changes)):
        emit_text("Cancelled: nothing was changed.")
        return 1
    result = {**rec.plan.as_dict(), "applied": 0, "status": "ok"}
    try:
        done = executor.execute(rec, allow_destroy=args.allow_destroy)
        result["applied"] = len(done)
    except UserError as exc:
        result.update(status="failed", error=str(exc))
        if args.json:
            emit_json({**result, "calls": env.aws.stats.as_dict()})
            return 1
        raise
    if args.json:
        emit_json({**result, "calls": env.aws.stats.as_dict()})
    elif not rec.plan.empty:
        emit_text(f"Apply complete: {len(done)} change(s) made to {env.config.env}.")
    log.info("apply finished", env=env.config.env, changes=len(done), calls=env.aws.stats.total,
             mutating_calls=env.aws.stats.total_mutating, retries=env.aws.stats.retries)
    return 0
