"""The add-users workflow's EFS: one encrypted file system, a mount target per Availability Zone of the task
subnets, and the access point the tasks mount (dmp-reference.md section 5: S3 -> EFS -> task).

Three kinds, each found by name or tag, never by local state:

`efs_file_system` (name "<prefix>-add-users", the Name tag; also found by its CreationToken, which starts
with the name, should the tag be removed). Canonical spec:

    {
      "performance_mode": "generalPurpose",   # immutable: a change is a replace
      "encrypted": true,                       # immutable
      "kms_key": {"alias": "alias/..."} | {"arn": "arn:aws:kms:..."},   # immutable; see `key_reference`
      "throughput_mode": "bursting",
      "automatic_backups": false,             # AWS Backup would keep the uploaded user lists for weeks
      "lifecycle_policies": [],               # files live minutes: no transition to IA or archive
      "policy": {...},                         # canonical.policy() form, statements without the Resource
      "tags": {...},                           #   that names the file system itself (see `policy_spec`)
    }

A file system holds data, and its metered size (SizeInBytes) lags by up to hours, so an empty-looking
file system cannot be trusted to be empty: deleting or replacing it always needs --allow-destroy. A replace
creates the new file system first, moves the mount targets and the access point onto it (their
`file_system` field no longer matches, see below), and deletes the old one in `settle`, after them.

`efs_mount_target` (name "<file system>/<availability zone>"): one per Availability Zone of the subnets in
`ctx.lookups["subnet_ids"]` (EFS allows one per zone per file system; where two task subnets share a zone,
the first by id gets it, and tasks in the other reach it across subnets of the VPC). The subnets are only
known once the lookups are resolved, so `read()` completes the desired mount targets. Spec:
{"file_system": name, "subnet_id": "subnet-...", "security_groups": [group names]}; a changed subnet or file
system is a replace (delete, then create in the same zone), the groups are updated in place.

`efs_access_point` (name "<prefix>-add-users", the Name tag). Spec: {"file_system": name, "root_directory":
{"path", "creation_info": {"owner_uid", "owner_gid", "permissions"}}, "posix_user": {"uid", "gid",
"secondary_gids"}, "tags"}. Access points cannot be updated: any change but tags is a replace, which
creates the new one before deleting the old (the name is a tag, so both can exist for a moment).

How other specs name these resources: by name, never by id. Live ids map back to names through the
registry (`file_system_name_for_id`, `access_point_name_for_id`); an id whose resource is about to be
replaced maps to a label that differs from the name ("NAME [fsap-...: to be replaced]"), so everything
referring to it (mount targets, access point, task definitions) is planned to follow in the same apply.
At apply time `file_system_id(ctx, name)` and `access_point_id(ctx, name)` give the id, including one
created earlier in the same apply. Task definition templates write placeholders (`id_placeholder`), which the
task_definition kind resolves with `with_ids` and reads back with `with_placeholders`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from botocore.exceptions import ClientError

from dmp_deploy import canonical, lookups, names, placeholders
from dmp_deploy import diff as diffing
from dmp_deploy.aws import error_code, polling
from dmp_deploy.errors import ApplyError
from dmp_deploy.plan import FieldChange
from dmp_deploy.resources import kms_keys
from dmp_deploy.resources.base import Context, Live, ResourceKind
from dmp_deploy.resources.security_groups import GROUP_KIND, read_groups

FILE_SYSTEM_KIND = "efs_file_system"
MOUNT_TARGET_KIND = "efs_mount_target"
ACCESS_POINT_KIND = "efs_access_point"
_LABEL = "_label"  # registry kind suffix: live id -> how specs spell it (see the module docstring)

STEM = "add-users"
EFS_SECURITY_GROUP_STEM = "efs"  # the resource group of the 2049 pair (security_groups.py)
AWS_MANAGED_KEY = "alias/aws/elasticfilesystem"
ACCESS_POINT_PERMISSIONS = "0700"
PERFORMANCE_MODE = "generalPurpose"
THROUGHPUT_MODE = "bursting"

# Which of the workflow's task roles may do what through the file system policy. ClientMount is read-only
# access; ClientWrite adds writing (and deleting), and is useless without ClientMount.
CLIENT_ACCESS = {
    "add-users-copier": ("elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"),  # writes the file
    "add-users": ("elasticfilesystem:ClientMount",),  # reads it
    "add-users-cleaner": ("elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"),  # removes it
}

GONE_STATES = ("deleting", "deleted")
POLL_SECONDS = 5
AVAILABLE_TIMEOUT = 600
DELETED_TIMEOUT = 900  # a mount target takes minutes to go; the file system cannot be deleted before


def file_system_name(config) -> str:
    return f"{config.prefix}-{STEM}"


def access_point_name(config) -> str:
    return f"{config.prefix}-{STEM}"


# --- names <-> ids, for the kinds that refer to these resources ------------------------------------------------

def file_system_id(ctx: Context, name: str) -> str:
    """The fs- id of a file system by name: read, or created earlier in this apply."""
    return ctx.registry.get(FILE_SYSTEM_KIND, name, "id")


def access_point_id(ctx: Context, name: str) -> str:
    """The fsap- id of an access point by name: read, or created (or replaced) earlier in this apply."""
    return ctx.registry.get(ACCESS_POINT_KIND, name, "id")


def file_system_name_for_id(ctx: Context, fs_id: str) -> str:
    """How a live fs- id reads in canonical specs: the file system's name; a label differing from it when
    that file system is about to be replaced or is an undeclared duplicate; the id itself when not ours."""
    return ctx.registry.find(FILE_SYSTEM_KIND + _LABEL, fs_id, "label", default=fs_id)


def access_point_name_for_id(ctx: Context, fsap_id: str) -> str:
    """As `file_system_name_for_id`, for access points (task definitions' authorizationConfig)."""
    return ctx.registry.find(ACCESS_POINT_KIND + _LABEL, fsap_id, "label", default=fsap_id)


def _label(ctx: Context, kind: str, resource_id: str, label: str) -> None:
    ctx.registry.put(kind + _LABEL, resource_id, label=label)


def replaced_label(name: str, resource_id: str) -> str:
    return f"{name} [{resource_id}: to be replaced]"


def duplicate_name(name: str, resource_id: str) -> str:
    """A second resource carrying a declared name (an interrupted replace, or one made by hand)."""
    return f"{name} ({resource_id})"


# --- EFS ids in task definitions ---------------------------------------------------------------------------------
#
# A template cannot know the ids (an access point's exists only once it does, and changes when it is replaced), so
# it writes a placeholder naming the resource (`id_placeholder`, the `efs_file_system()` / `efs_access_point()`
# template helpers). The task_definition kind registers with the ids (`with_ids`) and reads live ids back as
# placeholders (`with_placeholders`): the label of a resource about to be replaced differs from its name, so a task
# definition naming it is planned to follow in the same apply.

def _map_volume_ids(document: dict, file_system: Callable[[str], str], access_point: Callable[[str], str]) -> dict:
    """`document` with each EFS volume's fileSystemId and accessPointId mapped; nothing else touched."""
    if not document.get("volumes"):
        return document
    volumes = []
    for volume in document["volumes"]:
        efs_config = volume.get("efsVolumeConfiguration")
        if efs_config:
            efs_config = dict(efs_config)
            if efs_config.get("fileSystemId"):
                efs_config["fileSystemId"] = file_system(efs_config["fileSystemId"])
            auth = efs_config.get("authorizationConfig")
            if auth and auth.get("accessPointId"):
                efs_config["authorizationConfig"] = {**auth, "accessPointId": access_point(auth["accessPointId"])}
            volume = {**volume, "efsVolumeConfiguration": efs_config}
        volumes.append(volume)
    return {**document, "volumes": volumes}


def volume_references(document: dict) -> list[str]:
    """The EFS ids or placeholders a task definition's volumes name, in order (to tell a moved reference)."""
    found: list[str] = []
    _map_volume_ids(document, lambda v: found.append(v) or v, lambda v: found.append(v) or v)
    return found


def with_ids(ctx: Context, document: dict) -> dict:
    """A task definition with every EFS placeholder replaced by the live id (at apply time)."""
    def resolve(value: str) -> str:
        parsed = placeholders.parse_efs_id(value)
        if not parsed:
            return value
        kind, name = parsed
        return file_system_id(ctx, name) if kind == FILE_SYSTEM_KIND else access_point_id(ctx, name)
    return _map_volume_ids(document, resolve, resolve)


def with_placeholders(ctx: Context, document: dict) -> dict:
    """A live task definition with our EFS ids written back as placeholders (ids not ours stay ids)."""
    def file_system(fs_id: str) -> str:
        label = file_system_name_for_id(ctx, fs_id)
        return fs_id if label == fs_id else placeholders.efs_id(FILE_SYSTEM_KIND, label)

    def access_point(fsap_id: str) -> str:
        label = access_point_name_for_id(ctx, fsap_id)
        return fsap_id if label == fsap_id else placeholders.efs_id(ACCESS_POINT_KIND, label)
    return _map_volume_ids(document, file_system, access_point)


# --- pure canonical forms -------------------------------------------------------------------------------------

def key_reference(state) -> dict:
    """The key encrypting the file system: add_users.efs_kms_key_arn, else the add-users key (configured, or
    the one the kms_key kind owns). Without either (no kms_key kind declaring the alias), the AWS-managed
    key aws/elasticfilesystem, which the plan then shows as such."""
    config = state.config
    if config.add_users.efs_kms_key_arn:
        return {"arn": config.add_users.efs_kms_key_arn}
    ref = kms_keys.reference(config)
    if "alias" in ref and ref["alias"] not in state.resources.get("kms_key", {}):
        return {"alias": AWS_MANAGED_KEY}
    return ref


def live_key_reference(registry, key_id: str | None, aws_managed_arn: str | None) -> dict:
    """A file system's KmsKeyId as a reference. AWS encrypts with the AWS-managed key when none is named
    (and moto then reports no key at all)."""
    if not key_id or key_id in (aws_managed_arn, AWS_MANAGED_KEY):
        return {"alias": AWS_MANAGED_KEY}
    return kms_keys.reference_for(registry, key_id)


def file_system_policy(config, declared_roles) -> dict:
    """Mounting only through a mount target and over TLS, and only by the workflow's task roles that exist
    (IAM rejects a policy naming a missing role; the roles come with their task definitions). Statements
    carry no Resource: a file system policy concerns its own file system, added when it is put."""
    statements = [{
        "Sid": "DenyWithoutTls", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }]
    for stem, actions in CLIENT_ACCESS.items():
        role = names.task_role(config, stem)
        if role in declared_roles:
            statements.append({
                "Sid": "".join(part.capitalize() for part in stem.split("-")),
                "Effect": "Allow", "Principal": {"AWS": names.role_arn(config, role)}, "Action": list(actions),
                "Condition": {"Bool": {"elasticfilesystem:AccessedViaMountTarget": "true"}},
            })
    return canonical.policy({"Version": "2012-10-17", "Statement": statements})


def policy_spec(document: Any, file_system_arn: str) -> dict | None:
    """A live file system policy in canonical form, without the Resource naming the file system itself."""
    if document is None:
        return None
    doc = canonical.policy(document)
    statements = []
    for statement in doc["Statement"]:
        statement = dict(statement)
        if statement.get("Resource") == file_system_arn:
            del statement["Resource"]
        statements.append(statement)
    return canonical.policy({**doc, "Statement": statements})


def policy_document(spec_policy: dict, file_system_arn: str) -> dict:
    """The policy as put: each statement without a Resource gets the file system's ARN."""
    return {**spec_policy, "Statement": [{"Resource": file_system_arn, **s} if "Resource" not in s else s
                                         for s in spec_policy["Statement"]]}


def lifecycle_spec(policies: list[dict] | None) -> list[dict]:
    return sorted(policies or [], key=lambda p: sorted(p.items()))


def permissions_spec(permissions: str | None) -> str | None:
    """POSIX permissions as four octal digits: "700", "0700" and "00700" are the same mode."""
    return None if permissions is None else format(int(permissions, 8), "04o")


def root_directory_spec(root: dict | None) -> dict:
    root = root or {}
    info = root.get("CreationInfo")
    return {
        "path": root.get("Path") or "/",
        "creation_info": {"owner_uid": info["OwnerUid"], "owner_gid": info["OwnerGid"],
                          "permissions": permissions_spec(info["Permissions"])} if info else None,
    }


def posix_user_spec(user: dict | None) -> dict | None:
    if not user:
        return None
    return {"uid": user["Uid"], "gid": user["Gid"], "secondary_gids": sorted(user.get("SecondaryGids") or [])}


def mount_target_subnets(subnets: list[dict]) -> dict[str, str]:
    """{availability zone: subnet id}: one mount target per zone, in the first task subnet (by id) there."""
    out: dict[str, str] = {}
    for subnet in sorted(subnets, key=lambda s: s["SubnetId"]):
        out.setdefault(subnet["AvailabilityZone"], subnet["SubnetId"])
    return dict(sorted(out.items()))


def mount_target_name(file_system: str, zone: str) -> str:
    return f"{file_system}/{zone}"


# --- waiting for EFS's asynchronous changes ---------------------------------------------------------------------

def wait_until(what: str, done: Callable[[], bool], timeout: float, purpose: str) -> None:
    """Poll `done()` until it is true; its calls are counted as polls for `purpose` (aws.polling)."""
    deadline = time.monotonic() + timeout
    while not _polled(done, purpose):
        if time.monotonic() > deadline:
            raise ApplyError(f"timed out after {int(timeout)}s waiting for {what}. AWS may still be working on "
                             f"it: run plan in a few minutes, then apply again.")
        time.sleep(POLL_SECONDS)


def _polled(done: Callable[[], bool], purpose: str) -> bool:
    with polling(purpose):
        return done()


def _file_system_state(ctx: Context, fs_id: str) -> str:
    try:
        return ctx.aws.call("efs", "describe_file_systems", FileSystemId=fs_id)["FileSystems"][0]["LifeCycleState"]
    except ClientError as exc:
        if error_code(exc) == "FileSystemNotFound":
            return "deleted"
        raise


def _live_mount_targets(ctx: Context, fs_id: str) -> list[dict]:
    return [m for m in ctx.aws.pages("efs", "describe_mount_targets", "MountTargets", FileSystemId=fs_id)
            if m["LifeCycleState"] not in GONE_STATES]


def _mount_target_state(ctx: Context, mount_target_id: str) -> str:
    try:
        return ctx.aws.call("efs", "describe_mount_targets",
                            MountTargetId=mount_target_id)["MountTargets"][0]["LifeCycleState"]
    except ClientError as exc:
        if error_code(exc) == "MountTargetNotFound":
            return "deleted"
        raise


def delete_file_system(ctx: Context, name: str, fs_id: str) -> None:
    """Delete a file system of ours with whatever still hangs on it (access points, mount targets): AWS
    refuses while a mount target exists, and deletes mount targets asynchronously."""
    for point in ctx.aws.pages("efs", "describe_access_points", "AccessPoints", FileSystemId=fs_id):
        ctx.aws.call("efs", "delete_access_point", AccessPointId=point["AccessPointId"])
    for target in _live_mount_targets(ctx, fs_id):
        ctx.aws.call("efs", "delete_mount_target", MountTargetId=target["MountTargetId"])
    wait_until(f"the mount targets of file system {name} ({fs_id}) to be deleted",
               lambda: not _live_mount_targets(ctx, fs_id), DELETED_TIMEOUT, "efs: mount targets deleted")
    ctx.aws.call("efs", "delete_file_system", FileSystemId=fs_id)


# --- the file system ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileSystemsRead:
    file_systems: dict[str, dict]  # name (or duplicate name) -> DescribeFileSystems entry
    specs: dict[str, dict]  # the same keys -> canonical spec
    labels: dict[str, str]  # fs- id -> how mount targets and access points on it read (see the docstring)


def read_file_systems(ctx: Context) -> FileSystemsRead:
    """Our file systems, read once per context and shared by the three kinds (memoised)."""
    return ctx.memo(FILE_SYSTEM_KIND, lambda: _read_file_systems(ctx))


def _ours(entry: dict, name: str) -> bool:
    """Ours: named by the Name tag, or created by this tool under that name (the CreationToken's prefix)."""
    tags = canonical.tags_from_list(entry.get("Tags"))
    return tags.get("Name") == name or entry.get("CreationToken", "").startswith(f"{name}:")


def file_system_changes(desired: dict, live_spec: dict) -> list[FieldChange]:
    return diffing.field_changes(desired, live_spec, FileSystems.replace_fields)


def _file_system_answers(ctx: Context) -> tuple[list[dict], str | None, list[dict]]:
    """AWS's answers about our file systems, nothing read from other kinds (memoised; the three kinds' prefetch):
    the DescribeFileSystems entries, the AWS-managed key's ARN when the declared one uses it, the details."""
    def read():
        name = file_system_name(ctx.config)
        desired = ctx.desired.resources.get(FILE_SYSTEM_KIND, {}).get(name)
        found = [fs for fs in ctx.aws.pages("efs", "describe_file_systems", "FileSystems")
                 if _ours(fs, name) and fs["LifeCycleState"] not in GONE_STATES]
        aws_managed_arn = None
        if found and desired and desired["kms_key"] == {"alias": AWS_MANAGED_KEY}:
            aws_managed_arn = ctx.aws.call("kms", "describe_key", KeyId=AWS_MANAGED_KEY)["KeyMetadata"]["Arn"]
        return found, aws_managed_arn, ctx.map(lambda fs: _file_system_details(ctx, fs["FileSystemId"]), found)
    return ctx.memo(FILE_SYSTEM_KIND + ": answers", read)


def _mount_targets_of(ctx: Context, fs_id: str, share: Callable = Context.take) -> list[tuple[dict, list[str]]]:
    """The live mount targets of a file system, each with its security group ids: `share` is Context.memo for
    the prefetch, Context.take for the read."""
    def read():
        targets = _live_mount_targets(ctx, fs_id)
        # DescribeMountTargets does not say which groups guard a mount target: one call each.
        groups = ctx.map(lambda t: ctx.aws.call("efs", "describe_mount_target_security_groups",
                                                MountTargetId=t["MountTargetId"]).get("SecurityGroups") or [],
                         targets)
        return list(zip(targets, groups))
    return share(ctx, f"efs: mount targets of {fs_id}", read)


def _access_points_of(ctx: Context, fs_id: str, share: Callable = Context.take) -> list[dict]:
    """A file system's access points (`share` as for `_mount_targets_of`)."""
    return share(ctx, f"efs: access points of {fs_id}", lambda: ctx.aws.pages(
        "efs", "describe_access_points", "AccessPoints", FileSystemId=fs_id))


def _read_file_systems(ctx: Context) -> FileSystemsRead:
    name = file_system_name(ctx.config)
    desired = ctx.desired.resources.get(FILE_SYSTEM_KIND, {}).get(name)
    found, aws_managed_arn, details = _file_system_answers(ctx)
    specs = {fs["FileSystemId"]: _file_system_spec(ctx, fs, detail, aws_managed_arn)
             for fs, detail in zip(found, details)}

    def replaced(fs_id: str) -> bool:
        return bool(desired) and any(c.forces_replace for c in file_system_changes(desired, specs[fs_id]))

    # Several file systems under our name: the declared one is the one that needs no replace (else the
    # oldest); the others are undeclared duplicates, planned for deletion.
    def rank(fs: dict):
        created = fs.get("CreationTime")
        return (replaced(fs["FileSystemId"]), created.timestamp() if created else 0, fs["FileSystemId"])

    by_key, spec_by_key, labels = {}, {}, {}
    for i, fs in enumerate(sorted(found, key=rank)):
        fs_id = fs["FileSystemId"]
        key = name if i == 0 else duplicate_name(name, fs_id)
        labels[fs_id] = replaced_label(name, fs_id) if key == name and replaced(fs_id) else key
        ctx.registry.put(FILE_SYSTEM_KIND, key, id=fs_id, arn=fs["FileSystemArn"])
        _label(ctx, FILE_SYSTEM_KIND, fs_id, labels[fs_id])
        by_key[key], spec_by_key[key] = fs, specs[fs_id]
    return FileSystemsRead(by_key, spec_by_key, labels)


def _file_system_details(ctx: Context, fs_id: str) -> dict:
    """What DescribeFileSystems leaves out: the policy, the backup policy, the lifecycle (read at once)."""

    def policy():
        try:
            return ctx.aws.call("efs", "describe_file_system_policy", FileSystemId=fs_id).get("Policy")
        except ClientError as exc:
            if error_code(exc) == "PolicyNotFound":
                return None
            raise

    def backups():
        try:
            status = ctx.aws.call("efs", "describe_backup_policy", FileSystemId=fs_id)["BackupPolicy"]["Status"]
        except ClientError as exc:
            if error_code(exc) == "PolicyNotFound":  # never set: no automatic backups
                return False
            raise
        return status in ("ENABLED", "ENABLING")

    def lifecycle():
        return ctx.aws.call("efs", "describe_lifecycle_configuration", FileSystemId=fs_id).get("LifecyclePolicies")

    got = ctx.map(lambda read: read(), [policy, backups, lifecycle])
    return dict(zip(("policy", "automatic_backups", "lifecycle_policies"), got))


def _file_system_spec(ctx: Context, fs: dict, detail: dict, aws_managed_arn: str | None) -> dict:
    encrypted = bool(fs.get("Encrypted"))
    return {
        "performance_mode": fs.get("PerformanceMode"),
        "encrypted": encrypted,
        "kms_key": live_key_reference(ctx.registry, fs.get("KmsKeyId"), aws_managed_arn) if encrypted else None,
        "throughput_mode": fs.get("ThroughputMode"),
        "automatic_backups": detail["automatic_backups"],
        "lifecycle_policies": lifecycle_spec(detail["lifecycle_policies"]),
        "policy": policy_spec(detail["policy"], fs["FileSystemArn"]),
        "tags": canonical.tags_from_list(fs.get("Tags")),
    }


class FileSystems(ResourceKind):
    kind = FILE_SYSTEM_KIND
    depends_on = ("kms_key", "iam_role")  # the key encrypting it; the roles its policy names must exist
    replace_fields = frozenset({"performance_mode", "encrypted", "kms_key"})
    holds_data = True

    def desired(self, state) -> dict[str, dict]:
        config = state.config
        return {file_system_name(config): {
            "performance_mode": PERFORMANCE_MODE,
            "encrypted": True,
            "kms_key": key_reference(state),
            "throughput_mode": THROUGHPUT_MODE,
            "automatic_backups": False,
            "lifecycle_policies": [],
            "policy": file_system_policy(config, state.resources.get("iam_role", {})),
            "tags": config.resource_tags(Name=file_system_name(config)),
        }}

    def prefetch(self, ctx: Context) -> None:
        _file_system_answers(ctx)

    def read(self, ctx: Context) -> dict[str, Live]:
        found = read_file_systems(ctx)
        return {key: Live(spec=found.specs[key], holds_data=True,
                          ids={"id": fs["FileSystemId"], "arn": fs["FileSystemArn"]})
                for key, fs in found.file_systems.items()}

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        # A fresh token per creation: AWS returns the same file system when a retry repeats it, and a token
        # is never reused after a replace. Finding ours again relies on the tags (and the token's prefix).
        token = f"{name}:{uuid.uuid4().hex}"
        params = {"CreationToken": token, "PerformanceMode": spec["performance_mode"],
                  "ThroughputMode": spec["throughput_mode"], "Encrypted": spec["encrypted"],
                  "Backup": spec["automatic_backups"], "Tags": canonical.tags_to_list(spec["tags"])}
        if spec["kms_key"] != {"alias": AWS_MANAGED_KEY}:
            params["KmsKeyId"] = kms_keys.resolve_arn(ctx, spec["kms_key"])
        try:
            fs = ctx.aws.call("efs", "create_file_system", **params)
        except ClientError as exc:
            if error_code(exc) != "FileSystemAlreadyExists":
                raise
            fs = ctx.aws.call("efs", "describe_file_systems", CreationToken=token)["FileSystems"][0]
        fs_id = fs["FileSystemId"]
        ctx.registry.put(self.kind, name, id=fs_id, arn=fs["FileSystemArn"])
        # Mount targets and policies need an available file system.
        wait_until(f"file system {name} ({fs_id}) to become available",
                   lambda: _file_system_state(ctx, fs_id) == "available", AVAILABLE_TIMEOUT,
                   "efs: file system available")
        self._put_policy(ctx, fs_id, fs["FileSystemArn"], spec["policy"])
        if spec["lifecycle_policies"]:
            ctx.aws.call("efs", "put_lifecycle_configuration", FileSystemId=fs_id,
                         LifecyclePolicies=spec["lifecycle_policies"])

    @staticmethod
    def _put_policy(ctx: Context, fs_id: str, arn: str, policy: dict) -> None:
        ctx.aws.call("efs", "put_file_system_policy", FileSystemId=fs_id,
                     Policy=json.dumps(policy_document(policy, arn)))

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        fs_id, have = live.ids["id"], live.spec
        if spec["throughput_mode"] != have["throughput_mode"]:
            ctx.aws.call("efs", "update_file_system", FileSystemId=fs_id, ThroughputMode=spec["throughput_mode"])
        if spec["automatic_backups"] != have["automatic_backups"]:
            ctx.aws.call("efs", "put_backup_policy", FileSystemId=fs_id,
                         BackupPolicy={"Status": "ENABLED" if spec["automatic_backups"] else "DISABLED"})
        if spec["lifecycle_policies"] != have["lifecycle_policies"]:
            ctx.aws.call("efs", "put_lifecycle_configuration", FileSystemId=fs_id,
                         LifecyclePolicies=spec["lifecycle_policies"])
        if spec["policy"] != have["policy"]:
            self._put_policy(ctx, fs_id, live.ids["arn"], spec["policy"])
        want, got = spec["tags"], have["tags"]
        stale = sorted(set(got) - set(want))
        if stale:
            ctx.aws.call("efs", "untag_resource", ResourceId=fs_id, TagKeys=stale)
        changed = {k: v for k, v in want.items() if got.get(k) != v}
        if changed:
            ctx.aws.call("efs", "tag_resource", ResourceId=fs_id, Tags=canonical.tags_to_list(changed))

    def replace(self, ctx: Context, name: str, spec: dict, live: Live) -> None:
        """The new file system first: the mount targets and the access point move onto it in their own
        changes (planned as replaces), and `settle` deletes the old one after them."""
        ctx.registry.put(self.kind + "_retired", name, id=live.ids["id"])
        self.create(ctx, name, spec)

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        delete_file_system(ctx, name, live.ids["id"])

    def settle(self, ctx: Context, changes: list) -> None:
        for change in changes:
            if change.action == "replace":
                old = ctx.registry.find(self.kind + "_retired", change.name, "id")
                if old:
                    delete_file_system(ctx, change.name, old)


# --- mount targets ------------------------------------------------------------------------------------------------

class MountTargets(ResourceKind):
    kind = MOUNT_TARGET_KIND
    depends_on = (FILE_SYSTEM_KIND, GROUP_KIND)
    replace_fields = frozenset({"file_system", "subnet_id"})

    def desired(self, state) -> dict[str, dict]:
        return {}  # one per zone of the task subnets: completed by read(), once the lookups are resolved

    def declared(self, ctx: Context, subnets: list[dict]) -> dict[str, dict]:
        config = ctx.config
        fs = file_system_name(config)
        groups = [names.security_group(config, EFS_SECURITY_GROUP_STEM)]
        return {mount_target_name(fs, zone): {"file_system": fs, "subnet_id": subnet, "security_groups": groups}
                for zone, subnet in mount_target_subnets(subnets).items()}

    def prefetch(self, ctx: Context) -> None:
        ctx.map(lambda fs: _mount_targets_of(ctx, fs["FileSystemId"], Context.memo), _file_system_answers(ctx)[0])

    def read(self, ctx: Context) -> dict[str, Live]:
        file_systems = read_file_systems(ctx)
        subnets = lookups.subnets(ctx)  # described once, by the lookups
        ctx.desired.resources[self.kind] = self.declared(ctx, subnets)
        listed = ctx.map(lambda item: (item[0], item[1], _mount_targets_of(ctx, item[1]["FileSystemId"])),
                         list(file_systems.file_systems.items()))
        targets = [(key, fs, target) for key, fs, found in listed for target, _ in found]
        groups = [target_groups for _, _, found in listed for _, target_groups in found]
        group_names = read_groups(ctx).names.groups  # our groups by id, except those about to be replaced
        out = {}
        for (key, fs, target), group_ids in zip(targets, groups):
            name = mount_target_name(key, target["AvailabilityZoneName"])
            ctx.registry.put(self.kind, name, id=target["MountTargetId"])
            out[name] = Live(spec={
                "file_system": file_systems.labels[fs["FileSystemId"]],
                "subnet_id": target["SubnetId"],
                "security_groups": sorted(group_names.get(g, g) for g in group_ids),
            }, ids={"id": target["MountTargetId"]})
        return out

    @staticmethod
    def _group_ids(ctx: Context, spec: dict) -> list[str]:
        return [ctx.registry.get(GROUP_KIND, g, "id") for g in spec["security_groups"]]

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        target = ctx.aws.call("efs", "create_mount_target", FileSystemId=file_system_id(ctx, spec["file_system"]),
                              SubnetId=spec["subnet_id"], SecurityGroups=self._group_ids(ctx, spec))
        ctx.registry.put(self.kind, name, id=target["MountTargetId"])

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        ctx.aws.call("efs", "modify_mount_target_security_groups", MountTargetId=live.ids["id"],
                     SecurityGroups=self._group_ids(ctx, spec))

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        # Gone before anything follows: a replacement in the same zone, or the file system's deletion.
        ctx.aws.call("efs", "delete_mount_target", MountTargetId=live.ids["id"])
        wait_until(f"mount target {name} ({live.ids['id']}) to be deleted",
                   lambda: _mount_target_state(ctx, live.ids["id"]) == "deleted", DELETED_TIMEOUT,
                   "efs: mount target deleted")

    def settle(self, ctx: Context, changes: list) -> None:
        for change in changes:
            if change.action in ("create", "replace"):
                target_id = ctx.registry.get(self.kind, change.name, "id")
                wait_until(f"mount target {change.name} ({target_id}) to become available",
                           lambda: _mount_target_state(ctx, target_id) == "available", AVAILABLE_TIMEOUT,
                           "efs: mount target available")


# --- the access point ---------------------------------------------------------------------------------------------

def access_point_key(point: dict, declared, env: str) -> str | None:
    """Which name a live access point is ours under, or None when it is not ours: its Name tag when a
    declared name; a declared name its ClientToken starts with (our tags removed); any name when it carries
    our ownership tags (undeclared now: to delete)."""
    tags = canonical.tags_from_list(point.get("Tags"))
    name = tags.get("Name")
    if name in declared:
        return name
    for declared_name in declared:
        if point.get("ClientToken", "").startswith(f"{declared_name}:"):
            return declared_name
    if tags.get("dmp:managed-by") == "dmp-deploy" and tags.get("dmp:env") == env:
        return name or point["AccessPointId"]
    return None


class AccessPoints(ResourceKind):
    kind = ACCESS_POINT_KIND
    # Used through the mount targets: deleted before them (deletes run in reverse dependency order).
    depends_on = (FILE_SYSTEM_KIND, MOUNT_TARGET_KIND)
    replace_fields = frozenset({"file_system", "root_directory", "posix_user"})

    def desired(self, state) -> dict[str, dict]:
        config = state.config
        add_users = config.add_users
        name = access_point_name(config)
        return {name: {
            "file_system": file_system_name(config),
            "root_directory": {"path": add_users.access_point_path, "creation_info": {
                "owner_uid": add_users.posix_uid, "owner_gid": add_users.posix_gid,
                "permissions": ACCESS_POINT_PERMISSIONS}},
            "posix_user": {"uid": add_users.posix_uid, "gid": add_users.posix_gid, "secondary_gids": []},
            "tags": config.resource_tags(Name=name),
        }}

    def prefetch(self, ctx: Context) -> None:
        ctx.map(lambda fs: _access_points_of(ctx, fs["FileSystemId"], Context.memo), _file_system_answers(ctx)[0])

    def read(self, ctx: Context) -> dict[str, Live]:
        file_systems = read_file_systems(ctx)
        declared = ctx.desired.resources.get(self.kind, {})
        listed = ctx.map(lambda fs: _access_points_of(ctx, fs["FileSystemId"]),
                         list(file_systems.file_systems.values()))
        by_name: dict[str, list[tuple[dict, dict]]] = {}
        for point in (p for found in listed for p in found):
            name = access_point_key(point, declared, ctx.config.env)
            if name and point.get("LifeCycleState") not in GONE_STATES:
                by_name.setdefault(name, []).append((point, self._spec(point, file_systems.labels)))
        out = {}
        for name, points in by_name.items():
            want = declared.get(name)

            def replaced(spec):
                return bool(want) and any(c.forces_replace for c in self.diff(name, want, Live(spec)))

            # Several under one name (an interrupted replace): the one that needs no replace is the declared one.
            for i, (point, spec) in enumerate(sorted(points, key=lambda p: (replaced(p[1]), p[0]["AccessPointId"]))):
                point_id = point["AccessPointId"]
                key = name if i == 0 else duplicate_name(name, point_id)
                label = replaced_label(name, point_id) if key == name and replaced(spec) else key
                ids = {"id": point_id, "arn": point["AccessPointArn"]}
                ctx.registry.put(self.kind, key, **ids)
                _label(ctx, self.kind, point_id, label)
                out[key] = Live(spec=spec, ids=ids)
        return out

    @staticmethod
    def _spec(point: dict, labels: dict[str, str]) -> dict:
        return {
            "file_system": labels.get(point["FileSystemId"], point["FileSystemId"]),
            "root_directory": root_directory_spec(point.get("RootDirectory")),
            "posix_user": posix_user_spec(point.get("PosixUser")),
            "tags": canonical.tags_from_list(point.get("Tags")),
        }

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        root, user = spec["root_directory"], spec["posix_user"]
        root_directory = {"Path": root["path"]}
        if root["creation_info"]:
            info = root["creation_info"]
            root_directory["CreationInfo"] = {"OwnerUid": info["owner_uid"], "OwnerGid": info["owner_gid"],
                                              "Permissions": info["permissions"]}
        posix_user = {"Uid": user["uid"], "Gid": user["gid"]}
        if user["secondary_gids"]:
            posix_user["SecondaryGids"] = user["secondary_gids"]
        point = ctx.aws.call("efs", "create_access_point", ClientToken=f"{name}:{uuid.uuid4().hex}",
                             FileSystemId=file_system_id(ctx, spec["file_system"]), PosixUser=posix_user,
                             RootDirectory=root_directory, Tags=canonical.tags_to_list(spec["tags"]))
        ctx.registry.put(self.kind, name, id=point["AccessPointId"], arn=point["AccessPointArn"])

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        point_id, want, got = live.ids["id"], spec["tags"], live.spec["tags"]
        stale = sorted(set(got) - set(want))
        if stale:
            ctx.aws.call("efs", "untag_resource", ResourceId=point_id, TagKeys=stale)
        changed = {k: v for k, v in want.items() if got.get(k) != v}
        if changed:
            ctx.aws.call("efs", "tag_resource", ResourceId=point_id, Tags=canonical.tags_to_list(changed))

    def replace(self, ctx: Context, name: str, spec: dict, live: Live) -> None:
        """Create the new access point, then delete the old: the task definitions that name it register
        a revision with the new id in the same apply (they read it through `access_point_id`)."""
        self.create(ctx, name, spec)
        self.delete(ctx, name, live)

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        ctx.aws.call("efs", "delete_access_point", AccessPointId=live.ids["id"])

    def settle(self, ctx: Context, changes: list) -> None:
        for change in changes:
            if change.action in ("create", "replace"):
                point_id = access_point_id(ctx, change.name)
                wait_until(f"access point {change.name} ({point_id}) to become available",
                           lambda: self._state(ctx, point_id) == "available", AVAILABLE_TIMEOUT,
                           "efs: access point available")

    @staticmethod
    def _state(ctx: Context, point_id: str) -> str:
        try:
            points = ctx.aws.call("efs", "describe_access_points", AccessPointId=point_id)["AccessPoints"]
        except ClientError as exc:
            if error_code(exc) == "AccessPointNotFound":
                return "deleted"
            raise
        return points[0].get("LifeCycleState", "available") if points else "deleted"
