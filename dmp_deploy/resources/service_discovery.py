"""Service discovery: the environment's private DNS namespace in AWS Cloud Map (kind `cloud_map_namespace`)
and one Cloud Map service per app in it (kind `cloud_map_service`), which the app's ECS service registers its
tasks in (services.py `service_registries`). Inside the VPC, `api.dmp-staging.internal` then answers with the
private IPs of the api's healthy tasks, and every internal URL the templates use is derived from these names
(`internal_url("api")`, names.py). docs/architecture.md says why Cloud Map rather than ECS Service Connect.

Canonical forms:

    namespace `dmp-local.internal` (names.namespace):
      {"description": "...", "tags": {...}}
    service `api.dmp-local.internal` (names.discovery_service), named by its DNS name:
      {
        "namespace": "dmp-local.internal",      # by name; the namespace id is resolved through ctx.registry
        "routing_policy": "MULTIVALUE",         # up to 8 healthy A records per answer, in random order
        "dns_records": {"A": 10},               # record type -> TTL (seconds), one A record per task's IP
        "health_check": "custom",               # HealthCheckCustomConfig: ECS reports each task's health
        "description": "...", "tags": {...}
      }

The namespace is created in the VPC `network.vpc` resolves to. Its VPC cannot change afterwards and is not
read back (it lives on the namespace's Route 53 hosted zone): changing `network.vpc` means moving the whole
environment. What AWS cannot update in place (a service's namespace, routing policy, health check and record
types) is a replace; TTLs, descriptions and tags are updated in place.

Namespaces are created, updated and deleted by asynchronous operations: each change waits (GetOperation) for
its operation to succeed, and fails naming the operation's error otherwise. Services change synchronously.

Reads: ListNamespaces (private DNS ones) and their tags; ListServices filtered on our namespace's id and
their tags, concurrently. Ours are the declared names and whatever carries our dmp:env/dmp:managed-by tags;
anything else in the account (another environment's namespace, a hand-made service) is never touched.
A Cloud Map service still holding instances cannot be deleted: ECS deregisters a deleted service's tasks
first, which is why an undeclared ECS service is deleted before its Cloud Map service (deletes run in reverse
dependency order).
"""

from __future__ import annotations

import random
import time
from typing import Callable

from dmp_deploy import canonical, names
from dmp_deploy.apps import APPS
from dmp_deploy.aws import error_code, polling
from dmp_deploy.diff import field_changes
from dmp_deploy.errors import ApplyError
from dmp_deploy.plan import FieldChange
from dmp_deploy.resources.base import Context, Live, ResourceKind

NAMESPACE_KIND = "cloud_map_namespace"
SERVICE_KIND = "cloud_map_service"
ROUTING_POLICY = "MULTIVALUE"
# Seconds resolvers may cache an app's addresses: short, so that a task replaced by a rollout stops being
# called soon after ECS deregisters it.
RECORD_TTL = 10
HEALTH_CUSTOM = "custom"  # ECS reports task health (HealthCheckCustomConfig); AWS always uses threshold 1
OPERATION_TIMEOUT_SECONDS = 600  # a namespace operation normally takes well under a minute
NAMESPACE_ID_FILTER = "NAMESPACE_ID"


# ---------------------------------------------------------------------------------------------------------
# Pure pieces


def namespace_spec(config) -> dict:
    return {"description": f"Digital Marketplace {config.env}: the apps' private names (dmp-deploy)",
            "tags": config.resource_tags()}


def service_spec(config, app: str) -> dict:
    return {
        "namespace": names.namespace(config),
        "routing_policy": ROUTING_POLICY,
        "dns_records": {"A": RECORD_TTL},
        "health_check": HEALTH_CUSTOM,
        "description": f"The {app} app's tasks (dmp-deploy)",
        "tags": config.resource_tags(),
    }


def health_check(service: dict) -> str:
    """Which health check a Cloud Map service uses: ECS's (custom), Route 53's, or none."""
    if service.get("HealthCheckCustomConfig") is not None:
        return HEALTH_CUSTOM
    if service.get("HealthCheckConfig") is not None:
        return "route53"
    return "none"


def live_service_spec(service: dict, namespace_name: str, tags: dict[str, str]) -> dict:
    """A ListServices summary in canonical form (the namespace is the one it was listed in)."""
    dns = service.get("DnsConfig") or {}
    return {
        "namespace": namespace_name,
        "routing_policy": dns.get("RoutingPolicy") or "none",
        "dns_records": {r["Type"]: r.get("TTL") for r in dns.get("DnsRecords") or []},
        "health_check": health_check(service),
        "description": service.get("Description") or "",
        "tags": tags,
    }


def dns_config(spec: dict) -> dict:
    return {"RoutingPolicy": spec["routing_policy"],
            "DnsRecords": [{"Type": t, "TTL": ttl} for t, ttl in sorted(spec["dns_records"].items())]}


