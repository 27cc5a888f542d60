"""The add-users program: adds the users of one uploaded file through the Data API, inside the api's image.

It runs in the add-users ECS task (task_definitions/add-users.json.j2), whose command carries this file's source
and dmp_deploy/users_file.py's (`dmp_deploy.container.bundle`), because the api image does not contain the api's
`scripts/add_users.py` (its .dockerignore keeps only the app). Same input and semantics as that script: JSON
Lines, one `create_user` per line through the api client library the image already has (`dmapiclient`), in file
order, stopping at the first user the api refuses, with a non-zero exit. On purpose, unlike the script:

- before adding anyone it checks the whole file with the CLI's own rules (users_file.py), so a file written
  straight to the bucket gets the same checks, and a bad file adds no one;
- the api token comes from the environment (the task definition's `secrets`), never argv;
- it prints `Adding <email> as <role>`, never the user; on a refusal it prints the api's status and message with
  every password of the file replaced by `[redacted]`: the values it read, in every quoting the api, Python's
  repr or JSON could give them, not a pattern that a quote in a name could fool.

With ADD_USERS_PROGRAM=api_script it runs the image's own `scripts/add_users.py` instead (for an api image that
ships it), after the same checks, feeding it the checked JSON Lines on stdin and redacting its output the same way.

Environment: USERS_DIR and USERS_FILE (the file: a plain name in that directory), DM_DATA_API_URL,
DM_DATA_API_TOKEN, ADD_USERS_MAX_BYTES, ADD_USERS_PROGRAM ("bundled", the default, or "api_script").
Exit status: 0 every user added; 1 the file is invalid (no one added) or the api refused a user (those before it
were added, it and those after it were not); 2 the task is misconfigured (no one added).

Standard library and dmapiclient only: it runs with the api image's Python.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from dmp_deploy import users_file

REDACTED = "[redacted]"
PROGRAMS = ("bundled", "api_script")
API_SCRIPT = "scripts/add_users.py"  # relative to the api image's working directory, /app


class Misconfigured(Exception):
    """The task's environment is wrong: nothing was read or added."""


def _inner_repr(value: str) -> str:
    return repr(value)[1:-1]


def _inner_repr_in_single_quotes(value: str) -> str:
    # repr picks its quotes by the WHOLE string: inside a message holding both quote kinds a ' is escaped even
    # though repr(value) alone would not escape it. Add both kinds to force that form, then cut them off.
    return repr(value + "'\"")[1:-4]


def _inner_json(value: str) -> str:
    return json.dumps(value)[1:-1]


def _inner_json_unicode(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]


# The ways a value can be quoted on its way to the output: as is, Python's repr (the script's `Adding {user}`, the
# api's jsonschema messages), JSON (the api's response body, a dict message), with and without \u escapes.
_ENCODINGS = (lambda v: v, _inner_repr, _inner_repr_in_single_quotes, _inner_json, _inner_json_unicode)


class Redactor:
    """Replaces every password of the file, in every encoding up to two deep (a repr inside JSON, ...)."""

    def __init__(self, secrets) -> None:
        forms = {second(first(s)) for s in secrets if s for first in _ENCODINGS for second in _ENCODINGS}
        forms.discard("")
        # Longest first, one pass: a form that contains another is replaced whole, and "[redacted]" is never
        # searched again.
        self._pattern = (re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))
                         if forms else None)
        self.multiline = any("\n" in s or "\r" in s for s in secrets if s)

    def __call__(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._pattern else text


def users_path(environ) -> Path:
    """The users file: USERS_FILE, a plain name (the execution's name), inside USERS_DIR."""
    name = environ.get("USERS_FILE", "")
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise Misconfigured("USERS_FILE must be a plain file name (the execution's name); refusing it")
    directory = environ.get("USERS_DIR", "")
    if not directory.startswith("/"):
        raise Misconfigured("USERS_DIR must be the absolute path the access point is mounted at")
    return Path(directory) / name


def _setting(environ, name: str) -> str:
    value = environ.get(name, "")
    if not value:
        raise Misconfigured(f"{name} is not set in the task's environment (see task_definitions/add-users.json.j2)")
    return value


def check(path: Path, max_bytes: int, say) -> users_file.UsersFile | None:
    """The CLI's checks on the whole file; prints every problem (never a value) and returns None if any."""
    checked = users_file.load(path, max_bytes)
    if checked.ok:
        return checked
    for problem in checked.problems:
        say(problem.render("the users file"))
    say(f"The users file has {checked.problem_count} problem(s): no user was added. Fix the file and upload it "
        f"again (python run.py add-users checks it before uploading).")
    return None


def add_users(checked: users_file.UsersFile, client, say) -> int:
    """create_user for each user in file order; stops at the first refusal. Returns the exit status. `say`
    redacts."""
    total = len(checked.users)
    for index, (user, line) in enumerate(zip(checked.users, checked.lines)):
        say(f"Adding {user['emailAddress']} as {user['role']}")
        try:
            client.create_user(user)
        except Exception as exc:  # the api's refusal (dmapiclient.HTTPError) or anything on the way to it
            say(f"The api refused the user on line {line} ({user['emailAddress']}): {_describe(exc)}")
            say(f"Stopped at line {line}: the {index} user(s) before it were added; it and the "
                f"{total - index - 1} after it were not.")
            return 1
    say(f"Added {total} user(s).")
    return 0


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None)
    if status is None or message is None:
        return f"{type(exc).__name__}: {exc}"
    if not isinstance(message, str):
        message = json.dumps(message, sort_keys=True, ensure_ascii=False)
    return f"status {status}: {message}"


