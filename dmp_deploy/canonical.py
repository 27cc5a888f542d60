"""Normalising AWS's answers and our declarations into one comparable form (see ../shared/field-notes.md)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote


def tags_from_list(tags: list[dict] | None, key: str = "Key", value: str = "Value") -> dict[str, str]:
    return {t[key]: t[value] for t in (tags or [])}


def tags_to_list(tags: dict[str, str], key: str = "Key", value: str = "Value") -> list[dict]:
    return [{key: k, value: v} for k, v in sorted(tags.items())]


def policy(document: Any) -> dict:
    """An IAM policy document in canonical form: parsed, single values listed, lists sorted, statements sorted.

    AWS returns documents URL-encoded or parsed, with `"Action": "x"` and `["x"]` meaning the same thing,
    and in any order; none of that is a change. IAM stores an account id given as an AWS principal as that
    account's root ARN, so both spellings canonicalise to the ARN.
    """
    if isinstance(document, str):
        text = document
        if text.lstrip()[:3].upper() == "%7B" or "%22" in text:
            text = unquote(text)
        document = json.loads(text)
    doc = dict(document)
    statements = doc.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    doc["Statement"] = sorted((_statement(s) for s in statements), key=lambda s: json.dumps(s, sort_keys=True))
    doc.setdefault("Version", "2012-10-17")
    return doc


def _statement(statement: dict) -> dict:
    out = {}
    for key, value in statement.items():
        if key in ("Action", "NotAction", "Resource", "NotResource"):
            out[key] = _listed(value)
        elif key in ("Principal", "NotPrincipal") and isinstance(value, dict):
            out[key] = {k: _listed(_account_roots(v) if k == "AWS" else v) for k, v in sorted(value.items())}
        elif key == "Condition":
            out[key] = {op: {k: _listed(v) for k, v in sorted(kv.items())} for op, kv in sorted(value.items())}
        else:
            out[key] = value
    return out


def _listed(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        items = sorted(set(value), key=str)
        return items[0] if len(items) == 1 else items
    return value


def _account_roots(value: Any) -> Any:
    """AWS principals: a bare 12-digit account id means (and reads back as) that account's root ARN."""
    if isinstance(value, (list, tuple)):
        return [_account_roots(v) for v in value]
    if isinstance(value, str) and re.fullmatch(r"\d{12}", value):
        return f"arn:aws:iam::{value}:root"
    return value
