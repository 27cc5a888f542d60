"""The local task runner (dmp_deploy/local/task_runner.py, wired by moto_compat.ecs_runs_the_containers_commands):
the embedded ECS runs a runnable task's containers as local processes.

First, each piece on a small probe task (an AWS CLI image container running `sh -c ...`): environment, overrides
and secrets; the task role's credentials; the access point's directory, owner, mode and POSIX user; read-only
mounts; RUNNING until the process ends, its exit code, StopTask; tasks that cannot start; scripted families.
Then the add-users workflow end to end with its real programs (the copier's `aws s3api`, the add-users program
with the api client library against the local Data API, the cleaner's `rm`/`find`), on one applied stack per
module (a snapshot of the embedded AWS, restored for each test).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import string
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import data_api
from test_add_users_workflow import everything_the_workflow_wrote as everything_written
from dmp_deploy import users_file as users_file_module
from dmp_deploy.local import moto_compat, task_runner
from dmp_deploy.local.seed import DUMMY_SECRET_PREFIX

AS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not AS_ROOT,
                               reason="uids and read-only mounts are enforced when the server runs as root")


def require_mount_namespace() -> None:
    """Skips a test of what only the runner's strong mode enforces (read-only mounts, confine()) where the machine
    refuses it (no CAP_SYS_ADMIN, AppArmor, no util-linux): the runner then falls back, tested below."""
    runner = task_runner.settings()
    failure = (None if runner is not None and runner.confinement == task_runner.NAMESPACE
               else task_runner.probe_confinement(Path(tempfile.gettempdir()), Path(sys.executable).parent))
    if failure is not None:
        pytest.skip(f"no private mount namespace here (needs unshare, setpriv and CAP_SYS_ADMIN): {failure}")


def require_reachable_tools() -> None:
    """Skips a test whose tasks run the tool's aws or python where the runner's fallback mode cannot let the tasks'
    users reach them (no mount namespace, and a Python below /root)."""
    runner = task_runner.settings()
    closed = task_runner.unreachable_tools(runner) if runner is not None else None
    if closed is not None:
        pytest.skip(f"the tasks' users cannot reach the tool's Python below {closed} without a mount namespace")


AWS_CLI = "public.ecr.aws/aws-cli/aws-cli:2.22.0"  # runnable in config/local.toml: sh and aws
ACCOUNT = "123456789012"


# --- the pieces, unit by unit ------------------------------------------------------------------------------


def test_image_repository_drops_the_tag_or_digest_only():
    assert task_runner.image_repository("public.ecr.aws/aws-cli/aws-cli:2.22.0") == "public.ecr.aws/aws-cli/aws-cli"
    assert task_runner.image_repository("registry:5000/api-wsgi:t2") == "registry:5000/api-wsgi"
    assert task_runner.image_repository("busybox@sha256:abc") == "busybox"
    assert task_runner.image_repository("busybox") == "busybox"


def test_container_paths_are_rewritten_as_whole_paths_only():
    mounts = {"/mnt/add-users": "/tmp/r/efs/fs-1/add-users"}
    rewritten = task_runner.rewrite_paths(
        'cp x "/mnt/add-users/$F"; find /mnt/add-users -type f; ls /mnt/add-users-old /mnt/add-users.bak '
        "/x/mnt/add-users", mounts)
    assert rewritten == ('cp x "/tmp/r/efs/fs-1/add-users/$F"; find /tmp/r/efs/fs-1/add-users -type f; '
                         "ls /mnt/add-users-old /mnt/add-users.bak /x/mnt/add-users")


def test_only_containers_whose_image_and_program_are_listed_are_runnable(moto_server):
    api = "123456789012.dkr.ecr.eu-west-2.amazonaws.com/api-wsgi:local"
    assert task_runner.runnable([{"image": AWS_CLI, "entryPoint": ["sh", "-c"], "command": ["true"]}])
    assert task_runner.runnable([{"image": api, "entryPoint": ["python", "-c"], "command": ["pass"]}])
    assert not task_runner.runnable([{"image": api, "command": ["flask", "db", "upgrade"]}])  # db-migration
    assert not task_runner.runnable([{"image": "busybox", "entryPoint": ["sh"]}])
    assert not task_runner.runnable([{"image": AWS_CLI}])  # the image's own entry point: unknown here
    assert not task_runner.runnable([{"image": AWS_CLI, "entryPoint": ["sh"]}, {"image": "busybox", "command": ["sh"]}])


@root_only
def test_confined_processes_reach_tools_below_closed_directories_and_nothing_else(tmp_path):
    """The tool's Python may live below a directory only root may enter (pyenv under /root, 0700): confine()
    covers such a directory, in the process's own mount namespace, with just the paths the user needs."""
    import subprocess

    require_mount_namespace()
    closed = tmp_path / "closed"
    tool = closed / "inner" / "tool"
    tool.mkdir(parents=True)
    (closed / "inner" / "secret.txt").write_text("root only")
    program = tool / "run-me"
    program.write_text("#!/bin/sh\necho \"ran as $(id -u):$(id -g)\"\n")
    program.chmod(0o755)
    tool.chmod(0o755)
    for directory in (closed, closed / "inner", tmp_path):
        directory.chmod(0o700)
    scratch = Path(tempfile.mkdtemp())  # reachable, as the runner's own directory is
    read_only = Path(tempfile.mkdtemp())
    read_only.chmod(0o777)
    try:
        argv = task_runner.confine(
            ["/bin/sh", "-c", f'{program}; cat {closed}/inner/secret.txt; touch {read_only}/x; echo "touch: $?"'],
            [str(read_only)], (1001, 1002), [tool], scratch)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    finally:
        shutil.rmtree(scratch)
        shutil.rmtree(read_only)
    assert result.stdout.splitlines() == ["ran as 1001:1002", "touch: 1"], result.stderr
    assert "No such file or directory" in result.stderr  # the rest of the closed directory is not there
    assert "Read-only file system" in result.stderr
    assert oct(closed.stat().st_mode & 0o777) == "0o700" and (closed / "inner" / "secret.txt").exists()


