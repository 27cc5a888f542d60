"""`add-users --env E FILE [--no-wait] [--json]`: the operative's one way to add users.

1. Checks FILE locally (dmp_deploy/users_file.py) before any AWS call; any problem: nothing is uploaded, exit 1.
2. Uploads it under `<upload_prefix><UTC time>-<random>.jsonl`, SSE-KMS with the add-users key.
3. Finds the execution the upload started and follows it until it ends; exit 0 only when it SUCCEEDED.
   `--no-wait` returns after the upload, naming the execution when it appears within a few seconds.

The AWS calls, exactly (the operative's IAM policy allows these and nothing else):
  sts:GetCallerIdentity       the account guard every command makes (needs no permission)
  kms:DescribeKey             on `alias/<prefix>-add-users`, only when config has no add_users.kms_key_arn
  s3:PutObject                `<bucket>/<upload_prefix>*`, headers x-amz-server-side-encryption=aws:kms,
                              x-amz-server-side-encryption-aws-kms-key-id=<key ARN>, If-None-Match=*;
                              S3 calls kms:GenerateDataKey on the key for the operative
  states:ListExecutions       on the state machine `<prefix>-add-users`
  states:DescribeExecution    on its executions (to match the execution's input to the uploaded key)
  states:GetExecutionHistory  on the matched execution
The key id must be sent: with `aws:kms` and no key id, S3 encrypts with the AWS-managed aws/s3 key, not the
bucket's key. Nothing is read back from S3, listed or deleted: the workflow removes the object itself.

The contract with the workflow: a state machine named `<prefix>-add-users` (executions are listed on the
machine's own ARN, which includes those started through its `live` alias), started by EventBridge with the
S3 "Object Created" event as input: `{"detail": {"bucket": {"name": ...}, "object": {"key": ..., ...}}}`.

No password is ever printed: the history holds only bucket and key, but every value taken from it is passed
through `redact` anyway.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import botocore.exceptions
import structlog

from dmp_deploy import names, session, users_file
from dmp_deploy.aws import Aws, CallStats, error_code
from dmp_deploy.commands.output import add_env, add_json, emit_json, emit_text
from dmp_deploy.config import Config, load_config
from dmp_deploy.errors import UserError

log = structlog.get_logger()

MACHINE_STEM = "add-users"
# How long to wait for the upload's event to start an execution (EventBridge delivers in seconds).
START_TIMEOUT_SECONDS = 90.0
LOCAL_START_TIMEOUT_SECONDS = 15.0
NO_WAIT_LOOKUP_SECONDS = 10.0  # --no-wait: how long to look for the execution's name before returning
POLL_SECONDS = 2.0
LOCAL_POLL_SECONDS = 0.25
# Executions are matched by input; only those started from this long before the upload are looked at
# (a margin for the difference between this machine's clock and AWS's).
CLOCK_MARGIN = timedelta(minutes=5)
HISTORY_PAGE = 100
CAUSE_LIMIT = 2000  # characters of a failure's cause printed in text mode
TERMINAL = {"ExecutionSucceeded": "SUCCEEDED", "ExecutionFailed": "FAILED", "ExecutionAborted": "ABORTED",
            "ExecutionTimedOut": "TIMED_OUT"}
RUNBOOK = "docs/operatives.md"


def add_parser(sub):
    p = sub.add_parser("add-users", help="check a users file, upload it and follow the add-users workflow "
                                         "(exit 0 only when the users were added)")
    add_env(p)
    p.add_argument("file", metavar="FILE", help="users, one JSON object per line (or a JSON array)")
    p.add_argument("--no-wait", action="store_true",
                   help="return after the upload (prints the object key and, if it starts quickly, the execution)")
    add_json(p)
    return p


# --- the outcome of one run, printed as text while it happens or as one JSON document at the end ---------

@dataclass
class Report:
    env: str
    file: str
    json_mode: bool
    users: int = 0
    bucket: str | None = None
    key: str | None = None
    execution: dict | None = None  # {"name", "arn"}
    status: str = "NOT_UPLOADED"
    states: list[str] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)
    error: str | None = None
    cause: str | None = None
    last_event_id: int = 0
    calls: CallStats | None = None  # the seam's counters once connected (calls, mutating, retries)

    def say(self, text: str) -> None:
        if not self.json_mode:
            emit_text(text)

    def as_dict(self) -> dict:
        return {"env": self.env, "file": self.file, "users": self.users, "bucket": self.bucket, "key": self.key,
                "execution": self.execution, "status": self.status, "states": self.states, "tasks": self.tasks,
                "error": self.error, "cause": self.cause,
                "calls": self.calls.as_dict() if self.calls else None}


def run(args) -> int:
    config = load_config(args.env)
    path = Path(args.file)
    checked = users_file.load(path, config.add_users.max_file_bytes)
    report = Report(config.env, path.name, args.json)
    if not checked.ok:
        return _refuse(report, checked)
    report.users = len(checked.users)

    aws = session.connect(config, as_operative=True)  # only now: a bad file never reaches AWS
    report.calls = aws.stats
    started_after = datetime.now(timezone.utc) - CLOCK_MARGIN
    try:
        _upload(aws, config, checked.body, report)
        if args.no_wait:
            return _no_wait(aws, config, report, started_after)
        return _wait(aws, config, report, started_after)
    except UserError as exc:
        if args.json:
            report.error = str(exc)
            emit_json(report.as_dict())
            return 1
        raise


def _refuse(report: Report, checked: users_file.UsersFile) -> int:
    problems = checked.problems
    summary = (f"{report.file}: {checked.problem_count} problem(s); nothing was uploaded. Fix them and run the "
               f"command again.")
    if report.json_mode:
        emit_json({**report.as_dict(), "status": "INVALID", "error": summary,
                   "problems": [p.as_dict(report.file) for p in problems]})
    else:
        for problem in problems:
            sys.stderr.write(problem.render(report.file) + "\n")
        sys.stderr.write(f"error: {summary}\n")
    return 1


# --- upload --------------------------------------------------------------------------------------------

def upload_key(config: Config, now: datetime | None = None) -> str:
    """A key no other upload can have: sorted by time, and random so two operatives never collide."""
    now = now or datetime.now(timezone.utc)
    return f"{config.add_users.upload_prefix}{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(6)}.jsonl"


def kms_key_arn(aws: Aws, config: Config) -> str:
    """The bucket's key as an ARN: from config, or the tool-created key found by its alias."""
    if config.add_users.kms_key_arn:
        return config.add_users.kms_key_arn
    alias = names.add_users_key_alias(config)
    try:
        return aws.call("kms", "describe_key", KeyId=alias)["KeyMetadata"]["Arn"]
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        if code == "NotFoundException":
            raise UserError(f"the add-users KMS key {alias} does not exist in {config.env}: the add-users "
                            f"workflow is not deployed there (run `python run.py plan --env {config.env}`). "
                            f"Nothing was uploaded.") from None
        raise UserError(f"cannot find the add-users KMS key {alias} ({code}): set add_users.kms_key_arn in "
                        f"config/{config.env}.toml, or allow kms:DescribeKey on that key. Nothing was "
                        f"uploaded.") from None


