"""EventBridge rules on the default event bus (kind `event_rule`): the add-users workflow's trigger.

`<prefix>-add-users-uploads` matches the add-users bucket's "Object Created" events (the bucket sends every event
to EventBridge, bucket.py) for keys under the upload prefix, and starts the workflow's `live` alias with the whole
event as input (no Input, InputPath or InputTransformer: `add-users` finds its execution by the event's bucket and
key), as the role `<prefix>-add-users-trigger`, which may start that alias and nothing else. It is declared when
the add-users state machine is.

Canonical spec:

    {
      "description": "...",
      "event_pattern": {...},    # parsed; lists of alternatives sorted (their order means nothing)
      "state": "ENABLED",
      "targets": [{"id": "add-users-live", "arn": "arn:aws:states:...:stateMachine:<prefix>-add-users:live",
                   "role_arn": "arn:aws:iam::...:role/dmp-deploy/<prefix>-add-users-trigger"}],
      "tags": {...},
    }

A live target's Input, InputPath or InputTransformer appears in its spec (as "input", "input_path",
"input_transformer"), so one added out of band is drift that apply removes (PutTargets replaces a target whole).
Rules are found by name prefix and ownership tags (ListRules, then tags and targets of each at once); deleting one
removes its targets first, as EventBridge requires.
"""

from __future__ import annotations

import json
from typing import Any

from dmp_deploy import canonical, names
from dmp_deploy.errors import ApplyError
from dmp_deploy.resources import add_users_access
from dmp_deploy.resources.base import Context, Live, ResourceKind
from dmp_deploy.resources.state_machine import ALIAS_KIND, KIND as MACHINE_KIND

KIND = "event_rule"
TARGET_ID = "add-users-live"
INPUT_FIELDS = {"Input": "input", "InputPath": "input_path", "InputTransformer": "input_transformer"}


def rule_name(config) -> str:
    return f"{config.prefix}-add-users-uploads"


def upload_pattern(config) -> dict:
    add_users = config.add_users
    return {"source": ["aws.s3"], "detail-type": ["Object Created"],
            "detail": {"bucket": {"name": [add_users.bucket_name]},
                       "object": {"key": [{"prefix": add_users.upload_prefix}]}}}


