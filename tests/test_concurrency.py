"""Concurrency (issue 6, item 3): two applies at once, and an apply while an add-users execution runs.

The applies are separate processes (`python -c BOOT apply ...`, the CLI's own main) against the embedded AWS the
test runs: only the deploy lock in S3 stands between them. To make "at once" certain rather than likely, the first
apply can be held at its first change after taking the lock (a seam hook, DMP_TEST_GATE) until the test opens
the gate; one test also starts both with no gate at all.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dmp_deploy import lock as deploy_lock
from dmp_deploy.aws import Aws
from dmp_deploy.config import load_config
from dmp_deploy.state_store import StateStore

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parent.parent
MACHINE_ARN = "arn:aws:states:eu-west-2:123456789012:stateMachine:dmp-local-add-users"
ALIAS_ARN = f"{MACHINE_ARN}:live"
BUCKET = "dmp-local-add-users-123456789012"
CHANGE = ("--image", "api=t2")

# The CLI, with this test's copy of config/ and, when DMP_TEST_GATE names a file, held at the first change it
# makes after taking the deploy lock until that file exists.
BOOT = """
import os, sys, time
from pathlib import Path
from dmp_deploy import config, lock, session
config.CONFIG_DIR = Path(os.environ["DMP_TEST_CONFIG_DIR"])
gate = os.environ.get("DMP_TEST_GATE")

def hold_after_lock(aws):
    locked = []
    def hook(call):
        if call.service == "s3" and call.params.get("Key", "").endswith(lock.KEY):
            locked.append(True)
        elif locked and call.mutating:
            while not os.path.exists(gate):
                time.sleep(0.05)
    aws.hooks.append(hook)

if gate:
    session.ON_CONNECT.append(hold_after_lock)
from dmp_deploy.cli import main
sys.exit(main(sys.argv[1:]))
"""


class Run:
    """One CLI process; its output goes to files so a long wait never blocks on a full pipe."""

    def __init__(self, tmp_path: Path, name: str, *args: str, config_dir: Path, gate: Path | None = None):
        self.out, self.err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        env = {**os.environ, "DMP_TEST_CONFIG_DIR": str(config_dir)}
        if gate:
            env["DMP_TEST_GATE"] = str(gate)
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen([sys.executable, "-c", BOOT, "--log-format", "json", *args], cwd=ROOT,
                                            env=env, stdout=out, stderr=err, text=True)
        self.pid = self.process.pid

    def wait(self, timeout: float = 180) -> int:
        return self.process.wait(timeout=timeout)

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    @property
    def json(self) -> dict:
        return json.loads(self.out.read_text())

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def wait_until(condition, what: str, timeout: float = 90, runs: tuple[Run, ...] = ()):
    deadline = time.monotonic() + timeout
    while not condition():
        for run in runs:
            assert run.process.poll() is None, f"{what}: a run ended first: {run.out.read_text()} {run.stderr}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


@pytest.fixture
def deployed(local_aws, run_cli):
    applied = run_cli("apply", "--env", "local", "--json")
    assert applied.code == 0, applied.stdout + applied.stderr
    return applied


@pytest.fixture
def config_dir(local_config):
    """This test's copy of config/ (local_config makes it and points the in-process CLI at it)."""
    from dmp_deploy import config as config_module
    return config_module.CONFIG_DIR


@pytest.fixture
def store(local_aws):
    aws = Aws(local_aws.region, endpoint_url=local_aws.endpoint,
              credentials={"aws_access_key_id": "local", "aws_secret_access_key": "local"})
    return StateStore(load_config("local"), aws)


@pytest.fixture
def runs():
    started: list[Run] = []
    yield started
    for run in started:  # a failed assertion must not leave a process behind
        run.kill()


def lease_of(store):
    return deploy_lock.read(store)[0]


def api_revisions(local_aws) -> list[str]:
    return local_aws.client("ecs").list_task_definitions(familyPrefix="dmp-local-api")["taskDefinitionArns"]


