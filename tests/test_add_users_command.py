"""`add-users`: nothing reaches AWS for a bad file; a good one is uploaded with SSE-KMS under the prefix; the
execution the upload started is found by its input and followed to its end (exit 0 only on SUCCEEDED).

The real workflow (EventBridge trigger, ECS tasks) is built elsewhere; here a small Pass/Fail machine with
the workflow's name stands in for it, started by the test with the same input the trigger gives, as soon
as the command's put_object returns.
"""

from __future__ import annotations

import json
import uuid

import botocore.exceptions
import pytest

from dmp_deploy import aws as aws_module
from dmp_deploy import names
from dmp_deploy.commands import add_users
from dmp_deploy.config import load_config

PASSWORD_1 = "Tpw-first-4d1f9a"  # literal test values searched for in everything the run wrote
PASSWORD_2 = "Tpw-second-88c2e0"
SHORT_PASSWORD = "Tpw-9char"  # 9 characters


def user(email: str, password: str, role: str = "buyer", **extra) -> dict:
    return {"emailAddress": email, "name": "Test User", "password": password, "role": role, **extra}


def write_users(tmp_path, *users, name="users.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(u) + "\n" for u in users))
    return str(path)


VALID = (user("first.user@example.gov.uk", PASSWORD_1),
         user("second.user@example.com", PASSWORD_2, "supplier", supplierId=700001))


@pytest.fixture
def config():
    return load_config("local")


@pytest.fixture
def calls(monkeypatch):
    """Every call through any AWS seam, as "service.operation", in order."""
    seen = []
    original = aws_module.Aws.call

    def call(self, service, operation, **params):
        seen.append(f"{service}.{operation}")
        return original(self, service, operation, **params)

    monkeypatch.setattr(aws_module.Aws, "call", call)
    return seen


@pytest.fixture
def bucket(local_aws, config):
    """The add-users bucket and its KMS key (alias as the tool names it), made here unless they exist."""
    s3, kms = local_aws.client("s3"), local_aws.client("kms")
    name = config.add_users.bucket_name
    try:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": local_aws.region})
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    alias = names.add_users_key_alias(config)
    try:
        key_arn = kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
    except kms.exceptions.NotFoundException:
        key_arn = kms.create_key(Description="add-users test key")["KeyMetadata"]["Arn"]
        kms.create_alias(AliasName=alias, TargetKeyId=key_arn)
    return {"name": name, "key_arn": key_arn, "s3": s3}


def objects(local_aws, bucket_name) -> list[str]:
    return [o["Key"] for o in local_aws.client("s3").list_objects_v2(Bucket=bucket_name).get("Contents", [])]


MACHINES = {
    "pass": {"StartAt": "CheckUpload", "States": {
        "CheckUpload": {"Type": "Pass", "Next": "AddUsers"},
        "AddUsers": {"Type": "Pass", "End": True}}},
    "fail": {"StartAt": "CheckUpload", "States": {
        "CheckUpload": {"Type": "Pass", "Next": "AddUsersFailed"},
        "AddUsersFailed": {"Type": "Fail", "Error": "AddUsersFailed",
                           "Cause": "add_users.py stopped at line 2: user already exists"}}},
}


@pytest.fixture
def machine(local_aws, config):
    """Creates the stand-in state machine: machine("pass") or machine("fail"); returns its ARN."""
    sfn = local_aws.client("stepfunctions")

    def make(kind: str) -> str:
        return sfn.create_state_machine(
            name=names.family(config, "add-users"), definition=json.dumps(MACHINES[kind]),
            roleArn=f"arn:aws:iam::{config.environment.account_id}:role/stand-in")["stateMachineArn"]
    return make


def s3_event(bucket: str, key: str, size: int) -> dict:
    return {"version": "0", "source": "aws.s3", "detail-type": "Object Created",
            "detail": {"version": "0", "bucket": {"name": bucket}, "object": {"key": key, "size": size},
                       "reason": "PutObject"}}


@pytest.fixture
def trigger(local_aws, monkeypatch):
    """Plays EventBridge: after each successful put_object through the seam, starts an execution of the
    machine with the S3 event as input. `trigger.started` lists (execution name, input)."""
    sfn = local_aws.client("stepfunctions")
    state = {"arn": None, "before": None}
    started = []
    original = aws_module.Aws.call

    def call(self, service, operation, **params):
        response = original(self, service, operation, **params)
        if (service, operation) == ("s3", "put_object") and state["arn"]:
            if state["before"]:
                state["before"]()
            body = json.dumps(s3_event(params["Bucket"], params["Key"], len(params["Body"])))
            name = f"upload-{uuid.uuid4().hex[:12]}"
            sfn.start_execution(stateMachineArn=state["arn"], name=name, input=body)
            started.append((name, body))
        return response

    monkeypatch.setattr(aws_module.Aws, "call", call)

    class Trigger:
        def __init__(self):
            self.started = started

        def connect(self, machine_arn: str, before=None):
            state["arn"], state["before"] = machine_arn, before
    return Trigger()


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(add_users, "START_TIMEOUT_SECONDS", 20.0)
    monkeypatch.setattr(add_users, "NO_WAIT_LOOKUP_SECONDS", 3.0)
    monkeypatch.setattr(add_users, "LOCAL_POLL_SECONDS", 0.05)


def assert_no_password(*texts: str) -> None:
    for text in texts:
        for secret in (PASSWORD_1, PASSWORD_2, SHORT_PASSWORD):
            assert secret not in text


# --- nothing reaches AWS for a bad file ------------------------------------------------------------------

def test_nine_character_password_exits_1_naming_line_and_field_and_uploads_nothing(
        local_aws, bucket, run_cli, calls, tmp_path):
    path = write_users(tmp_path, VALID[0], user("short.password@example.com", SHORT_PASSWORD))
    result = run_cli("add-users", "--env", "local", path)
    assert result.code == 1
    assert "users.jsonl:2: password: must be at least 10 characters (got 9)" in result.stderr
    assert "nothing was uploaded" in result.stderr
    assert_no_password(result.stdout, result.stderr)
    assert calls == []  # validated before connecting: not even the account check
    assert objects(local_aws, bucket["name"]) == []


def test_invalid_file_in_json_mode_lists_every_problem_and_makes_no_call(local_aws, bucket, run_cli, calls,
                                                                        tmp_path):
    path = tmp_path / "users.jsonl"
    path.write_text(json.dumps(user("bad-address", SHORT_PASSWORD, role="shopkeeper")) + "\n{not json\n")
    result = run_cli("add-users", "--env", "local", str(path), "--json")
    assert result.code == 1
    document = result.json
    assert document["status"] == "INVALID" and document["key"] is None
    assert [(p["line"], p["field"]) for p in document["problems"]] == [
        (1, "emailAddress"), (1, "password"), (1, "role"), (2, None)]
    assert_no_password(result.stdout, result.stderr)
    assert calls == []
    assert objects(local_aws, bucket["name"]) == []


def test_missing_file_is_a_problem_not_a_traceback(run_cli, calls, tmp_path):
    result = run_cli("add-users", "--env", "local", str(tmp_path / "nope.jsonl"))
    assert result.code == 1 and "nope.jsonl: no such file" in result.stderr
    assert "Traceback" not in result.stderr and calls == []


# --- the upload ----------------------------------------------------------------------------------------

def test_valid_file_is_uploaded_encrypted_under_the_prefix_and_no_wait_prints_the_key(
        local_aws, bucket, config, run_cli, calls, tmp_path):
    path = write_users(tmp_path, *VALID)
    result = run_cli("add-users", "--env", "local", path, "--no-wait")
    assert result.code == 0, result.stderr

    (key,) = objects(local_aws, bucket["name"])
    assert key.startswith(config.add_users.upload_prefix) and key.endswith(".jsonl")
    assert f"Object key: {key}" in result.stdout
    head = bucket["s3"].head_object(Bucket=bucket["name"], Key=key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == bucket["key_arn"]
    assert head.get("Metadata", {}) == {}
    body = bucket["s3"].get_object(Bucket=bucket["name"], Key=key)["Body"].read().decode()
    assert [json.loads(line) for line in body.splitlines()] == list(VALID)

    # The only mutating call is the upload; the rest are the reads the operative's policy allows.
    assert [c for c in calls if aws_module.is_mutating(c.split(".", 1)[1])] == ["s3.put_object"]
    assert set(calls) <= {"sts.get_caller_identity", "kms.describe_key", "s3.put_object",
                          "stepfunctions.list_executions"}
    assert "No execution has picked the upload up yet" in result.stdout  # no machine here at all
    assert_no_password(result.stdout, result.stderr)


def test_json_array_is_converted_to_json_lines(local_aws, bucket, run_cli, tmp_path):
    path = tmp_path / "users.json"
    path.write_text(json.dumps(list(VALID), indent=2))
    result = run_cli("add-users", "--env", "local", str(path), "--no-wait", "--json")
    assert result.code == 0, result.stderr
    key = result.json["key"]
    body = bucket["s3"].get_object(Bucket=bucket["name"], Key=key)["Body"].read().decode()
    lines = body.splitlines()
    assert len(lines) == 2 and [json.loads(line) for line in lines] == list(VALID)


def test_two_uploads_of_the_same_file_get_different_keys(local_aws, bucket, run_cli, tmp_path):
    path = write_users(tmp_path, *VALID)
    keys = {run_cli("add-users", "--env", "local", path, "--no-wait", "--json").json["key"] for _ in range(2)}
    assert len(keys) == 2 and set(objects(local_aws, bucket["name"])) == keys


def test_key_configured_in_config_is_used_without_looking_it_up(local_aws, bucket, run_cli, calls, tmp_path,
                                                                 monkeypatch):
    from dataclasses import replace
    from dmp_deploy.commands import add_users as command
    original = command.load_config
    monkeypatch.setattr(command, "load_config", lambda env: (lambda c: replace(
        c, add_users=replace(c.add_users, kms_key_arn=bucket["key_arn"])))(original(env)))
    result = run_cli("add-users", "--env", "local", write_users(tmp_path, *VALID), "--no-wait")
    assert result.code == 0, result.stderr
    assert "kms.describe_key" not in calls
    (key,) = objects(local_aws, bucket["name"])
    assert bucket["s3"].head_object(Bucket=bucket["name"], Key=key)["SSEKMSKeyId"] == bucket["key_arn"]


def test_missing_bucket_says_the_workflow_is_not_deployed(local_aws, bucket, run_cli, tmp_path):
    bucket["s3"].delete_bucket(Bucket=bucket["name"])
    result = run_cli("add-users", "--env", "local", write_users(tmp_path, *VALID))
    assert result.code == 1
    assert f"the add-users bucket {bucket['name']} does not exist in local" in result.stderr
    assert "Nothing was uploaded" in result.stderr and "Traceback" not in result.stderr


def test_missing_key_alias_says_the_workflow_is_not_deployed(local_aws, config, run_cli, tmp_path):
    result = run_cli("add-users", "--env", "local", write_users(tmp_path, *VALID))
    assert result.code == 1
    assert f"the add-users KMS key {names.add_users_key_alias(config)} does not exist" in result.stderr


def test_refused_upload_explains_what_is_needed(local_aws, bucket, run_cli, tmp_path, monkeypatch):
    original = aws_module.Aws.call

    def call(self, service, operation, **params):
        if operation == "put_object":
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "denied by bucket policy"}}, "PutObject")
        return original(self, service, operation, **params)

    monkeypatch.setattr(aws_module.Aws, "call", call)
    result = run_cli("add-users", "--env", "local", write_users(tmp_path, *VALID))
    assert result.code == 1
    assert "the upload was refused (AccessDenied)" in result.stderr
    assert bucket["key_arn"] in result.stderr and "Nothing was uploaded" in result.stderr
    assert objects(local_aws, bucket["name"]) == []


