"""The deploy lock: a lease in the state bucket, taken with S3 conditional writes.

`apply` and `revert` hold it; `plan` and `drift` never take it and never wait on it. The lease records holder,
host, process, command, start time and expiry, and is renewed while the command runs (If-Match on the ETag, so a
renewal never overwrites somebody else's lease). A lease not renewed before its expiry (a killed CI job) is taken
over with a warning: no manual force-unlock needed after a crash; a lease whose holder ran on this host and whose
process is gone (a killed apply) is taken over at once. `lock release` removes it by hand (`--force` for a live
lease, or an unreadable lock object).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable

import structlog

from dmp_deploy.errors import UserError
from dmp_deploy.state_store import StateStore, precondition_failed

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


def read(store: StateStore) -> tuple[Lease | None, str | None]:
    """The lease and its ETag, or (None, None) when the lock is free. An unreadable lock object raises
    CorruptState, which says how to remove it (`lock release --force` always can)."""
    env = store.config.env
    document, etag = store.get_json(KEY, LEASE_SCHEMA, advice=(
        f"If no apply or revert is running for {env}, remove it with `python run.py lock release --env {env} "
        f"--force`."))
    if not document:
        return None, None
    return Lease(**{k: document[k] for k in LEASE_SCHEMA}), etag


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
                 clock: Callable[[], float] | None = None, sleep: Callable[[float], None] = time.sleep):
        self.store = store
        self.holder = holder
        self.command = command
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.clock = clock or (lambda: now())
        self.sleep = sleep
        self.etag: str | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _lease(self, started: float | None = None) -> Lease:
        now = self.clock()
        return Lease(self.holder, socket.gethostname(), os.getpid(), self.command, started or now,
                     now + self.lease_seconds)

    def acquire(self) -> None:
        deadline = self.clock() + self.wait_seconds
        announced = False
        while True:
            lease = self._lease()
            try:
                self.etag = self.store.put_json(KEY, asdict(lease), if_none_match=True)
                self._started = lease.started
                log.info("deploy lock taken", holder=self.holder)
                return
            except Exception as exc:
                if not precondition_failed(exc):
                    raise
            current, etag = read(self.store)
            now = self.clock()
            if current is None:
                continue  # released between our write and our read: try again at once
            if current == lease:
                # Our own write: S3 stored it but the answer was lost, and the retried PUT found it there.
                self.etag = etag
                self._started = lease.started
                log.info("deploy lock taken", holder=self.holder)
                return
            gone = holder_gone(current)
            if current.expired(now) or gone:
                try:
                    self.etag = self.store.put_json(KEY, asdict(lease), if_match=etag)
                    self._started = lease.started
                    log.warning("took over a deploy lock whose holder's process is gone" if gone else
                                "took over an expired deploy lock", previous=current.describe(now))
                    return
                except Exception as exc:
                    if not precondition_failed(exc):
                        raise
                    continue  # someone else took it over first
            if now >= deadline:
                raise LockHeld(f"the deploy lock for {self.store.config.env} is held by {current.describe(now)}. "
                               f"Waited {self.wait_seconds}s. Wait for it to finish, or, if you are sure it is dead, "
                               f"run `python run.py lock release --env {self.store.config.env} --force`.")
            if not announced:
                log.info("waiting for the deploy lock", holder=current.describe(now))
                announced = True
            self.sleep(min(5.0, max(0.5, deadline - now)))

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
            try:
                self.store.delete(KEY, if_match=self.etag)
            except Exception as exc:
                if not precondition_failed(exc):
                    log.warning("could not release the deploy lock; it will expire", error=str(exc))

    def __enter__(self) -> "DeployLock":
        self.acquire()
        interval = max(1.0, self.lease_seconds / 3)

        def renew_loop():
            while not self._stop.wait(interval):
                self.renew()

        self._renewer = threading.Thread(target=renew_loop, name="deploy-lock-renewer", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
