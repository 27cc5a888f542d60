"""The embedded ECS's local task runner: RunTask of a runnable task runs its containers' commands as local processes.

moto stores a task and runs nothing. For a task whose every container is runnable (`runnable()`: its image is in
config/local.toml's `[local_runner] runnable_images` and its entry point, or command, starts with one of the
programs listed for that image), `TaskRun` runs each container's `entryPoint` + `command` as a local process, as
ECS would run it in the image:

- **environment**: the container's `environment`, then the RunTask overrides' (overrides win), then its `secrets`,
  resolved inside the embedded AWS's own process from moto's SSM Parameter Store and Secrets Manager backends
  (never logged, never in the task's description). Nothing of the server's own environment is passed on.
- **AWS**: `AWS_ENDPOINT_URL` is the embedded AWS, and the credentials are the task role's, from the embedded STS's
  AssumeRole of the definition's `taskRoleArn` (session name: the task id), so every call the process makes is
  signed by that role's temporary keys (and judged as the role, wherever the embedded AWS evaluates IAM).
  Shared config and credentials files are off (`/dev/null`), so a developer's ~/.aws is never used.
- **EFS volumes**: one local directory per access point, `<efs_root>/<file system id>/<access point root path>`,
  created on first mount with the access point's `CreationInfo` (owner, group, mode), as EFS does. The container
  path (`/mnt/add-users`) appears literally in the tasks' shell scripts, so every occurrence of a mount point's
  `containerPath` as a whole path (not followed by a letter, digit, `_`, `.` or `-`) in the entry point, command,
  environment values and working directory is rewritten to the local directory (`rewrite_paths`). When the server
  runs as root (CI does) each container runs as the access point's POSIX uid/gid (none named: nobody, 65534) with
  no supplementary groups. Where the machine allows it (probed once by `configure()`: util-linux's unshare and
  setpriv, CAP_SYS_ADMIN), that is in a private mount namespace (`unshare`, `setpriv`) where a read-only mount
  point is a read-only bind mount of its directory: a write fails with EROFS, whatever the file modes (`confine`,
  which also lets that user reach the tool's .venv and Python when they lie below a directory only root may
  enter). Where it does not, Python starts the process as that user and read-only is not enforced (a warning is
  logged; `Settings.confinement` says which). As any other user, the process runs as the server's user and
  neither is enforced (said in docs/architecture.md).
- **Service URLs**: a value starting with an internal URL of the environment (the api's Cloud Map name, which does not
  resolve here) is rewritten to the local service standing in for it (the local Data API).
- **Logs**: each line of stdout and stderr is a log event in the container's `awslogs` group, stream
  `<awslogs-stream-prefix>/<container name>/<task id>`, as ECS names it, written to moto's CloudWatch Logs.
- **Exit**: the task stays RUNNING while an essential container's main process runs (moto_compat holds its
  lifecycle); when it exits, whatever else it started (its process group) is killed, as when a container's PID 1
  exits, the others are stopped (SIGTERM, then SIGKILL after `stopTimeout`), and the task stops with each
  container's exit code (128 + signal for a killed one, as Docker reports it). StopTask stops the processes; the
  server's shutdown (`shutdown()`) and a reset kill them. A run is forgotten once its task is STOPPED and read.
- **Files**: `configure()` empties the runner's `efs/` and `tasks/` (a new embedded AWS has none of their file
  systems or tasks); a task's HOME goes when it ends.
  A task that cannot start (a missing log group, secret or executable, a refused mount) stops with
  `TaskFailedToStart` and a reason in ECS's words, running nothing.

Not emulated: images (programs come from the local machine), networking and security groups, CPU and memory
limits, health checks, `dependsOn` and the execution role. A mount is authorised as EFS does it for an
`iam: ENABLED` volume (`authorize_mount`, evaluated by iam_enforcement.py) before anything runs. Everything here
runs inside the embedded AWS's process: moto_compat wires it (`ecs_runs_the_containers_commands`), server.py and
the tests' conftest `configure()` it (via `configure_for`) and `shutdown()` it.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmp_deploy.local import iam_enforcement
from dmp_deploy.local.iam_enforcement import MountRefused

log = logging.getLogger(__name__)
STOP_TIMEOUT_SECONDS = 30  # ECS's default stopTimeout: SIGTERM, then SIGKILL
MAX_EVENT_BYTES = 256 * 1024 - 26  # CloudWatch Logs' limit for one event (its size counts 26 bytes of overhead)
# Local directories are written into shell commands by rewrite_paths: only characters no shell treats specially.
SAFE_PATH = re.compile(r"/[A-Za-z0-9/._-]*")


class Unreachable(ValueError):
    """The runner's directory lies below one the tasks' POSIX users may not enter."""


def authorize_mount(task_role_arn: str | None, file_system_id: str, access_point_id: str | None,
                    read_only: bool) -> None:
    """Whether a task whose role is `task_role_arn` may mount `access_point_id` of `file_system_id` (read-only or
    read-write), as EFS decides at mount time for a volume with `authorizationConfig.iam = ENABLED`: the embedded
    AWS's IAM enforcement (dmp_deploy/local/iam_enforcement.py) evaluates elasticfilesystem:ClientMount, and
    ClientWrite for read-write, against the role's identity policies and the file system policy, and raises
    `MountRefused` naming the role and the action it lacks."""
    iam_enforcement.authorize_mount(task_role_arn or "", file_system_id, access_point_id or "", read_only)


@dataclass(frozen=True)
class Settings:
    runnable_images: dict[str, tuple[str, ...]]  # image repository -> programs the local machine provides
    directory: Path  # efs/<file system id>/<access point root>: the access points; tasks/<task id>: HOME
    endpoint: str  # the embedded AWS, as the processes reach it
    service_urls: dict[str, str] = field(default_factory=dict)  # internal URL -> the local stand-in's URL
    bin_dir: Path = Path(sys.executable).parent  # the tool's .venv/bin: aws, python
    # How the tasks are confined (`confinement()`): NAMESPACE (root, unshare works: users and read-only mounts
    # enforced), USER (root, unshare refused: users only), NONE (not root: the server's user, nothing enforced).
    confinement: str = "none"

    @property
    def efs_root(self) -> Path:
        return self.directory / "efs"

    @property
    def tasks_root(self) -> Path:
        return self.directory / "tasks"

    @property
    def path(self) -> str:
        return f"{self.bin_dir}:/usr/local/bin:/usr/bin:/bin"


NAMESPACE, USER, NONE = "namespace", "user", "none"
NOBODY = (65534, 65534)  # as root, a task whose mounts name no POSIX user runs as nobody, never as host root
_settings: Settings | None = None
_fallback: list[Path] = []  # temporary directories configure_for made instead of one it could not use
_runs: dict[str, "TaskRun"] = {}  # task ARN -> its run (kept out of moto's models: snapshots deep-copy those)
_runs_lock = threading.Lock()


def configure(runnable_images: dict[str, Any], directory: Path, endpoint: str,
              service_urls: dict[str, str] | None = None, bin_dir: Path | None = None) -> None:
    """Switch the runner on in this process (the embedded AWS's): `runnable_images` from config/local.toml's
    `[local_runner]`; `directory` holds the access points' local directories (`efs/`) and the tasks' HOMEs
    (`tasks/`), created 0711 so that the access points' POSIX users reach their own directories below them;
    `service_urls` maps an internal URL of the environment to the local stand-in's; `endpoint` is the embedded
    AWS. Refuses a directory the tasks' users could not reach, or whose path a shell would misread. Empties `efs/`
    and `tasks/` (nothing of an earlier server stays) and, as root, probes once whether tasks can be confined in a
    mount namespace (`probe_confinement`), recording the mode in `settings().confinement`."""
    global _settings
    directory = Path(directory).resolve()
    if not SAFE_PATH.fullmatch(str(directory)):
        raise ValueError(f"the local task runner's directory {directory} may only hold letters, digits, '/', '.', "
                         f"'_' and '-': it is written into the tasks' shell commands. Set DMP_LOCAL_DIR to such "
                         f"a directory.")
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o711)
    # The embedded AWS starts empty: an earlier server's access point directories (user lists, after an aborted
    # run) and tasks' HOMEs belong to file systems and tasks that no longer exist. Nothing of them may stay.
    for sub in (directory / "efs", directory / "tasks"):
        shutil.rmtree(sub, ignore_errors=True)
        sub.mkdir()
        sub.chmod(0o711)
    if os.geteuid() == 0:  # the tasks run as their access points' users: every parent must let them through
        closed = [p for p in directory.parents if not os.stat(p).st_mode & 0o001]
        if closed:
            raise Unreachable(f"the local task runner's directory {directory} is below {closed[0]}, which other "
                             f"users may not enter (mode {oct(os.stat(closed[0]).st_mode & 0o777)}): the tasks, "
                             f"running as their EFS access points' users, could not reach their files. Set "
                             f"DMP_LOCAL_DIR to a directory below /tmp, for instance.")
    bin_dir = Path(bin_dir) if bin_dir else Settings.bin_dir
    confinement = NONE
    if os.geteuid() == 0:
        failure = probe_confinement(directory, bin_dir)
        confinement = NAMESPACE if failure is None else USER
        if failure is not None:
            log.warning("dmp-deploy local task runner: tasks cannot run in a private mount namespace here (%s): "
                        "they run as their access points' users, but read-only mounts are NOT enforced and the "
                        "tool's Python must be reachable by those users. The namespace needs util-linux's unshare "
                        "and setpriv and CAP_SYS_ADMIN (a container without it, or confined by AppArmor, refuses "
                        "it).", failure)
    _settings = Settings({image: tuple(programs) for image, programs in runnable_images.items()}, directory,
                         endpoint, dict(service_urls or {}), bin_dir, confinement)
    closed = unreachable_tools(_settings)
    if closed is not None:
        log.warning("dmp-deploy local task runner: the tool's .venv or Python lies below %s, which the tasks' users "
                    "may not enter, and without a mount namespace nothing can expose it: tasks running aws or "
                    "python will fail to start them. Install the tool (and its Python) where every user may read "
                    "it, or give the server CAP_SYS_ADMIN.", closed)


def unreachable_tools(settings: Settings) -> Path | None:
    """In the `user` mode, the directory other users may not enter that hides the tool's .venv or Python from the
    tasks' users (a pyenv under /root), or None. In the `namespace` mode `confine` exposes them; in `none` the tasks
    run as the server's user."""
    if settings.confinement != USER:
        return None
    return next((c for c in map(_closed_above, tool_paths(settings.bin_dir)) if c is not None), None)


def probe_confinement(directory: Path, bin_dir: Path) -> str | None:
    """Whether `confine()` works on this machine: `/bin/true` confined as nobody with a read-only mount. None if
    it does, else why not (unshare or setpriv missing, or the mount namespace refused: no CAP_SYS_ADMIN)."""
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="probe-", dir=directory))
    read_only = scratch / "read-only"
    try:
        scratch.chmod(0o755)
        read_only.mkdir()
        argv = confine(["/bin/true"], [str(read_only)], NOBODY, tool_paths(bin_dir), scratch)
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"exit {result.returncode}: {detail[-1] if detail else 'no message'}"
    return None


