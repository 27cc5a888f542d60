"""`plan --env E [--json]`: what apply would do. Exit 0 nothing to do, 2 changes pending, 1 error.

Runs through a read-only AWS seam: a mutating call is refused, so plan can never change anything.
"""

from dmp_deploy import planner, session
from dmp_deploy.commands.output import add_env, add_images, add_json, emit_json, emit_text

NO_CHANGES, CHANGES_PENDING = 0, 2


def add_parser(sub):
    p = sub.add_parser("plan", help="show what apply would change (exit 0 none, 2 pending, 1 error)")
    add_env(p)
    add_json(p)
    add_images(p)
    p.add_argument("--allow-destroy", action="store_true",
                   help="show destroys of data as allowed (as apply --allow-destroy would)")
    return p


def run(args) -> int:
    env = session.open_environment(args.env, args.image, read_only=True, check=True)
    rec = planner.build_plan(env.ctx, env.kinds)
    if args.json:
        emit_json({**rec.plan.as_dict(), "calls": env.aws.stats.as_dict()})
    else:
        emit_text(rec.plan.render_text())
        refused = rec.plan.refused_destroys(args.allow_destroy)
        if refused:
            emit_text(f"\n{len(refused)} change(s) destroy data: apply refuses them without --allow-destroy.")
    return NO_CHANGES if rec.plan.empty else CHANGES_PENDING
