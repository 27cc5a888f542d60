"""The resource kinds, one module each. Adding a kind: write its module (see base.py), add it here.

Order here is only the tie-break; the engine orders kinds by their `depends_on`.
"""

from __future__ import annotations

from dmp_deploy.resources.base import ResourceKind
from dmp_deploy.resources.bucket import Bucket
from dmp_deploy.resources.cluster import Cluster
from dmp_deploy.resources.efs import AccessPoints, FileSystems, MountTargets
from dmp_deploy.resources.event_rule import EventRules
from dmp_deploy.resources.iam_policies import IamPolicies
from dmp_deploy.resources.iam_roles import IamRoles
from dmp_deploy.resources.kms_keys import KmsKeys
from dmp_deploy.resources.load_balancers import ListenerRules, Listeners, LoadBalancers, TargetGroups
from dmp_deploy.resources.log_groups import LogGroups
from dmp_deploy.resources.release_record import ReleaseRecords
from dmp_deploy.resources.security_groups import SecurityGroupRules, SecurityGroups
from dmp_deploy.resources.service_discovery import DiscoveryServices, Namespaces
from dmp_deploy.resources.services import Services
from dmp_deploy.resources.state_machine import StateMachineAliases, StateMachines
from dmp_deploy.resources.task_definitions import TaskDefinitions


def all_kinds() -> list[ResourceKind]:
    kinds = [
        StateMachines(), StateMachineAliases(),  # first: declares _extra_log_groups, _extra_iam_roles (add-users)
        LogGroups(),
        Cluster(),
        KmsKeys(),
        Bucket(),
        SecurityGroups(),
        SecurityGroupRules(),
        LoadBalancers(), TargetGroups(), Listeners(), ListenerRules(),  # the public entry and the www path router
        IamRoles(),  # after every kind that declares _extra_iam_roles
        IamPolicies(),  # after every kind that declares _extra_iam_policies
        FileSystems(), MountTargets(), AccessPoints(),  # after IamRoles and KmsKeys: reads their declarations
        TaskDefinitions(),
        Namespaces(), DiscoveryServices(),  # the names the apps find each other by
        Services(),
        EventRules(),
    ]
    record = ReleaseRecords()  # last: its desired digest covers every other kind's desired specs
    record.depends_on = tuple(kind.kind for kind in kinds)
    return kinds + [record]
