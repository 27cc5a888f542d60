"""ECS services: the canonical form (pure tables), and reconciliation with truthful rollouts against the
embedded AWS (which rolls services out, and fails them on request, through moto_compat)."""

import dataclasses

import pytest

from dmp_deploy import names
from dmp_deploy.local import moto_compat
from dmp_deploy.apps import APPS
from dmp_deploy.config import load_config
from dmp_deploy.resources.services import desired_spec, live_spec, security_group_names
from dmp_deploy.session import render_only

CLUSTER = "dmp-local"
TAGS = {"dmp:env": "local", "dmp:managed-by": "dmp-deploy"}
TD = "arn:aws:ecs:eu-west-2:123456789012:task-definition/dmp-local-api:"
REGISTRY = "arn:aws:servicediscovery:eu-west-2:123456789012:service/srv-api"


# --- pure: desired and live canonical forms -----------------------------------------------------------------


def test_security_groups_are_the_apps_own_plus_its_backing_clients_groups():
    config = load_config("local")
    assert security_group_names(config, "api") == ["dmp-local-api", "dmp-local-postgres-clients"]
    assert security_group_names(config, "search-api") == ["dmp-local-opensearch-clients", "dmp-local-search-api"]
    assert security_group_names(config, "buyer-frontend") == ["dmp-local-buyer-frontend", "dmp-local-redis-clients"]
    assert security_group_names(config, "router") == ["dmp-local-router"]


def test_desired_spec_for_every_environment_and_the_router_behind_its_target_group():
    for env in ("local", "staging", "production"):
        state = render_only(env)
        specs = state.resources["service"]
        assert sorted(specs) == sorted(names.family(state.config, app) for app in APPS)
        for app in APPS:
            spec = specs[names.family(state.config, app)]
            assert spec["deployment_circuit_breaker"] == {"enable": True, "rollback": True}
            assert spec["assign_public_ip"] == "DISABLED" and spec["subnets"] == "network.subnets"
            assert spec["desired_count"] == state.config.apps[app].desired_count
            assert spec["capacity_provider_strategy"] == [
                {"capacityProvider": state.config.cluster.default_capacity_provider, "weight": 1, "base": 0}]
            assert spec["tags"] == state.config.resource_tags()
    production = render_only("production")
    router = production.resources["service"]["dmp-production-router"]
    # Our target groups by name (their ARNs are random): the router's behind the public entry, each frontend's
    # behind the www path router; the apis behind none.
    assert router["load_balancers"] == [{"targetGroupArn": "dmp-production-router",
                                         "containerName": "http", "containerPort": 80}]
    assert router["health_check_grace_period_seconds"] > 0
    assert production.resources["service"]["dmp-production-supplier-frontend"]["load_balancers"] == [
        {"targetGroupArn": "dmp-production-supplier", "containerName": "http", "containerPort": 8080}]
    assert production.resources["service"]["dmp-production-api"]["load_balancers"] == []


def _described(**overrides):
    answer = {
        "serviceName": "dmp-local-api", "status": "ACTIVE", "desiredCount": 1, "taskDefinition": TD + "3",
        "capacityProviderStrategy": [{"capacityProvider": "FARGATE", "weight": 1}],
        "networkConfiguration": {"awsvpcConfiguration": {
            "subnets": ["subnet-b", "subnet-a"], "securityGroups": ["sg-2", "sg-1"], "assignPublicIp": "DISABLED"}},
        "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": True, "rollback": True},
                                    "maximumPercent": 200, "minimumHealthyPercent": 100,
                                    "alarms": {"alarmNames": [], "enable": False, "rollback": False}},
        "loadBalancers": [], "serviceRegistries": [{"registryArn": REGISTRY}],
        "enableExecuteCommand": False, "propagateTags": "SERVICE",
        "enableECSManagedTags": True, "tags": [{"key": k, "value": v} for k, v in TAGS.items()],
    }
    answer.update(overrides)
    return answer


GROUPS = {"sg-1": "dmp-local-api", "sg-2": "dmp-local-postgres-clients"}
REGISTRIES = {REGISTRY: "api.dmp-local.internal"}
SUBNETS = ["subnet-a", "subnet-b"]


def test_live_spec_of_a_service_as_apply_leaves_it_equals_the_desired_spec():
    config = load_config("local")
    desired = desired_spec(config, "api", render_only("local").task_definitions["api"])
    assert live_spec(_described(), GROUPS, SUBNETS, up_to_date={TD + "3"}, registry_names=REGISTRIES) == desired


