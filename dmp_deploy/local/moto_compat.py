"""Where moto 5.2.5 (the embedded AWS of the `local` environment) falls short of what the tool needs.

Each gap is one function here, registered with `@gap`, with a docstring saying what AWS does and what moto
does instead, and one test in tests/test_moto_compat.py that fails loudly if a newer moto changes it.
Nothing here is imported by the code that talks to real AWS: `apply()` is called only by the embedded
server (dmp_deploy/local/server.py) and by the test suite's in-process server.

The tool never weakens what it does against real AWS to suit the emulator. The one control moto cannot
honour (a bucket policy denying non-TLS requests: moto ignores the condition and denies everything) is
switched off in config/local.toml only, and tests assert it is present for staging and production.
"""

from __future__ import annotations

from typing import Callable

GAPS: dict[str, Callable[[], None]] = {}
_applied: set[str] = set()


def gap(fn: Callable[[], None]) -> Callable[[], None]:
    GAPS[fn.__name__] = fn
    return fn


def apply() -> None:
    """Apply every patch once (idempotent; safe to call from several test modules)."""
    for name, fn in GAPS.items():
        if name not in _applied:
            fn()
            _applied.add(name)


@gap
def s3_echoes_eventbridge_configuration() -> None:
    """AWS: GetBucketNotificationConfiguration returns `EventBridgeConfiguration: {}` when it is on.
    moto 5.2.5 stores it (and emits events) but leaves it out of the response, so a reconciler would
    re-enable it on every run."""
    from moto.core.common_types import TYPE_RESPONSE
    from moto.core.responses import ActionResult
    from moto.s3.responses import S3Response

    original = S3Response.get_bucket_notification

    def get_bucket_notification(self) -> TYPE_RESPONSE:
        config = self.backend.get_bucket_notification_configuration(self.bucket_name)
        if not config or config.event_bridge is None:
            return original(self)
        if config.topic or config.queue or config.cloud_function:
            raise NotImplementedError("dmp-deploy compat: mixed notification configurations")
        self.data["Action"] = "GetBucketNotificationConfiguration"
        return self.serialized(ActionResult({"EventBridgeConfiguration": {}}))

    S3Response.get_bucket_notification = get_bucket_notification


@gap
def logs_associates_kms_keys() -> None:
    """AWS: AssociateKmsKey / DisassociateKmsKey change a log group's key in place. moto 5.2.5 has neither
    (the key can only be set at creation), so a changed `logs.kms_key_arn` could not be applied locally."""
    from moto.logs.responses import LogsResponse
    from moto.logs.exceptions import ResourceNotFoundException

    def _group(self):
        name = self._get_param("logGroupName")
        if name not in self.logs_backend.groups:
            raise ResourceNotFoundException()
        return self.logs_backend.groups[name]

    def associate_kms_key(self) -> str:
        _group(self).kms_key_id = self._get_param("kmsKeyId")
        return ""

    def disassociate_kms_key(self) -> str:
        _group(self).kms_key_id = None
        return ""

    LogsResponse.associate_kms_key = associate_kms_key
    LogsResponse.disassociate_kms_key = disassociate_kms_key


# --- The add-users workflow: S3 upload -> EventBridge -> Step Functions -> ECS tasks (issue 4) -------------
#
# moto contains LocalStack's ASL interpreter. The gaps below let a state machine that runs ECS tasks with
# `ecs:runTask.sync` and cleans up with `aws-sdk:s3:*` run end to end, started by an S3 upload's event.


