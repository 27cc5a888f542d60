"""The deploy lock: a lease in the state bucket, taken with S3 conditional writes.

`apply` and `revert` hold it; `plan` and `drift` never take it and never wait on it. The lease records holder,
host, process, command, start time and expiry, and is renewed while the command runs (If-Match on the ETag, so a
renewal never overwrites somebody else's lease). A lease not renewed before its expiry (a killed CI job) is taken
over with a warning: no manual force-unlock needed after a crash; a lease whose holder ran on this host and whose
process is gone (a killed apply) is taken over at once. `lock release` removes it by hand (`--force` for a live
lease, or an unreadable lock object).

Releasing writes a "released" marker (who, when, a random token) over the lease instead of deleting it, so the
lock object's ETag changes every time anyone takes or gives back the lock. `apply` reads the lock before it
plans (`observe`) and takes it with If-Match on that ETag: when that succeeds, nobody held the lock in between,
so no other apply or revert changed anything since the plan's reads and the plan stands without being made again
(`DeployLock.undisturbed`). Any other way to the lock (it was held, taken over, released by hand, or never taken)
means planning again under the lock.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Callable

import structlog

from dmp_deploy.errors import UserError
from dmp_deploy.errors import CorruptState
from dmp_deploy.state_store import StateStore, precondition_failed, schema_problems

log = structlog.get_logger()
KEY = "locks/deploy.json"


class LockHeld(UserError):
    kind = "lock"


class LockLost(UserError):
    kind = "lock"


@dataclass
class Lease:
    holder: str  # caller identity ARN
    host: str
    pid: int
    command: str
    started: float
    expires: float

    def expired(self, now: float) -> bool:
        return now >= self.expires

    def describe(self, now: float) -> str:
        state = "expired" if self.expired(now) else f"expires in {int(self.expires - now)}s"
        return (f"{self.holder} on {self.host} (pid {self.pid}, `{self.command}`), held since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(self.started))}, {state}")


def now() -> float:
    """Wall-clock seconds; a module function so that a test can move time past a dead holder's lease."""
    return time.time()


LEASE_SCHEMA = {"holder": str, "host": str, "pid": int, "command": str, "started": (int, float),
                "expires": (int, float)}
RELEASED = "released"  # {"released": {...}}: the lock is free; the fields say who gave it back, and when
RELEASED_SCHEMA = {"by": str, "host": str, "pid": int, "command": str, "at": (int, float), "token": str}


@dataclass(frozen=True)
class Observation:
    """The lock as read: `lease` is the holder's lease (None when free) and `etag` the lock object's ETag, whether
    it holds a lease or a released marker (None when there is no lock object at all)."""

    lease: Lease | None
    etag: str | None


NOTHING = Observation(None, None)


def observe(store: StateStore) -> Observation:
    """The lock object as it is now. An unreadable one raises CorruptState, which says how to remove it
    (`lock release --force` always can)."""
    env = store.config.env
    advice = (f"If no apply or revert is running for {env}, remove it with `python run.py lock release --env {env} "
              f"--force`.")
    document, etag = store.get_json(KEY, None, advice=advice)
    if not document:
        return NOTHING
    if isinstance(document, dict) and set(document) == {RELEASED}:
        problems = schema_problems(document[RELEASED], RELEASED_SCHEMA)
        if not problems:
            return Observation(None, etag)
    else:
        problems = schema_problems(document, LEASE_SCHEMA)
        if not problems:
            return Observation(Lease(**{k: document[k] for k in LEASE_SCHEMA}), etag)
    raise CorruptState(f"{store.location(KEY)} cannot be read: {'; '.join(problems)}. {advice}")


def read(store: StateStore) -> tuple[Lease | None, str | None]:
    """The lease and its ETag, or (None, None) when the lock is free."""
    seen = observe(store)
    return (seen.lease, seen.etag) if seen.lease else (None, None)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process (or not a pid we can ask about): assume it lives
    return True


def holder_gone(lease: Lease) -> bool:
    """The holder ran on this host and its process no longer exists (a killed apply): its lease protects
    nothing, so it is taken over at once instead of after its expiry."""
    return lease.host == socket.gethostname() and lease.pid != os.getpid() and not pid_alive(lease.pid)


