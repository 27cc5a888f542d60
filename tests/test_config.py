"""Configuration: every problem reported at once, with the file and the dotted key; nothing touches AWS."""

import shutil
from pathlib import Path

import pytest

from dmp_deploy import config as config_module
from dmp_deploy.config import load_config
from dmp_deploy.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    directory = tmp_path / "config"
    shutil.copytree(ROOT / "config", directory)
    monkeypatch.setattr(config_module, "CONFIG_DIR", directory)
    return directory


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("env", ["local", "staging", "production"])
def test_shipped_configs_are_valid(env):
    config = load_config(env)
    assert config.env == env
    assert set(config.apps) == {"api", "search-api", "antivirus-api", "buyer-frontend", "supplier-frontend",
                                "briefs-frontend", "brief-responses-frontend", "admin-frontend", "user-frontend",
                                "router"}


def test_missing_environment_names_the_ones_that_exist():
    with pytest.raises(ConfigError) as err:
        load_config("qa")
    assert "'qa'" in str(err.value)
    assert "local, production, staging" in str(err.value)


def test_every_problem_is_reported_at_once_with_file_and_key(config_dir):
    path = config_dir / "staging.toml"
    edit(path, 'retention_days = 30', 'retention_days = "thirty"')  # wrong type
    edit(path, 'name_prefix = "dmp-staging"', 'name_prefix = "dmp-staging"\nregoin = "eu-west-1"')  # unknown key
    edit(path, 'desired_count = 2\n', '', )  # missing value (first app: api)
    edit(path, 'cpu = 512', 'cpu = 300')  # not a Fargate size
    with pytest.raises(ConfigError) as err:
        load_config("staging")
    message = str(err.value)
    assert message.split(": ", 1)[0].endswith("config/staging.toml")
    assert "4 problem(s)" in message.splitlines()[0]
    assert "logs.retention_days: must be an integer, got 'thirty'" in message
    assert "environment.regoin: unknown key" in message
    assert "apps.api.desired_count: missing" in message
    assert "cpu: must be a Fargate CPU size" in message


def test_bad_secret_arn_and_missing_app_are_reported(config_dir):
    path = config_dir / "local.toml"
    text = path.read_text()
    start = text.index("[apps.router]")
    path.write_text(text[:start])  # drop the router: the last table in the file
    edit(path, 'notify_api_key = "arn:aws:ssm', 'notify_api_key = "plaintext-secret-value" # "arn:aws:ssm')
    with pytest.raises(ConfigError) as err:
        load_config("local")
    message = str(err.value)
    assert "apps.router: missing" in message
    assert "secrets.notify_api_key: must be a Secrets Manager secret ARN or an SSM parameter ARN" in message
    assert "plaintext-secret-value" not in message  # a secret pasted by mistake is not echoed back


def test_lookup_needs_exactly_one_way_to_find_it(config_dir):
    edit(config_dir / "local.toml", 'vpc = { tags = { Name = "dmp-local" } }',
         'vpc = { id = "vpc-1", tags = { Name = "dmp-local" } }')
    with pytest.raises(ConfigError) as err:
        load_config("local")
    assert "network.vpc: give exactly one of id, ids or tags (got id, tags)" in str(err.value)


def test_invalid_toml_names_the_file(config_dir):
    (config_dir / "local.toml").write_text("[environment\nname = 1\n")
    with pytest.raises(ConfigError) as err:
        load_config("local")
    assert "local.toml: not valid TOML" in str(err.value)


@pytest.mark.parametrize("old, new, expected", [
    ("max_file_bytes = 1048576", "max_file_bytes = 0", "add_users.max_file_bytes: must be from 1 to 67108864 bytes"),
    ("max_file_bytes = 1048576", "max_file_bytes = -5", "add_users.max_file_bytes: must be from 1"),
    ("max_file_bytes = 1048576", "max_file_bytes = 67108865", "add_users.max_file_bytes: must be from 1"),
    ("task_timeout_seconds = 900", "task_timeout_seconds = 0", "add_users.task_timeout_seconds: must be from 60"),
    ("task_timeout_seconds = 900", "task_timeout_seconds = 31536001",
     "add_users.task_timeout_seconds: must be from 60 (a Fargate task takes about a minute to start) to 31536000"),
    ('upload_prefix = "uploads/"', 'upload_prefix = "up*loads/"', "add_users.upload_prefix: must not contain '*' or '?'"),
    ('upload_prefix = "uploads/"', 'upload_prefix = "up?/"', "add_users.upload_prefix: must not contain '*' or '?'"),
])
def test_add_users_bounds(config_dir, old, new, expected):
    edit(config_dir / "staging.toml", old, new)
    with pytest.raises(ConfigError) as err:
        load_config("staging")
    assert expected in str(err.value)


@pytest.mark.parametrize("value", ["max_file_bytes = 1", "max_file_bytes = 67108864", "task_timeout_seconds = 60",
                                   "task_timeout_seconds = 31536000"])
def test_add_users_bounds_are_inclusive(config_dir, value):
    key = value.split(" = ")[0]
    edit(config_dir / "staging.toml", {"max_file_bytes": "max_file_bytes = 1048576",
                                       "task_timeout_seconds": "task_timeout_seconds = 900"}[key], value)
    load_config("staging")