@gap
def stepfunctions_service_tasks_use_botocore_shapes() -> None:
    """AWS: service-integration Tasks take PascalCase parameters (`Cluster`, `TaskDefinition`,
    `NetworkConfiguration.AwsvpcConfiguration`, `Overrides.ContainerOverrides[].Environment[].Name`) and
    return PascalCase results, whatever the casing of the service's own API; timestamps in the optimised
    integrations' results (ECS's task description) are epoch milliseconds, as their Java SDK objects serialise.
    API errors of the optimised ECS integration are named `ECS.<modelled exception>` or
    `ECS.AmazonECSException`.
    moto 5.2.5: `_normalise_parameters` / `_normalise_response` are no-ops, so camelCase APIs (ECS, Step
    Functions, Logs...) get PascalCase keys and fail with States.Runtime (cause `'Cluster'`); results keep
    datetime objects, which break DescribeExecution once they reach the execution's output; every ECS API
    error is States.Runtime. The fix converts key names along the operation's botocore input and output
    shapes (as LocalStack does), turns timestamps into JSON values (epoch milliseconds for optimised
    integrations, ISO-8601 strings for `aws-sdk:*` ones) and names ECS errors like AWS."""
    import datetime
    import functools

    import botocore.session
    from botocore import xform_name
    from botocore.exceptions import ClientError, UnknownServiceError
    from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEvent
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service import (
        StateTaskService,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (
        StateTaskServiceAwsSdk,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_ecs import (
        StateTaskServiceEcs,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    @functools.lru_cache(maxsize=None)
    def service_model(service: str):
        try:
            return botocore.session.get_session().get_service_model(service)
        except UnknownServiceError:
            return None

    @functools.lru_cache(maxsize=None)
    def operation_model(service: str, action: str):
        """`action` in snake_case, as the interpreter spells it (run_task, delete_object)."""
        model = service_model(service)
        names = {xform_name(name): name for name in model.operation_names} if model else {}
        return model.operation_model(names[action]) if action in names else None

    def json_timestamps(value, epoch_millis: bool):
        if isinstance(value, dict):
            for key, item in value.items():
                value[key] = json_timestamps(item, epoch_millis)
        elif isinstance(value, list):
            value[:] = [json_timestamps(item, epoch_millis) for item in value]
        elif isinstance(value, datetime.datetime):
            return int(value.timestamp() * 1000) if epoch_millis else value.isoformat()
        return value

    def _operation(self, boto_service_name, service_action_name):
        return operation_model(self._get_boto_service_name(boto_service_name),
                               self._get_boto_service_action(service_action_name))

    def _normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None) -> None:
        operation = _operation(self, boto_service_name, service_action_name)
        if operation is not None and operation.input_shape is not None:
            self._to_boto_request(parameters, operation.input_shape)

    def _normalise_response(self, response, boto_service_name=None, service_action_name=None) -> None:
        operation = _operation(self, boto_service_name, service_action_name)
        if operation is not None and operation.output_shape is not None:
            self._from_boto_response(response, operation.output_shape)
        json_timestamps(response, epoch_millis=not isinstance(self, StateTaskServiceAwsSdk))

    StateTaskService._normalise_parameters = _normalise_parameters
    StateTaskService._normalise_response = _normalise_response
    # moto's recasing goes through snake_case and mangles acronyms (SSEKMSKeyId -> SsekmsKeyId); AWS only
    # capitalises the first letter (privateIpv4Address -> PrivateIpv4Address).
    StateTaskService._to_sfn_cased = staticmethod(lambda key: key[:1].upper() + key[1:])

    ecs_from_error = StateTaskServiceEcs._from_error

    def _from_error(self, env, ex: Exception) -> FailureEvent:
        if not isinstance(ex, ClientError):
            return ecs_from_error(self, env, ex)
        code = ex.response["Error"].get("Code", "")
        modelled = {shape.name for shape in service_model("ecs").error_shapes}
        error = f"ECS.{code if code in modelled else 'AmazonECSException'}"
        meta = ex.response.get("ResponseMetadata", {})
        cause = (f"{ex.response['Error'].get('Message', '')} (Service: AmazonECS; Status Code: "
                 f"{meta.get('HTTPStatusCode')}; Error Code: {code}; Request ID: {meta.get('RequestId')}; Proxy: null)")
        return FailureEvent(
            env=env, error_name=CustomErrorName(error), event_type=HistoryEventType.TaskFailed,
            event_details=EventDetails(taskFailedEventDetails=TaskFailedEventDetails(
                error=error, cause=cause, resource=self._get_sfn_resource(),
                resourceType=self._get_sfn_resource_type())))

    StateTaskServiceEcs._from_error = _from_error


@gap
def ec2_network_interfaces_have_private_dns_names() -> None:
    """AWS: every network interface has a private DNS name, whatever the VPC's `enableDnsHostnames` (which
    governs public DNS names). moto 5.2.5 sets `private_dns_name` only when DNS hostnames are enabled, so
    RunTask of an awsvpc task in any other VPC (e.g. a plain CreateVpc) crashes with a 500 (AttributeError)."""
    from moto.ec2.models.elastic_network_interfaces import NetworkInterface
    from moto.ec2.utils import generate_dns_from_ip

    network_interface_init = NetworkInterface.__init__

    def __init__(self, *args, **kwargs) -> None:
        network_interface_init(self, *args, **kwargs)
        if not getattr(self, "private_dns_name", None) and self.private_ip_address:
            self.private_dns_name = generate_dns_from_ip(self.private_ip_address)

    NetworkInterface.__init__ = __init__


# Scripted outcomes of emulated ECS tasks, by task-definition family: (exit code, container reason, container).
_TASK_OUTCOMES: dict[str, tuple[int, str, str | None]] = {}
TASK_OUTCOMES_ENV = "DMP_LOCAL_TASK_OUTCOMES"
TASK_STEP_SECONDS = 0.25  # per lifecycle step: RUNNING -> DEACTIVATING -> STOPPING -> DEPROVISIONING -> STOPPED


def script_task_outcome(family: str, exit_code: int, reason: str = "", container: str | None = None) -> None:
    """Make every emulated task of `family` end with `exit_code` in `container` (default: its first essential
    container; the others exit 0), until `clear_task_outcomes()` or a reset of the embedded AWS.
    Works in the process that runs the embedded AWS (the test suite's in-process server). A separate server
    process reads the same rules from $DMP_LOCAL_TASK_OUTCOMES, e.g. '{"dmp-local-add-users": 1}' or
    '{"dmp-local-add-users": {"exit_code": 1, "reason": "...", "container": "add-users"}}'."""
    _TASK_OUTCOMES[family] = (int(exit_code), reason, container)


def clear_task_outcomes() -> None:
    _TASK_OUTCOMES.clear()


def task_outcome(family: str) -> tuple[int, str, str | None]:
    """The scripted (exit code, reason, container) of a family's tasks; by default every container exits 0."""
    import json
    import os

    if family in _TASK_OUTCOMES:
        return _TASK_OUTCOMES[family]
    rule = json.loads(os.environ.get(TASK_OUTCOMES_ENV) or "{}").get(family)
    if isinstance(rule, dict):
        return int(rule.get("exit_code", 0)), rule.get("reason", ""), rule.get("container")
    return (int(rule), "", None) if rule is not None else (0, "", None)


@gap
def ecs_tasks_run_and_stop_with_exit_codes() -> None:
    """AWS: a task runs every container of its definition and stops on its own when an essential container
    exits: `lastStatus`/`desiredStatus` STOPPED, `stopCode` EssentialContainerExited, `stoppedReason`
    "Essential container in task exited", `stoppedAt`, and each container's `exitCode` (absent while running).
    moto 5.2.5: a task has one container (the definition's first), `exitCode` 0 from the start, no stop
    details, never "runs and fails", and by default (no transition registered for `ecs::task`) is STOPPED
    already in RunTask's own response. Here a task moves one lifecycle step every TASK_STEP_SECONDS of
    wall-clock time (the state manager's `time` progression, settled when DescribeTasks reads it, all elapsed
    steps at once, so its life does not depend on how often it is described; any transition set through
    /moto-api/state-manager/set-transition still wins), and a stopped task's exit codes come from
    `script_task_outcome()` (default 0). moto's reset also clears scripted outcomes."""
    from datetime import datetime, timedelta

    from moto.core.utils import utcnow
    from moto.ecs.models import Container, Task
    from moto.moto_api import state_manager
    from moto.moto_api._internal.managed_state_model import ManagedState
    from moto.moto_api._internal.models import MotoAPIBackend

    state_manager.register_default_transition("ecs::task", {"progression": "time", "seconds": TASK_STEP_SECONDS})

    task_init = Task.__init__

    def __init__(self, cluster, task_definition, *args, **kwargs) -> None:
        task_init(self, cluster, task_definition, *args, **kwargs)
        self.family = task_definition.family
        self.containers = []
        for definition in task_definition.container_definitions:
            container = Container(task_definition)  # moto reads the first definition: overwrite from this one
            container.name, container.image = definition.get("name"), definition.get("image")
            container.cpu, container.memory = definition.get("cpu", 0), definition.get("memory")
            container.environment, container.command = definition.get("environment"), definition.get("command")
            container.essential = definition.get("essential", True)
            container.last_status, container.exitCode = "RUNNING", None
            self.containers.append(container)

    def stop(task) -> None:
        """Fill in what AWS reports for a stopped task, once."""
        if getattr(task, "stop_code", None):
            return
        exit_code, reason, name = task_outcome(task.family)
        essential = [c for c in task.containers if c.essential] or task.containers
        failing = next((c for c in task.containers if c.name == name), None) if name else essential[0]
        for container in task.containers:
            container.last_status = "STOPPED"
            container.exitCode = exit_code if container is failing else 0
            if container is failing and reason:
                container.reason = reason
        user_initiated = task.desired_status == "STOPPED"  # set by StopTask; moto never changes it otherwise
        task.desired_status = "STOPPED"
        task.stop_code = "UserInitiated" if user_initiated else "EssentialContainerExited"
        if not user_initiated:
            task.stopped_reason = "Essential container in task exited"
        task.stopping_at = task.execution_stopped_at = task.stopped_at = utcnow()

    def advance(self) -> None:
        # DescribeTasks advances every task before serialising it. Settle the status (and the stop details)
        # here and only here: progressing on every read, as moto does, lets a task turn STOPPED half-way
        # through serialising a response whose containers were already written as running.
        ManagedState.advance(self)
        transition = state_manager.get_transition(self.model_name)
        if transition["progression"] != "time":
            self._status = ManagedState.status.fget(self)
        else:  # moto moves one step per read at most; catch up on wall-clock time instead
            step = timedelta(seconds=transition["seconds"])
            while datetime.now() - self._time_progressed > step:
                following = self._get_next_status(self._status)
                if following == self._status:
                    break
                self._status, self._time_progressed = following, self._time_progressed + step
        if self._status == "STOPPED":
            stop(self)

    Task.__init__ = __init__
    Task.status = property(lambda self: self._status, ManagedState.status.fset)
    Task.advance = advance

    reset = MotoAPIBackend.reset

    def reset_with_outcomes(self) -> None:
        clear_task_outcomes()
        reset(self)

    MotoAPIBackend.reset = reset_with_outcomes


@gap
def stepfunctions_ecs_sync_fails_when_a_container_fails() -> None:
    """AWS: `ecs:runTask.sync` fails with States.TaskFailed when the task stops with an essential container's
    exit code other than 0 (or without one, e.g. StopCode TaskFailedToStart); the cause is the stopped task's
    description as JSON. moto 5.2.5 succeeds whenever the task reaches STOPPED."""
    from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_ecs import (
        StateTaskServiceEcs,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for
    from moto.stepfunctions.parser.asl.utils.encoding import to_json_str

    build_sync_resolver = StateTaskServiceEcs._build_sync_resolver

    def _build_sync_resolver(self, env, resource_runtime_part, normalised_parameters, state_credentials):
        resolve = build_sync_resolver(self, env, resource_runtime_part, normalised_parameters, state_credentials)
        # The emulator's own look-up (Step Functions reads the task, not its definition): unsigned, not the role's.
        ecs = boto_client_for(region=resource_runtime_part.region, service="ecs", state_credentials=None)

        def resolve_or_fail():
            task = resolve()
            if task is None:
                return None
            definition = ecs.describe_task_definition(taskDefinition=task["TaskDefinitionArn"])["taskDefinition"]
            essential = {c["name"] for c in definition["containerDefinitions"] if c.get("essential", True)}
            failed = task.get("StopCode") == "TaskFailedToStart" or any(
                c.get("ExitCode") != 0 for c in task.get("Containers", []) if c.get("Name") in essential)
            if not failed:
                return task
            error = StatesErrorNameType.StatesTaskFailed.to_name()
            raise FailureEventException(FailureEvent(
                env=env, error_name=StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
                event_type=HistoryEventType.TaskFailed,
                event_details=EventDetails(taskFailedEventDetails=TaskFailedEventDetails(
                    error=error, cause=to_json_str(task, separators=(",", ":")),
                    resource=self._get_sfn_resource(), resourceType=self._get_sfn_resource_type()))))

        return resolve_or_fail

    StateTaskServiceEcs._build_sync_resolver = _build_sync_resolver


@gap
def stepfunctions_starts_versions_and_aliases() -> None:
    """AWS: StartExecution accepts a state machine's ARN, a version ARN (`...:stateMachine:name:3`) or an
    alias ARN (`...:stateMachine:name:live`, routed to a version by weight); the execution runs that
    version's definition and is listed under the state machine. Without `name`, AWS generates a UUID.
    moto 5.2.5 (interpreter backend): a version or alias ARN fails (a version has no idempotency check, no
    backend, and its executions would be invisible to DescribeExecution); without `name` every execution
    gets the same ARN (`...:execution:machine:None`). Here the version's executions are the machine's own
    list, so its snapshot (with the version's definition) runs and is found like any other execution."""
    import random
    import uuid

    from moto.stepfunctions.models import StateMachine, StateMachineVersion
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    StateMachineVersion._handle_name_input_idempotency = StateMachine._handle_name_input_idempotency
    start_execution = StepFunctionsParserBackend.start_execution

    def _start_execution(self, state_machine_arn, name=None, execution_input=None, trace_header=None):
        name = name or str(uuid.uuid4())
        qualifier = state_machine_arn.split(":")[7:]
        if not qualifier:
            return start_execution(self, state_machine_arn, name, execution_input, trace_header)
        version_arn = state_machine_arn
        if not qualifier[0].isdigit():
            routes = self.describe_state_machine_alias(state_machine_arn).routing_configuration
            version_arn = random.choices([r["stateMachineVersionArn"] for r in routes],
                                         weights=[r.get("weight", 100) for r in routes])[0]
        version = self.describe_state_machine(version_arn)
        machine = self.describe_state_machine(version.source_arn)
        version.executions, version.backend = machine.executions, machine.backend
        execution = start_execution(self, version_arn, name, execution_input, trace_header)
        execution.state_machine_arn = machine.arn
        return execution

    StepFunctionsParserBackend.start_execution = _start_execution


def _step_functions_input(target: dict, event: dict) -> str:
    """What EventBridge passes to a target: the event, or the target's Input / InputPath / InputTransformer."""
    import json
    from datetime import datetime, timezone

    from jsonpath_ng.ext import parse
    from moto.events.utils import EventTemplateParser

    event = dict(event)
    if isinstance(event.get("time"), (int, float)):  # moto keeps epoch seconds; the event carries ISO-8601
        event["time"] = datetime.fromtimestamp(event["time"], tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    ingestion_time = event.pop("ingestion-time", event["time"])  # moto-internal, not part of the event
    if "Input" in target:
        return target["Input"]
    if "InputPath" in target:
        matches = parse(target["InputPath"]).find(event)
        return json.dumps(matches[0].value if matches else None)
    if "InputTransformer" in target:
        transformer = target["InputTransformer"]
        return json.dumps(EventTemplateParser.parse(transformer.get("InputTemplate"),
                                                    transformer.get("InputPathsMap", {}),
                                                    {**event, "ingestion-time": ingestion_time}))
    return json.dumps(event)


@gap
def eventbridge_delivers_to_step_functions() -> None:
    """AWS: a rule whose target is a state machine (or a version or alias of one) starts an execution per
    matching event, with the event (or the target's Input / InputPath / InputTransformer) as input and a
    unique name; delivery is asynchronous, so one failing target never affects other targets, other rules
    or the PutEvents / PutObject that emitted the event; disabled rules deliver nothing; every event has its
    own `id`. moto 5.2.5: a Step Functions target raises NotImplementedError (PutEvents answers 500; on the
    S3 path the error is swallowed and delivery to every later rule is dropped), disabled rules still
    deliver, and every S3 event has the same `id`. S3's spurious "Object Tags Added" event (PutObject
    always re-tags the new object) is left as is: rules that match detail-type "Object Created" ignore it."""
    import copy
    import logging
    import uuid

    from moto.events.models import Rule
    from moto.events.utils import _BASE_EVENT_MESSAGE
    from moto.stepfunctions.responses import get_backend

    log = logging.getLogger(__name__)
    send_to_targets = Rule.send_to_targets

    def _send_to_targets(self, original_event, transform_input: bool = True) -> None:
        if self.state != "ENABLED" or not self.event_pattern.matches_event(original_event):
            return
        if original_event.get("id") == _BASE_EVENT_MESSAGE["id"]:
            original_event["id"] = str(uuid.uuid4())  # S3 builds every event from one template: stamp it once
        for target in self.targets:
            try:
                arn = target["Arn"]
                if arn.split(":")[2] == "states":
                    _, _, _, region, account = arn.split(":")[:5]
                    get_backend(account, region).start_execution(
                        arn, str(uuid.uuid4()), _step_functions_input(target, original_event))
                else:
                    one_target = copy.copy(self)
                    one_target.targets = [target]
                    send_to_targets(one_target, original_event, transform_input)
            except Exception:
                log.warning("dmp-deploy compat: rule %s could not deliver event %s to %s",
                            self.name, original_event.get("id"), target.get("Arn"), exc_info=True)

    Rule.send_to_targets = _send_to_targets


# --- ECS services: rollouts and scripted circuit-breaker failures --------------------------------
#
# moto never runs a service's tasks: a deployment stays IN_PROGRESS with nothing running, forever. The gaps
# below make the embedded ECS roll services out the way AWS does, one step per DescribeServices of the
# service, so that apply's wait is exercised locally, not skipped. Tests (and only tests or local scripting)
# can make the next rollout of a service fail like a circuit-breaker rollback in AWS. (One-off tasks' exit
# codes are scripted with script_task_outcome, above.)

import json
import os
import threading as _threading

_ECS_LOCK = _threading.RLock()
_ROLLOUT_FAILURES: dict[str, str] = {}  # service name or family -> stopped reason of its tasks
_EVENTS_KEPT = 100  # AWS keeps the latest 100 service events
ROLLOUT_FAILURES_ENV = "DMP_LOCAL_ROLLOUT_FAILURES"


def script_rollout_failure(service_or_family: str,
                           reason: str = "Essential container in task exited") -> None:
    """Make the NEXT rollout of a service (by service name or task definition family) fail in the embedded
    ECS as a circuit breaker makes it fail in AWS: the new deployment's tasks stop with `reason`, its
    rolloutState becomes FAILED and, when the circuit breaker has rollback on, a rollback deployment to the
    previous task definition becomes PRIMARY and then COMPLETED. One-shot: consumed by the rollout it fails.
    For tests and local scripting only, in the process that runs the embedded AWS. A separate server process
    (`run.py local up`) reads standing rules from $DMP_LOCAL_ROLLOUT_FAILURES instead, e.g.
    '{"dmp-local-api": "CannotPullContainerError: ..."}': every rollout of those services fails while it is set."""
    with _ECS_LOCK:
        _ROLLOUT_FAILURES[service_or_family] = reason


def clear_rollout_failures() -> None:
    with _ECS_LOCK:
        _ROLLOUT_FAILURES.clear()


def _family_of(task_definition_arn: str | None) -> str:
    return (task_definition_arn or "").rsplit("/", 1)[-1].split(":")[0]


def _pin(task, status: str) -> None:
    """Fix a task's lastStatus: service tasks do not walk moto's RUNNING -> STOPPED lifecycle on describe."""
    task._transitions = []
    task.status = status


def _stop_task(task, reason: str, stop_code: str, exit_code: int | None) -> None:
    from moto.core.utils import utcnow
    _pin(task, "STOPPED")
    task.desired_status = "STOPPED"
    task.stopped_reason = reason
    task.stop_code = stop_code
    task.stopped_at = task.execution_stopped_at = utcnow()
    task.health_status = "UNKNOWN"
    _release_network_interfaces(task)
    for container in task.containers:
        container.last_status = "STOPPED"
        if exit_code is not None:
            container.exitCode = exit_code if getattr(container, "essential", True) else 0
        else:
            container.reason = reason


def _release_network_interfaces(task) -> None:
    """A stopped awsvpc task's network interface is deleted, as in AWS."""
    from moto.ec2 import ec2_backends
    ec2 = ec2_backends[task._account_id][task.region_name]
    for attachment in task.attachments:
        for detail in attachment.get("details", []):
            if detail.get("name") == "networkInterfaceId" and detail["value"] in ec2.enis:
                ec2.delete_network_interface(detail["value"])
        attachment["status"] = "DELETED"


class _Rollout:
    """The embedded ECS's service scheduler: deployments that start tasks, drain the old ones, complete,
    or fail and roll back. `advance` is one step, taken on each DescribeServices of the service."""

    def __init__(self, backend, service):
        self.backend, self.service = backend, service

    # -- events, tasks and deployments --

    def event(self, message: str) -> None:
        from moto.core.utils import utcnow
        from moto.moto_api._internal import mock_random
        self.service.events.insert(0, {"id": str(mock_random.uuid4()), "createdAt": utcnow(),
                                       "message": f"(service {self.service.name}) {message}"})
        del self.service.events[_EVENTS_KEPT:]

    def tasks(self, deployment: dict, running: bool = True) -> list:
        return [t for t in self.backend.tasks.get(self.service.cluster_name, {}).values()
                if getattr(t, "_dmp_deployment", None) == deployment["id"]
                and (t.desired_status == "RUNNING") == running]

    def start_tasks(self, deployment: dict, count: int) -> list:
        from moto.core.utils import utcnow
        from moto.ecs.models import Task
        cluster = self.backend._get_cluster(self.service.cluster_name)
        definition = self.backend.describe_task_definition(deployment["taskDefinition"])
        network = self.service.network_configuration or None
        strategy = getattr(self.service, "capacity_provider_strategy", None) or []
        started = []
        for _ in range(count):
            task = Task(cluster, definition, None, None, backend=self.backend, group=f"service:{self.service.name}",
                        launch_type=self.service.launch_type or "", started_by=deployment["id"],
                        networking_configuration=network if network and network.get("awsvpcConfiguration",
                                                                                    {}).get("securityGroups") else None,
                        capacity_provider_name=strategy[0]["capacityProvider"] if strategy else None)
            task.created_at = task.started_at = utcnow()
            task._dmp_deployment = deployment["id"]
            _pin(task, "RUNNING")
            self.backend.tasks.setdefault(cluster.name, {})[task.task_arn] = task
            started.append(task)
        return started

    def stop_tasks(self, tasks: list, reason: str, stop_code: str = "ServiceSchedulerInitiated",
                   exit_code: int | None = None) -> None:
        for task in tasks:
            _stop_task(task, reason, stop_code, exit_code)

    def new_deployment(self, task_definition: str, rollback_of: str | None = None) -> dict:
        from moto.core.utils import utcnow
        from moto.moto_api._internal import mock_random
        now = utcnow()
        for d in self.service.deployments:
            d["status"] = "ACTIVE"
        deployment = {
            "id": f"ecs-svc/{mock_random.randint(10**18, 10**19 - 1)}",
            "status": "PRIMARY",
            "taskDefinition": task_definition,
            "desiredCount": self.service.desired_count,
            "pendingCount": 0, "runningCount": 0, "failedTasks": 0,
            "createdAt": now, "updatedAt": now,
            "networkConfiguration": self.service.network_configuration or None,
            "rolloutState": "IN_PROGRESS",
        }
        deployment["rolloutStateReason"] = f"ECS deployment {deployment['id']} in progress."
        strategy = getattr(self.service, "capacity_provider_strategy", None)
        if strategy:
            deployment["capacityProviderStrategy"] = strategy
        else:
            deployment["launchType"] = self.service.launch_type
        with _ECS_LOCK:
            failure = None
            if rollback_of is None:  # a rollback itself never fails: it returns to what ran before
                standing = json.loads(os.environ.get(ROLLOUT_FAILURES_ENV) or "{}")
                for key in (self.service.name, _family_of(task_definition)):
                    failure = failure or _ROLLOUT_FAILURES.pop(key, None) or standing.get(key)
        deployment["_dmp_failure"] = failure
        self.service.deployments.insert(0, deployment)
        self.service.task_definition = task_definition
        return deployment

    def counts(self) -> None:
        for d in self.service.deployments:
            d["runningCount"] = len(self.tasks(d))
            d["pendingCount"] = 0
        self.service.running_count = sum(d["runningCount"] for d in self.service.deployments)
        self.service.pending_count = 0

    # -- one scheduler step --

    def advance(self) -> None:
        from moto.core.utils import utcnow
        service = self.service
        if service.status != "ACTIVE" or not service.deployments:
            return
        if len(self.tasks(service.deployments[0])) != service.desired_count or len(service.deployments) > 1:
            service._dmp_steady = False
        primary = service.deployments[0]
        if primary["rolloutState"] == "FAILED":
            return  # failed with nothing to roll back to: ECS starts nothing more for it
        breaker = (getattr(service, "deployment_configuration", None) or {}).get("deploymentCircuitBreaker") or {}
        primary["desiredCount"] = service.desired_count
        running = self.tasks(primary)
        if primary.get("_dmp_failure") and primary["rolloutState"] == "IN_PROGRESS":
            if not primary["failedTasks"] or not breaker.get("enable"):
                # The new tasks start and stop; without a circuit breaker ECS keeps trying, forever.
                failing = self.start_tasks(primary, max(service.desired_count, 1))
                self.stop_tasks(failing, primary.get("_dmp_failure"), "EssentialContainerExited", exit_code=1)
                primary["failedTasks"] += len(failing)
                self.event(f"has started {len(failing)} tasks: "
                           + " ".join(f"(task {t.id})" for t in failing) + ".")
            else:
                self.fail(primary, rollback=breaker.get("rollback"))
        elif len(running) < service.desired_count:
            started = self.start_tasks(primary, service.desired_count - len(running))
            self.event(f"has started {len(started)} tasks: " + " ".join(f"(task {t.id})" for t in started) + ".")
        elif len(running) > service.desired_count:
            extra = running[service.desired_count:]
            self.stop_tasks(extra, "Scaling activity initiated by (service " + service.name + ")")
            self.event(f"has stopped {len(extra)} running tasks: " + " ".join(f"(task {t.id})" for t in extra) + ".")
        elif len(service.deployments) > 1:
            for old in service.deployments[1:]:
                stopping = self.tasks(old)
                self.stop_tasks(stopping, f"Scaling activity initiated by (deployment {primary['id']})")
                if stopping:
                    self.event(f"has stopped {len(stopping)} running tasks: "
                               + " ".join(f"(task {t.id})" for t in stopping) + ".")
            del service.deployments[1:]
        elif primary["rolloutState"] == "IN_PROGRESS":
            primary["rolloutState"] = "COMPLETED"
            primary["rolloutStateReason"] = f"ECS deployment {primary['id']} completed."
            self.event(f"(deployment {primary['id']}) deployment completed.")
            self.event("has reached a steady state.")
            service._dmp_steady = True
        elif not getattr(service, "_dmp_steady", False):  # e.g. after scaling: steady again
            self.event("has reached a steady state.")
            service._dmp_steady = True
        else:
            return
        primary["updatedAt"] = utcnow()
        self.counts()

    def fail(self, failed: dict, rollback: bool) -> None:
        failed["rolloutState"] = "FAILED"
        failed["rolloutStateReason"] = "ECS deployment circuit breaker: tasks failed to start."
        self.event(f"(deployment {failed['id']}) deployment failed: tasks failed to start.")
        previous = next((d for d in self.service.deployments[1:]), None)
        if rollback and previous:
            self.event(f"rolling back to deployment {previous['id']}.")
            self.new_deployment(previous["taskDefinition"], rollback_of=failed["id"])
        # With nothing to roll back to (or rollback off), the failed deployment stays PRIMARY with no tasks.


@gap
def ecs_services_roll_out() -> None:
    """AWS: CreateService/UpdateService start a deployment that launches tasks, drains the previous
    deployment, then completes (rolloutState IN_PROGRESS -> COMPLETED, runningCount reaching desiredCount,
    events such as "has reached a steady state."); a circuit breaker marks a failing deployment FAILED and,
    with rollback, rolls back to the previous task definition. CreateService stores deploymentConfiguration,
    capacityProviderStrategy, enableExecuteCommand, healthCheckGracePeriodSeconds and enableECSManagedTags.
    moto 5.2.5 ignores those five on create (launchType defaults to EC2 even with a capacity provider
    strategy), never runs service tasks, keeps every deployment IN_PROGRESS forever, sets runningCount to
    desiredCount on update, ignores ListTasks' serviceName filter and keeps deleted services' tasks running.
    Here each DescribeServices advances every described ACTIVE service one scheduler step (see _Rollout)."""
    from moto.ecs.models import EC2ContainerServiceBackend
    from moto.ecs.responses import EC2ContainerServiceResponse

    create_response = EC2ContainerServiceResponse.create_service
    update_service = EC2ContainerServiceBackend.update_service
    describe_services = EC2ContainerServiceBackend.describe_services
    delete_service = EC2ContainerServiceBackend.delete_service
    list_tasks = EC2ContainerServiceBackend.list_tasks

    def create_service(self):
        result = create_response(self)
        service = self.ecs_backend._get_service(self._get_param("cluster", "default"), self._get_param("serviceName"))
        with _ECS_LOCK:
            strategy = self._get_param("capacityProviderStrategy")
            if strategy:
                service.capacity_provider_strategy = strategy
                if not self._get_param("launchType"):
                    service.launch_type = None
            service.deployment_configuration = self._get_param("deploymentConfiguration") or {
                "deploymentCircuitBreaker": {"enable": False, "rollback": False},
                "maximumPercent": 200, "minimumHealthyPercent": 100}
            service.enable_execute_command = bool(self._get_param("enableExecuteCommand", False))
            service.enable_ecs_managed_tags = bool(self._get_param("enableECSManagedTags", False))
            grace = self._get_param("healthCheckGracePeriodSeconds")
            if grace is not None:
                service.health_check_grace_period_seconds = grace
            service.deployments = []
            if service.task_definition and service.deployment_controller.get("type") == "ECS":
                _Rollout(self.ecs_backend, service).new_deployment(service.task_definition)
            service.running_count = service.pending_count = 0
        return result

    def patched_update_service(self, properties):
        properties = dict(properties)
        force = properties.pop("force_new_deployment", False)
        with _ECS_LOCK:
            service = self._get_service(properties.get("cluster", "default"), properties["service"].split("/")[-1])
            before = (service.task_definition, repr(service.network_configuration), repr(service.load_balancers),
                      repr(getattr(service, "capacity_provider_strategy", None)))
            current = service.task_definition
            service = update_service(self, properties)
            if service.task_definition != current:  # moto stores what was given: AWS stores the revision ARN
                service.task_definition = self.describe_task_definition(service.task_definition).arn
            after = (service.task_definition, repr(service.network_configuration), repr(service.load_balancers),
                     repr(getattr(service, "capacity_provider_strategy", None)))
            rollout = _Rollout(self, service)
            if service.deployment_controller.get("type") == "ECS" and (force or before != after):
                rollout.new_deployment(service.task_definition)
            rollout.counts()  # moto set runningCount to the new desiredCount: nothing started yet
        return service

    def patched_describe_services(self, cluster_str, names):
        services, failures = describe_services(self, cluster_str, names)
        with _ECS_LOCK:
            for service in services:
                _Rollout(self, service).advance()
        return services, failures

    def patched_delete_service(self, cluster_name, service_name, force):
        service = delete_service(self, cluster_name, service_name, force)
        with _ECS_LOCK:
            rollout = _Rollout(self, service)
            for deployment in service.deployments:
                rollout.stop_tasks(rollout.tasks(deployment), "Service deleted")
            service.deployments = []
            service.running_count = service.desired_count = 0
        return service

    def patched_list_tasks(self, cluster_str=None, container_instance=None, family=None, started_by=None,
                           service_name=None, desiredStatus=None):
        found = list_tasks(self, cluster_str, container_instance, family, started_by, None, desiredStatus)
        if service_name:
            found = [t for t in found if t.group == f"service:{service_name.split('/')[-1]}"]
        return found

    EC2ContainerServiceResponse.create_service = create_service
    EC2ContainerServiceBackend.update_service = patched_update_service
    EC2ContainerServiceBackend.describe_services = patched_describe_services
    EC2ContainerServiceBackend.delete_service = patched_delete_service
    EC2ContainerServiceBackend.list_tasks = patched_list_tasks

    from moto.moto_api._internal.models import MotoAPIBackend

    reset = MotoAPIBackend.reset

    def reset_with_rollout_failures(self) -> None:  # a reset of the embedded AWS forgets scripted failures
        clear_rollout_failures()
        reset(self)

    MotoAPIBackend.reset = reset_with_rollout_failures


@gap
def efs_puts_backup_policies() -> None:
    """AWS: PutBackupPolicy turns a file system's automatic backups on or off in place, and
    DescribeBackupPolicy then reports ENABLED or DISABLED. moto 5.2.5 has no PutBackupPolicy (backups are
    fixed at creation) and answers DescribeBackupPolicy with PolicyNotFound when they are off, which the
    tool reads as off (AWS's answer for a file system that never had a backup policy)."""
    import json

    from moto.efs.exceptions import FileSystemNotFound
    from moto.efs.responses import EFSResponse

    def put_backup_policy(self):
        file_system_id = self._get_param("FileSystemId")
        status = (self._get_param("BackupPolicy") or {}).get("Status")
        if file_system_id not in self.efs_backend.file_systems_by_id:
            raise FileSystemNotFound(file_system_id)
        self.efs_backend.file_systems_by_id[file_system_id]._backup = status in ("ENABLED", "ENABLING")
        return json.dumps({"BackupPolicy": {"Status": status}}), {"Content-Type": "application/json"}

    EFSResponse.put_backup_policy = put_backup_policy


@gap
def efs_deletes_file_system_policies() -> None:
    """AWS: DeleteFileSystemPolicy puts the default policy back (full access for any client that can reach
    a mount target), and DescribeFileSystemPolicy then answers PolicyNotFound. moto 5.2.5 has no
    DeleteFileSystemPolicy, so a policy removed out of band, which the tool must detect and put back,
    could not be reproduced locally."""
    from moto.efs.exceptions import FileSystemNotFound
    from moto.efs.responses import EFSResponse

    def delete_file_system_policy(self):
        file_system_id = self._get_param("FileSystemId")
        if file_system_id not in self.efs_backend.file_systems_by_id:
            raise FileSystemNotFound(file_system_id)
        self.efs_backend.file_systems_by_id[file_system_id].file_system_policy = None
        return "{}", {"Content-Type": "application/json"}

    EFSResponse.delete_file_system_policy = delete_file_system_policy


@gap
def ecs_lists_only_live_services() -> None:
    """AWS: ListServices returns a cluster's ACTIVE and DRAINING services; a deleted (INACTIVE) service
    leaves the list. moto 5.2.5 keeps listing INACTIVE services, so a cluster whose services were all
    deleted would still look in use and could never be deleted."""
    from moto.ecs.models import EC2ContainerServiceBackend

    original = EC2ContainerServiceBackend.list_services

    def list_services(self, cluster_str, scheduling_strategy=None, launch_type=None):
        arns = original(self, cluster_str, scheduling_strategy, launch_type)
        inactive = {s.arn for s in self.services.values() if s.status == "INACTIVE"}
        return [arn for arn in arns if arn not in inactive]

    EC2ContainerServiceBackend.list_services = list_services


@gap
def stepfunctions_publishes_versions() -> None:
    """AWS: PublishStateMachineVersion creates a version from the machine's current revision, and is idempotent:
    when the current revision is already published, it returns that version instead of creating another.
    moto 5.2.5 has no PublishStateMachineVersion (only CreateStateMachine / UpdateStateMachine with
    `publish`), so a `live` alias moved back onto the current definition without an update could not be
    reconciled locally. Here the machine's latest version is the current revision's when it holds the same
    definition, role and configuration."""
    from moto.core.responses import ActionResult
    from moto.stepfunctions.responses import StepFunctionResponse

    snapshot = ("definition", "roleArn", "loggingConfiguration", "tracingConfiguration",
                "encryptionConfiguration", "type")

    def publish_state_machine_version(self) -> ActionResult:
        machine = self.stepfunction_backend.describe_state_machine(self._get_param("stateMachineArn"))
        latest = machine.latest_version
        if latest is None or any(getattr(latest, k, None) != getattr(machine, k, None) for k in snapshot):
            machine.publish(description=self._get_param("description"))
            latest = machine.latest_version
        return ActionResult({"creationDate": latest.creation_date, "stateMachineVersionArn": latest.arn})

    StepFunctionResponse.publish_state_machine_version = publish_state_machine_version


@gap
def ecs_lists_come_in_pages() -> None:
    """AWS: ListServices returns at most `maxResults` ARNs a page (10 when not given, at most 100) and
    ListTaskDefinitions at most `maxResults` (100 when not given, at most 100), with a `nextToken` for the rest;
    a larger maxResults is an InvalidParameterException. moto 5.2.5 returns every ARN in one answer, so counting
    calls locally would hide the pages a real account needs (benchmarks/run.py counts them)."""
    from moto.core.responses import ActionResult
    from moto.ecs.exceptions import InvalidParameterException
    from moto.ecs.responses import EC2ContainerServiceResponse

    def page(self, key: str, arns: list[str], default: int) -> ActionResult:
        size = int(self._get_param("maxResults") or default)
        if not 1 <= size <= 100:
            raise InvalidParameterException("maxResults must be between 1 and 100.")
        start = int(self._get_param("nextToken") or 0)
        result: dict = {key: arns[start:start + size]}
        if start + size < len(arns):
            result["nextToken"] = str(start + size)
        return ActionResult(result)

    def list_services(self) -> ActionResult:
        arns = self.ecs_backend.list_services(self._get_param("cluster", "default"),
                                              self._get_param("schedulingStrategy"),
                                              launch_type=self._get_param("launchType"))
        return page(self, "serviceArns", arns, 10)

    def list_task_definitions(self) -> ActionResult:
        arns = self.ecs_backend.list_task_definitions(self._get_param("familyPrefix"),
                                                      self._get_param("status", "ACTIVE"))
        return page(self, "taskDefinitionArns", arns, 100)

    EC2ContainerServiceResponse.list_services = list_services
    EC2ContainerServiceResponse.list_task_definitions = list_task_definitions


# --- issue 11: the add-users workflow -------------------------------------------------------------------------

@gap
def ecs_checks_started_by() -> None:
    """AWS: RunTask's `startedBy` is "up to 128 letters (uppercase and lowercase), numbers, hyphens (-), forward
    slash (/), and underscores (_)" (ECS API reference); anything else is an InvalidParameterException. moto 5.2.5
    stores any string, so a value with a space (run-task used to send "dmp-deploy run-task") or an execution
    name with a dot passed locally and would fail on AWS. Exempt: "AWS Step Functions", the value moto's Step
    Functions (after LocalStack) sets itself on every `.sync` RunTask, replacing the state's StartedBy: the
    service's own value, not one the tool sends."""
    import re

    from moto.ecs.exceptions import InvalidParameterException
    from moto.ecs.models import EC2ContainerServiceBackend

    allowed = re.compile(r"[A-Za-z0-9_/-]{1,128}|AWS Step Functions")
    run_task = EC2ContainerServiceBackend.run_task

    def checked_run_task(self, cluster_str, task_definition_str, count, overrides, started_by, *args, **kwargs):
        if started_by and not allowed.fullmatch(started_by):
            raise InvalidParameterException(
                "startedBy: up to 128 letters, numbers, hyphens, forward slashes and underscores are allowed.")
        return run_task(self, cluster_str, task_definition_str, count, overrides, started_by, *args, **kwargs)

    EC2ContainerServiceBackend.run_task = checked_run_task


# --- Elastic Load Balancing: the public entry and the www path router (issue 10) ---------------------------


@gap
def elbv2_sets_rule_priorities_against_the_new_order() -> None:
    """AWS: SetRulePriorities "can reorder the rules as long as there are no priority conflicts in the new
    order": swapping two rules' priorities in one call is allowed. moto 5.2.5 refuses any priority another
    rule holds now (PriorityInUse), even one that rule is moving away from in the same call."""
    from moto.elbv2.exceptions import DuplicatePriorityError, PriorityInUseError, RuleNotFoundError
    from moto.elbv2.models import ELBv2Backend

    def set_rule_priorities(self, rule_priorities):
        priorities = [p["Priority"] for p in rule_priorities]
        if len(set(priorities)) != len(priorities):
            raise DuplicatePriorityError(next(p for p in priorities if priorities.count(p) > 1))
        moving = {p["RuleArn"]: p["Priority"] for p in rule_priorities}
        for arn, priority in moving.items():
            rules = self.describe_rules(listener_arn=None, rule_arns=[arn])
            if not rules:
                raise RuleNotFoundError()
            listener = self.describe_listeners(None, [rules[0].listener_arn])[0]
            for other in listener.rules.values():
                # Conflicts are judged in the new order: a rule moving away frees its priority.
                if other.arn != arn and str(moving.get(other.arn, other.priority)) == str(priority):
                    raise PriorityInUseError()
        modified = []
        for arn, priority in moving.items():  # as moto's own: the priority as the request gave it
            rule = self.describe_rules(listener_arn=None, rule_arns=[arn])[0]
            rule.priority = priority
            modified.append(rule)
        return modified

    ELBv2Backend.set_rule_priorities = set_rule_priorities

# --- Service discovery: Cloud Map namespaces and services, and ECS services registering in them (issue 10) --
#
# The environment's private DNS namespace and one Cloud Map service per app (resources/service_discovery.py),
# which the ECS services register their tasks in.


@gap
def servicediscovery_filters_lists() -> None:
    """AWS: ListServices takes `Filters` (NAMESPACE_ID, EQ or IN) and ListNamespaces takes `Filters` (TYPE, and
    NAME with EQ or BEGINS_WITH); a ServiceSummary does not say which namespace it is in, so the filter is the
    only way to list one namespace's services. moto 5.2.5 ignores both filters and lists everything, so a
    reader would take another namespace's `api` for its own."""
    import json as _json

    from moto.servicediscovery.responses import ServiceDiscoveryResponse

    def matches(value: str, condition: str, values: list[str]) -> bool:
        if condition == "BEGINS_WITH":
            return any(value.startswith(v) for v in values)
        return value in values  # EQ (one value) and IN

    def list_services(self) -> str:
        params = _json.loads(self.body or "{}")
        services = list(self.servicediscovery_backend.list_services())
        for f in params.get("Filters") or []:
            if f.get("Name") == "NAMESPACE_ID":
                services = [s for s in services if matches(s.namespace_id, f.get("Condition", "EQ"), f["Values"])]
        return _json.dumps({"Services": [s.to_json() for s in services]})

    def list_namespaces(self):
        params = _json.loads(self.body or "{}")
        namespaces = list(self.servicediscovery_backend.list_namespaces())
        for f in params.get("Filters") or []:
            attribute = {"TYPE": "type", "NAME": "name"}.get(f.get("Name"))
            if attribute:
                namespaces = [n for n in namespaces
                              if matches(getattr(n, attribute), f.get("Condition", "EQ"), f["Values"])]
        return 200, {}, _json.dumps({"Namespaces": [n.to_json() for n in namespaces]})

    ServiceDiscoveryResponse.list_services = list_services
    ServiceDiscoveryResponse.list_namespaces = list_namespaces


SERVICEDISCOVERY_OPERATION_STEPS = ("SUBMITTED", "PENDING", "SUCCESS")


@gap
def servicediscovery_operations_take_time() -> None:
    """AWS: creating, updating or deleting a namespace (and updating a service) is an asynchronous operation:
    the call returns an OperationId whose GetOperation status goes SUBMITTED -> PENDING -> SUCCESS (or FAIL),
    often over tens of seconds, and only then is the change done. moto 5.2.5 reports SUCCESS at once, so code
    that forgot to wait would pass locally. Here each GetOperation moves an operation one step on."""
    from moto.servicediscovery.models import Operation, ServiceDiscoveryBackend

    operation_init = Operation.__init__
    get_operation = ServiceDiscoveryBackend.get_operation

    def __init__(self, *args, **kwargs) -> None:
        operation_init(self, *args, **kwargs)
        self._dmp_step = 0
        self.status = SERVICEDISCOVERY_OPERATION_STEPS[0]

    def patched_get_operation(self, operation_id: str):
        operation = get_operation(self, operation_id)
        answer_status = SERVICEDISCOVERY_OPERATION_STEPS[operation._dmp_step]
        operation._dmp_step = min(operation._dmp_step + 1, len(SERVICEDISCOVERY_OPERATION_STEPS) - 1)
        operation.status = answer_status
        return operation

    Operation.__init__ = __init__
    ServiceDiscoveryBackend.get_operation = patched_get_operation


@gap
def servicediscovery_namespaces_share_a_vpc() -> None:
    """AWS: a VPC may hold several private DNS namespaces (e.g. two environments' `dmp-a.internal` and
    `dmp-b.internal`); creating one with the same name in the same VPC is NamespaceAlreadyExists.
    moto 5.2.5 refuses any second private namespace in a VPC (ConflictingDomainExists)."""
    import threading

    from moto.core.exceptions import JsonRESTError
    from moto.servicediscovery.models import ServiceDiscoveryBackend

    create = ServiceDiscoveryBackend.create_private_dns_namespace
    lock = threading.Lock()

    def create_private_dns_namespace(self, name, creator_request_id, description, vpc, tags, properties):
        with lock:
            if any(ns.vpc == vpc and ns.name == name for ns in self.namespaces.values()):
                raise JsonRESTError("NamespaceAlreadyExists", f"Namespace {name} already exists in {vpc}")
            everything = self.namespaces
            self.namespaces = {k: ns for k, ns in everything.items() if ns.vpc != vpc}  # what moto checks
            try:
                return create(self, name, creator_request_id, description, vpc, tags, properties)
            finally:
                self.namespaces = {**everything, **self.namespaces}

    ServiceDiscoveryBackend.create_private_dns_namespace = create_private_dns_namespace


@gap
def servicediscovery_refuses_to_delete_a_namespace_in_use() -> None:
    """AWS: DeleteNamespace fails with ResourceInUse while the namespace still contains services (they must be
    deleted first). moto 5.2.5 deletes it and leaves its services behind, so a wrong deletion order would pass
    locally."""
    from moto.core.exceptions import JsonRESTError
    from moto.servicediscovery.models import ServiceDiscoveryBackend

    delete_namespace = ServiceDiscoveryBackend.delete_namespace

    def patched_delete_namespace(self, namespace_id: str) -> str:
        if any(s.namespace_id == namespace_id for s in self.services.values()):
            raise JsonRESTError("ResourceInUse", f"Namespace {namespace_id} has associated services")
        return delete_namespace(self, namespace_id)

    ServiceDiscoveryBackend.delete_namespace = patched_delete_namespace


@gap
def ecs_service_registry_changes_start_a_deployment() -> None:
    """AWS: UpdateService with other `serviceRegistries` starts a new deployment (tasks are registered when they
    start). With the rollout emulation above, moto_compat starts one only for a new task definition, network,
    load balancers or capacity provider strategy: a service's registry could be changed without a rollout."""
    from moto.ecs.models import EC2ContainerServiceBackend

    update_service = EC2ContainerServiceBackend.update_service

    def patched_update_service(self, properties):
        registries = properties.get("service_registries")
        if registries is not None:
            service = self._get_service(properties.get("cluster", "default"), properties["service"].split("/")[-1])
            if list(registries) != list(service.service_registries or []):
                properties = {**properties, "force_new_deployment": True}
        return update_service(self, properties)

    EC2ContainerServiceBackend.update_service = patched_update_service


@gap
def ecs_registers_service_tasks_in_cloud_map() -> None:
    """AWS: a service with `serviceRegistries` registers each of its tasks in those Cloud Map services once it
    runs (instance id = the task id, attributes AWS_INSTANCE_IPV4 = the task's private IP, ECS_CLUSTER_NAME,
    ECS_SERVICE_NAME, ECS_TASK_DEFINITION_FAMILY), so DiscoverInstances (and DNS) answer with the tasks' IPs, and
    deregisters a task when it stops; a Cloud Map service that still has instances cannot be deleted
    (ResourceInUse). moto 5.2.5 stores `serviceRegistries` and does nothing with them (and with the rollout
    emulation above, service tasks run only there), and deletes a Cloud Map service whatever it holds."""
    from moto.core.exceptions import JsonRESTError
    from moto.servicediscovery.models import ServiceDiscoveryBackend, servicediscovery_backends

    start_tasks = _Rollout.start_tasks
    stop_tasks = _Rollout.stop_tasks
    delete_service = ServiceDiscoveryBackend.delete_service

    def registries(rollout) -> list:
        """The Cloud Map services (models) the rollout's service registers in; a deleted one is skipped, as ECS
        skips it with a service event."""
        backend = servicediscovery_backends[rollout.backend.account_id][rollout.service.region_name]
        by_arn = {s.arn: s for s in backend.services.values()}
        return [(backend, by_arn[r["registryArn"]]) for r in rollout.service.service_registries or []
                if r.get("registryArn") in by_arn]

    def ip_of(task) -> str | None:
        return next((d["value"] for a in task.attachments for d in a.get("details", [])
                     if d.get("name") == "privateIPv4Address"), None)

    def patched_start_tasks(self, deployment: dict, count: int) -> list:
        started = start_tasks(self, deployment, count)
        for backend, registry in registries(self):
            for task in started:
                backend.register_instance(registry.id, task.id, None, {
                    "AWS_INSTANCE_IPV4": ip_of(task) or "", "ECS_CLUSTER_NAME": self.service.cluster_name,
                    "ECS_SERVICE_NAME": self.service.name,
                    "ECS_TASK_DEFINITION_FAMILY": _family_of(deployment["taskDefinition"])})
        return started

    def patched_stop_tasks(self, tasks: list, *args, **kwargs) -> None:
        for backend, registry in registries(self):
            for task in tasks:
                if any(i.instance_id == task.id for i in registry.instances):
                    backend.deregister_instance(registry.id, task.id)
        stop_tasks(self, tasks, *args, **kwargs)

    def patched_delete_service(self, service_id: str) -> None:
        service = self.services.get(service_id)
        if service is not None and service.instances:
            raise JsonRESTError("ResourceInUse", f"Service {service_id} has {len(service.instances)} instance(s)")
        delete_service(self, service_id)

    _Rollout.start_tasks = patched_start_tasks
    _Rollout.stop_tasks = patched_stop_tasks
    ServiceDiscoveryBackend.delete_service = patched_delete_service


@gap
def servicediscovery_creates_services_once() -> None:
    """AWS: CreateService is idempotent on CreatorRequestId (botocore fills one in and keeps it across its own
    retries, so a request retried after a lost answer returns the service it created), and a second service
    with the same name in a namespace is ServiceAlreadyExists. moto 5.2.5 creates a duplicate every time, so a
    retried create would leave two `api` services in the namespace."""
    from moto.core.exceptions import JsonRESTError
    from moto.servicediscovery.models import ServiceDiscoveryBackend

    create_service = ServiceDiscoveryBackend.create_service

    def patched_create_service(self, name, namespace_id, creator_request_id, *args, **kwargs):
        for service in self.services.values():
            if creator_request_id and service.creator_request_id == creator_request_id:
                return service
            if service.name == name and service.namespace_id == namespace_id:
                raise JsonRESTError("ServiceAlreadyExists", f"Service {name} already exists in {namespace_id}")
        return create_service(self, name, namespace_id, creator_request_id, *args, **kwargs)

    ServiceDiscoveryBackend.create_service = patched_create_service


# --- Benchmarks: the pages a real account's lists come in (benchmarks/run.py counts them) -------------------


@gap
def servicediscovery_lists_come_in_pages() -> None:
    """AWS: ListServices and ListNamespaces return at most `MaxResults` entries (100 when not given, at most
    100) with a `NextToken` for the rest; a larger MaxResults is a ValidationException. moto 5.2.5 returns every
    entry in one answer, so counting calls locally would hide the second ListServices page the 200-service
    benchmark needs in AWS. Wraps the filtering lists above (`servicediscovery_filters_lists`)."""
    import json as _json

    from moto.core.exceptions import JsonRESTError
    from moto.servicediscovery.responses import ServiceDiscoveryResponse

    def paged(listing: Callable, key: str) -> Callable:
        def page(self):
            answer = listing(self)
            status, headers, body = answer if isinstance(answer, tuple) else (200, {}, answer)
            params = _json.loads(self.body or "{}")
            size = int(params.get("MaxResults") or 100)
            if not 1 <= size <= 100:
                raise JsonRESTError("ValidationException", "MaxResults must be between 1 and 100.")
            start = int(params.get("NextToken") or 0)
            entries = _json.loads(body)[key]
            result: dict = {key: entries[start:start + size]}
            if start + size < len(entries):
                result["NextToken"] = str(start + size)
            return status, headers, _json.dumps(result)
        return page

    ServiceDiscoveryResponse.list_services = paged(ServiceDiscoveryResponse.list_services, "Services")
    ServiceDiscoveryResponse.list_namespaces = paged(ServiceDiscoveryResponse.list_namespaces, "Namespaces")


# --- The local task runner: ECS runs the containers' commands (issue 11 item 2) ------------------------------


def _scripted(family: str) -> bool:
    """Whether a test (or $DMP_LOCAL_TASK_OUTCOMES) scripted the outcome of `family`'s tasks."""
    return family in _TASK_OUTCOMES or family in json.loads(os.environ.get(TASK_OUTCOMES_ENV) or "{}")


@gap
def ecs_runs_the_containers_commands() -> None:
    """AWS: RunTask starts the task's containers, each running its `entryPoint` + `command` with its environment,
    secrets, volumes and task role; the task is RUNNING until an essential container exits, then STOPPED with
    each container's real `exitCode`, and its output is in the awslogs stream. moto 5.2.5 runs nothing (and with
    `ecs_tasks_run_and_stop_with_exit_codes` above, a task's life is wall-clock time and its exit codes scripted).
    Here RunTask of a task whose containers are runnable (dmp_deploy/local/task_runner.py `runnable`: images
    listed in config/local.toml's [local_runner]) and whose family has no scripted outcome runs them as local
    processes; the task stays RUNNING (its lifecycle held) until they end, then walks to STOPPED and reports
    their exit codes, or TaskFailedToStart with ECS's reason. StopTask stops the processes; moto's reset stops
    them all. Other tasks keep the scripted emulation. Tested in tests/test_local_task_runner.py (a probe task
    per piece, and the add-users workflow with its real programs)."""
    from datetime import datetime

    from moto.ecs.models import EC2ContainerServiceBackend, Task
    from moto.moto_api._internal.models import MotoAPIBackend

    from dmp_deploy.local import task_runner

    run_task = EC2ContainerServiceBackend.run_task
    stop_task = EC2ContainerServiceBackend.stop_task
    advance = Task.advance
    reset = MotoAPIBackend.reset

    def running_run_task(self, *args, **kwargs):
        tasks = run_task(self, *args, **kwargs)
        for task in tasks:
            definition = self.describe_task_definition(task.task_definition_arn)
            if not _scripted(task.family) and task_runner.runnable(definition.container_definitions):
                task_runner.start(task, definition)
        return tasks

    def held_advance(self) -> None:
        run = task_runner.run_of(self.task_arn)
        if run is not None and not run.done:
            if self._status == "STOPPED":  # StopTask: the containers are being stopped, not stopped yet
                self._status = "DEACTIVATING"
            self._time_progressed = datetime.now()  # held while the processes run; the steps count from their end
            return
        advance(self)
        if run is not None and self._status == "STOPPED" and not getattr(self, "_dmp_ran", False):
            self._dmp_ran = True
            codes = run.exit_codes()
            for container in self.containers:
                container.exitCode = None if run.start_failure else codes.get(container.name)
                if run.start_failure:
                    container.reason = run.start_failure
            if run.start_failure:
                self.stop_code, self.stopped_reason = "TaskFailedToStart", run.start_failure
            task_runner.forget(self.task_arn)  # STOPPED, exit codes read: nothing more to follow

    def stopping_stop_task(self, cluster_str: str, task_str: str, reason: str):
        task = stop_task(self, cluster_str, task_str, reason)
        task_runner.stop(task.task_arn)
        return task

    def reset_stopping_processes(self) -> None:
        task_runner.stop_all()
        reset(self)

    EC2ContainerServiceBackend.run_task = running_run_task
    EC2ContainerServiceBackend.stop_task = stopping_stop_task
    Task.advance = held_advance
    MotoAPIBackend.reset = reset_stopping_processes


# --- issue 11: IAM enforced -----------------------------------------------------------------------------------------
#
# The evaluation itself is dmp_deploy/local/iam_enforcement.py; the gaps below hook it in where AWS evaluates.
# Requests signed with the deployer's `local` key are never evaluated (locally the deployer is the account's
# administrator); those signed with an assumed role's or an IAM user's key always are; any other key is refused.


def _json_protocol(response) -> bool:
    return "json" in (response.headers.get("Content-Type") or "") or bool(response.headers.get("X-Amz-Target"))


def _access_denied(response, error, s3: bool = False):
    """AWS's refusal in the request's protocol: S3 `AccessDenied` (403), JSON APIs `AccessDeniedException`
    (400), query APIs `AccessDenied` (403), with AWS's message (who, what, on which resource, why)."""
    from moto.core.exceptions import JsonRESTError
    from moto.s3.exceptions import S3ClientError

    if s3:
        return S3ClientError("AccessDenied", str(error))
    if _json_protocol(response):
        return JsonRESTError("AccessDeniedException", str(error))
    return _xml_error("AccessDenied", str(error), 403)


def _xml_error(code: str, message: str, status: int):
    from moto.core.exceptions import _RESTError

    refusal = _RESTError(code, message)
    refusal.code = status
    return refusal


def _invalid_token(response, error, s3: bool = False):
    """AWS's refusal of credentials it does not accept: S3 `InvalidAccessKeyId` / `InvalidToken` /
    `ExpiredToken` (403), JSON APIs `UnrecognizedClientException`, query APIs `InvalidClientTokenId`."""
    from moto.core.exceptions import JsonRESTError
    from moto.s3.exceptions import S3ClientError

    message = str(error)
    if s3:
        code = getattr(error, "s3_code", "InvalidToken")
        if code == "InvalidAccessKeyId":
            message = "The AWS Access Key Id you provided does not exist in our records."
        return S3ClientError(code, message)
    if _json_protocol(response):
        refusal = JsonRESTError("UnrecognizedClientException", message)
        refusal.code = 403
        return refusal
    return _xml_error("InvalidClientTokenId", message, 403)


@gap
def iam_evaluates_requests_signed_by_roles_and_users() -> None:
    """AWS: every request is authorised against its signer's identity policies and the resource's policy, with
    the request's condition keys; a role's temporary credentials carry the role's permissions and nothing else.
    moto 5.2.5 (server mode): no request is authorised at all unless INITIAL_NO_AUTH_ACTION_COUNT is lowered,
    and then every request must be signed by a known IAM key (the deployer's `local` key would be refused), non-S3
    calls are judged against the resource `*`, and conditions are ignored. Here a request signed by an assumed
    role's or IAM user's key is evaluated by iam_enforcement (resources, conditions, explicit deny, bucket and key
    policies, S3's KMS calls on the caller's behalf); the deployer's `local` key and moto's internal `ak`
    (iam_enforcement.UNRESTRICTED_KEYS) are unrestricted, and any other key is refused as AWS refuses a key it
    does not know (InvalidClientTokenId / UnrecognizedClientException / S3 InvalidAccessKeyId)."""
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.moto_api._internal.models import MotoAPIBackend

    from dmp_deploy.local import iam_enforcement as iam

    normal = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action
    s3_action = ActionAuthenticatorMixin._authenticate_and_authorize_s3_action

    def principal(self, s3: bool):
        key, token = iam.request_key(self.headers, getattr(self, "querystring", {}))
        try:
            return iam.principal_for_key(key, token, self.current_account)
        except ValueError as exc:
            raise _invalid_token(self, exc, s3) from None

    def service_of(self) -> str:
        auth = self.headers.get("Authorization") or ""
        scope = iam.re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", auth)
        return scope.group(1) if scope else self.service_name

    def authorize_normal(self, resource: str = "*") -> None:
        who = principal(self, s3=False)
        if who is None:
            return normal(self, resource)
        service = service_of(self)
        try:
            for request in iam.api_request(self, service, self._get_action()):
                iam.check_request(who, request)
        except iam.AccessDenied as exc:
            iam.record("request", exc)
            raise _access_denied(self, exc) from None

    def authorize_s3(self, bucket_name: str | None = None, key_name: str | None = None) -> None:
        who = principal(self, s3=True)
        if who is None:
            return s3_action(self, bucket_name, key_name)
        try:
            iam.check_request(who, iam.s3_request(self, bucket_name, key_name))
        except iam.AccessDenied as exc:
            iam.record("request", exc)
            raise _access_denied(self, exc, s3=True) from None

    ActionAuthenticatorMixin._authenticate_and_authorize_normal_action = authorize_normal
    ActionAuthenticatorMixin._authenticate_and_authorize_s3_action = authorize_s3

    reset = MotoAPIBackend.reset

    def reset_with_denials(self) -> None:
        iam.clear_denials()
        reset(self)

    MotoAPIBackend.reset = reset_with_denials


_ROLE_SESSIONS: dict[str, object] = {}  # role ARN -> the embedded STS session Step Functions signs with
_ROLE_SESSIONS_LOCK = _threading.Lock()


def _role_credentials(role_arn: str, region: str, session_name: str):
    """A live session of `role_arn` from the embedded STS (in-process, as the service itself would assume it)."""
    from datetime import datetime, timezone

    from moto.sts.models import sts_backends

    account = role_arn.split(":")[4]
    backend = sts_backends[account]["aws"]
    with _ROLE_SESSIONS_LOCK:
        session = _ROLE_SESSIONS.get(role_arn)
        fresh = session is not None and any(s is session for s in backend.assumed_roles) and \
            session.expiration.replace(tzinfo=timezone.utc) > datetime.now(timezone.utc)
        if not fresh:
            session = backend.assume_role(region_name=region, role_session_name=session_name, role_arn=role_arn,
                                          policy=None, duration=3600, external_id=None)
            _ROLE_SESSIONS[role_arn] = session
        return session


@gap
def stepfunctions_calls_services_as_the_machines_role() -> None:
    """AWS: a state machine's service integrations (ecs:runTask, aws-sdk:s3:deleteObject, ...) call the service
    with the machine's role (or the state's Credentials role): what the role's policies do not allow fails the
    Task state with the service's error (ECS: `ECS.AccessDeniedException`, naming the role and action).
    moto 5.2.5 signs every such call with the fixed key `ak`, so no policy matters. Here they are signed with a
    session of the role from the embedded STS (session name `StepFunctions`), so
    `iam_evaluates_requests_signed_by_roles_and_users` judges them. A call made without a role (the emulator's
    own bookkeeping), or as a role that does not exist (a machine AWS would have refused at creation; moto
    accepts any role ARN), keeps the unrestricted key, with a warning for the latter. A role whose trust policy
    does not let states.amazonaws.com assume it fails the Task state (States.Runtime, naming the role and
    sts:AssumeRole) before any call is made."""
    import logging

    log = logging.getLogger("dmp_deploy.local.iam")
    import sys

    from dmp_deploy.local import iam_enforcement as iam

    import boto3
    from botocore.config import Config

    from moto.core.models import botocore_stubber
    from moto.settings import moto_server_port
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds
    from moto.stepfunctions.parser.asl.utils import boto_client

    original = boto_client.boto_client_for

    def role_exists(role_arn: str) -> bool:
        from moto.iam.models import iam_backends
        try:
            iam_backends[role_arn.split(":")[4]]["aws"].get_role_by_arn(role_arn)
            return True
        except Exception:  # noqa: BLE001 - moto's NotFoundException, or not an IAM role ARN
            return False

    def boto_client_for(region: str, service: str, state_credentials=None):
        role_arn = getattr(state_credentials, "role_arn", None)
        if not role_arn or botocore_stubber.enabled:
            return original(region, service, state_credentials)
        if not role_exists(role_arn):
            # AWS refuses such a machine at CreateStateMachine; moto creates it. Nothing to judge it by.
            log.warning("state machine role %s does not exist in the embedded IAM: its calls are not evaluated",
                        role_arn)
            return original(region, service, state_credentials)
        try:
            iam.check_machine_role_trust(role_arn)
        except iam.AccessDenied as exc:
            iam.record("states", exc)
            # Not a service's error (no `ECS.`/`S3.` name): Step Functions could not get the role's credentials.
            raise PermissionError(f"Step Functions could not assume the state machine's role {role_arn} "
                                  f"(sts:AssumeRole): {exc.reason}") from None
        session = _role_credentials(role_arn, region, "StepFunctions")
        return boto3.client(
            service_name=service, region_name=region, endpoint_url=f"http://localhost:{moto_server_port()}",
            aws_access_key_id=session.access_key_id, aws_secret_access_key=session.secret_access_key,
            aws_session_token=session.session_token,
            config=Config(parameter_validation=False, retries={"max_attempts": 0, "total_max_attempts": 1},
                          connect_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
                          read_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS))

    import importlib

    for integration in ("aws_sdk", "ecs"):  # the integrations the workflow uses, imported before patching
        importlib.import_module("moto.stepfunctions.parser.asl.component.state.exec.state_task.service."
                                f"state_task_service_{integration}")

    boto_client.boto_client_for = boto_client_for
    for module in list(sys.modules.values()):  # every interpreter module that imported it by name
        if getattr(module, "__name__", "").startswith("moto.stepfunctions") and \
                getattr(module, "boto_client_for", None) is original:
            module.boto_client_for = boto_client_for


FAILED_INVOCATIONS = ("AWS/Events", "FailedInvocations")  # CloudWatch namespace and metric, dimension RuleName


@gap
def eventbridge_starts_step_functions_as_the_target_role() -> None:
    """AWS: EventBridge invokes a Step Functions target as the target's RoleArn: the role must trust
    events.amazonaws.com and allow `states:StartExecution`, which Step Functions authorises against the
    UNQUALIFIED machine ARN with the alias or version as `states:StateMachineQualifier`. A refused invocation
    starts nothing and is counted in the rule's `FailedInvocations` metric (namespace AWS/Events, dimension
    RuleName; the event goes to the target's dead-letter queue, if it has one). moto 5.2.5 (with
    `eventbridge_delivers_to_step_functions` above) starts the execution whatever the role. Here each Step Functions
    target is authorised first (iam_enforcement.deliver_as); a refusal is logged naming the role and action, kept
    in iam_enforcement.denials(), and counted in FailedInvocations. Dead-letter queues are not emulated."""
    import copy

    from moto.cloudwatch.models import cloudwatch_backends
    from moto.core.utils import utcnow
    from moto.events.models import Rule

    from dmp_deploy.local import iam_enforcement as iam

    deliver = Rule.send_to_targets

    def send_to_targets(self, event, transform_input: bool = True) -> None:
        if self.state != "ENABLED" or not self.event_pattern.matches_event(event):
            return deliver(self, event, transform_input)
        allowed = []
        for target in self.targets:
            if target["Arn"].split(":")[2] == "states":
                try:
                    iam.deliver_as(target.get("RoleArn"), target["Arn"], self.arn)
                except iam.AccessDenied as exc:
                    iam.record("eventbridge", exc, rule=self.name, target=target["Id"], role=target.get("RoleArn"))
                    cloudwatch_backends[self.account_id][self.region_name].put_metric_data(
                        namespace=FAILED_INVOCATIONS[0], metric_data=[{
                            "MetricName": FAILED_INVOCATIONS[1], "Value": 1.0, "Unit": "Count",
                            "Timestamp": utcnow(), "Dimensions": [{"Name": "RuleName", "Value": self.name}]}])
                    continue
            allowed.append(target)
        permitted = copy.copy(self)
        permitted.targets = allowed
        return deliver(permitted, event, transform_input)

    Rule.send_to_targets = send_to_targets


@gap
def s3_bucket_policies_are_judged_with_their_conditions() -> None:
    """AWS: a bucket policy is evaluated with the request's condition keys (`s3:x-amz-server-side-encryption`,
    `s3:if-none-match`, `aws:SecureTransport`, ...). moto 5.2.5 evaluates it for object calls by anyone, with no
    request context and every operator but StringEquals taken as matching, so the add-users bucket policy's
    denies refuse every PutObject, even a compliant one. Here moto's own check is off; the policy is judged by
    iam_enforcement with the request's context, for the requests it evaluates (role sessions and IAM users; the
    deployer's `local` key is unrestricted)."""
    from moto.iam.access_control import PermissionResult
    from moto.s3.models import FakeBucket

    FakeBucket.get_permission = lambda self, action, resource: PermissionResult.NEUTRAL


# --- executions do not outlive the world they run in ----------------------------------------------------------------


def stop_running_executions(cause: str) -> int:
    """Stop every running state-machine execution of the embedded AWS (its interpreter thread ends at the next
    state, or at the next poll of a `.sync` task), as StopExecution does. Returns how many were stopped."""
    from moto.core.utils import utcnow
    from moto.stepfunctions.models import stepfunctions_backends
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    stopped = 0
    for backends in (stepfunctions_backends, stepfunctions_parser_backends):
        for regions in list(dict.values(backends)):
            for backend in list(dict.values(regions)):
                for machine in list(backend.state_machines):
                    for revision in [machine, *getattr(machine, "versions", {}).values()]:
                        for execution in list(getattr(revision, "executions", [])):
                            worker = getattr(execution, "exec_worker", None)
                            env = _environment_of(worker) if worker is not None else None
                            if env is not None and env.is_running():
                                worker.stop(stop_date=utcnow(), error="States.Aborted", cause=cause)
                                stopped += 1
    return stopped


def _environment_of(worker, wait_seconds: float = 2.0):
    """The interpreter's environment of an execution worker. A worker just started builds it on its own thread
    after parsing the definition (moto's `env` is None until then): wait for it briefly, so an execution started
    a moment before a reset is stopped too rather than missed (or crashed on)."""
    import time

    deadline = time.monotonic() + wait_seconds
    while worker.env is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return worker.env


@gap
def stepfunctions_reset_stops_running_executions() -> None:
    """AWS: an execution belongs to its account; nothing of it runs once the account is gone. moto 5.2.5: a reset
    (and so a snapshot restore, which replaces the backends) drops the execution's records but its interpreter
    thread runs on, calling ECS, S3 and the local task runner of the NEXT test's world with the old execution's
    input (a stale add-users run then fails on a missing cluster and adds tasks to the new world's lists). Here a
    reset first stops every running execution; dmp_deploy/local/snapshots.py's restore does the same."""
    from moto.moto_api._internal.models import MotoAPIBackend

    reset = MotoAPIBackend.reset

    def reset_stopping_executions(self) -> None:
        stop_running_executions("the embedded AWS was reset")
        reset(self)

    MotoAPIBackend.reset = reset_stopping_executions


# --- one request at a time ------------------------------------------------------------------------------------------

_ONE_REQUEST_AT_A_TIME = _threading.RLock()  # re-entrant: a handler that calls a backend's handler in-thread


@gap
def moto_serves_one_request_at_a_time() -> None:
    """AWS: each call is atomic; two CreateSecurityGroup calls in one VPC at the same moment both succeed.
    moto 5.2.5: its backends are plain dicts and lists with no locks, and the threaded server runs requests at
    the same time, so concurrent calls corrupt or crash one another (seen in CI once the executor ran changes
    concurrently: `RuntimeError: dictionary changed size during iteration` inside CreateSecurityGroup, and a
    failed add-users run when two executions ran their tasks at once). Here the server hands requests to the
    backends one at a time. `/moto-api/` (reset, state transitions) stays outside: a reset stops the running
    executions and waits for their interpreter threads, which may be waiting for a request of their own."""
    from flask import request as flask_request
    from moto.core.utils import convert_to_flask_response

    dispatch = convert_to_flask_response.__call__

    def one_at_a_time(self, args=None, **kwargs):
        if flask_request.path.startswith("/moto-api/"):
            return dispatch(self, args, **kwargs)
        with _ONE_REQUEST_AT_A_TIME:
            return dispatch(self, args, **kwargs)

    convert_to_flask_response.__call__ = one_at_a_time


# --- SSM DescribeParameters pages (issue 14: the release tail and preflight) -----------------------------------------


@gap
def ssm_describe_parameters_honours_max_results() -> None:
    """AWS: DescribeParameters answers up to MaxResults (1 to 50) parameters a page. moto 5.2.5 ignores MaxResults
    and always answers 10 a page, with a NextToken after every full page, so preflight's lookup of ten parameters by
    name took two round trips in a row locally where it takes one against AWS. Here a page holds MaxResults
    (10 when it is not given, as before), and a NextToken is given only while parameters remain."""
    from moto.core.responses import ActionResult
    from moto.ssm.responses import SimpleSystemManagerResponse

    def describe_parameters(self) -> ActionResult:
        page_size = int(self._get_param("MaxResults") or 10)
        token = self._get_param("NextToken")
        start = int(token.strip() if hasattr(token, "strip") and token.strip() else token or 0)
        found = self.ssm_backend.describe_parameters(self._get_param("Filters"), self._get_param("ParameterFilters"))
        page = found[start:start + page_size]
        response: dict = {"Parameters": [p.describe_response_object(False) for p in page]}
        if start + page_size < len(found):
            response["NextToken"] = str(start + page_size)
        return ActionResult(response)

    SimpleSystemManagerResponse.describe_parameters = describe_parameters
