"""The ECS cluster: one per environment, named `names.cluster(config)`, where every service and one-off task runs.

Canonical form:

    {
      "container_insights": "enabled",        # the containerInsights setting ("disabled" when AWS lists none)
      "capacity_providers": ["FARGATE", "FARGATE_SPOT"],                       # sorted
      "default_capacity_provider_strategy": [{"capacityProvider": "FARGATE", "weight": 1, "base": 0}],
      "tags": {...},
    }

Read with one DescribeClusters (settings, configurations and tags included). A deleted cluster stays
visible as INACTIVE for a while: that counts as absent, and creating one with its name makes a new cluster.
Everything is updated in place (UpdateCluster for the setting, PutClusterCapacityProviders, tag and untag).
CreateCluster is never called on an ACTIVE cluster's name: moto resets the cluster's settings when it is,
and AWS does not behave the same way, so what would happen cannot be relied on.

The cluster is found by its derived name only: a cluster left behind by an earlier `name_prefix` belongs to
what is, by name, another environment and is not touched. Deleting the cluster is refused while it still
has services: they (and their tasks) must go first.
"""

from __future__ import annotations

from dmp_deploy import names
from dmp_deploy.errors import ApplyError
from dmp_deploy.resources.base import Context, Live, ResourceKind

CAPACITY_PROVIDERS = ("FARGATE", "FARGATE_SPOT")


def strategy(items: list[dict] | None) -> list[dict]:
    """A capacity provider strategy in canonical form: base 0 and weight 0 written out (AWS's defaults),
    sorted by provider."""
    return sorted(
        ({"capacityProvider": i["capacityProvider"], "weight": i.get("weight", 0), "base": i.get("base", 0)}
         for i in items or []),
        key=lambda i: i["capacityProvider"],
    )


def container_insights(settings: list[dict] | None) -> str:
    for setting in settings or []:
        if setting.get("name") == "containerInsights":
            return setting.get("value") or "disabled"
    return "disabled"


def live_spec(cluster: dict) -> dict:
    """A DescribeClusters entry in canonical form."""
    return {
        "container_insights": container_insights(cluster.get("settings")),
        "capacity_providers": sorted(cluster.get("capacityProviders") or []),
        "default_capacity_provider_strategy": strategy(cluster.get("defaultCapacityProviderStrategy")),
        "tags": {t["key"]: t.get("value", "") for t in cluster.get("tags") or []},
    }


def _tag_list(tags: dict[str, str]) -> list[dict]:
    return [{"key": k, "value": v} for k, v in sorted(tags.items())]


DESCRIBED = "ecs: the cluster"  # prefetched for the read (Context.take)


class Cluster(ResourceKind):
    kind = "cluster"

    def desired(self, state) -> dict[str, dict]:
        config = state.config
        return {names.cluster(config): {
            "container_insights": config.cluster.container_insights,
            "capacity_providers": sorted(CAPACITY_PROVIDERS),
            "default_capacity_provider_strategy": strategy(
                [{"capacityProvider": config.cluster.default_capacity_provider, "weight": 1}]),
            "tags": config.resource_tags(),
        }}

    def prefetch(self, ctx: Context) -> None:
        ctx.memo(DESCRIBED, lambda: self._describe(ctx, names.cluster(ctx.config)))

    def read(self, ctx: Context) -> dict[str, Live]:
        name = names.cluster(ctx.config)
        found = ctx.take(DESCRIBED, lambda: self._describe(ctx, name))
        if found is None:
            return {}
        ctx.registry.put(self.kind, name, arn=found["clusterArn"])
        return {name: Live(spec=live_spec(found), ids={"arn": found["clusterArn"]})}

    @staticmethod
    def _describe(ctx: Context, name: str) -> dict | None:
        """The ACTIVE cluster of that name, or None."""
        answer = ctx.aws.call("ecs", "describe_clusters", clusters=[name],
                              include=["SETTINGS", "CONFIGURATIONS", "TAGS"])
        active = [c for c in answer.get("clusters", []) if c.get("status") != "INACTIVE"]
        return active[0] if active else None

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        # The plan saw no ACTIVE cluster; if one appeared since, creating would reset or ignore its settings.
        if self._describe(ctx, name) is not None:
            raise ApplyError(f"cluster {name} was created by someone else since the plan was made; nothing was "
                             f"changed for it. Run apply again: it will update the cluster in place.")
        cluster = ctx.aws.call(
            "ecs", "create_cluster", clusterName=name,
            settings=[{"name": "containerInsights", "value": spec["container_insights"]}],
            capacityProviders=spec["capacity_providers"],
            defaultCapacityProviderStrategy=spec["default_capacity_provider_strategy"],
            tags=_tag_list(spec["tags"]),
        )["cluster"]
        ctx.registry.put(self.kind, name, arn=cluster["clusterArn"])

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        have = live.spec
        if spec["container_insights"] != have["container_insights"]:
            # UpdateCluster takes the settings too; moto has no UpdateClusterSettings.
            ctx.aws.call("ecs", "update_cluster", cluster=name,
                         settings=[{"name": "containerInsights", "value": spec["container_insights"]}])
        if (spec["capacity_providers"] != have["capacity_providers"]
                or spec["default_capacity_provider_strategy"] != have["default_capacity_provider_strategy"]):
            ctx.aws.call("ecs", "put_cluster_capacity_providers", cluster=name,
                         capacityProviders=spec["capacity_providers"],
                         defaultCapacityProviderStrategy=spec["default_capacity_provider_strategy"])
        want, got = spec["tags"], have["tags"]
        stale = sorted(set(got) - set(want))
        if stale:
            ctx.aws.call("ecs", "untag_resource", resourceArn=live.ids["arn"], tagKeys=stale)
        changed = {k: v for k, v in want.items() if got.get(k) != v}
        if changed:
            ctx.aws.call("ecs", "tag_resource", resourceArn=live.ids["arn"], tags=_tag_list(changed))

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        services = ctx.aws.pages("ecs", "list_services", "serviceArns", cluster=name)
        if services:
            listed = ", ".join(sorted(s.rsplit("/", 1)[-1] for s in services))
            raise ApplyError(f"cluster {name} still has {len(services)} service(s): {listed}. Nothing was "
                             f"deleted. Delete the services first, then run apply again.")
        ctx.aws.call("ecs", "delete_cluster", cluster=name)
