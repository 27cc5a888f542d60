"""CloudWatch log groups: one per log group any task definition names, plus those other kinds declare.

Retention and KMS key are updated in place; tags are compared key by key. Deleting a log group destroys
its logs, so an undeclared one is only removed with --allow-destroy.
"""

from __future__ import annotations

from dmp_deploy import names
from dmp_deploy.resources.base import Context, Live, ResourceKind

SHORT_RETENTION_STEMS = ("add-users",)  # logs that may hold what a redaction missed: keep them briefly


def declared_log_groups(state) -> set[str]:
    groups = set()
    for document in state.task_definitions.values():
        for container in document.get("containerDefinitions", []):
            options = (container.get("logConfiguration") or {}).get("options") or {}
            if options.get("awslogs-group"):
                groups.add(options["awslogs-group"])
    return groups


LISTED = "logs: our log groups and their tags"  # prefetched for the read (Context.take)


class LogGroups(ResourceKind):
    kind = "log_group"
    holds_data = True

    def desired(self, state) -> dict[str, dict]:
        config = state.config
        short = {names.log_group(config, s) for s in SHORT_RETENTION_STEMS}
        extra = state.resources.get("_extra_log_groups", {})  # declared by other kinds (e.g. Step Functions)
        out = {}
        for group in sorted(declared_log_groups(state) | set(extra)):
            out[group] = {
                "retention_days": config.logs.add_users_retention_days if group in short
                else config.logs.retention_days,
                "kms_key_arn": config.logs.kms_key_arn,
                "tags": config.resource_tags(),
            }
        return out

    def prefetch(self, ctx: Context) -> None:
        ctx.memo(LISTED, lambda: self._listed(ctx))

    @staticmethod
    def _listed(ctx: Context) -> tuple[list[dict], list[dict]]:
        """The groups under our prefix and their tags."""
        prefix = names.log_group_prefix(ctx.config)
        groups = ctx.aws.pages("logs", "describe_log_groups", "logGroups", logGroupNamePrefix=prefix)
        # Tags per group: the tagging API's tag filter would hide a group whose ownership tag was removed
        # out of band, which is exactly the drift to report. One call per group, run concurrently.
        return groups, ctx.map(
            lambda g: ctx.aws.call("logs", "list_tags_for_resource",
                                   resourceArn=g["arn"].removesuffix(":*")).get("tags", {}),
            groups,
        )

    def read(self, ctx: Context) -> dict[str, Live]:
        groups, tag_lists = ctx.take(LISTED, lambda: self._listed(ctx))
        desired = ctx.desired.resources.get(self.kind, {})
        out = {}
        for g, tags in zip(groups, tag_lists):
            name = g["logGroupName"]
            arn = g["arn"].removesuffix(":*")
            if name not in desired and tags.get("dmp:managed-by") != "dmp-deploy":
                continue  # not ours: never touched
            ctx.registry.put(self.kind, name, arn=arn)
            out[name] = Live(
                spec={"retention_days": g.get("retentionInDays"), "kms_key_arn": g.get("kmsKeyId"), "tags": tags},
                ids={"arn": arn},
                holds_data=True,
            )
        return out

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        params = {"logGroupName": name, "tags": spec["tags"]}
        if spec["kms_key_arn"]:
            params["kmsKeyId"] = spec["kms_key_arn"]
        ctx.aws.call("logs", "create_log_group", **params)
        env = ctx.config.environment
        ctx.registry.put(self.kind, name, arn=f"arn:aws:logs:{env.region}:{env.account_id}:log-group:{name}")
        if spec["retention_days"]:
            ctx.aws.call("logs", "put_retention_policy", logGroupName=name,
                         retentionInDays=spec["retention_days"])

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        if spec["retention_days"] != live.spec["retention_days"]:
            if spec["retention_days"]:
                ctx.aws.call("logs", "put_retention_policy", logGroupName=name,
                             retentionInDays=spec["retention_days"])
            else:
                ctx.aws.call("logs", "delete_retention_policy", logGroupName=name)
        if spec["kms_key_arn"] != live.spec["kms_key_arn"]:
            if spec["kms_key_arn"]:
                ctx.aws.call("logs", "associate_kms_key", logGroupName=name, kmsKeyId=spec["kms_key_arn"])
            else:
                ctx.aws.call("logs", "disassociate_kms_key", logGroupName=name)
        want, have = spec["tags"], live.spec["tags"]
        stale = sorted(set(have) - set(want))
        if stale:
            ctx.aws.call("logs", "untag_resource", resourceArn=live.ids["arn"], tagKeys=stale)
        if any(have.get(k) != v for k, v in want.items()):
            ctx.aws.call("logs", "tag_resource", resourceArn=live.ids["arn"], tags=want)

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        ctx.aws.call("logs", "delete_log_group", logGroupName=name)
