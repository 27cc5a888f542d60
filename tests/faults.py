"""Faults where AWS produces them: inside botocore, below its retry loop.

A `before-send` handler on the seam's boto3 session answers a share of requests with the service's own
throttling error, in the service's own protocol, instead of sending them; or raises a read timeout. botocore
then parses, classifies and retries them exactly as it would in production (standard mode), and reports
`RetryAttempts`, which the seam adds up in `stats.retries`. The seam's own hooks (Aws.hooks) would not do:
they run above botocore's retry loop, so nothing would retry what they raise.

Throttling errors, per botocore service id (`botocore/data/<service>/.../service-2.json`, protocol from its
metadata; every code below is in botocore.retries.standard.ThrottledRetryableChecker's list, so standard mode
retries it as a throttle, with the throttling backoff and retry-quota cost):
  ec2                           ec2 query  503 RequestLimitExceeded   (EC2's own error; 503 is also transient)
  iam, sts                      query XML  400 Throttling             (`<ErrorResponse><Error><Code>`)
  elastic-load-balancing-v2     query XML  400 Throttling
  s3                            rest-xml   503 SlowDown               (`<Error><Code>SlowDown`)
  efs                           rest-json  429 ThrottlingException    (modeled in EFS's service-2.json with 429)
  ecs, ecr, kms, secrets-manager,
  eventbridge, cloudwatch-logs, ssm         json 1.1  400 ThrottlingException (modeled for events, logs, ssm)
  sfn                           json 1.0   400 ThrottlingException
  servicediscovery (Cloud Map)  json 1.1   400 RequestLimitExceeded   (modeled; this botocore speaks JSON to it)
  resource-groups-tagging-api   json 1.1   400 ThrottledException     (modeled: the tagging API's own name)

Read timeouts: `botocore.exceptions.ReadTimeoutError` is an HTTPClientError, which standard mode retries as a
transient error (TransientRetryableChecker). By default they are injected on reads only, before sending. With
`timeouts_after_send=True`, mutating calls also time out *after* the request reached the embedded AWS (the
call happened; only its answer is lost), which is what a real network fault can do.

The draws are deterministic: the n-th request of an operation meets the fate of a Random seeded with (seed,
operation, n). Threads may change which of two concurrent requests gets which fate, but not how many faults an
operation meets: that depends only on how many calls the command makes to it (it varies only where a command
polls against the clock: rollout waits, following an execution).

Attach to the seam a CLI command opens with `session.ON_CONNECT` (see the `faults` fixture in test_faults.py).
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass

import botocore.exceptions
from botocore import xform_name
from botocore.awsrequest import AWSResponse
from botocore.httpsession import URLLib3Session
from botocore.retries.standard import ExponentialBackoff

from dmp_deploy.aws import Aws, is_mutating


@dataclass(frozen=True)
class Throttle:
    protocol: str  # "json1.0", "json1.1", "rest-json", "query", "ec2", "rest-xml"
    status: int
    code: str
    message: str


THROTTLES: dict[str, Throttle] = {
    "ec2": Throttle("ec2", 503, "RequestLimitExceeded", "Request limit exceeded."),
    "acm": Throttle("json1.1", 400, "ThrottlingException", "Rate exceeded"),
    "iam": Throttle("query", 400, "Throttling", "Rate exceeded"),
    "sts": Throttle("query", 400, "Throttling", "Rate exceeded"),
    "elastic-load-balancing-v2": Throttle("query", 400, "Throttling", "Rate exceeded"),
    "s3": Throttle("rest-xml", 503, "SlowDown", "Please reduce your request rate."),
    "efs": Throttle("rest-json", 429, "ThrottlingException", "Rate exceeded"),
    "ecs": Throttle("json1.1", 400, "ThrottlingException", "Rate exceeded"),
    "ecr": Throttle("json1.1", 400, "ThrottlingException", "Rate exceeded"),
    "kms": Throttle("json1.1", 400, "ThrottlingException", "Rate exceeded"),
    "secrets-manager": Throttle("json1.1", 400, "ThrottlingException", "Rate exceeded"),
    "eventbridge": Throttle("json1.1", 400, "ThrottlingException", "Rate exceeded"),
    "cloudwatch-logs": Throttle("json1.1", 400, "ThrottlingException", "Rate exceeded"),
    "ssm": Throttle("json1.1", 400, "ThrottlingException", "Rate exceeded"),
    "sfn": Throttle("json1.0", 400, "ThrottlingException", "Rate exceeded"),
    "servicediscovery": Throttle("json1.1", 400, "RequestLimitExceeded", "Rate exceeded"),  # Cloud Map's own
    "resource-groups-tagging-api": Throttle("json1.1", 400, "ThrottledException", "Rate exceeded"),
}
# The texts a throttle that escaped would show: none may reach the user.
THROTTLE_WORDS = ("Throttl", "SlowDown", "RequestLimitExceeded", "Rate exceeded", "reduce your request rate")


class _Body:
    """The raw stream an AWSResponse reads its content from."""

    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_):
        yield self._body


def throttle_response(service_id: str, url: str) -> AWSResponse:
    """The HTTP answer `service_id` gives a throttled request, byte for byte in its protocol."""
    t = THROTTLES[service_id]
    request_id = str(uuid.uuid4())
    headers = {"x-amzn-RequestId": request_id}
    if t.protocol.startswith("json"):
        headers["Content-Type"] = f"application/x-amz-json-{t.protocol[4:]}"
        body = '{"__type": "%s", "message": "%s"}' % (t.code, t.message)
    elif t.protocol == "rest-json":
        headers.update({"Content-Type": "application/json", "x-amzn-ErrorType": t.code})
        body = '{"ErrorCode": "%s", "Message": "%s"}' % (t.code, t.message)
    elif t.protocol == "query":
        headers["Content-Type"] = "text/xml"
        body = (f'<ErrorResponse><Error><Type>Sender</Type><Code>{t.code}</Code><Message>{t.message}</Message>'
                f'</Error><RequestId>{request_id}</RequestId></ErrorResponse>')
    elif t.protocol == "ec2":
        headers["Content-Type"] = "text/xml;charset=UTF-8"
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{t.code}</Code>'
                f'<Message>{t.message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>')
    else:  # rest-xml (S3)
        headers.update({"Content-Type": "application/xml", "x-amz-request-id": request_id})
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{t.code}</Code><Message>{t.message}</Message>'
                f'<RequestId>{request_id}</RequestId><HostId>local</HostId></Error>')
    return AWSResponse(url, t.status, headers, _Body(body.encode()))


class FaultInjector:
    """Throttles `throttle_rate` of all requests and times out `timeout_rate` of reads (and, with
    `timeouts_after_send`, of mutating calls after sending them). `injected` counts what it did, by
    ("throttle" | "timeout" | "timeout-after-send", "service.Operation")."""

    def __init__(self, seed: int = 1, throttle_rate: float = 0.3, timeout_rate: float = 0.03,
                 timeouts_after_send: bool = False):
        self.seed = seed
        self.throttle_rate = throttle_rate
        self.timeout_rate = timeout_rate
        self.timeouts_after_send = timeouts_after_send
        self.injected: Counter = Counter()
        self.requests = 0
        self._seen: Counter = Counter()
        self._lock = threading.Lock()
        self._http = URLLib3Session()

    @property
    def total(self) -> int:
        return sum(self.injected.values())

    def count(self, fault: str) -> int:
        return sum(n for (kind, _), n in self.injected.items() if kind == fault)

    def attach(self, aws: Aws) -> None:
        """Inject into every client of `aws`, those it has and those it will create."""
        aws._session.events.register_first("before-send", self._before_send)  # copied into each new client
        for client in list(aws._clients.values()):
            client.meta.events.register_first("before-send", self._before_send)

    def _draw(self, event_name: str) -> float:
        with self._lock:
            self.requests += 1
            self._seen[event_name] += 1
            occurrence = self._seen[event_name]
        return random.Random(f"{self.seed}:{event_name}:{occurrence}").random()

    def _before_send(self, request, event_name: str, **_):
        _, service_id, operation = event_name.split(".", 2)
        where = f"{service_id}.{operation}"
        mutating = is_mutating(xform_name(operation))
        draw = self._draw(event_name)
        if draw < self.throttle_rate:
            self._record("throttle", where)
            return throttle_response(service_id, request.url)
        if draw < self.throttle_rate + self.timeout_rate:
            if not mutating:
                self._record("timeout", where)
                raise botocore.exceptions.ReadTimeoutError(endpoint_url=request.url)
            if self.timeouts_after_send:
                self._http.send(request)  # it reached AWS and took effect; the answer is lost
                self._record("timeout-after-send", where)
                raise botocore.exceptions.ReadTimeoutError(endpoint_url=request.url)
        return None

    def _record(self, fault: str, where: str) -> None:
        with self._lock:
            self.injected[(fault, where)] += 1


@contextmanager
def fast_backoff(scale: float = 0.02):
    """botocore's standard backoff with its base scaled down (throttles: 1 s -> 20 ms), so a test that meets a
    hundred throttles does not sleep a minute. Which errors are retried, how often and the retry quota are
    unchanged: only the length of each sleep."""
    original = ExponentialBackoff._DEFAULT_BACKOFF_CONFIG
    ExponentialBackoff._DEFAULT_BACKOFF_CONFIG = {
        key: value * scale for key, value in original.items()}
    try:
        yield
    finally:
        ExponentialBackoff._DEFAULT_BACKOFF_CONFIG = original
