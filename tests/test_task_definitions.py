"""Task definitions: the templates (every app, every environment), the canonical form, and revisions against
the embedded AWS (register only on change, tags, pruning, undeclared families)."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

from dmp_deploy import config as dmp_config
from dmp_deploy import validation
from dmp_deploy.apps import APPS, FRONTENDS
from dmp_deploy.config import SECRET_ARN, load_config
from dmp_deploy.local.seed import DUMMY_SECRET_PREFIX
from dmp_deploy.resources.base import Live
from dmp_deploy.resources.task_definitions import (CONTENT_HASH_TAG, TaskDefinitions, canonical_definition,
                                                   content_changes, content_hash, revisions_to_prune)
from dmp_deploy.session import render_only
from filled_config import filled_config_dir

ENVS = ("local", "staging", "production")
ONE_OFF = ("db-migration",)
MINE = set(APPS) | set(ONE_OFF)  # the templates this file specifies (the add-users workflow has its own tests)
KIND = "task_definition"

# dmp-reference.md section 2: what each app's wsgi container must be given (beyond DM_ENVIRONMENT and
# DM_APP_NAME), as plain environment and as secrets.
FRONTEND_ENV = {"DM_DATA_API_URL", "DM_REDIS_SERVICE_NAME", "DM_LOGIN_URL", "SESSION_COOKIE_DOMAIN"}
FRONTEND_SECRETS = {"DM_DATA_API_AUTH_TOKEN", "SECRET_KEY", "SHARED_EMAIL_KEY", "VCAP_SERVICES"}
EXPECTED = {
    "api": ({"DM_SEARCH_API_URL"},
            {"DM_API_AUTH_TOKENS", "DM_API_CALLBACK_AUTH_TOKENS", "DM_SEARCH_API_AUTH_TOKEN",
             "SQLALCHEMY_DATABASE_URI"}),
    "search-api": ({"ELASTICSEARCH_HOST"}, {"DM_SEARCH_API_AUTH_TOKENS"}),
    "antivirus-api": ({"DM_DEVELOPER_VIRUS_ALERT_EMAIL", "DM_CALLBACK_TOPIC_NAME"},
                      {"DM_ANTIVIRUS_API_AUTH_TOKENS", "DM_ANTIVIRUS_API_CALLBACK_AUTH_TOKENS", "DM_NOTIFY_API_KEY"}),
    "buyer-frontend": (FRONTEND_ENV | {"DM_SEARCH_API_URL", "DM_PATCH_FRONTEND_URL"},
                       FRONTEND_SECRETS | {"DM_SEARCH_API_AUTH_TOKEN"}),
    # supplier-frontend's config.py also reads the Mailchimp user and list, D&B's user (its key: a secret) and the
    # clarification-question address (dmp-reference.md section 7).
    "supplier-frontend": (FRONTEND_ENV | {"DM_AGREEMENTS_BUCKET", "DM_COMMUNICATIONS_BUCKET", "DM_DOCUMENTS_BUCKET",
                                          "DM_SUBMISSIONS_BUCKET", "DM_ASSETS_URL", "DM_MAILCHIMP_USERNAME",
                                          "DM_MAILCHIMP_OPEN_FRAMEWORK_NOTIFICATION_MAILING_LIST_ID",
                                          "DM_CLARIFICATION_QUESTION_EMAIL"},
                          FRONTEND_SECRETS | {"DM_NOTIFY_API_KEY", "DM_MAILCHIMP_API_KEY", "DM_DNB_API_USERNAME",
                                              "DM_DNB_API_PASSWORD"}),
    "admin-frontend": (FRONTEND_ENV | {"DM_AGREEMENTS_BUCKET", "DM_COMMUNICATIONS_BUCKET", "DM_REPORTS_BUCKET",
                                       "DM_S3_DOCUMENT_BUCKET", "DM_ASSETS_URL"},
                       FRONTEND_SECRETS | {"DM_NOTIFY_API_KEY"}),
    "user-frontend": (FRONTEND_ENV, FRONTEND_SECRETS | {"DM_NOTIFY_API_KEY"}),
    "briefs-frontend": (FRONTEND_ENV, FRONTEND_SECRETS | {"DM_NOTIFY_API_KEY"}),
    "brief-responses-frontend": (FRONTEND_ENV, FRONTEND_SECRETS - {"SHARED_EMAIL_KEY"} | {"DM_NOTIFY_API_KEY"}),
}
ROUTER_ENV = {"DM_MODE", "DM_RATE_LIMITING_ENABLED", "DM_USER_IPS", "DM_DEV_USER_IPS", "DM_ADMIN_USER_IPS",
              "DM_FRONTEND_URL", "DM_API_URL", "DM_SEARCH_API_URL", "DM_ANTIVIRUS_API_URL"}


def containers(document: dict) -> dict[str, dict]:
    return {c["name"]: c for c in document["containerDefinitions"]}


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("environment", [])}


def secrets_of(container: dict) -> dict[str, str]:
    return {s["name"]: s["valueFrom"] for s in container.get("secrets", [])}


@pytest.fixture(scope="module", params=ENVS)
def rendered(request):
    return request.param, render_only(request.param)


# --- the templates -----------------------------------------------------------------------------------------

def test_every_app_and_one_off_task_has_a_template_that_passes_parameter_validation(rendered):
    env, state = rendered
    assert MINE <= set(state.task_definitions)
    validation.check_documents(state)  # botocore's RegisterTaskDefinition input shape
    assert set(state.resources[KIND]) == {d["family"] for d in state.task_definitions.values()}


@pytest.mark.parametrize("env", ENVS)
def test_validate_command_exits_0(run_cli, env, tmp_path, monkeypatch):
    filled_config_dir(tmp_path / "config", monkeypatch)  # staging and production as an operator fills them in
    result = run_cli("validate", "--env", env)
    assert result.code == 0, result.stderr


def test_sizing_comes_from_the_app_config_and_reservations_fit_the_task(rendered):
    env, state = rendered
    config = load_config(env)
    for stem in MINE:
        doc = state.task_definitions[stem]
        sizing = config.apps["api" if stem == "db-migration" else stem]
        assert (doc["cpu"], doc["memory"]) == (str(sizing.cpu), str(sizing.memory)), stem
        assert doc["networkMode"] == "awsvpc" and doc["requiresCompatibilities"] == ["FARGATE"]
        reservations = [c["memoryReservation"] for c in doc["containerDefinitions"]]
        assert all(r > 0 for r in reservations) and sum(reservations) <= sizing.memory, stem
        assert all("cpu" not in c for c in doc["containerDefinitions"]), "CPU is sized at the task level"


def test_every_container_logs_to_the_family_log_group_with_its_own_stream_prefix(rendered):
    env, state = rendered
    prefix = load_config(env).prefix
    for stem in MINE:
        for container in state.task_definitions[stem]["containerDefinitions"]:
            log = container["logConfiguration"]
            assert log["logDriver"] == "awslogs"
            assert log["options"]["awslogs-group"] == f"/{prefix}/{stem}"
            assert log["options"]["awslogs-stream-prefix"] == container["name"]


def test_serving_containers_have_named_ports_and_written_out_health_checks(rendered):
    _, state = rendered
    for stem in APPS:
        for container in state.task_definitions[stem]["containerDefinitions"]:
            (mapping,) = container["portMappings"]
            assert mapping["name"] == container["name"] and mapping["protocol"] == "tcp"
            health = container["healthCheck"]
            assert (health["interval"], health["retries"], health["timeout"]) == (30, 3, 10), stem
            assert health["startPeriod"] == (300 if container["name"] == "clamd" else 10)


@pytest.mark.parametrize("stem", sorted(set(APPS) - {"router"}))
def test_two_container_apps(rendered, stem):
    _, state = rendered
    c = containers(state.task_definitions[stem])
    assert {"http", "wsgi"} <= set(c)
    assert env_of(c["http"]) == {"DM_APP_NAME": stem, "DM_BACKEND": "localhost:8888"}
    assert c["http"]["portMappings"][0]["containerPort"] == 8080
    assert c["wsgi"]["portMappings"][0]["containerPort"] == 8888
    assert c["http"]["image"].rsplit("/", 1)[1].startswith(f"{stem}-http:")
    assert c["wsgi"]["image"].rsplit("/", 1)[1].startswith(f"{stem}-wsgi:")
    wsgi_env = env_of(c["wsgi"])
    assert wsgi_env["DM_ENVIRONMENT"] == "native-aws" and wsgi_env["DM_APP_NAME"] == stem
    # gds_metrics serves on PROMETHEUS_METRICS_PATH; the router denies exactly the paths ending in /_metrics.
    assert wsgi_env["PROMETHEUS_METRICS_PATH"] == "/_metrics"
    expected_env, expected_secrets = EXPECTED[stem]
    assert set(wsgi_env) - {"DM_ENVIRONMENT", "DM_APP_NAME", "PROMETHEUS_METRICS_PATH"} == expected_env
    assert set(secrets_of(c["wsgi"])) == expected_secrets
    assert "secrets" not in c["http"], "nginx needs no secret"


def test_antivirus_api_waits_for_its_clamd_sidecar(rendered):
    _, state = rendered
    c = containers(state.task_definitions["antivirus-api"])
    assert set(c) == {"http", "wsgi", "clamd"}
    assert c["clamd"]["portMappings"][0]["containerPort"] == 3310
    assert c["clamd"]["healthCheck"]["command"]
    assert c["wsgi"]["dependsOn"] == [{"containerName": "clamd", "condition": "HEALTHY"}]


def test_router_is_one_nginx_container_on_port_80(rendered):
    env, state = rendered
    (router,) = state.task_definitions["router"]["containerDefinitions"]
    assert router["portMappings"][0]["containerPort"] == 80
    assert "/_status" in " ".join(router["healthCheck"]["command"])
    names_ = set(env_of(router))
    assert ROUTER_ENV <= names_
    assert {n for n in names_ - ROUTER_ENV} and all(n.endswith("_S3_URL") for n in names_ - ROUTER_ENV)
    assert set(secrets_of(router)) == {"DM_APP_AUTH"}


def test_db_migration_runs_flask_db_upgrade_from_the_api_image(rendered):
    _, state = rendered
    (wsgi,) = state.task_definitions["db-migration"]["containerDefinitions"]
    assert wsgi["command"] == ["flask", "db", "upgrade"]
    assert env_of(wsgi)["FLASK_APP"] == "application:application"
    assert wsgi["image"] == containers(state.task_definitions["api"])["wsgi"]["image"]
    api_secrets = secrets_of(containers(state.task_definitions["api"])["wsgi"])
    assert secrets_of(wsgi)["SQLALCHEMY_DATABASE_URI"] == api_secrets["SQLALCHEMY_DATABASE_URI"]
    assert "healthCheck" not in wsgi and "portMappings" not in wsgi


def test_all_frontends_share_one_secret_key_and_one_shared_email_key(rendered):
    env, state = rendered
    config = load_config(env)
    for name in FRONTENDS:
        s = secrets_of(containers(state.task_definitions[name])["wsgi"])
        assert s["SECRET_KEY"] == config.secrets["frontend_secret_key"]
        if "SHARED_EMAIL_KEY" in s:
            assert s["SHARED_EMAIL_KEY"] == config.secrets["shared_email_key"]


def test_secrets_are_only_arns_and_never_plain_environment(rendered):
    env, state = rendered
    config = load_config(env)
    secret_names = set()
    for doc in state.task_definitions.values():
        for container in doc["containerDefinitions"]:
            for name, value_from in secrets_of(container).items():
                assert SECRET_ARN.match(value_from) and value_from in config.secrets.values(), value_from
                secret_names.add(name)
    for doc in state.task_definitions.values():
        for container in doc["containerDefinitions"]:
            assert not secret_names & set(env_of(container)), container["name"]


def test_no_secret_value_in_any_rendered_task_definition(local_aws):
    """The embedded AWS holds dummy values for every secret; none of them may reach a task definition."""
    state = render_only("local")
    text = json.dumps([state.task_definitions, state.resources.get(KIND)])
    assert DUMMY_SECRET_PREFIX not in text
    ssm = local_aws.client("ssm")
    values = [p["Value"] for p in ssm.get_parameters_by_path(Path="/dmp-local/", Recursive=True,
                                                             WithDecryption=True)["Parameters"]]
    assert values and all(v.startswith(DUMMY_SECRET_PREFIX) for v in values)
    assert not any(v in text for v in values)


# --- the canonical form (pure) -----------------------------------------------------------------------------

TEMPLATE = {
    "family": "f", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256",
    "memory": "512", "executionRoleArn": "arn:aws:iam::1:role/x", "taskRoleArn": "arn:aws:iam::1:role/t",
    "containerDefinitions": [
        {"name": "http", "image": "i:1", "essential": True, "memoryReservation": 64,
         "portMappings": [{"name": "http", "containerPort": 8080, "protocol": "tcp"}],
         "environment": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}],
         "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 30, "retries": 3, "startPeriod": 10,
                         "timeout": 10}},
        {"name": "wsgi", "image": "w:1", "memoryReservation": 448,
         "secrets": [{"name": "Y", "valueFrom": "arn:y"}, {"name": "X", "valueFrom": "arn:x"}],
         "mountPoints": [{"sourceVolume": "data", "containerPath": "/data"}]},
    ],
    "volumes": [{"name": "data", "efsVolumeConfiguration": {
        "fileSystemId": "fs-1", "transitEncryption": "ENABLED",
        "authorizationConfig": {"accessPointId": "fsap-1", "iam": "ENABLED"}}}],
}


def described(template: dict) -> dict:
    """What DescribeTaskDefinition answers for `template`: AWS's defaults filled in, lists reordered,
    read-only fields added."""
    d = copy.deepcopy(template)
    d.update(taskDefinitionArn="arn:aws:ecs:eu-west-2:1:task-definition/f:3", revision=3, status="ACTIVE",
             compatibilities=["EC2", "FARGATE"], registeredAt="2024-01-01T00:00:00Z", registeredBy="arn:me",
             requiresAttributes=[{"name": "ecs.capability.execution-role-awslogs"}], placementConstraints=[],
             enableFaultInjection=False)
    for c in d["containerDefinitions"]:
        c.setdefault("cpu", 0)
        c.setdefault("essential", True)
        for key in ("portMappings", "environment", "mountPoints", "volumesFrom", "systemControls"):
            c.setdefault(key, [])
        for p in c["portMappings"]:
            p.setdefault("hostPort", p["containerPort"])
        c["environment"].reverse()
        c.get("secrets", []).reverse()
        for m in c["mountPoints"]:
            m.setdefault("readOnly", False)
        if "healthCheck" in c:
            c["healthCheck"] = {"interval": 30, "timeout": 5, "retries": 3, **c["healthCheck"]}
    d["containerDefinitions"].reverse()
    for v in d["volumes"]:
        v["efsVolumeConfiguration"].setdefault("rootDirectory", "/")
    return d


def _edit(fn):
    def apply(doc):
        doc = copy.deepcopy(doc)
        fn(doc)
        return doc
    return apply


def _wsgi(doc):
    return next(c for c in doc["containerDefinitions"] if c["name"] == "wsgi")


def _http(doc):
    return next(c for c in doc["containerDefinitions"] if c["name"] == "http")


_MINIMAL_HEALTH = _edit(lambda d: _wsgi(d).update(healthCheck={"command": ["CMD", "x"]}))
_DEFAULT_HEALTH = _edit(lambda d: _wsgi(d).update(healthCheck={"command": ["CMD", "x"], "interval": 30,
                                                               "timeout": 5, "retries": 3, "startPeriod": 0}))


@pytest.mark.parametrize("one, other", [
    pytest.param(TEMPLATE, described(TEMPLATE), id="AWS defaults, read-only fields, reordered lists"),
    pytest.param(TEMPLATE, _edit(lambda d: d.update(cpu=256, memory=512))(TEMPLATE),
                 id="task cpu and memory as numbers"),
    pytest.param(TEMPLATE, _edit(lambda d: _http(d).pop("essential"))(TEMPLATE), id="essential left out"),
    pytest.param(TEMPLATE, _edit(lambda d: _http(d)["portMappings"][0].pop("protocol"))(TEMPLATE),
                 id="protocol left out"),
    pytest.param(_MINIMAL_HEALTH(TEMPLATE), _DEFAULT_HEALTH(TEMPLATE), id="health check defaults"),
    pytest.param(_MINIMAL_HEALTH(TEMPLATE), described(_MINIMAL_HEALTH(TEMPLATE)),
                 id="health check defaults, described"),
    pytest.param(TEMPLATE, _edit(lambda d: _wsgi(d).update(cpu=0, volumesFrom=[], ulimits=[], dockerLabels={}))(
        TEMPLATE), id="zero cpu and empty collections"),
    pytest.param(TEMPLATE, _edit(lambda d: _wsgi(d).update(versionConsistency="enabled"))(TEMPLATE),
                 id="version consistency"),
    pytest.param(TEMPLATE, _edit(lambda d: d["volumes"][0]["efsVolumeConfiguration"].update(
        rootDirectory="/"))(TEMPLATE), id="EFS root directory with an access point"),
])
def test_equivalent_definitions_have_one_canonical_form(one, other):
    assert canonical_definition(one) == canonical_definition(other)
    assert content_hash(canonical_definition(one)) == content_hash(canonical_definition(other))


@pytest.mark.parametrize("change, path", [
    (_edit(lambda d: _http(d)["environment"][0].update(value="3")), "container.http.environment.B"),
    (_edit(lambda d: _http(d)["environment"].append({"name": "C", "value": ""})), "container.http.environment.C"),
    (_edit(lambda d: _wsgi(d)["secrets"].pop()), "container.wsgi.secrets.X"),
    (_edit(lambda d: _wsgi(d).update(image="w:2")), "container.wsgi.image"),
    (_edit(lambda d: _wsgi(d).update(essential=False)), "container.wsgi.essential"),
    (_edit(lambda d: _wsgi(d)["mountPoints"][0].update(readOnly=True)), "container.wsgi.mountPoints"),
    (_edit(lambda d: _http(d)["portMappings"][0].update(containerPort=8081)), "container.http.portMappings"),
    (_edit(lambda d: _http(d)["healthCheck"].update(retries=5)), "container.http.healthCheck.retries"),
    (_edit(lambda d: d.update(memory="1024")), "memory"),
    (_edit(lambda d: d["volumes"][0]["efsVolumeConfiguration"].update(rootDirectory="/other")),
     "volume.data.efsVolumeConfiguration.rootDirectory"),
    (_edit(lambda d: d["containerDefinitions"].pop()), "container.wsgi.image"),
])
def test_real_changes_survive_canonicalisation_and_are_named_by_field(change, path):
    desired, live = canonical_definition(change(TEMPLATE)), canonical_definition(described(TEMPLATE))
    assert desired != live and content_hash(desired) != content_hash(live)
    assert path in [c.path for c in content_changes(desired, live)]


@pytest.mark.parametrize("active, keep, in_use, registering, pruned", [
    ([1, 2, 3], 10, set(), False, []),
    ([1, 2, 3, 4, 5], 3, set(), False, [1, 2]),
    ([1, 2, 3, 4, 5], 3, set(), True, [1, 2, 3]),  # the new revision counts towards keep
    ([1, 2, 3, 4, 5], 3, {1}, True, [2, 3]),  # the running revision is never deregistered
    ([5, 1, 4, 2, 3], 2, {5}, False, [1, 2, 3]),  # any order in, oldest first out
    ([7], 1, set(), True, [7]),
    ([7], 1, {7}, True, []),
])
def test_revisions_to_prune(active, keep, in_use, registering, pruned):
    assert revisions_to_prune(active, keep, in_use, registering) == pruned


def _spec(document: dict, tags: dict | None = None) -> dict:
    content = canonical_definition(document)
    return {**content, "tags": {"dmp:env": "local", "dmp:managed-by": "dmp-deploy",
                                CONTENT_HASH_TAG: content_hash(content), **(tags or {})}}


def test_a_matching_hash_tag_means_unchanged_even_with_fields_the_normaliser_does_not_know():
    desired = _spec(TEMPLATE)
    live_doc = described(TEMPLATE)
    _wsgi(live_doc)["someFutureDefault"] = "on"  # AWS starts reporting a new default
    live = Live(spec={**canonical_definition(live_doc), "tags": dict(desired["tags"])}, ids={"revision": 3})
    assert TaskDefinitions().diff("f", desired, live) == []


def test_without_the_hash_tag_the_content_is_compared_in_full():
    desired = _spec(TEMPLATE)
    untagged = {k: v for k, v in desired["tags"].items() if k != CONTENT_HASH_TAG}
    same = Live(spec={**canonical_definition(described(TEMPLATE)), "tags": untagged}, ids={"revision": 3})
    assert [c.path for c in TaskDefinitions().diff("f", desired, same)] == [f"tags.{CONTENT_HASH_TAG}"]
    changed_doc = _edit(lambda d: _http(d)["environment"][0].update(value="9"))(TEMPLATE)
    changed = Live(spec={**canonical_definition(described(changed_doc)), "tags": untagged}, ids={"revision": 3})
    paths = [c.path for c in TaskDefinitions().diff("f", desired, changed)]
    assert paths == ["revision", "container.http.environment.B", f"tags.{CONTENT_HASH_TAG}"]


# --- against the embedded AWS ------------------------------------------------------------------------------

@pytest.fixture
def config_copy(tmp_path, monkeypatch):
    """A temporary copy of config/ that the CLI reads; `edit(old, new)` changes config/local.toml."""
    directory = tmp_path / "config"
    shutil.copytree(dmp_config.CONFIG_DIR, directory)
    monkeypatch.setattr(dmp_config, "CONFIG_DIR", directory)

    def edit(old: str, new: str) -> None:
        path = directory / "local.toml"
        text = path.read_text()
        assert text.count(old) == 1, old
        path.write_text(text.replace(old, new))

    return edit


def registered(result) -> int:
    return result.json["calls"]["by_operation"].get("ecs.register_task_definition", 0)


def td_changes(result) -> list[tuple[str, str]]:
    return sorted((c["action"], c["name"]) for c in result.json["changes"] if c["kind"] == KIND)


def active_revisions(ecs, family: str) -> list[int]:
    arns = ecs.list_task_definitions(familyPrefix=family, status="ACTIVE")["taskDefinitionArns"]
    return sorted(int(a.rsplit(":", 1)[1]) for a in arns)


def test_apply_registers_every_family_once_and_a_second_apply_changes_nothing(local_aws, run_cli):
    first = run_cli("apply", "--env", "local", "--json")
    assert first.code == 0, first.stderr
    assert registered(first) == len(render_only("local").task_definitions)
    assert DUMMY_SECRET_PREFIX not in first.stdout + first.stderr

    ecs = local_aws.client("ecs")
    answer = ecs.describe_task_definition(taskDefinition="dmp-local-api", include=["TAGS"])
    tags = {t["key"]: t["value"] for t in answer["tags"]}
    assert tags["dmp:env"] == "local" and tags["dmp:managed-by"] == "dmp-deploy"
    assert tags[CONTENT_HASH_TAG] == content_hash(canonical_definition(answer["taskDefinition"]))
    assert DUMMY_SECRET_PREFIX not in json.dumps(answer, default=str)

    second = run_cli("apply", "--env", "local", "--json")
    assert second.code == 0, second.stderr
    assert registered(second) == 0
    assert second.json["calls"]["mutating"] == 0
    plan = run_cli("plan", "--env", "local")
    assert plan.code == 0, plan.stdout + plan.stderr


def test_the_embedded_aws_can_run_the_registered_tasks(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    ecs, ec2 = local_aws.client("ecs"), local_aws.client("ec2")
    ecs.create_cluster(clusterName="td-run-check")
    subnet = ec2.describe_subnets()["Subnets"][0]
    group = ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]
    for family in ("dmp-local-antivirus-api", "dmp-local-db-migration"):
        tasks = ecs.run_task(cluster="td-run-check", taskDefinition=family, launchType="FARGATE",
                             networkConfiguration={"awsvpcConfiguration": {
                                 "subnets": [subnet["SubnetId"]], "securityGroups": [group]}})["tasks"]
        assert len(tasks) == 1, family


@pytest.mark.parametrize("setting, value, families", [
    ("elasticsearch_host", "https://opensearch.elsewhere.internal:443", {"dmp-local-search-api"}),
    ("redis_service_name", "dm-redis-2", {f"dmp-local-{f}" for f in FRONTENDS}),
])
def test_a_changed_setting_registers_exactly_the_families_that_use_it(local_aws, run_cli, config_copy, setting,
                                                                      value, families):
    assert run_cli("apply", "--env", "local").code == 0
    old = load_config("local").settings[setting]
    config_copy(f'{setting} = "{old}"', f'{setting} = "{value}"')

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    assert td_changes(plan) == sorted(("update", f) for f in families)
    for change in (c for c in plan.json["changes"] if c["kind"] == KIND):
        fields = {f["path"]: f for f in change["fields"]}
        (changed,) = [p for p in fields if p.startswith("container.")]
        assert changed.startswith("container.wsgi.environment.") and fields[changed]["after"] == value

    applied = run_cli("apply", "--env", "local", "--json")
    assert applied.code == 0, applied.stderr
    assert registered(applied) == len(families)
    ecs = local_aws.client("ecs")
    for family in families:
        assert active_revisions(ecs, family) == [1, 2]
    assert active_revisions(ecs, "dmp-local-api") == [1]
    assert run_cli("plan", "--env", "local").code == 0


def test_a_new_api_image_registers_the_api_and_its_migration_only(local_aws, run_cli):
    """db-migration runs the api's wsgi image: a release's migrations come with its code. So do the one-off
    tasks of other features that run the api image (add-users); no other app's family changes."""
    api_image_users = {doc["family"] for doc in render_only("local").task_definitions.values()
                       if any(c["image"].rsplit("/", 1)[1].startswith(("api-http:", "api-wsgi:"))
                              for c in doc["containerDefinitions"])}
    assert {"dmp-local-api", "dmp-local-db-migration"} <= api_image_users
    assert not api_image_users & {f"dmp-local-{app}" for app in APPS if app != "api"}

    assert run_cli("apply", "--env", "local").code == 0
    plan = run_cli("plan", "--env", "local", "--json", "--image", "api=NEWTAG")
    assert plan.code == 2
    assert td_changes(plan) == sorted(("update", f) for f in api_image_users)

    applied = run_cli("apply", "--env", "local", "--json", "--image", "api=NEWTAG")
    assert applied.code == 0, applied.stderr
    assert registered(applied) == len(api_image_users)
    ecs = local_aws.client("ecs")
    latest = ecs.describe_task_definition(taskDefinition="dmp-local-api")["taskDefinition"]
    assert {c["image"].rsplit(":", 1)[1] for c in latest["containerDefinitions"]} == {"NEWTAG"}
    assert run_cli("plan", "--env", "local", "--image", "api=NEWTAG").code == 0


