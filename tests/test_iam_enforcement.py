"""IAM enforced by the embedded AWS (dmp_deploy/local/iam_enforcement.py; moto_compat, "issue 11: IAM enforced"):
the workflow's real roles, deployed by `apply --env local`, allowed exactly what AWS would allow them."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError

from dmp_deploy import names
from dmp_deploy.config import load_config
from dmp_deploy.local import iam_enforcement, snapshots

CONFIG = load_config("local")
ACCOUNT = CONFIG.environment.account_id
BUCKET = CONFIG.add_users.bucket_name
COPIER_ROLE = names.role_arn(CONFIG, names.task_role(CONFIG, "add-users-copier"))
APPLIED = "iam-enforcement-applied"
_saved: set[str] = set()


@pytest.fixture
def applied(local_aws, run_cli):
    """`apply --env local` once per session (then restored from a snapshot: milliseconds, not seconds)."""
    if APPLIED in _saved:
        snapshots.load(APPLIED)
    else:
        result = run_cli("apply", "--env", "local", "--json")
        assert result.code == 0, result.stdout + result.stderr
        snapshots.save(APPLIED)
        _saved.add(APPLIED)
    iam_enforcement.clear_denials()
    return local_aws


def assume(local_aws, role_arn: str, session: str = "test", **extra):
    """A boto3 session signed with the role's temporary credentials from the embedded STS."""
    credentials = local_aws.client("sts").assume_role(RoleArn=role_arn, RoleSessionName=session,
                                                       **extra)["Credentials"]
    return boto3.session.Session(aws_access_key_id=credentials["AccessKeyId"],
                                 aws_secret_access_key=credentials["SecretAccessKey"],
                                 aws_session_token=credentials["SessionToken"], region_name=local_aws.region)


def client(local_aws, session, service: str):
    return session.client(service, endpoint_url=local_aws.endpoint)


def key_arn(local_aws) -> str:
    return local_aws.client("kms").describe_key(KeyId="alias/dmp-local-add-users")["KeyMetadata"]["Arn"]


def test_the_copier_role_reads_uploads_and_nothing_else(applied):
    s3 = applied.client("s3")
    for key in ("uploads/users.jsonl", "elsewhere/users.jsonl"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"{}\n", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId=key_arn(applied), IfNoneMatch="*")
    copier = client(applied, assume(applied, COPIER_ROLE), "s3")
    assert copier.get_object(Bucket=BUCKET, Key="uploads/users.jsonl")["Body"].read() == b"{}\n"
    with pytest.raises(ClientError) as refused:
        copier.get_object(Bucket=BUCKET, Key="elsewhere/users.jsonl")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    message = refused.value.response["Error"]["Message"]
    assert f"assumed-role/{COPIER_ROLE.rsplit('/', 1)[1]}/test" in message
    assert f"s3:GetObject on resource: arn:aws:s3:::{BUCKET}/elsewhere/users.jsonl" in message
    with pytest.raises(ClientError, match="AccessDenied"):  # no write, no delete
        copier.delete_object(Bucket=BUCKET, Key="uploads/users.jsonl")
    (denial, _) = iam_enforcement.denials()
    assert denial.action == "s3:GetObject" and COPIER_ROLE.rsplit("/", 1)[1] in denial.principal
