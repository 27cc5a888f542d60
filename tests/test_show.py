"""Plans and drift as text (dmp_deploy/show.py): JSON fields as unified diffs, nothing cut short, derived noise
folded into one line, colour only when asked."""

import copy

from dmp_deploy import drift, show
from dmp_deploy.plan import Change, FieldChange, Plan


def _definition(states: int) -> dict:
    return {"Comment": "add users", "StartAt": "S0", "States": {
        f"S{i}": {"Type": "Task", "Resource": "arn:aws:states:::ecs:runTask.sync", "Next": f"S{i + 1}",
                  "Parameters": {"Cluster": "dmp-staging", "TaskDefinition": f"dmp-staging-step-{i}",
                                 "LaunchType": "FARGATE"}} for i in range(states)}}


def test_a_changed_state_machine_definition_is_a_unified_diff_of_the_changed_lines():
    before = _definition(20)
    after = copy.deepcopy(before)
    after["States"]["S17"]["Parameters"]["TaskDefinition"] = "dmp-staging-step-17-new"  # far past 300 characters
    plan = Plan("staging", [Change("state_machine", "dmp-staging-add-users", "update",
                                   (FieldChange("definition", before, after),))])
    text = plan.render_text()
    assert '-        "TaskDefinition": "dmp-staging-step-17"' in text
    assert '+        "TaskDefinition": "dmp-staging-step-17-new"' in text
    assert "..." not in text  # nothing is cut short
    lines = text.splitlines()
    changed = [line for line in lines if line.strip().startswith(("-", "+")) and '"' in line]
    assert len(changed) == 2  # only the changed line, before and after
    assert len(lines) < 20  # with three lines of context, not both documents
    assert "\x1b[" not in text


