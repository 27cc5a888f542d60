"""The add-users EFS (file system, mount targets, access point): pure canonical forms, then against the
embedded AWS: create, converge, drift, access point replace, file system replace, adoption, duplicates."""

import json
import shutil
import uuid

import pytest

from dmp_deploy import config as config_module
from dmp_deploy import desired, executor, planner, session
from dmp_deploy import placeholders
from dmp_deploy.config import load_config
from dmp_deploy.desired import DesiredState
from dmp_deploy.errors import ApplyError, ConfigError
from dmp_deploy.resources import all_kinds, efs
from dmp_deploy.resources.base import Context, Registry

FS = "dmp-local-add-users"
AP = "dmp-local-add-users"
ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/dmp-deploy/"
FS_ARN = f"arn:aws:elasticfilesystem:eu-west-2:{ACCOUNT}:file-system/fs-1"
ADD_USERS_FAMILIES = ("dmp-local-add-users", "dmp-local-add-users-copier", "dmp-local-add-users-cleaner")
OURS = [{"Key": "Name", "Value": FS}, {"Key": "dmp:env", "Value": "local"},
        {"Key": "dmp:managed-by", "Value": "dmp-deploy"}]


# --- pure functions ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("given, expected", [("700", "0700"), ("0700", "0700"), ("00700", "0700"),
                                             ("755", "0755"), (None, None)])
def test_permissions_are_four_octal_digits(given, expected):
    assert efs.permissions_spec(given) == expected


@pytest.mark.parametrize("root, expected", [
    (None, {"path": "/", "creation_info": None}),
    ({"Path": "/add-users"}, {"path": "/add-users", "creation_info": None}),
    ({"Path": "/x", "CreationInfo": {"OwnerUid": 1, "OwnerGid": 2, "Permissions": "700"}},
     {"path": "/x", "creation_info": {"owner_uid": 1, "owner_gid": 2, "permissions": "0700"}}),
])
def test_root_directory_spec(root, expected):
    assert efs.root_directory_spec(root) == expected


@pytest.mark.parametrize("user, expected", [
    (None, None),
    ({"Uid": 1000, "Gid": 1000}, {"uid": 1000, "gid": 1000, "secondary_gids": []}),
    ({"Uid": 1, "Gid": 2, "SecondaryGids": [9, 3]}, {"uid": 1, "gid": 2, "secondary_gids": [3, 9]}),
])
def test_posix_user_spec(user, expected):
    assert efs.posix_user_spec(user) == expected


def test_policy_spec_drops_only_the_resource_naming_the_file_system_itself():
    live = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["elasticfilesystem:ClientMount"],
         "Resource": FS_ARN},
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "elasticfilesystem:ClientWrite",
         "Resource": FS_ARN.replace("fs-1", "fs-2")},
    ]})
    statements = efs.policy_spec(live, FS_ARN)["Statement"]
    assert {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "elasticfilesystem:ClientMount"} in statements
    assert any(s.get("Resource") == FS_ARN.replace("fs-1", "fs-2") for s in statements)  # not ours: drift
    assert efs.policy_spec(None, FS_ARN) is None


def test_policy_document_round_trips_through_policy_spec():
    config = load_config("local")
    declared = {"dmp-local-add-users-task", "dmp-local-add-users-copier-task"}
    spec = efs.file_system_policy(config, declared)
    document = efs.policy_document(spec, FS_ARN)
    assert all(s["Resource"] == FS_ARN for s in document["Statement"])
    assert efs.policy_spec(json.dumps(document), FS_ARN) == spec


def _statements(policy):
    return {s.get("Sid"): s for s in policy["Statement"]}


