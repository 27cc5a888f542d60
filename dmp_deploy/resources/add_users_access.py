"""Who may do what in the add-users workflow: the IAM documents of its roles (issue 4, items 3 and 5).

Nothing here calls AWS. `declare(state)` puts the workflow's roles into `state.resources["_extra_iam_roles"]` and
the copier task role's policy into `_extra_task_role_policies` (both read by iam_roles.py), and, in
"group_policy" mode, the operative's managed policy into `_extra_iam_policies` (iam_policies.py). The
state_machine kind calls it from its desired(), so the roles exist exactly when the workflow does.

  - `<prefix>-add-users-states`, assumed by Step Functions: run exactly the workflow's three task definition
    families on the cluster, pass exactly their task roles and the execution role to ECS tasks, follow and stop
    those tasks, the managed rule `.sync` uses, delete objects (and versions) under the upload prefix only, and
    deliver execution logs (those log-delivery actions take no resource).
  - `<prefix>-add-users-trigger`, assumed by EventBridge: start executions of the `live` alias only.
  - the copier's task role: read objects under the upload prefix and decrypt them with the bucket key, through
    S3 only. The add-users and cleaner tasks need no AWS API: the file system policy (efs.py) lets them mount.
  - the operative (`add_users.operative_access`): a role the account's principals may assume ("role"; trusted
    by the account root, with MFA unless `operative_requires_mfa` is false), or a managed policy for the
    operatives' IAM group ("group_policy"). Either way the same statements: s3:PutObject under the upload
    prefix only when encrypted with the bucket's KMS key; that key to encrypt (through S3) and to describe;
    and, unless `operative_follows_executions` is false, reading the workflow's executions (their input holds
    only bucket and key) so that `add-users` can follow the run. No S3 read, list or delete; nothing else.

The bucket key is named by `kms_keys.arn_placeholder()` when the tool owns it: iam_roles.py resolves it.
"""

from __future__ import annotations

from dmp_deploy import names
from dmp_deploy.resources import kms_keys
from dmp_deploy.resources.iam_roles import service_trust

MACHINE_STEM = "add-users"
ALIAS = "live"
WORKFLOW_TASKS = ("add-users-copier", "add-users", "add-users-cleaner")  # task definition template stems
COPIER = "add-users-copier"
STATES_ROLE_STEM = "add-users-states"
TRIGGER_ROLE_STEM = "add-users-trigger"
OPERATIVE_STEM = "add-users-operative"
ECS_SYNC_RULE = "StepFunctionsGetEventsForECSTaskRule"  # the managed rule runTask.sync creates and reads
# Log delivery for Step Functions' execution logging: CloudWatch Logs' delivery API takes no resource ARN.
LOG_DELIVERY_ACTIONS = ("logs:CreateLogDelivery", "logs:DeleteLogDelivery", "logs:DescribeLogGroups",
                        "logs:DescribeResourcePolicies", "logs:GetLogDelivery", "logs:ListLogDeliveries",
                        "logs:PutResourcePolicy", "logs:UpdateLogDelivery")
POLICY_NAME = "add-users-workflow"  # the inline policy's name on each role


# --- names and ARNs ------------------------------------------------------------------------------------------

def machine_name(config) -> str:
    return names.family(config, MACHINE_STEM)


def machine_arn(config, name: str | None = None) -> str:
    env = config.environment
    return f"arn:aws:states:{env.region}:{env.account_id}:stateMachine:{name or machine_name(config)}"


def alias_arn(config, name: str | None = None) -> str:
    return f"{machine_arn(config, name)}:{ALIAS}"


def executions_arn(config) -> str:
    """Every execution of the machine (those started through its alias or versions included)."""
    env = config.environment
    return f"arn:aws:states:{env.region}:{env.account_id}:execution:{machine_name(config)}:*"


def cluster_arn(config) -> str:
    env = config.environment
    return f"arn:aws:ecs:{env.region}:{env.account_id}:cluster/{names.cluster(config)}"


def states_role(config) -> str:
    return f"{config.prefix}-{STATES_ROLE_STEM}"


def trigger_role(config) -> str:
    return f"{config.prefix}-{TRIGGER_ROLE_STEM}"


def operative_name(config) -> str:
    """The operative's role, or managed policy, by `add_users.operative_access`."""
    return f"{config.prefix}-{OPERATIVE_STEM}"


def upload_objects_arn(config) -> str:
    add_users = config.add_users
    return f"arn:aws:s3:::{add_users.bucket_name}/{add_users.upload_prefix}*"


def bucket_key_arn(config) -> str:
    """The bucket's key as policies write it: the configured ARN, or the owned key's placeholder."""
    return kms_keys.arn_placeholder(kms_keys.reference(config))


# --- documents (pure) ----------------------------------------------------------------------------------------

def policy(statements: list[dict]) -> dict:
    return {"Version": "2012-10-17", "Statement": statements}


