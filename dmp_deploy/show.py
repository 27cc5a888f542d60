"""Plans and drift as a person reads them.

- A scalar field is one line, `path: before -> after`.
- A JSON-valued field (a state machine definition, a policy, container definitions) that does not fit on a line
  is a unified diff of its pretty-printed form: only the changed lines, with three lines of context. Nothing is
  cut short, so nothing that changed is hidden.
- Derived noise is folded into one line: a task definition change always means "a new revision" and a new
  content-hash tag; both say the same thing as the fields that really changed.
- Colour only when asked (the CLI asks on a terminal, never for pipes, NO_COLOR or --no-color): `+` green,
  `~` yellow, `-` red, critical drift red.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from dmp_deploy.plan import SYMBOLS, Change, FieldChange, Plan

GREEN, YELLOW, RED, DIM, RESET = "\033[32m", "\033[33m", "\033[31m", "\033[2m", "\033[0m"
ACTION_COLORS = {"create": GREEN, "update": YELLOW, "replace": RED, "delete": RED}
INLINE_WIDTH = 100  # a JSON value longer than this on one line is shown pretty-printed (and diffed)
CONTEXT_LINES = 3

# Fields every change of a kind carries whatever really changed: shown as one line, not as fields.
NEXT_REVISION_PREFIX = "next:"  # resources/task_definitions.py: the revision a change will register
CONTENT_HASH_PATH = "tags.dmp:content-hash"


def paint(text: str, color: str, enabled: bool) -> str:
    return f"{color}{text}{RESET}" if enabled and text else text


def _derived(field: FieldChange) -> bool:
    return field.path == CONTENT_HASH_PATH or (
        field.path == "revision" and isinstance(field.after, str) and field.after.startswith(NEXT_REVISION_PREFIX))


def _folded(fields: list[FieldChange]) -> str:
    revision = next((f for f in fields if f.path == "revision"), None)
    digest = next((f for f in fields if f.path == CONTENT_HASH_PATH), None)
    parts = []
    if revision is not None:
        parts.append(f"a new revision is registered in place of revision {_inline(revision.before)}")
    if digest is not None:
        parts.append(f"content hash {_short(digest.before)} -> {_short(digest.after)}")
    return "(" + "; ".join(parts) + ")"


def _short(value: Any) -> str:
    return f"{value[:12]}…" if isinstance(value, str) and len(value) > 16 else _inline(value)


def _inline(value: Any) -> str:
    if value is None:
        return "(none)"
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def _structured(value: Any) -> Any:
    """The value as JSON data: a string holding a JSON object or array is parsed (policy documents, definitions
    are sometimes strings)."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _pretty(value: Any) -> list[str]:
    return json.dumps(_structured(value), indent=2, sort_keys=True, default=str, ensure_ascii=False).splitlines()


def _is_block(value: Any) -> bool:
    return isinstance(_structured(value), (dict, list)) and len(_inline(value)) > INLINE_WIDTH


def unified(before: Any, after: Any, color: bool = False, minus: str = "-", plus: str = "+") -> list[str]:
    """The changed lines of two JSON values' pretty-printed forms, with context; hunks separated by `@@`."""
    lines = []
    for line in difflib.unified_diff(_pretty(before) if before is not None else [],
                                     _pretty(after) if after is not None else [], n=CONTEXT_LINES, lineterm=""):
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("@@"):
            lines.append(paint("@@", DIM, color))
        elif line.startswith("-"):
            lines.append(paint(minus + line[1:], RED, color))
        elif line.startswith("+"):
            lines.append(paint(plus + line[1:], GREEN, color))
        else:
            lines.append(line)
    return lines


def field_lines(action: str, field: FieldChange, color: bool = False) -> list[str]:
    marker = "  # forces replacement" if field.forces_replace else ""
    value = field.after if action == "create" else field.before if action == "delete" else None
    if action in ("create", "delete"):
        if _is_block(value):
            return [f"{field.path}:", *("    " + line for line in _pretty(value))]
        return [f"{field.path}: {_inline(value)}"]
    if _is_block(field.before) or _is_block(field.after):
        return [f"{field.path}:{marker}", *("    " + line for line in unified(field.before, field.after, color))]
    return [f"{field.path}: {_inline(field.before)} -> {_inline(field.after)}{marker}"]


