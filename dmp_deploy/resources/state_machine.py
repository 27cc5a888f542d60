"""Step Functions state machines (kind `state_machine`), one per ASL document in asl/, and the `live` alias of each
(kind `state_machine_alias`), which is what triggers start.

asl/add_users.asl.json is the machine `<prefix>-add-users` ("_" in a document's stem reads as "-"). Its canonical
spec:

    {
      "definition": {...},         # the parsed ASL: key order and whitespace mean nothing
      "role_arn": "arn:aws:iam::ACCOUNT:role/dmp-deploy/<prefix>-add-users-states",
      "type": "STANDARD",          # STANDARD <-> EXPRESS cannot be updated: a change is a replace
      "logging": {"level": "ERROR", "include_execution_data": false, "log_group": "/<prefix>/states/add-users"},
      "tags": {...},
    }

The ECS tasks' network settings are only known in AWS: the ASL names them by placeholder (`placeholders.SUBNETS`
for the subnets config's network.subnets resolves to, `placeholders.security_group(name)` for our security groups), and the
machine is written with the live ids and read back with the placeholders (`with_network_ids`,
`with_network_placeholders`), so a replaced group or a changed subnet lookup is a change to the definition.

Every create or update of definition, role or logging publishes a new version (a version is an immutable
snapshot of those). The alias spec is {"state_machine": name, "version": ..., "description": ...}, where the
version is `DECLARED_VERSION` when the alias routes all traffic to a version holding the declared definition,
role and logging, and otherwise the version ARN it routes to (or its routes). Moving it uses the version this
apply published, or PublishStateMachineVersion, which returns the existing version of the current revision.
`revert` and `drift` pin the alias (pin_key "version_arn"): the alias must then route to exactly release N's
version, and a machine updated back to N's definition is not published again.

The registry holds `arn` and (once published in this apply) `version_arn` per machine; `arn` and `version_arn`
(the version it routes to) per alias. A machine is found by name and tags (ListStateMachines, then describe and
tags at once, and for a declared machine its alias and then the version the alias routes to, which the alias
kind finds on the run's context); deleting one deletes its versions and aliases. A no-op plan makes five calls
per machine: list, describe, tags, describe alias, describe the version (to know it holds the declared content).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Callable

from botocore.exceptions import ClientError

from dmp_deploy import canonical, names
from dmp_deploy import diff as diffing
from dmp_deploy.aws import error_code, polling
from dmp_deploy.errors import ApplyError
from dmp_deploy.plan import FieldChange
from dmp_deploy.resources import add_users_access
from dmp_deploy.resources import task_definitions as tds
from dmp_deploy import placeholders
from dmp_deploy.resources.base import Context, Live, ResourceKind
from dmp_deploy.resources.security_groups import GROUP_KIND, read_groups

KIND = "state_machine"
ALIAS_KIND = "state_machine_alias"
MACHINE_TYPE = "STANDARD"
DECLARED_VERSION = "<the version holding the declared definition, role and logging>"
CONTENT_FIELDS = ("definition", "role_arn", "logging")  # what a version snapshots
ROLE_PROPAGATION_SECONDS = 90  # a new role may be refused by Step Functions for a while
DELETED_TIMEOUT_SECONDS = 300
POLL_SECONDS = 2


def machine_name(config, stem: str) -> str:
    return names.family(config, stem.replace("_", "-"))


def log_group_name(config, machine: str) -> str:
    """The execution log group: /<prefix>/states/<machine without the prefix>."""
    return names.log_group(config, f"states/{machine.removeprefix(config.prefix + '-')}")


def log_group_arn(config, group: str) -> str:
    env = config.environment
    return f"arn:aws:logs:{env.region}:{env.account_id}:log-group:{group}:*"


# --- pure canonical forms ---------------------------------------------------------------------------------------

def _map_network(definition: Any, subnets: Callable[[list], Any], group: Callable[[str], str]) -> Any:
    """`definition` with every AwsvpcConfiguration's Subnets and SecurityGroups mapped; nothing else touched."""
    if isinstance(definition, list):
        return [_map_network(item, subnets, group) for item in definition]
    if not isinstance(definition, dict):
        return definition
    out = {}
    for key, value in definition.items():
        if key == "AwsvpcConfiguration" and isinstance(value, dict):
            value = dict(value)
            if "Subnets" in value:
                value["Subnets"] = subnets(value["Subnets"])
            if isinstance(value.get("SecurityGroups"), list):
                value["SecurityGroups"] = [group(g) for g in value["SecurityGroups"]]
            out[key] = value
        else:
            out[key] = _map_network(value, subnets, group)
    return out


