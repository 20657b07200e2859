"""Plain values of EC2 Auto Scaling: groups, their instances, scaling activities; lifecycle-state names."""

from __future__ import annotations

import dataclasses
import datetime as dt

IN_SERVICE = "InService"
PENDING_STATES = frozenset({"Pending", "Pending:Wait", "Pending:Proceed"})
#: States that count toward a group's capacity: launching or in service (not leaving, not on standby).
COUNTED_STATES = PENDING_STATES | {IN_SERVICE}
#: States of an instance on its way out of the group: never terminated a second time.
LEAVING_STATES = frozenset(
    {"Terminating", "Terminating:Wait", "Terminating:Proceed", "Terminated", "Detaching", "Detached"}
)


@dataclasses.dataclass(frozen=True)
class Instance:
    instance_id: str
    lifecycle_state: str
    availability_zone: str
    instance_type: str


#: The scaling process that launches instances ("Suspend and resume a process for an Auto Scaling group").
LAUNCH_PROCESS = "Launch"


@dataclasses.dataclass(frozen=True)
class Group:
    name: str
    desired: int
    min_size: int
    max_size: int
    capacity_rebalance: bool
    instances: tuple[Instance, ...]
    tags: dict[str, str]
    suspended_processes: frozenset[str] = frozenset()  # SuspendProcesses: AZRebalance, Launch, Terminate, ...
    new_instances_protected: bool = False  # NewInstancesProtectedFromScaleIn
    #: Instance pools (instance types of the MixedInstancesPolicy, or the one of the launch template, times the
    #: group's Availability Zones): a failed launch in one pool is followed by tries in the others.
    pools: int = 1

    @property
    def launches(self) -> bool:
        """Its Launch process is not suspended: a suspended one launches nothing, whatever desired capacity says
        ("Suspend and resume a process for an Auto Scaling group")."""
        return LAUNCH_PROCESS not in self.suspended_processes

    @property
    def in_service(self) -> list[Instance]:
        return [i for i in self.instances if i.lifecycle_state == IN_SERVICE]

    def instance_ids(self) -> set[str]:
        return {i.instance_id for i in self.instances}


LAUNCHING_TRANSITION = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING_TRANSITION = "autoscaling:EC2_INSTANCE_TERMINATING"


#: The statuses of an instance refresh still running ("InstanceRefresh", Status,
#: https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_InstanceRefresh.html): it still replaces instances
#: or rolls them back. Successful, Failed, Cancelled, RollbackFailed and RollbackSuccessful are over.
ACTIVE_REFRESH_STATUSES = frozenset({"Pending", "InProgress", "Cancelling", "RollbackInProgress", "Baking"})


@dataclasses.dataclass(frozen=True)
class InstanceRefresh:
    """An instance refresh of a group (DescribeInstanceRefreshes): AWS replacing the group's instances itself."""

    refresh_id: str
    group: str
    status: str
    status_reason: str = ""

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_REFRESH_STATUSES


@dataclasses.dataclass(frozen=True)
class LifecycleHook:
    """A group's lifecycle hook (DescribeLifecycleHooks): it holds new instances in Pending:Wait (launching) or
    leaving ones in Terminating:Wait for up to ``heartbeat_timeout`` seconds per heartbeat."""

    name: str
    transition: str
    heartbeat_timeout: int
    default_result: str

    @property
    def launching(self) -> bool:
        return self.transition == LAUNCHING_TRANSITION


@dataclasses.dataclass(frozen=True)
class Membership:
    """Where an instance is: its group, and its lifecycle state there."""

    group: str
    lifecycle_state: str


@dataclasses.dataclass(frozen=True)
class Activity:
    activity_id: str
    status_code: str
    status_message: str
    description: str
    cause: str
    start_time: dt.datetime


def instance_id_from_provider_id(provider_id: str) -> str | None:
    """``aws:///us-east-1a/i-0123`` -> ``i-0123``; None for anything that is not an EC2 provider id."""
    if not provider_id.startswith("aws://"):
        return None
    last = provider_id.rstrip("/").rsplit("/", 1)[-1]
    return last if last.startswith("i-") else None
