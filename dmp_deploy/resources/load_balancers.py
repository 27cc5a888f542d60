"""Elastic Load Balancing: the load balancers, target groups, listeners and listener rules the tool owns.

Two Application Load Balancers (docs/architecture.md "The request path"):
  - `<prefix>-www`, internal, in the private subnets (network.subnets): the path router. The router's
    `DM_FRONTEND_URL` names its DNS name, and its HTTP listener on 80 routes by path to one `ip` target group per
    frontend (apps.WWW_ROUTES, most specific first; anything else to apps.WWW_DEFAULT);
  - `<prefix>-public`, internet-facing, in public_entry.subnets: HTTPS 443 with the configured ACM certificate
    forwarding to the router's target group, and HTTP 80 answering a 301 to HTTPS. Not created when
    public_entry.existing_target_group_arn attaches the router to a load balancer the account already has.

Four kinds, one family (they are read from the same few answers):

  load_balancer   {"type": "application", "scheme": "internal", "ip_address_type": "ipv4",
                   "subnets": "network.subnets",             # the lookup, or live ids that are not its answer
                   "security_groups": ["dmp-local-www-alb"],  # names of our groups; unknown ids stay ids
                   "attributes": {...}, "tags": {...}}
  target_group    {"protocol": "HTTP", "protocol_version": "HTTP1", "port": 8080, "target_type": "ip",
                   "vpc": "network.vpc", "health_check": {...}, "attributes": {...}, "tags": {...}}
  listener        named "<load balancer>:<port>": {"load_balancer", "port", "protocol", "default_actions": [...],
                   HTTPS only: "certificate", "ssl_policy"; "tags"}
  listener_rules  named like its listener: {"rules": [{"priority": 1, "conditions": {"path-pattern": [...]},
                   "actions": [{"type": "forward", "target_group": "dmp-local-buyer"}]}, ...]}

Canonical form, on both sides: target groups are named, never ARNs (ARNs are random; they resolve through the
registry when the tool acts); a forward action's ForwardConfig (one group, weight, no stickiness) is the same as
its TargetGroupArn; a redirect spells out AWS's defaults (#{host}, /#{path}, #{query}); an HTTP listener has
no certificate or TLS policy (moto reports one); attributes are compared only for the keys in the defaults
tables below and left out when at AWS's default, so a key AWS adds tomorrow is not drift and a value changed by
hand is; rules are ordered by priority and a different priority IS a change (it changes which frontend a path
reaches). Rules are one resource per listener, like security_group_rules per group: the whole ordered list is
converged at once, order-safely (the rules to remove first, freeing their priorities; then every priority move
in one SetRulePriorities, which AWS checks against the new order; then the new rules).

Reads: DescribeLoadBalancers and DescribeTargetGroups of the account (one paginated pass each, concurrently;
candidates picked by name prefix), DescribeListeners per candidate load balancer, then the tags of all of them in
one pass (DescribeTags, 20 ARNs of any of the three types a call) to pick ours; that read (`_family`) is shared
by the four kinds. Then their attributes one call each, and DescribeRules per listener. A load balancer or target group with a declared name but not our
tags is adopted (tagged), not duplicated: ELB names are unique in an account's region.

Replacing: a load balancer's scheme and type cannot change; the old one is deleted (its listeners and rules with
it) and a new one created, and the listener kinds then create theirs again (`replaced_arn` in the registry hides
the old listeners). A target group's protocol, port, target type and VPC cannot change either; it is in use by
its listeners and service, so apply refuses with what to do rather than cut the site off.
"""

from __future__ import annotations

import time
from typing import Callable

from dmp_deploy import canonical, names, placeholders
from dmp_deploy.apps import (APPS, FRONTEND_HEALTH_CHECK_PATH, FRONTENDS, ROUTER_HEALTH_CHECK_PATH, WWW_DEFAULT,
                             WWW_ROUTES)
from dmp_deploy.aws import error_code, polling
from dmp_deploy.config import Config
from dmp_deploy.errors import ApplyError
from dmp_deploy.plan import FieldChange
from dmp_deploy.resources.base import Context, Live, ResourceKind

LB_KIND, TG_KIND, LISTENER_KIND, RULES_KIND = "load_balancer", "target_group", "listener", "listener_rules"
PRIVATE_SUBNETS = "network.subnets"  # canonical values for "what the config's lookup resolves to"
PUBLIC_SUBNETS = "public_entry.subnets"
VPC = "network.vpc"
CERTIFICATE_BY_DOMAIN = "public_entry.certificate_domain"
HTTP_LISTENER_PORT = 80
HTTPS_LISTENER_PORT = 443
TAGS_PER_CALL = 20  # DescribeTags takes at most 20 ARNs
DELETE_WAIT_SECONDS, DELETE_POLL_SECONDS = 300, 5  # a replaced load balancer's name is free once it is gone
PAGE = 400  # DescribeLoadBalancers / DescribeTargetGroups return at most 400 a page

