"""Security groups and their rules: normalisation and diff tables, then the embedded AWS (create, converge,
detect and repair hand-made changes, adopt, delete, replace)."""

import re
from pathlib import Path

import pytest

from dmp_deploy.apps import APPS, BACKING_SERVICES
from dmp_deploy.config import load_config
from dmp_deploy.resources.security_groups import (
    LOAD_BALANCER, PeerNames, Rule, SecurityGroupRules, SecurityGroups, cidr, declared_groups, permission,
    ports, protocol, rule_changes, rule_from_api, rules_from_permissions, rules_spec)

OURS = PeerNames(groups={"sg-api": "dmp-local-api", "sg-router": "dmp-local-router"}, lookups={"sg-lb": LOAD_BALANCER})


# --- normalisation tables ---------------------------------------------------------------------------------

@pytest.mark.parametrize("given, canonical", [
    ("6", "tcp"), ("tcp", "tcp"), ("TCP", "tcp"), (6, "tcp"), ("17", "udp"), ("udp", "udp"),
    ("-1", "all"), ("all", "all"), (-1, "all"), ("1", "icmp"), ("58", "icmpv6"), ("50", "50"),
])
def test_protocol(given, canonical):
    assert protocol(given) == canonical


@pytest.mark.parametrize("given, canonical", [
    ("10.0.0.5/16", "10.0.0.0/16"),
    ("10.0.0.0/16", "10.0.0.0/16"),
    (" 192.168.1.77/24 ", "192.168.1.0/24"),
    ("1.2.3.4/32", "1.2.3.4/32"),
    ("1.2.3.4", "1.2.3.4/32"),
    ("0.0.0.7/0", "0.0.0.0/0"),
    ("2001:DB8::1/32", "2001:db8::/32"),
    ("2001:0db8:0000:0000::/48", "2001:db8::/48"),
    ("::/0", "::/0"),
])
def test_cidr(given, canonical):
    assert cidr(given) == canonical


@pytest.mark.parametrize("proto, from_port, to_port, canonical", [
    ("all", None, None, (None, None)),
    ("all", -1, -1, (None, None)),  # DescribeSecurityGroupRules says -1 where DescribeSecurityGroups says nothing
    ("tcp", "8080", 8080, (8080, 8080)),
    ("tcp", 0, 65535, (0, 65535)),
    ("icmp", -1, -1, (-1, -1)),  # every ICMP type: -1 is meaningful here
])
def test_ports(proto, from_port, to_port, canonical):
    assert ports(proto, from_port, to_port) == canonical


def tcp(direction, port, kind, value):
    return Rule(direction, "tcp", port, port, (kind, value))


