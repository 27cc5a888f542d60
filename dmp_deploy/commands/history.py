"""`history --env E [--json]`: the releases, newest first, with what changed in each. Read-only.

An unreadable record is listed as such (naming the object and why) and the rest are shown.
"""

from dmp_deploy import releases, session
from dmp_deploy.commands.output import add_env, add_json, emit_json, emit_text
from dmp_deploy.config import load_config
from dmp_deploy.errors import CorruptState
from dmp_deploy.state_store import StateStore

FIELDS = ("number", "time", "kind", "reverted_to", "reverted", "caller", "git_commit", "git_dirty", "image_tags",
          "changes")


def add_parser(sub):
    p = sub.add_parser("history", help="list the releases, newest first, with what changed in each")
    add_env(p)
    add_json(p)
    p.add_argument("--limit", type=int, default=20, help="show at most this many releases (default 20)")
    return p


def _read(store: StateStore, number: int) -> dict:
    try:
        return {**releases.load(store, number), "number": number}
    except CorruptState as exc:
        return {"number": number, "unreadable": str(exc)}


def run(args) -> int:
    config = load_config(args.env)
    store = StateStore(config, session.connect(config, read_only=True))
    records = [_read(store, n) for n in reversed(releases.numbers(store)[-args.limit:])]
    if args.json:
        emit_json({"env": args.env, "releases": [
            {"number": r["number"], "unreadable": r["unreadable"]} if "unreadable" in r
            else {k: r.get(k) for k in FIELDS} for r in records]})
        return 0
    if not records:
        emit_text(f"{args.env}: no releases yet (the first apply that changes something writes release 1)")
        return 0
    for r in records:
        if "unreadable" in r:
            emit_text(f"release {r['number']}  UNREADABLE\n    {r['unreadable']}")
            continue
        what = f"revert to {r['reverted_to']}" if r["kind"] == "revert" else "apply"
        commit = (r.get("git_commit") or "unknown")[:12] + (" (uncommitted changes)" if r.get("git_dirty") else "")
        emit_text(f"release {r['number']}  {r['time']}  {what}  by {r['caller']}  commit {commit}\n"
                  f"    {releases.summary(r)}")
    return 0
