"""Saved plans: `plan --out FILE` writes the plan with fingerprints of what it was built from; `apply FILE`
carries out exactly that plan, or refuses and changes nothing.

This is how CI promotes a reviewed plan: the plan a person approved in a pull request is the plan that runs. Two
fingerprints make "exactly" checkable:

- the desired state (config, templates and `--image` values rendered): a config or template changed since is
  refused, because apply would carry out something nobody reviewed;
- the live state the plan was read from (every kind's canonical live spec and ids): when anything changed in
  AWS since, the same plan could mean something else, so it is refused too, before anything changes and again
  under the deploy lock.

The file holds no secret values: specs name secrets by ARN only.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from dmp_deploy.errors import PlanError, UserError

FORMAT = "dmp-deploy-plan/1"


class StalePlan(PlanError):
    """The saved plan no longer describes what apply would do."""

    kind = "stale-plan"


def _digest(document) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def live_fingerprint(rec) -> str:
    """What the plan was read from: every kind's live resources, canonical spec and ids."""
    return _digest({kind: {name: {"spec": live.spec, "ids": live.ids} for name, live in resources.items()}
                    for kind, resources in rec.live.items()})


def desired_fingerprint(state) -> str:
    return _digest({"resources": state.resources, "task_definitions": state.task_definitions,
                    "state_machines": state.state_machines})


def save(path: str, rec, image_overrides: list[str]) -> None:
    document = {
        "format": FORMAT,
        "env": rec.plan.env,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "image_overrides": image_overrides,
        "desired_fingerprint": desired_fingerprint(rec.desired),
        "live_fingerprint": live_fingerprint(rec),
        "plan": rec.plan.as_dict(),
    }
    Path(path).write_text(json.dumps(document, indent=1, sort_keys=True, default=str) + "\n")


def load(path: str, env: str) -> dict:
    """The saved plan in FILE, checked: the right format and environment."""
    try:
        document = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"{path}: cannot read the saved plan ({exc.strerror})") from None
    except ValueError as exc:
        raise UserError(f"{path}: not a saved plan (not JSON: {exc}); make one with `python run.py plan --env "
                        f"{env} --out {path}`") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise UserError(f"{path}: not a saved plan of this tool (format {FORMAT}); make one with `python run.py "
                        f"plan --env {env} --out {path}`")
    if document.get("env") != env:
        raise UserError(f"{path}: the plan is for {document.get('env')!r}, not {env!r}. Nothing was changed.")
    return document


def checker(saved: dict, path: str):
    """A check for apply to run on every plan it builds (before approval, and under the lock): the desired and
    live state must be those the saved plan was built from, and the plan the saved one."""
    def check(rec) -> None:
        problems = []
        if desired_fingerprint(rec.desired) != saved["desired_fingerprint"]:
            problems.append("the configuration or templates changed since it was saved")
        if live_fingerprint(rec) != saved["live_fingerprint"]:
            problems.append("the live state in AWS changed since it was saved")
        if not problems and rec.plan.as_dict() != saved["plan"]:
            problems.append("the plan built now is different")
        if problems:
            raise StalePlan(f"{path} (saved {saved['created']}) no longer matches: {'; '.join(problems)}. Nothing "
                            f"was changed. Make and review a new plan (`python run.py plan --env {saved['env']} "
                            f"--out {path}`), then apply it.")
    return check
