"""`revert --env E [--to N] [--dry-run]`: return the environment to release N.

Without --to, N is the release before the one the environment is on: after an apply, the one before it; after a
revert, the one before the release that revert returned to (each revert records what it reverted), so repeated
reverts keep going back instead of bouncing between two releases.

Every service goes back onto exactly N's task definition revisions (pinned by ARN, never re-registered), the
state machine's `live` alias onto N's version, and rules, bucket, log and role settings to N's. It refuses, before
anything changes, when a revision N needs no longer exists. The header says what will change now: each service's
revision and images, before -> after. `--dry-run` shows that and the plan, through the read-only seam (exit 0
nothing to do, 2 changes pending, like plan). Same approval, exit codes and rollout checks as apply; recorded as a
new release.
"""

import structlog

from dmp_deploy import desired, names, releases, session
from dmp_deploy.commands.apply import add_approval, approval, failed
from dmp_deploy.commands.output import add_env, add_json, color_wanted, emit_json, emit_text
from dmp_deploy.config import load_config
from dmp_deploy.deploy import deploy
from dmp_deploy.errors import PlanError, UserError
from dmp_deploy import planner
from dmp_deploy.resources import all_kinds
from dmp_deploy.rollout import revision
from dmp_deploy.state_store import StateStore

log = structlog.get_logger()
NO_CHANGES, CHANGES_PENDING = 0, 2


def add_parser(sub):
    p = sub.add_parser("revert", help="return the environment to an earlier release (exit 0 ok, 1 failure)")
    add_env(p)
    add_json(p)
    p.add_argument("--to", type=int, metavar="N",
                   help="the release to return to (default: the one before the release the environment is on)")
    p.add_argument("--dry-run", action="store_true",
                   help="show what this revert would change and change nothing (exit 0 none, 2 pending)")
    p.add_argument("--allow-destroy", action="store_true",
                   help="allow deleting or replacing resources that hold data")
    add_approval(p)
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


def default_target(store: StateStore, known: list[int]) -> int:
    """The release before the one whose state the environment is on: a revert's state is the release it returned
    to (followed through chains of reverts)."""
    on, record, seen = known[-1], releases.load(store, known[-1]), set()
    while record.get("kind") == "revert" and record.get("reverted_to") in known and on not in seen:
        seen.add(on)
        on = record["reverted_to"]
        record = releases.load(store, on)
    earlier = [n for n in known if n < on]
    if not earlier:
        raise UserError(f"{store.config.env} is on release {on}, the first one: there is no earlier release to "
                        f"revert to (releases: {', '.join(map(str, known))})")
    return earlier[-1]


def service_moves(rec, record: dict) -> list[dict]:
    """What the revert changes now for each service: its revision and images, before -> after. Only services
    whose revision changes (or that the revert creates or removes)."""
    ctx, config = rec.ctx, rec.ctx.config
    live = rec.live.get("service", {})
    targets = {names.family(config, stem): document for stem, document in record.get("task_definitions", {}).items()}
    moves = []
    for name in sorted(set(rec.desired.resources.get("service", {})) | set(live)):
        before_arn = live[name].ids.get("task_definition_arn") if name in live else None
        after_arn = ctx.pins.get(("task_definition", name))
        if name not in rec.desired.resources.get("service", {}):
            after_arn = None
        if before_arn == after_arn:
            continue
        before_images = _images(ctx, before_arn)
        after_images = sorted(c.get("image") for c in (targets.get(name) or {}).get("containerDefinitions", [])
                              if c.get("image")) if after_arn else []
        moves.append({"service": name, "revision_before": revision(before_arn) if before_arn else None,
                      "revision_after": revision(after_arn) if after_arn else None,
                      "images_before": before_images, "images_after": after_images})
    return moves


def _images(ctx, arn: str | None) -> list[str]:
    if not arn:
        return []
    try:
        document = ctx.aws.call("ecs", "describe_task_definition", taskDefinition=arn)["taskDefinition"]
    except Exception:  # a revision deregistered out of band: its images are unknown, the move still is
        return ["(unknown)"]
    return sorted(c.get("image") for c in document.get("containerDefinitions", []) if c.get("image"))


def header(env_name: str, target: int, record: dict, moves: list[dict]) -> str:
    lines = [f"Reverting {env_name} to release {target} ({record['time']}, {record.get('kind', 'apply')}"
             f" by {record.get('caller', 'unknown')}). What changes now:"]
    for m in moves:
        lines.append(f"  service {m['service']}: {m['revision_before'] or '(none)'} -> "
                     f"{m['revision_after'] or '(removed)'}")
        before, after = set(m["images_before"]), set(m["images_after"])
        for image in sorted(before - after):
            lines.append(f"      - {image}")
        for image in sorted(after - before):
            lines.append(f"      + {image}")
    if not moves:
        lines.append("  no service changes revision")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    config = load_config(args.env)
    kinds = all_kinds()
    aws = session.connect(config, read_only=args.dry_run)
    store = StateStore(config, aws)
    known = releases.numbers(store)
    if not known:
        raise UserError(f"{args.env} has no releases to revert to")
    target = args.to if args.to is not None else default_target(store, known)
    if target < 1 or target not in known:
        raise UserError(f"there is no release {target} for {args.env} (releases: {', '.join(map(str, known))})")
    record = releases.load(store, target)
    env = session.attach(config, kinds, desired.from_record(config, record), aws, read_only=args.dry_run,
                         pins=desired.pins_from_record(record, kinds))
    check_pins_exist(env)
    color = color_wanted(getattr(args, "no_color", False))
    document = {"env": args.env, "reverted_to": target, "reverted": known[-1], "services": [], "changes": [],
                "applied": 0, "release": None, "status": "ok"}
    if args.dry_run:
        rec = planner.build_plan(env.ctx, env.kinds)
        document.update(rec.plan.as_dict(), services=service_moves(rec, record), dry_run=True)
        if args.json:
            emit_json({**document, "calls": aws.stats.as_dict()})
        else:
            emit_text(header(args.env, target, record, document["services"]) + "\n" + rec.plan.render_text(color))
        return NO_CHANGES if rec.plan.empty else CHANGES_PENDING

    def show_header(rec) -> None:
        document["services"] = service_moves(rec, record)
        if not args.json:
            emit_text(header(args.env, target, record, document["services"]))

    approve = approval(args, env, "revert")
    try:
        outcome = deploy(env, allow_destroy=args.allow_destroy, quiet=args.json, command=f"revert --to {target}",
                         confirm=approve.confirm, confirm_again=approve.confirm_again, kind="revert",
                         reverted_to=target, reverted=known[-1], lock_wait_seconds=args.lock_timeout, color=color,
                         concurrency=args.concurrency,
                         before_showing=show_header)
        document.update(outcome.plan.as_dict(), applied=outcome.applied, release=outcome.release)
    except UserError as exc:
        if not args.json:
            raise
        failed(document, exc)
        if approve.shown is not None and not document["changes"]:
            document.update(approve.shown.as_dict())
    if args.json:
        emit_json({**document, "calls": aws.stats.as_dict()})
    elif document["applied"]:
        emit_text(f"Revert complete: {args.env} is back on release {target}; recorded as release "
                  f"{document['release']}.")
    return 0 if document["status"] == "ok" else 1
