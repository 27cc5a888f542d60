"""Issue 12, item 1: every resource local, staging and production render is validated against AWS's published
resource schemas and rules, through cfn-lint (its bundled CloudFormation resource provider schemas, and rules such as
Fargate's cpu/memory pairs and the Step Functions definition checks). Each rendered spec is mapped to its
CloudFormation resource type and properties (`template`), one in-memory template per environment, and linted; any
error or warning fails. A broken template must fail it too.

The mapping is the only thing written here: the rules are AWS's and cfn-lint's. Placeholders for ids that only exist
in AWS (an access point's id, a group's id, the subnets, a key's ARN) become ids of the documented form.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re

import pytest
import regex
from cfnlint.api import ManualArgs, lint

import request_check
from dmp_deploy import desired, names
from dmp_deploy.config import PublicEntry, load_config
from dmp_deploy.resources import all_kinds, kms_keys
from dmp_deploy.resources import state_machine as sm

ENVS = ("local", "staging", "production")
# Kinds that are not an AWS resource of their own, each with the reason.
NOT_RESOURCES = {
    "release_record": "an object in the state bucket (releases.py), not a resource with a schema",
    "efs_mount_target": "one per zone of the subnets the lookup finds in AWS: none is rendered without AWS",
}

# ECS's API names whose CloudFormation property is not simply the name with a capital first letter.
ECS_RENAMES = {"efsVolumeConfiguration": "EFSVolumeConfiguration", "fileSystemId": "FilesystemId", "iam": "IAM",
               "sizeInGiB": "SizeInGiB"}
# Maps whose keys are data (log driver options, labels), kept as they are.
ECS_DATA_MAPS = {"options", "dockerLabels", "driverOpts", "labels"}


def pascal(value, key: str | None = None):
    """An ECS API document (camelCase) as CloudFormation properties (PascalCase), data maps untouched."""
    if isinstance(value, list):
        return [pascal(v) for v in value]
    if not isinstance(value, dict) or key in ECS_DATA_MAPS:
        return value
    return {ECS_RENAMES.get(k, k[:1].upper() + k[1:]): pascal(v, k) for k, v in value.items()}


def cfn_tags(tags: dict) -> list[dict]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def logical_id(kind: str, name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", f"{kind.title()}{name.title()}")[:255]


def with_placeholder_ids(document, config):
    """Every placeholder for an id known only in AWS replaced by an id of the documented form."""
    env = config.environment
    text = json.dumps(document)
    text = re.sub(r'"<ids of network\.subnets>"', '["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]', text)
    text = re.sub(r"<id of efs_file_system [^>]*>", "fs-0123456789abcdef0", text)
    text = re.sub(r"<id of efs_access_point [^>]*>", "fsap-0123456789abcdef0", text)
    text = re.sub(r"<id of security_group [^>]*>", "sg-0123456789abcdef0", text)
    text = re.sub(re.escape(kms_keys.PLACEHOLDER_PREFIX) + r"[^>]*>",
                  f"arn:aws:kms:{env.region}:{env.account_id}:key/0123abcd-0123-4567-89ab-0123456789ab", text)
    return json.loads(text)


def _key_arn(ref: dict) -> str:
    """A key reference as policies and settings write it (the placeholder becomes a key ARN later)."""
    return kms_keys.arn_placeholder(ref)


def _rules(spec: dict, direction: str) -> list[dict]:
    out = []
    for rule in spec.get(direction, []):
        item = {"IpProtocol": rule["protocol"]}
        if rule.get("from_port") is not None:
            item.update(FromPort=rule["from_port"], ToPort=rule["to_port"])
        peer = rule["peer"]
        if "cidr" in peer:
            item["CidrIp"] = peer["cidr"]
        elif "group" in peer or "lookup" in peer:  # one of ours, or one the config looks up (a group id)
            item["SourceSecurityGroupId" if direction == "ingress" else "DestinationSecurityGroupId"] = \
                "sg-0123456789abcdef1"
        elif "prefix_list" in peer:
            item["SourcePrefixListId" if direction == "ingress" else "DestinationPrefixListId"] = \
                "pl-0123456789abcdef0"
        else:
            raise AssertionError(f"unmapped peer {peer}")
        out.append(item)
    return out


def resources_of(kind: str, name: str, spec: dict, config) -> dict[str, dict]:
    """{logical id: CloudFormation resource} for one rendered spec."""
    env = config.environment
    lid = logical_id(kind, name)
    if kind == "log_group":
        props = {"LogGroupName": name, "Tags": cfn_tags(spec["tags"])}
        if spec.get("retention_days"):
            props["RetentionInDays"] = spec["retention_days"]
        if spec.get("kms_key_arn"):
            props["KmsKeyId"] = spec["kms_key_arn"]
        return {lid: {"Type": "AWS::Logs::LogGroup", "Properties": props}}
    if kind == "cluster":
        return {lid: {"Type": "AWS::ECS::Cluster", "Properties": {
            "ClusterName": name,
            "ClusterSettings": [{"Name": "containerInsights", "Value": spec["container_insights"]}],
            "CapacityProviders": spec["capacity_providers"],
            "DefaultCapacityProviderStrategy": pascal(spec["default_capacity_provider_strategy"]),
            "Tags": cfn_tags(spec["tags"])}}}
    if kind == "kms_key":
        return {
            lid: {"Type": "AWS::KMS::Key", "Properties": {
                "Description": spec["description"], "KeySpec": spec["key_spec"], "KeyUsage": spec["key_usage"],
                "Enabled": spec["key_state"] == "Enabled", "EnableKeyRotation": spec["rotation"],
                "Tags": cfn_tags(spec["tags"])}},
            lid + "Alias": {"Type": "AWS::KMS::Alias", "Properties": {"AliasName": name, "TargetKeyId": {"Ref": lid}}},
        }
    if kind == "bucket":
        encryption = spec["encryption"]
        default = {"SSEAlgorithm": encryption["algorithm"]}
        if encryption.get("kms_key"):
            default["KMSMasterKeyID"] = _key_arn(encryption["kms_key"])
        props = {
            "BucketName": name,
            "PublicAccessBlockConfiguration": spec["public_access_block"],
            "OwnershipControls": {"Rules": [{"ObjectOwnership": spec["object_ownership"]}]},
            "BucketEncryption": {"ServerSideEncryptionConfiguration": [{
                "ServerSideEncryptionByDefault": default, "BucketKeyEnabled": encryption["bucket_key"]}]},
            "Tags": cfn_tags(spec["tags"]),
        }
        if spec["versioning"] == "on":  # "off": never enabled (or suspended), CloudFormation's default
            props["VersioningConfiguration"] = {"Status": "Enabled"}
        if spec["notifications"].get("eventbridge"):
            props["NotificationConfiguration"] = {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
        if isinstance(spec["lifecycle"], list) and spec["lifecycle"]:
            props["LifecycleConfiguration"] = {"Rules": [_lifecycle(r) for r in spec["lifecycle"]]}
        out = {lid: {"Type": "AWS::S3::Bucket", "Properties": props}}
        if isinstance(spec["policy"], dict):
            out[lid + "Policy"] = {"Type": "AWS::S3::BucketPolicy",
                                   "Properties": {"Bucket": {"Ref": lid}, "PolicyDocument": spec["policy"]}}
        return out
    if kind == "security_group":
        return {lid: {"Type": "AWS::EC2::SecurityGroup", "Properties": {
            "GroupName": name, "GroupDescription": spec["description"], "VpcId": "vpc-0123456789abcdef0",
            "Tags": cfn_tags(spec["tags"])}}}
    if kind == "security_group_rules":
        out = {}
        for direction, cfn in (("ingress", "AWS::EC2::SecurityGroupIngress"),
                               ("egress", "AWS::EC2::SecurityGroupEgress")):
            for i, rule in enumerate(_rules(spec, direction)):
                out[f"{lid}{direction.title()}{i}"] = {"Type": cfn, "Properties": {
                    "GroupId": "sg-0123456789abcdef0", **rule}}
        return out
    if kind == "iam_role":
        props = {"RoleName": name, "Path": spec["path"], "AssumeRolePolicyDocument": spec["trust_policy"],
                 "MaxSessionDuration": spec["max_session_duration"], "Tags": cfn_tags(spec["tags"])}
        if spec.get("inline_policies"):
            props["Policies"] = [{"PolicyName": n, "PolicyDocument": d}
                                 for n, d in sorted(spec["inline_policies"].items())]
        if spec.get("managed_policy_arns"):
            props["ManagedPolicyArns"] = spec["managed_policy_arns"]
        return {lid: {"Type": "AWS::IAM::Role", "Properties": props}}
    if kind == "iam_policy":
        return {lid: {"Type": "AWS::IAM::ManagedPolicy", "Properties": {
            "ManagedPolicyName": name, "PolicyDocument": spec["document"]}}}
    if kind == "efs_file_system":
        props = {"PerformanceMode": spec["performance_mode"], "Encrypted": spec["encrypted"],
                 "ThroughputMode": spec["throughput_mode"],
                 "BackupPolicy": {"Status": "ENABLED" if spec["automatic_backups"] else "DISABLED"},
                 "FileSystemTags": cfn_tags({"Name": name, **spec["tags"]})}
        if spec.get("kms_key"):
            props["KmsKeyId"] = _key_arn(spec["kms_key"])
        if spec.get("lifecycle_policies"):
            props["LifecyclePolicies"] = spec["lifecycle_policies"]
        if spec.get("policy"):
            props["FileSystemPolicy"] = spec["policy"]
        return {lid: {"Type": "AWS::EFS::FileSystem", "Properties": props}}
    if kind == "efs_access_point":
        root = {"Path": spec["root_directory"]["path"]}
        info = spec["root_directory"].get("creation_info")
        if info:
            root["CreationInfo"] = {"OwnerUid": str(info["owner_uid"]), "OwnerGid": str(info["owner_gid"]),
                                    "Permissions": info["permissions"]}
        props = {"FileSystemId": {"Ref": logical_id("efs_file_system", spec["file_system"])},
                 "RootDirectory": root, "AccessPointTags": cfn_tags(spec["tags"])}
        if spec.get("posix_user"):
            user = spec["posix_user"]
            props["PosixUser"] = {"Uid": str(user["uid"]), "Gid": str(user["gid"])}
            if user.get("secondary_gids"):
                props["PosixUser"]["SecondaryGids"] = [str(g) for g in user["secondary_gids"]]
        return {lid: {"Type": "AWS::EFS::AccessPoint", "Properties": props}}
    if kind == "task_definition":
        content = {k: v for k, v in spec.items() if k != "tags"}
        return {lid: {"Type": "AWS::ECS::TaskDefinition",
                      "Properties": {**pascal(content), "Tags": cfn_tags(spec["tags"])}}}
    if kind == "service":
        deployment = {"DeploymentCircuitBreaker": pascal(spec["deployment_circuit_breaker"]),
                      "MinimumHealthyPercent": spec["minimum_healthy_percent"],
                      "MaximumPercent": spec["maximum_percent"]}
        props = {
            "ServiceName": name, "Cluster": names.cluster(config),
            "TaskDefinition": {"Ref": logical_id("task_definition", spec["task_definition"])},
            "DesiredCount": spec["desired_count"],
            "CapacityProviderStrategy": pascal(spec["capacity_provider_strategy"]),
            "NetworkConfiguration": {"AwsvpcConfiguration": {
                "Subnets": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
                "SecurityGroups": ["sg-0123456789abcdef0" for _ in spec["security_groups"]],
                "AssignPublicIp": spec["assign_public_ip"]}},
            "DeploymentConfiguration": deployment,
            "EnableExecuteCommand": spec["enable_execute_command"],
            "PropagateTags": spec["propagate_tags"], "EnableECSManagedTags": spec["enable_ecs_managed_tags"],
            "Tags": cfn_tags(spec["tags"]),
        }
        if spec["load_balancers"]:
            props["LoadBalancers"] = [{**pascal(lb), "TargetGroupArn": _target_group_arn(lb["targetGroupArn"])}
                                      for lb in spec["load_balancers"]]
            props["HealthCheckGracePeriodSeconds"] = spec["health_check_grace_period_seconds"]
        if spec.get("service_registries"):
            # By name, our Cloud Map service (its ARN); an ARN we do not own stays as it is.
            props["ServiceRegistries"] = [{"RegistryArn": r if r.startswith("arn:") else
                                           {"Fn::GetAtt": [logical_id("cloud_map_service", r), "Arn"]}}
                                          for r in spec["service_registries"]]
        return {lid: {"Type": "AWS::ECS::Service", "Properties": props}}
    if kind == "state_machine":
        logging = spec["logging"]
        log_config = {"Level": logging["level"], "IncludeExecutionData": logging["include_execution_data"]}
        if logging["log_group"]:
            log_config["Destinations"] = [{"CloudWatchLogsLogGroup": {
                "LogGroupArn": sm.log_group_arn(config, logging["log_group"])}}]
        definition = sm.with_task_definition_arns(
            spec["definition"], lambda family: f"arn:aws:ecs:{env.region}:{env.account_id}:task-definition/{family}:1")
        return {lid: {"Type": "AWS::StepFunctions::StateMachine", "Properties": {
            "StateMachineName": name, "Definition": definition, "RoleArn": spec["role_arn"],
            "StateMachineType": spec["type"], "LoggingConfiguration": log_config,
            "Tags": cfn_tags(spec["tags"])}}}
    if kind == "state_machine_alias":
        machine = spec["state_machine"]
        return {lid: {"Type": "AWS::StepFunctions::StateMachineAlias", "Properties": {
            "Name": name.rsplit(":", 1)[1], "Description": spec["description"],
            "RoutingConfiguration": [{
                "StateMachineVersionArn": f"arn:aws:states:{env.region}:{env.account_id}:stateMachine:{machine}:1",
                "Weight": 100}]}}}
    if kind == "event_rule":
        targets = [{"Id": t["id"], "Arn": t["arn"], "RoleArn": t["role_arn"]} for t in spec["targets"]]
        return {lid: {"Type": "AWS::Events::Rule", "Properties": {
            "Name": name, "Description": spec["description"], "EventPattern": spec["event_pattern"],
            "State": spec["state"], "Targets": targets}}}
    if kind == "cloud_map_namespace":
        return {lid: {"Type": "AWS::ServiceDiscovery::PrivateDnsNamespace", "Properties": {
            "Name": name, "Vpc": "vpc-0123456789abcdef0", "Description": spec["description"],
            "Tags": cfn_tags(spec["tags"])}}}
    if kind == "cloud_map_service":
        assert spec["health_check"] == "custom", f"unmapped health check {spec['health_check']}"
        return {lid: {"Type": "AWS::ServiceDiscovery::Service", "Properties": {
            "Name": name.split(".", 1)[0],  # named by its DNS name: the first label is the service's name
            "NamespaceId": {"Fn::GetAtt": [logical_id("cloud_map_namespace", spec["namespace"]), "Id"]},
            "DnsConfig": {"RoutingPolicy": spec["routing_policy"],
                          "DnsRecords": [{"Type": t, "TTL": ttl} for t, ttl in sorted(spec["dns_records"].items())]},
            "HealthCheckCustomConfig": {"FailureThreshold": 1},  # what create() sends; AWS always uses 1
            "Description": spec["description"], "Tags": cfn_tags(spec["tags"])}}}
    if kind == "load_balancer":
        subnets = {"network.subnets": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
                   "public_entry.subnets": ["subnet-0123456789abcdef2", "subnet-0123456789abcdef3"]}
        return {lid: {"Type": "AWS::ElasticLoadBalancingV2::LoadBalancer", "Properties": {
            "Name": name, "Type": spec["type"], "Scheme": spec["scheme"], "IpAddressType": spec["ip_address_type"],
            "Subnets": subnets.get(spec["subnets"], spec["subnets"]),
            "SecurityGroups": [g if g.startswith("sg-")  # an id we do not own stays as it is
                               else {"Fn::GetAtt": [logical_id("security_group", g), "GroupId"]}
                               for g in spec["security_groups"]],
            "LoadBalancerAttributes": [{"Key": k, "Value": v} for k, v in sorted(spec["attributes"].items())],
            "Tags": cfn_tags(spec["tags"])}}}
    if kind == "target_group":
        hc = spec["health_check"]
        return {lid: {"Type": "AWS::ElasticLoadBalancingV2::TargetGroup", "Properties": {
            "Name": name, "Protocol": spec["protocol"], "ProtocolVersion": spec["protocol_version"],
            "Port": spec["port"], "TargetType": spec["target_type"],
            "VpcId": "vpc-0123456789abcdef0" if spec["vpc"] == "network.vpc" else spec["vpc"],
            "HealthCheckEnabled": hc["enabled"], "HealthCheckProtocol": hc["protocol"], "HealthCheckPort": hc["port"],
            "HealthCheckPath": hc["path"], "HealthCheckIntervalSeconds": hc["interval_seconds"],
            "HealthCheckTimeoutSeconds": hc["timeout_seconds"], "HealthyThresholdCount": hc["healthy_threshold"],
            "UnhealthyThresholdCount": hc["unhealthy_threshold"], "Matcher": {"HttpCode": hc["matcher"]},
            "TargetGroupAttributes": [{"Key": k, "Value": v} for k, v in sorted(spec["attributes"].items())],
            "Tags": cfn_tags(spec["tags"])}}}
    if kind == "listener":
        props = {"LoadBalancerArn": {"Ref": logical_id("load_balancer", spec["load_balancer"])},
                 "Port": spec["port"], "Protocol": spec["protocol"],
                 "DefaultActions": [_action(a) for a in spec["default_actions"]], "Tags": cfn_tags(spec["tags"])}
        if "certificate" in spec:
            certificate = spec["certificate"]
            if not certificate.startswith("arn:"):  # found by domain in ACM when applied
                certificate = (f"arn:aws:acm:{env.region}:{env.account_id}:"
                               f"certificate/0123abcd-0123-4567-89ab-0123456789ab")
            props["Certificates"] = [{"CertificateArn": certificate}]
            props["SslPolicy"] = spec["ssl_policy"]
        return {lid: {"Type": "AWS::ElasticLoadBalancingV2::Listener", "Properties": props}}
    if kind == "listener_rules":
        # One AWS::ElasticLoadBalancingV2::ListenerRule per rule of the listener's ordered list.
        return {f"{lid}Rule{rule['priority']}": {"Type": "AWS::ElasticLoadBalancingV2::ListenerRule", "Properties": {
            "ListenerArn": {"Ref": logical_id("listener", name)}, "Priority": rule["priority"],
            "Conditions": [_condition(f, values) for f, values in rule["conditions"].items()],
            "Actions": [_action(a) for a in rule["actions"]]}} for rule in spec["rules"]}
    raise AssertionError(f"kind {kind!r} has no CloudFormation mapping: add one to resources_of (or NOT_RESOURCES)")


def _target_group_arn(target_group: str):
    """Our target group by name (its ARN, which Ref gives), or an ARN we do not own as it is."""
    return target_group if target_group.startswith("arn:") else {"Ref": logical_id("target_group", target_group)}


def _action(action: dict) -> dict:
    """A listener or rule action in canonical form (load_balancers.canonical_action) as CloudFormation's."""
    if action["type"] == "forward":
        return {"Type": "forward", "TargetGroupArn": _target_group_arn(action["target_group"])}
    if action["type"] == "redirect":
        return {"Type": "redirect", "RedirectConfig": {
            "Protocol": action["protocol"], "Port": action["port"], "Host": action["host"], "Path": action["path"],
            "Query": action["query"], "StatusCode": action["status_code"]}}
    raise AssertionError(f"unmapped action {action}")


