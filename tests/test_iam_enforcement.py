"""IAM enforced by the embedded AWS (dmp_deploy/local/iam_enforcement.py; moto_compat, "issue 11: IAM enforced"):
the workflow's real roles, deployed by `apply --env local`, allowed exactly what AWS would allow them."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError

from dmp_deploy import names
from dmp_deploy.config import load_config
from dmp_deploy.local import iam_enforcement, snapshots

CONFIG = load_config("local")
ACCOUNT = CONFIG.environment.account_id
BUCKET = CONFIG.add_users.bucket_name
COPIER_ROLE = names.role_arn(CONFIG, names.task_role(CONFIG, "add-users-copier"))
APPLIED = "iam-enforcement-applied"
_saved: set[str] = set()


@pytest.fixture
def applied(local_aws, run_cli):
    """`apply --env local` once per session (then restored from a snapshot: milliseconds, not seconds)."""
    if APPLIED in _saved:
        snapshots.load(APPLIED)
    else:
        result = run_cli("apply", "--env", "local", "--json")
        assert result.code == 0, result.stdout + result.stderr
        snapshots.save(APPLIED)
        _saved.add(APPLIED)
    iam_enforcement.clear_denials()
    return local_aws


def assume(local_aws, role_arn: str, session: str = "test", **extra):
    """A boto3 session signed with the role's temporary credentials from the embedded STS."""
    credentials = local_aws.client("sts").assume_role(RoleArn=role_arn, RoleSessionName=session,
                                                       **extra)["Credentials"]
    return boto3.session.Session(aws_access_key_id=credentials["AccessKeyId"],
                                 aws_secret_access_key=credentials["SecretAccessKey"],
                                 aws_session_token=credentials["SessionToken"], region_name=local_aws.region)


def client(local_aws, session, service: str):
    return session.client(service, endpoint_url=local_aws.endpoint)


def key_arn(local_aws) -> str:
    return local_aws.client("kms").describe_key(KeyId="alias/dmp-local-add-users")["KeyMetadata"]["Arn"]


def test_the_copier_role_reads_uploads_and_nothing_else(applied):
    s3 = applied.client("s3")
    for key in ("uploads/users.jsonl", "elsewhere/users.jsonl"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"{}\n", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId=key_arn(applied), IfNoneMatch="*")
    copier = client(applied, assume(applied, COPIER_ROLE), "s3")
    assert copier.get_object(Bucket=BUCKET, Key="uploads/users.jsonl")["Body"].read() == b"{}\n"
    with pytest.raises(ClientError) as refused:
        copier.get_object(Bucket=BUCKET, Key="elsewhere/users.jsonl")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    message = refused.value.response["Error"]["Message"]
    assert f"assumed-role/{COPIER_ROLE.rsplit('/', 1)[1]}/test" in message
    assert f"s3:GetObject on resource: arn:aws:s3:::{BUCKET}/elsewhere/users.jsonl" in message
    with pytest.raises(ClientError, match="AccessDenied"):  # no write, no delete
        copier.delete_object(Bucket=BUCKET, Key="uploads/users.jsonl")
    (denial, _) = iam_enforcement.denials()
    assert denial.action == "s3:GetObject" and COPIER_ROLE.rsplit("/", 1)[1] in denial.principal


# --- the state machine's role: ecs:RunTask and iam:PassRole, when the Task state runs ----------------------------

STATES_ROLE = names.role_arn(CONFIG, f"{CONFIG.prefix}-add-users-states")
MACHINE_ARN = f"arn:aws:states:{CONFIG.environment.region}:{ACCOUNT}:stateMachine:{CONFIG.prefix}-add-users"


@pytest.fixture
def quick_retries(monkeypatch):
    """The workflow retries ECS.AccessDeniedException (a new role propagating) 4 times with 5 s backoff: the
    same retries, each wait a hundredth as long."""
    import time
    import types

    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    monkeypatch.setattr(retrier_decl, "time", types.SimpleNamespace(sleep=lambda s: time.sleep(s / 100)))


