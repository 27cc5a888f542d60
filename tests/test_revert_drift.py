"""Issue 5's acceptance path on the embedded AWS: apply A, apply B, revert to A, history, drift."""

from dmp_deploy import releases
from dmp_deploy.aws import Aws
from dmp_deploy.config import load_config
from dmp_deploy.state_store import StateStore


def service_task_definitions(local_aws) -> dict[str, str]:
    ecs = local_aws.client("ecs")
    arns = ecs.list_services(cluster="dmp-local", maxResults=100)["serviceArns"]  # 10 a page by default
    out = {}
    for i in range(0, len(arns), 10):
        for s in ecs.describe_services(cluster="dmp-local", services=arns[i:i + 10])["services"]:
            out[s["serviceName"]] = s["taskDefinition"]
    return out


def test_apply_apply_revert_history_and_drift(local_aws, run_cli):
    a = run_cli("apply", "--env", "local", "--json")
    assert a.code == 0, a.stdout[-2000:] + a.stderr[-2000:]
    assert a.json["release"] == 1
    services_a = service_task_definitions(local_aws)
    assert run_cli("drift", "--env", "local").code == 0

    b = run_cli("apply", "--env", "local", "--image", "api=t2", "--json")
    assert b.code == 0, b.stdout[-2000:] + b.stderr[-2000:]
    assert b.json["release"] == 2
    services_b = service_task_definitions(local_aws)
    assert services_b["dmp-local-api"] != services_a["dmp-local-api"]
    assert {k: v for k, v in services_b.items() if k != "dmp-local-api"} == \
           {k: v for k, v in services_a.items() if k != "dmp-local-api"}
    assert run_cli("drift", "--env", "local").code == 0

    r = run_cli("revert", "--env", "local", "--json")
    assert r.code == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.json["reverted_to"] == 1 and r.json["release"] == 3
    assert service_task_definitions(local_aws) == services_a  # exactly release 1's revisions, not re-registered
    assert run_cli("drift", "--env", "local").code == 0

    history = run_cli("history", "--env", "local", "--json").json["releases"]
    assert [(h["number"], h["kind"], h["reverted_to"]) for h in history] == [
        (3, "revert", 1), (2, "apply", None), (1, "apply", None)]

    # An ingress rule opened to the world by hand is critical drift.
    ec2 = local_aws.client("ec2")
    (group,) = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["dmp-local-api"]}])[
        "SecurityGroups"]
    ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    d = run_cli("drift", "--env", "local", "--json")
    assert d.code == 2
    assert d.json["in_sync"] is False
    (item,) = d.json["drift"]
    assert (item["kind"], item["name"], item["severity"]) == ("security_group_rules", "dmp-local-api", "critical")
    assert d.json["calls"]["mutating"] == 0


def test_revert_to_a_release_whose_revision_is_gone_changes_nothing(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    assert run_cli("apply", "--env", "local", "--image", "api=t2").code == 0
    aws = Aws(local_aws.region, endpoint_url=local_aws.endpoint,
              credentials={"aws_access_key_id": "local", "aws_secret_access_key": "local"})
    record = releases.load(StateStore(load_config("local"), aws), 1)
    api_arn = record["live"]["task_definition"]["dmp-local-api"]["arn"]
    local_aws.client("ecs").deregister_task_definition(taskDefinition=api_arn)
    before = service_task_definitions(local_aws)

    result = run_cli("revert", "--env", "local", "--to", "1")
    assert result.code == 1
    assert "no longer exist" in result.stderr and api_arn in result.stderr
    assert service_task_definitions(local_aws) == before
    assert [h["number"] for h in run_cli("history", "--env", "local", "--json").json["releases"]] == [2, 1]


def test_revert_to_an_unknown_release_is_refused(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    result = run_cli("revert", "--env", "local", "--to", "7")
    assert result.code == 1 and "there is no release 7" in result.stderr


def test_pruning_never_deregisters_a_revision_a_release_needs(local_aws, run_cli, tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    from dmp_deploy import config as config_module

    directory = tmp_path / "config"
    shutil.copytree(Path(__file__).resolve().parent.parent / "config", directory)
    path = directory / "local.toml"
    path.write_text(path.read_text().replace("keep_revisions = 10", "keep_revisions = 1"))
    monkeypatch.setattr(config_module, "CONFIG_DIR", directory)

    assert run_cli("apply", "--env", "local").code == 0
    first = service_task_definitions(local_aws)["dmp-local-api"]
    assert run_cli("apply", "--env", "local", "--image", "api=t2").code == 0
    assert run_cli("apply", "--env", "local", "--image", "api=t3").code == 0
    ecs = local_aws.client("ecs")
    assert ecs.describe_task_definition(taskDefinition=first)["taskDefinition"]["status"] == "ACTIVE"
    result = run_cli("revert", "--env", "local", "--to", "1")
    assert result.code == 0, result.stderr[-2000:]
    assert service_task_definitions(local_aws)["dmp-local-api"] == first
