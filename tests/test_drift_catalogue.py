"""Issue 5: out-of-band changes across the resource kinds, each detected by `drift` with the right severity,
repaired by `apply`, after which `drift` exits 0 again. One apply up front; the changes are made one at a time."""

import json

import pytest

TASK_ROLE = "dmp-local-api-task"


def _group_id(ec2, name):
    return ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"][0][
        "GroupId"]


def _open_ssh(aws):
    ec2 = aws.client("ec2")
    ec2.authorize_security_group_ingress(GroupId=_group_id(ec2, "dmp-local-api"), IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])


def _open_egress(aws):
    ec2 = aws.client("ec2")
    ec2.authorize_security_group_egress(GroupId=_group_id(ec2, "dmp-local-postgres"), IpPermissions=[
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])


def _bucket(aws):
    return aws.client("s3"), "dmp-local-add-users-123456789012"


def _public_access_block_off(aws):
    s3, bucket = _bucket(aws)
    s3.delete_public_access_block(Bucket=bucket)


def _encryption_to_aes(aws):
    s3, bucket = _bucket(aws)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})


def _lifecycle_deleted(aws):
    s3, bucket = _bucket(aws)
    s3.delete_bucket_lifecycle(Bucket=bucket)


def _inline_policy_widened(aws):
    aws.client("iam").put_role_policy(RoleName=TASK_ROLE, PolicyName="sneaky", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))


def _admin_attached(aws):
    iam = aws.client("iam")
    arn = iam.create_policy(PolicyName="Admin", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))[
        "Policy"]["Arn"]
    iam.attach_role_policy(RoleName=TASK_ROLE, PolicyArn=arn)


def _retention_shortened(aws):
    aws.client("logs").put_retention_policy(logGroupName="/dmp-local/api", retentionInDays=1)


def _insights_off(aws):
    aws.client("ecs").update_cluster(cluster="dmp-local",
                                     settings=[{"name": "containerInsights", "value": "disabled"}])


def _scaled_by_hand(aws):
    aws.client("ecs").update_service(cluster="dmp-local", service="dmp-local-router", desiredCount=5)


def _exec_switched_on(aws):
    aws.client("ecs").update_service(cluster="dmp-local", service="dmp-local-api", enableExecuteCommand=True)


def _rotation_off(aws):
    kms = aws.client("kms")
    key = kms.describe_key(KeyId="alias/dmp-local-add-users")["KeyMetadata"]["KeyId"]
    kms.disable_key_rotation(KeyId=key)


def _efs_policy_deleted(aws):
    efs = aws.client("efs")
    (fs,) = [f for f in efs.describe_file_systems()["FileSystems"] if f.get("Name") == "dmp-local-add-users"]
    efs.delete_file_system_policy(FileSystemId=fs["FileSystemId"])


def _trigger_disabled(aws):
    from dmp_deploy.config import load_config
    from dmp_deploy.resources.event_rule import rule_name
    aws.client("events").disable_rule(Name=rule_name(load_config("local")))


# (out-of-band change, kind, field prefix, severity)
CHANGES = [
    (_open_ssh, "security_group_rules", "ingress", "critical"),
    (_open_egress, "security_group_rules", "egress", "critical"),
    (_public_access_block_off, "bucket", "public_access_block", "critical"),
    (_encryption_to_aes, "bucket", "encryption", "critical"),
    (_lifecycle_deleted, "bucket", "lifecycle", "warning"),
    (_inline_policy_widened, "iam_role", "inline_policies", "critical"),
    (_admin_attached, "iam_role", "managed_policy_arns", "critical"),
    (_retention_shortened, "log_group", "retention_days", "warning"),
    (_insights_off, "cluster", "container_insights", "warning"),
    (_scaled_by_hand, "service", "desired_count", "warning"),
    (_exec_switched_on, "service", "enable_execute_command", "critical"),
    (_rotation_off, "kms_key", "rotation", "warning"),
    (_efs_policy_deleted, "efs_file_system", "policy", "critical"),
    (_trigger_disabled, "event_rule", "state", "warning"),
]


def test_every_out_of_band_change_is_drift_with_its_severity_and_apply_repairs_it(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    assert run_cli("drift", "--env", "local").code == 0
    seen = []
    for change, kind, field, severity in CHANGES:
        change(local_aws)
        result = run_cli("drift", "--env", "local", "--json")
        assert result.code == 2, (change.__name__, result.stdout[-1500:], result.stderr[-1500:])
        items = [d for d in result.json["drift"] if d["kind"] == kind and d["field"].startswith(field)]
        assert items, (change.__name__, result.json["drift"])
        assert {d["severity"] for d in items} == {severity}, (change.__name__, items)
        repaired = run_cli("apply", "--env", "local")
        assert repaired.code == 0, (change.__name__, repaired.stderr[-2000:])
        after = run_cli("drift", "--env", "local", "--json")
        assert after.code == 0, (change.__name__, after.json["drift"], after.json["orphans"])
        seen.append(change.__name__)
    print(f"{len(seen)} of {len(CHANGES)} out-of-band changes detected with their severity and repaired")
    assert len(seen) >= 12
