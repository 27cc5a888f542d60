"""Who may do what in the add-users workflow: the rendered IAM documents, asserted exactly, then as deployed."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dmp_deploy import canonical, desired
from dmp_deploy.config import load_config
from dmp_deploy.resources import add_users_access, all_kinds

ACCOUNT = "123456789012"
REGION = "eu-west-2"
BUCKET = "dmp-local-add-users-123456789012"
KEY = "<arn of kms_key alias/dmp-local-add-users>"  # the owned key, resolved by iam_roles when a policy is put
ROLE = f"arn:aws:iam::{ACCOUNT}:role/dmp-deploy/"
MACHINE_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:dmp-local-add-users"


def local(**add_users):
    config = load_config("local")
    return dataclasses.replace(config, add_users=dataclasses.replace(config.add_users, **add_users))


def statements(document: dict) -> dict[str, dict]:
    return {s["Sid"]: {k: v for k, v in s.items() if k != "Sid"} for s in canonical.policy(document)["Statement"]}


def test_the_step_functions_role_runs_passes_and_deletes_exactly_the_workflows_things():
    assert statements(add_users_access.states_policy(local())) == {
        "RunTheWorkflowTasks": {
            "Effect": "Allow", "Action": "ecs:RunTask",
            "Resource": [f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/dmp-local-add-users-cleaner:*",
                         f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/dmp-local-add-users-copier:*",
                         f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/dmp-local-add-users:*"],
            "Condition": {"ArnEquals": {"ecs:cluster": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/dmp-local"}}},
        "FollowAndStopTheTasks": {
            "Effect": "Allow", "Action": ["ecs:DescribeTasks", "ecs:StopTask"],
            "Resource": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/dmp-local/*"},
        "PassTheTaskRoles": {
            "Effect": "Allow", "Action": "iam:PassRole",
            "Resource": [ROLE + "dmp-local-add-users-cleaner-task", ROLE + "dmp-local-add-users-copier-task",
                         ROLE + "dmp-local-add-users-task", ROLE + "dmp-local-ecs-execution"],
            "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}},
        "WaitForTheTasks": {
            "Effect": "Allow", "Action": ["events:DescribeRule", "events:PutRule", "events:PutTargets"],
            "Resource": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/StepFunctionsGetEventsForECSTaskRule"},
        "DeleteTheUpload": {
            "Effect": "Allow", "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
            "Resource": f"arn:aws:s3:::{BUCKET}/uploads/*"},
        "DeliverExecutionLogs": {
            "Effect": "Allow", "Resource": "*",
            "Action": ["logs:CreateLogDelivery", "logs:DeleteLogDelivery", "logs:DescribeLogGroups",
                       "logs:DescribeResourcePolicies", "logs:GetLogDelivery", "logs:ListLogDeliveries",
                       "logs:PutResourcePolicy", "logs:UpdateLogDelivery"]},
    }


def test_the_trigger_role_starts_only_the_live_alias():
    # Authorised against the unqualified machine ARN, scoped to the alias by its qualifier (an alias ARN as the
    # Resource would match nothing: Step Functions' "Authorization for versions and aliases").
    assert statements(add_users_access.trigger_policy(local())) == {
        "StartTheLiveWorkflow": {"Effect": "Allow", "Action": "states:StartExecution", "Resource": MACHINE_ARN,
                                 "Condition": {"StringEquals": {"states:StateMachineQualifier": "live"}}}}


def test_the_copier_reads_uploads_and_decrypts_them_through_s3_only():
    assert statements(add_users_access.copier_policy(local())) == {
        "ReadTheUploads": {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/uploads/*"},
        "DecryptTheUploads": {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": KEY,
                              "Condition": {"StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}}},
    }


UPLOAD_ONLY = {
    "UploadUserListsEncryptedWithTheBucketKey": {
        "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{BUCKET}/uploads/*",
        "Condition": {"StringEquals": {"s3:x-amz-server-side-encryption": "aws:kms",
                                       "s3:x-amz-server-side-encryption-aws-kms-key-id": KEY}}},
    "EncryptThroughS3WithTheBucketKey": {
        "Effect": "Allow", "Action": "kms:GenerateDataKey", "Resource": KEY,
        "Condition": {"StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}}},
    "FindTheBucketKey": {"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": KEY},
}
FOLLOW = {
    "FollowWorkflowRunsList": {"Effect": "Allow", "Action": "states:ListExecutions", "Resource": MACHINE_ARN},
    "FollowWorkflowRunsRead": {
        "Effect": "Allow", "Action": ["states:DescribeExecution", "states:GetExecutionHistory"],
        "Resource": f"arn:aws:states:{REGION}:{ACCOUNT}:execution:dmp-local-add-users:*"},
}


@pytest.mark.parametrize("follows, expected", [(True, {**UPLOAD_ONLY, **FOLLOW}), (False, UPLOAD_ONLY)])
def test_the_operative_may_only_upload_encrypted_and_follow_the_run(follows, expected):
    document = statements(add_users_access.operative_policy(local(operative_follows_executions=follows)))
    assert document == expected
    actions = {a for s in document.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert not {a for a in actions if a.startswith("s3:") and a != "s3:PutObject"}  # no read, list or delete
    assert all(s["Effect"] == "Allow" and "*" not in json.dumps(s["Action"]) for s in document.values())


def test_a_configured_bucket_key_is_named_by_its_arn():
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-4000-8000-000000000001"
    document = statements(add_users_access.operative_policy(local(kms_key_arn=key)))
    assert document["FindTheBucketKey"]["Resource"] == key
    assert document["UploadUserListsEncryptedWithTheBucketKey"]["Condition"]["StringEquals"][
        "s3:x-amz-server-side-encryption-aws-kms-key-id"] == key


@pytest.mark.parametrize("mfa, condition", [(True, {"Bool": {"aws:MultiFactorAuthPresent": "true"}}), (False, None)])
def test_the_operative_role_is_trusted_by_the_account_root(mfa, condition):
    (statement,) = add_users_access.operative_trust(local(operative_requires_mfa=mfa))["Statement"]
    assert statement["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    assert statement["Action"] == "sts:AssumeRole"
    assert statement.get("Condition") == condition


def test_the_roles_are_declared_with_the_workflow():
    state = desired.build(load_config("local"), all_kinds())
    roles = state.resources["iam_role"]
    assert roles["dmp-local-add-users-states"]["trust_policy"]["Statement"][0]["Principal"] == {
        "Service": "states.amazonaws.com"}
    assert roles["dmp-local-add-users-trigger"]["trust_policy"]["Statement"][0]["Principal"] == {
        "Service": "events.amazonaws.com"}
    assert roles["dmp-local-add-users-operative"]["inline_policies"] == {
        "add-users-workflow": canonical.policy(add_users_access.operative_policy(load_config("local")))}
    copier = roles["dmp-local-add-users-copier-task"]["inline_policies"]
    assert set(copier) == {"add-users-workflow"}
    assert roles["dmp-local-add-users-task"]["inline_policies"] == {}  # EFS only, through the file system policy
    assert roles["dmp-local-add-users-cleaner-task"]["inline_policies"] == {}


def test_deployed_policies_name_the_real_key_and_read_back_unchanged(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    iam = local_aws.client("iam")
    key = local_aws.client("kms").describe_key(KeyId="alias/dmp-local-add-users")["KeyMetadata"]["Arn"]
    document = iam.get_role_policy(RoleName="dmp-local-add-users-operative", PolicyName="add-users-workflow")
    operative = statements(document["PolicyDocument"])
    assert operative["FindTheBucketKey"]["Resource"] == key
    assert operative["UploadUserListsEncryptedWithTheBucketKey"]["Condition"]["StringEquals"][
        "s3:x-amz-server-side-encryption-aws-kms-key-id"] == key
    copier = iam.get_role_policy(RoleName="dmp-local-add-users-copier-task", PolicyName="add-users-workflow")
    assert statements(copier["PolicyDocument"])["DecryptTheUploads"]["Resource"] == key
    assert run_cli("plan", "--env", "local").code == 0  # the key's ARN reads back as the placeholder

    iam.put_role_policy(RoleName="dmp-local-add-users-operative", PolicyName="add-users-workflow",
                        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    (change,) = plan.json["changes"]
    assert (change["kind"], change["name"]) == ("iam_role", "dmp-local-add-users-operative")
    assert [f["path"] for f in change["fields"]] == ["inline_policies.add-users-workflow"]
    assert run_cli("apply", "--env", "local").code == 0
    assert run_cli("plan", "--env", "local").code == 0


def _config_dir(tmp_path, monkeypatch, **add_users):
    """A copy of config/ with [add_users] keys set, made the CLI's config directory."""
    import shutil

    from dmp_deploy import config as config_module

    directory = tmp_path / "config"
    shutil.copytree(config_module.CONFIG_DIR, directory)
    path = directory / "local.toml"
    lines = path.read_text().split("\n")
    for key, value in add_users.items():
        lines = [line for line in lines if not line.startswith(f"{key} = ")]
        lines.insert(lines.index("[add_users]") + 1, f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines))
    monkeypatch.setattr(config_module, "CONFIG_DIR", directory)


