"""The add-users workflow end to end on the embedded AWS: `apply --env local` deploys the bucket, EFS, the three task
definitions, the roles, the state machine with its `live` alias and the trigger; `add-users` uploads a file, the
upload's event starts the workflow, the ECS tasks run their real commands as local processes
(dmp_deploy/local/task_runner.py) or, where a test scripts a family's exit code (moto_compat.script_task_outcome),
as the emulator simulates them, and the S3 object is gone at the end, on every path.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dmp_deploy.local import moto_compat
from dmp_deploy.local.seed import DUMMY_SECRET_PREFIX

ROOT_DIR = Path(__file__).resolve().parent.parent
PREFIX = "dmp-local"
BUCKET = "dmp-local-add-users-123456789012"
MACHINE = "dmp-local-add-users"
MACHINE_ARN = f"arn:aws:states:eu-west-2:123456789012:stateMachine:{MACHINE}"
ALIAS_ARN = f"{MACHINE_ARN}:live"
CLUSTER = PREFIX
PASSWORDS = ("Correct-Horse-Battery-1", "Tr0ub4dor&3-staple", "it's-a-S3cret\"pass")
WORKFLOW_FAMILIES = ("dmp-local-add-users-copier", "dmp-local-add-users", "dmp-local-add-users-cleaner")


def users_file(tmp_path, name="users.jsonl", passwords=PASSWORDS[:2], first=0):
    path = tmp_path / name
    lines = [{"emailAddress": f"user{i}@example.com", "name": f"User {i}", "password": p, "role": "buyer"}
             for i, p in enumerate(passwords, start=first)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


@pytest.fixture
def deployed(local_aws, run_cli):
    applied = run_cli("apply", "--env", "local", "--json")
    assert applied.code == 0, applied.stdout + applied.stderr
    return applied


def executions(local_aws) -> list[dict]:
    sfn = local_aws.client("stepfunctions")
    return [sfn.describe_execution(executionArn=e["executionArn"])
            for e in sfn.list_executions(stateMachineArn=MACHINE_ARN)["executions"]]


def history(local_aws, execution_arn: str) -> list[dict]:
    return local_aws.client("stepfunctions").get_execution_history(executionArn=execution_arn,
                                                                   maxResults=1000)["events"]


def states_entered(events: list[dict]) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]


def tasks_run(local_aws) -> list[dict]:
    ecs = local_aws.client("ecs")
    arns = ecs.list_tasks(cluster=CLUSTER, desiredStatus="STOPPED")["taskArns"] + \
        ecs.list_tasks(cluster=CLUSTER)["taskArns"]
    return ecs.describe_tasks(cluster=CLUSTER, tasks=sorted(set(arns)))["tasks"] if arns else []


def family(task: dict) -> str:
    return task["taskDefinitionArn"].rsplit("/", 1)[1].split(":")[0]


def workflow_tasks(local_aws) -> list[dict]:
    return [t for t in tasks_run(local_aws) if family(t) in WORKFLOW_FAMILIES]


def bucket_keys(local_aws) -> list[str]:
    s3 = local_aws.client("s3")
    versions = s3.list_object_versions(Bucket=BUCKET)
    return [v["Key"] for v in versions.get("Versions", []) + versions.get("DeleteMarkers", [])]


def test_upload_runs_the_workflow_and_leaves_the_bucket_empty(deployed, local_aws, run_cli, tmp_path):
    result = run_cli("add-users", "--env", "local", users_file(tmp_path))
    assert result.code == 0, result.stdout + result.stderr
    assert "Succeeded" in result.stdout
    assert bucket_keys(local_aws) == []

    (execution,) = executions(local_aws)
    assert execution["status"] == "SUCCEEDED"
    entered = states_entered(history(local_aws, execution["executionArn"]))
    # S3 names the object's version ("null" when the bucket was never versioned): that exact version is deleted.
    assert entered == ["CheckUpload", "StartReport", "CheckSize", "NameTheVersion", "TheNamedVersion", "CopyToEfs",
                       "AddUsers", "RemoveEfsFile", "DeleteUpload", "DeleteUploadVersion", "Outcome", "Done"]
    tasks = workflow_tasks(local_aws)
    assert sorted(family(t) for t in tasks) == sorted(WORKFLOW_FAMILIES)
    # Every task ran in the task subnets with only the groups it needs, and got the file's name, not its content.
    by_family = {family(t): t for t in tasks}
    event = json.loads(execution["input"])
    key = event["detail"]["object"]["key"]
    copier = by_family["dmp-local-add-users-copier"]["overrides"]["containerOverrides"][0]
    assert {e["name"]: e["value"] for e in copier["environment"]} == {
        "UPLOAD_BUCKET": BUCKET, "UPLOAD_KEY": key, "UPLOAD_VERSION": event["detail"]["object"]["version-id"],
        "USERS_FILE": execution["name"]}
    for stem in ("add-users", "add-users-cleaner"):
        (override,) = by_family[f"dmp-local-{stem}"]["overrides"]["containerOverrides"]
        assert override["environment"] == [{"name": "USERS_FILE", "value": execution["name"]}]


def test_second_apply_makes_no_mutating_call_and_plan_is_clean(deployed, local_aws, run_cli):
    kinds = {c["kind"] for c in deployed.json["changes"]}
    assert {"state_machine", "state_machine_alias", "event_rule", "task_definition", "iam_role"} <= kinds
    second = run_cli("apply", "--env", "local", "--json")
    assert second.code == 0, second.stderr
    assert second.json["changes"] == []
    assert second.json["calls"]["mutating"] == 0
    plan = run_cli("plan", "--env", "local")
    assert plan.code == 0, plan.stdout + plan.stderr


@pytest.mark.parametrize("failing, error, families_run", [
    ("dmp-local-add-users", "AddUsersFailed", WORKFLOW_FAMILIES),
    ("dmp-local-add-users-copier", "CopyToEfsFailed", ("dmp-local-add-users-copier", "dmp-local-add-users-cleaner")),
])
def test_a_failing_task_still_cleans_up_and_the_command_exits_1_naming_it(deployed, local_aws, run_cli, tmp_path,
                                                                           failing, error, families_run):
    moto_compat.script_task_outcome(failing, 3)
    result = run_cli("add-users", "--env", "local", users_file(tmp_path))
    assert result.code == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout and error in result.stdout
    assert f"{failing}:" in result.stdout and "exit code 3" in result.stdout  # the task that stopped, and how
    assert bucket_keys(local_aws) == []  # the S3 object is removed on the failure path too

    (execution,) = executions(local_aws)
    assert (execution["status"], execution["error"]) == ("FAILED", error)
    entered = states_entered(history(local_aws, execution["executionArn"]))
    assert "RemoveEfsFile" in entered and "DeleteUploadVersion" in entered and entered[-1] == "Failed"
    assert sorted(family(t) for t in workflow_tasks(local_aws)) == sorted(families_run)
    cleaner = next(t for t in workflow_tasks(local_aws) if family(t) == "dmp-local-add-users-cleaner")
    assert cleaner["containers"][0]["exitCode"] == 0


def test_too_large_upload_is_removed_without_running_any_task(deployed, local_aws, tmp_path):
    s3 = local_aws.client("s3")
    key_arn = local_aws.client("kms").describe_key(KeyId="alias/dmp-local-add-users")["KeyMetadata"]["Arn"]
    s3.put_object(Bucket=BUCKET, Key="uploads/huge.jsonl", Body=b"x" * (1_048_576 + 1),
                  ServerSideEncryption="aws:kms", SSEKMSKeyId=key_arn)
    (execution,) = wait_for_executions(local_aws, 1)
    assert (execution["status"], execution["error"]) == ("FAILED", "UploadTooLarge")
    assert "1048576 bytes" in execution["cause"]
    assert workflow_tasks(local_aws) == []
    assert bucket_keys(local_aws) == []


def test_an_upload_outside_the_prefix_starts_nothing_and_a_foreign_event_touches_nothing(deployed, local_aws):
    s3, sfn = local_aws.client("s3"), local_aws.client("stepfunctions")
    s3.put_object(Bucket=BUCKET, Key="elsewhere/users.jsonl", Body=b"{}\n")
    time.sleep(1)
    assert executions(local_aws) == []  # the rule matches the upload prefix only
    event = {"detail": {"bucket": {"name": "someone-elses-bucket"}, "object": {"key": "uploads/x", "size": 1}}}
    sfn.start_execution(stateMachineArn=ALIAS_ARN, name="foreign", input=json.dumps(event))
    (execution,) = wait_for_executions(local_aws, 1)
    assert (execution["status"], execution["error"]) == ("FAILED", "NotAnUpload")
    assert workflow_tasks(local_aws) == []
    assert bucket_keys(local_aws) == ["elsewhere/users.jsonl"]


def test_versioned_upload_has_its_version_deleted(deployed, local_aws, run_cli, tmp_path):
    """Versioning is declared off (bucket.py), but should it be on, no version of the upload may remain."""
    local_aws.client("s3").put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    result = run_cli("add-users", "--env", "local", users_file(tmp_path))
    assert result.code == 0, result.stdout + result.stderr
    (execution,) = executions(local_aws)
    version = json.loads(execution["input"])["detail"]["object"]["version-id"]
    assert version != "null"
    assert "DeleteUploadVersion" in states_entered(history(local_aws, execution["executionArn"]))
    assert bucket_keys(local_aws) == []  # no version and no delete marker


def wait_for_executions(local_aws, count: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = executions(local_aws)
        if len(found) >= count and all(e["status"] != "RUNNING" for e in found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"executions did not finish: {found}")
        time.sleep(0.25)


def test_two_uploads_at_once_run_two_independent_executions(deployed, local_aws, tmp_path):
    """Two operatives at the same time: two processes, two keys, two executions, two EFS file names."""
    import subprocess
    import sys

    # Other users in each file: the local Data API refuses an address it already has, as the api does.
    files = [users_file(tmp_path, "first.jsonl", PASSWORDS[:1]),
             users_file(tmp_path, "second.jsonl", PASSWORDS[1:], first=1)]
    runs = [subprocess.Popen([sys.executable, "run.py", "add-users", "--env", "local", f], cwd=ROOT_DIR,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for f in files]
    outputs = [run.communicate(timeout=240) for run in runs]
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0, out + err
    done = executions(local_aws)
    assert len(done) == 2 and all(e["status"] == "SUCCEEDED" for e in done)
    keys = {json.loads(e["input"])["detail"]["object"]["key"] for e in done}
    assert len(keys) == 2
    for execution in done:  # each command followed its own execution
        assert sum(execution["name"] in out for out, _ in outputs) == 1
    files_on_efs = {o["environment"][0]["value"] for t in workflow_tasks(local_aws)
                    for o in t["overrides"]["containerOverrides"] if family(t) == "dmp-local-add-users"}
    assert files_on_efs == {e["name"] for e in done}
    assert len(workflow_tasks(local_aws)) == 6
    assert bucket_keys(local_aws) == []


def everything_the_workflow_wrote(local_aws) -> str:
    """Logs, executions (input, output, history), the tasks (with their overrides) and their definitions, the
    machine's definition: every place a password or the api token could leak to in the embedded AWS."""
    logs, sfn, ecs = (local_aws.client(s) for s in ("logs", "stepfunctions", "ecs"))
    written = []
    for group in logs.describe_log_groups()["logGroups"]:
        written += [e["message"] for e in logs.filter_log_events(logGroupName=group["logGroupName"])["events"]]
    for execution in executions(local_aws):
        written.append(json.dumps(execution, default=str))
        written.append(json.dumps(history(local_aws, execution["executionArn"]), default=str))
    tasks = tasks_run(local_aws)
    written.append(json.dumps(tasks, default=str))
    for arn in {t["taskDefinitionArn"] for t in tasks}:
        written.append(json.dumps(ecs.describe_task_definition(taskDefinition=arn), default=str))
    written.append(sfn.describe_state_machine(stateMachineArn=MACHINE_ARN)["definition"])
    return "\n".join(written)