def test_file_system_policy_grants_each_task_role_only_its_access_and_only_via_mount_targets_over_tls():
    config = load_config("local")
    roles = {"dmp-local-add-users-task", "dmp-local-add-users-copier-task", "dmp-local-add-users-cleaner-task",
             "dmp-local-api-task"}
    statements = _statements(efs.file_system_policy(config, roles))
    assert set(statements) == {"DenyWithoutTls", "AddUsers", "AddUsersCopier", "AddUsersCleaner"}
    deny = statements["DenyWithoutTls"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", {"AWS": "*"}, "*")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert statements["AddUsers"]["Action"] == "elasticfilesystem:ClientMount"  # read-only
    assert statements["AddUsers"]["Principal"] == {"AWS": ROLE_ARN + "dmp-local-add-users-task"}
    for sid in ("AddUsersCopier", "AddUsersCleaner"):
        assert statements[sid]["Action"] == ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    for sid in ("AddUsers", "AddUsersCopier", "AddUsersCleaner"):
        assert statements[sid]["Effect"] == "Allow"
        assert statements[sid]["Condition"] == {"Bool": {"elasticfilesystem:AccessedViaMountTarget": "true"}}
    assert "dmp-local-api-task" not in json.dumps(statements)


def test_file_system_policy_names_no_role_that_is_not_declared():
    statements = _statements(efs.file_system_policy(load_config("local"), {"dmp-local-add-users-task"}))
    assert set(statements) == {"DenyWithoutTls", "AddUsers"}
    assert set(_statements(efs.file_system_policy(load_config("local"), set()))) == {"DenyWithoutTls"}


def test_one_mount_target_per_zone_in_the_first_subnet_there():
    subnets = [{"SubnetId": "subnet-c", "AvailabilityZone": "eu-west-2a"},
               {"SubnetId": "subnet-b", "AvailabilityZone": "eu-west-2b"},
               {"SubnetId": "subnet-a", "AvailabilityZone": "eu-west-2a"}]
    assert efs.mount_target_subnets(subnets) == {"eu-west-2a": "subnet-a", "eu-west-2b": "subnet-b"}


def _state(config, **resources) -> DesiredState:
    return DesiredState(config=config, image_tags={}, resources=resources)


def _with_add_users(config, **changes):
    from dataclasses import replace
    return replace(config, add_users=replace(config.add_users, **changes))


KEY = f"arn:aws:kms:eu-west-2:{ACCOUNT}:key/efs-key"
BUCKET_KEY = f"arn:aws:kms:eu-west-2:{ACCOUNT}:key/bucket-key"


@pytest.mark.parametrize("changes, kms_declared, expected", [
    ({"efs_kms_key_arn": KEY, "kms_key_arn": BUCKET_KEY}, False, {"arn": KEY}),
    ({"kms_key_arn": BUCKET_KEY}, False, {"arn": BUCKET_KEY}),
    ({}, True, {"alias": "alias/dmp-local-add-users"}),
    ({}, False, {"alias": "alias/aws/elasticfilesystem"}),  # no key kind declaring the alias: AWS-managed
])
def test_key_reference(changes, kms_declared, expected):
    config = _with_add_users(load_config("local"), **changes)
    kms = {"alias/dmp-local-add-users": {}} if kms_declared else {}
    assert efs.key_reference(_state(config, kms_key=kms)) == expected


def test_registered_kinds_give_the_file_system_the_owned_add_users_key():
    """KmsKeys must declare its alias before FileSystems reads the declarations (resources/__init__.py)."""
    state = desired.build(load_config("local"), all_kinds())
    assert state.resources["efs_file_system"][FS]["kms_key"] == {"alias": "alias/dmp-local-add-users"}


def test_live_key_reference():
    registry = Registry()
    registry.put("kms_key", "alias/dmp-local-add-users", arn=KEY)
    managed = f"arn:aws:kms:eu-west-2:{ACCOUNT}:key/aws-managed"
    assert efs.live_key_reference(registry, None, managed) == {"alias": "alias/aws/elasticfilesystem"}
    assert efs.live_key_reference(registry, managed, managed) == {"alias": "alias/aws/elasticfilesystem"}
    assert efs.live_key_reference(registry, KEY, managed) == {"alias": "alias/dmp-local-add-users"}
    assert efs.live_key_reference(registry, BUCKET_KEY, None) == {"arn": BUCKET_KEY}


@pytest.mark.parametrize("point, expected", [
    ({"AccessPointId": "fsap-1", "Tags": [{"Key": "Name", "Value": AP}]}, AP),
    ({"AccessPointId": "fsap-1", "Tags": [], "ClientToken": f"{AP}:abc"}, AP),  # tags removed: by its token
    ({"AccessPointId": "fsap-1", "Tags": OURS[1:] + [{"Key": "Name", "Value": "old-name"}]}, "old-name"),
    ({"AccessPointId": "fsap-1", "Tags": OURS[1:]}, "fsap-1"),
    ({"AccessPointId": "fsap-1", "Tags": [{"Key": "Name", "Value": "someone-elses"}]}, None),
    ({"AccessPointId": "fsap-1", "Tags": [{"Key": "dmp:env", "Value": "staging"},
                                          {"Key": "dmp:managed-by", "Value": "dmp-deploy"}]}, None),
])
def test_access_point_key(point, expected):
    assert efs.access_point_key(point, {AP: {}}, "local") == expected


def _labelled_context(**labels) -> Context:
    ctx = Context(load_config("local"), aws=None, desired=None)
    ctx.registry.put(efs.FILE_SYSTEM_KIND, FS, id="fs-1")
    ctx.registry.put(efs.ACCESS_POINT_KIND, AP, id="fsap-new")  # as AccessPoints.replace leaves it
    efs._label(ctx, efs.FILE_SYSTEM_KIND, "fs-1", FS)
    efs._label(ctx, efs.ACCESS_POINT_KIND, "fsap-old", efs.replaced_label(AP, "fsap-old"))
    return ctx


def _volume_document(file_system, access_point):
    return {"family": "dmp-local-add-users", "volumes": [
        {"name": "add-users", "efsVolumeConfiguration": {
            "fileSystemId": file_system, "transitEncryption": "ENABLED",
            "authorizationConfig": {"accessPointId": access_point, "iam": "ENABLED"}}},
        {"name": "scratch"}]}


def test_task_definition_volumes_compare_by_name_and_register_with_the_ids_of_this_apply():
    ctx = _labelled_context()
    fs_placeholder = placeholders.efs_id(efs.FILE_SYSTEM_KIND, FS)
    ap_placeholder = placeholders.efs_id(efs.ACCESS_POINT_KIND, AP)
    wanted = _volume_document(fs_placeholder, ap_placeholder)

    live = efs.with_placeholders(ctx, _volume_document("fs-1", "fsap-old"))
    assert live["volumes"][0]["efsVolumeConfiguration"]["fileSystemId"] == fs_placeholder
    old_point = live["volumes"][0]["efsVolumeConfiguration"]["authorizationConfig"]
    assert old_point == {"accessPointId": placeholders.efs_id(efs.ACCESS_POINT_KIND, "dmp-local-add-users "
                                                             "[fsap-old: to be replaced]"), "iam": "ENABLED"}
    assert live["volumes"][1] == {"name": "scratch"}
    assert efs.volume_references(live) != efs.volume_references(wanted)  # the access point moves: follow it
    assert efs.volume_references(efs.with_placeholders(ctx, _volume_document("fs-1", "fsap-new-unknown"))) == [
        fs_placeholder, "fsap-new-unknown"]  # not ours: the id itself
    assert efs.with_placeholders(ctx, {"family": "x"}) == {"family": "x"}

    registered = efs.with_ids(ctx, wanted)
    assert registered == _volume_document("fs-1", "fsap-new")
    assert wanted == _volume_document(fs_placeholder, ap_placeholder)  # not modified in place
    with pytest.raises(KeyError, match="efs_access_point 'dmp-local-other'"):  # the executor reports it
        efs.with_ids(ctx, _volume_document("fs-1", placeholders.efs_id(efs.ACCESS_POINT_KIND, "dmp-local-other")))


def test_name_and_id_helpers():
    ctx = _labelled_context()
    assert efs.file_system_id(ctx, FS) == "fs-1" and efs.access_point_id(ctx, AP) == "fsap-new"
    assert efs.file_system_name_for_id(ctx, "fs-1") == FS
    assert efs.access_point_name_for_id(ctx, "fsap-old") == "dmp-local-add-users [fsap-old: to be replaced]"
    assert efs.access_point_name_for_id(ctx, "fsap-elsewhere") == "fsap-elsewhere"
    with pytest.raises(KeyError):
        efs.access_point_id(ctx, "dmp-local-other")


@pytest.mark.parametrize("changes, key", [
    ({"access_point_path": "add-users"}, "access_point_path"),
    ({"access_point_path": "/"}, "access_point_path"),
    ({"access_point_path": "/a/../b"}, "access_point_path"),
    ({"access_point_path": "/add-users/"}, "access_point_path"),
    ({"posix_uid": 0}, "posix_uid"),
    ({"posix_gid": -1}, "posix_gid"),
    ({"efs_kms_key_arn": "alias/mine"}, "efs_kms_key_arn"),
])
def test_config_rejects_bad_efs_settings(tmp_path, monkeypatch, changes, key):
    directory = _config_dir(tmp_path, monkeypatch, **changes)
    with pytest.raises(ConfigError, match=f"add_users.{key}"):
        load_config("local", directory)


# --- against the embedded AWS ---------------------------------------------------------------------------------

def _config_dir(tmp_path, monkeypatch, **add_users):
    """A copy of config/ with [add_users] keys changed, made the CLI's config directory."""
    directory = tmp_path / "config"
    shutil.copytree(config_module.CONFIG_DIR, directory)
    path = directory / "local.toml"
    text = path.read_text()
    for key, value in add_users.items():
        line = f"{key} = {json.dumps(value)}\n"
        start = text.index("[add_users]")
        lines = text[start:].split("\n")
        existing = next((l for l in lines if l.startswith(f"{key} = ")), None)
        if existing:
            text = text[:start] + text[start:].replace(existing + "\n", line, 1)
        else:
            text = text.replace("[add_users]\n", "[add_users]\n" + line, 1)
    path.write_text(text)
    monkeypatch.setattr(config_module, "CONFIG_DIR", directory)
    return directory


def _file_systems(client):
    return [f for f in client.describe_file_systems()["FileSystems"] if f["LifeCycleState"] == "available"]


def _access_points(client):
    return client.describe_access_points()["AccessPoints"]


def _mount_targets(client, fs_id):
    return client.describe_mount_targets(FileSystemId=fs_id)["MountTargets"]


def _group_id(local_aws, name):
    (group,) = local_aws.client("ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
    return group["GroupId"]


def _key_arn(local_aws):
    return local_aws.client("kms").describe_key(KeyId="alias/dmp-local-add-users")["KeyMetadata"]["Arn"]


def test_apply_creates_the_file_system_a_mount_target_per_zone_and_the_access_point(local_aws, run_cli):
    first = run_cli("apply", "--env", "local", "--json")
    assert first.code == 0, first.stderr
    client = local_aws.client("efs")

    (fs,) = _file_systems(client)
    assert fs["Encrypted"] and fs["KmsKeyId"] == _key_arn(local_aws)
    assert (fs["PerformanceMode"], fs["ThroughputMode"]) == ("generalPurpose", "bursting")
    assert {t["Key"]: t["Value"] for t in fs["Tags"]} == {"Name": FS, "dmp:env": "local",
                                                          "dmp:managed-by": "dmp-deploy"}
    policy = json.loads(client.describe_file_system_policy(FileSystemId=fs["FileSystemId"])["Policy"])
    assert all(s["Resource"] == fs["FileSystemArn"] for s in policy["Statement"])
    declared = desired.build(load_config("local"), all_kinds()).resources
    assert efs.policy_spec(policy, fs["FileSystemArn"]) == declared["efs_file_system"][FS]["policy"]
    # The add-users task definitions exist, so their roles do, and the policy grants each its access.
    assert set(_statements(policy)) == {"DenyWithoutTls", "AddUsers", "AddUsersCopier", "AddUsersCleaner"}
    assert client.describe_lifecycle_configuration(FileSystemId=fs["FileSystemId"])["LifecyclePolicies"] == []

    subnets = local_aws.client("ec2").describe_subnets(
        Filters=[{"Name": "tag:dmp:tier", "Values": ["private"]}])["Subnets"]
    targets = _mount_targets(client, fs["FileSystemId"])
    assert sorted(t["SubnetId"] for t in targets) == sorted(s["SubnetId"] for s in subnets)
    assert len({t["AvailabilityZoneName"] for t in targets}) == len(targets) == 2
    efs_group = _group_id(local_aws, "dmp-local-efs")
    for target in targets:
        assert client.describe_mount_target_security_groups(
            MountTargetId=target["MountTargetId"])["SecurityGroups"] == [efs_group]

    (point,) = _access_points(client)
    assert point["FileSystemId"] == fs["FileSystemId"]
    assert point["RootDirectory"] == {"Path": "/add-users", "CreationInfo": {
        "OwnerUid": 1000, "OwnerGid": 1000, "Permissions": "0700"}}
    assert point["PosixUser"] == {"Uid": 1000, "Gid": 1000}
    assert {t["Key"]: t["Value"] for t in point["Tags"]}["Name"] == AP

    second = run_cli("apply", "--env", "local", "--json")
    assert second.code == 0, second.stderr
    assert second.json["changes"] == []
    assert second.json["calls"]["mutating"] == 0
    plan = run_cli("plan", "--env", "local")
    assert plan.code == 0, plan.stdout + plan.stderr


def _fs_id(local_aws):
    (fs,) = _file_systems(local_aws.client("efs"))
    return fs["FileSystemId"]


def _other_policy(local_aws):
    fs_id = _fs_id(local_aws)
    arn = f"arn:aws:elasticfilesystem:eu-west-2:{ACCOUNT}:file-system/{fs_id}"
    local_aws.client("efs").put_file_system_policy(FileSystemId=fs_id, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                                "Action": "elasticfilesystem:ClientRootAccess", "Resource": arn}]}))