@pytest.mark.parametrize("permissions, expected", [
    # several ranges and groups in one permission: one atomic rule each
    ([{"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080,
       "IpRanges": [{"CidrIp": "10.0.0.0/16", "Description": "office"}, {"CidrIp": "10.1.0.0/16"}],
       "Ipv6Ranges": [{"CidrIpv6": "2001:db8::/32"}], "PrefixListIds": [{"PrefixListId": "pl-1"}],
       "UserIdGroupPairs": [{"GroupId": "sg-api", "UserId": "123456789012"}, {"GroupId": "sg-lb"},
                            {"GroupId": "sg-other", "Description": "not ours"}]}],
     {tcp("ingress", 8080, "cidr", "10.0.0.0/16"), tcp("ingress", 8080, "cidr", "10.1.0.0/16"),
      tcp("ingress", 8080, "ipv6", "2001:db8::/32"), tcp("ingress", 8080, "prefix_list", "pl-1"),
      tcp("ingress", 8080, "group", "dmp-local-api"), tcp("ingress", 8080, "lookup", LOAD_BALANCER),
      tcp("ingress", 8080, "group_id", "sg-other")}),
    # protocol number, unmasked CIDR
    ([{"IpProtocol": "6", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.0.0.5/16"}]}],
     {tcp("ingress", 443, "cidr", "10.0.0.0/16")}),
    # the same rule twice (two permissions that differ only in spelling) is one rule
    ([{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]},
      {"IpProtocol": "6", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.0.9.9/16"}]}],
     {tcp("ingress", 443, "cidr", "10.0.0.0/16")}),
    # all traffic: no ports
    ([{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "UserIdGroupPairs": []}],
     {Rule("ingress", "all", None, None, ("cidr", "0.0.0.0/0"))}),
    ([], set()),
    (None, set()),
])
def test_rules_from_permissions_splits_into_atomic_rules(permissions, expected):
    assert rules_from_permissions("ingress", permissions, OURS) == expected


@pytest.mark.parametrize("api_rule, expected", [
    ({"IsEgress": True, "IpProtocol": "-1", "FromPort": -1, "ToPort": -1, "CidrIpv4": "0.0.0.0/0"},
     Rule("egress", "all", None, None, ("cidr", "0.0.0.0/0"))),
    ({"IsEgress": False, "IpProtocol": "6", "FromPort": 22, "ToPort": 22, "CidrIpv4": "10.0.0.5/8",
      "Description": "ignored"},
     tcp("ingress", 22, "cidr", "10.0.0.0/8")),
    ({"IsEgress": False, "IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
      "ReferencedGroupInfo": {"GroupId": "sg-lb", "UserId": "123456789012"}},
     tcp("ingress", 80, "lookup", LOAD_BALANCER)),
    ({"IsEgress": True, "IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080,
      "ReferencedGroupInfo": {"GroupId": "sg-api"}},
     tcp("egress", 8080, "group", "dmp-local-api")),
    ({"IsEgress": True, "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIpv6": "2001:DB8::/32"},
     tcp("egress", 443, "ipv6", "2001:db8::/32")),
    ({"IsEgress": True, "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "PrefixListId": "pl-9"},
     tcp("egress", 443, "prefix_list", "pl-9")),
])
def test_rule_from_describe_security_group_rules(api_rule, expected):
    assert rule_from_api(api_rule, OURS) == expected


def spec(*rules):
    return rules_spec(rules)


@pytest.mark.parametrize("desired, live, expected", [
    # same rules, different order: no change
    (spec(tcp("ingress", 8080, "group", "a"), tcp("ingress", 8080, "group", "b")),
     {"ingress": list(reversed(spec(tcp("ingress", 8080, "group", "a"),
                                    tcp("ingress", 8080, "group", "b"))["ingress"])), "egress": []},
     []),
    # a rule added by hand is removed; a declared one missing is added
    (spec(tcp("ingress", 8080, "group", "a")),
     spec(tcp("ingress", 22, "cidr", "0.0.0.0/0")),
     [("ingress", {"protocol": "tcp", "from_port": 22, "to_port": 22, "peer": {"cidr": "0.0.0.0/0"}}, None),
      ("ingress", None, {"protocol": "tcp", "from_port": 8080, "to_port": 8080, "peer": {"group": "a"}})]),
    # AWS's default allow-all egress on a group that declares none
    (spec(tcp("ingress", 5432, "group", "clients")),
     spec(tcp("ingress", 5432, "group", "clients"), Rule("egress", "all", None, None, ("cidr", "0.0.0.0/0"))),
     [("egress", {"protocol": "all", "from_port": None, "to_port": None, "peer": {"cidr": "0.0.0.0/0"}}, None)]),
    # the same rule in other spellings is not a change
    (spec(tcp("egress", 443, "cidr", "10.0.0.0/16")),
     {"ingress": [], "egress": [{"protocol": "6", "from_port": "443", "to_port": 443,
                                 "peer": {"cidr": "10.0.0.5/16"}}]},
     []),
])
def test_rule_changes(desired, live, expected):
    assert [(c.path, c.before, c.after) for c in rule_changes(desired, live)] == expected


@pytest.mark.parametrize("rule, expected", [
    (Rule("egress", "all", None, None, ("cidr", "0.0.0.0/0")),
     {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}),
    (tcp("ingress", 80, "lookup", LOAD_BALANCER),
     {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "UserIdGroupPairs": [{"GroupId": "sg-lb"}]}),
    (tcp("ingress", 8080, "group", "dmp-local-router"),
     {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "UserIdGroupPairs": [{"GroupId": "sg-router"}]}),
    (tcp("egress", 443, "ipv6", "::/0"),
     {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}),
])
def test_permission_round_trips(rule, expected):
    ids = {("group", "dmp-local-router"): "sg-router", ("lookup", LOAD_BALANCER): "sg-lb"}
    assert permission(rule, ids.__getitem__) == expected
    names = PeerNames({"sg-router": "dmp-local-router"}, {"sg-lb": LOAD_BALANCER})
    assert rules_from_permissions(rule.direction, [expected], names) == {rule}


# --- the declared graph -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def config():
    return load_config("local")


def rules_by_group(config):
    return {name: g.rules for name, g in declared_groups(config).items()}


def test_declared_groups_follow_the_call_graph(config):
    rules = rules_by_group(config)
    https = tcp("egress", 443, "cidr", "0.0.0.0/0")
    public, www = ("group", "dmp-local-public-alb"), ("group", "dmp-local-www-alb")
    assert len(rules) == len(APPS) + 2 * len(BACKING_SERVICES) + 2 + 2 == 22
    assert sum(len(r) for r in rules.values()) == 62
    # The router: from the public load balancer; to the apis it proxies, and to www's path router on 80 (never
    # to a frontend directly).
    assert rules["dmp-local-router"] == {
        tcp("ingress", 80, *public), https, tcp("egress", 80, *www),
        *(tcp("egress", 8080, "group", f"dmp-local-{a}") for a in ("api", "search-api", "antivirus-api"))}
    assert rules["dmp-local-www-alb"] == {
        tcp("ingress", 80, "group", "dmp-local-router"),
        *(tcp("egress", 8080, "group", f"dmp-local-{a}") for a in APPS if a.endswith("-frontend"))}
    assert rules["dmp-local-public-alb"] == {
        tcp("ingress", 443, "cidr", "0.0.0.0/0"), tcp("ingress", 80, "cidr", "0.0.0.0/0"),
        tcp("egress", 80, "group", "dmp-local-router")}
    for frontend in (a for a in APPS if a.endswith("-frontend")):
        assert {r for r in rules[f"dmp-local-{frontend}"] if r.direction == "ingress"} == {tcp("ingress", 8080, *www)}
    assert {r.peer[1] for r in rules["dmp-local-api"] if r.direction == "ingress"} == {
        "dmp-local-router", "dmp-local-add-users",
        *(f"dmp-local-{a}" for a in APPS if a.endswith("-frontend"))}
    assert rules["dmp-local-search-api"] >= {tcp("ingress", 8080, "group", "dmp-local-buyer-frontend"),
                                             tcp("ingress", 8080, "group", "dmp-local-api")}
    assert tcp("egress", 8080, "group", "dmp-local-search-api") in rules["dmp-local-buyer-frontend"]
    assert tcp("egress", 8080, "group", "dmp-local-search-api") not in rules["dmp-local-user-frontend"]
    assert rules["dmp-local-postgres"] == {tcp("ingress", 5432, "group", "dmp-local-postgres-clients")}
    assert rules["dmp-local-postgres-clients"] == {tcp("egress", 5432, "group", "dmp-local-postgres")}
    assert rules["dmp-local-efs"] == {tcp("ingress", 2049, "group", "dmp-local-efs-clients")}
    assert rules["dmp-local-opensearch-clients"] == {tcp("egress", 443, "group", "dmp-local-opensearch")}
    assert rules["dmp-local-add-users"] == {https, tcp("egress", 8080, "group", "dmp-local-api")}
    assert rules["dmp-local-add-users-copier"] == {https}
    # every app group declares its egress (so AWS's default allow-all never stays)
    assert all(any(r.direction == "egress" for r in rules[f"dmp-local-{a}"]) for a in APPS)


def test_https_egress_follows_config(config):
    from dataclasses import replace
    narrowed = replace(config, network=replace(config.network, https_egress_cidrs=["10.42.7.9/24", "2001:db8::/56"]))
    rules = rules_by_group(narrowed)["dmp-local-add-users-copier"]
    assert rules == {tcp("egress", 443, "cidr", "10.42.7.0/24"), tcp("egress", 443, "ipv6", "2001:db8::/56")}


def test_config_rejects_an_https_egress_cidr_that_is_not_one(tmp_path):
    from dmp_deploy.errors import ConfigError
    text = (Path(__file__).resolve().parent.parent / "config" / "local.toml").read_text()
    assert "[network]\n" in text
    (tmp_path / "local.toml").write_text(text.replace(
        "[network]\n", '[network]\nhttps_egress_cidrs = ["10.0.0.0/8", "10.0.0.300/8"]\n', 1))
    with pytest.raises(ConfigError) as err:
        load_config("local", config_dir=tmp_path)
    assert "network.https_egress_cidrs[1]" in str(err.value) and "10.0.0.300/8" in str(err.value)


def test_descriptions_are_fixed_valid_sentences_and_tags_name_the_role(config):
    from dmp_deploy.desired import DesiredState
    state = DesiredState(config=config, image_tags={})
    groups = SecurityGroups().desired(state)
    for name, g in groups.items():
        assert re.fullmatch(r"[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]{1,255}", g["description"]), name
        assert g["tags"]["Name"] == name and g["tags"]["dmp:managed-by"] == "dmp-deploy"
    assert len({g["description"] for g in groups.values()}) == len(groups)
    assert groups["dmp-local-redis"]["tags"]["dmp:role"] == "backing-service"
    assert groups["dmp-local-redis-clients"]["tags"]["dmp:role"] == "backing-service-clients"
    assert groups["dmp-local-add-users"]["tags"]["dmp:role"] == "one-off-task"
    assert set(SecurityGroupRules().desired(state)) == set(groups)


# --- against the embedded AWS -------------------------------------------------------------------------------

def our_groups(ec2) -> dict[str, dict]:
    groups = ec2.describe_security_groups(Filters=[{"Name": "tag:dmp:env", "Values": ["local"]}])["SecurityGroups"]
    return {g["GroupName"]: g for g in groups}


def rules_of(ec2, group_ids) -> list[dict]:
    return ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": list(group_ids)}])["SecurityGroupRules"]


def lb_group_id(ec2) -> str:
    """The public load balancer's group (ours: config/local.toml has the tool own the public entry)."""
    (g,) = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["dmp-local-public-alb"]}])["SecurityGroups"]
    return g["GroupId"]


def sg_changes(plan_json):
    return [c for c in plan_json["changes"] if c["kind"] in ("security_group", "security_group_rules")]


def test_apply_creates_groups_and_rules_then_converges(local_aws, run_cli):
    first = run_cli("apply", "--env", "local", "--json")
    assert first.code == 0, first.stderr
    ec2 = local_aws.client("ec2")
    groups = our_groups(ec2)
    assert len(groups) == 22
    ids = {g["GroupId"]: n for n, g in groups.items()}
    rules = rules_of(ec2, ids)
    assert len(rules) == 62
    assert not [r for r in rules if r["IpProtocol"] == "-1"]  # AWS's default allow-all egress is gone
    router = [r for r in rules if r["GroupId"] == groups["dmp-local-router"]["GroupId"] and not r["IsEgress"]]
    assert [(r["FromPort"], r["ReferencedGroupInfo"]["GroupId"]) for r in router] == [(80, lb_group_id(ec2))]
    api_in = {ids[r["ReferencedGroupInfo"]["GroupId"]] for r in rules
              if r["GroupId"] == groups["dmp-local-api"]["GroupId"] and not r["IsEgress"]}
    assert "dmp-local-add-users" in api_in and "dmp-local-router" in api_in
    assert groups["dmp-local-postgres"]["IpPermissionsEgress"] == []
    tags = {t["Key"]: t["Value"] for t in groups["dmp-local-api"]["Tags"]}
    assert tags["dmp:role"] == "app" and tags["Name"] == "dmp-local-api"

    second = run_cli("apply", "--env", "local", "--json")
    assert second.code == 0, second.stderr
    assert second.json["changes"] == []
    assert second.json["calls"]["mutating"] == 0

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 0, plan.stdout + plan.stderr
    # one pass over the VPC's groups (ours by tag or by name) serves both kinds (no load balancer group to look
    # up: the tool owns the public entry's)
    assert plan.json["calls"]["by_operation"]["ec2.describe_security_groups"] == 1
    assert "ec2.describe_security_group_rules" not in plan.json["calls"]["by_operation"]


def test_hand_added_ingress_rule_is_named_by_plan_and_only_it_is_revoked(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    ec2 = local_aws.client("ec2")
    groups = our_groups(ec2)
    api = groups["dmp-local-api"]["GroupId"]
    before = {r["SecurityGroupRuleId"] for r in rules_of(ec2, [g["GroupId"] for g in groups.values()])}
    added = ec2.authorize_security_group_ingress(GroupId=api, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    (added_id,) = [r["SecurityGroupRuleId"] for r in added["SecurityGroupRules"]]

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    (change,) = sg_changes(plan.json)
    assert (change["kind"], change["name"], change["action"]) == ("security_group_rules", "dmp-local-api", "update")
    assert [(f["path"], f["before"], f["after"]) for f in change["fields"]] == [
        ("ingress", {"protocol": "tcp", "from_port": 22, "to_port": 22, "peer": {"cidr": "0.0.0.0/0"}}, None)]
    text = run_cli("plan", "--env", "local")
    assert text.code == 2
    assert "~ security_group_rules dmp-local-api" in text.stdout and '"from_port": 22' in text.stdout

    applied = run_cli("apply", "--env", "local", "--json")
    assert applied.code == 0, applied.stderr
    assert applied.json["calls"]["by_operation"].get("ec2.revoke_security_group_ingress") == 1
    assert "ec2.authorize_security_group_ingress" not in applied.json["calls"]["by_operation"]
    after = {r["SecurityGroupRuleId"] for r in rules_of(ec2, [g["GroupId"] for g in groups.values()])}
    assert after == before  # only the hand-made rule went; every other rule kept its id
    assert added_id not in after
    assert run_cli("plan", "--env", "local").code == 0


def test_removed_declared_rule_is_added_back(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    ec2 = local_aws.client("ec2")
    router = our_groups(ec2)["dmp-local-router"]["GroupId"]
    (lb_rule,) = [r for r in rules_of(ec2, [router]) if not r["IsEgress"]]
    ec2.revoke_security_group_ingress(GroupId=router, SecurityGroupRuleIds=[lb_rule["SecurityGroupRuleId"]])

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    (change,) = sg_changes(plan.json)
    assert change["name"] == "dmp-local-router"
    assert [(f["path"], f["before"], f["after"]) for f in change["fields"]] == [
        ("ingress", None, {"protocol": "tcp", "from_port": 80, "to_port": 80,
                           "peer": {"group": "dmp-local-public-alb"}})]

    assert run_cli("apply", "--env", "local").code == 0
    (back,) = [r for r in rules_of(ec2, [router]) if not r["IsEgress"]]
    assert (back["FromPort"], back["ReferencedGroupInfo"]["GroupId"]) == (80, lb_group_id(ec2))
    assert run_cli("plan", "--env", "local").code == 0


def test_default_allow_all_egress_appearing_is_revoked(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    ec2 = local_aws.client("ec2")
    postgres = our_groups(ec2)["dmp-local-postgres"]["GroupId"]
    ec2.authorize_security_group_egress(GroupId=postgres, IpPermissions=[
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    (change,) = sg_changes(plan.json)
    assert change["name"] == "dmp-local-postgres"
    assert [(f["path"], f["before"], f["after"]) for f in change["fields"]] == [
        ("egress", {"protocol": "all", "from_port": None, "to_port": None, "peer": {"cidr": "0.0.0.0/0"}}, None)]

    assert run_cli("apply", "--env", "local").code == 0
    assert [r for r in rules_of(ec2, [postgres]) if r["IsEgress"]] == []
    assert run_cli("plan", "--env", "local").code == 0


def test_same_rule_in_another_spelling_is_not_drift(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    ec2 = local_aws.client("ec2")
    copier = our_groups(ec2)["dmp-local-add-users-copier"]["GroupId"]
    (rule,) = rules_of(ec2, [copier])
    ec2.revoke_security_group_egress(GroupId=copier, SecurityGroupRuleIds=[rule["SecurityGroupRuleId"]])
    # the declared 443-to-0.0.0.0/0, re-added by hand with a protocol number, an unmasked CIDR and a description
    ec2.authorize_security_group_egress(GroupId=copier, IpPermissions=[
        {"IpProtocol": "6", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.9/0", "Description": "x"}]}])
    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 0, sg_changes(plan.json)


def test_tag_drift_is_named_and_repaired(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    ec2 = local_aws.client("ec2")
    redis = our_groups(ec2)["dmp-local-redis"]["GroupId"]
    ec2.delete_tags(Resources=[redis], Tags=[{"Key": "dmp:role"}])
    ec2.create_tags(Resources=[redis], Tags=[{"Key": "extra", "Value": "x"}])

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    (change,) = sg_changes(plan.json)
    assert (change["kind"], change["name"], change["action"]) == ("security_group", "dmp-local-redis", "update")
    assert [f["path"] for f in change["fields"]] == ["tags.dmp:role", "tags.extra"]

    assert run_cli("apply", "--env", "local").code == 0
    tags = {t["Key"]: t["Value"] for t in our_groups(ec2)["dmp-local-redis"]["Tags"]}
    assert tags["dmp:role"] == "backing-service" and "extra" not in tags
    assert run_cli("plan", "--env", "local").code == 0


def test_untagged_group_with_our_name_is_adopted_not_duplicated(local_aws, run_cli, config):
    ec2 = local_aws.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["dmp-local"]}])["Vpcs"][0]["VpcId"]
    description = declared_groups(config)["dmp-local-antivirus-api"].description
    made = ec2.create_security_group(GroupName="dmp-local-antivirus-api", Description=description, VpcId=vpc)

    plan = run_cli("plan", "--env", "local", "--json")
    adopted = [c for c in sg_changes(plan.json) if c["name"] == "dmp-local-antivirus-api"]
    assert [(c["kind"], c["action"]) for c in adopted] == [("security_group", "update"),
                                                          ("security_group_rules", "update")]

    assert run_cli("apply", "--env", "local").code == 0
    named = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["dmp-local-antivirus-api"]}])["SecurityGroups"]
    assert [g["GroupId"] for g in named] == [made["GroupId"]]
    assert {t["Key"] for t in named[0]["Tags"]} >= {"dmp:env", "dmp:managed-by", "dmp:role", "Name"}
    assert run_cli("plan", "--env", "local").code == 0


def test_undeclared_owned_group_is_deleted_and_references_to_it_revoked(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    ec2 = local_aws.client("ec2")
    groups = our_groups(ec2)
    vpc = groups["dmp-local-api"]["VpcId"]
    api = groups["dmp-local-api"]["GroupId"]
    tags = [{"Key": "dmp:env", "Value": "local"}, {"Key": "dmp:managed-by", "Value": "dmp-deploy"}]
    retired = ec2.create_security_group(GroupName="dmp-local-retired", Description="retired", VpcId=vpc,
                                        TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}])["GroupId"]
    foreign = ec2.create_security_group(GroupName="someone-elses", Description="not ours", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=api, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "UserIdGroupPairs": [{"GroupId": retired}]}])
    ec2.authorize_security_group_egress(GroupId=retired, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "UserIdGroupPairs": [{"GroupId": api}]}])

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    assert [(c["kind"], c["name"], c["action"], c["destroys_data"]) for c in sg_changes(plan.json)] == [
        ("security_group_rules", "dmp-local-api", "update", False),
        ("security_group_rules", "dmp-local-retired", "delete", False),
        ("security_group", "dmp-local-retired", "delete", False),
    ]
    (api_change,) = [c for c in sg_changes(plan.json) if c["name"] == "dmp-local-api"]
    assert [(f["path"], f["before"]["peer"], f["after"]) for f in api_change["fields"]] == [
        ("ingress", {"group": "dmp-local-retired"}, None)]

    assert run_cli("apply", "--env", "local").code == 0  # no --allow-destroy: a group holds no data
    left = {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert retired not in left and foreign in left
    assert not [r for r in rules_of(ec2, [api]) if (r.get("ReferencedGroupInfo") or {}).get("GroupId") == retired]
    assert run_cli("plan", "--env", "local").code == 0


def _set_live_description(local_aws, group_id: str, description: str) -> None:
    """What a new sentence in the code looks like from AWS's side: the live group has the old one. AWS has no
    call to change a description, so the test reaches into the in-process embedded AWS."""
    from moto.ec2.models import ec2_backends
    group = ec2_backends["123456789012"][local_aws.region].get_security_group_from_id(group_id)
    group.description = description


def test_changed_description_replaces_the_group_and_moves_references(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    ec2 = local_aws.client("ec2")
    groups = our_groups(ec2)
    old = groups["dmp-local-postgres"]["GroupId"]
    _set_live_description(local_aws, old, "an older sentence")

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    changes = {(c["kind"], c["name"]): c for c in sg_changes(plan.json)}
    assert {k: c["action"] for k, c in changes.items()} == {
        ("security_group", "dmp-local-postgres"): "replace",
        ("security_group_rules", "dmp-local-postgres"): "create",
        ("security_group_rules", "dmp-local-postgres-clients"): "update",
    }
    (desc,) = changes[("security_group", "dmp-local-postgres")]["fields"]
    assert (desc["path"], desc["before"], desc["forces_replace"]) == ("description", "an older sentence", True)
    moved = changes[("security_group_rules", "dmp-local-postgres-clients")]["fields"]
    assert [(f["path"], (f["before"] or {}).get("peer"), (f["after"] or {}).get("peer")) for f in moved] == [
        ("egress", {"group_id": old}, None), ("egress", None, {"group": "dmp-local-postgres"})]

    applied = run_cli("apply", "--env", "local")
    assert applied.code == 0, applied.stderr
    groups = our_groups(ec2)
    new = groups["dmp-local-postgres"]["GroupId"]
    assert new != old and old not in {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert groups["dmp-local-postgres"]["Description"].startswith("dmp-deploy: the postgres service")
    clients = groups["dmp-local-postgres-clients"]["GroupId"]
    assert [(r["IsEgress"], r["FromPort"], r["ReferencedGroupInfo"]["GroupId"]) for r in rules_of(ec2, [clients])] \
        == [(True, 5432, new)]
    # the new group's own rules: 5432 from the clients group and nothing else (AWS's default egress revoked)
    assert [(r["IsEgress"], r["FromPort"], r["ReferencedGroupInfo"]["GroupId"]) for r in rules_of(ec2, [new])] \
        == [(False, 5432, clients)]
    assert run_cli("plan", "--env", "local").code == 0


def test_replace_is_refused_while_a_network_interface_uses_the_group(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    ec2 = local_aws.client("ec2")
    groups = our_groups(ec2)
    old = groups["dmp-local-add-users"]["GroupId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "tag:dmp:tier", "Values": ["private"]}])["Subnets"][0]
    eni = ec2.create_network_interface(SubnetId=subnet["SubnetId"], Groups=[old],
                                       Description="an add-users task")["NetworkInterface"]["NetworkInterfaceId"]
    _set_live_description(local_aws, old, "an older sentence")
    all_ids = [g["GroupId"] for g in groups.values()]
    before = {r["SecurityGroupRuleId"] for r in rules_of(ec2, all_ids)}

    refused = run_cli("apply", "--env", "local")
    assert refused.code == 1
    assert "dmp-local-add-users" in refused.stderr and eni in refused.stderr
    assert "Nothing was changed" in refused.stderr and "desired-count 0" in refused.stderr
    assert our_groups(ec2)["dmp-local-add-users"]["GroupId"] == old
    assert {r["SecurityGroupRuleId"] for r in rules_of(ec2, all_ids)} == before

    ec2.delete_network_interface(NetworkInterfaceId=eni)
    assert run_cli("apply", "--env", "local").code == 0
    groups = our_groups(ec2)
    new = groups["dmp-local-add-users"]["GroupId"]
    assert new != old
    api_rules = rules_of(ec2, [groups["dmp-local-api"]["GroupId"]])
    api_refs = {(r.get("ReferencedGroupInfo") or {}).get("GroupId") for r in api_rules}
    assert new in api_refs and old not in api_refs
    assert run_cli("plan", "--env", "local").code == 0
