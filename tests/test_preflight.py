"""Preflight: what a plan references (pure), each lookup against the embedded AWS, and apply refusing to start."""

import json

import pytest

from dmp_deploy import preflight
from dmp_deploy.aws import Aws
from dmp_deploy.config import load_config
from dmp_deploy.errors import PlanError
from dmp_deploy.plan import Change, Plan
from dmp_deploy.resources.base import Context
from dmp_deploy.session import LOCAL_CREDENTIALS, render_only

ECR = "123456789012.dkr.ecr.eu-west-2.amazonaws.com"
SSM = "arn:aws:ssm:eu-west-2:123456789012:parameter"
SM = "arn:aws:secretsmanager:eu-west-2:123456789012:secret"


@pytest.mark.parametrize("image, parts", [
    (f"{ECR}/api-http:release-7", {"account": "123456789012", "region": "eu-west-2", "repository": "api-http",
                                   "tag": "release-7", "digest": None}),
    (f"{ECR}/team/api-wsgi", {"account": "123456789012", "region": "eu-west-2", "repository": "team/api-wsgi",
                              "tag": "latest", "digest": None}),
    (f"{ECR}/api@sha256:{'a' * 64}", {"account": "123456789012", "region": "eu-west-2", "repository": "api",
                                      "tag": None, "digest": f"sha256:{'a' * 64}"}),
    ("clamav/clamav:1.4", None),
    ("public.ecr.aws/aws-cli/aws-cli:2.22.0", None),
])
def test_parse_image(image, parts):
    assert preflight.parse_image(image) == parts


@pytest.mark.parametrize("value_from, reference", [
    (f"{SSM}/dmp-local/api-auth-tokens", ("ssm", "/dmp-local/api-auth-tokens")),
    (f"{SSM}/flat-name", ("ssm", "flat-name")),
    (f"{SM}:dmp/db-AbCdEf", ("secretsmanager", f"{SM}:dmp/db-AbCdEf")),
    (f"{SM}:dmp/db-AbCdEf:password::", ("secretsmanager", f"{SM}:dmp/db-AbCdEf")),  # a JSON key of the secret
    ("plain-parameter", ("ssm", "plain-parameter")),
])
def test_secret_reference(value_from, reference):
    assert preflight.secret_reference(value_from) == reference


def test_references_are_those_of_what_the_plan_registers_creates_or_updates():
    state = render_only("local")
    plan = Plan("local", [
        Change("task_definition", "dmp-local-db-migration", "update"),
        Change("service", "dmp-local-router", "update"),
        Change("service", "dmp-local-api", "delete"),  # nothing a delete refers to needs to exist
        Change("log_group", "/dmp-local/api", "create"),
    ])
    refs = preflight.references_of_plan(plan, state)
    assert sorted(refs.images) == [f"{ECR}/api-wsgi:local", f"{ECR}/router-http:local"]
    assert f"{SSM}/dmp-local/database-uri" in refs.secrets and f"{SSM}/dmp-local/router-app-auth" in refs.secrets
    assert f"{SSM}/dmp-local/frontend-secret-key" not in refs.secrets  # no frontend is touched
    assert any(user.startswith("dmp-local-db-migration container wsgi")
               for user in refs.secrets[f"{SSM}/dmp-local/database-uri"])
    assert sorted(preflight.role_name(r) for r in refs.roles) == [
        "dmp-local-db-migration-task", "dmp-local-ecs-execution", "dmp-local-router-task"]
    assert refs.target_groups == {}


@pytest.fixture
def ctx(local_aws):
    config = load_config("local")
    aws = Aws(config.environment.region, endpoint_url=local_aws.endpoint, credentials=LOCAL_CREDENTIALS)
    context = Context(config, aws, render_only("local"))
    context.lookups["subnet_ids"] = ["subnet-anything"]
    return context