# --- a probe task ------------------------------------------------------------------------------------------


@pytest.fixture
def probe(local_aws):
    """A cluster, a log group, an EFS file system with an access point (/probe, uid 1001, mode 0750), a task
    role, a secret, and `run(command, ...)`: registers a probe task definition and runs it."""
    ecs, efs, ec2 = (local_aws.client(s) for s in ("ecs", "efs", "ec2"))
    ecs.create_cluster(clusterName="probe")
    local_aws.client("logs").create_log_group(logGroupName="/probe")
    role = local_aws.client("iam").create_role(RoleName="probe-task", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]}))["Role"]["Arn"]
    local_aws.client("ssm").put_parameter(Name="/probe/token", Value="probe-token-0123456789", Type="SecureString")
    file_system = efs.create_file_system(CreationToken="probe")["FileSystemId"]
    access_point = efs.create_access_point(
        FileSystemId=file_system, PosixUser={"Uid": 1001, "Gid": 1002},
        RootDirectory={"Path": "/probe", "CreationInfo": {"OwnerUid": 1001, "OwnerGid": 1002, "Permissions": "0750"}},
    )["AccessPointId"]
    subnet = ec2.describe_subnets()["Subnets"][0]
    group = ec2.create_security_group(GroupName="probe", Description="probe", VpcId=subnet["VpcId"])["GroupId"]

    def run(command: str, read_only: bool = False, family: str = "probe", log_group: str = "/probe",
            environment=(), overrides=None, secrets=True, wait: bool = True, mount: bool = True) -> dict:
        container = {
            "name": "probe", "image": AWS_CLI, "memory": 512, "essential": True, "entryPoint": ["sh", "-c"],
            "command": [command],
            "environment": [{"name": k, "value": v} for k, v in environment],
            "mountPoints": [{"sourceVolume": "data", "containerPath": "/mnt/probe", "readOnly": read_only}] if mount
            else [],
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": log_group, "awslogs-region": local_aws.region, "awslogs-stream-prefix": "p"}}}
        if secrets:
            container["secrets"] = [{"name": "TOKEN",
                                     "valueFrom": f"arn:aws:ssm:{local_aws.region}:{ACCOUNT}:parameter/probe/token"}]
        ecs.register_task_definition(
            family=family, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
            taskRoleArn=role, containerDefinitions=[container],
            volumes=[{"name": "data", "efsVolumeConfiguration": {
                "fileSystemId": file_system, "transitEncryption": "ENABLED",
                "authorizationConfig": {"accessPointId": access_point, "iam": "ENABLED"}}}] if mount else [])

        task = ecs.run_task(cluster="probe", taskDefinition=family, launchType="FARGATE",
                            overrides=overrides or {},
                            networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet["SubnetId"]],
                                                                      "securityGroups": [group]}})["tasks"][0]
        return stopped(task["taskArn"]) if wait else task

    def stopped(task_arn: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            (task,) = ecs.describe_tasks(cluster="probe", tasks=[task_arn])["tasks"]
            if task["lastStatus"] == "STOPPED":
                return task
            assert time.monotonic() < deadline, f"the task did not stop: {task}"
            time.sleep(0.1)

    def output(task: dict, group: str = "/probe") -> list[str]:
        stream = f"p/probe/{task['taskArn'].rsplit('/', 1)[1]}"
        events = local_aws.client("logs").get_log_events(logGroupName=group, logStreamName=stream)["events"]
        return [e["message"] for e in events]

    local = task_runner.settings().efs_root / file_system / "probe"
    return {"run": run, "stopped": stopped, "output": output, "role": role, "local": local, "ecs": ecs}


def exit_code(task: dict) -> int | None:
    (container,) = task["containers"]
    return container.get("exitCode")


def test_a_task_runs_with_its_environment_overrides_and_secrets_and_logs_its_output(probe, local_aws):
    task = probe["run"]('echo "A=$A B=$B"; echo "token: ${#TOKEN} characters"; echo to stderr >&2; exit 3',
                        environment=[("A", "defined"), ("B", "defined")],
                        overrides={"containerOverrides": [{"name": "probe", "environment": [
                            {"name": "B", "value": "overridden"}]}]})
    assert exit_code(task) == 3  # the process's own exit code
    assert (task["stopCode"], task["stoppedReason"]) == ("EssentialContainerExited",
                                                        "Essential container in task exited")
    output = probe["output"](task)  # the stream ECS names <prefix>/<container>/<task id>
    assert "A=defined B=overridden" in output and "to stderr" in output
    assert "token: 22 characters" in output  # the secret's value reached the process...
    text = json.dumps(task, default=str) + "\n".join(output)
    assert "probe-token-0123456789" not in text  # ...and nowhere else


def test_the_aws_cli_calls_the_embedded_aws_as_the_task_role(probe):
    require_reachable_tools()
    task = probe["run"]("aws sts get-caller-identity --query Arn --output text")
    assert exit_code(task) == 0, probe["output"](task)
    task_id = task["taskArn"].rsplit("/", 1)[1]
    assert probe["output"](task) == [f"arn:aws:sts::{ACCOUNT}:assumed-role/probe-task/{task_id}"]


@root_only
def test_the_access_point_is_a_local_directory_with_its_owner_and_mode_used_as_its_posix_user(probe):
    task = probe["run"]('id -u; id -g; echo hello > /mnt/probe/f; cat /mnt/probe/f; echo "$HOME"')
    assert exit_code(task) == 0, probe["output"](task)
    uid, gid, hello, home = probe["output"](task)
    assert (uid, gid, hello) == ("1001", "1002", "hello")
    local = probe["local"]
    stat = local.stat()
    assert (stat.st_uid, stat.st_gid, oct(stat.st_mode & 0o777)) == (1001, 1002, "0o750")  # its CreationInfo
    assert (local / "f").read_text() == "hello\n" and (local / "f").stat().st_uid == 1001
    assert not os.path.exists(home)  # the task's HOME went with it


@root_only
def test_a_read_only_mount_refuses_a_write(probe):
    require_mount_namespace()
    assert exit_code(probe["run"]("echo kept > /mnt/probe/f")) == 0
    task = probe["run"]('cat /mnt/probe/f; echo more > /mnt/probe/f; echo "write: $?"; rm /mnt/probe/f; '
                        'echo "rm: $?"; touch /mnt/probe/new', read_only=True)
    output = "\n".join(probe["output"](task))
    assert exit_code(task) == 1, output  # touch's
    assert "kept" in output and "Read-only file system" in output
    assert "write: 2" in output and "rm: 1" in output
    assert (probe["local"] / "f").read_text() == "kept\n" and not (probe["local"] / "new").exists()


def test_the_task_runs_until_its_process_ends(probe):
    started = time.monotonic()
    task = probe["run"]("sleep 2.5; exit 7", wait=False)
    time.sleep(1.8)  # longer than the emulated lifecycle's four 0.25 s steps
    (running,) = probe["ecs"].describe_tasks(cluster="probe", tasks=[task["taskArn"]])["tasks"]
    assert running["lastStatus"] == "RUNNING" and "exitCode" not in running["containers"][0]
    stopped = probe["stopped"](task["taskArn"])
    assert exit_code(stopped) == 7 and time.monotonic() - started >= 2.5


def test_a_non_zero_exit_fails_the_run_task_sync_step(probe, local_aws):
    probe["run"]("true")  # registers the probe family
    (subnet,) = {a["details"][0]["value"] for t in [probe["run"]("true")] for a in t["attachments"]
                 if a["details"][0]["name"] == "subnetId"}
    group = local_aws.client("ec2").describe_security_groups(GroupNames=["probe"])["SecurityGroups"][0]["GroupId"]
    sfn = local_aws.client("stepfunctions")
    state = {"Type": "Task", "Resource": "arn:aws:states:::ecs:runTask.sync", "End": True, "Parameters": {
        "Cluster": "probe", "TaskDefinition": "probe", "LaunchType": "FARGATE",
        "NetworkConfiguration": {"AwsvpcConfiguration": {"Subnets": [subnet], "SecurityGroups": [group]}},
        "Overrides": {"ContainerOverrides": [{"Name": "probe", "Command": ["sleep 1; exit 4"]}]}}}
    machine = sfn.create_state_machine(name="probe", roleArn=f"arn:aws:iam::{ACCOUNT}:role/probe-states",
                                       definition=json.dumps({"StartAt": "Run", "States": {"Run": state}}))
    execution = sfn.start_execution(stateMachineArn=machine["stateMachineArn"])["executionArn"]
    deadline = time.monotonic() + 60
    while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.25)
    assert (described["status"], described["error"]) == ("FAILED", "States.TaskFailed")
    assert json.loads(described["cause"])["Containers"][0]["ExitCode"] == 4  # the process's, from the override


