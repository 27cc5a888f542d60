"""Security groups (kind `security_group`) and their rules (kind `security_group_rules`), derived from the
call graph in apps.py (../../shared/dmp-reference.md section 3).

Which groups:
  - one per app: admits the app's port from each caller's group (and from the load balancer's group for apps
    behind it); egress to each app it calls, on that app's port, and 443 to `network.https_egress_cidrs`;
  - a pair per backing service (postgres, redis, opensearch, efs): `<prefix>-<svc>` admits the port only from
    `<prefix>-<svc>-clients`, which has egress on that port to it. Tasks gain access by listing the clients group;
  - the add-users task (api on 8080, 443 out) and its file copier (443 out only);
  - one per load balancer the tool owns (load_balancers.py): `<prefix>-www-alb` admits 80 from the router only and
    reaches the frontends on 8080 (the frontends admit 8080 from it, not from the router); `<prefix>-public-alb`
    admits 443 and 80 from anywhere and reaches the router on 80. With public_entry.existing_target_group_arn
    there is no public group: the router admits 80 from network.load_balancer_security_group instead.
Every group's egress is declared: AWS's default allow-all egress rule is revoked wherever it is not declared.

Canonical forms:
  - a group: {"description": its fixed sentence (`declared_groups`), "tags": {...}}. AWS cannot change a
    description, so a changed one is a replace (see `SecurityGroups.replace`: when it is safe, what it refuses);
  - its rules: {"ingress": [rule, ...], "egress": [rule, ...]}, each rule ATOMIC (one protocol, one port range,
    one peer) and sorted: {"protocol", "from_port", "to_port", "peer"}. The peer is {"group": name} for our
    groups, {"lookup": key} for an external group the config names (the load balancer's, resolved through
    ctx.lookups at read and apply time: the desired state is built without AWS), {"group_id": "sg-..."} for any
    other group, or {"cidr"|"ipv6"|"prefix_list": ...}. AWS's grouping (several ranges or groups per
    IpPermission), protocol spellings ("6", "tcp", "-1") and unmasked CIDRs are normalised away.
  - Rule descriptions are not part of a rule: AWS does not count them in a rule's identity (two rules differing
    only by description are duplicates), moto drops them for group references, and we set none. A description
    edited by hand is therefore not drift.

Reads: the groups of the environment's VPC that carry our dmp:env/dmp:managed-by tags, plus any group with a
declared name (an untagged group with our name is adopted and tagged, not duplicated), in one pass shared by
both kinds through `ctx.memo`: one DescribeSecurityGroups of the whole VPC (1000 a page), ours picked here. Changes to rules re-read the group's rules (DescribeSecurityGroupRules) when they
act, so that only the difference is authorized or revoked, by rule id.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from botocore.exceptions import ClientError

from dmp_deploy import canonical, names
from dmp_deploy.apps import APPS, BACKING_SERVICES, FRONTENDS, HTTP_PORT, HTTPS, callers_of
from dmp_deploy.aws import error_code
from dmp_deploy.config import Config
from dmp_deploy.errors import ApplyError
from dmp_deploy.plan import FieldChange
from dmp_deploy.resources.base import Context, Live, ResourceKind

GROUP_KIND = "security_group"
RULES_KIND = "security_group_rules"
DIRECTIONS = ("ingress", "egress")
LOAD_BALANCER = "load_balancer_security_group"  # the config key naming the load balancer's group
ADD_USERS = "add-users"
WWW_ALB = f"{names.WWW_LOAD_BALANCER}-alb"  # stems of our load balancers' groups (names.load_balancer_group)
PUBLIC_ALB = f"{names.PUBLIC_LOAD_BALANCER}-alb"
HTTP_LISTENER_PORT = 80  # both load balancers' plain-HTTP listener (the internal one's only listener)
ADD_USERS_COPIER = "add-users-copier"
DESCRIBE_PAGE = 1000  # DescribeSecurityGroups returns at most 1000 groups a page

# Tag dmp:role of each group.
ROLE_APP, ROLE_BACKING, ROLE_CLIENTS, ROLE_TASK = "app", "backing-service", "backing-service-clients", "one-off-task"
ROLE_LOAD_BALANCER = "load-balancer"

# ---------------------------------------------------------------------------------------------------------
# Rules: the atomic tuple and its normalisation


@dataclass(frozen=True)
class Rule:
    """One atomic rule: (direction, protocol, from_port, to_port, peer), peer as (kind, value)."""

    direction: str  # "ingress" | "egress"
    protocol: str  # "tcp", "udp", "icmp", "icmpv6", "all", or an IP protocol number as a string
    from_port: int | None  # None for protocol "all"
    to_port: int | None
    peer: tuple[str, str]  # ("group", name) | ("group_id", id) | ("lookup", key) | ("cidr"|"ipv6"|"prefix_list", v)

    def as_spec(self) -> dict:
        return {"protocol": self.protocol, "from_port": self.from_port, "to_port": self.to_port,
                "peer": {self.peer[0]: self.peer[1]}}

    @classmethod
    def from_spec(cls, direction: str, spec: dict) -> "Rule":
        ((kind, value),) = spec["peer"].items()
        protocol_ = protocol(spec["protocol"])
        from_port, to_port = ports(protocol_, spec.get("from_port"), spec.get("to_port"))
        return cls(direction, protocol_, from_port, to_port, (kind, peer_value(kind, value)))

    def sort_key(self) -> tuple:
        no_port = -2  # below every real port, and below -1 ("all ICMP types")
        return (DIRECTIONS.index(self.direction), self.protocol,
                no_port if self.from_port is None else self.from_port,
                no_port if self.to_port is None else self.to_port, self.peer)


def tcp(direction: str, port: int, kind: str, value: str) -> Rule:
    return Rule(direction, "tcp", port, port, (kind, peer_value(kind, value)))


PROTOCOL_NAMES = {"-1": "all", "all": "all", "6": "tcp", "tcp": "tcp", "17": "udp", "udp": "udp",
                  "1": "icmp", "icmp": "icmp", "58": "icmpv6", "icmpv6": "icmpv6"}
PROTOCOL_API = {"all": "-1"}  # our name -> what the EC2 API takes, where they differ


def protocol(value) -> str:
    """AWS spells protocols as names or IANA numbers ("6" is "tcp", "-1" is every protocol)."""
    text = str(value).strip().lower()
    return PROTOCOL_NAMES.get(text, text)


def ports(protocol_: str, from_port, to_port) -> tuple[int | None, int | None]:
    """Ports mean nothing for protocol "all": AWS omits them (DescribeSecurityGroups) or says -1 (…Rules)."""
    if protocol_ == "all":
        return None, None
    return (None if from_port is None else int(from_port)), (None if to_port is None else int(to_port))


def cidr(value: str) -> str:
    """A CIDR in canonical form: host bits masked ("10.0.0.5/16" is "10.0.0.0/16"), IPv6 compressed."""
    return ipaddress.ip_network(value.strip(), strict=False).compressed


def peer_value(kind: str, value: str) -> str:
    return cidr(value) if kind in ("cidr", "ipv6") else value


def cidr_peer(value: str) -> tuple[str, str]:
    network = ipaddress.ip_network(value.strip(), strict=False)
    return ("ipv6" if network.version == 6 else "cidr", network.compressed)


@dataclass(frozen=True)
class PeerNames:
    """How live group ids read back: our groups by name, the config's external groups by lookup key."""

    groups: dict[str, str]  # group id -> our group's name
    lookups: dict[str, str]  # group id -> config lookup key (e.g. the load balancer's group)

    def peer(self, group_id: str) -> tuple[str, str]:
        if group_id in self.groups:
            return ("group", self.groups[group_id])
        if group_id in self.lookups:
            return ("lookup", self.lookups[group_id])
        return ("group_id", group_id)


