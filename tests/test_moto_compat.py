"""One test per gap in dmp_deploy/moto_compat.py: each fails loudly if a newer moto changes the behaviour.

Each test checks the behaviour the tool relies on, through the patched embedded AWS; where cheap, it also
checks that stock moto still has the gap (so the patch can be dropped when moto fixes it).
"""

import pytest

from dmp_deploy import moto_compat


def test_every_gap_is_applied_in_the_test_server(moto_server):
    assert set(moto_compat.GAPS) <= moto_compat._applied


def test_s3_echoes_eventbridge_configuration(local_aws):
    s3 = local_aws.client("s3")
    s3.create_bucket(Bucket="compat-eb", CreateBucketConfiguration={"LocationConstraint": local_aws.region})
    assert "EventBridgeConfiguration" not in s3.get_bucket_notification_configuration(Bucket="compat-eb")
    s3.put_bucket_notification_configuration(Bucket="compat-eb",
                                             NotificationConfiguration={"EventBridgeConfiguration": {}})
    assert s3.get_bucket_notification_configuration(Bucket="compat-eb")["EventBridgeConfiguration"] == {}
    s3.put_bucket_notification_configuration(Bucket="compat-eb", NotificationConfiguration={})
    assert "EventBridgeConfiguration" not in s3.get_bucket_notification_configuration(Bucket="compat-eb")


def test_logs_associates_and_disassociates_kms_keys(local_aws):
    logs = local_aws.client("logs")
    key = local_aws.client("kms").create_key()["KeyMetadata"]["Arn"]
    logs.create_log_group(logGroupName="/compat/kms")
    logs.associate_kms_key(logGroupName="/compat/kms", kmsKeyId=key)
    (group,) = logs.describe_log_groups(logGroupNamePrefix="/compat/kms")["logGroups"]
    assert group["kmsKeyId"] == key
    logs.disassociate_kms_key(logGroupName="/compat/kms")
    (group,) = logs.describe_log_groups(logGroupNamePrefix="/compat/kms")["logGroups"]
    assert "kmsKeyId" not in group
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.associate_kms_key(logGroupName="/compat/missing", kmsKeyId=key)
