"""Command line: `python run.py COMMAND --env ENV ...`. Errors are one message and exit 1, not a traceback."""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
import traceback

from dmp_deploy import log as logging_setup
from dmp_deploy.commands import failures, output
from dmp_deploy.commands.failures import UsageError

# Command name -> its module in dmp_deploy/commands/, in the order `--help` lists them. Only the module of the
# command that runs is imported (each pulls in what it needs: boto3, the resource kinds, the local AWS ...).
COMMANDS = {"plan": "plan", "apply": "apply", "drift": "drift", "revert": "revert", "history": "history",
            "lock": "lock", "render": "render", "validate": "validate", "local": "local", "add-users": "add_users",
            "run-task": "run_task"}
ERROR = 1


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with `command` (a known command's name), only that command's subparser, so that only
    its module is imported. `--help` and an unknown command get every command."""
    p = Parser(prog="run.py", description="Deploy and operate the Digital Marketplace on AWS ECS Fargate.")
    p.add_argument("--log-format", choices=["auto", "console", "json"], default="auto",
                   help="logs on stderr: readable on a terminal, JSON lines otherwise (default auto)")
    p.add_argument("--debug", action="store_true", help="debug logs, and a traceback on errors")
    p.add_argument("--no-color", action="store_true", help="no colour in plans and drift (also: NO_COLOR=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if command is None or name == command:
            module = importlib.import_module(f"dmp_deploy.commands.{module_name}")
            module.add_parser(sub).set_defaults(handler=module.run)
    return p


def _command_of(argv: list[str]) -> str | None:
    """The command named on the command line (after the global options `_hoist_globals` moved to the front), or
    None when there is none yet or it is not known (the full parser then says so), or help is asked for."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in GLOBAL_FLAGS:
            i += 1 + (GLOBAL_FLAGS[name] if "=" not in arg else 0)
            continue
        if arg.startswith("-"):
            return None  # -h/--help, or an unknown option before the command: the full parser answers
        return arg if arg in COMMANDS else None
    return None


class Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is exit 1 like every other error (argparse's own 2 is what `plan` and
    `drift` use for "changes pending" and "drift"), and is printed as JSON with --json."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `python run.py {self.prog.split(' ', 1)[-1]} --help`)"
                         if " " in self.prog else f"{message} (see `python run.py --help`)")


def main(argv: list[str] | None = None) -> int:
    output.reset()
    # Global options may come after the command too: `run.py plan --env local --debug`.
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` is a command for a task (`run-task NAME -- COMMAND...`), never our options.
    after = argv[argv.index("--") + 1:] if "--" in argv else None
    argv = argv[:argv.index("--")] if after is not None else argv
    # Known before parsing, so that even a usage error is one JSON document with --json.
    json_mode, debug = "--json" in argv, "--debug" in argv
    try:
        hoisted = _hoist_globals(argv)
        p = parser(_command_of(hoisted))
        args = p.parse_args(hoisted)
        if after is not None and not hasattr(args, "task_command"):
            p.error(f"`-- COMMAND` is only for run-task, not {args.command}")
    except UsageError as exc:
        return _fail(exc, json_mode, debug)
    if after is not None:
        args.task_command = after
    json_mode = getattr(args, "json", False)
    logging_setup.configure(args.log_format, args.debug)
    try:
        code = args.handler(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is then caught below
        return code
    except BrokenPipeError:
        return _reader_gone()
    except (Exception, KeyboardInterrupt) as exc:
        return _fail(exc, json_mode, args.debug, command=args.command, env=getattr(args, "env", None))


GLOBAL_FLAGS = {"--debug": 0, "--log-format": 1, "--no-color": 0}
BROKEN_PIPE = 141  # what a shell reports for a writer killed by SIGPIPE (`render | head`)


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


def _fail(exc: BaseException, json_mode: bool, debug: bool, **context) -> int:
    """One line on stderr (and the traceback with --debug); with --json, the error document on stdout unless the
    command already printed its own."""
    kind, message = failures.describe(exc)
    if debug and not isinstance(exc, UsageError):
        traceback.print_exc(file=sys.stderr)
    try:
        sys.stderr.write(f"error: {message}\n")
        if json_mode and not output.json_emitted():
            output.emit_json(output.error_document(kind, message, **{k: v for k, v in context.items() if v}))
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_gone()
    return ERROR


def _reader_gone() -> int:
    """The reader of stdout went away (`render | head`): end quietly. stdout is pointed at /dev/null so that
    Python's flush at exit does not complain about the pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # not a real file (tests capture stdout in memory)
    return BROKEN_PIPE
