"""Command line: `python run.py COMMAND --env ENV ...`. Errors are one message and exit 1, not a traceback."""

from __future__ import annotations

import argparse
import sys
import traceback

import botocore.exceptions

from dmp_deploy import log as logging_setup
from dmp_deploy.commands import (add_users, apply, drift, history, local, lock, plan, render, revert, run_task,
                                  validate)
from dmp_deploy.errors import UserError

COMMANDS = [plan, apply, drift, revert, history, lock, render, validate, local, add_users, run_task]
ERROR = 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py", description="Deploy and operate the Digital Marketplace on "
                                                           "AWS ECS Fargate.")
    p.add_argument("--log-format", choices=["auto", "console", "json"], default="auto",
                   help="logs on stderr: readable on a terminal, JSON lines otherwise (default auto)")
    p.add_argument("--debug", action="store_true", help="debug logs, and a traceback on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(handler=command.run)
    return p


def main(argv: list[str] | None = None) -> int:
    # Global options may come after the command too: `run.py plan --env local --debug`.
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` is a command for a task (`run-task NAME -- COMMAND...`), never our options.
    after = argv[argv.index("--") + 1:] if "--" in argv else None
    argv = argv[:argv.index("--")] if after is not None else argv
    p = parser()
    args = p.parse_args(_hoist_globals(argv))
    if after is not None:
        if not hasattr(args, "task_command"):
            p.error(f"`-- COMMAND` is only for run-task, not {args.command}")
        args.task_command = after
    logging_setup.configure(args.log_format, args.debug)
    try:
        return args.handler(args)
    except UserError as exc:
        _fail(str(exc), args.debug)
    except botocore.exceptions.NoCredentialsError:
        _fail("no AWS credentials found: set AWS_PROFILE or the usual AWS_* variables (or use --env local)",
              args.debug)
    except botocore.exceptions.ClientError as exc:
        err = exc.response.get("Error", {})
        _fail(f"AWS refused {exc.operation_name}: {err.get('Code')}: {err.get('Message')}", args.debug)
    except KeyboardInterrupt:
        _fail("interrupted: run the same command again; apply continues from the live state", args.debug)
    except Exception as exc:  # a bug: say so plainly, and keep the traceback for --debug
        _fail(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", args.debug)
    return ERROR


GLOBAL_FLAGS = {"--debug": 0, "--log-format": 1}


def _hoist_globals(argv: list[str]) -> list[str]:
    front, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in GLOBAL_FLAGS:
            takes = GLOBAL_FLAGS[name] if "=" not in arg else 0
            front.extend(argv[i:i + 1 + takes])
            i += 1 + takes
        else:
            rest.append(arg)
            i += 1
    return front + rest


def _fail(message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc(file=sys.stderr)
    sys.stderr.write(f"error: {message}\n")
