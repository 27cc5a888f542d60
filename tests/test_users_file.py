"""The users file rules (dmp_deploy/users_file.py), as tables: each case is a file and the problems it must
produce, as "line: field: message" fragments. No AWS: the module is pure."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dmp_deploy import users_file
from dmp_deploy.users_file import ROLES, parse

LIMIT = 1_048_576
SECRET = "Sekrit-pw-0001"  # a valid password; must never appear in a message


def line(**fields) -> str:
    return json.dumps(fields)


def good(email="a.user@example.gov.uk", password=SECRET, role="buyer", **extra) -> dict:
    return {"emailAddress": email, "name": "A User", "password": password, "role": role, **extra}


def jsonl(*objects) -> bytes:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects).encode()


def rendered(result) -> list[str]:
    return [p.render("users.jsonl") for p in result.problems]


VALID_FILES = [
    ("one buyer", jsonl(good())),
    ("every role", jsonl(*[good(f"user{i}@example.com", role=r, **({"supplierId": 5} if r == "supplier" else {}))
                           for i, r in enumerate(ROLES)])),
    ("optional fields", jsonl(good(phoneNumber="01234 567890", hashpw=True))),
    ("password exactly 10", jsonl(good(password="x" * 10))),
    ("blank lines and CRLF", b"\r\n" + json.dumps(good()).encode() + b"\r\n\r\n  \n"),
    ("no final newline", json.dumps(good()).encode()),
    ("byte order mark", b"\xef\xbb\xbf" + jsonl(good())),
    ("non-ASCII name", jsonl(good() | {"name": "Zoë Ångström"})),
    ("JSON array", json.dumps([good(), good("b@example.com")], indent=2).encode()),
    ("JSON array on one line", json.dumps([good()]).encode()),
]


@pytest.mark.parametrize("data", [d for _, d in VALID_FILES], ids=[n for n, _ in VALID_FILES])
def test_valid_files(data):
    result = parse(data, LIMIT)
    assert result.ok, rendered(result)
    assert result.users  # and the upload is JSON Lines, one user per line, the same objects
    uploaded = [json.loads(x) for x in result.body.decode("ascii").split("\n") if x]
    assert uploaded == list(result.users)
    assert result.body.endswith(b"\n") and b"\n\n" not in result.body


def test_valid_file_remembers_source_lines_and_format():
    result = parse(b"\n" + jsonl(good(), good("b@example.com")), LIMIT)
    assert result.lines == (2, 3) and result.source_format == "jsonl"
    array = parse(b'[\n  ' + json.dumps(good()).encode() + b',\n\n  ' + json.dumps(good("b@example.com")).encode()
                  + b"\n]\n", LIMIT)
    assert array.ok and array.lines == (2, 4) and array.source_format == "json-array"


INVALID_FILES = [
    # (name, file, expected rendered problems, exactly)
    ("empty", b"", ["users.jsonl: is empty: write one JSON object per line, one line per user"]),
    ("only blank lines", b"\n  \n\r\n", ["users.jsonl: is empty: write one JSON object per line, one line per user"]),
    ("empty array", b"[ ]", ["users.jsonl: contains no users: write one JSON object per line"]),
    ("nine-character password", jsonl(good(), good("b@example.com", password="123456789")),
     ["users.jsonl:2: password: must be at least 10 characters (got 9)"]),
    ("password too long", jsonl(good(password="p" * 256)),
     ["users.jsonl:1: password: must be at most 255 characters (got 256)"]),
    ("password not a string", jsonl(good(password=1234567890)),
     ["users.jsonl:1: password: must be a string, got a number"]),
    ("missing required fields", jsonl({"name": "A User"}),
     ["users.jsonl:1: emailAddress: required field is missing", "users.jsonl:1: password: required field is missing",
      "users.jsonl:1: role: required field is missing"]),
    ("unknown role", jsonl(good(role="shopkeeper")),
     [f"users.jsonl:1: role: must be one of: {', '.join(ROLES)}"]),
    ("role wrong case", jsonl(good(role="Buyer")), [f"users.jsonl:1: role: must be one of: {', '.join(ROLES)}"]),
    ("email without domain dot", jsonl(good(email="someone@localhost")),
     ["users.jsonl:1: emailAddress: is not a valid email address (expected name@domain.example, no spaces)"]),
    ("email with space", jsonl(good(email="some one@example.com")),
     ["users.jsonl:1: emailAddress: is not a valid email address (expected name@domain.example, no spaces)"]),
    ("email two @", jsonl(good(email="a@b@example.com")),
     ["users.jsonl:1: emailAddress: is not a valid email address (expected name@domain.example, no spaces)"]),
    ("email padded", jsonl(good(email=" a@example.com")),
     ["users.jsonl:1: emailAddress: is not a valid email address (expected name@domain.example, no spaces)"]),
    ("duplicate email ignoring case", jsonl(good("Same@Example.com"), good("b@example.com"), good("same@example.COM")),
     ["users.jsonl:3: emailAddress: the same address as line 1 (compared ignoring case): each user once"]),
    ("empty name", jsonl(good() | {"name": "  "}), ["users.jsonl:1: name: must not be empty"]),
    ("supplier without supplierId", jsonl(good(role="supplier")),
     ["users.jsonl:1: supplierId: required for role 'supplier' (the supplier's id in the Digital Marketplace)"]),
    ("supplierId as a string", jsonl(good(role="supplier", supplierId="123")),
     ["users.jsonl:1: supplierId: must be an integer, got a string: write the number without quotes"]),
    ("supplierId as a float", jsonl(good(role="supplier", supplierId=12.5)),
     ["users.jsonl:1: supplierId: must be an integer, got a number"]),
    ("supplierId as a bool", jsonl(good(role="supplier", supplierId=True)),
     ["users.jsonl:1: supplierId: must be an integer, got true/false"]),
    ("supplierId zero", jsonl(good(role="supplier", supplierId=0)),
     ["users.jsonl:1: supplierId: must be a positive integer (the supplier's id in the Digital Marketplace)"]),
    ("supplierId on a buyer", jsonl(good(supplierId=5)),
     ["users.jsonl:1: supplierId: only allowed for role 'supplier', not 'buyer': remove it"]),
    ("hashpw not a bool", jsonl(good(hashpw="yes")), ["users.jsonl:1: hashpw: must be true or false, got a string"]),
    ("phoneNumber not a string", jsonl(good(phoneNumber=1234)),
     ["users.jsonl:1: phoneNumber: must be a string, got a number"]),
    ("unknown key", jsonl(good(team="x")),
     ["users.jsonl:1: field 5: unknown field name (not shown: it could be a value; allowed: emailAddress, name, "
      "password, role, phoneNumber, supplierId, hashpw)"]),
    ("key in the wrong case", jsonl({**good(), "emailaddress": "x@example.com"}),
     ["users.jsonl:1: field 5: unknown field name (not shown: it could be a value): did you mean 'emailAddress'? "
      "(names are case-sensitive)"]),
    ("unknown key twice", b'{"emailAddress": "a@example.com", "name": "A", "password": "' + SECRET.encode()
     + b'", "role": "buyer", "x": 1, "x": 2}\n',
     ["users.jsonl:1: field 5: an unknown field name appears more than once in this object",
      "users.jsonl:1: field 5: unknown field name (not shown: it could be a value; allowed: emailAddress, name, "
      "password, role, phoneNumber, supplierId, hashpw)"]),
    # hostile input (issue 11)
    ("Cyrillic look-alike in the address", jsonl(good(email="\u0430dmin@example.gov.uk")),
     ["users.jsonl:1: emailAddress: must be plain ASCII: character 1 is a look-alike (homoglyph), invisible or "
      "direction-changing (bidi) character; retype the address"]),
    ("bidi override in the address", jsonl(good(email="evil\u202emoc.elpmaxe@example.com")),
     ["users.jsonl:1: emailAddress: must be plain ASCII: character 5 is a look-alike (homoglyph), invisible or "
      "direction-changing (bidi) character; retype the address"]),
    ("zero-width space in the address", jsonl(good(email="a\u200b@example.com")),
     ["users.jsonl:1: emailAddress: must be plain ASCII: character 2 is a look-alike (homoglyph), invisible or "
      "direction-changing (bidi) character; retype the address"]),
    ("escaped NUL in a name", b'{"emailAddress": "a@example.com", "name": "A\\u0000", "password": "'
     + SECRET.encode() + b'", "role": "buyer"}\n',
     ["users.jsonl:1: name: contains a NUL character (\\u0000): remove it (the api cannot store it)"]),
    ("lone surrogate in a password", b'{"emailAddress": "a@example.com", "name": "A", "password": "abcdefghij'
     b'\\ud800", "role": "buyer"}\n',
     ["users.jsonl:1: password: contains a lone surrogate (\\ud800-\\udfff): remove it (the api cannot store it)"]),
    ("NUL in an unknown key", b'{"emailAddress": "a@example.com", "name": "A", "password": "' + SECRET.encode()
     + b'", "role": "buyer", "k\\u0000": [{"deep": "x"}]}\n',
     ["users.jsonl:1: field 5: unknown field name (not shown: it could be a value; allowed: emailAddress, name, "
      "password, role, phoneNumber, supplierId, hashpw)",
      "users.jsonl:1: field 5: contains a NUL character (\\u0000): remove it (the api cannot store it)"]),
    ("supplierId over the api's integer range", jsonl(good(role="supplier", supplierId=2_147_483_648)),
     ["users.jsonl:1: supplierId: must be at most 2147483647 (the api stores supplier ids as 32-bit integers): "
      "check the supplier's id"]),
    ("deep nesting in JSON Lines", jsonl(good(), '{"a": ' + "[" * 50_000),
     ["users.jsonl:2: nested too deeply to read: a user is one flat JSON object"]),
    ("deep nesting in an array", b"[\n" + json.dumps(good()).encode() + b",\n" + b"[" * 50_000,
     ["users.jsonl:3: nested too deeply to read: a user is one flat JSON object"]),
    ("a number too long to read", jsonl('{"supplierId": ' + "9" * 5000 + "}"),
     ["users.jsonl:1: not valid JSON: a number is too long to read"]),
    ("duplicate key", b'{"emailAddress": "a@example.com", "name": "A", "password": "' + SECRET.encode()
     + b'", "password": "' + SECRET.encode() + b'", "role": "buyer"}\n',
     ["users.jsonl:1: password: appears more than once in this object: keep one"]),
    ("invalid JSON with its line", jsonl(good(), "{\"emailAddress\": \"b@example.com\",", good("c@example.com")),
     ["users.jsonl:2: not valid JSON: Expecting property name enclosed in double quotes (column 34)"]),
    ("NaN is not JSON", jsonl('{"supplierId": NaN}'), ["users.jsonl:1: not valid JSON: NaN is not valid JSON"]),
    ("array line", jsonl(good(), [good("b@example.com")]),
     ["users.jsonl:2: must be a JSON object {...} describing one user, got an array"]),
    ("string line", jsonl('"just text"'),
     ["users.jsonl:1: must be a JSON object {...} describing one user, got a string"]),
    ("array element not an object", b'[\n' + json.dumps(good()).encode() + b',\n 42\n]',
     ["users.jsonl:3: must be a JSON object {...} describing one user, got a number"]),
    ("array missing comma", b'[\n' + json.dumps(good()).encode() + b'\n' + json.dumps(good()).encode() + b'\n]',
     ["users.jsonl:3: not valid JSON: expected ',' or ']' after an element of the array"]),
    ("array not closed", b'[\n' + json.dumps(good()).encode() + b',\n',
     ["users.jsonl:3: not valid JSON: Expecting value (column 1)"]),
    ("text after array", b'[' + json.dumps(good()).encode() + b']\n{}',
     ["users.jsonl:2: not valid JSON: unexpected text after the closing ']'"]),
    ("not UTF-8", jsonl(good()) + b'{"name": "\xff"}\n', ["users.jsonl:2: is not UTF-8 text: save the file as UTF-8"]),
]


@pytest.mark.parametrize("data, expected", [(d, e) for _, d, e in INVALID_FILES], ids=[n for n, _, _ in INVALID_FILES])
def test_invalid_files(data, expected):
    result = parse(data, LIMIT)
    assert not result.ok
    assert rendered(result) == expected
    assert result.users == () and result.body == b""  # nothing to upload


def test_every_problem_in_the_file_is_listed_in_line_order():
    data = jsonl(good(password="short"), "not json", good("x@example.com", role="nope"), good(team=1))
    assert [(p.line, p.field) for p in parse(data, LIMIT).problems] == [
        (1, "password"), (2, None), (3, "role"), (4, "emailAddress"), (4, None)]  # an unknown name: not shown


def test_too_large_file_is_refused_before_parsing():
    data = jsonl(*[good(f"u{i}@example.com") for i in range(20)])
    result = parse(data, len(data) - 1)
    assert rendered(result) == [f"users.jsonl: is {len(data)} bytes, over the limit of {len(data) - 1} bytes "
                                f"(add_users.max_file_bytes): split the users into several files"]


def test_converted_array_is_measured_too():
    """A compact array can grow when converted (one object per line, ASCII escapes): the upload is checked."""
    data = json.dumps([good() | {"name": "é" * 40}], ensure_ascii=False, separators=(",", ":")).encode()
    result = parse(data, len(data) + 10)
    assert len(rendered(result)) == 1 and "converted to JSON Lines" in rendered(result)[0]


def test_load_reads_no_more_than_the_limit(tmp_path):
    path = tmp_path / "users.jsonl"
    path.write_bytes(jsonl(*[good(f"u{i}@example.com") for i in range(100)]))
    result = users_file.load(path, 100)
    assert rendered(result) == [f"users.jsonl: is {path.stat().st_size} bytes, over the limit of 100 bytes "
                                f"(add_users.max_file_bytes): split the users into several files"]
    assert rendered(users_file.load(tmp_path / "missing.jsonl", 100)) == ["users.jsonl: no such file"]
    assert users_file.load(path, 10 * LIMIT).ok


PASSWORD_VALUES = ["123456789", "Short-pw", SECRET, "p" * 300, "team", "shopkeeper"]


@pytest.mark.parametrize("secret", PASSWORD_VALUES)
def test_no_message_contains_a_password_value(secret):
    """Whatever is wrong, and wherever the value sits (password, a misspelt key, another field), the value is
    never repeated back."""
    data = jsonl(
        good(password=secret),
        {"emailAddress": "b@example.com", "name": "B", "pasword": secret, "role": "buyer"},
        {"emailAddress": "c@example.com", "name": "C", "password": secret, "role": secret},
        {"emailAddress": secret, "name": "D", "password": secret, "role": "supplier", "supplierId": secret},
        {"emailAddress": "e@example.com", "name": "E", "password": secret, "role": "buyer", secret + "!": secret},
        {"emailAddress": "f@example.com", "name": "F", "password": secret, "role": "buyer", secret: 1},
        '{"password": "' + secret + '"',
    )
    result = parse(data, LIMIT)
    assert not result.ok
    text = "\n".join(rendered(result)) + repr(result) + str(result)
    if len(secret) > 4:  # short words could legitimately occur in a message ("team"): the field names
        assert secret not in text
    assert "field 3: unknown field name" in text and "field 5: unknown field name" in text


def test_a_swapped_key_and_value_never_shows_the_password():
    """{"<password>": "password"}: the password is a key. It is reported by position, never by name."""
    data = jsonl({"emailAddress": "a@example.com", "name": "A", SECRET: "password", "role": "buyer"},
                 {"emailAddress": "b@example.com", "name": "B", "password": "x", SECRET + "-2": "password",
                  "role": "buyer"})
    text = "\n".join(rendered(parse(data, LIMIT)))
    assert SECRET not in text
    assert "users.jsonl:1: field 3: unknown field name" in text and "users.jsonl:2: field 4: unknown" in text


def test_the_problem_list_is_capped_and_the_rest_counted():
    data = jsonl(*[good(f"u{i}@example.com", password="short") for i in range(120)])
    result = parse(data, LIMIT)
    lines = rendered(result)
    assert len(lines) == 51 and lines[49] == "users.jsonl:50: password: must be at least 10 characters (got 5)"
    assert lines[50] == "users.jsonl: 70 more problem(s) not listed: fix the ones above and check the file again"
    assert result.problem_count == 120 and result.unlisted == 70
    few = parse(jsonl(good(password="short")), LIMIT)
    assert few.problem_count == 1 and few.unlisted == 0


def test_a_fifo_or_device_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "users.jsonl"
    os.mkfifo(fifo)  # no writer: a blocking open would hang here
    assert rendered(users_file.load(fifo, LIMIT)) == [
        "users.jsonl: is not a regular file (a pipe, device or socket): save the users to a file and give its path"]
    assert "not a regular file" in rendered(users_file.load(Path("/dev/null"), LIMIT))[0].replace("null", "x")
    assert rendered(users_file.load(tmp_path, LIMIT)) == ["users.jsonl: is a directory, not a users file"]
