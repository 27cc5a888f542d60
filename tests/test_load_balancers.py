"""The load balancer kinds (load_balancer, target_group, listener, listener_rules): the declared routing and the
canonical forms (pure tables), and reconciliation against the embedded AWS: create, second apply a no-op,
update, drift (a deleted rule, a re-ordered priority) repaired by one apply, delete, and revert."""

import dataclasses
import re
from pathlib import Path

import pytest

from dmp_deploy.config import PublicEntry, load_config
from dmp_deploy.errors import ConfigError
from dmp_deploy.resources import load_balancers as lb
from dmp_deploy.session import render_only

TG = "arn:aws:elasticloadbalancing:eu-west-2:123456789012:targetgroup/"
NAMES = {TG + "dmp-local-buyer/1": "dmp-local-buyer", TG + "dmp-local-briefs/2": "dmp-local-briefs"}


# --- pure: what is declared ------------------------------------------------------------------------------------


def test_staging_routes_www_by_path_most_specific_first_and_has_a_public_entry():
    resources = render_only("staging").resources
    rules = resources["listener_rules"]["dmp-staging-www:80"]["rules"]
    assert [(r["priority"], r["conditions"]["path-pattern"], r["actions"][0]["target_group"]) for r in rules] == [
        (1, ["/buyers/direct-award*"], "dmp-staging-buyer"),
        (2, ["/buyers*"], "dmp-staging-briefs"),
        (3, ["/suppliers/opportunities*"], "dmp-staging-responses"),
        (4, ["/suppliers*"], "dmp-staging-supplier"),
        (5, ["/admin*"], "dmp-staging-admin"),
        (6, ["/user*"], "dmp-staging-user"),
    ]
    listeners = resources["listener"]
    assert listeners["dmp-staging-www:80"]["default_actions"] == [lb.forward("dmp-staging-buyer")]
    assert sorted(n for n, l in listeners.items() if l["load_balancer"] == "dmp-staging-public") == [
        "dmp-staging-public:443", "dmp-staging-public:80"]
    https = listeners["dmp-staging-public:443"]
    assert (https["protocol"], https["certificate"], https["default_actions"]) == (
        "HTTPS", lb.CERTIFICATE_BY_DOMAIN, [lb.forward("dmp-staging-router")])
    assert listeners["dmp-staging-public:80"]["default_actions"][0] == {
        "type": "redirect", "protocol": "HTTPS", "port": "443", "host": "#{host}", "path": "/#{path}",
        "query": "#{query}", "status_code": "HTTP_301"}
    balancers = resources["load_balancer"]
    assert (balancers["dmp-staging-www"]["scheme"], balancers["dmp-staging-www"]["subnets"]) == (
        "internal", "network.subnets")
    assert (balancers["dmp-staging-public"]["scheme"], balancers["dmp-staging-public"]["subnets"]) == (
        "internet-facing", "public_entry.subnets")
    groups = resources["target_group"]
    assert {n: (g["port"], g["health_check"]["path"], g["target_type"]) for n, g in groups.items()} == {
        **{f"dmp-staging-{s}": (8080, "/healthcheck", "ip")
           for s in ("buyer", "supplier", "briefs", "responses", "admin", "user")},
        "dmp-staging-router": (80, "/_status", "ip")}
    assert all(len(name) <= 32 for kind in ("load_balancer", "target_group") for name in resources[kind])
    # The router's DM_FRONTEND_URL is the path router's DNS name, derived, never hand-written in config.
    (env,) = [e for c in resources["task_definition"]["dmp-staging-router"]["containerDefinitions"]
              for e in c["environment"] if e["name"] == "DM_FRONTEND_URL"]
    assert env["value"] == "http://<dns name of load_balancer dmp-staging-www>"


