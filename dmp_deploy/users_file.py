"""The operative's users file, checked locally against the api's user schema before anything is uploaded.

Pure: no AWS call, no network. The file is JSON Lines (one user object per line, what the api's
`scripts/add_users.py` reads); a JSON array of user objects is accepted too and converted. Every problem is
reported with its line and field. What is uploaded is rebuilt from the validated objects (one compact object
per line, ASCII-escaped), so blank lines, a byte-order mark or Windows line endings never reach the script,
which would stop at the first line it cannot parse.

Passwords: no message ever contains a value from the file, only line numbers, field names and lengths; the
parsed users are kept out of `repr` so a debug print cannot show them either.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# The api's user schema (dmp-reference.md section 4, and the api's `check_supplier_role`).
REQUIRED_FIELDS = ("emailAddress", "name", "password", "role")
OPTIONAL_FIELDS = ("phoneNumber", "supplierId", "hashpw")
ALLOWED_FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS
ROLES = ("buyer", "supplier", "admin", "admin-ccs-category", "admin-ccs-sourcing", "admin-manager",
         "admin-framework-manager", "admin-ccs-data-controller")
SUPPLIER_ROLE = "supplier"
PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_LENGTH = 255
NAME_MAX_LENGTH = 255
# The api's own email pattern: something@label.label[...], no spaces, one @.
EMAIL = re.compile(r"[^@\s]+@[^@.\s]+(\.[^@.\s]+)+")
# The api stores supplier ids as Postgres integers.
SUPPLIER_ID_MAX = 2_147_483_647
# At most this many problems are listed; the rest are counted (a hostile file could hold millions).
MAX_PROBLEMS_LISTED = 50
# An address must be printable ASCII: no look-alike letters (Cyrillic 'а' for Latin 'a'), no invisible or
# direction-changing (bidi) characters, which would make the login differ from what the operative sees.
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


@dataclass(frozen=True)
class Problem:
    line: int | None  # 1-based line in the operative's file; None: the file as a whole
    field: str | None
    message: str

    def render(self, filename: str) -> str:
        where = filename if self.line is None else f"{filename}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def as_dict(self, filename: str) -> dict:
        return {"line": self.line, "field": self.field, "message": self.message, "text": self.render(filename)}


@dataclass(frozen=True)
class UsersFile:
    """The result of checking a file: problems, or the users and the JSON Lines body to upload."""

    problems: tuple[Problem, ...]
    users: tuple[dict, ...] = field(default=(), repr=False)
    lines: tuple[int, ...] = ()  # the source line of each user
    body: bytes = field(default=b"", repr=False)
    source_format: str = "jsonl"  # or "json-array"

    unlisted: int = 0  # problems found beyond the MAX_PROBLEMS_LISTED listed ones

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def problem_count(self) -> int:
        """Every problem found, listed or not (the last listed one may be the note counting the rest)."""
        return len(self.problems) - (1 if self.unlisted else 0) + self.unlisted

    def __str__(self) -> str:
        return f"UsersFile({len(self.users)} users, {len(self.problems)} problems)"


def load(path: Path, max_bytes: int) -> UsersFile:
    """Read and check `path`, reading at most `max_bytes + 1` bytes. Only a regular file: a FIFO, device or
    socket is refused without reading (opened non-blocking, so a FIFO with no writer cannot hang the check)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return UsersFile((Problem(None, None, "no such file"),))
    except IsADirectoryError:
        return UsersFile((Problem(None, None, "is a directory, not a users file"),))
    except OSError as exc:
        return UsersFile((Problem(None, None, f"cannot be read: {exc.strerror}"),))
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            return UsersFile((Problem(None, None, "is a directory, not a users file"),))
        if not stat.S_ISREG(mode):
            return UsersFile((Problem(None, None, "is not a regular file (a pipe, device or socket): save the "
                                                  "users to a file and give its path"),))
        with os.fdopen(descriptor, "rb") as handle:
            descriptor = -1  # the file object owns it now
            data = handle.read(max_bytes + 1)
            size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        return UsersFile((Problem(None, None, f"cannot be read: {exc.strerror}"),))
    finally:
        if descriptor >= 0:
            os.close(descriptor)
    if size > max_bytes:
        return UsersFile((_too_large(size, max_bytes),))
    return parse(data, max_bytes)


