"""ECS services: one per Digital Marketplace app (apps.py APPS), named `names.family(config, app)`, on the
environment's cluster, and the rollouts that changing them starts.

Canonical form:

    {
      "task_definition": "dmp-local-api",      # the family: "runs the revision of the current template".
                                               # Live: the family when the service runs exactly the revision
                                               # the task_definition kind deploys and keeps in this run
                                               # (tds.deployed_family), else that revision ("dmp-local-api:6")
      "desired_count": 1,
      "capacity_provider_strategy": [{"capacityProvider": "FARGATE", "weight": 1, "base": 0}],
      "subnets": "network.subnets",            # the config lookup; live ids that are not its answer are listed
      "security_groups": ["dmp-local-api", "dmp-local-postgres-clients"],  # NAMES, sorted; unknown ids stay ids
      "assign_public_ip": "DISABLED",
      "load_balancers": [{"targetGroupArn": "dmp-local-router", "containerName": "http", "containerPort": 80}],
                                               # our target groups by NAME (their ARNs are random), others by ARN
      "service_registries": ["api.dmp-local.internal"],  # Cloud Map services by NAME; unknown ARNs stay ARNs
      "health_check_grace_period_seconds": 60, # 0 without a load balancer
      "deployment_circuit_breaker": {"enable": true, "rollback": true},
      "minimum_healthy_percent": 100, "maximum_percent": 200,
      "enable_execute_command": false,
      "propagate_tags": "SERVICE", "enable_ecs_managed_tags": true,
      "tags": {...}
    }

Capacity: every service names its capacity provider strategy explicitly, the cluster's default from config
(`cluster.default_capacity_provider`), rather than a launch type: a service created without either takes the
cluster's default once and keeps it, so an explicit strategy is what makes a config change reach services.
Tasks' tags are propagated from the SERVICE (ownership and environment), with ECS's managed tags on.

Reads: ListServices on the cluster and DescribeServices (with TAGS) in batches of 10, shared with the
task_definition kind through the run's context (`cluster_services`); whether the revision a service runs is up to
date is the task_definition kind's answer in the registry (a revision with the template's content that is not the
family's deployed one, e.g. superseded by a revision registered in this apply, is not): in a no-op plan this kind
makes no call of its own. Everything is updated in place with UpdateService; tags with
TagResource/UntagResource. An owned service no longer declared is scaled to 0 and deleted (force).

After the changes, `settle` waits for every service whose rollout they started (rollout.py) and raises
ApplyError naming each failed one, what it runs now and why its tasks stopped.

Start order (apps.START_ORDER): apply changes the services tier by tier, the APIs, then the frontends that
call them while starting, then the router, and a service of a later tier is changed only once every rollout
an earlier tier started in this apply has succeeded: a failed api rollout fails the apply before any frontend
is touched. Before the first service changes, the steps a command put in `ctx.before_services` run once
(`apply --migrate`: the db-migration task, which must exit 0). The services of one tier change at the same time
(the executor starts a tier once every change of the tiers before it is done, `change_order`); the first of them
to reach the start gate (`StartGate`) runs the steps and waits for the earlier tiers' rollouts while the others
wait for it, and a failed step or rollout fails every one of them without a change.
"""

from __future__ import annotations

import threading

from dmp_deploy import names, rollout
from dmp_deploy.apps import APPS, START_ORDER, start_tier
from dmp_deploy.aws import error_code, polling
from dmp_deploy.config import Config
from dmp_deploy.errors import ApplyError, ConfigError
from dmp_deploy.plan import FieldChange
from dmp_deploy.resources import task_definitions as tds
from dmp_deploy.resources.base import Context, Live, ResourceKind
from dmp_deploy.resources.cluster import strategy as canonical_strategy
from dmp_deploy.resources.load_balancers import RULES_KIND, TG_KIND as TARGET_GROUP_KIND, service_target_group

