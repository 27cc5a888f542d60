"""The local task runner hands a task its role's credentials only, and only when the role trusts ECS tasks
(dmp_deploy/local/task_runner.py with iam_enforcement.check_task_role_trust)."""

from __future__ import annotations

import json

import test_local_task_runner as runner_tests
from test_local_task_runner import ACCOUNT, exit_code

probe = runner_tests.probe  # the probe task fixture: a cluster, a task role, an EFS access point, run()


def test_a_definitions_aws_keys_do_not_replace_the_task_roles(probe):
    task = probe["run"]("aws sts get-caller-identity --query Arn --output text",
                        environment=[("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local"),
                                     ("AWS_SESSION_TOKEN", "")])
    assert exit_code(task) == 0, probe["output"](task)
    task_id = task["taskArn"].rsplit("/", 1)[1]
    assert probe["output"](task) == [f"arn:aws:sts::{ACCOUNT}:assumed-role/probe-task/{task_id}"]


def test_a_task_role_that_does_not_trust_ecs_tasks_fails_the_task_to_start(probe, local_aws):
    local_aws.client("iam").update_assume_role_policy(RoleName="probe-task", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "ecs.amazonaws.com"}}]}))
    task = probe["run"]("echo ran")
    assert task["stopCode"] == "TaskFailedToStart"
    assert f"ECS was unable to assume the role '{probe['role']}'" in task["stoppedReason"]
    assert exit_code(task) is None  # nothing ran


def test_a_volume_without_iam_authorisation_is_mounted_without_asking_iam(probe, local_aws, monkeypatch):
    """EFS judges a mount by IAM only with `authorizationConfig.iam = ENABLED`: a file system policy that denies
    the role everything does not stop a mount that does not use IAM (and does stop one that does)."""
    efs = local_aws.client("efs")
    (file_system,) = [f for f in efs.describe_file_systems()["FileSystems"] if f["CreationToken"] == "probe"]
    efs.put_file_system_policy(FileSystemId=file_system["FileSystemId"], Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Principal": {"AWS": probe["role"]}, "Action": "elasticfilesystem:*",
            "Resource": file_system["FileSystemArn"]}]}))
    assert probe["run"]("echo ran")["stopCode"] == "TaskFailedToStart"
    register = probe["ecs"].register_task_definition

    def without_iam(**definition):
        for volume in definition["volumes"]:
            volume["efsVolumeConfiguration"]["authorizationConfig"].pop("iam")
        return register(**definition)

    monkeypatch.setattr(probe["ecs"], "register_task_definition", without_iam)
    task = probe["run"]("echo ran")
    assert exit_code(task) == 0, (task.get("stoppedReason"), probe["output"](task))
