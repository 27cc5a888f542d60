"""The add-users state machine, its alias and its trigger: pure canonical forms and the rendered ASL (no AWS).
End to end against the embedded AWS: tests/test_add_users_workflow.py."""

from __future__ import annotations

import json
import re

import pytest

from dmp_deploy import desired
from dmp_deploy import placeholders
from dmp_deploy.config import load_config
from dmp_deploy.plan import FieldChange
from dmp_deploy.resources import all_kinds, event_rule
from dmp_deploy.resources import state_machine as sm

SUBNETS = ["subnet-b", "subnet-a"]
GROUPS = {"sg-1": "dmp-local-add-users", "sg-2": "dmp-local-efs-clients"}
P = placeholders.SUBNETS


def task(subnets, groups) -> dict:
    return {"Type": "Task", "Parameters": {"NetworkConfiguration": {"AwsvpcConfiguration": {
        "Subnets": subnets, "SecurityGroups": groups, "AssignPublicIp": "DISABLED"}}}}


@pytest.mark.parametrize("live, expected", [
    (task(["subnet-a", "subnet-b"], ["sg-1", "sg-2"]),
     task(P, [placeholders.security_group("dmp-local-add-users"), placeholders.security_group("dmp-local-efs-clients")])),
    # Another subnet set, or a group that is not ours (or is being replaced), stays as it is: a difference.
    (task(["subnet-a"], ["sg-9"]), task(["subnet-a"], ["sg-9"])),
    # Only AwsvpcConfiguration is touched.
    ({"Subnets": ["subnet-a", "subnet-b"], "SecurityGroups": ["sg-1"]},
     {"Subnets": ["subnet-a", "subnet-b"], "SecurityGroups": ["sg-1"]}),
])
def test_live_network_ids_read_back_as_placeholders(live, expected):
    assert sm.with_network_placeholders({"States": {"T": live}}, SUBNETS, GROUPS) == {"States": {"T": expected}}


def test_placeholders_become_ids_when_written():
    declared = {"States": {"T": task(P, [placeholders.security_group("dmp-local-add-users"), "sg-external"])}}
    written = sm.with_network_ids(declared, SUBNETS, {"dmp-local-add-users": "sg-1"}.__getitem__)
    assert written == {"States": {"T": task(["subnet-a", "subnet-b"], ["sg-1", "sg-external"])}}
    back = sm.with_network_placeholders(written, SUBNETS, {"sg-1": "dmp-local-add-users"})
    assert back == declared


@pytest.mark.parametrize("configuration, expected", [
    ({"level": "ERROR", "includeExecutionData": False, "destinations": [{"cloudWatchLogsLogGroup": {
        "logGroupArn": "arn:aws:logs:eu-west-2:123456789012:log-group:/dmp-local/states/add-users:*"}}]},
     {"level": "ERROR", "include_execution_data": False, "log_group": "/dmp-local/states/add-users"}),
    ({"level": "OFF"}, {"level": "OFF", "include_execution_data": False, "log_group": None}),
    (None, {"level": "OFF", "include_execution_data": False, "log_group": None}),
])
def test_logging_spec(configuration, expected):
    assert sm.logging_spec(configuration) == expected


def test_logging_configuration_round_trips():
    config = load_config("local")
    spec = {"level": "ALL", "include_execution_data": False, "log_group": "/dmp-local/states/add-users"}
    assert sm.logging_spec(sm.logging_configuration(config, spec)) == spec


@pytest.mark.parametrize("routing, expected", [
    ([{"stateMachineVersionArn": "arn:m:2", "weight": 100}], "arn:m:2"),
    ([{"stateMachineVersionArn": "arn:m:3", "weight": 10}, {"stateMachineVersionArn": "arn:m:2", "weight": 90}],
     [{"version": "arn:m:2", "weight": 90}, {"version": "arn:m:3", "weight": 10}]),
])
def test_routed_version(routing, expected):
    assert sm.routed_version(routing) == expected


