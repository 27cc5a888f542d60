"""`lock status|release --env E`: inspect or remove the deploy lock by hand."""

import time

from dmp_deploy import lock as deploy_lock
from dmp_deploy import session
from dmp_deploy.commands.output import add_env, add_json, emit_json, emit_text
from dmp_deploy.config import load_config
from dmp_deploy.state_store import StateStore


def add_parser(sub):
    p = sub.add_parser("lock", help="show or release the deploy lock")
    p.add_argument("action", choices=["status", "release"])
    add_env(p)
    add_json(p)
    return p


def run(args) -> int:
    config = load_config(args.env)
    aws = session.connect(config, read_only=args.action == "status")
    store = StateStore(config, aws)
    lease, etag = deploy_lock.read(store)
    now = time.time()
    if args.action == "release" and lease:
        store.delete(deploy_lock.KEY, if_match=etag)
    document = {"env": args.env, "held": lease is not None,
                "lease": lease.__dict__ if lease else None,
                "expired": lease.expired(now) if lease else None,
                "released": args.action == "release" and lease is not None}
    if args.json:
        emit_json(document)
    elif lease is None:
        emit_text(f"{args.env}: the deploy lock is free")
    elif args.action == "release":
        emit_text(f"{args.env}: released the deploy lock held by {lease.describe(now)}")
    else:
        emit_text(f"{args.env}: the deploy lock is held by {lease.describe(now)}")
    return 0