def _other_groups(local_aws):
    client = local_aws.client("efs")
    target = _mount_targets(client, _fs_id(local_aws))[0]
    client.modify_mount_target_security_groups(MountTargetId=target["MountTargetId"],
                                               SecurityGroups=[_group_id(local_aws, "dmp-local-efs-clients")])


def _point_id(local_aws):
    (point,) = _access_points(local_aws.client("efs"))
    return point["AccessPointId"]


@pytest.mark.parametrize("change, kind, name, fields", [
    (_other_policy, "efs_file_system", FS, ["policy.Statement"]),
    (lambda a: a.client("efs").delete_file_system_policy(FileSystemId=_fs_id(a)), "efs_file_system", FS, ["policy"]),
    (lambda a: a.client("efs").put_backup_policy(FileSystemId=_fs_id(a), BackupPolicy={"Status": "ENABLED"}),
     "efs_file_system", FS, ["automatic_backups"]),
    (lambda a: a.client("efs").put_lifecycle_configuration(
        FileSystemId=_fs_id(a), LifecyclePolicies=[{"TransitionToIA": "AFTER_30_DAYS"}]),
     "efs_file_system", FS, ["lifecycle_policies"]),
    (lambda a: a.client("efs").untag_resource(ResourceId=_fs_id(a), TagKeys=["Name"]),  # found by its token
     "efs_file_system", FS, ["tags.Name"]),
    (lambda a: a.client("efs").untag_resource(ResourceId=_fs_id(a), TagKeys=["dmp:env"]),
     "efs_file_system", FS, ["tags.dmp:env"]),
    (_other_groups, "efs_mount_target", None, ["security_groups"]),
    (lambda a: a.client("efs").untag_resource(ResourceId=_point_id(a), TagKeys=["dmp:managed-by"]),
     "efs_access_point", AP, ["tags.dmp:managed-by"]),
    (lambda a: a.client("efs").tag_resource(ResourceId=_point_id(a), Tags=[{"Key": "extra", "Value": "x"}]),
     "efs_access_point", AP, ["tags.extra"]),
])
def test_out_of_band_change_is_detected_and_repaired(local_aws, run_cli, change, kind, name, fields):
    assert run_cli("apply", "--env", "local").code == 0
    change(local_aws)

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2, plan.stdout + plan.stderr
    (c,) = plan.json["changes"]
    assert (c["kind"], c["action"]) == (kind, "update")
    assert name is None or c["name"] == name
    assert [f["path"] for f in c["fields"]] == fields

    applied = run_cli("apply", "--env", "local", "--json")
    assert applied.code == 0, applied.stdout + applied.stderr
    assert run_cli("plan", "--env", "local").code == 0
    client = local_aws.client("efs")
    assert len(_file_systems(client)) == 1 and len(_access_points(client)) == 1