def _upload(aws: Aws, config: Config, body: bytes, report: Report) -> None:
    bucket = config.add_users.bucket_name
    key_arn = kms_key_arn(aws, config)
    key = upload_key(config)
    try:
        # Exactly these headers: the body, SSE-KMS with the bucket's key, and never overwrite. No metadata,
        # tags or content type that could carry anything from the file.
        aws.call("s3", "put_object", Bucket=bucket, Key=key, Body=body, ServerSideEncryption="aws:kms",
                 SSEKMSKeyId=key_arn, IfNoneMatch="*")
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        if code == "PreconditionFailed":
            # The key is new and random: only our own attempt can have created it. botocore retried a put
            # whose answer was lost, and the retry met the object the first attempt stored.
            log.info("upload already stored by an earlier attempt", key=key)
        elif code == "NoSuchBucket":
            raise UserError(f"the add-users bucket {bucket} does not exist in {config.env}: the workflow is not "
                            f"deployed there (run `python run.py plan --env {config.env}`). Nothing was "
                            f"uploaded.") from None
        else:
            raise UserError(f"the upload was refused ({code}): your credentials must be allowed to put objects "
                            f"under s3://{bucket}/{config.add_users.upload_prefix} encrypted with the add-users "
                            f"KMS key ({key_arn}). Nothing was uploaded. See {RUNBOOK}, 'Upload refused'."
                            ) from None
    report.bucket, report.key, report.status = bucket, key, "UPLOADED"
    log.info("users file uploaded", bucket=bucket, key=key, users=report.users)
    report.say(f"{report.file}: {report.users} user(s) checked. Uploaded to s3://{bucket}/{key} "
               f"(SSE-KMS).")


