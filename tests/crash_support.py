"""Crash consistency harness: kill a command at its k-th mutating AWS call, then prove a re-run converges.

A crash is `SimulatedCrash` (a BaseException, so no `except Exception` in the tool can swallow it) raised at the
AWS seam. From that moment the seam is dead: every later call from that command, on any thread (the lock's
renewer, its release in `finally`), raises too, because a killed process makes no more calls. Two crash points per
call: `before` (the k-th mutating call never reached AWS) and `after` (AWS carried it out, the answer was lost).

The inventory lists, straight from the embedded AWS and not through the tool, everything that could be
duplicated by a re-run: file systems, access points, mount targets, security groups and their rules, state
machines and their versions and aliases, log groups, roles and policies, KMS keys and aliases, buckets, rules and
targets, clusters, services and task definition revisions, and release records.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import botocore.exceptions

from dmp_deploy import session
from dmp_deploy.aws import Call


class SimulatedCrash(BaseException):
    """The process died here."""


@dataclass
class Crasher:
    """A seam hook that kills the command at its `at`-th mutating call (`at` 0: never, only count)."""

    at: int = 0
    after: bool = False  # True: the call reaches AWS first and its answer is lost
    when: Callable[[Call], bool] | None = None  # instead of `at`: die at the first call this picks
    mutations: list[str] = field(default_factory=list)
    crashed: str | None = None  # the operation it crashed at
    dead: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, aws) -> None:
        self.aws = aws
        aws.hooks.append(self.hook)

    def hook(self, call: Call) -> None:
        with self._lock:
            if self.dead:
                raise SimulatedCrash(f"dead: {call.service}.{call.operation} never left the killed process")
            if self.when is not None:
                if not self.when(call):
                    return
            else:
                if not call.mutating:
                    return
                self.mutations.append(f"{call.service}.{call.operation}")
                if call.mutation_sequence != self.at:
                    return
            self.dead = True
            self.crashed = f"{call.service}.{call.operation}"
        if self.after:
            getattr(self.aws.client(call.service), call.operation)(**call.params)
        raise SimulatedCrash(f"killed at {self.crashed} ({'after' if self.after else 'before'} the call)")


@dataclass
class Recorder:
    """A seam hook that saves the embedded AWS at every mutating call of an uncrashed command, as the state a
    crash there leaves: `before-k` as the k-th mutating call is about to leave (a crash before it), or, with
    `after`, `after-k` as soon as its answer is back (AWS carried it out, the answer was lost).

    A killed command makes no call after its crash, and up to it makes exactly the calls the uncrashed command
    makes (the hook that kills it does nothing before), so the saved state is the one the crash leaves; the crash
    suite checks that on real crashes at some points (test_crash.run_scenario)."""

    save: Callable[[str], None]  # saves the embedded AWS under a name (LocalAws.snapshot)
    after: bool = False
    mutations: list[str] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)
    _answer_pending: threading.local = field(default_factory=threading.local)
    _listening: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, aws) -> None:
        self.aws = aws
        aws.hooks.append(self.hook)

    def hook(self, call: Call) -> None:
        if not call.mutating:
            return
        with self._lock:
            assert getattr(self._answer_pending, "k", None) is None, \
                f"no answer came back for mutating call {self._answer_pending.k}"
            self.mutations.append(f"{call.service}.{call.operation}")
            k = len(self.mutations)
            assert call.mutation_sequence == k, "more than one seam: mutating calls are not numbered once"
            if not self.after:
                self._save(f"before-{k}")
                return
            client = self.aws.client(call.service)
            if id(client) not in self._listening:  # botocore says when the answer is back
                client.meta.events.register("after-call", self._answered)
                self._listening.add(id(client))
            self._answer_pending.k = k  # the answer comes back on this thread

    def _answered(self, **_) -> None:
        k = getattr(self._answer_pending, "k", None)
        if k is None:
            return
        self._answer_pending.k = None
        with self._lock:
            self._save(f"after-{k}")

    def _save(self, name: str) -> None:
        self.save(name)
        self.saved.append(name)

    def name(self, k: int) -> str:
        return f"{'after' if self.after else 'before'}-{k}"


@contextlib.contextmanager
def hooked(monkeypatch, crasher: "Crasher | Recorder"):
    """Every seam a command opens in this block carries the crasher's hook (session.ON_CONNECT)."""
    with monkeypatch.context() as m:
        m.setattr(session, "ON_CONNECT", [*session.ON_CONNECT, crasher.attach])
        yield crasher