def pattern_spec(pattern: str | dict) -> dict:
    """An event pattern (JSON text or parsed) in canonical form: the alternatives of every list sorted."""
    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in sorted(value.items())}
        if isinstance(value, list):
            return sorted((walk(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
        return value
    return walk(json.loads(pattern) if isinstance(pattern, str) else pattern)


def target_spec(target: dict) -> dict:
    """A ListTargetsByRule entry in canonical form."""
    out = {"id": target["Id"], "arn": target["Arn"], "role_arn": target.get("RoleArn")}
    for field, key in INPUT_FIELDS.items():
        if target.get(field) is not None:
            out[key] = target[field]
    return out


def target_parameters(spec: dict) -> dict:
    params = {"Id": spec["id"], "Arn": spec["arn"]}
    if spec.get("role_arn"):
        params["RoleArn"] = spec["role_arn"]
    for field, key in INPUT_FIELDS.items():
        if key in spec:
            params[field] = spec[key]
    return params


RULES_READ = "events: our rules"  # prefetched for the read (Context.take)


class EventRules(ResourceKind):
    kind = KIND
    depends_on = (ALIAS_KIND, "iam_role")

    def desired(self, state) -> dict[str, dict]:
        config = state.config
        if add_users_access.machine_name(config) not in state.resources.get(MACHINE_KIND, {}):
            return {}
        return {rule_name(config): {
            "description": f"dmp-deploy {config.env}: an upload to s3://{config.add_users.bucket_name}/"
                           f"{config.add_users.upload_prefix} starts the add-users workflow",
            "event_pattern": pattern_spec(upload_pattern(config)),
            "state": "ENABLED",
            "targets": [{"id": TARGET_ID, "arn": add_users_access.alias_arn(config),
                         "role_arn": names.role_arn(config, add_users_access.trigger_role(config))}],
            "tags": config.resource_tags(),
        }}

    def prefetch(self, ctx: Context) -> None:
        ctx.memo(RULES_READ, lambda: self._rules(ctx))

    @staticmethod
    def _rules(ctx: Context) -> list[tuple[dict, tuple[dict, list[dict]]]]:
        """[(ListRules entry, (tags, targets))] of the default bus's rules under our prefix."""
        rules = [r for r in ctx.aws.pages("events", "list_rules", "Rules", NamePrefix=f"{ctx.config.prefix}-")
                 if r.get("EventBusName", "default") == "default"]

        def details(rule: dict) -> tuple[dict, list[dict]]:
            return tuple(ctx.map(lambda read: read(), [
                lambda: canonical.tags_from_list(
                    ctx.aws.call("events", "list_tags_for_resource", ResourceARN=rule["Arn"]).get("Tags")),
                lambda: ctx.aws.pages("events", "list_targets_by_rule", "Targets", Rule=rule["Name"]),
            ]))
        return list(zip(rules, ctx.map(details, rules)))

    def read(self, ctx: Context) -> dict[str, Live]:
        config = ctx.config
        declared = ctx.desired.resources.get(self.kind, {})
        out = {}
        for rule, (tags, targets) in ctx.take(RULES_READ, lambda: self._rules(ctx)):
            name = rule["Name"]
            if name not in declared and not (tags.get("dmp:managed-by") == "dmp-deploy"
                                             and tags.get("dmp:env") == config.env):
                continue  # a rule with our prefix that is not ours: never touched
            ids = {"arn": rule["Arn"], "target_ids": sorted(t["Id"] for t in targets)}
            ctx.registry.put(self.kind, name, arn=rule["Arn"])
            out[name] = Live(spec={
                "description": rule.get("Description", ""),
                "event_pattern": pattern_spec(rule["EventPattern"]) if rule.get("EventPattern") else None,
                "state": rule.get("State"),
                "targets": sorted((target_spec(t) for t in targets), key=lambda t: t["id"]),
                "tags": tags,
            }, ids=ids)
        return out

    def _put_rule(self, ctx: Context, name: str, spec: dict, **extra) -> str:
        return ctx.aws.call("events", "put_rule", Name=name, EventPattern=json.dumps(spec["event_pattern"]),
                            State=spec["state"], Description=spec["description"], **extra)["RuleArn"]

    @staticmethod
    def _put_targets(ctx: Context, name: str, targets: list[dict]) -> None:
        answer = ctx.aws.call("events", "put_targets", Rule=name, Targets=[target_parameters(t) for t in targets])
        if answer.get("FailedEntryCount"):
            failed = "; ".join(f"{e.get('TargetId')}: {e.get('ErrorCode')} {e.get('ErrorMessage')}"
                               for e in answer.get("FailedEntries", []))
            raise ApplyError(f"event rule {name}: EventBridge refused targets: {failed}")

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        arn = self._put_rule(ctx, name, spec, Tags=canonical.tags_to_list(spec["tags"]))
        ctx.registry.put(self.kind, name, arn=arn)
        self._put_targets(ctx, name, spec["targets"])

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        have = live.spec
        if any(spec[k] != have[k] for k in ("description", "event_pattern", "state")):
            self._put_rule(ctx, name, spec)
        if spec["targets"] != have["targets"]:
            wanted = {t["id"] for t in spec["targets"]}
            stale = sorted(set(live.ids["target_ids"]) - wanted)
            if stale:
                ctx.aws.call("events", "remove_targets", Rule=name, Ids=stale)
            changed = [t for t in spec["targets"] if t not in have["targets"]]
            if changed:
                self._put_targets(ctx, name, changed)
        want, got = spec["tags"], have["tags"]
        stale_tags = sorted(set(got) - set(want))
        if stale_tags:
            ctx.aws.call("events", "untag_resource", ResourceARN=live.ids["arn"], TagKeys=stale_tags)
        changed_tags = {k: v for k, v in want.items() if got.get(k) != v}
        if changed_tags:
            ctx.aws.call("events", "tag_resource", ResourceARN=live.ids["arn"],
                         Tags=canonical.tags_to_list(changed_tags))

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        if live.ids["target_ids"]:
            ctx.aws.call("events", "remove_targets", Rule=name, Ids=live.ids["target_ids"])
        ctx.aws.call("events", "delete_rule", Name=name)