# --- finding and following the execution -----------------------------------------------------------------

def test_success_is_followed_to_the_end_and_exits_0(local_aws, bucket, machine, trigger, run_cli, tmp_path):
    trigger.connect(machine("pass"))
    result = run_cli("add-users", "--env", "local", write_users(tmp_path, *VALID))
    assert result.code == 0, result.stdout + result.stderr
    (name, _), = trigger.started
    assert f"Execution {name} started" in result.stdout
    assert "  state: CheckUpload\n  state: AddUsers\n" in result.stdout
    assert "Succeeded" in result.stdout
    assert_no_password(result.stdout, result.stderr)


def test_fail_state_exits_1_with_its_error_and_cause(local_aws, bucket, machine, trigger, run_cli, tmp_path):
    trigger.connect(machine("fail"))
    result = run_cli("add-users", "--env", "local", write_users(tmp_path, *VALID))
    assert result.code == 1
    assert "state: AddUsersFailed" in result.stdout
    assert "FAILED" in result.stdout
    assert "error: AddUsersFailed" in result.stdout
    assert "cause: add_users.py stopped at line 2: user already exists" in result.stdout
    assert_no_password(result.stdout, result.stderr)


def test_json_mode_prints_one_document_with_the_outcome(local_aws, bucket, machine, trigger, run_cli, tmp_path):
    trigger.connect(machine("fail"))
    result = run_cli("add-users", "--env", "local", write_users(tmp_path, *VALID), "--json")
    assert result.code == 1
    document = result.json  # the whole of stdout is one JSON document
    (name, _), = trigger.started
    assert document["execution"]["name"] == name
    assert document["execution"]["arn"].endswith(f":{name}")
    assert document["status"] == "FAILED"
    assert document["states"] == ["CheckUpload", "AddUsersFailed"]
    assert document["error"] == "AddUsersFailed"
    assert document["key"].startswith("uploads/") and document["users"] == 2