def test_a_changed_access_point_path_replaces_it_new_one_first(local_aws, run_cli, tmp_path, monkeypatch):
    assert run_cli("apply", "--env", "local").code == 0
    client = local_aws.client("efs")
    old = _point_id(local_aws)
    _config_dir(tmp_path, monkeypatch, access_point_path="/add-users-v2")

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    c, *followers = plan.json["changes"]
    assert (c["kind"], c["name"], c["action"], c["destroys_data"]) == ("efs_access_point", AP, "replace", False)
    # Everything that names the new identity follows, up front: the revisions, the machine naming them (a new
    # version) and the alias routing to it (issue 12).
    assert {(f["kind"], f["name"], f["action"]) for f in followers} == {
        ("task_definition", family, "update") for family in ADD_USERS_FAMILIES} | {
        ("state_machine", "dmp-local-add-users", "update"),
        ("state_machine_alias", "dmp-local-add-users:live", "update")}
    (field,) = c["fields"]
    assert (field["path"], field["forces_replace"]) == ("root_directory", True)
    assert field["after"]["path"] == "/add-users-v2"

    applied = run_cli("apply", "--env", "local", "--json")
    assert applied.code == 0, applied.stdout + applied.stderr
    by_operation = applied.json["calls"]["by_operation"]
    assert by_operation["efs.create_access_point"] == 1 and by_operation["efs.delete_access_point"] == 1
    (point,) = _access_points(client)
    assert point["AccessPointId"] != old
    assert point["RootDirectory"]["Path"] == "/add-users-v2"
    assert {_volume_ids(local_aws, family)[1] for family in ADD_USERS_FAMILIES} == {point["AccessPointId"]}
    assert run_cli("plan", "--env", "local").code == 0


