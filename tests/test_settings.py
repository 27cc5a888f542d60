"""Every app's settings checked against its code (issue 10, item 4): supplier-frontend's missing settings, the
public URLs, metrics, clamd's memory, antivirus-api's S3 actions, and placeholders refused outside the embedded AWS.
Nothing here calls AWS: the CLI commands that would are refused before their first call."""

from __future__ import annotations

import pytest

from dmp_deploy import config as config_module
from dmp_deploy import unfilled, validation
from dmp_deploy.config import load_config
from filled_config import FILLINGS, filled_config_dir
from test_task_definitions import containers, env_of, secrets_of

# What the shipped files leave to the operator (the dotted keys `validate` must list).
PRODUCTION_PLACEHOLDERS = {
    "settings.developer_virus_alert_email",
    "settings.mailchimp_open_framework_notification_mailing_list_id",
    "settings.clarification_question_email",
    "settings.router_dev_user_ips",
    "settings.router_admin_user_ips",
    "settings.elasticsearch_host",  # the OpenSearch domain's VPC endpoint (not a name in the Cloud Map namespace)
}
STAGING_PLACEHOLDERS = PRODUCTION_PLACEHOLDERS | {"settings.router_user_ips"}  # staging is not open to everyone


@pytest.fixture
def filled(tmp_path, monkeypatch):
    """config/ with staging and production filled in (tests/filled_config.py); edit(env, old, new) changes one."""
    directory = filled_config_dir(tmp_path / "config", monkeypatch)

    def edit(env: str, old: str, new: str) -> None:
        path = directory / f"{env}.toml"
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} in {path}"
        path.write_text(text.replace(old, new))

    return edit


# --- what placeholders are ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value, reason", [
    ("virus-alerts@example.invalid", "is an example.invalid address"),
    ("https://www.local.dmp.invalid/user/login", "names the reserved .invalid host www.local.dmp.invalid"),
    ("ops@alerts.example.invalid", "names the reserved .invalid host alerts.example.invalid"),
    ("203.0.113.0/24", "is in the documentation range 203.0.113.0/24"),
    ("10.0.0.0/8, 198.51.100.7", "is in the documentation range 198.51.100.0/24"),
    ("192.0.2.128/25", "is in the documentation range 192.0.2.0/24"),
    ("2001:db8:1::/48", "is in the documentation range 2001:db8::/32"),
    ("<the Mailchimp list id>", "is a placeholder to replace"),
    ("0.0.0.0/0", None),  # everyone: a real choice, even though it contains the documentation ranges
    ("192.0.0.0/16", None),
    ("81.128.10.0/28,20.26.48.0/29", None),
    ("https://assets.digitalmarketplace.service.gov.uk", None),
    ("user@invalid.example.com", None),
    ("https://invalidation.example.com/", None),
    ("clamav/clamav:1.4", None),
    ("arn:aws:secretsmanager:eu-west-2:444455556666:secret:dmp-production/dnb-api-username-AbC123", None),
    ("a <b> c", None),
])
def test_what_counts_as_a_placeholder(value, reason):
    found = unfilled._reasons(value)
    assert (found[0] if found else None) == reason


def test_find_names_every_key_dotted_including_list_items(filled):
    filled("production", 'vpc = { tags = { Name = "dmp-production" } }',
           'vpc = { tags = { Name = "dmp-production" } }\nhttps_egress_cidrs = ["10.0.0.0/8", "198.51.100.0/24"]')
    found = unfilled.find(load_config("production"))
    assert [(u.key, u.value) for u in found] == [("network.https_egress_cidrs[1]", "198.51.100.0/24")]


def test_the_shipped_files_keep_only_the_placeholders_only_an_operator_can_fill():
    assert {u.key for u in unfilled.find(load_config("production"))} == PRODUCTION_PLACEHOLDERS
    assert {u.key for u in unfilled.find(load_config("staging"))} == STAGING_PLACEHOLDERS


# --- validate, plan and apply refuse them, with one message, before any AWS call --------------------------------

def test_validate_production_lists_every_placeholder_in_one_message_and_exits_1(run_cli):
    result = run_cli("validate", "--env", "production")
    assert result.code == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.count("error:") == 1
    assert f"config/production.toml: {len(PRODUCTION_PLACEHOLDERS)} placeholder value(s) still to fill in" \
        in result.stderr
    listed = {line.strip()[2:].split(":", 1)[0] for line in result.stderr.splitlines()
              if line.strip().startswith("- ")}
    assert listed == PRODUCTION_PLACEHOLDERS
    assert "'virus-alerts@example.invalid' is an example.invalid address" in result.stderr