# --- finding the execution the upload started ------------------------------------------------------------

def state_machine_arn(config: Config) -> str:
    env = config.environment
    return f"arn:aws:states:{env.region}:{env.account_id}:stateMachine:{names.family(config, MACHINE_STEM)}"


def started_by(execution_input: str | None, bucket: str, key: str) -> bool:
    """True when an execution's input is the S3 event for exactly this object."""
    try:
        detail = json.loads(execution_input or "{}").get("detail") or {}
        return detail["object"]["key"] == key and detail["bucket"]["name"] == bucket
    except (ValueError, AttributeError, KeyError, TypeError):
        return False


class ExecutionFinder:
    """Finds the execution whose input names the uploaded object. Lists the machine's executions newest
    first (AWS orders running ones by start, finished ones by stop), stops paging at the first one older
    than the upload, and describes each candidate at most once."""

    def __init__(self, aws: Aws, config: Config, bucket: str, key: str, started_after: datetime):
        self.aws, self.config = aws, config
        self.bucket, self.key, self.started_after = bucket, key, started_after
        self.machine_arn = state_machine_arn(config)
        self.looked_at: set[str] = set()

    def find_once(self) -> dict | None:
        token = None
        while True:
            page = self._list(token)
            summaries = page.get("executions", [])
            for summary in summaries:
                arn = summary["executionArn"]
                if arn in self.looked_at or _aware(summary["startDate"]) < self.started_after:
                    continue
                self.looked_at.add(arn)
                execution = self.aws.call("stepfunctions", "describe_execution", executionArn=arn)
                if started_by(execution.get("input"), self.bucket, self.key):
                    return execution
            token = page.get("nextToken")
            if not token or not summaries or min(_sorted_by(s) for s in summaries) < self.started_after:
                return None

    def find(self, timeout: float, poll: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            execution = self.find_once()
            if execution or time.monotonic() >= deadline:
                return execution
            time.sleep(poll)

    def _list(self, token: str | None) -> dict:
        params: dict[str, Any] = {"stateMachineArn": self.machine_arn, "maxResults": 100}
        if token:
            params["nextToken"] = token
        try:
            return self.aws.call("stepfunctions", "list_executions", **params)
        except botocore.exceptions.ClientError as exc:
            code = error_code(exc)
            where = f"s3://{self.bucket}/{self.key}"
            if code == "StateMachineDoesNotExist":
                raise UserError(f"the add-users state machine {names.family(self.config, MACHINE_STEM)} does "
                                f"not exist in {self.config.env}, so nothing will process the upload {where}: "
                                f"the workflow is not deployed (run `python run.py plan --env "
                                f"{self.config.env}`). See {RUNBOOK}, 'No execution started'.") from None
            raise UserError(f"uploaded {where}, but cannot see the workflow's executions ({code}): your "
                            f"credentials need states:ListExecutions, states:DescribeExecution and "
                            f"states:GetExecutionHistory on the add-users state machine. The workflow runs "
                            f"anyway; use --no-wait, or ask for those rights.") from None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _sorted_by(summary: dict) -> datetime:
    return _aware(summary.get("stopDate") or summary.get("redriveDate") or summary["startDate"])


def _start_timeout(config: Config) -> float:
    """The embedded EventBridge delivers while the upload is stored: a short wait is enough there."""
    return min(START_TIMEOUT_SECONDS, LOCAL_START_TIMEOUT_SECONDS) if config.environment.embedded_aws \
        else START_TIMEOUT_SECONDS


def not_started_message(config: Config, report: Report, timeout: float) -> str:
    """What the operative reads when the upload was stored but no execution took it: nothing was added, the
    file waits in the bucket, and what to check (the trigger: the rule, its target and its role)."""
    rule, role = f"{config.prefix}-add-users-uploads", f"{config.prefix}-add-users-trigger"
    where = ""
    if config.environment.embedded_aws:
        from dmp_deploy.local import control
        where = (f"; the embedded AWS logs each refused delivery, naming the role and the action, in "
                 f"{control.state_dir() / 'server.log'}")
    return (f"no execution started: the upload s3://{report.bucket}/{report.key} was accepted, but no add-users "
            f"execution started within {timeout:.0f} s, so no user was added. Check the trigger: the EventBridge "
            f"rule {rule} (enabled, targeting the state machine's `live` alias) and its role {role}, which must "
            f"be allowed states:StartExecution on the state machine; refused deliveries show in the rule's "
            f"FailedInvocations metric (CloudWatch, AWS/Events){where}. `python run.py plan --env {config.env}` "
            f"shows a trigger that differs from the declared one. The file stays in the bucket (it expires within "
            f"a day): do not upload it again until the trigger works. See {RUNBOOK}, "
            f"'No execution started'.")


def _poll_seconds(config: Config) -> float:
    return LOCAL_POLL_SECONDS if config.environment.embedded_aws else POLL_SECONDS


def _no_wait(aws: Aws, config: Config, report: Report, started_after: datetime) -> int:
    finder = ExecutionFinder(aws, config, report.bucket, report.key, started_after)
    try:
        execution = finder.find(NO_WAIT_LOOKUP_SECONDS, _poll_seconds(config))
    except UserError as exc:  # cannot look: the upload itself succeeded, which is what --no-wait promises
        report.say(f"Not looking for the execution: {exc}")
        execution = None
    if execution:
        report.execution = {"name": execution["name"], "arn": execution["executionArn"]}
        report.status = execution["status"]
        report.say(f"Execution {execution['name']} started ({execution['status']}). Not waiting for it: "
                   f"the workflow goes on in AWS.")
    else:
        report.status = "NOT_STARTED"
        report.say(f"No execution has picked the upload up yet (looked for {NO_WAIT_LOOKUP_SECONDS:.0f} s). "
                   f"Not waiting: if none starts, see {RUNBOOK}, 'No execution started'.")
    report.say(f"Object key: {report.key}")
    if report.json_mode:
        emit_json(report.as_dict())
    return 0


# --- following the execution ---------------------------------------------------------------------------

def _wait(aws: Aws, config: Config, report: Report, started_after: datetime) -> int:
    poll = _poll_seconds(config)
    finder = ExecutionFinder(aws, config, report.bucket, report.key, started_after)
    timeout = _start_timeout(config)
    try:
        execution = finder.find(timeout, poll)
    except KeyboardInterrupt:
        return _interrupted(report)
    if not execution:
        report.status = "NOT_STARTED"
        raise UserError(not_started_message(config, report, timeout))
    report.execution = {"name": execution["name"], "arn": execution["executionArn"]}
    report.status = execution["status"]
    report.say(f"Execution {execution['name']} started. Following it (Ctrl-C stops watching, not the workflow):")

    # The workflow's own timeouts end it well before this; the deadline only stops a watch that hangs.
    deadline = time.monotonic() + 3 * config.add_users.task_timeout_seconds + 600
    try:
        while True:
            for event in new_events(aws, report.execution["arn"], report.last_event_id):
                for line in record_event(report, event):
                    report.say(line)
            if report.status in TERMINAL.values():
                break
            if time.monotonic() >= deadline:
                report.status = "RUNNING"
                raise UserError(f"stopped watching execution {execution['name']} after the deadline; it is "
                                f"still running. Follow it in the Step Functions console.")
            time.sleep(poll)
    except KeyboardInterrupt:
        return _interrupted(report)
    return _outcome(report)


def new_events(aws: Aws, execution_arn: str, after_id: int) -> list[dict]:
    """History events with an id above `after_id`, oldest first. Reads newest first and stops at the first
    page that reaches an event already seen, so a long execution costs one call per poll, not its history."""
    events: list[dict] = []
    token = None
    while True:
        params: dict[str, Any] = {"executionArn": execution_arn, "reverseOrder": True, "maxResults": HISTORY_PAGE}
        if token:
            params["nextToken"] = token
        page = aws.call("stepfunctions", "get_execution_history", **params)
        batch = page.get("events", [])
        events.extend(e for e in batch if e["id"] > after_id)
        token = page.get("nextToken")
        if not token or not batch or any(e["id"] <= after_id for e in batch):
            break
    unique = {e["id"]: e for e in events}
    return [unique[i] for i in sorted(unique)]


def record_event(report: Report, event: dict) -> list[str]:
    """Fold one history event into the report; returns the lines to print for it (maybe none)."""
    report.last_event_id = max(report.last_event_id, event["id"])
    kind = event["type"]
    if kind.endswith("StateEntered"):
        name = (event.get("stateEnteredEventDetails") or {}).get("name", "?")
        report.states.append(name)
        return [f"  state: {name}"]
    if kind in ("TaskSubmitted", "TaskSucceeded", "TaskFailed", "TaskTimedOut", "TaskStartFailed",
                "TaskSubmitFailed"):
        return _task_event(report, kind, _details(event))
    if kind in TERMINAL:
        details = _details(event)
        report.status = TERMINAL[kind]
        if kind != "ExecutionSucceeded":
            report.error = redact_text(details.get("error")) if details.get("error") else None
            report.cause = redact_text(details.get("cause")) if details.get("cause") else None
        return []
    return []


def _task_event(report: Report, kind: str, details: dict) -> list[str]:
    resource = f"{details.get('resourceType', '?')}:{details.get('resource', '?')}"
    state = report.states[-1] if report.states else None
    if details.get("resourceType") == "ecs":
        payload = _parse(details.get("output") if kind in ("TaskSubmitted", "TaskSucceeded") else details.get("cause"))
        ecs_tasks = _ecs_tasks(payload)
        if kind == "TaskSubmitted":
            lines = []
            for task in ecs_tasks:
                record = _task_record(report, task, state)
                lines.append(f"  ECS task started: {record['taskDefinition']} ({_short(record['taskArn'])})")
            return lines
        if ecs_tasks:
            lines = []
            for task in ecs_tasks:
                record = _task_record(report, task, state)
                record["exitCodes"] = {(_get(c, "Name") or "?"): _get(c, "ExitCode")
                                       for c in _get(task, "Containers") or []}
                record["stoppedReason"] = redact_text(_get(task, "StoppedReason"))
                record["status"] = "SUCCEEDED" if kind == "TaskSucceeded" else "FAILED"
                lines.append(f"  ECS task stopped: {record['taskDefinition']} ({_short(record['taskArn'])}): "
                             f"{_exit_summary(record)}")
            return lines
    if kind == "TaskSucceeded":
        return []
    error = redact_text(details.get("error")) or kind
    cause = redact_text(details.get("cause"))
    return [f"  step failed: {state or resource}: {error}" + (f": {_clip(cause)}" if cause else "")]


def _task_record(report: Report, task: dict, state: str | None) -> dict:
    arn = _get(task, "TaskArn") or "?"
    for record in report.tasks:
        if record["taskArn"] == arn:
            return record
    definition = (_get(task, "TaskDefinitionArn") or "?").rsplit("/", 1)[-1]
    record = {"state": state, "taskArn": arn, "taskDefinition": definition, "exitCodes": {},
              "stoppedReason": None, "status": "STARTED"}
    report.tasks.append(record)
    return record


def _exit_summary(record: dict) -> str:
    codes = {name: code for name, code in record["exitCodes"].items()}
    if len(codes) == 1 and next(iter(codes.values())) is not None:
        text = f"exit code {next(iter(codes.values()))}"
    elif codes:
        text = "exit codes " + ", ".join(f"{n}={'none' if c is None else c}" for n, c in codes.items())
    else:
        text = "no exit code"
    if record["stoppedReason"] and (record["status"] == "FAILED" or not codes):
        text += f" ({record['stoppedReason']})"
    return text


def _outcome(report: Report) -> int:
    name = report.execution["name"]
    if report.status == "SUCCEEDED":
        report.say(f"Succeeded: the users in {report.file} were added (execution {name}). The uploaded file has "
                   f"been removed.")
    else:
        report.say(f"FAILED: the add-users workflow ended {report.status} (execution {name}).")
        if report.error or report.cause:
            report.say(f"  error: {report.error or '-'}")
            report.say(f"  cause: {_clip(report.cause) if report.cause else '-'}")
        report.say(f"What to do: see {RUNBOOK}, 'When it fails'.")
    if report.json_mode:
        emit_json(report.as_dict())
    return 0 if report.status == "SUCCEEDED" else 1


def _interrupted(report: Report) -> int:
    execution = report.execution["name"] if report.execution else "not found yet"
    report.say(f"Stopped watching. The workflow goes on in AWS (execution: {execution}). Do NOT upload the "
               f"same file again: users already added would make it fail.")
    if report.json_mode:
        emit_json({**report.as_dict(), "error": "interrupted: stopped watching"})
    return 1


# --- reading history payloads safely ------------------------------------------------------------------

REDACTED = "[redacted]"
_SECRET_NAME = re.compile(r"password", re.IGNORECASE)
# A password next to its name in text that is not JSON as a whole: JSON pairs ("password": "..."), Python
# dict reprs ('password': '...', what the api's script prints), escaped JSON (\"password\": \"...\"), and
# name=value. Each pattern: (name and separator)(opening quote)value(closing quote).
_SECRET_PAIRS = (
    re.compile(r'("[^"\\]*password[^"\\]*"\s*:\s*)(")(?:[^"\\]|\\.)*(")', re.IGNORECASE),
    re.compile(r"('[^'\\]*password[^'\\]*'\s*:\s*)(')(?:[^'\\]|\\.)*(')", re.IGNORECASE),
    re.compile(r"""('[^'\\]*password[^'\\]*'\s*:\s*)(")(?:[^"\\]|\\.)*(")""", re.IGNORECASE),
    re.compile(r'(\\"[^"\\]*password[^"\\]*\\"\s*:\s*)(\\")(?:[^\\]|\\[^"])*(\\")', re.IGNORECASE),
    re.compile(r"(\b\w*password\w*\s*=\s*)()[^\s,;&'\"]+()", re.IGNORECASE),
)


def redact(value: Any) -> Any:
    """`value` with every field named like a password replaced, at any depth, including inside strings
    that hold JSON. A guard: the workflow's history should never contain one in the first place."""
    if isinstance(value, dict):
        # {"Name": "...PASSWORD...", "Value": "..."}: how ECS overrides and environments spell a pair.
        named = next((value[k] for k in ("Name", "name") if isinstance(value.get(k), str)), "")
        return {k: REDACTED if isinstance(k, str) and (_SECRET_NAME.search(k) or (
                    k in ("Value", "value") and _SECRET_NAME.search(named))) else redact(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_text(text: str | None) -> str | None:
    if text is None or not _SECRET_NAME.search(text):
        return text
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.dumps(redact(json.loads(stripped)))
        except ValueError:
            pass
    for pattern in _SECRET_PAIRS:
        text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}{m.group(3)}", text)
    return text


def _details(event: dict) -> dict:
    for key, value in event.items():
        if key.endswith("EventDetails") and isinstance(value, dict):
            return value
    return {}


def _parse(text: str | None) -> Any:
    try:
        return redact(json.loads(text)) if text else None
    except ValueError:
        return None


def _ecs_tasks(payload: Any) -> list[dict]:
    """The ECS task(s) in a runTask result: RunTask's {"Tasks": [...]} or a single described task."""
    if not isinstance(payload, dict):
        return []
    tasks = _get(payload, "Tasks")
    if isinstance(tasks, list):
        return [t for t in tasks if isinstance(t, dict)]
    return [payload] if _get(payload, "TaskArn") else []


def _get(obj: Any, name: str) -> Any:
    """A field in ECS's PascalCase (as Step Functions returns it) or camelCase (as ECS's API does)."""
    if not isinstance(obj, dict):
        return None
    if name in obj:
        return obj[name]
    return obj.get(name[:1].lower() + name[1:])


def _short(task_arn: str) -> str:
    return task_arn.rsplit("/", 1)[-1]


def _clip(text: str) -> str:
    return text if len(text) <= CAUSE_LIMIT else text[:CAUSE_LIMIT] + f"... ({len(text) - CAUSE_LIMIT} more characters)"
