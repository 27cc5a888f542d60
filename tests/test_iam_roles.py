"""IAM roles: the canonical policy form, the declared roles (pure), and reconciliation against the embedded AWS."""

import dataclasses
import json
from urllib.parse import quote

import pytest

from dmp_deploy import canonical, names
from dmp_deploy.config import load_config
from dmp_deploy.desired import DesiredState
from dmp_deploy.errors import ConfigError
from dmp_deploy.resources.iam_roles import (ECS_EXEC_POLICY, EXECUTION_POLICY, TASK_POLICY, declared_roles,
                                            secret_resource, service_trust)
from dmp_deploy.session import render_only

ACCOUNT = "123456789012"
TAGS = {"dmp:env": "local", "dmp:managed-by": "dmp-deploy"}


# --- the canonical policy form -----------------------------------------------------------------------------

BASE = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "arn:aws:s3:::b/*"},
    {"Effect": "Allow", "Action": "sns:Publish", "Resource": ["arn:aws:sns:eu-west-2:123456789012:t"]},
]}


def _reordered(doc):
    statements = [dict(reversed(list(s.items()))) for s in reversed(doc["Statement"])]
    for s in statements:
        if isinstance(s["Action"], list):
            s["Action"] = list(reversed(s["Action"]))
    return {"Statement": statements, "Version": doc["Version"]}