def test_validate_staging_lists_its_allow_list_too(run_cli):
    result = run_cli("validate", "--env", "staging")
    assert result.code == 1
    assert "settings.router_user_ips: '203.0.113.0/24' is in the documentation range 203.0.113.0/24" \
        in result.stderr
    assert f"{len(STAGING_PLACEHOLDERS)} placeholder value(s)" in result.stderr


@pytest.mark.parametrize("command", [("plan",), ("apply", "--yes"), ("run-task", "db-migration")])
def test_plan_apply_and_run_task_refuse_placeholders_without_any_aws_call(run_cli, recorded_calls, command):
    result = run_cli(command[0], "--env", "production", *command[1:])
    assert result.code == 1
    assert "placeholder value(s) still to fill in" in result.stderr
    assert recorded_calls == []  # not even sts.GetCallerIdentity


@pytest.mark.parametrize("env", ["staging", "production"])
def test_filled_in_the_shipped_files_validate(run_cli, filled, env):
    result = run_cli("validate", "--env", env)
    assert result.code == 0, result.stderr
    assert result.stdout.startswith(f"{env}: valid")


def test_the_embedded_environment_may_keep_placeholders(run_cli):
    assert unfilled.find(load_config("local"))  # .invalid hosts: nothing leaves the machine
    assert run_cli("validate", "--env", "local").code == 0


def test_embedded_is_what_allows_them(filled):
    filled("staging", 'name_prefix = "dmp-staging"', 'name_prefix = "dmp-staging"\nembedded_aws = true')
    filled("staging", '"dm-virus-alerts@crowncommercial.gov.uk"', '"virus-alerts@example.invalid"')
    unfilled.check(load_config("staging"), "config/staging.toml")  # no error


# --- public URLs on the hosts the router serves ---------------------------------------------------------------

@pytest.mark.parametrize("env, old, new, expected", [
    # the staging bug: the router serves no bare staging. host
    ("staging", '"https://www.staging.digitalmarketplace.service.gov.uk/user/login"',
     '"https://staging.digitalmarketplace.service.gov.uk/user/login"',
     "settings.login_url: 'https://staging.digitalmarketplace.service.gov.uk/user/login' must be an https URL "
     "on the www. host"),
    # the production bug: assets.www. is not the site's assets host (the router's CSP names it)
    ("production", '"https://assets.digitalmarketplace.service.gov.uk"',
     '"https://assets.www.digitalmarketplace.service.gov.uk"',
     "settings.assets_url: the host 'assets.www.digitalmarketplace.service.gov.uk' is not "
     "assets.digitalmarketplace.service.gov.uk"),
    ("production", '"https://www.digitalmarketplace.service.gov.uk/"', '"https://www.digitalmarketplace.service.gov.uk"',
     "settings.www_url: 'https://www.digitalmarketplace.service.gov.uk' must end with '/'"),
    ("production", '"https://www.digitalmarketplace.service.gov.uk/"', '"https://www.marketplace.team/"',
     "settings.www_url: the host 'www.marketplace.team' is not the www host"),
    ("production", 'session_cookie_domain = "www.digitalmarketplace.service.gov.uk"',
     'session_cookie_domain = "marketplace.team"',
     "settings.session_cookie_domain: 'marketplace.team' does not cover the www host"),
])
def test_public_urls_must_be_on_the_routers_hosts(run_cli, filled, env, old, new, expected):
    filled(env, old, new)
    result = run_cli("validate", "--env", env)
    assert result.code == 1
    assert expected in result.stderr


def test_shipped_public_urls_are_the_sites():
    for env, site in (("staging", "staging.digitalmarketplace.service.gov.uk"),
                      ("production", "digitalmarketplace.service.gov.uk")):
        settings = load_config(env).settings
        assert settings["login_url"] == f"https://www.{site}/user/login"
        assert settings["www_url"] == f"https://www.{site}/"
        assert settings["assets_url"] == f"https://assets.{site}"
        validation.check_public_urls(load_config(env), f"config/{env}.toml")


# --- what `render --env staging` shows ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def staging():
    from dmp_deploy.cli import main
    import io
    import json
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--log-format", "json", "render", "--env", "staging"]) == 0
    return json.loads(out.getvalue())


