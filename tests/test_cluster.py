"""The ECS cluster: canonical form, create, converge, out-of-band changes repaired in place, guarded delete."""

import pytest

from dmp_deploy import desired as desired_state
from dmp_deploy.aws import Aws
from dmp_deploy.config import load_config
from dmp_deploy.errors import ApplyError
from dmp_deploy.resources.base import Context, Live
from dmp_deploy.resources.cluster import Cluster, container_insights, live_spec, strategy

CLUSTER = "dmp-local"


@pytest.mark.parametrize("items, expected", [
    (None, []),
    ([{"capacityProvider": "FARGATE", "weight": 1}], [{"capacityProvider": "FARGATE", "weight": 1, "base": 0}]),
    ([{"capacityProvider": "FARGATE_SPOT", "weight": 3, "base": 1}, {"capacityProvider": "FARGATE"}],
     [{"capacityProvider": "FARGATE", "weight": 0, "base": 0},
      {"capacityProvider": "FARGATE_SPOT", "weight": 3, "base": 1}]),
])
def test_strategy_is_canonical(items, expected):
    assert strategy(items) == expected


@pytest.mark.parametrize("settings, expected", [
    (None, "disabled"),
    ([], "disabled"),
    ([{"name": "containerInsights", "value": "enhanced"}], "enhanced"),
    ([{"name": "other", "value": "x"}, {"name": "containerInsights", "value": "enabled"}], "enabled"),
])
def test_container_insights_from_settings(settings, expected):
    assert container_insights(settings) == expected


def test_live_spec_reads_aws_answer_in_canonical_form():
    answer = {"clusterArn": "arn", "status": "ACTIVE",
              "settings": [{"name": "containerInsights", "value": "enabled"}],
              "capacityProviders": ["FARGATE_SPOT", "FARGATE"],
              "defaultCapacityProviderStrategy": [{"capacityProvider": "FARGATE", "weight": 1, "base": 0}],
              "tags": [{"key": "b", "value": "2"}, {"key": "a", "value": "1"}]}
    assert live_spec(answer) == {
        "container_insights": "enabled", "capacity_providers": ["FARGATE", "FARGATE_SPOT"],
        "default_capacity_provider_strategy": [{"capacityProvider": "FARGATE", "weight": 1, "base": 0}],
        "tags": {"a": "1", "b": "2"}}


def _cluster(ecs):
    (c,) = ecs.describe_clusters(clusters=[CLUSTER], include=["SETTINGS", "TAGS"])["clusters"]
    return c


def test_apply_creates_cluster_and_second_apply_makes_no_mutating_call(local_aws, run_cli):
    first = run_cli("apply", "--env", "local", "--json")
    assert first.code == 0, first.stderr
    assert ("cluster", CLUSTER, "create") in [(c["kind"], c["name"], c["action"]) for c in first.json["changes"]]
    c = _cluster(local_aws.client("ecs"))
    assert c["status"] == "ACTIVE"
    assert c["settings"] == [{"name": "containerInsights", "value": "enabled"}]
    assert sorted(c["capacityProviders"]) == ["FARGATE", "FARGATE_SPOT"]
    assert c["defaultCapacityProviderStrategy"] == [{"capacityProvider": "FARGATE", "weight": 1, "base": 0}]
    assert {t["key"]: t["value"] for t in c["tags"]} == {"dmp:env": "local", "dmp:managed-by": "dmp-deploy"}

    second = run_cli("apply", "--env", "local", "--json")
    assert second.code == 0, second.stderr
    assert second.json["changes"] == []
    assert second.json["calls"]["mutating"] == 0
    # One DescribeClusters read the whole cluster.
    assert second.json["calls"]["by_operation"]["ecs.describe_clusters"] == 1
    assert run_cli("plan", "--env", "local").code == 0