def configure_for(config, directory: Path, endpoint: str, data_api_url: str) -> bool:
    """`configure()` from an environment's configuration: its `[local_runner]` table (none: nothing runs), the
    api's internal URL standing for the local Data API. Whether the runner is on."""
    from dmp_deploy.names import internal_url

    if config.local_runner is None:
        return False
    services = {internal_url(config, "api"): data_api_url}
    try:
        configure(config.local_runner.runnable_images, directory, endpoint, services)
    except ValueError as unusable:  # Unreachable (below a directory only root may enter), or a path with a space
        import tempfile

        fallback = Path(tempfile.mkdtemp(prefix="dmp-local-runner-"))
        _fallback.append(fallback)
        log.warning("%s Using %s instead.", unusable, fallback)
        configure(config.local_runner.runnable_images, fallback, endpoint, services)
    return True


def shutdown() -> None:
    """The embedded AWS stops: every task's processes killed, and a temporary directory configure_for chose
    removed with whatever the tasks left in it."""
    stop_all()
    while _fallback:
        shutil.rmtree(_fallback.pop(), ignore_errors=True)


def settings() -> Settings | None:
    return _settings


def image_repository(image: str) -> str:
    """The image without its tag or digest: `registry:5000/repo:tag` -> `registry:5000/repo`."""
    image = image.split("@", 1)[0]
    head, _, last = image.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def _argv(container: dict, override: dict | None = None) -> list[str]:
    command = (override or {}).get("command") or container.get("command") or []
    return [*(container.get("entryPoint") or []), *command]