def assert_converged_once(local_aws, run_cli) -> None:
    """The change was made once: one new api revision, and plan (with the same image) has nothing to do."""
    assert len(api_revisions(local_aws)) == 2
    plan = run_cli("plan", "--env", "local", *CHANGE)
    assert plan.code == 0, plan.stdout + plan.stderr


def test_a_second_apply_waits_for_the_lock_then_finds_nothing_to_do(deployed, local_aws, run_cli, config_dir,
                                                                     store, runs, tmp_path):
    gate = tmp_path / "gate"
    first = Run(tmp_path, "first", "apply", "--env", "local", "--json", *CHANGE, config_dir=config_dir, gate=gate)
    runs.append(first)
    wait_until(lambda: (lease := lease_of(store)) is not None and lease.pid == first.pid,
               "the first apply holds the lock", runs=(first,))

    second = Run(tmp_path, "second", "apply", "--env", "local", "--json", *CHANGE, config_dir=config_dir)
    runs.append(second)
    wait_until(lambda: "waiting for the deploy lock" in second.stderr, "the second apply waits", runs=(second,))
    assert lease_of(store).pid == first.pid and len(api_revisions(local_aws)) == 1  # the first is held
    gate.touch()

    assert first.wait() == 0, first.stderr
    assert second.wait() == 0, second.stderr
    assert first.json["applied"] > 0 and first.json["release"] is not None
    # The second planned the change, waited, re-planned under the lock and found it made.
    assert (second.json["applied"], second.json["changes"], second.json["release"]) == (0, [], None)
    assert second.json["replanned"] is True
    assert lease_of(store) is None  # both released it
    assert_converged_once(local_aws, run_cli)


def test_a_second_apply_that_cannot_wait_fails_naming_the_holder(deployed, local_aws, run_cli, local_config,
                                                                 config_dir, store, runs, tmp_path):
    local_config("[deployment]\n", "[deployment]\nlock_wait_seconds = 1\n")
    gate = tmp_path / "gate"
    first = Run(tmp_path, "first", "apply", "--env", "local", "--json", *CHANGE, config_dir=config_dir, gate=gate)
    runs.append(first)
    wait_until(lambda: (lease := lease_of(store)) is not None and lease.pid == first.pid,
               "the first apply holds the lock", runs=(first,))

    second = Run(tmp_path, "second", "apply", "--env", "local", "--json", *CHANGE, config_dir=config_dir)
    runs.append(second)
    assert second.wait() == 1, second.stderr
    gate.touch()
    assert first.wait() == 0, first.stderr

    failed = second.json
    assert (failed["status"], failed["applied"], failed["release"]) == ("error", 0, None)
    assert failed["error"]["kind"] == "lock"
    identity = local_aws.client("sts").get_caller_identity()["Arn"]
    assert f"is held by {identity} on {socket.gethostname()} (pid {first.pid}, `apply`)" in failed["error"]["message"]
    assert "Waited 1s" in failed["error"]["message"] and "lock release" in failed["error"]["message"]
    # It changed nothing: every mutating call it made was an attempt at the lock.
    assert set(failed["calls"]["by_operation"]) & {"ecs.register_task_definition", "ecs.update_service"} == set()
    assert first.json["applied"] > 0
    assert lease_of(store) is None
    assert_converged_once(local_aws, run_cli)


def test_two_applies_started_together_make_the_change_once(deployed, local_aws, run_cli, config_dir, store, runs,
                                                            tmp_path):
    both = [Run(tmp_path, name, "apply", "--env", "local", "--json", *CHANGE, config_dir=config_dir)
            for name in ("one", "two")]
    runs.extend(both)
    assert [run.wait() for run in both] == [0, 0], [run.stderr for run in both]
    applied = sorted((run.json["applied"], run.json["release"] is not None) for run in both)
    idle = next(run for run in both if run.json["applied"] == 0)
    print(f"the other apply {'waited for the lock and re-planned' if idle.json.get('replanned') else 'found nothing'}"
          f"; waited: {'waiting for the deploy lock' in idle.stderr}")
    assert applied[0] == (0, False) and applied[1][0] > 0 and applied[1][1]  # one applied, one found it done
    assert lease_of(store) is None
    assert_converged_once(local_aws, run_cli)


