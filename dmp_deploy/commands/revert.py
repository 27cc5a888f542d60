"""`revert --env E [--to N]`: return the environment to release N (default: the one before the current).

Every service goes back onto exactly N's task definition revisions (pinned by ARN, never re-registered), the
state machine's `live` alias onto N's version, and rules, bucket, log and role settings to N's. It refuses, before
anything changes, when a revision N needs no longer exists. Same exit codes and rollout checks as apply; recorded
as a new release.
"""

import structlog

from dmp_deploy import desired, releases, session
from dmp_deploy.commands.apply import confirmer
from dmp_deploy.commands.output import add_env, add_json, emit_json, emit_text
from dmp_deploy.config import load_config
from dmp_deploy.deploy import deploy
from dmp_deploy.errors import PlanError, UserError
from dmp_deploy.resources import all_kinds
from dmp_deploy.state_store import StateStore

log = structlog.get_logger()


def add_parser(sub):
    p = sub.add_parser("revert", help="return the environment to an earlier release (exit 0 ok, 1 failure)")
    add_env(p)
    add_json(p)
    p.add_argument("--to", type=int, metavar="N", help="the release to return to (default: the one before the current)")
    p.add_argument("--allow-destroy", action="store_true",
                   help="allow deleting or replacing resources that hold data")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation on a terminal")
    return p


def check_pins_exist(env) -> None:
    """Every pinned task definition revision must still be ACTIVE: refuse before anything changes otherwise."""
    missing = []
    for (kind, name), arn in sorted(env.ctx.pins.items()):
        if kind != "task_definition":
            continue
        try:
            status = env.aws.call("ecs", "describe_task_definition", taskDefinition=arn)["taskDefinition"]["status"]
        except Exception:
            status = "missing"
        if status != "ACTIVE":
            missing.append(f"  - {name}: {arn} is {status}")
    if missing:
        raise PlanError("cannot revert: task definition revisions that release needs no longer exist:\n"
                        + "\n".join(missing) + "\nNothing was changed. Choose a more recent release "
                        "(`python run.py history`) or apply the configuration you want.")


def run(args) -> int:
    config = load_config(args.env)
    kinds = all_kinds()
    aws = session.connect(config)
    store = StateStore(config, aws)
    known = releases.numbers(store)
    if not known:
        raise UserError(f"{args.env} has no releases to revert to")
    target = args.to if args.to is not None else known[-1] - 1
    if target < 1 or target not in known:
        raise UserError(f"there is no release {target} for {args.env} (releases: {', '.join(map(str, known))})")
    record = releases.load(store, target)
    env = session.attach(config, kinds, desired.from_record(config, record), aws,
                         pins=desired.pins_from_record(record, kinds))
    check_pins_exist(env)
    if not args.json:
        emit_text(f"Reverting {args.env} to release {target} ({record['time']}, {releases.summary(record)}):\n")
    document = {"env": args.env, "reverted_to": target, "changes": [], "applied": 0, "release": None, "status": "ok"}
    try:
        outcome = deploy(env, allow_destroy=args.allow_destroy, quiet=args.json, command=f"revert --to {target}",
                         confirm=confirmer(args, env), kind="revert", reverted_to=target)
        document.update(outcome.plan.as_dict(), applied=outcome.applied, release=outcome.release)
    except UserError as exc:
        if not args.json:
            raise
        document.update(status="failed", error=str(exc))
    if args.json:
        emit_json({**document, "calls": aws.stats.as_dict()})
    elif document["applied"]:
        emit_text(f"Revert complete: {args.env} is back on release {target}; recorded as release "
                  f"{document['release']}.")
    return 0 if document["status"] == "ok" else 1