def test_pruning_keeps_the_newest_revisions_and_the_one_a_service_runs(local_aws, run_cli, config_copy):
    """db-migration: a family no declared service runs, so only the test's own service holds a revision."""
    family = "dmp-local-db-migration"
    config_copy("keep_revisions = 10", "keep_revisions = 3")
    assert run_cli("apply", "--env", "local").code == 0
    ecs = local_aws.client("ecs")
    base = ecs.describe_task_definition(taskDefinition=f"{family}:1")["taskDefinition"]
    request = {k: base[k] for k in ("family", "networkMode", "requiresCompatibilities", "cpu", "memory",
                                    "executionRoleArn", "taskRoleArn", "containerDefinitions")}
    for i in range(2, 7):  # revisions 2..6, registered out of band, each a little different
        request["containerDefinitions"][0]["environment"] = [{"name": "OUT_OF_BAND", "value": str(i)}]
        ecs.register_task_definition(**request)
    if not [c for c in ecs.describe_clusters(clusters=["dmp-local"])["clusters"] if c["status"] == "ACTIVE"]:
        ecs.create_cluster(clusterName="dmp-local")
    ecs.create_service(cluster="dmp-local", serviceName="manual-debug", taskDefinition=f"{family}:2",
                       desiredCount=0)

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    # Revision 1 is what release 1 (the first apply) ran: kept so that `revert --to 1` stays possible.
    assert td_changes(plan) == [("delete", f"{family}:3"), ("delete", f"{family}:4"), ("update", family)]
    text = run_cli("plan", "--env", "local").stdout
    assert f"- task_definition {family}:3" in text and "no service runs it" in text

    applied = run_cli("apply", "--env", "local", "--json")
    assert applied.code == 0, applied.stderr
    assert registered(applied) == 1
    assert applied.json["calls"]["by_operation"]["ecs.deregister_task_definition"] == 2
    assert active_revisions(ecs, family) == [1, 2, 5, 6, 7]
    assert run_cli("plan", "--env", "local").code == 0
    again = run_cli("apply", "--env", "local", "--json")
    assert again.json["calls"]["mutating"] == 0