def with_network_ids(definition: dict, subnet_ids: list[str], group_id: Callable[[str], str]) -> dict:
    """The definition as written to AWS: placeholders replaced by the subnet ids and group ids."""
    def subnets(value):
        return sorted(subnet_ids) if value == placeholders.SUBNETS else value

    def group(value: str) -> str:
        name = placeholders.parse_security_group(value)
        return group_id(name) if name is not None else value
    return _map_network(definition, subnets, group)


def with_network_placeholders(definition: dict, subnet_ids: list[str], group_names: dict[str, str]) -> dict:
    """A live definition in canonical form: the configured subnets and our groups' ids back as placeholders."""
    def subnets(value):
        return placeholders.SUBNETS if isinstance(value, list) and sorted(value) == sorted(subnet_ids) else value

    def group(value: str) -> str:
        return placeholders.security_group(group_names[value]) if value in group_names else value
    return _map_network(definition, subnets, group)


def _map_task_definitions(definition: Any, task_definition: Callable[[str], str]) -> Any:
    """`definition` with every "TaskDefinition" parameter mapped; nothing else touched."""
    if isinstance(definition, list):
        return [_map_task_definitions(item, task_definition) for item in definition]
    if not isinstance(definition, dict):
        return definition
    return {key: task_definition(value) if key == "TaskDefinition" and isinstance(value, str)
            else _map_task_definitions(value, task_definition) for key, value in definition.items()}


def with_task_definition_arns(definition: dict, arn_of: Callable[[str], str | None]) -> dict:
    """As written to AWS: each of our families named by the ASL becomes the exact revision this run deploys,
    so that a published version runs the same revisions for ever and `revert` brings back the release's."""
    return _map_task_definitions(definition, lambda family: arn_of(family) or family)


def with_task_definition_families(definition: dict, family_of: Callable[[str], str | None]) -> dict:
    """A live definition in canonical form: a revision holding its family's declared content reads back as the
    family (as the ASL names it); any other revision stays "family:revision", a change to the definition."""
    def back(value: str) -> str:
        if not value.startswith("arn:"):
            return value
        return family_of(value) or value.rsplit("/", 1)[-1]
    return _map_task_definitions(definition, back)


def logging_spec(configuration: dict | None) -> dict:
    """A loggingConfiguration as {"level", "include_execution_data", "log_group"} (the group by name)."""
    configuration = configuration or {}
    group = None
    for destination in configuration.get("destinations") or []:
        arn = (destination.get("cloudWatchLogsLogGroup") or {}).get("logGroupArn", "")
        if ":log-group:" in arn:
            group = arn.split(":log-group:", 1)[1].removesuffix(":*")
    return {"level": configuration.get("level") or "OFF",
            "include_execution_data": bool(configuration.get("includeExecutionData")),
            "log_group": group}


def logging_configuration(config, spec: dict) -> dict:
    out = {"level": spec["level"], "includeExecutionData": spec["include_execution_data"]}
    if spec["log_group"]:
        out["destinations"] = [{"cloudWatchLogsLogGroup": {"logGroupArn": log_group_arn(config, spec["log_group"])}}]
    return out


def content(spec: dict) -> dict:
    return {k: spec[k] for k in CONTENT_FIELDS}