# --- an apply while an add-users execution runs -----------------------------------------------------------

def _changed_asl(tmp_path, monkeypatch) -> None:
    """The add-users machine with a new comment: apply publishes version 2 and moves `live` to it."""
    from dmp_deploy import render

    directory = tmp_path / "asl"
    shutil.copytree(render.ASL_DIR, directory)
    path = directory / "add_users.asl.json"
    text = path.read_text()
    path.write_text(text.replace('"Comment": {{ ("dmp-deploy', '"Comment": {{ ("dmp-deploy (changed)', 1))
    monkeypatch.setattr(render, "ASL_DIR", directory)


@pytest.fixture
def slow_tasks():
    """One-off ECS tasks take ~2 s per lifecycle step (about 8 s each) instead of 0.25 s."""
    from moto.moto_api import state_manager

    state_manager.set_transition("ecs::task", {"progression": "time", "seconds": 2})
    yield
    state_manager.unset_transition("ecs::task")


def history(local_aws, arn: str) -> list[dict]:
    return local_aws.client("stepfunctions").get_execution_history(executionArn=arn, maxResults=1000)["events"]


def alias_version(local_aws) -> str:
    (route,) = local_aws.client("stepfunctions").describe_state_machine_alias(
        stateMachineAliasArn=ALIAS_ARN)["routingConfiguration"]
    return route["stateMachineVersionArn"]


def test_an_apply_while_add_users_runs_leaves_the_execution_to_finish(deployed, local_aws, run_cli, config_dir,
                                                                      slow_tasks, runs, tmp_path, monkeypatch):
    sfn = local_aws.client("stepfunctions")
    assert alias_version(local_aws) == f"{MACHINE_ARN}:1"
    users = tmp_path / "users.jsonl"
    users.write_text(json.dumps({"emailAddress": "during@example.com", "name": "During Apply",
                                 "password": "Correct-Horse-Battery-7", "role": "buyer"}) + "\n")
    adding = Run(tmp_path, "add-users", "add-users", "--env", "local", "--json", str(users), config_dir=config_dir)
    runs.append(adding)

    def running_execution():
        found = sfn.list_executions(stateMachineArn=MACHINE_ARN)["executions"]
        return found[0] if found and any(e["type"] == "TaskSubmitted" for e in history(
            local_aws, found[0]["executionArn"])) else None

    wait_until(running_execution, "the execution has started its first ECS task", runs=(adding,))
    execution_arn = running_execution()["executionArn"]

    _changed_asl(tmp_path, monkeypatch)
    applied = run_cli("apply", "--env", "local", "--json", *CHANGE)
    assert applied.code == 0, applied.stdout + applied.stderr
    changed = {(c["kind"], c["action"]) for c in applied.json["changes"]}
    assert {("state_machine", "update"), ("state_machine_alias", "update"), ("service", "update")} <= changed
    # The apply ran entirely while the execution did (were this not so, the test would prove nothing).
    assert sfn.describe_execution(executionArn=execution_arn)["status"] == "RUNNING"
    assert alias_version(local_aws) == f"{MACHINE_ARN}:2"

    assert adding.wait() == 0, adding.out.read_text() + adding.stderr
    outcome = adding.json
    assert outcome["status"] == "SUCCEEDED" and outcome["execution"]["arn"] == execution_arn
    assert {"CopyToEfs", "AddUsers", "RemoveEfsFile", "DeleteUpload"} <= set(outcome["states"])
    versions = local_aws.client("s3").list_object_versions(Bucket=BUCKET)
    assert versions.get("Versions", []) + versions.get("DeleteMarkers", []) == []  # cleanup done
    # The version the execution started on is still there, unchanged; the alias routes new uploads to 2.
    first = json.loads(sfn.describe_state_machine(stateMachineArn=f"{MACHINE_ARN}:1")["definition"])
    assert not first["Comment"].startswith("dmp-deploy (changed)")
    assert len(sfn.list_executions(stateMachineArn=MACHINE_ARN)["executions"]) == 1
    plan = run_cli("plan", "--env", "local", *CHANGE)
    assert plan.code == 0, plan.stdout + plan.stderr