@pytest.mark.parametrize("change, fields", [
    (lambda ecs, arn: ecs.update_cluster(cluster=CLUSTER, settings=[{"name": "containerInsights",
                                                                     "value": "disabled"}]),
     ["container_insights"]),
    (lambda ecs, arn: ecs.put_cluster_capacity_providers(
        cluster=CLUSTER, capacityProviders=["FARGATE_SPOT"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 2}]),
     ["capacity_providers", "default_capacity_provider_strategy"]),
    (lambda ecs, arn: ecs.untag_resource(resourceArn=arn, tagKeys=["dmp:env"]), ["tags.dmp:env"]),
    (lambda ecs, arn: ecs.tag_resource(resourceArn=arn, tags=[{"key": "extra", "value": "x"}]), ["tags.extra"]),
])
def test_out_of_band_change_is_detected_and_repaired_in_place(local_aws, run_cli, change, fields):
    assert run_cli("apply", "--env", "local").code == 0
    ecs = local_aws.client("ecs")
    change(ecs, _cluster(ecs)["clusterArn"])

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    (c,) = [c for c in plan.json["changes"] if c["kind"] == "cluster"]
    assert (c["name"], c["action"]) == (CLUSTER, "update")
    assert [f["path"] for f in c["fields"]] == fields

    repair = run_cli("apply", "--env", "local", "--json")
    assert repair.code == 0, repair.stderr
    assert "ecs.create_cluster" not in repair.json["calls"]["by_operation"]
    assert run_cli("plan", "--env", "local").code == 0


def test_inactive_cluster_counts_as_absent_and_is_created_again(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    ecs = local_aws.client("ecs")
    ecs.delete_cluster(cluster=CLUSTER)
    assert _cluster(ecs)["status"] == "INACTIVE"

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    assert [(c["action"], c["name"]) for c in plan.json["changes"] if c["kind"] == "cluster"] == [
        ("create", CLUSTER)]
    assert run_cli("apply", "--env", "local").code == 0
    assert _cluster(ecs)["status"] == "ACTIVE"
    assert run_cli("plan", "--env", "local").code == 0


def _context(local_aws) -> Context:
    config = load_config("local")
    kind = Cluster()
    state = desired_state.build(config, [kind])
    aws = Aws(local_aws.region, endpoint_url=local_aws.endpoint,
              credentials={"aws_access_key_id": "local", "aws_secret_access_key": "local"})
    return Context(config, aws, state)


def test_create_refuses_a_cluster_that_appeared_since_the_plan(local_aws):
    ctx = _context(local_aws)
    local_aws.client("ecs").create_cluster(clusterName=CLUSTER)
    with pytest.raises(ApplyError, match="Run apply again"):
        Cluster().create(ctx, CLUSTER, ctx.desired.resources["cluster"][CLUSTER])
    assert ctx.aws.stats.mutating == {}


def test_delete_is_refused_while_the_cluster_has_services(local_aws):
    ctx = _context(local_aws)
    ecs = local_aws.client("ecs")
    ecs.create_cluster(clusterName=CLUSTER)
    ecs.create_service(cluster=CLUSTER, serviceName="dmp-local-api", desiredCount=0)
    live = Cluster().read(ctx)[CLUSTER]

    with pytest.raises(ApplyError, match="still has 1 service.*dmp-local-api"):
        Cluster().delete(ctx, CLUSTER, live)
    assert _cluster(ecs)["status"] == "ACTIVE"

    ecs.delete_service(cluster=CLUSTER, service="dmp-local-api", force=True)
    Cluster().delete(ctx, CLUSTER, live)
    assert _cluster(ecs)["status"] == "INACTIVE"
    assert Cluster().read(ctx) == {}


def test_read_registers_the_cluster_arn(local_aws):
    ctx = _context(local_aws)
    arn = local_aws.client("ecs").create_cluster(clusterName=CLUSTER)["cluster"]["clusterArn"]
    live = Cluster().read(ctx)
    assert isinstance(live[CLUSTER], Live) and live[CLUSTER].ids == {"arn": arn}
    assert ctx.registry.get("cluster", CLUSTER, "arn") == arn