def test_access_point_ids_map_to_names_and_follow_a_replace_in_the_same_apply(local_aws, run_cli, tmp_path,
                                                                               monkeypatch):
    """The contract for task definitions: compare by name (live ids mapped back), register with the id
    `access_point_id` gives at apply time."""
    assert run_cli("apply", "--env", "local").code == 0
    old_point, fs_id = _point_id(local_aws), _fs_id(local_aws)

    assert _volume_ids(local_aws, "dmp-local-add-users") == (fs_id, old_point)
    env = session.open_environment("local", read_only=True)
    planner.build_plan(env.ctx, env.kinds)
    assert efs.access_point_name_for_id(env.ctx, old_point) == AP
    assert efs.file_system_name_for_id(env.ctx, fs_id) == FS
    assert efs.access_point_id(env.ctx, AP) == old_point and efs.file_system_id(env.ctx, FS) == fs_id
    assert efs.access_point_name_for_id(env.ctx, "fsap-0123456789abcdef0") == "fsap-0123456789abcdef0"

    _config_dir(tmp_path, monkeypatch, posix_uid=1001)
    env = session.open_environment("local")
    rec = planner.build_plan(env.ctx, env.kinds)
    label = efs.access_point_name_for_id(env.ctx, old_point)
    assert label != AP and old_point in label  # so a task definition naming it differs: it follows
    followers = {c.name for c in rec.plan.changes if c.kind == "task_definition"}
    assert followers == set(ADD_USERS_FAMILIES)
    executor.execute(rec)
    new_point = efs.access_point_id(env.ctx, AP)
    assert new_point != old_point and new_point == _point_id(local_aws)
    assert _access_points(local_aws.client("efs"))[0]["PosixUser"] == {"Uid": 1001, "Gid": 1000}
    for family in followers:  # every task definition naming the access point now names the new one
        assert _volume_ids(local_aws, family) == (fs_id, new_point)
    # In sync; only the release is unrecorded (executed here without deploy(), which records it).
    plan = run_cli("plan", "--env", "local", "--json")
    assert [(c["kind"], c["action"]) for c in plan.json["changes"]] == [("release_record", "update")]