def test_no_password_or_api_token_appears_anywhere(deployed, local_aws, run_cli, tmp_path):
    succeeded = run_cli("add-users", "--env", "local", users_file(tmp_path, "ok.jsonl", PASSWORDS[:2]))
    assert succeeded.code == 0, succeeded.stdout + succeeded.stderr
    moto_compat.script_task_outcome("dmp-local-add-users", 1)
    failed = run_cli("add-users", "--env", "local", "--json", users_file(tmp_path, "ko.jsonl", PASSWORDS[2:]))
    assert failed.code == 1, failed.stdout + failed.stderr
    assert len(executions(local_aws)) == 2

    texts = {"apply output": deployed.stdout + deployed.stderr,
             "add-users output": succeeded.stdout + succeeded.stderr + failed.stdout + failed.stderr,
             "embedded AWS": everything_the_workflow_wrote(local_aws)}
    assert "USERS_FILE" in texts["embedded AWS"]  # the search looks at the tasks' overrides
    for where, text in texts.items():
        for secret in (*PASSWORDS, DUMMY_SECRET_PREFIX, json.dumps(PASSWORDS[2])[1:-1]):
            assert secret not in text, f"{secret!r} found in the {where}"


def _changed_asl(tmp_path, monkeypatch) -> None:
    """A copy of asl/ whose add-users machine has a new comment, made the directory apply renders."""
    import shutil

    from dmp_deploy import render

    directory = tmp_path / "asl"
    shutil.copytree(render.ASL_DIR, directory)
    path = directory / "add_users.asl.json"
    text = path.read_text()
    path.write_text(text.replace('"Comment": {{ ("dmp-deploy', '"Comment": {{ ("dmp-deploy (changed)', 1))
    monkeypatch.setattr(render, "ASL_DIR", directory)


