"""The release record of the deployed state (kind `release_record`, one resource: the environment).

A release record is written after the last change of an apply or revert (dmp_deploy/releases.py). A run killed
after its last change but before (or while) recording would leave a deployed state no release describes: the
next apply would find nothing to change, `history` would not show it, and `revert` could not return to it. This
kind makes that visible and repairable like any other difference. Its spec is the digest of every other kind's
desired spec:

    {"digest": "sha256 of the canonical JSON of the desired resources"}

and its live side is the digest the release index (`releases/index.json`, already read to protect the revisions
releases need, so a no-op plan makes no call of its own) says the newest release holds. When they differ and nothing else changes,
the plan shows the release to record (with other changes, a release is recorded anyway and it is not shown). Apply records it: for a plan with other changes, deploy.py writes the record after
them as always; when this is the only change, either the newest record already holds the digest (the run died
between writing the record and the index: only the index is repaired) or a new release is recorded.
"""

from __future__ import annotations

import hashlib
import json

from botocore.exceptions import ClientError

from dmp_deploy import releases
from dmp_deploy.aws import error_code
from dmp_deploy.plan import FieldChange
from dmp_deploy.resources.base import Context, Live, ResourceKind

KIND = releases.RECORD_KIND


def digest(resources: dict) -> str:
    """The digest of a desired state's resources (this kind's own entry excluded)."""
    document = {kind: specs for kind, specs in resources.items() if kind != KIND}
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


class ReleaseRecords(ResourceKind):
    kind = KIND
    # Last of all: compared after every other kind, recorded after every other change (all_kinds() makes it
    # depend on every other kind).
    depends_on: tuple[str, ...] = ()
    only_when_alone = True  # with other changes, deploy.py records a release anyway

    def desired(self, state) -> dict[str, dict]:
        return {state.config.env: {"digest": digest(state.resources)}}

    def read(self, ctx: Context) -> dict[str, Live]:
        env = ctx.config.env
        if env not in ctx.desired.resources.get(self.kind, {}):
            return {}  # reverting to a release recorded before this kind existed: nothing to compare
        try:
            index = releases.read_index(ctx)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchBucket", "404", "NoSuchKey", "AccessDenied"):
                return {}  # no state bucket yet, or this role may not read it
            raise
        latest = (index or {}).get("latest") or {}
        ids = {"number": latest.get("number"), "index_only": False}
        want = ctx.desired.resources[self.kind][env]["digest"]
        if latest.get("digest") != want:
            # Only when they differ: does the newest record already hold this state (killed before the index)?
            newest = releases.newest(ctx)
            if newest is None:
                return {}  # no release yet: the first apply records one
            if newest.get("digest") == want:
                ids = {"number": newest["number"], "index_only": True}
            elif not latest:
                ids["number"] = newest["number"]
        return {env: Live(spec={"digest": latest.get("digest")}, ids=ids)}

    def diff(self, name: str, desired: dict, live: Live) -> list[FieldChange]:
        if desired["digest"] == live.spec["digest"]:
            return []
        number = live.ids.get("number")
        if live.ids.get("index_only"):
            return [FieldChange("index", f"release {number} is recorded but missing from the release index",
                                f"release {number} (index repaired)")]
        before = f"release {number}" if number else "no release holds it"
        return [FieldChange("release", f"{before} (the deployed state has no record: a run was interrupted "
                                       f"after its last change)" if number else before,
                            "a new release records the deployed state")]

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        pass  # deploy.py records the release after every change

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        if live.ids.get("index_only"):
            releases.repair_index(ctx, live.ids["number"], spec["digest"])
        # Otherwise deploy.py records the new release after every change.

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        pass  # records are never deleted