def parse(data: bytes, max_bytes: int) -> UsersFile:
    """Check the bytes of a users file; see the module docstring for the rules."""
    if len(data) > max_bytes:
        return UsersFile((_too_large(len(data), max_bytes),))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        return UsersFile((Problem(line, None, "is not UTF-8 text: save the file as UTF-8"),))
    if not text.strip():
        return UsersFile((Problem(None, None, "is empty: write one JSON object per line, one line per user"),))

    if text.lstrip().startswith("["):
        source_format = "json-array"
        entries, problems = _array_entries(text)
    else:
        source_format = "jsonl"
        entries, problems = _line_entries(text)

    users, lines = [], []
    first_line_of_email: dict[str, int] = {}
    for line, value in entries:
        if not isinstance(value, dict):
            problems.append(Problem(line, None, f"must be a JSON object {{...}} describing one user, "
                                                f"got {_json_type(value)}"))
            continue
        problems.extend(check_user(value, line))
        email = value.get("emailAddress")
        if isinstance(email, str) and email.strip():
            folded = email.strip().casefold()
            if folded in first_line_of_email:
                problems.append(Problem(line, "emailAddress", f"the same address as line "
                                                              f"{first_line_of_email[folded]} (compared "
                                                              f"ignoring case): each user once"))
            else:
                first_line_of_email[folded] = line
        users.append({k: v for k, v in value.items()})
        lines.append(line)

    if not problems and not users:
        problems.append(Problem(None, None, "contains no users: write one JSON object per line"))
    if problems:
        return _refused(problems, source_format)

    body = "".join(json.dumps(u, ensure_ascii=True, separators=(", ", ": ")) + "\n" for u in users).encode()
    if len(body) > max_bytes:
        return UsersFile((_too_large(len(body), max_bytes, converted=True),), source_format=source_format)
    return UsersFile((), tuple(users), tuple(lines), body, source_format)


def _refused(problems: list[Problem], source_format: str) -> UsersFile:
    """The problems in line order, the first MAX_PROBLEMS_LISTED listed and the rest counted."""
    ordered = sorted(problems, key=_order)
    unlisted = max(0, len(ordered) - MAX_PROBLEMS_LISTED)
    listed = ordered[:MAX_PROBLEMS_LISTED]
    if unlisted:
        listed.append(Problem(None, None, f"{unlisted} more problem(s) not listed: fix the ones above and check "
                                          f"the file again"))
    return UsersFile(tuple(listed), source_format=source_format, unlisted=unlisted)


