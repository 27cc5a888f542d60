"""Service discovery (Cloud Map): the canonical forms (pure tables), the internal URLs derived from the namespace,
and the namespace and services against the embedded AWS: create, no-op, update, drift and revert, delete."""

import json
import re

import pytest

from dmp_deploy import names, placeholders
from dmp_deploy.apps import APPS, HTTP_PORT
from dmp_deploy.config import load_config
from dmp_deploy.errors import ConfigError
from dmp_deploy.resources.base import Live
from dmp_deploy.resources.service_discovery import DiscoveryServices, live_service_spec, service_spec
from dmp_deploy.session import render_only

TAGS = {"dmp:env": "local", "dmp:managed-by": "dmp-deploy"}
NAMESPACE = "dmp-local.internal"


# --- pure -------------------------------------------------------------------------------------------------


def test_staging_renders_a_namespace_a_registry_for_every_app_and_derived_internal_urls():
    state = render_only("staging")
    assert list(state.resources["cloud_map_namespace"]) == ["dmp-staging.internal"]
    services = state.resources["cloud_map_service"]
    assert sorted(services) == sorted(f"{app}.dmp-staging.internal" for app in APPS)
    for app in APPS:
        assert services[f"{app}.dmp-staging.internal"]["namespace"] == "dmp-staging.internal"
        assert state.resources["service"][f"dmp-staging-{app}"]["service_registries"] == [
            f"{app}.dmp-staging.internal"]

    def env(stem, container=None):
        document = state.task_definitions[stem]
        c = next(c for c in document["containerDefinitions"] if container in (None, c["name"]))
        return {e["name"]: e["value"] for e in c.get("environment") or []}

    api, search, antivirus = ("http://api.dmp-staging.internal:8080", "http://search-api.dmp-staging.internal:8080",
                              "http://antivirus-api.dmp-staging.internal:8080")
    router = env("router")
    assert (router["DM_API_URL"], router["DM_SEARCH_API_URL"], router["DM_ANTIVIRUS_API_URL"]) == (api, search,
                                                                                                     antivirus)
    # Not a Cloud Map name: the www path router's DNS name (resources/load_balancers.py), known once it exists.
    assert router["DM_FRONTEND_URL"] == f"http://{placeholders.load_balancer_dns('dmp-staging-www')}"
    assert env("api", "wsgi")["DM_SEARCH_API_URL"] == search
    assert env("buyer-frontend", "wsgi")["DM_SEARCH_API_URL"] == search
    for frontend in ("buyer-frontend", "supplier-frontend", "admin-frontend", "user-frontend"):
        assert env(frontend, "wsgi")["DM_DATA_API_URL"] == api
    assert env("add-users", "add-users")["DM_DATA_API_URL"] == api
    # Every internal URL in every task definition names an app's Cloud Map name, on that app's port.
    rendered = json.dumps(state.task_definitions)
    for host, port in re.findall(r"http://([a-z-]+)\.dmp-staging\.internal:(\d+)", rendered):
        assert host in APPS and int(port) == APPS[host].port


def test_the_internal_url_helper_fails_at_the_template_line_for_an_unknown_app(tmp_path):
    from dmp_deploy import desired
    from dmp_deploy.errors import RenderError

    (tmp_path / "x.json.j2").write_text('{"url":\n  {{ internal_url("no-such-app") | tojson }}}\n')
    with pytest.raises(RenderError, match=r"x\.json\.j2:2: unknown app 'no-such-app'"):
        desired.render_task_definitions(load_config("local"), {}, tmp_path)
    assert names.internal_url(load_config("local"), "api") == f"http://api.{NAMESPACE}:{HTTP_PORT}"


def _config_with(tmp_path, monkeypatch, old: str, new: str):
    from dmp_deploy import config as config_module

    text = (config_module.CONFIG_DIR / "local.toml").read_text()
    assert old in text
    (tmp_path / "local.toml").write_text(text.replace(old, new, 1))
    return lambda: load_config("local", tmp_path)


def test_an_old_config_with_hand_written_internal_urls_is_refused_naming_each_key(tmp_path, monkeypatch):
    load = _config_with(tmp_path, monkeypatch, 'upload_prefix = "uploads/"\n',
                        'upload_prefix = "uploads/"\napi_internal_url = "http://api.dmp-local.internal:8080"\n')
    with pytest.raises(ConfigError) as err:
        load()
    assert "add_users.api_internal_url: no longer a configuration key" in str(err.value)
    assert "derived from the environment's service discovery namespace" in str(err.value)

    load = _config_with(tmp_path, monkeypatch, '[settings]\n',
                        '[settings]\ndata_api_url = "http://api.x.internal:8080"\n'
                        'search_api_url = "http://search-api.x.internal:8080"\n')
    with pytest.raises(ConfigError) as err:
        load()
    text = str(err.value)
    assert "settings.data_api_url: no longer a setting: api is now derived" in text
    assert "settings.search_api_url: no longer a setting: search-api is now derived" in text
    assert "2 problem(s)" in text and "remove the key" in text