def rules_from_permissions(direction: str, permissions: list[dict], names_: PeerNames) -> set[Rule]:
    """Split DescribeSecurityGroups' IpPermissions (several ranges/groups per permission) into atomic rules."""
    out = set()
    for p in permissions or []:
        protocol_ = protocol(p["IpProtocol"])
        from_port, to_port = ports(protocol_, p.get("FromPort"), p.get("ToPort"))
        peers = [cidr_peer(r["CidrIp"]) for r in p.get("IpRanges") or []]
        peers += [cidr_peer(r["CidrIpv6"]) for r in p.get("Ipv6Ranges") or []]
        peers += [("prefix_list", r["PrefixListId"]) for r in p.get("PrefixListIds") or []]
        peers += [names_.peer(g["GroupId"]) for g in p.get("UserIdGroupPairs") or [] if g.get("GroupId")]
        out.update(Rule(direction, protocol_, from_port, to_port, peer) for peer in peers)
    return out


def rule_from_api(rule: dict, names_: PeerNames) -> Rule:
    """One entry of DescribeSecurityGroupRules (already atomic) as a Rule."""
    protocol_ = protocol(rule["IpProtocol"])
    from_port, to_port = ports(protocol_, rule.get("FromPort"), rule.get("ToPort"))
    if rule.get("CidrIpv4"):
        peer = cidr_peer(rule["CidrIpv4"])
    elif rule.get("CidrIpv6"):
        peer = cidr_peer(rule["CidrIpv6"])
    elif rule.get("PrefixListId"):
        peer = ("prefix_list", rule["PrefixListId"])
    else:
        peer = names_.peer(rule["ReferencedGroupInfo"]["GroupId"])
    return Rule("egress" if rule["IsEgress"] else "ingress", protocol_, from_port, to_port, peer)