# AWS's defaults for the attributes the tool knows. Only these keys are compared; a key left at its default is
# left out on both sides. (ALB cross-zone balancing is always on and cannot be changed: not compared.)
LOAD_BALANCER_ATTRIBUTE_DEFAULTS = {
    "access_logs.s3.enabled": "false",
    "deletion_protection.enabled": "false",
    "idle_timeout.timeout_seconds": "60",
    "routing.http.desync_mitigation_mode": "defensive",
    "routing.http.drop_invalid_header_fields.enabled": "false",
    "routing.http.preserve_host_header.enabled": "false",
    "routing.http.x_amzn_tls_version_and_cipher_suite.enabled": "false",
    "routing.http.xff_client_port.enabled": "false",
    "routing.http.xff_header_processing.mode": "append",
    "routing.http2.enabled": "true",
    "waf.fail_open.enabled": "false",
}
TARGET_GROUP_ATTRIBUTE_DEFAULTS = {
    "deregistration_delay.timeout_seconds": "300",
    "load_balancing.algorithm.type": "round_robin",
    "load_balancing.cross_zone.enabled": "use_load_balancer_configuration",
    "slow_start.duration_seconds": "0",
    "stickiness.enabled": "false",
    "stickiness.type": "lb_cookie",
    "stickiness.lb_cookie.duration_seconds": "86400",
    "waf.fail_open.enabled": "false",
}
# Ours: headers that are not valid HTTP never reach the apps; a task being replaced gets 30 s to finish its
# requests (the default 300 s makes every rollout wait five minutes; the apps answer in well under a second).
LOAD_BALANCER_ATTRIBUTES = {"routing.http.drop_invalid_header_fields.enabled": "true"}
TARGET_GROUP_ATTRIBUTES = {"deregistration_delay.timeout_seconds": "30"}
HEALTH_CHECK = {"enabled": True, "protocol": "HTTP", "port": "traffic-port", "interval_seconds": 15,
                "timeout_seconds": 5, "healthy_threshold": 2, "unhealthy_threshold": 3, "matcher": "200"}
REDIRECT_DEFAULTS = {"protocol": "#{protocol}", "port": "#{port}", "host": "#{host}", "path": "/#{path}",
                     "query": "#{query}"}


# ---------------------------------------------------------------------------------------------------------
# Pure pieces: what should exist (config and apps.py only)


def attributes(values: dict[str, str], defaults: dict[str, str]) -> dict[str, str]:
    """Attributes in canonical form: only known keys, none at AWS's default, sorted."""
    return {k: str(v) for k, v in sorted(values.items()) if k in defaults and str(v) != defaults[k]}


def forward(target_group: str) -> dict:
    return {"type": "forward", "target_group": target_group}


def https_redirect() -> dict:
    return {**REDIRECT_DEFAULTS, "type": "redirect", "protocol": "HTTPS", "port": str(HTTPS_LISTENER_PORT),
            "status_code": "HTTP_301"}


def www_rules(config: Config) -> list[dict]:
    """The path router's rules, priority 1 first: apps.WWW_ROUTES in order."""
    return [{"priority": i, "conditions": {"path-pattern": [pattern]},
             "actions": [forward(names.target_group(config, app))]}
            for i, (pattern, app) in enumerate(WWW_ROUTES, start=1)]


def declared(config: Config) -> dict[str, dict[str, dict]]:
    """{kind: {name: spec}} for the four kinds."""
    tags = config.resource_tags()
    www = names.load_balancer(config, names.WWW_LOAD_BALANCER)
    public = names.load_balancer(config, names.PUBLIC_LOAD_BALANCER)
    lbs = {www: {"type": "application", "scheme": "internal", "ip_address_type": "ipv4",
                 "subnets": PRIVATE_SUBNETS,
                 "security_groups": [names.load_balancer_group(config, names.WWW_LOAD_BALANCER)],
                 "attributes": attributes(LOAD_BALANCER_ATTRIBUTES, LOAD_BALANCER_ATTRIBUTE_DEFAULTS),
                 "tags": tags}}

    def target_group(app: str, path: str) -> dict:
        return {"protocol": "HTTP", "protocol_version": "HTTP1", "port": APPS[app].port, "target_type": "ip",
                "vpc": VPC, "health_check": {**HEALTH_CHECK, "path": path},
                "attributes": attributes(TARGET_GROUP_ATTRIBUTES, TARGET_GROUP_ATTRIBUTE_DEFAULTS), "tags": tags}

    tgs = {names.target_group(config, app): target_group(app, FRONTEND_HEALTH_CHECK_PATH) for app in FRONTENDS}
    www_listener = names.listener(www, HTTP_LISTENER_PORT)
    listeners = {www_listener: {"load_balancer": www, "port": HTTP_LISTENER_PORT, "protocol": "HTTP",
                                "default_actions": [forward(names.target_group(config, WWW_DEFAULT))],
                                "tags": tags}}
    rules = {www_listener: {"rules": www_rules(config)}}

    entry = config.public_entry
    if entry.owned:
        lbs[public] = {**lbs[www], "scheme": "internet-facing", "subnets": PUBLIC_SUBNETS,
                       "security_groups": [names.load_balancer_group(config, names.PUBLIC_LOAD_BALANCER)]}
        router = names.target_group(config, "router")
        tgs[router] = target_group("router", ROUTER_HEALTH_CHECK_PATH)
        https, http = names.listener(public, HTTPS_LISTENER_PORT), names.listener(public, HTTP_LISTENER_PORT)
        listeners[https] = {"load_balancer": public, "port": HTTPS_LISTENER_PORT, "protocol": "HTTPS",
                            "certificate": entry.certificate_arn or CERTIFICATE_BY_DOMAIN,
                            "ssl_policy": entry.ssl_policy, "default_actions": [forward(router)], "tags": tags}
        listeners[http] = {"load_balancer": public, "port": HTTP_LISTENER_PORT, "protocol": "HTTP",
                           "default_actions": [https_redirect()], "tags": tags}
        rules[https] = {"rules": []}  # a rule added by hand in front of the router is drift
        rules[http] = {"rules": []}
    return {LB_KIND: lbs, TG_KIND: tgs, LISTENER_KIND: listeners, RULES_KIND: rules}


