"""Checks on the rendered desired state that need no AWS call (run by `validate` and before every plan, apply and
run-task).

Task definitions are checked against botocore's own RegisterTaskDefinition input shape, so a template
error is caught here rather than half-way through an apply. The configuration is checked for what the apps'
own code needs but no schema can see: no placeholder left in an environment that is not embedded
(unfilled.py), public URLs on hosts the router serves, and enough memory for clamd.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from botocore.validate import ParamValidator

from dmp_deploy import config as config_module
from dmp_deploy import unfilled
from dmp_deploy.botocore_models import service_model
from dmp_deploy.errors import ConfigError, RenderError


# The router serves www., assets., api., search-api. and antivirus-api. hosts only (its templates' server_name),
# so each public URL a frontend is given must be on the host of its kind.
PUBLIC_URL_HOSTS = {"login_url": "www.", "www_url": "www.", "assets_url": "assets."}
# ClamAV's documented minimum for clamd with its signatures (docs.clamav.net, "ClamAV in Docker"): 3 GiB.
CLAMD_MIN_MEMORY_MIB = 3072


def _input_shape(service: str, operation: str):
    return service_model(service).operation_model(operation).input_shape


def check_parameters(service: str, operation: str, params: dict, where: str) -> None:
    report = ParamValidator().validate(params, _input_shape(service, operation))
    if report.has_errors():
        raise RenderError(f"{where}: not a valid {operation} request:\n{report.generate_report()}")


def check(state) -> None:
    """Everything validate (and plan, apply, run-task) checks before any change: the configuration first."""
    config = state.config
    source = config_source(config.env)
    unfilled.check(config, source)
    check_public_urls(config, source)
    check_documents(state)


def check_documents(state) -> None:
    """The rendered task definitions: botocore's input shape, and clamd's memory outside the embedded AWS."""
    for stem, document in sorted(state.task_definitions.items()):
        check_parameters("ecs", "RegisterTaskDefinition", document, f"task_definitions/{stem}.json.j2")
    check_clamd_memory(state)


def check_public_urls(config, source: str) -> None:
    """Each public URL setting is https on a host the router serves, the assets host belongs to the same site as the
    www host, and the session cookie's domain covers the www host (else no session would ever come back)."""
    problems = []
    settings = config.settings
    for key, prefix in PUBLIC_URL_HOSTS.items():
        if key not in settings:
            continue
        url = urlsplit(settings[key])
        if url.scheme != "https" or not (url.hostname or "").startswith(prefix):
            problems.append(f"settings.{key}: {settings[key]!r} must be an https URL on the {prefix} host (the "
                            f"router serves only www., assets., api., search-api. and antivirus-api. hosts)")
    if "www_url" in settings and not settings["www_url"].endswith("/"):
        problems.append(f"settings.www_url: {settings['www_url']!r} must end with '/' (buyer-frontend joins "
                        f"relative links onto it)")
    www = urlsplit(settings.get("login_url", "")).hostname
    assets = urlsplit(settings.get("assets_url", "")).hostname
    # One site domain D: www.D and assets.D (the router's CSP names the production assets host, and the
    # certificate and DNS cover the pair).
    if www and assets and www.startswith("www.") and assets.startswith("assets.") and www[4:] != assets[7:]:
        problems.append(f"settings.assets_url: the host {assets!r} is not assets.{www[4:]}, the assets host of "
                        f"the site www.{www[4:]} (settings.login_url)")
    patch = urlsplit(settings.get("www_url", "")).hostname
    if www and patch and patch != www:
        problems.append(f"settings.www_url: the host {patch!r} is not the www host {www!r} of settings.login_url")
    domain = settings.get("session_cookie_domain", "").lstrip(".")
    if www and domain and www != domain and not www.endswith(f".{domain}"):
        problems.append(f"settings.session_cookie_domain: {domain!r} does not cover the www host {www!r} of "
                        f"settings.login_url, so no session cookie would come back")
    if problems:
        raise ConfigError("\n".join([f"{source}: {len(problems)} problem(s) with the public URLs:",
                                     *(f"  - {p}" for p in problems)]))


def check_clamd_memory(state) -> None:
    config = state.config
    if config.environment.embedded_aws:  # nothing runs there: local sizes are kept small
        return
    for container in state.task_definitions.get("antivirus-api", {}).get("containerDefinitions", []):
        if container.get("name") == "clamd" and container.get("memoryReservation", 0) < CLAMD_MIN_MEMORY_MIB:
            raise ConfigError(
                f"task_definitions/antivirus-api.json.j2: clamd reserves {container['memoryReservation']} MiB, "
                f"under the {CLAMD_MIN_MEMORY_MIB} MiB ClamAV needs to hold and reload its signatures; set "
                f"[apps.antivirus-api] memory = 4096 (cpu 1024 or more) in {config_source(config.env)}.")


def config_source(env: str) -> str:
    """The environment's config file as error messages name it (relative to the repository when inside it)."""
    path = config_module.CONFIG_DIR / f"{env}.toml"
    return str(path.relative_to(config_module.ROOT)) if path.is_relative_to(config_module.ROOT) else str(path)