def owned(tags: dict[str, str], env: str) -> bool:
    return tags.get("dmp:managed-by") == "dmp-deploy" and tags.get("dmp:env") == env


def wait_for_operation(ctx: Context, operation_id: str, what: str) -> dict:
    """Poll GetOperation until the operation succeeds (returning it) or fails (ApplyError naming its error)."""
    poll = ctx.config.deployment.rollout_poll_seconds
    deadline = time.monotonic() + OPERATION_TIMEOUT_SECONDS
    while True:
        with polling("cloud map operation"):
            operation = ctx.aws.call("servicediscovery", "get_operation", OperationId=operation_id)["Operation"]
        status = operation.get("Status")
        if status == "SUCCESS":
            return operation
        if status == "FAIL":
            raise ApplyError(f"{what}: Cloud Map operation {operation_id} failed: "
                             f"{operation.get('ErrorCode', 'error')}: {operation.get('ErrorMessage', 'no message')}. "
                             f"Fix the cause and run apply again.")
        if time.monotonic() >= deadline:
            raise ApplyError(f"{what}: Cloud Map operation {operation_id} was still {status} after "
                             f"{OPERATION_TIMEOUT_SECONDS} s. Run apply again once it has finished "
                             f"(`aws servicediscovery get-operation --operation-id {operation_id}`).")
        time.sleep(poll * random.uniform(0.8, 1.2))


# ---------------------------------------------------------------------------------------------------------
# The namespace


def namespaces(ctx: Context) -> tuple[list[dict], list[dict]]:
    """The account's private DNS namespaces and their tags (memoised)."""
    def read():
        found = ctx.aws.pages("servicediscovery", "list_namespaces", "Namespaces",
                              Filters=[{"Name": "TYPE", "Values": ["DNS_PRIVATE"], "Condition": "EQ"}])
        found = [n for n in found if n.get("Type", "DNS_PRIVATE") == "DNS_PRIVATE"]
        return found, ctx.map(lambda n: canonical.tags_from_list(ctx.aws.call(
            "servicediscovery", "list_tags_for_resource", ResourceARN=n["Arn"]).get("Tags")), found)
    return ctx.memo("servicediscovery: private DNS namespaces", read)


def services_in(ctx: Context, namespace_id: str, share: Callable = Context.take) -> tuple[list[dict], list[dict]]:
    """The Cloud Map services of a namespace and their tags: `share` is Context.memo for the prefetch,
    Context.take for the read."""
    def read():
        found = ctx.aws.pages("servicediscovery", "list_services", "Services", Filters=[
            {"Name": NAMESPACE_ID_FILTER, "Values": [namespace_id], "Condition": "EQ"}])
        return found, ctx.map(lambda s: canonical.tags_from_list(ctx.aws.call(
            "servicediscovery", "list_tags_for_resource", ResourceARN=s["Arn"]).get("Tags")), found)
    return share(ctx, f"servicediscovery: services of {namespace_id}", read)


class Namespaces(ResourceKind):
    kind = NAMESPACE_KIND

    def desired(self, state) -> dict[str, dict]:
        return {names.namespace(state.config): namespace_spec(state.config)}

    def prefetch(self, ctx: Context) -> None:
        namespaces(ctx)

    def read(self, ctx: Context) -> dict[str, Live]:
        found, tags = namespaces(ctx)
        declared = ctx.desired.resources.get(self.kind, {})
        out = {}
        for namespace, its_tags in zip(found, tags):
            name = namespace["Name"]
            if name not in declared and not owned(its_tags, ctx.config.env):
                continue  # another environment's, or nobody's we know: never touched
            ctx.registry.put(self.kind, name, id=namespace["Id"], arn=namespace["Arn"])
            out[name] = Live(spec={"description": namespace.get("Description") or "", "tags": its_tags},
                             ids={"id": namespace["Id"], "arn": namespace["Arn"]})
        return out

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        try:
            answer = ctx.aws.call("servicediscovery", "create_private_dns_namespace", Name=name,
                                  Vpc=ctx.lookups["vpc_id"], Description=spec["description"],
                                  Tags=canonical.tags_to_list(spec["tags"]))
        except Exception as exc:
            if error_code(exc) in ("NamespaceAlreadyExists", "ConflictingDomainExists"):
                raise ApplyError(
                    f"create namespace {name}: AWS says it exists already ({error_code(exc)}), but it was not listed: "
                    f"it is still being created (an interrupted apply: run apply again in a minute), or a Route 53 "
                    f"private hosted zone named {name} is associated with the VPC. Nothing was changed.") from None
            raise
        operation = wait_for_operation(ctx, answer["OperationId"], f"create namespace {name}")
        namespace_id = operation["Targets"]["NAMESPACE"]
        arn = ctx.aws.call("servicediscovery", "get_namespace", Id=namespace_id)["Namespace"]["Arn"]
        ctx.registry.put(self.kind, name, id=namespace_id, arn=arn)

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        if spec["description"] != live.spec["description"]:
            answer = ctx.aws.call("servicediscovery", "update_private_dns_namespace", Id=live.ids["id"],
                                  Namespace={"Description": spec["description"]})
            wait_for_operation(ctx, answer["OperationId"], f"update namespace {name}")
        _retag(ctx, live.ids["arn"], spec["tags"], live.spec["tags"])

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        answer = ctx.aws.call("servicediscovery", "delete_namespace", Id=live.ids["id"])
        wait_for_operation(ctx, answer["OperationId"], f"delete namespace {name}")