def router_target_group(config: Config) -> dict:
    """How the router's service names its target group: ours by name, or the configured existing ARN."""
    entry = config.public_entry
    if entry.owned:
        return {"target_group": names.target_group(config, "router")}
    return {"target_group_arn": entry.existing_target_group_arn}


def service_target_group(config: Config, app: str) -> str | None:
    """The target group (our name, or an ARN we do not own) an app's service registers its tasks with."""
    if app in FRONTENDS:
        return names.target_group(config, app)
    if app == "router":
        ref = router_target_group(config)
        return ref.get("target_group") or ref.get("target_group_arn")
    return None


# ---------------------------------------------------------------------------------------------------------
# Canonical live forms


def canonical_action(action: dict, tg_names: dict[str, str]) -> dict:
    """One listener or rule action: target groups by name (unknown ARNs stay ARNs), AWS's defaults spelled out."""
    kind = action.get("Type")
    if kind == "forward":
        arn = action.get("TargetGroupArn")
        groups = ((action.get("ForwardConfig") or {}).get("TargetGroups")) or []
        stickiness = ((action.get("ForwardConfig") or {}).get("TargetGroupStickinessConfig") or {}).get("Enabled")
        if not arn and len(groups) == 1 and not stickiness:
            arn = groups[0]["TargetGroupArn"]
        if arn:
            return forward(tg_names.get(arn, arn))
        return {"type": "forward", "weighted": sorted(
            [tg_names.get(g["TargetGroupArn"], g["TargetGroupArn"]), g.get("Weight", 1)] for g in groups)}
    if kind == "redirect":
        config = action.get("RedirectConfig") or {}
        return {**REDIRECT_DEFAULTS, "type": "redirect",
                **{key: config[api] for key, api in (("protocol", "Protocol"), ("port", "Port"), ("host", "Host"),
                                                      ("path", "Path"), ("query", "Query"))
                   if config.get(api) is not None},
                "status_code": config.get("StatusCode")}
    # fixed-response, authenticate-*: not ours, shown as AWS has them (any of them is drift).
    return {"type": kind, **{k: v for k, v in sorted(action.items()) if k not in ("Type", "Order")}}


def action_for_api(action: dict, tg_arn) -> dict:
    if action["type"] == "forward":
        return {"Type": "forward", "TargetGroupArn": tg_arn(action["target_group"])}
    if action["type"] == "redirect":
        return {"Type": "redirect", "RedirectConfig": {
            "Protocol": action["protocol"], "Port": action["port"], "Host": action["host"], "Path": action["path"],
            "Query": action["query"], "StatusCode": action["status_code"]}}
    raise ApplyError(f"dmp-deploy does not declare {action['type']} actions")  # pragma: no cover


def canonical_actions(actions: list[dict], tg_names: dict[str, str]) -> list[dict]:
    ordered = sorted(actions or [], key=lambda a: a.get("Order", 0))
    return [canonical_action(a, tg_names) for a in ordered]


def canonical_conditions(conditions: list[dict]) -> dict[str, list]:
    """{field: sorted values}: a condition matches any of its values, in any order. The legacy `Values` and the
    field's own config (PathPatternConfig, HostHeaderConfig) mean the same; other fields are kept whole."""
    out: dict[str, list] = {}
    for condition in conditions or []:
        field = condition.get("Field")
        values = list(condition.get("Values") or [])
        for key in ("PathPatternConfig", "HostHeaderConfig"):
            values += (condition.get(key) or {}).get("Values") or []
        if values:
            out[field] = sorted(set(out.get(field, [])) | set(values))
        else:  # http-header, query-string, source-ip, ...
            out.setdefault(field, []).append({k: v for k, v in sorted(condition.items()) if k != "Field"})
    return dict(sorted(out.items()))


def canonical_rules(rules: list[dict], tg_names: dict[str, str]) -> list[dict]:
    """DescribeRules' answer without the default rule (that is the listener's default action), by priority."""
    out = [{"priority": int(r["Priority"]), "conditions": canonical_conditions(r.get("Conditions")),
            "actions": canonical_actions(r.get("Actions"), tg_names)}
           for r in rules if not r.get("IsDefault") and r.get("Priority") != "default"]
    return sorted(out, key=lambda r: r["priority"])


def rule_changes(desired: list[dict], live: list[dict]) -> list[FieldChange]:
    """One change per priority whose rule differs: a rule moved to another priority shows at both."""
    want = {r["priority"]: _without_priority(r) for r in desired}
    have = {r["priority"]: _without_priority(r) for r in live}
    return [FieldChange(f"rules.{p}", have.get(p), want.get(p))
            for p in sorted(set(want) | set(have)) if want.get(p) != have.get(p)]


def _without_priority(rule: dict) -> dict:
    return {k: v for k, v in rule.items() if k != "priority"}


def health_check(tg: dict) -> dict:
    port = tg.get("HealthCheckPort") or "traffic-port"
    if str(port) == str(tg.get("Port")):
        port = "traffic-port"  # the same port, spelled the other way
    return {"enabled": bool(tg.get("HealthCheckEnabled", True)), "protocol": tg.get("HealthCheckProtocol"),
            "port": str(port), "path": tg.get("HealthCheckPath"),
            "interval_seconds": tg.get("HealthCheckIntervalSeconds"),
            "timeout_seconds": tg.get("HealthCheckTimeoutSeconds"),
            "healthy_threshold": tg.get("HealthyThresholdCount"),
            "unhealthy_threshold": tg.get("UnhealthyThresholdCount"),
            "matcher": (tg.get("Matcher") or {}).get("HttpCode")}