def check_user(user: dict, line: int) -> list[Problem]:
    """Every problem with one user object. Messages never contain a value from the file."""
    problems = []

    def problem(name: str, message: str) -> None:
        problems.append(Problem(line, name, message))

    # A field name is echoed only when it is one of the allowed names. Any other name is file content (a
    # password pasted as a key, or a key and its value swapped) and is shown by its position in the object.
    order = list(getattr(user, "key_order", ())) or list(user)

    def position(name: str) -> str:
        return f"field {order.index(name) + 1}"

    for name in getattr(user, "duplicate_keys", ()):
        if name in ALLOWED_FIELDS:
            problem(name, "appears more than once in this object: keep one")
        else:
            problem(None, f"{position(name)}: an unknown field name appears more than once in this object")
    for name in user:
        if name not in ALLOWED_FIELDS:
            hint = next((f for f in ALLOWED_FIELDS if f.casefold() == str(name).casefold()), None)
            problem(None, f"{position(name)}: unknown field name (not shown: it could be a value): did you mean "
                          f"{hint!r}? (names are case-sensitive)" if hint else
                          f"{position(name)}: unknown field name (not shown: it could be a value; allowed: "
                          f"{', '.join(ALLOWED_FIELDS)})")
    for name in user:
        found = _bad_characters(name) | _bad_characters(user[name])
        if found:
            where = name if name in ALLOWED_FIELDS else None
            prefix = "" if where else f"{position(name)}: "
            problem(where, f"{prefix}contains {' and '.join(sorted(found))}: remove it (the api cannot store it)")
    for name in REQUIRED_FIELDS:
        if name not in user:
            problem(name, "required field is missing")

    if "emailAddress" in user:
        email = user["emailAddress"]
        if not isinstance(email, str):
            problem("emailAddress", f"must be a string, got {_json_type(email)}")
        elif not _PRINTABLE_ASCII.fullmatch(email):
            at = next(i for i, c in enumerate(email, start=1) if not _PRINTABLE_ASCII.fullmatch(c))
            problem("emailAddress", f"must be plain ASCII: character {at} is a look-alike (homoglyph), invisible "
                                    f"or direction-changing (bidi) character; retype the address")
        elif not EMAIL.fullmatch(email.strip()) or email != email.strip():
            problem("emailAddress", "is not a valid email address (expected name@domain.example, no spaces)")

    if "name" in user:
        name = user["name"]
        if not isinstance(name, str):
            problem("name", f"must be a string, got {_json_type(name)}")
        elif not name.strip():
            problem("name", "must not be empty")
        elif len(name) > NAME_MAX_LENGTH:
            problem("name", f"must be at most {NAME_MAX_LENGTH} characters (got {len(name)})")

    if "password" in user:
        password = user["password"]
        if not isinstance(password, str):
            problem("password", f"must be a string, got {_json_type(password)}")
        elif len(password) < PASSWORD_MIN_LENGTH:
            problem("password", f"must be at least {PASSWORD_MIN_LENGTH} characters (got {len(password)})")
        elif len(password) > PASSWORD_MAX_LENGTH:
            problem("password", f"must be at most {PASSWORD_MAX_LENGTH} characters (got {len(password)})")

    role = user.get("role")
    role_ok = isinstance(role, str) and role in ROLES
    if "role" in user and not role_ok:
        if not isinstance(role, str):
            problem("role", f"must be a string, got {_json_type(role)}")
        else:
            problem("role", f"must be one of: {', '.join(ROLES)}")

    # The api: a supplier user needs its supplier's id, and no other role may have one.
    if "supplierId" in user:
        supplier_id = user["supplierId"]
        if role_ok and role != SUPPLIER_ROLE:
            problem("supplierId", f"only allowed for role {SUPPLIER_ROLE!r}, not {role!r}: remove it")
        elif isinstance(supplier_id, bool) or not isinstance(supplier_id, int):
            hint = ": write the number without quotes" if isinstance(supplier_id, str) else ""
            problem("supplierId", f"must be an integer, got {_json_type(supplier_id)}{hint}")
        elif supplier_id <= 0:
            problem("supplierId", "must be a positive integer (the supplier's id in the Digital Marketplace)")
        elif supplier_id > SUPPLIER_ID_MAX:
            problem("supplierId", f"must be at most {SUPPLIER_ID_MAX} (the api stores supplier ids as 32-bit "
                                  f"integers): check the supplier's id")
    elif role == SUPPLIER_ROLE:
        problem("supplierId", "required for role 'supplier' (the supplier's id in the Digital Marketplace)")

    if "phoneNumber" in user and not isinstance(user["phoneNumber"], str):
        problem("phoneNumber", f"must be a string, got {_json_type(user['phoneNumber'])}")
    if "hashpw" in user and not isinstance(user["hashpw"], bool):
        problem("hashpw", f"must be true or false, got {_json_type(user['hashpw'])}")
    return problems