# ---------------------------------------------------------------------------------------------------------
# One Cloud Map service per app


class DiscoveryServices(ResourceKind):
    kind = SERVICE_KIND
    depends_on = (NAMESPACE_KIND,)
    replace_fields = frozenset({"namespace", "routing_policy", "health_check"})

    def desired(self, state) -> dict[str, dict]:
        return {names.discovery_service(state.config, app): service_spec(state.config, app) for app in sorted(APPS)}

    def prefetch(self, ctx: Context) -> None:
        # The namespace kind registers ours by name, declared or tagged as ours; a declared one is the usual case
        # and needs nothing the namespace kind decides, so its services are read without waiting for that kind.
        namespace = names.namespace(ctx.config)
        for entry in namespaces(ctx)[0]:
            if entry["Name"] == namespace:
                services_in(ctx, entry["Id"], Context.memo)

    def read(self, ctx: Context) -> dict[str, Live]:
        namespace = names.namespace(ctx.config)
        namespace_id = ctx.registry.find(NAMESPACE_KIND, namespace, "id")
        if not namespace_id:
            return {}  # no namespace yet: nothing in it
        found, tags = services_in(ctx, namespace_id)
        declared = ctx.desired.resources.get(self.kind, {})
        out = {}
        for service, its_tags in zip(found, tags):
            name = f"{service['Name']}.{namespace}"
            if name not in declared and not owned(its_tags, ctx.config.env):
                continue
            ctx.registry.put(self.kind, name, id=service["Id"], arn=service["Arn"])
            out[name] = Live(spec=live_service_spec(service, namespace, its_tags),
                             ids={"id": service["Id"], "arn": service["Arn"]})
        return out

    def diff(self, name: str, desired: dict, live: Live) -> list[FieldChange]:
        changes = field_changes(desired, live.spec, self.replace_fields)
        if set(desired["dns_records"]) != set(live.spec["dns_records"]):
            # Record types are fixed at creation (UpdateService changes TTLs only): another set is a replace.
            changes = [c for c in changes if not c.path.startswith("dns_records")]
            changes.append(FieldChange("dns_records", live.spec["dns_records"], desired["dns_records"],
                                       forces_replace=True))
        return changes

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        service = ctx.aws.call(
            "servicediscovery", "create_service", Name=name.split(".", 1)[0],
            NamespaceId=ctx.registry.get(NAMESPACE_KIND, spec["namespace"], "id"),
            DnsConfig=dns_config(spec), HealthCheckCustomConfig={"FailureThreshold": 1},
            Description=spec["description"], Tags=canonical.tags_to_list(spec["tags"]))["Service"]
        ctx.registry.put(self.kind, name, id=service["Id"], arn=service["Arn"])

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        have = live.spec
        if spec["dns_records"] != have["dns_records"] or spec["description"] != have["description"]:
            # UpdateService replaces the whole change set: records left out would be deleted, so send both.
            answer = ctx.aws.call("servicediscovery", "update_service", Id=live.ids["id"], Service={
                "Description": spec["description"],
                "DnsConfig": {"DnsRecords": dns_config(spec)["DnsRecords"]}})
            wait_for_operation(ctx, answer["OperationId"], f"update Cloud Map service {name}")
        _retag(ctx, live.ids["arn"], spec["tags"], have["tags"])

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        try:
            ctx.aws.call("servicediscovery", "delete_service", Id=live.ids["id"])
        except Exception as exc:
            if error_code(exc) == "ServiceNotFound":
                return  # already gone
            if error_code(exc) == "ResourceInUse":
                raise ApplyError(f"Cloud Map service {name} still has registered instances (an ECS service "
                                 f"still registers its tasks in it, or ECS has not finished deregistering "
                                 f"them). Nothing was deleted; run apply again in a minute.") from None
            raise


def _retag(ctx: Context, arn: str, want: dict[str, str], have: dict[str, str]) -> None:
    stale = sorted(set(have) - set(want))
    if stale:
        ctx.aws.call("servicediscovery", "untag_resource", ResourceARN=arn, TagKeys=stale)
    changed = {k: v for k, v in want.items() if have.get(k) != v}
    if changed:
        ctx.aws.call("servicediscovery", "tag_resource", ResourceARN=arn, Tags=canonical.tags_to_list(changed))