def inventory(local_aws) -> dict:
    """Names and counts of everything a re-run could duplicate, read from the embedded AWS directly."""
    c = local_aws.client
    inv: dict = {}

    efs = c("efs")
    systems = efs.describe_file_systems()["FileSystems"]
    inv["efs.file_systems"] = sorted(fs.get("Name", fs["FileSystemId"]) for fs in systems)
    inv["efs.access_points"] = sorted(
        (ap.get("Name", ""), ap["RootDirectory"]["Path"]) for ap in efs.describe_access_points()["AccessPoints"])
    ec2 = c("ec2")
    subnets = {s["SubnetId"]: s["CidrBlock"] for s in ec2.describe_subnets()["Subnets"]}  # ids differ per reset
    inv["efs.mount_targets"] = sorted(
        (subnets.get(mt["SubnetId"], mt["SubnetId"]), fs.get("Name", ""))
        for fs in systems for mt in efs.describe_mount_targets(FileSystemId=fs["FileSystemId"])["MountTargets"])

    groups = ec2.describe_security_groups()["SecurityGroups"]
    by_id = {g["GroupId"]: g["GroupName"] for g in groups}
    inv["ec2.security_groups"] = sorted(g["GroupName"] for g in groups)
    rules = ec2.describe_security_group_rules()["SecurityGroupRules"]
    inv["ec2.security_group_rules"] = sorted(Counter(
        f"{by_id.get(r['GroupId'], r['GroupId'])} {'egress' if r['IsEgress'] else 'ingress'} "
        f"{r.get('IpProtocol')} {r.get('FromPort')}-{r.get('ToPort')} "
        f"{r.get('CidrIpv4') or by_id.get(r.get('ReferencedGroupInfo', {}).get('GroupId'), '') or r.get('PrefixListId', '')}"
        for r in rules).items())

    sfn = c("stepfunctions")
    machines = sfn.list_state_machines()["stateMachines"]
    inv["stepfunctions.state_machines"] = sorted(m["name"] for m in machines)
    inv["stepfunctions.versions"] = sorted((m["name"], _versions(sfn, m["stateMachineArn"])) for m in machines)
    inv["stepfunctions.aliases"] = sorted(
        (m["name"], a["stateMachineAliasArn"].rsplit(":", 1)[1])
        for m in machines for a in sfn.list_state_machine_aliases(stateMachineArn=m["stateMachineArn"])[
            "stateMachineAliases"])

    inv["logs.log_groups"] = sorted(g["logGroupName"] for g in c("logs").describe_log_groups()["logGroups"])

    iam = c("iam")
    roles = iam.list_roles()["Roles"]
    inv["iam.roles"] = sorted(r["RoleName"] for r in roles)

    def role_policies(name: str) -> tuple:
        return (name, tuple(sorted(iam.list_role_policies(RoleName=name)["PolicyNames"])),
                tuple(sorted(p["PolicyName"] for p in iam.list_attached_role_policies(RoleName=name)[
                    "AttachedPolicies"])))

    # Two reads per role, a third of the inventory's calls: concurrently, as the tool reads them.
    with ThreadPoolExecutor(max_workers=8) as pool:
        inv["iam.role_policies"] = sorted(pool.map(role_policies, [r["RoleName"] for r in roles]))
    inv["iam.policies"] = sorted(p["PolicyName"] for p in iam.list_policies(Scope="Local")["Policies"])

    kms = c("kms")
    keys = [k["KeyId"] for k in kms.list_keys()["Keys"]]
    inv["kms.keys_enabled"] = sum(
        1 for k in keys if kms.describe_key(KeyId=k)["KeyMetadata"]["KeyState"] in ("Enabled", "Disabled"))
    inv["kms.aliases"] = sorted(a["AliasName"] for a in kms.list_aliases()["Aliases"]
                                if not a["AliasName"].startswith("alias/aws/"))

    s3 = c("s3")
    inv["s3.buckets"] = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
    # The tool's own state bucket: secured completely, one record per release, an index naming the newest.
    from dmp_deploy.config import load_config
    from dmp_deploy.state_store import bucket_name
    state = bucket_name(load_config("local"))
    if state in inv["s3.buckets"]:
        # A setting not made yet reads as None (a crash point half way through creating the bucket).
        inv["state.bucket"] = (
            _unless_missing(lambda: s3.get_public_access_block(Bucket=state)["PublicAccessBlockConfiguration"]),
            _unless_missing(
                lambda: s3.get_bucket_encryption(Bucket=state)["ServerSideEncryptionConfiguration"]["Rules"]),
            s3.get_bucket_versioning(Bucket=state).get("Status"),
            _unless_missing(lambda: sorted((t["Key"], t["Value"]) for t in s3.get_bucket_tagging(Bucket=state)[
                "TagSet"])))
        # A run killed just before releasing the deploy lock leaves its lease, expired by the time anyone runs
        # again and taken over by the next apply that has something to do (a no-op apply never takes the lock).
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=state).get("Contents", [])
                if o["Key"] != "locks/deploy.json"]
        inv["state.objects"] = sorted(keys)
        index = json.loads(s3.get_object(Bucket=state, Key="releases/index.json")["Body"].read()) \
            if "releases/index.json" in keys else {}
        inv["state.index"] = (len(index.get("task_definitions", [])), (index.get("latest") or {}).get("number"))

    events = c("events")
    inv["events.rules"] = sorted(
        (r["Name"], len(events.list_targets_by_rule(Rule=r["Name"])["Targets"]))
        for r in events.list_rules()["Rules"])

    ecs = c("ecs")
    clusters = ecs.list_clusters()["clusterArns"]
    inv["ecs.clusters"] = sorted(a.rsplit("/", 1)[1] for a in clusters)
    inv["ecs.services"] = sorted(
        a.rsplit("/", 1)[1] for cl in clusters for a in ecs.list_services(cluster=cl)["serviceArns"])
    revisions = Counter()
    for status in ("ACTIVE", "INACTIVE"):
        for arn in ecs.list_task_definitions(status=status)["taskDefinitionArns"]:
            revisions[arn.rsplit("/", 1)[1].rsplit(":", 1)[0]] += 1
    inv["ecs.task_definition_revisions"] = dict(sorted(revisions.items()))

    # Load balancers and Cloud Map: counted, so that a second rule or registry left by a lost answer shows.
    elb = c("elbv2")
    balancers = elb.describe_load_balancers()["LoadBalancers"]
    inv["elbv2.load_balancers"] = sorted(b["LoadBalancerName"] for b in balancers)
    inv["elbv2.target_groups"] = sorted(g["TargetGroupName"] for g in elb.describe_target_groups()["TargetGroups"])
    listeners = [(b["LoadBalancerName"], listener) for b in balancers
                 for listener in elb.describe_listeners(LoadBalancerArn=b["LoadBalancerArn"])["Listeners"]]
    inv["elbv2.listeners"] = sorted(Counter((name, l["Port"], l["Protocol"]) for name, l in listeners).items())
    inv["elbv2.rules"] = sorted(Counter(
        (name, l["Port"], r["Priority"], json.dumps(r["Conditions"], sort_keys=True))
        for name, l in listeners for r in elb.describe_rules(ListenerArn=l["ListenerArn"])["Rules"]).items())
    sd = c("servicediscovery")
    namespaces = {n["Id"]: n["Name"] for n in sd.list_namespaces()["Namespaces"]}
    inv["servicediscovery.namespaces"] = sorted(Counter(namespaces.values()).items())
    inv["servicediscovery.services"] = sorted(Counter(
        (name, svc["Name"]) for namespace, name in namespaces.items()
        for svc in _cloud_map_services(sd, namespace)).items())
    return inv