def rules_spec(rules) -> dict[str, list[dict]]:
    ordered = sorted(rules, key=Rule.sort_key)
    return {d: [r.as_spec() for r in ordered if r.direction == d] for d in DIRECTIONS}


def rules_of(spec: dict) -> set[Rule]:
    return {Rule.from_spec(d, r) for d in DIRECTIONS for r in spec.get(d, [])}


def rule_changes(desired: dict, live: dict) -> list[FieldChange]:
    """One field change per rule removed (before: the rule) or added (after: the rule), by direction."""
    want, have = rules_of(desired), rules_of(live)
    changes = []
    for direction in DIRECTIONS:
        for r in sorted((r for r in have - want if r.direction == direction), key=Rule.sort_key):
            changes.append(FieldChange(direction, r.as_spec(), None))
        for r in sorted((r for r in want - have if r.direction == direction), key=Rule.sort_key):
            changes.append(FieldChange(direction, None, r.as_spec()))
    return changes


def permission(rule: Rule, group_id_of) -> dict:
    """The EC2 IpPermission authorizing exactly one atomic rule. `group_id_of(peer)` resolves group peers."""
    p: dict = {"IpProtocol": PROTOCOL_API.get(rule.protocol, rule.protocol)}
    if rule.from_port is not None:
        p["FromPort"], p["ToPort"] = rule.from_port, rule.to_port
    kind, value = rule.peer
    if kind == "cidr":
        p["IpRanges"] = [{"CidrIp": value}]
    elif kind == "ipv6":
        p["Ipv6Ranges"] = [{"CidrIpv6": value}]
    elif kind == "prefix_list":
        p["PrefixListIds"] = [{"PrefixListId": value}]
    else:
        p["UserIdGroupPairs"] = [{"GroupId": group_id_of(rule.peer)}]
    return p


# ---------------------------------------------------------------------------------------------------------
# The declared groups (pure: config and apps.py only)


@dataclass(frozen=True)
class DeclaredGroup:
    description: str  # immutable in AWS; no apostrophes (EC2 allows a-zA-Z0-9 spaces ._-:/()#,@[]+=&;{}!$*)
    role: str
    rules: frozenset[Rule]