def test_the_execution_of_this_upload_is_followed_not_another_one(local_aws, bucket, config, machine, trigger,
                                                                   run_cli, tmp_path):
    """Another operative's upload started an execution just before ours: its input names another key."""
    arn = machine("pass")
    sfn = local_aws.client("stepfunctions")
    other = "someone-else"

    def another_upload():
        sfn.start_execution(stateMachineArn=arn, name=other, input=json.dumps(
            s3_event(bucket["name"], f"{config.add_users.upload_prefix}20990101T000000Z-other.jsonl", 10)))

    trigger.connect(arn, before=another_upload)
    result = run_cli("add-users", "--env", "local", write_users(tmp_path, *VALID), "--json")
    assert result.code == 0, result.stdout + result.stderr
    (name, body), = trigger.started
    assert result.json["execution"]["name"] == name != other
    assert json.loads(body)["detail"]["object"]["key"] == result.json["key"]


def test_no_execution_within_the_deadline_is_a_clear_error(local_aws, bucket, machine, run_cli, tmp_path,
                                                           monkeypatch):
    machine("pass")  # a machine, but no trigger delivers the upload's event to it
    monkeypatch.setattr(add_users, "START_TIMEOUT_SECONDS", 0.3)
    result = run_cli("add-users", "--env", "local", write_users(tmp_path, *VALID))
    assert result.code == 1
    assert "no execution started: the upload s3://" in result.stderr
    assert "no add-users execution started within 0 s, so no user was added" in result.stderr
    assert "dmp-local-add-users-uploads" in result.stderr and "dmp-local-add-users-trigger" in result.stderr
    assert "`python run.py plan --env local`" in result.stderr


