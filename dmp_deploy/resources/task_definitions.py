"""ECS task definitions: one family per template in task_definitions/ (the apps and the one-off tasks).

A revision cannot be changed, so reconciling a family means registering a new revision when, and only
when, its content differs from the family's latest ACTIVE revision. Content is compared in one canonical
form (`canonical_definition`, field-notes.md): only RegisterTaskDefinition's own fields; lists whose order
means nothing sorted (containers, environment, secrets, port mappings, volumes, ...); empty values and
zero defaults left out (`cpu: 0`, `mountPoints: []`, `readOnly: false`, an EFS `rootDirectory: "/"`, ...);
defaults that say something spelled out (`essential: true`, `hostPort` = `containerPort` and
`protocol: tcp` under awsvpc, the health check's interval, timeout and retries). A spec is that form plus
`tags`: config.resource_tags() and `dmp:content-hash`, the sha256 of the canonical JSON.

Each registered revision carries its content hash, and a revision whose hash tag equals the desired one is
unchanged whatever AWS added to it since; without the tag (or with another) the two are compared field by
field, and the plan names each field (`container.wsgi.environment.DM_SEARCH_API_URL`). Tags alone are
fixed on the revision in place.

Pruning: per family, the newest `deployment.keep_revisions` ACTIVE revisions are kept (the one about to
be registered counts), and so is every revision a service of the cluster runs or deploys when the plan is
made (a rollout's way back: once the service has moved on, a later apply prunes it if it is too old).
The others appear in the plan as deletes of `FAMILY:REVISION` and are deregistered after everything else. A family this
environment owns (by name prefix and tags) that no template declares any more is deregistered whole.
Deregistering holds no data: no --allow-destroy needed.

EFS volumes name the file system and access point by placeholder (efs.py, `with_ids`): the hash covers the
placeholders, and a live id that no longer reads back as the declared resource (it is being replaced) makes the
family register a revision with the new id in the same apply. Our load balancers' DNS names (the router's
DM_FRONTEND_URL) work the same way (load_balancers.py, `with_dns_names`).

Reads (a no-op plan): one account-wide ListTaskDefinitions of ACTIVE revisions, grouped by family here;
DescribeTaskDefinition of each family's target revision; the cluster's services (shared with the services
kind); the release index. The revisions, the descriptions and the services are memoised on the run's context
(`active_revisions`, `describe`, services.cluster_services), so no other kind reads them again.

The registry holds, per family, `arn`: the revision to run (the latest, or the one just registered).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dmp_deploy import names
from dmp_deploy.aws import error_code
from dmp_deploy.botocore_models import service_model
from dmp_deploy.plan import FieldChange
from dmp_deploy.resources import efs, load_balancers
from dmp_deploy.resources.base import Context, Live, ResourceKind

CONTENT_HASH_TAG = "dmp:content-hash"
LIST_PAGE = 100  # ListTaskDefinitions returns at most 100 ARNs a page

# Container fields whose list order means nothing, and the key to sort their items by.
UNORDERED_CONTAINER_LISTS = {
    "environment": lambda i: i.get("name", ""),
    "secrets": lambda i: i.get("name", ""),
    "environmentFiles": lambda i: (i.get("type", ""), i.get("value", "")),
    "dependsOn": lambda i: i.get("containerName", ""),
    "mountPoints": lambda i: (i.get("sourceVolume", ""), i.get("containerPath", "")),
    "volumesFrom": lambda i: i.get("sourceContainer", ""),
    "ulimits": lambda i: i.get("name", ""),
    "systemControls": lambda i: i.get("namespace", ""),
    "extraHosts": lambda i: (i.get("hostname", ""), i.get("ipAddress", "")),
    "portMappings": lambda i: (i.get("containerPort", 0), i.get("protocol", ""), i.get("name", "")),
}
# Values AWS reports when a field was left out and that say nothing: dropped from the canonical form.
SILENT_CONTAINER_DEFAULTS = {"cpu": 0, "versionConsistency": "enabled", "restartPolicy": {"enabled": False}}
SILENT_TASK_DEFAULTS = {"enableFaultInjection": False}
HEALTH_CHECK_DEFAULTS = {"interval": 30, "timeout": 5, "retries": 3}

# Plan paths: lists of named things become maps by name, so a change names the thing that changed.
NAMED_LISTS = {  # field -> (path label, key field)
    "containerDefinitions": ("container", "name"),
    "volumes": ("volume", "name"),
}
KEYED_VALUES = {  # field -> (key field, value field)
    "environment": ("name", "value"),
    "secrets": ("name", "valueFrom"),
    "dependsOn": ("containerName", "condition"),
}

_register_fields: frozenset[str] | None = None


def register_fields() -> frozenset[str]:
    """RegisterTaskDefinition's input fields (from botocore's model), less `tags`: the content of a revision.
    DescribeTaskDefinition's read-only fields (revision, status, registeredAt, ...) are not among them."""
    global _register_fields
    if _register_fields is None:
        shape = service_model("ecs").operation_model("RegisterTaskDefinition").input_shape
        _register_fields = frozenset(shape.members) - {"tags"}
    return _register_fields


