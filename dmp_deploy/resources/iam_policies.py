"""Customer-managed IAM policies (kind `iam_policy`) that other features declare for principals this tool does not
own: today the add-users operative's policy when `add_users.operative_access` is "group_policy" (the account's
administrators attach it to the operatives' IAM group; add_users_access.py writes the document).

Declared through `state.resources["_extra_iam_policies"]` ({name: {"description", "document"}}) by kinds whose
desired() runs before this one's. Canonical spec:

    {
      "path": "/dmp-deploy/",       # fixed at creation: a change is a replace
      "description": "...",         # fixed at creation: a change is a replace
      "document": {...},            # the default version's document, canonical.policy() form
      "tags": {...},
    }

A changed document becomes a new default version (IAM keeps five: the oldest non-default one is deleted first).
Documents may name the add-users KMS key by placeholder, resolved as in iam_roles.py. A policy is found by path and
name prefix among the account's customer-managed policies (GetAccountAuthorizationDetails, read once with the
roles, see iam_roles.authorization_details; GetPolicy each for its tags), and is ours when declared or tagged as
ours in this environment. Deleting
one detaches it from every group, user and role first (IAM refuses otherwise): undeclared means no longer granted.
"""

from __future__ import annotations

import json

from dmp_deploy import canonical, names
from dmp_deploy.resources import iam_roles, kms_keys
from dmp_deploy.resources.base import Context, Live, ResourceKind

KIND = "iam_policy"
MAX_VERSIONS = 5


def policy_name(policy: dict) -> str:
    """A policy's name: the last segment of its ARN (arn:aws:iam::ACCOUNT:policy/PATH/NAME)."""
    return policy["Arn"].rsplit("/", 1)[-1]


LISTED = "iam: our policies"  # prefetched for the read (Context.take)


class IamPolicies(ResourceKind):
    kind = KIND
    depends_on = ("kms_key",)
    replace_fields = frozenset({"path", "description"})

    def desired(self, state) -> dict[str, dict]:
        config = state.config
        return {name: {"path": names.IAM_PATH, "description": declared["description"],
                       "document": canonical.policy(declared["document"]), "tags": config.resource_tags()}
                for name, declared in sorted(state.resources.get("_extra_iam_policies", {}).items())}

    def prefetch(self, ctx: Context) -> None:
        ctx.memo(LISTED, lambda: self._listed(ctx))

    @staticmethod
    def _listed(ctx: Context) -> tuple[list[dict], list[dict]]:
        """Our customer-managed policies and their GetPolicy answers (for the tags)."""
        config = ctx.config
        # The account's customer-managed policies come with the roles' authorization details (one read for
        # both kinds), each with its versions' documents; only the tags need a call per policy of ours.
        listed = [p for p in iam_roles.authorization_details(ctx).policies
                  if p["Path"].startswith(names.IAM_PATH) and policy_name(p).startswith(f"{config.prefix}-")]
        return listed, ctx.map(
            lambda policy: ctx.aws.call("iam", "get_policy", PolicyArn=policy["Arn"])["Policy"], listed)

    def read(self, ctx: Context) -> dict[str, Live]:
        config = ctx.config
        declared = ctx.desired.resources.get(self.kind, {})
        listed, fetched = ctx.take(LISTED, lambda: self._listed(ctx))
        out = {}
        for policy, got in zip(listed, fetched):
            name, tags = policy_name(policy), canonical.tags_from_list(got.get("Tags"))
            if name not in declared and not (tags.get("dmp:managed-by") == "dmp-deploy"
                                             and tags.get("dmp:env") == config.env):
                continue
            ctx.registry.put(self.kind, name, arn=policy["Arn"])
            version = next(v for v in policy.get("PolicyVersionList") or [] if v.get("IsDefaultVersion"))
            document = canonical.policy(kms_keys.with_placeholders(ctx.registry,
                                                                   canonical.policy(version["Document"])))
            out[name] = Live(spec={"path": policy["Path"], "description": got.get("Description", ""),
                                   "document": document, "tags": tags},
                             ids={"arn": policy["Arn"]})
        return out

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        policy = ctx.aws.call("iam", "create_policy", PolicyName=name, Path=spec["path"],
                              Description=spec["description"],
                              PolicyDocument=json.dumps(kms_keys.with_arns(ctx, spec["document"])),
                              Tags=canonical.tags_to_list(spec["tags"]))["Policy"]
        ctx.registry.put(self.kind, name, arn=policy["Arn"])

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        arn = live.ids["arn"]
        if spec["document"] != live.spec["document"]:
            versions = ctx.aws.pages("iam", "list_policy_versions", "Versions", PolicyArn=arn)
            if len(versions) >= MAX_VERSIONS:
                oldest = min((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
                ctx.aws.call("iam", "delete_policy_version", PolicyArn=arn, VersionId=oldest["VersionId"])
            ctx.aws.call("iam", "create_policy_version", PolicyArn=arn, SetAsDefault=True,
                         PolicyDocument=json.dumps(kms_keys.with_arns(ctx, spec["document"])))
        want, have = spec["tags"], live.spec["tags"]
        stale = sorted(set(have) - set(want))
        if stale:
            ctx.aws.call("iam", "untag_policy", PolicyArn=arn, TagKeys=stale)
        changed = {k: v for k, v in want.items() if have.get(k) != v}
        if changed:
            ctx.aws.call("iam", "tag_policy", PolicyArn=arn, Tags=canonical.tags_to_list(changed))

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        arn = live.ids["arn"]
        entities = ctx.aws.call("iam", "list_entities_for_policy", PolicyArn=arn)
        for group in entities.get("PolicyGroups", []):
            ctx.aws.call("iam", "detach_group_policy", GroupName=group["GroupName"], PolicyArn=arn)
        for user in entities.get("PolicyUsers", []):
            ctx.aws.call("iam", "detach_user_policy", UserName=user["UserName"], PolicyArn=arn)
        for role in entities.get("PolicyRoles", []):
            ctx.aws.call("iam", "detach_role_policy", RoleName=role["RoleName"], PolicyArn=arn)
        for version in ctx.aws.pages("iam", "list_policy_versions", "Versions", PolicyArn=arn):
            if not version["IsDefaultVersion"]:
                ctx.aws.call("iam", "delete_policy_version", PolicyArn=arn, VersionId=version["VersionId"])
        ctx.aws.call("iam", "delete_policy", PolicyArn=arn)