def test_definition_changes_name_the_state_that_changed():
    before = {"Comment": "a", "StartAt": "A", "States": {"A": {"Type": "Pass"}, "B": {"Type": "Succeed"}}}
    after = {"Comment": "b", "StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}, "C": {"Type": "Fail"}}}
    assert [c.path for c in sm.definition_changes(after, before)] == [
        "definition.Comment", "definition.States.A", "definition.States.B", "definition.States.C"]
    assert sm.definition_changes(before, json.loads(json.dumps(before))) == []


def test_machine_diff_compares_parsed_definitions_and_forces_replace_on_type():
    spec = {"definition": {"StartAt": "A", "States": {"A": {"Type": "Succeed"}}}, "role_arn": "r", "type": "STANDARD",
            "logging": {"level": "ERROR"}, "tags": {}}
    live = sm.Live(spec={**json.loads(json.dumps(spec)), "type": "EXPRESS"})
    assert sm.StateMachines().diff("m", spec, live) == [FieldChange("type", "EXPRESS", "STANDARD", True)]


@pytest.mark.parametrize("stem, name", [("add_users", "dmp-local-add-users"), ("other", "dmp-local-other")])
def test_machine_names(stem, name):
    assert sm.machine_name(load_config("local"), stem) == name


# --- the rendered ASL -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def state():
    return desired.build(load_config("local"), all_kinds())


@pytest.fixture(scope="module")
def asl(state):
    return state.resources["state_machine"]["dmp-local-add-users"]["definition"]


def test_the_event_is_checked_against_bucket_prefix_and_size(asl):
    check = asl["States"]["CheckUpload"]
    conditions = check["Choices"][-1]["And"]
    assert {"Variable": "$.detail.bucket.name", "StringEquals": "dmp-local-add-users-123456789012"} in conditions
    assert {"Variable": "$.detail.object.key", "StringMatches": "uploads/*"} in conditions
    assert check["Default"] == "NotAnUpload" and asl["States"]["NotAnUpload"]["Type"] == "Fail"
    size = asl["States"]["CheckSize"]
    assert {"Variable": "$.detail.object.size", "NumericLessThanEquals": 1048576} in size["Choices"][0]["And"]
    assert asl["States"][size["Default"]]["Next"] == "DeleteUpload"  # too large: removed, then FAILED


def test_every_task_catches_everything_into_cleanup_and_retries_transient_ecs_errors(asl):
    states = asl["States"]
    tasks = {n: s for n, s in states.items() if s["Type"] == "Task"}
    assert set(tasks) == {"CopyToEfs", "AddUsers", "RemoveEfsFile", "DeleteUploadVersion", "DeleteUploadObject"}
    for name, task in tasks.items():
        (catch,) = task["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"]
        # Every failure ends in the cleanup: the failure's own Pass state (its part of the report), then the next
        # cleanup step (the cleaner, the S3 delete) or, after the last, the Outcome.
        follow = states[catch["Next"]]
        assert follow["Type"] == "Pass" and follow["ResultPath"].startswith("$.report."), name
        assert follow["Next"] in ("RemoveEfsFile", "DeleteUpload", "Outcome"), name
    for name in ("CopyToEfs", "AddUsers", "RemoveEfsFile"):
        assert tasks[name]["Resource"] == "arn:aws:states:::ecs:runTask.sync"
        retried = {e for r in tasks[name]["Retry"] for e in r["ErrorEquals"]}
        # the names Step Functions reports (its ECS integration docs): capacity errors are ECS.AmazonECSException,
        # and a RunTask answer with a non-empty `failures` list fails a .sync task as AmazonECS.Unknown
        assert {"ECS.AmazonECSException", "ECS.ServerException", "ECS.ThrottlingException", "ECS.ClientException",
                "ECS.AccessDeniedException", "AmazonECS.Unknown"} <= retried and "States.ALL" not in retried
    assert tasks["AddUsers"]["TimeoutSeconds"] == 900
    assert states["Failed"] == {"Type": "Fail", "ErrorPath": "$.failure.Error", "CausePath": "$.failure.Cause"}


def test_tasks_get_only_names_from_the_event_and_their_network_by_placeholder(asl):
    for name, container, groups in [("CopyToEfs", "copier", ["add-users-copier", "efs-clients"]),
                                    ("AddUsers", "add-users", ["add-users", "efs-clients"]),
                                    ("RemoveEfsFile", "cleaner", ["add-users-copier", "efs-clients"])]:
        parameters = asl["States"][name]["Parameters"]
        network = parameters["NetworkConfiguration"]["AwsvpcConfiguration"]
        assert network == {"Subnets": placeholders.SUBNETS, "AssignPublicIp": "DISABLED",
                           "SecurityGroups": [placeholders.security_group(f"dmp-local-{g}") for g in groups]}
        (override,) = parameters["Overrides"]["ContainerOverrides"]
        assert override["Name"] == container
        values = {e["Name"]: e["Value.$"] for e in override["Environment"]}
        assert values["USERS_FILE"] == "$$.Execution.Name"
        assert set(values) <= {"USERS_FILE", "UPLOAD_BUCKET", "UPLOAD_KEY", "UPLOAD_VERSION"}  # never a token or content
        assert re.fullmatch(r"[A-Za-z0-9_/-]{1,128}", parameters["StartedBy"])  # ECS's allowed characters
    text = json.dumps(asl)
    assert "DM_DATA_API_TOKEN" not in text and ":ssm:" not in text and ":secretsmanager:" not in text


def test_the_machine_logs_errors_without_execution_data_to_its_declared_log_group(state):
    machine = state.resources["state_machine"]["dmp-local-add-users"]
    assert machine["logging"] == {"level": "ERROR", "include_execution_data": False,
                                  "log_group": "/dmp-local/states/add-users"}
    assert "/dmp-local/states/add-users" in state.resources["log_group"]
    assert machine["role_arn"] == "arn:aws:iam::123456789012:role/dmp-deploy/dmp-local-add-users-states"
    assert state.resources["state_machine_alias"] == {"dmp-local-add-users:live": {
        "state_machine": "dmp-local-add-users", "version": sm.DECLARED_VERSION,
        "description": "dmp-deploy: the version triggers start (moved by apply and revert)"}}


# --- the trigger ------------------------------------------------------------------------------------------------

def test_the_trigger_matches_uploads_under_the_prefix_and_passes_the_whole_event(state):
    (rule,) = state.resources["event_rule"].values()
    assert rule["event_pattern"] == {"detail": {"bucket": {"name": ["dmp-local-add-users-123456789012"]},
                                                "object": {"key": [{"prefix": "uploads/"}]}},
                                     "detail-type": ["Object Created"], "source": ["aws.s3"]}
    assert rule["targets"] == [{
        "id": "add-users-live",
        "arn": "arn:aws:states:eu-west-2:123456789012:stateMachine:dmp-local-add-users:live",
        "role_arn": "arn:aws:iam::123456789012:role/dmp-deploy/dmp-local-add-users-trigger"}]
    assert rule["state"] == "ENABLED"


@pytest.mark.parametrize("a, b", [
    ('{"source": ["aws.s3"], "detail-type": ["B", "A"]}', {"detail-type": ["A", "B"], "source": ["aws.s3"]}),
    ('{"detail": {"object": {"key": [{"prefix": "u/"}]}}}', {"detail": {"object": {"key": [{"prefix": "u/"}]}}}),
])
def test_event_patterns_compare_parsed_and_unordered(a, b):
    assert event_rule.pattern_spec(a) == event_rule.pattern_spec(b)


@pytest.mark.parametrize("target, expected", [
    ({"Id": "t", "Arn": "a", "RoleArn": "r"}, {"id": "t", "arn": "a", "role_arn": "r"}),
    ({"Id": "t", "Arn": "a", "InputPath": "$.detail"}, {"id": "t", "arn": "a", "role_arn": None,
                                                        "input_path": "$.detail"}),
])
def test_target_spec_shows_input_changes(target, expected):
    assert event_rule.target_spec(target) == expected
    assert event_rule.target_parameters(expected) == target


def test_no_machine_no_trigger(state):
    from dataclasses import replace

    empty = replace(state, resources={"state_machine": {}})
    assert event_rule.EventRules().desired(empty) == {}


def test_outcome_reports_the_step_and_every_cleanup_failure_together(asl):
    states = asl["States"]
    # each failure writes its own part of the report: none overwrites another
    assert states["StartReport"]["Result"] == {"step": {"Error": "", "Cause": ""}, "efs": {"Cause": ""},
                                               "s3": {"Cause": ""}}
    for name in ("TooLarge", "CopyFailed", "AddUsersFailed"):
        assert states[name]["ResultPath"] == "$.report.step", name
    assert states["RemoveEfsFile"]["Catch"][0]["Next"] == "EfsCleanupFailed"
    assert states["EfsCleanupFailed"]["ResultPath"] == "$.report.efs"
    assert "/add-users/{}" in states["EfsCleanupFailed"]["Parameters"]["Cause.$"]  # the EFS path, named
    for name in ("DeleteUploadVersion", "DeleteUploadObject"):
        assert states[name]["Catch"][0]["Next"] == "S3CleanupFailed"
    assert states["S3CleanupFailed"]["ResultPath"] == "$.report.s3"
    cause = states["StepFailed"]["Parameters"]["Cause.$"]
    assert all(part in cause for part in ("$.report.step.Cause", "$.report.efs.Cause", "$.report.s3.Cause"))
    cleanup = states["CleanupFailed"]["Parameters"]["Cause.$"]
    assert "$.report.efs.Cause" in cleanup and "$.report.s3.Cause" in cleanup


def test_the_copier_is_given_the_version_the_event_names(asl):
    states = asl["States"]
    assert states["CheckSize"]["Choices"][0]["Next"] == "NameTheVersion"
    assert states["TheNamedVersion"]["Parameters"] == {"version.$": "$.detail.object.version-id"}
    assert states["NoVersionNamed"]["Result"] == {"version": ""}
    (override,) = states["CopyToEfs"]["Parameters"]["Overrides"]["ContainerOverrides"]
    assert {"Name": "UPLOAD_VERSION", "Value.$": "$.upload.version"} in override["Environment"]