def _volume_ids(local_aws, family):
    (volume,) = local_aws.client("ecs").describe_task_definition(taskDefinition=family)["taskDefinition"]["volumes"]
    config = volume["efsVolumeConfiguration"]
    return config["fileSystemId"], config["authorizationConfig"]["accessPointId"]


def test_a_changed_key_replaces_the_file_system_only_with_allow_destroy_and_everything_follows(
        local_aws, run_cli, tmp_path, monkeypatch):
    assert run_cli("apply", "--env", "local").code == 0
    client = local_aws.client("efs")
    old_fs, old_point = _fs_id(local_aws), _point_id(local_aws)
    new_key = local_aws.client("kms").create_key()["KeyMetadata"]["Arn"]
    _config_dir(tmp_path, monkeypatch, efs_kms_key_arn=new_key)

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    efs_changes = [c for c in plan.json["changes"] if c["kind"].startswith("efs_")]
    assert [(c["kind"], c["action"], c["destroys_data"]) for c in efs_changes] == [
        ("efs_file_system", "replace", True), ("efs_mount_target", "replace", False),
        ("efs_mount_target", "replace", False), ("efs_access_point", "replace", False)]
    assert [f["path"] for f in efs_changes[0]["fields"]] == ["kms_key"]
    assert all([f["path"] for f in c["fields"]] == ["file_system"] for c in efs_changes[1:])
    assert {c["name"] for c in plan.json["changes"] if c["kind"] == "task_definition"} == set(ADD_USERS_FAMILIES)

    refused = run_cli("apply", "--env", "local", "--json")
    assert refused.code == 1 and "--allow-destroy" in refused.stdout + refused.stderr
    assert _fs_id(local_aws) == old_fs

    applied = run_cli("apply", "--env", "local", "--allow-destroy", "--json")
    assert applied.code == 0, applied.stdout + applied.stderr
    (fs,) = _file_systems(client)
    assert fs["FileSystemId"] != old_fs and fs["KmsKeyId"] == new_key
    assert len(_mount_targets(client, fs["FileSystemId"])) == 2
    (point,) = _access_points(client)
    assert point["FileSystemId"] == fs["FileSystemId"] and point["AccessPointId"] != old_point
    for family in ADD_USERS_FAMILIES:
        assert _volume_ids(local_aws, family) == (fs["FileSystemId"], point["AccessPointId"])
    assert run_cli("plan", "--env", "local").code == 0


