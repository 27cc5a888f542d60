"""The round trips of apply around the executor (issue 14): securing the state bucket, recording the release, and
the release reads of the plan. Counted at the AWS seam with latency injected, as in tests/test_critical_path.py:
calls that can run together overlap, and a deeper call is one that waited for another's answer."""

import threading
import time

import botocore.exceptions
import pytest

from dmp_deploy.aws import Aws
from dmp_deploy.config import load_config
from dmp_deploy.state_store import StateStore

LATENCY_S = 0.1  # per call: far longer than a thread takes to start a call it could make beside another


def seam(local_aws, latency: float = LATENCY_S) -> Aws:
    aws = Aws(local_aws.region, endpoint_url=local_aws.endpoint,
              credentials={"aws_access_key_id": "local", "aws_secret_access_key": "local"})
    aws.client("s3")  # built before anything is timed: a client's creation is CPU, not a round trip
    if latency:
        aws.hooks.append(lambda call: time.sleep(latency))
    return aws


class Spans:
    """Each call's operation, start and end on a seam (wraps its `call`)."""

    def __init__(self, aws: Aws):
        self.spans: list[tuple[str, float, float]] = []
        self._lock = threading.Lock()
        original = aws.call

        def call(service, operation, /, **params):
            started = time.monotonic()
            try:
                return original(service, operation, **params)
            finally:
                with self._lock:
                    self.spans.append((operation, started, time.monotonic()))
        aws.call = call

    def of(self, operation: str) -> list[tuple[float, float]]:
        return [(s, e) for op, s, e in self.spans if op == operation]


SETTINGS = ("put_public_access_block", "put_bucket_ownership_controls", "put_bucket_encryption",
            "put_bucket_versioning")


# --- the state bucket ------------------------------------------------------------------------------------------


def test_a_new_state_bucket_is_secured_in_four_round_trips_with_its_tags_last(local_aws):
    aws = seam(local_aws)
    spans = Spans(aws)
    store = StateStore(load_config("local"), aws)
    store.ensure()
    # read the tags, create, every setting at once, then the tags that mark the bucket complete
    assert aws.stats.round_trips == 4
    settings = [span for op in SETTINGS for span in spans.of(op)]
    assert len(settings) == len(SETTINGS)
    assert max(start for start, _ in settings) < min(end for _, end in settings)  # they overlapped
    (tagged,) = spans.of("put_bucket_tagging")
    assert tagged[0] >= max(end for _, end in settings)  # only once every setting was made
    s3 = local_aws.client("s3")
    assert s3.get_bucket_versioning(Bucket=store.bucket)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=store.bucket)["PublicAccessBlockConfiguration"].values())
    mutating = aws.stats.total_mutating
    store.ensure()
    assert aws.stats.total_mutating == mutating  # complete: one read, nothing written


def test_at_concurrency_one_the_settings_are_made_one_at_a_time_in_order(local_aws):
    aws = seam(local_aws, latency=0)
    made = []
    aws.hooks.append(lambda call: made.append(call.operation) if call.mutating else None)
    StateStore(load_config("local"), aws).ensure(concurrency=1)
    assert made[:1 + len(SETTINGS)] == ["create_bucket", *SETTINGS]
    assert made[-1] == "put_bucket_tagging"


def test_a_bucket_whose_securing_failed_half_way_is_not_tagged_and_the_next_run_completes_it(local_aws):
    aws = seam(local_aws, latency=0)

    def fail_versioning(call):
        if call.operation == "put_bucket_versioning":
            raise RuntimeError("killed while securing the bucket")
    aws.hooks.append(fail_versioning)
    store = StateStore(load_config("local"), aws)
    with pytest.raises(RuntimeError, match="killed while securing"):
        store.ensure()
    s3 = local_aws.client("s3")
    with pytest.raises(botocore.exceptions.ClientError):  # not marked complete
        s3.get_bucket_tagging(Bucket=store.bucket)
    aws.hooks.remove(fail_versioning)
    store.ensure()
    assert s3.get_bucket_versioning(Bucket=store.bucket)["Status"] == "Enabled"
    assert {t["Key"] for t in s3.get_bucket_tagging(Bucket=store.bucket)["TagSet"]} >= {"dmp:role"}


def test_a_setting_refused_while_another_is_applied_is_tried_again(local_aws):
    """S3 answers 409 OperationAborted to a bucket setting made while another is still being applied."""
    aws = seam(local_aws, latency=0)
    refused = []

    def conflict(call):
        if call.operation == "put_bucket_encryption" and not refused:
            refused.append(call.operation)
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "OperationAborted", "Message": "A conflicting conditional operation is "
                                                                  "currently in progress against this resource."}},
                "PutBucketEncryption")
    aws.hooks.append(conflict)
    store = StateStore(load_config("local"), aws)
    store.ensure()
    assert refused and aws.stats.calls["s3.put_bucket_encryption"] == 2
    rules = local_aws.client("s3").get_bucket_encryption(Bucket=store.bucket)["ServerSideEncryptionConfiguration"]
    assert rules["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
