"""The concurrent executor without AWS: which change waits for which, how many run at once, how a failure stops
it, and that one at a time is the plan's order. Kinds here are fakes that sleep and record when each change ran;
tests/test_executor_aws.py runs the real kinds against the embedded AWS."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from dmp_deploy import executor
from dmp_deploy.errors import ApplyError
from dmp_deploy.plan import Change, Plan
from dmp_deploy.planner import Reconciliation
from dmp_deploy.resources import all_kinds
from dmp_deploy.resources.base import Live, ResourceKind

SLOW = 0.15  # seconds a fake change takes: long enough for overlaps to be certain, short enough to be cheap


class Journal:
    """When each change started and ended, on which thread, and how many were in flight at most."""

    def __init__(self):
        self.lock = threading.Lock()
        self.spans: dict[str, tuple[float, float]] = {}
        self.started: list[str] = []
        self.threads: dict[str, str] = {}
        self.in_flight = 0
        self.most_in_flight = 0

    def run(self, label: str, seconds: float, fail: BaseException | None = None):
        with self.lock:
            self.started.append(label)
            self.threads[label] = threading.current_thread().name
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        began = time.monotonic()
        try:
            time.sleep(seconds)
            if fail is not None:
                raise fail
        finally:
            with self.lock:
                self.in_flight -= 1
                self.spans[label] = (began, time.monotonic())

    def before(self, a: str, b: str) -> bool:
        """`a` had ended when `b` started."""
        return self.spans[a][1] <= self.spans[b][0]

    def overlap(self, a: str, b: str) -> bool:
        return self.spans[a][0] < self.spans[b][1] and self.spans[b][0] < self.spans[a][1]


class FakeKind(ResourceKind):
    def __init__(self, kind: str, journal: Journal, depends_on=(), tiers: dict[str, int] | None = None,
                 seconds: dict[str, float] | None = None, fail: dict[str, BaseException] | None = None):
        self.kind, self.depends_on, self.journal = kind, tuple(depends_on), journal
        self.tiers, self.seconds, self.fail = tiers or {}, seconds or {}, fail or {}
        self.settled: list[str] = []

    def change_order(self, config, name: str) -> tuple:
        return (self.tiers.get(name, 0),)

    def _run(self, action: str, name: str):
        self.journal.run(f"{self.kind}:{name}", self.seconds.get(name, SLOW), self.fail.get(name))

    def create(self, ctx, name, spec):
        self._run("create", name)

    def update(self, ctx, name, spec, live, changes):
        self._run("update", name)

    def delete(self, ctx, name, live):
        self._run("delete", name)

    def replace(self, ctx, name, spec, live):
        self._run("replace", name)

    def settle(self, ctx, changes):
        self.settled.extend(c.name for c in changes)


def reconciliation(kinds: list[FakeKind], changes: list[tuple[str, str, str]], concurrency: int = 8):
    plan = Plan("test", [Change(kind, name, action) for kind, name, action in changes])
    config = SimpleNamespace(deployment=SimpleNamespace(concurrent_changes=concurrency))
    desired = SimpleNamespace(resources={k.kind: {} for k in kinds})
    live = {k.kind: {name: Live({}) for kind, name, action in changes if kind == k.kind and action != "create"}
            for k in kinds}
    return Reconciliation(plan, desired, live, {k.kind: k for k in kinds}, SimpleNamespace(config=config))


def labels(changes) -> list[str]:
    return [f"{c.kind}:{c.name}" for c in changes]


def test_independent_changes_run_at_the_same_time():
    journal = Journal()
    kinds = [FakeKind("log_group", journal), FakeKind("role", journal)]
    rec = reconciliation(kinds, [("log_group", "a", "create"), ("log_group", "b", "create"),
                                 ("role", "r", "create")])
    started = time.monotonic()
    done = executor.execute(rec)
    elapsed = time.monotonic() - started
    assert labels(done) == ["log_group:a", "log_group:b", "role:r"]  # plan order, however they finished
    assert journal.most_in_flight == 3
    assert journal.overlap("log_group:a", "log_group:b") and journal.overlap("log_group:a", "role:r")
    assert elapsed < 2 * SLOW  # one round, not three
    assert all(t.startswith(executor.THREAD_PREFIX) for t in journal.threads.values())


def test_a_change_never_overlaps_what_its_kind_depends_on_even_through_a_kind_without_changes():
    journal = Journal()
    kinds = [FakeKind("key", journal), FakeKind("role", journal, depends_on=("key",)),
             FakeKind("task", journal, depends_on=("role",)),
             FakeKind("group", journal, seconds={"g1": 2.5 * SLOW}),
             FakeKind("service", journal, depends_on=("task", "group"))]
    # No role changes: tasks still wait for the key, which they depend on through roles.
    rec = reconciliation(kinds, [("key", "k", "create"), ("group", "g1", "create"), ("group", "g2", "create"),
                                 ("task", "t1", "create"), ("task", "t2", "create"),
                                 ("service", "s1", "create"), ("service", "s2", "create")])
    executor.execute(rec)
    for task in ("task:t1", "task:t2"):
        assert journal.before("key:k", task)
        assert journal.overlap(task, "group:g1")  # unrelated: at the same time
    for service in ("service:s1", "service:s2"):
        assert all(journal.before(other, service) for other in
                   ("key:k", "group:g1", "group:g2", "task:t1", "task:t2"))
    assert journal.overlap("task:t1", "task:t2") and journal.overlap("service:s1", "service:s2")


def test_a_later_tier_starts_only_once_every_change_of_the_tiers_before_is_done():
    journal = Journal()
    tiers = {"api": 0, "search": 0, "buyer": 1, "supplier": 1, "router": 2}
    kinds = [FakeKind("service", journal, tiers=tiers, seconds={"search": 3 * SLOW})]
    rec = reconciliation(kinds, [("service", n, "update") for n in ("api", "search", "buyer", "supplier", "router")])
    executor.execute(rec)
    assert journal.overlap("service:api", "service:search")
    assert journal.overlap("service:buyer", "service:supplier")
    for frontend in ("service:buyer", "service:supplier"):
        assert journal.before("service:search", frontend) and journal.before("service:api", frontend)
        assert journal.before(frontend, "service:router")


def test_deletes_wait_for_every_other_change_and_go_in_reverse_dependency_order():
    journal = Journal()
    kinds = [FakeKind("group", journal), FakeKind("balancer", journal, depends_on=("group",)),
             FakeKind("bucket", journal)]
    rec = reconciliation(kinds, [("bucket", "new", "create"), ("balancer", "old", "delete"),
                                 ("bucket", "gone", "delete"), ("group", "old", "delete")])
    executor.execute(rec)
    assert journal.before("bucket:new", "balancer:old") and journal.before("bucket:new", "group:old")
    assert journal.before("balancer:old", "group:old")  # the balancer used the group: it goes first
    assert journal.overlap("balancer:old", "bucket:gone")  # unrelated deletes: at the same time


def test_a_replace_runs_alone_among_its_kinds_changes():
    journal = Journal()
    kinds = [FakeKind("group", journal)]
    rec = reconciliation(kinds, [("group", "a", "update"), ("group", "b", "replace"), ("group", "c", "update")])
    executor.execute(rec)
    assert journal.before("group:a", "group:b") and journal.before("group:b", "group:c")


def test_a_failure_stops_new_starts_and_lets_the_changes_under_way_finish():
    journal = Journal()
    boom = RuntimeError("AccessDenied somewhere")
    kinds = [FakeKind("log_group", journal, seconds={"fails": 0.05, "slow": 4 * SLOW, "later": SLOW},
                      fail={"fails": boom}),
             FakeKind("task", journal, depends_on=("log_group",))]
    rec = reconciliation(kinds, [("log_group", "fails", "create"), ("log_group", "slow", "create"),
                                 ("log_group", "later", "create"), ("task", "t", "create")], concurrency=2)
    with pytest.raises(ApplyError) as failed:
        executor.execute(rec)
    message = str(failed.value)
    assert journal.started == ["log_group:fails", "log_group:slow"]  # "later" had room once "fails" ended: not started
    assert journal.spans["log_group:slow"][1] > journal.spans["log_group:fails"][1]  # it finished after the failure
    assert message.startswith("create log_group fails failed: RuntimeError: AccessDenied somewhere\n")
    assert ("1 of 4 changes were carried out, 1 of them by changes already under way when it failed (they were "
            "left to finish); nothing was started after it.") in message
    assert kinds[0].settled == []  # nothing settles after a failure


def test_several_failures_report_the_earliest_in_the_plan_and_list_the_others():
    journal = Journal()
    kinds = [FakeKind("service", journal, seconds={"a": 2 * SLOW, "b": 0.01, "c": 0.01},
                      fail={"a": ApplyError("a's rollout failed\nmore"), "b": ApplyError("a's rollout failed\nmore"),
                            "c": RuntimeError("other")})]
    rec = reconciliation(kinds, [("service", n, "update") for n in ("a", "b", "c")])
    with pytest.raises(ApplyError) as failed:
        executor.execute(rec)
    lines = str(failed.value).splitlines()
    assert lines[:3] == ["a's rollout failed", "more", "0 of 3 changes were carried out before it."]
    assert "Also failed: update service c: RuntimeError: other" in lines
    assert "Also failed: for the same reason: update service b" in lines


def test_a_crash_inside_a_change_is_raised_as_it_is_once_the_others_finish():
    class Crash(BaseException):
        pass

    journal = Journal()
    kinds = [FakeKind("log_group", journal, seconds={"dies": 0.01, "slow": 3 * SLOW}, fail={"dies": Crash()})]
    rec = reconciliation(kinds, [("log_group", "dies", "create"), ("log_group", "slow", "create")])
    with pytest.raises(Crash):
        executor.execute(rec)
    assert "log_group:slow" in journal.spans  # finished, not abandoned


def test_the_lock_check_runs_before_every_change_starts_and_stops_new_ones():
    journal = Journal()
    checks: list[list[str]] = []

    class Lost(Exception):
        pass

    def before_each():
        checks.append(list(journal.started))
        if len(checks) == 3:
            raise Lost("the deploy lock was lost")

    kinds = [FakeKind("log_group", journal), FakeKind("task", journal, depends_on=("log_group",))]
    rec = reconciliation(kinds, [("log_group", "a", "create"), ("log_group", "b", "create"),
                                 ("task", "t", "create"), ("task", "u", "create")])
    with pytest.raises(Lost):
        executor.execute(rec, before_each=before_each)
    assert len(checks) == 3 and sorted(journal.started) == ["log_group:a", "log_group:b"]
    assert set(journal.spans) == {"log_group:a", "log_group:b"}  # both finished before the error was raised


@pytest.mark.parametrize("configured", [1, 8])
def test_one_at_a_time_is_the_plans_order_on_the_calling_thread(configured):
    journal = Journal()
    kinds = [FakeKind("a", journal), FakeKind("b", journal), FakeKind("c", journal, depends_on=("a",))]
    changes = [("a", "1", "create"), ("a", "2", "update"), ("b", "1", "create"), ("c", "1", "create"),
               ("b", "2", "delete")]
    rec = reconciliation(kinds, changes, concurrency=configured)
    done = executor.execute(rec, concurrency=1 if configured == 8 else None)
    assert journal.started == [f"{k}:{n}" for k, n, _ in changes] == labels(done)
    assert journal.most_in_flight == 1
    assert set(journal.threads.values()) == {threading.current_thread().name}
    assert all(journal.before(a, b) for a, b in zip(journal.started, journal.started[1:]))


def test_one_at_a_time_reports_a_failure_as_before():
    journal = Journal()
    kinds = [FakeKind("a", journal, fail={"2": RuntimeError("no")}, seconds={"1": 0, "2": 0})]
    rec = reconciliation(kinds, [("a", "1", "create"), ("a", "2", "create"), ("a", "3", "create")], concurrency=1)
    with pytest.raises(ApplyError, match=r"create a 2 failed: RuntimeError: no\n1 of 3 changes were carried out "
                                         r"before it\.\nFix the cause"):
        executor.execute(rec)
    assert journal.started == ["a:1", "a:2"]


def test_prerequisites_of_the_real_kinds():
    """The real kinds' declarations: the chain from roles to services, the start tiers, deletes last."""
    from dmp_deploy.config import load_config

    config = load_config("local")
    kinds = {k.kind: k for k in all_kinds()}
    changes = [Change("log_group", "/dmp-local/api", "create"),
               Change("kms_key", "alias/dmp-local-add-users", "create"),
               Change("iam_role", "dmp-local-api-task", "create"),
               Change("security_group", "dmp-local-api", "create"),
               Change("task_definition", "dmp-local-api", "create"),
               Change("task_definition", "dmp-local-router", "create"),
               Change("state_machine", "dmp-local-add-users", "update"),
               Change("cluster", "dmp-local", "create"),
               Change("service", "dmp-local-api", "create"),
               Change("service", "dmp-local-search-api", "create"),
               Change("service", "dmp-local-buyer-frontend", "create"),
               Change("service", "dmp-local-router", "create"),
               Change("event_rule", "dmp-local-add-users", "update"),
               Change("service", "dmp-local-old", "delete"),
               Change("security_group", "dmp-local-old", "delete")]
    needs = executor.prerequisites(changes, kinds, config)
    at = {f"{c.kind} {c.name}": i for i, c in enumerate(changes)}

    def waits(change: str) -> set[str]:
        return {f"{changes[i].kind} {changes[i].name}" for i in needs[at[change]]}

    assert waits("log_group /dmp-local/api") == set() and waits("security_group dmp-local-api") == set()
    assert waits("iam_role dmp-local-api-task") == {"kms_key alias/dmp-local-add-users"}
    assert waits("task_definition dmp-local-api") == {  # the groups: through the load balancer's DNS name
        "log_group /dmp-local/api", "kms_key alias/dmp-local-add-users", "iam_role dmp-local-api-task",
        "security_group dmp-local-api"}
    assert waits("task_definition dmp-local-router") == waits("task_definition dmp-local-api")  # not each other
    assert "task_definition dmp-local-api" in waits("state_machine dmp-local-add-users")
    apis = waits("service dmp-local-api")
    assert apis == waits("service dmp-local-search-api")
    assert {"cluster dmp-local", "task_definition dmp-local-router", "security_group dmp-local-api"} <= apis
    assert waits("service dmp-local-buyer-frontend") == apis | {"service dmp-local-api", "service dmp-local-search-api"}
    assert waits("service dmp-local-router") == waits("service dmp-local-buyer-frontend") | {
        "service dmp-local-buyer-frontend"}
    assert waits("event_rule dmp-local-add-users") == {
        "kms_key alias/dmp-local-add-users", "iam_role dmp-local-api-task", "log_group /dmp-local/api",
        "security_group dmp-local-api", "task_definition dmp-local-api", "task_definition dmp-local-router",
        "state_machine dmp-local-add-users"}
    assert waits("service dmp-local-old") == set(at) - {"service dmp-local-old", "security_group dmp-local-old"}
    assert waits("security_group dmp-local-old") == set(at) - {"security_group dmp-local-old"}


