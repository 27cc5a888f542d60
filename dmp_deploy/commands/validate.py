"""`validate --env E`: render and validate everything without any AWS call. Exit 0 valid, 1 invalid."""

from dmp_deploy import session, validation
from dmp_deploy.commands.output import add_env, add_json, emit_json, emit_text


def add_parser(sub):
    p = sub.add_parser("validate", help="render and validate everything, no AWS call (exit 0 or 1)")
    add_env(p)
    add_json(p)
    return p


def run(args) -> int:
    state = session.render_only(args.env)
    validation.check(state)
    counts = {kind: len(specs) for kind, specs in state.resources.items()}
    if args.json:
        emit_json({"env": args.env, "valid": True, "resources": counts,
                   "task_definitions": sorted(state.task_definitions),
                   "state_machines": sorted(state.state_machines)})
    else:
        emit_text(f"{args.env}: valid ({sum(counts.values())} resources, {len(state.task_definitions)} task "
                  f"definitions, {len(state.state_machines)} state machines)")
    return 0