@pytest.mark.parametrize("overrides, field, value", [
    ({"taskDefinition": TD + "2"}, "task_definition", "dmp-local-api:2"),  # a stale revision is named
    ({"desiredCount": 3}, "desired_count", 3),
    ({"networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-a"], "securityGroups": ["sg-1"]}}},
     "subnets", ["subnet-a"]),
    ({"networkConfiguration": {"awsvpcConfiguration": {"subnets": SUBNETS, "securityGroups": ["sg-1", "sg-9"]}}},
     "security_groups", ["dmp-local-api", "sg-9"]),  # a group that is not ours stays an id
    ({"networkConfiguration": {"awsvpcConfiguration": {"subnets": SUBNETS, "securityGroups": ["sg-1", "sg-2"],
                                                       "assignPublicIp": "ENABLED"}}}, "assign_public_ip", "ENABLED"),
    ({"capacityProviderStrategy": None, "launchType": "FARGATE"}, "capacity_provider_strategy",
     "launch type FARGATE"),
    ({"deploymentConfiguration": {"maximumPercent": 200, "minimumHealthyPercent": 100}},
     "deployment_circuit_breaker", {"enable": False, "rollback": False}),
    ({"enableExecuteCommand": True}, "enable_execute_command", True),
    ({"serviceRegistries": []}, "service_registries", []),
    ({"serviceRegistries": [{"registryArn": "arn:aws:servicediscovery:eu-west-2:123456789012:service/srv-gone"}]},
     "service_registries", ["arn:aws:servicediscovery:eu-west-2:123456789012:service/srv-gone"]),  # not ours: the ARN
    ({"propagateTags": None}, "propagate_tags", "NONE"),
    ({"tags": [{"key": "dmp:env", "value": "local"}, {"key": "aws:cloudformation:stack-name", "value": "x"}]},
     "tags", {"dmp:env": "local"}),  # aws: tags are AWS's, never ours to manage
])
def test_live_spec_names_each_difference(overrides, field, value):
    assert live_spec(_described(**overrides), GROUPS, SUBNETS, up_to_date={TD + "3"},
                     registry_names=REGISTRIES)[field] == value


# --- against the embedded AWS ----------------------------------------------------------------------------


def _services(local_aws, names_=None):
    ecs = local_aws.client("ecs")
    arns = names_ or ecs.list_services(cluster=CLUSTER, maxResults=100)["serviceArns"]  # 10 a page by default
    found = []
    for i in range(0, len(arns), 10):
        found += ecs.describe_services(cluster=CLUSTER, services=arns[i:i + 10], include=["TAGS"])["services"]
    return {s["serviceName"]: s for s in found}


def _latest_revision(local_aws, family):
    arns = local_aws.client("ecs").list_task_definitions(familyPrefix=family, status="ACTIVE")["taskDefinitionArns"]
    return max((a for a in arns if a.rsplit("/", 1)[1].split(":")[0] == family),
               key=lambda a: int(a.rsplit(":", 1)[1]))


@pytest.fixture
def applied(local_aws, run_cli):
    first = run_cli("apply", "--env", "local", "--json")
    assert first.code == 0, first.stdout + first.stderr
    return first