def test_with_more_ready_than_room_the_longest_chain_starts_first():
    journal = Journal()
    kinds = [FakeKind("rules", journal), FakeKind("namespace", journal),
             FakeKind("registry", journal, depends_on=("namespace",)),
             FakeKind("service", journal, depends_on=("registry",))]
    rec = reconciliation(kinds, [("rules", "r1", "update"), ("rules", "r2", "update"), ("rules", "r3", "update"),
                                 ("namespace", "ns", "create"), ("registry", "api", "create"),
                                 ("service", "api", "create")], concurrency=2)
    done = executor.execute(rec)
    assert journal.started[:2] == ["namespace:ns", "rules:r1"]  # then the plan's order among equals
    assert labels(done) == ["rules:r1", "rules:r2", "rules:r3", "namespace:ns", "registry:api", "service:api"]
    assert executor.chain_lengths(executor.prerequisites(rec.plan.changes, rec.kinds)) == [1, 1, 1, 3, 2, 1]


@pytest.mark.parametrize("value, ok", [(1, True), (8, True), (32, True), (0, False), (33, False)])
def test_the_configured_concurrency_is_checked(value, ok):
    from dmp_deploy import schema
    from dmp_deploy.config import Deployment
    from dmp_deploy.errors import ConfigError

    if ok:
        assert schema.load(Deployment, {"concurrent_changes": value}, "config/x.toml").concurrent_changes == value
        return
    with pytest.raises(ConfigError, match=r"(?s)config/x.toml: .*- concurrent_changes: must be from 1 \(one change "
                                          r"at a time, in the plan's order\) to 32"):
        schema.load(Deployment, {"concurrent_changes": value}, "config/x.toml")


@pytest.mark.parametrize("value", ["0", "33", "many"])
def test_a_bad_concurrency_option_is_a_usage_error_before_any_aws_call(value, run_cli):
    result = run_cli("apply", "--env", "local", "--json", "--concurrency", value)
    assert result.code == 1
    assert result.json["error"]["kind"] == "usage"
    assert f"argument --concurrency: must be a whole number from 1 to 32, not '{value}'" in \
        result.json["error"]["message"]