def _attribute_list(want: dict[str, str], have: dict[str, str], defaults: dict[str, str]) -> list[dict]:
    """The Modify*Attributes list that turns `have` into `want`: keys set, and keys to put back to default."""
    out = {k: v for k, v in want.items() if have.get(k) != v}
    out.update({k: defaults[k] for k in have if k not in want})
    return [{"Key": k, "Value": v} for k, v in sorted(out.items())]


# ---------------------------------------------------------------------------------------------------------
# The shared read


def _owned(config: Config, tags: dict[str, str]) -> bool:
    return tags.get("dmp:env") == config.env and tags.get("dmp:managed-by") == "dmp-deploy"


def _tags_of(ctx: Context, arns: list[str]) -> dict[str, dict[str, str]]:
    batches = [arns[i:i + TAGS_PER_CALL] for i in range(0, len(arns), TAGS_PER_CALL)]
    answers = ctx.map(lambda batch: ctx.aws.call("elbv2", "describe_tags", ResourceArns=batch)["TagDescriptions"],
                      batches)
    return {d["ResourceArn"]: canonical.tags_from_list(d.get("Tags")) for answer in answers for d in answer}


def _listing(ctx: Context) -> tuple[list[dict], list[dict]]:
    """The region's load balancers and target groups (one paginated pass each, concurrently), those with a
    declared name or our name prefix kept (memoised)."""
    def read():
        prefix = f"{ctx.config.prefix}-"

        def candidates(kind: str, operation: str, key: str, name_key: str) -> list[dict]:
            declared_names = set(ctx.desired.resources.get(kind, {}))
            return [e for e in ctx.aws.pages("elbv2", operation, key, PageSize=PAGE)
                    if e[name_key] in declared_names or e[name_key].startswith(prefix)]

        return tuple(ctx.map(lambda args: candidates(*args), [
            (LB_KIND, "describe_load_balancers", "LoadBalancers", "LoadBalancerName"),
            (TG_KIND, "describe_target_groups", "TargetGroups", "TargetGroupName")]))
    return ctx.memo("elbv2: load balancers and target groups", read)


def _listeners_of(ctx: Context, lb_arn: str) -> list[dict]:
    return ctx.memo(f"elbv2: listeners of {lb_arn}", lambda: ctx.aws.pages(
        "elbv2", "describe_listeners", "Listeners", LoadBalancerArn=lb_arn))


def _rules_of(ctx: Context, listener_arn: str, share: Callable = Context.take) -> list[dict]:
    """A listener's rules: `share` is Context.memo for the prefetch, Context.take for the read."""
    return share(ctx, f"elbv2: rules of {listener_arn}", lambda: ctx.aws.pages(
        "elbv2", "describe_rules", "Rules", ListenerArn=listener_arn))


def _attributes(ctx: Context, kind: str, arn: str, share: Callable = Context.take) -> list[dict]:
    """A load balancer's or target group's attributes (`share` as for `_rules_of`)."""
    def read():
        if kind == LB_KIND:
            return ctx.aws.call("elbv2", "describe_load_balancer_attributes", LoadBalancerArn=arn)["Attributes"]
        return ctx.aws.call("elbv2", "describe_target_group_attributes", TargetGroupArn=arn)["Attributes"]
    return share(ctx, f"elbv2: attributes of {arn}", read)


def _prefetch_declared(ctx: Context, kind: str) -> None:
    """The attributes of the load balancers or target groups with a declared name, as soon as they are listed
    (one with only our prefix is ours by its tags, which come later: its kind reads it then)."""
    lbs, tgs = _listing(ctx)
    entries, name_key, arn_key = ((lbs, "LoadBalancerName", "LoadBalancerArn") if kind == LB_KIND
                                  else (tgs, "TargetGroupName", "TargetGroupArn"))
    declared = ctx.desired.resources.get(kind, {})
    ctx.map(lambda e: _attributes(ctx, kind, e[arn_key], Context.memo),
            [e for e in entries if e[name_key] in declared])


def _family(ctx: Context) -> dict:
    """The one read of the family, shared by the four kinds: the region's load balancers and target groups (one
    paginated pass each, concurrently), those with a declared name or our name prefix kept; the listeners of those
    load balancers; then the tags of all of them together, 20 ARNs a DescribeTags call (it takes any mix of load
    balancers, target groups and listeners), so the full stack's twelve cost one call, not one per kind.
    Returns {"load_balancers": [...], "target_groups": [...], "listeners": {load balancer ARN: [...]},
    "tags": {ARN: tags}}."""
    def read() -> dict:
        lbs, tgs = _listing(ctx)
        listeners = ctx.map(lambda lb: _listeners_of(ctx, lb["LoadBalancerArn"]), lbs)
        arns = ([lb["LoadBalancerArn"] for lb in lbs] + [tg["TargetGroupArn"] for tg in tgs]
                + [listener["ListenerArn"] for found in listeners for listener in found])
        return {"load_balancers": lbs, "target_groups": tgs,
                "listeners": {lb["LoadBalancerArn"]: found for lb, found in zip(lbs, listeners)},
                "tags": _tags_of(ctx, arns) if arns else {}}
    return ctx.memo("elbv2: load balancers, target groups, listeners", read)