def states_policy(local_aws) -> dict:
    iam = local_aws.client("iam")
    name = STATES_ROLE.rsplit("/", 1)[1]
    return iam.get_role_policy(RoleName=name, PolicyName="add-users-workflow")["PolicyDocument"]


def put_states_policy(local_aws, document: dict) -> None:
    local_aws.client("iam").put_role_policy(RoleName=STATES_ROLE.rsplit("/", 1)[1],
                                            PolicyName="add-users-workflow", PolicyDocument=json.dumps(document))


def upload(local_aws, key: str = "uploads/users.jsonl") -> None:
    line = {"emailAddress": "a@example.com", "name": "A", "password": "Correct-Horse-9", "role": "buyer"}
    local_aws.client("s3").put_object(Bucket=BUCKET, Key=key, Body=(json.dumps(line) + "\n").encode(),
                                      ServerSideEncryption="aws:kms", SSEKMSKeyId=key_arn(local_aws),
                                      IfNoneMatch="*")


def finished_execution(local_aws, timeout: float = 90) -> dict:
    import time

    sfn = local_aws.client("stepfunctions")
    deadline = time.monotonic() + timeout
    while True:
        listed = sfn.list_executions(stateMachineArn=MACHINE_ARN)["executions"]
        if listed and listed[0]["status"] != "RUNNING":
            return sfn.describe_execution(executionArn=listed[0]["executionArn"])
        assert time.monotonic() < deadline, f"no finished execution: {listed}"
        time.sleep(0.25)


def failed_tasks(local_aws, execution_arn: str) -> list[tuple[str, str, str]]:
    """(state, error, cause) of every TaskFailed event."""
    events = local_aws.client("stepfunctions").get_execution_history(executionArn=execution_arn,
                                                                     maxResults=1000)["events"]
    state, out = None, []
    for event in events:
        if "stateEnteredEventDetails" in event:
            state = event["stateEnteredEventDetails"]["name"]
        if event["type"] == "TaskFailed":
            out.append((state, event["taskFailedEventDetails"]["error"], event["taskFailedEventDetails"]["cause"]))
    return out


def _without_family(document: dict, family: str) -> dict:
    for statement in document["Statement"]:
        if statement.get("Sid") == "RunTheWorkflowTasks":
            statement["Resource"] = [r for r in statement["Resource"] if f"/{family}:" not in r]
    return document


def _without_pass_role(document: dict) -> dict:
    document["Statement"] = [s for s in document["Statement"] if s.get("Sid") != "PassTheTaskRoles"]
    return document


def _unversioned_family_arns(document: dict) -> dict:
    """`task-definition/FAMILY` without `:*`: ECS authorises the resolved revision, which it does not match."""
    for statement in document["Statement"]:
        if statement.get("Sid") == "RunTheWorkflowTasks":
            statement["Resource"] = [r.rsplit(":", 1)[0] for r in statement["Resource"]]
    return document


@pytest.mark.parametrize("break_policy, action, first_state", [
    (lambda d: _without_family(d, f"{CONFIG.prefix}-add-users"), "ecs:RunTask", "AddUsers"),
    (_unversioned_family_arns, "ecs:RunTask", "CopyToEfs"),
    (_without_pass_role, "iam:PassRole", "CopyToEfs"),
])
def test_a_wrong_state_machine_policy_fails_the_task_state_naming_role_and_action(applied, quick_retries,
                                                                                   break_policy, action,
                                                                                   first_state):
    put_states_policy(applied, break_policy(states_policy(applied)))
    upload(applied)
    execution = finished_execution(applied)
    assert execution["status"] == "FAILED"
    failures = failed_tasks(applied, execution["executionArn"])
    state, error, cause = failures[0]
    assert (state, error) == (first_state, "ECS.AccessDeniedException")
    role_name = STATES_ROLE.rsplit("/", 1)[1]
    assert f"assumed-role/{role_name}/StepFunctions is not authorized to perform: {action}" in cause
    assert len([f for f in failures if f[0] == first_state]) == 5  # the first attempt and the 4 retries
    assert action in execution["cause"] and role_name in execution["cause"]
    assert any(d.action == action for d in iam_enforcement.denials())


