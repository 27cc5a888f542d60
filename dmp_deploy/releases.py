"""Release records: every successful apply or revert that changed something is an immutable, numbered record in
the state bucket, written with If-None-Match so two runs can never write the same number.

A record holds what is needed to name, inspect and return to that release: the rendered desired state (every
kind's canonical specs, the task definitions and state machines), the live identifiers it resolved (task
definition ARN per family, state machine version, access point ids, group ids, ...), the changes it made, who
made it and from which git commit. A failed apply writes nothing, so the current release is always one that
succeeded.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import structlog
from botocore.exceptions import ClientError

from dmp_deploy.aws import error_code
from dmp_deploy.errors import CorruptState, UserError
from dmp_deploy.state_store import NOT_FOUND, StateStore, precondition_failed, schema_problems

log = structlog.get_logger()
PREFIX = "releases/"
RECORD_KIND = "release_record"  # the resource kind that writes records (resources/release_record.py)
ROOT = Path(__file__).resolve().parent.parent


def key(number: int) -> str:
    return f"{PREFIX}{number:08d}.json"


def numbers(store: StateStore) -> list[int]:
    return sorted(int(k[len(PREFIX):-len(".json")]) for k in store.keys(PREFIX)
                  if k.endswith(".json") and k[len(PREFIX):-len(".json")].isdigit())


# What revert, drift and history rely on in a record (older records may lack the newer fields).
RECORD_SCHEMA = {"time": str, "kind": str, "changes": list, "desired": dict, "task_definitions": dict,
                 "state_machines": dict, "live": dict, "image_tags": (dict, type(None)),
                 "reverted_to": (int, type(None)), "caller": (str, type(None))}
INDEX_SCHEMA = {"task_definitions": list, "latest": (dict, type(None))}


def load(store: StateStore, number: int) -> dict:
    """Release `number`'s record; CorruptState (naming the object) when it cannot be read as one."""
    record = _record(store, number)
    if record is None:
        known = numbers(store)
        raise UserError(f"there is no release {number} for {store.config.env} "
                        f"(releases: {', '.join(map(str, known)) or 'none yet'})")
    return record


def _record(store: StateStore, number: int) -> dict | None:
    """Release `number`'s record, or None when there is none; CorruptState when it cannot be read as one."""
    record, _ = store.get_json(key(number), RECORD_SCHEMA, advice=(
        f"Release {number} cannot be reverted to or shown; choose another release (`python run.py history "
        f"--env {store.config.env}`). Records are never rewritten by this tool: restore an earlier version of "
        f"the object (the bucket is versioned) if it was damaged."))
    return record


def current(store: StateStore) -> dict | None:
    known = numbers(store)
    return load(store, known[-1]) if known else None


