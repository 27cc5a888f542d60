"""The add-users KMS key: references other kinds use, create, converge, repair, and the configured-key case."""


import json

import pytest

from dmp_deploy import session
from dmp_deploy.resources import kms_keys
from dmp_deploy.resources.base import Registry

ALIAS = "alias/dmp-local-add-users"
BUCKET = "dmp-local-add-users-123456789012"
CONFIGURED = "arn:aws:kms:eu-west-2:123456789012:key/00000000-0000-4000-8000-00000000c0de"
OWNED_ARN = "arn:aws:kms:eu-west-2:123456789012:key/1111"
FOREIGN_ALIAS_ARN = "arn:aws:kms:eu-west-2:123456789012:alias/someone-else"


def _registry() -> Registry:
    registry = Registry()
    registry.put("kms_key", ALIAS, arn=OWNED_ARN, key_id="1111")
    return registry


@pytest.mark.parametrize("key, expected", [
    (OWNED_ARN, {"alias": ALIAS}),
    ("1111", {"alias": ALIAS}),
    ("arn:aws:kms:eu-west-2:123456789012:alias/dmp-local-add-users", {"alias": ALIAS}),
    (ALIAS, {"alias": ALIAS}),
    (CONFIGURED, {"arn": CONFIGURED}),
    (FOREIGN_ALIAS_ARN, {"arn": FOREIGN_ALIAS_ARN}),
])
def test_live_key_identifiers_map_back_to_references(key, expected):
    assert kms_keys.reference_for(_registry(), key) == expected


def test_placeholders_round_trip_through_the_registry():
    class Ctx:
        registry = _registry()

    desired = {"Statement": [{"Condition": {"StringNotEquals": {"k": kms_keys.arn_placeholder({"alias": ALIAS})}},
                              "Resource": ["x", "y"]}]}
    live = kms_keys.with_arns(Ctx, desired)
    assert live == {"Statement": [{"Condition": {"StringNotEquals": {"k": OWNED_ARN}}, "Resource": ["x", "y"]}]}
    assert kms_keys.with_placeholders(Ctx.registry, live) == desired
    # A configured key is written as itself; a key never created cannot be resolved.
    assert kms_keys.arn_placeholder({"arn": CONFIGURED}) == CONFIGURED
    Ctx.registry = Registry()
    with pytest.raises(KeyError, match="alias/dmp-local-add-users"):
        kms_keys.with_arns(Ctx, desired)


def test_apply_creates_the_key_with_its_alias_and_second_apply_changes_nothing(local_aws, run_cli):
    first = run_cli("apply", "--env", "local", "--json")
    assert first.code == 0, first.stderr
    kms = local_aws.client("kms")
    key = kms.describe_key(KeyId=ALIAS)["KeyMetadata"]
    assert (key["KeyManager"], key["KeySpec"], key["KeyUsage"], key["KeyState"]) == (
        "CUSTOMER", "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "Enabled")
    assert "add-users workflow" in key["Description"]
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is True
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key["KeyId"])["Tags"]}
    assert tags == {"dmp:env": "local", "dmp:managed-by": "dmp-deploy"}
    # The bucket is encrypted with exactly this key.
    encryption = local_aws.client("s3").get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] == key["Arn"]

    second = run_cli("apply", "--env", "local", "--json")
    assert second.code == 0, second.stderr
    assert second.json["calls"]["mutating"] == 0
    assert not [op for op in second.json["calls"]["by_operation"] if op.startswith("kms.create")]
    assert run_cli("plan", "--env", "local").code == 0


@pytest.mark.parametrize("change, fields", [
    (lambda kms, key: kms.disable_key_rotation(KeyId=key), ["rotation"]),
    (lambda kms, key: kms.update_key_description(KeyId=key, Description="changed"), ["description"]),
    (lambda kms, key: kms.untag_resource(KeyId=key, TagKeys=["dmp:env"]), ["tags.dmp:env"]),
    (lambda kms, key: kms.disable_key(KeyId=key), ["key_state"]),
    (lambda kms, key: kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7), ["key_state"]),
])
def test_out_of_band_change_is_detected_and_repaired(local_aws, run_cli, change, fields):
    assert run_cli("apply", "--env", "local").code == 0
    kms = local_aws.client("kms")
    key_id = kms.describe_key(KeyId=ALIAS)["KeyMetadata"]["KeyId"]
    change(kms, key_id)

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    (c,) = [c for c in plan.json["changes"] if c["kind"] == "kms_key"]
    assert (c["name"], c["action"]) == (ALIAS, "update")
    assert [f["path"] for f in c["fields"]] == fields

    assert run_cli("apply", "--env", "local").code == 0
    key = kms.describe_key(KeyId=ALIAS)["KeyMetadata"]
    assert key["KeyId"] == key_id and key["KeyState"] == "Enabled"  # the same key, recovered
    assert run_cli("plan", "--env", "local").code == 0


