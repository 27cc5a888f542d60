"""Who approves a plan before `apply` or `revert` carries it out.

Against a real account nothing changes without an approval: `yes` typed on a terminal, or `--yes`. Without a
terminal (a pipe, CI) or with `--json` (a machine is reading), and without `--yes`, the command refuses: a piped
`echo no | apply` or a scripted `apply --json` must never change an environment by default. The embedded AWS
(`--env local`) needs no approval: nothing there is worth protecting.

What was approved is one plan. The plan is built again under the deploy lock; when that one differs (someone
changed the environment while this run waited), the difference is shown and approved again; `--yes` approved
the first plan only, so it stops there and changes nothing.
"""

from __future__ import annotations

import sys
from typing import Callable

from dmp_deploy.errors import PlanError
from dmp_deploy.plan import Change, Plan


class NotApproved(PlanError):
    """The plan was not approved (declined, or no way to ask): nothing was changed."""

    kind = "approval"


def _key(change: Change) -> tuple[str, str]:
    return change.kind, change.name


def difference(approved: Plan, now: Plan) -> dict[str, list[Change]]:
    """The changes of `now` that were not approved as they are: added, dropped, or different."""
    before = {_key(c): c for c in approved.changes}
    after = {_key(c): c for c in now.changes}
    return {
        "added": [c for k, c in after.items() if k not in before],
        "changed": [c for k, c in after.items() if k in before and before[k].as_dict() != c.as_dict()],
        "dropped": [c for k, c in before.items() if k not in after],
    }


def render_difference(approved: Plan, now: Plan, color: bool = False) -> str:
    """The difference as text: each group as plan blocks (the new version of a changed change)."""
    from dmp_deploy import show  # rendering only

    groups = difference(approved, now)
    titles = {"added": "Now also in the plan:", "changed": "Different from what was approved:",
              "dropped": "No longer in the plan (already done, or undone, by someone else):"}
    lines = ["The live state changed while this run waited for the deploy lock; the plan is now different."]
    for group, changes in groups.items():
        if changes:
            lines.append(titles[group])
            for change in changes:
                lines.extend("  " + line for line in show.change_lines(change, color))
    return "\n".join(lines)


def _stdin_is_a_terminal() -> bool:
    try:
        return bool(sys.stdin and sys.stdin.isatty())
    except (ValueError, OSError):  # closed
        return False


class Approval:
    """Asks (or refuses to go on) for one run of apply or revert."""

    def __init__(self, env: str, command: str, *, embedded: bool, yes: bool, json_mode: bool,
                 interactive: bool | None = None, ask: Callable[[str], str] = input,
                 say: Callable[[str], None] | None = None, color: bool = False):
        self.env, self.command = env, command
        self.embedded, self.yes, self.json_mode = embedded, yes, json_mode
        self.interactive = _stdin_is_a_terminal() if interactive is None else interactive
        self.ask = ask
        self.say = say or (lambda text: sys.stdout.write(text + "\n"))
        self.color = color
        self.shown: Plan | None = None  # the plan put up for approval

    def confirm(self, plan: Plan) -> bool:
        """Approval of the plan shown. Raises NotApproved when it cannot ask and was not told --yes."""
        self.shown = plan
        if self.embedded or self.yes:
            return True
        if self.json_mode:
            raise NotApproved(f"{self.command} --json changes nothing without --yes (it cannot ask for approval): "
                              f"review the plan ({len(plan.changes)} change(s) to {self.env}), then run it again "
                              f"with --yes. Nothing was changed.")
        if not self.interactive:
            raise NotApproved(f"{self.command} asks for approval on a terminal, and stdin is not one: review the "
                              f"plan above ({len(plan.changes)} change(s) to {self.env}), then run it again with "
                              f"--yes to carry it out. Nothing was changed.")
        return self._ask(f"Carry out {len(plan.changes)} change(s) to {self.env}? Only 'yes' is accepted: ")

    def confirm_again(self, approved: Plan, now: Plan) -> bool:
        """Approval of a plan rebuilt under the lock that differs from the approved one."""
        if self.embedded:
            if not self.json_mode:
                self.say("\nThe live state changed while waiting for the lock; carrying out this plan instead:\n"
                         + now.render_text())
            return True
        text = render_difference(approved, now, self.color)
        if self.yes:
            if not self.json_mode:
                self.say("\n" + text)
            raise NotApproved(f"the plan changed while waiting for the deploy lock, and --yes approved the plan "
                              f"as it was: nothing was changed. Review the new plan (`python run.py plan --env "
                              f"{self.env}`) and run {self.command} again.")
        self.say("\n" + text)
        return self._ask(f"Carry out the new plan ({len(now.changes)} change(s) to {self.env})? "
                         f"Only 'yes' is accepted: ")

    def _ask(self, question: str) -> bool:
        try:
            return self.ask(question).strip() == "yes"
        except EOFError:
            return False
