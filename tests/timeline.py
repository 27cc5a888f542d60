"""When each mutating AWS call of a command started and ended, and on which of the executor's threads; with an
optional latency injected before each mutating call is sent (as AWS's own round trip would add).

Attach with `session.ON_CONNECT` (see `timeline` in test_executor_aws.py). The start is taken by a seam hook, the
end by botocore's `after-call` event on the same thread, so a call's span covers its latency and its answer.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from dmp_deploy.executor import THREAD_PREFIX


@dataclass
class Span:
    service: str
    operation: str
    params: dict
    thread: str
    start: float
    end: float | None = None

    @property
    def change_thread(self) -> bool:
        """Made by one of the executor's workers (not the scheduler, the lock or a kind's own pool)."""
        return self.thread.startswith(THREAD_PREFIX)

    def overlaps(self, other: "Span") -> bool:
        return self.start < (other.end or float("inf")) and other.start < (self.end or float("inf"))


@dataclass
class Timeline:
    latency: float = 0.0  # seconds slept before each mutating call is sent
    spans: list[Span] = field(default_factory=list)
    _current: threading.local = field(default_factory=threading.local)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    sleeping: dict[str, int] = field(default_factory=dict)  # executor thread -> mutating calls in its latency

    def attach(self, aws) -> None:
        aws.hooks.append(self.hook)
        aws._session.events.register("after-call", self._answered)  # copied into each client made later
        for client in list(aws._clients.values()):
            client.meta.events.register("after-call", self._answered)

    def hook(self, call) -> None:
        if not call.mutating:
            return
        span = Span(call.service, call.operation, dict(call.params), threading.current_thread().name,
                    time.monotonic())
        with self._lock:
            self.spans.append(span)
            self.sleeping[span.thread] = self.sleeping.get(span.thread, 0) + 1
        self._current.span = span
        try:
            if self.latency:
                time.sleep(self.latency)
        finally:
            with self._lock:
                self.sleeping[span.thread] -= 1

    def changes_in_flight(self) -> int:
        """Executor threads whose mutating call is in its latency right now (passed every earlier hook)."""
        with self._lock:
            return sum(1 for thread, n in self.sleeping.items() if n and thread.startswith(THREAD_PREFIX))

    def _answered(self, **_) -> None:
        span = getattr(self._current, "span", None)
        if span is not None and span.end is None:
            span.end = time.monotonic()
            self._current.span = None

    def of(self, operation: str, service: str | None = None) -> list[Span]:
        return [s for s in self.spans if s.operation == operation and service in (None, s.service)]

    def most_changes_at_once(self, operations: set[str] | None = None) -> int:
        """The most executor threads that had a mutating call (of `operations`) under way at one moment."""
        chosen = [s for s in self.spans if s.change_thread and (operations is None or s.operation in operations)]
        best = 0
        for s in chosen:
            at_once = {o.thread for o in chosen if o.start <= s.start < (o.end or float("inf"))}
            best = max(best, len(at_once))
        return best
