"""The add-users S3 bucket (`add_users.bucket_name`), where an operator uploads a user list (passwords
included) for the add-users workflow. Every security setting is declared, so that a bucket created before
AWS's 2023 defaults and one created after compare the same, and an out-of-band change to any setting is
drift that apply repairs.

Canonical form; "absent" stands for each of S3's "no configuration" answers (NoSuchPublicAccessBlockConfiguration,
OwnershipControlsNotFoundError, ServerSideEncryptionConfigurationNotFoundError, NoSuchBucketPolicy,
NoSuchLifecycleConfiguration; NoSuchTagSet reads as no tags):

    {
      "public_access_block": {"BlockPublicAcls": true, "BlockPublicPolicy": true,
                              "IgnorePublicAcls": true, "RestrictPublicBuckets": true},
      "object_ownership": "BucketOwnerEnforced",                      # ACLs disabled
      "encryption": {"algorithm": "aws:kms", "bucket_key": true,
                     "kms_key": {"alias": "alias/dmp-staging-add-users"}},  # or {"arn": ...} when configured
      "policy": {... canonical.policy() form ...} | "absent",
      "notifications": {"eventbridge": true},                          # uploads start the workflow
      "lifecycle": [{"ID": "expire-after-1-day", ...}],
      "versioning": "off",
      "tags": {...},
    }

The key is referred to symbolically (kms_keys.reference()): the owned key's ARN exists only once the key
does. The policy writes it as kms_keys.arn_placeholder(); apply resolves both through the registry, and a
read maps the owned key's live ARN (or key id) back, so the two sides compare equal.

Versioning is declared "off": never enabled and Suspended both read as "off" (S3 cannot return a bucket to
never-versioned, so a repair suspends it). A user list should exist only until the workflow has read it;
old versions would outlive it. The lifecycle rule still expires noncurrent versions (left from any time
versioning was on) and incomplete multipart uploads after a day, as it expires every object.

The bucket policy denies every request not made over TLS and every PutObject that does not ask for SSE-KMS
or names another key. User lists are small (add_users.max_file_bytes), so one PutObject carries the
headers; uploads must send `--sse aws:kms` (and, if they name a key, this one). Where
`add_users.enforce_tls_in_bucket_policy` is false (config/local.toml alone) the TLS statement is left out,
and only it: the embedded AWS is plain HTTP, so it would deny every request. The other statements are kept
locally, where the embedded AWS evaluates them with their conditions for the operative's and the tasks'
role sessions (dmp_deploy/local/iam_enforcement.py); moto 5.2.5 alone could not (it evaluated a bucket
policy without request context, treating every operator but StringEquals as matching), which is why the
whole policy used to be dropped locally.

Reads: HeadBucket for the declared name and one tagging-API query for buckets this tool owns in this
environment (a renamed bucket is created anew and the old one deleted), then every setting of every bucket
at once through ctx.map. A bucket holds data when ListObjectVersions finds any version (current or not:
ListObjectsV2 would miss versions left from when versioning was on). Deleting such a bucket needs
--allow-destroy; deleting empties it first.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from botocore.exceptions import ClientError

from dmp_deploy import canonical
from dmp_deploy.aws import error_code
from dmp_deploy.errors import ApplyError, PlanError
from dmp_deploy.resources import kms_keys
from dmp_deploy.resources.base import Context, Live, ResourceKind

ABSENT = "absent"
PURPOSE_TAG = {"dmp:purpose": "add-users"}  # tells this bucket from any other bucket the tool may own
PUBLIC_ACCESS_BLOCK = {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                       "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
LIFECYCLE_RULE = {
    "ID": "expire-after-1-day",
    "Status": "Enabled",
    "Filter": {"Prefix": ""},
    "Expiration": {"Days": 1},
    "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
}
OTHER_NOTIFICATIONS = ("TopicConfigurations", "QueueConfigurations", "LambdaFunctionConfigurations")
# Settings in the order apply writes them: the public access block before the policy.
FIELDS = ("public_access_block", "object_ownership", "encryption", "policy", "lifecycle", "notifications",
          "versioning", "tags")


def bucket_arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}"


# --- desired ------------------------------------------------------------------------------------------------

def bucket_policy(bucket: str, key_arn: str, enforce: bool) -> dict | str:
    """The bucket policy in canonical form; `key_arn` may be the owned key's placeholder. `enforce`: whether it
    denies non-TLS requests (false only for the plain-HTTP embedded AWS)."""
    arn = bucket_arn(bucket)
    tls = [{"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]
    return canonical.policy({"Version": "2012-10-17", "Statement": (tls if enforce else []) + [
        {"Sid": "DenyUploadsWithoutSseKms", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"{arn}/*",
         "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}},
        {"Sid": "DenyUploadsWithAnotherKey", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"{arn}/*",
         "Condition": {"StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption-aws-kms-key-id": key_arn}}},
        # Uploads never overwrite (If-None-Match: *, S3's conditional-write key): a pending upload cannot be
        # replaced, and a second execution never starts for one key. Multipart uploads, whose parts cannot carry
        # the header, are denied too: a users file is one PutObject.
        {"Sid": "DenyUploadsThatCouldOverwrite", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"{arn}/*", "Condition": {"StringNotEquals": {"s3:if-none-match": "*"}}},
    ]})


# --- pure normalisers: AWS's answers into the canonical form ------------------------------------------------

def public_access_block_from(configuration: dict | None) -> dict | str:
    if configuration is None:
        return ABSENT
    return {k: bool(configuration.get(k, False)) for k in PUBLIC_ACCESS_BLOCK}


def object_ownership_from(controls: dict | None) -> str:
    rules = (controls or {}).get("Rules") or []
    return rules[0].get("ObjectOwnership", ABSENT) if rules else ABSENT


def encryption_from(configuration: dict | None, key_reference: Callable[[str], dict]) -> dict | str:
    rules = (configuration or {}).get("Rules") or []
    if not rules:
        return ABSENT
    default = rules[0].get("ApplyServerSideEncryptionByDefault") or {}
    key = default.get("KMSMasterKeyID")
    return {"algorithm": default.get("SSEAlgorithm"), "bucket_key": bool(rules[0].get("BucketKeyEnabled")),
            "kms_key": key_reference(key) if key else None}


def notifications_from(configuration: dict) -> dict:
    out: dict[str, Any] = {"eventbridge": "EventBridgeConfiguration" in configuration}
    for kind in OTHER_NOTIFICATIONS:  # never declared: any is drift, and a repair removes it
        if configuration.get(kind):
            out[kind] = configuration[kind]
    return out


def lifecycle_rule(rule: dict) -> dict:
    """A lifecycle rule in canonical form: the whole-bucket filter written one way (S3 accepts and returns
    `Filter: {}`, `Filter: {"Prefix": ""}` and the legacy top-level `Prefix: ""`)."""
    out = {k: v for k, v in rule.items() if k not in ("Filter", "Prefix")}
    out["Filter"] = rule.get("Filter") or {"Prefix": rule.get("Prefix") or ""}
    expiration = out.get("Expiration")
    if isinstance(expiration, dict) and expiration.get("ExpiredObjectDeleteMarker") is False:
        out["Expiration"] = {k: v for k, v in expiration.items() if k != "ExpiredObjectDeleteMarker"}
    return out


def lifecycle_from(rules: list[dict] | None) -> list[dict] | str:
    if rules is None:
        return ABSENT
    return sorted((lifecycle_rule(r) for r in rules), key=lambda r: r.get("ID", ""))


def versioning_from(answer: dict) -> str:
    """Enabled is "on"; never enabled and Suspended are both "off"."""
    return "on" if answer.get("Status") == "Enabled" else "off"


def policy_from(text: str | None, registry) -> dict | str:
    if text is None:
        return ABSENT
    return canonical.policy(kms_keys.with_placeholders(registry, canonical.policy(text)))


# --- reading one bucket -------------------------------------------------------------------------------------

def _or_absent(code: str, call: Callable[[], Any]) -> Any:
    """The answer, or None when S3 says there is no such configuration (`code`)."""
    try:
        return call()
    except ClientError as exc:
        if error_code(exc) == code:
            return None
        raise


def _fetch_setting(ctx: Context, bucket: str, setting: str) -> Any:
    """The AWS answer behind one setting (None where the setting is absent); `_setting_from` reads it."""
    def s3(operation: str) -> Callable[[], dict]:
        return lambda: ctx.aws.call("s3", operation, Bucket=bucket)

    if setting == "public_access_block":
        return _or_absent("NoSuchPublicAccessBlockConfiguration", s3("get_public_access_block"))
    if setting == "object_ownership":
        return _or_absent("OwnershipControlsNotFoundError", s3("get_bucket_ownership_controls"))
    if setting == "encryption":
        return _or_absent("ServerSideEncryptionConfigurationNotFoundError", s3("get_bucket_encryption"))
    if setting == "policy":
        return _or_absent("NoSuchBucketPolicy", s3("get_bucket_policy"))
    if setting == "notifications":
        return s3("get_bucket_notification_configuration")()
    if setting == "lifecycle":
        return _or_absent("NoSuchLifecycleConfiguration", s3("get_bucket_lifecycle_configuration"))
    if setting == "versioning":
        return s3("get_bucket_versioning")()
    if setting == "tags":
        return _or_absent("NoSuchTagSet", s3("get_bucket_tagging"))
    if setting == "_holds_data":
        return ctx.aws.call("s3", "list_object_versions", Bucket=bucket, MaxKeys=1)
    raise ValueError(setting)


def _setting_from(ctx: Context, setting: str, answer: Any) -> Any:
    """One setting in canonical form, from `_fetch_setting`'s answer (the key and roles by name: the registry)."""
    if setting == "public_access_block":
        return public_access_block_from(answer and answer["PublicAccessBlockConfiguration"])
    if setting == "object_ownership":
        return object_ownership_from(answer and answer["OwnershipControls"])
    if setting == "encryption":
        return encryption_from(answer and answer["ServerSideEncryptionConfiguration"],
                               lambda key: kms_keys.reference_for(ctx.registry, key))
    if setting == "policy":
        return policy_from(answer and answer["Policy"], ctx.registry)
    if setting == "notifications":
        return notifications_from(answer)
    if setting == "lifecycle":
        return lifecycle_from(answer and answer.get("Rules", []))
    if setting == "versioning":
        return versioning_from(answer)
    if setting == "tags":
        return canonical.tags_from_list((answer or {}).get("TagSet"))
    if setting == "_holds_data":
        return bool(answer.get("Versions"))
    raise ValueError(setting)