def test_missing_state_machine_is_named(local_aws, bucket, config, run_cli, tmp_path):
    result = run_cli("add-users", "--env", "local", write_users(tmp_path, *VALID))
    assert result.code == 1
    assert f"the add-users state machine {names.family(config, 'add-users')} does not exist" in result.stderr


def test_no_wait_names_the_execution_when_it_starts_quickly(local_aws, bucket, machine, trigger, run_cli,
                                                             tmp_path):
    trigger.connect(machine("pass"))
    result = run_cli("add-users", "--env", "local", write_users(tmp_path, *VALID), "--no-wait", "--json")
    assert result.code == 0, result.stderr
    (name, _), = trigger.started
    assert result.json["execution"]["name"] == name
    assert result.json["states"] == []  # not followed



def test_a_running_execution_is_followed_across_polls_printing_each_event_once(
        local_aws, bucket, machine, trigger, run_cli, tmp_path, config):
    sfn = local_aws.client("stepfunctions")
    arn = sfn.create_state_machine(
        name=names.family(config, "add-users"), roleArn=f"arn:aws:iam::{config.environment.account_id}:role/x",
        definition=json.dumps({"StartAt": "CheckUpload", "States": {
            "CheckUpload": {"Type": "Pass", "Next": "CopyToEfs"},
            "CopyToEfs": {"Type": "Wait", "Seconds": 1, "Next": "AddUsers"},
            "AddUsers": {"Type": "Pass", "End": True}}}))["stateMachineArn"]
    trigger.connect(arn)
    result = run_cli("add-users", "--env", "local", write_users(tmp_path, *VALID), "--json")
    assert result.code == 0, result.stdout + result.stderr
    assert result.json["states"] == ["CheckUpload", "CopyToEfs", "AddUsers"]
    assert result.json["status"] == "SUCCEEDED"


