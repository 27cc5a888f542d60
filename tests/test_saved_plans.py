"""Saved plans: `plan --out FILE` then `apply --env E FILE` carries out exactly that plan, or refuses and changes
nothing when the configuration or the live state changed since (dmp_deploy/saved_plan.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def retention(local_aws, name: str) -> int | None:
    groups = local_aws.client("logs").describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    return next((g.get("retentionInDays") for g in groups if g["logGroupName"] == name), None)


def test_apply_carries_out_exactly_the_saved_plan_with_its_images(local_aws, run_cli, tmp_path):
    path = str(tmp_path / "reviewed.plan")
    planned = run_cli("plan", "--env", "local", "--image", "api=t2", "--out", path, "--json")
    assert planned.code == 2 and planned.json["saved_to"] == path
    saved = json.loads(Path(path).read_text())
    assert saved["image_overrides"] == ["api=t2"] and saved["plan"]["changes"] == planned.json["changes"]

    applied = run_cli("apply", "--env", "local", path, "--json")
    assert applied.code == 0, applied.stdout[-2000:]
    assert applied.json["changes"] == saved["plan"]["changes"] and applied.json["release"] == 1
    tds = local_aws.client("ecs").describe_task_definition(taskDefinition="dmp-local-api")["taskDefinition"]
    assert all(c["image"].endswith(":t2") for c in tds["containerDefinitions"])

    again = run_cli("apply", "--env", "local", path, "--json")  # the live state is what that plan made it
    assert again.code == 1 and again.json["error"]["kind"] == "stale-plan"
    assert "the live state in AWS changed since it was saved" in again.json["error"]["message"]


@pytest.mark.subprocess
def test_a_saved_plan_is_refused_when_the_live_state_changed(local_aws, run_cli, local_config, tmp_path):
    assert run_cli("apply", "--env", "local").code == 0
    local_config("retention_days = 7", "retention_days = 14")
    path = str(tmp_path / "reviewed.plan")
    assert run_cli("plan", "--env", "local", "--out", path).code == 2
    local_aws.client("logs").put_retention_policy(logGroupName="/dmp-local/router", retentionInDays=30)

    from dmp_deploy import config as config_module
    wrapper = ("import os, sys; from pathlib import Path; import dmp_deploy.config as c; "
               "c.CONFIG_DIR = Path(os.environ['DMP_TEST_CONFIG_DIR']); from dmp_deploy.cli import main; "
               "sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", wrapper, "apply", "--env", "local", path, "--json"], cwd=ROOT,
                            env={**os.environ, "DMP_LOCAL_DIR": str(local_aws.state_dir),
                                 "DMP_TEST_CONFIG_DIR": str(config_module.CONFIG_DIR)},
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    assert document["error"]["kind"] == "stale-plan" and "Nothing was changed" in document["error"]["message"]
    assert document["calls"]["mutating"] == 0
    assert retention(local_aws, "/dmp-local/api") == 7 and retention(local_aws, "/dmp-local/router") == 30


def test_a_saved_plan_is_refused_when_the_config_changed(local_aws, run_cli, local_config, tmp_path):
    path = str(tmp_path / "reviewed.plan")
    assert run_cli("plan", "--env", "local", "--out", path).code == 2
    local_config("retention_days = 7", "retention_days = 14")
    result = run_cli("apply", "--env", "local", path)
    assert result.code == 1 and "the configuration or templates changed since it was saved" in result.stderr
    assert local_aws.client("ecs").list_clusters()["clusterArns"] == []


def test_saved_plan_files_are_checked(local_aws, run_cli, tmp_path):
    path = tmp_path / "reviewed.plan"
    assert run_cli("plan", "--env", "local", "--out", str(path)).code == 2
    assert "is for 'local', not 'staging'" in run_cli("apply", "--env", "staging", str(path)).stderr
    assert "--image cannot be given with a saved plan" in run_cli(
        "apply", "--env", "local", str(path), "--image", "api=t3").stderr
    (tmp_path / "junk").write_text("not a plan")
    junk = run_cli("apply", "--env", "local", str(tmp_path / "junk"))
    assert junk.code == 1 and "not a saved plan" in junk.stderr
