"""Writing results: one JSON document on stdout with --json, readable text otherwise. Logs go to stderr.

With --json, every run prints exactly one document, whatever happens: a command prints its own, and when it
fails before it could, the CLI prints `{"status": "error", "error": {"kind", "message"}}` (`error_document`).
"""

from __future__ import annotations

import json
import os
import sys

# Whether this process has printed its JSON document: the CLI prints an error document only when nothing was.
_json_emitted = False


def emit_json(document: dict) -> None:
    global _json_emitted
    _json_emitted = True
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def json_emitted() -> bool:
    return _json_emitted


def reset() -> None:
    """A new run of the CLI in this process (the tests run many)."""
    global _json_emitted
    _json_emitted = False


def error_document(kind: str, message: str, **extra) -> dict:
    """The JSON shape of a failure: `{"status": "error", "error": {"kind": ..., "message": ...}, ...}`."""
    return {**extra, "status": "error", "error": {"kind": kind, "message": message}}


def emit_text(text: str) -> None:
    sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))


def color_wanted(no_color: bool = False, stream=None) -> bool:
    """Colour only for a person: stdout is a terminal, and neither --no-color nor NO_COLOR (no-color.org) says
    otherwise."""
    stream = stream or sys.stdout
    return not no_color and not os.environ.get("NO_COLOR") and hasattr(stream, "isatty") and stream.isatty()


def add_env(parser, required: bool = True) -> None:
    parser.add_argument("--env", required=required, help="environment: a file config/ENV.toml")


def add_json(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout (also on errors)")


def add_images(parser) -> None:
    parser.add_argument("--image", action="append", default=[], metavar="APP=TAG",
                        help="deploy this image tag for APP in this run (repeatable, once per app)")
