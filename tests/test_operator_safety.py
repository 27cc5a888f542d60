"""Operator safety at the command line: approval before changes, exit codes, one JSON document on every outcome,
errors that say what to do, quiet broken pipes.

A non-embedded environment (`qa`: config/local.toml with embedded_aws = false) is pointed at the embedded AWS
through AWS_ENDPOINT_URL, so approval is exercised as it is against a real account. Subprocess runs read the
test's config directory through DMP_TEST_CONFIG_DIR (a two-line wrapper, below); nothing here reaches the network.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import botocore.exceptions
import pytest

from dmp_deploy import config as config_module
from dmp_deploy import lock as deploy_lock
from dmp_deploy.aws import Aws
from dmp_deploy.commands import failures
from dmp_deploy.config import load_config
from dmp_deploy.local.seed import seed_certificate
from dmp_deploy.state_store import StateStore

ROOT = Path(__file__).resolve().parent.parent
# `python run.py ...` with the test's config directory.
WRAPPER = ("import os, sys; from pathlib import Path; import dmp_deploy.config as c; "
           "c.CONFIG_DIR = Path(os.environ['DMP_TEST_CONFIG_DIR']); from dmp_deploy.cli import main; "
           "sys.exit(main(sys.argv[1:]))")


@pytest.fixture
def qa(local_aws, tmp_path, monkeypatch):
    """A non-embedded environment `qa` on the embedded AWS. qa.edit(old, new) edits config/qa.toml."""
    directory = tmp_path / "config"
    directory.mkdir()
    for path in config_module.CONFIG_DIR.glob("*.toml"):
        shutil.copy(path, directory)
    text = (directory / "local.toml").read_text()
    text = text.replace('name = "local"', 'name = "qa"', 1).replace("embedded_aws = true", "embedded_aws = false")
    # A real environment may keep no placeholder (dmp_deploy/unfilled.py): fill local's reserved .invalid names,
    # and give the embedded ACM an ISSUED certificate for the filled-in domain, as the operator's account has.
    text = text.replace(".invalid", ".example.net")
    # ...no local task runner, which only the embedded AWS has...
    text = re.sub(r"\n\[local_runner\]\n(?:[^\[].*\n|\n)*", "\n", text)
    assert "local_runner" not in text
    # ...and room for clamd, which validate requires outside the embedded AWS.
    antivirus = "[apps.antivirus-api]\nimage_tag = \"local\"\ndesired_count = 1\ncpu = 256\nmemory = 512\n"
    assert antivirus in text
    text = text.replace(antivirus, antivirus.replace("cpu = 256\nmemory = 512", "cpu = 1024\nmemory = 4096"))
    (directory / "qa.toml").write_text(text)
    seed_certificate(local_aws.endpoint, local_aws.region, load_config("qa", directory).public_entry.certificate_domain)
    monkeypatch.setattr(config_module, "CONFIG_DIR", directory)
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_aws.endpoint)

    class Qa:
        config_dir = directory
        env = {**os.environ, "DMP_LOCAL_DIR": str(local_aws.state_dir), "DMP_TEST_CONFIG_DIR": str(directory),
               "AWS_ENDPOINT_URL": local_aws.endpoint}

        @staticmethod
        def edit(old: str, new: str) -> None:
            path = directory / "qa.toml"
            assert old in path.read_text()
            path.write_text(path.read_text().replace(old, new, 1))

        @staticmethod
        def store() -> StateStore:
            return StateStore(load_config("qa"), Aws(local_aws.region, endpoint_url=local_aws.endpoint))

    return Qa


def subprocess_cli(qa, *args: str, stdin=subprocess.DEVNULL, input: str | None = None):
    return subprocess.run([sys.executable, "-c", WRAPPER, "--log-format", "json", *args], cwd=ROOT, env=qa.env,
                          capture_output=True, text=True, timeout=300,
                          **({"input": input} if input is not None else {"stdin": stdin}))


class Terminal:
    """The CLI in a subprocess on a pseudo-terminal: stdin, stdout and stderr are the pty, as for a person."""

    def __init__(self, qa, *args: str, env: dict | None = None):
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen([sys.executable, "-c", WRAPPER, "--log-format", "json", *args], cwd=ROOT,
                                        env={**qa.env, "TERM": "dumb", **(env or {})}, stdin=slave, stdout=slave,
                                        stderr=slave, close_fds=True)
        os.close(slave)
        self.output = ""
        self.cursor = 0

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not chunk:
            return False
        self.output += chunk.decode(errors="replace")
        return True

    def expect(self, text: str, timeout: float = 120) -> None:
        """Wait for `text` after what the previous expect matched."""
        deadline = time.monotonic() + timeout
        while text not in self.output[self.cursor:] and time.monotonic() < deadline:
            if not self._read(0.2):
                break
        found = self.output.find(text, self.cursor)
        assert found >= 0, f"{text!r} never appeared in:\n{self.output[-3000:]}"
        self.cursor = found + len(text)

    def type(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def finish(self, timeout: float = 240) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.2):
            if self.process.poll() is not None:
                while self._read(0.1) and select.select([self.master], [], [], 0)[0]:
                    pass
                break
        code = self.process.wait(timeout=max(1, deadline - time.monotonic()))
        os.close(self.master)
        return code


def retention(local_aws, name: str = "/dmp-local/api") -> int | None:
    groups = local_aws.client("logs").describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    return next((g.get("retentionInDays") for g in groups if g["logGroupName"] == name), None)


def cluster_exists(local_aws) -> bool:
    clusters = local_aws.client("ecs").describe_clusters(clusters=["dmp-local"])["clusters"]
    return any(c["status"] == "ACTIVE" for c in clusters)


# --- approval -----------------------------------------------------------------------------------------------

@pytest.mark.subprocess
def test_without_a_terminal_apply_refuses_without_yes_and_changes_nothing(qa, local_aws):
    piped = subprocess_cli(qa, "apply", "--env", "qa", input="yes\n")  # `echo yes | apply`: not an approval
    assert piped.returncode == 1, piped.stderr
    assert "stdin is not one" in piped.stderr and "--yes" in piped.stderr and "Nothing was changed" in piped.stderr
    assert "+ cluster dmp-local" in piped.stdout  # the plan is shown, for review
    as_json = subprocess_cli(qa, "apply", "--env", "qa", "--json")
    assert as_json.returncode == 1
    document = json.loads(as_json.stdout)  # exactly one document
    assert document["status"] == "error" and document["error"]["kind"] == "approval"
    assert "--yes" in document["error"]["message"] and document["changes"]  # the plan that was refused
    assert document["calls"]["mutating"] == 0 and document["applied"] == 0
    assert not cluster_exists(local_aws)


@pytest.mark.subprocess
def test_on_a_terminal_apply_asks_and_only_yes_goes_on(qa, local_aws, run_cli):
    assert run_cli("apply", "--env", "qa", "--yes").code == 0
    qa.edit("retention_days = 7", "retention_days = 14")

    declined = Terminal(qa, "apply", "--env", "qa")
    declined.expect("Only 'yes' is accepted")
    declined.type("y")
    assert declined.finish() == 1 and "Cancelled: nothing was changed" in declined.output
    assert retention(local_aws) == 7

    refused_json = Terminal(qa, "apply", "--env", "qa", "--json")  # a terminal, but a machine reads the JSON
    assert refused_json.finish() == 1 and '"kind": "approval"' in refused_json.output
    assert retention(local_aws) == 7

    approved = Terminal(qa, "apply", "--env", "qa")
    approved.expect("retention_days: 7 -> 14")
    approved.expect("Only 'yes' is accepted")
    approved.type("yes")
    assert approved.finish() == 0, approved.output
    assert "Apply complete" in approved.output and retention(local_aws) == 14
    assert "\x1b[33m~ log_group /dmp-local/api\x1b[0m" in approved.output  # colour: a person is reading


@pytest.mark.subprocess
def test_colour_only_on_a_terminal_and_never_with_no_color(qa, local_aws):
    on_terminal = Terminal(qa, "plan", "--env", "qa")
    assert on_terminal.finish() == 2 and "\x1b[32m+ cluster dmp-local\x1b[0m" in on_terminal.output
    for env, args in (({"NO_COLOR": "1"}, ()), ({}, ("--no-color",))):
        plain = Terminal(qa, "plan", "--env", "qa", *args, env=env)
        assert plain.finish() == 2 and "+ cluster dmp-local" in plain.output and "\x1b[" not in plain.output
    piped = subprocess_cli(qa, "plan", "--env", "qa")
    assert piped.returncode == 2 and "+ cluster dmp-local" in piped.stdout and "\x1b[" not in piped.stdout


def _hold_lock(qa, seconds: int = 120) -> None:
    qa.store().put_json(deploy_lock.KEY, {"holder": "arn:aws:sts::123456789012:assumed-role/ci/other-run",
                                          "host": "another-host", "pid": 1, "command": "apply",
                                          "started": time.time(), "expires": time.time() + seconds})


@pytest.mark.subprocess
def test_a_plan_that_changed_under_the_lock_is_shown_and_asked_again(qa, local_aws, run_cli):
    assert run_cli("apply", "--env", "qa", "--yes").code == 0
    qa.edit("retention_days = 7", "retention_days = 14")
    _hold_lock(qa)

    terminal = Terminal(qa, "apply", "--env", "qa", "--lock-timeout", "90")
    terminal.expect("Only 'yes' is accepted")
    terminal.type("yes")  # approves the one change shown...
    terminal.expect("waiting for the deploy lock")
    # ...while another run changes the environment: a log group's retention out of band.
    local_aws.client("logs").put_retention_policy(logGroupName="/dmp-local/router", retentionInDays=30)
    qa.store().delete(deploy_lock.KEY)
    terminal.expect("the plan is now different")
    terminal.expect("Different from what was approved:")
    terminal.expect("retention_days: 30 -> 14")
    terminal.expect("Only 'yes' is accepted")
    terminal.type("no")
    assert terminal.finish() == 1 and "Cancelled: nothing was changed" in terminal.output
    assert retention(local_aws) == 7 and retention(local_aws, "/dmp-local/router") == 30


@pytest.mark.subprocess
def test_with_yes_a_plan_that_changed_under_the_lock_stops(qa, local_aws, run_cli):
    assert run_cli("apply", "--env", "qa", "--yes").code == 0
    qa.edit("retention_days = 7", "retention_days = 14")
    _hold_lock(qa)
    process = subprocess.Popen([sys.executable, "-c", WRAPPER, "--log-format", "json", "apply", "--env", "qa",
                                "--yes", "--json", "--lock-timeout", "90"], cwd=ROOT, env=qa.env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:  # it waits for the lock once it has planned
        if "waiting for the deploy lock" in line:
            break
    local_aws.client("logs").put_retention_policy(logGroupName="/dmp-local/router", retentionInDays=30)
    qa.store().delete(deploy_lock.KEY)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 1
    document = json.loads(out)
    assert document["error"]["kind"] == "approval" and "--yes approved the plan as it was" in \
        document["error"]["message"]
    assert retention(local_aws) == 7 and retention(local_aws, "/dmp-local/router") == 30


def test_the_embedded_aws_needs_no_approval(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0  # stdin is not a terminal here either


# --- exit codes and JSON ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (("plan",), "the following arguments are required: --env"),
    (("plan", "--env", "local", "--bogus"), "unrecognized arguments: --bogus"),
    (("nosuchcommand",), "invalid choice: 'nosuchcommand'"),
    (("lock", "grab", "--env", "local"), "invalid choice: 'grab'"),
])
def test_usage_errors_exit_1_not_2(run_cli, args, fragment):
    result = run_cli(*args)
    assert result.code == 1 and fragment in result.stderr and result.stdout == ""
    as_json = run_cli(*args, "--json")
    assert as_json.code == 1
    assert as_json.json == {"status": "error", "error": {"kind": "usage", "message": as_json.json["error"]["message"]}}
    assert fragment in as_json.json["error"]["message"]


@pytest.mark.subprocess
def test_usage_error_in_a_real_process_exits_1(qa):
    result = subprocess_cli(qa, "drift", "--json")
    assert result.returncode == 1 and json.loads(result.stdout)["error"]["kind"] == "usage"


@pytest.mark.parametrize("args, kind", [
    (("plan", "--env", "qa-nonexistent", "--json"), "config"),
    (("plan", "--env", "local", "--image", "api=bad tag!", "--json"), "config"),
    (("plan", "--env", "local", "--image", "api=a", "--image", "api=b", "--json"), "config"),
    (("history", "--env", "local", "--json"), None),
])
def test_every_json_outcome_is_one_document(local_aws, run_cli, args, kind):
    result = run_cli(*args)
    document = json.loads(result.stdout)  # raises unless stdout is exactly one JSON document
    if kind:
        assert result.code == 1 and document["status"] == "error" and document["error"]["kind"] == kind
    else:
        assert result.code == 0 and "error" not in document


def test_an_unknown_profile_says_what_to_do(qa, run_cli, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    result = run_cli("plan", "--env", "qa", "--json")
    assert result.code == 1 and result.json["error"]["kind"] == "profile"
    assert "'no-such-profile'" in result.json["error"]["message"] and "internal" not in result.stderr


def test_an_expired_sso_session_says_aws_sso_login(qa, run_cli, monkeypatch, tmp_path):
    aws_config = tmp_path / "aws-config"
    aws_config.write_text("[profile dmp-qa]\nsso_session = corp\nsso_account_id = 123456789012\n"
                          "sso_role_name = Deployer\nregion = eu-west-2\n\n[sso-session corp]\n"
                          "sso_start_url = https://corp.awsapps.com/start\nsso_region = eu-west-2\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_config))
    monkeypatch.setenv("HOME", str(tmp_path))  # no SSO token cache: as after the session expired
    monkeypatch.setenv("AWS_PROFILE", "dmp-qa")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    result = run_cli("plan", "--env", "qa")
    assert result.code == 1
    assert "error: the AWS SSO session for profile 'dmp-qa'" in result.stderr
    assert "`aws sso login --profile dmp-qa`" in result.stderr and "internal" not in result.stderr


def test_nothing_answering_is_reported_at_once(qa, run_cli, monkeypatch):
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    result = run_cli("plan", "--env", "qa", "--json")
    assert time.monotonic() - started < 5  # not ~9 s of silent retries on the first (STS) call
    assert result.code == 1 and result.json["error"]["kind"] == "connection"
    assert f"nothing answers at http://127.0.0.1:{port}" in result.json["error"]["message"]
    assert "python run.py local up" in result.json["error"]["message"]


@pytest.mark.parametrize("exc, kind, fragment", [
    (botocore.exceptions.EndpointConnectionError(endpoint_url="https://sts.eu-west-2.amazonaws.com/"),
     "connection", "cannot reach STS at https://sts.eu-west-2.amazonaws.com/"),
    (botocore.exceptions.ConnectTimeoutError(endpoint_url="https://ecs.eu-west-2.amazonaws.com/"),
     "connection", "timed out reaching ECS at"),
    (botocore.exceptions.ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}},
                                     "DescribeServices"), "throttled", "AWS throttled DescribeServices"),
    (botocore.exceptions.ClientError({"Error": {"Code": "ExpiredToken", "Message": "expired"}},
                                     "GetCallerIdentity"), "credentials", "aws sso login --profile"),
    (botocore.exceptions.NoCredentialsError(), "credentials", "no usable AWS credentials"),
    (botocore.exceptions.UnauthorizedSSOTokenError(), "sso", "aws sso login --profile"),
    (ValueError("a bug"), "internal", "internal error: ValueError: a bug"),
])
def test_failures_are_described_with_what_to_do(exc, kind, fragment):
    got_kind, message = failures.describe(exc)
    assert got_kind == kind and fragment in message and "\n" not in message


@pytest.mark.subprocess
def test_a_closed_pipe_ends_quietly():
    # `render | true`: the reader is gone before render writes (rendering takes a while), so the write fails
    # every time; `render | head -1` fails the same way whenever head exits before render finishes writing.
    process = subprocess.Popen([sys.executable, "run.py", "render", "--env", "local"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    code = process.wait(timeout=60)
    assert stderr == "" and code == 141


def test_revert_needs_approval_too(qa, local_aws, run_cli):
    assert run_cli("apply", "--env", "qa", "--yes").code == 0
    qa.edit("retention_days = 7", "retention_days = 14")
    assert run_cli("apply", "--env", "qa", "--yes").code == 0
    refused = run_cli("revert", "--env", "qa", "--json")  # stdin is not a terminal here
    assert refused.code == 1 and refused.json["error"]["kind"] == "approval"
    assert refused.json["reverted_to"] == 1 and refused.json["changes"] and refused.json["release"] is None
    assert retention(local_aws) == 14
    assert [r["number"] for r in run_cli("history", "--env", "qa", "--json").json["releases"]] == [2, 1]
    approved = run_cli("revert", "--env", "qa", "--yes", "--json")
    assert approved.code == 0 and approved.json["release"] == 3 and retention(local_aws) == 7