def test_the_deployed_state_machine_policy_runs_the_workflow(applied):
    upload(applied)
    execution = finished_execution(applied)
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    assert iam_enforcement.denials() == []


# --- the trigger: EventBridge starts the workflow only as a role allowed to ---------------------------------------

TRIGGER_ROLE = names.role_arn(CONFIG, f"{CONFIG.prefix}-add-users-trigger")
RULE = f"{CONFIG.prefix}-add-users-uploads"


def users_file(tmp_path) -> str:
    path = tmp_path / "users.jsonl"
    path.write_text(json.dumps({"emailAddress": "a@example.com", "name": "A", "password": "Correct-Horse-9",
                                "role": "buyer"}) + "\n")
    return str(path)


def put_trigger_policy(local_aws, statement: dict) -> None:
    local_aws.client("iam").put_role_policy(
        RoleName=TRIGGER_ROLE.rsplit("/", 1)[1], PolicyName="add-users-workflow",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}))


def failed_invocations(local_aws) -> float:
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    points = local_aws.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/Events", MetricName="FailedInvocations", Dimensions=[{"Name": "RuleName", "Value": RULE}],
        StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=1), Period=60,
        Statistics=["Sum"])["Datapoints"]
    return sum(p["Sum"] for p in points)


@pytest.mark.parametrize("statement", [
    # the policy as it was: the alias ARN, which Step Functions never authorises a start against
    {"Effect": "Allow", "Action": "states:StartExecution", "Resource": f"{MACHINE_ARN}:live"},
    # the right ARN, but another qualifier than the alias the rule targets
    {"Effect": "Allow", "Action": "states:StartExecution", "Resource": MACHINE_ARN,
     "Condition": {"StringEquals": {"states:StateMachineQualifier": "canary"}}},
])
def test_a_trigger_role_that_may_not_start_the_alias_starts_nothing_and_add_users_says_so(
        applied, run_cli, tmp_path, monkeypatch, caplog, statement):
    from dmp_deploy.commands import add_users

    monkeypatch.setattr(add_users, "LOCAL_START_TIMEOUT_SECONDS", 2.0)
    put_trigger_policy(applied, statement)
    with caplog.at_level("WARNING", logger="dmp_deploy.local.iam"):
        result = run_cli("add-users", "--env", "local", users_file(tmp_path))

    assert result.code == 1, result.stdout + result.stderr
    assert "no execution started: the upload s3://" in result.stderr
    assert "no user was added" in result.stderr and RULE in result.stderr and "add-users-trigger" in result.stderr
    assert applied.client("stepfunctions").list_executions(stateMachineArn=MACHINE_ARN)["executions"] == []
    # the embedded AWS logged the refused delivery naming the role and the action, and counted it as AWS does
    role_name = TRIGGER_ROLE.rsplit("/", 1)[1]
    (denial,) = [d for d in iam_enforcement.denials() if d.source == "eventbridge"]
    assert denial.action == "states:StartExecution" and f"assumed-role/{role_name}/" in denial.principal
    assert denial.resource == MACHINE_ARN and denial.detail["rule"] == RULE
    logged = [r.getMessage() for r in caplog.records if r.name == "dmp_deploy.local.iam"]
    assert any(role_name in m and "states:StartExecution" in m for m in logged)
    assert failed_invocations(applied) == 1.0


def test_the_deployed_trigger_role_starts_the_workflow(applied, run_cli, tmp_path):
    result = run_cli("add-users", "--env", "local", users_file(tmp_path))
    assert result.code == 0, result.stdout + result.stderr
    assert [d for d in iam_enforcement.denials()] == []
    assert failed_invocations(applied) == 0


# --- the operative: add-users uploads as the operative role, under its policy and the bucket policy ---------------

OPERATIVE_ROLE = names.role_arn(CONFIG, f"{CONFIG.prefix}-add-users-operative")


