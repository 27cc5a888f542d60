"""How many AWS calls a no-op plan makes, by operation (issue 6): reads are batched and shared, never one per
resource where the API takes many, never repeated by a second kind. A regression to N+1 fails here, in CI; the
times and the stated minimum are measured by benchmarks/run.py (docs/benchmarks.md)."""

import json
import math

import pytest

from dmp_deploy import planner, session

CONTAINER = [{"name": "x", "image": "busybox", "memoryReservation": 16}]


def noop_plan_calls() -> tuple[dict[str, int], dict]:
    """A plan through the in-process engine (as `plan` builds it): its calls by operation, and its desired state.
    The plan must be empty: this counts what a no-op plan costs."""
    env = session.open_environment("local", read_only=True)
    rec = planner.build_plan(env.ctx, env.kinds)
    assert rec.plan.empty, rec.plan.render_text()
    return dict(env.aws.stats.calls), env.ctx.desired.resources


@pytest.fixture
def applied(local_aws, run_cli):
    result = run_cli("apply", "--env", "local", "--json")
    assert result.code == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return local_aws


def test_a_noop_plan_reads_each_thing_once_and_in_batches(applied):
    calls, desired = noop_plan_calls()
    families, services = len(desired["task_definition"]), len(desired["service"])
    machines = len(desired["state_machine"])
    assert families >= 10 and services == 10 and machines == 1

    # Task definitions: one account-wide listing, one description per family, shared with the services kind
    # (which describes the revisions services run: the same ones).
    assert calls["ecs.list_task_definitions"] == 1
    assert "ecs.list_task_definition_families" not in calls
    assert calls["ecs.describe_task_definition"] == families
    # Services: one listing and DescribeServices in tens, shared by the task_definition and service kinds.
    assert calls["ecs.list_services"] == 1
    assert calls["ecs.describe_services"] == math.ceil(services / 10)
    # Network: the lookups' answers are shared; all security groups of the VPC come in one call.
    assert calls["ec2.describe_subnets"] == 2  # the private subnets, and the public entry's
    assert calls["ec2.describe_vpcs"] == 1
    assert calls["ec2.describe_security_groups"] == 1  # the VPC's (the public entry's group is ours)
    # Load balancers: one listing each of load balancers and target groups; the tags of all three types together,
    # 20 ARNs a call (the twelve here in one); attributes, listeners and rules have no batch read: one per owner.
    balancers, groups, listeners = (len(desired[k]) for k in ("load_balancer", "target_group", "listener"))
    assert (balancers, groups, listeners) == (2, 7, 3)
    assert calls["elbv2.describe_load_balancers"] == calls["elbv2.describe_target_groups"] == 1
    assert calls["elbv2.describe_tags"] == math.ceil((balancers + groups + listeners) / 20) == 1
    assert calls["elbv2.describe_load_balancer_attributes"] == calls["elbv2.describe_listeners"] == balancers
    assert calls["elbv2.describe_target_group_attributes"] == groups
    assert calls["elbv2.describe_rules"] == listeners
    assert calls["acm.list_certificates"] == 1  # the certificate named by domain
    # Cloud Map: one listing of namespaces and one of the services in ours; tags one call each (Cloud Map has no
    # batch tag read).
    namespaces, discovery = len(desired["cloud_map_namespace"]), len(desired["cloud_map_service"])
    assert (namespaces, discovery) == (1, 10)
    assert calls["servicediscovery.list_namespaces"] == calls["servicediscovery.list_services"] == 1
    assert calls["servicediscovery.list_tags_for_resource"] == namespaces + discovery
    assert not [op for op in calls if op.startswith("servicediscovery.get_")]
    # IAM: roles and customer-managed policies from one GetAccountAuthorizationDetails; ListRoles only for
    # MaxSessionDuration, which those details leave out.
    assert calls["iam.get_account_authorization_details"] == 1
    assert calls["iam.list_roles"] == 1
    assert "iam.list_policies" not in calls and "iam.get_role" not in calls
    # The state machine and its alias: list, describe, tags, alias, and the version the alias routes to.
    assert calls["stepfunctions.list_state_machines"] == 1
    assert calls["stepfunctions.describe_state_machine"] == 2 * machines
    assert calls["stepfunctions.describe_state_machine_alias"] == machines
    assert calls["stepfunctions.list_tags_for_resource"] == machines
    # The release index, read once (pruning keeps what a release ran).
    assert calls["s3.get_object"] == 1


def test_what_is_not_ours_costs_no_extra_description(applied):
    """Other families' revisions and other services in the cluster are listed (the listings cover the account
    or the cluster), but only what is ours is described, and the listings' page sizes are the APIs' largest."""
    ecs = applied.client("ecs")
    for i in range(3):
        ecs.register_task_definition(family=f"someone-elses-{i}", containerDefinitions=CONTAINER)
    for i in range(15):  # 25 services in the cluster: ListServices' default page (10) would take three calls
        ecs.create_service(cluster="dmp-local", serviceName=f"not-ours-{i:02d}",
                           taskDefinition="someone-elses-0", desiredCount=0)

    calls, desired = noop_plan_calls()
    assert calls["ecs.list_task_definitions"] == 1
    assert calls["ecs.describe_task_definition"] == len(desired["task_definition"])
    assert calls["ecs.list_services"] == 1
    assert calls["ecs.describe_services"] == math.ceil(25 / 10)


def test_a_service_running_an_older_revision_costs_no_more_description(applied):
    """When the newest revision (registered out of band, without our content hash) is not the one a service runs,
    no other revision is described: the family is to register a new revision, and whether the revision a service
    runs is current is the task_definition kind's answer in the registry (deployed_family), not a description of
    its own. The service follows the new revision in the same plan."""
    ecs = applied.client("ecs")
    family = "dmp-local-api"
    base = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
    request = {k: base[k] for k in ("family", "networkMode", "requiresCompatibilities", "cpu", "memory",
                                    "executionRoleArn", "taskRoleArn", "containerDefinitions")}
    request["containerDefinitions"][0]["environment"] = [{"name": "OUT_OF_BAND", "value": "1"}]
    ecs.register_task_definition(**request)  # revision 2, newer than the revision 1 the service runs

    env = session.open_environment("local", read_only=True)
    rec = planner.build_plan(env.ctx, env.kinds)
    calls = env.aws.stats.calls
    assert calls["ecs.describe_task_definition"] == len(env.ctx.desired.resources["task_definition"])
    assert {(c.kind, c.name) for c in rec.plan.changes} >= {("task_definition", family), ("service", family)}
    assert calls["ecs.list_task_definitions"] == 1
    assert calls["ecs.describe_services"] == 1


def test_a_noop_plan_runs_no_preflight(applied, run_cli):
    """`plan` runs apply's preflight only when there are changes, and preflight checks only what the changes
    refer to: a no-op plan neither describes the HTTPS listener's certificate (the lookup's ListCertificates is
    all ACM costs) nor any image, secret or role."""
    result = run_cli("plan", "--env", "local", "--json")
    assert result.code == 0, result.stdout[-2000:] + result.stderr[-2000:]
    calls = json.loads(result.stdout)["calls"]["by_operation"]
    assert calls["acm.list_certificates"] == 1
    preflight = {"acm.describe_certificate", "ecr.describe_images", "secretsmanager.describe_secret",
                 "ssm.describe_parameters", "iam.get_role"}
    assert not preflight & set(calls)
