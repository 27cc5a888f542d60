"""The add-users workflow's three task definitions: what they render to, the shell the copier and
cleaner run (exercised for real with sh on a fake `aws`), and how their EFS ids follow the access point."""

from __future__ import annotations

import dataclasses
import json
import re
import os
import subprocess
import sys
import time

import pytest

from dmp_deploy import desired, validation
from dmp_deploy import placeholders
from dmp_deploy.config import load_config
from dmp_deploy.resources import efs
from dmp_deploy.resources import task_definitions as tds
from dmp_deploy.resources.base import Context, Registry

FS = "<id of efs_file_system dmp-local-add-users>"
AP = "<id of efs_access_point dmp-local-add-users>"
STEMS = ("add-users-copier", "add-users", "add-users-cleaner")


@pytest.fixture(scope="module")
def rendered():
    config = load_config("local")
    return desired.render_task_definitions(config, {a: c.image_tag for a, c in config.apps.items()})


def container(document: dict) -> dict:
    (only,) = document["containerDefinitions"]
    return only


@pytest.mark.parametrize("stem, read_only", [("add-users-copier", False), ("add-users", True),
                                             ("add-users-cleaner", False)])
def test_each_mounts_the_access_point_over_tls_with_iam(rendered, stem, read_only):
    document = rendered[stem]
    validation.check_parameters("ecs", "RegisterTaskDefinition", document, stem)  # placeholders are valid strings
    assert document["volumes"] == [{"name": "add-users", "efsVolumeConfiguration": {
        "fileSystemId": FS, "transitEncryption": "ENABLED",
        "authorizationConfig": {"accessPointId": AP, "iam": "ENABLED"}}}]
    (mount,) = container(document)["mountPoints"]
    assert mount == {"sourceVolume": "add-users", "containerPath": "/mnt/add-users", "readOnly": read_only}
    assert container(document)["logConfiguration"]["options"]["awslogs-group"] == "/dmp-local/add-users"
    assert document["taskRoleArn"].endswith(f"/dmp-local-{stem}-task")
    # the copier and cleaner are shell on the AWS CLI image; add-users is the program, run by the api's Python
    assert container(document)["entryPoint"] == (["python", "-c"] if stem == "add-users" else ["sh", "-c"])


def test_the_add_users_task_gets_its_token_from_secrets_only(rendered):
    document = rendered["add-users"]
    c = container(document)
    assert c["image"] == "123456789012.dkr.ecr.eu-west-2.amazonaws.com/api-wsgi:local"
    assert c["secrets"] == [{"name": "DM_DATA_API_TOKEN",
                             "valueFrom": "arn:aws:ssm:eu-west-2:123456789012:parameter/dmp-local/data-api-auth-token"}]
    assert {e["name"]: e["value"] for e in c["environment"]}["DM_DATA_API_URL"] == "http://api.dmp-local.internal:8080"
    assert c["workingDirectory"] == "/app"
    environment = {e["name"]: e["value"] for e in c["environment"]}
    assert environment["ADD_USERS_PROGRAM"] == "bundled" and environment["USERS_DIR"] == "/mnt/add-users"
    assert environment["ADD_USERS_MAX_BYTES"] == "1048576"
    assert "DM_DATA_API_TOKEN" not in environment  # only from secrets: the program reads it, never argv


def test_the_copier_and_cleaner_use_the_aws_cli_image(rendered):
    for stem in ("add-users-copier", "add-users-cleaner"):
        assert container(rendered[stem])["image"] == load_config("local").images.aws_cli_image


# --- the shell the containers run, for real (the add-users program: tests/test_add_users_program.py) ------------

@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("name", ["", "..", "../etc/passwd", "a/b"])
def test_a_file_name_that_is_not_a_plain_name_is_refused(rendered, tmp_path, stem, name):
    definition = container(rendered[stem])
    run = subprocess.run([sys.executable if definition["entryPoint"][0] == "python" else "/bin/sh", "-c",
                          definition["command"][0]], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                         env={"PATH": "/nonexistent", "USERS_FILE": name, "USERS_DIR": "/mnt/add-users"})
    assert run.returncode == 2
    assert "refusing the file name" in run.stderr or "must be a plain file name" in run.stdout


