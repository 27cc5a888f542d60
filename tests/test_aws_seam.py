"""The AWS seam: counts every call, refuses mutations when read-only, retries what botocore does not."""

import botocore.exceptions
import pytest
from botocore.awsrequest import AWSResponse

from dmp_deploy.aws import Aws, is_mutating
from dmp_deploy.errors import MutationRefused


@pytest.fixture
def aws(local_aws):
    return Aws(local_aws.region, endpoint_url=local_aws.endpoint,
               credentials={"aws_access_key_id": "local", "aws_secret_access_key": "local"})


@pytest.mark.parametrize("operation, mutating", [
    ("describe_services", False), ("list_tags_for_resource", False), ("get_bucket_policy", False),
    ("head_object", False), ("create_service", True), ("put_bucket_policy", True), ("tag_resource", True),
    ("register_task_definition", True), ("authorize_security_group_ingress", True), ("start_execution", True),
    ("some_future_operation", True),  # unknown counts as mutating: the safe side
])
def test_mutating_classification(operation, mutating):
    assert is_mutating(operation) is mutating


def test_calls_are_counted_by_operation_and_kind(aws):
    aws.call("logs", "create_log_group", logGroupName="/x")
    aws.pages("logs", "describe_log_groups", "logGroups")
    stats = aws.stats.as_dict()
    assert stats["by_operation"] == {"logs.create_log_group": 1, "logs.describe_log_groups": 1}
    assert stats["total"] == 2 and stats["mutating"] == 1


def test_read_only_seam_refuses_mutations_before_sending(aws):
    reader = aws.read_only_view()
    reader.call("logs", "describe_log_groups")
    with pytest.raises(MutationRefused):
        reader.call("logs", "create_log_group", logGroupName="/y")
    assert aws.stats.total_mutating == 0  # refused before it was sent or counted
    assert aws.client("logs").describe_log_groups(logGroupNamePrefix="/y")["logGroups"] == []


def test_pages_follows_every_page(aws):
    for i in range(7):
        aws.call("logs", "create_log_group", logGroupName=f"/p/{i}")
    groups = aws.pages("logs", "describe_log_groups", "logGroups", logGroupNamePrefix="/p/", limit=3)
    assert len(groups) == 7
    assert aws.stats.calls["logs.describe_log_groups"] == 3


def _error_response(status: int, code: str, message: str) -> AWSResponse:
    body = ('{"__type": "%s", "message": "%s"}' % (code, message)).encode()
    return AWSResponse("https://ecs.invalid", status, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body))


class _Raw:
    def __init__(self, body):
        self._body = body

    def stream(self, **_):
        yield self._body


def test_ecs_too_many_concurrent_attempts_is_retried(aws):
    """ECS's 'Too many concurrent attempts' is a ClientException, which botocore does not retry."""
    failures = {"left": 2}
    client = aws.client("ecs")

    def flaky(request, **_):
        if failures["left"]:
            failures["left"] -= 1
            return _error_response(400, "ClientException",
                                   "Too many concurrent attempts to create a new revision of the specified family.")
        return None

    client.meta.events.register_first("before-send.ecs.ListClusters", flaky)
    aws.call("ecs", "list_clusters")
    assert failures["left"] == 0
    assert aws.stats.calls["ecs.list_clusters"] == 3
    assert aws.stats.retries == 2


def test_throttling_is_retried_by_botocore_and_counted(aws):
    failures = {"left": 2}
    client = aws.client("ecs")

    def throttled(request, **_):
        if failures["left"]:
            failures["left"] -= 1
            return _error_response(400, "ThrottlingException", "Rate exceeded")
        return None

    client.meta.events.register_first("before-send.ecs.ListClusters", throttled)
    aws.call("ecs", "list_clusters")
    assert aws.stats.calls["ecs.list_clusters"] == 1  # one call through the seam...
    assert aws.stats.retries == 2  # ...retried twice by botocore's standard mode


def test_other_client_errors_are_not_retried(aws):
    client = aws.client("ecs")
    client.meta.events.register_first(
        "before-send.ecs.ListClusters",
        lambda request, **_: _error_response(400, "ClientException", "Some validation problem"))
    with pytest.raises(botocore.exceptions.ClientError):
        aws.call("ecs", "list_clusters")
    assert aws.stats.calls["ecs.list_clusters"] == 1 and aws.stats.retries == 0


def test_hooks_see_every_call_and_can_abort_at_the_kth_mutation(aws):
    seen = []

    class Abort(Exception):
        pass

    def hook(call):
        seen.append((call.operation, call.mutating, call.mutation_sequence))
        if call.mutation_sequence == 2:
            raise Abort()

    aws.hooks.append(hook)
    aws.call("logs", "create_log_group", logGroupName="/h/1")
    aws.call("logs", "describe_log_groups")
    with pytest.raises(Abort):
        aws.call("logs", "create_log_group", logGroupName="/h/2")
    assert seen == [("create_log_group", True, 1), ("describe_log_groups", False, 0), ("create_log_group", True, 2)]
    names = [g["logGroupName"] for g in aws.client("logs").describe_log_groups(logGroupNamePrefix="/h/")["logGroups"]]
    assert names == ["/h/1"]


def test_read_timeouts_are_retried_by_botocore_and_counted(aws):
    """A read timeout (an HTTPClientError) is a transient error to botocore's standard mode: retried below the
    seam, with no help from its tenacity layer, and counted like any other retry."""
    timeouts = {"left": 2}
    client = aws.client("logs")

    def times_out(request, **_):
        if timeouts["left"]:
            timeouts["left"] -= 1
            raise botocore.exceptions.ReadTimeoutError(endpoint_url=request.url)
        return None

    client.meta.events.register_first("before-send.cloudwatch-logs.DescribeLogGroups", times_out)
    aws.call("logs", "describe_log_groups")
    assert timeouts["left"] == 0
    assert aws.stats.calls["logs.describe_log_groups"] == 1 and aws.stats.retries == 2


def test_a_read_that_keeps_timing_out_fails_after_the_attempts_allowed(local_aws):
    seam = Aws(local_aws.region, endpoint_url=local_aws.endpoint, max_attempts=2,
               credentials={"aws_access_key_id": "local", "aws_secret_access_key": "local"})
    attempts = []

    def times_out(request, **_):
        attempts.append(request.url)
        raise botocore.exceptions.ReadTimeoutError(endpoint_url=request.url)

    seam.client("logs").meta.events.register_first("before-send.cloudwatch-logs.DescribeLogGroups", times_out)
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        seam.call("logs", "describe_log_groups")
    assert len(attempts) == 3  # max_attempts counts retries: the first attempt and two more