KIND = "service"
SUBNETS_LOOKUP = "network.subnets"  # the canonical value for "the private subnets the config looks up"
HEALTH_CHECK_GRACE_SECONDS = 60  # behind a load balancer: time to pass the target group's health checks
PROPAGATE_TAGS = "SERVICE"
DESCRIBE_BATCH = 10  # DescribeServices takes at most 10 services a call
LIST_PAGE = 100  # ListServices returns at most 100 ARNs a page (10 unless asked)
# Fields whose change starts a deployment (or scales one): apply waits for those services.
ROLLOUT_FIELDS = frozenset({"task_definition", "desired_count", "capacity_provider_strategy", "subnets",
                            "security_groups", "assign_public_ip", "load_balancers", "enable_execute_command",
                            "service_registries"})
NETWORK_FIELDS = frozenset({"subnets", "security_groups", "assign_public_ip"})
DEPLOYMENT_FIELDS = frozenset({"deployment_circuit_breaker", "minimum_healthy_percent", "maximum_percent"})


# ---------------------------------------------------------------------------------------------------------
# Pure pieces: what an app's service (and its one-off tasks) should look like


def security_group_names(config: Config, app: str) -> list[str]:
    """The groups an app's tasks run in: its own, plus the clients group of each backing service it uses."""
    return sorted([names.security_group(config, app),
                   *(names.security_group(config, f"{svc}-clients") for svc in APPS[app].backing)])


def capacity_provider_strategy(config: Config) -> list[dict]:
    return canonical_strategy([{"capacityProvider": config.cluster.default_capacity_provider, "weight": 1}])


def load_balancers(config: Config, app: str, task_definition: dict) -> list[dict]:
    """The app's target group (load_balancers.service_target_group: ours by name, or the configured existing
    ARN), on the container that listens on its port."""
    target_group = service_target_group(config, app)
    if not target_group:
        return []
    port = APPS[app].port
    container = next((c["name"] for c in task_definition.get("containerDefinitions", [])
                      if any(m.get("containerPort") == port for m in c.get("portMappings") or [])), None)
    if container is None:
        raise ConfigError(f"task_definitions/{app}.json.j2 has no container listening on port {port} for its "
                          f"target group {target_group}")
    return [{"targetGroupArn": target_group, "containerName": container, "containerPort": port}]


def load_balancers_for_api(ctx: Context, specs: list[dict]) -> list[dict]:
    """The spec's load balancers with our target groups' names resolved to ARNs."""
    return [{**lb, "targetGroupArn": lb["targetGroupArn"] if lb["targetGroupArn"].startswith("arn:")
             else ctx.registry.get(TARGET_GROUP_KIND, lb["targetGroupArn"], "arn")} for lb in specs]


def desired_spec(config: Config, app: str, task_definition: dict) -> dict:
    lbs = load_balancers(config, app, task_definition)
    return {
        "task_definition": names.family(config, app),
        "desired_count": config.apps[app].desired_count,
        "capacity_provider_strategy": capacity_provider_strategy(config),
        "subnets": SUBNETS_LOOKUP,
        "security_groups": security_group_names(config, app),
        "assign_public_ip": "DISABLED",
        "load_balancers": lbs,
        "service_registries": [names.discovery_service(config, app)],
        "health_check_grace_period_seconds": HEALTH_CHECK_GRACE_SECONDS if lbs else 0,
        "deployment_circuit_breaker": {"enable": True, "rollback": True},
        "minimum_healthy_percent": config.deployment.minimum_healthy_percent,
        "maximum_percent": config.deployment.maximum_percent,
        "enable_execute_command": config.apps[app].enable_execute_command,
        "propagate_tags": PROPAGATE_TAGS,
        "enable_ecs_managed_tags": True,
        "tags": config.resource_tags(),
    }


