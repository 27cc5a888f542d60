"""Resolving what the config refers to but this tool does not own (VPC, subnets, the load balancer's group).

Read-only. Every lookup that finds nothing is reported together, before anything mutates. One call per lookup,
run concurrently; the subnets' full entries are kept on the run's context (`subnets`).
"""

from __future__ import annotations

from dmp_deploy.config import Lookup
from dmp_deploy.errors import PlanError
from dmp_deploy.resources.base import Context


SUBNETS = "lookups: network.subnets"  # memo key of the subnets' DescribeSubnets entries


def subnets(ctx: Context) -> list[dict]:
    """The DescribeSubnets entries of the subnets network.subnets resolves to: read once by `resolve`, so a kind
    that needs their zones (EFS mount targets) does not describe them again."""
    return ctx.memo(SUBNETS, lambda: ctx.aws.pages("ec2", "describe_subnets", "Subnets",
                                                   SubnetIds=list(ctx.lookups["subnet_ids"])))


def _filters(lookup: Lookup) -> list[dict]:
    return [{"Name": f"tag:{k}", "Values": [v]} for k, v in sorted((lookup.tags or {}).items())]


def resolve(ctx: Context) -> None:
    net = ctx.config.network
    problems: list[str] = []

    def vpc():
        if net.vpc.id:
            found = ctx.aws.pages("ec2", "describe_vpcs", "Vpcs", VpcIds=[net.vpc.id])
        else:
            found = ctx.aws.pages("ec2", "describe_vpcs", "Vpcs", Filters=_filters(net.vpc))
        if len(found) != 1:
            problems.append(f"network.vpc: expected exactly one VPC, found {len(found)} ({net.vpc})")
            return None
        return found[0]["VpcId"]

    def subnets():
        if net.subnets.ids or net.subnets.id:
            ids = list(net.subnets.ids or [net.subnets.id])
            found = ctx.aws.pages("ec2", "describe_subnets", "Subnets", SubnetIds=ids)
        else:
            found = ctx.aws.pages("ec2", "describe_subnets", "Subnets", Filters=_filters(net.subnets))
        ctx.memo(SUBNETS, lambda: found)  # the kinds that need more than the ids (zones) read them from here
        if not found:
            problems.append(f"network.subnets: no subnets found ({net.subnets})")
        return sorted(s["SubnetId"] for s in found), {s.get("VpcId") for s in found}

    def lb_group():
        lookup = net.load_balancer_security_group
        if lookup.id or lookup.ids:
            ids = list(lookup.ids or [lookup.id])
            found = ctx.aws.pages("ec2", "describe_security_groups", "SecurityGroups", GroupIds=ids)
        else:
            found = ctx.aws.pages("ec2", "describe_security_groups", "SecurityGroups", Filters=_filters(lookup))
        if len(found) != 1:
            problems.append(f"network.load_balancer_security_group: expected exactly one security group, "
                            f"found {len(found)} ({lookup})")
            return None
        return found[0]["GroupId"]

    vpc_id, (subnet_ids, subnet_vpcs), lb_group_id = ctx.map(lambda f: f(), [vpc, subnets, lb_group])
    if vpc_id and subnet_ids and subnet_vpcs != {vpc_id}:
        problems.append(f"network.subnets: the subnets {subnet_ids} are not all in VPC {vpc_id}")
    if problems:
        raise PlanError("Configuration refers to things that do not exist in the account:\n"
                        + "\n".join(f"  - {p}" for p in problems))
    ctx.lookups.update(vpc_id=vpc_id, subnet_ids=subnet_ids, load_balancer_security_group_id=lb_group_id)