def test_undeclared_families_of_this_environment_are_deregistered_whole(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    ecs = local_aws.client("ecs")
    container = [{"name": "x", "image": "busybox", "memoryReservation": 16}]
    for _ in range(2):
        ecs.register_task_definition(family="dmp-local-retired-app", containerDefinitions=container,
                                     tags=[{"key": "dmp:env", "value": "local"},
                                           {"key": "dmp:managed-by", "value": "dmp-deploy"}])
    ecs.register_task_definition(family="dmp-local-someone-elses", containerDefinitions=container)
    ecs.register_task_definition(family="dmp-local-other-env", containerDefinitions=container,
                                 tags=[{"key": "dmp:env", "value": "staging"},
                                       {"key": "dmp:managed-by", "value": "dmp-deploy"}])

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    assert td_changes(plan) == [("delete", "dmp-local-retired-app")]
    applied = run_cli("apply", "--env", "local", "--json")  # no --allow-destroy: no data is lost
    assert applied.code == 0, applied.stderr
    assert active_revisions(ecs, "dmp-local-retired-app") == []
    assert active_revisions(ecs, "dmp-local-someone-elses") == [1]
    assert active_revisions(ecs, "dmp-local-other-env") == [1]
    assert run_cli("plan", "--env", "local").code == 0


@pytest.mark.parametrize("tamper, field", [
    (lambda ecs, arn: ecs.untag_resource(resourceArn=arn, tagKeys=["dmp:env"]), "tags.dmp:env"),
    (lambda ecs, arn: ecs.untag_resource(resourceArn=arn, tagKeys=[CONTENT_HASH_TAG]), f"tags.{CONTENT_HASH_TAG}"),
    (lambda ecs, arn: ecs.tag_resource(resourceArn=arn, tags=[{"key": "extra", "value": "x"}]), "tags.extra"),
])
def test_tags_changed_out_of_band_are_fixed_in_place_without_a_new_revision(local_aws, run_cli, tamper, field):
    assert run_cli("apply", "--env", "local").code == 0
    ecs = local_aws.client("ecs")
    tamper(ecs, "arn:aws:ecs:eu-west-2:123456789012:task-definition/dmp-local-api:1")

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    (change,) = [c for c in plan.json["changes"] if c["kind"] == KIND]
    assert (change["action"], change["name"]) == ("update", "dmp-local-api")
    assert [f["path"] for f in change["fields"]] == [field]

    applied = run_cli("apply", "--env", "local", "--json")
    assert applied.code == 0, applied.stderr
    assert registered(applied) == 0
    assert active_revisions(ecs, "dmp-local-api") == [1]
    assert run_cli("plan", "--env", "local").code == 0


def test_a_revision_registered_out_of_band_is_detected_by_field_and_superseded(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    ecs = local_aws.client("ecs")
    base = ecs.describe_task_definition(taskDefinition="dmp-local-search-api")["taskDefinition"]
    request = {k: base[k] for k in ("family", "networkMode", "requiresCompatibilities", "cpu", "memory",
                                    "executionRoleArn", "taskRoleArn", "containerDefinitions")}
    wsgi = next(c for c in request["containerDefinitions"] if c["name"] == "wsgi")
    for item in wsgi["environment"]:
        if item["name"] == "ELASTICSEARCH_HOST":
            item["value"] = "https://somewhere-else:443"
    ecs.register_task_definition(**request)  # a console edit: no tags at all

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    (change,) = [c for c in plan.json["changes"] if c["kind"] == KIND]
    paths = [f["path"] for f in change["fields"]]
    assert "container.wsgi.environment.ELASTICSEARCH_HOST" in paths and "revision" in paths
    text = run_cli("plan", "--env", "local").stdout
    assert "a new revision is registered" in text

    assert run_cli("apply", "--env", "local").code == 0
    assert active_revisions(ecs, "dmp-local-search-api") == [1, 2, 3]
    assert run_cli("plan", "--env", "local").code == 0
