"""The small shape every resource kind has.

A kind is one module with one `ResourceKind` subclass:
  - `desired(state)`: what should exist, as {name: canonical spec}, from the rendered desired state;
  - `read(ctx)`: what exists and this tool owns in the environment, as {name: Live} in the same canonical form;
  - `diff(name, desired, live)`: field-level changes (the default compares specs field by field);
  - `create`, `update`, `delete` (and `replace`, by default delete then create): carry out one change.
The engine (planner.py, executor.py) knows nothing else about a kind.
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, TypeVar

from dmp_deploy import diff as diffing
from dmp_deploy.plan import FieldChange

if TYPE_CHECKING:
    from dmp_deploy.aws import Aws
    from dmp_deploy.config import Config
    from dmp_deploy.desired import DesiredState

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Live:
    """A live resource: its canonical spec (compared with the desired one) and its identifiers (not compared)."""

    spec: dict
    ids: dict = field(default_factory=dict)
    holds_data: bool = False


class Registry:
    """Identifiers of live resources by (kind, name), filled by reads and by creates during an apply.

    Desired specs refer to other resources by name (a security group's peer, a task's role); the executor
    resolves those names to ids through this registry, so a resource created earlier in the same apply is
    found without another read.
    """

    def __init__(self):
        self._ids: dict[tuple[str, str], dict] = {}
        self._lock = threading.Lock()

    def put(self, kind: str, name: str, **ids: Any) -> None:
        with self._lock:
            self._ids.setdefault((kind, name), {}).update(ids)

    def get(self, kind: str, name: str, key: str) -> Any:
        with self._lock:
            try:
                return self._ids[(kind, name)][key]
            except KeyError:
                raise KeyError(f"{kind} {name!r} has no known {key} (not created yet, or not owned by this tool)")

    def find(self, kind: str, name: str, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._ids.get((kind, name), {}).get(key, default)

    def dump(self) -> dict[str, dict[str, dict]]:
        """{kind: {name: ids}}: the live identifiers a release records."""
        with self._lock:
            out: dict[str, dict[str, dict]] = {}
            for (kind, name), ids in sorted(self._ids.items()):
                out.setdefault(kind, {})[name] = dict(ids)
            return out

    def names_by(self, kind: str, key: str) -> dict[Any, str]:
        """Reverse index: identifier -> name, for turning live ids back into names."""
        with self._lock:
            return {ids[key]: name for (k, name), ids in self._ids.items() if k == kind and key in ids}


class Lookups(dict):
    """The resolved config lookups (vpc_id, subnet_ids, ...; lookups.py). While the planner resolves them beside
    the first reads (`ResourceKind.prefetch`), reading one waits until they are resolved, and raises what resolving
    raised if it failed. Otherwise a plain dict."""

    def __init__(self):
        super().__init__()
        self._ready = threading.Event()
        self._ready.set()
        self._error: BaseException | None = None

    def pending(self) -> None:
        self._error = None
        self._ready.clear()

    def resolved(self, error: BaseException | None = None) -> None:
        self._error = error
        self._ready.set()

    def _wait(self) -> None:
        self._ready.wait()
        if self._error is not None:
            raise LookupsFailed(str(self._error))

    def __getitem__(self, key):
        self._wait()
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._wait()
        return super().get(key, default)

    def __contains__(self, key) -> bool:
        self._wait()
        return super().__contains__(key)


class LookupsFailed(Exception):
    """A read needed a lookup that could not be resolved; the planner reports the lookups' own error instead."""