def declared_groups(config: Config) -> dict[str, DeclaredGroup]:
    def sg(stem: str) -> str:
        return names.security_group(config, stem)

    https_out = {Rule("egress", "tcp", HTTPS, HTTPS, cidr_peer(c)) for c in config.network.https_egress_cidrs}
    groups: dict[str, DeclaredGroup] = {}

    for app in APPS.values():
        rules = set(https_out)
        rules |= {tcp("ingress", app.port, "group", sg(caller)) for caller in callers_of(app.name)}
        if app.name in FRONTENDS:  # through the path router (the internal load balancer)
            rules.add(tcp("ingress", app.port, "group", sg(WWW_ALB)))
        elif app.behind_load_balancer:  # the router, behind the public entry: ours, or one the account has
            rules.add(tcp("ingress", app.port, "group", sg(PUBLIC_ALB)) if config.public_entry.owned
                      else tcp("ingress", app.port, "lookup", LOAD_BALANCER))
        if app.name == "router":
            rules.add(tcp("egress", HTTP_LISTENER_PORT, "group", sg(WWW_ALB)))
        if app.name == "api":
            rules.add(tcp("ingress", app.port, "group", sg(ADD_USERS)))
        rules |= {tcp("egress", APPS[called].port, "group", sg(called)) for called in app.calls}
        groups[sg(app.name)] = DeclaredGroup(
            f"dmp-deploy: tasks of the {app.name} app; admits traffic from its callers only", ROLE_APP,
            frozenset(rules))

    for service in BACKING_SERVICES.values():
        resource, clients = sg(service.name), sg(f"{service.name}-clients")
        groups[resource] = DeclaredGroup(
            f"dmp-deploy: the {service.name} service; admits its port only from its clients group", ROLE_BACKING,
            frozenset({tcp("ingress", service.port, "group", clients)}))  # and no egress at all
        groups[clients] = DeclaredGroup(
            f"dmp-deploy: clients of {service.name}; tasks listing this group may reach {service.name}",
            ROLE_CLIENTS, frozenset({tcp("egress", service.port, "group", resource)}))

    groups[sg(WWW_ALB)] = DeclaredGroup(
        "dmp-deploy: the internal load balancer routing www by path; from the router to the frontends",
        ROLE_LOAD_BALANCER,
        frozenset({tcp("ingress", HTTP_LISTENER_PORT, "group", sg("router"))}
                  | {tcp("egress", APPS[f].port, "group", sg(f)) for f in FRONTENDS}))
    if config.public_entry.owned:
        groups[sg(PUBLIC_ALB)] = DeclaredGroup(
            "dmp-deploy: the internet-facing load balancer; HTTPS and HTTP from anywhere, to the router only",
            ROLE_LOAD_BALANCER,
            frozenset({tcp("ingress", port, "cidr", "0.0.0.0/0") for port in (HTTPS, HTTP_LISTENER_PORT)}
                      | {tcp("egress", APPS["router"].port, "group", sg("router"))}))

    groups[sg(ADD_USERS)] = DeclaredGroup(
        "dmp-deploy: the add-users task; reaches the api and AWS APIs only", ROLE_TASK,
        frozenset(https_out | {tcp("egress", HTTP_PORT, "group", sg("api"))}))
    groups[sg(ADD_USERS_COPIER)] = DeclaredGroup(
        "dmp-deploy: the add-users file copier; reaches AWS APIs only", ROLE_TASK, frozenset(https_out))
    return groups


# ---------------------------------------------------------------------------------------------------------
# The shared read


@dataclass(frozen=True)
class GroupsRead:
    groups: dict[str, dict]  # our group name -> its DescribeSecurityGroups entry
    replaced: frozenset[str]  # names whose description differs from the declared one: they will be replaced
    names: PeerNames  # ids -> peers, excluding groups about to be replaced (their rules move to the new id)


def read_groups(ctx: Context) -> GroupsRead:
    """Both kinds' live state from one pass of DescribeSecurityGroups (memoised on the context)."""
    return ctx.memo(GROUP_KIND, lambda: _read_groups(ctx))


def _read_groups(ctx: Context) -> GroupsRead:
    config = ctx.config
    declared = ctx.desired.resources.get(GROUP_KIND, {})
    # Ours by tag OR ours by name: filters AND together, so that would be two queries. One query for every
    # group of the VPC (1000 a page) is a single call, and which are ours is decided here.
    in_vpc = ctx.aws.pages("ec2", "describe_security_groups", "SecurityGroups", MaxResults=DESCRIBE_PAGE,
                           Filters=[{"Name": "vpc-id", "Values": [ctx.lookups["vpc_id"]]}])
    groups = {g["GroupName"]: g for g in in_vpc if g["GroupName"] in declared or _tagged_ours(config, g)}
    replaced = frozenset(n for n, g in groups.items()
                         if n in declared and g.get("Description") != declared[n]["description"])
    for name, group in groups.items():
        # A group about to be replaced is registered under `replaced_id`, not `id`: every kind that reads ids
        # back to names (rules, services, mount targets) then shows its references moving to the new group,
        # which the replace creates and registers under `id` before those kinds act.
        ctx.registry.put(GROUP_KIND, name, **{"replaced_id" if name in replaced else "id": group["GroupId"]})
    by_id = {g["GroupId"]: n for n, g in groups.items() if n not in replaced}
    return GroupsRead(groups, replaced, PeerNames(by_id, lookup_ids(ctx)))


def _tagged_ours(config: Config, group: dict) -> bool:
    tags = canonical.tags_from_list(group.get("Tags"))
    return tags.get("dmp:env") == config.env and tags.get("dmp:managed-by") == "dmp-deploy"


def lookup_ids(ctx: Context) -> dict[str, str]:
    """External groups the config names, by resolved id (see lookups.py)."""
    key = f"{LOAD_BALANCER}_id"
    return {ctx.lookups[key]: LOAD_BALANCER} if ctx.lookups.get(key) else {}


