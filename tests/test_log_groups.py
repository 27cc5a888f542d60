"""Log groups against the embedded AWS: create, converge, detect and repair out-of-band changes."""

import pytest


def test_apply_creates_log_groups_and_second_apply_makes_no_mutating_call(local_aws, run_cli):
    first = run_cli("apply", "--env", "local", "--json")
    assert first.code == 0, first.stderr
    logs = local_aws.client("logs")
    groups = {g["logGroupName"]: g for g in logs.describe_log_groups(logGroupNamePrefix="/dmp-local/")["logGroups"]}
    assert groups["/dmp-local/api"]["retentionInDays"] == 7

    second = run_cli("apply", "--env", "local", "--json")
    assert second.code == 0, second.stderr
    assert second.json["changes"] == []
    assert second.json["calls"]["mutating"] == 0

    plan = run_cli("plan", "--env", "local")
    assert plan.code == 0, plan.stdout + plan.stderr


@pytest.mark.parametrize("change, field", [
    (lambda logs: logs.put_retention_policy(logGroupName="/dmp-local/api", retentionInDays=1), "retention_days"),
    (lambda logs: logs.delete_retention_policy(logGroupName="/dmp-local/api"), "retention_days"),
    (lambda logs: logs.untag_log_group(logGroupName="/dmp-local/api", tags=["dmp:env"]), "tags.dmp:env"),
    (lambda logs: logs.tag_log_group(logGroupName="/dmp-local/api", tags={"extra": "x"}), "tags.extra"),
])
def test_out_of_band_change_is_detected_and_repaired(local_aws, run_cli, change, field):
    assert run_cli("apply", "--env", "local").code == 0
    change(local_aws.client("logs"))

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    (c,) = plan.json["changes"]
    assert (c["kind"], c["name"], c["action"]) == ("log_group", "/dmp-local/api", "update")
    assert [f["path"] for f in c["fields"]] == [field]

    assert run_cli("apply", "--env", "local").code == 0
    assert run_cli("plan", "--env", "local").code == 0


def test_deleted_log_group_is_recreated(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    local_aws.client("logs").delete_log_group(logGroupName="/dmp-local/api")
    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    assert [(c["action"], c["name"]) for c in plan.json["changes"]] == [("create", "/dmp-local/api")]
    assert run_cli("apply", "--env", "local").code == 0
    assert run_cli("plan", "--env", "local").code == 0


def test_undeclared_owned_log_group_is_deleted_only_with_allow_destroy(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    logs = local_aws.client("logs")
    logs.create_log_group(logGroupName="/dmp-local/retired-app",
                          tags={"dmp:env": "local", "dmp:managed-by": "dmp-deploy"})
    logs.create_log_group(logGroupName="/dmp-local/someone-elses")  # not ours: never touched

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    assert [(c["action"], c["name"], c["destroys_data"]) for c in plan.json["changes"]] == [
        ("delete", "/dmp-local/retired-app", True)]

    refused = run_cli("apply", "--env", "local", "--json")
    assert refused.code == 1
    assert refused.json["status"] == "error" and "--allow-destroy" in refused.json["error"]["message"]
    assert "/dmp-local/retired-app" in [g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]]

    assert run_cli("apply", "--env", "local", "--allow-destroy").code == 0
    names = [g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]]
    assert "/dmp-local/retired-app" not in names and "/dmp-local/someone-elses" in names