def run_api_script(checked: users_file.UsersFile, url: str, token: str, say, redact: Redactor) -> int:
    """The image's scripts/add_users.py on the checked JSON Lines (on its stdin), its output redacted."""
    if not Path(API_SCRIPT).is_file():
        raise Misconfigured(f"{API_SCRIPT} is not in this image (the api image's .dockerignore leaves it out): "
                            f"set add_users.program = \"bundled\" in the config")
    say(f"Running {API_SCRIPT} on {len(checked.users)} checked user(s); its output follows, passwords redacted.")
    # The script reads a path: /dev/stdin, so the passwords never touch a disk. Its argv (the token) stays
    # inside this container.
    process = subprocess.Popen([sys.executable, API_SCRIPT, url, token, "/dev/stdin"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    process.stdin.write(checked.body)
    process.stdin.close()
    output = (line.decode("utf-8", "replace") for line in process.stdout)
    if redact.multiline:  # a password with a line break could straddle two lines: redact the output whole
        output = iter(["".join(output)])
    for text in output:
        say(text.rstrip("\n"))
    status = process.wait()
    say(f"{API_SCRIPT} exited with status {status}.")
    return 0 if status == 0 else 1


def _quiet_client_library() -> None:
    # dmapiclient logs a refused request's message (which can quote a password) at WARNING.
    library = logging.getLogger("dmapiclient")
    library.setLevel(logging.CRITICAL + 1)  # its modules' loggers (dmapiclient.base, ...) inherit the level
    library.propagate = False


def main(environ=None, client_factory=None, out=None) -> int:
    """Run the program; `client_factory(url, token)` defaults to dmapiclient.DataAPIClient."""
    environ = os.environ if environ is None else environ
    out = out or sys.stdout
    redact = Redactor(())

    def say(text: str) -> None:
        out.write(redact(text) + "\n")
        out.flush()

    try:
        program = environ.get("ADD_USERS_PROGRAM", "bundled")
        if program not in PROGRAMS:
            raise Misconfigured(f"ADD_USERS_PROGRAM must be one of {', '.join(PROGRAMS)}")
        path = users_path(environ)
        url, token = _setting(environ, "DM_DATA_API_URL"), _setting(environ, "DM_DATA_API_TOKEN")
        try:
            max_bytes = int(_setting(environ, "ADD_USERS_MAX_BYTES"))
        except ValueError:
            raise Misconfigured("ADD_USERS_MAX_BYTES must be a number of bytes") from None
        checked = check(path, max_bytes, say)
        if checked is None:
            return 1
        # The api token too: nothing should echo it, but nothing it reaches is printed either.
        redact = Redactor([u["password"] for u in checked.users] + [token])
        say(f"The users file holds {len(checked.users)} valid user(s).")
        if program == "api_script":
            return run_api_script(checked, url, token, say, redact)
        if client_factory is None:
            _quiet_client_library()
            from dmapiclient import DataAPIClient
            client_factory = DataAPIClient
        return add_users(checked, client_factory(url, token), say)
    except Misconfigured as exc:
        say(f"add-users: {exc}")
        return 2
    except Exception as exc:  # no traceback: its text is redacted like everything else
        say(f"add-users: failed: {type(exc).__name__}: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
