"""Rendering the Jinja templates (task definitions, ASL) into JSON documents.

StrictUndefined everywhere: an undefined variable is an error naming the template and line, never an
empty string in a production task definition. Invalid JSON after rendering names the template and the
rendered line. Templates whose file name starts with `_` are macros and includes, not documents.
"""

from __future__ import annotations

import functools
import json
import traceback
from pathlib import Path
from typing import Any, Callable

import jinja2

from dmp_deploy.cache import cache_directory
from dmp_deploy.errors import RenderError

ROOT = Path(__file__).resolve().parent.parent
TASK_DEFINITIONS_DIR = ROOT / "task_definitions"
ASL_DIR = ROOT / "asl"


class TemplateFunctionError(Exception):
    """Raised by a template helper (such as `secret()`); becomes a RenderError naming the template line."""


def environment(directory: Path) -> jinja2.Environment:
    """The Jinja environment of a template directory, one per process: compiled templates are kept in memory
    (Jinja re-reads a file whose mtime changed) and, across processes, in a bytecode cache keyed by each
    template's source checksum, so only a template that changed is compiled again."""
    return _environment(str(Path(directory).resolve()))


@functools.lru_cache(maxsize=None)
def _environment(directory: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        bytecode_cache=_bytecode_cache(),
    )
    env.filters["tojson"] = _tojson
    return env


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Jinja's file cache, in the tool's cache directory (dmp_deploy/cache.py: $DMP_CACHE_DIR, .dmp-cache/ or the
    user's cache directory); none if no such directory is writable (templates are then compiled in every
    process)."""
    directory = cache_directory("jinja", ROOT)
    return jinja2.FileSystemBytecodeCache(str(directory)) if directory is not None else None


def _tojson(value: Any) -> str:
    """JSON for a template value; an undefined value is the usual undefined-variable error, not a TypeError."""
    def default(obj):
        if isinstance(obj, jinja2.Undefined):
            obj._fail_with_undefined_error()
        raise TypeError(f"{type(obj).__name__} cannot be written as JSON")
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return json.dumps(value, default=default)


def documents(directory: Path, suffix: str) -> list[Path]:
    """The templates in `directory` that render into documents (not `_`-prefixed partials), sorted."""
    return sorted(p for p in directory.glob(f"*{suffix}") if not p.name.startswith("_"))


def render_json(env: jinja2.Environment, template: str, variables: dict[str, Any], directory: Path) -> Any:
    """Render one template and parse it as JSON; every failure names the file and line."""
    where = _relative(directory / template)
    try:
        text = env.get_template(template).render(**variables)
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"{_relative(Path(exc.filename or where))}:{exc.lineno}: template syntax error: "
                          f"{exc.message}") from None
    except jinja2.UndefinedError as exc:
        line = _template_line(exc, where)
        raise RenderError(f"{line}: undefined variable: {exc.message}. Define it in the config "
                          f"(config/README.md) or fix the template.") from None
    except TemplateFunctionError as exc:
        raise RenderError(f"{_template_line(exc, where)}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        lines = text.splitlines()
        shown = lines[exc.lineno - 1].strip() if 0 < exc.lineno <= len(lines) else ""
        raise RenderError(f"{where}: rendered output is not valid JSON: {exc.msg} at rendered line "
                          f"{exc.lineno}, column {exc.colno}: {shown!r}. Check the template around that "
                          f"line (a missing comma or quote, or a value that needs `| tojson`).") from None


def _template_line(exc: BaseException, fallback: str) -> str:
    """The template file and line where the exception was raised, from Jinja's rewritten traceback."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".j2") or frame.filename.endswith(".json"):
            return f"{_relative(Path(frame.filename))}:{frame.lineno}"
    return fallback


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def helper(fn: Callable) -> Callable:
    """Mark a template helper whose ValueError/KeyError should be reported at the template line."""
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (KeyError, ValueError) as exc:
            raise TemplateFunctionError(exc.args[0] if exc.args else str(exc)) from None
    wrapped.__name__ = fn.__name__
    return wrapped
