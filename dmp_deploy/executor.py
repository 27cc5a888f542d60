"""Carrying a plan out, change by change, in the plan's order. Knows nothing about any resource kind."""

from __future__ import annotations

from typing import Callable

import structlog

from dmp_deploy.errors import ApplyError, PlanError
from dmp_deploy.planner import Reconciliation
from dmp_deploy.plan import Change

log = structlog.get_logger()


def refuse_destroys(rec: Reconciliation, allow_destroy: bool) -> None:
    refused = rec.plan.refused_destroys(allow_destroy)
    if refused:
        listed = "\n".join(f"  - {c.action} {c.kind} {c.name}" for c in refused)
        raise PlanError(f"The plan would destroy data:\n{listed}\nNothing was changed. Re-run with "
                        f"--allow-destroy if that is really what you want.")


def execute(rec: Reconciliation, allow_destroy: bool = False,
            before_each: Callable[[], None] | None = None) -> list[Change]:
    """Carry out every change; stop at the first failure. Returns the changes carried out.

    `before_each` runs before every change (the deploy lock uses it to stop when its lease was lost).
    """
    refuse_destroys(rec, allow_destroy)
    done: list[Change] = []
    for change in rec.plan.changes:
        if before_each:
            before_each()
        kind = rec.kinds[change.kind]
        spec = rec.desired.resources.get(change.kind, {}).get(change.name)
        live = rec.live[change.kind].get(change.name)
        log.info(f"{change.action} {change.kind} {change.name}", kind=change.kind, name=change.name,
                 action=change.action)
        try:
            if change.action == "create":
                kind.create(rec.ctx, change.name, spec)
            elif change.action == "update":
                kind.update(rec.ctx, change.name, spec, live, list(change.fields))
            elif change.action == "replace":
                kind.replace(rec.ctx, change.name, spec, live)
            elif change.action == "delete":
                kind.delete(rec.ctx, change.name, live)
        except ApplyError:
            raise
        except Exception as exc:  # an AWS error: say which change failed and what was already done
            raise ApplyError(
                f"{change.action} {change.kind} {change.name} failed: {_describe(exc)}\n"
                f"{len(done)} of {len(rec.plan.changes)} changes were carried out before it. "
                f"Fix the cause and run apply again: it continues from the live state."
            ) from exc
        done.append(change)
    for kind in rec.kinds.values():
        mine = [c for c in done if c.kind == kind.kind]
        if mine:
            kind.settle(rec.ctx, mine)
    return done


def _describe(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        return f"{err.get('Code')}: {err.get('Message')}"
    return f"{type(exc).__name__}: {exc}"