def states_policy(config) -> dict:
    env = config.environment
    region, account = env.region, env.account_id
    return policy([
        {"Sid": "RunTheWorkflowTasks", "Effect": "Allow", "Action": "ecs:RunTask",
         "Resource": [f"arn:aws:ecs:{region}:{account}:task-definition/{names.family(config, stem)}:*"
                      for stem in WORKFLOW_TASKS],
         "Condition": {"ArnEquals": {"ecs:cluster": cluster_arn(config)}}},
        {"Sid": "FollowAndStopTheTasks", "Effect": "Allow", "Action": ["ecs:DescribeTasks", "ecs:StopTask"],
         "Resource": f"arn:aws:ecs:{region}:{account}:task/{names.cluster(config)}/*"},
        {"Sid": "PassTheTaskRoles", "Effect": "Allow", "Action": "iam:PassRole",
         "Resource": sorted([names.role_arn(config, names.task_role(config, stem)) for stem in WORKFLOW_TASKS]
                            + [names.role_arn(config, names.execution_role(config))]),
         "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}},
        {"Sid": "WaitForTheTasks", "Effect": "Allow",
         "Action": ["events:DescribeRule", "events:PutRule", "events:PutTargets"],
         "Resource": f"arn:aws:events:{region}:{account}:rule/{ECS_SYNC_RULE}"},
        {"Sid": "DeleteTheUpload", "Effect": "Allow", "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
         "Resource": upload_objects_arn(config)},
        {"Sid": "DeliverExecutionLogs", "Effect": "Allow", "Action": list(LOG_DELIVERY_ACTIONS), "Resource": "*"},
    ])


def trigger_policy(config) -> dict:
    # Step Functions authorises a version or an alias against the *unqualified* state machine ARN; the qualifier
    # condition scopes it to the alias (developer guide, "Authorization for versions and aliases"). A Resource
    # naming the alias ARN itself matches nothing, and the trigger would be refused.
    return policy([{"Sid": "StartTheLiveWorkflow", "Effect": "Allow", "Action": "states:StartExecution",
                    "Resource": machine_arn(config),
                    "Condition": {"StringEquals": {"states:StateMachineQualifier": ALIAS}}}])


def copier_policy(config) -> dict:
    key = bucket_key_arn(config)
    return policy([
        {"Sid": "ReadTheUploads", "Effect": "Allow", "Action": "s3:GetObject", "Resource": upload_objects_arn(config)},
        {"Sid": "DecryptTheUploads", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": key,
         "Condition": {"StringEquals": {"kms:ViaService": f"s3.{config.environment.region}.amazonaws.com"}}},
    ])


def operative_policy(config) -> dict:
    key = bucket_key_arn(config)
    statements = [
        {"Sid": "UploadUserListsEncryptedWithTheBucketKey", "Effect": "Allow", "Action": "s3:PutObject",
         "Resource": upload_objects_arn(config),
         "Condition": {"StringEquals": {"s3:x-amz-server-side-encryption": "aws:kms",
                                        "s3:x-amz-server-side-encryption-aws-kms-key-id": key}}},
        {"Sid": "EncryptThroughS3WithTheBucketKey", "Effect": "Allow", "Action": "kms:GenerateDataKey",
         "Resource": key,
         "Condition": {"StringEquals": {"kms:ViaService": f"s3.{config.environment.region}.amazonaws.com"}}},
        {"Sid": "FindTheBucketKey", "Effect": "Allow", "Action": "kms:DescribeKey", "Resource": key},
    ]
    if config.add_users.operative_follows_executions:
        # `add-users` finds the run its upload started and follows it; the executions hold only bucket and key.
        statements += [
            {"Sid": "FollowWorkflowRunsList", "Effect": "Allow", "Action": "states:ListExecutions",
             "Resource": machine_arn(config)},
            {"Sid": "FollowWorkflowRunsRead", "Effect": "Allow",
             "Action": ["states:DescribeExecution", "states:GetExecutionHistory"],
             "Resource": executions_arn(config)},
        ]
    return policy(statements)


def operative_trust(config) -> dict:
    """Any principal of this account whose own IAM policy allows sts:AssumeRole on the role (with MFA)."""
    statement = {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{config.environment.account_id}:root"},
                 "Action": "sts:AssumeRole"}
    if config.add_users.operative_requires_mfa:
        statement["Condition"] = {"Bool": {"aws:MultiFactorAuthPresent": "true"}}
    return {"Version": "2012-10-17", "Statement": [statement]}


def declare(state) -> None:
    """Put the workflow's roles and policies where iam_roles.py (and iam_policies.py) read them."""
    config = state.config
    account = config.environment.account_id
    roles = state.resources.setdefault("_extra_iam_roles", {})
    roles[states_role(config)] = {"trust_policy": service_trust("states.amazonaws.com", account),
                                  "inline_policies": {POLICY_NAME: states_policy(config)}}
    roles[trigger_role(config)] = {"trust_policy": service_trust("events.amazonaws.com", account),
                                   "inline_policies": {POLICY_NAME: trigger_policy(config)}}
    if config.add_users.operative_access == "role":
        roles[operative_name(config)] = {"trust_policy": operative_trust(config),
                                         "inline_policies": {POLICY_NAME: operative_policy(config)}}
    else:
        state.resources.setdefault("_extra_iam_policies", {})[operative_name(config)] = {
            "description": f"dmp-deploy {config.env}: operatives upload add-users files (attach to their group)",
            "document": operative_policy(config)}
    state.resources.setdefault("_extra_task_role_policies", {}).setdefault(COPIER, {})[POLICY_NAME] = \
        copier_policy(config)
