"""Checking requests against botocore's operation models, including what the client itself does not enforce.

botocore's own parameter validation (on in every client) checks required members, types and minimum lengths only.
AWS also refuses a request whose value is longer than the model's `max`, does not match its `pattern`, or is not one
of its `enum` values; and a few rules are written only in the documentation (ECS RunTask's `startedBy`), listed in
DOCUMENTED_RULES with where they come from. `problems(service, operation, params)` returns every breach, each naming
the parameter's path.

Patterns are AWS's (Java syntax), matched against the whole value as AWS's services do (a model pattern such as
CloudWatch Logs' `[\\.\\-_/#A-Za-z0-9]+` for a log group name is meant whole), compiled with the `regex` module,
which reads `\\p{...}` classes as Java does.
"""

from __future__ import annotations

import datetime
import functools
from typing import Any

import botocore.session
import regex

# (service, operation, dotted parameter path) -> (pattern that must match the whole value, where it is written).
DOCUMENTED_RULES: dict[tuple[str, str, str], tuple[str, str]] = {
    ("ecs", "RunTask", "startedBy"): (
        r"[A-Za-z0-9_/-]{1,128}",
        "ECS RunTask/StartTask: up to 128 letters, numbers, hyphens (-), forward slashes (/) and underscores (_)"),
    ("ecs", "StartTask", "startedBy"): (
        r"[A-Za-z0-9_/-]{1,128}",
        "ECS RunTask/StartTask: up to 128 letters, numbers, hyphens (-), forward slashes (/) and underscores (_)"),
    ("stepfunctions", "StartExecution", "name"): (
        r"[A-Za-z0-9_-]{1,80}",
        "Step Functions StartExecution: 1-80 characters; no whitespace, brackets, wildcards, control characters "
        "or special punctuation (this check is stricter: letters, numbers, - and _)"),
    # ELB's names and health check paths: the model has no max or pattern for them (nor has CloudFormation's
    # schema: see test_aws_schemas), the API reference states them in words.
    ("elbv2", "CreateLoadBalancer", "Name"): (
        r"(?!internal-)[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?",
        "ELB CreateLoadBalancer: at most 32 characters, only alphanumerics and hyphens, not beginning or ending "
        "with a hyphen, not beginning with internal-"),
    ("elbv2", "CreateTargetGroup", "Name"): (
        r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?",
        "ELB CreateTargetGroup: at most 32 characters, only alphanumerics and hyphens, not beginning or ending "
        "with a hyphen"),
    ("elbv2", "CreateTargetGroup", "HealthCheckPath"): (
        r"/.*", "ELB target group health checks: the destination path must begin with a '/' character"),
    ("elbv2", "ModifyTargetGroup", "HealthCheckPath"): (
        r"/.*", "ELB target group health checks: the destination path must begin with a '/' character"),
}


@functools.lru_cache(maxsize=None)
def _model(service: str):
    return botocore.session.get_session().get_service_model(service)


@functools.lru_cache(maxsize=None)
def _pattern(text: str):
    return regex.compile(text)


def operation_name(service: str, snake: str) -> str:
    """The model's operation name (PascalCase) for the client method name the seam calls (snake_case)."""
    model = _model(service)
    for name in model.operation_names:
        if botocore.xform_name(name) == snake:
            return name
    raise KeyError(f"{service} has no operation {snake}")


def problems(service: str, operation: str, params: dict) -> list[str]:
    """Every way `params` breaks `service`'s `operation` (snake_case or PascalCase) as AWS would refuse it."""
    if operation[:1].islower():
        operation = operation_name(service, operation)
    shape = _model(service).operation_model(operation).input_shape
    found: list[str] = []
    if shape is not None:
        _walk(shape, params, "", found)
    elif params:
        found.append(f"takes no parameters, got {sorted(params)}")
    for (svc, op, path), (pattern, source) in DOCUMENTED_RULES.items():
        if (svc, op) != (service, operation):
            continue
        value = _dig(params, path)
        if value is not None and not regex.fullmatch(pattern, str(value)):
            found.append(f"{path}: {value!r} breaks the documented rule ({source})")
    return [f"{service}.{operation} {p}" for p in found]


def _dig(params: dict, path: str) -> Any:
    value: Any = params
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _length(value: Any) -> int:
    return len(value.encode()) if isinstance(value, str) else len(value)


def _walk(shape, value: Any, path: str, found: list[str]) -> None:
    here = path or "(request)"
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if not isinstance(value, dict):
            found.append(f"{here}: expected a structure, got {type(value).__name__}")
            return
        for name in shape.required_members:
            if name not in value:
                found.append(f"{path + '.' if path else ''}{name}: required, missing")
        for name, item in value.items():
            member = shape.members.get(name)
            where = f"{path}.{name}" if path else name
            if member is None:
                found.append(f"{where}: not a member of {shape.name}")
            else:
                _walk(member, item, where, found)
        return
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            found.append(f"{here}: expected a list, got {type(value).__name__}")
            return
        _bounds(meta, len(value), here, "items", found)
        for i, item in enumerate(value):
            _walk(shape.member, item, f"{path}[{i}]", found)
        return
    if kind == "map":
        if not isinstance(value, dict):
            found.append(f"{here}: expected a map, got {type(value).__name__}")
            return
        _bounds(meta, len(value), here, "entries", found)
        for key, item in value.items():
            _walk(shape.key, key, f"{path}.<key {key}>", found)
            _walk(shape.value, item, f"{path}.{key}", found)
        return
    if kind == "string":
        if not isinstance(value, str):
            found.append(f"{here}: expected a string, got {type(value).__name__}")
            return
        _bounds(meta, len(value), here, "characters", found)
        if shape.enum and value not in shape.enum:
            found.append(f"{here}: {value!r} is not one of {sorted(shape.enum)}")
        pattern = meta.get("pattern")
        if pattern and not _pattern(pattern).fullmatch(value):
            found.append(f"{here}: {value!r} does not match the pattern {pattern!r}")
        return
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            found.append(f"{here}: expected an integer, got {type(value).__name__}")
            return
        _bounds(meta, value, here, "", found, value_bound=True)
        return
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            found.append(f"{here}: expected a number, got {type(value).__name__}")
        return
    if kind == "boolean":
        if not isinstance(value, bool):
            found.append(f"{here}: expected a boolean, got {type(value).__name__}")
        return
    if kind == "blob":
        if not isinstance(value, (bytes, bytearray, str)) and not hasattr(value, "read"):
            found.append(f"{here}: expected bytes, got {type(value).__name__}")
        elif not hasattr(value, "read"):
            _bounds(meta, _length(value), here, "bytes", found)
        return
    if kind == "timestamp":
        if not isinstance(value, (datetime.datetime, datetime.date, str, int, float)):
            found.append(f"{here}: expected a timestamp, got {type(value).__name__}")


def _bounds(meta: dict, size: int, here: str, unit: str, found: list[str], value_bound: bool = False) -> None:
    low, high = meta.get("min"), meta.get("max")
    what = f"{size}" if value_bound else f"{size} {unit}"
    if low is not None and size < low:
        found.append(f"{here}: {what}, below the minimum {low}")
    if high is not None and size > high:
        found.append(f"{here}: {what}, above the maximum {high}")
