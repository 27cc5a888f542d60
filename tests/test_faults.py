"""Throttling and transient faults (issue 6, item 2): with 30% of requests throttled, each with its service's
real error (tests/faults.py lists them and where they come from), and occasional read timeouts, `apply`,
`plan`, `drift` and `add-users` still succeed, nothing of a throttle reaches the user, and each command's JSON
counts the retries: exactly the faults injected, since botocore's standard mode retries every one of them.
"""

from __future__ import annotations

import json
import pathlib
import re

import botocore.exceptions
import pytest
from botocore.httpsession import URLLib3Session

from dmp_deploy import lock as deploy_lock
from dmp_deploy import session
from dmp_deploy.aws import Aws
from dmp_deploy.config import load_config
from dmp_deploy.lock import DeployLock
from dmp_deploy.state_store import StateStore
from faults import THROTTLE_WORDS, THROTTLES, FaultInjector, fast_backoff, throttle_response

MACHINE_ARN = "arn:aws:states:eu-west-2:123456789012:stateMachine:dmp-local-add-users"


@pytest.fixture
def faults(monkeypatch):
    """faults(**options) -> a FaultInjector attached to every seam the CLI opens from now on in this test."""
    monkeypatch.setattr(session, "ON_CONNECT", [])

    def start(**options) -> FaultInjector:
        injector = FaultInjector(**options)
        session.ON_CONNECT[:] = [injector.attach]
        return injector

    with fast_backoff():
        yield start


# An error name the add-users state machine's Retry lists (asl/add_users.asl.json): part of the plan that shows
# the machine's definition, not a throttle the tool ran into.
DECLARED_RETRY_NAMES = ("ECS.ThrottlingException",)


def assert_no_throttle_shown(result) -> None:
    shown = result.stdout + result.stderr
    for name in DECLARED_RETRY_NAMES:
        shown = shown.replace(name, "")
    for word in THROTTLE_WORDS:
        assert word not in shown, word


# --- each service's throttle, as botocore sees it ----------------------------------------------------

# One cheap read per service the tool calls, with the code its throttle carries.
READS = [
    ("ec2", "describe_vpcs", {}, "RequestLimitExceeded"),
    ("iam", "list_roles", {}, "Throttling"),
    ("sts", "get_caller_identity", {}, "Throttling"),
    ("elbv2", "describe_load_balancers", {}, "Throttling"),
    ("acm", "list_certificates", {}, "ThrottlingException"),
    ("s3", "list_buckets", {}, "SlowDown"),
    ("efs", "describe_file_systems", {}, "ThrottlingException"),
    ("ecs", "list_clusters", {}, "ThrottlingException"),
    ("ecr", "describe_repositories", {}, "ThrottlingException"),
    ("kms", "list_keys", {}, "ThrottlingException"),
    ("secretsmanager", "list_secrets", {}, "ThrottlingException"),
    ("events", "list_rules", {}, "ThrottlingException"),
    ("logs", "describe_log_groups", {}, "ThrottlingException"),
    ("ssm", "describe_parameters", {}, "ThrottlingException"),
    ("stepfunctions", "list_state_machines", {}, "ThrottlingException"),
    ("resourcegroupstaggingapi", "get_resources", {}, "ThrottledException"),
    ("servicediscovery", "list_namespaces", {}, "RequestLimitExceeded"),
]


@pytest.fixture
def aws(moto_server):
    """A seam on the embedded AWS as it is (these reads need no seeded state, so no reset)."""
    with fast_backoff():
        yield Aws("eu-west-2", endpoint_url=moto_server,
                  credentials={"aws_access_key_id": "local", "aws_secret_access_key": "local"})


@pytest.mark.parametrize("service, operation, params, code", READS, ids=[r[0] for r in READS])
def test_each_services_throttle_parses_to_its_code_and_is_retried(aws, service, operation, params, code):
    service_id = aws.client(service).meta.service_model.service_id.hyphenize()
    event = f"before-send.{service_id}.{aws.client(service).meta.method_to_api_mapping[operation]}"

    # Without retries, the error is exactly the service's throttle: its code and HTTP status...
    no_retry = Aws(aws.region, endpoint_url=aws.endpoint_url, max_attempts=0,
                   credentials={"aws_access_key_id": "local", "aws_secret_access_key": "local"})
    no_retry.client(service).meta.events.register_first(
        event, lambda request, **_: throttle_response(service_id, request.url))
    with pytest.raises(botocore.exceptions.ClientError) as error:
        no_retry.call(service, operation, **params)
    assert error.value.response["Error"]["Code"] == code
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == THROTTLES[service_id].status

    # ...and botocore's standard mode retries it: two throttles, then the real answer.
    left = {"throttles": 2}

    def throttled(request, **_):
        if left["throttles"]:
            left["throttles"] -= 1
            return throttle_response(service_id, request.url)
        return None

    aws.client(service).meta.events.register_first(event, throttled)
    aws.call(service, operation, **params)
    assert left["throttles"] == 0
    assert aws.stats.retries == 2