def test_apply_brings_up_all_ten_services_each_running_its_revision(local_aws, run_cli, applied):
    ec2 = local_aws.client("ec2")
    group_ids = {g["GroupName"]: g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    subnets = sorted(s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "tag:dmp:tier", "Values": ["private"]}])["Subnets"])
    services = _services(local_aws)
    assert sorted(services) == sorted(f"dmp-local-{app}" for app in APPS)
    config = load_config("local")
    for app in APPS:
        service = services[f"dmp-local-{app}"]
        (primary,) = service["deployments"]
        assert primary["taskDefinition"] == _latest_revision(local_aws, f"dmp-local-{app}")
        assert primary["rolloutState"] == "COMPLETED"
        assert service["runningCount"] == service["desiredCount"] == config.apps[app].desired_count
        vpc = service["networkConfiguration"]["awsvpcConfiguration"]
        assert sorted(vpc["subnets"]) == subnets and vpc["assignPublicIp"] == "DISABLED"
        assert sorted(vpc["securityGroups"]) == sorted(group_ids[g] for g in security_group_names(config, app))
        assert service["deploymentConfiguration"]["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
        assert service["enableExecuteCommand"] is False and service["enableECSManagedTags"] is True
        assert {t["key"]: t["value"] for t in service["tags"]} == TAGS
    # The wait was exercised: every service logged its steady state while apply waited.
    assert applied.stderr.count("has reached a steady state.") == len(APPS)

    second = run_cli("apply", "--env", "local", "--json")
    assert second.code == 0, second.stderr
    assert second.json["changes"] == []
    assert second.json["calls"]["mutating"] == 0
    plan = run_cli("plan", "--env", "local")
    assert plan.code == 0, plan.stdout + plan.stderr


def test_image_override_updates_the_api_service_alone(local_aws, run_cli, applied):
    before = _services(local_aws)
    plan = run_cli("plan", "--env", "local", "--image", "api=NEWTAG", "--json")
    assert plan.code == 2
    changed = sorted((c["kind"], c["name"], c["action"]) for c in plan.json["changes"])
    # Exactly the task definitions that run an api image (the app, its migration, ...) and the api service.
    usual, overridden = render_only("local").task_definitions, render_only("local", ["api=NEWTAG"]).task_definitions
    api_image = [stem for stem in usual if usual[stem] != overridden[stem]]
    assert {"api", "db-migration"} <= set(api_image) and "search-api" not in api_image
    # The add-users workflow runs the api image too: its machine names that revision exactly, so a new version
    # is published and the `live` alias moves to it.
    assert "add-users" in api_image
    assert changed == sorted([("service", "dmp-local-api", "update"),
                              ("state_machine", "dmp-local-add-users", "update"),
                              ("state_machine_alias", "dmp-local-add-users:live", "update"),
                              *(("task_definition", f"dmp-local-{stem}", "update") for stem in api_image)])
    service_change = next(c for c in plan.json["changes"] if c["kind"] == "service")
    assert [f["path"] for f in service_change["fields"]] == ["task_definition"]

    result = run_cli("apply", "--env", "local", "--image", "api=NEWTAG", "--json")
    assert result.code == 0, result.stdout + result.stderr
    assert result.json["calls"]["by_operation"].get("ecs.register_task_definition") == len(api_image)
    assert result.json["calls"]["by_operation"].get("ecs.update_service") == 1
    after = _services(local_aws)
    api = after["dmp-local-api"]
    assert api["taskDefinition"] == _latest_revision(local_aws, "dmp-local-api")
    assert api["taskDefinition"] != before["dmp-local-api"]["taskDefinition"]
    images = {c["image"] for c in local_aws.client("ecs").describe_task_definition(
        taskDefinition=api["taskDefinition"])["taskDefinition"]["containerDefinitions"]}
    assert images == {"123456789012.dkr.ecr.eu-west-2.amazonaws.com/api-http:NEWTAG",
                      "123456789012.dkr.ecr.eu-west-2.amazonaws.com/api-wsgi:NEWTAG"}
    assert api["deployments"][0]["rolloutState"] == "COMPLETED"
    for name, service in after.items():  # every other service kept its deployment
        if name != "dmp-local-api":
            assert service["deployments"][0]["id"] == before[name]["deployments"][0]["id"]
    again = run_cli("apply", "--env", "local", "--image", "api=NEWTAG", "--json")
    assert again.json["calls"]["mutating"] == 0 and again.json["changes"] == []


def test_circuit_breaker_rollback_fails_apply_naming_service_rollback_and_reason(local_aws, run_cli, applied):
    ecs = local_aws.client("ecs")
    old = _services(local_aws)["dmp-local-api"]["taskDefinition"]
    moto_compat.script_rollout_failure(
        "dmp-local-api", reason="CannotPullContainerError: pull image manifest has been retried 5 time(s)")

    result = run_cli("apply", "--env", "local", "--image", "api=BROKEN", "--json")
    assert result.code == 1
    error = result.json["error"]["message"]
    assert "dmp-local-api" in error
    assert "ECS rolled back" in error
    assert f"now runs {old.rsplit('/', 1)[1]}" in error
    assert "CannotPullContainerError: pull image manifest has been retried 5 time(s)" in error
    assert "deployment failed: tasks failed to start." in result.stderr  # the service event was shown
    assert result.json["release"] is None

    api = _services(local_aws)["dmp-local-api"]
    assert api["taskDefinition"] == old  # stable again, on the old revision: and apply said it failed
    # The environment is not what was asked: planning the same deploy again shows the api still to update.
    plan = run_cli("plan", "--env", "local", "--image", "api=BROKEN", "--json")
    assert [(c["kind"], c["name"]) for c in plan.json["changes"]] == [("service", "dmp-local-api")]
    # Once the cause is fixed, the same deploy goes through.
    fixed = run_cli("apply", "--env", "local", "--image", "api=BROKEN", "--json")
    assert fixed.code == 0, fixed.json.get("error")
    assert ecs.describe_services(cluster=CLUSTER, services=["dmp-local-api"])["services"][0]["taskDefinition"] != old


def _update(local_aws, app, **params):
    local_aws.client("ecs").update_service(cluster=CLUSTER, service=f"dmp-local-{app}", **params)


def _network(local_aws, groups):
    ec2 = local_aws.client("ec2")
    ids = {g["GroupName"]: g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "tag:dmp:tier", "Values": ["private"]}])["Subnets"]]
    return {"awsvpcConfiguration": {"subnets": subnets, "securityGroups": [ids[g] for g in groups],
                                    "assignPublicIp": "DISABLED"}}


