"""Configuration values an operator has still to fill in: placeholders that must never reach a real account.

The shipped `config/staging.toml` and `config/production.toml` keep placeholders where only the operator knows the
value (an alert address, the office's IP ranges, a Mailchimp list id). They render and deploy without complaint
locally, and AWS would accept them too: the site would simply not work (alerts to nowhere, the router admitting
nobody). So every command that may change a real account (`validate`, and through it `plan`, `apply` and `run-task`)
refuses them for an environment that is not embedded, listing every key at once.

A placeholder is:
- an address or URL whose host is in the reserved `.invalid` top-level domain (RFC 2606), `example.invalid`
  addresses included;
- an IP address or CIDR block inside a documentation range (RFC 5737: 192.0.2.0/24, 198.51.100.0/24,
  203.0.113.0/24; RFC 3849: 2001:db8::/32), alone or in a comma-separated list;
- a value written as `<what to put here>`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Iterator

from dmp_deploy.errors import ConfigError

DOCUMENTATION_RANGES = tuple(ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))
_INVALID_HOST = re.compile(r"(?<![A-Za-z0-9.-])(?:(?P<user>[^\s@/:]+)@)?(?P<host>(?:[A-Za-z0-9-]+\.)+invalid)\.?"
                           r"(?![A-Za-z0-9-])", re.IGNORECASE)
_TO_REPLACE = re.compile(r"^<[^<>]+>$")


@dataclass(frozen=True)
class Unfilled:
    key: str  # the dotted config key, as schema.py names it ("settings.login_url", "network.https_egress_cidrs[0]")
    value: str
    why: str

    def line(self) -> str:
        return f"{self.key}: {self.value!r} {self.why}"


def find(config) -> list[Unfilled]:
    """Every placeholder in the configuration, in the order of its keys."""
    return [Unfilled(key, value, why) for key, value in _strings(config, "") for why in _reasons(value)[:1]]


def check(config, source: str) -> None:
    """Refuse placeholders for an environment that is not embedded; one message lists every key to fill in."""
    if config.environment.embedded_aws:
        return
    found = find(config)
    if found:
        lines = [f"{source}: {len(found)} placeholder value(s) still to fill in before {config.env} can be "
                 f"deployed:"]
        lines += [f"  - {u.line()}" for u in found]
        lines.append("Replace each with the real value (config/README.md, \"Placeholders\"); only an embedded "
                     "environment (embedded_aws = true) may keep placeholders.")
        raise ConfigError("\n".join(lines))


def _reasons(value: str) -> list[str]:
    reasons = []
    if _TO_REPLACE.match(value.strip()):
        reasons.append("is a placeholder to replace")
    for match in _INVALID_HOST.finditer(value):
        host = match["host"].lower().rstrip(".")
        if match["user"] and host == "example.invalid":
            reasons.append("is an example.invalid address")
        else:
            reasons.append(f"names the reserved .invalid host {host}")
    for token in re.split(r"[,\s]+", value):
        network = _network(token)
        if network is not None:
            for documentation in DOCUMENTATION_RANGES:
                if network.version == documentation.version and network.subnet_of(documentation):
                    reasons.append(f"is in the documentation range {documentation}")
    return reasons


def _network(token: str):
    if not token or not any(c.isdigit() for c in token):
        return None
    try:
        return ipaddress.ip_network(token, strict=False)
    except ValueError:
        return None


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(dotted key, string) for every string in a loaded configuration, dataclass fields in declaration order."""
    if isinstance(value, str):
        yield path, value
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _strings(getattr(value, f.name), f"{path}.{f.name}" if path else f.name)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")