def alias_version(local_aws) -> str:
    alias = local_aws.client("stepfunctions").describe_state_machine_alias(stateMachineAliasArn=ALIAS_ARN)
    (route,) = alias["routingConfiguration"]
    assert route["weight"] == 100
    return route["stateMachineVersionArn"]


def test_a_changed_definition_publishes_a_version_and_moves_the_alias(deployed, local_aws, run_cli, tmp_path,
                                                                      monkeypatch):
    sfn = local_aws.client("stepfunctions")
    assert alias_version(local_aws) == f"{MACHINE_ARN}:1"
    _changed_asl(tmp_path, monkeypatch)

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    changes = {(c["kind"], c["name"]): c for c in plan.json["changes"]}
    assert set(changes) == {("state_machine", MACHINE), ("state_machine_alias", f"{MACHINE}:live")}
    assert [f["path"] for f in changes[("state_machine", MACHINE)]["fields"]] == ["definition.Comment"]
    (moved,) = changes[("state_machine_alias", f"{MACHINE}:live")]["fields"]
    assert (moved["path"], moved["before"]) == ("version", f"{MACHINE_ARN}:1")

    applied = run_cli("apply", "--env", "local", "--json")
    assert applied.code == 0, applied.stdout + applied.stderr
    assert alias_version(local_aws) == f"{MACHINE_ARN}:2"
    version = sfn.describe_state_machine(stateMachineArn=f"{MACHINE_ARN}:2")
    assert json.loads(version["definition"])["Comment"].startswith("dmp-deploy (changed)")
    assert run_cli("plan", "--env", "local").code == 0

    # The alias moved out of band (back to version 1) is drift, and apply moves it back without a new version.
    sfn.update_state_machine_alias(stateMachineAliasArn=ALIAS_ARN, routingConfiguration=[
        {"stateMachineVersionArn": f"{MACHINE_ARN}:1", "weight": 100}])
    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    assert [(c["kind"], [f["path"] for f in c["fields"]]) for c in plan.json["changes"]] == [
        ("state_machine_alias", ["version"])]
    repaired = run_cli("apply", "--env", "local", "--json")
    assert repaired.code == 0, repaired.stdout + repaired.stderr
    assert alias_version(local_aws) == f"{MACHINE_ARN}:2"
    assert run_cli("plan", "--env", "local").code == 0


