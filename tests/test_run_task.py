"""`run-task`: the exit code of a stopped task (a table), and one-off tasks against the embedded AWS."""

import pytest

from dmp_deploy.local import moto_compat
from dmp_deploy.commands.run_task import exit_code, main_container, runs_as
from dmp_deploy.errors import UserError


def container(name, code=None, essential=True, reason=None):
    c = {"name": name, "essential": essential}
    if code is not None:
        c["exitCode"] = code
    if reason:
        c["reason"] = reason
    return c


@pytest.mark.parametrize("containers, stop, code, what", [
    ([container("wsgi", 0), container("http", 0)], {}, 0, "wsgi exited with 0"),
    ([container("wsgi", 3), container("http", 0)], {}, 3, "wsgi exited with 3"),
    ([container("wsgi", 0), container("http", 137)], {}, 137, "http exited with 137"),  # another essential one
    ([container("wsgi", 2), container("http", 137)], {}, 2, "wsgi exited with 2"),  # the main one first
    ([container("wsgi", 0), container("log-router", 1, essential=False)], {}, 0, "wsgi exited with 0"),
    ([container("wsgi", reason="CannotPullContainerError: not found")],
     {"stopCode": "TaskFailedToStart", "stoppedReason": "CannotPullContainerError: not found"}, None,
     "TaskFailedToStart: CannotPullContainerError: not found (wsgi: CannotPullContainerError: not found)"),
    ([container("wsgi")], {"stopCode": "UserInitiated", "stoppedReason": "Task stopped by user"}, None,
     "UserInitiated: Task stopped by user"),
    ([], {"stoppedReason": "Timeout waiting for network interface provisioning"}, None,
     "stopped: Timeout waiting for network interface provisioning"),
])
def test_exit_code(containers, stop, code, what):
    assert exit_code({"containers": containers, **stop}, "wsgi") == (code, what)


def test_main_container_and_network_of_one_off_tasks():
    assert main_container({"containerDefinitions": [{"name": "http"}, {"name": "wsgi"}]}) == "wsgi"
    assert main_container({"containerDefinitions": [{"name": "log", "essential": False}, {"name": "http"}]}) == "http"
    assert runs_as("db-migration") == "api" and runs_as("buyer-frontend") == "buyer-frontend"
    with pytest.raises(UserError, match="not a task run-task knows"):
        runs_as("add-userz")


@pytest.fixture
def applied(local_aws, run_cli):
    result = run_cli("apply", "--env", "local", "--json")
    assert result.code == 0, result.stdout + result.stderr


def _task(local_aws, arn):
    (task,) = local_aws.client("ecs").describe_tasks(cluster="dmp-local", tasks=[arn])["tasks"]
    return task


def test_db_migration_runs_in_the_api_network_and_exits_0(local_aws, run_cli, applied):
    result = run_cli("run-task", "--env", "local", "db-migration", "--json")
    assert result.code == 0, result.stdout + result.stderr
    assert result.json["exit_code"] == 0 and result.json["message"] == "run-task db-migration: wsgi exited with 0"
    assert '"event": "task STOPPED"' in result.stderr  # it was followed to the end

    task = _task(local_aws, result.json["task_arn"])
    assert task["taskDefinitionArn"].rsplit("/", 1)[1].startswith("dmp-local-db-migration:")
    assert task["startedBy"] == "dmp-deploy/run-task"
    eni = next(d["value"] for a in task["attachments"] for d in a["details"] if d["name"] == "networkInterfaceId")
    ec2 = local_aws.client("ec2")
    (interface,) = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"]
    names = {g["GroupName"] for g in interface["Groups"]}
    assert names == {"dmp-local-api", "dmp-local-postgres-clients"}  # the api's groups, as the brief says
    private = {s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "tag:dmp:tier", "Values": ["private"]}])["Subnets"]}
    assert interface["SubnetId"] in private


def test_run_task_exits_with_the_containers_exit_code_and_passes_the_command_as_an_override(
        local_aws, run_cli, applied):
    moto_compat.script_task_outcome("dmp-local-api", 3, reason="migration check failed", container="wsgi")
    result = run_cli("run-task", "--env", "local", "api", "--json", "--", "flask", "db", "check")
    assert result.code == 3
    assert result.json["message"] == "run-task api: wsgi exited with 3"
    task = _task(local_aws, result.json["task_arn"])
    assert task["overrides"]["containerOverrides"] == [{"name": "wsgi", "command": ["flask", "db", "check"]}]
    moto_compat.clear_task_outcomes()

    moto_compat.script_task_outcome("dmp-local-db-migration", 2)
    assert run_cli("run-task", "--env", "local", "db-migration").code == 2


def test_run_task_before_apply_runs_nothing_and_says_what_to_do(local_aws, run_cli):
    result = run_cli("run-task", "--env", "local", "db-migration")
    assert result.code == 1
    assert "run.py apply --env local" in result.stderr and "Nothing was run" in result.stderr
    assert local_aws.client("ecs").list_clusters()["clusterArns"] == []


def test_run_task_of_an_unknown_task_fails_clearly(local_aws, run_cli):
    result = run_cli("run-task", "--env", "local", "nonsense")
    assert result.code == 1 and "not a task run-task knows" in result.stderr


def test_run_task_help_warns_against_secrets_on_the_command_line():
    import io
    from contextlib import redirect_stdout

    from dmp_deploy.cli import main

    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        main(["run-task", "--help"])
    assert "NEVER put secrets in COMMAND" in " ".join(out.getvalue().split())