def _condition(field: str, values: list) -> dict:
    config = {"path-pattern": "PathPatternConfig", "host-header": "HostHeaderConfig"}
    assert field in config, f"unmapped condition {field}"
    return {"Field": field, config[field]: {"Values": list(values)}}


def _lifecycle(rule: dict) -> dict:
    """An S3 API lifecycle rule (bucket.lifecycle_rule) as CloudFormation's, which names some fields its own way."""
    out = {"Id": rule["ID"], "Status": rule["Status"]}
    prefix = (rule.get("Filter") or {}).get("Prefix")
    if prefix:
        out["Prefix"] = prefix
    if "Days" in (rule.get("Expiration") or {}):
        out["ExpirationInDays"] = rule["Expiration"]["Days"]
    for key in ("NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload"):
        if key in rule:
            out[key] = rule[key]
    unmapped = set(rule) - {"ID", "Status", "Filter", "Expiration", "NoncurrentVersionExpiration",
                            "AbortIncompleteMultipartUpload"}
    assert not unmapped, f"lifecycle fields with no mapping here yet: {unmapped}"
    return out


@functools.lru_cache(maxsize=None)
def template(env: str) -> str:
    """One CloudFormation template (JSON) holding every resource `env` renders."""
    return template_of(load_config(env))


def template_of(config) -> str:
    state = desired.build(config, all_kinds())
    resources: dict[str, dict] = {}
    for kind, specs in state.resources.items():
        if kind.startswith("_") or kind in NOT_RESOURCES:
            continue
        for name, spec in sorted(specs.items()):
            resources.update(resources_of(kind, name, copy.deepcopy(spec), config))
    document = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources}
    return json.dumps(with_placeholder_ids(document, config), indent=1)


