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
family register a revision with the new id in the same apply.

The registry holds, per family, `arn`: the revision to run (the latest, or the one just registered).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import botocore.session

from dmp_deploy import names
from dmp_deploy.aws import error_code
from dmp_deploy.plan import FieldChange
from dmp_deploy.resources import efs
from dmp_deploy.resources.base import Context, Live, ResourceKind

CONTENT_HASH_TAG = "dmp:content-hash"
DESCRIBE_SERVICES_BATCH = 10  # DescribeServices takes at most 10 services per call

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
        shape = botocore.session.get_session().get_service_model("ecs") \
            .operation_model("RegisterTaskDefinition").input_shape
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


# --- the kind ----------------------------------------------------------------------------------------------

class TaskDefinitions(ResourceKind):
    kind = "task_definition"
    # The access point: its live id reads back as its name (or as "to be replaced"), and a replaced one is
    # created before the revisions that name it are registered.
    depends_on = ("log_group", "iam_role", efs.ACCESS_POINT_KIND)
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

    def read(self, ctx: Context) -> dict[str, Live]:
        config = ctx.config
        declared = ctx.desired.resources.get(self.kind, {})
        families_read, in_use, needed = ctx.map(lambda read: read(), [
            lambda: ctx.aws.pages("ecs", "list_task_definition_families", "families",
                                  familyPrefix=names.family(config, ""), status="ACTIVE"),
            lambda: self._revisions_in_use(ctx),
            lambda: self._revisions_releases_need(ctx),
        ])
        in_use = in_use | needed
        families = sorted(set(families_read))
        revision_lists = ctx.map(lambda f: self._active_revisions(ctx, f), families)
        present = [(f, revs) for f, revs in zip(families, revision_lists) if revs]
        targets = [self._target(ctx, family, revisions) for family, revisions in present]
        latest = ctx.map(lambda arn: ctx.aws.call("ecs", "describe_task_definition",
                                                  taskDefinition=arn, include=["TAGS"]), [a for _, a in targets])
        out: dict[str, Live] = {}
        for (family, revisions), (newest_revision, newest_arn), answer in zip(present, targets, latest):
            tags = {t["key"]: t["value"] for t in answer.get("tags") or []}
            if family not in declared:
                if tags.get("dmp:env") != config.env or tags.get("dmp:managed-by") != "dmp-deploy":
                    continue  # a family with our prefix that is not ours: never touched
            live = Live(
                spec={**canonical_definition(efs.with_placeholders(ctx, answer["taskDefinition"])), "tags": tags},
                ids={"arn": newest_arn, "revision": newest_revision, "arns": [arn for _, arn in revisions]},
            )
            out[family] = live
            if family not in declared:
                continue  # deregistered whole: nothing to prune separately
            ctx.registry.put(self.kind, family, arn=newest_arn, revision=newest_revision)
            registering = any(not c.path.startswith("tags.")
                              for c in self.diff(family, declared[family], live))
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
                or efs.volume_references(desired) != efs.volume_references(live.spec)):
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
        answer = ctx.aws.call("ecs", "register_task_definition", **efs.with_ids(ctx, content_of(spec)),
                              tags=[{"key": k, "value": v} for k, v in sorted(spec["tags"].items())])
        arn = answer["taskDefinition"]["taskDefinitionArn"]
        ctx.registry.put(self.kind, family, arn=arn, revision=family_and_revision(arn)[1])

    def _target(self, ctx: Context, family: str, revisions: list[tuple[int, str]]) -> tuple[int, str]:
        """The revision this run compares with and deploys: the release's pinned one, else the newest ACTIVE."""
        pinned = ctx.pins.get((self.kind, family))
        if pinned:
            for revision, arn in revisions:
                if arn == pinned:
                    return revision, arn
        return revisions[0]

    @staticmethod
    def _active_revisions(ctx: Context, family: str) -> list[tuple[int, str]]:
        """(revision, ARN) of the family's ACTIVE revisions, newest first. The API sorts on request, but
        sort order is not relied on (the embedded AWS ignores it)."""
        arns = ctx.aws.pages("ecs", "list_task_definitions", "taskDefinitionArns",
                             familyPrefix=family, status="ACTIVE", sort="DESC")
        found = [(family_and_revision(arn), arn) for arn in arns]
        return sorted(((rev, arn) for (fam, rev), arn in found if fam == family), reverse=True)

    @staticmethod
    def _revisions_releases_need(ctx: Context) -> set[str]:
        """Revisions a recorded release ran: kept, so that `revert` to that release stays possible."""
        from dmp_deploy import releases
        from dmp_deploy.state_store import StateStore
        try:
            return releases.revisions_needed(StateStore(ctx.config, ctx.aws))
        except Exception as exc:
            if error_code(exc) in ("NoSuchBucket", "404", "NoSuchKey", "AccessDenied"):
                return set()
            raise

    @staticmethod
    def _revisions_in_use(ctx: Context) -> set[str]:
        """Task definition ARNs the cluster's services run or are deploying: never deregistered."""
        cluster = names.cluster(ctx.config)
        try:
            service_arns = ctx.aws.pages("ecs", "list_services", "serviceArns", cluster=cluster)
        except Exception as exc:
            if error_code(exc) == "ClusterNotFoundException":
                return set()  # no cluster yet: no service runs anything
            raise
        batches = [service_arns[i:i + DESCRIBE_SERVICES_BATCH]
                   for i in range(0, len(service_arns), DESCRIBE_SERVICES_BATCH)]
        answers = ctx.map(lambda batch: ctx.aws.call("ecs", "describe_services", cluster=cluster,
                                                     services=batch), batches)
        in_use = set()
        for answer in answers:
            for service in answer.get("services", []):
                in_use.add(service.get("taskDefinition"))
                in_use.update(d.get("taskDefinition") for d in service.get("deployments", []))
        in_use.discard(None)
        return in_use