def test_stop_task_stops_the_process(probe):
    task = probe["run"]("echo started; sleep 60", wait=False)
    time.sleep(1)
    probe["ecs"].stop_task(cluster="probe", task=task["taskArn"], reason="enough")
    stopped = probe["stopped"](task["taskArn"], timeout=20)
    assert exit_code(stopped) == 143  # SIGTERM, as Docker reports it
    assert stopped["stopCode"] == "UserInitiated"


def test_a_task_that_cannot_start_fails_to_start_running_nothing(probe, monkeypatch):
    missing_group = probe["run"]("echo ran", log_group="/probe/missing")
    assert missing_group["stopCode"] == "TaskFailedToStart"
    assert "The specified log group does not exist: /probe/missing" in missing_group["stoppedReason"]
    assert exit_code(missing_group) is None

    def refuse(task_role_arn, file_system_id, access_point_id, read_only):
        raise task_runner.MountRefused(f"{task_role_arn} may not elasticfilesystem:ClientWrite {access_point_id}")

    monkeypatch.setattr(task_runner, "authorize_mount", refuse)  # the seam the IAM enforcement plugs into
    refused = probe["run"]("echo ran > /mnt/probe/ran")
    assert refused["stopCode"] == "TaskFailedToStart"
    assert f"{probe['role']} may not elasticfilesystem:ClientWrite" in refused["stoppedReason"]
    assert not (probe["local"] / "ran").exists()