def problems(text: str, region: str) -> list[str]:
    matches = lint(text, config=ManualArgs(regions=[region]))
    return [f"{m.rule.id} {'/'.join(str(p) for p in m.path)}: {m.message}" for m in matches
            if m.rule.severity in ("error", "warning")]


@pytest.mark.parametrize("env", ENVS)
def test_every_rendered_resource_fits_aws_resource_schemas(env):
    config = load_config(env)
    text = template(env)
    kinds = {json.loads(text)["Resources"][r]["Type"] for r in json.loads(text)["Resources"]}
    assert {"AWS::ECS::TaskDefinition", "AWS::StepFunctions::StateMachine", "AWS::IAM::Role",
            "AWS::EFS::AccessPoint", "AWS::ECS::Service", "AWS::Events::Rule",
            "AWS::ServiceDiscovery::PrivateDnsNamespace", "AWS::ServiceDiscovery::Service",
            "AWS::ElasticLoadBalancingV2::LoadBalancer", "AWS::ElasticLoadBalancingV2::TargetGroup",
            "AWS::ElasticLoadBalancingV2::Listener", "AWS::ElasticLoadBalancingV2::ListenerRule"} <= kinds
    found = problems(text, config.environment.region)
    assert found == [], "\n".join(found)


def test_the_longest_name_prefix_still_fits():
    # config.py allows a name_prefix of up to 21 characters (names.py keeps the ELB stems short for it): every
    # name built on one that long must still fit AWS's limits (ELB names 32, IAM role names 64, ...).
    config = load_config("staging")
    config = dataclasses.replace(config, environment=dataclasses.replace(config.environment,
                                                                         name_prefix="dmp-a-long-prefix-21c"))
    assert len(config.environment.name_prefix) == 21
    found = problems(template_of(config), config.environment.region)
    # CloudFormation's ELB schema leaves the names' limits to prose: request_check has them from the API reference.
    resources = desired.build(config, all_kinds()).resources
    for kind, operation in (("load_balancer", "CreateLoadBalancer"), ("target_group", "CreateTargetGroup")):
        pattern, source = request_check.DOCUMENTED_RULES[("elbv2", operation, "Name")]
        found += [f"{kind} {name}: {source}" for name in resources[kind] if not regex.fullmatch(pattern, name)]
    assert found == [], "\n".join(found)