# One out-of-band change per declared field, each on its own service, all made before one plan.
OUT_OF_BAND = [
    ("api", lambda aws: _update(aws, "api", desiredCount=3), ["desired_count"]),
    ("search-api", lambda aws: _update(aws, "search-api", networkConfiguration=_network(aws, ["dmp-local-search-api"])),
     ["security_groups"]),
    ("buyer-frontend", lambda aws: _update(aws, "buyer-frontend", networkConfiguration=_network(
        aws, ["dmp-local-buyer-frontend", "dmp-local-redis-clients", "dmp-local-postgres-clients"])),
     ["security_groups"]),
    ("supplier-frontend", lambda aws: _update(aws, "supplier-frontend", networkConfiguration={"awsvpcConfiguration": {
        **_network(aws, ["dmp-local-supplier-frontend", "dmp-local-redis-clients"])["awsvpcConfiguration"],
        "assignPublicIp": "ENABLED"}}), ["assign_public_ip"]),
    ("admin-frontend", lambda aws: _update(aws, "admin-frontend", networkConfiguration={"awsvpcConfiguration": {
        **_network(aws, ["dmp-local-admin-frontend", "dmp-local-redis-clients"])["awsvpcConfiguration"],
        "subnets": _network(aws, [])["awsvpcConfiguration"]["subnets"][:1]}}), ["subnets"]),
    ("user-frontend", lambda aws: _update(aws, "user-frontend", enableExecuteCommand=True), ["enable_execute_command"]),
    ("briefs-frontend", lambda aws: _update(aws, "briefs-frontend", deploymentConfiguration={
        "deploymentCircuitBreaker": {"enable": False, "rollback": False},
        "maximumPercent": 150, "minimumHealthyPercent": 50}),
     ["deployment_circuit_breaker.enable", "deployment_circuit_breaker.rollback", "maximum_percent",
      "minimum_healthy_percent"]),
    ("brief-responses-frontend", lambda aws: _update(aws, "brief-responses-frontend", propagateTags="NONE",
                                                     enableECSManagedTags=False),
     ["enable_ecs_managed_tags", "propagate_tags"]),
    ("antivirus-api", lambda aws: _update(aws, "antivirus-api", capacityProviderStrategy=[
        {"capacityProvider": "FARGATE_SPOT", "weight": 1, "base": 0}], forceNewDeployment=True),
     ["capacity_provider_strategy"]),
    ("router", lambda aws: aws.client("ecs").untag_resource(
        resourceArn="arn:aws:ecs:eu-west-2:123456789012:service/dmp-local/dmp-local-router", tagKeys=["dmp:env"]),
     ["tags.dmp:env"]),
]


def test_out_of_band_changes_are_detected_field_by_field_and_repaired(local_aws, run_cli, applied):
    for _, change, _ in OUT_OF_BAND:
        change(local_aws)
    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    found = {c["name"]: (c["action"], sorted(f["path"] for f in c["fields"])) for c in plan.json["changes"]}
    assert found == {f"dmp-local-{app}": ("update", fields) for app, _, fields in OUT_OF_BAND}
    assert all(c["kind"] == "service" for c in plan.json["changes"])

    repaired = run_cli("apply", "--env", "local", "--json")
    assert repaired.code == 0, repaired.json.get("error")
    assert run_cli("plan", "--env", "local").code == 0
    services = _services(local_aws)
    config = load_config("local")
    for app, _, _ in OUT_OF_BAND:
        service = services[f"dmp-local-{app}"]
        assert service["desiredCount"] == service["runningCount"] == config.apps[app].desired_count
        assert len(service["deployments"]) == 1 and service["deployments"][0]["rolloutState"] == "COMPLETED"


