"""The add-users bucket: canonical form of every setting, create, converge, each out-of-band change detected by
name and repaired, the TLS policy in staging and production, renames, and why local drops only its TLS statement."""

import json
from dataclasses import replace

import pytest
from botocore.exceptions import ClientError

from dmp_deploy import desired as desired_state
from dmp_deploy import executor, planner, session
from dmp_deploy.aws import Aws
from dmp_deploy.config import load_config
from dmp_deploy.resources import bucket as b
from dmp_deploy.resources.base import Context, Registry
from dmp_deploy.resources.kms_keys import KmsKeys

BUCKET = "dmp-local-add-users-123456789012"
ALIAS = "alias/dmp-local-add-users"
OWNED_ARN = "arn:aws:kms:eu-west-2:123456789012:key/1111"
ALL_ON = {"BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
          "RestrictPublicBuckets": True}


def _deny_non_tls(policy) -> list:
    return [s for s in policy["Statement"]
            if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"]


# --- pure normalisers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("answer, expected", [
    (None, "absent"),
    (ALL_ON, ALL_ON),
    ({"BlockPublicAcls": True}, {**{k: False for k in ALL_ON}, "BlockPublicAcls": True}),
])
def test_public_access_block_from(answer, expected):
    assert b.public_access_block_from(answer) == expected


