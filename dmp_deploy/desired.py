"""The desired state of an environment: config plus rendered templates, turned into specs per resource kind.

`python run.py render --env E` prints `DesiredState.as_dict()`; `validate` builds it and checks it without
any AWS call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmp_deploy import container, names, placeholders, render
from dmp_deploy.config import Config
from dmp_deploy.errors import ConfigError

if TYPE_CHECKING:
    from dmp_deploy.resources.base import ResourceKind


@dataclass
class DesiredState:
    config: Config
    image_tags: dict[str, str]  # app -> tag, after --image overrides
    task_definitions: dict[str, dict] = field(default_factory=dict)  # template stem -> rendered document
    state_machines: dict[str, dict] = field(default_factory=dict)  # template stem -> ASL definition
    resources: dict[str, dict[str, dict]] = field(default_factory=dict)  # kind -> name -> canonical spec

    def as_dict(self) -> dict:
        return {"env": self.config.env, "image_tags": self.image_tags, "resources": self.resources}

    def secret_arns(self) -> list[str]:
        """Every secret ARN any task definition names: exactly what the execution role may read."""
        arns = set()
        for document in self.task_definitions.values():
            for definition in document.get("containerDefinitions", []):
                arns.update(s["valueFrom"] for s in definition.get("secrets", []))
        return sorted(arns)


def from_record(config: Config, record: dict) -> DesiredState:
    """The desired state a release recorded (for revert and drift): exactly what was applied then."""
    return DesiredState(config=config, image_tags=record.get("image_tags", {}),
                        task_definitions=record.get("task_definitions", {}),
                        state_machines=record.get("state_machines", {}),
                        resources=record.get("desired", {}))


def pins_from_record(record: dict, kinds: list["ResourceKind"]) -> dict[tuple[str, str], str]:
    """The identifiers a release pins: for each kind with a pin_key, the value the release resolved."""
    pins = {}
    for kind in kinds:
        if kind.pin_key:
            for name, ids in record.get("live", {}).get(kind.kind, {}).items():
                if kind.pin_key in ids and name in record.get("desired", {}).get(kind.kind, {}):
                    pins[(kind.kind, name)] = ids[kind.pin_key]
    return pins


# The tag of a Docker/OCI image reference (distribution/reference grammar): checked before any AWS call.
IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def parse_image_overrides(values: list[str], config: Config) -> dict[str, str]:
    """`--image APP=TAG` (repeatable) into {app: tag}; unknown apps and malformed values are errors."""
    overrides: dict[str, str] = {}
    problems = []
    for value in values or []:
        app, sep, tag = value.partition("=")
        if not sep or not app or not tag:
            problems.append(f"--image {value!r}: expected APP=TAG, e.g. --image api=release-123")
        elif app not in config.apps:
            problems.append(f"--image {value!r}: unknown app {app!r} (apps: {', '.join(sorted(config.apps))})")
        elif not IMAGE_TAG.fullmatch(tag):
            problems.append(f"--image {value!r}: {tag!r} is not a valid image tag (letters, digits, '_', '.' and "
                            f"'-', at most 128, not starting with '.' or '-')")
        elif app in overrides:
            problems.append(f"--image {value!r}: {app} is given twice (also {app}={overrides[app]}): give each "
                            f"app once")
        else:
            overrides[app] = tag
    if problems:
        raise ConfigError("\n".join(problems))
    return overrides


def template_variables(config: Config, image_tags: dict[str, str], stem: str) -> dict[str, Any]:
    """What every template sees. Helpers raise errors that name the template line."""

    @render.helper
    def secret(logical_name: str) -> str:
        if logical_name not in config.secrets:
            raise KeyError(f"secret {logical_name!r} is not in the config's [secrets] table "
                           f"(known: {', '.join(sorted(config.secrets)) or 'none'}); add its ARN there")
        return config.secrets[logical_name]

    @render.helper
    def setting(key: str) -> str:
        if key not in config.settings:
            raise KeyError(f"setting {key!r} is not in the config's [settings] table; add it there")
        return config.settings[key]

    @render.helper
    def internal_url(app: str) -> str:
        # Derived from the environment's Cloud Map namespace (resources/service_discovery.py), never configured.
        return names.internal_url(config, app)

    @render.helper
    def image(app: str, container: str) -> str:
        if app not in image_tags:
            raise KeyError(f"no image tag for app {app!r}: add [apps.{app}] to the config")
        return f"{config.images.registry}/{app}-{container}:{image_tags[app]}"

    def efs_id(kind: str, stem: str) -> str:
        return placeholders.efs_id(kind, names.family(config, stem))  # resolved when the revision is registered

    def network_reference(what: str, stem: str | None = None) -> str:
        if what == "subnets":  # resolved to live ids when the machine is written
            return placeholders.SUBNETS
        return placeholders.security_group(names.security_group(config, stem))

    def path_router_url() -> str:
        """The internal load balancer routing www by path (its DNS name, resolved when the revision is registered)."""
        return f"http://{placeholders.load_balancer_dns(names.load_balancer(config, names.WWW_LOAD_BALANCER))}"

    return {
        "path_router_url": path_router_url,
        "env": config.environment,
        "config": config,
        "efs_file_system": lambda stem="add-users": efs_id("efs_file_system", stem),
        "efs_access_point": lambda stem="add-users": efs_id("efs_access_point", stem),
        "task_subnets": lambda: network_reference("subnets"),
        "security_group_id": lambda stem: network_reference("group", stem),
        "stem": stem,
        "app": config.apps.get(stem),
        "family": names.family(config, stem),
        "secret": secret,
        "setting": setting,
        "internal_url": internal_url,
        "image": image,
        "log_group": lambda s=stem: names.log_group(config, s),
        "execution_role_arn": names.role_arn(config, names.execution_role(config)),
        "task_role_arn": lambda s=stem: names.role_arn(config, names.task_role(config, s)),
        "region": config.environment.region,
        "container_program": render.helper(container.bundle),  # a program shipped as source (container/)
    }


def render_task_definitions(config: Config, image_tags: dict[str, str],
                            directory: Path | None = None) -> dict[str, dict]:
    directory = directory or render.TASK_DEFINITIONS_DIR
    env = render.environment(directory)
    out = {}
    for path in render.documents(directory, ".json.j2"):
        stem = path.name[: -len(".json.j2")]
        out[stem] = render.render_json(env, path.name, template_variables(config, image_tags, stem), directory)
    return out


def render_state_machines(config: Config, image_tags: dict[str, str],
                          directory: Path | None = None) -> dict[str, dict]:
    directory = directory or render.ASL_DIR
    env = render.environment(directory)
    out = {}
    for path in render.documents(directory, ".asl.json"):
        stem = path.name[: -len(".asl.json")]
        out[stem] = render.render_json(env, path.name, template_variables(config, image_tags, stem), directory)
    return out


def build(config: Config, kinds: list["ResourceKind"], image_overrides: dict[str, str] | None = None,
          task_definitions_dir: Path | None = None, asl_dir: Path | None = None) -> DesiredState:
    image_tags = {app: c.image_tag for app, c in config.apps.items()}
    image_tags.update(image_overrides or {})
    state = DesiredState(config=config, image_tags=image_tags)
    state.task_definitions = render_task_definitions(config, image_tags, task_definitions_dir)
    state.state_machines = render_state_machines(config, image_tags, asl_dir)
    for kind in kinds:
        state.resources[kind.kind] = kind.desired(state)
    return state