def test_a_family_with_a_scripted_outcome_is_not_run(probe, local_aws):
    moto_compat.script_task_outcome("probe", 5)
    task = probe["run"]("echo ran")
    assert exit_code(task) == 5
    assert local_aws.client("logs").describe_log_streams(logGroupName="/probe")["logStreams"] == []


# --- the add-users workflow with its real programs -------------------------------------------------------------

BUCKET = "dmp-local-add-users-123456789012"
MACHINE_ARN = f"arn:aws:states:eu-west-2:{ACCOUNT}:stateMachine:dmp-local-add-users"
APPLIED = "task-runner-applied"
_applied = []


@pytest.fixture
def stack(local_aws, run_cli):
    """`apply --env local`, once per module: later tests restore the embedded AWS as it was just after it."""
    require_reachable_tools()
    if _applied:
        local_aws.restore(APPLIED)
    else:
        applied = run_cli("apply", "--env", "local")
        assert applied.code == 0, applied.stdout + applied.stderr
        local_aws.snapshot(APPLIED)
        _applied.append(True)
    return local_aws


def token(local_aws) -> str:
    return local_aws.client("ssm").get_parameter(Name="/dmp-local/data-api-auth-token",
                                                 WithDecryption=True)["Parameter"]["Value"]


def find_user(local_aws, email: str) -> dict | None:
    """GET /users?email_address= on the local Data API, as the api client library asks it."""
    from urllib.parse import quote

    request = urllib.request.Request(f"{data_api().url}/users?email_address={quote(email)}",
                                     headers={"Authorization": f"Bearer {token(local_aws)}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["users"][0]
    except urllib.error.HTTPError as error:
        assert error.code == 404
        return None


def write_users(tmp_path, users: list[dict], name: str = "users.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(u) + "\n" for u in users))
    return str(path)


def executions(local_aws) -> list[dict]:
    sfn = local_aws.client("stepfunctions")
    return [sfn.describe_execution(executionArn=e["executionArn"])
            for e in sfn.list_executions(stateMachineArn=MACHINE_ARN)["executions"]]


def wait_for_execution(local_aws, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = executions(local_aws)
        if found and all(e["status"] != "RUNNING" for e in found):
            (execution,) = found
            return execution
        assert time.monotonic() < deadline, f"no finished execution: {found}"
        time.sleep(0.25)


def log_lines(local_aws) -> dict[str, list[str]]:
    """Every log stream of the add-users log group: {stream: [messages]}."""
    logs = local_aws.client("logs")
    streams = logs.describe_log_streams(logGroupName="/dmp-local/add-users")["logStreams"]
    return {s["logStreamName"]: [e["message"] for e in logs.get_log_events(
        logGroupName="/dmp-local/add-users", logStreamName=s["logStreamName"])["events"]] for s in streams}


def workflow_tasks(local_aws) -> dict[str, dict]:
    ecs = local_aws.client("ecs")
    arns = ecs.list_tasks(cluster="dmp-local", desiredStatus="STOPPED")["taskArns"]
    tasks = ecs.describe_tasks(cluster="dmp-local", tasks=arns)["tasks"] if arns else []
    return {t["taskDefinitionArn"].rsplit("/", 1)[1].split(":")[0]: t for t in tasks}


def bucket_versions(local_aws) -> list[str]:
    versions = local_aws.client("s3").list_object_versions(Bucket=BUCKET)
    return [v["Key"] for v in versions.get("Versions", []) + versions.get("DeleteMarkers", [])]


def efs_files() -> list[str]:
    root = task_runner.settings().efs_root
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]


def assert_cleaned_up(local_aws) -> None:
    assert bucket_versions(local_aws) == []  # every version of the upload, and no delete marker
    assert efs_files() == []  # the copy on the access point's local directory


USERS = [{"emailAddress": "ada@example.com", "name": "Ada Lovelace", "password": "Analytical-Engine-1843",
          "role": "buyer"},
         {"emailAddress": "grace@example.com", "name": "Grace Hopper", "password": "COBOL-Compiler-1959",
          "role": "admin", "phoneNumber": "020 7946 0000"}]


def test_add_users_adds_the_users_and_leaves_nothing_of_the_file(stack, run_cli, tmp_path):
    result = run_cli("add-users", "--env", "local", write_users(tmp_path, USERS))
    assert result.code == 0, result.stdout + result.stderr
    execution = wait_for_execution(stack)
    assert execution["status"] == "SUCCEEDED"

    for user in USERS:  # the real program, through the api client library, added them
        assert find_user(stack, user["emailAddress"]) == {
            "emailAddress": user["emailAddress"], "name": user["name"], "role": user["role"], "active": True,
            **({"phoneNumber": user["phoneNumber"]} if "phoneNumber" in user else {})}

    tasks = workflow_tasks(stack)
    assert {family: task["containers"][0]["exitCode"] for family, task in tasks.items()} == {
        "dmp-local-add-users-copier": 0, "dmp-local-add-users": 0, "dmp-local-add-users-cleaner": 0}
    logs = log_lines(stack)
    by_container = {stream.split("/")[1]: lines for stream, lines in logs.items()}
    families = {"copier": "dmp-local-add-users-copier", "add-users": "dmp-local-add-users",
                "cleaner": "dmp-local-add-users-cleaner"}
    assert sorted(logs) == sorted(f"{prefix}/{prefix}/{tasks[family]['taskArn'].rsplit('/', 1)[1]}"
                                  for prefix, family in families.items())  # <prefix>/<container>/<task id>
    assert any(line.startswith("add-users-copier: copied s3://") for line in by_container["copier"])
    assert "Adding ada@example.com as buyer" in by_container["add-users"]
    assert "Adding grace@example.com as admin" in by_container["add-users"]
    assert any(line.startswith("add-users-cleaner: removed ") for line in by_container["cleaner"])

    assert_cleaned_up(stack)
    written = everything_written(stack) + result.stdout + result.stderr
    history = "\n".join(json.dumps(e, default=str) for e in executions(stack))
    for user in USERS:
        assert user["password"] not in written
        assert user["name"] not in history and user["emailAddress"] not in history  # nothing of the file
    assert DUMMY_SECRET_PREFIX not in written  # nor the api token


def test_a_raw_upload_with_a_short_password_fails_cleanly_without_a_trace_of_it(stack, tmp_path):
    """Straight to the bucket with boto3, as the bucket policy allows an operative (If-None-Match), bypassing the
    CLI's checks: the program's own checks refuse it, so no one is added and the password is nowhere."""
    password = "Short-9ch"
    assert len(password) == 9
    lines = [USERS[0], {"emailAddress": "bob@example.com", "name": "Bob", "password": password, "role": "buyer"}]
    key_arn = stack.client("kms").describe_key(KeyId="alias/dmp-local-add-users")["KeyMetadata"]["Arn"]
    stack.client("s3").put_object(Bucket=BUCKET, Key="uploads/raw.jsonl", IfNoneMatch="*",
                                  Body="".join(json.dumps(u) + "\n" for u in lines).encode(),
                                  ServerSideEncryption="aws:kms", SSEKMSKeyId=key_arn)
    execution = wait_for_execution(stack)
    assert (execution["status"], execution["error"]) == ("FAILED", "AddUsersFailed")
    tasks = workflow_tasks(stack)
    assert tasks["dmp-local-add-users"]["containers"][0]["exitCode"] == 1  # the process's exit fails the .sync step
    assert tasks["dmp-local-add-users-cleaner"]["containers"][0]["exitCode"] == 0
    output = "\n".join(log_lines(stack)[next(s for s in log_lines(stack) if s.startswith("add-users/"))])
    assert ":2: password: must be at least 10 characters" in output  # the problem, by line and field
    assert find_user(stack, "ada@example.com") is None and find_user(stack, "bob@example.com") is None
    assert_cleaned_up(stack)
    assert password not in everything_written(stack)


def test_a_user_the_api_refuses_stops_the_run_at_that_line_after_the_earlier_ones(stack, run_cli, tmp_path):
    data_api().create_user({"emailAddress": "grace@example.com", "name": "Grace", "password": "x" * 12,
                            "role": "buyer"})  # already there
    third = {"emailAddress": "linus@example.com", "name": "Linus", "password": "Kernel-Hacker-1991", "role": "buyer"}
    result = run_cli("add-users", "--env", "local", write_users(tmp_path, [*USERS, third]))
    assert result.code == 1, result.stdout + result.stderr
    execution = wait_for_execution(stack)
    assert (execution["status"], execution["error"]) == ("FAILED", "AddUsersFailed")
    assert find_user(stack, "ada@example.com") is not None  # before the refused line: added
    assert find_user(stack, "linus@example.com") is None  # after it: not tried
    output = "\n".join(next(lines for s, lines in log_lines(stack).items() if s.startswith("add-users/")))
    assert "Adding ada@example.com as buyer" in output and "Adding grace@example.com as admin" in output
    assert "The api refused the user on line 2 (grace@example.com): status 409: User already exists" in output
    assert "linus@example.com" not in output
    assert_cleaned_up(stack)
    written = everything_written(stack) + result.stdout + result.stderr
    assert not any(u["password"] in written for u in [*USERS, third])


def _fuzzed_users(count: int, seed: int) -> list[dict]:
    """Users whose names, phone numbers and addresses hold password-like text (quotes, `'password': '`,
    `password=`, the passwords themselves of other users), kept when the tool's own checks accept them."""
    rng = random.Random(seed)
    traps = ["'password': '", "\"password\": \"", "password=", "', 'password': '", "\\'", "\"", "'", "[redacted]",
             "Adding ", "%s", "{password}"]
    users, passwords = [], []
    while len(users) < count:
        password = "".join(rng.choice(string.ascii_letters + string.digits + "'\"=:{}% -") for _ in range(14))
        other = rng.choice(passwords) if passwords else password
        index = len(users)
        user = {"emailAddress": f"{rng.choice(['password=', 'pw.', 'x'])}{index}{other[:3].strip()}@example.com",
                "name": f"{rng.choice(traps)}{other}{rng.choice(traps)} {index}",
                "password": password, "role": rng.choice(["buyer", "admin"]),
                "phoneNumber": f"{rng.choice(traps)}{password[:7]}"}
        line = (json.dumps(user) + "\n").encode()
        if users_file_module.parse(line, 1_000_000).ok and not any(
                u["emailAddress"].lower() == user["emailAddress"].lower() for u in users):
            users.append(user)
            passwords.append(password)
    return users


def test_fuzzed_password_like_text_in_names_phones_and_addresses_never_shows_a_password(stack, run_cli, tmp_path):
    users = _fuzzed_users(30, seed=11)
    data_api().create_user({**users[-1], "password": "p" * 12})  # the last line is refused: the error path too
    result = run_cli("add-users", "--env", "local", write_users(tmp_path, users))
    assert result.code == 1, result.stdout + result.stderr
    execution = wait_for_execution(stack)
    assert execution["error"] == "AddUsersFailed"
    for user in users[:-1]:
        assert find_user(stack, user["emailAddress"])["name"] == user["name"]
    output = "\n".join(next(lines for s, lines in log_lines(stack).items() if s.startswith("add-users/")))
    assert output.count("Adding ") == len(users)  # every line was tried, the refused one last
    written = everything_written(stack) + result.stdout + result.stderr
    for user in users:
        assert user["password"] not in written, user["emailAddress"]
    assert_cleaned_up(stack)


# --- [local_runner] in the configuration ----------------------------------------------------------------------


def test_local_runner_is_checked_and_only_for_the_embedded_aws(tmp_path, monkeypatch):
    from dmp_deploy import config as config_module
    from dmp_deploy.errors import ConfigError

    directory = tmp_path / "config"
    shutil.copytree(Path(config_module.CONFIG_DIR), directory)
    monkeypatch.setattr(config_module, "CONFIG_DIR", directory)
    local = directory / "local.toml"
    local.write_text(local.read_text().replace('"public.ecr.aws/aws-cli/aws-cli" = ["sh", "aws"]',
                                               '"public.ecr.aws/aws-cli/aws-cli:2.22.0" = ["sh", "bash"]'))
    with pytest.raises(ConfigError) as err:
        config_module.load_config("local")
    assert ("local_runner.runnable_images.public.ecr.aws/aws-cli/aws-cli:2.22.0: name the image repository"
            in str(err.value))
    assert "must list programs from aws, python, sh (got sh, bash)" in str(err.value)

    staging = directory / "staging.toml"
    staging.write_text(staging.read_text() + '\n[local_runner]\nrunnable_images = { "busybox" = ["sh"] }\n')
    with pytest.raises(ConfigError) as err:
        config_module.load_config("staging")
    assert "local_runner: only for the embedded AWS" in str(err.value)


def test_a_mount_the_file_system_policy_does_not_allow_fails_the_task_to_start(probe, local_aws):
    """The runner asks the embedded AWS's IAM enforcement before mounting: a file system policy that lets the
    probe's role mount but not write refuses a read-write mount (nothing runs) and allows a read-only one."""
    efs = local_aws.client("efs")
    (file_system,) = [f for f in efs.describe_file_systems()["FileSystems"] if f["CreationToken"] == "probe"]
    efs.put_file_system_policy(FileSystemId=file_system["FileSystemId"], Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": probe["role"]}, "Action": "elasticfilesystem:ClientMount",
            "Resource": file_system["FileSystemArn"]}]}))
    refused = probe["run"]("echo ran > /mnt/probe/ran")
    assert refused["stopCode"] == "TaskFailedToStart"
    assert "elasticfilesystem:ClientWrite" in refused["stoppedReason"]
    assert "probe-task" in refused["stoppedReason"]
    assert not (probe["local"] / "ran").exists()
    allowed = probe["run"]("cat /mnt/probe/nothing-here 2>/dev/null; echo read", read_only=True)
    assert exit_code(allowed) == 0


