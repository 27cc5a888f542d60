"""Where moto 5.2.5 (the embedded AWS of the `local` environment) falls short of what the tool needs.

Each gap is one function here, registered with `@gap`, with a docstring saying what AWS does and what moto
does instead, and one test in tests/test_moto_compat.py that fails loudly if a newer moto changes it.
Nothing here is imported by the code that talks to real AWS: `apply()` is called only by the embedded
server (dmp_deploy/local/server.py) and by the test suite's in-process server.

The tool never weakens what it does against real AWS to suit the emulator. The one control moto cannot
honour (a bucket policy denying non-TLS requests: moto ignores the condition and denies everything) is
switched off in config/local.toml only, and tests assert it is present for staging and production.
"""

from __future__ import annotations

from typing import Callable

GAPS: dict[str, Callable[[], None]] = {}
_applied: set[str] = set()


def gap(fn: Callable[[], None]) -> Callable[[], None]:
    GAPS[fn.__name__] = fn
    return fn


def apply() -> None:
    """Apply every patch once (idempotent; safe to call from several test modules)."""
    for name, fn in GAPS.items():
        if name not in _applied:
            fn()
            _applied.add(name)


@gap
def s3_echoes_eventbridge_configuration() -> None:
    """AWS: GetBucketNotificationConfiguration returns `EventBridgeConfiguration: {}` when it is on.
    moto 5.2.5 stores it (and emits events) but leaves it out of the response, so a reconciler would
    re-enable it on every run."""
    from moto.core.common_types import TYPE_RESPONSE
    from moto.core.responses import ActionResult
    from moto.s3.responses import S3Response

    original = S3Response.get_bucket_notification

    def get_bucket_notification(self) -> TYPE_RESPONSE:
        config = self.backend.get_bucket_notification_configuration(self.bucket_name)
        if not config or config.event_bridge is None:
            return original(self)
        if config.topic or config.queue or config.cloud_function:
            raise NotImplementedError("dmp-deploy compat: mixed notification configurations")
        self.data["Action"] = "GetBucketNotificationConfiguration"
        return self.serialized(ActionResult({"EventBridgeConfiguration": {}}))

    S3Response.get_bucket_notification = get_bucket_notification


@gap
def logs_associates_kms_keys() -> None:
    """AWS: AssociateKmsKey / DisassociateKmsKey change a log group's key in place. moto 5.2.5 has neither
    (the key can only be set at creation), so a changed `logs.kms_key_arn` could not be applied locally."""
    from moto.logs.responses import LogsResponse
    from moto.logs.exceptions import ResourceNotFoundException

    def _group(self):
        name = self._get_param("logGroupName")
        if name not in self.logs_backend.groups:
            raise ResourceNotFoundException()
        return self.logs_backend.groups[name]

    def associate_kms_key(self) -> str:
        _group(self).kms_key_id = self._get_param("kmsKeyId")
        return ""

    def disassociate_kms_key(self) -> str:
        _group(self).kms_key_id = None
        return ""

    LogsResponse.associate_kms_key = associate_kms_key
    LogsResponse.disassociate_kms_key = disassociate_kms_key
