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


# --- the release tail: what the plan read of the releases is where the record and the index start -------------


def record_running(*arns: str, digest: str = "d") -> dict:
    return {"kind": "apply", "time": "2026-01-01T00:00:00Z", "changes": [], "desired": {}, "task_definitions": {},
            "state_machines": {}, "digest": digest,
            "live": {"task_definition": {f"family-{i}": {"arn": arn} for i, arn in enumerate(arns)}}}


class Reads:
    """The S3 calls a seam makes from now on, with the conditions of each write."""

    def __init__(self, aws: Aws):
        self.calls: list[tuple[str, str, str]] = []  # (operation, key, condition)
        aws.hooks.append(self.hook)

    def hook(self, call):
        condition = "IfNoneMatch" if "IfNoneMatch" in call.params else "IfMatch" if "IfMatch" in call.params else ""
        self.calls.append((call.operation, call.params.get("Key", ""), condition))

    def take(self) -> list[tuple[str, str, str]]:
        taken, self.calls[:] = list(self.calls), []
        return taken


def plan_context(aws: Aws):
    """A context as a plan's, for the release reads (they need only config, seam and memo)."""
    from dmp_deploy.resources.base import Context
    return Context(load_config("local"), aws, desired=None)


@pytest.fixture
def store(local_aws):
    s = StateStore(load_config("local"), seam(local_aws, latency=0))
    s.ensure()
    return s


def test_after_the_plans_reads_a_release_is_two_conditional_writes(store):
    from dmp_deploy import releases
    assert releases.write(store, record_running("arn:td/a:1")) == 1
    assert releases.write(store, record_running("arn:td/a:2", digest="d2")) == 2
    reads = Reads(store.aws)
    ctx = plan_context(store.aws)
    assert releases.read_index(ctx)["latest"]["number"] == 2
    assert reads.take() == [("get_object", releases.INDEX, "")]
    # the index names release 2: one read, of release 3, tells that 2 is the newest (no listing)
    assert releases.newest(ctx) == {"number": 2, "digest": "d2"}
    assert reads.take() == [("get_object", releases.key(3), "")]

    assert releases.write(store, record_running("arn:td/a:3", digest="d3"), ctx) == 3
    assert reads.take() == [("put_object", releases.key(3), "IfNoneMatch"), ("put_object", releases.INDEX, "IfMatch")]
    index, _ = store.get_json(releases.INDEX)
    assert index == {"task_definitions": ["arn:td/a:1", "arn:td/a:2", "arn:td/a:3"],
                     "latest": {"number": 3, "digest": "d3"}}


def test_the_first_release_of_an_environment_does_not_scan_for_records_the_plan_saw_none_of(local_aws):
    from dmp_deploy import releases
    store = StateStore(load_config("local"), seam(local_aws, latency=0))
    reads = Reads(store.aws)
    ctx = plan_context(store.aws)
    assert releases.read_index(ctx) is None
    # no state bucket yet: no records either, so nothing is listed
    assert reads.take() == [("get_object", releases.INDEX, "")]
    assert releases.newest(ctx) is None and reads.take() == []
    store.ensure()
    reads.take()
    assert releases.write(store, record_running("arn:td/a:1"), ctx) == 1
    assert reads.take() == [("put_object", releases.key(1), "IfNoneMatch"),
                            ("put_object", releases.INDEX, "IfNoneMatch")]
    assert store.get_json(releases.INDEX)[0]["latest"]["number"] == 1


def test_a_release_recorded_by_another_run_since_the_plan_is_not_overwritten_nor_lost_from_the_index(store):
    from dmp_deploy import releases
    releases.write(store, record_running("arn:td/a:1"))
    ctx = plan_context(store.aws)
    releases.read_index(ctx)
    assert releases.newest(ctx)["number"] == 1
    other = plan_context(store.aws)  # another run records release 2 after this plan was made
    releases.read_index(other)
    releases.newest(other)
    assert releases.write(store, record_running("arn:td/b:1"), other) == 2

    assert releases.write(store, record_running("arn:td/a:2", digest="mine"), ctx) == 3
    assert releases.load(store, 2)["live"]["task_definition"]["family-0"]["arn"] == "arn:td/b:1"
    index, _ = store.get_json(releases.INDEX)  # re-read on the failed If-Match: release 2's revision is kept
    assert index == {"task_definitions": ["arn:td/a:1", "arn:td/a:2", "arn:td/b:1"],
                     "latest": {"number": 3, "digest": "mine"}}