# --- the runner's own housekeeping: confinement, processes and files that must not outlive a task or the server --


@root_only
def test_without_a_mount_namespace_tasks_still_run_as_their_users_and_the_mode_is_recorded(probe, monkeypatch,
                                                                                           caplog):
    """Where unshare is refused (a container without CAP_SYS_ADMIN), root drops to the access point's user itself
    instead of failing every task with unshare's exit code; read-only is then not enforced, and says so."""
    runner = task_runner.settings()
    monkeypatch.setattr(task_runner, "_settings", runner)  # the session's settings, back after the test
    monkeypatch.setattr(task_runner, "probe_confinement",
                        lambda directory, bin_dir: "exit 1: unshare: unshare failed: Operation not permitted")
    task_runner.configure(runner.runnable_images, runner.directory, runner.endpoint, runner.service_urls,
                          runner.bin_dir)
    assert task_runner.settings().confinement == task_runner.USER
    assert "read-only mounts are NOT enforced" in caplog.text and "CAP_SYS_ADMIN" in caplog.text
    closed = task_runner.unreachable_tools(task_runner.settings())  # here: a pyenv under /root, or nothing
    assert (closed is None) == all(task_runner._closed_above(p) is None for p in task_runner.tool_paths(runner.bin_dir))
    assert closed is None or f"lies below {closed}" in caplog.text
    task = probe["run"]("id -u; id -g; id -G; echo written > /mnt/probe/f", read_only=True)
    assert exit_code(task) == 0, probe["output"](task)
    assert probe["output"](task) == ["1001", "1002", "1002"]  # its user, no supplementary group
    assert (probe["local"] / "f").stat().st_uid == 1001