def _ours(ctx: Context, kind: str, entries: list[dict], name_key: str, arn_key: str) -> dict[str, tuple]:
    """{name: (entry, tags)} of the load balancers or target groups that are ours: a declared name, or our
    name prefix (`_family` kept only those) and our tags."""
    declared_names = set(ctx.desired.resources.get(kind, {}))
    tags = _family(ctx)["tags"]
    return {e[name_key]: (e, tags.get(e[arn_key], {})) for e in entries
            if e[name_key] in declared_names or _owned(ctx.config, tags.get(e[arn_key], {}))}


def read_load_balancers(ctx: Context) -> dict[str, tuple]:
    return _ours(ctx, LB_KIND, _family(ctx)["load_balancers"], "LoadBalancerName", "LoadBalancerArn")


def read_target_groups(ctx: Context) -> dict[str, tuple]:
    return _ours(ctx, TG_KIND, _family(ctx)["target_groups"], "TargetGroupName", "TargetGroupArn")


def read_listeners(ctx: Context) -> dict[str, dict]:
    """{listener name: DescribeListeners entry} for every listener of our load balancers that are not about to
    be replaced (a replaced load balancer's listeners go with it): those with an `arn` in the registry."""
    listeners = _family(ctx)["listeners"]
    lbs = [(name, ctx.registry.find(LB_KIND, name, "arn")) for name in sorted(read_load_balancers(ctx))]
    return {names.listener(name, listener["Port"]): listener
            for name, arn in lbs if arn for listener in listeners.get(arn, [])}


def listener_tags(ctx: Context) -> dict[str, dict[str, str]]:
    """{listener ARN: tags}, from the family's one tag read."""
    return _family(ctx)["tags"]


def tg_arn_resolver(ctx: Context):
    def resolve(name_or_arn: str) -> str:
        if name_or_arn.startswith("arn:"):
            return name_or_arn
        return ctx.registry.get(TG_KIND, name_or_arn, "arn")
    return resolve


def _tag_changes(ctx: Context, arn: str, want: dict[str, str], have: dict[str, str]) -> None:
    stale = sorted(set(have) - set(want))
    if stale:
        ctx.aws.call("elbv2", "remove_tags", ResourceArns=[arn], TagKeys=stale)
    if any(have.get(k) != v for k, v in want.items()):
        ctx.aws.call("elbv2", "add_tags", ResourceArns=[arn], Tags=canonical.tags_to_list(want))


# ---------------------------------------------------------------------------------------------------------
# The kinds


class LoadBalancers(ResourceKind):
    kind = LB_KIND
    depends_on = ("security_group",)
    replace_fields = frozenset({"type", "scheme"})

    def desired(self, state) -> dict[str, dict]:
        return declared(state.config)[LB_KIND]

    def prefetch(self, ctx: Context) -> None:
        ctx.map(lambda read: read(), [lambda: _prefetch_declared(ctx, LB_KIND), lambda: _family(ctx)])

    def read(self, ctx: Context) -> dict[str, Live]:
        ours = read_load_balancers(ctx)
        declared_specs = ctx.desired.resources.get(self.kind, {})
        answers = ctx.map(lambda lb: _attributes(ctx, LB_KIND, lb[0]["LoadBalancerArn"]), list(ours.values()))
        group_names = ctx.registry.names_by("security_group", "id")
        out = {}
        for (name, (lb, tags)), attrs in zip(ours.items(), answers):
            subnets = sorted(z["SubnetId"] for z in lb.get("AvailabilityZones") or [])
            spec = {
                "type": lb.get("Type"), "scheme": lb.get("Scheme"), "ip_address_type": lb.get("IpAddressType"),
                "subnets": (PRIVATE_SUBNETS if subnets == sorted(ctx.lookups.get("subnet_ids") or [])
                            else PUBLIC_SUBNETS if subnets == sorted(ctx.lookups.get("public_subnet_ids") or [])
                            else subnets),
                "security_groups": sorted(group_names.get(g, g) for g in lb.get("SecurityGroups") or []),
                "attributes": attributes({a["Key"]: a["Value"] for a in attrs}, LOAD_BALANCER_ATTRIBUTE_DEFAULTS),
                "tags": tags,
            }
            want = declared_specs.get(name)
            replaced = bool(want) and any(spec[f] != want[f] for f in self.replace_fields)
            ids = {"replaced_arn" if replaced else "arn": lb["LoadBalancerArn"], "dns_name": lb["DNSName"]}
            ctx.registry.put(self.kind, name, **ids)
            out[name] = Live(spec=spec, ids=ids)
        return out

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        lb = ctx.aws.call("elbv2", "create_load_balancer", Name=name, Type=spec["type"], Scheme=spec["scheme"],
                          IpAddressType=spec["ip_address_type"], Subnets=self._subnets(ctx, spec),
                          SecurityGroups=self._groups(ctx, spec),
                          Tags=canonical.tags_to_list(spec["tags"]))["LoadBalancers"][0]
        ctx.registry.put(self.kind, name, arn=lb["LoadBalancerArn"], dns_name=lb["DNSName"])
        if spec["attributes"]:
            ctx.aws.call("elbv2", "modify_load_balancer_attributes", LoadBalancerArn=lb["LoadBalancerArn"],
                         Attributes=_attribute_list(spec["attributes"], {}, LOAD_BALANCER_ATTRIBUTE_DEFAULTS))

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        fields = {c.path.split(".")[0] for c in changes}
        arn = live.ids["arn"]
        if "subnets" in fields:
            ctx.aws.call("elbv2", "set_subnets", LoadBalancerArn=arn, Subnets=self._subnets(ctx, spec))
        if "security_groups" in fields:
            ctx.aws.call("elbv2", "set_security_groups", LoadBalancerArn=arn, SecurityGroups=self._groups(ctx, spec))
        if "ip_address_type" in fields:
            ctx.aws.call("elbv2", "set_ip_address_type", LoadBalancerArn=arn, IpAddressType=spec["ip_address_type"])
        if "attributes" in fields:
            ctx.aws.call("elbv2", "modify_load_balancer_attributes", LoadBalancerArn=arn, Attributes=_attribute_list(
                spec["attributes"], live.spec["attributes"], LOAD_BALANCER_ATTRIBUTE_DEFAULTS))
        if "tags" in fields:
            _tag_changes(ctx, arn, spec["tags"], live.spec["tags"])

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        arn = live.ids.get("arn") or live.ids["replaced_arn"]
        ctx.aws.call("elbv2", "delete_load_balancer", LoadBalancerArn=arn)

    def replace(self, ctx: Context, name: str, spec: dict, live: Live) -> None:
        # Names are unique in a region: the old one must be gone before the new one takes its name.
        self.delete(ctx, name, live)
        deadline = time.monotonic() + DELETE_WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                with polling("load balancer deleted"):
                    ctx.aws.call("elbv2", "describe_load_balancers", LoadBalancerArns=[live.ids["replaced_arn"]])
            except Exception as exc:
                if error_code(exc) == "LoadBalancerNotFound":
                    break
                raise
            time.sleep(DELETE_POLL_SECONDS)
        else:
            raise ApplyError(f"load balancer {name} was deleted to be replaced but is still there after "
                             f"{DELETE_WAIT_SECONDS} s; run apply again once it is gone")
        self.create(ctx, name, spec)

    @staticmethod
    def _subnets(ctx: Context, spec: dict) -> list[str]:
        if spec["subnets"] == PRIVATE_SUBNETS:
            return list(ctx.lookups["subnet_ids"])
        if spec["subnets"] == PUBLIC_SUBNETS:
            return list(ctx.lookups["public_subnet_ids"])
        return list(spec["subnets"])

    @staticmethod
    def _groups(ctx: Context, spec: dict) -> list[str]:
        return [g if g.startswith("sg-") else ctx.registry.get("security_group", g, "id")
                for g in spec["security_groups"]]