# --- canonical form (pure) ---------------------------------------------------------------------------------

def canonical_definition(document: dict) -> dict:
    """A task definition (a rendered template or a DescribeTaskDefinition answer) in canonical form."""
    fields = register_fields()
    doc = {k: v for k, v in document.items() if k in fields}
    for key, default in SILENT_TASK_DEFAULTS.items():
        if doc.get(key) == default:
            del doc[key]
    for key in ("cpu", "memory"):  # strings in the API; a template may have written numbers
        if doc.get(key) is not None:
            doc[key] = str(doc[key])
    if "requiresCompatibilities" in doc:
        doc["requiresCompatibilities"] = sorted(doc["requiresCompatibilities"])
    if "placementConstraints" in doc:
        doc["placementConstraints"] = sorted(doc["placementConstraints"], key=_json)
    awsvpc = doc.get("networkMode") == "awsvpc"
    doc["containerDefinitions"] = sorted((_container(c, awsvpc) for c in doc.get("containerDefinitions", [])),
                                         key=lambda c: c.get("name", ""))
    if "volumes" in doc:
        doc["volumes"] = sorted((_volume(v) for v in doc["volumes"]), key=lambda v: v.get("name", ""))
    return _without_empties(doc)


def _container(container: dict, awsvpc: bool) -> dict:
    c = dict(container)
    for key, default in SILENT_CONTAINER_DEFAULTS.items():
        if c.get(key) == default:
            del c[key]
    c.setdefault("essential", True)
    if c.get("portMappings"):
        c["portMappings"] = [_port_mapping(p, awsvpc) for p in c["portMappings"]]
    for key in ("mountPoints", "volumesFrom"):
        if c.get(key):
            c[key] = [{k: v for k, v in item.items() if not (k == "readOnly" and v is False)} for item in c[key]]
    for key, sort_key in UNORDERED_CONTAINER_LISTS.items():
        if c.get(key):
            c[key] = sorted(c[key], key=sort_key)
    if c.get("healthCheck"):
        health = {**HEALTH_CHECK_DEFAULTS, **c["healthCheck"]}
        if health.get("startPeriod") == 0:
            del health["startPeriod"]
        c["healthCheck"] = health
    log = c.get("logConfiguration")
    if log and log.get("secretOptions"):
        c["logConfiguration"] = {**log, "secretOptions": sorted(log["secretOptions"], key=lambda o: o["name"])}
    return c


def _port_mapping(mapping: dict, awsvpc: bool) -> dict:
    p = {"protocol": "tcp", **mapping}
    if awsvpc and "containerPort" in p:
        p.setdefault("hostPort", p["containerPort"])  # awsvpc: the host port is the container port
    return p