@pytest.mark.parametrize("same", [
    pytest.param(_reordered(BASE), id="statement, key and action order"),
    pytest.param({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject", "s3:GetObject"], "Resource": ["arn:aws:s3:::b/*"]},
        {"Effect": "Allow", "Action": ["sns:Publish"], "Resource": "arn:aws:sns:eu-west-2:123456789012:t"},
    ]}, id="scalar vs one-item list, duplicates"),
    pytest.param(json.dumps(BASE), id="JSON text"),
    pytest.param(json.dumps(BASE, indent=4), id="JSON text with whitespace"),
    pytest.param(quote(json.dumps(BASE)), id="URL-encoded"),
    pytest.param(quote(json.dumps(BASE)).replace("%7B", "%7b"), id="URL-encoded, lower-case escapes"),
])
def test_equivalent_documents_have_one_canonical_form(same):
    assert canonical.policy(same) == canonical.policy(BASE)


@pytest.mark.parametrize("different", [
    pytest.param({**BASE, "Statement": [{**BASE["Statement"][0], "Action": "*"}, BASE["Statement"][1]]},
                 id="action widened"),
    pytest.param({**BASE, "Statement": [{**BASE["Statement"][0], "Resource": "*"}, BASE["Statement"][1]]},
                 id="resource widened"),
    pytest.param({**BASE, "Statement": BASE["Statement"][:1]}, id="statement removed"),
    pytest.param({**BASE, "Statement": [{**BASE["Statement"][0], "Effect": "Deny"}, BASE["Statement"][1]]},
                 id="effect"),
])
def test_real_changes_stay_visible(different):
    assert canonical.policy(different) != canonical.policy(BASE)


@pytest.mark.parametrize("principal, canonical_principal", [
    ({"Service": ["ecs-tasks.amazonaws.com"]}, {"Service": "ecs-tasks.amazonaws.com"}),
    ({"AWS": "123456789012"}, {"AWS": "arn:aws:iam::123456789012:root"}),
    ({"AWS": ["arn:aws:iam::123456789012:root", "123456789012"]}, {"AWS": "arn:aws:iam::123456789012:root"}),
    ({"AWS": ["111122223333", "arn:aws:iam::123456789012:role/x"]},
     {"AWS": ["arn:aws:iam::111122223333:root", "arn:aws:iam::123456789012:role/x"]}),
])
def test_trust_principals_canonical_form(principal, canonical_principal):
    doc = {"Statement": {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}}
    assert canonical.policy(doc)["Statement"] == [
        {"Effect": "Allow", "Principal": canonical_principal, "Action": "sts:AssumeRole"}]


def test_condition_values_are_listed_and_sorted():
    a = {"Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*",
                        "Condition": {"StringEquals": {"kms:ViaService": ["b", "a"]}}}]}
    b = {"Statement": [{"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": ["*"],
                        "Condition": {"StringEquals": {"kms:ViaService": ["a", "b"]}}}]}
    assert canonical.policy(a) == canonical.policy(b)


# --- declared roles (pure) ---------------------------------------------------------------------------------

def _container(name, image, group="/dmp-local/x", secrets=()):
    return {"name": name, "image": image,
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": group,
                                                                     "awslogs-region": "eu-west-2"}},
            "secrets": [{"name": f"S{i}", "valueFrom": arn} for i, arn in enumerate(secrets)]}


def _state(task_definitions, config=None, extra_roles=None):
    config = config or load_config("local")
    state = DesiredState(config=config, image_tags={}, task_definitions=task_definitions)
    if extra_roles is not None:
        state.resources["_extra_iam_roles"] = extra_roles
    return state


SM = "arn:aws:secretsmanager:eu-west-2:123456789012:secret:dmp/token-AbC123"
SSM = "arn:aws:ssm:eu-west-2:123456789012:parameter/dmp/db"


def test_execution_policy_grants_exactly_what_the_task_definitions_name():
    state = _state({
        "web": {"containerDefinitions": [
            _container("http", "123456789012.dkr.ecr.eu-west-2.amazonaws.com/web-http:1", "/dmp-local/web",
                       secrets=[SSM]),
            _container("wsgi", "123456789012.dkr.ecr.eu-west-2.amazonaws.com/team/web-wsgi@sha256:abc",
                       "/dmp-local/web", secrets=[f"{SM}:password::"]),
        ]},
        "copier": {"containerDefinitions": [_container("copy", "public.ecr.aws/aws-cli/aws-cli:2", "/dmp-local/copier")]},
    })
    role = declared_roles(state)["dmp-local-ecs-execution"]
    statements = {s["Sid"]: s for s in role["inline_policies"][EXECUTION_POLICY]["Statement"]}
    assert statements["PullImages"]["Resource"] == [
        "arn:aws:ecr:eu-west-2:123456789012:repository/team/web-wsgi",
        "arn:aws:ecr:eu-west-2:123456789012:repository/web-http"]
    assert statements["EcrToken"]["Resource"] == "*"
    assert statements["WriteLogs"]["Resource"] == [
        "arn:aws:logs:eu-west-2:123456789012:log-group:/dmp-local/copier:*",
        "arn:aws:logs:eu-west-2:123456789012:log-group:/dmp-local/web:*"]
    assert statements["ReadSecrets"]["Resource"] == SM  # the JSON-key suffix is not part of the ARN
    assert statements["ReadParameters"]["Resource"] == SSM
    assert "DecryptSecrets" not in statements
    assert role["trust_policy"] == canonical.policy(service_trust("ecs-tasks.amazonaws.com", ACCOUNT))
    assert role["path"] == names.IAM_PATH and role["tags"] == TAGS and role["max_session_duration"] == 3600


def test_execution_policy_leaves_out_statements_with_nothing_to_grant():
    state = _state({"copier": {"containerDefinitions": [
        {"name": "copy", "image": "public.ecr.aws/aws-cli/aws-cli:2"}]}})
    assert declared_roles(state)["dmp-local-ecs-execution"]["inline_policies"] == {}
    state = _state({"web": {"containerDefinitions": [_container("w", "nginx:1", secrets=[SSM])]}})
    sids = [s["Sid"] for s in declared_roles(state)["dmp-local-ecs-execution"]["inline_policies"][
        EXECUTION_POLICY]["Statement"]]
    assert sids == ["ReadParameters", "WriteLogs"]


def test_secrets_kms_key_adds_decrypt_through_the_secret_services_only():
    key = "arn:aws:kms:eu-west-2:123456789012:key/1234"
    config = dataclasses.replace(load_config("local"), secrets_kms_key_arn=key)
    state = _state({"web": {"containerDefinitions": [_container("w", "nginx:1", secrets=[SM])]}}, config)
    statements = {s["Sid"]: s for s in declared_roles(state)["dmp-local-ecs-execution"]["inline_policies"][
        EXECUTION_POLICY]["Statement"]}
    assert statements["DecryptSecrets"]["Resource"] == key
    assert statements["DecryptSecrets"]["Condition"]["StringEquals"]["kms:ViaService"] == [
        "secretsmanager.eu-west-2.amazonaws.com", "ssm.eu-west-2.amazonaws.com"]


@pytest.mark.parametrize("value_from, resource", [
    (SM, SM),
    (f"{SM}:username::", SM),
    (f"{SM}:username:AWSCURRENT:", SM),
    (SSM, SSM),
])
def test_secret_resource(value_from, resource):
    assert secret_resource(value_from) == resource


def test_task_roles_one_per_template_with_least_privilege():
    config = load_config("local")
    stems = ["api", "db-migration", "supplier-frontend", "admin-frontend", "antivirus-api"]
    roles = declared_roles(_state({s: {"containerDefinitions": []} for s in stems}, config))
    assert set(roles) == {names.execution_role(config), *(names.task_role(config, s) for s in stems)}
    assert roles["dmp-local-api-task"]["inline_policies"] == {}
    assert roles["dmp-local-db-migration-task"]["inline_policies"] == {}

    supplier = roles["dmp-local-supplier-frontend-task"]["inline_policies"][TASK_POLICY]["Statement"]
    by_sid = {s["Sid"]: s for s in supplier}
    s = config.settings
    assert by_sid["BucketObjects"]["Resource"] == sorted(
        f"arn:aws:s3:::{s[k]}/*" for k in ("agreements_bucket", "communications_bucket", "documents_bucket",
                                           "submissions_bucket"))
    assert by_sid["ListBuckets"]["Resource"] == sorted(
        f"arn:aws:s3:::{s[k]}" for k in ("agreements_bucket", "communications_bucket", "documents_bucket",
                                         "submissions_bucket"))
    assert "PublishCallbacks" not in by_sid
    admin = {x["Sid"]: x for x in roles["dmp-local-admin-frontend-task"]["inline_policies"][TASK_POLICY]["Statement"]}
    assert f"arn:aws:s3:::{s['reports_bucket']}/*" in admin["BucketObjects"]["Resource"]
    assert f"arn:aws:s3:::{s['submissions_bucket']}/*" not in admin["BucketObjects"]["Resource"]
    antivirus = {x["Sid"]: x for x in roles["dmp-local-antivirus-api-task"]["inline_policies"][TASK_POLICY]["Statement"]}
    assert set(antivirus) == {"ScanObjectVersions", "PublishCallbacks"}  # no list, put, delete or ACL
    publish = antivirus["PublishCallbacks"]
    assert publish["Action"] == "sns:Publish"
    assert publish["Resource"] == f"arn:aws:sns:eu-west-2:{ACCOUNT}:{s['callback_topic_name']}"
    # Every call in its app/s3.py passes a VersionId: the *Version* actions authorise them (GetObject and HeadObject
    # need s3:GetObjectVersion only; the tagging calls need both actions).
    scan = antivirus["ScanObjectVersions"]
    assert scan["Action"] == sorted(["s3:GetObjectVersion", "s3:GetObjectTagging", "s3:GetObjectVersionTagging",
                                     "s3:PutObjectTagging", "s3:PutObjectVersionTagging"])
    assert scan["Resource"] == sorted(
        f"arn:aws:s3:::{s[k]}/*" for k in ("agreements_bucket", "communications_bucket", "documents_bucket",
                                           "submissions_bucket"))


def test_execute_command_adds_the_ecs_exec_channels():
    config = load_config("local")
    apps = {**config.apps, "api": dataclasses.replace(config.apps["api"], enable_execute_command=True)}
    config = dataclasses.replace(config, apps=apps)
    roles = declared_roles(_state({"api": {}, "search-api": {}}, config))
    (statement,) = roles["dmp-local-api-task"]["inline_policies"][ECS_EXEC_POLICY]["Statement"]
    assert statement["Resource"] == "*" and all(a.startswith("ssmmessages:") for a in statement["Action"])
    assert roles["dmp-local-search-api-task"]["inline_policies"] == {}


def test_missing_setting_is_a_config_error_naming_the_key():
    config = load_config("local")
    settings = {k: v for k, v in config.settings.items() if k != "reports_bucket"}
    with pytest.raises(ConfigError, match="settings.reports_bucket"):
        declared_roles(_state({"admin-frontend": {}}, dataclasses.replace(config, settings=settings)))


def test_other_features_declare_roles_through_extra_iam_roles():
    extra = {"dmp-local-add-users-states": {
        "trust_policy": json.dumps(service_trust("states.amazonaws.com", ACCOUNT)),
        "inline_policies": {"run-tasks": {"Statement": {"Effect": "Allow", "Action": "ecs:RunTask",
                                                        "Resource": ["arn:aws:ecs:eu-west-2:123456789012:task-definition/x"]}}},
        "tags": {"dmp:workflow": "add-users"},
    }}
    role = declared_roles(_state({}, extra_roles=extra))["dmp-local-add-users-states"]
    assert role["path"] == names.IAM_PATH and role["max_session_duration"] == 3600
    assert role["managed_policy_arns"] == []
    assert role["tags"] == {**TAGS, "dmp:workflow": "add-users"}
    assert role["trust_policy"]["Statement"][0]["Principal"] == {"Service": "states.amazonaws.com"}
    assert role["inline_policies"]["run-tasks"]["Statement"][0]["Action"] == "ecs:RunTask"

    with pytest.raises(ConfigError, match="declared twice"):
        declared_roles(_state({}, extra_roles={"dmp-local-ecs-execution": {"trust_policy": {"Statement": []}}}))


# --- against the embedded AWS ------------------------------------------------------------------------------

EXECUTION = "dmp-local-ecs-execution"
API_TASK = "dmp-local-api-task"


def _policy(iam, role, name):
    return iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]


def test_apply_creates_every_role_and_second_apply_makes_no_mutating_call(local_aws, run_cli):
    first = run_cli("apply", "--env", "local", "--json")
    assert first.code == 0, first.stderr
    iam = local_aws.client("iam")
    config = load_config("local")
    state = render_only("local")
    rendered = state.task_definitions
    assert rendered, "at least one task definition template exists"

    roles = {r["RoleName"]: r for r in iam.list_roles(PathPrefix=names.IAM_PATH)["Roles"]}
    ecs_roles = {EXECUTION, *(names.task_role(config, stem) for stem in rendered)}
    assert set(roles) == ecs_roles | set(state.resources.get("_extra_iam_roles", {}))
    for name in roles:
        assert canonical.tags_from_list(iam.get_role(RoleName=name)["Role"]["Tags"])["dmp:managed-by"] == "dmp-deploy"
    for name in ecs_roles:
        role = iam.get_role(RoleName=name)["Role"]
        assert role["Path"] == names.IAM_PATH
        assert canonical.tags_from_list(role["Tags"]) == TAGS
        (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
        assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}

    # The execution role reads exactly the secrets the rendered task definitions name.
    named = {s["valueFrom"] for doc in rendered.values() for c in doc["containerDefinitions"]
             for s in c.get("secrets", [])}
    granted = set()
    for statement in _policy(iam, EXECUTION, EXECUTION_POLICY)["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if {"ssm:GetParameters", "secretsmanager:GetSecretValue"} & set(actions):
            resources = statement["Resource"]
            granted |= set(resources if isinstance(resources, list) else [resources])
    assert named and granted == named

    second = run_cli("apply", "--env", "local", "--json")
    assert second.code == 0, second.stderr
    assert second.json["changes"] == []
    assert second.json["calls"]["mutating"] == 0
    # One batched read of every role, no call per role.
    calls = second.json["calls"]["by_operation"]
    assert calls["iam.get_account_authorization_details"] == 1 and calls["iam.list_roles"] == 1
    per_role = ("get_role", "get_role_policy", "list_role_policies", "list_attached_role_policies", "list_role_tags")
    assert not [op for op in calls if op.removeprefix("iam.") in per_role]

    plan = run_cli("plan", "--env", "local")
    assert plan.code == 0, plan.stdout + plan.stderr


def _widen_execution_policy(iam):
    iam.put_role_policy(RoleName=EXECUTION, PolicyName=EXECUTION_POLICY, PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))


def _trust_another_account(iam):
    iam.update_assume_role_policy(RoleName=API_TASK, PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "111122223333"},
                                                 "Action": "sts:AssumeRole"}]}))


def _attach_managed_policy(iam):
    arn = iam.create_policy(PolicyName="by-hand", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))["Policy"]["Arn"]
    iam.attach_role_policy(RoleName=API_TASK, PolicyArn=arn)


def _add_inline_policy(iam):
    iam.put_role_policy(RoleName=API_TASK, PolicyName="by-hand", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))


@pytest.mark.parametrize("change, role, field", [
    (_widen_execution_policy, EXECUTION, f"inline_policies.{EXECUTION_POLICY}"),
    (lambda iam: iam.delete_role_policy(RoleName=EXECUTION, PolicyName=EXECUTION_POLICY), EXECUTION,
     f"inline_policies.{EXECUTION_POLICY}"),
    (_trust_another_account, API_TASK, "trust_policy"),
    (_attach_managed_policy, API_TASK, "managed_policy_arns"),
    (_add_inline_policy, API_TASK, "inline_policies.by-hand"),
    (lambda iam: iam.untag_role(RoleName=API_TASK, TagKeys=["dmp:env"]), API_TASK, "tags.dmp:env"),
    (lambda iam: iam.tag_role(RoleName=API_TASK, Tags=[{"Key": "extra", "Value": "x"}]), API_TASK, "tags.extra"),
    (lambda iam: iam.update_role(RoleName=EXECUTION, MaxSessionDuration=7200), EXECUTION, "max_session_duration"),
], ids=["inline widened", "inline deleted", "trust", "managed attached", "inline added", "tag removed",
        "tag added", "max session"])
def test_out_of_band_change_is_detected_and_repaired(local_aws, run_cli, change, role, field):
    assert run_cli("apply", "--env", "local").code == 0
    iam = local_aws.client("iam")
    before = {r: iam.get_role(RoleName=r)["Role"]["Arn"] for r in (EXECUTION, API_TASK)}
    change(iam)

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2, plan.stderr
    (c,) = plan.json["changes"]
    assert (c["kind"], c["name"], c["action"]) == ("iam_role", role, "update")
    assert [f["path"] for f in c["fields"]] == [field]

    assert run_cli("apply", "--env", "local").code == 0, "apply repairs it"
    assert run_cli("plan", "--env", "local").code == 0
    assert {r: iam.get_role(RoleName=r)["Role"]["Arn"] for r in (EXECUTION, API_TASK)} == before
    assert iam.list_attached_role_policies(RoleName=API_TASK)["AttachedPolicies"] == []
    if field == "managed_policy_arns":  # detached, never deleted: it is not ours
        assert [p["PolicyName"] for p in iam.list_policies(Scope="Local")["Policies"]] == ["by-hand"]


def test_equivalent_documents_written_by_hand_are_not_drift(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    iam = local_aws.client("iam")
    document = _policy(iam, EXECUTION, EXECUTION_POLICY)
    rewritten = {"Statement": [
        {**s, "Action": sorted(s["Action"], reverse=True) if isinstance(s["Action"], list) else [s["Action"]],
         "Resource": [s["Resource"]] if isinstance(s["Resource"], str) else list(reversed(s["Resource"]))}
        for s in reversed(document["Statement"])], "Version": "2012-10-17"}
    assert rewritten != document
    iam.put_role_policy(RoleName=EXECUTION, PolicyName=EXECUTION_POLICY, PolicyDocument=json.dumps(rewritten, indent=2))
    trust = iam.get_role(RoleName=API_TASK)["Role"]["AssumeRolePolicyDocument"]
    iam.update_assume_role_policy(RoleName=API_TASK, PolicyDocument=json.dumps(
        {**trust, "Statement": trust["Statement"][0]}))  # a lone statement, not a list

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 0, plan.stdout


def test_path_change_replaces_the_role(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    iam = local_aws.client("iam")
    trust = iam.get_role(RoleName=API_TASK)["Role"]["AssumeRolePolicyDocument"]
    iam.delete_role(RoleName=API_TASK)
    iam.create_role(RoleName=API_TASK, Path="/elsewhere/", AssumeRolePolicyDocument=json.dumps(trust),
                    Tags=canonical.tags_to_list(TAGS))
    iam.put_role_policy(RoleName=API_TASK, PolicyName="by-hand", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    (c,) = plan.json["changes"]
    assert (c["name"], c["action"]) == (API_TASK, "replace")
    path = next(f for f in c["fields"] if f["path"] == "path")
    assert (path["before"], path["after"], path["forces_replace"]) == ("/elsewhere/", names.IAM_PATH, True)

    assert run_cli("apply", "--env", "local").code == 0
    assert iam.get_role(RoleName=API_TASK)["Role"]["Path"] == names.IAM_PATH
    assert iam.list_role_policies(RoleName=API_TASK)["PolicyNames"] == []
    assert run_cli("plan", "--env", "local").code == 0


def test_undeclared_owned_role_is_deleted_and_others_are_left_alone(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    iam = local_aws.client("iam")
    trust = json.dumps(service_trust("ecs-tasks.amazonaws.com", ACCOUNT))
    owned_tags = canonical.tags_to_list(TAGS)
    iam.create_role(RoleName="dmp-local-retired-app-task", Path=names.IAM_PATH, AssumeRolePolicyDocument=trust,
                    Tags=owned_tags)
    iam.put_role_policy(RoleName="dmp-local-retired-app-task", PolicyName=TASK_POLICY, PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}))
    arn = iam.create_policy(PolicyName="shared", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}]}))["Policy"]["Arn"]
    iam.attach_role_policy(RoleName="dmp-local-retired-app-task", PolicyArn=arn)
    # Not ours, each for one reason: untagged, another path, another environment's tag, another prefix.
    iam.create_role(RoleName="dmp-local-hand-made", Path=names.IAM_PATH, AssumeRolePolicyDocument=trust)
    iam.create_role(RoleName="dmp-local-other-path", Path="/", AssumeRolePolicyDocument=trust, Tags=owned_tags)
    iam.create_role(RoleName="dmp-local-staging-tagged", Path=names.IAM_PATH, AssumeRolePolicyDocument=trust,
                    Tags=canonical.tags_to_list({**TAGS, "dmp:env": "staging"}))
    iam.create_role(RoleName="someone-else", Path=names.IAM_PATH, AssumeRolePolicyDocument=trust, Tags=owned_tags)

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    assert [(c["kind"], c["action"], c["name"]) for c in plan.json["changes"]] == [
        ("iam_role", "delete", "dmp-local-retired-app-task")]

    assert run_cli("apply", "--env", "local").code == 0
    left = {r["RoleName"] for r in iam.list_roles()["Roles"]}
    assert "dmp-local-retired-app-task" not in left
    assert {"dmp-local-hand-made", "dmp-local-other-path", "dmp-local-staging-tagged", "someone-else",
            EXECUTION, API_TASK} <= left
    assert [p["Arn"] for p in iam.list_policies(Scope="Local")["Policies"]] == [arn], "detached, not deleted"
    assert run_cli("plan", "--env", "local").code == 0
