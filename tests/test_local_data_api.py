"""The local stand-in for the Data API (dmp_deploy/local/data_api.py), driven by the real api client library
(dmapiclient), in-process and as `local up` starts it; and the add-users program against it."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dmp_deploy.container import add_users_program as program
from dmp_deploy.local.data_api import DataApi

dmapiclient = pytest.importorskip("dmapiclient")
ROOT = Path(__file__).resolve().parent.parent
TOKEN = "local-token-for-tests"


def user(n: int, **changes) -> dict:
    return {"emailAddress": f"User{n}@Example.gov.uk", "name": f"User {n}", "password": f"Password-{n:05d}",
            "role": "buyer", **changes}


@pytest.fixture
def api():
    stand_in = DataApi(lambda: TOKEN)
    stand_in.start()
    yield stand_in
    stand_in.stop()


def client(api, token=TOKEN):
    return dmapiclient.DataAPIClient(api.url, token)


def refusal(call) -> tuple[int, str]:
    with pytest.raises(dmapiclient.HTTPError) as refused:
        call()
    return refused.value.status_code, refused.value.message


def test_adds_a_user_and_finds_it_by_address_never_keeping_the_password(api):
    answer = client(api).create_user(user(1, supplierId=7, role="supplier", phoneNumber="01234"))
    assert answer["users"]["emailAddress"] == "user1@example.gov.uk"
    found = client(api).get_user(email_address="user1@example.gov.uk")
    assert found["users"]["role"] == "supplier" and found["users"]["supplierId"] == 7
    assert "Password-00001" not in json.dumps(api.users)
    assert refusal(lambda: client(api)._get("/users", params={"email_address": "nobody@example.com"}))[0] == 404


def test_refuses_as_the_real_api_does(api):
    client(api).create_user(user(1))
    assert refusal(lambda: client(api).create_user(user(1, emailAddress="USER1@example.gov.uk"))) == (
        409, "User already exists")
    assert refusal(lambda: client(api).create_user(user(2, password="nine-char"))) == (
        400, "JSON was not a valid format. 'nine-char' is too short")  # the api quotes the value
    assert refusal(lambda: client(api).create_user(user(3, team="x"))) == (
        400, "JSON was not a valid format. Additional properties are not allowed ('team' was unexpected)")
    assert refusal(lambda: client(api).create_user(user(4, role="supplier"))) == (
        400, "No supplier id provided for supplier user")
    assert refusal(lambda: client(api, token="wrong").create_user(user(5)))[0] == 401
    assert sorted(api.users) == ["user1@example.gov.uk"]


def test_the_add_users_program_stops_at_a_duplicate_with_the_earlier_users_added(api, tmp_path):
    client(api).create_user(user(2))
    (tmp_path / "exec-1").write_text("".join(json.dumps(user(n)) + "\n" for n in (1, 2, 3)))
    out = io.StringIO()
    status = program.main({"USERS_DIR": str(tmp_path), "USERS_FILE": "exec-1", "DM_DATA_API_URL": api.url,
                           "DM_DATA_API_TOKEN": TOKEN, "ADD_USERS_MAX_BYTES": "1048576"}, out=out)
    assert status == 1
    assert "line 2 (User2@Example.gov.uk): status 409: User already exists" in out.getvalue()
    assert sorted(api.users) == ["user1@example.gov.uk", "user2@example.gov.uk"]  # line 3 was not tried
    assert "Password-" not in out.getvalue()


@pytest.mark.subprocess
def test_local_up_starts_it_checking_the_embedded_token_and_status_reports_it(tmp_path):
    env_dir = {"DMP_LOCAL_DIR": str(tmp_path / "state")}
    import os
    env = {**os.environ, **env_dir}

    def run(*args):
        return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=180, stdin=subprocess.DEVNULL)

    up = run("local", "up", "--json")
    try:
        assert up.returncode == 0, up.stderr
        status = json.loads(run("local", "status", "--json").stdout)
        assert status["running"] and status["data_api"].startswith("http://127.0.0.1:")
        import boto3
        ssm = boto3.client("ssm", endpoint_url=status["endpoint"], region_name=status["region"],
                           aws_access_key_id="local", aws_secret_access_key="local")
        token = ssm.get_parameter(Name="/dmp-local/data-api-auth-token", WithDecryption=True)["Parameter"]["Value"]
        data_api = dmapiclient.DataAPIClient(status["data_api"], token)
        data_api.create_user(user(1))
        assert data_api.get_user(email_address="user1@example.gov.uk")["users"]["name"] == "User 1"
        with pytest.raises(dmapiclient.HTTPError) as refused:
            dmapiclient.DataAPIClient(status["data_api"], "not-the-token").create_user(user(2))
        assert refused.value.status_code == 401
        # the token follows the embedded secret
        ssm.put_parameter(Name="/dmp-local/data-api-auth-token", Value="rotated-token-0001", Type="SecureString",
                          Overwrite=True)
        assert dmapiclient.DataAPIClient(status["data_api"], "rotated-token-0001").create_user(user(3))
    finally:
        assert run("local", "down").returncode == 0