def runnable(container_definitions: list[dict]) -> bool:
    """Every container's image is runnable and its first word is one of that image's local programs."""
    if _settings is None or not container_definitions:
        return False
    for container in container_definitions:
        programs = _settings.runnable_images.get(image_repository(container.get("image") or ""))
        argv = _argv(container)
        if not programs or not argv or argv[0] not in programs:
            return False
    return True


def rewrite_paths(value: str, mounts: dict[str, str]) -> str:
    """Each mount's container path, where it appears as a whole path (not `/mnt/add-users-x` for
    `/mnt/add-users`), replaced with its local directory."""
    for container_path, local in sorted(mounts.items(), key=lambda item: -len(item[0])):
        pattern = re.compile(r"(?<![\w.-])" + re.escape(container_path.rstrip("/")) + r"(?![\w.-])")
        value = pattern.sub(lambda _: local, value)
    return value


def rewrite_urls(value: str, service_urls: dict[str, str]) -> str:
    for internal, local in service_urls.items():
        if value.startswith(internal):
            return local + value[len(internal):]
    return value


def run_of(task_arn: str) -> "TaskRun | None":
    return _runs.get(task_arn)


def start(task, definition) -> "TaskRun":
    """Run `task` (moto's model) of `definition` (moto's task definition): returns at once, the containers run in
    the background; `run_of(task.task_arn)` follows them."""
    run = TaskRun(task, definition, _settings)
    with _runs_lock:
        _runs[task.task_arn] = run
    run.start()
    return run