class TargetGroups(ResourceKind):
    kind = TG_KIND
    replace_fields = frozenset({"protocol", "protocol_version", "port", "target_type", "vpc"})

    def desired(self, state) -> dict[str, dict]:
        return declared(state.config)[TG_KIND]

    def prefetch(self, ctx: Context) -> None:
        _prefetch_declared(ctx, TG_KIND)

    def read(self, ctx: Context) -> dict[str, Live]:
        ours = read_target_groups(ctx)
        answers = ctx.map(lambda tg: _attributes(ctx, TG_KIND, tg[0]["TargetGroupArn"]), list(ours.values()))
        out = {}
        for (name, (tg, tags)), attrs in zip(ours.items(), answers):
            vpc = tg.get("VpcId")
            spec = {
                "protocol": tg.get("Protocol"), "protocol_version": tg.get("ProtocolVersion", "HTTP1"),
                "port": tg.get("Port"), "target_type": tg.get("TargetType"),
                "vpc": VPC if vpc == ctx.lookups.get("vpc_id") else vpc,
                "health_check": health_check(tg),
                "attributes": attributes({a["Key"]: a["Value"] for a in attrs}, TARGET_GROUP_ATTRIBUTE_DEFAULTS),
                "tags": tags,
            }
            ctx.registry.put(self.kind, name, arn=tg["TargetGroupArn"])
            out[name] = Live(spec=spec, ids={"arn": tg["TargetGroupArn"]})
        return out

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        hc = spec["health_check"]
        tg = ctx.aws.call("elbv2", "create_target_group", Name=name, Protocol=spec["protocol"],
                          ProtocolVersion=spec["protocol_version"], Port=spec["port"],
                          TargetType=spec["target_type"], VpcId=ctx.lookups["vpc_id"],
                          **self._health_check_params(hc), Tags=canonical.tags_to_list(spec["tags"]))
        arn = tg["TargetGroups"][0]["TargetGroupArn"]
        ctx.registry.put(self.kind, name, arn=arn)
        if spec["attributes"]:
            ctx.aws.call("elbv2", "modify_target_group_attributes", TargetGroupArn=arn,
                         Attributes=_attribute_list(spec["attributes"], {}, TARGET_GROUP_ATTRIBUTE_DEFAULTS))

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        fields = {c.path.split(".")[0] for c in changes}
        arn = live.ids["arn"]
        if "health_check" in fields:
            ctx.aws.call("elbv2", "modify_target_group", TargetGroupArn=arn,
                         **self._health_check_params(spec["health_check"]))
        if "attributes" in fields:
            ctx.aws.call("elbv2", "modify_target_group_attributes", TargetGroupArn=arn, Attributes=_attribute_list(
                spec["attributes"], live.spec["attributes"], TARGET_GROUP_ATTRIBUTE_DEFAULTS))
        if "tags" in fields:
            _tag_changes(ctx, arn, spec["tags"], live.spec["tags"])

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        ctx.aws.call("elbv2", "delete_target_group", TargetGroupArn=live.ids["arn"])

    def replace(self, ctx: Context, name: str, spec: dict, live: Live) -> None:
        changed = ", ".join(f for f in sorted(self.replace_fields) if spec[f] != live.spec[f])
        raise ApplyError(
            f"target group {name} must be replaced ({changed} cannot change in place), but its listener rules and "
            f"ECS service use it, and deleting it first would cut those paths off. Someone changed it by hand: "
            f"delete it (aws elbv2 delete-target-group --target-group-arn {live.ids['arn']}, after removing "
            f"the listener rule or default action and the service's load balancer that name it), then run apply "
            f"again to recreate all of them.")

    @staticmethod
    def _health_check_params(hc: dict) -> dict:
        return {"HealthCheckEnabled": hc["enabled"], "HealthCheckProtocol": hc["protocol"],
                "HealthCheckPort": hc["port"], "HealthCheckPath": hc["path"],
                "HealthCheckIntervalSeconds": hc["interval_seconds"],
                "HealthCheckTimeoutSeconds": hc["timeout_seconds"],
                "HealthyThresholdCount": hc["healthy_threshold"],
                "UnhealthyThresholdCount": hc["unhealthy_threshold"], "Matcher": {"HttpCode": hc["matcher"]}}