def _cloud_map_services(sd, namespace_id: str) -> list[dict]:
    services, token = [], None
    while True:
        page = sd.list_services(Filters=[{"Name": "NAMESPACE_ID", "Values": [namespace_id], "Condition": "EQ"}],
                                **({"NextToken": token} if token else {}))
        services += page["Services"]
        token = page.get("NextToken")
        if not token:
            return services


def _unless_missing(read: Callable[[], object]) -> object:
    """What `read` returns, or None when S3 answers that the setting was never made."""
    try:
        return read()
    except botocore.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchPublicAccessBlockConfiguration", "NoSuchTagSet",
                                             "ServerSideEncryptionConfigurationNotFoundError"):
            return None
        raise


def _versions(sfn, machine_arn: str) -> int:
    """How many versions a machine has (moto has no ListStateMachineVersions; versions are numbered from 1)."""
    count = 0
    while True:
        try:
            sfn.describe_state_machine(stateMachineArn=f"{machine_arn}:{count + 1}")
        except botocore.exceptions.ClientError:
            return count
        count += 1


def compare(expected: dict, actual: dict, changed_families: set[str] | None = None,
            before: dict | None = None) -> list[str]:
    """Differences between a converged inventory and the uncrashed run's, each as one readable line.

    Task definition revisions: at most one new revision per family the run changes (and none for the others)
    relative to `before`, the inventory before the run; state machine versions: at most one new version."""
    problems = []
    for key in sorted(set(expected) | set(actual)):
        if key in ("ecs.task_definition_revisions", "stepfunctions.versions"):
            continue
        if expected.get(key) != actual.get(key):
            problems.append(f"{key}: expected {expected.get(key)!r}, got {actual.get(key)!r}")
    start = (before or {}).get("ecs.task_definition_revisions", {})
    for family, count in actual.get("ecs.task_definition_revisions", {}).items():
        new = count - start.get(family, 0)
        allowed = 1 if changed_families is None or family in changed_families else 0
        if new > allowed:
            problems.append(f"task definition family {family}: {new} new revisions (at most {allowed})")
    start_versions = dict((before or {}).get("stepfunctions.versions", []))
    for machine, count in actual.get("stepfunctions.versions", []):
        if count - start_versions.get(machine, 0) > 1:
            problems.append(f"state machine {machine}: {count - start_versions.get(machine, 0)} new versions "
                            f"(at most 1)")
    return problems