def test_render_shows_supplier_frontends_settings(staging):
    config = load_config("staging")
    wsgi = containers(staging["task_definitions"]["supplier-frontend"])["wsgi"]
    env, secrets = env_of(wsgi), secrets_of(wsgi)
    assert env["DM_MAILCHIMP_USERNAME"] == config.settings["mailchimp_username"]
    assert env["DM_MAILCHIMP_OPEN_FRAMEWORK_NOTIFICATION_MAILING_LIST_ID"] == \
        config.settings["mailchimp_open_framework_notification_mailing_list_id"]
    assert env["DM_CLARIFICATION_QUESTION_EMAIL"] == config.settings["clarification_question_email"]
    # D&B's user name is its API key: a secret, injected by ECS, never plain environment.
    assert "DM_DNB_API_USERNAME" not in env
    assert secrets["DM_DNB_API_USERNAME"] == config.secrets["dnb_api_username"]
    assert secrets["DM_DNB_API_PASSWORD"] == config.secrets["dnb_api_password"]
    # ...so the execution role may read it.
    execution = staging["resources"]["iam_role"]["dmp-staging-ecs-execution"]["inline_policies"]
    readable = {a for s in execution["ecs-execution"]["Statement"] if s["Sid"] == "ReadSecrets"
                for a in s["Resource"]}
    assert config.secrets["dnb_api_username"] in readable


def test_render_shows_buyer_frontends_patch_url_and_every_apps_metrics_path(staging):
    buyer = env_of(containers(staging["task_definitions"]["buyer-frontend"])["wsgi"])
    assert buyer["DM_PATCH_FRONTEND_URL"] == "https://www.staging.digitalmarketplace.service.gov.uk/"
    assert buyer["DM_LOGIN_URL"] == "https://www.staging.digitalmarketplace.service.gov.uk/user/login"
    flask_apps = [stem for stem, doc in staging["task_definitions"].items() if "wsgi" in containers(doc)
                  and stem != "db-migration"]
    assert len(flask_apps) == 9  # every app but the router
    for stem in flask_apps:
        assert env_of(containers(staging["task_definitions"][stem])["wsgi"])["PROMETHEUS_METRICS_PATH"] == "/_metrics"


def test_render_shows_clamds_memory_and_its_reload_choice(staging):
    document = staging["task_definitions"]["antivirus-api"]
    assert (document["cpu"], document["memory"]) == ("1024", "4096")  # a valid Fargate pair
    c = containers(document)
    assert c["clamd"]["memoryReservation"] >= validation.CLAMD_MIN_MEMORY_MIB
    assert (c["http"]["memoryReservation"], c["wsgi"]["memoryReservation"], c["clamd"]["memoryReservation"]) == \
        (64, 512, 3520)
    assert sum(x["memoryReservation"] for x in c.values()) == 4096
    assert env_of(c["clamd"]) == {"CLAMD_CONF_ConcurrentDatabaseReload": "yes"}


def test_render_shows_antivirus_apis_s3_actions_on_the_buckets_it_scans(staging):
    settings = load_config("staging").settings
    role = staging["resources"]["iam_role"]["dmp-staging-antivirus-api-task"]
    statements = {s["Sid"]: s for s in role["inline_policies"]["app-access"]["Statement"]}
    scan = statements["ScanObjectVersions"]
    assert scan["Action"] == ["s3:GetObjectTagging", "s3:GetObjectVersion", "s3:GetObjectVersionTagging",
                              "s3:PutObjectTagging", "s3:PutObjectVersionTagging"]
    assert scan["Resource"] == sorted(f"arn:aws:s3:::{settings[k]}/*" for k in (
        "agreements_bucket", "communications_bucket", "documents_bucket", "submissions_bucket"))
    assert statements["PublishCallbacks"]["Action"] == "sns:Publish"
    assert set(statements) == {"ScanObjectVersions", "PublishCallbacks"}


def test_clamd_under_three_gib_is_refused_outside_the_embedded_aws(run_cli, filled):
    filled("production", "# clamd needs at least 3 GiB (task_definitions/antivirus-api.json.j2)\nmemory = 4096",
           "memory = 2048")
    result = run_cli("validate", "--env", "production")
    assert result.code == 1
    assert "clamd reserves 1488 MiB, under the 3072 MiB" in result.stderr
    assert "[apps.antivirus-api] memory = 4096" in result.stderr


def test_fillings_cover_only_placeholders():
    for placeholder in FILLINGS:
        assert unfilled._reasons(placeholder.strip('"')), placeholder


def test_messages_name_the_config_file_in_use(tmp_path, monkeypatch):
    assert validation.config_source("production") == "config/production.toml"
    monkeypatch.setattr(config_module, "CONFIG_DIR", tmp_path)  # outside the repository: the full path
    assert validation.config_source("production") == str(tmp_path / "production.toml")
