"""Snapshots of the embedded AWS: everything moto holds (every service, account and region) copied in memory
and put back later, in milliseconds instead of the seconds that a reset, the seed and an apply take.

The crash suite (docs/crash-consistency.md) captures the embedded AWS at every mutating call of a command and
restores each capture to check a re-run from exactly there; the test harness restores the seeded account before
each test instead of resetting and seeding again.

moto keeps its state in plain Python objects: one backend per service, account and region, held by the
service's `BackendDict`. A snapshot is a deep copy of the attributes of every backend and of the containers
that hold them (S3's holds the bucket namespace shared by all accounts), taken while nothing calls the
embedded AWS (the caller's job: the crash suite takes them from the seam's hook, the harness between tests).

- The containers and the backend objects themselves are kept, not copied (the copy's memo maps them to
  themselves), so a model that points at its backend (EC2's security groups hold `ec2_backend`) still points
  at the live backend after a restore, and backends made since the snapshot are dropped.
- Locks, conditions and events cannot be copied: a copy gets fresh, released ones.
- The catalogues moto loads into every EC2 backend, about 1,300 public AMIs and their EBS snapshots, are nine
  tenths of the copying and no dmp-deploy call changes them: they are shared, not copied, and a restore
  refuses (SnapshotError) when one of them changed since the capture.

Served by the embedded AWS process (`wsgi`): POST /dmp-local/snapshots/NAME saves, POST
/dmp-local/snapshots/NAME/restore restores, DELETE /dmp-local/snapshots/NAME (or /dmp-local/snapshots/ for all)
forgets.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

PREFIX = "/dmp-local/snapshots/"
SHARED_EC2_CATALOGUES = ("amis", "snapshots")

_LOCK = threading.Lock()
_SNAPSHOTS: dict[str, "Snapshot"] = {}


class SnapshotError(RuntimeError):
    """A snapshot that cannot be restored faithfully."""


@dataclass
class Snapshot:
    # (BackendDict, {account: (AccountSpecificBackend, {region: backend})}) for every BackendDict in use
    containers: list[tuple[Any, dict[str, tuple[Any, dict[str, Any]]]]] = field(default_factory=list)
    state: dict[int, dict] = field(default_factory=dict)  # id(backend or container) -> copy of its attributes
    shared: list[tuple[str, dict, frozenset]] = field(default_factory=list)  # (what, catalogue, its keys then)


def _fresh(kind: type) -> Callable[[Any, dict], Any]:
    return lambda _original, _memo: kind()


def _copy_defaultdict_subclass(original: Any, memo: dict) -> Any:
    """A defaultdict subclass whose __init__ takes other arguments than defaultdict's (SSM's ParameterDict):
    copy.deepcopy would call it with the default factory alone."""
    new = type(original).__new__(type(original))
    memo[id(original)] = new
    new.default_factory = original.default_factory
    new.__dict__.update(copy.deepcopy(original.__dict__, memo))
    for key, value in original.items():
        dict.__setitem__(new, copy.deepcopy(key, memo), copy.deepcopy(value, memo))
    return new


def _copiers() -> dict[type, Callable[[Any, dict], Any]]:
    from moto.ssm.models import ParameterDict

    return {
        type(threading.Lock()): _fresh(threading.Lock),
        type(threading.RLock()): _fresh(threading.RLock),
        threading.Condition: _fresh(threading.Condition),
        threading.Event: _fresh(threading.Event),
        ParameterDict: _copy_defaultdict_subclass,
    }


_COPY_LOCK = threading.Lock()


def _deepcopy(value: Any, memo: dict) -> Any:
    """copy.deepcopy with `_copiers` for the types it cannot copy or copies wrongly, for this copy only."""
    dispatch = copy._deepcopy_dispatch  # type: ignore[attr-defined]
    copiers = _copiers()
    with _COPY_LOCK:
        added = [kind for kind in copiers if kind not in dispatch]
        for kind in added:
            dispatch[kind] = copiers[kind]
        try:
            return copy.deepcopy(value, memo)
        finally:
            for kind in added:
                dispatch.pop(kind, None)


def _containers() -> list[tuple[Any, dict[str, tuple[Any, dict[str, Any]]]]]:
    from moto.core.base_backend import BackendDict

    return [(services, {account: (regions, dict(regions)) for account, regions in services.items()})
            for services in list(BackendDict._instances)]


def _backends(containers) -> list[Any]:
    return [backend for _, accounts in containers for _, backends in accounts.values() for backend in backends.values()]


def _holders(containers) -> list[Any]:
    """Every object whose attributes are state: the backends, and the containers (S3's BackendDict holds the
    bucket namespace shared by all accounts)."""
    holders: list[Any] = []
    for services, accounts in containers:
        holders.append(services)
        for regions, backends in accounts.values():
            holders.append(regions)
            holders.extend(backends.values())
    return holders


def _memo(containers, shared: list[tuple[str, dict, frozenset]]) -> dict:
    """Objects every copy keeps as they are: the containers, the backends, the shared catalogues."""
    memo: dict = {}
    for services, accounts in containers:
        memo[id(services)] = services
        for regions, backends in accounts.values():
            memo[id(regions)] = regions
            for backend in backends.values():
                memo[id(backend)] = backend
    for _, catalogue, _keys in shared:
        memo[id(catalogue)] = catalogue
    return memo


def _shared_catalogues(containers) -> list[tuple[str, dict, frozenset]]:
    from moto.ec2.models import EC2Backend

    return [(f"ec2 {backend.account_id} {backend.region_name} {name}", getattr(backend, name),
             frozenset(getattr(backend, name)))
            for backend in _backends(containers) if isinstance(backend, EC2Backend)
            for name in SHARED_EC2_CATALOGUES if isinstance(getattr(backend, name, None), dict)]


def _forget_tracked_models() -> None:
    """moto lists every model instance it ever made for its dashboard (BaseModel.__new__), copies included:
    without this, every snapshot would be kept alive by that list."""
    from moto.core.model_instances import reset_model_data

    reset_model_data()


def capture() -> Snapshot:
    """A copy of everything the embedded AWS holds now."""
    from moto.core.base_backend import backend_lock

    with backend_lock:
        containers = _containers()
        shared = _shared_catalogues(containers)
        state = _deepcopy({id(holder): holder.__dict__ for holder in _holders(containers)}, _memo(containers, shared))
    _forget_tracked_models()
    return Snapshot(containers, state, shared)


def restore(snapshot: Snapshot) -> None:
    """Put the embedded AWS back as it was at `snapshot`: backends made since are dropped, the snapshot's come
    back with a copy of their attributes (the snapshot stays as it was, to be restored again)."""
    from moto.core.base_backend import BackendDict, backend_lock

    from dmp_deploy.local import moto_compat

    changed = [what for what, catalogue, keys in snapshot.shared if frozenset(catalogue) != keys]
    if changed:
        raise SnapshotError(f"shared catalogue changed since the snapshot, which cannot restore it: "
                            f"{', '.join(changed)}")
    # Executions running now belong to the state being replaced: as moto_compat's reset, stop them first.
    moto_compat.stop_running_executions("the embedded AWS was restored from a snapshot")
    with backend_lock:
        state = _deepcopy(snapshot.state, _memo(snapshot.containers, snapshot.shared))
        kept = [services for services, _ in snapshot.containers]
        for services in list(BackendDict._instances):
            if not any(services is k for k in kept):  # first used since the snapshot: as moto's reset does
                for regions in services.values():
                    regions.reset()
                dict.clear(services)
        for holder in _holders(snapshot.containers):
            holder.__dict__ = state[id(holder)]
        for services, accounts in snapshot.containers:
            dict.clear(services)
            for account, (regions, backends) in accounts.items():
                dict.clear(regions)
                for region, backend in backends.items():
                    dict.__setitem__(regions, region, backend)
                dict.__setitem__(services, account, regions)
        BackendDict._instances[:] = kept
    _forget_tracked_models()


def save(name: str) -> None:
    snapshot = capture()
    with _LOCK:
        _SNAPSHOTS[name] = snapshot


def load(name: str) -> None:
    """Restore the snapshot saved as `name`; KeyError when there is none."""
    with _LOCK:
        snapshot = _SNAPSHOTS[name]
    restore(snapshot)


def drop(name: str | None = None) -> None:
    """Forget the snapshot `name`, or every snapshot."""
    with _LOCK:
        if name is None:
            _SNAPSHOTS.clear()
        else:
            _SNAPSHOTS.pop(name, None)


def wsgi(app: Callable) -> Callable:
    """`app` with the snapshot endpoints in front of it (see the module's docstring). Answers JSON; 404 for a
    snapshot that was never saved, 409 for one that cannot be restored."""

    def serve(environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(PREFIX):
            return app(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        name, _, action = path[len(PREFIX):].partition("/")
        status, body = "404 Not Found", {"error": f"no such snapshot endpoint: {method} {path}"}
        if method == "POST" and name and not action:
            save(name)
            status, body = "200 OK", {"saved": name}
        elif method == "POST" and name and action == "restore":
            try:
                load(name)
                status, body = "200 OK", {"restored": name}
            except KeyError:
                body = {"error": f"no snapshot named {name!r}"}
            except SnapshotError as exc:
                status, body = "409 Conflict", {"error": str(exc)}
        elif method == "DELETE" and not action:
            drop(name or None)
            status, body = "200 OK", {"dropped": name or "all"}
        data = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    return serve


def server(ip_address: str, port: int):
    """moto's ThreadedMotoServer serving the snapshot endpoints too."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class SnapshottingMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:  # ThreadedMotoServer's own, with the app wrapped
            app = wsgi(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return SnapshottingMotoServer(ip_address=ip_address, port=port, verbose=False)