class Listeners(ResourceKind):
    kind = LISTENER_KIND
    depends_on = (LB_KIND, TG_KIND)
    replace_fields = frozenset({"load_balancer", "port"})

    def desired(self, state) -> dict[str, dict]:
        return declared(state.config)[LISTENER_KIND]

    def prefetch(self, ctx: Context) -> None:
        _family(ctx)

    def read(self, ctx: Context) -> dict[str, Live]:
        listeners = read_listeners(ctx)
        tags = listener_tags(ctx)
        tg_names = ctx.registry.names_by(TG_KIND, "arn")
        certificate = ctx.lookups.get("certificate_arn")
        by_domain = bool(ctx.config.public_entry.certificate_domain)
        out = {}
        for name, listener in listeners.items():
            spec = {"load_balancer": name.rsplit(":", 1)[0], "port": listener["Port"],
                    "protocol": listener.get("Protocol"),
                    "default_actions": canonical_actions(listener.get("DefaultActions"), tg_names),
                    "tags": tags.get(listener["ListenerArn"], {})}
            if spec["protocol"] in ("HTTPS", "TLS"):  # moto reports a TLS policy on plain HTTP listeners too
                certs = [c["CertificateArn"] for c in listener.get("Certificates") or []]
                cert = certs[0] if len(certs) == 1 else certs
                spec["certificate"] = CERTIFICATE_BY_DOMAIN if by_domain and cert == certificate else cert
                spec["ssl_policy"] = listener.get("SslPolicy")
            ctx.registry.put(self.kind, name, arn=listener["ListenerArn"])
            out[name] = Live(spec=spec, ids={"arn": listener["ListenerArn"]})
        return out

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        listener = ctx.aws.call("elbv2", "create_listener",
                                LoadBalancerArn=ctx.registry.get(LB_KIND, spec["load_balancer"], "arn"),
                                Port=spec["port"], **self._params(ctx, spec),
                                Tags=canonical.tags_to_list(spec["tags"]))["Listeners"][0]
        ctx.registry.put(self.kind, name, arn=listener["ListenerArn"])

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        fields = {c.path.split(".")[0] for c in changes}
        if fields - {"tags"}:
            ctx.aws.call("elbv2", "modify_listener", ListenerArn=live.ids["arn"], Port=spec["port"],
                         **self._params(ctx, spec))
        if "tags" in fields:
            _tag_changes(ctx, live.ids["arn"], spec["tags"], live.spec["tags"])

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        try:
            ctx.aws.call("elbv2", "delete_listener", ListenerArn=live.ids["arn"])
        except Exception as exc:
            if error_code(exc) != "ListenerNotFound":  # gone with its load balancer
                raise

    @staticmethod
    def _params(ctx: Context, spec: dict) -> dict:
        params = {"Protocol": spec["protocol"],
                  "DefaultActions": [action_for_api(a, tg_arn_resolver(ctx)) for a in spec["default_actions"]]}
        if spec["protocol"] == "HTTPS":
            cert = spec["certificate"]
            params["Certificates"] = [{"CertificateArn": ctx.lookups["certificate_arn"]
                                       if cert == CERTIFICATE_BY_DOMAIN else cert}]
            params["SslPolicy"] = spec["ssl_policy"]
        return params


