"""`drift --env E [--json]`: live AWS against the current release. Exit 0 in sync, 2 drift, 1 error.

Never takes the lock and never mutates (read-only seam). Without any release yet, compares with the config.
"""

import structlog

from dmp_deploy import desired, drift, planner, releases, session, show
from dmp_deploy.commands.output import add_env, add_json, color_wanted, emit_json, emit_text
from dmp_deploy.config import load_config
from dmp_deploy.resources import all_kinds
from dmp_deploy.state_store import StateStore

log = structlog.get_logger()
IN_SYNC, DRIFTED = 0, 2


def add_parser(sub):
    p = sub.add_parser("drift", help="compare live AWS with the current release (exit 0 in sync, 2 drift, 1 error)")
    add_env(p)
    add_json(p)
    p.add_argument("--summary", metavar="FILE",
                   help="also append the drift as a Markdown table to FILE (CI: $GITHUB_STEP_SUMMARY)")
    return p


def run(args) -> int:
    config = load_config(args.env)
    kinds = all_kinds()
    aws = session.connect(config, read_only=True)
    record = releases.current(StateStore(config, aws))
    if record is None:
        log.warning("no release recorded yet: comparing with the configuration instead", env=args.env)
        state, pins = desired.build(config, kinds), {}
    else:
        state, pins = desired.from_record(config, record), desired.pins_from_record(record, kinds)
    env = session.attach(config, kinds, state, aws, read_only=True, pins=pins)
    rec = planner.build_plan(env.ctx, env.kinds)
    document = {**drift.report(rec.plan), "release": record["number"] if record else None,
                "calls": aws.stats.as_dict()}
    if args.summary:
        with open(args.summary, "a", encoding="utf-8") as summary:
            summary.write(show.drift_markdown(document) + "\n")
    if args.json:
        emit_json(document)
    else:
        emit_text(drift.render_text(document, color_wanted(getattr(args, "no_color", False))))
    return IN_SYNC if document["in_sync"] else DRIFTED
