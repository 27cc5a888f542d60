"""Carrying a plan out: each change as soon as the changes it depends on are done, a bounded number at a time.
Knows nothing about any resource kind beyond what every kind declares (`depends_on`, `change_order`).

Which change waits for which (`prerequisites`) is decided from the plan alone, and only ever on changes that come
earlier in it, so the plan's order is always one the executor may follow, and with one change at a time it is
exactly the order followed. A change waits for:
  - every change of the kinds its kind depends on, directly or through others (a task definition for its role,
    its log group, its access point; a service for its revision, its groups, its target group);
  - the changes of its own kind that `change_order` puts before it (services: the APIs, then the frontends, then
    the router); a replace (which deletes before it creates) is never run beside another change of its kind;
  - when it is a delete, every change that is not a delete (deletes go last: nothing is removed while something
    still uses it), and every delete of its own kind or of a kind that depends on it (reverse dependency order).
Everything else runs at once, up to `concurrency` changes in flight (`deployment.concurrent_changes`, `apply
--concurrency`); when more are ready than there is room for, those that most changes wait for (the longest chain)
start first. At the first failure nothing new starts; the changes already under way are left to finish, and
the error names the failed change and how many were carried out. Then, only when every change succeeded, each
kind's `settle` runs, one kind after another in dependency order (service rollouts, mount targets, ...).
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable

import structlog

from dmp_deploy.errors import ApplyError, PlanError
from dmp_deploy.planner import Reconciliation
from dmp_deploy.plan import Change
from dmp_deploy.resources.base import ResourceKind

log = structlog.get_logger()

THREAD_PREFIX = "dmp-change"  # the executor's worker threads (a kind's own ctx.map threads are named otherwise)


def refuse_destroys(rec: Reconciliation, allow_destroy: bool) -> None:
    refused = rec.plan.refused_destroys(allow_destroy)
    if refused:
        listed = "\n".join(f"  - {c.action} {c.kind} {c.name}" for c in refused)
        raise PlanError(f"The plan would destroy data:\n{listed}\nNothing was changed. Re-run with "
                        f"--allow-destroy if that is really what you want.")


def dependency_closure(kinds: dict[str, ResourceKind]) -> dict[str, frozenset[str]]:
    """{kind: every kind it depends on, directly or through other kinds}."""
    closure: dict[str, frozenset[str]] = {}

    def visit(name: str, path: tuple[str, ...]) -> frozenset[str]:
        if name in closure:
            return closure[name]
        if name in path:
            raise ValueError(f"dependency cycle through {name}")
        kind = kinds.get(name)
        found: set[str] = set()
        for dep in (kind.depends_on if kind else ()):
            found.add(dep)
            found |= visit(dep, path + (name,))
        closure[name] = frozenset(found)
        return closure[name]

    for name in kinds:
        visit(name, ())
    return closure


def prerequisites(changes: list[Change], kinds: dict[str, ResourceKind], config=None) -> list[frozenset[int]]:
    """For each change (by position in the plan), the positions of the earlier changes it must wait for."""
    closure = dependency_closure(kinds)
    order = [kinds[c.kind].change_order(config, c.name) if config is not None and c.kind in kinds else ()
             for c in changes]
    out: list[frozenset[int]] = []
    for j, change in enumerate(changes):
        needs = set()
        for i in range(j):
            earlier = changes[i]
            if change.action == "delete":
                if earlier.action != "delete" or earlier.kind == change.kind \
                        or change.kind in closure.get(earlier.kind, ()):
                    needs.add(i)
            elif earlier.kind in closure.get(change.kind, ()):
                needs.add(i)
            elif earlier.kind == change.kind and (order[i] < order[j] or "replace" in (earlier.action,
                                                                                    change.action)):
                needs.add(i)
        out.append(frozenset(needs))
    return out


def chain_lengths(needs: list[frozenset[int]]) -> list[int]:
    """For each change, the number of changes in the longest chain that starts with it and in which each waits
    for the one before (1: nothing waits for it)."""
    height = [1] * len(needs)
    for j in reversed(range(len(needs))):  # a change waits only for earlier ones: later heights are final
        for i in needs[j]:
            height[i] = max(height[i], height[j] + 1)
    return height


def execute(rec: Reconciliation, allow_destroy: bool = False,
            before_each: Callable[[], None] | None = None, concurrency: int | None = None) -> list[Change]:
    """Carry out every change; stop at the first failure. Returns the changes carried out, in plan order.

    `before_each` runs before every change starts (the deploy lock uses it to stop when its lease was lost).
    `concurrency`: at most this many changes in flight (default: the config's deployment.concurrent_changes);
    1 carries the plan out one change at a time in its order, on the calling thread.
    """
    refuse_destroys(rec, allow_destroy)
    changes = rec.plan.changes
    if concurrency is None:
        concurrency = rec.ctx.config.deployment.concurrent_changes
    if concurrency < 1:
        raise ValueError(f"concurrency must be 1 or more, not {concurrency}")
    if concurrency == 1:
        done = _one_at_a_time(rec, before_each)
    else:
        done = _concurrently(rec, before_each, concurrency,
                             prerequisites(changes, rec.kinds, rec.ctx.config))
    for kind in rec.kinds.values():
        mine = [c for c in done if c.kind == kind.kind]
        if mine:
            kind.settle(rec.ctx, mine)
    return done


def _one_at_a_time(rec: Reconciliation, before_each: Callable[[], None] | None) -> list[Change]:
    done: list[Change] = []
    for change in rec.plan.changes:
        if before_each:
            before_each()
        _announce(change)
        try:
            _carry_out(rec, change)
        except Exception as exc:  # say which change failed and what was already done
            raise _failure(rec, change, exc, len(done), 0, []) from exc
        done.append(change)
    return done


def _concurrently(rec: Reconciliation, before_each: Callable[[], None] | None, limit: int,
                  needs: list[frozenset[int]]) -> list[Change]:
    changes = rec.plan.changes
    # Of the changes ready to start, those with the longest chain of changes waiting on them go first: with more
    # ready than room, a Cloud Map namespace (then its services, then the ECS services) must not queue behind
    # sixty security group rules nothing waits for. Ties: the plan's order.
    height = chain_lengths(needs)
    waiting = sorted(range(len(changes)), key=lambda j: (-height[j], j))  # not started, first to start first
    finished: set[int] = set()  # carried out
    running: dict[Future, int] = {}
    failures: list[tuple[int, BaseException]] = []  # (position, error)
    by_first_failure = 0  # changes carried out when the first failure came back
    stop: BaseException | None = None  # before_each refused, or the scheduler itself was interrupted
    with ThreadPoolExecutor(max_workers=limit, thread_name_prefix=THREAD_PREFIX) as pool:
        try:
            while True:
                if not failures and stop is None:
                    # Start what is ready, earliest in the plan first, while there is room.
                    for j in [j for j in waiting if needs[j] <= finished][:limit - len(running)]:
                        if before_each:
                            try:
                                before_each()
                            except BaseException as exc:
                                stop = exc
                                break
                        waiting.remove(j)
                        _announce(changes[j])
                        running[pool.submit(_carry_out, rec, changes[j])] = j
                if not running:
                    break
                completed, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(completed, key=running.__getitem__):
                    j = running.pop(future)
                    error = future.exception()
                    if error is None:
                        finished.add(j)
                    else:
                        if not failures:
                            by_first_failure = len(finished)
                        failures.append((j, error))
        except BaseException as exc:  # interrupted while waiting: the changes under way still finish
            stop = exc
            for future, j in list(running.items()):
                try:
                    future.result()
                    finished.add(j)
                except BaseException:
                    pass
    if failures:
        failures.sort(key=lambda f: f[0])  # the earliest in the plan is the one reported
        j, error = failures[0]
        if not isinstance(error, Exception):
            raise error  # a crash or an interrupt inside a change: as it is
        same = [i for i, e in failures[1:] if _first_line(e) == _first_line(error)]
        others = [f"{changes[i].action} {changes[i].kind} {changes[i].name}: {_first_line(e)}"
                  for i, e in failures[1:] if i not in same]
        if same:
            others.append("for the same reason: " + ", ".join(
                f"{changes[i].action} {changes[i].kind} {changes[i].name}" for i in same))
        raise _failure(rec, changes[j], error, len(finished), len(finished) - by_first_failure, others) from error
    if stop is not None:
        raise stop
    assert not waiting, "a change waits for a change that never ran"  # prerequisites are always earlier ones
    return [changes[j] for j in sorted(finished)]


def _announce(change: Change) -> None:
    log.info(f"{change.action} {change.kind} {change.name}", kind=change.kind, name=change.name,
             action=change.action)


def _carry_out(rec: Reconciliation, change: Change) -> None:
    kind = rec.kinds[change.kind]
    spec = rec.desired.resources.get(change.kind, {}).get(change.name)
    live = rec.live[change.kind].get(change.name)
    if change.action == "create":
        kind.create(rec.ctx, change.name, spec)
    elif change.action == "update":
        kind.update(rec.ctx, change.name, spec, live, list(change.fields))
    elif change.action == "replace":
        kind.replace(rec.ctx, change.name, spec, live)
    elif change.action == "delete":
        kind.delete(rec.ctx, change.name, live)


def _failure(rec: Reconciliation, change: Change, exc: Exception, done: int, late: int,
             others: list[str]) -> ApplyError:
    """The error that stops an apply: the failed change (a kind's own ApplyError says it already), how many
    changes were carried out, and any other change that failed while under way at the same time."""
    total = len(rec.plan.changes)
    if late:
        counted = (f"{done} of {total} changes were carried out, {late} of them by changes already under way "
                   f"when it failed (they were left to finish); nothing was started after it.")
    else:
        counted = f"{done} of {total} changes were carried out before it."
    also = "".join(f"\nAlso failed: {line}" for line in others)
    if isinstance(exc, ApplyError):
        return ApplyError(f"{exc}\n{counted}{also}")
    return ApplyError(f"{change.action} {change.kind} {change.name} failed: {_describe(exc)}\n{counted}{also}\n"
                      f"Fix the cause and run apply again: it continues from the live state.")


def _first_line(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, ApplyError) else _describe(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _describe(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        return f"{err.get('Code')}: {err.get('Message')}"
    return f"{type(exc).__name__}: {exc}"