def test_a_json_string_field_is_diffed_as_json():
    policy = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", ' \
             '"Resource": "arn:aws:s3:::dmp-staging-documents/*"}]}'
    wider = policy.replace('"s3:GetObject"', '"s3:*"')
    lines = show.field_lines("update", FieldChange("policy", policy, wider))
    assert lines[0] == "policy:"
    assert [line.replace(" ", "") for line in lines if line.strip().startswith(("-", "+"))] == [
        '-"Action":"s3:GetObject",', '+"Action":"s3:*",']


def test_short_values_stay_on_one_line():
    assert show.field_lines("update", FieldChange("retention_days", 7, 14)) == ["retention_days: 7 -> 14"]
    assert show.field_lines("update", FieldChange("tags.Owner", None, "dmp")) == ['tags.Owner: (none) -> "dmp"']


def test_task_definition_noise_is_folded_into_one_line():
    change = Change("task_definition", "dmp-staging-api", "update", (
        FieldChange("revision", 6, "next: a new revision is registered (AWS cannot change one in place)"),
        FieldChange("container.wsgi.image", "api-wsgi:build-6", "api-wsgi:build-7"),
        FieldChange("tags.dmp:content-hash", "a" * 64, "b" * 64)))
    lines = show.change_lines(change)
    assert lines == ["~ task_definition dmp-staging-api",
                     '    container.wsgi.image: "api-wsgi:build-6" -> "api-wsgi:build-7"',
                     "    (a new revision is registered in place of revision 6; content hash aaaaaaaaaaaa… -> "
                     "bbbbbbbbbbbb…)"]


def test_colour_when_asked_only():
    plan = Plan("staging", [Change("log_group", "/dmp-staging/api", "create", (FieldChange("retention_days", None, 30),)),
                            Change("log_group", "/dmp-staging/old", "delete", (FieldChange("retention_days", 30, None),)),
                            Change("cluster", "dmp-staging", "update", (FieldChange("insights", "off", "on"),))])
    coloured = plan.render_text(color=True)
    assert "\x1b[32m+ log_group /dmp-staging/api\x1b[0m" in coloured
    assert "\x1b[31m- log_group /dmp-staging/old\x1b[0m" in coloured
    assert "\x1b[33m~ cluster dmp-staging\x1b[0m" in coloured
    assert "\x1b[" not in plan.render_text()


def test_drift_of_a_policy_is_a_diff_and_critical_is_red():
    expected = {"Version": "2012-10-17", "Statement": [
        {"Sid": f"S{i}", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::bucket-{i}/*"}
        for i in range(6)]}
    actual = copy.deepcopy(expected)
    actual["Statement"][5]["Action"] = "s3:*"
    document = {"env": "staging", "in_sync": False, "orphans": [],
                "drift": [{"kind": "iam_role", "name": "dmp-staging-api", "field": "inline_policies.s3",
                           "expected": expected, "actual": actual, "severity": "critical"}],
                "summary": {"critical": 1, "warning": 0, "orphans": 0}}
    text = drift.render_text(document)
    lines = [line.strip() for line in text.splitlines()]
    assert '-      "Action": "s3:GetObject",'.replace(" ", "") in [line.replace(" ", "") for line in lines]
    assert ['+"Action":"s3:*",'] == [line.replace(" ", "") for line in lines if line.startswith("+")]
    assert "expected:" not in text and "..." not in text
    assert "\x1b[31m[CRITICAL] iam_role dmp-staging-api: inline_policies.s3\x1b[0m" in drift.render_text(
        document, color=True)


def test_color_wanted_follows_the_terminal_no_color_and_the_flag(monkeypatch):
    from dmp_deploy.commands.output import color_wanted

    class Tty:
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert color_wanted(stream=Tty()) is True
    assert color_wanted(no_color=True, stream=Tty()) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert color_wanted(stream=Tty()) is False
    monkeypatch.delenv("NO_COLOR")

    class Pipe:
        def isatty(self):
            return False

    assert color_wanted(stream=Pipe()) is False


def test_the_difference_between_an_approved_plan_and_a_new_one():
    from dmp_deploy import approval

    same = Change("log_group", "/a", "update", (FieldChange("retention_days", 7, 14),))
    approved = Plan("qa", [same, Change("log_group", "/b", "update", (FieldChange("retention_days", 7, 14),)),
                           Change("cluster", "c", "update", (FieldChange("insights", "off", "on"),))])
    now = Plan("qa", [same, Change("log_group", "/b", "update", (FieldChange("retention_days", 30, 14),)),
                      Change("bucket", "d", "create", (FieldChange("versioning", None, True),))])
    groups = approval.difference(approved, now)
    assert [(c.kind, c.name) for c in groups["added"]] == [("bucket", "d")]
    assert [(c.kind, c.name) for c in groups["changed"]] == [("log_group", "/b")]
    assert [(c.kind, c.name) for c in groups["dropped"]] == [("cluster", "c")]
    text = approval.render_difference(approved, now)
    assert "retention_days: 30 -> 14" in text and "/a" not in text  # what was approved as it is, is not repeated


def test_approval_refuses_without_a_way_to_ask_and_stops_with_yes_on_a_changed_plan():
    import pytest

    from dmp_deploy.approval import Approval, NotApproved

    plan = Plan("qa", [Change("log_group", "/a", "update", (FieldChange("retention_days", 7, 14),))])
    other = Plan("qa", [Change("log_group", "/a", "update", (FieldChange("retention_days", 30, 14),))])
    quiet = lambda text: None  # noqa: E731
    with pytest.raises(NotApproved, match="stdin is not one"):
        Approval("qa", "apply", embedded=False, yes=False, json_mode=False, interactive=False, say=quiet).confirm(plan)
    with pytest.raises(NotApproved, match="--json changes nothing without --yes"):
        Approval("qa", "apply", embedded=False, yes=False, json_mode=True, interactive=True, say=quiet).confirm(plan)
    answers = iter(["yes", "no"])
    asked = Approval("qa", "apply", embedded=False, yes=False, json_mode=False, interactive=True,
                     ask=lambda q: next(answers), say=quiet)
    assert asked.confirm(plan) is True and asked.confirm_again(plan, other) is False
    assert Approval("qa", "apply", embedded=False, yes=True, json_mode=False, say=quiet).confirm(plan) is True
    with pytest.raises(NotApproved, match="--yes approved the plan as it was"):
        Approval("qa", "apply", embedded=False, yes=True, json_mode=False, say=quiet).confirm_again(plan, other)
    local = Approval("local", "apply", embedded=True, yes=False, json_mode=True, interactive=False, say=quiet)
    assert local.confirm(plan) is True and local.confirm_again(plan, other) is True
