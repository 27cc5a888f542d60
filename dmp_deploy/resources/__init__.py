"""The resource kinds, one module each. Adding a kind: write its module (see base.py), add it here.

Order here is only the tie-break; the engine orders kinds by their `depends_on`.
"""

from __future__ import annotations

from dmp_deploy.resources.base import ResourceKind
from dmp_deploy.resources.log_groups import LogGroups


def all_kinds() -> list[ResourceKind]:
    return [
        LogGroups(),
    ]