def test_an_existing_public_entry_fits():
    # With public_entry.existing_target_group_arn there is no public load balancer and the router's service names
    # a target group by ARN: the configuration the three environments do not use, linted all the same.
    config = load_config("staging")
    arn = "arn:aws:elasticloadbalancing:eu-west-2:111122223333:targetgroup/dmp-entry/0123456789abcdef"
    config = dataclasses.replace(config, public_entry=PublicEntry(existing_target_group_arn=arn))
    text = template_of(config)
    router = json.loads(text)["Resources"][logical_id("service", names.family(config, "router"))]
    assert router["Properties"]["LoadBalancers"][0]["TargetGroupArn"] == arn
    found = problems(text, config.environment.region)
    assert found == [], "\n".join(found)


def test_every_kind_is_mapped_or_explained():
    config = load_config("production")
    state = desired.build(config, all_kinds())
    for kind in (k.kind for k in all_kinds()):
        if kind in NOT_RESOURCES:
            continue
        for name, spec in state.resources.get(kind, {}).items():
            if kind == "listener_rules" and not spec["rules"]:
                continue  # a listener declared with no rules (the public ones): nothing of its own to map
            assert resources_of(kind, name, copy.deepcopy(spec), config), (kind, name)


# --- a broken template fails (a test of the test) ------------------------------------------------------------
# Each case lints one rendered resource alone (fast), first as rendered (clean), then broken (must fail).

