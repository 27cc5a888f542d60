"""Checks on the rendered desired state that need no AWS call (run by `validate` and before every plan).

Task definitions are checked against botocore's own RegisterTaskDefinition input shape, so a template
error is caught here rather than half-way through an apply.
"""

from __future__ import annotations

import botocore.session
from botocore.validate import ParamValidator

from dmp_deploy.errors import RenderError

_service_models: dict = {}


def _input_shape(service: str, operation: str):
    if service not in _service_models:
        _service_models[service] = botocore.session.get_session().get_service_model(service)
    return _service_models[service].operation_model(operation).input_shape


def check_parameters(service: str, operation: str, params: dict, where: str) -> None:
    report = ParamValidator().validate(params, _input_shape(service, operation))
    if report.has_errors():
        raise RenderError(f"{where}: not a valid {operation} request:\n{report.generate_report()}")


def check(state) -> None:
    for stem, document in sorted(state.task_definitions.items()):
        check_parameters("ecs", "RegisterTaskDefinition", document, f"task_definitions/{stem}.json.j2")
