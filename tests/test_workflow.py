"""The nightly drift workflow (.github/workflows/drift.yml) and the drift job summary it writes."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")  # PyYAML comes with moto[server] (requirements-dev.txt)

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "drift.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def steps(workflow) -> list[dict]:
    return workflow["jobs"]["drift"]["steps"]


def test_actions_are_pinned_by_commit_sha(workflow):
    uses = [s["uses"] for s in steps(workflow) if "uses" in s]
    assert uses and all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u) for u in uses), uses


def test_checkout_keeps_no_credentials_and_the_job_is_bounded(workflow):
    checkout = next(s for s in steps(workflow) if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["persist-credentials"] is False
    assert 0 < workflow["jobs"]["drift"]["timeout-minutes"] <= 60
    assert workflow["concurrency"]["group"] and workflow["concurrency"]["cancel-in-progress"] is False
    assert workflow["permissions"] == {"id-token": "write", "contents": "read"}


def test_drift_and_failure_are_distinct_outcomes_with_a_job_summary(workflow):
    run = next(s for s in steps(workflow) if s.get("id") == "drift")
    assert "--summary \"$GITHUB_STEP_SUMMARY\"" in run["run"] and "--json" in run["run"]
    assert "--env local" not in run["run"]  # a real environment: dev.sh installs the runtime set only
    assert "${{" not in run["run"]  # no expression expanded into the script: values come through env
    found = next(s for s in steps(workflow) if s.get("name") == "drift found")
    failed = next(s for s in steps(workflow) if s.get("name") == "drift check failed")
    assert found["if"] == "steps.drift.outputs.exit_code == '2'" and "exit 2" in found["run"]
    assert "!= '2'" in failed["if"] and "!= '0'" in failed["if"] and "exit 1" in failed["run"]
    assert "::warning" in found["run"] and "::error" in failed["run"]
    upload = next(s for s in steps(workflow) if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"


def test_drift_summary_is_a_markdown_table(local_aws, run_cli, tmp_path):
    assert run_cli("apply", "--env", "local").code == 0
    summary = tmp_path / "summary.md"
    assert run_cli("drift", "--env", "local", "--summary", str(summary)).code == 0
    assert "### drift: local" in summary.read_text() and "In sync with release 1" in summary.read_text()
    ec2 = local_aws.client("ec2")
    (group,) = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["dmp-local-api"]}])[
        "SecurityGroups"]
    ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    assert run_cli("drift", "--env", "local", "--summary", str(summary), "--json").code == 2
    text = summary.read_text()  # appended, as GitHub's summary file is by every step
    assert "| severity | kind | name | field | expected | actual |" in text
    assert "| critical | security_group_rules | dmp-local-api | ingress |" in text
    assert "**1 critical**" in text


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)  # installed with the tests (requirements-dev.txt)


def test_the_workflow_matches_githubs_published_schema():
    result = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                             str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing_offline(tmp_path):
    result = subprocess.run([_tool("zizmor"), "--offline", "--no-progress", str(WORKFLOW)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # and it would: the workflow as it was (actions by tag, credentials kept) fails the audit
    before = tmp_path / ".github" / "workflows" / "drift.yml"
    before.parent.mkdir(parents=True)
    text = WORKFLOW.read_text().replace("@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2", "@v4")
    before.write_text(text.replace("persist-credentials: false", "persist-credentials: true"))
    flagged = subprocess.run([_tool("zizmor"), "--offline", "--no-progress", str(before)], capture_output=True,
                             text=True, timeout=120)
    assert flagged.returncode != 0 and "unpinned-uses" in flagged.stdout + flagged.stderr
