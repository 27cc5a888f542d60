"""`render --env E`: print the whole desired state as JSON (no AWS call)."""

from dmp_deploy import session
from dmp_deploy.commands.output import add_env, add_images, emit_json


def add_parser(sub):
    p = sub.add_parser("render", help="print the whole desired state as JSON (no AWS call)")
    add_env(p)
    add_images(p)
    return p


def run(args) -> int:
    state = session.render_only(args.env, args.image)
    emit_json({**state.as_dict(), "task_definitions": state.task_definitions,
               "state_machines": state.state_machines})
    return 0
