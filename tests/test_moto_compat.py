"""One test per gap in dmp_deploy/local/moto_compat.py: each fails loudly if a newer moto changes the behaviour.

Each test checks the behaviour the tool relies on, through the patched embedded AWS; where cheap, it also
checks that stock moto still has the gap (so the patch can be dropped when moto fixes it).
"""

import pytest

from dmp_deploy.local import moto_compat


def test_every_gap_is_applied_in_the_test_server(moto_server):
    assert set(moto_compat.GAPS) <= moto_compat._applied


def test_s3_echoes_eventbridge_configuration(local_aws):
    s3 = local_aws.client("s3")
    s3.create_bucket(Bucket="compat-eb", CreateBucketConfiguration={"LocationConstraint": local_aws.region})
    assert "EventBridgeConfiguration" not in s3.get_bucket_notification_configuration(Bucket="compat-eb")
    s3.put_bucket_notification_configuration(Bucket="compat-eb",
                                             NotificationConfiguration={"EventBridgeConfiguration": {}})
    assert s3.get_bucket_notification_configuration(Bucket="compat-eb")["EventBridgeConfiguration"] == {}
    s3.put_bucket_notification_configuration(Bucket="compat-eb", NotificationConfiguration={})
    assert "EventBridgeConfiguration" not in s3.get_bucket_notification_configuration(Bucket="compat-eb")


def test_logs_associates_and_disassociates_kms_keys(local_aws):
    logs = local_aws.client("logs")
    key = local_aws.client("kms").create_key()["KeyMetadata"]["Arn"]
    logs.create_log_group(logGroupName="/compat/kms")
    logs.associate_kms_key(logGroupName="/compat/kms", kmsKeyId=key)
    (group,) = logs.describe_log_groups(logGroupNamePrefix="/compat/kms")["logGroups"]
    assert group["kmsKeyId"] == key
    logs.disassociate_kms_key(logGroupName="/compat/kms")
    (group,) = logs.describe_log_groups(logGroupNamePrefix="/compat/kms")["logGroups"]
    assert "kmsKeyId" not in group
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.associate_kms_key(logGroupName="/compat/missing", kmsKeyId=key)


# --- The add-users workflow's emulation: Step Functions <-> ECS, EventBridge -> Step Functions -------------

import json
import time
import uuid

ROLE = "arn:aws:iam::123456789012:role/compat-states"
UPLOAD_LIMIT = 1000  # bytes, the test workflow's size check


def _wait_for_execution(sfn, execution_arn: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        execution = sfn.describe_execution(executionArn=execution_arn)
        if execution["status"] != "RUNNING" or time.monotonic() > deadline:
            return execution
        time.sleep(0.2)


def _wait_for_executions(sfn, machine_arn: str, count: int, timeout: float = 30) -> list[dict]:
    """The machine's `count` executions once they have all finished (oldest first)."""
    deadline = time.monotonic() + timeout
    while True:
        executions = sfn.list_executions(stateMachineArn=machine_arn)["executions"]
        if (len(executions) >= count and all(e["status"] != "RUNNING" for e in executions)) \
                or time.monotonic() > deadline:
            return [sfn.describe_execution(executionArn=e["executionArn"]) for e in reversed(executions)]
        time.sleep(0.2)


def _history(sfn, execution_arn: str) -> list[dict]:
    return sfn.get_execution_history(executionArn=execution_arn)["events"]


@pytest.fixture
def ecs_world(local_aws):
    """A cluster, an awsvpc network, and three task definitions shaped like the add-users workflow's."""
    ecs, ec2 = local_aws.client("ecs"), local_aws.client("ec2")
    ecs.create_cluster(clusterName="compat")
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]  # DNS hostnames off, as CreateVpc leaves it
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="compat-tasks", Description="tasks", VpcId=vpc)["GroupId"]
    for family, containers in {
        "compat-copier": [{"name": "copier", "image": "amazon/aws-cli", "memory": 512}],
        "compat-add-users": [{"name": "add-users", "image": "api", "memory": 512},
                             {"name": "log-router", "image": "fluent-bit", "memory": 128, "essential": False}],
        "compat-cleaner": [{"name": "cleaner", "image": "busybox", "memory": 128}],
    }.items():
        ecs.register_task_definition(family=family, networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
                                     cpu="256", memory="1024", containerDefinitions=containers)
    return {"cluster": "compat", "subnet": subnet, "group": group}


def _run_task_state(world: dict, family: str, container: str, sync: bool = True, **extra) -> dict:
    return {
        "Type": "Task", "Resource": f"arn:aws:states:::ecs:runTask{'.sync' if sync else ''}",
        "Parameters": {
            "Cluster": world["cluster"], "TaskDefinition": family, "LaunchType": "FARGATE",
            "NetworkConfiguration": {"AwsvpcConfiguration": {
                "Subnets": [world["subnet"]], "SecurityGroups": [world["group"]], "AssignPublicIp": "DISABLED"}},
            "Overrides": {"ContainerOverrides": [{"Name": container, "Environment": [
                {"Name": "UPLOAD_KEY", "Value.$": "$.detail.object.key"}]}]},
        },
        **extra,
    }


def _machine(sfn, name: str, definition: dict, publish: bool = False) -> dict:
    _role_allowed_everything(sfn)
    return sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn=ROLE, publish=publish)


def _role_allowed_everything(any_client) -> None:
    """ROLE, trusted by Step Functions and EventBridge and allowed everything: the embedded AWS evaluates what
    the machine's and the trigger's roles may do (as AWS, which refuses a missing role); these tests are about
    the emulation, not IAM (tests/test_iam_enforcement.py is)."""
    import boto3

    iam = boto3.client("iam", endpoint_url=any_client.meta.endpoint_url, region_name=any_client.meta.region_name,
                       aws_access_key_id="local", aws_secret_access_key="local")
    try:
        iam.create_role(RoleName=ROLE.rsplit("/", 1)[1], AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {
                "Service": ["states.amazonaws.com", "events.amazonaws.com"]}}]}))
    except iam.exceptions.EntityAlreadyExistsException:
        return
    iam.put_role_policy(RoleName=ROLE.rsplit("/", 1)[1], PolicyName="everything", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))


def _one_task_machine(sfn, world, family="compat-copier", container="copier", sync=True, **extra):
    state = _run_task_state(world, family, container, sync=sync, End=True, **extra)
    return _machine(sfn, f"compat-{uuid.uuid4().hex[:8]}", {"StartAt": "Run", "States": {"Run": state}})


EVENT = {"detail": {"bucket": {"name": "uploads"}, "object": {"key": "uploads/users-1.jsonl", "size": 120}}}