def test_the_confinement_probe_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(task_runner, "confine", lambda argv, *rest: ["/nonexistent/unshare", *argv])
    assert "No such file or directory" in task_runner.probe_confinement(tmp_path, Path(sys.executable).parent)
    monkeypatch.setattr(task_runner, "confine", lambda argv, *rest: ["/bin/sh", "-c", "echo refused >&2; exit 1"])
    assert task_runner.probe_confinement(tmp_path, Path(sys.executable).parent) == "exit 1: refused"
    assert list(tmp_path.iterdir()) == []  # its scratch directory is gone


@root_only
def test_a_task_whose_mounts_name_no_posix_user_runs_as_nobody_not_root(probe):
    task = probe["run"]("id -u; id -g", mount=False)
    assert exit_code(task) == 0, probe["output"](task)
    assert probe["output"](task) == ["65534", "65534"]


def test_a_background_child_neither_keeps_the_task_running_nor_outlives_it(probe):
    started = time.monotonic()
    task = probe["run"]("sleep 300 & echo $!; echo started")
    assert exit_code(task) == 0 and time.monotonic() - started < 15
    pid, said = probe["output"](task)
    assert said == "started"
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"  # killed (a zombie at most)
    assert task_runner.run_of(task["taskArn"]) is None  # STOPPED, its exit codes read: the run is dropped


