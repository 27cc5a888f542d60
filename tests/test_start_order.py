"""Start order: apply rolls the APIs out first, then the frontends, then the router, each tier only once the
previous one has rolled out; `apply --migrate` runs db-migration (exit 0) before any service changes.
Against the embedded AWS, which rolls services out (and fails them, or one-off tasks, on request)."""

import pytest

from dmp_deploy import session
from dmp_deploy.apps import APPS, FRONTENDS, START_ORDER, start_tier
from dmp_deploy.local import moto_compat

API_TIER = ["dmp-local-antivirus-api", "dmp-local-api", "dmp-local-search-api"]
FRONTEND_TIER = sorted(f"dmp-local-{f}" for f in FRONTENDS)


def test_every_app_starts_with_or_after_the_apps_it_calls():
    assert sorted(app for tier in START_ORDER for app in tier) == sorted(APPS)
    for app in APPS.values():
        for callee in app.calls:
            assert start_tier(app.name) >= start_tier(callee), (app.name, callee)
    assert start_tier("api") < start_tier("buyer-frontend") < start_tier("router")


@pytest.fixture
def ecs_calls(monkeypatch):
    """The mutating ECS calls of every command run in the test, in order: (operation, service or family)."""
    calls = CallLog()
    rolled_out = calls.rolled_out

    def record(aws):
        def hook(call):
            if call.service == "ecs" and call.mutating and call.operation in (
                    "create_service", "update_service", "run_task"):
                what = call.params.get("serviceName") or call.params.get("service") or \
                    call.params["taskDefinition"].rsplit("/", 1)[-1].split(":")[0]
                calls.append((call.operation, what))
                if call.operation == "create_service":
                    rolled_out[what] = _rolled_out()
        aws.hooks.append(hook)

    monkeypatch.setattr(session, "ON_CONNECT", [*session.ON_CONNECT, record])
    return calls


class CallLog(list):
    """(operation, service or family) in call order; `rolled_out[service]`: the services whose rollout had
    completed when that service was created."""

    def __init__(self):
        super().__init__()
        self.rolled_out: dict[str, set[str]] = {}


def _rolled_out() -> set[str]:
    """Straight from the in-process embedded ECS (a DescribeServices would step the rollouts on)."""
    from moto.ecs.models import ecs_backends

    services = ecs_backends["123456789012"]["eu-west-2"].services.values()
    return {s.name for s in services if s.status == "ACTIVE" and len(s.deployments) == 1
            and s.deployments[0].get("rolloutState") == "COMPLETED" and s.running_count == s.desired_count}


def test_a_first_apply_plans_and_rolls_out_apis_then_frontends_then_the_router(local_aws, run_cli, ecs_calls):
    plan = run_cli("plan", "--env", "local", "--json")
    services = [c["name"] for c in plan.json["changes"] if c["kind"] == "service"]
    assert services == API_TIER + FRONTEND_TIER + ["dmp-local-router"]  # the plan shows apply's order

    result = run_cli("apply", "--env", "local", "--json")
    assert result.code == 0, result.stdout + result.stderr
    created = [name for op, name in ecs_calls if op == "create_service"]
    # Tier by tier; within a tier the services are created at the same time, so in any order.
    tiers = [API_TIER, FRONTEND_TIER, ["dmp-local-router"]]
    assert [sorted(created[i:i + len(t)]) for i, t in zip((0, 3, 9), tiers)] == tiers and len(created) == 10
    # Each tier's services were created only once every service of the tiers before had rolled out.
    rolled_out = ecs_calls.rolled_out
    assert all(rolled_out[name] == set() for name in API_TIER)
    assert all(rolled_out[name] >= set(API_TIER) and not rolled_out[name] & set(FRONTEND_TIER)
               for name in FRONTEND_TIER)
    assert rolled_out["dmp-local-router"] == set(API_TIER + FRONTEND_TIER)


