"""The KMS key that encrypts the add-users bucket (and the EFS file system, see efs.py), when the config does
not name one.

With `add_users.kms_key_arn` set, nothing is declared here and every kind uses that ARN. Otherwise the tool
owns one customer-managed symmetric key, found by its alias `names.add_users_key_alias(config)`:

    {
      "key_spec": "SYMMETRIC_DEFAULT",  # with key_usage: fixed at creation, a change is a replace
      "key_usage": "ENCRYPT_DECRYPT",
      "key_state": "Enabled",           # a key disabled or scheduled for deletion out of band is re-enabled
      "description": "...",
      "rotation": true,                 # automatic yearly rotation
      "tags": {...},
    }

The key policy is AWS's default one (the account root may use and administer the key), left as created:
the IAM policies of the roles that need the key grant its use. It is not compared.

Reading is one DescribeKey on the alias, then the rotation status and the tags at the same time. When the alias
is missing, a key of ours without any alias (a run killed between CreateKey and CreateAlias) is adopted: the plan
shows the alias to add, and no second key is created.
Deleting schedules the key's deletion (30 days, the longest window) and removes the alias. Every object
encrypted with the key becomes unreadable when it goes, so the key holds data: deleting or replacing it
needs --allow-destroy. Within the window, a key still under the alias is recovered by declaring it again
(its state is repaired); one whose alias was removed can be recovered by hand with CancelKeyDeletion.

Other kinds refer to the key symbolically (`reference()`), since its ARN is known only once it exists, and
resolve the reference through the registry at apply time (`resolve_arn()`).
"""

from __future__ import annotations

from typing import Any, Callable

from botocore.exceptions import ClientError

from dmp_deploy import names
from dmp_deploy.aws import error_code
from dmp_deploy.errors import ApplyError
from dmp_deploy.plan import FieldChange
from dmp_deploy.resources.base import Context, Live, Registry, ResourceKind

DELETION_WINDOW_DAYS = 30


# --- how other kinds refer to the add-users key -------------------------------------------------------------

def reference(config) -> dict:
    """The add-users key as a spec refers to it: {"arn": ...} when configured, else {"alias": ...}."""
    if config.add_users.kms_key_arn:
        return {"arn": config.add_users.kms_key_arn}
    return {"alias": names.add_users_key_alias(config)}


PLACEHOLDER_PREFIX = "<arn of kms_key "


def arn_placeholder(ref: dict) -> str:
    """The key's ARN as written in a desired document (a policy) before the key exists."""
    return ref["arn"] if "arn" in ref else f"{PLACEHOLDER_PREFIX}{ref['alias']}>"


def resolve_arn(ctx: Context, ref: dict) -> str:
    """The real ARN behind a reference: configured, or the owned key's, read or created in this run."""
    if "arn" in ref:
        return ref["arn"]
    return ctx.registry.get("kms_key", ref["alias"], "arn")


def reference_for(registry: Registry, key: str) -> dict:
    """A live key identifier (key ARN, key id, alias ARN or alias name) back as a reference: the owned key's
    alias when it is one of ours, so that it compares equal with the desired reference."""
    if ":alias/" in key:
        alias = "alias/" + key.split(":alias/", 1)[1]
        return {"alias": alias} if alias in registry.names_by("kms_key", "arn").values() else {"arn": key}
    if key.startswith("alias/"):
        return {"alias": key}
    by_arn = registry.names_by("kms_key", "arn")
    by_id = registry.names_by("kms_key", "key_id")
    alias = by_arn.get(key) or by_id.get(key)
    return {"alias": alias} if alias else {"arn": key}


def with_arns(ctx: Context, document: Any) -> Any:
    """A desired document with every key placeholder replaced by the key's real ARN (at apply time)."""
    def resolve(text: str) -> str:
        if text.startswith(PLACEHOLDER_PREFIX) and text.endswith(">"):
            return resolve_arn(ctx, {"alias": text[len(PLACEHOLDER_PREFIX):-1]})
        return text
    return _map_strings(document, resolve)