@pytest.mark.parametrize("field, change", [
    ("definition.TimeoutSeconds", lambda sfn, definition: sfn.update_state_machine(
        stateMachineArn=MACHINE_ARN, definition=json.dumps({**definition, "TimeoutSeconds": 5}))),
    ("logging.include_execution_data", lambda sfn, definition: sfn.update_state_machine(
        stateMachineArn=MACHINE_ARN, loggingConfiguration={
            **sfn.describe_state_machine(stateMachineArn=MACHINE_ARN)["loggingConfiguration"],
            "includeExecutionData": True})),
    ("tags.dmp:env", lambda sfn, definition: sfn.untag_resource(resourceArn=MACHINE_ARN, tagKeys=["dmp:env"])),
])
def test_out_of_band_changes_to_the_machine_are_detected_and_repaired(deployed, local_aws, run_cli, field, change):
    sfn = local_aws.client("stepfunctions")
    change(sfn, json.loads(sfn.describe_state_machine(stateMachineArn=MACHINE_ARN)["definition"]))
    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    machine = next(c for c in plan.json["changes"] if c["kind"] == "state_machine")
    assert [f["path"] for f in machine["fields"]] == [field]
    assert run_cli("apply", "--env", "local").code == 0
    assert run_cli("plan", "--env", "local").code == 0