class _UserObject(dict):
    """A parsed JSON object that remembers its keys' order and which appeared more than once (json keeps the
    last)."""

    duplicate_keys: tuple[str, ...] = ()
    key_order: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, object]]) -> _UserObject:
    obj = _UserObject(pairs)
    counts = Counter(k for k, _ in pairs)
    obj.duplicate_keys = tuple(k for k, n in counts.items() if n > 1)
    obj.key_order = tuple(k for k, _ in pairs)
    return obj


def _bad_characters(value: object) -> set[str]:
    """What the api cannot store, anywhere in a value (escaped in the file: a raw one is not valid JSON)."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\0" in item:
                found.add("a NUL character (\\u0000)")
            if any("\ud800" <= c <= "\udfff" for c in item):
                found.add("a lone surrogate (\\ud800-\\udfff)")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


class _Constant(ValueError):
    pass


def _no_constants(name: str):
    raise _Constant(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_no_constants)


def _line_entries(text: str) -> tuple[list[tuple[int, object]], list[Problem]]:
    entries, problems = [], []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue  # blank lines are dropped from the upload (the script would stop at one)
        try:
            entries.append((number, _DECODER.decode(line)))
        except json.JSONDecodeError as exc:
            problems.append(Problem(number, None, f"not valid JSON: {exc.msg} (column {exc.colno})"))
        except _Constant as exc:
            problems.append(Problem(number, None, f"not valid JSON: {exc}"))
        except (RecursionError, ValueError) as exc:
            problems.append(Problem(number, None, _unreadable(exc)))
    return entries, problems


def _array_entries(text: str) -> tuple[list[tuple[int, object]], list[Problem]]:
    """The elements of a JSON array, each with the line it starts on."""
    entries: list[tuple[int, object]] = []

    def line_of(index: int) -> int:
        return text.count("\n", 0, index) + 1

    def skip(index: int) -> int:
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        return index

    i = skip(text.index("[") + 1)
    try:
        if i < len(text) and text[i] == "]":
            i = skip(i + 1)
        else:
            while True:
                value, end = _DECODER.raw_decode(text, i)
                entries.append((line_of(i), value))
                i = skip(end)
                if i < len(text) and text[i] == ",":
                    i = skip(i + 1)
                    continue
                if i < len(text) and text[i] == "]":
                    i = skip(i + 1)
                    break
                return entries, [Problem(line_of(i), None, "not valid JSON: expected ',' or ']' after an "
                                                           "element of the array")]
    except json.JSONDecodeError as exc:
        return entries, [Problem(exc.lineno, None, f"not valid JSON: {exc.msg} (column {exc.colno})")]
    except _Constant as exc:
        return entries, [Problem(line_of(i), None, f"not valid JSON: {exc}")]
    except (RecursionError, ValueError) as exc:
        return entries, [Problem(line_of(i), None, _unreadable(exc))]
    if i != len(text):
        return entries, [Problem(line_of(i), None, "not valid JSON: unexpected text after the closing ']'")]
    return entries, []


def _unreadable(exc: BaseException) -> str:
    """JSON the parser gives up on; never the parser's own text, which may quote the file."""
    if isinstance(exc, RecursionError):
        return "nested too deeply to read: a user is one flat JSON object"
    return "not valid JSON: a number is too long to read"


def _too_large(size: int, max_bytes: int, converted: bool = False) -> Problem:
    what = "converted to JSON Lines, the file is" if converted else "is"
    return Problem(None, None, f"{what} {size} bytes, over the limit of {max_bytes} bytes "
                               f"(add_users.max_file_bytes): split the users into several files")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _order(problem: Problem) -> tuple:
    return (problem.line or 0, ALLOWED_FIELDS.index(problem.field) if problem.field in ALLOWED_FIELDS else 99)