def test_a_new_runner_starts_without_the_files_of_an_earlier_server(probe, monkeypatch):
    runner = task_runner.settings()
    monkeypatch.setattr(task_runner, "_settings", runner)
    directory = Path(tempfile.mkdtemp(prefix="dmp-runner-test-"))
    try:
        left = directory / "efs" / "fs-0123" / "add-users" / "users.jsonl"  # an aborted run's plaintext file
        left.parent.mkdir(parents=True)
        left.write_text('{"password": "Left-Behind-123"}\n')
        (directory / "tasks" / "0a1b").mkdir(parents=True)
        task_runner.configure(runner.runnable_images, directory, runner.endpoint)
        assert sorted(str(p.relative_to(directory)) for p in directory.rglob("*")) == ["efs", "tasks"]
    finally:
        shutil.rmtree(directory)


def test_an_unusable_directory_falls_back_to_a_temporary_one_removed_at_shutdown(moto_server, monkeypatch, caplog):
    from dmp_deploy.config import load_config

    runner = task_runner.settings()
    monkeypatch.setattr(task_runner, "_settings", runner)
    base = Path(tempfile.mkdtemp(prefix="dmp-runner-test-"))
    try:
        assert task_runner.configure_for(load_config("local"), base / "with space", runner.endpoint,
                                         "http://127.0.0.1:1")
        fallback = task_runner.settings().directory
        assert fallback.name.startswith("dmp-local-runner-") and (fallback / "efs").is_dir()
        assert "may only hold letters, digits" in caplog.text and str(fallback) in caplog.text
        task_runner.shutdown()
        assert not fallback.exists()
    finally:
        shutil.rmtree(base)


