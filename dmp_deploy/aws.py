"""The one seam every AWS call goes through.

Clients use botocore's `standard` retry mode. On top of it, tenacity retries the errors AWS means as
transient but botocore does not classify as retryable (ECS's "Too many concurrent attempts ..."). Every
call is counted by operation and by kind (read or mutating); tests and benchmarks register hooks on the
seam to fail, slow or abort calls. A seam opened read-only refuses mutating calls outright, which is how
`plan` and `drift` guarantee they change nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import boto3
import botocore.config
import botocore.exceptions
from tenacity import retry_if_exception, stop_after_attempt, wait_random_exponential, Retrying

from dmp_deploy.botocore_models import shared_loader
from dmp_deploy.errors import MutationRefused

READ_PREFIXES = ("describe_", "list_", "get_", "head_", "lookup_", "search_", "batch_get_", "filter_")

# (error code, message fragment) pairs that AWS returns for transient conditions botocore does not retry.
EXTRA_RETRYABLE = (
    ("ClientException", "Too many concurrent attempts"),
    ("ServerException", ""),
    ("ConcurrentModificationException", ""),
    ("OperationAbortedException", "conflicting conditional operation"),
)


# STS answers the first call of every command (the account guard). When it cannot be reached, the network,
# proxy or endpoint is wrong and retrying will not help: say so after one retry, not after ~9 s of silent ones.
FAIL_FAST_SERVICES = frozenset({"sts"})
FAIL_FAST = botocore.config.Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=3)


def is_mutating(operation: str) -> bool:
    """True for every operation that can change AWS state. Unknown operations count as mutating."""
    return not operation.startswith(READ_PREFIXES)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return exc.response.get("Error", {}).get("Code", "")
    return ""


def _extra_retryable(exc: BaseException) -> bool:
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    code = error_code(exc)
    message = exc.response.get("Error", {}).get("Message", "") or ""
    return any(code == c and fragment in message for c, fragment in EXTRA_RETRYABLE)


Hook = Callable[["Call"], None]

# What the calls made in this context are waiting for, when they are polls: calls that wait for AWS to finish
# something this tool started (a mount target becoming available, a rollout, a Cloud Map operation). They are
# counted apart from the round trips that the tool's own ordering costs (`CallStats.round_trips`).
_POLLING: contextvars.ContextVar[str | None] = contextvars.ContextVar("dmp_polling", default=None)


@contextlib.contextmanager
def polling(purpose: str):
    """Mark the AWS calls made inside the block (in this thread, and in threads `Context.map` starts from it) as
    polls for `purpose`, e.g. "service rollouts". The seam counts them by operation and purpose."""
    token = _POLLING.set(purpose)
    try:
        yield
    finally:
        _POLLING.reset(token)

@dataclass
class Call:
    """One AWS call as the hooks see it. A hook may raise to fail or abort it, or sleep to slow it."""

    service: str
    operation: str
    params: dict
    mutating: bool
    sequence: int  # 1-based position among all calls on this seam
    mutation_sequence: int  # 1-based position among mutating calls (0 for reads)


@dataclass
class CallStats:
    calls: Counter = field(default_factory=Counter)  # "service.operation" -> count
    mutating: Counter = field(default_factory=Counter)
    retries: int = 0  # botocore's own retries plus ours
    # The critical path, in calls: each call's depth is 1 + the greatest depth among the calls that had completed
    # when it started (so calls made at the same time share a depth, and a call made after another's answer is one
    # deeper). Polls (`polling`) add to `poll_round_trips` instead, by the same rule among polls. Measured in time
    # order: two calls that could have run together but did not (one thread was slow to start) count as a chain, so
    # these are upper bounds; with latency injected per call (benchmarks/run.py, tests/test_plan_calls.py) they
    # are the round trips a run waits for.
    round_trips: int = 0
    poll_round_trips: int = 0
    polls: Counter = field(default_factory=Counter)  # "service.operation: purpose" -> count

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def total_mutating(self) -> int:
        return sum(self.mutating.values())

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "mutating": self.total_mutating,
            "retries": self.retries,
            "by_operation": dict(sorted(self.calls.items())),
        }


class Aws:
    """Clients for one account and region, behind the counting, retrying, hookable seam."""

    def __init__(
        self,
        region: str,
        endpoint_url: str | None = None,
        read_only: bool = False,
        max_attempts: int = 8,
        credentials: dict | None = None,
    ):
        self.region = region
        self.endpoint_url = endpoint_url
        self.read_only = read_only
        self.identity = "unknown"  # the caller's ARN, set by session.connect
        self.stats = CallStats()
        self.hooks: list[Hook] = []
        self._lock = threading.Lock()
        self._client_locks: dict[str, threading.Lock] = {}
        self._session_lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._sequence = 0
        self._mutation_sequence = 0
        self._session = boto3.session.Session(region_name=region, **(credentials or {}))
        # One loader per process, its models parsed once and kept across processes (botocore_models.py).
        botocore_session = self._session._session
        botocore_session.register_component(
            "data_loader", shared_loader(botocore_session.get_config_variable("data_path")))
        self._config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            max_pool_connections=32,
            connect_timeout=5,
            read_timeout=30,
        )
        self._max_attempts = max_attempts

    def client(self, service: str):
        """The raw boto3 client. Only the seam itself and the hooks' plumbing should call AWS through it.
        Created on first use (a command builds only the clients it calls), under a lock per service: creating one
        takes tens of milliseconds (EC2's, 0.1 s), during which calls to other services, and the creation of their
        clients, go on."""
        client = self._clients.get(service)
        if client is not None:
            return client
        with self._lock:
            lock = self._client_locks.setdefault(service, threading.Lock())
            # The session's shared parts (credentials, endpoint resolver) are built lazily by its first client, and
            # botocore does not build them safely from two threads at once: the first client is made alone.
            first = self._session_lock if not self._clients else contextlib.nullcontext()
        with lock, first:
            if service not in self._clients:
                config = self._config
                if service in FAIL_FAST_SERVICES:
                    config = config.merge(FAIL_FAST)
                self._clients[service] = self._session.client(
                    service, endpoint_url=self.endpoint_url, config=config
                )
            return self._clients[service]

    def read_only_view(self) -> "Aws":
        """A seam sharing clients, hooks and counters with this one that refuses mutating calls."""
        view = object.__new__(Aws)
        view.__dict__.update(self.__dict__)
        view.read_only = True
        return view

    def call(self, service: str, operation: str, /, **params) -> dict:
        """Call `operation` (snake_case) on `service`; returns the response without ResponseMetadata.
        Positional-only: ECS's UpdateService and DeleteService have a parameter named `service` too."""
        mutating = is_mutating(operation)
        if mutating and self.read_only:
            raise MutationRefused(f"{service}.{operation} attempted through a read-only AWS seam")
        client = self.client(service)
        method = getattr(client, operation)
        purpose = _POLLING.get()
        with self._lock:
            depth = (self.stats.round_trips + (purpose is None), self.stats.poll_round_trips + (purpose is not None))
            if purpose is not None:
                self.stats.polls[f"{service}.{operation}: {purpose}"] += 1

        def attempt():
            with self._lock:
                self._sequence += 1
                if mutating:
                    self._mutation_sequence += 1
                call = Call(
                    service, operation, params, mutating, self._sequence,
                    self._mutation_sequence if mutating else 0,
                )
                self.stats.calls[f"{service}.{operation}"] += 1
                if mutating:
                    self.stats.mutating[f"{service}.{operation}"] += 1
            for hook in list(self.hooks):
                hook(call)
            try:
                response = method(**params)
            except botocore.exceptions.ClientError as exc:
                self._count_retries(exc.response)
                raise
            self._count_retries(response)
            return response

        retrying = Retrying(
            retry=retry_if_exception(_extra_retryable),
            wait=wait_random_exponential(multiplier=0.2, max=5),
            stop=stop_after_attempt(6),
            reraise=True,
            before_sleep=lambda _state: self._add_retry(),
        )
        try:
            response = retrying(attempt)
        finally:
            with self._lock:
                self.stats.round_trips = max(self.stats.round_trips, depth[0])
                self.stats.poll_round_trips = max(self.stats.poll_round_trips, depth[1])
        if isinstance(response, dict):
            response = {k: v for k, v in response.items() if k != "ResponseMetadata"}
        return response

    def pages(self, service: str, operation: str, result_key: str, **params) -> list:
        """Every item of a paginated read, page by page through the seam (each page is one counted call)."""
        client = self.client(service)
        paginator = client.get_paginator(operation)
        model = paginator._pagination_cfg  # input/output token names from botocore's own model
        in_tokens = model["input_token"] if isinstance(model["input_token"], list) else [model["input_token"]]
        out_tokens = model["output_token"] if isinstance(model["output_token"], list) else [model["output_token"]]
        items: list = []
        token_params: dict = {}
        while True:
            page = self.call(service, operation, **params, **token_params)
            items.extend(_dig(page, result_key))
            next_tokens = [_dig_scalar(page, t) for t in out_tokens]
            if not any(next_tokens):
                return items
            token_params = {i: t for i, t in zip(in_tokens, next_tokens) if t}

    def _count_retries(self, response: dict | None) -> None:
        attempts = (response or {}).get("ResponseMetadata", {}).get("RetryAttempts", 0)
        if attempts:
            with self._lock:
                self.stats.retries += attempts

    def _add_retry(self) -> None:
        with self._lock:
            self.stats.retries += 1


def _dig(page: dict, key: str) -> Iterable:
    value: Any = page
    for part in key.split("."):
        value = value.get(part, []) if isinstance(value, dict) else []
    return value or []


def _dig_scalar(page: dict, key: str):
    value: Any = page
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
