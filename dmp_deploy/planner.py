"""Building the plan: read live state (concurrently, each kind as soon as what it needs is read), diff, order.
Never mutates."""

from __future__ import annotations

import contextvars
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import structlog

from dmp_deploy import diff as diffing
from dmp_deploy import lookups
from dmp_deploy.desired import DesiredState
from dmp_deploy.plan import Change, Plan
from dmp_deploy.resources.base import Context, Live, ResourceKind

log = structlog.get_logger()


@dataclass
class Reconciliation:
    """Everything apply needs: the plan (pure data) plus the specs and live resources behind it."""

    plan: Plan
    desired: DesiredState
    live: dict[str, dict[str, Live]]
    kinds: dict[str, ResourceKind]
    ctx: Context


def dependency_order(kinds: list[ResourceKind]) -> list[ResourceKind]:
    """Kinds ordered so that each comes after what it depends on (stable: declaration order otherwise)."""
    by_name = {k.kind: k for k in kinds}
    ordered: list[ResourceKind] = []
    visiting: set[str] = set()

    def visit(k: ResourceKind):
        if k in ordered:
            return
        if k.kind in visiting:
            raise ValueError(f"dependency cycle through {k.kind}")
        visiting.add(k.kind)
        for dep in k.depends_on:
            if dep in by_name:
                visit(by_name[dep])
        visiting.discard(k.kind)
        ordered.append(k)

    for k in kinds:
        visit(k)
    return ordered


def waves(kinds: list[ResourceKind]) -> list[list[ResourceKind]]:
    """Groups of kinds by dependency depth: each wave depends only on earlier waves (docs and tests; `read_live`
    does not wait for whole waves)."""
    present = {k.kind for k in kinds}
    depth: dict[str, int] = {}
    for k in dependency_order(kinds):
        depth[k.kind] = 1 + max((depth[d] for d in k.depends_on if d in present), default=-1)
    out: list[list[ResourceKind]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for k in kinds:
        out[depth[k.kind]].append(k)
    return out


def read_live(ctx: Context, kinds: list[ResourceKind]) -> dict[str, dict[str, Live]]:
    """Every kind's live resources. Three things run at once from the start: the lookups, every kind's
    `prefetch` (the reads that need no other kind), and the kinds' `read`s, each of which starts as soon as the
    lookups are resolved and the kinds it depends on are read (their registry entries are what it interprets its
    answers with), not when a whole wave of kinds is. Errors: the lookups' first (what the config refers to that
    does not exist), else the first failed kind in dependency order, whatever finished first."""
    ordered = dependency_order(kinds)
    present = {k.kind for k in ordered}
    ctx.lookups.pending()
    done: dict[str, Future] = {}

    def resolve():
        try:
            lookups.resolve(ctx)
        except BaseException as exc:
            ctx.lookups.resolved(exc)
            raise
        ctx.lookups.resolved()

    def prefetch(kind: ResourceKind):
        try:
            kind.prefetch(ctx)
        except Exception as exc:  # read() makes the same call again and raises in its turn
            log.debug("prefetch failed; the read will retry it", kind=kind.kind, error=str(exc))

    def read(kind: ResourceKind):
        prefetched[kind.kind].result()  # what it prefetched is there to take (Context.take), not still to come
        resolved.result()
        for dep in kind.depends_on:
            if dep in present:
                done[dep].result()
        return kind.read(ctx)

    caller = contextvars.copy_context()
    # One thread per task: a read waits for its dependencies' futures, so a bounded pool could starve them. Kinds
    # are submitted in dependency order.
    with ThreadPoolExecutor(max_workers=2 * len(ordered) + 1, thread_name_prefix="read") as pool:
        resolved = pool.submit(caller.copy().run, resolve)
        prefetched = {kind.kind: pool.submit(caller.copy().run, prefetch, kind) for kind in ordered}
        for kind in ordered:
            done[kind.kind] = pool.submit(caller.copy().run, read, kind)
        wait([resolved, *done.values()])
    if resolved.exception() is not None:
        raise resolved.exception()
    for kind in ordered:
        error = done[kind.kind].exception()
        if error is not None:
            raise error
    return {kind.kind: done[kind.kind].result() for kind in ordered}


def changes_for(kind: ResourceKind, desired: dict[str, dict], live: dict[str, Live],
                config=None) -> list[Change]:
    """The kind's changes, in the kind's change order (`ResourceKind.change_order`), then by name."""
    def order(name: str) -> tuple:
        return (kind.change_order(config, name) if config is not None else (), name)

    changes = []
    for name in sorted(desired, key=order):
        spec = desired[name]
        if name not in live:
            changes.append(Change(kind.kind, name, "create", tuple(diffing.creation_fields(spec))))
            continue
        fields = kind.diff(name, spec, live[name])
        if not fields:
            continue
        action = "replace" if any(f.forces_replace for f in fields) else "update"
        changes.append(Change(kind.kind, name, action, tuple(fields),
                              destroys_data=action == "replace" and live[name].holds_data))
    for name in sorted(set(live) - set(desired), key=order):
        changes.append(Change(kind.kind, name, "delete", tuple(diffing.deletion_fields(live[name].spec)),
                              destroys_data=live[name].holds_data,
                              note="owned by dmp-deploy in this environment but no longer declared"))
    return changes


def build_plan(ctx: Context, kinds: list[ResourceKind]) -> Reconciliation:
    ordered = dependency_order(kinds)
    live = read_live(ctx, ordered)
    forward: list[Change] = []
    deletes: list[Change] = []
    for kind in ordered:
        for change in changes_for(kind, ctx.desired.resources.get(kind.kind, {}), live[kind.kind], ctx.config):
            (deletes if change.action == "delete" else forward).append(change)
    # A kind that only matters when nothing else changes (the release record: any other change records a
    # release anyway) is left out of a plan that has other changes.
    alone = {k.kind for k in ordered if k.only_when_alone}
    if any(c.kind not in alone for c in forward + deletes):
        forward = [c for c in forward if c.kind not in alone]
        deletes = [c for c in deletes if c.kind not in alone]
    # Deletes go last and in reverse dependency order: nothing is removed while something still uses it.
    order = {k.kind: i for i, k in enumerate(ordered)}
    deletes.sort(key=lambda c: -order[c.kind])
    plan = Plan(env=ctx.config.env, changes=forward + deletes)
    log.debug("plan built", changes=len(plan.changes), calls=ctx.aws.stats.total)
    return Reconciliation(plan, ctx.desired, live, {k.kind: k for k in ordered}, ctx)
