"""The deploy lock: a lease in the state bucket taken with conditional writes."""

import socket
import subprocess
import sys
import threading
import time

import pytest

from dmp_deploy import lock as deploy_lock
from dmp_deploy.aws import Aws
from dmp_deploy.config import load_config
from dmp_deploy.errors import CorruptState
from dmp_deploy.lock import DeployLock, LockHeld, LockLost
from dmp_deploy.state_store import StateStore


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def store(local_aws):
    aws = Aws(local_aws.region, endpoint_url=local_aws.endpoint,
              credentials={"aws_access_key_id": "local", "aws_secret_access_key": "local"})
    s = StateStore(load_config("local"), aws)
    s.ensure()
    return s


def make(store, holder, clock, lease=60, wait=30):
    return DeployLock(store, holder, "apply", lease_seconds=lease, wait_seconds=wait, clock=clock, sleep=clock.sleep)


def test_state_bucket_is_private_encrypted_and_versioned(store, local_aws):
    s3 = local_aws.client("s3")
    assert s3.get_bucket_versioning(Bucket=store.bucket)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=store.bucket)["PublicAccessBlockConfiguration"].values())
    rules = s3.get_bucket_encryption(Bucket=store.bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    calls_before = store.aws.stats.total_mutating
    store.ensure()  # idempotent: no mutating call the second time
    assert store.aws.stats.total_mutating == calls_before


def test_second_holder_waits_then_fails_naming_the_holder(store):
    clock = Clock()
    first = make(store, "arn:aws:iam::123456789012:user/alice", clock)
    first.acquire()
    second = make(store, "arn:aws:iam::123456789012:user/bob", clock, wait=30)
    with pytest.raises(LockHeld) as err:
        second.acquire()
    assert "user/alice" in str(err.value) and "lock release" in str(err.value)
    assert clock.now >= 1_000_030  # it waited the whole timeout
    lease, _ = deploy_lock.read(store)
    assert lease.holder.endswith("user/alice")


def test_released_lock_is_taken_by_the_next(store):
    clock = Clock()
    first = make(store, "alice", clock)
    first.acquire()
    first.release()
    second = make(store, "bob", clock)
    second.acquire()
    assert deploy_lock.read(store)[0].holder == "bob"


def test_expired_lease_is_taken_over_and_the_old_holder_notices(store):
    clock = Clock()
    crashed = make(store, "ci-job-that-died", clock, lease=60)
    crashed.acquire()
    clock.now += 61
    successor = make(store, "bob", clock)
    successor.acquire()
    assert deploy_lock.read(store)[0].holder == "bob"
    crashed.renew()  # the old holder comes back to life: its If-Match renewal fails
    with pytest.raises(LockLost):
        crashed.check()
    assert deploy_lock.read(store)[0].holder == "bob"


def test_renewal_extends_the_lease(store):
    clock = Clock()
    holder = make(store, "alice", clock, lease=60)
    holder.acquire()
    clock.now += 50
    holder.renew()
    clock.now += 50  # 100 s after start: past the first expiry, within the renewed one
    with pytest.raises(LockHeld):
        make(store, "bob", clock, wait=0).acquire()


def test_only_one_of_two_simultaneous_takers_wins(store):
    results = []
    barrier = threading.Barrier(2)

    def take(name):
        barrier.wait()
        try:
            DeployLock(store, name, "apply", lease_seconds=60, wait_seconds=0).acquire()
            results.append(name)
        except LockHeld:
            results.append("held")

    threads = [threading.Thread(target=take, args=(n,)) for n in ("a", "b")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(results) in (["a", "held"], ["b", "held"])


def test_lock_commands(store, run_cli):
    assert "is free" in run_cli("lock", "status", "--env", "local").stdout
    DeployLock(store, "arn:aws:sts::123456789012:assumed-role/ci/job-42", "apply", 60, 0).acquire()
    status = run_cli("lock", "status", "--env", "local", "--json")
    assert status.code == 0 and status.json["held"] and status.json["lease"]["holder"].endswith("job-42")
    refused = run_cli("lock", "release", "--env", "local")  # a live lease: only with --force
    assert refused.code == 1 and "job-42" in refused.stderr and "--force" in refused.stderr
    assert run_cli("lock", "status", "--env", "local", "--json").json["held"] is True
    released = run_cli("lock", "release", "--env", "local", "--force")
    assert released.code == 0 and "job-42" in released.stdout
    assert run_cli("lock", "status", "--env", "local", "--json").json["held"] is False


def _put_lease(store, **fields):
    lease = {"holder": "arn:aws:sts::123456789012:assumed-role/ci/job-7", "host": "elsewhere", "pid": 1,
             "command": "apply", "started": time.time() - 10, "expires": time.time() + 300, **fields}
    store.put_json(deploy_lock.KEY, lease)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_an_expired_lease_is_released_without_force(store, run_cli):
    _put_lease(store, expires=time.time() - 1)
    released = run_cli("lock", "release", "--env", "local")
    assert released.code == 0 and "job-7" in released.stdout
    assert deploy_lock.read(store) == (None, None)


def test_a_lease_whose_holder_died_on_this_host_is_taken_over_at_once(store):
    _put_lease(store, host=socket.gethostname(), pid=_dead_pid())  # live for 300 s more, but its process is gone
    lock = DeployLock(store, "me", "apply", lease_seconds=60, wait_seconds=0)
    lock.acquire()
    assert deploy_lock.read(store)[0].holder == "me"


def test_a_lease_of_a_dead_pid_on_another_host_is_not_taken_over(store):
    _put_lease(store, host="another-host", pid=_dead_pid())  # that pid means nothing here
    with pytest.raises(LockHeld, match="job-7"):
        DeployLock(store, "me", "apply", lease_seconds=60, wait_seconds=0).acquire()


@pytest.mark.parametrize("body", [b"garbage{", b'{"owner": "old-schema", "until": 12}', b"[1, 2]",
                                  b'{"holder": "x", "host": "h", "pid": "12", "command": "apply", "started": 1, '
                                  b'"expires": 2}'])
def test_a_corrupt_lock_object_is_named_and_lock_release_force_removes_it(store, run_cli, body):
    store.aws.call("s3", "put_object", Bucket=store.bucket, Key=deploy_lock.KEY, Body=body)
    with pytest.raises(CorruptState, match=r"s3://.*/locks/deploy.json cannot be read: .*lock release --env local "
                                           r"--force"):
        DeployLock(store, "me", "apply", lease_seconds=60, wait_seconds=0).acquire()
    status = run_cli("lock", "status", "--env", "local", "--json")
    assert status.code == 1 and status.json["error"]["kind"] == "state"
    assert "locks/deploy.json" in status.json["error"]["message"]
    assert run_cli("lock", "release", "--env", "local").code == 1  # not without --force
    released = run_cli("lock", "release", "--env", "local", "--force")
    assert released.code == 0 and "unreadable" in released.stdout
    DeployLock(store, "me", "apply", lease_seconds=60, wait_seconds=0).acquire()  # free again


# --- a plan made before the lock stands when the lock did not change hands (lock.observe, DeployLock.undisturbed) --


def test_release_leaves_a_released_marker_and_every_release_a_new_etag(store):
    clock = Clock()
    seen = []
    for holder in ("alice", "bob"):
        with make(store, holder, clock):
            pass
        observed = deploy_lock.observe(store)
        assert observed.lease is None and observed.etag is not None
        seen.append(observed.etag)
    assert seen[0] != seen[1], "two releases left the same ETag: a take-and-give-back in between would go unseen"
    assert deploy_lock.read(store) == (None, None)


def test_taken_from_the_state_seen_before_planning_is_undisturbed(store):
    clock = Clock()
    with make(store, "alice", clock):
        pass
    seen = deploy_lock.observe(store)
    lock = make(store, "bob", clock)
    lock.acquire(seen)
    assert lock.undisturbed and deploy_lock.read(store)[0].holder == "bob"


def test_taken_after_someone_else_held_it_in_between_is_not_undisturbed(store):
    clock = Clock()
    with make(store, "alice", clock):
        pass
    seen = deploy_lock.observe(store)
    with make(store, "carol", clock):  # another run takes and gives back the lock after our plan's reads
        pass
    assert deploy_lock.observe(store).lease is None
    lock = make(store, "bob", clock)
    lock.acquire(seen)
    assert not lock.undisturbed and deploy_lock.read(store)[0].holder == "bob"


@pytest.mark.parametrize("before", ["never taken", "released by hand", "held"])
def test_no_released_marker_seen_means_not_undisturbed(store, before):
    clock = Clock()
    if before == "released by hand":
        with make(store, "alice", clock):
            pass
        store.delete(deploy_lock.KEY)
    if before == "held":
        _put_lease(store, expires=time.time() - 1)  # expired: taken over
    seen = deploy_lock.observe(store)
    lock = DeployLock(store, "bob", "apply", lease_seconds=60, wait_seconds=0)  # real time: the lease expired
    lock.acquire(seen)
    assert not lock.undisturbed and deploy_lock.read(store)[0].holder == "bob"


def test_a_malformed_released_marker_is_named(store):
    store.put_json(deploy_lock.KEY, {"released": {"by": "x"}})
    with pytest.raises(CorruptState, match="locks/deploy.json cannot be read: .*is missing"):
        deploy_lock.observe(store)