# --- the plan made before the lock stands only when the lock did not change hands (deploy.py, lock.py) -----------


def _apply(image: str, confirm=lambda plan: True, observe_lock: bool = True, **kwargs):
    from dmp_deploy import session
    from dmp_deploy.deploy import deploy

    env = session.open_environment("local", [f"api={image}"], observe_lock=observe_lock)
    outcome = deploy(env, allow_destroy=False, quiet=True, command="apply", confirm=confirm, **kwargs)
    return outcome, env.aws.stats.calls


@pytest.mark.parametrize("observed", ["beside the account guard", "by deploy() itself"])
def test_an_apply_whose_lock_did_not_change_hands_plans_once(deployed, local_aws, observed):
    outcome, calls = _apply("t2", observe_lock=observed == "beside the account guard")
    assert outcome.applied > 0 and outcome.release is not None and not outcome.replanned
    assert calls["ecs.list_services"] == 1, "planned again under the lock although nobody held it in between"
    assert len(api_revisions(local_aws)) == 2


def test_an_apply_whose_lock_another_run_held_meanwhile_plans_again(deployed, local_aws, run_cli):
    def another_run_applies_first(plan) -> bool:  # while this one shows its plan, another run makes the change
        other = run_cli("apply", "--env", "local", "--json", *CHANGE)
        assert other.code == 0 and other.json["applied"] > 0, other.stdout + other.stderr
        return True

    outcome, calls = _apply("t2", confirm=another_run_applies_first)
    # The lock was free when taken, but it had changed hands since the plan's reads: planned again, found it made.
    assert outcome.replanned and outcome.applied == 0 and outcome.release is None
    assert calls["ecs.list_services"] == 2
    assert_converged_once(local_aws, run_cli)


def test_a_plan_older_than_the_limit_is_made_again(deployed, local_aws, monkeypatch):
    from dmp_deploy import deploy as deploy_module

    monkeypatch.setattr(deploy_module, "PLAN_STANDS_SECONDS", 0.0)  # as if a person had read it for a while
    outcome, calls = _apply("t2")
    assert outcome.applied > 0 and calls["ecs.list_services"] == 2
    assert len(api_revisions(local_aws)) == 2


def _hook_every_seam(monkeypatch, hook) -> None:
    from dmp_deploy import session

    monkeypatch.setattr(session, "ON_CONNECT", [*session.ON_CONNECT, lambda aws: aws.hooks.append(hook)])


def test_apply_reads_the_lock_beside_the_account_guard(deployed, local_aws, monkeypatch):
    from dmp_deploy import session

    started: dict[str, float] = {}

    def hook(call) -> None:
        started.setdefault(f"{call.service}.{call.operation}", time.monotonic())
        if call.operation == "get_caller_identity":
            time.sleep(0.5)  # a slow account guard: the lock is read meanwhile, not after it

    _hook_every_seam(monkeypatch, hook)
    env = session.open_environment("local", ["api=t2"], observe_lock=True)
    assert started["s3.get_object"] - started["sts.get_caller_identity"] < 0.4
    seen = env.take_lock_observation()
    assert seen.lease is None and seen.etag, "the deployed fixture's apply released the lock: a released marker"
    assert env.take_lock_observation() is None  # taken once: a later deploy() on this environment reads it again


def test_preflight_and_the_state_buckets_read_go_out_together(deployed, local_aws, monkeypatch):
    from dmp_deploy.state_store import bucket_name

    state_bucket = bucket_name(load_config("local"))
    asked = threading.Event()
    _hook_every_seam(monkeypatch, lambda call: call.operation == "get_bucket_tagging"
                     and call.params.get("Bucket") == state_bucket and asked.set())

    def preflight(rec) -> None:
        assert asked.wait(10), "the state bucket's read waited for preflight instead of going out beside it"

    outcome, calls = _apply("t2", preflight=preflight)
    assert outcome.applied > 0 and outcome.release is not None