def test_an_existing_target_group_means_no_public_load_balancer_of_ours():
    config = load_config("production")
    arn = "arn:aws:elasticloadbalancing:eu-west-2:444455556666:targetgroup/theirs/0123456789abcdef"
    declared = lb.declared(dataclasses.replace(config, public_entry=PublicEntry(existing_target_group_arn=arn)))
    assert list(declared["load_balancer"]) == ["dmp-production-www"]
    assert "dmp-production-router" not in declared["target_group"]
    assert list(declared["listener"]) == list(declared["listener_rules"]) == ["dmp-production-www:80"]


def _config_text(env="local"):
    return (Path(__file__).resolve().parent.parent / "config" / f"{env}.toml").read_text()


@pytest.mark.parametrize("edit, key, says", [
    (lambda t: t.replace("[apps.router]\n", '[apps.router]\ntarget_group_arn = "arn:aws:elasticloadbalancing:'
                                            'eu-west-2:123456789012:targetgroup/x/1"\n'),
     "apps.router.target_group_arn", "existing_target_group_arn"),
    (lambda t: t.replace("[network]\n", '[network]\nload_balancer_security_group = { tags = { Name = "x" } }\n'),
     "network.load_balancer_security_group", "only for [public_entry] existing_target_group_arn"),
    (lambda t: re.sub(r"\nsubnets = \{ tags = \{ \"dmp:tier\" = \"public\" \} \}", "", t),
     "public_entry.subnets", "missing"),
    (lambda t: t.replace('certificate_domain = "www.local.dmp.invalid"',
                         'certificate_domain = "www.local.dmp.invalid"\ncertificate_arn = "arn:aws:acm:x"'),
     "public_entry.certificate_arn", "exactly one"),
    (lambda t: t.replace("[public_entry]\n", '[public_entry]\nexisting_target_group_arn = '
                                             '"arn:aws:elasticloadbalancing:eu-west-2:123456789012:targetgroup/x/1"\n'),
     "public_entry.subnets", "remove it"),
])
def test_config_errors_name_the_key_and_what_to_do(tmp_path, edit, key, says):
    text = edit(_config_text())
    assert text != _config_text()
    (tmp_path / "local.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config("local", config_dir=tmp_path)
    line = next(line for line in str(err.value).splitlines() if key in line)
    assert says in line


# --- pure: canonical forms -------------------------------------------------------------------------------------


@pytest.mark.parametrize("action, canonical", [
    ({"Type": "forward", "TargetGroupArn": TG + "dmp-local-buyer/1"}, lb.forward("dmp-local-buyer")),
    # AWS answers with ForwardConfig as well (or only): one group, no stickiness, is the same forward
    ({"Type": "forward", "Order": 1, "ForwardConfig": {
        "TargetGroups": [{"TargetGroupArn": TG + "dmp-local-buyer/1", "Weight": 1}],
        "TargetGroupStickinessConfig": {"Enabled": False}}}, lb.forward("dmp-local-buyer")),
    ({"Type": "forward", "TargetGroupArn": TG + "someone-else/9"}, lb.forward(TG + "someone-else/9")),
    # moto leaves AWS's redirect defaults out; AWS spells them out
    ({"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}},
     lb.https_redirect()),
    ({"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "Host": "#{host}",
                                             "Path": "/#{path}", "Query": "#{query}", "StatusCode": "HTTP_301"}},
     lb.https_redirect()),
])
def test_actions_in_canonical_form(action, canonical):
    assert lb.canonical_action(action, NAMES) == canonical


def test_attributes_keep_only_known_keys_away_from_aws_defaults():
    live = {"deregistration_delay.timeout_seconds": "30", "stickiness.enabled": "false",
            "load_balancing.algorithm.anomaly_mitigation": "off", "slow_start.duration_seconds": "60"}
    assert lb.attributes(live, lb.TARGET_GROUP_ATTRIBUTE_DEFAULTS) == {
        "deregistration_delay.timeout_seconds": "30", "slow_start.duration_seconds": "60"}
    # setting back a key changed by hand means sending its default
    assert lb._attribute_list({"deregistration_delay.timeout_seconds": "30"},
                              {"slow_start.duration_seconds": "60"}, lb.TARGET_GROUP_ATTRIBUTE_DEFAULTS) == [
        {"Key": "deregistration_delay.timeout_seconds", "Value": "30"},
        {"Key": "slow_start.duration_seconds", "Value": "0"}]


def test_rules_in_canonical_form_and_a_swapped_priority_is_a_change_at_both():
    described = [
        {"Priority": "default", "IsDefault": True, "Conditions": [], "Actions": []},
        {"Priority": "2", "Conditions": [{"Field": "path-pattern", "Values": ["/buyers/direct-award*"]}],
         "Actions": [{"Type": "forward", "TargetGroupArn": TG + "dmp-local-buyer/1"}]},
        {"Priority": "1", "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/buyers*"]}}],
         "Actions": [{"Type": "forward", "TargetGroupArn": TG + "dmp-local-briefs/2"}]},
    ]
    live = lb.canonical_rules(described, NAMES)
    assert [r["priority"] for r in live] == [1, 2]
    desired = [{"priority": 1, "conditions": {"path-pattern": ["/buyers/direct-award*"]},
                "actions": [lb.forward("dmp-local-buyer")]},
               {"priority": 2, "conditions": {"path-pattern": ["/buyers*"]},
                "actions": [lb.forward("dmp-local-briefs")]}]
    assert [c.path for c in lb.rule_changes(desired, live)] == ["rules.1", "rules.2"]
    assert lb.rule_changes(desired, sorted(desired, key=lambda r: -r["priority"])) == []


