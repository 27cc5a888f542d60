"""The concurrent executor on the real kinds against the embedded AWS, with latency injected before every mutating
call (tests/timeline.py): independent changes are under way at the same time, dependent ones never are, and the
result is the same as one change at a time."""

from __future__ import annotations

import pytest

from dmp_deploy import session
from dmp_deploy.apps import APPS
from timeline import Timeline

LATENCY = 0.05


@pytest.fixture
def timeline(monkeypatch):
    line = Timeline(latency=LATENCY)
    monkeypatch.setattr(session, "ON_CONNECT", [*session.ON_CONNECT, line.attach])
    return line


def ended_before(first: list, then: list) -> bool:
    """Every call of `first` had its answer before any call of `then` was made."""
    return bool(first) and bool(then) and max(s.end for s in first) <= min(s.start for s in then)


def test_a_first_apply_runs_independent_changes_at_once_and_dependent_ones_after(local_aws, run_cli, timeline):
    planned = run_cli("plan", "--env", "local", "--json")
    result = run_cli("apply", "--env", "local", "--json")
    assert result.code == 0, result.stdout[-2000:] + result.stderr[-3000:]
    # The summary lists the changes in the plan's order, whatever order they finished in.
    assert result.json["changes"] == planned.json["changes"] and result.json["applied"] == len(planned.json["changes"])

    assert all(s.end is not None for s in timeline.spans)
    # Independent creates were under way at the same time, on different executor threads.
    assert timeline.most_changes_at_once({"create_log_group"}) >= 2
    assert timeline.most_changes_at_once({"create_role"}) >= 2
    assert timeline.most_changes_at_once({"register_task_definition"}) >= 2
    assert timeline.most_changes_at_once() >= 4
    # Dependent ones never were: what a kind depends on had answered before it started.
    assert ended_before(timeline.of("create_key"), timeline.of("create_role"))
    assert ended_before(timeline.of("create_role") + timeline.of("put_role_policy"),
                        timeline.of("register_task_definition"))
    assert ended_before(timeline.of("create_load_balancer"), timeline.of("create_listener"))
    assert ended_before(timeline.of("create_security_group"), timeline.of("authorize_security_group_ingress"))
    assert ended_before(timeline.of("register_task_definition"), timeline.of("create_service", "ecs"))
    assert ended_before(timeline.of("create_rule", "elbv2"), timeline.of("create_service", "ecs"))  # the listener rules
    assert ended_before(timeline.of("create_state_machine_alias"), timeline.of("put_targets"))
    # The release record is written once every change is done.
    records = [s for s in timeline.of("put_object") if "releases/" in s.params.get("Key", "")]
    others = [s for s in timeline.spans if s.service != "s3"]  # the state bucket and the lock aside
    assert ended_before(others, records)
    assert run_cli("plan", "--env", "local").code == 0


def test_an_all_images_release_registers_and_updates_each_tier_at_once(local_aws, run_cli, timeline):
    assert run_cli("apply", "--env", "local").code == 0
    timeline.spans.clear()
    bump = [arg for app in sorted(APPS) for arg in ("--image", f"{app}=bumped")]
    result = run_cli("apply", "--env", "local", "--json", *bump)
    assert result.code == 0, result.stdout[-2000:] + result.stderr[-3000:]
    registered, updated = timeline.of("register_task_definition"), timeline.of("update_service", "ecs")
    assert len(registered) >= len(APPS) and len(updated) == len(APPS)
    assert timeline.most_changes_at_once({"register_task_definition"}) >= 4
    assert ended_before(registered, updated)  # every revision before any service moves to it
    tier = {"api": 0, "search-api": 0, "antivirus-api": 0, "router": 2}

    def service_tier(span) -> int:
        return tier.get(span.params["service"].removeprefix("dmp-local-"), 1)

    by_tier = [[s for s in updated if service_tier(s) == t] for t in range(3)]
    assert [len(t) for t in by_tier] == [3, 6, 1]
    assert timeline.most_changes_at_once({"update_service"}) >= 3  # a tier's services at once
    assert ended_before(by_tier[0], by_tier[1]) and ended_before(by_tier[1], by_tier[2])
    assert run_cli("plan", "--env", "local", *bump).code == 0


def test_one_change_at_a_time_makes_the_plans_calls_in_the_plans_order(local_aws, run_cli, timeline):
    result = run_cli("apply", "--env", "local", "--json", "--concurrency", "1")
    assert result.code == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert timeline.most_changes_at_once() == 0  # nothing ran on the executor's threads
    assert all(a.end <= b.start for a, b in zip(timeline.spans, timeline.spans[1:]))  # one call at a time
    # Each kind's calls in one block, the kinds in the plan's order.
    kinds_in_order = ["create_log_group", "create_key", "create_role", "create_security_group",
                      "register_task_definition", "create_cluster", "create_target_group", "create_service"]
    for op, following in zip(kinds_in_order, kinds_in_order[1:]):
        then = timeline.of(following, "ecs" if following == "create_service" else None)
        assert ended_before(timeline.of(op), then), (op, following)
    assert run_cli("plan", "--env", "local").code == 0