def git_commit() -> tuple[str | None, bool]:
    """The repository's commit and whether config or templates have uncommitted changes (None when unknown)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "config", "task_definitions", "asl"],
                               cwd=ROOT, capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        return commit or None, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return None, False


def build_record(rec, caller: str, kind: str = "apply", reverted_to: int | None = None,
                 reverted: int | None = None) -> dict:
    """`reverted_to`: the release a revert returned to; `reverted`: the release that was current when it did
    (what it undid), so that the next plain revert goes further back instead of onto it again."""
    state = rec.desired
    commit, dirty = git_commit()
    return {
        "env": state.config.env,
        "kind": kind,
        "reverted_to": reverted_to,
        "reverted": reverted,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "caller": caller,
        "git_commit": commit,
        "git_dirty": dirty,
        "image_tags": state.image_tags,
        "desired": state.resources,
        "task_definitions": state.task_definitions,
        "state_machines": state.state_machines,
        "live": rec.ctx.registry.dump(),
        "changes": [c.as_dict() for c in rec.plan.changes],
        # As the release_record kind computed it when the desired state was built (kinds may add to their
        # desired specs while reading, e.g. mount targets per subnet found): what the next plan compares.
        "digest": (state.resources.get(RECORD_KIND, {}).get(state.config.env) or {}).get("digest"),
    }


# {"task_definitions": [ARN, ...], "latest": {"number": N, "digest": D}}: every revision a recorded release ran,
# and which release is the newest with the digest of its desired state (see resources/release_record.py).
INDEX = f"{PREFIX}index.json"
NOT_FOUND_OBJECT = tuple(code for code in NOT_FOUND if code != "NoSuchBucket")


def write(store: StateStore, record: dict, ctx=None) -> int:
    """Write the record as the next release number; returns the number. Never overwrites a record. The index is
    updated after it: a run killed in between leaves a record the index does not name, which the next plan
    shows and the next apply repairs (resources/release_record.py).

    `ctx`: the context whose plan this run carried out. What that plan read of the releases (`Seen`) is where the
    write starts: the next number is the newest it saw + 1, and the index is the one it read, written back with
    If-Match on the ETag it had; both conditional, so anything written since (another run's record, a repaired
    index) only costs the listing or the re-read that every write made before. Two round trips (the record, the
    index) instead of up to seven (a first apply listed and loaded every record to rebuild a missing index)."""
    seen = _seen(ctx) if ctx is not None else Seen()
    guess = seen.next_number()
    number = None
    if guess is not None:
        try:
            store.put_json(key(guess), {**record, "number": guess}, if_none_match=True)
            number = guess
        except Exception as exc:
            if not precondition_failed(exc):
                raise
    if number is None:  # the plan did not learn the newest number, or another run took it since
        number = _write_listed(store, record)
    # Only while no record was written since the plan (its number was free): then its view of the index holds.
    start = seen.index_view() if number == guess else None
    _update_index(store, _revisions(record), {"number": number, "digest": record.get("digest")}, start)
    return number


def _write_listed(store: StateStore, record: dict) -> int:
    for _ in range(20):
        known = numbers(store)
        number = (known[-1] + 1) if known else 1
        try:
            store.put_json(key(number), {**record, "number": number}, if_none_match=True)
            return number
        except Exception as exc:
            if not precondition_failed(exc):
                raise
    raise UserError("could not write the release record: release numbers kept being taken by other runs")


class Seen:
    """What a context's plan read of the releases (`read_index`, `newest`), kept for `write` to start from."""

    def __init__(self):
        self.index_read = False
        self.index: dict | None = None  # the index as read (None: there was none)
        self.etag: str | None = None
        self.numbers: list[int] | None = None  # the record numbers, when they were listed
        self.recovered: set[str] | None = None  # with no index: every revision the listed records ran
        self.newest: int | None = None  # the newest record's number (0: none), when it was looked for

    def next_number(self) -> int | None:
        """The number the next record would take as far as the plan saw; None when it did not read the index."""
        if self.newest is not None:
            return self.newest + 1
        if self.numbers is not None:
            return (self.numbers[-1] if self.numbers else 0) + 1
        latest = (self.index or {}).get("latest")
        return latest["number"] + 1 if latest else None

    def index_view(self) -> tuple[dict | None, str | None, set[str] | None] | None:
        """(index, ETag, the revisions recovered from the records when there was no index) as the plan read them,
        or None when it did not."""
        if not self.index_read or (self.index is None and self.recovered is None):
            return None
        return self.index, self.etag, self.recovered


def _seen(ctx) -> Seen:
    return ctx.memo("s3: releases seen", Seen)


def _revisions(record: dict) -> list[str]:
    """The task definition revisions a release ran."""
    return [ids["arn"] for ids in record.get("live", {}).get("task_definition", {}).values() if "arn" in ids]


def _recorded_revisions(store: StateStore, known: list[int] | None = None) -> set[str]:
    """Every revision any readable release record ran (an unreadable record is skipped, with a warning).
    `known`: the record numbers, when they were just listed."""
    found: set[str] = set()
    for number in numbers(store) if known is None else known:
        try:
            found |= set(_revisions(load(store, number)))
        except CorruptState as exc:
            log.warning("an unreadable release record is left out of the rebuilt index", error=str(exc))
    return found


def _revisions_of_records(store: StateStore, numbers_: range) -> set[str]:
    """The revisions the records numbered `numbers_` ran (one read each; usually none to read). A number with no
    record or an unreadable one is skipped, the latter with a warning."""
    found: set[str] = set()
    for number in numbers_:
        try:
            record, _ = store.get_json(key(number), RECORD_SCHEMA)
        except CorruptState as exc:
            log.warning("an unreadable release record is left out of the index", error=str(exc))
            continue
        if record is None:
            continue
        found |= set(_revisions(record))
    return found


def _update_index(store: StateStore, arns: list[str], latest: dict | None,
                  start: tuple[dict | None, str | None, set[str] | None] | None = None) -> None:
    """Remember the revisions this release runs, so pruning never deregisters one a release still needs, and
    which release is the newest. `start`: the index as already read (`Seen.index_view`), tried first."""
    for attempt in range(20):
        if attempt == 0 and start is not None:
            index, etag, recovered = start
        else:
            (index, etag), recovered = _get_index(store), None
        known = set((index or {}).get("task_definitions", []))
        if index is None:
            # A new or rebuilt index: every recorded release's revisions, not only this one's, so that no
            # revision an older release needs loses its protection from pruning.
            known |= _recorded_revisions(store) if recovered is None else recovered
        current = (index or {}).get("latest")
        if index is not None and latest:
            # Records between the index's newest and this one were written by runs killed before their index
            # update: their revisions need the index's protection from pruning as much as this release's do.
            known |= _revisions_of_records(store, range(((current or {}).get("number") or 0) + 1, latest["number"]))
        if current and latest and (current.get("number") or 0) > latest["number"]:
            latest = current  # a newer release was indexed meanwhile
        if set(arns) <= known and current == latest:
            return
        document = {"task_definitions": sorted(known | set(arns)), "latest": latest}
        try:
            if etag:
                store.put_json(INDEX, document, if_match=etag)
            else:
                store.put_json(INDEX, document, if_none_match=True)
            return
        except Exception as exc:
            if not precondition_failed(exc):
                raise