def _alone(type_: str) -> dict:
    """The first rendered resource of `type_`, first in the template, with the resources it names (Ref, GetAtt),
    theirs, and so on: a listener rule is linted with its listener, load balancer and target group."""
    resources = json.loads(template("staging"))["Resources"]
    logical = next(k for k, r in resources.items() if r["Type"] == type_)
    wanted, pending = [logical], [logical]
    while pending:
        for name in _references(resources[pending.pop()]):
            if name in resources and name not in wanted:
                wanted.append(name)
                pending.append(name)
    return {"AWSTemplateFormatVersion": "2010-09-09", "Resources": {k: resources[k] for k in wanted}}


def _references(value) -> set[str]:
    if isinstance(value, list):
        return set().union(*map(_references, value)) if value else set()
    if not isinstance(value, dict):
        return set()
    if set(value) == {"Ref"}:
        return {value["Ref"]}
    if set(value) == {"Fn::GetAtt"}:
        return {value["Fn::GetAtt"][0]}
    return set().union(*map(_references, value.values())) if value else set()


def _props(document: dict) -> dict:
    return next(iter(document["Resources"].values()))["Properties"]


def _fargate_cpu_memory(props):
    props.update(Cpu="256", Memory="4096")


def _start_at_nowhere(props):
    props["Definition"]["StartAt"] = "NoSuchState"