def live_spec(service: dict, group_names: dict[str, str], subnet_ids: list[str], up_to_date: set[str],
              target_group_names: dict[str, str] | None = None,
              registry_names: dict[str, str] | None = None) -> dict:
    """A DescribeServices entry in canonical form. `group_names` maps our groups' ids to names, `subnet_ids`
    is what network.subnets resolves to, `up_to_date` holds the revision ARNs that are their family's deployed one,
    `target_group_names` maps our target groups' ARNs to names, `registry_names` our Cloud Map services'."""
    tg_names = target_group_names or {}
    vpc = (service.get("networkConfiguration") or {}).get("awsvpcConfiguration") or {}
    deployment = service.get("deploymentConfiguration") or {}
    breaker = deployment.get("deploymentCircuitBreaker") or {}
    running = service.get("taskDefinition")
    subnets = sorted(vpc.get("subnets") or [])
    lbs = sorted(({"targetGroupArn": tg_names.get(lb.get("targetGroupArn"), lb.get("targetGroupArn")),
                   "containerName": lb.get("containerName"),
                   "containerPort": lb.get("containerPort")} for lb in service.get("loadBalancers") or []),
                 key=lambda lb: (lb["targetGroupArn"] or "", lb["containerName"] or ""))
    if service.get("capacityProviderStrategy"):
        capacity = canonical_strategy(service["capacityProviderStrategy"])
    else:
        capacity = f"launch type {service.get('launchType') or 'EC2'}"
    return {
        "task_definition": rollout.revision(running).split(":")[0] if running in up_to_date
        else rollout.revision(running),
        "desired_count": service.get("desiredCount"),
        "capacity_provider_strategy": capacity,
        "subnets": SUBNETS_LOOKUP if subnets and subnets == sorted(subnet_ids) else subnets,
        "security_groups": sorted(group_names.get(g, g) for g in vpc.get("securityGroups") or []),
        "assign_public_ip": vpc.get("assignPublicIp", "DISABLED"),
        "load_balancers": lbs,
        "service_registries": sorted((registry_names or {}).get(r.get("registryArn"), r.get("registryArn"))
                                     for r in service.get("serviceRegistries") or []),
        "health_check_grace_period_seconds": service.get("healthCheckGracePeriodSeconds") or 0,
        "deployment_circuit_breaker": {"enable": bool(breaker.get("enable")),
                                       "rollback": bool(breaker.get("rollback"))},
        "minimum_healthy_percent": deployment.get("minimumHealthyPercent"),
        "maximum_percent": deployment.get("maximumPercent"),
        "enable_execute_command": bool(service.get("enableExecuteCommand")),
        "propagate_tags": service.get("propagateTags") or "NONE",
        "enable_ecs_managed_tags": bool(service.get("enableECSManagedTags")),
        "tags": {t["key"]: t.get("value", "") for t in service.get("tags") or []
                 if not t["key"].startswith("aws:")},
    }


def network_configuration(ctx: Context, group_names: list[str]) -> dict:
    """awsvpcConfiguration for an app's tasks: the private subnets, the groups by id, no public IP."""
    return {"awsvpcConfiguration": {
        "subnets": list(ctx.lookups["subnet_ids"]),
        "securityGroups": [ctx.registry.get("security_group", g, "id") for g in group_names],
        "assignPublicIp": "DISABLED",
    }}


def service_registries(ctx: Context, spec: dict) -> list[dict]:
    """serviceRegistries for ECS: each Cloud Map service's ARN. A records on awsvpc tasks need no port."""
    return [{"registryArn": ctx.registry.get("cloud_map_service", r, "arn")}
            for r in spec.get("service_registries") or []]  # a release recorded before registries: none


def _app_of(config: Config, service_name: str) -> str | None:
    return next((app for app in APPS if names.family(config, app) == service_name), None)


def _tag_list(tags: dict[str, str]) -> list[dict]:
    return [{"key": k, "value": v} for k, v in sorted(tags.items())]