def test_add_users_uploads_as_the_operative_so_a_role_without_put_object_is_refused(applied, run_cli, tmp_path):
    iam = applied.client("iam")
    role_name = OPERATIVE_ROLE.rsplit("/", 1)[1]
    document = iam.get_role_policy(RoleName=role_name, PolicyName="add-users-workflow")["PolicyDocument"]
    document["Statement"] = [s for s in document["Statement"] if s["Action"] != "s3:PutObject"]
    iam.put_role_policy(RoleName=role_name, PolicyName="add-users-workflow", PolicyDocument=json.dumps(document))

    result = run_cli("add-users", "--env", "local", users_file(tmp_path))
    assert result.code == 1
    assert "the upload was refused (AccessDenied)" in result.stderr and "Nothing was uploaded" in result.stderr
    assert "Contents" not in applied.client("s3").list_objects_v2(Bucket=BUCKET)
    (denial,) = iam_enforcement.denials()
    assert denial.action == "s3:PutObject" and f"assumed-role/{role_name}/add-users-operative" in denial.principal
    assert "no identity-based policy allows" in denial.message


@pytest.mark.parametrize("headers, reason", [
    ({"ServerSideEncryption": "aws:kms", "KMS": True}, "explicit deny in a resource-based policy"),  # no If-None-Match
    ({"IfNoneMatch": "*"}, "explicit deny in a resource-based policy"),  # not SSE-KMS
    ({"ServerSideEncryption": "aws:kms", "KMS": True, "IfNoneMatch": "*", "Key": "elsewhere/u.jsonl"},
     "no identity-based policy allows"),  # outside the upload prefix
])
def test_the_operatives_put_object_is_held_to_the_bucket_policy(applied, headers, reason):
    session = assume(applied, OPERATIVE_ROLE, "operative", SerialNumber="arn:aws:iam::123456789012:mfa/x",
                     TokenCode="123456")
    s3 = client(applied, session, "s3")
    params = {k: v for k, v in headers.items() if k not in ("KMS", "Key")}
    if headers.get("KMS"):
        params["SSEKMSKeyId"] = key_arn(applied)
    key = headers.get("Key", "uploads/u.jsonl")
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"{}\n", **params)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert reason in refused.value.response["Error"]["Message"]
    # the compliant upload is stored, and a second one to the same key is refused by S3 itself
    s3.put_object(Bucket=BUCKET, Key="uploads/ok.jsonl", Body=b"{}\n", ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=key_arn(applied), IfNoneMatch="*")
    with pytest.raises(ClientError, match="PreconditionFailed"):
        s3.put_object(Bucket=BUCKET, Key="uploads/ok.jsonl", Body=b"{}\n", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId=key_arn(applied), IfNoneMatch="*")


# --- EFS: the mounts the runner makes, as EFS authorises them for an `iam: ENABLED` mount --------------------------

def task_role(stem: str) -> str:
    return names.role_arn(CONFIG, names.task_role(CONFIG, stem))


def file_system_and_access_point(local_aws) -> tuple[str, str]:
    efs = local_aws.client("efs")
    (access_point,) = efs.describe_access_points()["AccessPoints"]
    return access_point["FileSystemId"], access_point["AccessPointId"]


@pytest.mark.parametrize("stem, read_only", [
    ("add-users-copier", False), ("add-users-cleaner", False), ("add-users", True), ("add-users-copier", True)])
def test_the_workflow_task_roles_may_mount_as_their_tasks_do(applied, stem, read_only):
    file_system, access_point = file_system_and_access_point(applied)
    iam_enforcement.authorize_mount(task_role(stem), file_system, access_point, read_only)
    assert iam_enforcement.denials() == []


def test_the_add_users_task_may_not_mount_read_write(applied):
    file_system, access_point = file_system_and_access_point(applied)
    with pytest.raises(iam_enforcement.MountRefused) as refused:
        iam_enforcement.authorize_mount(task_role("add-users"), file_system, access_point, read_only=False)
    message = str(refused.value)
    assert "assumed-role/dmp-local-add-users-task/" in message
    assert "elasticfilesystem:ClientWrite" in message and file_system in message and "read-write" in message
    (denial,) = iam_enforcement.denials()
    assert (denial.source, denial.action) == ("efs", "elasticfilesystem:ClientWrite")