@pytest.mark.parametrize("answer, expected", [
    (None, "absent"),
    ({"Rules": []}, "absent"),
    ({"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}, "BucketOwnerEnforced"),
])
def test_object_ownership_from(answer, expected):
    assert b.object_ownership_from(answer) == expected


def _rules(default, bucket_key=None):
    rule = {"ApplyServerSideEncryptionByDefault": default}
    if bucket_key is not None:
        rule["BucketKeyEnabled"] = bucket_key
    return {"Rules": [rule]}


@pytest.mark.parametrize("answer, expected", [
    (None, "absent"),
    (_rules({"SSEAlgorithm": "AES256"}, False), {"algorithm": "AES256", "bucket_key": False, "kms_key": None}),
    (_rules({"SSEAlgorithm": "AES256"}), {"algorithm": "AES256", "bucket_key": False, "kms_key": None}),
    (_rules({"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": OWNED_ARN}, True),
     {"algorithm": "aws:kms", "bucket_key": True, "kms_key": {"alias": ALIAS}}),
    (_rules({"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "1111"}, True),
     {"algorithm": "aws:kms", "bucket_key": True, "kms_key": {"alias": ALIAS}}),
    (_rules({"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "arn:aws:kms:eu-west-2:1:key/other"}, True),
     {"algorithm": "aws:kms", "bucket_key": True, "kms_key": {"arn": "arn:aws:kms:eu-west-2:1:key/other"}}),
    (_rules({"SSEAlgorithm": "aws:kms"}, True), {"algorithm": "aws:kms", "bucket_key": True, "kms_key": None}),
])
def test_encryption_from_maps_the_owned_key_back_to_its_alias(answer, expected):
    from dmp_deploy.resources import kms_keys

    registry = Registry()
    registry.put("kms_key", ALIAS, arn=OWNED_ARN, key_id="1111")
    assert b.encryption_from(answer, lambda key: kms_keys.reference_for(registry, key)) == expected


@pytest.mark.parametrize("answer, expected", [
    ({}, {"eventbridge": False}),
    ({"EventBridgeConfiguration": {}}, {"eventbridge": True}),
    ({"EventBridgeConfiguration": {}, "QueueConfigurations": [{"QueueArn": "q", "Events": ["s3:*"]}],
      "TopicConfigurations": []},
     {"eventbridge": True, "QueueConfigurations": [{"QueueArn": "q", "Events": ["s3:*"]}]}),
])
def test_notifications_from(answer, expected):
    assert b.notifications_from(answer) == expected


WHOLE_BUCKET = {"ID": "r", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}


@pytest.mark.parametrize("rule", [
    {"ID": "r", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}},
    {"ID": "r", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 1}},
    {"ID": "r", "Status": "Enabled", "Prefix": "", "Expiration": {"Days": 1}},
    {"ID": "r", "Status": "Enabled", "Expiration": {"Days": 1, "ExpiredObjectDeleteMarker": False}},
])
def test_whole_bucket_lifecycle_rules_compare_equal(rule):
    assert b.lifecycle_rule(rule) == WHOLE_BUCKET


def test_lifecycle_from_keeps_real_differences_and_sorts_rules():
    assert b.lifecycle_from(None) == "absent"
    assert b.lifecycle_rule({**WHOLE_BUCKET, "Filter": {"Prefix": "uploads/"}})["Filter"] == {"Prefix": "uploads/"}
    assert [r["ID"] for r in b.lifecycle_from([{**WHOLE_BUCKET, "ID": "z"}, WHOLE_BUCKET])] == ["r", "z"]


@pytest.mark.parametrize("answer, expected", [({}, "off"), ({"Status": "Suspended"}, "off"),
                                              ({"Status": "Enabled", "MFADelete": "Disabled"}, "on")])
def test_versioning_never_enabled_and_suspended_are_both_off(answer, expected):
    assert b.versioning_from(answer) == expected


def test_policy_reads_back_equal_to_the_desired_spelling():
    registry = Registry()
    registry.put("kms_key", ALIAS, arn=OWNED_ARN, key_id="1111")
    desired = b.bucket_policy(BUCKET, f"<arn of kms_key {ALIAS}>", enforce=True)
    live = json.loads(json.dumps(desired).replace(f"<arn of kms_key {ALIAS}>", OWNED_ARN))
    live["Statement"].reverse()  # AWS's order and single-value lists are not changes
    live["Statement"][0]["Action"] = [live["Statement"][0]["Action"]]
    assert b.policy_from(json.dumps(live), registry) == desired
    assert b.policy_from(None, registry) == "absent"
    without_tls = b.bucket_policy(BUCKET, OWNED_ARN, enforce=False)
    assert not _deny_non_tls(without_tls) and len(without_tls["Statement"]) == 3


# --- staging and production enforce TLS; local cannot -------------------------------------------------------

@pytest.mark.parametrize("env", ["staging", "production"])
def test_staging_and_production_deny_non_tls_and_unencrypted_uploads(env, run_cli):
    state = session.render_only(env)
    (name, spec), = state.resources["bucket"].items()
    policy = spec["policy"]
    (tls,) = _deny_non_tls(policy)
    assert tls["Principal"] == "*" and tls["Action"] == "s3:*"
    assert sorted(tls["Resource"]) == [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"]
    sids = {s["Sid"]: s for s in policy["Statement"]}
    assert sids["DenyUploadsWithoutSseKms"]["Condition"] == {
        "StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}
    assert sids["DenyUploadsWithAnotherKey"]["Condition"] == {"StringNotEqualsIfExists": {
        "s3:x-amz-server-side-encryption-aws-kms-key-id": f"<arn of kms_key alias/dmp-{env}-add-users>"}}
    # A missing If-None-Match matches StringNotEquals too: an upload without it is denied (S3 conditional writes).
    assert sids["DenyUploadsThatCouldOverwrite"] == {
        "Sid": "DenyUploadsThatCouldOverwrite", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{name}/*", "Condition": {"StringNotEquals": {"s3:if-none-match": "*"}}}
    assert spec["encryption"] == {"algorithm": "aws:kms", "bucket_key": True,
                                  "kms_key": {"alias": f"alias/dmp-{env}-add-users"}}

    rendered = run_cli("render", "--env", env)
    assert rendered.code == 0, rendered.stderr
    assert _deny_non_tls(rendered.json["resources"]["bucket"][name]["policy"])


def test_local_keeps_every_statement_but_tls():
    policy = session.render_only("local").resources["bucket"][BUCKET]["policy"]
    assert not _deny_non_tls(policy)
    assert {s["Sid"] for s in policy["Statement"]} == {
        "DenyUploadsWithoutSseKms", "DenyUploadsWithAnotherKey", "DenyUploadsThatCouldOverwrite"}


def test_the_embedded_aws_judges_the_policy_with_the_request(local_aws):
    """moto 5.2.5 alone denied every PutObject under these statements, compliant or not (it ignores the request's
    context): moto_compat.s3_bucket_policies_are_judged_with_their_conditions hands them to iam_enforcement.
    A compliant upload by an IAM user allowed to put objects is stored; one without If-None-Match, or encrypted
    with another key, is refused; the deployer's own key is not evaluated."""
    import boto3

    s3, kms, iam = local_aws.client("s3"), local_aws.client("kms"), local_aws.client("iam")
    key = kms.create_key()["KeyMetadata"]["Arn"]
    other_key = kms.create_key()["KeyMetadata"]["Arn"]
    s3.create_bucket(Bucket="compat-policy", CreateBucketConfiguration={"LocationConstraint": local_aws.region})
    s3.put_bucket_policy(Bucket="compat-policy",
                         Policy=json.dumps(b.bucket_policy("compat-policy", key, enforce=False)))
    iam.create_user(UserName="uploader")
    iam.put_user_policy(UserName="uploader", PolicyName="put", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::compat-policy/*"},
            {"Effect": "Allow", "Action": "kms:GenerateDataKey", "Resource": "*"}]}))
    created = iam.create_access_key(UserName="uploader")["AccessKey"]
    uploader = boto3.client("s3", endpoint_url=local_aws.endpoint, region_name=local_aws.region,
                            aws_access_key_id=created["AccessKeyId"],
                            aws_secret_access_key=created["SecretAccessKey"])

    uploader.put_object(Bucket="compat-policy", Key="ok", Body=b"x", ServerSideEncryption="aws:kms",
                        SSEKMSKeyId=key, IfNoneMatch="*")
    for refused in ({"SSEKMSKeyId": key}, {"SSEKMSKeyId": other_key, "IfNoneMatch": "*"}, {"IfNoneMatch": "*"}):
        extra = {"ServerSideEncryption": "aws:kms", **refused} if "SSEKMSKeyId" in refused else refused
        with pytest.raises(ClientError) as denied:
            uploader.put_object(Bucket="compat-policy", Key="k", Body=b"x", **extra)
        assert denied.value.response["Error"]["Code"] == "AccessDenied"
        assert "explicit deny in a resource-based policy" in denied.value.response["Error"]["Message"]
    s3.put_object(Bucket="compat-policy", Key="by-the-deployer", Body=b"x")  # unrestricted, as before
    assert s3.get_object(Bucket="compat-policy", Key="ok")["Body"].read() == b"x"


# --- against the embedded AWS -------------------------------------------------------------------------------

def _key_arn(local_aws) -> str:
    return local_aws.client("kms").describe_key(KeyId=ALIAS)["KeyMetadata"]["Arn"]


def test_apply_creates_the_bucket_with_every_setting_and_second_apply_changes_nothing(local_aws, run_cli):
    first = run_cli("apply", "--env", "local", "--json")
    assert first.code == 0, first.stderr
    assert ("bucket", BUCKET, "create") in [(c["kind"], c["name"], c["action"]) for c in first.json["changes"]]
    s3 = local_aws.client("s3")
    assert s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"] == ALL_ON
    assert s3.get_bucket_ownership_controls(Bucket=BUCKET)["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}]
    (rule,) = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule == {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                                           "KMSMasterKeyID": _key_arn(local_aws)},
                    "BucketKeyEnabled": True}
    assert "EventBridgeConfiguration" in s3.get_bucket_notification_configuration(Bucket=BUCKET)
    (lifecycle,) = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert (lifecycle["Expiration"], lifecycle["NoncurrentVersionExpiration"],
            lifecycle["AbortIncompleteMultipartUpload"], lifecycle["Status"]) == (
        {"Days": 1}, {"NoncurrentDays": 1}, {"DaysAfterInitiation": 1}, "Enabled")
    assert "Status" not in s3.get_bucket_versioning(Bucket=BUCKET)
    assert {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"]} == {
        "dmp:env": "local", "dmp:managed-by": "dmp-deploy", "dmp:purpose": "add-users"}
    # Every statement but TLS (the embedded AWS is plain HTTP), with the key's ARN.
    live_policy = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])
    assert not _deny_non_tls(live_policy) and len(live_policy["Statement"]) == 3
    assert _key_arn(local_aws) in json.dumps(live_policy)

    second = run_cli("apply", "--env", "local", "--json")
    assert second.code == 0, second.stderr
    assert second.json["calls"]["mutating"] == 0
    calls = second.json["calls"]["by_operation"]
    for op in ("get_public_access_block", "get_bucket_encryption", "get_bucket_policy", "get_bucket_tagging",
               "get_bucket_lifecycle_configuration", "list_object_versions"):
        assert calls[f"s3.{op}"] == 1, op
    assert run_cli("plan", "--env", "local").code == 0


def _aes256(s3):
    s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})


def _other_key(s3, kms):
    other = kms.create_key()["KeyMetadata"]["Arn"]
    s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": other},
         "BucketKeyEnabled": True}]})


OUT_OF_BAND = {
    "public access block off": (
        lambda s3, kms: s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration={
            k: False for k in ALL_ON}),
        ["public_access_block.BlockPublicAcls", "public_access_block.BlockPublicPolicy",
         "public_access_block.IgnorePublicAcls", "public_access_block.RestrictPublicBuckets"]),
    "public access block deleted": (
        lambda s3, kms: s3.delete_public_access_block(Bucket=BUCKET), ["public_access_block"]),
    "encryption removed": (lambda s3, kms: s3.delete_bucket_encryption(Bucket=BUCKET), ["encryption"]),
    "encryption switched to AES256": (
        lambda s3, kms: _aes256(s3), ["encryption.algorithm", "encryption.bucket_key", "encryption.kms_key"]),
    "encryption with another key": (_other_key, ["encryption.kms_key"]),
    "lifecycle deleted": (lambda s3, kms: s3.delete_bucket_lifecycle(Bucket=BUCKET), ["lifecycle"]),
    "notifications off": (
        lambda s3, kms: s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={}),
        ["notifications.eventbridge"]),
    "ownership changed": (
        lambda s3, kms: s3.put_bucket_ownership_controls(Bucket=BUCKET, OwnershipControls={
            "Rules": [{"ObjectOwnership": "BucketOwnerPreferred"}]}), ["object_ownership"]),
    "ownership deleted": (
        lambda s3, kms: s3.delete_bucket_ownership_controls(Bucket=BUCKET), ["object_ownership"]),
    "a tag removed": (
        lambda s3, kms: s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [
            {"Key": "dmp:managed-by", "Value": "dmp-deploy"}, {"Key": "dmp:purpose", "Value": "add-users"}]}),
        ["tags.dmp:env"]),
    "versioning enabled": (
        lambda s3, kms: s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"}),
        ["versioning"]),
    "the policy replaced": (
        lambda s3, kms: s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "s3:GetObject",
             "Resource": f"arn:aws:s3:::{BUCKET}/*"}]})),
        ["policy.Statement"]),
    "the policy deleted": (lambda s3, kms: s3.delete_bucket_policy(Bucket=BUCKET), ["policy"]),
}


@pytest.mark.parametrize("case", sorted(OUT_OF_BAND))
def test_out_of_band_change_is_detected_by_name_and_repaired(local_aws, run_cli, case):
    change, fields = OUT_OF_BAND[case]
    assert run_cli("apply", "--env", "local").code == 0
    s3, kms = local_aws.client("s3"), local_aws.client("kms")
    before = _settings(s3)
    change(s3, kms)

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    (c,) = [c for c in plan.json["changes"] if c["kind"] == "bucket"]
    assert (c["name"], c["action"], c["destroys_data"]) == (BUCKET, "update", False)
    assert [f["path"] for f in c["fields"]] == fields

    repair = run_cli("apply", "--env", "local", "--json")
    assert repair.code == 0, repair.stderr
    assert "s3.create_bucket" not in repair.json["calls"]["by_operation"]
    after = _settings(s3)
    if case == "versioning enabled":  # S3 cannot un-version a bucket: suspended is "off"
        assert after.pop("versioning") == {"Status": "Suspended"}
        before.pop("versioning")
    assert after == before
    assert run_cli("plan", "--env", "local").code == 0


def _settings(s3) -> dict:
    def get(op, key=None):
        try:
            answer = getattr(s3, op)(Bucket=BUCKET)
        except ClientError as exc:
            return exc.response["Error"]["Code"]
        answer.pop("ResponseMetadata", None)
        return answer[key] if key else answer
    return {
        "pab": get("get_public_access_block", "PublicAccessBlockConfiguration"),
        "ownership": get("get_bucket_ownership_controls", "OwnershipControls"),
        "encryption": get("get_bucket_encryption", "ServerSideEncryptionConfiguration"),
        "policy": get("get_bucket_policy"),
        "notifications": get("get_bucket_notification_configuration"),
        "lifecycle": get("get_bucket_lifecycle_configuration", "Rules"),
        "versioning": get("get_bucket_versioning"),
        "tags": sorted(get("get_bucket_tagging", "TagSet"), key=lambda t: t["Key"]),
    }


def _reconcile(local_aws, config, apply: bool):
    """Plan (and apply) only the key and the bucket, in-process, for `config`."""
    kinds = [KmsKeys(), b.Bucket()]
    aws = Aws(local_aws.region, endpoint_url=local_aws.endpoint, read_only=not apply,
              credentials={"aws_access_key_id": "local", "aws_secret_access_key": "local"})
    rec = planner.build_plan(Context(config, aws, desired_state.build(config, kinds)), kinds)
    if apply:
        executor.execute(rec)
    return rec.plan, aws.stats


def test_enforced_policy_is_applied_with_the_real_key_arn_and_repaired(local_aws):
    """The policy as staging and production have it, against moto. Only the key and the bucket are reconciled:
    with the policy on, moto refuses every object call (the state store's release records included)."""
    config = load_config("local")
    config = replace(config, add_users=replace(config.add_users, enforce_tls_in_bucket_policy=True))
    _reconcile(local_aws, config, apply=True)
    s3 = local_aws.client("s3")
    policy = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])
    assert len(_deny_non_tls(policy)) == 1
    assert "<arn of" not in json.dumps(policy) and _key_arn(local_aws) in json.dumps(policy)
    plan, stats = _reconcile(local_aws, config, apply=True)
    assert plan.empty and stats.total_mutating == 0

    s3.delete_bucket_policy(Bucket=BUCKET)
    plan, _ = _reconcile(local_aws, config, apply=False)
    assert [(c.kind, c.action, [(f.path, f.before) for f in c.fields]) for c in plan.changes] == [
        ("bucket", "update", [("policy", "absent")])]
    _reconcile(local_aws, config, apply=True)
    assert json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"]) == policy

    weakened = {**policy, "Statement": [s for s in policy["Statement"] if not _deny_non_tls({"Statement": [s]})]}
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(weakened))
    plan, _ = _reconcile(local_aws, config, apply=False)
    assert [(c.name, [f.path for f in c.fields]) for c in plan.changes] == [(BUCKET, ["policy.Statement"])]
    _reconcile(local_aws, config, apply=True)
    assert _reconcile(local_aws, config, apply=False)[0].empty


def test_renamed_bucket_is_created_and_the_old_one_deleted_only_with_allow_destroy_when_it_holds_data(
        local_aws, run_cli, local_config):
    assert run_cli("apply", "--env", "local").code == 0
    s3 = local_aws.client("s3")
    # Outside the upload prefix: an upload there would start the add-users workflow, which deletes it.
    s3.put_object(Bucket=BUCKET, Key="kept/users.jsonl", Body=b"{}\n")
    s3.create_bucket(Bucket="someone-elses-bucket", CreateBucketConfiguration={"LocationConstraint": local_aws.region})
    renamed = "dmp-local-add-users-renamed"
    local_config(f'bucket_name = "{BUCKET}"', f'bucket_name = "{renamed}"')

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    assert [(c["action"], c["name"], c["destroys_data"]) for c in plan.json["changes"] if c["kind"] == "bucket"] == [
        ("create", renamed, False), ("delete", BUCKET, True)]

    refused = run_cli("apply", "--env", "local", "--json")
    assert refused.code == 1 and "--allow-destroy" in refused.stdout + refused.stderr
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["kept/users.jsonl"]

    assert run_cli("apply", "--env", "local", "--allow-destroy").code == 0
    buckets = {x["Name"] for x in s3.list_buckets()["Buckets"]}
    assert renamed in buckets and BUCKET not in buckets and "someone-elses-bucket" in buckets
    assert run_cli("plan", "--env", "local").code == 0


def test_empty_old_bucket_is_deleted_without_allow_destroy(local_aws, run_cli, local_config):
    assert run_cli("apply", "--env", "local").code == 0
    local_config(f'bucket_name = "{BUCKET}"', 'bucket_name = "dmp-local-add-users-renamed"')
    plan = run_cli("plan", "--env", "local", "--json")
    assert [(c["action"], c["destroys_data"]) for c in plan.json["changes"] if c["kind"] == "bucket"] == [
        ("create", False), ("delete", False)]
    assert run_cli("apply", "--env", "local").code == 0
    assert BUCKET not in {x["Name"] for x in local_aws.client("s3").list_buckets()["Buckets"]}