def test_log_lines_are_read_in_pieces_no_longer_than_an_event():
    """A 600 kB line is never read whole, and becomes events of at most MAX_EVENT_BYTES, a character cut
    between two pieces kept whole."""
    import io
    import threading
    from types import SimpleNamespace

    sizes, events = [], []

    class Stream(io.BytesIO):
        def readline(self, size=-1):
            sizes.append(size)
            return super().readline(size)

    line = "é" + "x" * (task_runner.MAX_EVENT_BYTES - 4) + "€" * 120_000
    stream = Stream((line + "\nshort\n\n").encode())
    logs = SimpleNamespace(put_log_events=lambda group, name, batch: events.extend(e["message"] for e in batch))
    run = object.__new__(task_runner.TaskRun)
    run._log_lock = threading.Lock()
    task_runner.TaskRun._forward(run, SimpleNamespace(log_stream="s", log_group="g", logs=logs), stream)
    assert all(0 < size <= task_runner.MAX_EVENT_BYTES for size in sizes)
    assert all(len(e.encode()) <= task_runner.MAX_EVENT_BYTES for e in events)
    assert "".join(events[:-2]) == line and events[-2:] == ["short", " "]


@pytest.mark.subprocess
def test_local_down_stops_the_tasks_processes_and_removes_a_temporary_runner_directory(tmp_path):
    """The server's shutdown stops every task: a task still running at `local down` does not outlive the embedded
    AWS. Its state directory lies below pytest's (root's alone when run as root, or fine otherwise)."""
    import subprocess

    import boto3

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "DMP_LOCAL_DIR": str(tmp_path / "state with space")}  # unusable: a temporary one is used

    def run(*args):
        return subprocess.run([sys.executable, "run.py", *args], cwd=root, env=env, capture_output=True, text=True,
                              timeout=180, stdin=subprocess.DEVNULL)

    marker = f"sleep 271.{random.randrange(10**6)}"
    up = run("local", "up", "--json")
    try:
        assert up.returncode == 0, up.stderr
        state = json.loads((tmp_path / "state with space" / "server.json").read_text())
        assert state["task_runner_confinement"] in {"namespace", "user", "none"}
        runner = Path(state["task_runner"])
        assert runner.name.startswith("dmp-local-runner-")
        keys = {"endpoint_url": state["endpoint"], "region_name": state["region"], "aws_access_key_id": "local",
                "aws_secret_access_key": "local"}
        ecs, ec2 = boto3.client("ecs", **keys), boto3.client("ec2", **keys)
        boto3.client("logs", **keys).create_log_group(logGroupName="/shutdown")
        ecs.create_cluster(clusterName="shutdown")
        ecs.register_task_definition(
            family="shutdown", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
            containerDefinitions=[{"name": "c", "image": AWS_CLI, "memory": 512, "entryPoint": ["sh", "-c"],
                                   "command": [marker], "logConfiguration": {"logDriver": "awslogs", "options": {
                                       "awslogs-group": "/shutdown", "awslogs-region": state["region"],
                                       "awslogs-stream-prefix": "p"}}}])
        subnet = ec2.describe_subnets()["Subnets"][0]
        group = ec2.create_security_group(GroupName="shutdown", Description="d", VpcId=subnet["VpcId"])["GroupId"]
        ecs.run_task(cluster="shutdown", taskDefinition="shutdown", launchType="FARGATE", networkConfiguration={
            "awsvpcConfiguration": {"subnets": [subnet["SubnetId"]], "securityGroups": [group]}})

        def running() -> list[int]:
            found = []
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    if marker.encode() in cmdline.read_bytes():
                        found.append(int(cmdline.parent.name))
                except OSError:
                    pass
            return found

        deadline = time.monotonic() + 20
        while not running():
            assert time.monotonic() < deadline, "the task's process never started"
            time.sleep(0.1)
    finally:
        assert run("local", "down").returncode == 0
    time.sleep(0.5)
    left = running()
    for pid in left:  # not left behind for the next test, whatever this one says
        os.kill(pid, 9)
    assert left == []
    assert not runner.exists()