def test_out_of_band_changes_to_the_trigger_are_detected_and_repaired(deployed, local_aws, run_cli):
    events = local_aws.client("events")
    rule = "dmp-local-add-users-uploads"
    events.put_targets(Rule=rule, Targets=[{"Id": "add-users-live", "Arn": ALIAS_ARN, "InputPath": "$.detail",
                                            "RoleArn": "arn:aws:iam::123456789012:role/dmp-deploy/dmp-local-add-users-trigger"},
                                           {"Id": "extra", "Arn": MACHINE_ARN}])
    events.disable_rule(Name=rule)
    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    (c,) = plan.json["changes"]
    assert (c["kind"], [f["path"] for f in c["fields"]]) == ("event_rule", ["state", "targets"])
    assert run_cli("apply", "--env", "local").code == 0
    assert run_cli("plan", "--env", "local").code == 0
    (target,) = events.list_targets_by_rule(Rule=rule)["Targets"]
    assert "InputPath" not in target and target["Arn"] == ALIAS_ARN


def test_revert_moves_the_alias_back_to_the_releases_version(deployed, local_aws, run_cli, tmp_path, monkeypatch):
    _changed_asl(tmp_path, monkeypatch)
    assert run_cli("apply", "--env", "local").code == 0
    assert alias_version(local_aws) == f"{MACHINE_ARN}:2"

    reverted = run_cli("revert", "--env", "local", "--json")
    assert reverted.code == 0, reverted.stdout + reverted.stderr
    assert alias_version(local_aws) == f"{MACHINE_ARN}:1"  # release 1's own version, not a copy of it
    sfn = local_aws.client("stepfunctions")
    with pytest.raises(sfn.exceptions.StateMachineDoesNotExist):
        sfn.describe_state_machine(stateMachineArn=f"{MACHINE_ARN}:3")
    assert not json.loads(sfn.describe_state_machine(stateMachineArn=MACHINE_ARN)["definition"])[
        "Comment"].startswith("dmp-deploy (changed)")
    # Triggers start release 1's version from now on.
    result = run_cli("add-users", "--env", "local", users_file(tmp_path))
    assert result.code == 0, result.stdout + result.stderr