def read_index(ctx) -> dict | None:
    """The release index, read once per run (the task_definition and release_record kinds share it); None when
    there is none yet, or no state bucket. What was read is kept for `write` (`Seen`)."""
    def read() -> dict | None:
        store = StateStore(ctx.config, ctx.aws)
        seen = _seen(ctx)
        try:
            index, etag = _get_index(store, missing=NOT_FOUND_OBJECT)
        except ClientError as exc:
            if error_code(exc) != "NoSuchBucket":
                raise
            index, etag = None, None
            seen.numbers, seen.recovered = [], set()  # no bucket: no records either, nothing to list
        seen.index_read, seen.index, seen.etag = True, index, etag
        if index is None and seen.numbers is None:
            seen.numbers = numbers(store)
            if seen.numbers:
                # Removed (or never written by a run killed early) while records exist: recover the revisions
                # every release needs from the records themselves, so that pruning in this very run spares them.
                # "latest" stays unknown, as for a missing index; the next release record writes the index back
                # in full.
                log.warning("the release index is missing: recovering the revisions releases need from the "
                            "records", index=store.location(INDEX))
                seen.recovered = _recorded_revisions(store, seen.numbers)
                index = {"task_definitions": sorted(seen.recovered), "latest": None}
            else:
                seen.recovered = set()
        return index

    return ctx.memo("s3: release index", read)


def _get_index(store: StateStore, missing: tuple[str, ...] = NOT_FOUND) -> tuple[dict, str] | tuple[None, None]:
    index, etag = store.get_json(INDEX, INDEX_SCHEMA, missing=missing, advice=(
        f"Remove it (`aws s3 rm {store.location(INDEX)}`): the next apply or revert rebuilds it from the release "
        f"records."))
    latest = (index or {}).get("latest")
    problems = [] if index is None else (
        ["task_definitions must be a list of ARNs"] if not all(isinstance(a, str) for a in index["task_definitions"])
        else []) + (schema_problems(latest, {"number": int, "digest": (str, type(None))}) if latest else [])
    if problems:
        raise CorruptState(f"{store.location(INDEX)} cannot be read: {'; '.join(problems)}. Remove it (`aws s3 rm "
                           f"{store.location(INDEX)}`): the next apply or revert rebuilds it from the release "
                           f"records.")
    return index, etag


def newest(ctx) -> dict | None:
    """The newest release's {"number": N, "digest": D}, or None when there is none; once per context.

    When the index names release N, N is the newest unless a run was killed between recording N + 1 and indexing
    it: one read, of N + 1, tells (and is the only read). Only when that record exists, or there is no index to
    start from, are the records listed."""
    def find() -> dict | None:
        store = StateStore(ctx.config, ctx.aws)
        read_index(ctx)
        seen = _seen(ctx)
        latest = (seen.index or {}).get("latest")
        known = seen.numbers
        if latest:
            after = _record(store, latest["number"] + 1)
            if after is None:
                seen.newest = latest["number"]
                return {"number": latest["number"], "digest": latest.get("digest")}
            known = numbers(store)  # N + 1 was recorded but not indexed: perhaps more after it
            if known and known[-1] == latest["number"] + 1:
                seen.newest = known[-1]
                return {"number": known[-1], "digest": after.get("digest")}
        if known is None:
            known = numbers(store)
        seen.newest = known[-1] if known else 0
        return {"number": known[-1], "digest": load(store, known[-1]).get("digest")} if known else None

    return ctx.memo("s3: newest release", find)


def repair_index(ctx, number: int, digest: str) -> None:
    """Index release `number`, recorded by a run killed before it updated the index."""
    store = StateStore(ctx.config, ctx.aws)
    _update_index(store, _revisions(load(store, number)), {"number": number, "digest": digest})


def summary(record: dict) -> str:
    changes = record.get("changes", [])
    symbols = {"create": "+", "update": "~", "replace": "-/+", "delete": "-"}
    shown = ", ".join(f"{symbols.get(c['action'], '?')}{c['kind']} {c['name']}" for c in changes[:6])
    more = f", and {len(changes) - 6} more" if len(changes) > 6 else ""
    return f"{len(changes)} change(s): {shown}{more}" if changes else "no changes"