def test_a_role_the_file_system_policy_does_not_name_may_not_mount(applied):
    file_system, access_point = file_system_and_access_point(applied)
    with pytest.raises(iam_enforcement.MountRefused, match="elasticfilesystem:ClientMount"):
        iam_enforcement.authorize_mount(STATES_ROLE, file_system, access_point, read_only=True)


def test_an_explicit_deny_in_the_task_role_wins_over_the_file_system_policy(applied):
    file_system, access_point = file_system_and_access_point(applied)
    applied.client("iam").put_role_policy(
        RoleName=names.task_role(CONFIG, "add-users-copier"), PolicyName="no-other-access-point",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Action": "elasticfilesystem:Client*", "Resource": "*",
            "Condition": {"StringNotEquals": {"elasticfilesystem:AccessPointArn": "arn:aws:elasticfilesystem:"
                                                                               "eu-west-2:123456789012:"
                                                                               "access-point/fsap-other"}}}]}))
    with pytest.raises(iam_enforcement.MountRefused, match="explicit deny in an identity-based policy"):
        iam_enforcement.authorize_mount(task_role("add-users-copier"), file_system, access_point, read_only=True)


def test_an_access_point_of_another_file_system_is_refused(applied):
    file_system, _ = file_system_and_access_point(applied)
    with pytest.raises(iam_enforcement.MountRefused, match="access point fsap-nope does not exist"):
        iam_enforcement.authorize_mount(task_role("add-users"), file_system, "fsap-nope", read_only=True)


# --- the evaluation rules, as pure functions -----------------------------------------------------------------------

ROLE = "arn:aws:iam::123456789012:role/dmp-deploy/r"
SESSION = "arn:aws:sts::123456789012:assumed-role/r/s"


def principal(*statements: dict) -> iam_enforcement.Principal:
    return iam_enforcement.Principal(SESSION, ACCOUNT, (ROLE, SESSION),
                                     [{"Version": "2012-10-17", "Statement": list(statements)}] if statements else [])


def allow(action="s3:GetObject", resource="arn:aws:s3:::b/*", **extra) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


@pytest.mark.parametrize("condition, context, allowed", [
    ({"StringEquals": {"k:a": "x"}}, {"k:a": "x"}, True),
    ({"StringEquals": {"k:a": "x"}}, {}, False),                      # a missing key fails a positive operator
    ({"StringNotEquals": {"k:a": "x"}}, {}, True),                    # ... and satisfies a negated one
    ({"StringNotEquals": {"k:a": ["x", "y"]}}, {"k:a": "y"}, False),
    ({"StringEqualsIfExists": {"k:a": "x"}}, {}, True),
    ({"StringEqualsIfExists": {"k:a": "x"}}, {"k:a": "z"}, False),
    ({"StringLike": {"k:a": "up/*"}}, {"k:a": "up/x"}, True),
    ({"StringLike": {"k:a": "up/?"}}, {"k:a": "up/xy"}, False),
    ({"StringEqualsIgnoreCase": {"k:a": "ABC"}}, {"k:a": "abc"}, True),
    ({"ArnLike": {"k:a": "arn:aws:ecs:*:123456789012:cluster/*"}},
     {"k:a": "arn:aws:ecs:eu-west-2:123456789012:cluster/c"}, True),
    ({"ArnEquals": {"k:a": "arn:aws:ecs:eu-west-2:123456789012:cluster/c"}},
     {"k:a": "arn:aws:ecs:eu-west-2:123456789012:cluster/d"}, False),
    ({"Bool": {"k:a": "true"}}, {"k:a": "true"}, True),
    ({"Bool": {"k:a": "true"}}, {}, False),
    ({"Null": {"k:a": "true"}}, {}, True),
    ({"Null": {"k:a": "false"}}, {}, False),
    ({"NumericLessThanEquals": {"k:a": "10"}}, {"k:a": "3"}, True),
    ({"ForAllValues:StringEquals": {"k:a": ["x", "y"]}}, {"k:a": ["x", "y"]}, True),
    ({"ForAllValues:StringEquals": {"k:a": ["x"]}}, {"k:a": ["x", "y"]}, False),
    ({"ForAnyValue:StringEquals": {"k:a": ["y"]}}, {"k:a": ["x", "y"]}, True),
    ({"StringEquals": {"K:A": "x"}}, {"k:a": "x"}, True),                # condition keys are case-insensitive
    ({"DateLessThan": {"aws:CurrentTime": "2030-01-01"}}, {}, False),  # unknown operator: an Allow fails closed
])
def test_conditions(condition, context, allowed):
    who = principal(allow(Condition=condition))
    if allowed:
        iam_enforcement.authorize(who, "s3:GetObject", "arn:aws:s3:::b/k", context)
    else:
        with pytest.raises(iam_enforcement.AccessDenied):
            iam_enforcement.authorize(who, "s3:GetObject", "arn:aws:s3:::b/k", context)


