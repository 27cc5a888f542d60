"""The command line contract: exit codes, JSON on stdout, logs on stderr, one-line errors, no mutation on bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dmp_deploy import config as config_module
from dmp_deploy import render as render_module

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.subprocess
def test_real_cli_in_a_subprocess_apply_then_plan(local_aws):
    env = {**os.environ, "DMP_LOCAL_DIR": str(local_aws.state_dir)}

    def run(*args):
        return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)

    apply = run("apply", "--env", "local", "--json")
    assert apply.returncode == 0, apply.stderr
    document = json.loads(apply.stdout)  # stdout is exactly one JSON document
    assert document["env"] == "local" and document["status"] == "ok"
    assert {"kind", "name", "action", "fields"} <= set(document["changes"][0])
    assert all(json.loads(line)["level"] for line in apply.stderr.splitlines() if line.strip())  # JSON log lines

    plan = run("plan", "--env", "local")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "No changes" in plan.stdout

    status = run("local", "status", "--json")
    assert json.loads(status.stdout) == {**json.loads(status.stdout), "running": True,
                                         "endpoint": local_aws.endpoint, "region": "eu-west-2"}


def test_plan_exit_codes(local_aws, run_cli):
    assert run_cli("plan", "--env", "local").code == 2
    assert run_cli("apply", "--env", "local").code == 0
    assert run_cli("plan", "--env", "local").code == 0


def test_unknown_environment_is_one_line_error_not_a_traceback(run_cli):
    result = run_cli("plan", "--env", "qa")
    assert result.code == 1
    assert "Traceback" not in result.stderr
    assert "error: no configuration for environment 'qa'" in result.stderr
    assert "local, production, staging" in result.stderr


def test_malformed_config_changes_nothing(local_aws, run_cli, recorded_calls, tmp_path, monkeypatch):
    directory = tmp_path / "config"
    shutil.copytree(ROOT / "config", directory)
    path = directory / "local.toml"
    path.write_text(path.read_text().replace("retention_days = 7", "retention_days = 8"))
    monkeypatch.setattr(config_module, "CONFIG_DIR", directory)
    result = run_cli("apply", "--env", "local")
    assert result.code == 1
    assert "logs.retention_days: must be one of CloudWatch's retention periods" in result.stderr
    assert recorded_calls == []  # validated before any AWS call at all


def test_malformed_template_changes_nothing(local_aws, run_cli, recorded_calls, tmp_path, monkeypatch):
    directory = tmp_path / "task_definitions"
    shutil.copytree(ROOT / "task_definitions", directory)
    template = directory / "api.json.j2"
    template.write_text(template.read_text() + "{# a typo on the last line #}{{ undefined_thing }}\n")
    monkeypatch.setattr(render_module, "TASK_DEFINITIONS_DIR", directory)
    result = run_cli("apply", "--env", "local")
    assert result.code == 1
    assert "api.json.j2:" in result.stderr and "undefined_thing" in result.stderr
    assert not [c for c in recorded_calls if c[1]]
    assert recorded_calls == []


def test_wrong_account_is_refused_before_any_mutation(local_aws, run_cli, recorded_calls, tmp_path, monkeypatch):
    directory = tmp_path / "config"
    shutil.copytree(ROOT / "config", directory)
    path = directory / "local.toml"
    path.write_text(path.read_text().replace('account_id = "123456789012"', 'account_id = "999999999999"'))
    monkeypatch.setattr(config_module, "CONFIG_DIR", directory)
    result = run_cli("apply", "--env", "local")
    assert result.code == 1
    assert "belong to account 123456789012" in result.stderr
    assert not [c for c in recorded_calls if c[1]]


def test_bad_image_override_is_rejected(run_cli):
    result = run_cli("render", "--env", "local", "--image", "nosuchapp=1")
    assert result.code == 1 and "unknown app 'nosuchapp'" in result.stderr


def test_render_prints_the_whole_desired_state(run_cli):
    result = run_cli("render", "--env", "staging", "--image", "api=build-7")
    assert result.code == 0
    document = result.json
    assert document["env"] == "staging" and document["image_tags"]["api"] == "build-7"
    assert "log_group" in document["resources"]
    images = [c["image"] for c in document["task_definitions"]["api"]["containerDefinitions"]]
    assert all(i.endswith(":build-7") for i in images)