def test_undeclared_owned_service_is_scaled_down_and_deleted_and_others_are_left_alone(local_aws, run_cli, applied):
    ecs = local_aws.client("ecs")
    network = _network(local_aws, ["dmp-local-api"])
    revision = _latest_revision(local_aws, "dmp-local-api")
    for name, tags in (("dmp-local-retired", TAGS), ("someone-elses", {"team": "other"})):
        ecs.create_service(cluster=CLUSTER, serviceName=name, taskDefinition=revision, desiredCount=1,
                           launchType="FARGATE", networkConfiguration=network,
                           tags=[{"key": k, "value": v} for k, v in tags.items()])
    plan = run_cli("plan", "--env", "local", "--json")
    assert [(c["kind"], c["name"], c["action"]) for c in plan.json["changes"]] == [
        ("service", "dmp-local-retired", "delete")]
    result = run_cli("apply", "--env", "local", "--json")
    assert result.code == 0, result.json.get("error")
    assert result.json["calls"]["by_operation"]["ecs.delete_service"] == 1
    remaining = _services(local_aws)
    assert "dmp-local-retired" not in remaining and "someone-elses" in remaining
    assert run_cli("plan", "--env", "local").code == 0


def test_router_behind_an_existing_target_group(local_aws, run_cli, monkeypatch):
    """[public_entry] existing_target_group_arn: no public load balancer of ours, the router registers with the
    account's target group (by ARN), and taken off it out of band is drift that apply puts back."""
    ec2, elb = local_aws.client("ec2"), local_aws.client("elbv2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["dmp-local"]}])["Vpcs"][0]["VpcId"]
    target_group = elb.create_target_group(Name="existing-router", Protocol="HTTP", Port=80, VpcId=vpc,
                                           TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    elb.create_listener(LoadBalancerArn=elb.create_load_balancer(
        Name="existing", Subnets=[s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2],
        Scheme="internet-facing")["LoadBalancers"][0]["LoadBalancerArn"],
        Protocol="HTTP", Port=80, DefaultActions=[{"Type": "forward", "TargetGroupArn": target_group}])
    _with_router_target_group(monkeypatch, target_group, local_aws)

    assert run_cli("apply", "--env", "local").code == 0
    router = _services(local_aws, ["dmp-local-router"])["dmp-local-router"]
    assert router["loadBalancers"] == [{"targetGroupArn": target_group, "containerName": "http", "containerPort": 80}]
    assert router["healthCheckGracePeriodSeconds"] == 60
    assert [lb["LoadBalancerName"] for lb in elb.describe_load_balancers()["LoadBalancers"]] == [
        "existing", "dmp-local-www"]
    assert run_cli("apply", "--env", "local", "--json").json["calls"]["mutating"] == 0

    # Taken off the target group out of band: detected and put back.
    local_aws.client("ecs").update_service(cluster=CLUSTER, service="dmp-local-router", loadBalancers=[])
    plan = run_cli("plan", "--env", "local", "--json")
    assert [f["path"] for c in plan.json["changes"] for f in c["fields"]] == ["load_balancers"]
    assert run_cli("apply", "--env", "local").code == 0
    assert run_cli("plan", "--env", "local").code == 0


def _with_router_target_group(monkeypatch, arn, local_aws):
    """Config as if [public_entry] named only existing_target_group_arn and network.load_balancer_security_group
    that load balancer's group (created here, as the account would have it)."""
    from dmp_deploy import session
    from dmp_deploy.config import Lookup, PublicEntry

    ec2 = local_aws.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["dmp-local"]}])["Vpcs"][0]["VpcId"]
    ec2.create_security_group(GroupName="dmp-local-alb", Description="theirs", VpcId=vpc, TagSpecifications=[
        {"ResourceType": "security-group", "Tags": [{"Key": "Name", "Value": "dmp-local-alb"}]}])

    def load(env, config_dir=None):
        config = load_config(env, config_dir)
        network = dataclasses.replace(config.network,
                                      load_balancer_security_group=Lookup(tags={"Name": "dmp-local-alb"}))
        return dataclasses.replace(config, public_entry=PublicEntry(existing_target_group_arn=arn), network=network)

    monkeypatch.setattr(session, "load_config", load)