def test_the_copier_copies_the_object_to_the_named_file_and_the_cleaner_removes_it(rendered, tmp_path):
    mount = tmp_path / "mnt"
    mount.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_aws = bin_dir / "aws"  # records its arguments and writes the destination, as `aws s3 cp` would
    fake_aws.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$FAKE_LOG"\nfor last; do :; done\necho content > "$last"\n')
    fake_aws.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "UPLOAD_BUCKET": "b", "UPLOAD_KEY": "uploads/x y.jsonl",
           "USERS_FILE": "exec-1", "FAKE_LOG": str(tmp_path / "aws.log")}

    def run(stem):
        command = container(rendered[stem])["command"][0].replace("/mnt/add-users", str(mount))
        return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=30, env=env)

    assert run("add-users-copier").returncode == 0
    assert (tmp_path / "aws.log").read_text().splitlines() == [  # one argument each, spaces and all
        "s3", "cp", "--only-show-errors", "--no-progress", "s3://b/uploads/x y.jsonl", f"{mount}/exec-1"]
    assert oct((mount / "exec-1").stat().st_mode & 0o777) == "0o600"
    assert time.time() - (mount / "exec-1").stat().st_mtime < 60  # its age counts from the copy

    env["UPLOAD_VERSION"] = "v 2"  # the event names a version: exactly that one is fetched
    assert run("add-users-copier").returncode == 0
    assert (tmp_path / "aws.log").read_text().splitlines() == [
        "s3api", "get-object", "--bucket", "b", "--key", "uploads/x y.jsonl", "--version-id", "v 2",
        f"{mount}/exec-1"]

    # The cleaner removes its file, and any file older than the longest task timeout (+10 min): left over by a
    # run whose own cleanup failed. A younger file may still be in use and stays.
    stale, recent = mount / "exec-0-old", mount / "exec-2-running"
    for path, age_minutes in ((stale, 26), (recent, 20)):
        path.write_text("x")
        os.utime(path, (time.time() - age_minutes * 60,) * 2)
    cleaned = run("add-users-cleaner")
    assert cleaned.returncode == 0, cleaned.stderr
    assert not (mount / "exec-1").exists() and not stale.exists() and recent.exists()
    assert "exec-0-old" in cleaned.stdout


def test_the_cleaners_sweep_follows_the_longest_task_timeout(rendered):
    assert "-mmin +25 " in container(rendered["add-users-cleaner"])["command"][0]  # (900 s + 600 s) / 60
    config = load_config("local")
    longer = dataclasses.replace(config, add_users=dataclasses.replace(config.add_users, task_timeout_seconds=3600))
    documents = desired.render_task_definitions(longer, {a: c.image_tag for a, c in longer.apps.items()})
    assert "-mmin +70 " in container(documents["add-users-cleaner"])["command"][0]


def test_a_failing_cleanup_exits_non_zero(rendered, tmp_path):
    command = container(rendered["add-users-cleaner"])["command"][0].replace("/mnt/add-users", str(tmp_path / "no"))
    run = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "USERS_FILE": "exec-1"})
    assert run.returncode != 0  # the sweep cannot read the directory: the state machine retries, then reports


# --- EFS ids: placeholders in templates, live ids in AWS ---------------------------------------------------------

def _context_with(registry_entries) -> Context:
    ctx = Context.__new__(Context)
    ctx.registry = Registry()
    for kind, name, ids in registry_entries:
        ctx.registry.put(kind, name, **ids)
    return ctx


