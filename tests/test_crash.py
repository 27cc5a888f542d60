"""Crash consistency (`pytest -m crash`): every mutating call of a command is a point where it can die.

For each scenario the command first runs uncrashed from the scenario's starting point, counting its N mutating
calls, leaving the reference inventory, and saving the embedded AWS at every mutating call as a crash there
leaves it (crash_support.Recorder, dmp_deploy/local/snapshots.py): a killed command makes no call after its crash
and, up to it, the same calls as the uncrashed one. Then, for every k from 1 to N, the embedded AWS is put back
to the state a crash at the k-th mutating call leaves (the deploy lock held, as a killed CI job leaves it), and
the same command is run again once its lease has expired (time is moved past it, as when the operator re-runs
the job). It must then exit 0, `plan` must exit 0, and the inventory read straight from AWS must equal the
uncrashed run's: no duplicate file system, access point, rule, state machine, log group, role, key or service;
at most one new task definition revision per changed family and one new state machine version.

That the saved state is what a crash leaves is itself checked: at the first, the middle and the last point the
command is also killed for real (crash_support.Crasher: the seam is dead from then on) and the inventory it
leaves must equal the saved point's.

Scenarios: apply from nothing; apply of a changed stack (a new api image, so new api, db-migration and add-users
revisions and a new state machine version; two search-api tasks; a changed log retention); revert to release 1 after that change.
Crash points, for every k of all three: `before` (the call never reached AWS) and `after` (AWS carried the call
out and the answer was lost: the hard case for creations that are not naturally idempotent).
`DMP_CRASH_POINTS=1,7,30` runs only those points (for debugging); the report then says so.

The crashed command runs one change at a time (`--concurrency 1`), so that its k-th mutating call is the same call
in every run; the re-runs run concurrently, as an operator's would. `test_a_crash_with_changes_in_flight_converges`
kills the concurrent executor itself while several changes have calls on their way.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter

import pytest

from dmp_deploy import config as config_module, lock as lock_module
from dmp_deploy.local import control
from conftest import LocalAws, cli
from crash_support import Crasher, Recorder, SimulatedCrash, compare, hooked, inventory

pytestmark = pytest.mark.crash

REPORTS: list[str] = []  # printed in the terminal summary (conftest.pytest_terminal_summary)

# The commands crashed run one change at a time (--concurrency 1): the k-th mutating call is then the same call in
# every run, so that every one of them can be enumerated as a crash point. The re-runs that must converge from
# each point run as an operator would, concurrently (the default); test_a_crash_with_changes_in_flight_converges
# crashes the concurrent executor itself, with several changes under way.
ONE_AT_A_TIME = ("--concurrency", "1")
APPLY = ("apply", "--env", "local", "--json")
CHANGED = ("apply", "--env", "local", "--json", "--image", "api=crash-t2")
PLAN = ("plan", "--env", "local", "--json")
CHANGED_PLAN = ("plan", "--env", "local", "--json", "--image", "api=crash-t2")
REVERT = ("revert", "--env", "local", "--to", "1", "--json")
API_IMAGE_FAMILIES = {"dmp-local-api", "dmp-local-db-migration", "dmp-local-add-users"}


@pytest.fixture(scope="module")
def crash_aws(tmp_path_factory):
    """The embedded AWS in its own process, as `--env local` runs it: the tool and moto then use both cores,
    which halves the suite's time against the in-process server the other tests share."""
    state_dir = tmp_path_factory.mktemp("crash-local")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("DMP_LOCAL_DIR", str(state_dir))
        started = control.up()
        try:
            yield LocalAws(started["endpoint"], started["region"], state_dir)
        finally:
            control.down()


@pytest.fixture
def local_aws(crash_aws, monkeypatch):
    monkeypatch.setenv("DMP_LOCAL_DIR", str(crash_aws.state_dir))
    return crash_aws


def ok(*args: str) -> dict:
    result = cli(*args)
    assert result.code == 0, f"{' '.join(args)} exited {result.code}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.json


def points(total: int) -> list[int]:
    chosen = os.environ.get("DMP_CRASH_POINTS")
    if not chosen:
        return list(range(1, total + 1))
    return [k for k in (int(p) for p in chosen.split(",")) if 1 <= k <= total]