def _summary(**overrides):
    summary = {"Id": "srv-1", "Arn": "arn:aws:servicediscovery:eu-west-2:123456789012:service/srv-1", "Name": "api",
               "DnsConfig": {"RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}]},
               "HealthCheckCustomConfig": {"FailureThreshold": 1}, "Description": "The api app's tasks (dmp-deploy)"}
    summary.update(overrides)
    return summary


def test_a_cloud_map_service_as_apply_leaves_it_reads_back_as_its_desired_spec():
    assert live_service_spec(_summary(), NAMESPACE, TAGS) == service_spec(load_config("local"), "api")


@pytest.mark.parametrize("overrides, field, value, replace", [
    ({"DnsConfig": {"RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 300}]}}, "dns_records.A",
     300, False),
    ({"DnsConfig": {"RoutingPolicy": "WEIGHTED", "DnsRecords": [{"Type": "A", "TTL": 10}]}}, "routing_policy",
     "WEIGHTED", True),
    ({"DnsConfig": {"RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "SRV", "TTL": 10}]}}, "dns_records",
     {"SRV": 10}, True),  # record types are fixed at creation
    ({"HealthCheckCustomConfig": None, "HealthCheckConfig": {"Type": "HTTP"}}, "health_check", "route53", True),
    ({"HealthCheckCustomConfig": None}, "health_check", "none", True),
    ({"Description": None}, "description", "", False),
])
def test_each_difference_is_named_and_what_aws_cannot_update_is_a_replace(overrides, field, value, replace):
    desired = service_spec(load_config("local"), "api")
    live = Live(live_service_spec(_summary(**overrides), NAMESPACE, TAGS))
    (change,) = DiscoveryServices().diff("api.dmp-local.internal", desired, live)
    assert (change.path, change.before, change.forces_replace) == (field, value, replace)


# --- against the embedded AWS ----------------------------------------------------------------------------


def _discovery(local_aws):
    """A Cloud Map client for DiscoverInstances: its endpoint is `data-<host>`, a prefix a local endpoint lacks."""
    import boto3
    from botocore.config import Config

    return boto3.client("servicediscovery", endpoint_url=local_aws.endpoint, region_name=local_aws.region,
                        aws_access_key_id="local", aws_secret_access_key="local",
                        config=Config(inject_host_prefix=False))


def _namespace_id(local_aws, name=NAMESPACE):
    sd = local_aws.client("servicediscovery")
    return next(n["Id"] for n in sd.list_namespaces()["Namespaces"] if n["Name"] == name)


def _cloud_map_services(local_aws):
    sd = local_aws.client("servicediscovery")
    listed = sd.list_services(Filters=[{"Name": "NAMESPACE_ID", "Values": [_namespace_id(local_aws)],
                                        "Condition": "EQ"}])["Services"]
    return {s["Name"]: s for s in listed}


def _delete_out_of_band(local_aws, service_id):
    """Delete a Cloud Map service by hand: as AWS requires, its instances (the tasks ECS registered) first."""
    sd = local_aws.client("servicediscovery")
    for instance in sd.list_instances(ServiceId=service_id)["Instances"]:
        sd.deregister_instance(ServiceId=service_id, InstanceId=instance["Id"])
    sd.delete_service(Id=service_id)


def _ecs_registries(local_aws):
    ecs = local_aws.client("ecs")
    arns = ecs.list_services(cluster="dmp-local", maxResults=100)["serviceArns"]
    described = [s for i in range(0, len(arns), 10)
                 for s in ecs.describe_services(cluster="dmp-local", services=arns[i:i + 10])["services"]]
    return {s["serviceName"]: [r["registryArn"] for r in s.get("serviceRegistries") or []] for s in described}


@pytest.fixture
def applied(local_aws, run_cli):
    result = run_cli("apply", "--env", "local", "--json")
    assert result.code == 0, result.stdout + result.stderr
    return result


def test_apply_creates_the_namespace_and_a_registered_service_per_app_and_a_second_apply_is_a_no_op(
        local_aws, run_cli, applied):
    sd = local_aws.client("servicediscovery")
    (namespace,) = [n for n in sd.list_namespaces()["Namespaces"] if n["Name"] == NAMESPACE]
    assert namespace["Type"] == "DNS_PRIVATE"
    assert {t["Key"]: t["Value"] for t in sd.list_tags_for_resource(ResourceARN=namespace["Arn"])["Tags"]} == TAGS
    services = _cloud_map_services(local_aws)
    assert sorted(services) == sorted(APPS)
    registries = _ecs_registries(local_aws)
    for app, service in services.items():
        assert service["DnsConfig"] == {"RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}]}
        assert "HealthCheckCustomConfig" in service
        assert registries[f"dmp-local-{app}"] == [service["Arn"]]  # each ECS service registers in its own
    # The names resolve to the running tasks: ECS registered each one with its private IP.
    ecs = local_aws.client("ecs")
    for app in ("api", "buyer-frontend", "router"):
        arns = ecs.list_tasks(cluster="dmp-local", serviceName=f"dmp-local-{app}", desiredStatus="RUNNING")["taskArns"]
        ips = {d["value"] for t in ecs.describe_tasks(cluster="dmp-local", tasks=arns)["tasks"]
               for a in t["attachments"] for d in a["details"] if d["name"] == "privateIPv4Address"}
        found = _discovery(local_aws).discover_instances(NamespaceName=NAMESPACE, ServiceName=app)["Instances"]
        assert ips and {i["Attributes"]["AWS_INSTANCE_IPV4"] for i in found} == ips
    # The namespace's operation was waited for: apply polled it until it succeeded.
    assert applied.json["calls"]["by_operation"]["servicediscovery.get_operation"] >= 3

    again = run_cli("apply", "--env", "local", "--json")
    assert again.code == 0 and again.json["changes"] == [] and again.json["calls"]["mutating"] == 0
    assert run_cli("plan", "--env", "local").code == 0


def test_out_of_band_changes_are_detected_field_by_field_and_one_apply_repairs_them(local_aws, run_cli, applied):
    sd = local_aws.client("servicediscovery")
    services = _cloud_map_services(local_aws)
    sd.update_service(Id=services["api"]["Id"], Service={
        "Description": "edited by hand", "DnsConfig": {"DnsRecords": [{"Type": "A", "TTL": 300}]}})
    sd.untag_resource(ResourceARN=services["router"]["Arn"], TagKeys=["dmp:env"])
    namespace_arn = next(n["Arn"] for n in sd.list_namespaces()["Namespaces"] if n["Name"] == NAMESPACE)
    sd.tag_resource(ResourceARN=namespace_arn, Tags=[{"Key": "owner", "Value": "someone"}])

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    found = {(c["kind"], c["name"]): (c["action"], sorted(f["path"] for f in c["fields"]))
             for c in plan.json["changes"]}
    assert found == {
        ("cloud_map_service", "api.dmp-local.internal"): ("update", ["description", "dns_records.A"]),
        ("cloud_map_service", "router.dmp-local.internal"): ("update", ["tags.dmp:env"]),
        ("cloud_map_namespace", NAMESPACE): ("update", ["tags.owner"]),
    }
    repaired = run_cli("apply", "--env", "local", "--json")
    assert repaired.code == 0, repaired.json.get("error")
    assert run_cli("plan", "--env", "local").code == 0
    api = sd.get_service(Id=services["api"]["Id"])["Service"]
    assert api["DnsConfig"]["DnsRecords"] == [{"Type": "A", "TTL": 10}]
    assert api["Description"] == "The api app's tasks (dmp-deploy)"


def test_a_deleted_cloud_map_service_is_drift_that_one_apply_repairs_and_revert_restores(local_aws, run_cli, applied):
    release = applied.json["release"]
    old = _cloud_map_services(local_aws)["api"]
    _delete_out_of_band(local_aws, old["Id"])

    drift = run_cli("drift", "--env", "local", "--json")
    assert drift.code == 2
    found = {(d["kind"], d["name"], d["field"]) for d in drift.json["drift"]}
    assert ("cloud_map_service", "api.dmp-local.internal", "(resource)") in found
    # The api's ECS service still names the deleted registry by ARN: that is drift too, and repaired with it.
    assert ("service", "dmp-local-api", "service_registries") in found

    reverted = run_cli("revert", "--env", "local", "--to", str(release), "--json")
    assert reverted.code == 0, reverted.json.get("error")
    new = _cloud_map_services(local_aws)["api"]
    assert new["Id"] != old["Id"]
    assert _ecs_registries(local_aws)["dmp-local-api"] == [new["Arn"]]
    assert run_cli("drift", "--env", "local").code == 0

    _delete_out_of_band(local_aws, new["Id"])  # once more, repaired by a plain apply this time
    plan = run_cli("plan", "--env", "local", "--json")
    assert [(c["kind"], c["name"], c["action"]) for c in plan.json["changes"]] == [
        ("cloud_map_service", "api.dmp-local.internal", "create"), ("service", "dmp-local-api", "update")]
    result = run_cli("apply", "--env", "local", "--json")
    assert result.code == 0, result.json.get("error")
    assert _ecs_registries(local_aws)["dmp-local-api"] == [_cloud_map_services(local_aws)["api"]["Arn"]]
    assert run_cli("plan", "--env", "local").code == 0


def test_an_undeclared_owned_service_is_deleted_and_what_is_not_ours_is_left_alone(local_aws, run_cli, applied):
    sd = local_aws.client("servicediscovery")
    ours = _namespace_id(local_aws)
    records = {"RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}]}
    sd.create_service(Name="retired", NamespaceId=ours, DnsConfig=records,
                      Tags=[{"Key": k, "Value": v} for k, v in TAGS.items()])
    sd.create_service(Name="hand-made", NamespaceId=ours, DnsConfig=records)
    # Another environment in the same VPC: its namespace and its `api` are not this environment's.
    vpc = local_aws.client("ec2").describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["dmp-local"]}])["Vpcs"][0]
    operation = sd.create_private_dns_namespace(Name="dmp-other.internal", Vpc=vpc["VpcId"], Tags=[
        {"Key": "dmp:env", "Value": "other"}, {"Key": "dmp:managed-by", "Value": "dmp-deploy"}])["OperationId"]
    while sd.get_operation(OperationId=operation)["Operation"]["Status"] != "SUCCESS":
        pass
    other = _namespace_id(local_aws, "dmp-other.internal")
    sd.create_service(Name="api", NamespaceId=other, DnsConfig=records,
                      Tags=[{"Key": "dmp:env", "Value": "other"}, {"Key": "dmp:managed-by", "Value": "dmp-deploy"}])

    plan = run_cli("plan", "--env", "local", "--json")
    assert [(c["kind"], c["name"], c["action"]) for c in plan.json["changes"]] == [
        ("cloud_map_service", "retired.dmp-local.internal", "delete")]
    result = run_cli("apply", "--env", "local", "--json")
    assert result.code == 0, result.json.get("error")
    assert sorted(_cloud_map_services(local_aws)) == sorted([*APPS, "hand-made"])
    theirs = sd.list_services(Filters=[{"Name": "NAMESPACE_ID", "Values": [other], "Condition": "EQ"}])["Services"]
    assert [s["Name"] for s in theirs] == ["api"]
    assert run_cli("plan", "--env", "local").code == 0


def test_the_security_groups_allow_every_call_the_derived_urls_make():
    """Names resolving is not enough: each task that calls an internal URL may leave on that port to the app's
    group, and the app's group admits it (DNS to the VPC resolver is never filtered by security groups)."""
    state = render_only("staging")
    rules = state.resources["security_group_rules"]
    caller_group = {**{app: app for app in APPS}, "db-migration": "api", "add-users": "add-users"}
    calls = set()
    for stem, document in state.task_definitions.items():
        for container in document["containerDefinitions"]:
            for variable in container.get("environment") or []:
                for host, port in re.findall(r"http://([a-z-]+)\.dmp-staging\.internal:(\d+)", variable["value"]):
                    calls.add((stem, host, int(port)))
    assert {(s, h) for s, h, _ in calls} >= {("router", "api"), ("router", "search-api"), ("router", "antivirus-api"),
                                             ("api", "search-api"), ("buyer-frontend", "search-api"),
                                             ("add-users", "api"), *((f, "api") for f in FRONTEND_STEMS)}
    for stem, host, port in sorted(calls):
        source, target = f"dmp-staging-{caller_group[stem]}", f"dmp-staging-{host}"
        rule = {"protocol": "tcp", "from_port": port, "to_port": port}
        assert {**rule, "peer": {"group": target}} in rules[source]["egress"], (stem, host)
        assert {**rule, "peer": {"group": source}} in rules[target]["ingress"], (stem, host)


FRONTEND_STEMS = ("buyer-frontend", "supplier-frontend", "briefs-frontend", "brief-responses-frontend",
                  "admin-frontend", "user-frontend")


def test_a_setting_naming_a_host_inside_the_namespace_that_is_no_app_is_refused(tmp_path, monkeypatch):
    load = _config_with(tmp_path, monkeypatch, 'elasticsearch_host = "https://opensearch.dmp-local.invalid:443"',
                        'elasticsearch_host = "https://opensearch.dmp-local.internal:443"')
    with pytest.raises(ConfigError, match=r"settings\.elasticsearch_host: opensearch\.dmp-local\.internal is inside "
                                          r"the service discovery namespace dmp-local\.internal"):
        load()
    # An app's own name there is fine (the router's DM_FRONTEND_URL may name one), and so is another domain.
    assert _config_with(tmp_path, monkeypatch, 'elasticsearch_host = "https://opensearch.dmp-local.invalid:443"',
                        'elasticsearch_host = "https://search-api.dmp-local.internal:8080"')()
    assert _config_with(tmp_path, monkeypatch, 'elasticsearch_host = "https://opensearch.dmp-local.invalid:443"',
                        'elasticsearch_host = "https://vpc-search.eu-west-2.es.amazonaws.com"')()