def test_efs_placeholders_resolve_to_ids_and_read_back(rendered):
    ctx = _context_with([("efs_file_system", "dmp-local-add-users", {"id": "fs-1"}),
                         ("efs_access_point", "dmp-local-add-users", {"id": "fsap-1"}),
                         ("efs_file_system_label", "fs-1", {"label": "dmp-local-add-users"}),
                         ("efs_access_point_label", "fsap-1", {"label": "dmp-local-add-users"})])
    written = efs.with_ids(ctx, rendered["add-users"])
    config = written["volumes"][0]["efsVolumeConfiguration"]
    assert (config["fileSystemId"], config["authorizationConfig"]["accessPointId"]) == ("fs-1", "fsap-1")
    assert efs.with_placeholders(ctx, written) == rendered["add-users"]
    assert efs.volume_references(written) == ["fs-1", "fsap-1"]
    assert efs.with_ids(ctx, rendered["api"]) == rendered["api"]  # no EFS volume: untouched


def test_a_revision_naming_a_replaced_access_point_is_registered_again_despite_its_hash(rendered):
    kind = tds.TaskDefinitions()
    document = rendered["add-users"]
    spec = {**tds.canonical_definition(document), "tags": {tds.CONTENT_HASH_TAG: "h"}}
    replaced = placeholders.efs_id("efs_access_point", efs.replaced_label("dmp-local-add-users", "fsap-1"))
    live_document = json.loads(json.dumps(document).replace(AP, replaced))
    live = tds.Live(spec={**tds.canonical_definition(live_document), "tags": {tds.CONTENT_HASH_TAG: "h"}},
                    ids={"revision": 4})
    changes = kind.diff("dmp-local-add-users", spec, live)
    assert [c.path for c in changes] == [
        "revision", "volume.add-users.efsVolumeConfiguration.authorizationConfig.accessPointId"]
    assert kind.diff("dmp-local-add-users", spec, tds.Live(spec=dict(spec), ids={"revision": 4})) == []


def test_task_definitions_follow_a_replaced_access_point_in_the_same_apply(local_aws, run_cli, tmp_path, monkeypatch):
    from tests.test_add_users_access import _config_dir

    assert run_cli("apply", "--env", "local").code == 0
    ecs, client = local_aws.client("ecs"), local_aws.client("efs")
    (old,) = client.describe_access_points()["AccessPoints"]
    _config_dir(tmp_path, monkeypatch, posix_uid=1001)

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    # The new identities cascade, shown up front: the revisions naming the access point, then the machine naming
    # the revisions (a new version) and the alias routing to that version (issue 12).
    assert sorted((c["kind"], c["name"], c["action"]) for c in plan.json["changes"]) == [
        ("efs_access_point", "dmp-local-add-users", "replace"),
        ("state_machine", "dmp-local-add-users", "update"),
        ("state_machine_alias", "dmp-local-add-users:live", "update"),
        ("task_definition", "dmp-local-add-users", "update"),
        ("task_definition", "dmp-local-add-users-cleaner", "update"),
        ("task_definition", "dmp-local-add-users-copier", "update")]

    applied = run_cli("apply", "--env", "local", "--json")
    assert applied.code == 0, applied.stdout + applied.stderr
    (new,) = client.describe_access_points()["AccessPoints"]
    assert new["AccessPointId"] != old["AccessPointId"]
    for family in ("dmp-local-add-users", "dmp-local-add-users-copier", "dmp-local-add-users-cleaner"):
        definition = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
        efs_config = definition["volumes"][0]["efsVolumeConfiguration"]
        assert efs_config["authorizationConfig"]["accessPointId"] == new["AccessPointId"]
        assert efs_config["fileSystemId"] == new["FileSystemId"]
        assert definition["revision"] == 2
    states = local_aws.client("stepfunctions")
    alias = states.describe_state_machine_alias(
        stateMachineAliasArn="arn:aws:states:eu-west-2:123456789012:stateMachine:dmp-local-add-users:live")
    (route,) = alias["routingConfiguration"]
    machine = states.describe_state_machine(stateMachineArn=route["stateMachineVersionArn"])  # what triggers run
    named = set(re.findall(r"task-definition/([\w-]+:\d+)", machine["definition"]))
    assert named == {"dmp-local-add-users:2", "dmp-local-add-users-copier:2", "dmp-local-add-users-cleaner:2"}
    assert run_cli("plan", "--env", "local").code == 0
    assert run_cli("drift", "--env", "local").code == 0
