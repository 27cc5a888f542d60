"""`lock status|release --env E [--force]`: inspect or remove the deploy lock by hand.

`release` removes a lease that is expired, or whose holder ran on this host and is gone, without more ado. A live
lease (another apply or revert may be changing the environment right now) is removed only with --force, after
showing who holds it. An unreadable lock object is removed with --force too: nothing in the state bucket can
wedge the tool.
"""

import time

from dmp_deploy import lock as deploy_lock
from dmp_deploy import session
from dmp_deploy.commands.output import add_env, add_json, emit_json, emit_text
from dmp_deploy.config import load_config
from dmp_deploy.errors import CorruptState, UserError
from dmp_deploy.state_store import StateStore


class LiveLease(UserError):
    kind = "lock"


def add_parser(sub):
    p = sub.add_parser("lock", help="show or release the deploy lock")
    p.add_argument("action", choices=["status", "release"])
    add_env(p)
    add_json(p)
    p.add_argument("--force", action="store_true",
                   help="release: remove the lock even when its lease is live, or its object is unreadable")
    return p


def run(args) -> int:
    config = load_config(args.env)
    aws = session.connect(config, read_only=args.action == "status")
    store = StateStore(config, aws)
    now = time.time()
    try:
        lease, etag = deploy_lock.read(store)
    except CorruptState as exc:
        if args.action != "release" or not args.force:
            raise
        store.delete(deploy_lock.KEY)  # unreadable: nobody can hold it through this object
        return _report(args, None, now, released=True, note=f"removed an unreadable lock object ({exc})")
    live = lease is not None and not lease.expired(now) and not deploy_lock.holder_gone(lease)
    if args.action == "release" and lease:
        if live and not args.force:
            raise LiveLease(f"the deploy lock for {args.env} is live: held by {lease.describe(now)}. An apply or "
                            f"revert may be changing the environment right now. If you are sure it is not, run "
                            f"`python run.py lock release --env {args.env} --force`.")
        store.delete(deploy_lock.KEY, if_match=etag)
    return _report(args, lease, now, released=args.action == "release" and lease is not None, live=live)


def _report(args, lease, now: float, released: bool, live: bool = False, note: str | None = None) -> int:
    document = {"env": args.env, "held": lease is not None and not released,
                "lease": lease.__dict__ if lease else None,
                "expired": lease.expired(now) if lease else None,
                "holder_gone": deploy_lock.holder_gone(lease) if lease else None,
                "live": live, "released": released, "note": note}
    if args.json:
        emit_json(document)
    elif note:
        emit_text(f"{args.env}: {note}")
    elif lease is None:
        emit_text(f"{args.env}: the deploy lock is free")
    elif released:
        emit_text(f"{args.env}: released the deploy lock held by {lease.describe(now)}")
    else:
        state = "" if live else " (not live: the next apply takes it over)"
        emit_text(f"{args.env}: the deploy lock is held by {lease.describe(now)}{state}")
    return 0