def test_group_policy_mode_deploys_a_managed_policy_instead_of_the_role(local_aws, run_cli, tmp_path, monkeypatch):
    assert run_cli("apply", "--env", "local").code == 0
    _config_dir(tmp_path, monkeypatch, operative_access="group_policy")
    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    assert sorted((c["kind"], c["name"], c["action"]) for c in plan.json["changes"]) == [
        ("iam_policy", "dmp-local-add-users-operative", "create"),
        ("iam_role", "dmp-local-add-users-operative", "delete")]
    assert run_cli("apply", "--env", "local").code == 0

    iam = local_aws.client("iam")
    (policy,) = [p for p in iam.list_policies(Scope="Local")["Policies"]
                 if p["PolicyName"] == "dmp-local-add-users-operative"]
    key = local_aws.client("kms").describe_key(KeyId="alias/dmp-local-add-users")["KeyMetadata"]["Arn"]
    document = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"])
    expected = json.loads(json.dumps(add_users_access.operative_policy(load_config("local"))).replace(KEY, key))
    assert canonical.policy(document["PolicyVersion"]["Document"]) == canonical.policy(expected)
    assert "dmp-local-add-users-operative" not in [r["RoleName"] for r in iam.list_roles()["Roles"]]
    assert run_cli("plan", "--env", "local").code == 0

    # A changed document becomes the new default version; an operatives group keeps it attached.
    iam.create_group(GroupName="operatives")
    iam.attach_group_policy(GroupName="operatives", PolicyArn=policy["Arn"])
    _config_dir(tmp_path / "second", monkeypatch, operative_access="group_policy",
                operative_follows_executions=False)
    assert run_cli("apply", "--env", "local").code == 0
    default = iam.get_policy(PolicyArn=policy["Arn"])["Policy"]["DefaultVersionId"]
    sids = {s["Sid"] for s in iam.get_policy_version(PolicyArn=policy["Arn"], VersionId=default)[
        "PolicyVersion"]["Document"]["Statement"]}
    assert sids == set(UPLOAD_ONLY)
    assert run_cli("plan", "--env", "local").code == 0