def content_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(content(spec), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def definition_changes(desired: dict, live: dict) -> list[FieldChange]:
    """Differences between two definitions, by top-level field and by state: `definition.States.AddUsers`."""
    out = []
    for key in sorted(set(desired) | set(live)):
        want, have = desired.get(key), live.get(key)
        if key == "States" and isinstance(want, dict) and isinstance(have, dict):
            out += [FieldChange(f"definition.States.{state}", have.get(state), want.get(state))
                    for state in sorted(set(want) | set(have)) if want.get(state) != have.get(state)]
        elif want != have:
            out.append(FieldChange(f"definition.{key}", have, want))
    return out


def routed_version(routing: list[dict]) -> Any:
    """An alias's routing as one version ARN when it routes everything there, else its routes."""
    routes = sorted(({"version": r["stateMachineVersionArn"], "weight": r.get("weight", 100)} for r in routing or []),
                    key=lambda r: r["version"])
    if len(routes) == 1 and routes[0]["weight"] == 100:
        return routes[0]["version"]
    return routes


# --- the machine ------------------------------------------------------------------------------------------------

def _family_if_declared_content(ctx: Context, arn: str) -> str | None:
    """The family of a task definition revision when it is the very revision the task_definition kind deploys
    (the one it pins, for `revert` and `drift`) and no new one replaces it in this apply; None otherwise, so that
    a machine naming a superseded revision is updated (and its alias moved) in the same apply as the registration.
    """
    return tds.deployed_family(ctx, arn)


def _live_machine_spec(ctx: Context, described: dict, tags: dict) -> dict:
    group_names = read_groups(ctx).names.groups  # our groups by id, except those about to be replaced
    definition = with_task_definition_families(json.loads(described["definition"]),
                                               lambda arn: _family_if_declared_content(ctx, arn))
    return {
        "definition": with_network_placeholders(definition, ctx.lookups.get("subnet_ids") or [], group_names),
        "role_arn": described.get("roleArn"),
        "type": described.get("type"),
        "logging": logging_spec(described.get("loggingConfiguration")),
        "tags": tags,
    }


def _definition_text(ctx: Context, spec: dict) -> str:
    definition = with_network_ids(spec["definition"], ctx.lookups.get("subnet_ids") or [],
                                  lambda group: ctx.registry.get(GROUP_KIND, group, "id"))
    definition = with_task_definition_arns(definition, lambda family: ctx.registry.find(
        "task_definition", family, "arn"))
    return json.dumps(definition, indent=2, sort_keys=False)


def _retry_while_role_propagates(call: Callable[[], dict]) -> dict:
    """IAM is eventually consistent: Step Functions refuses a role created seconds ago as not assumable."""
    deadline = time.monotonic() + ROLE_PROPAGATION_SECONDS
    while True:
        try:
            return call()
        except ClientError as exc:
            message = exc.response.get("Error", {}).get("Message", "") or ""
            if error_code(exc) != "AccessDeniedException" or "assume" not in message \
                    or time.monotonic() > deadline:
                raise
            time.sleep(POLL_SECONDS)


MACHINES_READ = "stepfunctions: state machines"  # prefetched for the read (Context.take)


class StateMachines(ResourceKind):
    kind = KIND
    depends_on = ("task_definition", "iam_role", "log_group", GROUP_KIND)
    replace_fields = frozenset({"type"})

    def desired(self, state) -> dict[str, dict]:
        config = state.config
        out = {}
        for stem, definition in sorted(state.state_machines.items()):
            name = machine_name(config, stem)
            if name == add_users_access.machine_name(config):
                add_users_access.declare(state)  # its roles: read by iam_role, which builds its desired after
            group = log_group_name(config, name)
            state.resources.setdefault("_extra_log_groups", {})[group] = {}
            out[name] = {
                "definition": definition,
                "role_arn": names.role_arn(config, add_users_access.states_role(config)),
                "type": MACHINE_TYPE,
                "logging": {"level": config.add_users.execution_log_level, "include_execution_data": False,
                            "log_group": group},
                "tags": config.resource_tags(),
            }
        return out

    def diff(self, name: str, desired: dict, live: Live) -> list[FieldChange]:
        changes = diffing.field_changes(desired, live.spec, self.replace_fields, ignore=frozenset({"definition"}))
        return sorted(changes + definition_changes(desired["definition"], live.spec["definition"]),
                      key=lambda c: c.path)

    def prefetch(self, ctx: Context) -> None:
        ctx.memo(MACHINES_READ, lambda: self._machines(ctx))

    @staticmethod
    def _machines(ctx: Context) -> list[tuple[dict, tuple[dict, dict]]]:
        """[(ListStateMachines entry, (DescribeStateMachine, tags))] of the machines under our prefix, with their
        aliases read alongside."""
        config = ctx.config
        listed = [m for m in ctx.aws.pages("stepfunctions", "list_state_machines", "stateMachines")
                  if m["name"].startswith(f"{config.prefix}-")]

        aliases = ctx.desired.resources.get(ALIAS_KIND, {})

        def details(machine: dict) -> tuple[dict, dict]:
            arn = machine["stateMachineArn"]
            reads = [
                lambda: ctx.aws.call("stepfunctions", "describe_state_machine", stateMachineArn=arn),
                lambda: canonical.tags_from_list(ctx.aws.call("stepfunctions", "list_tags_for_resource",
                                                              resourceArn=arn).get("tags"), "key", "value"),
            ]
            alias = alias_name(machine["name"])
            if alias in aliases:
                # The alias kind reads next, and only needs this machine's ARN: read its alias (and the version
                # that routes to) now, alongside, so that it finds them on the context instead of waiting.
                reads.append(lambda: _read_alias(ctx, alias, f"{arn}:{add_users_access.ALIAS}"))
            described, tags, *_ = ctx.map(lambda read: read(), reads)
            return described, tags

        return list(zip(listed, ctx.map(details, listed)))

    def read(self, ctx: Context) -> dict[str, Live]:
        config = ctx.config
        declared = ctx.desired.resources.get(self.kind, {})
        out = {}
        for machine, (described, tags) in ctx.take(MACHINES_READ, lambda: self._machines(ctx)):
            name = machine["name"]
            if name not in declared and not (tags.get("dmp:managed-by") == "dmp-deploy"
                                             and tags.get("dmp:env") == config.env):
                continue  # a machine with our prefix that is not ours: never touched
            ctx.registry.put(self.kind, name, arn=machine["stateMachineArn"], type=described.get("type"))
            out[name] = Live(spec=_live_machine_spec(ctx, described, tags), ids={"arn": machine["stateMachineArn"]})
        return out

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        answer = _retry_while_role_propagates(lambda: ctx.aws.call(
            "stepfunctions", "create_state_machine", name=name, definition=_definition_text(ctx, spec),
            roleArn=spec["role_arn"], type=spec["type"], loggingConfiguration=logging_configuration(ctx.config,
                                                                                                    spec["logging"]),
            tags=canonical.tags_to_list(spec["tags"], "key", "value"), publish=True,
            versionDescription=_version_description(spec)))
        ctx.registry.put(self.kind, name, arn=answer["stateMachineArn"], version_arn=answer["stateMachineVersionArn"])

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        arn = live.ids["arn"]
        if content(spec) != content(live.spec):
            # Reverting: the alias goes back to the release's own version; publishing a copy of it would only
            # add a version nothing routes to.
            publish = (ALIAS_KIND, alias_name(name)) not in ctx.pins
            params: dict[str, Any] = {"stateMachineArn": arn, "definition": _definition_text(ctx, spec),
                                      "roleArn": spec["role_arn"],
                                      "loggingConfiguration": logging_configuration(ctx.config, spec["logging"]),
                                      "publish": publish}
            if publish:
                params["versionDescription"] = _version_description(spec)
            answer = _retry_while_role_propagates(
                lambda: ctx.aws.call("stepfunctions", "update_state_machine", **params))
            if publish:
                ctx.registry.put(self.kind, name, version_arn=answer["stateMachineVersionArn"])
        want, have = spec["tags"], live.spec["tags"]
        stale = sorted(set(have) - set(want))
        if stale:
            ctx.aws.call("stepfunctions", "untag_resource", resourceArn=arn, tagKeys=stale)
        changed = {k: v for k, v in want.items() if have.get(k) != v}
        if changed:
            ctx.aws.call("stepfunctions", "tag_resource", resourceArn=arn,
                         tags=canonical.tags_to_list(changed, "key", "value"))

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        # Deletes its versions and aliases too. AWS deletes asynchronously: a replace's create must wait.
        arn = live.ids["arn"]
        ctx.aws.call("stepfunctions", "delete_state_machine", stateMachineArn=arn)
        deadline = time.monotonic() + DELETED_TIMEOUT_SECONDS
        while True:
            try:
                with polling("state machine deleted"):
                    ctx.aws.call("stepfunctions", "describe_state_machine", stateMachineArn=arn)
            except ClientError as exc:
                if error_code(exc) == "StateMachineDoesNotExist":
                    return
                raise
            if time.monotonic() > deadline:
                raise ApplyError(f"state machine {name} was still being deleted after {DELETED_TIMEOUT_SECONDS}s; "
                                 f"run apply again in a few minutes")
            time.sleep(POLL_SECONDS)


def _version_description(spec: dict) -> str:
    return f"dmp-deploy: content sha256 {content_hash(spec)[:16]}"


# --- the live alias -----------------------------------------------------------------------------------------

def alias_name(machine: str) -> str:
    return f"{machine}:{add_users_access.ALIAS}"


def _read_alias(ctx: Context, name: str, arn: str) -> dict | None:
    """DescribeStateMachineAlias (None when there is none), then DescribeStateMachine of the version it routes
    everything to, unless a release pins that version: once per run (memoised), started by the machine's read."""
    def read() -> dict | None:
        try:
            alias = ctx.aws.call("stepfunctions", "describe_state_machine_alias", stateMachineAliasArn=arn)
        except ClientError as exc:
            if error_code(exc) in ("ResourceNotFound", "StateMachineDoesNotExist"):
                return None
            raise
        version = routed_version(alias.get("routingConfiguration"))
        if isinstance(version, str) and not ctx.pins.get((ALIAS_KIND, name)):
            _describe_version(ctx, version)
        return alias

    return ctx.memo(f"stepfunctions: alias {arn}", read)


def _describe_version(ctx: Context, version_arn: str) -> dict:
    return ctx.memo(f"stepfunctions: version {version_arn}", lambda: ctx.aws.call(
        "stepfunctions", "describe_state_machine", stateMachineArn=version_arn))


class StateMachineAliases(ResourceKind):
    kind = ALIAS_KIND
    depends_on = (KIND,)
    pin_key = "version_arn"

    def desired(self, state) -> dict[str, dict]:
        return {alias_name(machine): {
            "state_machine": machine, "version": DECLARED_VERSION,
            "description": "dmp-deploy: the version triggers start (moved by apply and revert)",
        } for machine in state.resources.get(KIND, {})}

    def read(self, ctx: Context) -> dict[str, Live]:
        declared = ctx.desired.resources.get(self.kind, {})
        machines = ctx.desired.resources.get(KIND, {})
        present = [(name, spec["state_machine"], ctx.registry.find(KIND, spec["state_machine"], "arn"))
                   for name, spec in sorted(declared.items())]
        present = [(name, machine, arn) for name, machine, arn in present if arn]

        def read_one(item) -> tuple[str, Live | None]:
            name, machine, machine_arn = item
            arn = f"{machine_arn}:{add_users_access.ALIAS}"
            alias = _read_alias(ctx, name, arn)  # usually already read, with the machine
            if alias is None:
                return name, None
            version = routed_version(alias.get("routingConfiguration"))
            ids = {"arn": arn, "version_arn": version if isinstance(version, str) else None}
            ctx.registry.put(self.kind, name, **ids)
            shown = version
            if (machines.get(machine) or {}).get("type") != ctx.registry.find(KIND, machine, "type"):
                shown = f"{version} (deleted with its machine, which is replaced)"  # re-created after it
            elif isinstance(version, str) and self._is_declared_version(ctx, name, version, machines.get(machine)):
                shown = DECLARED_VERSION
            return name, Live(spec={"state_machine": machine, "version": shown,
                                    "description": alias.get("description", "")}, ids=ids)

        return {name: live for name, live in ctx.map(read_one, present) if live}

    @staticmethod
    def _is_declared_version(ctx: Context, name: str, version_arn: str, machine_spec: dict | None) -> bool:
        pinned = ctx.pins.get((ALIAS_KIND, name))
        if pinned:
            return version_arn == pinned
        if machine_spec is None:
            return False
        described = _describe_version(ctx, version_arn)
        return content(_live_machine_spec(ctx, described, {})) == content(machine_spec)

    def _target(self, ctx: Context, name: str, spec: dict) -> str:
        pinned = ctx.pins.get((self.kind, name))
        if pinned:
            return pinned
        machine = spec["state_machine"]
        published = ctx.registry.find(KIND, machine, "version_arn")
        if published:
            return published
        # Idempotent: the existing version of the machine's current revision, or a new one if it has none.
        return ctx.aws.call("stepfunctions", "publish_state_machine_version",
                            stateMachineArn=ctx.registry.get(KIND, machine, "arn"),
                            description="dmp-deploy: published to move the live alias")["stateMachineVersionArn"]

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        version = self._target(ctx, name, spec)
        answer = ctx.aws.call("stepfunctions", "create_state_machine_alias", name=add_users_access.ALIAS,
                              description=spec["description"],
                              routingConfiguration=[{"stateMachineVersionArn": version, "weight": 100}])
        ctx.registry.put(self.kind, name, arn=answer["stateMachineAliasArn"], version_arn=version)

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        version = self._target(ctx, name, spec)
        try:
            ctx.aws.call("stepfunctions", "update_state_machine_alias", stateMachineAliasArn=live.ids["arn"],
                         description=spec["description"],
                         routingConfiguration=[{"stateMachineVersionArn": version, "weight": 100}])
        except ClientError as exc:
            if error_code(exc) not in ("ResourceNotFound", "StateMachineDoesNotExist"):
                raise
            self.create(ctx, name, spec)  # its machine was replaced in this apply, taking the alias with it
            return
        ctx.registry.put(self.kind, name, version_arn=version)

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        ctx.aws.call("stepfunctions", "delete_state_machine_alias", stateMachineAliasArn=live.ids["arn"])
