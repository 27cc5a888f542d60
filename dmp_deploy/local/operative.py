"""The add-users operative, played locally: `add-users --env local` signs its calls as the operative would on AWS.

On AWS the operative brings credentials of their own: a session of the operative role (`add_users.operative_access
= "role"`, assumed with MFA) or their IAM user in the operatives' group. Locally there is no operative, so the
command assumes the deployed operative role in the embedded STS itself, and the embedded AWS then enforces the
role's policy and the bucket policy on its upload exactly as AWS would (dmp_deploy/local/iam_enforcement.py).

MFA: the role's trust policy requires `aws:MultiFactorAuthPresent`. The embedded STS does not check trust
policies for the deployer's key (the local account's administrator) and has no MFA devices, so the AssumeRole
call passes a stand-in device ARN and code (`SerialNumber`, `TokenCode`), as an operative's CLI would pass
theirs: the shape of the call is AWS's, the check is not made locally.

Without a deployed operative role (the workflow not applied, or "group_policy" mode, whose principals are the
account's own IAM users) the command keeps the deployer's credentials, and says so in its log.
"""

from __future__ import annotations

import boto3
import structlog

from dmp_deploy import names
from dmp_deploy.config import Config
from dmp_deploy.resources import add_users_access

log = structlog.get_logger()

SESSION_NAME = "add-users-operative"
STAND_IN_MFA_CODE = "123456"


def credentials(config: Config, endpoint: str, deployer: dict) -> dict | None:
    """Session credentials of the operative role (boto3 Session keyword arguments), or None without one."""
    if config.add_users.operative_access != "role":
        return None
    clients = {service: boto3.client(service, endpoint_url=endpoint, region_name=config.environment.region,
                                     **deployer) for service in ("iam", "sts")}
    role = add_users_access.operative_name(config)
    try:
        arn = clients["iam"].get_role(RoleName=role)["Role"]["Arn"]
    except clients["iam"].exceptions.NoSuchEntityException:
        log.info("no operative role deployed: uploading with the deployer's credentials", role=role)
        return None
    mfa = {}
    if config.add_users.operative_requires_mfa:
        mfa = {"SerialNumber": f"arn:aws:iam::{config.environment.account_id}:mfa/local-operative",
               "TokenCode": STAND_IN_MFA_CODE}
    session = clients["sts"].assume_role(RoleArn=arn, RoleSessionName=SESSION_NAME, **mfa)["Credentials"]
    log.info("acting as the operative role", role=names.role_arn(config, role))
    return {"aws_access_key_id": session["AccessKeyId"], "aws_secret_access_key": session["SecretAccessKey"],
            "aws_session_token": session["SessionToken"]}