def test_an_unknown_operator_in_a_deny_applies():
    who = principal(allow(), {"Effect": "Deny", "Action": "s3:*", "Resource": "*",
                              "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2030-01-01"}}})
    with pytest.raises(iam_enforcement.AccessDenied, match="explicit deny in an identity-based policy"):
        iam_enforcement.authorize(who, "s3:GetObject", "arn:aws:s3:::b/k")


@pytest.mark.parametrize("statements, resource_policy, required, outcome", [
    ([allow()], None, False, None),
    ([], None, False, "no identity-based policy allows the s3:GetObject action"),
    ([allow(action="s3:Get*")], None, False, None),                               # action wildcards
    ([allow(action="S3:getobject")], None, False, None),                          # actions ignore case
    ([allow(resource="arn:aws:s3:::B/*")], None, False, "no identity-based policy"),  # resources do not
    ([{"Effect": "Allow", "NotAction": "s3:Delete*", "Resource": "*"}], None, False, None),
    ([allow(), {"Effect": "Deny", "Action": "s3:GetObject", "NotResource": "arn:aws:s3:::b/k"}], None, False, None),
    ([allow()], {"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*"}]}, False,
     "explicit deny in a resource-based policy"),
    # same account: a resource policy naming the role grants alone; naming the account only delegates
    ([], {"Statement": [{"Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "s3:GetObject",
                         "Resource": "*"}]}, False, None),
    ([], {"Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                         "Action": "s3:GetObject", "Resource": "*"}]}, False, "no identity-based policy"),
    # KMS: the key policy must allow, directly or by delegating to the account's IAM policies
    ([allow()], {"Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                                "Action": "s3:*", "Resource": "*"}]}, True, None),
    ([allow()], {"Statement": []}, True, "no resource-based policy allows"),
    ([allow()], None, True, "no resource-based policy allows"),
])
def test_policy_evaluation(statements, resource_policy, required, outcome):
    who = principal(*statements)
    call = lambda: iam_enforcement.authorize(who, "s3:GetObject", "arn:aws:s3:::b/k", {}, resource_policy,  # noqa: E731
                                             required)
    if outcome is None:
        call()
    else:
        with pytest.raises(iam_enforcement.AccessDenied, match=outcome):
            call()


def test_a_task_without_a_role_may_not_mount(applied):
    file_system, access_point = file_system_and_access_point(applied)
    with pytest.raises(iam_enforcement.MountRefused, match="the task has no IAM role"):
        iam_enforcement.authorize_mount("", file_system, access_point, read_only=True)


# --- keys the embedded AWS does not know ----------------------------------------------------------------------------

def _signed_with(local_aws, key: str, token: str | None = None):
    return boto3.session.Session(aws_access_key_id=key, aws_secret_access_key="made-up", aws_session_token=token,
                                 region_name=local_aws.region)


def test_a_made_up_key_is_refused_as_aws_refuses_it(applied):
    session = _signed_with(applied, "AKIAMADEUPKEY0000000")
    with pytest.raises(ClientError) as refused:
        client(applied, session, "sts").get_caller_identity()
    assert refused.value.response["Error"]["Code"] == "InvalidClientTokenId"
    assert "security token included in the request is invalid" in refused.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as refused:
        client(applied, session, "ssm").get_parameters_by_path(Path="/")
    assert refused.value.response["Error"]["Code"] == "UnrecognizedClientException"
    with pytest.raises(ClientError) as refused:
        client(applied, session, "s3").list_objects_v2(Bucket=BUCKET)
    assert refused.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_the_key_of_a_session_the_embedded_aws_no_longer_has_is_refused(applied):
    session = assume(applied, COPIER_ROLE)
    client(applied, session, "sts").get_caller_identity()  # valid while the session lives
    snapshots.load(APPLIED)  # a restore (like a reset) drops every STS session
    with pytest.raises(ClientError) as refused:
        client(applied, session, "sts").get_caller_identity()
    assert refused.value.response["Error"]["Code"] == "InvalidClientTokenId"


def test_an_expired_session_is_refused(applied, monkeypatch):
    from datetime import datetime, timedelta, timezone

    from moto.sts.models import sts_backends

    session = assume(applied, COPIER_ROLE)
    key = session.get_credentials().access_key
    stored = sts_backends[ACCOUNT]["aws"].get_assumed_role_from_access_key(key)
    monkeypatch.setattr(stored, "expiration", datetime.now(timezone.utc) - timedelta(seconds=1))
    with pytest.raises(ClientError, match="expired"):
        client(applied, session, "ssm").get_parameters_by_path(Path="/")


def test_an_inactive_user_key_is_refused(applied):
    iam = applied.client("iam")
    iam.create_user(UserName="someone")
    created = iam.create_access_key(UserName="someone")["AccessKey"]
    user = _signed_with(applied, created["AccessKeyId"])
    assert client(applied, user, "sts").get_caller_identity()["Arn"].endswith(":user/someone")
    iam.update_access_key(UserName="someone", AccessKeyId=created["AccessKeyId"], Status="Inactive")
    with pytest.raises(ClientError, match="InvalidClientTokenId"):
        client(applied, user, "sts").get_caller_identity()


# --- trust policies: a service assumes a role only if the role trusts it --------------------------------------------

def _trusting(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                               "Principal": {"Service": service}}]})