class Abort(Exception):
    pass


def test_creation_interrupted_after_the_file_system_is_finished_without_a_duplicate(local_aws, run_cli):
    env = session.open_environment("local")

    def die_after_creating_the_file_system(call):
        if call.operation == "put_file_system_policy":
            raise Abort("the process died")

    env.aws.hooks.append(die_after_creating_the_file_system)
    with pytest.raises(ApplyError, match="the process died"):
        executor.execute(planner.build_plan(env.ctx, env.kinds))
    client = local_aws.client("efs")
    (fs,) = _file_systems(client)

    applied = run_cli("apply", "--env", "local", "--json")
    assert applied.code == 0, applied.stdout + applied.stderr
    assert [f["FileSystemId"] for f in _file_systems(client)] == [fs["FileSystemId"]]
    assert len(_access_points(client)) == 1
    assert run_cli("plan", "--env", "local").code == 0


def test_a_file_system_and_access_point_made_with_our_tags_are_adopted_not_duplicated(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0  # the key, groups and roles; then EFS from scratch:
    client = local_aws.client("efs")
    client.delete_access_point(AccessPointId=_point_id(local_aws))
    for target in _mount_targets(client, _fs_id(local_aws)):
        client.delete_mount_target(MountTargetId=target["MountTargetId"])
    client.delete_file_system(FileSystemId=_fs_id(local_aws))
    # As a create whose answer was lost would leave them: our tags, someone else's tokens, nothing else.
    fs_id = client.create_file_system(CreationToken=str(uuid.uuid4()), Encrypted=True, KmsKeyId=_key_arn(local_aws),
                                      Backup=False, Tags=OURS)["FileSystemId"]
    point_id = client.create_access_point(
        ClientToken=str(uuid.uuid4()), FileSystemId=fs_id, PosixUser={"Uid": 1000, "Gid": 1000},
        RootDirectory={"Path": "/add-users", "CreationInfo": {"OwnerUid": 1000, "OwnerGid": 1000,
                                                              "Permissions": "700"}},
        Tags=OURS)["AccessPointId"]

    plan = run_cli("plan", "--env", "local", "--json")
    efs_changes = [c for c in plan.json["changes"] if c["kind"].startswith("efs_")]
    assert [(c["kind"], c["name"], c["action"], [f["path"] for f in c["fields"]]) for c in efs_changes] == [
        ("efs_file_system", FS, "update", ["policy"]),
        ("efs_mount_target", f"{FS}/eu-west-2a", "create", ["file_system", "security_groups", "subnet_id"]),
        ("efs_mount_target", f"{FS}/eu-west-2b", "create", ["file_system", "security_groups", "subnet_id"])]

    applied = run_cli("apply", "--env", "local", "--json")
    assert applied.code == 0, applied.stdout + applied.stderr
    assert [f["FileSystemId"] for f in _file_systems(client)] == [fs_id]
    assert [p["AccessPointId"] for p in _access_points(client)] == [point_id]
    assert len(_mount_targets(client, fs_id)) == 2
    for family in ADD_USERS_FAMILIES:  # they named the file system that was removed: now the adopted one
        assert _volume_ids(local_aws, family) == (fs_id, point_id)
    assert run_cli("plan", "--env", "local").code == 0


def test_duplicates_under_our_names_are_deleted_access_point_mount_target_then_file_system(local_aws, run_cli):
    assert run_cli("apply", "--env", "local").code == 0
    client = local_aws.client("efs")
    fs_id, point_id = _fs_id(local_aws), _point_id(local_aws)
    stray_point = client.create_access_point(ClientToken="again", FileSystemId=fs_id, Tags=OURS,
                                             PosixUser={"Uid": 1, "Gid": 1})["AccessPointId"]
    stray_fs = client.create_file_system(CreationToken="stray", Encrypted=True, KmsKeyId=_key_arn(local_aws),
                                         Tags=OURS)["FileSystemId"]
    subnet = _mount_targets(client, fs_id)[0]["SubnetId"]
    client.create_mount_target(FileSystemId=stray_fs, SubnetId=subnet)

    plan = run_cli("plan", "--env", "local", "--json")
    assert plan.code == 2
    assert [(c["kind"], c["name"], c["action"], c["destroys_data"]) for c in plan.json["changes"]] == [
        ("efs_access_point", f"{AP} ({stray_point})", "delete", False),
        ("efs_mount_target", f"{FS} ({stray_fs})/{_mount_targets(client, stray_fs)[0]['AvailabilityZoneName']}",
         "delete", False),
        ("efs_file_system", f"{FS} ({stray_fs})", "delete", True),
    ]
    assert run_cli("apply", "--env", "local").code == 1  # the file system holds data
    assert run_cli("apply", "--env", "local", "--allow-destroy").code == 0
    assert [f["FileSystemId"] for f in _file_systems(client)] == [fs_id]
    assert [p["AccessPointId"] for p in _access_points(client)] == [point_id]
    assert run_cli("plan", "--env", "local").code == 0
