"""Benchmarks: API calls and wall time of a no-op plan, mutating calls of a no-op apply, peak memory.

    python benchmarks/run.py [--json] [--stacks full,50,200]

Each stack runs in its own child process against its own embedded AWS (moto's server in a background process,
exactly as `--env local` uses it), so peak RSS is the tool's own. Synthetic stacks add frontends ("bench-NNN",
each a copy of user-frontend: its own security group, log group, task role, task definition and service) to the
ten real apps. Latency is injected at the AWS seam (a sleep before every call attempt). Results are documented in
docs/benchmarks.md; the budgets of issue 6 are checked and the exit code is 1 when one is missed.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUDGET_RATIO = 1.25
BUDGET_S = {"full": 2.0, 200: 5.0}  # no-op plan with 50 ms latency per call


def synthetic(total_services: int, workdir: Path) -> tuple[Path, Path, list[str]]:
    """A config dir and a templates dir with extra frontends so that there are `total_services` services."""
    from dmp_deploy.apps import APPS

    extra = [f"bench-{i:03d}" for i in range(1, total_services - len(APPS) + 1)]
    config_dir, templates = workdir / "config", workdir / "task_definitions"
    shutil.copytree(ROOT / "config", config_dir)
    shutil.copytree(ROOT / "task_definitions", templates)
    frontend = (templates / "user-frontend.json.j2").read_text()
    text = (config_dir / "local.toml").read_text()
    for name in extra:
        (templates / f"{name}.json.j2").write_text(frontend)
        text += f'\n[apps.{name}]\nimage_tag = "local"\ndesired_count = 1\ncpu = 256\nmemory = 512\n'
    (config_dir / "local.toml").write_text(text)
    return config_dir, templates, extra


def minimum_calls(state) -> dict[str, int]:
    """The fewest read calls a no-op plan of this desired state could make, given the APIs' batch limits.

    Stated per resource kind (see docs/benchmarks.md for the reasoning of each line)."""
    r = state.resources
    families = len(r.get("task_definition", {}))
    services = len(r.get("service", {}))
    log_groups = len(r.get("log_group", {}))
    mount_targets = len(r.get("efs_mount_target", {}))
    minimum = {
        "sts (account guard)": 1,
        "lookups (VPC, subnets, load balancer group)": 3,
        "security groups + rules (DescribeSecurityGroups, filtered)": 1,
        "log groups (DescribeLogGroups 50/page + ListTagsForResource each)": math.ceil(log_groups / 50) + log_groups,
        "IAM roles (GetAccountAuthorizationDetails)": 1,
        "ECS cluster (DescribeClusters)": 1 if r.get("cluster") else 0,
        "task definitions (DescribeTaskDefinition one each + ListTaskDefinitions 100/page)":
            families + math.ceil(families * state.config.deployment.keep_revisions / 100),
        "services (ListServices 100/page + DescribeServices 10/call)":
            (math.ceil(services / 100) + math.ceil(services / 10)) if services else 0,
        "KMS key (DescribeKey, GetKeyRotationStatus, ListResourceTags)": 3 if r.get("kms_key") else 0,
        "bucket (one Get* per setting: 10)": 10 if r.get("bucket") else 0,
        "EFS (file systems, policy, lifecycle, backup, mount targets, their groups each, access points)":
            (6 + mount_targets) if r.get("efs_file_system") else 0,
        "state machine (Describe, ListVersions, ListAliases, DescribeAlias)": 4 if r.get("state_machine") else 0,
        "EventBridge rule (DescribeRule, ListTargetsByRule, ListTagsForResource)": 3 if r.get("event_rule") else 0,
    }
    return minimum


def child(stack: str) -> dict:
    """Run one stack in this process (called in a fresh child process)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"dmp-bench-{stack}-"))
    os.environ["DMP_LOCAL_DIR"] = str(workdir / "local")
    from dmp_deploy import apps, config as config_module, planner, render, session
    from dmp_deploy.cli import main
    from dmp_deploy.local import control

    if stack != "full":
        config_dir, templates, extra = synthetic(int(stack), workdir)
        for name in extra:
            apps.APPS[name] = apps.App(name, apps.HTTP_PORT, calls=("api",), backing=("redis",),
                                       behind_load_balancer=True)
        config_module.CONFIG_DIR = config_dir
        render.TASK_DEFINITIONS_DIR = templates
    try:
        control.up()
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["--log-format", "json", "apply", "--env", "local", "--json"])
        if code != 0:
            raise SystemExit(f"initial apply failed: {out.getvalue()[-2000:]} {err.getvalue()[-2000:]}")

        def noop_plan(latency_s: float):
            env = session.open_environment("local", read_only=True)
            if latency_s:
                env.aws.hooks.append(lambda call: time.sleep(latency_s))
            started = time.perf_counter()
            rec = planner.build_plan(env.ctx, env.kinds)
            elapsed = time.perf_counter() - started
            if not rec.plan.empty:
                raise SystemExit(f"no-op plan is not empty: {rec.plan.render_text()[:2000]}")
            return env, elapsed

        env0, t0 = noop_plan(0.0)
        _, t50 = noop_plan(0.050)
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            apply_env = session.open_environment("local")
            from dmp_deploy.deploy import deploy
            deploy(apply_env, allow_destroy=False, quiet=True, command="bench", confirm=lambda plan: True)
        minimum = minimum_calls(env0.ctx.desired)
        stats = env0.aws.stats
        return {
            "stack": stack,
            "services": len(env0.ctx.desired.resources.get("service", {})),
            "noop_plan_calls": stats.total,
            "noop_plan_calls_by_operation": dict(sorted(stats.calls.items())),
            "min_calls": sum(minimum.values()),
            "min_calls_by_kind": minimum,
            "noop_apply_mutations": apply_env.aws.stats.total_mutating,
            "noop_plan_s_0ms": round(t0, 3),
            "noop_plan_s_50ms": round(t50, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    finally:
        control.down()
        shutil.rmtree(workdir, ignore_errors=True)


def budgets(result: dict) -> list[str]:
    missed = []
    if result["noop_plan_calls"] > BUDGET_RATIO * result["min_calls"]:
        missed.append(f"{result['stack']}: no-op plan makes {result['noop_plan_calls']} calls, more than "
                      f"{BUDGET_RATIO}x the minimum {result['min_calls']}")
    if result["noop_apply_mutations"] != 0:
        missed.append(f"{result['stack']}: no-op apply made {result['noop_apply_mutations']} mutating calls")
    key = "full" if result["stack"] == "full" else int(result["stack"])
    if key in BUDGET_S and result["noop_plan_s_50ms"] > BUDGET_S[key]:
        missed.append(f"{result['stack']}: no-op plan with 50 ms latency took {result['noop_plan_s_50ms']}s "
                      f"(budget {BUDGET_S[key]}s)")
    return missed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--stacks", default="full,50,200")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    results = []
    for stack in args.stacks.split(","):
        proc = subprocess.run([sys.executable, __file__, "--child", stack], cwd=ROOT, capture_output=True,
                              text=True, timeout=1800)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:] + proc.stdout[-2000:])
            return 1
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    missed = [m for r in results for m in budgets(r)]
    if args.json:
        print(json.dumps({"stacks": results, "budgets_missed": missed}, indent=2))
    else:
        for r in results:
            print(f"{r['stack']:>5}: {r['services']} services; no-op plan {r['noop_plan_calls']} calls "
                  f"(minimum {r['min_calls']}, ratio {r['noop_plan_calls'] / r['min_calls']:.2f}); "
                  f"no-op apply {r['noop_apply_mutations']} mutating calls; plan {r['noop_plan_s_0ms']}s at 0 ms, "
                  f"{r['noop_plan_s_50ms']}s at 50 ms; peak RSS {r['peak_rss_mb']} MB")
        for m in missed:
            print(f"BUDGET MISSED: {m}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
