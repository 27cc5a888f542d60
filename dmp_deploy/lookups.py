"""Resolving what the config refers to but this tool does not own (VPC, subnets, the public subnets, the ACM
certificate when named by domain, the security group of a load balancer the account already has).

Read-only. Every lookup that finds nothing is reported together, before anything mutates. One call per lookup,
run concurrently; the subnets' full entries are kept on the run's context (`subnets`).
"""

from __future__ import annotations

from dmp_deploy.config import Lookup
from dmp_deploy.errors import PlanError
from dmp_deploy.resources.base import Context


SUBNETS = "lookups: network.subnets"
# ListCertificates lists only RSA-2048 certificates unless asked for other key types.
CERTIFICATE_KEY_TYPES = ("RSA_1024", "RSA_2048", "RSA_3072", "RSA_4096", "EC_prime256v1", "EC_secp384r1",
                         "EC_secp521r1")  # memo key of the subnets' DescribeSubnets entries


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
        if lookup is None:
            return None  # only with public_entry.existing_target_group_arn (config.py)
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

    entry = ctx.config.public_entry

    def public_subnets():
        if not entry.owned:
            return [], set()
        lookup = entry.subnets
        if lookup.ids or lookup.id:
            found = ctx.aws.pages("ec2", "describe_subnets", "Subnets", SubnetIds=list(lookup.ids or [lookup.id]))
        else:
            found = ctx.aws.pages("ec2", "describe_subnets", "Subnets", Filters=_filters(lookup))
        if len({s.get("AvailabilityZone") for s in found}) < 2:
            problems.append(f"public_entry.subnets: an internet-facing load balancer needs public subnets in at "
                            f"least two availability zones, found {len(found)} subnet(s) ({lookup})")
        return sorted(s["SubnetId"] for s in found), {s.get("VpcId") for s in found}

    def certificate():
        """The certificate named by domain: the newest ISSUED one, else any (preflight says it is not issued)."""
        if not entry.owned or not entry.certificate_domain:
            return entry.certificate_arn if entry.owned else None
        found = [c for c in ctx.aws.pages("acm", "list_certificates", "CertificateSummaryList",
                                          Includes={"keyTypes": list(CERTIFICATE_KEY_TYPES)})
                 if c.get("DomainName") == entry.certificate_domain]
        if not found:
            problems.append(f"public_entry.certificate_domain: no ACM certificate for "
                            f"{entry.certificate_domain!r} in {ctx.config.environment.region}; request or import it "
                            f"(or name it by certificate_arn)")
            return None
        found.sort(key=lambda c: (c.get("Status") == "ISSUED", str(c.get("CreatedAt") or "")), reverse=True)
        return found[0]["CertificateArn"]

    (vpc_id, (subnet_ids, subnet_vpcs), lb_group_id, (public_ids, public_vpcs), certificate_arn) = ctx.map(
        lambda f: f(), [vpc, subnets, lb_group, public_subnets, certificate])
    if vpc_id and subnet_ids and subnet_vpcs != {vpc_id}:
        problems.append(f"network.subnets: the subnets {subnet_ids} are not all in VPC {vpc_id}")
    if vpc_id and public_ids and public_vpcs != {vpc_id}:
        problems.append(f"public_entry.subnets: the subnets {public_ids} are not all in VPC {vpc_id}")
    if problems:
        raise PlanError("Configuration refers to things that do not exist in the account:\n"
                        + "\n".join(f"  - {p}" for p in problems))
    ctx.lookups.update(vpc_id=vpc_id, subnet_ids=subnet_ids, load_balancer_security_group_id=lb_group_id,
                       public_subnet_ids=public_ids, certificate_arn=certificate_arn)