# --- the follow logic without AWS: history pages, events, redaction ---------------------------------------

class FakeHistory:
    """get_execution_history as AWS serves it with reverseOrder: newest first, `page` events per page."""

    def __init__(self, count: int, page: int):
        self.events = [{"id": i, "type": "PassStateEntered", "stateEnteredEventDetails": {"name": f"S{i}"}}
                       for i in range(1, count + 1)]
        self.page = page
        self.calls = []

    def call(self, service, operation, **params):
        assert (service, operation) == ("stepfunctions", "get_execution_history") and params["reverseOrder"]
        self.calls.append(params)
        newest_first = list(reversed(self.events))
        start = int(params.get("nextToken", 0))
        batch = newest_first[start:start + self.page]
        more = start + self.page < len(newest_first)
        return {"events": batch, **({"nextToken": str(start + self.page)} if more else {})}


@pytest.mark.parametrize("count, page, after, expected_ids, expected_calls", [
    (5, 100, 0, [1, 2, 3, 4, 5], 1),
    (5, 2, 0, [1, 2, 3, 4, 5], 3),     # the first read pages through everything
    (5, 2, 3, [4, 5], 2),              # stops at the page that reaches an event already seen
    (5, 2, 4, [5], 1),
    (5, 2, 5, [], 1),                  # nothing new: one call
    (250, 100, 240, list(range(241, 251)), 1),
])
def test_new_events_reads_only_what_is_new(count, page, after, expected_ids, expected_calls):
    fake = FakeHistory(count, page)
    events = add_users.new_events(fake, "arn:execution", after)
    assert [e["id"] for e in events] == expected_ids
    assert len(fake.calls) == expected_calls


def test_new_events_copes_with_an_emulator_that_ignores_reverse_order():
    fake = FakeHistory(4, 100)
    fake.call = lambda service, operation, **params: {"events": fake.events}  # oldest first, one page
    assert [e["id"] for e in add_users.new_events(fake, "arn", 2)] == [3, 4]


TASK_DEF = "arn:aws:ecs:eu-west-2:123456789012:task-definition/dmp-local-add-users:7"
TASK_ARN = "arn:aws:ecs:eu-west-2:123456789012:task/dmp-local/0f1e2d3c4b5a"


def ecs_task(**fields) -> dict:
    return {"TaskArn": TASK_ARN, "TaskDefinitionArn": TASK_DEF, "LastStatus": "STOPPED", **fields}


def event(i: int, kind: str, **details) -> dict:
    key = {"TaskSubmitted": "taskSubmittedEventDetails", "TaskSucceeded": "taskSucceededEventDetails",
           "TaskFailed": "taskFailedEventDetails", "ExecutionFailed": "executionFailedEventDetails",
           "ExecutionSucceeded": "executionSucceededEventDetails", "TaskStateEntered": "stateEnteredEventDetails",
           "ExecutionTimedOut": "executionTimedOutEventDetails"}[kind]
    return {"id": i, "type": kind, key: details}


