"""Drift: live AWS compared with the current release's desired state, each difference with a severity.

`critical` is anything that widens access: an ingress or egress rule that should not be there, public access
block or encryption turned off, a policy or trust relationship that allows more, a public IP or ECS Exec switched
on. Everything else is a `warning`. Resources this environment owns that nothing declares are orphans.
AWS defaults, ordering and formatting never show up: drift reuses the kinds' canonical forms and diffs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from dmp_deploy.plan import Change, FieldChange, Plan

CRITICAL, WARNING = "critical", "warning"


@dataclass(frozen=True)
class Drift:
    kind: str
    name: str
    field: str
    expected: Any
    actual: Any
    severity: str


def _items(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _freeze(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _adds_items(expected: Any, actual: Any) -> bool:
    """True when the live list has an item the expected one does not (a rule, a statement, a policy ARN)."""
    want = {_freeze(x) for x in _items(expected)}
    return any(_freeze(x) not in want for x in _items(actual))


def _allows_more(expected: Any, actual: Any) -> bool:
    """For policy documents: a live Allow statement not in the expected document, or a Deny removed."""
    def statements(doc, effect):
        if not isinstance(doc, dict):
            return set()
        return {_freeze(s) for s in _items(doc.get("Statement")) if isinstance(s, dict) and s.get("Effect") == effect}
    if actual is None and expected is not None:
        # a whole policy removed: widening when it held Deny statements (a bucket or file-system policy)
        return bool(statements(expected, "Deny"))
    return bool(statements(actual, "Allow") - statements(expected, "Allow")) or bool(
        statements(expected, "Deny") - statements(actual, "Deny"))


def _switched_off(expected: Any, actual: Any) -> bool:
    """A flag (or a table of flags, such as the public access block) that should be on and is not. Anything
    that is not the expected table, e.g. "absent" when the configuration was deleted, counts as off."""
    if isinstance(expected, dict):
        have = actual if isinstance(actual, dict) else {}
        return any(bool(v) and have.get(k) is not True for k, v in expected.items())
    return bool(expected) and actual is not True


# (kind, field prefix) -> judge(expected, actual) -> widens access? The first matching prefix wins.
WIDENING_RULES: list[tuple[str, str, Any]] = [
    ("security_group_rules", "ingress", _adds_items),
    ("security_group_rules", "egress", _adds_items),
    ("bucket", "public_access_block", _switched_off),
    ("bucket", "encryption", lambda e, a: e != a),
    ("bucket", "object_ownership", lambda e, a: e != a),
    ("bucket", "policy", _allows_more),
    ("iam_role", "trust_policy", _allows_more),
    ("iam_role", "inline_policies", lambda e, a: _allows_more(e, a) if isinstance(e, dict) or isinstance(a, dict)
     else e != a),
    ("iam_role", "managed_policy_arns", _adds_items),
    ("efs_file_system", "policy", _allows_more),
    ("efs_file_system", "encrypted", _switched_off),
    ("service", "assign_public_ip", lambda e, a: a == "ENABLED" and e != a),
    ("service", "enable_execute_command", lambda e, a: bool(a) and not e),
    ("service", "security_groups", _adds_items),
    ("load_balancer", "scheme", lambda e, a: a == "internet-facing" and e != a),  # www's path router exposed
    ("load_balancer", "security_groups", _adds_items),
    ("listener", "protocol", lambda e, a: e == "HTTPS" and a != "HTTPS"),  # served without TLS
]


def severity(kind: str, field: FieldChange) -> str:
    for rule_kind, prefix, judge in WIDENING_RULES:
        if kind == rule_kind and (field.path == prefix or field.path.startswith(prefix + ".")
                                  or field.path.startswith(prefix + "[")):
            return CRITICAL if judge(field.after, field.before) else WARNING
    return WARNING


def report(plan: Plan) -> dict:
    """The drift document: every field that differs, with severity; orphans; in_sync."""
    drift: list[Drift] = []
    orphans: list[dict] = []
    for change in plan.changes:
        if change.action == "delete":
            orphans.append({"kind": change.kind, "name": change.name, "note": change.note})
        elif change.action == "create":
            drift.append(Drift(change.kind, change.name, "(resource)", "exists", "missing", WARNING))
        else:
            drift.extend(_field_drift(change))
    return {
        "env": plan.env,
        "in_sync": not drift and not orphans,
        "drift": [asdict(d) for d in drift],
        "orphans": orphans,
        "summary": {"critical": sum(d.severity == CRITICAL for d in drift),
                    "warning": sum(d.severity == WARNING for d in drift), "orphans": len(orphans)},
    }


def _field_drift(change: Change) -> list[Drift]:
    return [Drift(change.kind, change.name, f.path, f.after, f.before, severity(change.kind, f))
            for f in change.fields]


def render_text(document: dict, color: bool = False) -> str:
    """The drift document as text (dmp_deploy/show.py): JSON-valued fields as a diff, never cut short."""
    from dmp_deploy import show

    return show.drift_text(document, color)