class ListenerRules(ResourceKind):
    """The ordered rules of each listener the tool declares; any other rule on it is removed."""

    kind = RULES_KIND
    depends_on = (LISTENER_KIND, TG_KIND)

    def desired(self, state) -> dict[str, dict]:
        return declared(state.config)[RULES_KIND]

    def prefetch(self, ctx: Context) -> None:
        # The rules of the declared listeners of the load balancers with a declared name, as soon as those
        # listeners are listed (read_listeners would wait for the load balancer kind's registry entries).
        declared = ctx.desired.resources.get(self.kind, {})
        lbs = [lb for lb in _listing(ctx)[0] if lb["LoadBalancerName"] in ctx.desired.resources.get(LB_KIND, {})]
        found = ctx.map(lambda lb: [(lb, listener) for listener in _listeners_of(ctx, lb["LoadBalancerArn"])], lbs)
        ctx.map(lambda item: _rules_of(ctx, item[1]["ListenerArn"], Context.memo),
                [(lb, listener) for pairs in found for lb, listener in pairs
                 if names.listener(lb["LoadBalancerName"], listener["Port"]) in declared])

    def read(self, ctx: Context) -> dict[str, Live]:
        listeners = read_listeners(ctx)
        declared_names = ctx.desired.resources.get(self.kind, {})
        # Only the listeners the tool declares: a listener no longer declared is deleted, rules and all.
        wanted = [(name, listener) for name, listener in sorted(listeners.items()) if name in declared_names]
        answers = ctx.map(lambda item: _rules_of(ctx, item[1]["ListenerArn"]), wanted)
        tg_names = ctx.registry.names_by(TG_KIND, "arn")
        return {name: Live(spec={"rules": canonical_rules(rules, tg_names)}, ids={"arn": listener["ListenerArn"]})
                for (name, listener), rules in zip(wanted, answers)}

    def diff(self, name: str, desired: dict, live: Live) -> list[FieldChange]:
        return rule_changes(desired["rules"], live.spec["rules"])

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        self._converge(ctx, name, spec["rules"])

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        self._converge(ctx, name, spec["rules"])

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        pass  # only happens with its listener, whose deletion takes its rules

    @staticmethod
    def _converge(ctx: Context, name: str, want: list[dict]) -> None:
        """Make the listener's rules exactly `want`, never asking for a priority another rule holds: act on the
        rules as they are now (one read). A live rule is matched to a declared one by its conditions (the paths
        it catches); unmatched live rules are deleted first, then matched rules get their declared actions and,
        all in one SetRulePriorities, their declared priorities; then the missing rules are created."""
        listener = ctx.registry.get(LISTENER_KIND, name, "arn")
        tg_names = ctx.registry.names_by(TG_KIND, "arn")
        current = [(rule, canonical_rules([rule], tg_names)[0])
                   for rule in ctx.aws.pages("elbv2", "describe_rules", "Rules", ListenerArn=listener)
                   if not rule.get("IsDefault") and rule.get("Priority") != "default"]
        unmatched = {}
        for rule, spec in current:
            unmatched.setdefault(repr(spec["conditions"]), []).append((rule, spec))
        matched, missing = [], []
        for spec in want:
            candidates = unmatched.get(repr(spec["conditions"]))
            if candidates:
                matched.append((spec, *candidates.pop(0)))
            else:
                missing.append(spec)
        tg_arn = tg_arn_resolver(ctx)

        for rule, _ in (item for items in unmatched.values() for item in items):
            ctx.aws.call("elbv2", "delete_rule", RuleArn=rule["RuleArn"])
        for spec, rule, live in matched:
            if spec["actions"] != live["actions"]:
                ctx.aws.call("elbv2", "modify_rule", RuleArn=rule["RuleArn"],
                             Actions=[action_for_api(a, tg_arn) for a in spec["actions"]])
        moves = [{"RuleArn": rule["RuleArn"], "Priority": spec["priority"]}
                 for spec, rule, live in matched if spec["priority"] != live["priority"]]
        if moves:
            ctx.aws.call("elbv2", "set_rule_priorities", RulePriorities=moves)
        for spec in sorted(missing, key=lambda s: s["priority"]):
            ctx.aws.call("elbv2", "create_rule", ListenerArn=listener, Priority=spec["priority"],
                         Conditions=[_condition_for_api(f, values) for f, values in spec["conditions"].items()],
                         Actions=[action_for_api(a, tg_arn) for a in spec["actions"]])


def _condition_for_api(field: str, values: list) -> dict:
    if field == "path-pattern":
        return {"Field": field, "PathPatternConfig": {"Values": list(values)}}
    if field == "host-header":
        return {"Field": field, "HostHeaderConfig": {"Values": list(values)}}
    raise ApplyError(f"dmp-deploy does not declare {field} conditions")  # pragma: no cover


KINDS = (LoadBalancers, TargetGroups, Listeners, ListenerRules)


# ---------------------------------------------------------------------------------------------------------
# Our load balancers' DNS names in task definitions (the router's DM_FRONTEND_URL)
#
# AWS names a load balancer's DNS only when it creates it, so the router's template writes a placeholder
# (placeholders.load_balancer_dns, the `path_router_url()` template helper); the task_definition kind registers
# with the DNS name (`with_dns_names`) and reads it back as the placeholder (`with_dns_placeholders`). A load
# balancer replaced (or deleted by hand) has a new DNS name: the revision naming the old one reads back with a
# bare DNS name, differs from the template, and a new revision is registered after the new load balancer.


def _map_environment(document: dict, fn) -> dict:
    containers = []
    for container in document.get("containerDefinitions") or []:
        if container.get("environment"):
            container = {**container, "environment": [{**e, "value": fn(e["value"])} if "value" in e else e
                                                      for e in container["environment"]]}
        containers.append(container)
    return {**document, "containerDefinitions": containers} if "containerDefinitions" in document else document


def with_dns_names(ctx: Context, document: dict) -> dict:
    """A task definition with every load-balancer DNS placeholder replaced by the DNS name (at apply time)."""
    return _map_environment(document, lambda value: placeholders.replace_load_balancer_dns(
        value, lambda name: ctx.registry.get(LB_KIND, name, "dns_name")))


def with_dns_placeholders(ctx: Context, document: dict) -> dict:
    """A live task definition with the DNS names of our load balancers (not about to be replaced) written back as
    placeholders."""
    dns = {ctx.registry.find(LB_KIND, name, "dns_name"): name
           for name in ctx.desired.resources.get(LB_KIND, {}) if ctx.registry.find(LB_KIND, name, "arn")}
    dns.pop(None, None)
    if not dns:
        return document

    def back(value: str) -> str:
        for dns_name, name in dns.items():
            value = value.replace(dns_name, placeholders.load_balancer_dns(name))
        return value
    return _map_environment(document, back)


def dns_references(document: dict) -> list[str]:
    """The load balancers whose DNS placeholder a task definition's environment names, in order."""
    found: list[str] = []
    _map_environment(document, lambda value: found.extend(placeholders.load_balancer_dns_names(value)) or value)
    return found
