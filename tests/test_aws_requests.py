"""Issue 12, item 2: every request the tool sends during a full local apply, an add-users run and a run-task is
captured at the AWS seam and checked against botocore's operation model, including what the client does not
enforce (max lengths, patterns, enums) and the rules AWS documents only in words (tests/request_check.py). The
state machine's ECS RunTask parameters, which Step Functions sends for it, are checked the same way.

The embedded AWS accepts much that AWS refuses: this is what makes the difference show in a test run.
"""

from __future__ import annotations

import json
import threading

import pytest

import request_check
from conftest import LocalAws, _reset_and_seed, cli, point_cli_at
from dmp_deploy import session

MACHINE_ARN = "arn:aws:states:eu-west-2:123456789012:stateMachine:dmp-local-add-users"


@pytest.fixture(scope="module")
def captured(moto_server, tmp_path_factory):
    """{phase: [(service, operation, params), ...]} for a full apply, an add-users run and a run-task."""
    config = _reset_and_seed(moto_server)
    state_dir = tmp_path_factory.mktemp("dmp-local")
    point_cli_at(moto_server, state_dir, config.environment.region)
    calls: dict[str, list] = {}
    lock = threading.Lock()
    phase = {"now": ""}

    def attach(aws) -> None:
        def hook(call) -> None:
            with lock:
                # Each attempt is hooked; record every distinct request once per phase.
                calls.setdefault(phase["now"], []).append((call.service, call.operation, dict(call.params)))
        aws.hooks.append(hook)

    users = tmp_path_factory.mktemp("users") / "users.jsonl"
    users.write_text(json.dumps({"emailAddress": "user@example.com", "name": "User", "password": "Correct-Horse-1",
                                 "role": "buyer"}) + "\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DMP_LOCAL_DIR", str(state_dir))
        patch.setattr(session, "ON_CONNECT", [*session.ON_CONNECT, attach])
        for name, args in [("apply", ("apply", "--env", "local")),
                           ("add-users", ("add-users", "--env", "local", str(users))),
                           ("run-task", ("run-task", "--env", "local", "db-migration"))]:
            phase["now"] = name
            result = cli(*args)
            assert result.code == 0, (name, result.stdout[-2000:], result.stderr[-2000:])
        phase["now"] = "after"
        yield LocalAws(moto_server, config.environment.region, state_dir), calls


@pytest.mark.parametrize("phase", ["apply", "add-users", "run-task"])
def test_every_request_fits_the_operation_model(captured, phase):
    _, calls = captured
    assert calls.get(phase), f"nothing was captured during {phase}"
    found = sorted({p for service, operation, params in calls[phase]
                    for p in request_check.problems(service, operation, params)})
    assert found == [], "\n".join(found)


def test_the_mutating_calls_of_each_path_were_seen(captured):
    # The capture is not vacuous: each path's characteristic requests went through the seam.
    _, calls = captured
    seen = {phase: {f"{s}.{o}" for s, o, _ in items} for phase, items in calls.items()}
    assert {"ecs.register_task_definition", "stepfunctions.create_state_machine", "iam.create_role",
            "efs.create_access_point", "servicediscovery.create_private_dns_namespace",
            "servicediscovery.create_service", "elbv2.create_load_balancer", "elbv2.create_target_group",
            "elbv2.create_listener", "elbv2.create_rule", "ecs.create_service"} <= seen["apply"]
    assert "s3.put_object" in seen["add-users"]
    assert "ecs.run_task" in seen["run-task"]


def test_the_state_machines_ecs_requests_fit_run_task(captured):
    """What Step Functions sends ECS for each runTask state: the static Parameters (dynamic `.$` ones aside), read
    from the live definition (network ids filled in), with the ASL's PascalCase names turned into the API's."""
    aws, _ = captured
    states = aws.client("stepfunctions")
    definition = json.loads(states.describe_state_machine(stateMachineArn=MACHINE_ARN)["definition"])
    checked = 0
    for name, state in definition["States"].items():
        if state.get("Resource", "").startswith("arn:aws:states:::ecs:runTask"):
            params = _api_names(state["Parameters"])
            found = request_check.problems("ecs", "RunTask", params)
            assert found == [], (name, found)
            checked += 1
    assert checked == 3


def _api_names(value):
    """ASL Parameters for an AWS integration as the API's own member names: lower camel case, `.$` keys dropped."""
    if isinstance(value, list):
        return [_api_names(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {k[:1].lower() + k[1:]: _api_names(v) for k, v in value.items() if not k.endswith(".$")}


# --- the checker itself fails on bad requests (a test of the test) ----------------------------------------------

@pytest.mark.parametrize("service, operation, params, expected", [
    ("ecs", "run_task", {"taskDefinition": "td", "startedBy": "dmp-deploy run-task"}, "startedBy"),
    ("ecs", "run_task", {"taskDefinition": "td", "startedBy": "x" * 129}, "startedBy"),
    ("ecs", "run_task", {"taskDefinition": "td", "propagateTags": "EVERYTHING"}, "propagateTags"),
    ("logs", "create_log_group", {"logGroupName": "has spaces?"}, "pattern"),
    ("logs", "create_log_group", {"logGroupName": "/a" * 300}, "above the maximum 512"),
    ("iam", "create_role", {"RoleName": "r", "AssumeRolePolicyDocument": "{}", "Path": "no-slashes"}, "Path"),
    ("stepfunctions", "start_execution", {"stateMachineArn": MACHINE_ARN, "name": "two words"}, "name"),
    ("ecs", "run_task", {"startedBy": "ok"}, "taskDefinition: required"),
    ("ecs", "run_task", {"taskDefinition": "td", "count": "1"}, "expected an integer"),
    ("ecs", "run_task", {"taskDefinition": "td", "nonsense": 1}, "not a member"),
    ("elbv2", "create_load_balancer", {"Name": "dmp-a-prefix-of-twenty-one-public-x"}, "documented rule"),
    ("elbv2", "create_load_balancer", {"Name": "internal-www"}, "documented rule"),
    ("elbv2", "create_target_group", {"Name": "dmp-local-buyer-", "HealthCheckPath": "/healthcheck"},
     "documented rule"),
    ("elbv2", "create_target_group", {"Name": "dmp-local-buyer", "HealthCheckPath": "healthcheck"},
     "HealthCheckPath: 'healthcheck' breaks the documented rule"),
    ("elbv2", "create_rule", {"ListenerArn": "arn", "Priority": 0, "Conditions": [], "Actions": []}, "Priority"),
    ("servicediscovery", "create_service", {"Name": "two words"}, "Name"),
])
def test_a_bad_request_fails_the_checker(service, operation, params, expected):
    found = request_check.problems(service, operation, params)
    assert any(expected in p for p in found), found


def test_a_good_request_passes_the_checker():
    assert request_check.problems("ecs", "run_task", {"taskDefinition": "td", "startedBy": "dmp-deploy/run-task",
                                                      "count": 1, "propagateTags": "TASK_DEFINITION"}) == []
