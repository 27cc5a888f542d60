"""The engine without AWS: diffs, ordering, the plan as data, destroy refusal, canonical policies."""

import json

import pytest

from dmp_deploy import canonical, diff, planner
from dmp_deploy.errors import PlanError
from dmp_deploy.executor import refuse_destroys
from dmp_deploy.plan import Change, FieldChange, Plan
from dmp_deploy.resources.base import Live, ResourceKind


class Kind(ResourceKind):
    def __init__(self, kind, depends_on=(), replace_fields=frozenset()):
        self.kind, self.depends_on, self.replace_fields = kind, depends_on, replace_fields


@pytest.mark.parametrize("desired, live, replace, expected", [
    ({"a": 1}, {"a": 1}, set(), []),
    ({"a": 2}, {"a": 1}, set(), [("a", 1, 2, False)]),
    ({"a": 2}, {"a": 1}, {"a"}, [("a", 1, 2, True)]),
    ({"tags": {"x": "1", "y": "2"}}, {"tags": {"x": "1", "z": "3"}}, set(),
     [("tags.y", None, "2", False), ("tags.z", "3", None, False)]),
    ({"a": None}, {}, set(), []),  # absent and None are the same thing
    ({"l": [1, 2]}, {"l": [2, 1]}, set(), [("l", [2, 1], [1, 2], False)]),  # lists: order is the kind's job
])
def test_field_changes(desired, live, replace, expected):
    changes = diff.field_changes(desired, live, frozenset(replace))
    assert [(c.path, c.before, c.after, c.forces_replace) for c in changes] == expected


def test_set_difference_treats_dicts_as_values():
    add, remove = diff.set_difference([{"p": 1}, {"p": 2}], [{"p": 2}, {"p": 3}])
    assert add == [{"p": 1}] and remove == [{"p": 3}]


def test_dependency_order_and_waves():
    kinds = [Kind("service", ("task_definition", "security_group")), Kind("task_definition", ("log_group",)),
             Kind("security_group"), Kind("log_group"), Kind("rules", ("security_group", "not-registered"))]
    order = [k.kind for k in planner.dependency_order(kinds)]
    assert order.index("log_group") < order.index("task_definition") < order.index("service")
    assert order.index("security_group") < order.index("rules")
    assert [[k.kind for k in w] for w in planner.waves(kinds)] == [
        ["security_group", "log_group"], ["task_definition", "rules"], ["service"]]


def test_dependency_cycle_is_an_error():
    with pytest.raises(ValueError, match="cycle"):
        planner.dependency_order([Kind("a", ("b",)), Kind("b", ("a",))])


def test_changes_for_create_update_replace_delete():
    kind = Kind("thing", replace_fields=frozenset({"immutable"}))
    desired = {"new": {"x": 1}, "same": {"x": 1}, "changed": {"x": 2}, "swapped": {"immutable": "b"}}
    live = {"same": Live({"x": 1}), "changed": Live({"x": 1}), "swapped": Live({"immutable": "a"}, holds_data=True),
            "gone": Live({"x": 9}, holds_data=True)}
    changes = planner.changes_for(kind, desired, live)
    assert [(c.name, c.action, c.destroys_data) for c in changes] == [
        ("changed", "update", False), ("new", "create", False), ("swapped", "replace", True), ("gone", "delete", True)]


def test_plan_is_serialisable_and_readable():
    plan = Plan("staging", [
        Change("log_group", "/a", "create", (FieldChange("retention_days", None, 30),)),
        Change("log_group", "/b", "update", (FieldChange("retention_days", 7, 30),)),
        Change("bucket", "b", "delete", (FieldChange("tags", {"a": "b"}, None),), destroys_data=True),
    ])
    document = json.loads(plan.to_json())
    assert document["env"] == "staging"
    assert [(c["kind"], c["name"], c["action"]) for c in document["changes"]] == [
        ("log_group", "/a", "create"), ("log_group", "/b", "update"), ("bucket", "b", "delete")]
    assert document["changes"][1]["fields"] == [
        {"path": "retention_days", "before": 7, "after": 30, "forces_replace": False}]
    text = plan.render_text()
    assert "+ log_group /a" in text and "~ log_group /b" in text and "retention_days: 7 -> 30" in text
    assert "- bucket b  [DESTROYS DATA: needs --allow-destroy]" in text
    assert "1 to create, 1 to update, 0 to replace, 1 to delete" in text


def test_destroying_data_is_refused_without_allow_destroy():
    rec = planner.Reconciliation(Plan("x", [Change("bucket", "b", "delete", destroys_data=True)]), None, {}, {}, None)
    with pytest.raises(PlanError, match="--allow-destroy"):
        refuse_destroys(rec, allow_destroy=False)
    refuse_destroys(rec, allow_destroy=True)


@pytest.mark.parametrize("a, b", [
    ({"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]},
     {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["*"]}]}),
    ({"Statement": [{"Effect": "Allow", "Action": ["b", "a"], "Resource": "*"},
                    {"Effect": "Deny", "Action": "c", "Resource": "*"}]},
     {"Statement": [{"Effect": "Deny", "Action": "c", "Resource": "*"},
                    {"Effect": "Allow", "Action": ["a", "b"], "Resource": "*"}]}),
    ('%7B%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22x%22%2C%22Resource%22%3A%22*%22%7D%5D%7D',
     {"Statement": [{"Effect": "Allow", "Action": "x", "Resource": "*"}]}),
    ({"Statement": {"Effect": "Allow", "Principal": {"Service": ["ecs-tasks.amazonaws.com"]}, "Action": "sts:AssumeRole"}},
     {"Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]}),
])
def test_equivalent_policies_are_equal(a, b):
    assert canonical.policy(a) == canonical.policy(b)


def test_widened_policy_is_not_equal():
    narrow = {"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}]}
    wide = {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"}]}
    assert canonical.policy(narrow) != canonical.policy(wide)
