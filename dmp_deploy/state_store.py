"""The tool's own state bucket per environment: release records and the deploy lock.

Private (public access block on, bucket-owner enforced), encrypted, versioned, TLS-only (except where the config
turns that control off for the embedded AWS, as for the add-users bucket), created on first use by `apply` or
`revert`. `plan`, `drift` and `history` only read it and never create it.
"""

from __future__ import annotations

import contextvars
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, TypeVar

import botocore.exceptions
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from dmp_deploy.aws import Aws, error_code
from dmp_deploy.config import Config
from dmp_deploy.errors import CorruptState

NOT_FOUND = ("NoSuchKey", "404", "NotFound", "NoSuchBucket")
T = TypeVar("T")


def bucket_name(config: Config) -> str:
    return f"{config.prefix}-dmp-deploy-state-{config.environment.account_id}"


def tls_only_policy(bucket: str) -> dict:
    """The state bucket's policy: refuse every request not made over TLS."""
    return {"Version": "2012-10-17",
            "Statement": [{"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                           "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                           "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}


class StateStore:
    def __init__(self, config: Config, aws: Aws):
        self.config = config
        self.aws = aws
        self.bucket = bucket_name(config)

    def exists(self) -> bool:
        try:
            self.aws.call("s3", "head_bucket", Bucket=self.bucket)
            return True
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in NOT_FOUND:
                return False
            raise

    def complete(self) -> bool:
        """Whether the bucket exists and is completely secured (its tags, written last, say so). One read."""
        tags = self.config.resource_tags(**{"dmp:role": "state"})
        try:
            have = self.aws.call("s3", "get_bucket_tagging", Bucket=self.bucket).get("TagSet", [])
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) not in NOT_FOUND + ("NoSuchTagSet",):
                raise
            return False
        return {t["Key"]: t["Value"] for t in have} == tags

    def ensure(self, concurrency: int | None = None, complete: bool | None = None) -> None:
        """Create and secure the bucket unless it is complete (idempotent). Its tags are written last and mark it
        complete, so a run killed half way through securing it finishes the job next time instead of trusting a
        bucket that merely exists. One read when it is complete.

        Once the bucket exists, its settings (public access block, ownership, encryption, versioning, policy) are
        independent of each other and are made at the same time: four round trips in a row on a first apply
        (read the tags, create, the settings, the tags) instead of eight. `concurrency` is the command's bound on
        changes in flight (None: the config's deployment.concurrent_changes); at 1 the settings are made one at a
        time, in a fixed order, like every other change of such a run. `complete`: what `complete()` answered
        moments ago (deploy.py reads it beside preflight); None: read it now."""
        tags = self.config.resource_tags(**{"dmp:role": "state"})
        if complete is None:
            complete = self.complete()
        if complete:
            return
        params = {"Bucket": self.bucket}
        if self.config.environment.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.config.environment.region}
        try:
            self.aws.call("s3", "create_bucket", **params)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "BucketAlreadyOwnedByYou":
                raise
        settings = [
            ("put_public_access_block", {"PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True}}),
            ("put_bucket_ownership_controls",
             {"OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}}),
            ("put_bucket_encryption", {"ServerSideEncryptionConfiguration": {
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}}),
            ("put_bucket_versioning", {"VersioningConfiguration": {"Status": "Enabled"}}),
        ]
        if self.config.add_users.enforce_tls_in_bucket_policy:
            settings.append(("put_bucket_policy", {"Policy": json.dumps(tls_only_policy(self.bucket))}))
        limit = self.config.deployment.concurrent_changes if concurrency is None else concurrency
        at_once(lambda setting: self._set(*setting), settings, limit)
        # Only once every setting is made (at_once has raised if one failed): the tags say the bucket is complete.
        self.aws.call("s3", "put_bucket_tagging", Bucket=self.bucket, Tagging={"TagSet": [
            {"Key": k, "Value": v} for k, v in sorted(tags.items())]})

    def _set(self, operation: str, params: dict) -> None:
        """One setting of the bucket. S3 may refuse a bucket setting made while another is still being applied to
        the same bucket (409 OperationAborted, "A conflicting conditional operation is currently in progress";
        seen with concurrent PutBucketPolicy, PutPublicAccessBlock and PutBucketVersioning): each write is
        idempotent, so it is tried again after a short wait."""
        for attempt in Retrying(retry=retry_if_exception(lambda exc: error_code(exc) == "OperationAborted"),
                                wait=wait_random_exponential(multiplier=0.2, max=3), stop=stop_after_attempt(6),
                                reraise=True, before_sleep=lambda _state: self.aws._add_retry()):
            with attempt:
                self.aws.call("s3", operation, Bucket=self.bucket, **params)

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def get_json(self, key: str, schema: dict[str, Any] | None = None, advice: str = "",
                 missing: tuple[str, ...] = NOT_FOUND) -> tuple[dict, str] | tuple[None, None]:
        """(document, etag), or (None, None) when the object (or the bucket) does not exist: when AWS answers
        one of the error codes `missing` (without "NoSuchBucket", a missing bucket raises instead).

        Raises CorruptState naming the object, what is wrong with it and `advice` (what to do) when it is not a
        JSON object, or does not match `schema` ({field: type or tuple of types}, see `schema_problems`)."""
        try:
            response = self.aws.call("s3", "get_object", Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in missing:
                return None, None
            raise
        body = response["Body"].read()
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            problems = [f"not JSON ({exc})"]
        else:
            problems = schema_problems(document, schema or {})
        if problems:
            raise CorruptState(f"{self.location(key)} cannot be read: {'; '.join(problems)}. {advice}".strip())
        return document, response["ETag"]

    def put_json(self, key: str, document: dict, if_none_match: bool = False, if_match: str | None = None) -> str:
        """Write a document; with if_none_match only if the key is new, with if_match only if unchanged.
        Raises ClientError PreconditionFailed otherwise. Returns the new ETag."""
        params = {"Bucket": self.bucket, "Key": key, "Body": json.dumps(document, indent=1, default=str).encode(),
                  "ContentType": "application/json"}
        if if_none_match:
            params["IfNoneMatch"] = "*"
        if if_match:
            params["IfMatch"] = if_match
        return self.aws.call("s3", "put_object", **params)["ETag"]

    def delete(self, key: str, if_match: str | None = None) -> None:
        params = {"Bucket": self.bucket, "Key": key}
        if if_match:
            params["IfMatch"] = if_match
        self.aws.call("s3", "delete_object", **params)

    def keys(self, prefix: str) -> list[str]:
        try:
            objects = self.aws.pages("s3", "list_objects_v2", "Contents", Bucket=self.bucket, Prefix=prefix)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in NOT_FOUND:
                return []
            raise
        return sorted(o["Key"] for o in objects)


def schema_problems(document: Any, schema: dict[str, Any]) -> list[str]:
    """What keeps `document` from being a JSON object with each field of `schema` of its type(s). Extra fields
    are allowed (a newer version of this tool may add some)."""
    if not isinstance(document, dict):
        return [f"expected a JSON object, found {type(document).__name__}"]
    problems = []
    for name, types in schema.items():
        types = types if isinstance(types, tuple) else (types,)
        if name not in document:
            if type(None) not in types:
                problems.append(f"{name} is missing")
        elif not isinstance(document[name], types) or (isinstance(document[name], bool) and bool not in types):
            problems.append(f"{name} is {type(document[name]).__name__}, expected "
                            f"{' or '.join('null' if t is type(None) else t.__name__ for t in types)}")
    return problems


def precondition_failed(exc: BaseException) -> bool:
    return isinstance(exc, botocore.exceptions.ClientError) and error_code(exc) in (
        "PreconditionFailed", "412", "ConditionalRequestConflict")


def at_once(fn: Callable[[T], Any], items: Iterable[T], limit: int) -> list:
    """`fn` over `items`, up to `limit` at the same time (1: one after another, in order); results in input order.
    Each item runs in a copy of the caller's context variables, as in `Context.map` (what the caller's calls are
    polling for). Every item is carried out before the first error, if any, is raised."""
    items = list(items)
    if limit <= 1 or len(items) <= 1:
        return [fn(i) for i in items]
    caller = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=min(limit, len(items)), thread_name_prefix="state") as pool:
        futures = [pool.submit(caller.copy().run, fn, i) for i in items]
    return [f.result() for f in futures]
