"""`python run.py local up|down|status`: the embedded AWS as a background process that outlives commands.

Its state (every resource created in it) lasts until `local down`. Any `--env local` command starts it when
it is not running. The state file lives in $DMP_LOCAL_DIR (default: .dmp-local/ in the repository root).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from dmp_deploy.errors import UserError

ROOT = Path(__file__).resolve().parent.parent.parent
START_TIMEOUT_S = 60


def state_dir() -> Path:
    return Path(os.environ.get("DMP_LOCAL_DIR") or ROOT / ".dmp-local")


def _state_file() -> Path:
    return state_dir() / "server.json"


@contextmanager
def _lock():
    state_dir().mkdir(parents=True, exist_ok=True)
    with open(state_dir() / "server.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _responds(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/config", timeout=2) as response:
            return response.status < 500
    except OSError:
        return False


def status() -> dict:
    """{"running": bool, "endpoint": ..., "data_api": ..., "region": ..., "pid": ...}; never starts anything.
    `data_api` is the stand-in Data API's URL (dmp_deploy/local/data_api.py)."""
    try:
        state = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return {"running": False, "endpoint": None, "data_api": None, "region": None, "state_dir": str(state_dir())}
    running = _alive(state["pid"]) and _responds(state["endpoint"])
    return {"running": running, "endpoint": state["endpoint"], "data_api": state.get("data_api"),
            "region": state["region"], "pid": state["pid"], "state_dir": str(state_dir())}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def up(env: str = "local") -> dict:
    with _lock():
        current = status()
        if current["running"]:
            return current
        _state_file().unlink(missing_ok=True)
        port = _free_port()
        log_path = state_dir() / "server.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "dmp_deploy.local.server", "--port", str(port),
                 "--state-file", str(_state_file()), "--env", env],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise UserError(f"the embedded AWS exited with code {process.returncode} while starting; "
                                f"see {log_path}")
            current = status()
            if current["running"]:
                return current
            time.sleep(0.1)
        process.terminate()
        raise UserError(f"the embedded AWS did not start within {START_TIMEOUT_S}s; see {log_path}")


def down() -> dict:
    with _lock():
        current = status()
        try:
            pid = json.loads(_state_file().read_text())["pid"]
        except (OSError, ValueError, KeyError):
            pid = None
        if pid and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not _alive(pid):
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
        _state_file().unlink(missing_ok=True)
        return {"running": False, "was_running": current["running"], "endpoint": None,
                "region": current.get("region")}


def ensure(env: str = "local") -> dict:
    current = status()
    return current if current["running"] else up(env)
