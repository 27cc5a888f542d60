"""Benchmarks: API calls, critical path and wall time of a no-op plan, a first apply and an all-images release;
mutating calls of a no-op apply; the CLI's CPU time and peak memory.

    python benchmarks/run.py [--json] [--stacks full,50,200]

Each stack runs in its own child process against its own embedded AWS (moto's server in a background process,
exactly as `--env local` uses it), so peak RSS is the tool's own. Synthetic stacks add frontends ("bench-NNN",
each a copy of user-frontend: its own security group, log group, task role, task definition and service) to the
ten real apps; they call no other app (see `child`), and their images are pushed to the embedded ECR first.
Latency is injected at the AWS seam (a sleep before every call attempt); each time is the median of three plans.
Results are documented in docs/benchmarks.md; the budgets of issues 6 and 14 are checked and the exit code is 1
when one is missed.

Critical paths (issue 14) are counted by the seam (`CallStats.round_trips`: each call is one deeper than the
deepest call that had completed when it started; polls that wait for AWS to finish something apart, in
`poll_round_trips`), in the runs with 50 ms injected per call, where a call that could run beside another does.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUDGET_RATIO = 1.25
BUDGET_S = {"full": 2.0, 200: 5.0}  # no-op plan with 50 ms latency per call
RUNS = 3  # plans timed per latency; the median is reported
# Issue 14: round trips on the critical path (polls apart), and the CLI's CPU for a no-op plan against the floor
# of `python -c 'import boto3'` measured in the same run.
BUDGET_ROUND_TRIPS = {"noop_plan": 6, "first_apply": 30, "bump_all_images": 8}
BUDGET_CPU_RATIO = 3.0
LATENCY_S = 0.050
CPU_RUNS = 3  # CLI processes timed for the CPU figures; the median is reported
BUMP_TAGS = ("bench-a", "bench-b")  # the all-images release at 0 ms, then at 50 ms


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


def account_counts(ctx) -> dict[str, int]:
    """What the account holds that the minimum depends on, counted with a plain client (not through the seam,
    so not counted): pages of account-wide listings depend on everything there, not only on what is ours."""
    import boto3

    from dmp_deploy import names
    from dmp_deploy.lookups import CERTIFICATE_KEY_TYPES
    from dmp_deploy.session import LOCAL_CREDENTIALS

    def client(service: str):
        return boto3.client(service, endpoint_url=ctx.aws.endpoint_url, region_name=ctx.aws.region,
                            **LOCAL_CREDENTIALS)

    def count(service: str, operation: str, key: str, **params) -> int:
        return sum(len(page.get(key, [])) for page in client(service).get_paginator(operation).paginate(**params))

    details = client("iam").get_account_authorization_details(Filter=["Role", "LocalManagedPolicy"])
    return {
        "active_revisions": count("ecs", "list_task_definitions", "taskDefinitionArns", status="ACTIVE"),
        "vpc_security_groups": count("ec2", "describe_security_groups", "SecurityGroups",
                                     Filters=[{"Name": "vpc-id", "Values": [ctx.lookups["vpc_id"]]}]),
        "iam_roles_and_policies": len(details["RoleDetailList"]) + len(details["Policies"]),
        "iam_roles_under_path": count("iam", "list_roles", "Roles", PathPrefix=names.IAM_PATH),
        "load_balancers": count("elbv2", "describe_load_balancers", "LoadBalancers"),
        "target_groups": count("elbv2", "describe_target_groups", "TargetGroups"),
        "private_dns_namespaces": count("servicediscovery", "list_namespaces", "Namespaces", Filters=[
            {"Name": "TYPE", "Values": ["DNS_PRIVATE"], "Condition": "EQ"}]),
        "certificates": count("acm", "list_certificates", "CertificateSummaryList",
                              Includes={"keyTypes": list(CERTIFICATE_KEY_TYPES)}),
    }


def minimum_calls(state, account: dict[str, int]) -> dict[str, int]:
    """The fewest read calls a no-op plan of this desired state could make, given the APIs' batch and page limits
    and what the account holds (`account_counts`). Stated per resource kind; docs/benchmarks.md gives the reasoning
    of each line. Every line is a read that what plan must show depends on."""
    r = state.resources
    families = len(r.get("task_definition", {}))
    services = len(r.get("service", {}))
    log_groups = len(r.get("log_group", {}))
    mount_targets = len(r.get("efs_mount_target", {}))
    machines = len(r.get("state_machine", {}))
    balancers, groups = len(r.get("load_balancer", {})), len(r.get("target_group", {}))
    listeners, ruled = len(r.get("listener", {})), len(r.get("listener_rules", {}))
    namespaces, discovery = len(r.get("cloud_map_namespace", {})), len(r.get("cloud_map_service", {}))
    entry = state.config.public_entry
    minimum = {
        "account guard (GetCallerIdentity)": 1,
        "lookups: VPC, subnets, and the public entry's subnets or the existing load balancer's group "
        "(one Describe each)":
            2 + int(entry.owned) + int(state.config.network.load_balancer_security_group is not None),
        "ACM certificate by domain (ListCertificates of the account, 1000/page)":
            max(1, math.ceil(account["certificates"] / 1000)) if entry.owned and entry.certificate_domain else 0,
        "security groups + rules (DescribeSecurityGroups of the VPC, 1000/page)":
            max(1, math.ceil(account["vpc_security_groups"] / 1000)),
        "log groups (DescribeLogGroups 50/page + ListTagsForResource each)": math.ceil(log_groups / 50) + log_groups,
        "IAM roles + policies (GetAccountAuthorizationDetails 1000/page; ListRoles 1000/page for "
        "MaxSessionDuration; GetPolicy each declared policy for its tags)":
            max(1, math.ceil(account["iam_roles_and_policies"] / 1000))
            + max(1, math.ceil(account["iam_roles_under_path"] / 1000)) + len(r.get("iam_policy", {})),
        "ECS cluster (DescribeClusters)": 1 if r.get("cluster") else 0,
        "task definitions (ListTaskDefinitions of the account's ACTIVE revisions 100/page + "
        "DescribeTaskDefinition one each)": max(1, math.ceil(account["active_revisions"] / 100)) + families,
        "release index (S3 GetObject: revisions a release ran are never pruned)": 1 if families else 0,
        "services (ListServices 100/page + DescribeServices 10/call)":
            (math.ceil(services / 100) + math.ceil(services / 10)) if services else 0,
        "KMS key (DescribeKey, GetKeyRotationStatus, ListResourceTags)": 3 * len(r.get("kms_key", {})),
        "bucket (8 settings, a versions probe, the tagging API for orphans)": 10 * len(r.get("bucket", {})),
        "EFS (file systems, policy, lifecycle, backup, mount targets, their groups each, access points)":
            (6 + mount_targets) if r.get("efs_file_system") else 0,
        "state machine + alias (ListStateMachines, Describe, ListTags, DescribeAlias, Describe the version)":
            5 * machines,
        "EventBridge rule (ListRules by prefix, ListTargetsByRule, ListTagsForResource)":
            3 * len(r.get("event_rule", {})),
        "load balancers + target groups (DescribeLoadBalancers, DescribeTargetGroups of the account 400/page "
        "each; DescribeTags 20 ARNs/call, listeners' too)":
            (max(1, math.ceil(account["load_balancers"] / 400)) + max(1, math.ceil(account["target_groups"] / 400))
             + math.ceil((balancers + groups + listeners) / 20)) if balancers or groups else 0,
        "load balancer + target group attributes (Describe*Attributes one each)": balancers + groups,
        "listeners + rules (DescribeListeners per load balancer, DescribeRules per listener)": balancers + ruled,
        "Cloud Map namespace (ListNamespaces of the account's private DNS ones 100/page, ListTagsForResource "
        "each of ours)": (max(1, math.ceil(account["private_dns_namespaces"] / 100)) + namespaces) if namespaces else 0,
        "Cloud Map services (ListServices of our namespace 100/page, ListTagsForResource each)":
            (math.ceil(discovery / 100) + discovery) if discovery else 0,
    }
    return minimum


def run_command(main, argv: list[str], latency_s: float) -> dict:
    """One CLI command run in this process (as `python run.py ARGV`) with `latency_s` slept before every call
    attempt at the seam: its wall time and what its seam counted."""
    from dmp_deploy import session

    seams = []

    def attach(aws):
        seams.append(aws)
        if latency_s:
            aws.hooks.append(lambda call: time.sleep(latency_s))

    session.ON_CONNECT.append(attach)
    out, err = io.StringIO(), io.StringIO()
    try:
        started = time.perf_counter()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["--log-format", "json", *argv])
        elapsed = time.perf_counter() - started
    finally:
        session.ON_CONNECT.remove(attach)
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} exited {code}: {out.getvalue()[:3000]} {err.getvalue()[-3000:]}")
    if len(seams) != 1:
        raise SystemExit(f"{' '.join(argv)} opened {len(seams)} AWS seams; the critical path is counted on one")
    stats = seams[0].stats
    return {"s": round(elapsed, 3), "round_trips": stats.round_trips, "poll_round_trips": stats.poll_round_trips,
            "calls": stats.total, "mutating": stats.total_mutating, "polls": dict(sorted(stats.polls.items()))}


def scenario(at_0ms: dict, at_50ms: dict) -> dict:
    """One command's figures: round trips from the run at 50 ms a call (where concurrent calls overlap), times of
    both."""
    return {"round_trips": at_50ms["round_trips"], "poll_round_trips": at_50ms["poll_round_trips"],
            "s_0ms": at_0ms["s"], "s_50ms": at_50ms["s"], "calls": at_50ms["calls"],
            "mutating": at_50ms["mutating"], "polls": at_50ms["polls"]}


# Started by a small Python process of its own: a child's peak RSS (ru_maxrss) starts from its parent's at fork and
# survives exec, so a child of this benchmark process would report at least this process's 150 MB.
USAGE_LAUNCHER = """
import json, os, sys
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "cpu_s": usage.ru_utime + usage.ru_stime,
                  "rss_mb": usage.ru_maxrss / 1024}))