# ---------------------------------------------------------------------------------------------------------
# The kinds


class SecurityGroups(ResourceKind):
    kind = GROUP_KIND
    replace_fields = frozenset({"description"})

    def desired(self, state) -> dict[str, dict]:
        config = state.config
        return {name: {"description": g.description,
                       "tags": config.resource_tags(Name=name, **{"dmp:role": g.role})}
                for name, g in sorted(declared_groups(config).items())}

    def prefetch(self, ctx: Context) -> None:
        read_groups(ctx)  # waits for the VPC lookup; puts only this kind's own ids in the registry

    def read(self, ctx: Context) -> dict[str, Live]:
        return {name: Live(spec={"description": g.get("Description"), "tags": canonical.tags_from_list(g.get("Tags"))},
                           ids={"id": g["GroupId"]})
                for name, g in read_groups(ctx).groups.items()}

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        # Born with AWS's allow-all egress rule: the rules kind (which runs next) revokes it.
        group_id = ctx.aws.call("ec2", "create_security_group", GroupName=name, Description=spec["description"],
                                VpcId=ctx.lookups["vpc_id"], TagSpecifications=[{
                                    "ResourceType": "security-group",
                                    "Tags": canonical.tags_to_list(spec["tags"])}])["GroupId"]
        ctx.registry.put(GROUP_KIND, name, id=group_id)

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        want, have = spec["tags"], live.spec["tags"]
        stale = sorted(set(have) - set(want))
        if stale:
            ctx.aws.call("ec2", "delete_tags", Resources=[live.ids["id"]], Tags=[{"Key": k} for k in stale])
        changed = {k: v for k, v in want.items() if have.get(k) != v}
        if changed:
            ctx.aws.call("ec2", "create_tags", Resources=[live.ids["id"]], Tags=canonical.tags_to_list(changed))

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        _delete_group(ctx, name, live.ids["id"], "is no longer declared")

    def replace(self, ctx: Context, name: str, spec: dict, live: Live) -> None:
        """AWS cannot change a description, and a group's name is unique in its VPC, so replacing means
        delete then create under the same name. That is safe only when nothing uses the group: refuse
        (before changing anything) when a network interface uses it or a group we do not own refers to it.
        Rules in our own groups that refer to it are revoked here (AWS refuses to delete a referenced group);
        the plan already shows the rules kind re-adding them against the new group, and the new group's own
        rules (see `SecurityGroupRules.read`)."""
        old = live.ids["id"]
        why = (f"security group {name} ({old}) must be replaced: its description changes from "
               f"{live.spec['description']!r} to {spec['description']!r}, which AWS cannot do in place")
        interfaces = ctx.aws.pages("ec2", "describe_network_interfaces", "NetworkInterfaces",
                                   Filters=[{"Name": "group-id", "Values": [old]}])
        if interfaces:
            listed = ", ".join(f"{i['NetworkInterfaceId']} ({i.get('Description') or 'no description'})"
                               for i in interfaces[:5])
            raise ApplyError(
                f"{why}, but {len(interfaces)} network interface(s) still use it: {listed}. Nothing was changed "
                f"for this group. Stop what uses it (e.g. scale the ECS services that list it to 0 with "
                f"`aws ecs update-service --desired-count 0`), then run apply again: it recreates the group "
                f"with its rules, and the rules of other groups that refer to it.")
        referring = self._groups_referring_to(ctx, old)
        owned = {g["GroupId"] for g in read_groups(ctx).groups.values()}
        foreign = sorted(g for g in referring if g not in owned)
        if foreign:
            raise ApplyError(
                f"{why}, but security groups dmp-deploy does not own refer to it in their rules: "
                f"{', '.join(foreign)}. Nothing was changed. Remove those rules (they can be added back against "
                f"the new group once it exists), then run apply again.")
        if referring:
            _revoke_references(ctx, sorted(referring), old)
        _delete_group(ctx, name, old, f"must be replaced (its description changes to {spec['description']!r})")
        self.create(ctx, name, spec)

    @staticmethod
    def _groups_referring_to(ctx: Context, group_id: str) -> set[str]:
        answers = ctx.map(lambda f: ctx.aws.pages("ec2", "describe_security_groups", "SecurityGroups",
                                                  Filters=[{"Name": f, "Values": [group_id]}]),
                          ["ip-permission.group-id", "egress.ip-permission.group-id"])
        return {g["GroupId"] for answer in answers for g in answer} - {group_id}


