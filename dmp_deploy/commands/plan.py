"""`plan --env E [--json]`: what apply would do. Exit 0 nothing to do, 2 changes pending, 1 error.

Runs through a read-only AWS seam: a mutating call is refused, so plan can never change anything. A plan with
changes also runs apply's preflight (images, secrets, roles, target groups the plan needs): what is missing is
an error (exit 1), so a pipeline that runs only `plan` goes red on an image tag that does not exist.
"""

from dmp_deploy import planner, preflight, saved_plan, session
from dmp_deploy.commands.failures import describe
from dmp_deploy.commands.output import (add_env, add_images, add_json, color_wanted, emit_json, emit_text,
                                        error_document)
from dmp_deploy.errors import PlanError

NO_CHANGES, CHANGES_PENDING, ERROR = 0, 2, 1


def add_parser(sub):
    p = sub.add_parser("plan", help="show what apply would change (exit 0 none, 2 pending, 1 error)")
    add_env(p)
    add_json(p)
    add_images(p)
    p.add_argument("--allow-destroy", action="store_true",
                   help="show destroys of data as allowed (as apply --allow-destroy would)")
    p.add_argument("--out", "-out", metavar="FILE",
                   help="save the plan, with fingerprints of the config and live state it was built from, for "
                        "`apply --env ENV FILE`")
    return p


def run(args) -> int:
    env = session.open_environment(args.env, args.image, read_only=True, check=True)
    if args.image and env.config.environment.embedded_aws:
        # As apply does locally: the embedded ECR gets the build `--image` names, as CI would have pushed it.
        from dmp_deploy.local.seed import seed_images
        seed_images(env.aws.endpoint_url, env.config, env.ctx.desired.task_definitions)
    rec = planner.build_plan(env.ctx, env.kinds)
    missing = None
    if not rec.plan.empty:
        try:
            preflight.check_plan(rec)
        except PlanError as exc:
            missing = exc
    if args.out and not missing:
        saved_plan.save(args.out, rec, args.image)
    if args.json:
        document = {**rec.plan.as_dict(), "calls": env.aws.stats.as_dict(), "saved_to": args.out if args.out and
                    not missing else None}
        if missing:
            document.update(error_document("preflight", describe(missing)[1]))
        emit_json(document)
    else:
        emit_text(rec.plan.render_text(color_wanted(getattr(args, "no_color", False))))
        refused = rec.plan.refused_destroys(args.allow_destroy)
        if refused:
            emit_text(f"\n{len(refused)} change(s) destroy data: apply refuses them without --allow-destroy.")
        if missing:
            raise missing
        if args.out:
            emit_text(f"\nSaved this plan to {args.out}: `python run.py apply --env {args.env} {args.out}` carries "
                      f"out exactly this plan, or nothing if the configuration or the live state changed.")
    if missing:
        return ERROR
    return NO_CHANGES if rec.plan.empty else CHANGES_PENDING