def test_a_machine_of_the_wrong_type_is_replaced_and_its_alias_follows(deployed, local_aws, run_cli, tmp_path):
    """STANDARD <-> EXPRESS cannot be updated: a replace, which takes the alias with it; the alias is made again."""
    sfn = local_aws.client("stepfunctions")
    described = sfn.describe_state_machine(stateMachineArn=MACHINE_ARN)
    sfn.delete_state_machine(stateMachineArn=MACHINE_ARN)
    created = sfn.create_state_machine(
        name=MACHINE, type="EXPRESS", definition=described["definition"], roleArn=described["roleArn"],
        tags=[{"key": "dmp:env", "value": "local"}, {"key": "dmp:managed-by", "value": "dmp-deploy"}], publish=True)
    sfn.create_state_machine_alias(name="live", routingConfiguration=[
        {"stateMachineVersionArn": created["stateMachineVersionArn"], "weight": 100}])

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    assert [(c["kind"], c["action"]) for c in plan.json["changes"]] == [
        ("state_machine", "replace"), ("state_machine_alias", "update")]
    applied = run_cli("apply", "--env", "local", "--json")
    assert applied.code == 0, applied.stdout + applied.stderr
    assert sfn.describe_state_machine(stateMachineArn=MACHINE_ARN)["type"] == "STANDARD"
    assert alias_version(local_aws) == f"{MACHINE_ARN}:1"
    assert run_cli("plan", "--env", "local").code == 0
    result = run_cli("add-users", "--env", "local", users_file(tmp_path))
    assert result.code == 0, result.stdout + result.stderr


def _task_definitions_in(definition: str) -> set[str]:
    found = set()

    def walk(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "TaskDefinition":
                    found.add(item.rsplit("/", 1)[-1])
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
    walk(json.loads(definition))
    return found


def test_each_version_runs_exact_revisions_and_revert_brings_the_releases_back(deployed, local_aws, run_cli,
                                                                               tmp_path):
    """The machine names each task by revision, so a new api image publishes a version running the new add-users
    revision, and `revert` puts release 1's revisions back into what uploads run (not the family's newest)."""
    sfn = local_aws.client("stepfunctions")
    first = "dmp-local-add-users:1"
    assert first in _task_definitions_in(sfn.describe_state_machine(stateMachineArn=f"{MACHINE_ARN}:1")["definition"])

    changed = run_cli("apply", "--env", "local", "--json", "--image", "api=t2")
    assert changed.code == 0, changed.stdout + changed.stderr
    assert alias_version(local_aws) == f"{MACHINE_ARN}:2"
    assert "dmp-local-add-users:2" in _task_definitions_in(
        sfn.describe_state_machine(stateMachineArn=f"{MACHINE_ARN}:2")["definition"])
    assert run_cli("plan", "--env", "local", "--image", "api=t2").code == 0

    reverted = run_cli("revert", "--env", "local", "--to", "1", "--json")
    assert reverted.code == 0, reverted.stdout + reverted.stderr
    assert alias_version(local_aws) == f"{MACHINE_ARN}:1"
    # Nothing left to do, although the newest add-users revision is still release 2's: release 1's is deployed.
    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 0, plan.stdout
    result = run_cli("add-users", "--env", "local", users_file(tmp_path))
    assert result.code == 0, result.stdout + result.stderr
    ran = {family(t) + ":" + t["taskDefinitionArn"].rsplit(":", 1)[1] for t in workflow_tasks(local_aws)}
    assert "dmp-local-add-users:1" in ran and "dmp-local-add-users:2" not in ran


@pytest.mark.parametrize("failing, error, step_text", [
    (("dmp-local-add-users", "dmp-local-add-users-cleaner"), "AddUsersFailed", "The add-users task did not complete"),
    (("dmp-local-add-users-cleaner",), "CleanupFailed", "The users were added, but cleaning up failed."),
])
def test_a_failed_cleanup_is_reported_with_the_step_failure_naming_the_efs_path(deployed, local_aws, run_cli,
                                                                              tmp_path, failing, error, step_text):
    for family_name in failing:
        moto_compat.script_task_outcome(family_name, 1)
    result = run_cli("add-users", "--env", "local", users_file(tmp_path))
    assert result.code == 1, result.stdout + result.stderr
    (execution,) = executions(local_aws)
    assert (execution["status"], execution["error"]) == ("FAILED", error)
    # every failure, together: the step's (if any), then the EFS cleanup's, with the file's path on the file system
    assert execution["cause"].startswith(step_text)
    assert f"Removing the users file /add-users/{execution['name']} from the add-users EFS file system" \
        in execution["cause"]
    assert bucket_keys(local_aws) == []  # the S3 cleanup still ran, and did not fail
    assert "Removing the upload" not in execution["cause"]