class Context:
    """What a kind needs while reading and changing AWS: config, the AWS seam, resolved lookups, the registry."""

    def __init__(self, config: "Config", aws: "Aws", desired: "DesiredState", max_workers: int = 32):
        self.config = config
        self.aws = aws
        self.desired = desired
        self.registry = Registry()
        self.lookups: Lookups = Lookups()  # resolved config lookups: vpc_id, subnet_ids, ...
        # Exact identifiers a release requires, by (kind, name): set by `revert` (and `drift`) from a release record,
        # e.g. ("task_definition", family) -> the revision ARN release N ran. Kinds that honour pins use that
        # identifier instead of choosing or registering one.
        self.pins: dict[tuple[str, str], str] = {}
        # Steps a command asks for just before the first service change of an apply, each run once with this
        # context (`apply --migrate` puts the db-migration task here); a step raises ApplyError to stop the apply.
        self.before_services: list[Callable[["Context"], None]] = []
        # Each map's bound: botocore keeps 32 connections per client (aws.py). Per-item reads (a tag call per log
        # group, a description per task definition) take len/32 round trips instead of len/8 (docs/benchmarks.md).
        self.max_workers = max_workers
        self._memo: dict[str, Any] = {}
        self._memo_locks: dict[str, threading.Lock] = {}
        self._memo_lock = threading.Lock()

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """`compute()` run once per context for `key`: one read shared by several kinds (e.g. security
        groups and their rules come from the same DescribeSecurityGroups answer). Concurrent callers wait."""
        with self._memo_lock:
            lock = self._memo_locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._memo:
                self._memo[key] = compute()
            return self._memo[key]

    def take(self, key: str, compute: Callable[[], T]) -> T:
        """What a prefetch left under `key` (`memo`), waiting for it if it is still being read, and forgotten
        once taken, so that a kind that reads again reads anew; else `compute()` (nothing prefetched)."""
        with self._memo_lock:
            lock = self._memo_locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._memo:
                return self._memo.pop(key)
        return compute()

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """Run `fn` over `items` concurrently with the context's bound; results in input order. Each item runs in
        a copy of the caller's context variables (what the caller's calls are polling for, which kind is reading)."""
        items = list(items)
        if len(items) <= 1:
            return [fn(i) for i in items]
        caller = contextvars.copy_context()
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(items))) as pool:
            return list(pool.map(lambda i: caller.copy().run(fn, i), items))


class ResourceKind:
    kind: ClassVar[str]
    depends_on: ClassVar[tuple[str, ...]] = ()
    replace_fields: ClassVar[frozenset[str]] = frozenset()  # fields AWS cannot update in place
    # Kinds whose live resources can hold data (a bucket's objects, a file system's files).
    holds_data: ClassVar[bool] = False
    # The registry id a release pins for this kind (e.g. "arn" for task definitions): `revert` and `drift` put the
    # recorded value in ctx.pins, and the kind must then use exactly that resource. None: nothing to pin.
    pin_key: ClassVar[str | None] = None
    only_when_alone: ClassVar[bool] = False  # its changes are shown only in a plan with no other change

    def desired(self, state: "DesiredState") -> dict[str, dict]:
        raise NotImplementedError

    def change_order(self, config: "Config", name: str) -> tuple:
        """Where a change to `name` goes among this kind's changes (ties by name). The default keeps name order;
        a kind whose resources must change in a given order (services: start order) says so here."""
        return ()

    def prefetch(self, ctx: Context) -> None:
        """Start the reads of `read` that need nothing from another kind (no registry entries), through
        `ctx.memo`, so that `read` finds their answers. The planner calls every kind's prefetch at once, before
        the lookups are resolved (a prefetch that reads `ctx.lookups` waits for them) and before any `read`:
        a kind's calls then wait only for the answers they need, not for the reads of the kinds it depends on.
        Calls only what `read` would (in a no-op plan exactly that; with a resource about to be replaced, at most
        a read of the old one that `read` then skips); errors are left for `read` to raise, and `read` takes the
        answers with `ctx.take`. The default prefetches nothing."""

    def read(self, ctx: Context) -> dict[str, Live]:
        raise NotImplementedError

    def diff(self, name: str, desired: dict, live: Live) -> list[FieldChange]:
        return diffing.field_changes(desired, live.spec, self.replace_fields)

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        raise NotImplementedError

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes: list[FieldChange]) -> None:
        raise NotImplementedError

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        raise NotImplementedError

    def replace(self, ctx: Context, name: str, spec: dict, live: Live) -> None:
        self.delete(ctx, name, live)
        self.create(ctx, name, spec)

    def settle(self, ctx: Context, changes: list) -> None:
        """After every change is made: wait for this kind's changes to take effect (e.g. service rollouts).
        Raise ApplyError when they did not; the default has nothing to wait for."""