def test_health_check_port_spelled_as_the_traffic_port_is_the_same():
    tg = {"Port": 8080, "HealthCheckPort": "8080", "HealthCheckProtocol": "HTTP", "HealthCheckPath": "/healthcheck"}
    assert lb.health_check(tg)["port"] == "traffic-port"
    assert lb.health_check({**tg, "HealthCheckPort": "9000"})["port"] == "9000"


# --- against the embedded AWS ----------------------------------------------------------------------------------


def _www(elb):
    (balancer,) = elb.describe_load_balancers(Names=["dmp-local-www"])["LoadBalancers"]
    (listener,) = elb.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    return balancer, listener


def _rules(elb, listener_arn) -> dict[str, dict]:
    return {r["Priority"]: r for r in elb.describe_rules(ListenerArn=listener_arn)["Rules"]}


def _paths(elb, listener_arn) -> list[tuple[str, str]]:
    groups = {g["TargetGroupArn"]: g["TargetGroupName"] for g in elb.describe_target_groups()["TargetGroups"]}
    return [(r["Conditions"][0]["PathPatternConfig"]["Values"][0], groups[r["Actions"][0]["TargetGroupArn"]])
            for p, r in sorted(_rules(elb, listener_arn).items(), key=lambda i: int(i[0]) if i[0].isdigit() else 99)
            if p != "default"]


ROUTES = [("/buyers/direct-award*", "dmp-local-buyer"), ("/buyers*", "dmp-local-briefs"),
          ("/suppliers/opportunities*", "dmp-local-responses"), ("/suppliers*", "dmp-local-supplier"),
          ("/admin*", "dmp-local-admin"), ("/user*", "dmp-local-user")]