def _unknown_state_type(props):
    next(iter(props["Definition"]["States"].values()))["Type"] = "Taskk"


def _network_mode_enum(props):
    props["NetworkMode"] = "bridged"


def _log_group_name_pattern(props):
    props["LogGroupName"] = "has spaces?"


def _missing_required(props):
    del props["AssumeRolePolicyDocument"]


def _rule_name_too_long(props):
    props["Name"] = "r" * 65


# cfn-lint's ELB schemas say only in prose that a load balancer or target group name is at most 32 characters
# (alphanumerics and hyphens) and a health check path starts with "/": `Name` and `HealthCheckPath` carry no
# maxLength or pattern, so breaking those passes it (tried). test_load_balancers checks our names' length; these
# cases break what the schemas and cfn-lint's ELB and Cloud Map rules do encode.

def _health_check_tcp_with_http_matcher(props):
    props["HealthCheckProtocol"] = "TCP"  # a TCP health check has no HTTP codes to match


def _application_load_balancer_in_one_subnet(props):
    props["Subnets"] = props["Subnets"][:1]  # an ALB needs subnets in at least two zones


def _rule_priority_zero(props):
    props["Priority"] = 0


def _discovery_routing_policy_enum(props):
    props["DnsConfig"]["RoutingPolicy"] = "ROUND_ROBIN"