def test_a_machine_role_that_does_not_trust_step_functions_fails_the_task_state(applied, quick_retries):
    applied.client("iam").update_assume_role_policy(RoleName=STATES_ROLE.rsplit("/", 1)[1],
                                                    PolicyDocument=_trusting("ecs.amazonaws.com"))
    tasks_before = applied.client("ecs").list_tasks(cluster=CONFIG.prefix)["taskArns"]
    upload(applied)
    execution = finished_execution(applied)
    assert execution["status"] == "FAILED"
    (state, error, cause), *_ = failed_tasks(applied, execution["executionArn"])
    assert state == "CopyToEfs"
    assert STATES_ROLE in cause and "sts:AssumeRole" in cause and "states.amazonaws.com" in cause
    assert applied.client("ecs").list_tasks(cluster=CONFIG.prefix)["taskArns"] == tasks_before  # nothing ran
    assert any(d.action == "sts:AssumeRole" and d.resource == STATES_ROLE for d in iam_enforcement.denials())


def test_check_task_role_trust_wants_ecs_tasks(applied):
    iam_enforcement.check_task_role_trust(COPIER_ROLE)  # the deployed role trusts ecs-tasks.amazonaws.com
    applied.client("iam").update_assume_role_policy(RoleName=COPIER_ROLE.rsplit("/", 1)[1],
                                                    PolicyDocument=_trusting("ecs.amazonaws.com"))
    with pytest.raises(iam_enforcement.AccessDenied, match="ecs-tasks.amazonaws.com to assume it"):
        iam_enforcement.check_task_role_trust(COPIER_ROLE)


