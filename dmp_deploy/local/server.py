"""The embedded AWS server process: `python -m dmp_deploy.local.server --port P --state-file F`.

Applies the compatibility patches, switches on state-machine execution, serves moto on 127.0.0.1:P (with the
snapshot endpoints of dmp_deploy/local/snapshots.py), seeds what the local account would already have, starts
the stand-in Data API (dmp_deploy/local/data_api.py), then writes the state file that `local status` reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import urllib.request


def enable_state_machine_execution(endpoint: str) -> None:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/config", method="POST",
        data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-file", required=True)
    parser.add_argument("--env", default="local")
    args = parser.parse_args(argv)

    # The state-machine interpreter calls the other services at localhost:$MOTO_PORT.
    os.environ["MOTO_PORT"] = str(args.port)
    # Warnings (a request or delivery IAM refused: logger dmp_deploy.local.iam) go to the server log with a time.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from dmp_deploy.local import moto_compat, snapshots
    from dmp_deploy.config import load_config
    from dmp_deploy.local.data_api import DataApi, embedded_secret
    from dmp_deploy.local import task_runner
    from dmp_deploy.local.seed import seed

    moto_compat.apply()
    server = snapshots.server("127.0.0.1", args.port)
    server.start()
    endpoint = f"http://127.0.0.1:{args.port}"
    enable_state_machine_execution(endpoint)
    config = load_config(args.env)
    seed(endpoint, config)
    # The stand-in Data API the add-users program talks to locally, checking the embedded api token.
    data_api = DataApi(embedded_secret(endpoint, config.environment.region, config.secrets["data_api_auth_token"]))
    data_api.start()
    # The tasks' commands run as local processes (dmp_deploy/local/task_runner.py), their files under the state dir.
    task_runner.configure_for(config, Path(args.state_file).parent / "runner", endpoint, data_api.url)

    state_file = Path(args.state_file)
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "endpoint": endpoint, "port": args.port,
                               "data_api": data_api.url, "region": config.environment.region,
                               "task_runner": str(task_runner.settings().directory) if task_runner.settings() else None,
                               "task_runner_confinement": (task_runner.settings().confinement
                                                           if task_runner.settings() else None),
                               "started": time.time()}))
    tmp.replace(state_file)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    task_runner.shutdown()  # no task's process outlives the server, nor a temporary runner directory
    data_api.stop()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
