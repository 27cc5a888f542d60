"""rollout.py: the decision on one DescribeServices answer (a table), and the waiting loop on scripted answers."""

import pytest

from dmp_deploy import rollout
from dmp_deploy.rollout import FAILED, IN_PROGRESS, SUCCEEDED

OLD = "arn:aws:ecs:eu-west-2:123456789012:task-definition/dmp-local-api:1"
NEW = "arn:aws:ecs:eu-west-2:123456789012:task-definition/dmp-local-api:2"


def deployment(td, status="PRIMARY", state="IN_PROGRESS", running=0, reason=None):
    d = {"id": f"ecs-svc/{td[-1]}{status}", "status": status, "taskDefinition": td, "rolloutState": state,
         "runningCount": running}
    if reason:
        d["rolloutStateReason"] = reason
    return d


def service(*deployments, desired=2, status="ACTIVE", events=()):
    return {"serviceName": "dmp-local-api", "status": status, "desiredCount": desired,
            "deployments": list(deployments), "events": list(events)}


@pytest.mark.parametrize("answer, state, reason_part", [
    # Starting: the new deployment is PRIMARY, the old one still runs.
    (service(deployment(NEW), deployment(OLD, "ACTIVE", "COMPLETED", 2)), IN_PROGRESS, ""),
    # New tasks running, old not drained yet.
    (service(deployment(NEW, running=2), deployment(OLD, "ACTIVE", "COMPLETED", 2)), IN_PROGRESS, ""),
    # Drained, running == desired, but ECS has not declared COMPLETED yet.
    (service(deployment(NEW, running=2)), IN_PROGRESS, ""),
    # COMPLETED with fewer running than desired (a scale-up in flight): not yet.
    (service(deployment(NEW, state="COMPLETED", running=1)), IN_PROGRESS, ""),
    # Exactly what we asked for.
    (service(deployment(NEW, state="COMPLETED", running=2)), SUCCEEDED, ""),
    (service(deployment(NEW, state="COMPLETED", running=0), desired=0), SUCCEEDED, ""),
    # A deployment controller without rollout states: stable and drained is done.
    (service({"status": "PRIMARY", "taskDefinition": NEW, "runningCount": 2}), SUCCEEDED, ""),
    # Circuit breaker tripped, rollback under way: failed already, even before the rollback completes.
    (service(deployment(OLD, running=0), deployment(NEW, "ACTIVE", "FAILED", 0, "tasks failed to start"),
             deployment(OLD, "ACTIVE", "COMPLETED", 2)), FAILED, "ECS rolled back"),
    # The rollout that lies: stable, COMPLETED, all running... on the OLD revision.
    (service(deployment(OLD, state="COMPLETED", running=2)), FAILED, "runs dmp-local-api:1, not dmp-local-api:2"),
    # Failed with nothing to roll back to.
    (service(deployment(NEW, state="FAILED", reason="ECS deployment circuit breaker: tasks failed to start.")),
     FAILED, "nothing to roll back to"),
    # Gone.
    (service(status="INACTIVE"), FAILED, "INACTIVE"),
    (None, FAILED, "missing"),
    (service(), IN_PROGRESS, ""),  # no PRIMARY deployment listed yet
])
def test_assess(answer, state, reason_part):
    verdict = rollout.assess(answer, NEW)
    assert verdict.state == state
    assert reason_part in verdict.reason
    if state == FAILED and answer and answer.get("deployments"):
        assert verdict.running_task_definition == answer["deployments"][0]["taskDefinition"]


def test_new_events_are_oldest_first_and_only_once():
    answer = service(events=[{"id": "c", "message": "third"}, {"id": "b", "message": "second"},
                             {"id": "a", "message": "first"}])
    seen = {"a"}
    assert [e["message"] for e in rollout.new_events(answer, seen)] == ["second", "third"]


@pytest.mark.parametrize("tasks, expected", [
    ([], []),
    ([{"stoppedReason": "Essential container in task exited",
       "containers": [{"name": "wsgi", "exitCode": 3}, {"name": "http", "exitCode": 0}]}] * 2,
     ["Essential container in task exited (wsgi: exit code 3) [2 tasks]"]),
    ([{"stoppedReason": "CannotPullContainerError: not found",
       "containers": [{"name": "http", "reason": "CannotPullContainerError: not found"}]},
      {"containers": []}],
     ["CannotPullContainerError: not found [1 task]", "stopped without a reason [1 task]"]),
    ([{"stoppedReason": "Task failed ELB health checks",
       "containers": [{"name": "http", "reason": "health", "exitCode": 137}]}],
     ["Task failed ELB health checks (http: exit code 137, health) [1 task]"]),
])
def test_summarise_stopped_tasks(tasks, expected):
    assert rollout.summarise_stopped_tasks(tasks) == expected


# --- the waiting loop, on scripted DescribeServices answers ------------------------------------------------


class ScriptedAws:
    """Answers DescribeServices from a script (one answer per poll, the last one repeated) and the stopped
    tasks calls from fixed data; counts calls."""

    def __init__(self, script: dict[str, list[dict]], stopped: dict[str, list[dict]] | None = None):
        self.script = {k: list(v) for k, v in script.items()}
        self.stopped = stopped or {}
        self.calls: list[tuple[str, dict]] = []

    def call(self, service, operation, **params):
        self.calls.append((operation, params))
        if operation == "describe_services":
            assert len(params["services"]) <= 10
            out = []
            for name in params["services"]:
                answers = self.script[name]
                out.append({**(answers.pop(0) if len(answers) > 1 else answers[0]), "serviceName": name})
            return {"services": out}
        if operation == "describe_tasks":
            assert len(params["tasks"]) <= 100
            return {"tasks": [t for ts in self.stopped.values() for t in ts if t["taskArn"] in params["tasks"]]}
        raise AssertionError(operation)

    def pages(self, service, operation, key, **params):
        self.calls.append((operation, params))
        assert operation == "list_tasks" and params["desiredStatus"] == "STOPPED"
        return [t["taskArn"] for t in self.stopped.get(params["serviceName"], [])]


