"""Small pure functions for comparing canonical specs. Both sides are already in canonical form."""

from __future__ import annotations

from typing import Any

from dmp_deploy.plan import FieldChange


def field_changes(desired: dict, live: dict, replace_fields: frozenset[str] = frozenset(),
                  ignore: frozenset[str] = frozenset()) -> list[FieldChange]:
    """Field-level differences between two canonical specs.

    Top-level dict fields (tags, settings) are compared key by key so the plan names the exact key;
    everything else is compared whole. A difference in a field listed in `replace_fields` forces a replace.
    """
    changes: list[FieldChange] = []
    for key in sorted(set(desired) | set(live)):
        if key in ignore:
            continue
        want, have = desired.get(key), live.get(key)
        if want == have:
            continue
        forces = key in replace_fields
        if isinstance(want, dict) and isinstance(have, dict) and not forces:
            for sub in sorted(set(want) | set(have)):
                if want.get(sub) != have.get(sub):
                    changes.append(FieldChange(f"{key}.{sub}", have.get(sub), want.get(sub)))
        else:
            changes.append(FieldChange(key, have, want, forces_replace=forces))
    return changes


def creation_fields(spec: dict) -> list[FieldChange]:
    return [FieldChange(k, None, v) for k, v in sorted(spec.items())]


def deletion_fields(spec: dict) -> list[FieldChange]:
    return [FieldChange(k, v, None) for k, v in sorted(spec.items())]


def set_difference(desired: list, live: list) -> tuple[list, list]:
    """(to add, to remove) between two lists treated as sets of hashable or JSON-able items."""
    key = _freeze
    want = {key(x): x for x in desired}
    have = {key(x): x for x in live}
    return [want[k] for k in want if k not in have], [have[k] for k in have if k not in want]


def _freeze(value: Any):
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value