def test_configured_key_declares_nothing_and_leaves_a_foreign_alias_alone(local_aws, run_cli, local_config):
    local_config("[add_users]\n", f'[add_users]\nkms_key_arn = "{CONFIGURED}"\n')
    assert session.render_only("local").resources["kms_key"] == {}
    kms = local_aws.client("kms")
    foreign = kms.create_key(Description="not ours")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=ALIAS, TargetKeyId=foreign)

    applied = run_cli("apply", "--env", "local", "--json")
    assert applied.code == 0, applied.stderr
    assert not [c for c in applied.json["changes"] if c["kind"] == "kms_key"]
    assert kms.describe_key(KeyId=ALIAS)["KeyMetadata"]["KeyId"] == foreign
    assert kms.describe_key(KeyId=foreign)["KeyMetadata"]["KeyState"] == "Enabled"
    encryption = local_aws.client("s3").get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] == CONFIGURED
    assert run_cli("plan", "--env", "local").code == 0


def test_switching_to_a_configured_key_schedules_the_owned_key_for_deletion_only_with_allow_destroy(
        local_aws, run_cli, local_config):
    assert run_cli("apply", "--env", "local").code == 0
    kms = local_aws.client("kms")
    owned = kms.describe_key(KeyId=ALIAS)["KeyMetadata"]["KeyId"]
    local_config("[add_users]\n", f'[add_users]\nkms_key_arn = "{CONFIGURED}"\n')

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    changes = {(c["kind"], c["action"]): c for c in plan.json["changes"] if c["kind"] in ("kms_key", "bucket")}
    # The bucket's default encryption moves to the new key, and so does its policy's statement that requires
    # uploads to use that key (local keeps every statement but TLS: dmp_deploy/resources/bucket.py).
    fields = {f["path"]: f for f in changes[("bucket", "update")]["fields"]}
    assert list(fields) == ["encryption.kms_key", "policy.Statement"]
    assert CONFIGURED in json.dumps(fields["policy.Statement"])
    assert changes[("kms_key", "delete")]["destroys_data"] is True
    # The bucket moves to the new key before the old key goes.
    order = [(c["kind"], c["action"]) for c in plan.json["changes"]]
    assert order.index(("bucket", "update")) < order.index(("kms_key", "delete"))

    refused = run_cli("apply", "--env", "local", "--json")
    assert refused.code == 1 and "--allow-destroy" in refused.stdout + refused.stderr
    assert kms.describe_key(KeyId=owned)["KeyMetadata"]["KeyState"] == "Enabled"

    assert run_cli("apply", "--env", "local", "--allow-destroy").code == 0
    assert kms.describe_key(KeyId=owned)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert ALIAS not in [a["AliasName"] for a in kms.list_aliases()["Aliases"]]
    assert run_cli("plan", "--env", "local").code == 0


def test_a_key_left_without_its_alias_by_a_killed_run_is_adopted_not_duplicated(local_aws, run_cli):
    """CreateKey then CreateAlias: a run killed between them leaves our tagged key with no alias. The next plan
    shows the alias to add to that key; apply adds it and creates no second key. A key of ours that has some other
    alias, or is scheduled for deletion, is not taken."""
    kms = local_aws.client("kms")
    ours = [{"TagKey": "dmp:env", "TagValue": "local"}, {"TagKey": "dmp:managed-by", "TagValue": "dmp-deploy"}]
    pending = kms.create_key(Tags=ours)["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=pending, PendingWindowInDays=7)
    elsewhere = kms.create_key(Tags=ours)["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/something-else", TargetKeyId=elsewhere)
    orphan = kms.create_key(Tags=ours, Description="left by a killed run", KeySpec="SYMMETRIC_DEFAULT",
                            KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    (c,) = [c for c in plan.json["changes"] if c["kind"] == "kms_key"]
    assert (c["name"], c["action"]) == (ALIAS, "update")
    assert [f["path"] for f in c["fields"]] == ["alias", "description", "rotation"]

    assert run_cli("apply", "--env", "local").code == 0
    assert kms.describe_key(KeyId=ALIAS)["KeyMetadata"]["KeyId"] == orphan
    assert len(kms.list_keys()["Keys"]) == 3  # no new key
    assert kms.get_key_rotation_status(KeyId=orphan)["KeyRotationEnabled"] is True
    assert run_cli("plan", "--env", "local").code == 0