# --- the kind -----------------------------------------------------------------------------------------------

SETTINGS = "s3: the add-users bucket"  # prefetched for the read (Context.take)


class Bucket(ResourceKind):
    kind = "bucket"
    depends_on = ("kms_key",)
    holds_data = True

    def desired(self, state) -> dict[str, dict]:
        config = state.config
        bucket = config.add_users.bucket_name
        key = kms_keys.reference(config)
        return {bucket: {
            "public_access_block": dict(PUBLIC_ACCESS_BLOCK),
            "object_ownership": "BucketOwnerEnforced",
            "encryption": {"algorithm": "aws:kms", "bucket_key": True, "kms_key": key},
            "policy": bucket_policy(bucket, kms_keys.arn_placeholder(key),
                                    config.add_users.enforce_tls_in_bucket_policy),
            "notifications": {"eventbridge": True},
            "lifecycle": lifecycle_from([LIFECYCLE_RULE]),
            "versioning": "off",
            "tags": config.resource_tags(**PURPOSE_TAG),
        }}

    def prefetch(self, ctx: Context) -> None:
        ctx.memo(SETTINGS, lambda: self._settings(ctx))

    def _settings(self, ctx: Context) -> dict[str, dict]:
        """{bucket: {setting: AWS's answer}} (and "_holds_data") for the declared buckets that exist and the ones
        tagged as ours."""
        declared = sorted(ctx.desired.resources.get(self.kind, {}))
        existing, owned = ctx.map(lambda read: read(), [
            lambda: [b for b in declared if self._exists(ctx, b)],
            lambda: self._owned(ctx),
        ])
        buckets = sorted(set(existing) | set(owned))
        jobs = [(b, s) for b in buckets for s in (*FIELDS, "_holds_data")]
        values = ctx.map(lambda job: _fetch_setting(ctx, *job), jobs)
        settings: dict[str, dict] = {b: {} for b in buckets}
        for (b, s), value in zip(jobs, values):
            settings[b][s] = value
        return settings

    def read(self, ctx: Context) -> dict[str, Live]:
        settings = {b: {s: _setting_from(ctx, s, answer) for s, answer in answers.items()}
                    for b, answers in ctx.take(SETTINGS, lambda: self._settings(ctx)).items()}
        buckets = sorted(settings)
        out = {}
        for b in buckets:
            holds_data = settings[b].pop("_holds_data")
            ctx.registry.put(self.kind, b, arn=bucket_arn(b))
            out[b] = Live(spec=settings[b], ids={"arn": bucket_arn(b)}, holds_data=holds_data)
        return out

    @staticmethod
    def _exists(ctx: Context, bucket: str) -> bool:
        try:
            ctx.aws.call("s3", "head_bucket", Bucket=bucket)
            return True
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchBucket"):
                return False
            if error_code(exc) in ("403", "AccessDenied"):
                raise PlanError(f"bucket {bucket} exists but this account cannot read it: the name is taken "
                                f"by another account. Choose another add_users.bucket_name in "
                                f"config/{ctx.config.env}.toml.") from None
            raise

    @staticmethod
    def _owned(ctx: Context) -> list[str]:
        """Buckets tagged as this environment's add-users bucket, whatever their name."""
        tags = ctx.config.resource_tags(**PURPOSE_TAG)
        filters = [{"Key": k, "Values": [tags[k]]} for k in ("dmp:env", "dmp:managed-by", *PURPOSE_TAG)]
        found = ctx.aws.pages("resourcegroupstaggingapi", "get_resources", "ResourceTagMappingList",
                              TagFilters=filters, ResourceTypeFilters=["s3:bucket"])
        return sorted(r["ResourceARN"].rsplit(":", 1)[-1] for r in found)

    # --- changes ------------------------------------------------------------------------------------------

    def create(self, ctx: Context, name: str, spec: dict) -> None:
        params: dict[str, Any] = {"Bucket": name}
        region = ctx.config.environment.region
        if region != "us-east-1":  # us-east-1 refuses its own name as a location constraint
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        if spec["object_ownership"] != ABSENT:
            params["ObjectOwnership"] = spec["object_ownership"]
        ctx.aws.call("s3", "create_bucket", **params)
        ctx.registry.put(self.kind, name, arn=bucket_arn(name))
        fresh = {"object_ownership": spec["object_ownership"], "versioning": "off", "tags": {}}
        for field in FIELDS:
            if spec[field] != fresh.get(field):
                self._write(ctx, name, field, spec[field])

    def update(self, ctx: Context, name: str, spec: dict, live: Live, changes) -> None:
        for field in FIELDS:
            if spec[field] != live.spec.get(field):
                self._write(ctx, name, field, spec[field])

    @staticmethod
    def _write(ctx: Context, bucket: str, field: str, value: Any) -> None:
        """Make one setting of the bucket `value` (canonical form)."""
        def call(operation: str, **params) -> None:
            ctx.aws.call("s3", operation, Bucket=bucket, **params)

        if field == "versioning":
            call("put_bucket_versioning",
                 VersioningConfiguration={"Status": "Enabled" if value == "on" else "Suspended"})
        elif field == "notifications":
            configuration = {k: v for k, v in value.items() if k in OTHER_NOTIFICATIONS}
            if value.get("eventbridge"):
                configuration["EventBridgeConfiguration"] = {}
            call("put_bucket_notification_configuration", NotificationConfiguration=configuration)
        elif field == "tags":
            if value:
                call("put_bucket_tagging", Tagging={"TagSet": canonical.tags_to_list(value)})
            else:
                call("delete_bucket_tagging")
        elif value == ABSENT:
            call({"public_access_block": "delete_public_access_block",
                  "object_ownership": "delete_bucket_ownership_controls",
                  "encryption": "delete_bucket_encryption",
                  "policy": "delete_bucket_policy",
                  "lifecycle": "delete_bucket_lifecycle"}[field])
        elif field == "public_access_block":
            call("put_public_access_block", PublicAccessBlockConfiguration=value)
        elif field == "object_ownership":
            call("put_bucket_ownership_controls", OwnershipControls={"Rules": [{"ObjectOwnership": value}]})
        elif field == "encryption":
            default = {"SSEAlgorithm": value["algorithm"]}
            if value.get("kms_key"):
                default["KMSMasterKeyID"] = kms_keys.resolve_arn(ctx, value["kms_key"])
            call("put_bucket_encryption", ServerSideEncryptionConfiguration={"Rules": [
                {"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": value["bucket_key"]}]})
        elif field == "policy":
            call("put_bucket_policy", Policy=json.dumps(kms_keys.with_arns(ctx, value)))
        elif field == "lifecycle":
            call("put_bucket_lifecycle_configuration", LifecycleConfiguration={"Rules": value})
        else:
            raise ValueError(field)

    def delete(self, ctx: Context, name: str, live: Live) -> None:
        self._empty(ctx, name)
        ctx.aws.call("s3", "delete_bucket", Bucket=name)

    @staticmethod
    def _empty(ctx: Context, bucket: str) -> None:
        """Delete every object version and delete marker (S3 deletes only an empty bucket)."""
        markers: dict[str, str] = {}
        while True:
            page = ctx.aws.call("s3", "list_object_versions", Bucket=bucket, **markers)
            objects = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                       for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            if objects:  # a page holds at most 1,000 entries, DeleteObjects' limit
                answer = ctx.aws.call("s3", "delete_objects", Bucket=bucket,
                                      Delete={"Objects": objects, "Quiet": True})
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise ApplyError(f"bucket {bucket}: {len(answer['Errors'])} object(s) could not be deleted "
                                     f"(first: {first.get('Key')}: {first.get('Code')} {first.get('Message')}); "
                                     f"the bucket was not deleted.")
            if not page.get("IsTruncated"):
                return
            markers = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}

