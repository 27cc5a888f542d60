"""A plan is data: an ordered list of changes, serialisable and printable without AWS."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Action = Literal["create", "update", "replace", "delete"]
SYMBOLS = {"create": "+", "update": "~", "replace": "-/+", "delete": "-"}


@dataclass(frozen=True)
class FieldChange:
    path: str  # dotted field path, e.g. "retention_days" or "tags.Owner"
    before: Any
    after: Any
    forces_replace: bool = False


@dataclass(frozen=True)
class Change:
    kind: str
    name: str
    action: Action
    fields: tuple[FieldChange, ...] = ()
    destroys_data: bool = False  # deleting or replacing it would destroy data (non-empty bucket, file system)
    note: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        d["fields"] = [asdict(f) for f in self.fields]
        return d


@dataclass
class Plan:
    env: str
    changes: list[Change] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes

    def refused_destroys(self, allow_destroy: bool) -> list[Change]:
        return [] if allow_destroy else [c for c in self.changes if c.destroys_data]

    def summary(self) -> dict[str, int]:
        counts = {a: 0 for a in SYMBOLS}
        for c in self.changes:
            counts[c.action] += 1
        return counts

    def as_dict(self) -> dict:
        return {"env": self.env, "changes": [c.as_dict() for c in self.changes], "summary": self.summary()}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=False, default=str)

    def render_text(self, color: bool = False) -> str:
        """The readable diff: one block per change, each field with its before and after (dmp_deploy/show.py)."""
        from dmp_deploy import show  # show renders plans: imported here, it imports this module

        return show.plan_text(self, color)
