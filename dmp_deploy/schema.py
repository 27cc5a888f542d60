"""Turning untyped data (TOML, JSON) into frozen dataclasses, collecting every problem with its path.

`load(cls, data, source)` walks the dataclass's type hints: nested dataclasses, `list[T]`, `dict[str, T]`,
`T | None`, `Literal[...]`, str, int, bool. Unknown keys, missing required keys and wrong types are all
reported together, each as "<source>: <dotted.key>: <problem>". A dataclass may define
`check(self) -> list[tuple[str, str]]` returning (key, problem) pairs for rules that span fields.
A dataclass may also list keys it no longer takes in `RETIRED_KEYS: ClassVar[dict[str, str]]` (key -> what
to do instead): an old file still naming one gets that message rather than "unknown key".
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints

from dmp_deploy.errors import ConfigError

MISSING = dataclasses.MISSING


def load(cls, data: Any, source: str):
    problems: list[str] = []
    value = _convert(cls, data, "", problems, source)
    if problems:
        raise ConfigError(_format(source, problems))
    return value


def _format(source: str, problems: list[str]) -> str:
    lines = [f"{source}: {len(problems)} problem(s) in the configuration:"]
    lines += [f"  - {p}" for p in problems]
    lines.append("Fix these keys (see config/README.md for every key and its meaning), then run the command again.")
    return "\n".join(lines)


def _type_name(tp) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (list,):
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin in (dict,):
        return f"a table of {_type_name(get_args(tp)[1])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", bool: "true or false", float: "a number"}.get(tp, str(tp))


def _convert(tp, value, path: str, problems: list[str], source: str):
    where = path or "(top level)"
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, path, problems, source)
    if origin is Literal:
        if value not in get_args(tp):
            problems.append(f"{where}: must be {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{where}: must be {_type_name(tp)}, got {type(value).__name__}")
            return []
        (item_tp,) = get_args(tp)
        return tuple(_convert(item_tp, v, f"{path}[{i}]", problems, source) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{where}: must be {_type_name(tp)}, got {type(value).__name__}")
            return {}
        _, value_tp = get_args(tp)
        return {k: _convert(value_tp, v, _join(path, k), problems, source) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, path, problems, source)
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{where}: must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: must be an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{where}: must be a string, got {value!r}")
        elif not value.strip():
            problems.append(f"{where}: must not be empty")
        return value
    return value


def _join(path: str, key: str) -> str:
    if not key:
        return path
    return f"{path}.{key}" if path else key


def _convert_dataclass(cls, value, path: str, problems: list[str], source: str):
    where = path or "(top level)"
    if not isinstance(value, dict):
        problems.append(f"{where}: must be a table, got {type(value).__name__}")
        return None
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    retired = getattr(cls, "RETIRED_KEYS", {})
    for key in value:
        if key in retired:
            problems.append(f"{_join(path, key)}: no longer a configuration key: {retired[key]}")
        elif key not in fields:
            known = ", ".join(sorted(fields))
            problems.append(f"{_join(path, key)}: unknown key (known keys here: {known})")
    before = len(problems)
    for name, f in fields.items():
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], _join(path, name), problems, source)
        elif f.default is MISSING and f.default_factory is MISSING:
            problems.append(f"{_join(path, name)}: missing (must be {_type_name(hints[name])})")
    if len(problems) > before or any(n not in kwargs and fields[n].default is MISSING
                                     and fields[n].default_factory is MISSING for n in fields):
        return None
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the checks above
        problems.append(f"{where}: {exc}")
        return None
    check = getattr(obj, "check", None)
    if check:
        for key, problem in check():
            problems.append(f"{_join(path, key)}: {problem}")
    return obj