def test_records_past_the_index_are_found_by_the_plan(store):
    """Runs killed between writing their record and the index: the plan finds the newest record all the same."""
    from dmp_deploy import releases
    releases.write(store, record_running("arn:td/a:1"))
    index, _ = store.get_json(releases.INDEX)
    for number, digest in ((2, "two"), (3, "three")):
        store.put_json(releases.key(number), {**record_running(f"arn:td/a:{number}", digest=digest),
                                              "number": number}, if_none_match=True)
    ctx = plan_context(store.aws)
    assert releases.read_index(ctx)["latest"]["number"] == 1
    assert releases.newest(ctx) == {"number": 3, "digest": "three"}
    assert releases.write(store, record_running("arn:td/a:4", digest="four"), ctx) == 4
    index, _ = store.get_json(releases.INDEX)
    assert index["latest"] == {"number": 4, "digest": "four"}
    # Releases 2 and 3 ran revisions too: the index protects them from pruning (a revert to 3 needs them).
    assert index["task_definitions"] == ["arn:td/a:1", "arn:td/a:2", "arn:td/a:3", "arn:td/a:4"]


def test_without_an_index_the_plans_listing_rebuilds_it_without_listing_again(store):
    from dmp_deploy import releases
    releases.write(store, record_running("arn:td/a:1"))
    releases.write(store, record_running("arn:td/a:2", digest="two"))
    store.delete(releases.INDEX)
    reads = Reads(store.aws)
    ctx = plan_context(store.aws)
    assert releases.read_index(ctx) == {"task_definitions": ["arn:td/a:1", "arn:td/a:2"], "latest": None}
    assert releases.newest(ctx) == {"number": 2, "digest": "two"}
    reads.take()
    assert releases.write(store, record_running("arn:td/a:3", digest="three"), ctx) == 3
    assert reads.take() == [("put_object", releases.key(3), "IfNoneMatch"),
                            ("put_object", releases.INDEX, "IfNoneMatch")]
    index, _ = store.get_json(releases.INDEX)
    assert index == {"task_definitions": ["arn:td/a:1", "arn:td/a:2", "arn:td/a:3"],
                     "latest": {"number": 3, "digest": "three"}}


def test_a_plan_with_changes_reads_the_releases_in_two_calls_and_no_listing(local_aws, run_cli, recorded_calls):
    assert run_cli("apply", "--env", "local").code == 0
    recorded_calls.clear()
    plan = run_cli("plan", "--env", "local", "--image", "api=t2", "--json")
    assert plan.code == 2, plan.stdout[-2000:] + plan.stderr[-2000:]
    s3 = [name for name, _ in recorded_calls if name in ("s3.get_object", "s3.list_objects_v2")]
    assert sorted(s3) == ["s3.get_object", "s3.get_object"]  # the index, then the release after the one it names


def test_an_unreadable_record_between_the_index_and_the_new_release_is_skipped_not_fatal(store):
    """A record past the index that cannot be read (damaged while this run carried its changes out: the plan itself
    refuses one, naming it) does not stop the release from being indexed; the readable ones past the index are."""
    from dmp_deploy import releases
    releases.write(store, record_running("arn:td/a:1"))
    store.aws.call("s3", "put_object", Bucket=store.bucket, Key=releases.key(2), Body=b"not json{")
    store.put_json(releases.key(3), {**record_running("arn:td/a:3", digest="three"), "number": 3},
                   if_none_match=True)
    ctx = plan_context(store.aws)
    releases.read_index(ctx)  # the index names release 1: the write tries 2, finds it taken, and lists
    assert releases.write(store, record_running("arn:td/a:4", digest="four"), ctx) == 4
    index, _ = store.get_json(releases.INDEX)
    assert index == {"task_definitions": ["arn:td/a:1", "arn:td/a:3", "arn:td/a:4"],
                     "latest": {"number": 4, "digest": "four"}}
