"""Drift severity: critical exactly when a difference widens access. Pure: no AWS."""

import pytest

from dmp_deploy import drift
from dmp_deploy.plan import Change, FieldChange, Plan

RULE_22 = {"protocol": "tcp", "from_port": 22, "to_port": 22, "peer": {"cidr": "0.0.0.0/0"}}
RULE_8080 = {"protocol": "tcp", "from_port": 8080, "to_port": 8080, "peer": {"group": "dmp-local-router"}}
ALLOW_GET = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}
ALLOW_ALL = {"Effect": "Allow", "Action": "*", "Resource": "*"}
DENY_TLS = {"Effect": "Deny", "Action": "s3:*", "Principal": "*", "Resource": "*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}


def doc(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


@pytest.mark.parametrize("kind, path, expected, actual, severity", [
    ("security_group_rules", "ingress", [RULE_8080], [RULE_8080, RULE_22], "critical"),  # ingress opened
    ("security_group_rules", "ingress", [RULE_8080, RULE_22], [RULE_8080], "warning"),  # a rule missing: narrower
    ("security_group_rules", "egress", [], [RULE_22], "critical"),
    ("bucket", "public_access_block.BlockPublicPolicy", True, False, "critical"),
    ("bucket", "public_access_block", {"BlockPublicAcls": True}, "absent", "critical"),  # configuration deleted
    ("bucket", "public_access_block", {"BlockPublicAcls": True}, {"BlockPublicAcls": False}, "critical"),
    ("bucket", "encryption", {"algorithm": "aws:kms"}, "absent", "critical"),
    ("bucket", "policy", doc(DENY_TLS), None, "critical"),  # deny removed
    ("bucket", "policy", doc(DENY_TLS), doc(DENY_TLS, ALLOW_ALL), "critical"),
    ("bucket", "lifecycle", {"days": 1}, None, "warning"),
    ("bucket", "tags.Owner", "x", None, "warning"),
    ("iam_role", "inline_policies.task", doc(ALLOW_GET), doc(ALLOW_ALL), "critical"),  # widened
    ("iam_role", "inline_policies.task", doc(ALLOW_GET, ALLOW_ALL), doc(ALLOW_GET), "warning"),  # narrowed
    ("iam_role", "managed_policy_arns", [], ["arn:aws:iam::aws:policy/AdministratorAccess"], "critical"),
    ("iam_role", "tags.dmp:env", "local", None, "warning"),
    ("service", "assign_public_ip", "DISABLED", "ENABLED", "critical"),
    ("service", "enable_execute_command", False, True, "critical"),
    ("service", "desired_count", 2, 1, "warning"),
    ("log_group", "retention_days", 30, 1, "warning"),
])
def test_severity(kind, path, expected, actual, severity):
    assert drift.severity(kind, FieldChange(path, actual, expected)) == severity


def test_report_separates_drift_orphans_and_missing_resources():
    plan = Plan("staging", [
        Change("security_group_rules", "dmp-staging-api", "update",
               (FieldChange("ingress", [RULE_8080, RULE_22], [RULE_8080]),)),
        Change("log_group", "/dmp-staging/api", "create", (FieldChange("retention_days", None, 30),)),
        Change("log_group", "/dmp-staging/old", "delete", (), note="owned but no longer declared"),
    ])
    document = drift.report(plan)
    assert document["in_sync"] is False
    assert document["drift"][0] == {"kind": "security_group_rules", "name": "dmp-staging-api", "field": "ingress",
                                    "expected": [RULE_8080], "actual": [RULE_8080, RULE_22],
                                    "severity": "critical"}
    assert document["drift"][1]["field"] == "(resource)" and document["drift"][1]["actual"] == "missing"
    assert document["orphans"] == [{"kind": "log_group", "name": "/dmp-staging/old",
                                    "note": "owned but no longer declared"}]
    assert document["summary"] == {"critical": 1, "warning": 1, "orphans": 1}
    assert "[CRITICAL] security_group_rules dmp-staging-api: ingress" in drift.render_text(document)


def test_empty_plan_is_in_sync():
    document = drift.report(Plan("staging", []))
    assert document["in_sync"] and document["drift"] == [] and document["orphans"] == []