# --- evaluation details: wildcards, NotPrincipal, unmodelled resources, unknown operators --------------------------

def test_wildcards_match_newlines_in_resources_and_string_like():
    iam_enforcement.authorize(principal(allow()), "s3:GetObject", "arn:aws:s3:::b/line\nbreak")
    who = principal(allow(Condition={"StringLike": {"s3:prefix": "up/*"}}))
    iam_enforcement.authorize(who, "s3:GetObject", "arn:aws:s3:::b/k", {"s3:prefix": "up/a\nb"})


def _deny_all_but(*listed: str) -> dict:
    return {"Statement": [{"Effect": "Deny", "NotPrincipal": {"AWS": list(listed)}, "Action": "s3:*",
                           "Resource": "*"}]}


@pytest.mark.parametrize("listed, denied", [
    (("arn:aws:iam::123456789012:role/dmp-deploy/other",), True),         # someone else is exempt: we are denied
    ((ROLE,), True),                                                       # the role alone does not exempt a session
    ((ROLE, SESSION, f"arn:aws:iam::{ACCOUNT}:root"), False),              # session, role and account: exempt
    ((ROLE, SESSION), True),                                               # ... and the account is needed too
])
def test_not_principal_in_a_deny_applies_to_everyone_it_does_not_list(listed, denied):
    call = lambda: iam_enforcement.authorize(principal(allow()), "s3:GetObject", "arn:aws:s3:::b/k", {},  # noqa: E731
                                             _deny_all_but(*listed))
    if denied:
        with pytest.raises(iam_enforcement.AccessDenied, match="explicit deny in a resource-based policy"):
            call()
    else:
        call()


def test_not_principal_in_an_allow_grants_everyone_it_does_not_list():
    policy = {"Statement": [{"Effect": "Allow", "NotPrincipal": {"AWS": "arn:aws:iam::123456789012:user/x"},
                             "Action": "s3:GetObject", "Resource": "*"}]}
    iam_enforcement.authorize(principal(), "s3:GetObject", "arn:aws:s3:::b/k", {}, policy)


@pytest.mark.parametrize("statements, denied", [
    ([allow(action="logs:*", resource="arn:aws:logs:*:*:log-group:/mine:*")], True),  # may not cover it: refused
    ([allow(action="logs:*", resource="*")], False),                                  # covers any resource
    ([allow(action="logs:*", resource="*"), {"Effect": "Deny", "Action": "logs:*",
                                             "Resource": "arn:aws:logs:*:*:log-group:/other:*"}], True),
    ([{"Effect": "Allow", "Action": "logs:*", "NotResource": "arn:aws:logs:*:*:log-group:/other:*"}], True),
])
def test_an_unmodelled_resource_fails_closed(statements, denied):
    call = lambda: iam_enforcement.authorize(principal(*statements), "logs:DescribeDestinations", None)  # noqa: E731
    if denied:
        with pytest.raises(iam_enforcement.AccessDenied):
            call()
    else:
        call()


def test_a_deny_with_an_unknown_operator_does_not_apply_when_a_known_condition_is_false():
    who = principal(allow(), {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {
        "DateGreaterThan": {"aws:CurrentTime": "2030-01-01"}, "StringEquals": {"s3:prefix": "secret/"}}})
    iam_enforcement.authorize(who, "s3:GetObject", "arn:aws:s3:::b/k", {"s3:prefix": "public/"})
    with pytest.raises(iam_enforcement.AccessDenied, match="explicit deny"):
        iam_enforcement.authorize(who, "s3:GetObject", "arn:aws:s3:::b/k", {"s3:prefix": "secret/"})


def test_a_mount_without_an_access_point_is_allowed_without_a_file_system_policy(applied):
    file_system, _ = file_system_and_access_point(applied)
    applied.client("efs").delete_file_system_policy(FileSystemId=file_system)
    iam_enforcement.authorize_mount(COPIER_ROLE, file_system, None, read_only=False)