def _volume(volume: dict) -> dict:
    v = dict(volume)
    efs = v.get("efsVolumeConfiguration")
    if efs:
        efs = dict(efs)
        if efs.get("rootDirectory") == "/":  # what AWS reports for an access point's volume (and the default)
            del efs["rootDirectory"]
        if efs.get("transitEncryption") == "DISABLED":
            del efs["transitEncryption"]
        auth = efs.get("authorizationConfig")
        if auth:
            auth = {k: val for k, val in auth.items() if not (k == "iam" and val == "DISABLED")}
            efs["authorizationConfig"] = auth
        v["efsVolumeConfiguration"] = efs
    return v


def _without_empties(value: Any) -> Any:
    """Leave out None, [] and {} at every depth: AWS reports absent lists and maps as empty ones."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = _without_empties(v)
            if v is None or v == [] or v == {}:
                continue
            out[k] = v
        return out
    if isinstance(value, list):
        return [_without_empties(v) for v in value]
    return value


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def content_hash(canonical: dict) -> str:
    """sha256 of a canonical definition's JSON (keys sorted, no whitespace)."""
    return hashlib.sha256(_json(canonical).encode()).hexdigest()


def content_of(spec: dict) -> dict:
    """The canonical definition inside a spec (everything but its tags)."""
    return {k: v for k, v in spec.items() if k != "tags"}


def flatten(document: dict) -> dict[str, Any]:
    """A canonical definition as {readable path: value}: containers and volumes by name, environment,
    secrets and dependsOn by name, maps by key; other lists (commands, port mappings) whole."""
    out: dict[str, Any] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                here = f"{path}.{key}" if path else key
                if key in NAMED_LISTS and isinstance(item, list):
                    label, name_key = NAMED_LISTS[key]
                    for element in item:
                        rest = {k: v for k, v in element.items() if k != name_key}
                        walk(rest, f"{path}.{label}.{element.get(name_key)}" if path
                             else f"{label}.{element.get(name_key)}")
                elif key in KEYED_VALUES and isinstance(item, list):
                    key_field, value_field = KEYED_VALUES[key]
                    for element in item:
                        out[f"{here}.{element.get(key_field)}"] = element.get(value_field)
                else:
                    walk(item, here)
        else:
            out[path] = value

    walk(document, "")
    return out


def content_changes(desired: dict, live: dict) -> list[FieldChange]:
    """Field-level differences between two canonical definitions, by readable path."""
    want, have = flatten(desired), flatten(live)
    return [FieldChange(path, have.get(path), want.get(path))
            for path in sorted(set(want) | set(have)) if want.get(path) != have.get(path)]


def tag_changes(desired: dict[str, str], live: dict[str, str]) -> list[FieldChange]:
    return [FieldChange(f"tags.{k}", live.get(k), desired.get(k))
            for k in sorted(set(desired) | set(live)) if desired.get(k) != live.get(k)]


def revisions_to_prune(active: list[int], keep: int, in_use: set[int], registering: bool) -> list[int]:
    """The ACTIVE revisions to deregister: all but the newest `keep` (counting the one about to be
    registered) and all but those a service runs. Sorted oldest first."""
    room = max(keep - (1 if registering else 0), 0)
    kept = set(sorted(active, reverse=True)[:room]) | set(in_use)
    return sorted(r for r in active if r not in kept)


def family_and_revision(arn: str) -> tuple[str, int]:
    """`arn:aws:ecs:REGION:ACCOUNT:task-definition/FAMILY:REVISION` -> (FAMILY, REVISION)."""
    family, _, revision = arn.rsplit("/", 1)[-1].rpartition(":")
    return family, int(revision)


# --- shared reads (memoised on the run's context) -----------------------------------------------------------

