"""`local up|down|status [--json]`: the embedded AWS (moto on 127.0.0.1) that `--env local` targets."""

from dmp_deploy.commands.output import add_json, emit_json, emit_text
from dmp_deploy.local import control


def add_parser(sub):
    p = sub.add_parser("local", help="start, stop or inspect the embedded AWS for --env local")
    p.add_argument("action", choices=["up", "down", "status"])
    add_json(p)
    return p


def run(args) -> int:
    result = {"up": control.up, "down": control.down, "status": control.status}[args.action]()
    if args.json:
        emit_json(result)
    elif result["running"]:
        emit_text(f"embedded AWS running at {result['endpoint']} (region {result['region']}, pid {result['pid']})"
                  + (f"; Data API stand-in at {result['data_api']}" if result.get("data_api") else ""))
    else:
        emit_text("embedded AWS not running")
    return 0