def change_lines(change: Change, color: bool = False) -> list[str]:
    """One change as lines: the header, its note, then its fields (derived ones folded into one line)."""
    head = f"{SYMBOLS[change.action]} {change.kind} {change.name}"
    if change.action == "replace":
        head += " (replace: AWS cannot update it in place)"
    if change.destroys_data:
        head += "  [DESTROYS DATA: needs --allow-destroy]"
    lines = [paint(head, ACTION_COLORS[change.action], color)]
    if change.note:
        lines.append(f"    # {change.note}")
    fields = list(change.fields)
    derived = [f for f in fields if _derived(f)] if change.action in ("update", "replace") else []
    for field in fields:
        if field not in derived:
            lines.extend("    " + line for line in field_lines(change.action, field, color))
    if derived:
        lines.append("    " + paint(_folded(derived), DIM, color))
    return lines


def plan_text(plan: Plan, color: bool = False) -> str:
    if plan.empty:
        return f"No changes: environment {plan.env!r} matches the configuration."
    lines = [line for change in plan.changes for line in change_lines(change, color)]
    s = plan.summary()
    lines.append("")
    lines.append(f"Plan for {plan.env}: {paint(str(s['create']) + ' to create', GREEN, color and s['create'] > 0)}, "
                 f"{paint(str(s['update']) + ' to update', YELLOW, color and s['update'] > 0)}, "
                 f"{paint(str(s['replace']) + ' to replace', RED, color and s['replace'] > 0)}, "
                 f"{paint(str(s['delete']) + ' to delete', RED, color and s['delete'] > 0)}.")
    return "\n".join(lines)


def drift_text(document: dict, color: bool = False) -> str:
    """The drift document (dmp_deploy/drift.py) as text: expected vs actual, diffed when JSON-valued."""
    if document["in_sync"]:
        return f"{document['env']}: in sync with the current release."
    lines = []
    for d in document["drift"]:
        tone = RED if d["severity"] == "critical" else YELLOW
        lines.append(paint(f"[{d['severity'].upper()}] {d['kind']} {d['name']}: {d['field']}", tone, color))
        if _is_block(d["expected"]) or _is_block(d["actual"]):
            lines.append("    (- expected, + actual)")
            lines.extend("    " + line for line in unified(d["expected"], d["actual"], color))
        else:
            lines.append(f"    expected: {_inline(d['expected'])}")
            lines.append(f"    actual:   {_inline(d['actual'])}")
    for o in document["orphans"]:
        lines.append(paint(f"[ORPHAN] {o['kind']} {o['name']}: owned by this environment, declared by nothing",
                           YELLOW, color))
    s = document["summary"]
    lines.append(f"\n{document['env']}: {paint(str(s['critical']) + ' critical', RED, color and s['critical'] > 0)}, "
                 f"{s['warning']} warning, {s['orphans']} orphan(s). "
                 f"`python run.py apply --env {document['env']}` repairs drift; orphans need --allow-destroy "
                 f"when they hold data.")
    return "\n".join(lines)


def _cell(value) -> str:
    text = _inline(value) if not isinstance(value, str) else value
    text = text if len(text) <= 80 else text[:77] + "..."  # a table cell; the full values are in the JSON
    return text.replace("|", "\\|").replace("\n", " ")


def drift_markdown(document: dict) -> str:
    """The drift document as a Markdown table (for a CI job summary, e.g. $GITHUB_STEP_SUMMARY)."""
    env, s = document["env"], document["summary"]
    if document["in_sync"]:
        return f"### drift: {env}\n\nIn sync with release {document.get('release')}.\n"
    lines = [f"### drift: {env}", "",
             f"**{s['critical']} critical**, {s['warning']} warning, {s['orphans']} orphan(s) against release "
             f"{document.get('release')}.", "",
             "| severity | kind | name | field | expected | actual |", "|---|---|---|---|---|---|"]
    for d in sorted(document["drift"], key=lambda d: (d["severity"] != "critical", d["kind"], d["name"])):
        lines.append(f"| {d['severity']} | {d['kind']} | {_cell(d['name'])} | {_cell(d['field'])} | "
                     f"{_cell(d['expected'])} | {_cell(d['actual'])} |")
    for o in document["orphans"]:
        lines.append(f"| orphan | {o['kind']} | {_cell(o['name'])} | | declared by nothing | exists |")
    return "\n".join(lines) + "\n"