"""


def process_usage(argv: list[str]) -> dict:
    """CPU time (user + system) and peak RSS of one process (its own rusage, from wait4)."""
    proc = subprocess.run([sys.executable, "-c", USAGE_LAUNCHER, *argv], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SystemExit(f"could not measure {' '.join(argv)}: {proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "stderr": proc.stderr}


def cli_usage() -> dict:
    """The CLI's CPU time and peak RSS for a no-op `plan` of the running embedded AWS, beside the floor of
    `python -c 'import boto3'`, measured alternately in this run (medians of CPU_RUNS each)."""
    plan, floor = [], []
    for _ in range(CPU_RUNS):
        floor.append(process_usage([sys.executable, "-c", "import boto3"]))
        run = process_usage([sys.executable, str(ROOT / "run.py"), "--log-format", "json", "plan", "--env", "local",
                             "--json"])
        if run["code"] != 0:
            raise SystemExit(f"the CLI's no-op plan exited {run['code']}: {run['stderr'][-3000:]}")
        plan.append(run)
    cpu = statistics.median(r["cpu_s"] for r in plan)
    floor_cpu = statistics.median(r["cpu_s"] for r in floor)
    return {"cli_noop_plan_cpu_s": round(cpu, 3), "cli_noop_plan_peak_rss_mb": round(max(r["rss_mb"] for r in plan), 1),
            "import_boto3_cpu_s": round(floor_cpu, 3),
            "import_boto3_peak_rss_mb": round(max(r["rss_mb"] for r in floor), 1),
            "cli_cpu_ratio": round(cpu / floor_cpu, 2)}


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
            # No `calls`: each caller of the api is one ingress rule on the api's group, and AWS allows 60 per
            # group by default (200 services fail with RulesPerSecurityGroupLimitExceeded, in AWS and locally).
            apps.APPS[name] = apps.App(name, apps.HTTP_PORT, backing=("redis",), behind_load_balancer=True)
        # They start with the frontends (apply rolls services out tier by tier, apps.START_ORDER).
        apis, frontends, *rest = apps.START_ORDER
        apps.START_ORDER = (apis, frontends + tuple(extra), *rest)
        config_module.CONFIG_DIR = config_dir
        render.TASK_DEFINITIONS_DIR = templates
    try:
        endpoint = control.up()["endpoint"]
        from dmp_deploy import desired
        from dmp_deploy.local.seed import seed_images
        synthetic_config = None
        if stack != "full":
            # The embedded AWS seeds the images of the configured apps when it starts; it does not read this
            # process's synthetic config, so push the synthetic frontends' images here (as seed.py would).
            synthetic_config = config_module.load_config("local")
            seed_images(endpoint, synthetic_config, desired.render_task_definitions(
                synthetic_config, {app: c.image_tag for app, c in synthetic_config.apps.items()}))
        # The first apply, from nothing, at 50 ms a call; then again at 0 ms on a fresh embedded AWS.
        first_50 = run_command(main, ["apply", "--env", "local", "--json"], LATENCY_S)
        control.down()
        endpoint = control.up()["endpoint"]
        if stack != "full":
            seed_images(endpoint, synthetic_config, desired.render_task_definitions(
                synthetic_config, {app: c.image_tag for app, c in synthetic_config.apps.items()}))
        first_0 = run_command(main, ["apply", "--env", "local", "--json"], 0.0)

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

        env0, first = noop_plan(0.0)
        t0 = statistics.median([first] + [noop_plan(0.0)[1] for _ in range(RUNS - 1)])
        t50 = statistics.median([noop_plan(0.050)[1] for _ in range(RUNS)])
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            apply_env = session.open_environment("local")
            from dmp_deploy.deploy import deploy
            deploy(apply_env, allow_destroy=False, quiet=True, command="bench", confirm=lambda plan: True)
        # Counted before the releases below register revisions: what the minimum depends on is the no-op plan's.
        minimum = minimum_calls(env0.ctx.desired, account_counts(env0.ctx))
        plan_0 = run_command(main, ["plan", "--env", "local", "--json"], 0.0)
        plan_50 = run_command(main, ["plan", "--env", "local", "--json"], LATENCY_S)
        # The CLI as a process reads config/ itself: only the full stack's config is there.
        usage = cli_usage() if stack == "full" else {}
        # A release of every app at once: `--image APP=TAG` for each (the embedded ECR gets the tags, as CI would).
        every_app = sorted(env0.ctx.config.apps)
        bumps = [run_command(main, ["apply", "--env", "local", "--json",
                                    *[arg for app in every_app for arg in ("--image", f"{app}={tag}")]], latency)
                 for tag, latency in zip(BUMP_TAGS, (0.0, LATENCY_S))]
        critical = {"noop_plan": scenario(plan_0, plan_50), "first_apply": scenario(first_0, first_50),
                    "bump_all_images": scenario(*bumps)}
        stats = env0.aws.stats
        return {
            "stack": stack,
            "services": len(env0.ctx.desired.resources.get("service", {})),
            "noop_plan_calls": stats.total,
            "noop_plan_calls_by_operation": dict(sorted(stats.calls.items())),
            "min_calls": sum(minimum.values()),
            "min_calls_by_kind": minimum,
            "calls_ratio": round(stats.total / sum(minimum.values()), 2),
            "noop_apply_mutations": apply_env.aws.stats.total_mutating,
            "noop_plan_s_0ms": round(t0, 3),
            "noop_plan_s_50ms": round(t50, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "critical_path_round_trips": {name: c["round_trips"] for name, c in critical.items()},
            "poll_round_trips": {name: c["poll_round_trips"] for name, c in critical.items()},
            "critical_path": critical,
            **usage,
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
    for name, budget in BUDGET_ROUND_TRIPS.items():
        trips = result["critical_path_round_trips"][name]
        if trips > budget:
            missed.append(f"{result['stack']}: {name} takes {trips} round trips on its critical path (polls apart), "
                          f"more than {budget}")
    if "cli_cpu_ratio" in result and result["cli_cpu_ratio"] > BUDGET_CPU_RATIO:
        missed.append(f"{result['stack']}: the CLI's no-op plan takes {result['cli_noop_plan_cpu_s']}s of CPU, "
                      f"{result['cli_cpu_ratio']}x `import boto3` ({result['import_boto3_cpu_s']}s), more than "
                      f"{BUDGET_CPU_RATIO}x")
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
            for name, c in r["critical_path"].items():
                print(f"       {name}: {c['round_trips']} round trips + {c['poll_round_trips']} polls on the "
                      f"critical path; {c['calls']} calls; {c['s_0ms']}s at 0 ms, {c['s_50ms']}s at 50 ms")
            if "cli_cpu_ratio" in r:
                print(f"       CLI no-op plan: {r['cli_noop_plan_cpu_s']}s CPU ({r['cli_cpu_ratio']}x `import boto3`: "
                      f"{r['import_boto3_cpu_s']}s), peak RSS {r['cli_noop_plan_peak_rss_mb']} MB "
                      f"(`import boto3`: {r['import_boto3_peak_rss_mb']} MB)")
        for m in missed:
            print(f"BUDGET MISSED: {m}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