def active_revisions(ctx: Context) -> dict[str, list[tuple[int, str]]]:
    """Every ACTIVE revision in the account and region, {family: [(revision, ARN), ...] newest first}.

    One paginated ListTaskDefinitions (100 ARNs a page), read once per run: its `familyPrefix` is an exact
    family, so listing per family would cost a call per family; listing everything costs a page per 100 ACTIVE
    revisions of the account (other environments' too, where they share it). Families are grouped and sorted
    here, so the API's sort order is not relied on."""
    def read() -> dict[str, list[tuple[int, str]]]:
        by_family: dict[str, list[tuple[int, str]]] = {}
        for arn in ctx.aws.pages("ecs", "list_task_definitions", "taskDefinitionArns", status="ACTIVE",
                                 maxResults=LIST_PAGE):
            family, revision = family_and_revision(arn)
            by_family.setdefault(family, []).append((revision, arn))
        return {family: sorted(revisions, reverse=True) for family, revisions in by_family.items()}

    return ctx.memo("ecs: ACTIVE task definition revisions", read)


def describe(ctx: Context, arn: str) -> dict:
    """DescribeTaskDefinition (with tags) of one revision, once per run: DescribeTaskDefinition takes one
    revision a call, and the services kind asks about the revisions services run, which are usually the
    ones this kind compared."""
    return ctx.memo(f"ecs: task definition {arn}", lambda: ctx.aws.call(
        "ecs", "describe_task_definition", taskDefinition=arn, include=["TAGS"]))


def revisions_in_use(ctx: Context) -> set[str]:
    """Task definition ARNs the cluster's services run or are deploying: never deregistered. From the
    services read the services kind shares (services.cluster_services)."""
    from dmp_deploy.resources.services import cluster_services  # services.py imports this module
    in_use = set()
    for service in cluster_services(ctx):
        in_use.add(service.get("taskDefinition"))
        in_use.update(d.get("taskDefinition") for d in service.get("deployments", []))
    in_use.discard(None)
    return in_use


def deployed_family(ctx: Context, arn: str) -> str | None:
    """The family when `arn` is exactly the revision this run deploys for it and keeps deploying: the kind's
    target (the newest ACTIVE revision holding the declared content, the one a service runs or a release pinned),
    and no new revision is to be registered in this apply. Otherwise None: whoever names `arn` (a state machine,
    a service) names a revision that is, or is about to be, superseded, and must be changed to name the new one.

    This is how an identity change cascades (docs/architecture.md): the task_definition kind reads before the
    kinds that name its revisions and records its target and whether it renews it in the registry; they read a
    revision other than that target as "FAMILY:REVISION", a difference the plan shows up front, and write the
    registry's revision when they act, which by then is the one just registered."""
    try:
        family = family_and_revision(arn)[0]
    except ValueError:
        return None
    if ctx.registry.find(TaskDefinitions.kind, family, "renewing"):
        return None
    return family if ctx.registry.find(TaskDefinitions.kind, family, "arn") == arn else None


def _hash_of(answer: dict) -> str | None:
    return next((t["value"] for t in answer.get("tags") or [] if t["key"] == CONTENT_HASH_TAG), None)


# --- the kind ----------------------------------------------------------------------------------------------