def cluster_services(ctx: Context) -> list[dict]:
    """Every service of the environment's cluster, described with its tags: ListServices (100 ARNs a page; its
    default is 10), then DescribeServices (10 a call) concurrently. Read once per run (memoised on the context):
    the task_definition kind needs what they run, this kind their settings. Empty when there is no cluster."""
    def read() -> list[dict]:
        cluster = names.cluster(ctx.config)
        try:
            arns = ctx.aws.pages("ecs", "list_services", "serviceArns", cluster=cluster, maxResults=LIST_PAGE)
        except Exception as exc:
            if error_code(exc) == "ClusterNotFoundException":
                return []  # no cluster yet: no services
            raise
        batches = [arns[i:i + DESCRIBE_BATCH] for i in range(0, len(arns), DESCRIBE_BATCH)]
        return [s for answer in ctx.map(
            lambda batch: ctx.aws.call("ecs", "describe_services", cluster=cluster, services=batch,
                                       include=["TAGS"]).get("services", []), batches) for s in answer]

    return ctx.memo("ecs: services of the cluster", read)


# ---------------------------------------------------------------------------------------------------------
# The kind


class Services(ResourceKind):
    kind = KIND
    # ECS refuses a target group no load balancer uses: a frontend's is used once a listener rule forwards to it.
    depends_on = ("cluster", "task_definition", "security_group", "iam_role", "log_group", TARGET_GROUP_KIND,
                  RULES_KIND, "cloud_map_service")

    def desired(self, state) -> dict[str, dict]:
        config = state.config
        return {names.family(config, app): desired_spec(config, app, state.task_definitions[app])
                for app in sorted(APPS) if app in state.task_definitions}

    def prefetch(self, ctx: Context) -> None:
        cluster_services(ctx)

    def read(self, ctx: Context) -> dict[str, Live]:
        described = cluster_services(ctx)
        declared = ctx.desired.resources.get(self.kind, {})
        ours = []
        for service in described:
            if service.get("status") != "ACTIVE":
                continue  # DRAINING or INACTIVE: already being deleted
            tags = {t["key"]: t.get("value") for t in service.get("tags") or []}
            owned = tags.get("dmp:managed-by") == "dmp-deploy" and tags.get("dmp:env") == ctx.config.env
            if service["serviceName"] in declared or owned:
                ours.append(service)

        up_to_date = self._up_to_date_revisions(ctx, ours)
        group_names = ctx.registry.names_by("security_group", "id")
        tg_names = ctx.registry.names_by(TARGET_GROUP_KIND, "arn")
        registry_names = ctx.registry.names_by("cloud_map_service", "arn")
        out = {}
        for service in ours:
            name = service["serviceName"]
            ctx.registry.put(self.kind, name, arn=service["serviceArn"])
            out[name] = Live(
                spec=live_spec(service, group_names, ctx.lookups.get("subnet_ids", []), up_to_date, tg_names,
                               registry_names),
                ids={"arn": service["serviceArn"], "task_definition_arn": service.get("taskDefinition")},
            )
        return out

    @staticmethod
    def _up_to_date_revisions(ctx: Context, services: list[dict]) -> set[str]:
        """The revisions, among those the services run, that are exactly the revision the task_definition kind
        deploys for their family and keeps in this apply (tds.deployed_family): a service running any other, even
        one with the same content (deregistered out of band, or superseded by a revision registered now), is
        moved to the family's revision in the same apply."""
        return {s["taskDefinition"] for s in services
                if s.get("taskDefinition") and tds.deployed_family(ctx, s["taskDefinition"])}

    def diff(self, name: str, desired: dict, live: Live) -> list[FieldChange]:
        changes = super().diff(name, desired, live)
        # Say which revision "the template's" is: the plan reads "dmp-local-api:6 -> dmp-local-api (current
        # template)", the revision itself is known once the task_definition kind has registered it.
        return [FieldChange(c.path, c.before, f"{c.after} (the revision of the current template)")
                if c.path == "task_definition" else c for c in changes]

    # --- changes ---

    def change_order(self, config: Config, name: str) -> tuple:
        """Services change in start order: APIs, then frontends, then the router (apps.START_ORDER)."""
        app = _app_of(config, name)
        return (start_tier(app) if app else len(START_ORDER),)  # not an app (undeclared): last

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        self._start_in_order(ctx, name)
        task_definition = ctx.registry.get("task_definition", spec["task_definition"], "arn")
        params = {
            "cluster": names.cluster(ctx.config),
            "serviceName": name,
            "taskDefinition": task_definition,
            "desiredCount": spec["desired_count"],
            "capacityProviderStrategy": spec["capacity_provider_strategy"],
            "networkConfiguration": network_configuration(ctx, spec["security_groups"]),
            "deploymentConfiguration": self._deployment_configuration(spec),
            "deploymentController": {"type": "ECS"},
            "schedulingStrategy": "REPLICA",
            "enableExecuteCommand": spec["enable_execute_command"],
            "propagateTags": spec["propagate_tags"],
            "enableECSManagedTags": spec["enable_ecs_managed_tags"],
            "tags": _tag_list(spec["tags"]),
        }
        if spec["load_balancers"]:
            params["loadBalancers"] = load_balancers_for_api(ctx, spec["load_balancers"])
            params["healthCheckGracePeriodSeconds"] = spec["health_check_grace_period_seconds"]
        if spec.get("service_registries"):
            params["serviceRegistries"] = service_registries(ctx, spec)
        service = ctx.aws.call("ecs", "create_service", **params)["service"]
        ctx.registry.put(self.kind, name, arn=service["serviceArn"])
        self._expect_rollout(ctx, name, task_definition, service)

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes: list[FieldChange]) -> None:
        fields = {c.path.split(".")[0] for c in changes}
        if fields & ROLLOUT_FIELDS:
            self._start_in_order(ctx, name)
        params: dict = {}
        if "task_definition" in fields:
            params["taskDefinition"] = ctx.registry.get("task_definition", spec["task_definition"], "arn")
        if "desired_count" in fields:
            params["desiredCount"] = spec["desired_count"]
        if fields & NETWORK_FIELDS:
            params["networkConfiguration"] = network_configuration(ctx, spec["security_groups"])
        if fields & DEPLOYMENT_FIELDS:
            params["deploymentConfiguration"] = self._deployment_configuration(spec)
        if "capacity_provider_strategy" in fields:
            params["capacityProviderStrategy"] = spec["capacity_provider_strategy"]
            params["forceNewDeployment"] = True  # AWS requires it to move tasks to another strategy
        if "load_balancers" in fields:
            params["loadBalancers"] = load_balancers_for_api(ctx, spec["load_balancers"])
        if "service_registries" in fields:
            params["serviceRegistries"] = service_registries(ctx, spec)
        if "health_check_grace_period_seconds" in fields and spec["load_balancers"]:
            params["healthCheckGracePeriodSeconds"] = spec["health_check_grace_period_seconds"]
        if "enable_execute_command" in fields:
            params["enableExecuteCommand"] = spec["enable_execute_command"]
            params["forceNewDeployment"] = True  # running tasks only get (or lose) ECS Exec when replaced
        if "propagate_tags" in fields:
            params["propagateTags"] = spec["propagate_tags"]
        if "enable_ecs_managed_tags" in fields:
            params["enableECSManagedTags"] = spec["enable_ecs_managed_tags"]
        if params:
            service = ctx.aws.call("ecs", "update_service", cluster=names.cluster(ctx.config), service=name,
                                   **params)["service"]
            if fields & ROLLOUT_FIELDS:
                self._expect_rollout(ctx, name, params.get("taskDefinition") or live.ids["task_definition_arn"],
                                     service)
        if "tags" in fields:
            want, have = spec["tags"], live.spec["tags"]
            stale = sorted(set(have) - set(want))
            if stale:
                ctx.aws.call("ecs", "untag_resource", resourceArn=live.ids["arn"], tagKeys=stale)
            if any(have.get(k) != v for k, v in want.items()):
                ctx.aws.call("ecs", "tag_resource", resourceArn=live.ids["arn"], tags=_tag_list(want))

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        cluster = names.cluster(ctx.config)
        if live.spec.get("desired_count"):
            ctx.aws.call("ecs", "update_service", cluster=cluster, service=name, desiredCount=0)
        ctx.aws.call("ecs", "delete_service", cluster=cluster, service=name, force=True)

    def settle(self, ctx: Context, changes: list) -> None:
        """Wait for the rollouts the changes started; fail naming every service that did not roll out."""
        gate = self._gate(ctx)
        with gate.lock:
            targets = [gate.rollouts[c.name] for c in changes
                       if c.name in gate.rollouts and c.name not in gate.outcomes]
        if not targets:
            return
        deployment = ctx.config.deployment
        with polling("service rollouts"):
            outcomes = rollout.wait(ctx, names.cluster(ctx.config), targets, deployment.rollout_timeout_seconds,
                                    deployment.rollout_poll_seconds)
        if any(o.failed for o in outcomes):
            raise ApplyError(rollout.failure_message(outcomes))

    # --- helpers ---

    @staticmethod
    def _deployment_configuration(spec: dict) -> dict:
        return {"deploymentCircuitBreaker": dict(spec["deployment_circuit_breaker"]),
                "minimumHealthyPercent": spec["minimum_healthy_percent"],
                "maximumPercent": spec["maximum_percent"]}

    @staticmethod
    def _gate(ctx: Context) -> "StartGate":
        return ctx.memo("services: start gate", StartGate)

    def _start_in_order(self, ctx: Context, name: str) -> None:
        """Before a service's change starts a rollout: the command's steps before the first service change
        (once), then every rollout of an earlier start tier that this apply started must have succeeded.

        Changes of one tier run at the same time (executor.py: a tier starts only once every change of the
        tiers before it is done): one of them runs the steps and waits for the earlier tiers' rollouts while
        the others wait for it, then each of them goes ahead, or fails with what failed."""
        gate = self._gate(ctx)
        with gate.lock:
            if gate.step_failure:
                raise ApplyError(gate.step_failure)
            while ctx.before_services:
                step = ctx.before_services.pop(0)
                try:
                    step(ctx)
                except ApplyError as exc:
                    gate.step_failure = str(exc)
                    raise
                except Exception as exc:
                    gate.step_failure = (f"a step before the first service change failed: {type(exc).__name__}: "
                                         f"{exc}. No service was changed.")
                    raise ApplyError(gate.step_failure) from exc
            tier = self.change_order(ctx.config, name)
            earlier = [target for other, target in sorted(gate.rollouts.items())
                       if other not in gate.outcomes and self.change_order(ctx.config, other) < tier]
            if earlier:
                deployment = ctx.config.deployment
                with polling("service rollouts"):
                    outcomes = rollout.wait(ctx, names.cluster(ctx.config), earlier,
                                            deployment.rollout_timeout_seconds, deployment.rollout_poll_seconds)
                for outcome in outcomes:
                    gate.outcomes[outcome.service] = outcome
                    gate.waits.setdefault(outcome.service, earlier[0].service)
            # What was waited for, as one wait reported it (the first that failed, if any).
            waited = [gate.outcomes[o] for o in sorted(gate.outcomes) if self.change_order(ctx.config, o) < tier]
            failed = next((o for o in waited if o.failed), None)
            if failed is None:
                return
            together = [o for o in waited if gate.waits[o.service] == gate.waits[failed.service]]
        raise ApplyError(rollout.failure_message(together) + f"\n{name} and the services that start after "
                         f"it were not changed: they start only once the services they call have rolled out.")

    def _expect_rollout(self, ctx: Context, name: str, task_definition: str, answer: dict) -> None:
        """Remember what this service must end up running, and which of its events were there already."""
        gate = self._gate(ctx)
        with gate.lock:
            gate.rollouts[name] = rollout.Target(
                name, task_definition, frozenset(e.get("id") for e in answer.get("events") or []))


class StartGate:
    """The services' start order within one apply, shared by the service changes that run at the same time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rollouts: dict[str, rollout.Target] = {}  # the rollouts this apply started, by service
        self.outcomes: dict[str, rollout.Outcome] = {}  # those already waited for (before a later tier)
        self.waits: dict[str, str] = {}  # service -> the first service of the wait it was followed in
        self.step_failure: str | None = None  # a step of ctx.before_services failed: no service may change
