"""Writing results: one JSON document on stdout with --json, readable text otherwise. Logs go to stderr."""

from __future__ import annotations

import json
import sys


def emit_json(document: dict) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def emit_text(text: str) -> None:
    sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))


def add_env(parser, required: bool = True) -> None:
    parser.add_argument("--env", required=required, help="environment: a file config/ENV.toml")


def add_json(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def add_images(parser) -> None:
    parser.add_argument("--image", action="append", default=[], metavar="APP=TAG",
                        help="deploy this image tag for APP in this run (repeatable)")