def test_a_failed_api_rollout_fails_the_apply_before_any_frontend_changes(local_aws, run_cli, local_config,
                                                                          ecs_calls):
    assert run_cli("apply", "--env", "local").code == 0
    ecs = local_aws.client("ecs")

    def running():
        arns = ecs.list_services(cluster="dmp-local", maxResults=100)["serviceArns"]
        return {s["serviceName"]: s["taskDefinition"] for i in range(0, len(arns), 10)
                for s in ecs.describe_services(cluster="dmp-local", services=arns[i:i + 10])["services"]}

    before = running()
    local_config('dm_environment = "native-aws"', 'dm_environment = "native-aws-2"')  # every app's settings
    local_config('rate_limiting_enabled = "enabled"', 'rate_limiting_enabled = "disabled"')  # and the router's
    moto_compat.script_rollout_failure("dmp-local-api", reason="Essential container in task exited")
    ecs_calls.clear()

    result = run_cli("apply", "--env", "local", "--json")
    assert result.code == 1
    error = result.json["error"]["message"]
    assert "dmp-local-api: ECS rolled back" in error
    assert "dmp-local-admin-frontend and the services that start after it were not changed" in error
    assert sorted(name for op, name in ecs_calls if op == "update_service") == API_TIER  # nothing after the APIs
    after = running()
    assert after["dmp-local-api"] == before["dmp-local-api"]  # rolled back
    for name in FRONTEND_TIER + ["dmp-local-router"]:
        assert after[name] == before[name]
    assert after["dmp-local-search-api"] != before["dmp-local-search-api"]  # its own tier went ahead

    fixed = run_cli("apply", "--env", "local", "--json")  # the failure was one-shot: the same apply goes through
    assert fixed.code == 0, fixed.json.get("error")
    assert all(running()[name] != before[name] for name in FRONTEND_TIER + ["dmp-local-router", "dmp-local-api"])
    assert run_cli("plan", "--env", "local").code == 0


def test_apply_migrate_runs_db_migration_before_any_service_and_only_when_something_rolls_out(
        local_aws, run_cli, ecs_calls):
    result = run_cli("apply", "--env", "local", "--migrate", "--json")
    assert result.code == 0, result.stdout + result.stderr
    assert ecs_calls[0] == ("run_task", "dmp-local-db-migration")  # before the first CreateService
    assert [op for op, _ in ecs_calls].count("run_task") == 1
    assert result.json["migration"]["exit_code"] == 0
    assert result.json["migration"]["message"] == "db-migration: wsgi exited with 0"
    task = local_aws.client("ecs").describe_tasks(cluster="dmp-local", tasks=[result.json["migration"]["task_arn"]])
    assert task["tasks"][0]["lastStatus"] == "STOPPED"  # followed to the end before the services were created

    ecs_calls.clear()
    again = run_cli("apply", "--env", "local", "--migrate", "--json")
    assert again.code == 0 and again.json["calls"]["mutating"] == 0 and ecs_calls == []
    assert again.json["migration"] is None
    assert "no service rolled out in this apply, so db-migration was not run" in again.json["migration_note"]


def test_a_failing_migration_fails_apply_migrate_before_the_api_changes(local_aws, run_cli, ecs_calls):
    assert run_cli("apply", "--env", "local").code == 0
    api_before = local_aws.client("ecs").describe_services(cluster="dmp-local", services=["dmp-local-api"])[
        "services"][0]["taskDefinition"]
    moto_compat.script_task_outcome("dmp-local-db-migration", 3, reason="alembic: can't locate revision")
    ecs_calls.clear()

    result = run_cli("apply", "--env", "local", "--migrate", "--image", "api=NEWTAG", "--json")
    assert result.code == 1
    assert "apply --migrate: db-migration did not succeed: wsgi exited with 3" in result.json["error"]["message"]
    assert "No service was changed" in result.json["error"]["message"]
    assert result.json["release"] is None
    assert ecs_calls == [("run_task", "dmp-local-db-migration")]  # and no UpdateService
    assert local_aws.client("ecs").describe_services(cluster="dmp-local", services=["dmp-local-api"])[
        "services"][0]["taskDefinition"] == api_before

    moto_compat.clear_task_outcomes()  # the migration is fixed: the same deploy goes through
    fixed = run_cli("apply", "--env", "local", "--migrate", "--image", "api=NEWTAG", "--json")
    assert fixed.code == 0, fixed.json.get("error")
    assert [op for op, _ in ecs_calls].count("run_task") == 2 and ("update_service", "dmp-local-api") in ecs_calls
