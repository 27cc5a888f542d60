"""The critical path of a no-op plan, counted at the AWS seam (issue 14): how many round trips a user waits for,
not how many calls are made (tests/test_plan_calls.py) nor how long they take (benchmarks/run.py).

The seam gives each call a depth, 1 + the greatest depth among the calls that had completed when it started
(`CallStats.round_trips`), and counts polls apart (`aws.polling`). Latency is injected at the seam so that calls
that can run together overlap: then a deeper call is one that waited for another's answer."""

import threading
import time

import pytest

from dmp_deploy import planner, session
from dmp_deploy.aws import Aws, polling

# The budget of issue 14: the account guard, then at most five rounds of reads.
NOOP_PLAN_ROUND_TRIPS = 6
# Per call: far longer than a thread takes to start a call it could make beside another, so that two calls that
# can overlap do, even on a loaded machine, and the depth counts only calls that waited for an answer.
LATENCY_S = 0.15
# What a plan reads from: built before the plan is timed, since building a client is the seam's CPU (tens of
# milliseconds for EC2's and IAM's), not a round trip.
SERVICES = ("ec2", "acm", "logs", "iam", "kms", "s3", "resourcegroupstaggingapi", "efs", "ecs", "stepfunctions",
            "events", "elbv2", "servicediscovery")


@pytest.fixture
def aws(local_aws):
    seam = Aws(local_aws.region, endpoint_url=local_aws.endpoint,
               credentials={"aws_access_key_id": "local", "aws_secret_access_key": "local"})
    seam.hooks.append(lambda call: time.sleep(LATENCY_S))
    return seam


def _concurrently(*calls):
    threads = [threading.Thread(target=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_calls_made_together_share_a_round_trip_and_a_call_after_an_answer_is_one_deeper(aws):
    _concurrently(*[lambda: aws.call("logs", "describe_log_groups") for _ in range(4)])
    assert aws.stats.round_trips == 1
    aws.call("logs", "describe_log_groups")
    assert aws.stats.round_trips == 2
    _concurrently(lambda: aws.call("logs", "describe_log_groups"),
                  lambda: (aws.call("logs", "describe_log_groups"), aws.call("logs", "describe_log_groups")))
    assert aws.stats.round_trips == 4  # the longest chain: two more after the first two
    assert aws.stats.total == 8


def test_polls_are_counted_apart_by_operation_and_purpose(aws):
    aws.call("logs", "describe_log_groups")
    with polling("log group ready"):
        aws.call("logs", "describe_log_groups")
        aws.call("logs", "describe_log_groups")
    aws.call("logs", "describe_log_groups")
    assert aws.stats.round_trips == 2
    assert aws.stats.poll_round_trips == 2
    assert dict(aws.stats.polls) == {"logs.describe_log_groups: log group ready": 2}


def noop_plan_round_trips() -> int:
    """A no-op plan as `plan` builds it, the account guard included, with LATENCY_S per call."""
    env = session.open_environment("local", read_only=True)
    for service in SERVICES:
        env.aws.client(service)
    env.aws.hooks.append(lambda call: time.sleep(LATENCY_S))
    rec = planner.build_plan(env.ctx, env.kinds)
    assert rec.plan.empty, rec.plan.render_text()
    assert env.aws.stats.poll_round_trips == 0
    return env.aws.stats.round_trips


def test_a_noop_plan_waits_for_at_most_six_round_trips(local_aws, run_cli):
    result = run_cli("apply", "--env", "local", "--json")
    assert result.code == 0, result.stdout[-2000:] + result.stderr[-2000:]
    # A slow thread can only add depth (a call that could have overlapped another starts after its answer), never
    # hide it: the fewer of two plans is the plan's own critical path.
    trips = noop_plan_round_trips()
    if trips > NOOP_PLAN_ROUND_TRIPS:
        trips = min(trips, noop_plan_round_trips())
    assert trips <= NOOP_PLAN_ROUND_TRIPS, (
        f"a no-op plan waits for {trips} round trips, more than {NOOP_PLAN_ROUND_TRIPS}: a read now waits for "
        f"another that it does not need (prefetch what a kind can read without the registry; planner.read_live)")


def test_a_lookup_that_finds_nothing_is_the_error_though_reads_ran_beside_it(local_config, run_cli):
    """The kinds' prefetches start beside the lookups: when a lookup finds nothing, the plan still fails with the
    lookups' own message (every problem together), not with a kind's error about the missing VPC."""
    local_config('vpc = { tags = { Name = "dmp-local" } }', 'vpc = { tags = { Name = "no-such-vpc" } }')
    for _ in range(3):  # whichever finishes first
        result = run_cli("plan", "--env", "local")
        assert result.code == 1
        assert "Configuration refers to things that do not exist in the account" in result.stderr
        assert "network.vpc: expected exactly one VPC, found 0" in result.stderr
