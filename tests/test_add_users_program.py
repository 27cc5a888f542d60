"""The add-users program (dmp_deploy/container/add_users_program.py): checks, adding, stopping and redaction, with a
fake client, with the real api client library (dmapiclient) against a small local HTTP stand-in for the Data API,
and as the rendered task definition's `python -c` command. No AWS."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dmp_deploy import container, desired
from dmp_deploy.config import load_config
from dmp_deploy.container import add_users_program as program

TOKEN = "the-data-api-token-0123"


def user(n: int, password: str | None = None, **extra) -> dict:
    return {"emailAddress": f"user{n}@example.gov.uk", "name": f"User {n}",
            "password": password or f"Pw-{n}-{'x' * 8}", "role": "buyer", **extra}


def write(tmp_path, *users, name="exec-1", raw: bytes | None = None):
    body = raw if raw is not None else "".join(json.dumps(u) + "\n" for u in users).encode()
    (tmp_path / name).write_bytes(body)
    return {"USERS_DIR": str(tmp_path), "USERS_FILE": name, "DM_DATA_API_URL": "http://api.internal:8080",
            "DM_DATA_API_TOKEN": TOKEN, "ADD_USERS_MAX_BYTES": "1048576"}


class Refused(Exception):
    """What dmapiclient.HTTPError looks like to the program: status_code and message."""

    def __init__(self, status_code, message):
        super().__init__(f"{message} (status: {status_code})")
        self.status_code, self.message = status_code, message


class FakeClient:
    def __init__(self, refuse: dict[str, Refused] | None = None):
        self.created, self.refuse, self.made_with = [], refuse or {}, None

    def factory(self, url, token):
        self.made_with = (url, token)
        return self

    def create_user(self, user):
        if user["emailAddress"] in self.refuse:
            raise self.refuse[user["emailAddress"]]
        self.created.append(user)


def run(environ, client=None):
    out = io.StringIO()
    client = client or FakeClient()
    status = program.main(environ, client.factory, out)
    return status, out.getvalue(), client


# --- with a fake client ---------------------------------------------------------------------------------------

def test_adds_every_user_in_file_order_and_prints_no_password(tmp_path):
    users = [user(1), user(2, phoneNumber="01234"), user(3, role="supplier", supplierId=7)]
    status, out, client = run(write(tmp_path, *users))
    assert status == 0
    assert client.created == users and client.made_with == ("http://api.internal:8080", TOKEN)
    assert out.splitlines() == ["The users file holds 3 valid user(s).",
                                "Adding user1@example.gov.uk as buyer", "Adding user2@example.gov.uk as buyer",
                                "Adding user3@example.gov.uk as supplier", "Added 3 user(s)."]
    assert TOKEN not in out and not any(u["password"] in out for u in users)


def test_stops_at_the_first_refusal_and_redacts_every_password_in_the_apis_message(tmp_path):
    users = [user(1, "first'pass\"1"), user(2, "second\\pass-2"), user(3)]
    message = (f"{users[1]['password']!r} is not allowed; {json.dumps(users[0]['password'])}; "
               f"{users[2]['password']}")
    status, out, client = run(write(tmp_path, *users),
                              FakeClient({"user2@example.gov.uk": Refused(400, message)}))
    assert status == 1
    assert client.created == users[:1]  # the users before the refused line were added, the others not
    assert "The api refused the user on line 2 (user2@example.gov.uk): status 400: " \
           "'[redacted]' is not allowed; \"[redacted]\"; [redacted]" in out
    assert "Stopped at line 2: the 1 user(s) before it were added; it and the 1 after it were not." in out
    for u in users:
        assert u["password"] not in out
    assert "user3" not in out.replace("the 1 after", "")  # nothing about line 3 is tried


def test_a_dict_message_is_printed_as_json_redacted(tmp_path):
    users = [user(1, "dict-message-pw-1")]
    refusal = Refused(400, {"password": [f"{users[0]['password']!r} is bad"]})
    status, out, _ = run(write(tmp_path, *users), FakeClient({"user1@example.gov.uk": refusal}))
    assert status == 1 and "status 400: {\"password\": [\"'[redacted]' is bad\"]}" in out
    assert "dict-message-pw" not in out


@pytest.mark.parametrize("raw, expected", [
    (b"", "is empty"),
    (json.dumps(user(1, "short-pw")).encode(), "password: must be at least 10 characters (got 8)"),
    (b'{"emailAddress": "a@b.example", ', "not valid JSON"),
    ((json.dumps(user(1)) + "\n" + json.dumps(user(1))).encode(), "the same address as line 1"),
])
def test_a_bad_file_adds_no_one(tmp_path, raw, expected):
    status, out, client = run(write(tmp_path, raw=raw))
    assert status == 1 and client.created == [] and client.made_with is None
    assert expected in out and "no user was added" in out
    assert "short-pw" not in out


def test_a_json_array_is_accepted_like_the_cli_accepts_it(tmp_path):
    users = [user(1), user(2)]
    status, _, client = run(write(tmp_path, raw=json.dumps(users, indent=2).encode()))
    assert status == 0 and client.created == users


@pytest.mark.parametrize("change, expected", [
    ({"USERS_FILE": "../etc/passwd"}, "plain file name"),
    ({"USERS_FILE": ""}, "plain file name"),
    ({"USERS_DIR": "relative"}, "USERS_DIR"),
    ({"DM_DATA_API_TOKEN": ""}, "DM_DATA_API_TOKEN is not set"),
    ({"ADD_USERS_MAX_BYTES": "lots"}, "ADD_USERS_MAX_BYTES"),
    ({"ADD_USERS_PROGRAM": "other"}, "ADD_USERS_PROGRAM"),
])
def test_a_misconfigured_task_exits_2_before_reading(tmp_path, change, expected):
    environ = {**write(tmp_path, user(1)), **change}
    status, out, client = run(environ)
    assert status == 2 and expected in out and client.made_with is None


def test_a_missing_file_is_a_problem_not_a_traceback(tmp_path):
    environ = {**write(tmp_path, user(1)), "USERS_FILE": "gone"}
    status, out, _ = run(environ)
    assert status == 1 and "no such file" in out and "Traceback" not in out


# --- the redactor --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("secret", ["plain-password", "it's-Secret-99", 'we\'ird"Pass12', "back\\slash\\pw",
                                    "ünïcode-pässwörd", "tab\tand\nnewline-pw", "emoji-😀-password"])
def test_redacts_a_password_in_every_quoting_it_can_reach_the_output_in(secret):
    redact = program.Redactor([secret])
    forms = [secret, repr(secret), json.dumps(secret), json.dumps(secret, ensure_ascii=False),
             repr({"password": secret}), json.dumps({"error": f"{secret!r} is too short"}),
             str({"error": f"{secret!r} is too short"}), repr(json.dumps(secret)),
             str({"error": f"\"{secret}\" isn't valid"}), json.dumps({"e": repr({"password": secret})})]
    for form in forms:
        assert secret not in redact(form) and "[redacted]" in redact(form), form
    assert redact("nothing secret here") == "nothing secret here"


# --- the real client library against a stand-in Data API -----------------------------------------------------

class StandInApi(BaseHTTPRequestHandler):
    """POST /users as the client library sends it: 201, 409 for a known address, and 400 quoting the whole user
    for an address containing 'refuse' (worse than the api, which quotes one value)."""

    users: dict = {}
    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, self.headers["Authorization"], body))
        new = body["users"]
        email = new["emailAddress"].lower()
        if "refuse" in email:
            self.answer(400, {"error": f"{new!r} is not valid: {new['password']!r} is too short"})
        elif email in self.users:
            self.answer(409, {"error": "User already exists"})
        else:
            type(self).users[email] = new
            self.answer(201, {"users": {"emailAddress": email}})

    def answer(self, status, document):
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    StandInApi.users, StandInApi.requests = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_the_real_client_library_adds_users_with_the_token_from_the_environment(tmp_path, api):
    pytest.importorskip("dmapiclient")
    users = [user(1), user(2)]
    environ = {**write(tmp_path, *users), "DM_DATA_API_URL": api}
    out = io.StringIO()
    assert program.main(environ, out=out) == 0
    assert StandInApi.requests == [("/users", f"Bearer {TOKEN}", {"users": u}) for u in users]
    assert TOKEN not in out.getvalue()


def test_the_real_client_library_stops_at_a_duplicate(tmp_path, api):
    pytest.importorskip("dmapiclient")
    StandInApi.users["user2@example.gov.uk"] = {}
    environ = {**write(tmp_path, user(1), user(2), user(3)), "DM_DATA_API_URL": api}
    out = io.StringIO()
    assert program.main(environ, out=out) == 1
    assert "line 2 (user2@example.gov.uk): status 409: User already exists" in out.getvalue()
    assert sorted(StandInApi.users) == ["user1@example.gov.uk", "user2@example.gov.uk"]


FUZZ_TEXT = ["'password': '", '"password": "', "password=", "'", '"', "\\", "\\'", "{", "}", "Adding ", ": ",
             "[redacted]", "ü", " "]


def fuzz_users(rng: random.Random, count: int, tag: str = "") -> list[dict]:
    def text(n):
        return "".join(rng.choice(FUZZ_TEXT + ["a", "b", "1"]) for _ in range(n))
    users = []
    for i in range(count):
        password = f"Pw{i}-" + text(rng.randint(3, 8)) + f"-{rng.randint(10**5, 10**6)}"
        users.append({"emailAddress": f"u{i}{tag}{'-refuse' if i == count - 1 else ''}@example.gov.uk",
                      "name": text(rng.randint(1, 10)) + password[:4], "password": password, "role": "buyer",
                      "phoneNumber": text(rng.randint(0, 6))})
    return users


def leaked(u: dict, output: str) -> bool:
    """The password, or its unique numeric tail (which survives any quoting), is in the output."""
    return u["password"] in output or u["password"].rsplit("-", 1)[1] in output


def test_fuzzed_names_and_phone_numbers_never_let_a_password_through(tmp_path, api):
    pytest.importorskip("dmapiclient")
    rng = random.Random(11)
    for attempt in range(30):
        users = fuzz_users(rng, 6, f"-{attempt}")
        environ = {**write(tmp_path, *users, name=f"exec-{attempt}"), "DM_DATA_API_URL": api}
        out = io.StringIO()
        assert program.main(environ, out=out) == 1  # the last one is refused, quoting everything
        for u in users:
            assert not leaked(u, out.getvalue()), (attempt, u)
        assert "status 400" in out.getvalue() and "Stopped at line 6" in out.getvalue()


# --- the rendered task definition's command ------------------------------------------------------------------

@pytest.fixture(scope="module")
def command():
    config = load_config("local")
    rendered = desired.render_task_definitions(config, {a: c.image_tag for a, c in config.apps.items()})
    (definition,) = rendered["add-users"]["containerDefinitions"]
    assert definition["entryPoint"] == ["python", "-c"]
    return definition["command"][0]


def in_container(command, environ, cwd):
    """The command as the container runs it: `python -c`, a clean environment, nothing of dmp_deploy importable."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONNOUSERSITE": "1", **environ}
    return subprocess.run([sys.executable, "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def test_the_rendered_command_ships_the_program_and_the_clis_own_checks(command):
    program_source, shared = container.sources("add_users_program")
    assert repr(program_source) in command and repr(shared["users_file"]) in command
    assert len(json.dumps(command)) < 48 * 1024  # a task definition may hold 64 KiB in all


def test_the_rendered_command_adds_users_with_the_real_client(command, tmp_path, api):
    pytest.importorskip("dmapiclient")
    files, cwd = tmp_path / "mnt", tmp_path / "app"
    files.mkdir()
    cwd.mkdir()
    users = fuzz_users(random.Random(5), 4)
    environ = {**write(files, *users), "DM_DATA_API_URL": api}
    result = in_container(command, environ, cwd)
    assert result.returncode == 1, result.stderr
    output = result.stdout + result.stderr
    assert "Adding u0@example.gov.uk as buyer" in output and "line 4 (u3-refuse@example.gov.uk): status 400" in output
    assert sorted(StandInApi.users) == ["u0@example.gov.uk", "u1@example.gov.uk", "u2@example.gov.uk"]
    for u in users:
        assert not leaked(u, output)
    assert "Traceback" not in output


def test_the_rendered_command_refuses_a_bad_file_before_calling_the_api(command, tmp_path, api):
    environ = {**write(tmp_path, user(1), user(2, "nine-char")), "DM_DATA_API_URL": api}
    result = in_container(command, environ, tmp_path)
    assert result.returncode == 1
    assert "the users file:2: password: must be at least 10 characters (got 9)" in result.stdout
    assert "nine-char" not in result.stdout + result.stderr and StandInApi.requests == []


API_SCRIPT = """\
# A stand-in for the api's scripts/add_users.py: the same arguments and output (the user, password and all).
import json, sys
from dmapiclient import DataAPIClient
client = DataAPIClient(sys.argv[1], sys.argv[2])
with open(sys.argv[3]) as f:
    for line in f:
        user = json.loads(line)
        print("Adding {}".format(user))
        client.create_user(user)
"""


def test_api_script_mode_runs_the_images_script_on_the_checked_file_and_redacts_its_output(command, tmp_path, api):
    pytest.importorskip("dmapiclient")
    app, files = tmp_path / "app", tmp_path / "mnt"
    (app / "scripts").mkdir(parents=True)
    (app / "scripts" / "add_users.py").write_text(API_SCRIPT)
    files.mkdir()
    users = fuzz_users(random.Random(7), 3)
    raw = ("\n\n" + json.dumps(users, indent=1)).encode()  # an array with blank lines: the script alone would fail
    environ = {**write(files, raw=raw), "DM_DATA_API_URL": api, "ADD_USERS_PROGRAM": "api_script"}
    result = in_container(command, environ, app)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Adding {'emailAddress': 'u0@example.gov.uk'" in output and "'password': '[redacted]'" in output
    assert "HTTPError" in output  # the script's traceback, redacted
    assert sorted(StandInApi.users) == ["u0@example.gov.uk", "u1@example.gov.uk"]
    for u in users:
        assert not leaked(u, output)


def test_api_script_mode_says_when_the_image_has_no_script(command, tmp_path):
    environ = {**write(tmp_path, user(1)), "ADD_USERS_PROGRAM": "api_script"}
    result = in_container(command, environ, tmp_path)
    assert result.returncode == 2 and 'set add_users.program = "bundled"' in result.stdout


def test_a_shared_module_must_be_standard_library_only(tmp_path, monkeypatch):
    (tmp_path / "container").mkdir()
    (tmp_path / "container" / "prog.py").write_text("from dmp_deploy import helper\n")
    (tmp_path / "helper.py").write_text("import boto3\n")
    monkeypatch.setattr(container, "PACKAGE_DIR", tmp_path)
    with pytest.raises(container.BundleError, match="boto3"):
        container.bundle("prog")
    (tmp_path / "helper.py").write_text("from dmp_deploy import names\n")
    with pytest.raises(container.BundleError, match="may not import other dmp_deploy modules"):
        container.bundle("prog")


def test_the_token_is_redacted_too_should_the_api_echo_it(tmp_path):
    refusal = Refused(401, f"bad token {TOKEN}")
    status, out, _ = run(write(tmp_path, user(1)), FakeClient({"user1@example.gov.uk": refusal}))
    assert status == 1 and TOKEN not in out and "status 401: bad token [redacted]" in out