def with_placeholders(registry: Registry, document: Any) -> Any:
    """A live document with every owned key's ARN written back as its placeholder."""
    placeholders = {arn: arn_placeholder({"alias": alias})
                    for arn, alias in registry.names_by("kms_key", "arn").items()}
    return _map_strings(document, lambda text: placeholders.get(text, text))


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value


# --- the kind -----------------------------------------------------------------------------------------------

def _is_ours(tags: dict[str, str], env: str) -> bool:
    return tags.get("dmp:managed-by") == "dmp-deploy" and tags.get("dmp:env") == env


KEY_READ = "kms: the add-users key"  # prefetched for the read (Context.take)


class KmsKeys(ResourceKind):
    kind = "kms_key"
    holds_data = True
    replace_fields = frozenset({"key_spec", "key_usage"})

    def desired(self, state) -> dict[str, dict]:
        config = state.config
        if config.add_users.kms_key_arn:
            return {}
        return {names.add_users_key_alias(config): {
            "key_spec": "SYMMETRIC_DEFAULT",
            "key_usage": "ENCRYPT_DECRYPT",
            "key_state": "Enabled",
            "description": f"dmp-deploy {config.env}: encrypts the add-users workflow's data "
                           f"(uploaded user lists, passwords included)",
            "rotation": True,
            "tags": config.resource_tags(),
        }}

    def prefetch(self, ctx: Context) -> None:
        ctx.memo(KEY_READ, lambda: self._key(ctx))

    def _key(self, ctx: Context) -> tuple[dict, bool, bool | None, dict] | None:
        """The key under our alias (or the unaliased one of ours), whether it was unaliased, its rotation and
        tags; None when there is none."""
        alias = names.add_users_key_alias(ctx.config)
        unaliased = False
        try:
            key = ctx.aws.call("kms", "describe_key", KeyId=alias)["KeyMetadata"]
        except ClientError as exc:
            if error_code(exc) != "NotFoundException":
                raise
            key = self._unaliased_key(ctx) if alias in ctx.desired.resources.get(self.kind, {}) else None
            if key is None:
                return None
            unaliased = True
        rotation, tags = ctx.map(lambda read: read(), [
            lambda: self._rotation(ctx, key["KeyId"]),
            lambda: {t["TagKey"]: t["TagValue"]
                     for t in ctx.aws.pages("kms", "list_resource_tags", "Tags", KeyId=key["KeyId"])},
        ])
        return key, unaliased, rotation, tags

    def read(self, ctx: Context) -> dict[str, Live]:
        alias = names.add_users_key_alias(ctx.config)
        found = ctx.take(KEY_READ, lambda: self._key(ctx))
        if found is None:
            return {}
        key, unaliased, rotation, tags = found
        if alias not in ctx.desired.resources.get(self.kind, {}) and not _is_ours(tags, ctx.config.env):
            return {}  # someone else's key under our alias: never touched
        ids = {"arn": key["Arn"], "key_id": key["KeyId"], "unaliased": unaliased}
        ctx.registry.put(self.kind, alias, **ids)
        return {alias: Live(
            spec={
                "key_spec": key.get("KeySpec") or key.get("CustomerMasterKeySpec"),
                "key_usage": key.get("KeyUsage"),
                "key_state": key.get("KeyState"),
                "description": key.get("Description", ""),
                "rotation": rotation,
                "tags": tags,
            },
            ids=ids,
            holds_data=True,
        )}

    @staticmethod
    def _rotation(ctx: Context, key_id: str) -> bool | None:
        try:
            return ctx.aws.call("kms", "get_key_rotation_status", KeyId=key_id)["KeyRotationEnabled"]
        except ClientError as exc:
            if error_code(exc) == "KMSInvalidStateException":  # pending deletion: unknown until recovered
                return None
            raise

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        if spec["key_state"] != "Enabled":
            raise ApplyError(f"kms_key {name}: only an enabled key can be declared")
        key = ctx.aws.call(
            "kms", "create_key", Description=spec["description"], KeySpec=spec["key_spec"],
            KeyUsage=spec["key_usage"], Tags=[{"TagKey": k, "TagValue": v} for k, v in sorted(spec["tags"].items())],
        )["KeyMetadata"]
        ctx.registry.put(self.kind, name, arn=key["Arn"], key_id=key["KeyId"])
        # The alias first: it is how the key is found again, should anything after it fail.
        ctx.aws.call("kms", "create_alias", AliasName=name, TargetKeyId=key["KeyId"])
        if spec["rotation"]:
            ctx.aws.call("kms", "enable_key_rotation", KeyId=key["KeyId"])

    @staticmethod
    def _unaliased_key(ctx: Context) -> dict | None:
        """Our key without its alias: the alias is created right after the key, so a run killed between the two
        leaves one. It is adopted (the alias put on it) instead of a second key being created. Found through
        the tagging API by our tags (one call, made only when the alias is missing); the oldest such key that is
        not scheduled for deletion and has no alias at all."""
        tags = ctx.config.resource_tags()
        found = ctx.aws.pages("resourcegroupstaggingapi", "get_resources", "ResourceTagMappingList",
                              ResourceTypeFilters=["kms:key"],
                              TagFilters=[{"Key": k, "Values": [tags[k]]} for k in ("dmp:env", "dmp:managed-by")])
        if not found:
            return None
        aliased = {a.get("TargetKeyId") for a in ctx.aws.pages("kms", "list_aliases", "Aliases")}
        keys = [ctx.aws.call("kms", "describe_key", KeyId=r["ResourceARN"])["KeyMetadata"] for r in found]
        keys = [k for k in keys if k.get("KeyState") in ("Enabled", "Disabled") and k["KeyId"] not in aliased]
        return min(keys, key=lambda k: k["CreationDate"]) if keys else None

    def diff(self, name: str, desired: dict, live: Live) -> list[FieldChange]:
        changes = super().diff(name, desired, live)
        if live.ids.get("unaliased"):
            changes.insert(0, FieldChange("alias", "(none: a run was interrupted between creating the key and "
                                                   "its alias)", name))
        return changes

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        key_id, have = live.ids["key_id"], live.spec
        if live.ids.get("unaliased"):
            ctx.aws.call("kms", "create_alias", AliasName=name, TargetKeyId=key_id)
        if have["key_state"] == "PendingDeletion":
            ctx.aws.call("kms", "cancel_key_deletion", KeyId=key_id)  # leaves the key disabled
        if have["key_state"] != "Enabled":
            ctx.aws.call("kms", "enable_key", KeyId=key_id)
        if spec["description"] != have["description"]:
            ctx.aws.call("kms", "update_key_description", KeyId=key_id, Description=spec["description"])
        if spec["rotation"] != have["rotation"]:
            ctx.aws.call("kms", "enable_key_rotation" if spec["rotation"] else "disable_key_rotation",
                         KeyId=key_id)
        want, got = spec["tags"], have["tags"]
        stale = sorted(set(got) - set(want))
        if stale:
            ctx.aws.call("kms", "untag_resource", KeyId=key_id, TagKeys=stale)
        changed = {k: v for k, v in want.items() if got.get(k) != v}
        if changed:
            ctx.aws.call("kms", "tag_resource", KeyId=key_id,
                         Tags=[{"TagKey": k, "TagValue": v} for k, v in sorted(changed.items())])

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        if live.spec["key_state"] != "PendingDeletion":
            ctx.aws.call("kms", "schedule_key_deletion", KeyId=live.ids["key_id"],
                         PendingWindowInDays=DELETION_WINDOW_DAYS)
        ctx.aws.call("kms", "delete_alias", AliasName=name)
