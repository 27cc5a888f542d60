"""Test harness: one in-process embedded AWS (moto's server on 127.0.0.1, patched by moto_compat) per test
session, reset and seeded once, then put back to that seeded account before each test that asks for it (a
restore of dmp_deploy/local/snapshots.py: a tenth of what a reset and the seed cost). The CLI finds it through
the same state file `local status` reads, so in-process and subprocess runs of `run.py --env local` both target
it. Nothing here reaches the network or real AWS.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import sys
import urllib.request
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Never let a test reach real AWS, whatever the developer's shell has.
for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
    os.environ.pop(var, None)
os.environ["AWS_ACCESS_KEY_ID"] = "local"
os.environ["AWS_SECRET_ACCESS_KEY"] = "local"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict | None = None) -> None:
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


logging.getLogger("werkzeug").setLevel(logging.WARNING)


SEEDED = "seeded"  # the snapshot every test's embedded AWS starts from


@pytest.fixture(scope="session")
def moto_server():
    port = _free_port()
    os.environ["MOTO_PORT"] = str(port)  # the state-machine interpreter calls back on this port
    from dmp_deploy.local import moto_compat, snapshots

    from dmp_deploy.local import task_runner

    moto_compat.apply()
    server = snapshots.server("127.0.0.1", port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    config = _reset_and_seed(endpoint)
    snapshots.save(SEEDED)
    runner = _start_task_runner(endpoint, config)
    yield endpoint
    task_runner.shutdown()
    _DATA_API.pop().stop()
    shutil.rmtree(runner, ignore_errors=True)
    snapshots.drop()
    server.stop()


_DATA_API: list = []  # the session's local Data API (dmp_deploy/local/data_api.py), as `local up` starts one


def _start_task_runner(endpoint: str, config) -> Path:
    """The local Data API and the local task runner, as the embedded AWS's server starts them: the workflow's
    tasks run their real commands in every test (unless a test scripts a family's outcome). The runner's directory
    is below /tmp, which the tasks' POSIX users may enter (pytest's own directories are root's alone)."""
    import tempfile

    from dmp_deploy.local import task_runner
    from dmp_deploy.local.data_api import DataApi, embedded_secret

    data_api = DataApi(embedded_secret(endpoint, config.environment.region, config.secrets["data_api_auth_token"]))
    data_api.start()
    _DATA_API.append(data_api)
    directory = Path(tempfile.mkdtemp(prefix="dmp-runner-"))
    task_runner.configure_for(config, directory, endpoint, data_api.url)
    return directory


def data_api():
    """The session's local Data API: `.users` holds what the workflow added (emptied before each test)."""
    return _DATA_API[0]


@dataclass
class LocalAws:
    endpoint: str
    region: str
    state_dir: Path

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id="local", aws_secret_access_key="local")

    def reset(self) -> None:
        """Back to a freshly seeded account: nothing of ours, only what a real account already has."""
        _reset_and_seed(self.endpoint)

    def snapshot(self, name: str) -> None:
        """Save everything the embedded AWS holds now as `name` (dmp_deploy/local/snapshots.py)."""
        _post(f"{self.endpoint}{SNAPSHOTS}{name}")

    def restore(self, name: str) -> None:
        """Put the embedded AWS back as it was when `name` was saved."""
        _post(f"{self.endpoint}{SNAPSHOTS}{name}/restore")

    def drop_snapshots(self) -> None:
        request = urllib.request.Request(f"{self.endpoint}{SNAPSHOTS}", method="DELETE")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


SNAPSHOTS = "/dmp-local/snapshots/"


def _start_test(endpoint: str) -> None:
    """What every test's embedded AWS starts from, besides the seeded account: no scripted outcomes, and state
    machines that run."""
    from dmp_deploy.local import moto_compat
    from dmp_deploy.local.server import enable_state_machine_execution

    moto_compat.clear_task_outcomes()
    moto_compat.clear_rollout_failures()
    enable_state_machine_execution(endpoint)
    from dmp_deploy.local import task_runner

    task_runner.stop_all()
    runner = task_runner.settings()
    if runner is not None:  # no access point directory, and no user, survives from an earlier test
        for directory in (runner.efs_root, runner.tasks_root):
            for entry in directory.iterdir():
                shutil.rmtree(entry, ignore_errors=True)
    if _DATA_API:
        _DATA_API[0].users.clear()


def _reset_and_seed(endpoint: str):
    from dmp_deploy.config import load_config
    from dmp_deploy.local.seed import seed

    _post(f"{endpoint}/moto-api/reset")
    _start_test(endpoint)
    config = load_config("local")
    seed(endpoint, config)
    return config


@pytest.fixture
def recorded_calls(monkeypatch):
    """Every call made through any AWS seam in this test, as (service.operation, mutating)."""
    from dmp_deploy import aws as aws_module

    calls = []
    original = aws_module.Aws.call

    def call(self, service, operation, **params):
        calls.append((f"{service}.{operation}", aws_module.is_mutating(operation)))
        return original(self, service, operation, **params)

    monkeypatch.setattr(aws_module.Aws, "call", call)
    return calls


def point_cli_at(endpoint: str, state_dir: Path, region: str) -> None:
    """Write the state file `--env local` reads in `state_dir`, naming this session's embedded AWS."""
    (state_dir / "server.json").write_text(json.dumps(
        {"pid": os.getpid(), "endpoint": endpoint, "port": int(endpoint.rsplit(":", 1)[1]), "region": region}))


@pytest.fixture
def local_aws(moto_server, tmp_path, monkeypatch) -> LocalAws:
    """A freshly seeded embedded AWS that `--env local` targets for this test."""
    from dmp_deploy.config import load_config
    from dmp_deploy.local import snapshots

    snapshots.load(SEEDED)
    _start_test(moto_server)
    config = load_config("local")
    state_dir = tmp_path / "dmp-local"
    state_dir.mkdir()
    point_cli_at(moto_server, state_dir, config.environment.region)
    monkeypatch.setenv("DMP_LOCAL_DIR", str(state_dir))
    return LocalAws(moto_server, config.environment.region, state_dir)


@pytest.fixture
def local_config(local_aws, tmp_path, monkeypatch):
    """Edit this test's own copy of config/local.toml: edit(old, new)."""
    from dmp_deploy import config as config_module

    directory = tmp_path / "config"
    directory.mkdir()
    for path in config_module.CONFIG_DIR.glob("*.toml"):
        shutil.copy(path, directory)
    monkeypatch.setattr(config_module, "CONFIG_DIR", directory)

    def edit(old: str, new: str) -> None:
        path = directory / "local.toml"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))

    return edit


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)


def cli(*args: str) -> Result:
    """Run the CLI in-process, as `python run.py ARGS` would, capturing stdout and stderr."""
    from dmp_deploy.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["--log-format", "json", *args])
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def run_cli():
    return cli


def pytest_terminal_summary(terminalreporter):
    """The crash suite's "N of N crash points converged" lines, whatever the capture mode."""
    module = sys.modules.get("test_crash") or sys.modules.get("tests.test_crash")
    for line in getattr(module, "REPORTS", []):
        terminalreporter.write_line(line)