def stop(task_arn: str) -> None:
    """StopTask of a task that runs locally: its processes are stopped (its stoppedReason is moto's)."""
    run = _runs.get(task_arn)
    if run is not None:
        run.stop()


def forget(task_arn: str) -> None:
    """The task has STOPPED and its exit codes are read: its run is dropped."""
    with _runs_lock:
        _runs.pop(task_arn, None)


def stop_all() -> None:
    """On a reset of the embedded AWS: every process stopped, every run forgotten."""
    with _runs_lock:
        runs = list(_runs.values())
        _runs.clear()
    for run in runs:
        run.kill()


def tool_paths(bin_dir: Path) -> list[Path]:
    """What a task's POSIX user must reach to run the tool's programs: the virtual environment (bin_dir's parent)
    and the real Python installation it points to."""
    interpreter = Path(os.path.realpath(bin_dir / "python"))
    return [bin_dir.parent.resolve(), interpreter.parent.parent]


def _closed_above(path: Path) -> Path | None:
    """The topmost directory above `path` that other users may not enter (e.g. /root, 0700), or None."""
    return next((d for d in reversed(path.parents) if not os.stat(d).st_mode & 0o001), None)


# Run inside a private mount namespace, as root, before dropping to the POSIX user. Four lists, each preceded by
# its length: the read-only mount points (bound read-only onto themselves); the exposed paths with their holding
# directories (bound aside); the closed directories (covered by a tmpfs, in this namespace only); the same pairs
# again (each path made in the tmpfs and its bind moved back onto it). Then the command.
CONFINE_SCRIPT = """set -e
n=$1; shift; while [ "$n" -gt 0 ]; do mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"; shift; n=$((n-1)); done
n=$1; shift; while [ "$n" -gt 0 ]; do mount --bind "$1" "$2"; shift 2; n=$((n-1)); done
n=$1; shift; while [ "$n" -gt 0 ]; do mount -t tmpfs -o mode=0755 tmpfs "$1"; shift; n=$((n-1)); done
n=$1; shift; while [ "$n" -gt 0 ]; do mkdir -p "$1"; mount --move "$2" "$1"; shift 2; n=$((n-1)); done
exec "$@"
"""