@pytest.mark.parametrize("type_, mutate, rule", [
    ("AWS::ECS::TaskDefinition", _fargate_cpu_memory, "E3047"),
    ("AWS::StepFunctions::StateMachine", _start_at_nowhere, "E3601"),
    ("AWS::StepFunctions::StateMachine", _unknown_state_type, "E3601"),
    ("AWS::ECS::TaskDefinition", _network_mode_enum, "E3030"),
    ("AWS::Logs::LogGroup", _log_group_name_pattern, "E3031"),
    ("AWS::IAM::Role", _missing_required, "E3003"),
    ("AWS::Events::Rule", _rule_name_too_long, "E3033"),
    ("AWS::ElasticLoadBalancingV2::TargetGroup", _health_check_tcp_with_http_matcher, "E3684"),
    ("AWS::ElasticLoadBalancingV2::LoadBalancer", _application_load_balancer_in_one_subnet, "E3680"),
    ("AWS::ElasticLoadBalancingV2::ListenerRule", _rule_priority_zero, "E3034"),
    ("AWS::ServiceDiscovery::Service", _discovery_routing_policy_enum, "E3030"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else v.split("::")[-1])
def test_a_broken_template_fails(type_, mutate, rule):
    document = _alone(type_)
    assert problems(json.dumps(document), "eu-west-2") == [], "the resource as rendered should lint clean"
    mutate(_props(document))
    found = problems(json.dumps(document), "eu-west-2")
    # For the reason broken, not another: the rule that checks what was changed reports it.
    assert any(p.startswith(rule + " ") for p in found), (mutate.__name__, found)