def test_the_table_covers_every_service_the_tool_calls():
    source = "\n".join(p.read_text() for p in pathlib.Path(session.__file__).parent.rglob("*.py"))
    services = set(re.findall(r"\.(?:call|pages)\(\s*\"([a-z0-9-]+)\"", source))
    assert services <= {r[0] for r in READS}, services - {r[0] for r in READS}


# --- the commands under faults --------------------------------------------------------------------------

def users_file(tmp_path) -> str:
    path = tmp_path / "users.jsonl"
    path.write_text(json.dumps({"emailAddress": "faults@example.com", "name": "Fault Tolerant",
                                "password": "Correct-Horse-Battery-9", "role": "buyer"}) + "\n")
    return str(path)


def test_commands_succeed_under_throttling_and_read_timeouts_and_count_the_retries(
        local_aws, run_cli, faults, tmp_path):
    injector = faults(seed=6, throttle_rate=0.3, timeout_rate=0.03)
    applied = run_cli("apply", "--env", "local", "--json")
    assert applied.code == 0, applied.stdout + applied.stderr
    assert applied.json["status"] == "ok" and applied.json["applied"] > 0
    assert injector.count("throttle") > 50 and injector.count("timeout") > 0
    assert applied.json["calls"]["retries"] == injector.total
    assert_no_throttle_shown(applied)
    print(f"apply: {applied.json['calls']['total']} calls, {injector.requests} requests, "
          f"{injector.count('throttle')} throttles, {injector.count('timeout')} timeouts, "
          f"{applied.json['calls']['retries']} retries")

    for command, expected, seed in (("plan", 0, 7), ("drift", 0, 8)):
        injector = faults(seed=seed, throttle_rate=0.3, timeout_rate=0.03)
        result = run_cli(command, "--env", "local", "--json")
        assert result.code == expected, result.stdout + result.stderr
        assert injector.total > 0
        assert result.json["calls"]["retries"] == injector.total
        assert_no_throttle_shown(result)
        print(f"{command}: {result.json['calls']['total']} calls, {injector.total} faults")

    injector = faults(seed=9, throttle_rate=0.3, timeout_rate=0.03)
    added = run_cli("add-users", "--env", "local", users_file(tmp_path), "--json")
    assert added.code == 0, added.stdout + added.stderr
    assert added.json["status"] == "SUCCEEDED"
    assert added.json["calls"]["retries"] == injector.total > 0
    assert_no_throttle_shown(added)
    print(f"add-users: {added.json['calls']['total']} calls, {injector.total} faults")

    # What an operative reads in text mode shows nothing of the faults either.
    injector = faults(seed=10, throttle_rate=0.3, timeout_rate=0.03)
    text = run_cli("plan", "--env", "local")
    assert text.code == 0 and "No changes" in text.stdout, text.stdout + text.stderr
    assert injector.total > 0
    assert_no_throttle_shown(text)

    # Nothing was duplicated by a retry: one revision per task definition family, one version of the state
    # machine, and a second apply, without faults, has nothing to do.
    session.ON_CONNECT.clear()
    ecs = local_aws.client("ecs")
    for family in ecs.list_task_definition_families(familyPrefix="dmp-local-")["families"]:
        assert len(ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"]) == 1, family
    sfn = local_aws.client("stepfunctions")
    sfn.describe_state_machine(stateMachineArn=f"{MACHINE_ARN}:1")
    with pytest.raises(sfn.exceptions.ClientError):
        sfn.describe_state_machine(stateMachineArn=f"{MACHINE_ARN}:2")
    again = run_cli("apply", "--env", "local", "--json")
    assert again.code == 0 and again.json["calls"]["mutating"] == 0, again.stdout


# --- answers lost after the call took effect ------------------------------------------------------------

def test_a_lost_answer_to_the_lock_put_does_not_lock_out_its_own_apply(local_aws):
    """A read timeout after the lease was stored: botocore retries the If-None-Match PUT, which meets the lease
    its own first attempt wrote (412). acquire() recognises its own lease (same holder, host, pid, start and
    expiry) and holds the lock, instead of waiting for itself and failing naming itself."""
    aws = Aws(local_aws.region, endpoint_url=local_aws.endpoint,
              credentials={"aws_access_key_id": "local", "aws_secret_access_key": "local"})
    store = StateStore(load_config("local"), aws)
    store.ensure()
    http, lost = URLLib3Session(), []

    def answer_lost(request, **_):
        if not lost and request.url.endswith("locks/deploy.json"):
            http.send(request)  # stored...
            lost.append(request.url)
            raise botocore.exceptions.ReadTimeoutError(endpoint_url=request.url)  # ...but the answer is lost
        return None

    aws.client("s3").meta.events.register_first("before-send.s3.PutObject", answer_lost)
    lock = DeployLock(store, "arn:aws:iam::123456789012:user/alice", "apply", lease_seconds=60, wait_seconds=1)
    lock.acquire()
    assert lost
    lock.release()  # it holds the lease's ETag: its release gives the lock back (a released marker)
    assert deploy_lock.read(store) == (None, None)
    assert set(store.get_json("locks/deploy.json")[0]) == {"released"}
