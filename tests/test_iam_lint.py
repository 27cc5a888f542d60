"""Issue 12, item 3: every policy this tool renders (roles' trust and inline policies, managed policies, bucket and
file-system policies, the state bucket's) for local, staging and production is linted with parliament: unknown
actions, unknown or mistyped condition keys, resources that do not fit the action, and the community auditors'
findings. Every finding is fixed or listed in tests/iam_lint_allowlist.toml with the reason. The KMS key policy is
AWS's default one (kms_keys.py leaves it as created): nothing of ours to lint.

On top of parliament, one rule it does not know (the bug it missed): Step Functions authorises versions and aliases
against the *unqualified* state machine ARN, so a `stateMachine:NAME:QUALIFIER` Resource matches nothing; scope to an
alias with the `states:StateMachineQualifier` condition key instead.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
import tomllib
from pathlib import Path

import parliament
import pytest

from dmp_deploy import desired, names, state_store
from dmp_deploy.config import load_config
from dmp_deploy.resources import all_kinds, efs, kms_keys

ALLOWLIST = Path(__file__).with_name("iam_lint_allowlist.toml")
ENVS = ("local", "staging", "production")
QUALIFIED_MACHINE = re.compile(r"^arn:[^:]+:states:[^:]*:[^:]*:stateMachine:[^:]+:[^:]+$")


@functools.lru_cache(maxsize=None)
def rendered_policies(env: str) -> list[tuple[str, dict]]:
    """(where, document) for every policy `env` renders, with placeholders replaced by ARNs of the right form."""
    config = load_config(env)
    account, region = config.environment.account_id, config.environment.region
    resources = desired.build(config, all_kinds()).resources
    out: list[tuple[str, dict]] = []
    for name, spec in resources.get("iam_role", {}).items():
        # A trust policy is the role's resource policy: its resource is the role (AssumeRole must fit it).
        trust = {**spec["trust_policy"], "Statement": [
            {**s, "Resource": names.role_arn(config, name)} for s in spec["trust_policy"]["Statement"]]}
        out.append((f"{env} iam_role {name} trust", trust))
        for policy_name, document in sorted((spec.get("inline_policies") or {}).items()):
            out.append((f"{env} iam_role {name} inline {policy_name}", document))
    for name, spec in resources.get("iam_policy", {}).items():
        out.append((f"{env} iam_policy {name}", spec["document"]))
    for name, spec in resources.get("bucket", {}).items():
        if isinstance(spec.get("policy"), dict):
            out.append((f"{env} bucket {name}", spec["policy"]))
    for name, spec in resources.get("efs_file_system", {}).items():
        if spec.get("policy"):
            arn = f"arn:aws:elasticfilesystem:{region}:{account}:file-system/fs-0123456789abcdef0"
            out.append((f"{env} efs_file_system {name}", efs.policy_document(spec["policy"], arn)))
    if config.add_users.enforce_tls_in_bucket_policy:
        bucket = state_store.bucket_name(config)
        out.append((f"{env} state_bucket {bucket}", state_store.tls_only_policy(bucket)))
    key_arn = f"arn:aws:kms:{region}:{account}:key/0123abcd-0123-4567-89ab-0123456789ab"
    return [(where, json.loads(re.sub(re.escape(kms_keys.PLACEHOLDER_PREFIX) + r"[^\"]*>", key_arn,
                                      json.dumps(document)))) for where, document in out]


def qualified_state_machine_resources(document: dict) -> list[str]:
    """Step Functions actions on a version's or alias's ARN: authorised against the unqualified ARN, never match."""
    found = []
    for statement in document.get("Statement", []):
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = statement.get("Resource", [])
        resources = [resources] if isinstance(resources, str) else resources
        if any(a.lower().startswith("states:") for a in actions):
            found += [r for r in resources if QUALIFIED_MACHINE.match(r)]
    return found


def findings(where: str, document: dict) -> list[dict]:
    """parliament's findings (community auditors included) and the qualified-ARN rule, as plain dicts."""
    policy = parliament.analyze_policy_string(json.dumps(document), include_community_auditors=True)
    out = [{"where": where, "issue": f.issue,
            # The community auditors put the actions they flag in the location, not the detail.
            "detail": json.dumps([f.detail, (f.location or {}).get("actions")], sort_keys=True, default=str)}
           for f in policy.findings]
    out += [{"where": where, "issue": "QUALIFIED_STATE_MACHINE_RESOURCE",
             "detail": f"{arn}: authorise the unqualified state machine ARN and scope it with the condition key "
                       f"states:StateMachineQualifier"} for arn in qualified_state_machine_resources(document)]
    return out


def allowed(finding: dict, entries: list[dict]) -> dict | None:
    for entry in entries:
        if entry["issue"] == finding["issue"] and fnmatch.fnmatchcase(finding["where"], entry["where"]) \
                and entry.get("detail", "").lower() in finding["detail"].lower():
            return entry
    return None


def load_allowlist() -> list[dict]:
    entries = tomllib.loads(ALLOWLIST.read_text())["allow"]
    for i, entry in enumerate(entries):
        assert {"issue", "where", "reason"} <= set(entry) and entry["reason"].strip(), \
            f"{ALLOWLIST.name} entry {i + 1}: needs issue, where and a reason"
    return entries


@pytest.fixture(scope="module")
def all_findings() -> list[dict]:
    return [f for env in ENVS for where, document in rendered_policies(env) for f in findings(where, document)]


def test_every_policy_is_linted(all_findings):
    # Not vacuous: each env renders its roles' trust and inline policies, and the file-system policy.
    for env in ENVS:
        kinds = {where.split()[1] for where, _ in rendered_policies(env)}
        assert {"iam_role", "efs_file_system"} <= kinds, env
    assert {"bucket", "state_bucket"} <= {where.split()[1] for where, _ in rendered_policies("production")}


def test_every_finding_is_fixed_or_allowed_with_a_reason(all_findings):
    entries = load_allowlist()
    unexplained = [f for f in all_findings if allowed(f, entries) is None]
    assert unexplained == [], "\n".join(f"{f['where']}: {f['issue']} {f['detail']}" for f in unexplained)
    stale = [e for e in entries if not any(allowed(f, [e]) for f in all_findings)]
    assert stale == [], f"allow-list entries that match no finding any more: {stale}"


@pytest.mark.parametrize("statement, issue", [
    ({"Effect": "Allow", "Action": "s3:GetObjekt", "Resource": "arn:aws:s3:::b/*"}, "UNKNOWN_ACTION"),
    ({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*",
      "Condition": {"StringEquals": {"s3:NoSuchConditionKey": "x"}}}, "UNKNOWN_CONDITION_FOR_ACTION"),
    ({"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b/*"}, "RESOURCE_MISMATCH"),
    ({"Effect": "Allow", "Action": "states:StartExecution",
      "Resource": "arn:aws:states:eu-west-2:123456789012:stateMachine:dmp-local-add-users:live"},
     "QUALIFIED_STATE_MACHINE_RESOURCE"),
])
def test_a_bad_policy_fails_the_lint(statement, issue):
    found = findings("local iam_role dmp-local-add-users-trigger inline add-users-workflow",
                     {"Version": "2012-10-17", "Statement": [statement]})
    assert issue in {f["issue"] for f in found}, found
    assert not all(allowed(f, load_allowlist()) for f in found if f["issue"] == issue)