ECS = {"resourceType": "ecs", "resource": "runTask.sync"}


@pytest.mark.parametrize("events, lines, status", [
    ([event(1, "TaskStateEntered", name="AddUsers"),
      event(2, "TaskSubmitted", **ECS, output=json.dumps({"Tasks": [ecs_task(LastStatus="PROVISIONING")]})),
      event(3, "TaskSucceeded", **ECS, output=json.dumps(ecs_task(Containers=[{"Name": "add-users",
                                                                             "ExitCode": 0}])))],
     ["  state: AddUsers", "  ECS task started: dmp-local-add-users:7 (0f1e2d3c4b5a)",
      "  ECS task stopped: dmp-local-add-users:7 (0f1e2d3c4b5a): exit code 0"], "RUNNING"),
    ([event(1, "TaskStateEntered", name="AddUsers"),
      event(2, "TaskFailed", **ECS, error="States.TaskFailed", cause=json.dumps(ecs_task(
          Containers=[{"Name": "add-users", "ExitCode": 1}, {"Name": "sidecar", "ExitCode": 0}],
          StoppedReason="Essential container in task exited"))),
      event(3, "ExecutionFailed", error="AddUsersFailed", cause="the add_users task failed")],
     ["  state: AddUsers", "  ECS task stopped: dmp-local-add-users:7 (0f1e2d3c4b5a): exit codes add-users=1, "
                           "sidecar=0 (Essential container in task exited)"], "FAILED"),
    ([event(1, "TaskStateEntered", name="CopyToEfs"),  # camelCase, as ECS's own API spells it
      event(2, "TaskFailed", **ECS, error="States.TaskFailed", cause=json.dumps(
          {"taskArn": TASK_ARN, "taskDefinitionArn": TASK_DEF, "containers": [{"name": "copier"}],
           "stoppedReason": "CannotPullContainerError"}))],
     ["  state: CopyToEfs", "  ECS task stopped: dmp-local-add-users:7 (0f1e2d3c4b5a): exit codes copier=none "
                            "(CannotPullContainerError)"], "RUNNING"),
    ([event(1, "TaskStateEntered", name="DeleteUpload"),
      event(2, "TaskFailed", resourceType="aws-sdk", resource="s3:deleteObject", error="S3.AccessDenied",
            cause="Access Denied")],
     ["  state: DeleteUpload", "  step failed: DeleteUpload: S3.AccessDenied: Access Denied"], "RUNNING"),
    ([event(1, "ExecutionSucceeded", output="{}")], [], "SUCCEEDED"),
    ([event(1, "ExecutionTimedOut", error="States.Timeout")], [], "TIMED_OUT"),
])
def test_history_events_become_lines_and_outcome(events, lines, status):
    report = add_users.Report("local", "users.jsonl", json_mode=False, status="RUNNING")
    printed = [line for e in events for line in add_users.record_event(report, e)]
    assert printed == lines
    assert report.status == status
    assert report.last_event_id == events[-1]["id"]


def test_ecs_task_is_recorded_once_with_its_exit_codes():
    report = add_users.Report("local", "users.jsonl", json_mode=True, status="RUNNING")
    for e in (event(1, "TaskStateEntered", name="AddUsers"),
              event(2, "TaskSubmitted", **ECS, output=json.dumps({"Tasks": [ecs_task()]})),
              event(3, "TaskSucceeded", **ECS, output=json.dumps(ecs_task(Containers=[{"Name": "a", "ExitCode": 0}])))):
        add_users.record_event(report, e)
    assert report.tasks == [{"state": "AddUsers", "taskArn": TASK_ARN, "taskDefinition": "dmp-local-add-users:7",
                             "exitCodes": {"a": 0}, "stoppedReason": None, "status": "SUCCEEDED"}]


