"""Release records and history: every apply that changed something is one immutable, numbered record."""

import pytest

from dmp_deploy import aws as aws_module
from dmp_deploy import releases
from dmp_deploy.aws import Aws
from dmp_deploy.config import load_config
from dmp_deploy.state_store import StateStore


@pytest.fixture
def store(local_aws):
    aws = Aws(local_aws.region, endpoint_url=local_aws.endpoint,
              credentials={"aws_access_key_id": "local", "aws_secret_access_key": "local"})
    return StateStore(load_config("local"), aws)


def test_apply_records_a_release_and_a_noop_apply_does_not(local_aws, run_cli, store):
    first = run_cli("apply", "--env", "local", "--json")
    assert first.code == 0, first.stderr
    assert first.json["release"] == 1
    record = releases.load(store, 1)
    assert record["kind"] == "apply" and record["caller"].startswith("arn:aws:")
    assert record["desired"]["log_group"]  # the rendered desired state
    assert record["live"]["log_group"]  # the identifiers it resolved
    assert record["changes"] and record["image_tags"]["api"] == "local"

    noop = run_cli("apply", "--env", "local", "--json")
    assert noop.json["release"] is None and noop.json["calls"]["mutating"] == 0
    assert releases.numbers(store) == [1]


def test_history_lists_releases_newest_first(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    local_aws.client("logs").put_retention_policy(logGroupName="/dmp-local/api", retentionInDays=1)
    assert run_cli("apply", "--env", "local").code == 0
    history = run_cli("history", "--env", "local", "--json")
    assert history.code == 0
    assert [r["number"] for r in history.json["releases"]] == [2, 1]
    assert [c["name"] for c in history.json["releases"][0]["changes"]] == ["/dmp-local/api"]
    text = run_cli("history", "--env", "local").stdout
    assert text.index("release 2") < text.index("release 1")


def test_history_before_any_release(local_aws, run_cli):
    result = run_cli("history", "--env", "local")
    assert result.code == 0 and "no releases yet" in result.stdout


def test_a_failed_apply_records_nothing(local_aws, run_cli, store, monkeypatch):
    original = aws_module.Aws.call

    def failing(self, service, operation, **params):
        if operation == "put_retention_policy":
            raise RuntimeError("injected failure")
        return original(self, service, operation, **params)

    monkeypatch.setattr(aws_module.Aws, "call", failing)
    result = run_cli("apply", "--env", "local")
    assert result.code == 1 and "injected failure" in result.stderr
    assert releases.numbers(store) == []
    monkeypatch.setattr(aws_module.Aws, "call", original)
    assert run_cli("apply", "--env", "local").code == 0  # converges
    assert releases.numbers(store) == [1]


def test_release_numbers_are_never_written_twice(store):
    store.ensure()
    record = {"kind": "apply", "time": "2026-01-01T00:00:00Z", "changes": [], "desired": {}, "task_definitions": {},
              "state_machines": {}, "live": {}}
    assert releases.write(store, record) == 1
    assert releases.write(store, record) == 2
    # a concurrent writer that computed the same number loses the conditional write and takes the next
    from dmp_deploy.state_store import precondition_failed
    with pytest.raises(Exception) as err:
        store.put_json(releases.key(2), {"kind": "impostor"}, if_none_match=True)
    assert precondition_failed(err.value)
    assert releases.load(store, 2)["kind"] == "apply"


@pytest.mark.parametrize("killed_before, shown, records", [
    ("record", "release", 2),  # the changes were made, nothing recorded them: a new release records the state
    ("index", "index", 2),     # release 2 was written, the index still names release 1: the index is repaired
])
def test_a_run_killed_while_recording_is_shown_by_plan_and_finished_by_apply(
        local_aws, run_cli, store, monkeypatch, killed_before, shown, records):
    from crash_support import Crasher, SimulatedCrash, hooked
    from dmp_deploy import lock as lock_module

    assert run_cli("apply", "--env", "local").code == 0

    def wanted(call):
        key = call.params.get("Key", "")
        return call.operation == "put_object" and (
            key.startswith("releases/0") if killed_before == "record" else key == releases.INDEX)
    with hooked(monkeypatch, Crasher(when=wanted)):
        with pytest.raises(SimulatedCrash):
            run_cli("apply", "--env", "local", "--image", "api=t2")
    monkeypatch.setattr(lock_module, "now", lambda: __import__("time").time() + 3600)  # its lease has expired

    plan = run_cli("plan", "--env", "local", "--image", "api=t2", "--json")
    assert plan.code == 2
    (change,) = plan.json["changes"]
    assert (change["kind"], change["action"]) == ("release_record", "update")
    assert [f["path"] for f in change["fields"]] == [shown]

    applied = run_cli("apply", "--env", "local", "--image", "api=t2", "--json")
    assert applied.code == 0, applied.stdout + applied.stderr
    assert applied.json["release"] == 2
    assert releases.numbers(store) == list(range(1, records + 1))
    index, _ = store.get_json(releases.INDEX)
    assert index["latest"]["number"] == 2
    assert releases.load(store, 2)["image_tags"]["api"] == "t2"
    assert run_cli("plan", "--env", "local", "--image", "api=t2").code == 0
    history = run_cli("history", "--env", "local", "--json")
    assert [r["number"] for r in history.json["releases"]][:2] == [2, 1]
