"""Issue 12: one apply converges. For every resource kind, the live resource (or the part of it that can be deleted
alone: a rule, an alias, a policy, a revision) is deleted out of band; one `apply` must then bring everything back,
including whatever names a resource that came back with a new identity (a replaced access point, a new task
definition revision, a new key), so that `plan` and `drift` both exit 0 straight after.

One embedded AWS is applied once for the whole module and each row leaves it converged, so the rows run one after
another without re-applying from nothing. A row that finds the environment not converged when it starts (an
earlier row failed) re-applies from a clean account first, so one failure does not fail the rows after it.

Adding a kind: add a row to DELETIONS (a name, the kind, and a function deleting the live resource with plain
boto3 clients) and, if the kind gives its resources ids that others name, check that the row's apply follows them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import pytest

from conftest import LocalAws, _reset_and_seed, cli, point_cli_at

ENV = "local"
PREFIX = "dmp-local"
ACCOUNT = "123456789012"
BUCKET = f"{PREFIX}-add-users-{ACCOUNT}"
CLUSTER = PREFIX
MACHINE = f"{PREFIX}-add-users"


# --- helpers over plain boto3 clients -------------------------------------------------------------------------

def _group_id(aws: LocalAws, name: str) -> str:
    groups = aws.client("ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
    return groups[0]["GroupId"]


def _file_system_id(aws: LocalAws) -> str:
    (fs,) = [f for f in aws.client("efs").describe_file_systems()["FileSystems"]
             if f.get("Name") == f"{PREFIX}-add-users"]
    return fs["FileSystemId"]


def _machine_arn(aws: LocalAws) -> str:
    return f"arn:aws:states:{aws.region}:{ACCOUNT}:stateMachine:{MACHINE}"


# --- the deletions, one per kind (or per part of a kind that can be deleted alone) ---------------------------

def delete_log_group(aws):
    aws.client("logs").delete_log_group(logGroupName=f"/{PREFIX}/api")


def delete_state_machine_log_group(aws):
    aws.client("logs").delete_log_group(logGroupName=f"/{PREFIX}/states/add-users")


def delete_kms_alias(aws):
    aws.client("kms").delete_alias(AliasName=f"alias/{PREFIX}-add-users")


def delete_kms_key(aws):
    kms = aws.client("kms")
    key = kms.describe_key(KeyId=f"alias/{PREFIX}-add-users")["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)


def delete_bucket_public_access_block(aws):
    aws.client("s3").delete_public_access_block(Bucket=BUCKET)


def delete_bucket_policy(aws):
    # (Locally the policy has every statement but the TLS one, which the plain-HTTP embedded AWS cannot honour.)
    aws.client("s3").delete_bucket_policy(Bucket=BUCKET)


def delete_bucket_lifecycle(aws):
    aws.client("s3").delete_bucket_lifecycle(Bucket=BUCKET)


def delete_bucket_notifications(aws):
    aws.client("s3").put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={})


def delete_security_group_rule(aws):
    ec2 = aws.client("ec2")
    group = _group_id(aws, f"{PREFIX}-api")
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])[
        "SecurityGroupRules"]
    ingress = [r["SecurityGroupRuleId"] for r in rules if not r["IsEgress"]]
    assert ingress, "the api group should have an ingress rule to delete"
    ec2.revoke_security_group_ingress(GroupId=group, SecurityGroupRuleIds=ingress[:1])


def delete_security_group(aws):
    # A group nothing else references (no service, no peer rule): AWS refuses to delete one in use.
    aws.client("ec2").delete_security_group(GroupId=_group_id(aws, f"{PREFIX}-opensearch"))


def delete_role_inline_policy(aws):
    iam = aws.client("iam")
    role = f"{PREFIX}-add-users-trigger"
    (name, *_) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    iam.delete_role_policy(RoleName=role, PolicyName=name)


def delete_role(aws):
    iam = aws.client("iam")
    role = f"{PREFIX}-db-migration-task"
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        iam.delete_role_policy(RoleName=role, PolicyName=name)
    for attached in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
        iam.detach_role_policy(RoleName=role, PolicyArn=attached["PolicyArn"])
    iam.delete_role(RoleName=role)


def delete_file_system_policy(aws):
    aws.client("efs").delete_file_system_policy(FileSystemId=_file_system_id(aws))


def delete_mount_target(aws):
    efs = aws.client("efs")
    (target, *_) = efs.describe_mount_targets(FileSystemId=_file_system_id(aws))["MountTargets"]
    efs.delete_mount_target(MountTargetId=target["MountTargetId"])


def delete_access_point(aws):
    efs = aws.client("efs")
    (point,) = efs.describe_access_points(FileSystemId=_file_system_id(aws))["AccessPoints"]
    efs.delete_access_point(AccessPointId=point["AccessPointId"])


def _deregister_newest(ecs, family: str) -> None:
    """The newest ACTIVE revision: the one the state machine or the service runs."""
    arn = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]["taskDefinitionArn"]
    ecs.deregister_task_definition(taskDefinition=arn)


def deregister_add_users_revision(aws):
    ecs = aws.client("ecs")
    _deregister_newest(ecs, f"{PREFIX}-add-users")


def deregister_service_revision(aws):
    ecs = aws.client("ecs")
    _deregister_newest(ecs, f"{PREFIX}-api")


def delete_service(aws):
    aws.client("ecs").delete_service(cluster=CLUSTER, service=f"{PREFIX}-router", force=True)


def delete_state_machine_alias(aws):
    aws.client("stepfunctions").delete_state_machine_alias(stateMachineAliasArn=f"{_machine_arn(aws)}:live")


def delete_state_machine(aws):
    aws.client("stepfunctions").delete_state_machine(stateMachineArn=_machine_arn(aws))


def delete_event_rule_targets(aws):
    events = aws.client("events")
    rule = f"{PREFIX}-add-users-uploads"
    ids = [t["Id"] for t in events.list_targets_by_rule(Rule=rule)["Targets"]]
    events.remove_targets(Rule=rule, Ids=ids)


def delete_event_rule(aws):
    events = aws.client("events")
    rule = f"{PREFIX}-add-users-uploads"
    ids = [t["Id"] for t in events.list_targets_by_rule(Rule=rule)["Targets"]]
    if ids:
        events.remove_targets(Rule=rule, Ids=ids)
    events.delete_rule(Name=rule)


def delete_cluster(aws):
    ecs = aws.client("ecs")
    for arn in ecs.list_services(cluster=CLUSTER, maxResults=100)["serviceArns"]:
        ecs.delete_service(cluster=CLUSTER, service=arn, force=True)
    ecs.delete_cluster(cluster=CLUSTER)


def delete_release_index(aws):
    # The newest record stays; the index naming it goes (what a run killed while recording leaves behind).
    aws.client("s3").delete_object(Bucket=f"{PREFIX}-dmp-deploy-state-{ACCOUNT}", Key="releases/index.json")


def _deregister_and_delete_cloud_map_service(sd, service_id: str) -> None:
    """AWS refuses to delete a Cloud Map service with instances: the tasks ECS registered go first."""
    for instance in sd.list_instances(ServiceId=service_id)["Instances"]:
        sd.deregister_instance(ServiceId=service_id, InstanceId=instance["Id"])
    sd.delete_service(Id=service_id)


def _namespace_id(sd) -> str:
    (namespace,) = [n for n in sd.list_namespaces()["Namespaces"] if n["Name"] == f"{PREFIX}.internal"]
    return namespace["Id"]


def delete_cloud_map_service(aws):
    sd = aws.client("servicediscovery")
    (service,) = [s for s in sd.list_services()["Services"] if s["Name"] == "api"
                  and s.get("NamespaceId", _namespace_id(sd)) == _namespace_id(sd)]
    _deregister_and_delete_cloud_map_service(sd, service["Id"])


def delete_cloud_map_namespace(aws):
    sd = aws.client("servicediscovery")
    namespace = _namespace_id(sd)
    for service in sd.list_services(Filters=[{"Name": "NAMESPACE_ID", "Values": [namespace],
                                              "Condition": "EQ"}])["Services"]:
        _deregister_and_delete_cloud_map_service(sd, service["Id"])
    sd.delete_namespace(Id=namespace)


def _www_load_balancer(elb) -> tuple[dict, dict]:
    (balancer,) = elb.describe_load_balancers(Names=[f"{PREFIX}-www"])["LoadBalancers"]
    (listener,) = elb.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    return balancer, listener


def delete_listener_rule(aws):
    elb = aws.client("elbv2")
    _, listener = _www_load_balancer(elb)
    (rule, *_) = [r for r in elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"] if not r["IsDefault"]]
    elb.delete_rule(RuleArn=rule["RuleArn"])


def delete_listener(aws):
    elb = aws.client("elbv2")
    (balancer,) = elb.describe_load_balancers(Names=[f"{PREFIX}-public"])["LoadBalancers"]
    (http,) = [l for l in elb.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
               if l["Port"] == 80]
    elb.delete_listener(ListenerArn=http["ListenerArn"])


def delete_target_group(aws):
    # AWS refuses to delete a target group a rule forwards to: the rule goes first.
    elb = aws.client("elbv2")
    (group,) = elb.describe_target_groups(Names=[f"{PREFIX}-user"])["TargetGroups"]
    _, listener = _www_load_balancer(elb)
    for rule in elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]:
        if not rule["IsDefault"] and any(a.get("TargetGroupArn") == group["TargetGroupArn"] for a in rule["Actions"]):
            elb.delete_rule(RuleArn=rule["RuleArn"])
    elb.delete_target_group(TargetGroupArn=group["TargetGroupArn"])


def delete_load_balancer(aws):
    # The www path router: its new DNS name is the router's DM_FRONTEND_URL, so the router follows.
    elb = aws.client("elbv2")
    balancer, listener = _www_load_balancer(elb)
    elb.delete_listener(ListenerArn=listener["ListenerArn"])
    elb.delete_load_balancer(LoadBalancerArn=balancer["LoadBalancerArn"])


def services_name_live_registries(aws):
    ecs, sd = aws.client("ecs"), aws.client("servicediscovery")
    arns = {s["Arn"] for s in sd.list_services()["Services"]}
    (service,) = ecs.describe_services(cluster=CLUSTER, services=[f"{PREFIX}-api"])["services"]
    assert [r["registryArn"] for r in service["serviceRegistries"]] and all(
        r["registryArn"] in arns for r in service["serviceRegistries"])


def router_names_the_live_path_router(aws):
    ecs, elb = aws.client("ecs"), aws.client("elbv2")
    balancer, _ = _www_load_balancer(elb)
    (service,) = ecs.describe_services(cluster=CLUSTER, services=[f"{PREFIX}-router"])["services"]
    (container,) = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"][
        "containerDefinitions"]
    frontend_url = {e["name"]: e["value"] for e in container["environment"]}["DM_FRONTEND_URL"]
    assert balancer["DNSName"] in frontend_url


def service_runs_the_newest_revision(aws):
    ecs = aws.client("ecs")
    newest = ecs.describe_task_definition(taskDefinition=f"{PREFIX}-api")["taskDefinition"]["taskDefinitionArn"]
    (service,) = ecs.describe_services(cluster=CLUSTER, services=[f"{PREFIX}-api"])["services"]
    assert service["taskDefinition"] == newest


def alias_runs_the_newest_revisions(aws):
    ecs, states = aws.client("ecs"), aws.client("stepfunctions")
    (route,) = states.describe_state_machine_alias(stateMachineAliasArn=f"{_machine_arn(aws)}:live")[
        "routingConfiguration"]
    definition = states.describe_state_machine(stateMachineArn=route["stateMachineVersionArn"])["definition"]
    named = set(re.findall(r"task-definition/([\w-]+:\d+)", definition))
    newest = {ecs.describe_task_definition(taskDefinition=name.split(":")[0])["taskDefinition"]["taskDefinitionArn"]
              .rsplit("/", 1)[1] for name in named}
    assert named and named == newest


@dataclass(frozen=True)
class Deletion:
    kind: str  # the kind whose resource (or part) is deleted
    delete: Callable[[LocalAws], None]
    then: Callable[[LocalAws], None] | None = None  # what must also hold after the one apply (a cascade followed)
    follows: tuple[str, ...] = ()  # kinds whose follow-on changes the plan must show up front

    @property
    def id(self) -> str:
        return self.delete.__name__


# One row per kind, or per part of a kind that can be deleted alone. Keep every kind of resources.all_kinds()
# covered (test_every_kind_has_a_row checks it).
DELETIONS = [
    Deletion("log_group", delete_log_group),
    Deletion("log_group", delete_state_machine_log_group),
    Deletion("cluster", delete_cluster),
    Deletion("kms_key", delete_kms_alias),
    Deletion("kms_key", delete_kms_key),
    Deletion("bucket", delete_bucket_public_access_block),
    Deletion("bucket", delete_bucket_lifecycle),
    Deletion("bucket", delete_bucket_policy),
    Deletion("bucket", delete_bucket_notifications),
    Deletion("security_group", delete_security_group),
    Deletion("security_group_rules", delete_security_group_rule),
    Deletion("iam_role", delete_role_inline_policy),
    Deletion("iam_role", delete_role),
    Deletion("efs_file_system", delete_file_system_policy),
    Deletion("efs_mount_target", delete_mount_target),
    Deletion("efs_access_point", delete_access_point, alias_runs_the_newest_revisions,
             ("task_definition", "state_machine", "state_machine_alias")),
    Deletion("task_definition", deregister_add_users_revision, alias_runs_the_newest_revisions,
             ("state_machine", "state_machine_alias")),
    Deletion("task_definition", deregister_service_revision, service_runs_the_newest_revision, ("service",)),
    Deletion("service", delete_service),
    Deletion("state_machine_alias", delete_state_machine_alias),
    Deletion("state_machine", delete_state_machine),
    Deletion("event_rule", delete_event_rule_targets),
    Deletion("event_rule", delete_event_rule),
    Deletion("release_record", delete_release_index),
    Deletion("cloud_map_service", delete_cloud_map_service, services_name_live_registries, ("service",)),
    Deletion("cloud_map_namespace", delete_cloud_map_namespace, services_name_live_registries,
             ("cloud_map_service", "service")),
    Deletion("listener_rules", delete_listener_rule),
    Deletion("listener", delete_listener),
    Deletion("target_group", delete_target_group, follows=("listener_rules", "service")),
    Deletion("load_balancer", delete_load_balancer, router_names_the_live_path_router,
             ("listener", "listener_rules", "task_definition", "service")),
]
# Kinds with nothing to delete in the local environment, each with the reason.
NOT_DELETABLE = {
    "iam_policy": "the local configuration declares no managed policy (iam_policy is empty in `render --env local`)",
}


_LAST_ROW = {"converged": True}  # the module's fixture starts converged; a failing row clears it


def _run(*args: str):
    return cli(*args, "--env", ENV)


@pytest.fixture(scope="module")
def converged(moto_server, tmp_path_factory):
    """One embedded AWS for the module, applied once; each row leaves it converged for the next."""
    config = _reset_and_seed(moto_server)
    state_dir = tmp_path_factory.mktemp("dmp-local")
    point_cli_at(moto_server, state_dir, config.environment.region)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DMP_LOCAL_DIR", str(state_dir))
        aws = LocalAws(moto_server, config.environment.region, state_dir)
        applied = _run("apply")
        assert applied.code == 0, applied.stderr[-3000:]
        yield aws


def _changes(document: dict) -> list[tuple[str, str, str]]:
    return [(c["kind"], c["name"], c["action"]) for c in document["changes"]]


def _in_sync() -> tuple[bool, str]:
    plan, drift = _run("plan"), _run("drift")
    return plan.code == 0 and drift.code == 0, (
        f"plan exited {plan.code}:\n{plan.stdout[-3000:]}\ndrift exited {drift.code}:\n{drift.stdout[-3000:]}")


def test_every_kind_has_a_row():
    from dmp_deploy.resources import all_kinds
    kinds = {k.kind for k in all_kinds()}
    covered = {d.kind for d in DELETIONS} | set(NOT_DELETABLE)
    assert kinds - covered == set(), "add a row to DELETIONS for each new kind"


@pytest.mark.parametrize("deletion", DELETIONS, ids=lambda d: d.id)
def test_one_apply_after_an_out_of_band_deletion_converges(converged, deletion):
    aws = converged
    if not _LAST_ROW["converged"]:  # an earlier row left it unconverged: start from a clean, applied account
        _reset_and_seed(aws.endpoint)
        assert _run("apply").code == 0
        ok, report = _in_sync()
        assert ok, f"a fresh apply does not converge:\n{report}"
    _LAST_ROW["converged"] = False
    deletion.delete(aws)
    before = _run("plan", "--json")
    assert before.code == 2, f"{deletion.id}: plan saw no change after the deletion:\n{before.stdout[-2000:]}"
    missing = set(deletion.follows) - {kind for kind, _, _ in _changes(before.json)}
    assert not missing, f"{deletion.id}: the plan does not show the follow-on changes of {missing}"
    applied = _run("apply", "--json")
    assert applied.code == 0, f"{deletion.id}: apply failed:\n{applied.stdout[-3000:]}{applied.stderr[-3000:]}"
    # The plan showed up front everything the apply did, follow-on changes included.
    assert _changes(applied.json) == _changes(before.json), deletion.id
    ok, report = _in_sync()
    assert ok, f"{deletion.id}: one apply did not converge\n{report}"
    _LAST_ROW["converged"] = True
    if deletion.then:
        deletion.then(aws)