def confine(argv: list[str], read_only: list[str], user: tuple[int, int] | None, expose: list[Path],
            scratch: Path) -> list[str]:
    """`argv` run as root in a private mount namespace (`unshare`) where each of `read_only` is a read-only bind
    mount of itself (a write fails with EROFS), then as `user` (uid, gid; no supplementary groups: `setpriv`).
    Each path of `expose` that lies below a directory other users may not enter (a pyenv under /root, 0700) is
    made reachable in the namespace only: that directory is covered by a tmpfs holding just the exposed paths.
    Nothing changes outside the namespace."""
    pairs: list[str] = []
    covered: list[str] = []
    for index, path in enumerate(expose if user is not None else []):
        closed = _closed_above(path)
        if closed is not None:
            hold = scratch / f".expose-{index}"
            hold.mkdir(exist_ok=True)
            pairs += [str(path), str(hold)]
            covered += [str(closed)] if str(closed) not in covered else []
    as_user = ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", "--"] if user else []
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", CONFINE_SCRIPT, "sh",
            str(len(read_only)), *read_only, str(len(pairs) // 2), *pairs, str(len(covered)), *covered,
            str(len(pairs) // 2), *pairs, *as_user, *argv]


# --- one task ------------------------------------------------------------------------------------------------


class StartFailure(Exception):
    """The task cannot start: its reason, in ECS's words, becomes the stopped task's stoppedReason."""


@dataclass
class _Container:
    name: str
    essential: bool
    stop_timeout: int
    log_group: str | None = None
    log_stream: str | None = None
    process: subprocess.Popen | None = None
    exit_code: int | None = None
    readers: list[threading.Thread] = field(default_factory=list)
    logs: Any = None  # moto's CloudWatch Logs backend of the log group


class TaskRun:
    """The local processes of one task, started by `start()`; `done` once every container has ended."""

    def __init__(self, task, definition, settings: Settings) -> None:
        self.task_arn = task.task_arn
        self.task_id = task.id
        self.account_id = task._account_id
        self.region = task.region_name
        self.overrides = task.overrides or {}
        self.definition = definition
        self.settings = settings
        self.containers: list[_Container] = []
        self.start_failure: str | None = None
        self.finished = threading.Event()
        self.scratch: Path | None = None
        self._log_lock = threading.Lock()

    @property
    def done(self) -> bool:
        return self.finished.is_set()

    def exit_codes(self) -> dict[str, int | None]:
        return {c.name: c.exit_code for c in self.containers}

    # -- starting

    def start(self) -> None:
        try:
            launches = self._prepare()
        except StartFailure as failure:
            self.start_failure = str(failure)
            self._finish()
            return
        except Exception as exc:  # a bug here must fail the task, not RunTask (the server log has the traceback)
            log.exception("dmp-deploy local task runner: task %s could not start", self.task_id)
            self.start_failure = f"ResourceInitializationError: the local task runner failed: {type(exc).__name__}"
            self._finish()
            return
        for container, argv, env, cwd, user in launches:
            # Without a mount namespace, root still drops to the task's user (no supplementary groups).
            as_user = ({"user": user[0], "group": user[1], "extra_groups": []}
                       if user is not None and self.settings.confinement == USER else {})
            try:
                container.process = subprocess.Popen(
                    argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, start_new_session=True, **as_user)
            except OSError as exc:
                self.start_failure = (f"CannotStartContainerError: container {container.name}: "
                                      f"{exc.strerror or exc}")
                self._terminate_all()
                self._finish()
                return
        for container in self.containers:
            for stream in (container.process.stdout, container.process.stderr):
                reader = threading.Thread(target=self._forward, args=(container, stream), daemon=True,
                                          name=f"task-{self.task_id}-{container.name}-log")
                reader.start()
                container.readers.append(reader)
            threading.Thread(target=self._wait, args=(container,), daemon=True,
                             name=f"task-{self.task_id}-{container.name}").start()

    def _prepare(self) -> list[tuple[_Container, list[str], dict[str, str], str, tuple[int, int] | None]]:
        definitions = self.definition.container_definitions
        overrides = {o.get("name"): o for o in self.overrides.get("containerOverrides") or []}
        role_arn = getattr(self.definition, "task_role_arn", None)
        volumes = {v["name"]: v for v in self.definition.volumes or []}
        self.scratch = self.settings.tasks_root / self.task_id  # HOME and working directory
        self.scratch.mkdir(mode=0o755, exist_ok=True)
        credentials = self._task_role_credentials(role_arn) if role_arn else {}
        launches = []
        for definition in definitions:
            name = definition["name"]
            override = overrides.get(name) or {}
            container = _Container(name, definition.get("essential", True),
                                   int(definition.get("stopTimeout") or STOP_TIMEOUT_SECONDS))
            self._open_log_stream(container, definition)
            mounts, read_only, user = self._mounts(definition, volumes, role_arn)
            if os.geteuid() == 0:
                user = user or NOBODY  # never host root
                os.chown(self.scratch, *user)
            env = {"PATH": self.settings.path, "HOME": str(self.scratch), "LANG": "C.UTF-8",
                   "AWS_ENDPOINT_URL": self.settings.endpoint, "AWS_REGION": self.region,
                   "AWS_DEFAULT_REGION": self.region, "AWS_CONFIG_FILE": os.devnull,
                   "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
                   "PYTHONDONTWRITEBYTECODE": "1"}
            for pair in [*(definition.get("environment") or []), *(override.get("environment") or [])]:
                env[pair["name"]] = self._local(pair["value"], mounts)
            for secret in definition.get("secrets") or []:
                env[secret["name"]] = self._secret(secret["valueFrom"], name)
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
                env.pop(key, None)  # only the task role's keys: never ones (the deployer's) from the definition
            env.update(credentials)
            argv = [self._local(word, mounts) for word in _argv(definition, override)]
            executable = shutil.which(argv[0], path=env["PATH"]) if argv else None
            if not executable:
                raise StartFailure(f"CannotStartContainerError: container {name}: exec: \"{argv[0] if argv else ''}\":"
                                   f" executable file not found in $PATH")
            argv[0] = executable
            working = definition.get("workingDirectory")
            cwd = self._local(working, mounts) if working else None
            cwd = cwd if cwd and cwd != working else str(self.scratch)  # the image's directories are not here
            launches.append((container, self._confined(argv, read_only, user), env, cwd, user))
            self.containers.append(container)
        return launches

    def _local(self, value: str, mounts: dict[str, str]) -> str:
        return rewrite_urls(rewrite_paths(value, mounts), self.settings.service_urls)

    def _confined(self, argv: list[str], read_only: list[str], user: tuple[int, int] | None) -> list[str]:
        """As root with a mount namespace, each container runs confined (`confine`); as root without one, as its
        user (set by Popen, see `start`); as any other user, as the server's user."""
        if self.settings.confinement != NAMESPACE or user is None:
            return argv
        return confine(argv, read_only, user, tool_paths(self.settings.bin_dir), self.scratch)

    def _task_role_credentials(self, role_arn: str) -> dict[str, str]:
        """The task role's temporary keys, from the embedded STS's AssumeRole (as ECS gets them for the task)."""
        from moto.utilities.utils import get_partition
        from moto.sts.models import sts_backends

        try:
            iam_enforcement.check_task_role_trust(role_arn)
        except iam_enforcement.AccessDenied as refused:
            raise StartFailure(f"ECS was unable to assume the role '{role_arn}' that was provided for this task: "
                               f"{refused.reason}") from None
        sts = sts_backends[self.account_id][get_partition(self.region)]
        role = sts.assume_role(region_name=self.region, role_session_name=self.task_id, role_arn=role_arn,
                               policy=None, duration=3600, external_id=None)
        return {"AWS_ACCESS_KEY_ID": role.access_key_id, "AWS_SECRET_ACCESS_KEY": role.secret_access_key,
                "AWS_SESSION_TOKEN": role.session_token}

    def _secret(self, value_from: str, container: str) -> str:
        """A `secrets` entry's value from moto's backends: an SSM parameter (name or ARN) or a Secrets Manager
        secret (ARN, optionally `:json-key:version-stage:version-id`). The value is never logged."""
        failure = StartFailure(f"ResourceInitializationError: unable to pull secrets or registry auth: container "
                               f"{container}: unable to retrieve secret {value_from}: not found")
        if ":secretsmanager:" in value_from:
            import json

            from moto.secretsmanager.models import secretsmanager_backends

            parts = value_from.split(":")
            arn, key, stage, version = ":".join(parts[:7]), *(parts[7:10] + [""] * 3)[:3]
            try:
                answer = secretsmanager_backends[self.account_id][self.region].get_secret_value(
                    arn, version or None, stage or None)
            except Exception:
                raise failure from None
            text = answer.get("SecretString") or ""
            if not key:
                return text
            try:
                return str(json.loads(text)[key])
            except (ValueError, KeyError, TypeError):
                raise failure from None
        from moto.ssm.models import ssm_backends

        name = value_from.split(":parameter", 1)[1] if value_from.startswith("arn:") else value_from
        parameter = ssm_backends[self.account_id][self.region].get_parameter(name)
        if parameter is None:
            raise failure
        return parameter.decrypt(parameter.value) or ""

    def _open_log_stream(self, container: _Container, definition: dict) -> None:
        logging = definition.get("logConfiguration") or {}
        if logging.get("logDriver") != "awslogs":
            return  # no awslogs: the output goes nowhere, as with ECS's "none"
        from moto.logs.models import logs_backends

        options = logging.get("options") or {}
        group, prefix = options.get("awslogs-group"), options.get("awslogs-stream-prefix")
        region = options.get("awslogs-region") or self.region
        backend = logs_backends[self.account_id][region]
        if group not in backend.groups:
            raise StartFailure(f"ResourceInitializationError: failed to validate logger args: create stream has "
                               f"been retried 1 times: failed to create Cloudwatch log stream: "
                               f"ResourceNotFoundException: The specified log group does not exist: {group}")
        stream = f"{prefix}/{container.name}/{self.task_id}" if prefix else self.task_id
        backend.create_log_stream(group, stream)
        container.log_group, container.log_stream = group, stream
        container.logs = backend

    def _mounts(self, definition: dict, volumes: dict, role_arn: str | None):
        """{container path: local directory}, the read-only local directories, and the POSIX user to run as."""
        from moto.efs.models import efs_backends

        mounts, read_only, user = {}, [], None
        for point in definition.get("mountPoints") or []:
            volume = volumes.get(point.get("sourceVolume"))
            efs = (volume or {}).get("efsVolumeConfiguration")
            if not efs:
                continue  # bind mounts and Docker volumes: not emulated
            backend = efs_backends[self.account_id][self.region]
            file_system_id = efs["fileSystemId"]
            access_point_id = (efs.get("authorizationConfig") or {}).get("accessPointId")
            if file_system_id not in backend.file_systems_by_id:
                raise StartFailure(f"ResourceInitializationError: failed to invoke EFS utils commands to set up EFS "
                                   f"volumes: file system {file_system_id} does not exist")
            access_point = backend.access_points.get(access_point_id) if access_point_id else None
            if access_point_id and (access_point is None or access_point.file_system_id != file_system_id):
                raise StartFailure(f"ResourceInitializationError: failed to invoke EFS utils commands to set up EFS "
                                   f"volumes: access point {access_point_id} of {file_system_id} does not exist")
            is_read_only = bool(point.get("readOnly"))
            try:
                if (efs.get("authorizationConfig") or {}).get("iam") == "ENABLED":  # else EFS asks no IAM
                    authorize_mount(role_arn, file_system_id, access_point_id, is_read_only)
            except MountRefused as refused:
                raise StartFailure(f"ResourceInitializationError: failed to invoke EFS utils commands to set up EFS "
                                   f"volumes: mount of {access_point_id or file_system_id} refused: "
                                   f"{refused}") from None
            root = (access_point.root_directory if access_point else {}) or {}
            path = root.get("Path") or efs.get("rootDirectory") or "/"
            local = self._access_point_directory(file_system_id, path, root.get("CreationInfo"))
            mounts[point["containerPath"]] = str(local)
            if is_read_only:
                read_only.append(str(local))
            if access_point is not None and access_point.posix_user and user is None:
                user = (int(access_point.posix_user["Uid"]), int(access_point.posix_user["Gid"]))
        return mounts, read_only, user

    def _access_point_directory(self, file_system_id: str, path: str, creation: dict | None) -> Path:
        """The access point's root directory, made as EFS makes it on first mount: with its CreationInfo, or the
        mount fails when there is none and the directory does not exist."""
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise StartFailure(f"ResourceInitializationError: invalid EFS root directory {path}")
        system = self.settings.efs_root / file_system_id
        system.mkdir(mode=0o755, exist_ok=True)
        local = system.joinpath(*parts)
        if local.is_dir():
            return local
        if not creation:
            raise StartFailure(f"ResourceInitializationError: failed to invoke EFS utils commands to set up EFS "
                               f"volumes: mount.nfs4: {path} does not exist on {file_system_id}")
        local.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        local.mkdir()
        if os.geteuid() == 0:
            os.chown(local, int(creation["OwnerUid"]), int(creation["OwnerGid"]))
        local.chmod(int(str(creation.get("Permissions") or "0755"), 8))
        return local

    # -- running

    def _forward(self, container: _Container, stream) -> None:
        """Each line of a container's stdout or stderr, as one log event (as the awslogs driver sends them)."""
        # A line longer than an event is read, and sent, in pieces of at most MAX_EVENT_BYTES: never whole in memory.
        # The decoder keeps a character cut between two pieces for the next one.
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        # (3 bytes under the limit: a character's start held from the previous piece still fits.)
        for raw in iter(lambda: stream.readline(MAX_EVENT_BYTES - 3), b""):
            if container.log_stream is None:
                continue
            line_ends = raw.endswith(b"\n")
            message = decoder.decode(raw[:-1] if line_ends else raw, final=line_ends)
            data = message.encode()
            if len(data) > MAX_EVENT_BYTES:  # only for invalid bytes, each replaced by a 3-byte character
                message = data[:MAX_EVENT_BYTES].decode("utf-8", "ignore")
            if not message and not line_ends:
                continue  # only the start of a character: it goes with the next piece
            with self._log_lock:
                event = {"timestamp": int(time.time() * 1000), "message": message or " "}
                try:
                    container.logs.put_log_events(container.log_group, container.log_stream, [event])
                except Exception:  # the group deleted while the task runs: the lines are lost, as with ECS
                    pass
        rest = decoder.decode(b"", final=True)  # output ending in a cut character, without a newline
        if rest and container.log_stream is not None:
            with self._log_lock:
                try:
                    container.logs.put_log_events(container.log_group, container.log_stream,
                                                  [{"timestamp": int(time.time() * 1000), "message": rest}])
                except Exception:
                    pass
        stream.close()

    def _wait(self, container: _Container) -> None:
        code = container.process.wait()
        # The container's main process ended: so does everything it started (`cmd &`), as when a container's
        # PID 1 exits. Otherwise a background child holding stdout would keep the readers, and the task, running.
        self._signal(container, signal.SIGKILL)
        for reader in container.readers:
            reader.join(timeout=5)  # a process that left the group (setsid) may still hold a pipe: not waited for
        container.exit_code = code if code >= 0 else 128 - code  # killed by a signal: Docker's 128 + signal
        if container.essential:
            self._terminate_all()  # an essential container exited: ECS stops the task's others
        if all(c.exit_code is not None for c in self.containers):
            self._finish()

    def _terminate_all(self) -> None:
        for container in self.containers:
            if container.process is not None and container.exit_code is None:
                self._signal(container, signal.SIGTERM)
                threading.Thread(target=self._kill_after, args=(container,), daemon=True).start()

    def _kill_after(self, container: _Container) -> None:
        try:
            container.process.wait(timeout=container.stop_timeout)
        except subprocess.TimeoutExpired:
            self._signal(container, signal.SIGKILL)

    @staticmethod
    def _signal(container: _Container, sig: int) -> None:
        try:
            os.killpg(container.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> None:
        """StopTask: every container gets SIGTERM, then SIGKILL after its stopTimeout."""
        self._terminate_all()

    def kill(self) -> None:
        """A reset of the embedded AWS: every container killed at once, and waited for."""
        for container in self.containers:
            if container.process is not None and container.exit_code is None:
                self._signal(container, signal.SIGKILL)
        self.finished.wait(timeout=5)

    def _finish(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        self.finished.set()
