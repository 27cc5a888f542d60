"""A stand-in for the Digital Marketplace Data API on 127.0.0.1: exactly what the add-users workflow uses.

`local up` starts it next to the embedded AWS (dmp_deploy/local/server.py) and `local status --json` reports its
URL as "data_api". It answers as the api's own code does (digitalmarketplace-api: app/main/views/users.py and
app/validation.py's validate_user_json_or_400), for the body the api client library sends
(`DataAPIClient.create_user`: POST /users with {"users": {...}}):

- every request needs `Authorization: Bearer <token>`, the token being the embedded `data_api_auth_token`
  secret's value (read at each request, so it follows the secret): otherwise 401;
- POST /users: 400 "JSON was not a valid format. <jsonschema's message>" for a body the api's users schema
  refuses (the message quotes the value, as jsonschema does: `'<password>' is too short` for a password under
  10 characters; `Additional properties are not allowed ('x' was unexpected)` for an unknown field), 400
  "No supplier id provided for supplier user", 409 "User already exists" (addresses compared lower-cased),
  201 with the user otherwise;
- GET /users?email_address=...: 200 {"users": [user]} or 404.

Users are kept in memory, never with their password. Not modelled: the buyer and admin domain rules.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

# The api's users schema (json_schemas/users.json), as far as the workflow's users go.
REQUIRED = ("emailAddress", "name", "password", "role")
PROPERTIES = REQUIRED + ("phoneNumber", "supplierId", "hashpw")
ROLES = ("buyer", "supplier", "admin", "admin-ccs-category", "admin-ccs-sourcing", "admin-manager",
         "admin-framework-manager", "admin-ccs-data-controller")
PASSWORD_MIN_LENGTH = 10


def schema_error(user: object) -> str | None:
    """jsonschema's message for the first thing the api's users schema refuses, or None."""
    if not isinstance(user, dict):
        return f"{user!r} is not of type 'object'"
    for name in REQUIRED:
        if name not in user:
            return f"{name!r} is a required property"
    extra = [name for name in user if name not in PROPERTIES]
    if extra:
        listed = ", ".join(repr(name) for name in extra)
        return f"Additional properties are not allowed ({listed} {'was' if len(extra) == 1 else 'were'} unexpected)"
    for name in ("emailAddress", "name", "password", "role", "phoneNumber"):
        if name in user and not isinstance(user[name], str):
            return f"{user[name]!r} is not of type 'string'"
    if len(user["password"]) < PASSWORD_MIN_LENGTH:
        return f"{user['password']!r} is too short"
    if user["role"] not in ROLES:
        return f"{user['role']!r} is not one of {list(ROLES)!r}"
    if "supplierId" in user and (isinstance(user["supplierId"], bool) or not isinstance(user["supplierId"], int)):
        return f"{user['supplierId']!r} is not of type 'integer'"
    if "hashpw" in user and not isinstance(user["hashpw"], bool):
        return f"{user['hashpw']!r} is not of type 'boolean'"
    return None


class DataApi:
    """The stand-in: `start()` returns its URL; `users` holds what was added (no passwords)."""

    def __init__(self, token: Callable[[], str], port: int = 0) -> None:
        self.token = token
        self.users: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> str:
        self._thread = threading.Thread(target=self._server.serve_forever, name="data-api", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def create_user(self, user: object) -> tuple[int, dict]:
        problem = schema_error(user)
        if problem:
            return 400, {"error": f"JSON was not a valid format. {problem}"}
        if user["role"] == "supplier" and "supplierId" not in user:
            return 400, {"error": "No supplier id provided for supplier user"}
        email = user["emailAddress"].lower()
        with self._lock:
            if email in self.users:
                return 409, {"error": "User already exists"}
            stored = {"emailAddress": email, "name": user["name"], "role": user["role"], "active": True,
                      **({"phoneNumber": user["phoneNumber"]} if user.get("phoneNumber") else {}),
                      **({"supplierId": user["supplierId"]} if "supplierId" in user else {})}
            self.users[email] = stored
        return 201, {"users": stored}

    def find_user(self, email: str) -> tuple[int, dict]:
        with self._lock:
            user = self.users.get(email.lower())
        return (200, {"users": [user]}) if user else (404, {"error": "No user with this email address"})

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _authorised(self) -> bool:
                expected = f"Bearer {api.token()}"
                if self.headers.get("Authorization") == expected:
                    return True
                self._answer(401, {"error": "Unauthorized; bearer token must be provided"})
                return False

            def do_POST(self):  # noqa: N802 (http.server's name)
                if urlsplit(self.path).path != "/users":
                    return self._answer(404, {"error": "Not found"})
                if not self._authorised():
                    return None
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
                except ValueError:
                    return self._answer(400, {"error": "Invalid JSON"})
                if not isinstance(body, dict) or "users" not in body:
                    return self._answer(400, {"error": "Invalid JSON must have 'users' keys"})
                return self._answer(*api.create_user(body["users"]))

            def do_GET(self):  # noqa: N802
                parts = urlsplit(self.path)
                if parts.path != "/users":
                    return self._answer(404, {"error": "Not found"})
                if not self._authorised():
                    return None
                email = parse_qs(parts.query).get("email_address", [""])[0]
                return self._answer(*api.find_user(email))

            def _answer(self, status: int, document: dict) -> None:
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # request lines could hold an address: keep them out of the log
                pass

        return Handler


def embedded_secret(endpoint: str, region: str, arn: str) -> Callable[[], str]:
    """Reads a secret's current value from the embedded AWS (an SSM parameter or a Secrets Manager secret)."""
    import boto3

    def value() -> str:
        if ":ssm:" in arn:
            ssm = boto3.client("ssm", endpoint_url=endpoint, region_name=region, aws_access_key_id="local",
                               aws_secret_access_key="local")
            return ssm.get_parameter(Name=arn.split(":parameter", 1)[1], WithDecryption=True)["Parameter"]["Value"]
        secrets = boto3.client("secretsmanager", endpoint_url=endpoint, region_name=region,
                               aws_access_key_id="local", aws_secret_access_key="local")
        return secrets.get_secret_value(SecretId=arn)["SecretString"]

    return value