@pytest.fixture
def applied(local_aws, run_cli):
    result = run_cli("apply", "--env", "local", "--json")
    assert result.code == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_apply_creates_both_load_balancers_and_a_second_apply_changes_nothing(applied, local_aws, run_cli):
    elb, ecs = local_aws.client("elbv2"), local_aws.client("ecs")
    calls = applied.json["calls"]["by_operation"]
    assert calls["elbv2.create_load_balancer"] == 2 and calls["elbv2.create_target_group"] == 7
    assert calls["elbv2.create_listener"] == 3 and calls["elbv2.create_rule"] == 6
    balancer, listener = _www(elb)
    assert balancer["Scheme"] == "internal" and listener["Port"] == 80
    assert _paths(elb, listener["ListenerArn"]) == ROUTES
    (public,) = elb.describe_load_balancers(Names=["dmp-local-public"])["LoadBalancers"]
    assert public["Scheme"] == "internet-facing"
    by_port = {l["Port"]: l for l in elb.describe_listeners(LoadBalancerArn=public["LoadBalancerArn"])["Listeners"]}
    assert sorted(by_port) == [80, 443]
    assert by_port[443]["Protocol"] == "HTTPS" and by_port[443]["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    (certificate,) = local_aws.client("acm").list_certificates(CertificateStatuses=["ISSUED"])["CertificateSummaryList"]
    assert by_port[443]["Certificates"] == [{"CertificateArn": certificate["CertificateArn"]}]
    assert by_port[80]["DefaultActions"][0]["RedirectConfig"]["StatusCode"] == "HTTP_301"
    # Services register with their groups; the router proxies www to the path router's DNS name.
    groups = {g["TargetGroupName"]: g for g in elb.describe_target_groups()["TargetGroups"]}
    services = {s["serviceName"]: s for s in ecs.describe_services(
        cluster="dmp-local", services=["dmp-local-router", "dmp-local-user-frontend"])["services"]}
    assert services["dmp-local-user-frontend"]["loadBalancers"] == [
        {"targetGroupArn": groups["dmp-local-user"]["TargetGroupArn"], "containerName": "http",
         "containerPort": 8080}]
    assert services["dmp-local-router"]["loadBalancers"][0]["targetGroupArn"] == \
        groups["dmp-local-router"]["TargetGroupArn"]
    router = ecs.describe_task_definition(taskDefinition=services["dmp-local-router"]["taskDefinition"])
    env = {e["name"]: e["value"] for c in router["taskDefinition"]["containerDefinitions"]
           for e in c.get("environment", [])}
    assert env["DM_FRONTEND_URL"] == f"http://{balancer['DNSName']}"
    attributes = {a["Key"]: a["Value"] for a in elb.describe_target_group_attributes(
        TargetGroupArn=groups["dmp-local-buyer"]["TargetGroupArn"])["Attributes"]}
    assert attributes["deregistration_delay.timeout_seconds"] == "30"

    second = run_cli("apply", "--env", "local", "--json")
    assert second.code == 0 and second.json["changes"] == [] and second.json["calls"]["mutating"] == 0
    assert run_cli("plan", "--env", "local").code == 0


def test_a_deleted_rule_and_swapped_priorities_are_drift_that_one_apply_repairs(applied, local_aws, run_cli):
    elb = local_aws.client("elbv2")
    _, listener = _www(elb)
    rules = _rules(elb, listener["ListenerArn"])
    kept = {p: r["RuleArn"] for p, r in rules.items()}
    elb.delete_rule(RuleArn=rules["3"]["RuleArn"])
    elb.set_rule_priorities(RulePriorities=[{"RuleArn": rules["1"]["RuleArn"], "Priority": 2},
                                            {"RuleArn": rules["2"]["RuleArn"], "Priority": 1}])

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    (change,) = plan.json["changes"]
    assert (change["kind"], change["name"], change["action"]) == ("listener_rules", "dmp-local-www:80", "update")
    assert [(f["path"], (f["before"] or {}).get("conditions"), (f["after"] or {}).get("conditions"))
            for f in change["fields"]] == [
        ("rules.1", {"path-pattern": ["/buyers*"]}, {"path-pattern": ["/buyers/direct-award*"]}),
        ("rules.2", {"path-pattern": ["/buyers/direct-award*"]}, {"path-pattern": ["/buyers*"]}),
        ("rules.3", None, {"path-pattern": ["/suppliers/opportunities*"]})]
    drift = run_cli("drift", "--env", "local", "--json")
    assert drift.code == 2
    assert {d["field"] for d in drift.json["drift"] if d["kind"] == "listener_rules"} == {
        "rules.1", "rules.2", "rules.3"}

    repaired = run_cli("apply", "--env", "local", "--json")
    assert repaired.code == 0, repaired.json.get("error")
    mutating = {k: v for k, v in repaired.json["calls"]["by_operation"].items()
                if k.startswith("elbv2.") and not k.startswith("elbv2.describe")}
    assert mutating == {"elbv2.set_rule_priorities": 1, "elbv2.create_rule": 1}  # the swap in one call
    assert _paths(elb, listener["ListenerArn"]) == ROUTES
    after = _rules(elb, listener["ListenerArn"])
    assert (after["1"]["RuleArn"], after["2"]["RuleArn"]) == (kept["1"], kept["2"])  # moved, not recreated
    assert run_cli("plan", "--env", "local").code == 0


def test_changes_made_by_hand_are_put_back(applied, local_aws, run_cli):
    elb = local_aws.client("elbv2")
    groups = {g["TargetGroupName"]: g["TargetGroupArn"] for g in elb.describe_target_groups()["TargetGroups"]}
    balancer, listener = _www(elb)
    (public,) = elb.describe_load_balancers(Names=["dmp-local-public"])["LoadBalancers"]
    https = next(l for l in elb.describe_listeners(LoadBalancerArn=public["LoadBalancerArn"])["Listeners"]
                 if l["Port"] == 443)
    elb.modify_target_group(TargetGroupArn=groups["dmp-local-admin"], HealthCheckPath="/")
    elb.modify_target_group_attributes(TargetGroupArn=groups["dmp-local-admin"], Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "300"}])
    elb.modify_load_balancer_attributes(LoadBalancerArn=balancer["LoadBalancerArn"], Attributes=[
        {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "false"}])
    elb.modify_listener(ListenerArn=listener["ListenerArn"], DefaultActions=[
        {"Type": "forward", "TargetGroupArn": groups["dmp-local-admin"]}])
    elb.modify_listener(ListenerArn=https["ListenerArn"], SslPolicy="ELBSecurityPolicy-2016-08")
    elb.create_rule(ListenerArn=https["ListenerArn"], Priority=7, Actions=[
        {"Type": "forward", "TargetGroupArn": groups["dmp-local-admin"]}],
        Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/admin*"]}}])
    elb.remove_tags(ResourceArns=[groups["dmp-local-user"]], TagKeys=["dmp:managed-by"])

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    assert sorted((c["kind"], c["name"], f["path"]) for c in plan.json["changes"] for f in c["fields"]) == [
        ("listener", "dmp-local-public:443", "ssl_policy"),
        ("listener", "dmp-local-www:80", "default_actions"),
        ("listener_rules", "dmp-local-public:443", "rules.7"),
        ("load_balancer", "dmp-local-www", "attributes.routing.http.drop_invalid_header_fields.enabled"),
        ("target_group", "dmp-local-admin", "attributes.deregistration_delay.timeout_seconds"),
        ("target_group", "dmp-local-admin", "health_check.path"),
        ("target_group", "dmp-local-user", "tags.dmp:managed-by"),
    ]
    assert run_cli("apply", "--env", "local").code == 0
    assert run_cli("plan", "--env", "local").code == 0
    assert elb.describe_rules(ListenerArn=https["ListenerArn"])["Rules"][0]["IsDefault"]
    assert len(elb.describe_rules(ListenerArn=https["ListenerArn"])["Rules"]) == 1


def test_a_listener_deleted_by_hand_comes_back_with_its_rules(applied, local_aws, run_cli):
    elb = local_aws.client("elbv2")
    _, listener = _www(elb)
    elb.delete_listener(ListenerArn=listener["ListenerArn"])
    plan = run_cli("plan", "--env", "local", "--json")
    assert [(c["kind"], c["name"], c["action"]) for c in plan.json["changes"]] == [
        ("listener", "dmp-local-www:80", "create"), ("listener_rules", "dmp-local-www:80", "create")]
    assert run_cli("apply", "--env", "local").code == 0
    _, listener = _www(elb)
    assert _paths(elb, listener["ListenerArn"]) == ROUTES
    assert run_cli("plan", "--env", "local").code == 0


def test_a_changed_tls_policy_updates_in_place_and_revert_restores_it(applied, local_aws, local_config, run_cli):
    elb = local_aws.client("elbv2")
    (public,) = elb.describe_load_balancers(Names=["dmp-local-public"])["LoadBalancers"]

    def https():
        return next(l for l in elb.describe_listeners(LoadBalancerArn=public["LoadBalancerArn"])["Listeners"]
                    if l["Port"] == 443)

    before = https()["ListenerArn"]
    local_config('certificate_domain = "www.local.dmp.invalid"',
                 'certificate_domain = "www.local.dmp.invalid"\nssl_policy = "ELBSecurityPolicy-TLS13-1-3-2021-06"')
    plan = run_cli("plan", "--env", "local", "--json")
    assert [(c["kind"], c["name"], c["action"], [f["path"] for f in c["fields"]]) for c in plan.json["changes"]] == [
        ("listener", "dmp-local-public:443", "update", ["ssl_policy"])]
    changed = run_cli("apply", "--env", "local", "--json")
    assert changed.code == 0 and changed.json["calls"]["by_operation"]["elbv2.modify_listener"] == 1
    assert https()["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-3-2021-06" and https()["ListenerArn"] == before

    reverted = run_cli("revert", "--env", "local", "--to", "1", "--json")
    assert reverted.code == 0, reverted.json.get("error")
    assert https()["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert run_cli("drift", "--env", "local").code == 0


def test_attaching_to_an_existing_load_balancer_deletes_the_public_entry_of_ours(applied, local_aws, run_cli,
                                                                                 monkeypatch):
    from test_services import _with_router_target_group

    ec2, elb = local_aws.client("ec2"), local_aws.client("elbv2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["dmp-local"]}])["Vpcs"][0]["VpcId"]
    theirs = elb.create_target_group(Name="theirs-router", Protocol="HTTP", Port=80, VpcId=vpc,
                                     TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "tag:dmp:tier", "Values": ["public"]}])["Subnets"]]
    elb.create_listener(LoadBalancerArn=elb.create_load_balancer(Name="theirs", Subnets=subnets)[
        "LoadBalancers"][0]["LoadBalancerArn"], Protocol="HTTP", Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": theirs}])
    _with_router_target_group(monkeypatch, theirs, local_aws)

    plan = run_cli("plan", "--env", "local", "--json")
    deletes = [(c["kind"], c["name"]) for c in plan.json["changes"] if c["action"] == "delete"]
    assert ("load_balancer", "dmp-local-public") in deletes and ("target_group", "dmp-local-router") in deletes
    assert ("listener", "dmp-local-public:443") in deletes and ("security_group", "dmp-local-public-alb") in deletes
    result = run_cli("apply", "--env", "local", "--json")
    assert result.code == 0, result.json.get("error")
    assert sorted(b["LoadBalancerName"] for b in elb.describe_load_balancers()["LoadBalancers"]) == [
        "dmp-local-www", "theirs"]
    assert "dmp-local-router" not in {g["TargetGroupName"] for g in elb.describe_target_groups()["TargetGroups"]}
    (router,) = local_aws.client("ecs").describe_services(cluster="dmp-local", services=["dmp-local-router"])[
        "services"]
    assert router["loadBalancers"][0]["targetGroupArn"] == theirs
    assert run_cli("plan", "--env", "local").code == 0


def test_preflight_refuses_a_certificate_that_is_not_issued(local_aws, local_config, run_cli):
    acm = local_aws.client("acm")
    pending = acm.request_certificate(DomainName="pending.local.dmp.invalid", ValidationMethod="DNS")
    local_config('certificate_domain = "www.local.dmp.invalid"', 'certificate_domain = "pending.local.dmp.invalid"')
    result = run_cli("apply", "--env", "local", "--json")
    assert result.code == 1
    assert f"certificate {pending['CertificateArn']}: is PENDING_VALIDATION, not ISSUED" in result.json["error"]["message"]
    assert result.json["calls"]["mutating"] == 0

    local_config('certificate_domain = "pending.local.dmp.invalid"', 'certificate_domain = "nowhere.invalid"')
    missing = run_cli("apply", "--env", "local", "--json")
    assert missing.code == 1 and "no ACM certificate for 'nowhere.invalid'" in missing.json["error"]["message"]
    assert missing.json["calls"]["mutating"] == 0


def test_a_load_balancer_with_the_wrong_scheme_is_replaced_with_its_listeners(applied, local_aws, run_cli):
    """The scheme cannot change: a www load balancer made internet-facing by hand (deleted and made again with our
    name and tags) is replaced, and its listener and rules are created on the new one, not read from the old."""
    elb = local_aws.client("elbv2")
    balancer, listener = _www(elb)
    groups = {g["TargetGroupName"]: g["TargetGroupArn"] for g in elb.describe_target_groups()["TargetGroups"]}
    elb.delete_listener(ListenerArn=listener["ListenerArn"])
    elb.delete_load_balancer(LoadBalancerArn=balancer["LoadBalancerArn"])
    wrong = elb.create_load_balancer(
        Name="dmp-local-www", Scheme="internet-facing", Subnets=[z["SubnetId"] for z in balancer["AvailabilityZones"]],
        SecurityGroups=balancer["SecurityGroups"],
        Tags=[{"Key": "dmp:env", "Value": "local"}, {"Key": "dmp:managed-by", "Value": "dmp-deploy"}],
    )["LoadBalancers"][0]["LoadBalancerArn"]
    elb.create_listener(LoadBalancerArn=wrong, Protocol="HTTP", Port=80,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": groups["dmp-local-buyer"]}])

    plan = run_cli("plan", "--env", "local", "--json")
    actions = [(c["kind"], c["name"], c["action"]) for c in plan.json["changes"]
               if c["kind"] in ("load_balancer", "listener", "listener_rules")]
    assert actions == [("load_balancer", "dmp-local-www", "replace"), ("listener", "dmp-local-www:80", "create"),
                       ("listener_rules", "dmp-local-www:80", "create")]
    result = run_cli("apply", "--env", "local", "--json")
    assert result.code == 0, result.json.get("error")
    balancer, listener = _www(elb)
    assert balancer["Scheme"] == "internal" and balancer["LoadBalancerArn"] != wrong
    assert _paths(elb, listener["ListenerArn"]) == ROUTES
    assert run_cli("plan", "--env", "local").code == 0


@pytest.mark.parametrize("kind, path, expected, actual, severity", [
    ("load_balancer", "scheme", "internal", "internet-facing", "critical"),
    ("load_balancer", "security_groups", ["dmp-local-www-alb"], ["dmp-local-www-alb", "sg-0abc"], "critical"),
    ("load_balancer", "security_groups", ["dmp-local-www-alb"], [], "warning"),
    ("listener", "protocol", "HTTPS", "HTTP", "critical"),
    ("listener", "ssl_policy", "ELBSecurityPolicy-TLS13-1-2-2021-06", "ELBSecurityPolicy-2016-08", "warning"),
    ("listener_rules", "rules.1", {"conditions": {}}, None, "warning"),
])
def test_drift_that_exposes_the_site_is_critical(kind, path, expected, actual, severity):
    from dmp_deploy import drift
    from dmp_deploy.plan import FieldChange
    assert drift.severity(kind, FieldChange(path, actual, expected)) == severity
