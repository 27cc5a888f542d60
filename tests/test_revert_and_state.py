"""Revert's dry run, header and repeated reverts; the lock's wait; preflight in plan; bad --image values; and
objects in the state bucket that cannot wedge the tool (issue 13, items 5, 6 and 7)."""

from __future__ import annotations

import time

import pytest

from dmp_deploy import aws as aws_module
from dmp_deploy import lock as deploy_lock
from dmp_deploy import releases
from dmp_deploy.aws import Aws
from dmp_deploy.config import load_config
from dmp_deploy.state_store import StateStore

from test_operator_safety import qa  # noqa: F401  (fixture: a non-embedded environment on the embedded AWS)


@pytest.fixture
def store(local_aws):
    return StateStore(load_config("local"), Aws(local_aws.region, endpoint_url=local_aws.endpoint))


def _put(store, key: str, body: bytes) -> None:
    store.aws.call("s3", "put_object", Bucket=store.bucket, Key=key, Body=body)


def test_revert_dry_run_header_and_a_revert_after_a_revert(local_aws, run_cli, store):
    for image in ("t1", "t2", "t3"):
        result = run_cli("apply", "--env", "local", "--image", f"api={image}", "--json")
        assert result.code == 0, result.stderr[-2000:]
    assert releases.numbers(store) == [1, 2, 3]

    dry = run_cli("revert", "--env", "local", "--dry-run", "--json")
    assert dry.code == 2 and dry.json["reverted_to"] == 2 and dry.json["calls"]["mutating"] == 0
    (api,) = [m for m in dry.json["services"] if m["service"] == "dmp-local-api"]
    assert (api["revision_before"], api["revision_after"]) == ("dmp-local-api:3", "dmp-local-api:2")
    assert all(i.endswith(":t3") for i in api["images_before"]) and all(i.endswith(":t2") for i in api["images_after"])
    assert [m["service"] for m in dry.json["services"]] == ["dmp-local-api"]  # only what changes now
    assert releases.numbers(store) == [1, 2, 3]  # a dry run records nothing

    text = run_cli("revert", "--env", "local", "--dry-run")
    assert "Reverting local to release 2" in text.stdout
    assert "service dmp-local-api: dmp-local-api:3 -> dmp-local-api:2" in text.stdout
    assert "api-wsgi:t3" in text.stdout and "api-wsgi:t2" in text.stdout

    first = run_cli("revert", "--env", "local", "--json")
    assert first.code == 0 and (first.json["reverted_to"], first.json["release"]) == (2, 4)
    second = run_cli("revert", "--env", "local", "--json")  # goes further back, not onto release 3 again
    assert second.code == 0 and (second.json["reverted_to"], second.json["release"]) == (1, 5)
    history = run_cli("history", "--env", "local", "--json").json["releases"]
    assert [(h["number"], h["reverted_to"], h["reverted"]) for h in history[:2]] == [(5, 1, 4), (4, 2, 3)]
    third = run_cli("revert", "--env", "local")
    assert third.code == 1 and "no earlier release" in third.stderr


def test_lock_timeout_overrides_the_configured_wait(local_aws, run_cli, store):
    store.ensure()
    store.put_json(deploy_lock.KEY, {"holder": "someone", "host": "elsewhere", "pid": 1, "command": "apply",
                                     "started": time.time(), "expires": time.time() + 300})
    started = time.monotonic()
    result = run_cli("apply", "--env", "local", "--lock-timeout", "0", "--json")
    assert result.code == 1 and result.json["error"]["kind"] == "lock"
    assert "Waited 0s" in result.json["error"]["message"] and time.monotonic() - started < 60


def test_plan_runs_preflight_and_fails_on_a_missing_image(qa, run_cli):  # noqa: F811
    result = run_cli("plan", "--env", "qa", "--image", "api=no-such-build", "--json")
    assert result.code == 1 and result.json["error"]["kind"] == "preflight"
    assert "api-wsgi:no-such-build: no such tag" in result.json["error"]["message"]
    assert result.json["changes"]  # the plan is still there to read
    assert run_cli("plan", "--env", "qa").code == 2  # the configured tags exist: changes pending