class DeployLock:
    def __init__(self, store: StateStore, holder: str, command: str, lease_seconds: int, wait_seconds: int,
                 clock: Callable[[], float] | None = None, sleep: Callable[[float], None] = time.sleep,
                 seen: Observation | None = None):
        self.store = store
        self.seen = seen
        self.holder = holder
        self.command = command
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.clock = clock or (lambda: now())
        self.sleep = sleep
        self.etag: str | None = None
        self.undisturbed = False  # see acquire
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _lease(self, started: float | None = None) -> Lease:
        now = self.clock()
        return Lease(self.holder, socket.gethostname(), os.getpid(), self.command, started or now,
                     now + self.lease_seconds)

    def acquire(self, seen: Observation | None = None) -> None:
        """Take the lock, waiting up to `wait_seconds` for a live holder. `seen`: the lock as observed before the
        caller planned; when it was free and the lock is taken from exactly that state (If-Match on its ETag),
        `undisturbed` is set: nobody held it in between."""
        deadline = self.clock() + self.wait_seconds
        announced = False
        # First attempt: from the state seen before planning, or, knowing nothing, as if there were no lock object
        # (the usual case on a first apply; a failed attempt costs one read).
        current = seen if seen is not None and seen.lease is None else NOTHING
        first = True
        while True:
            if current.lease is None:
                lease = self._lease()
                try:
                    self.etag = self._write(asdict(lease), current.etag)
                    self._taken(lease, undisturbed=first and seen is not None and current.etag is not None)
                    return
                except Exception as exc:
                    if not precondition_failed(exc):
                        raise
                current = observe(self.store)
                if current.lease == lease:
                    # Our own write: S3 stored it but the answer was lost, and the retried PUT found it there.
                    self.etag = current.etag
                    self._taken(lease, undisturbed=False)
                    return
            first = False
            now = self.clock()
            if current.lease is None:
                continue  # released between our write and our read: try again at once
            gone = holder_gone(current.lease)
            if current.lease.expired(now) or gone:
                lease = self._lease()
                try:
                    self.etag = self._write(asdict(lease), current.etag)
                    self._taken(lease, undisturbed=False)
                    log.warning("took over a deploy lock whose holder's process is gone" if gone else
                                "took over an expired deploy lock", previous=current.lease.describe(now))
                    return
                except Exception as exc:
                    if not precondition_failed(exc):
                        raise
                    current = observe(self.store)
                    continue  # someone else took it over first
            if now >= deadline:
                raise LockHeld(f"the deploy lock for {self.store.config.env} is held by "
                               f"{current.lease.describe(now)}. Waited {self.wait_seconds}s. Wait for it to finish, "
                               f"or, if you are sure it is dead, run `python run.py lock release --env "
                               f"{self.store.config.env} --force`.")
            if not announced:
                log.info("waiting for the deploy lock", holder=current.lease.describe(now))
                announced = True
            self.sleep(min(5.0, max(0.5, deadline - now)))
            current = observe(self.store)

    def _write(self, document: dict, etag: str | None) -> str:
        """Write the lock object: a new one (If-None-Match), or over the one whose ETag is `etag` (If-Match)."""
        if etag is None:
            return self.store.put_json(KEY, document, if_none_match=True)
        return self.store.put_json(KEY, document, if_match=etag)

    def _taken(self, lease: Lease, undisturbed: bool) -> None:
        self._started = lease.started
        self.undisturbed = undisturbed
        log.info("deploy lock taken", holder=self.holder, undisturbed=undisturbed)

    def renew(self) -> None:
        try:
            self.etag = self.store.put_json(KEY, asdict(self._lease(self._started)), if_match=self.etag)
        except Exception as exc:
            if precondition_failed(exc):
                self.lost.set()
                log.error("the deploy lock was taken by someone else while this command held it")
            else:
                log.warning("could not renew the deploy lock; will retry", error=str(exc))

    def check(self) -> None:
        """Raise when the lease was lost (the executor calls this between changes)."""
        if self.lost.is_set():
            raise LockLost("the deploy lock was lost (taken over by another run): stopping before the next change. "
                           "Run `python run.py lock status` and re-run apply when it is free.")

    def release(self) -> None:
        self._stop.set()
        if self._renewer:
            self._renewer.join(timeout=5)
        if self.etag and not self.lost.is_set():
            released = {"by": self.holder, "host": socket.gethostname(), "pid": os.getpid(), "command": self.command,
                        "at": self.clock(), "token": uuid.uuid4().hex}  # the token: a new ETag every time
            try:
                self.store.put_json(KEY, {RELEASED: released}, if_match=self.etag)
            except Exception as exc:
                if not precondition_failed(exc):
                    log.warning("could not release the deploy lock; it will expire", error=str(exc))

    def __enter__(self) -> "DeployLock":
        self.acquire(self.seen)
        interval = max(1.0, self.lease_seconds / 3)

        def renew_loop():
            while not self._stop.wait(interval):
                self.renew()

        self._renewer = threading.Thread(target=renew_loop, name="deploy-lock-renewer", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