class FakeCtx:
    def __init__(self, aws):
        self.aws = aws

    def map(self, fn, items):
        return [fn(i) for i in items]


class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def wait(aws, targets, timeout=100, clock=None):
    clock = clock or Clock()
    return rollout.wait(FakeCtx(aws), "dmp-local", targets, timeout, 5, clock=clock, sleep=clock.sleep,
                        jitter=lambda a, b: 1.0), clock


def test_wait_follows_every_service_until_each_is_done():
    done = service(deployment(NEW, state="COMPLETED", running=2))
    aws = ScriptedAws({
        "a": [service(deployment(NEW), deployment(OLD, "ACTIVE", "COMPLETED", 2)), service(deployment(NEW, running=2)),
              done],
        "b": [done],
    })
    outcomes, clock = wait(aws, [rollout.Target("a", NEW), rollout.Target("b", NEW)])
    assert [(o.service, o.verdict.state) for o in outcomes] == [("a", SUCCEEDED), ("b", SUCCEEDED)]
    describes = [p["services"] for op, p in aws.calls if op == "describe_services"]
    assert describes == [["a", "b"], ["a"], ["a"]]  # b is not polled once it is done
    assert clock.sleeps == [5, 5]


def test_wait_batches_describe_services_by_ten():
    done = service(deployment(NEW, state="COMPLETED", running=2))
    names = [f"svc-{i:02}" for i in range(23)]
    aws = ScriptedAws({n: [done] for n in names})
    outcomes, _ = wait(aws, [rollout.Target(n, NEW) for n in names])
    assert all(o.verdict.state == SUCCEEDED for o in outcomes)
    assert [len(p["services"]) for op, p in aws.calls if op == "describe_services"] == [10, 10, 3]


def test_rollback_fails_with_the_stopped_tasks_reasons():
    rolled_back = service(deployment(OLD, state="COMPLETED", running=2))
    stopped = [{"taskArn": f"t{i}", "taskDefinitionArn": NEW, "stoppedReason": "Essential container in task exited",
                "containers": [{"name": "wsgi", "exitCode": 1}]} for i in range(150)]
    stopped.append({"taskArn": "old", "taskDefinitionArn": OLD, "stoppedReason": "Scaling activity", "containers": []})
    aws = ScriptedAws({"dmp-local-api": [rolled_back]}, stopped={"dmp-local-api": stopped})
    (outcome,), _ = wait(aws, [rollout.Target("dmp-local-api", NEW)])
    assert outcome.failed and "runs dmp-local-api:1" in outcome.verdict.reason
    assert outcome.stopped_reasons == ["Essential container in task exited (wsgi: exit code 1) [150 tasks]"]
    assert [len(p["tasks"]) for op, p in aws.calls if op == "describe_tasks"] == [100, 51]

    message = rollout.failure_message([outcome])
    assert "dmp-local-api" in message and "Asked for dmp-local-api:2; the service now runs dmp-local-api:1" in message
    assert "exit code 1" in message


def test_deadline_fails_what_is_still_in_progress_and_keeps_what_finished():
    stuck = service(deployment(NEW, running=1), deployment(OLD, "ACTIVE", "COMPLETED", 2))
    aws = ScriptedAws({"slow": [stuck], "quick": [service(deployment(NEW, state="COMPLETED", running=2))]})
    outcomes, clock = wait(aws, [rollout.Target("slow", NEW), rollout.Target("quick", NEW)], timeout=12)
    by_name = {o.service: o for o in outcomes}
    assert by_name["quick"].verdict.state == SUCCEEDED
    assert by_name["slow"].failed and "did not finish within 12 s" in by_name["slow"].verdict.reason
    assert by_name["slow"].verdict.running_task_definition == NEW
    assert clock.now == 12  # slept 5, 5, then only what was left
    assert "Rolled out: quick." in rollout.failure_message(outcomes)


def test_waiting_for_nothing_makes_no_call():
    aws = ScriptedAws({})
    assert wait(aws, [])[0] == [] and aws.calls == []


def test_a_heartbeat_at_least_every_15_seconds_with_elapsed_time_and_services_done():
    from structlog.testing import capture_logs

    stuck = service(deployment(NEW, running=1), deployment(OLD, "ACTIVE", "COMPLETED", 2))
    done = service(deployment(NEW, state="COMPLETED", running=2))
    aws = ScriptedAws({"slow": [stuck] * 7 + [done], "quick": [done]})
    clock = Clock()
    with capture_logs() as logs:
        outcomes = rollout.wait(FakeCtx(aws), "dmp-local", [rollout.Target("slow", NEW), rollout.Target("quick", NEW)],
                                200, 40, clock=clock, sleep=clock.sleep, jitter=lambda a, b: 1.0)
    assert all(o.verdict.state == SUCCEEDED for o in outcomes)
    beats = [e for e in logs if e["event"].startswith("rollouts: ")]
    assert [(e["elapsed_seconds"], e["services_done"], e["services_total"], e["waiting_for"]) for e in beats] == [
        (15, 1, 2, ["slow"]), (30, 1, 2, ["slow"]), (45, 1, 2, ["slow"]), (60, 1, 2, ["slow"]),
        (75, 1, 2, ["slow"]), (90, 1, 2, ["slow"])]
    assert beats[0]["event"] == "rollouts: 1 of 2 services done, 15 s elapsed"
    assert max(clock.sleeps) <= 15  # a 40 s poll interval does not silence it