def _delete_group(ctx: Context, name: str, group_id: str, why: str) -> None:
    try:
        ctx.aws.call("ec2", "delete_security_group", GroupId=group_id)
    except ClientError as exc:
        if error_code(exc) != "DependencyViolation":
            raise
        raise ApplyError(
            f"security group {name} ({group_id}) {why} but cannot be deleted: it is still in use (a network "
            f"interface, or a rule in a group dmp-deploy does not own, refers to it). Find its users with "
            f"`aws ec2 describe-network-interfaces --filters Name=group-id,Values={group_id}` and `aws ec2 "
            f"describe-security-groups --filters Name=ip-permission.group-id,Values={group_id}`, remove them, "
            f"then run apply again."
        ) from exc


def _revoke_references(ctx: Context, group_ids: list[str], referenced: str) -> None:
    rules = ctx.aws.pages("ec2", "describe_security_group_rules", "SecurityGroupRules",
                          Filters=[{"Name": "group-id", "Values": group_ids}])
    for group_id in group_ids:
        for egress, operation in ((False, "revoke_security_group_ingress"), (True, "revoke_security_group_egress")):
            ids = [r["SecurityGroupRuleId"] for r in rules
                   if r["GroupId"] == group_id and r["IsEgress"] == egress
                   and (r.get("ReferencedGroupInfo") or {}).get("GroupId") == referenced]
            if ids:
                ctx.aws.call("ec2", operation, GroupId=group_id, SecurityGroupRuleIds=ids)


class SecurityGroupRules(ResourceKind):
    """The rules of every group the `security_group` kind declares or owns; everything else on them is revoked."""

    kind = RULES_KIND
    depends_on = (GROUP_KIND,)

    def desired(self, state) -> dict[str, dict]:
        return {name: rules_spec(g.rules) for name, g in sorted(declared_groups(state.config).items())}

    def read(self, ctx: Context) -> dict[str, Live]:
        read = read_groups(ctx)
        out = {}
        for name, g in read.groups.items():
            if name in read.replaced:
                continue  # the group will be new and empty: all its declared rules are to be added
            rules = (rules_from_permissions("ingress", g.get("IpPermissions"), read.names)
                     | rules_from_permissions("egress", g.get("IpPermissionsEgress"), read.names))
            out[name] = Live(spec=rules_spec(rules), ids={"id": g["GroupId"]})
        return out

    def diff(self, name: str, desired: dict, live: Live) -> list[FieldChange]:
        return rule_changes(desired, live.spec)

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        self._converge(ctx, name, spec)

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        self._converge(ctx, name, spec)

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        self._converge(ctx, name, {d: [] for d in DIRECTIONS})

    @staticmethod
    def _converge(ctx: Context, name: str, spec: dict) -> None:
        """Make the group's rules exactly `spec`: authorize what is missing, then revoke (by rule id) what is
        not declared. Acts on the rules as they are now (one read), not as they were at plan time, so a rule
        already revoked by a group replace, or re-added by hand since, is not an error."""
        group_id = ctx.registry.get(GROUP_KIND, name, "id")
        names_ = PeerNames(ctx.registry.names_by(GROUP_KIND, "id"), lookup_ids(ctx))
        current = [(rule_from_api(r, names_), r["SecurityGroupRuleId"])
                   for r in ctx.aws.pages("ec2", "describe_security_group_rules", "SecurityGroupRules",
                                          Filters=[{"Name": "group-id", "Values": [group_id]}])]
        want = rules_of(spec)
        have = {rule for rule, _ in current}

        def group_id_of(peer: tuple[str, str]) -> str:
            kind, value = peer
            if kind == "group":
                return ctx.registry.get(GROUP_KIND, value, "id")
            if kind == "lookup":
                return ctx.lookups[f"{value}_id"]
            return value

        # Add before removing: a rule moving from one peer to another never leaves a gap.
        for direction in DIRECTIONS:
            missing = sorted((r for r in want - have if r.direction == direction), key=Rule.sort_key)
            if missing:
                ctx.aws.call("ec2", f"authorize_security_group_{direction}", GroupId=group_id,
                             IpPermissions=[permission(r, group_id_of) for r in missing])
        for direction in DIRECTIONS:
            extra = [rule_id for rule, rule_id in current if rule.direction == direction and rule not in want]
            if extra:
                ctx.aws.call("ec2", f"revoke_security_group_{direction}", GroupId=group_id,
                             SecurityGroupRuleIds=extra)