def test_check_reports_every_missing_thing_at_once_and_only_those(local_aws, ctx):
    iam, elb, ec2 = local_aws.client("iam"), local_aws.client("elbv2"), local_aws.client("ec2")
    iam.create_role(RoleName="present", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    group = elb.create_target_group(Name="present", Protocol="HTTP", Port=80, VpcId=vpc,
                                    TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    local_aws.client("secretsmanager").create_secret(Name="dmp/present", SecretString="value-never-read")
    present_secret = local_aws.client("secretsmanager").describe_secret(SecretId="dmp/present")["ARN"]
    missing_group = group.replace("targetgroup/present/", "targetgroup/gone/")

    refs = preflight.References()
    user = "a task"
    for image in (f"{ECR}/api-http:local", f"{ECR}/api-http:NOPE", f"{ECR}/no-such-repo:1", "clamav/clamav:1.4"):
        refs.add(refs.images, image, user)
    for secret in (f"{SSM}/dmp-local/database-uri", f"{SSM}/dmp-local/gone", f"{SM}:dmp/gone-AbCdEf",
                   f"{present_secret}:password::"):
        refs.add(refs.secrets, secret, user)
    for role in ("present", "created-by-the-plan", "read-by-the-plan", "gone"):
        refs.add(refs.roles, f"arn:aws:iam::123456789012:role/dmp-deploy/{role}", user)
    refs.add(refs.target_groups, group, user)
    refs.add(refs.target_groups, missing_group, user)

    calls_before = ctx.aws.stats.total_mutating
    with pytest.raises(PlanError) as raised:
        preflight.check(ctx, refs, roles_present=["read-by-the-plan"], roles_created=["created-by-the-plan"])
    message = str(raised.value)
    lines = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(lines) == 6, message
    for missing in (f"{ECR}/api-http:NOPE", f"{ECR}/no-such-repo:1", f"{SSM}/dmp-local/gone",
                    f"{SM}:dmp/gone-AbCdEf", "role/dmp-deploy/gone", missing_group):
        assert any(missing in line for line in lines), missing
    assert "Nothing was changed" in message
    assert "value-never-read" not in message and "local-dummy-value" not in message
    assert ctx.aws.stats.total_mutating == calls_before == 0
    ops = ctx.aws.stats.calls
    assert "secretsmanager.get_secret_value" not in ops and "ssm.get_parameter" not in ops
    assert ops["ssm.describe_parameters"] == 1 and ops["iam.get_role"] == 2  # known roles are not looked up


def test_apply_refuses_to_start_when_secrets_or_images_are_missing(local_aws, run_cli):
    ssm, ecr = local_aws.client("ssm"), local_aws.client("ecr")
    ssm.delete_parameters(Names=["/dmp-local/database-uri", "/dmp-local/notify-api-key"])
    ecr.batch_delete_image(repositoryName="search-api-wsgi", imageIds=[{"imageTag": "local"}])
    ecr.delete_repository(repositoryName="router-http", force=True)

    result = run_cli("apply", "--env", "local", "--json")
    assert result.code == 1
    error = result.json["error"]["message"]
    assert error.startswith("Preflight: 4 thing(s) the plan needs do not exist. Nothing was changed.")
    for missing in ("parameter/dmp-local/database-uri", "parameter/dmp-local/notify-api-key",
                    "search-api-wsgi:local", "ECR repository router-http does not exist"):
        assert missing in error
    assert result.json["calls"]["mutating"] == 0
    assert local_aws.client("ecs").list_clusters()["clusterArns"] == []


def test_missing_target_group_is_reported_before_anything_changes(local_aws, run_cli, monkeypatch):
    from test_services import _with_router_target_group

    _with_router_target_group(monkeypatch, "arn:aws:elasticloadbalancing:eu-west-2:123456789012:"
                                           "targetgroup/dmp-local-router/0123456789abcdef", local_aws)
    result = run_cli("apply", "--env", "local", "--json")
    assert result.code == 1
    assert "target group arn:aws:elasticloadbalancing:eu-west-2:123456789012:targetgroup/dmp-local-router/" \
           "0123456789abcdef: not found (used by service dmp-local-router)" in result.json["error"]["message"]
    assert result.json["calls"]["mutating"] == 0


def test_local_image_override_is_pushed_so_any_tag_deploys_locally(local_aws, run_cli):
    result = run_cli("apply", "--env", "local", "--image", "api=NEWTAG", "--json")
    assert result.code == 0, result.json.get("error")
    tags = local_aws.client("ecr").describe_images(repositoryName="api-wsgi")["imageDetails"]
    assert sorted(t for d in tags for t in d.get("imageTags", [])) == ["NEWTAG", "local"]


def test_parameters_and_secrets_are_looked_up_at_the_same_time_one_page_each(local_aws, ctx):
    """More parameters than DescribeParameters answers in one page by default (10), and a Secrets Manager secret:
    one round trip for all of them, beside the images (issue 14)."""
    import time
    ssm = local_aws.client("ssm")
    names = [f"/dmp-preflight/p{i:02d}" for i in range(15)]
    for name in names:
        ssm.put_parameter(Name=name, Value="value-never-read", Type="SecureString")
    secrets = local_aws.client("secretsmanager")
    secrets.create_secret(Name="dmp/present", SecretString="value-never-read")
    refs = preflight.References()
    for name in names:
        refs.add(refs.secrets, f"{SSM}{name}", "a task")
    refs.add(refs.secrets, secrets.describe_secret(SecretId="dmp/present")["ARN"], "a task")
    refs.add(refs.images, f"{ECR}/api-http:local", "a task")
    for service in ("ssm", "secretsmanager", "ecr"):
        ctx.aws.client(service)  # built before timing: a client's creation is CPU, not a round trip
    ctx.aws.hooks.append(lambda call: time.sleep(0.15))
    preflight.check(ctx, refs)
    ops = ctx.aws.stats.calls
    assert ops["ssm.describe_parameters"] == 1 and ops["secretsmanager.describe_secret"] == 1
    assert ops["ecr.describe_images"] == 1
    assert ctx.aws.stats.round_trips == 1

    ssm.delete_parameter(Name=names[-1])  # and what is missing is still found
    with pytest.raises(PlanError) as raised:
        preflight.check(ctx, refs)
    assert f"{SSM}{names[-1]}: no such SSM parameter" in str(raised.value)
    assert "value-never-read" not in str(raised.value)