@pytest.mark.parametrize("value, fragment", [
    ("api=bad tag!", "is not a valid image tag"),
    ("api=.hidden", "is not a valid image tag"),
    ("api=" + "x" * 129, "is not a valid image tag"),
])
def test_bad_image_tags_are_refused_before_any_aws_call(local_aws, run_cli, monkeypatch, value, fragment):
    calls = []
    original = aws_module.Aws.call
    monkeypatch.setattr(aws_module.Aws, "call", lambda self, *a, **k: calls.append(a) or original(self, *a, **k))
    result = run_cli("apply", "--env", "local", "--image", value)
    assert result.code == 1 and fragment in result.stderr and calls == []


def test_an_app_given_twice_is_an_error(run_cli):
    result = run_cli("render", "--env", "local", "--image", "api=a1", "--image", "api=a2")
    assert result.code == 1 and "api is given twice" in result.stderr


@pytest.mark.parametrize("body", [b"not json", b'{"task_definitions": "arn", "latest": null}',
                                  b'{"task_definitions": [], "latest": {"number": "7"}}'])
def test_a_corrupt_release_index_is_named_and_removing_it_recovers(local_aws, run_cli, store, body):
    assert run_cli("apply", "--env", "local").code == 0
    assert run_cli("apply", "--env", "local", "--image", "api=t2").code == 0
    (index, _) = store.get_json(releases.INDEX)
    _put(store, releases.INDEX, body)
    for command in ("plan", "drift"):
        result = run_cli(command, "--env", "local", "--json")
        assert result.code == 1 and result.json["error"]["kind"] == "state", result.stdout
        assert f"s3://{store.bucket}/releases/index.json cannot be read" in result.json["error"]["message"]
        assert "Remove it" in result.json["error"]["message"]
    store.delete(releases.INDEX)
    assert run_cli("apply", "--env", "local", "--image", "api=t3").code == 0
    rebuilt, _ = store.get_json(releases.INDEX)
    # every earlier release's revisions are back under protection, not only the newest one's
    assert set(index["task_definitions"]) <= set(rebuilt["task_definitions"])
    assert rebuilt["latest"]["number"] == 3


def test_history_shows_an_unreadable_record_and_goes_on(local_aws, run_cli, store):
    assert run_cli("apply", "--env", "local").code == 0
    assert run_cli("apply", "--env", "local", "--image", "api=t2").code == 0
    _put(store, releases.key(1), b'{"kind": "apply"}')  # an old or damaged record
    text = run_cli("history", "--env", "local")
    assert text.code == 0
    assert "release 2 " in text.stdout and "release 1  UNREADABLE" in text.stdout
    assert "releases/00000001.json cannot be read: time is missing" in text.stdout
    document = run_cli("history", "--env", "local", "--json").json
    assert [r["number"] for r in document["releases"]] == [2, 1] and "unreadable" in document["releases"][1]
    revert = run_cli("revert", "--env", "local", "--to", "1", "--json")
    assert revert.code == 1 and revert.json["error"]["kind"] == "state"
    assert "choose another release" in revert.json["error"]["message"]


def test_a_removed_index_still_protects_every_release_from_pruning(local_aws, run_cli, local_config, store):
    local_config("keep_revisions = 10", "keep_revisions = 1")
    assert run_cli("apply", "--env", "local").code == 0
    first = local_aws.client("ecs").describe_services(cluster="dmp-local", services=["dmp-local-api"])[
        "services"][0]["taskDefinition"]
    assert run_cli("apply", "--env", "local", "--image", "api=t2").code == 0
    store.delete(releases.INDEX)  # as its error message says to do with a damaged one
    assert run_cli("apply", "--env", "local", "--image", "api=t3").code == 0  # prunes down to one revision...
    ecs = local_aws.client("ecs")
    assert ecs.describe_task_definition(taskDefinition=first)["taskDefinition"]["status"] == "ACTIVE"  # ...not 1's
    rebuilt, _ = store.get_json(releases.INDEX)
    assert first in rebuilt["task_definitions"] and rebuilt["latest"]["number"] == 3
    assert run_cli("revert", "--env", "local", "--to", "1").code == 0