def test_ecs_run_task_sync_takes_pascal_case_parameters_and_returns_the_stopped_task(local_aws, ecs_world):
    sfn, ecs = local_aws.client("stepfunctions"), local_aws.client("ecs")
    machine = _one_task_machine(sfn, ecs_world)["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=machine, name="sync-ok", input=json.dumps(EVENT))
    result = _wait_for_execution(sfn, execution["executionArn"])
    assert result["status"] == "SUCCEEDED", result

    task = json.loads(result["output"])  # the stopped task's description, PascalCase, as AWS returns it
    assert (task["LastStatus"], task["DesiredStatus"], task["StopCode"]) == (
        "STOPPED", "STOPPED", "EssentialContainerExited")
    assert [(c["Name"], c["ExitCode"]) for c in task["Containers"]] == [("copier", 0)]
    assert task["StartedBy"] == "AWS Step Functions"
    assert task["Overrides"]["ContainerOverrides"] == [
        {"Name": "copier", "Environment": [{"Name": "UPLOAD_KEY", "Value": "uploads/users-1.jsonl"}]}]
    assert isinstance(task["StoppedAt"], int)  # epoch milliseconds: JSON, unlike moto's datetimes

    # The parameters reached ECS in its own (camelCase) shape.
    (described,) = ecs.describe_tasks(cluster="compat", tasks=[task["TaskArn"]])["tasks"]
    assert described["overrides"]["containerOverrides"][0]["environment"] == [
        {"name": "UPLOAD_KEY", "value": "uploads/users-1.jsonl"}]
    assert described["launchType"] == "FARGATE"
    assert described["attachments"][0]["details"][0] == {"name": "subnetId", "value": ecs_world["subnet"]}
    events = [e["type"] for e in _history(sfn, execution["executionArn"])]
    assert events[-4:] == ["TaskSubmitted", "TaskSucceeded", "TaskStateExited", "ExecutionSucceeded"]


def test_ecs_run_task_without_sync_returns_the_running_task(local_aws, ecs_world):
    sfn = local_aws.client("stepfunctions")
    machine = _one_task_machine(sfn, ecs_world, sync=False)["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=machine, name="no-sync", input=json.dumps(EVENT))
    result = _wait_for_execution(sfn, execution["executionArn"])
    assert result["status"] == "SUCCEEDED", result
    output = json.loads(result["output"])
    assert output["Failures"] == []
    assert output["Tasks"][0]["LastStatus"] == "RUNNING"
    assert "ExitCode" not in output["Tasks"][0]["Containers"][0]  # AWS reports no exit code while running


def test_aws_sdk_calls_to_camel_case_services_are_converted(local_aws, ecs_world):
    sfn = local_aws.client("stepfunctions")
    machine = _machine(sfn, "compat-sdk-ecs", {"StartAt": "Describe", "States": {"Describe": {
        "Type": "Task", "Resource": "arn:aws:states:::aws-sdk:ecs:describeClusters",
        "Parameters": {"Clusters": ["compat"]}, "End": True}}})["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=machine, name="sdk", input="{}")
    result = _wait_for_execution(sfn, execution["executionArn"])
    assert result["status"] == "SUCCEEDED", result
    (cluster,) = json.loads(result["output"])["Clusters"]
    assert cluster["ClusterName"] == "compat"


def test_ecs_api_errors_are_named_like_aws(local_aws, ecs_world):
    sfn = local_aws.client("stepfunctions")
    state = _run_task_state({**ecs_world, "cluster": "no-such-cluster"}, "compat-copier", "copier", End=True)
    state["Catch"] = [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]
    state.pop("End")
    machine = _machine(sfn, "compat-ecs-error", {"StartAt": "Run", "States": {
        "Run": state, "Caught": {"Type": "Pass", "End": True}}})["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=machine, name="missing-cluster", input=json.dumps(EVENT))
    result = _wait_for_execution(sfn, execution["executionArn"])
    assert result["status"] == "SUCCEEDED", result
    caught = json.loads(result["output"])
    assert caught["Error"] == "ECS.ClusterNotFoundException"
    assert "Service: AmazonECS" in caught["Cause"]


def test_transient_ecs_errors_are_amazon_ecs_exceptions_and_retried(local_aws, ecs_world, monkeypatch):
    from moto.core.exceptions import JsonRESTError
    from moto.ecs.models import EC2ContainerServiceBackend

    run_task, calls = EC2ContainerServiceBackend.run_task, []

    def throttled_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise JsonRESTError("ThrottlingException", "Rate exceeded")
        return run_task(self, *args, **kwargs)

    monkeypatch.setattr(EC2ContainerServiceBackend, "run_task", throttled_once)
    sfn = local_aws.client("stepfunctions")
    machine = _one_task_machine(sfn, ecs_world, Retry=[
        {"ErrorEquals": ["ECS.AmazonECSException"], "IntervalSeconds": 1, "MaxAttempts": 1}])["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=machine, name="throttled", input=json.dumps(EVENT))
    result = _wait_for_execution(sfn, execution["executionArn"])
    assert result["status"] == "SUCCEEDED", result
    (failed,) = [e["taskFailedEventDetails"] for e in _history(sfn, execution["executionArn"])
                 if e["type"] == "TaskFailed"]
    assert failed["error"] == "ECS.AmazonECSException" and "Error Code: ThrottlingException" in failed["cause"]
    assert len(calls) == 2


def test_run_task_sync_times_out_while_the_task_runs(local_aws, ecs_world):
    from moto.moto_api import state_manager

    sfn = local_aws.client("stepfunctions")
    machine = _one_task_machine(sfn, ecs_world, TimeoutSeconds=1)["stateMachineArn"]
    state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10 ** 9})  # tasks never stop
    try:
        execution = sfn.start_execution(stateMachineArn=machine, name="hangs", input=json.dumps(EVENT))
        result = _wait_for_execution(sfn, execution["executionArn"])
    finally:
        state_manager.unset_transition("ecs::task")
    assert (result["status"], result["error"]) == ("FAILED", "States.Timeout")


def _run_task(ecs, world, family):
    return ecs.run_task(cluster=world["cluster"], taskDefinition=family, launchType="FARGATE",
                        networkConfiguration={"awsvpcConfiguration": {
                            "subnets": [world["subnet"]], "securityGroups": [world["group"]]}})["tasks"][0]


def _describe_when_stopped(ecs, task_arn, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        (task,) = ecs.describe_tasks(cluster="compat", tasks=[task_arn])["tasks"]
        if task["lastStatus"] == "STOPPED" or time.monotonic() > deadline:
            return task
        time.sleep(0.1)


def test_ecs_tasks_run_every_container_and_stop_on_their_own(local_aws, ecs_world):
    ecs = local_aws.client("ecs")
    started = time.monotonic()
    task = _run_task(ecs, ecs_world, "compat-add-users")
    assert task["lastStatus"] == "RUNNING"  # stock moto: already STOPPED in RunTask's response
    assert [c["name"] for c in task["containers"]] == ["add-users", "log-router"]
    assert all("exitCode" not in c for c in task["containers"])

    stopped = _describe_when_stopped(ecs, task["taskArn"])
    elapsed = time.monotonic() - started
    assert stopped["lastStatus"] == "STOPPED" and 0.5 < elapsed < 10  # four 0.25 s steps, on a busy machine
    assert (stopped["desiredStatus"], stopped["stopCode"], stopped["stoppedReason"]) == (
        "STOPPED", "EssentialContainerExited", "Essential container in task exited")
    assert [(c["name"], c["lastStatus"], c["exitCode"]) for c in stopped["containers"]] == [
        ("add-users", "STOPPED", 0), ("log-router", "STOPPED", 0)]
    assert "stoppedAt" in stopped


def test_scripted_task_outcome_decides_exit_codes_until_reset(local_aws, ecs_world, monkeypatch):
    ecs = local_aws.client("ecs")
    moto_compat.script_task_outcome("compat-add-users", 3, reason="users file rejected")
    stopped = _describe_when_stopped(ecs, _run_task(ecs, ecs_world, "compat-add-users")["taskArn"])
    add_users, log_router = stopped["containers"]
    assert (add_users["exitCode"], add_users["reason"]) == (3, "users file rejected")
    assert log_router["exitCode"] == 0
    other = _describe_when_stopped(ecs, _run_task(ecs, ecs_world, "compat-copier")["taskArn"])
    assert other["containers"][0]["exitCode"] == 0  # other families are not affected

    moto_compat.script_task_outcome("compat-add-users", 1, container="log-router")
    stopped = _describe_when_stopped(ecs, _run_task(ecs, ecs_world, "compat-add-users")["taskArn"])
    assert [c["exitCode"] for c in stopped["containers"]] == [0, 1]

    # A reset of the embedded AWS forgets scripted outcomes; a separate server process reads the environment.
    from tests.conftest import _post
    _post(f"{local_aws.endpoint}/moto-api/reset")
    assert moto_compat.task_outcome("compat-add-users") == (0, "", None)
    monkeypatch.setenv(moto_compat.TASK_OUTCOMES_ENV, json.dumps(
        {"compat-add-users": {"exit_code": 2, "reason": "r"}, "compat-copier": 5}))
    assert moto_compat.task_outcome("compat-add-users") == (2, "r", None)
    assert moto_compat.task_outcome("compat-copier") == (5, "", None)


@pytest.mark.parametrize("failing_container, status", [("copier", "FAILED"), (None, "SUCCEEDED")])
def test_ecs_run_task_sync_fails_like_aws_when_an_essential_container_fails(
        local_aws, ecs_world, failing_container, status):
    sfn = local_aws.client("stepfunctions")
    if failing_container:
        moto_compat.script_task_outcome("compat-copier", 1, container=failing_container)
    machine = _one_task_machine(sfn, ecs_world)["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=machine, name="sync-exit", input=json.dumps(EVENT))
    result = _wait_for_execution(sfn, execution["executionArn"])
    assert result["status"] == status, result
    if failing_container:
        assert result["error"] == "States.TaskFailed"
        task = json.loads(result["cause"])  # AWS: the stopped task's description
        assert [(c["Name"], c["ExitCode"]) for c in task["Containers"]] == [("copier", 1)]
        (failed,) = [e for e in _history(sfn, execution["executionArn"]) if e["type"] == "TaskFailed"]
        assert failed["taskFailedEventDetails"]["resource"] == "runTask.sync"


def test_failing_non_essential_container_does_not_fail_run_task_sync(local_aws, ecs_world):
    sfn = local_aws.client("stepfunctions")
    moto_compat.script_task_outcome("compat-add-users", 1, container="log-router")
    machine = _one_task_machine(sfn, ecs_world, "compat-add-users", "add-users")["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=machine, name="sidecar-exit", input=json.dumps(EVENT))
    result = _wait_for_execution(sfn, execution["executionArn"])
    assert result["status"] == "SUCCEEDED", result
    assert [c["ExitCode"] for c in json.loads(result["output"])["Containers"]] == [0, 1]


def _pass_machine(version: str) -> dict:
    # (moto echoes a bare string output unencoded, so the result is an object)
    return {"StartAt": "Say", "States": {"Say": {"Type": "Pass", "Result": {"version": version}, "End": True}}}


def test_executions_start_on_versions_and_aliases_and_get_unique_names(local_aws):
    sfn = local_aws.client("stepfunctions")
    created = _machine(sfn, "compat-versions", _pass_machine("v1"), publish=True)
    machine, v1 = created["stateMachineArn"], created["stateMachineVersionArn"]
    v2 = sfn.update_state_machine(stateMachineArn=machine, definition=json.dumps(_pass_machine("v2")),
                                  publish=True)["stateMachineVersionArn"]
    alias = sfn.create_state_machine_alias(name="live", routingConfiguration=[
        {"stateMachineVersionArn": v1, "weight": 100}])["stateMachineAliasArn"]

    outputs = {}
    for target in (alias, v2, machine):
        arn = sfn.start_execution(stateMachineArn=target, input="{}")["executionArn"]  # no name
        result = _wait_for_execution(sfn, arn)
        assert result["status"] == "SUCCEEDED", result
        assert result["stateMachineArn"] == machine
        outputs[target] = json.loads(result["output"])["version"]
    assert outputs == {alias: "v1", v2: "v2", machine: "v2"}

    listed = sfn.list_executions(stateMachineArn=machine)["executions"]
    assert len({e["executionArn"] for e in listed}) == 3  # stock moto: one ARN, ending in ":None"
    assert not any(e["executionArn"].endswith(":None") for e in listed)


def test_notes_claim_machines_created_before_execution_is_switched_on_are_not_executable(local_aws):
    from dmp_deploy.local.server import enable_state_machine_execution
    from tests.conftest import _post

    sfn = local_aws.client("stepfunctions")
    _post(f"{local_aws.endpoint}/moto-api/config", {"stepfunctions": {"execute_state_machine": False}})
    try:
        arn = _machine(sfn, "compat-too-early", _pass_machine("x"))["stateMachineArn"]
    finally:
        enable_state_machine_execution(local_aws.endpoint)
    with pytest.raises(sfn.exceptions.StateMachineDoesNotExist):
        sfn.describe_state_machine(stateMachineArn=arn)


def test_aws_sdk_timestamps_no_longer_break_describe_execution(local_aws):
    s3, sfn = local_aws.client("s3"), local_aws.client("stepfunctions")
    s3.create_bucket(Bucket="compat-ts", CreateBucketConfiguration={"LocationConstraint": local_aws.region})
    s3.put_object(Bucket="compat-ts", Key="k", Body=b"x")
    machine = _machine(sfn, "compat-head", {"StartAt": "Head", "States": {"Head": {
        "Type": "Task", "Resource": "arn:aws:states:::aws-sdk:s3:headObject",
        "Parameters": {"Bucket": "compat-ts", "Key": "k"}, "End": True}}})["stateMachineArn"]
    arn = sfn.start_execution(stateMachineArn=machine, name="head", input="{}")["executionArn"]
    result = _wait_for_execution(sfn, arn)
    assert result["status"] == "SUCCEEDED", result
    output = json.loads(result["output"])
    assert isinstance(output["LastModified"], str) and output["ContentLength"] == 1


# -- EventBridge -> Step Functions --

def _upload_bucket(local_aws, name: str) -> None:
    s3 = local_aws.client("s3")
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": local_aws.region})
    s3.put_bucket_notification_configuration(Bucket=name,
                                             NotificationConfiguration={"EventBridgeConfiguration": {}})


def _upload_rule(events, name: str, bucket: str, targets: list[dict]) -> None:
    events.put_rule(Name=name, EventPattern=json.dumps({
        "source": ["aws.s3"], "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"prefix": "uploads/"}]}}}))
    events.put_targets(Rule=name, Targets=targets)


def test_s3_upload_event_starts_an_execution_of_the_alias_target(local_aws):
    s3, sfn, events = (local_aws.client(s) for s in ("s3", "stepfunctions", "events"))
    _upload_bucket(local_aws, "compat-uploads")
    created = _machine(sfn, "compat-triggered", {"StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": True}}},
                       publish=True)
    alias = sfn.create_state_machine_alias(name="live", routingConfiguration=[
        {"stateMachineVersionArn": created["stateMachineVersionArn"], "weight": 100}])["stateMachineAliasArn"]
    topic = local_aws.client("sns").create_topic(Name="compat-audit")["TopicArn"]
    # An earlier rule with a target moto cannot deliver to must not swallow delivery to later rules.
    _upload_rule(events, "compat-audit", "compat-uploads", [{"Id": "audit", "Arn": topic}])
    _upload_rule(events, "compat-trigger", "compat-uploads", [{"Id": "workflow", "Arn": alias, "RoleArn": ROLE}])

    s3.put_object(Bucket="compat-uploads", Key="uploads/a.jsonl", Body=b'{"a": 1}\n')
    s3.put_object(Bucket="compat-uploads", Key="uploads/b.jsonl", Body=b'{"b": 2}\n')
    s3.put_object(Bucket="compat-uploads", Key="elsewhere/c.jsonl", Body=b"{}")  # filtered by the rule

    # One execution per upload: the spurious "Object Tags Added" event moto also emits matches no rule.
    first, second = _wait_for_executions(sfn, created["stateMachineArn"], 2)
    assert len(sfn.list_executions(stateMachineArn=created["stateMachineArn"])["executions"]) == 2
    inputs = [json.loads(e["input"]) for e in (first, second)]
    assert sorted(i["detail"]["object"]["key"] for i in inputs) == ["uploads/a.jsonl", "uploads/b.jsonl"]
    for event in inputs:
        assert (event["source"], event["detail-type"]) == ("aws.s3", "Object Created")
        assert event["detail"]["bucket"]["name"] == "compat-uploads"
        assert event["detail"]["object"]["size"] > 0
        assert time.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ")
        assert "ingestion-time" not in event
    assert inputs[0]["id"] != inputs[1]["id"]  # stock moto: every S3 event has the same id
    assert first["name"] != second["name"] and all(e["status"] == "SUCCEEDED" for e in (first, second))


def test_put_events_delivers_to_state_machines_with_input_path_and_transformer(local_aws):
    sfn, events = local_aws.client("stepfunctions"), local_aws.client("events")
    machine = _machine(sfn, "compat-put-events",
                       {"StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": True}}})["stateMachineArn"]
    pattern = json.dumps({"source": ["compat.test"]})
    events.put_rule(Name="compat-paths", EventPattern=pattern)
    events.put_targets(Rule="compat-paths", Targets=[
        {"Id": "path", "Arn": machine, "RoleArn": ROLE, "InputPath": "$.detail"},
        {"Id": "transformer", "Arn": machine, "RoleArn": ROLE, "InputTransformer": {
            "InputPathsMap": {"key": "$.detail.key"}, "InputTemplate": '{"uploaded": "<key>"}'}},
        {"Id": "constant", "Arn": machine, "RoleArn": ROLE, "Input": '{"constant": true}'}])
    events.put_rule(Name="compat-disabled", EventPattern=pattern, State="DISABLED")
    events.put_targets(Rule="compat-disabled", Targets=[{"Id": "never", "Arn": machine, "RoleArn": ROLE}])

    response = events.put_events(Entries=[{"Source": "compat.test", "DetailType": "Test",
                                           "Detail": json.dumps({"key": "uploads/x"})}])
    assert response["FailedEntryCount"] == 0  # stock moto: HTTP 500
    executions = _wait_for_executions(sfn, machine, 3)
    assert len(executions) == 3  # the disabled rule delivered nothing
    inputs = [json.loads(e["input"]) for e in executions]
    assert sorted(inputs, key=json.dumps) == sorted(
        [{"key": "uploads/x"}, {"uploaded": "uploads/x"}, {"constant": True}], key=json.dumps)


# -- A state machine shaped like the add-users workflow, end to end from an upload --

def _add_users_like_machine(world: dict, bucket: str) -> dict:
    """Check the event; copy onto EFS; add users (with a timeout, retrying transient ECS errors); on success
    and on every failure remove the EFS file and the S3 object; end FAILED with the step's error."""
    transient = [{"ErrorEquals": ["ECS.AmazonECSException"], "IntervalSeconds": 1, "MaxAttempts": 2}]
    catch = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "RemoveEfsFile"}]
    copier = _run_task_state(world, "compat-copier", "copier", Retry=transient, Catch=catch, Next="AddUsers",
                             ResultSelector={"ExitCode.$": "$.Containers[0].ExitCode", "StoppedAt.$": "$.StoppedAt"},
                             ResultPath="$.copier")
    add_users = _run_task_state(world, "compat-add-users", "add-users", TimeoutSeconds=60, Retry=transient,
                                Catch=catch, ResultPath=None, Next="RemoveEfsFile")
    cleaner = _run_task_state(world, "compat-cleaner", "cleaner", ResultPath=None, Next="DeleteUpload",
                              Catch=[{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "DeleteUpload"}])
    return {"StartAt": "CheckUpload", "States": {
        "CheckUpload": {"Type": "Choice", "Choices": [{"And": [
            {"Variable": "$.detail.bucket.name", "StringEquals": bucket},
            {"Variable": "$.detail.object.key", "StringMatches": "uploads/*"},
            {"Variable": "$.detail.object.size", "NumericLessThanEquals": UPLOAD_LIMIT}], "Next": "CopyToEfs"}],
            "Default": "Rejected"},
        "Rejected": {"Type": "Pass", "ResultPath": "$.failure", "Next": "DeleteUpload",
                     "Result": {"Error": "UploadRejected", "Cause": "wrong bucket, prefix or size"}},
        "CopyToEfs": copier,
        "AddUsers": add_users,
        "RemoveEfsFile": cleaner,
        "DeleteUpload": {"Type": "Task", "Resource": "arn:aws:states:::aws-sdk:s3:deleteObject",
                         "Parameters": {"Bucket.$": "$.detail.bucket.name", "Key.$": "$.detail.object.key"},
                         "ResultPath": None, "Next": "Outcome"},
        "Outcome": {"Type": "Choice", "Choices": [{"Variable": "$.failure", "IsPresent": True, "Next": "Failed"}],
                    "Default": "Done"},
        "Failed": {"Type": "Fail", "Error": "AddUsersFailed", "CausePath": "$.failure.Cause"},
        "Done": {"Type": "Succeed"},
    }}


@pytest.mark.parametrize("case, families_run, failed_family", [
    ("success", ["compat-copier", "compat-add-users", "compat-cleaner"], None),
    ("add-users exits 1", ["compat-copier", "compat-add-users", "compat-cleaner"], "compat-add-users"),
    ("copier exits 1", ["compat-copier", "compat-cleaner"], "compat-copier"),
    ("too large", [], None),
])
def test_add_users_like_workflow_runs_from_an_upload(local_aws, ecs_world, case, families_run, failed_family):
    s3, sfn, events, ecs = (local_aws.client(s) for s in ("s3", "stepfunctions", "events", "ecs"))
    _upload_bucket(local_aws, "compat-users")
    created = _machine(sfn, "compat-add-users", _add_users_like_machine(ecs_world, "compat-users"), publish=True)
    alias = sfn.create_state_machine_alias(name="live", routingConfiguration=[
        {"stateMachineVersionArn": created["stateMachineVersionArn"], "weight": 100}])["stateMachineAliasArn"]
    _upload_rule(events, "compat-users-uploaded", "compat-users", [{"Id": "workflow", "Arn": alias, "RoleArn": ROLE}])
    if case == "add-users exits 1":
        moto_compat.script_task_outcome("compat-add-users", 1)
    if case == "copier exits 1":
        moto_compat.script_task_outcome("compat-copier", 1)

    body = b"x" * (UPLOAD_LIMIT + 1) if case == "too large" else b'{"emailAddress": "a@example.com"}\n'
    s3.put_object(Bucket="compat-users", Key="uploads/users.jsonl", Body=body)
    (execution,) = _wait_for_executions(sfn, created["stateMachineArn"], 1, timeout=60)

    status = "SUCCEEDED" if case == "success" else "FAILED"
    assert execution["status"] == status, execution
    if failed_family:  # the failed step's States.TaskFailed cause: the stopped task, exit code 1
        assert execution["error"] == "AddUsersFailed"
        task = json.loads(execution["cause"])
        assert task["TaskDefinitionArn"].rsplit("/", 1)[1].split(":")[0] == failed_family
        assert task["Containers"][0]["ExitCode"] == 1
    if case == "too large":
        assert (execution["error"], execution["cause"]) == ("AddUsersFailed", "wrong bucket, prefix or size")
    assert s3.list_objects_v2(Bucket="compat-users").get("KeyCount") == 0  # removed on every path
    history = _history(sfn, execution["executionArn"])
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
    assert entered[-2:] == ["Outcome", "Done" if status == "SUCCEEDED" else "Failed"]
    assert "DeleteUpload" in entered
    task_arns = ecs.list_tasks(cluster="compat")["taskArns"]
    families = [t["taskDefinitionArn"].rsplit("/", 1)[1].split(":")[0]
                for t in ecs.describe_tasks(cluster="compat", tasks=task_arns)["tasks"]] if task_arns else []
    assert sorted(families) == sorted(families_run)
    if status == "SUCCEEDED":
        assert isinstance(json.loads(execution["output"])["copier"]["StoppedAt"], int)


def test_ecs_list_services_leaves_out_deleted_services(local_aws):
    ecs = local_aws.client("ecs")
    ecs.create_cluster(clusterName="compat-services")
    for name in ("kept", "deleted"):
        ecs.create_service(cluster="compat-services", serviceName=name, desiredCount=0)
    ecs.delete_service(cluster="compat-services", service="deleted")
    listed = ecs.list_services(cluster="compat-services")["serviceArns"]
    assert [arn.rsplit("/", 1)[-1] for arn in listed] == ["kept"]
    # Still described, as AWS does for a while after deletion.
    (deleted,) = ecs.describe_services(cluster="compat-services", services=["deleted"])["services"]
    assert deleted["status"] == "INACTIVE"


# --- ECS services roll out (ecs_services_roll_out) ----------------------------------------------------------


@pytest.fixture
def service_world(local_aws):
    """A cluster, a network and two revisions of one family, for services."""
    ecs, ec2 = local_aws.client("ecs"), local_aws.client("ec2")
    ecs.create_cluster(clusterName="compat-svc", capacityProviders=["FARGATE"])
    vpc = ec2.create_vpc(CidrBlock="10.78.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.78.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="compat-svc", Description="tasks", VpcId=vpc)["GroupId"]
    revisions = [ecs.register_task_definition(
        family="compat-web", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        containerDefinitions=[{"name": "http", "image": f"web:{tag}", "memoryReservation": 64},
                              {"name": "wsgi", "image": f"app:{tag}", "memoryReservation": 256}],
    )["taskDefinition"]["taskDefinitionArn"] for tag in ("one", "two")]
    network = {"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group], "assignPublicIp": "DISABLED"}}
    return {"ecs": ecs, "revisions": revisions, "network": network}


def _create_web(world, circuit_breaker=True, desired=2):
    return world["ecs"].create_service(
        cluster="compat-svc", serviceName="compat-web", taskDefinition=world["revisions"][0], desiredCount=desired,
        capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1, "base": 0}],
        networkConfiguration=world["network"], enableExecuteCommand=True, enableECSManagedTags=True,
        propagateTags="SERVICE", healthCheckGracePeriodSeconds=30,
        deploymentConfiguration={"deploymentCircuitBreaker": {"enable": circuit_breaker, "rollback": circuit_breaker},
                                 "maximumPercent": 200, "minimumHealthyPercent": 100})["service"]


def _describe_until(world, done, limit=10):
    """Describe the service until `done(service)`; return every answer seen (each describe is one step)."""
    seen = []
    for _ in range(limit):
        (service,) = world["ecs"].describe_services(cluster="compat-svc", services=["compat-web"])["services"]
        seen.append(service)
        if done(service):
            return seen
    raise AssertionError(f"not done after {limit} describes: {seen[-1]['deployments']}")


def _steady(service):
    deployments = service["deployments"]
    return (len(deployments) == 1 and deployments[0]["rolloutState"] == "COMPLETED"
            and service["runningCount"] == service["desiredCount"])


def test_ecs_create_service_stores_what_moto_ignores(local_aws, service_world):
    created = _create_web(service_world)
    assert created["deploymentConfiguration"]["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert created["capacityProviderStrategy"] == [{"capacityProvider": "FARGATE", "weight": 1, "base": 0}]
    assert "launchType" not in created  # moto says EC2 when a capacity provider strategy is given
    assert (created["enableExecuteCommand"], created["enableECSManagedTags"]) == (True, True)
    assert created["healthCheckGracePeriodSeconds"] == 30
    (deployment,) = created["deployments"]
    assert (deployment["rolloutState"], deployment["runningCount"]) == ("IN_PROGRESS", 0)
    assert not [key for key in deployment if key.startswith("_")]  # the emulation's bookkeeping stays inside


def test_ecs_services_roll_out_and_drain_the_old_deployment(local_aws, service_world):
    ecs = service_world["ecs"]
    _create_web(service_world)
    seen = _describe_until(service_world, _steady, limit=4)
    assert seen[0]["deployments"][0]["rolloutState"] == "IN_PROGRESS"
    messages = [e["message"] for e in seen[-1]["events"]]
    assert messages[0] == "(service compat-web) has reached a steady state."
    running = ecs.list_tasks(cluster="compat-svc", serviceName="compat-web", desiredStatus="RUNNING")["taskArns"]
    assert len(running) == 2
    assert ecs.list_tasks(cluster="compat-svc", serviceName="someone-else")["taskArns"] == []

    updated = ecs.update_service(cluster="compat-svc", service="compat-web", taskDefinition="compat-web:2")["service"]
    assert [(d["status"], d["taskDefinition"]) for d in updated["deployments"]] == [
        ("PRIMARY", service_world["revisions"][1]), ("ACTIVE", service_world["revisions"][0])]
    assert updated["runningCount"] == 2  # moto would say desiredCount at once
    seen = _describe_until(service_world, _steady, limit=4)
    assert seen[-1]["taskDefinition"] == service_world["revisions"][1]
    old = ecs.describe_tasks(cluster="compat-svc", tasks=running)["tasks"]
    assert {t["lastStatus"] for t in old} == {"STOPPED"}
    assert all(t["stoppedReason"].startswith("Scaling activity initiated by (deployment ecs-svc/") for t in old)


def test_ecs_scaling_a_service_starts_and_stops_tasks_and_delete_stops_all(local_aws, service_world):
    ecs = service_world["ecs"]
    _create_web(service_world)
    _describe_until(service_world, _steady)
    ecs.update_service(cluster="compat-svc", service="compat-web", desiredCount=3)
    (service,) = ecs.describe_services(cluster="compat-svc", services=["compat-web"])["services"]
    assert (service["runningCount"], len(service["deployments"])) == (3, 1)  # scaling is not a new deployment
    ecs.update_service(cluster="compat-svc", service="compat-web", desiredCount=1)
    _describe_until(service_world, _steady)
    assert len(ecs.list_tasks(cluster="compat-svc", serviceName="compat-web", desiredStatus="RUNNING")["taskArns"]) == 1
    ecs.delete_service(cluster="compat-svc", service="compat-web", force=True)
    assert ecs.list_tasks(cluster="compat-svc", serviceName="compat-web", desiredStatus="RUNNING")["taskArns"] == []


def test_scripted_rollout_failure_rolls_back_like_a_circuit_breaker(local_aws, service_world):
    ecs = service_world["ecs"]
    old, new = service_world["revisions"]
    _create_web(service_world)
    _describe_until(service_world, _steady)
    moto_compat.script_rollout_failure("compat-web", reason="CannotPullContainerError: no such image")
    ecs.update_service(cluster="compat-svc", service="compat-web", taskDefinition=new)

    seen = _describe_until(service_world, lambda s: _steady(s) and s["taskDefinition"] == old, limit=8)
    states = [(d["taskDefinition"], d["rolloutState"]) for s in seen for d in s["deployments"]]
    assert (new, "FAILED") in states  # the failed deployment is visible while the rollback runs
    assert seen[-1]["deployments"][0]["taskDefinition"] == old  # stable again, on the OLD revision
    messages = [e["message"] for e in seen[-1]["events"]]
    assert any(m.startswith("(service compat-web) (deployment ecs-svc/") and
               m.endswith("deployment failed: tasks failed to start.") for m in messages)
    assert any("rolling back to deployment" in m for m in messages)

    stopped = ecs.list_tasks(cluster="compat-svc", serviceName="compat-web", desiredStatus="STOPPED")["taskArns"]
    failed = [t for t in ecs.describe_tasks(cluster="compat-svc", tasks=stopped)["tasks"]
              if t["taskDefinitionArn"] == new]
    assert failed and {t["stoppedReason"] for t in failed} == {"CannotPullContainerError: no such image"}
    assert {c["exitCode"] for t in failed for c in t["containers"]} == {1}

    # One-shot: the next rollout of the same revision succeeds.
    ecs.update_service(cluster="compat-svc", service="compat-web", taskDefinition=new)
    assert _describe_until(service_world, _steady)[-1]["taskDefinition"] == new


def test_scripted_failure_without_circuit_breaker_never_completes(local_aws, service_world):
    ecs = service_world["ecs"]
    _create_web(service_world, circuit_breaker=False)
    _describe_until(service_world, _steady)
    moto_compat.script_rollout_failure("compat-web")
    ecs.update_service(cluster="compat-svc", service="compat-web", taskDefinition=service_world["revisions"][1])
    for _ in range(6):
        (service,) = ecs.describe_services(cluster="compat-svc", services=["compat-web"])["services"]
    primary = service["deployments"][0]
    assert (primary["taskDefinition"], primary["rolloutState"]) == (service_world["revisions"][1], "IN_PROGRESS")
    assert primary["failedTasks"] >= 4 and primary["runningCount"] == 0


def test_reset_forgets_scripted_rollout_failures(local_aws):
    moto_compat.script_rollout_failure("compat-anything")
    assert moto_compat._ROLLOUT_FAILURES
    import urllib.request
    urllib.request.urlopen(urllib.request.Request(f"{local_aws.endpoint}/moto-api/reset", method="POST")).read()
    assert not moto_compat._ROLLOUT_FAILURES


def test_efs_puts_backup_policies(local_aws):
    efs = local_aws.client("efs")
    fs_id = efs.create_file_system(CreationToken="compat-backup", Backup=False)["FileSystemId"]
    assert efs.put_backup_policy(FileSystemId=fs_id, BackupPolicy={"Status": "ENABLED"})["BackupPolicy"] == {
        "Status": "ENABLED"}
    assert efs.describe_backup_policy(FileSystemId=fs_id)["BackupPolicy"] == {"Status": "ENABLED"}
    efs.put_backup_policy(FileSystemId=fs_id, BackupPolicy={"Status": "DISABLED"})
    with pytest.raises(efs.exceptions.PolicyNotFound):  # how moto says "off" (the tool reads it so)
        efs.describe_backup_policy(FileSystemId=fs_id)
    with pytest.raises(efs.exceptions.FileSystemNotFound):
        efs.put_backup_policy(FileSystemId="fs-missing", BackupPolicy={"Status": "ENABLED"})


def test_efs_deletes_file_system_policies(local_aws):
    efs = local_aws.client("efs")
    fs_id = efs.create_file_system(CreationToken="compat-policy")["FileSystemId"]
    efs.put_file_system_policy(FileSystemId=fs_id, Policy='{"Version": "2012-10-17", "Statement": []}')
    efs.delete_file_system_policy(FileSystemId=fs_id)
    with pytest.raises(efs.exceptions.PolicyNotFound):
        efs.describe_file_system_policy(FileSystemId=fs_id)
    with pytest.raises(efs.exceptions.FileSystemNotFound):
        efs.delete_file_system_policy(FileSystemId="fs-missing")


def test_standing_rollout_failures_from_the_environment_fail_every_rollout(local_aws, service_world, monkeypatch):
    ecs = service_world["ecs"]
    old, new = service_world["revisions"]
    _create_web(service_world)
    _describe_until(service_world, _steady)
    monkeypatch.setenv(moto_compat.ROLLOUT_FAILURES_ENV, '{"compat-web": "Essential container in task exited"}')
    for _ in range(2):  # standing: not consumed
        ecs.update_service(cluster="compat-svc", service="compat-web", taskDefinition=new)
        assert _describe_until(service_world, _steady)[-1]["taskDefinition"] == old
    monkeypatch.delenv(moto_compat.ROLLOUT_FAILURES_ENV)
    ecs.update_service(cluster="compat-svc", service="compat-web", taskDefinition=new)
    assert _describe_until(service_world, _steady)[-1]["taskDefinition"] == new


def test_failed_first_rollout_has_nothing_to_roll_back_to(local_aws, service_world):
    moto_compat.script_rollout_failure("compat-web", reason="ResourceInitializationError: unable to pull secrets")
    _create_web(service_world)
    seen = _describe_until(service_world, lambda s: s["deployments"][0]["rolloutState"] == "FAILED", limit=4)
    for _ in range(3):  # and it stays so: nothing runs
        seen = _describe_until(service_world, lambda s: True, limit=1)
    (deployment,) = seen[-1]["deployments"]
    assert (deployment["taskDefinition"], deployment["rolloutState"], deployment["runningCount"]) == (
        service_world["revisions"][0], "FAILED", 0)


def test_publish_state_machine_version_is_idempotent_for_the_current_revision(local_aws):
    sfn = local_aws.client("stepfunctions")
    created = _machine(sfn, "compat-publish", _pass_machine("1"), publish=True)
    arn = created["stateMachineArn"]
    # The current revision is already published: its version comes back, no new one.
    again = sfn.publish_state_machine_version(stateMachineArn=arn)
    assert again["stateMachineVersionArn"] == created["stateMachineVersionArn"] == f"{arn}:1"
    # Changed without publishing: publishing makes a version of the new revision, once.
    sfn.update_state_machine(stateMachineArn=arn, definition=json.dumps(_pass_machine("2")))
    first = sfn.publish_state_machine_version(stateMachineArn=arn, description="second")["stateMachineVersionArn"]
    assert first == f"{arn}:2"
    assert sfn.publish_state_machine_version(stateMachineArn=arn)["stateMachineVersionArn"] == first
    assert json.loads(sfn.describe_state_machine(stateMachineArn=first)["definition"]) == _pass_machine("2")


def test_ecs_lists_come_in_pages_like_aws(local_aws):
    ecs = local_aws.client("ecs")
    ecs.create_cluster(clusterName="compat-pages")
    for i in range(12):
        ecs.create_service(cluster="compat-pages", serviceName=f"s{i:02d}", desiredCount=0)
        ecs.register_task_definition(family=f"compat-pages-{i % 3}",
                                     containerDefinitions=[{"name": "c", "image": "busybox", "memory": 64}])
    first = ecs.list_services(cluster="compat-pages")
    assert len(first["serviceArns"]) == 10 and first["nextToken"]  # AWS's default page is 10
    rest = ecs.list_services(cluster="compat-pages", nextToken=first["nextToken"])
    assert len(rest["serviceArns"]) == 2 and "nextToken" not in rest
    assert len(ecs.list_services(cluster="compat-pages", maxResults=100)["serviceArns"]) == 12
    paginator = ecs.get_paginator("list_task_definitions")
    pages = list(paginator.paginate(status="ACTIVE", PaginationConfig={"PageSize": 5}))
    arns = [arn for p in pages for arn in p["taskDefinitionArns"] if ":task-definition/compat-pages-" in arn]
    assert len(pages) >= 3 and len(arns) == len(set(arns)) == 12
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.list_task_definitions(maxResults=101)


# --- issue 11: the add-users workflow -------------------------------------------------------------------------

def test_ecs_refuses_a_started_by_with_characters_ecs_does_not_allow(local_aws):
    ecs = local_aws.client("ecs")
    ecs.create_cluster(clusterName="compat-started-by")
    ecs.register_task_definition(family="compat-started-by",
                                 containerDefinitions=[{"name": "c", "image": "busybox", "memory": 64}])
    for bad in ("dmp-deploy run-task", "exec.1", "x" * 129):
        with pytest.raises(ecs.exceptions.InvalidParameterException):
            ecs.run_task(cluster="compat-started-by", taskDefinition="compat-started-by", startedBy=bad,
                         launchType="FARGATE")
    (task,) = ecs.run_task(cluster="compat-started-by", taskDefinition="compat-started-by",
                           startedBy="ecs-svc/1_a-B", launchType="FARGATE")["tasks"]
    assert task["startedBy"] == "ecs-svc/1_a-B"

# --- Elastic Load Balancing (issue 10) -------------------------------------------------------------------------


def test_elbv2_sets_rule_priorities_against_the_new_order(local_aws):
    ec2, elb = local_aws.client("ec2"), local_aws.client("elbv2")
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2]
    balancer = elb.create_load_balancer(Name="compat-rules", Subnets=subnets, Scheme="internal")
    vpc = ec2.describe_subnets(SubnetIds=subnets)["Subnets"][0]["VpcId"]
    group = elb.create_target_group(Name="compat-rules", Protocol="HTTP", Port=80, VpcId=vpc,
                                    TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    forward = [{"Type": "forward", "TargetGroupArn": group}]
    listener = elb.create_listener(LoadBalancerArn=balancer["LoadBalancers"][0]["LoadBalancerArn"], Protocol="HTTP",
                                   Port=80, DefaultActions=forward)["Listeners"][0]["ListenerArn"]
    first, second, third = (elb.create_rule(
        ListenerArn=listener, Priority=p, Actions=forward,
        Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": [f"/{p}*"]}}])["Rules"][0]["RuleArn"]
        for p in (1, 2, 3))
    # A swap in one call: each priority is free in the new order.
    elb.set_rule_priorities(RulePriorities=[{"RuleArn": first, "Priority": 2}, {"RuleArn": second, "Priority": 1}])
    by_priority = {r["Priority"]: r["RuleArn"] for r in elb.describe_rules(ListenerArn=listener)["Rules"]}
    assert (by_priority["1"], by_priority["2"], by_priority["3"]) == (second, first, third)
    # A priority still held by a rule that is not moving is refused, and nothing moves.
    with pytest.raises(elb.exceptions.PriorityInUseException):
        elb.set_rule_priorities(RulePriorities=[{"RuleArn": first, "Priority": 3}])
    with pytest.raises(elb.exceptions.PriorityInUseException):
        elb.set_rule_priorities(RulePriorities=[{"RuleArn": first, "Priority": 1}, {"RuleArn": second, "Priority": 3}])
    assert {r["Priority"]: r["RuleArn"] for r in elb.describe_rules(ListenerArn=listener)["Rules"]} == by_priority

# --- Service discovery (Cloud Map) and ECS service registries ------------------------------------------------


def _discovery(local_aws):
    """A Cloud Map client for DiscoverInstances: its endpoint is `data-<host>`, a prefix a local endpoint lacks."""
    import boto3
    from botocore.config import Config

    return boto3.client("servicediscovery", endpoint_url=local_aws.endpoint, region_name=local_aws.region,
                        aws_access_key_id="local", aws_secret_access_key="local",
                        config=Config(inject_host_prefix=False))


def _namespace(local_aws, name, vpc=None):
    """Create a private DNS namespace and wait for its operation, as the tool does; its id."""
    sd = local_aws.client("servicediscovery")
    vpc = vpc or local_aws.client("ec2").create_vpc(CidrBlock="10.79.0.0/16")["Vpc"]["VpcId"]
    operation_id = sd.create_private_dns_namespace(Name=name, Vpc=vpc)["OperationId"]
    for _ in range(5):
        operation = sd.get_operation(OperationId=operation_id)["Operation"]
        if operation["Status"] == "SUCCESS":
            return operation["Targets"]["NAMESPACE"]
    raise AssertionError("the namespace operation never succeeded")


def test_servicediscovery_filters_lists(local_aws):
    sd = local_aws.client("servicediscovery")
    ec2 = local_aws.client("ec2")
    first = _namespace(local_aws, "compat-a.internal", ec2.create_vpc(CidrBlock="10.80.0.0/16")["Vpc"]["VpcId"])
    second = _namespace(local_aws, "compat-b.internal", ec2.create_vpc(CidrBlock="10.81.0.0/16")["Vpc"]["VpcId"])
    sd.create_http_namespace(Name="compat-http")
    for namespace in (first, second):
        sd.create_service(Name="api", NamespaceId=namespace,
                          DnsConfig={"RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}]})
    listed = sd.list_services(Filters=[{"Name": "NAMESPACE_ID", "Values": [first], "Condition": "EQ"}])["Services"]
    assert len(listed) == 1 and sd.get_service(Id=listed[0]["Id"])["Service"]["NamespaceId"] == first
    assert len(sd.list_services()["Services"]) == 2
    private = sd.list_namespaces(Filters=[{"Name": "TYPE", "Values": ["DNS_PRIVATE"], "Condition": "EQ"}])
    assert sorted(n["Name"] for n in private["Namespaces"]) == ["compat-a.internal", "compat-b.internal"]
    named = sd.list_namespaces(Filters=[{"Name": "NAME", "Values": ["compat-b"], "Condition": "BEGINS_WITH"}])
    assert [n["Name"] for n in named["Namespaces"]] == ["compat-b.internal"]


def test_servicediscovery_operations_take_time(local_aws):
    sd = local_aws.client("servicediscovery")
    vpc = local_aws.client("ec2").create_vpc(CidrBlock="10.82.0.0/16")["Vpc"]["VpcId"]
    operation_id = sd.create_private_dns_namespace(Name="compat-op.internal", Vpc=vpc)["OperationId"]
    seen = [sd.get_operation(OperationId=operation_id)["Operation"]["Status"] for _ in range(4)]
    assert seen == ["SUBMITTED", "PENDING", "SUCCESS", "SUCCESS"]


def test_servicediscovery_namespaces_share_a_vpc(local_aws):
    sd = local_aws.client("servicediscovery")
    vpc = local_aws.client("ec2").create_vpc(CidrBlock="10.83.0.0/16")["Vpc"]["VpcId"]
    _namespace(local_aws, "compat-one.internal", vpc)
    _namespace(local_aws, "compat-two.internal", vpc)  # another environment's, in the same VPC
    assert {"compat-one.internal", "compat-two.internal"} <= {n["Name"] for n in sd.list_namespaces()["Namespaces"]}
    with pytest.raises(sd.exceptions.NamespaceAlreadyExists):
        sd.create_private_dns_namespace(Name="compat-one.internal", Vpc=vpc)


def test_servicediscovery_refuses_to_delete_a_namespace_in_use(local_aws):
    sd = local_aws.client("servicediscovery")
    namespace = _namespace(local_aws, "compat-inuse.internal")
    service = sd.create_service(Name="api", NamespaceId=namespace, DnsConfig={
        "RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}]})["Service"]["Id"]
    with pytest.raises(sd.exceptions.ResourceInUse):
        sd.delete_namespace(Id=namespace)
    sd.delete_service(Id=service)
    sd.delete_namespace(Id=namespace)
    assert namespace not in {n["Id"] for n in sd.list_namespaces()["Namespaces"]}


def test_ecs_service_registry_changes_start_a_deployment(local_aws, service_world):
    registry = "arn:aws:servicediscovery:eu-west-2:123456789012:service/srv-compat"
    _create_web(service_world)
    _describe_until(service_world, lambda s: s["deployments"][0]["rolloutState"] == "COMPLETED")
    ecs = service_world["ecs"]
    (before,) = ecs.describe_services(cluster="compat-svc", services=["compat-web"])["services"]
    ecs.update_service(cluster="compat-svc", service="compat-web", serviceRegistries=[{"registryArn": registry}])
    (after,) = ecs.describe_services(cluster="compat-svc", services=["compat-web"])["services"]
    assert after["serviceRegistries"] == [{"registryArn": registry}]
    assert after["deployments"][0]["id"] != before["deployments"][0]["id"]  # a new deployment registers the tasks
    ecs.update_service(cluster="compat-svc", service="compat-web", serviceRegistries=[{"registryArn": registry}])
    (same,) = ecs.describe_services(cluster="compat-svc", services=["compat-web"])["services"]
    assert same["deployments"][0]["id"] == after["deployments"][0]["id"]  # unchanged: no deployment


def test_ecs_registers_service_tasks_in_cloud_map(local_aws, service_world):
    sd, ecs = local_aws.client("servicediscovery"), service_world["ecs"]
    namespace = _namespace(local_aws, "compat-reg.internal")
    registry = sd.create_service(Name="web", NamespaceId=namespace, DnsConfig={
        "RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}]},
        HealthCheckCustomConfig={"FailureThreshold": 1})["Service"]
    ecs.create_service(
        cluster="compat-svc", serviceName="compat-web", taskDefinition=service_world["revisions"][0], desiredCount=2,
        capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1, "base": 0}],
        networkConfiguration=service_world["network"], serviceRegistries=[{"registryArn": registry["Arn"]}])
    _describe_until(service_world, lambda s: s["deployments"][0]["rolloutState"] == "COMPLETED")
    tasks = ecs.describe_tasks(cluster="compat-svc", tasks=ecs.list_tasks(
        cluster="compat-svc", serviceName="compat-web", desiredStatus="RUNNING")["taskArns"])["tasks"]
    ips = {d["value"] for t in tasks for a in t["attachments"] for d in a["details"] if d["name"] == "privateIPv4Address"}
    assert len(ips) == 2
    found = _discovery(local_aws).discover_instances(NamespaceName="compat-reg.internal", ServiceName="web")["Instances"]
    assert {i["Attributes"]["AWS_INSTANCE_IPV4"] for i in found} == ips
    assert {i["Attributes"]["ECS_SERVICE_NAME"] for i in found} == {"compat-web"}
    with pytest.raises(sd.exceptions.ResourceInUse):  # it still has instances
        sd.delete_service(Id=registry["Id"])

    ecs.delete_service(cluster="compat-svc", service="compat-web", force=True)  # its tasks stop: deregistered
    assert sd.list_instances(ServiceId=registry["Id"])["Instances"] == []
    sd.delete_service(Id=registry["Id"])


def test_servicediscovery_creates_services_once(local_aws):
    sd = local_aws.client("servicediscovery")
    namespace = _namespace(local_aws, "compat-once.internal")
    dns = {"RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}]}
    first = sd.create_service(Name="api", NamespaceId=namespace, DnsConfig=dns, CreatorRequestId="req-1")["Service"]
    retried = sd.create_service(Name="api", NamespaceId=namespace, DnsConfig=dns, CreatorRequestId="req-1")["Service"]
    assert retried["Id"] == first["Id"]
    with pytest.raises(sd.exceptions.ServiceAlreadyExists):
        sd.create_service(Name="api", NamespaceId=namespace, DnsConfig=dns, CreatorRequestId="req-2")
    listed = sd.list_services(Filters=[{"Name": "NAMESPACE_ID", "Values": [namespace], "Condition": "EQ"}])
    assert [s["Id"] for s in listed["Services"]] == [first["Id"]]


# --- Benchmarks: the pages a real account's lists come in ---------------------------------------------------


def test_servicediscovery_lists_come_in_pages(local_aws):
    sd = local_aws.client("servicediscovery")
    namespace = _namespace(local_aws, "compat-pages.internal")
    dns = {"RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}]}
    for i in range(101):
        sd.create_service(Name=f"app-{i:03d}", NamespaceId=namespace, DnsConfig=dns)
    ours = [{"Name": "NAMESPACE_ID", "Values": [namespace], "Condition": "EQ"}]
    first = sd.list_services(Filters=ours)
    assert len(first["Services"]) == 100 and first["NextToken"]  # 100 a page when MaxResults is not given
    rest = sd.list_services(Filters=ours, NextToken=first["NextToken"])
    assert [s["Name"] for s in rest["Services"]] == ["app-100"] and "NextToken" not in rest
    pages = list(sd.get_paginator("list_services").paginate(Filters=ours, PaginationConfig={"PageSize": 40}))
    assert [len(p["Services"]) for p in pages] == [40, 40, 21]
    with pytest.raises(sd.exceptions.ClientError, match="ValidationException"):
        sd.list_services(Filters=ours, MaxResults=101)

    _namespace(local_aws, "compat-pages-2.internal")
    private = [{"Name": "TYPE", "Values": ["DNS_PRIVATE"], "Condition": "EQ"}]
    one = sd.list_namespaces(Filters=private, MaxResults=1)
    assert len(one["Namespaces"]) == 1 and one["NextToken"]
    names = [n["Name"] for p in sd.get_paginator("list_namespaces").paginate(
        Filters=private, PaginationConfig={"PageSize": 1}) for n in p["Namespaces"]]
    assert {"compat-pages.internal", "compat-pages-2.internal"} <= set(names) and len(names) == len(set(names))


def _waiting_execution(local_aws):
    """A running execution (a 60 s Wait state) and the interpreter's own object for it."""
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    sfn = local_aws.client("stepfunctions")
    machine = _machine(sfn, f"compat-wait-{uuid.uuid4().hex[:8]}",
                       {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 60, "End": True}}})
    arn = sfn.start_execution(stateMachineArn=machine["stateMachineArn"])["executionArn"]
    assert sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
    backend = stepfunctions_parser_backends["123456789012"][local_aws.region]
    (execution,) = [e for e in backend._get_executions() if e.execution_arn == arn]
    return execution


def _ends(execution, seconds: float = 5) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while execution.exec_worker.env.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not execution.exec_worker.env.is_running()


def test_stepfunctions_reset_stops_running_executions(local_aws):
    execution = _waiting_execution(local_aws)
    local_aws.reset()
    assert _ends(execution), "the execution of the world before the reset still runs"


def test_a_snapshot_restore_stops_running_executions(local_aws):
    local_aws.snapshot("compat-before-execution")
    execution = _waiting_execution(local_aws)
    local_aws.restore("compat-before-execution")
    assert _ends(execution), "the execution of the world before the restore still runs"


def test_an_execution_whose_interpreter_has_not_started_yet_is_stopped_too():
    """moto's worker builds its environment on its own thread after parsing the definition: an execution started
    a moment before a reset has none yet. Stopping waits for it instead of failing (AttributeError on None)."""
    import threading
    from types import SimpleNamespace

    stopped = []

    class Env:
        def is_running(self) -> bool:
            return not stopped

    worker = SimpleNamespace(env=None, stop=lambda **kwargs: stopped.append(kwargs))
    threading.Timer(0.1, lambda: setattr(worker, "env", Env())).start()
    assert isinstance(moto_compat._environment_of(worker), Env)
    never = SimpleNamespace(env=None)
    assert moto_compat._environment_of(never, wait_seconds=0.05) is None


def test_moto_serves_one_request_at_a_time(local_aws, monkeypatch):
    """Eight DescribeSecurityGroups at once, each slowed down inside the backend: no two are inside it together.
    (Stock moto runs them all at once; with real calls that raced, CreateSecurityGroup crashed in CI.)"""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from moto.ec2.models.security_groups import SecurityGroupBackend

    inside, most = [0], [0]
    count = threading.Lock()
    describe = SecurityGroupBackend.describe_security_groups

    def slow_describe(self, *args, **kwargs):
        with count:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            time.sleep(0.05)  # long enough for every other thread's request to arrive meanwhile
            return describe(self, *args, **kwargs)
        finally:
            with count:
                inside[0] -= 1

    monkeypatch.setattr(SecurityGroupBackend, "describe_security_groups", slow_describe)
    clients = [local_aws.client("ec2") for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda ec2: ec2.describe_security_groups()["SecurityGroups"], clients))
    assert all(answers) and most[0] == 1, f"{most[0]} requests were inside the EC2 backend at once"



# --- SSM DescribeParameters pages (issue 14) --------------------------------------------------------------------------


def test_ssm_describe_parameters_honours_max_results(local_aws):
    """Stock moto answers 10 a page whatever MaxResults says, with a NextToken after a full page."""
    ssm = local_aws.client("ssm")
    names = [f"/dmp-compat/p{i:02d}" for i in range(12)]
    for name in names:
        ssm.put_parameter(Name=name, Value="v", Type="String")
    by_name = [{"Key": "Name", "Option": "Equals", "Values": names}]
    page = ssm.describe_parameters(ParameterFilters=by_name, MaxResults=50)
    assert sorted(p["Name"] for p in page["Parameters"]) == names and "NextToken" not in page
    seen, token, pages = [], None, 0
    while True:
        page = ssm.describe_parameters(ParameterFilters=by_name, MaxResults=5,
                                       **({"NextToken": token} if token else {}))
        seen += [p["Name"] for p in page["Parameters"]]
        pages += 1
        token = page.get("NextToken")
        if not token:
            break
    assert sorted(seen) == names and pages == 3