def spot_checks(total: int) -> list[int]:
    """The points also crashed for real, to check that a saved crash point is what a crash leaves."""
    return sorted({1, (total + 1) // 2, total})


def run_scenario(name: str, local_aws, monkeypatch, setup, command, plan_command, changed_families=None,
                 after: bool = False) -> None:
    # The scenario's starting point, made once and saved: the real crashes of the spot checks start from it.
    local_aws.drop_snapshots()
    local_aws.reset()
    monkeypatch.setattr(lock_module, "now", time.time)
    setup()
    local_aws.snapshot("start")
    before = inventory(local_aws)

    # The uncrashed run: N mutating calls, the reference inventory, and the embedded AWS saved at every
    # mutating call as a crash there leaves it (crash_support.Recorder).
    recorder = Recorder(local_aws.snapshot, after=after)
    with hooked(monkeypatch, recorder):
        ok(*command, *ONE_AT_A_TIME)
    total = len(recorder.mutations)
    assert total > 0
    assert recorder.saved == [recorder.name(k) for k in range(1, total + 1)]
    tally = Counter(recorder.mutations)
    calls = ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(tally.items()))
    assert ok(*plan_command)["changes"] == []
    reference = inventory(local_aws)
    assert not compare(reference, reference, changed_families, before)

    chosen = points(total)
    failures: list[str] = []
    spent: dict[str, float] = {}

    def timed(step: str, started: float) -> float:
        now = time.perf_counter()
        spent[step] = spent.get(step, 0.0) + now - started
        return now

    # A saved crash point is what a real crash leaves: crash for real at some points, from the saved start.
    checked = [k for k in spot_checks(total) if k in chosen]
    for k in checked:
        local_aws.restore("start")
        monkeypatch.setattr(lock_module, "now", time.time)
        crasher = Crasher(at=k, after=after)
        with hooked(monkeypatch, crasher):
            with pytest.raises(SimulatedCrash):
                cli(*command, *ONE_AT_A_TIME)
        assert crasher.crashed == recorder.mutations[k - 1], f"k={k}: the crash hit another call"
        crashed = inventory(local_aws)
        local_aws.restore(recorder.name(k))
        saved = inventory(local_aws)
        assert crashed == saved, f"k={k}: the saved crash point differs from a real crash's state:\n" + \
            "\n".join(f"{key}: crash {crashed.get(key)!r}, saved {saved.get(key)!r}"
                      for key in sorted(set(crashed) | set(saved)) if crashed.get(key) != saved.get(key))

    for k in chosen:
        t = time.perf_counter()
        local_aws.restore(recorder.name(k))
        t = timed("restore", t)
        # The operator re-runs the job later: the dead run's lease has expired by then.
        monkeypatch.setattr(lock_module, "now", lambda: time.time() + 3600)
        where = f"k={k} ({'after' if after else 'before'} {recorder.mutations[k - 1]})"
        rerun = cli(*command)
        t = timed("re-run", t)
        if rerun.code != 0:
            failures.append(f"{where}: re-run exited {rerun.code}: {rerun.stdout[-600:]} {rerun.stderr[-600:]}")
            continue
        plan = cli(*plan_command)
        t = timed("plan", t)
        if plan.code != 0:
            failures.append(f"{where}: plan after the re-run exited {plan.code}: {plan.stdout[-1500:]}")
            continue
        problems = compare(reference, inventory(local_aws), changed_families, before)
        timed("inventory", t)
        if problems:
            failures.append(f"{where}: " + "; ".join(problems))
    local_aws.drop_snapshots()
    converged = len(chosen) - len(failures)
    subset = "" if len(chosen) == total else f" (DMP_CRASH_POINTS: {len(chosen)} of the {total} points)"
    line = (f"crash {name} [{'after' if after else 'before'} the call]: {converged} of {len(chosen)} crash points "
            f"converged; {total} mutating calls{subset}; real crashes matched the saved state at k="
            f"{', '.join(map(str, checked)) or 'none of the chosen points'}")
    detail = f"  mutating calls: {calls}"
    line += " (seconds per point: " + ", ".join(f"{step} {s / len(chosen):.2f}" for step, s in spent.items()) + ")"
    REPORTS.append(line)
    REPORTS.append(detail)
    print(line)
    print(detail)
    assert not failures, f"{line}\n" + "\n".join(failures)


WHEN = pytest.mark.parametrize("after", [False, True], ids=["before-the-call", "after-the-call"])


@WHEN
def test_apply_from_nothing_converges_after_a_crash_at_any_mutating_call(local_aws, monkeypatch, after):
    run_scenario("apply from nothing", local_aws, monkeypatch, lambda: None, APPLY, PLAN, after=after)


@WHEN
def test_changed_apply_converges_after_a_crash_at_any_mutating_call(local_aws, monkeypatch, tmp_path, after):
    # A is the configuration as it is; B is a new api image, two search-api tasks and a changed log retention.
    directory = tmp_path / "config"
    shutil.copytree(config_module.CONFIG_DIR, directory)
    monkeypatch.setattr(config_module, "CONFIG_DIR", directory)
    original = (directory / "local.toml").read_text()
    changed = original.replace("add_users_retention_days = 3", "add_users_retention_days = 5")
    changed = changed.replace('[apps.search-api]\nimage_tag = "local"\ndesired_count = 1',
                              '[apps.search-api]\nimage_tag = "local"\ndesired_count = 2')
    assert changed.count("desired_count = 2") == 1 and "add_users_retention_days = 5" in changed

    def setup():
        (directory / "local.toml").write_text(original)
        ok(*APPLY)
        (directory / "local.toml").write_text(changed)

    run_scenario("changed apply", local_aws, monkeypatch, setup, CHANGED, CHANGED_PLAN,
                 changed_families=API_IMAGE_FAMILIES, after=after)


@WHEN
def test_revert_converges_after_a_crash_at_any_mutating_call(local_aws, monkeypatch, after):
    def setup():
        ok(*APPLY)
        ok(*CHANGED)

    run_scenario("revert", local_aws, monkeypatch, setup, REVERT, PLAN, changed_families=set(), after=after)


# --- crashes of the concurrent executor, with several changes under way -------------------------------------

IN_FLIGHT = 2  # other changes with a mutating call on its way when the crash comes (3 changes under way in all)
# Crash at the first such moment from this mutating call on, or at the first such call of this operation (the
# services: a start tier's CreateService calls under way together).
MID_FLIGHT_FROM: tuple[int | str, ...] = (1, 40, 100, 160, 200, "ecs.create_service")


@WHEN
def test_a_crash_with_changes_in_flight_converges(local_aws, monkeypatch, after):
    """Apply from nothing at the default concurrency, 50 ms before each mutating call (as AWS's round trip), killed
    at a mutating call made while at least IN_FLIGHT other changes have a call on its way: those calls still reach
    AWS (they left before the process died), nothing after them does. The re-run must converge as above."""
    from dmp_deploy import session
    from timeline import Timeline

    local_aws.drop_snapshots()
    local_aws.reset()
    monkeypatch.setattr(lock_module, "now", time.time)
    local_aws.snapshot("start")
    before = inventory(local_aws)
    ok(*APPLY)
    assert ok(*PLAN)["changes"] == []
    reference = inventory(local_aws)

    failures, seen = [], []
    for start in MID_FLIGHT_FROM:
        local_aws.restore("start")
        monkeypatch.setattr(lock_module, "now", time.time)
        line = Timeline(latency=0.05)
        at_crash: list[int] = []

        def mid_flight(call, line=line, start=start, at_crash=at_crash) -> bool:
            reached = (f"{call.service}.{call.operation}" == start if isinstance(start, str)
                       else call.mutation_sequence >= start)
            if not (call.mutating and reached and line.changes_in_flight() >= IN_FLIGHT):
                return False
            at_crash.append(line.changes_in_flight())
            return True

        crasher = Crasher(when=mid_flight, after=after)
        with monkeypatch.context() as m:  # the crasher's hook first: calls past it are already on their way
            m.setattr(session, "ON_CONNECT", [*session.ON_CONNECT, crasher.attach, line.attach])
            with pytest.raises(SimulatedCrash):
                cli(*APPLY)
        assert crasher.crashed and at_crash[0] >= IN_FLIGHT
        where = (f"from {'k=' if isinstance(start, int) else ''}{start}: {crasher.crashed} with {at_crash[0]} "
                 f"other changes' calls on their way")
        seen.append(where)
        monkeypatch.setattr(lock_module, "now", lambda: time.time() + 3600)
        rerun = cli(*APPLY)
        if rerun.code != 0:
            failures.append(f"{where}: re-run exited {rerun.code}: {rerun.stdout[-600:]} {rerun.stderr[-600:]}")
            continue
        plan = cli(*PLAN)
        if plan.code != 0:
            failures.append(f"{where}: plan after the re-run exited {plan.code}: {plan.stdout[-1500:]}")
            continue
        problems = compare(reference, inventory(local_aws), None, before)
        if problems:
            failures.append(f"{where}: " + "; ".join(problems))
    local_aws.drop_snapshots()
    report = (f"crash with changes in flight [{'after' if after else 'before'} the call]: "
              f"{len(seen) - len(failures)} of {len(seen)} converged ({'; '.join(seen)})")
    REPORTS.append(report)
    print(report)
    assert not failures, report + "\n" + "\n".join(failures)
