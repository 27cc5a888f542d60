"""Snapshots of the embedded AWS (dmp_deploy/local/snapshots.py): what the crash suite and every test's fresh
account rely on. A restore must give back exactly what was saved, and nothing made since."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from dmp_deploy.local import snapshots


@pytest.fixture
def saved(local_aws):
    names: list[str] = []

    def save(name: str) -> None:
        local_aws.snapshot(name)
        names.append(name)

    yield save
    for name in names:
        snapshots.drop(name)


def _log_groups(local_aws) -> list[str]:
    return sorted(g["logGroupName"] for g in local_aws.client("logs").describe_log_groups()["logGroups"])


def test_restore_gives_back_what_was_saved_and_drops_what_came_after(local_aws, saved):
    logs = local_aws.client("logs")
    logs.create_log_group(logGroupName="/snap/kept")
    logs.put_retention_policy(logGroupName="/snap/kept", retentionInDays=7)
    saved("t-kept")
    logs.put_retention_policy(logGroupName="/snap/kept", retentionInDays=30)
    logs.create_log_group(logGroupName="/snap/later")
    local_aws.client("kms").create_key(Description="made after the snapshot")  # a service first used since

    local_aws.restore("t-kept")

    assert _log_groups(local_aws) == ["/snap/kept"]
    assert logs.describe_log_groups()["logGroups"][0]["retentionInDays"] == 7
    assert local_aws.client("kms").list_keys()["Keys"] == []


def test_a_snapshot_can_be_restored_again_after_changes_to_its_restored_copy(local_aws, saved):
    logs = local_aws.client("logs")
    logs.create_log_group(logGroupName="/snap/one")
    saved("t-one")
    for attempt in range(2):
        local_aws.restore("t-one")
        logs.create_log_group(logGroupName=f"/snap/attempt-{attempt}")
        logs.delete_log_group(logGroupName="/snap/one")
        assert _log_groups(local_aws) == [f"/snap/attempt-{attempt}"]
    local_aws.restore("t-one")
    assert _log_groups(local_aws) == ["/snap/one"]


def test_the_shared_bucket_namespace_comes_back_with_the_buckets(local_aws, saved):
    s3 = local_aws.client("s3")
    where = {"LocationConstraint": local_aws.region}
    saved("t-no-bucket")
    s3.create_bucket(Bucket="snap-bucket", CreateBucketConfiguration=where)
    s3.put_object(Bucket="snap-bucket", Key="k", Body=b"first")
    saved("t-bucket")

    local_aws.restore("t-no-bucket")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == []
    s3.create_bucket(Bucket="snap-bucket", CreateBucketConfiguration=where)  # the name is free again

    local_aws.restore("t-bucket")
    assert s3.get_object(Bucket="snap-bucket", Key="k")["Body"].read() == b"first"


def test_security_groups_still_belong_to_the_live_ec2_backend_after_a_restore(local_aws, saved):
    ec2 = local_aws.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["*"]}])["Vpcs"][0]["VpcId"]
    group = ec2.create_security_group(GroupName="snap-sg", Description="d", VpcId=vpc)["GroupId"]
    saved("t-sg")
    local_aws.restore("t-sg")
    # Adding a rule goes through the group's ec2_backend: it must be the backend the API now serves.
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])
    assert any(not r["IsEgress"] and r["FromPort"] == 80 for r in rules["SecurityGroupRules"])


def test_restore_refuses_when_a_shared_catalogue_changed(local_aws, saved):
    from moto.ec2 import ec2_backends

    saved("t-catalogue")
    amis = ec2_backends["123456789012"][local_aws.region].amis
    some = next(iter(amis))
    amis["ami-added-since"] = amis[some]
    try:
        with pytest.raises(snapshots.SnapshotError, match="amis"):
            snapshots.load("t-catalogue")
    finally:
        del amis["ami-added-since"]
    snapshots.load("t-catalogue")


def test_the_endpoints_answer_404_for_a_snapshot_never_saved(local_aws):
    request = urllib.request.Request(f"{local_aws.endpoint}/dmp-local/snapshots/t-never/restore", method="POST")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == 404
    assert "t-never" in json.loads(error.value.read())["error"]