def test_passwords_in_history_are_redacted_before_printing():
    """The workflow never puts one there; if it ever did (a task's output, a cause quoting the script's
    `Adding {...}` line), nothing printed or recorded shows it."""
    report = add_users.Report("local", "users.jsonl", json_mode=False, status="RUNNING")
    leaky = ecs_task(Containers=[{"Name": "add-users", "ExitCode": 1}],
                     Overrides={"ContainerOverrides": [{"Environment": [{"Name": "USER_PASSWORD",
                                                                        "Value": PASSWORD_1}]}]},
                     StoppedReason=f"Adding {{'emailAddress': 'a@example.com', 'password': '{PASSWORD_2}'}}")
    printed = []
    for e in (event(1, "TaskFailed", **ECS, error="States.TaskFailed", cause=json.dumps(leaky)),
              event(2, "TaskFailed", resourceType="aws-sdk", resource="x", error="E",
                    cause=f'{{"password": "{PASSWORD_1}", "other": 1}}'),
              event(3, "ExecutionFailed", error="E", cause=f"user {{\"password\": \"{PASSWORD_2}\"}} failed")):
        printed += add_users.record_event(report, e)
    everything = "\n".join(printed) + json.dumps(report.as_dict())
    assert_no_password(everything)
    assert "[redacted]" in everything


@pytest.mark.parametrize("text, expected", [
    ('{"password": "x1", "a": 1}', '{"password": "[redacted]", "a": 1}'),
    ('[{"newPassword": "x1"}]', '[{"newPassword": "[redacted]"}]'),
    ('{"cause": "{\\"password\\": \\"x1\\"}"}', '{"cause": "{\\"password\\": \\"[redacted]\\"}"}'),
    ("Adding {'name': 'A', 'password': 'x1', 'role': 'buyer'}",
     "Adding {'name': 'A', 'password': '[redacted]', 'role': 'buyer'}"),
    ("Adding {'password': \"it's-x1\"}", "Adding {'password': \"[redacted]\"}"),
    ('failed: {\\"Password\\": \\"x1\\"} here', 'failed: {\\"Password\\": \\"[redacted]\\"} here'),
    ("DB_PASSWORD=x1 next", "DB_PASSWORD=[redacted] next"),
    ('{"Name": "API_PASSWORD", "Value": "x1"}', '{"Name": "API_PASSWORD", "Value": "[redacted]"}'),
    ("nothing secret", "nothing secret"),
    (None, None),
])
def test_redact_text(text, expected):
    assert add_users.redact_text(text) == expected


@pytest.mark.parametrize("execution_input, matches", [
    (json.dumps(s3_event("b", "uploads/k.jsonl", 3)), True),
    (json.dumps(s3_event("other-bucket", "uploads/k.jsonl", 3)), False),
    (json.dumps(s3_event("b", "uploads/k2.jsonl", 3)), False),
    (json.dumps({"bucket": "b", "key": "uploads/k.jsonl"}), False),
    ("not json", False),
    ("[]", False),
    (None, False),
])
def test_started_by_matches_the_event_for_exactly_this_object(execution_input, matches):
    assert add_users.started_by(execution_input, "b", "uploads/k.jsonl") is matches


def test_upload_key_is_under_the_prefix_time_ordered_and_random(config):
    from datetime import datetime, timezone
    moment = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    keys = {add_users.upload_key(config, moment) for _ in range(50)}
    assert len(keys) == 50
    assert all(k.startswith("uploads/20250304T050607Z-") and k.endswith(".jsonl") for k in keys)


def test_a_retried_put_that_meets_its_own_first_attempt_counts_as_uploaded(local_aws, bucket, run_cli, tmp_path,
                                                                           monkeypatch):
    """botocore retries a put whose answer was lost; with If-None-Match the retry gets 412 for the object
    the first attempt stored under the same (new, random) key. That is a success, not a refusal."""
    original = aws_module.Aws.call

    def call(self, service, operation, **params):
        response = original(self, service, operation, **params)
        if operation == "put_object":
            return original(self, service, operation, **params)  # the retry: 412 PreconditionFailed
        return response

    monkeypatch.setattr(aws_module.Aws, "call", call)
    result = run_cli("add-users", "--env", "local", write_users(tmp_path, *VALID), "--no-wait", "--json")
    assert result.code == 0, result.stdout + result.stderr
    assert objects(local_aws, bucket["name"]) == [result.json["key"]]
