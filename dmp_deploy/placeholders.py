"""Placeholders that templates write where only AWS knows the value, shared by the engine and the kinds.

A template cannot know an id that exists only once a resource does (an EFS access point, a security group, the
subnets a lookup resolves to), so it writes a placeholder naming the resource. The kind that owns the document
resolves placeholders to live ids when it writes, and turns live ids back into placeholders when it reads, so a
replaced resource is a change to every document that names it. Kept here, not in a kind's module, so that
`desired.py` (the engine) need not import a resource kind.
"""

from __future__ import annotations

import re

SUBNETS = "<ids of network.subnets>"
_GROUP_PREFIX = "<id of security_group "
_ID = re.compile(r"^<id of (efs_file_system|efs_access_point) (.+)>$")


def efs_id(kind: str, name: str) -> str:
    """The placeholder for the id of the EFS file system or access point (`kind`) named `name`."""
    return f"<id of {kind} {name}>"


def parse_efs_id(value: str) -> tuple[str, str] | None:
    """(kind, name) when `value` is an EFS id placeholder, else None."""
    match = _ID.match(value)
    return (match.group(1), match.group(2)) if match else None


def security_group(group_name: str) -> str:
    """The placeholder for the id of our security group `group_name`."""
    return f"{_GROUP_PREFIX}{group_name}>"


def parse_security_group(value: str) -> str | None:
    """The group name when `value` is a security-group placeholder, else None."""
    if value.startswith(_GROUP_PREFIX) and value.endswith(">"):
        return value[len(_GROUP_PREFIX):-1]
    return None


_DNS = re.compile(r"<dns name of load_balancer ([A-Za-z0-9-]+)>")


def load_balancer_dns(name: str) -> str:
    """The placeholder for the DNS name AWS gives our load balancer `name` (known only once it exists)."""
    return f"<dns name of load_balancer {name}>"


def load_balancer_dns_names(value: str) -> list[str]:
    """The load balancer names whose DNS-name placeholder `value` contains."""
    return _DNS.findall(value)


def replace_load_balancer_dns(value: str, dns_of) -> str:
    """`value` with each DNS-name placeholder replaced by `dns_of(name)`."""
    return _DNS.sub(lambda m: dns_of(m.group(1)), value)
