"""What a real account would already have before dmp-deploy runs (dmp-reference.md section 6), created in
the embedded AWS: the VPC with its private and public subnets, an ACM certificate, every secret the local
config names, with dummy values, and every ECR image the task definitions name at the configured tags (a
dummy manifest per tag). Idempotent: found by tag or name before anything is made.

There is no CI locally to push the build `apply --image APP=TAG` names: `apply` pushes it with `seed_images`
first (local only), so any tag can be deployed locally while preflight still finds images that are missing.
For the public entry (config [public_entry]): two public subnets and an ISSUED certificate for
certificate_domain (imported and self-signed: config names it by domain because its ARN is random).
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

import boto3

from dmp_deploy.config import Config

DUMMY_SECRET_PREFIX = "local-dummy-value-for-"


def _client(service: str, endpoint: str, region: str):
    return boto3.client(service, endpoint_url=endpoint, region_name=region,
                        aws_access_key_id="local", aws_secret_access_key="local")


def _tag_value(lookup_tags: dict | None, key: str, default: str) -> str:
    return (lookup_tags or {}).get(key, default)


def seed(endpoint: str, config: Config) -> dict:
    region = config.environment.region
    ec2 = _client("ec2", endpoint, region)
    net = config.network

    def find(kind: str, tags: dict) -> list:
        filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
        if kind == "vpc":
            return ec2.describe_vpcs(Filters=filters)["Vpcs"]
        if kind == "subnet":
            return ec2.describe_subnets(Filters=filters)["Subnets"]
        return ec2.describe_security_groups(Filters=filters)["SecurityGroups"]

    vpc_tags = net.vpc.tags or {"Name": f"{config.prefix}"}
    vpcs = find("vpc", vpc_tags)
    if vpcs:
        vpc_id = vpcs[0]["VpcId"]
    else:
        vpc_id = ec2.create_vpc(CidrBlock="10.42.0.0/16", TagSpecifications=[
            {"ResourceType": "vpc", "Tags": [{"Key": k, "Value": v} for k, v in vpc_tags.items()]}])["Vpc"]["VpcId"]

    subnet_tags = net.subnets.tags or {"dmp:tier": "private"}
    subnets = find("subnet", subnet_tags)
    if not subnets:
        for i, az in enumerate(("a", "b")):
            tags = {**subnet_tags, "Name": f"{config.prefix}-private-{az}"}
            ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=f"{region}{az}",
                              TagSpecifications=[{"ResourceType": "subnet", "Tags": [
                                  {"Key": k, "Value": v} for k, v in tags.items()]}])

    entry = config.public_entry
    if entry.owned and entry.subnets is not None and entry.subnets.tags and not find("subnet", entry.subnets.tags):
        for i, az in enumerate(("a", "b")):
            tags = {**entry.subnets.tags, "Name": f"{config.prefix}-public-{az}"}
            ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.42.{100 + i}.0/24", AvailabilityZone=f"{region}{az}",
                              TagSpecifications=[{"ResourceType": "subnet", "Tags": [
                                  {"Key": k, "Value": v} for k, v in tags.items()]}])
    if entry.owned and entry.certificate_domain:
        seed_certificate(endpoint, region, entry.certificate_domain)

    lb_group = net.load_balancer_security_group  # only with public_entry.existing_target_group_arn
    lb_tags = (lb_group.tags or {"Name": f"{config.prefix}-alb"}) if lb_group else None
    if lb_tags and not find("sg", lb_tags):
        ec2.create_security_group(
            GroupName=_tag_value(lb_tags, "Name", f"{config.prefix}-alb"), VpcId=vpc_id,
            Description="public load balancer (exists before dmp-deploy)",
            TagSpecifications=[{"ResourceType": "security-group", "Tags": [
                {"Key": k, "Value": v} for k, v in lb_tags.items()]}])

    ssm = _client("ssm", endpoint, region)
    secrets = _client("secretsmanager", endpoint, region)
    for logical, arn in sorted(config.secrets.items()):
        if ":ssm:" in arn:
            name = arn.split(":parameter", 1)[1]
            ssm.put_parameter(Name=name, Value=f"{DUMMY_SECRET_PREFIX}{logical}", Type="SecureString",
                              Overwrite=True)
        else:
            name = arn.split(":secret:", 1)[1]
            try:
                secrets.create_secret(Name=name, SecretString=f"{DUMMY_SECRET_PREFIX}{logical}")
            except secrets.exceptions.ResourceExistsException:
                pass

    from dmp_deploy import desired
    seed_images(endpoint, config,
                desired.render_task_definitions(config, {app: c.image_tag for app, c in config.apps.items()}))
    return {"vpc_id": vpc_id}


def seed_certificate(endpoint: str, region: str, domain: str) -> str:
    """An ISSUED ACM certificate for `domain` (config names it by public_entry.certificate_domain: an ARN would
    be random). Imported, self-signed: a requested one stays PENDING_VALIDATION, with no DNS to validate it."""
    acm = _client("acm", endpoint, region)
    for summary in acm.list_certificates(CertificateStatuses=["ISSUED"])["CertificateSummaryList"]:
        if summary.get("DomainName") == domain:
            return summary["CertificateArn"]
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=3650))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
                   .sign(key, hashes.SHA256()))
    return acm.import_certificate(
        Certificate=certificate.public_bytes(serialization.Encoding.PEM),
        PrivateKey=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))["CertificateArn"]


def seed_images(endpoint: str, config: Config, task_definitions: dict[str, dict]) -> list[str]:
    """Push a dummy image for every image in this account's ECR that the task definitions name (repository
    created when missing). Returns the images pushed; images already there and other registries are skipped."""
    from dmp_deploy.preflight import parse_image

    ecr = _client("ecr", endpoint, config.environment.region)
    wanted = sorted({c["image"] for d in task_definitions.values() for c in d.get("containerDefinitions", [])})
    ours = [(image, parse_image(image)) for image in wanted]
    ours = [(image, parts) for image, parts in ours
            if parts and parts["account"] == config.environment.account_id and parts["tag"]]

    def push(item) -> str | None:
        image, parts = item
        try:
            ecr.create_repository(repositoryName=parts["repository"])
        except ecr.exceptions.RepositoryAlreadyExistsException:
            pass
        try:
            ecr.put_image(repositoryName=parts["repository"], imageTag=parts["tag"],
                          imageManifest=_dummy_manifest(image))
            return image
        except ecr.exceptions.ImageAlreadyExistsException:
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [image for image in pool.map(push, ours) if image]


def _dummy_manifest(image: str) -> str:
    digest = hashlib.sha256(image.encode()).hexdigest()
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2,
                   "digest": f"sha256:{digest}"},
        "layers": [],
    })