class TaskDefinitions(ResourceKind):
    kind = "task_definition"
    # The access point: its live id reads back as its name (or as "to be replaced"), and a replaced one is
    # created before the revisions that name it are registered.
    depends_on = ("log_group", "iam_role", efs.ACCESS_POINT_KIND, load_balancers.LB_KIND)
    # A release pins the exact revision each family ran: `revert` (and `drift`) compare with and deploy that one.
    pin_key = "arn"

    def desired(self, state) -> dict[str, dict]:
        out = {}
        for document in state.task_definitions.values():
            content = canonical_definition(document)
            out[document["family"]] = {
                **content,
                "tags": state.config.resource_tags(**{CONTENT_HASH_TAG: content_hash(content)}),
            }
        return out

    def prefetch(self, ctx: Context) -> None:
        from dmp_deploy.resources.services import cluster_services  # services.py imports this module
        prefix = names.family(ctx.config, "")
        ctx.map(lambda read: read(), [
            lambda: ctx.map(lambda item: describe(ctx, self._target(ctx, *item)[1]),
                            sorted((f, revs) for f, revs in active_revisions(ctx).items() if f.startswith(prefix))),
            lambda: cluster_services(ctx),
            lambda: self._revisions_releases_need(ctx),
        ])

    def read(self, ctx: Context) -> dict[str, Live]:
        config = ctx.config
        declared = ctx.desired.resources.get(self.kind, {})
        prefix = names.family(config, "")

        def families_and_targets():
            present = sorted((f, revs) for f, revs in active_revisions(ctx).items() if f.startswith(prefix))
            targets = [self._target(ctx, family, revisions) for family, revisions in present]
            return present, targets, ctx.map(lambda target: describe(ctx, target[1]), targets)

        # The three reads are independent: the revisions (then each family's target), what services run,
        # what releases recorded.
        (present, targets, latest), in_use, needed = ctx.map(lambda read: read(), [
            families_and_targets,
            lambda: revisions_in_use(ctx),
            lambda: self._revisions_releases_need(ctx),
        ])
        in_use = in_use | needed
        # A family whose target (a revision this tool registered) does not hold the declared content may still
        # have a revision that does, which a service runs or a release recorded (after `revert`, or a
        # configuration put back as it was): that one is deployed again rather than registered anew, so a revert
        # leaves nothing for the next plan to do.
        matches = ctx.map(lambda item: self._revision_holding(ctx, item[0], item[1], item[2], declared, in_use),
                          list(zip(present, targets, latest)))
        targets = [match[0] if match else target for match, target in zip(matches, targets)]
        latest = [match[1] if match else answer for match, answer in zip(matches, latest)]
        out: dict[str, Live] = {}
        for (family, revisions), (newest_revision, newest_arn), answer in zip(present, targets, latest):
            tags = {t["key"]: t["value"] for t in answer.get("tags") or []}
            if family not in declared:
                if tags.get("dmp:env") != config.env or tags.get("dmp:managed-by") != "dmp-deploy":
                    continue  # a family with our prefix that is not ours: never touched
            live = Live(
                spec={**canonical_definition(load_balancers.with_dns_placeholders(
                    ctx, efs.with_placeholders(ctx, answer["taskDefinition"]))), "tags": tags},
                ids={"arn": newest_arn, "revision": newest_revision, "arns": [arn for _, arn in revisions]},
            )
            out[family] = live
            if family not in declared:
                continue  # deregistered whole: nothing to prune separately
            registering = any(not c.path.startswith("tags.")
                              for c in self.diff(family, declared[family], live))
            # `renewing`: this apply registers a new revision, so whatever names the current one (a state machine
            # version, a service) must follow it in the same apply (deployed_family).
            ctx.registry.put(self.kind, family, arn=newest_arn, revision=newest_revision, renewing=registering)
            running = {r for r, arn in revisions if arn in in_use or arn == newest_arn}
            arns = dict(revisions)
            for revision in revisions_to_prune(list(arns), config.deployment.keep_revisions, running,
                                               registering):
                out[f"{family}:{revision}"] = Live(
                    spec={"revision": revision,
                          "pruned": f"older than the newest {config.deployment.keep_revisions} ACTIVE "
                                    f"revisions, and no service runs it"},
                    ids={"arn": arns[revision], "revision": revision, "prune": True},
                )
        return out

    def diff(self, name: str, desired: dict, live: Live) -> list[FieldChange]:
        changes: list[FieldChange] = []
        # The hash tag says what content the revision was registered with, whatever AWS added since.
        # EFS ids are placeholders in the hashed content: a replaced access point changes the live side only.
        if (live.spec["tags"].get(CONTENT_HASH_TAG) != desired["tags"][CONTENT_HASH_TAG]
                or efs.volume_references(desired) != efs.volume_references(live.spec)
                or load_balancers.dns_references(desired) != load_balancers.dns_references(live.spec)):
            changes = content_changes(content_of(desired), content_of(live.spec))
            if changes:
                changes.insert(0, FieldChange(
                    "revision", live.ids["revision"],
                    "next: a new revision is registered (AWS cannot change one in place)"))
        return changes + tag_changes(desired["tags"], live.spec["tags"])

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        self._register(ctx, name, spec)

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        if any(not c.path.startswith("tags.") for c in changes):
            self._register(ctx, name, spec)
            return
        # Only tags differ: fix them on the revision in place.
        want, have = spec["tags"], live.spec["tags"]
        stale = sorted(set(have) - set(want))
        if stale:
            ctx.aws.call("ecs", "untag_resource", resourceArn=live.ids["arn"], tagKeys=stale)
        if any(have.get(k) != v for k, v in want.items()):
            ctx.aws.call("ecs", "tag_resource", resourceArn=live.ids["arn"],
                         tags=[{"key": k, "value": v} for k, v in sorted(want.items())])

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        # A pruned revision, or every ACTIVE revision of a family no longer declared.
        arns = [live.ids["arn"]] if live.ids.get("prune") else live.ids["arns"]
        ctx.map(lambda arn: ctx.aws.call("ecs", "deregister_task_definition", taskDefinition=arn), arns)

    # --- helpers -------------------------------------------------------------------------------------------

    def _register(self, ctx: Context, family: str, spec: dict) -> None:
        # "Too many concurrent attempts to create a new revision" is retried by the seam.
        answer = ctx.aws.call("ecs", "register_task_definition", **load_balancers.with_dns_names(ctx, efs.with_ids(ctx, content_of(spec))),
                              tags=[{"key": k, "value": v} for k, v in sorted(spec["tags"].items())])
        arn = answer["taskDefinition"]["taskDefinitionArn"]
        ctx.registry.put(self.kind, family, arn=arn, revision=family_and_revision(arn)[1])

    def _revision_holding(self, ctx: Context, family_revisions: tuple[str, list], target: tuple[int, str],
                          answer: dict, declared: dict, in_use: set[str]):
        """((revision, ARN), description) of the newest revision in use or recorded by a release that holds the
        declared content, when the target does not (None otherwise, and always for a pinned family)."""
        family, revisions = family_revisions
        spec = declared.get(family)
        if spec is None or ctx.pins.get((self.kind, family)):
            return None
        want = spec["tags"][CONTENT_HASH_TAG]
        if _hash_of(answer) in (want, None):
            # Holding the declared content; or registered out of band (no content hash): drift, superseded by
            # a new revision, so that whoever runs the family by name gets the declared content.
            return None
        for revision, arn in revisions:  # newest first
            if arn == target[1] or arn not in in_use:
                continue
            candidate = describe(ctx, arn)
            if _hash_of(candidate) != want:
                continue
            content = canonical_definition(load_balancers.with_dns_placeholders(
                ctx, efs.with_placeholders(ctx, candidate["taskDefinition"])))
            if (efs.volume_references(spec) == efs.volume_references(content)
                    and load_balancers.dns_references(spec) == load_balancers.dns_references(content)):  # not an access point since replaced
                return (revision, arn), candidate
        return None

    def _target(self, ctx: Context, family: str, revisions: list[tuple[int, str]]) -> tuple[int, str]:
        """The revision this run compares with and deploys: the release's pinned one, else the newest ACTIVE."""
        pinned = ctx.pins.get((self.kind, family))
        if pinned:
            for revision, arn in revisions:
                if arn == pinned:
                    return revision, arn
        return revisions[0]

    @staticmethod
    def _revisions_releases_need(ctx: Context) -> set[str]:
        """Revisions a recorded release ran: kept, so that `revert` to that release stays possible."""
        from dmp_deploy import releases
        try:
            return set((releases.read_index(ctx) or {}).get("task_definitions", []))
        except Exception as exc:
            if error_code(exc) in ("NoSuchBucket", "404", "NoSuchKey", "AccessDenied"):
                return set()
            raise
