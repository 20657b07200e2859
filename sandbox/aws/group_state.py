"""What the simulator keeps per group and per instance, the lifecycle-state and status names it writes, and the
shape of what a group launches (sandbox.aws.pools.GroupShape) read from moto's group."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.aws import moto_bridge as moto
from sandbox.aws.activities import Activity
from sandbox.aws.capacity import SPOT, CapacitySettings, capacity_type_of
from sandbox.aws.instance_refresh import InstanceRefresh
from sandbox.aws.lifecycle_hooks import LifecycleAction
from sandbox.aws.pools import ON_DEMAND_MARKET, SPOT_MARKET, Distribution, GroupShape, Pool, PoolSettings
from sandbox.aws.termination import Member

PENDING = "Pending"
PENDING_WAIT = "Pending:Wait"
PENDING_PROCEED = "Pending:Proceed"
IN_SERVICE = "InService"
TERMINATING = "Terminating"
TERMINATING_WAIT = "Terminating:Wait"
TERMINATING_PROCEED = "Terminating:Proceed"
# Lifecycle states that count toward the group's capacity; the leaving ones.
COUNTED_STATES = frozenset({PENDING, PENDING_WAIT, PENDING_PROCEED, IN_SERVICE})
LEAVING_STATES = frozenset({TERMINATING, TERMINATING_WAIT, TERMINATING_PROCEED})

SUCCESSFUL = "Successful"
FAILED = "Failed"
CANCELLED = "Cancelled"
IN_PROGRESS = "InProgress"
MID_LIFECYCLE_ACTION = "MidLifecycleAction"

# Scaling processes (SuspendProcesses); "Suspend and resume a process for an Auto Scaling group".
LAUNCH = "Launch"
TERMINATE = "Terminate"
AZ_REBALANCE = "AZRebalance"
INSTANCE_REFRESH = "InstanceRefresh"


class UnknownGroupError(LookupError):
    """The simulator has no group of that name."""


@dataclass
class TrackedInstance:
    state: moto.MotoInstanceState
    launched_at: datetime
    market: str
    instance_type: str
    zone: str
    template: tuple[str, int] | None = None
    launch_configuration: str | None = None
    in_service_at: datetime | None = None  # when its Pending time ends
    leave_at: datetime | None = None  # when its Terminating time ends
    launch_activity: Activity | None = None
    terminate_activity: Activity | None = None
    actions: list[LifecycleAction] = field(default_factory=list)  # lifecycle actions of its current wait

    @property
    def instance_id(self) -> str:
        return str(self.state.instance.id)

    @property
    def lifecycle(self) -> str:
        return str(self.state.lifecycle_state)

    @property
    def protected(self) -> bool:
        return bool(self.state.protected_from_scale_in)

    def member(self) -> Member:
        return Member(
            instance_id=self.instance_id,
            zone=self.zone,
            market=self.market,
            instance_type=self.instance_type,
            launched_at=self.launched_at,
            template=self.template,
            launch_configuration=self.launch_configuration,
        )


@dataclass
class GroupState:
    name: str
    moto_group: moto.MotoGroup
    settings: CapacitySettings
    tracked: dict[str, TrackedInstance] = field(default_factory=dict)
    pools: dict[str, PoolSettings] = field(default_factory=dict)
    failed_pools: dict[Pool, datetime] = field(default_factory=dict)  # pool -> when the group may try it again
    next_attempt_at: datetime | None = None
    cause_prefix: str | None = None
    scale_out_from: tuple[int, int] | None = None  # (actual, desired) when the scale-out under way began
    rebalance_launch: str | None = None  # the AZRebalance launch not yet InService
    rebalance_prefix: str | None = None  # cause of the terminations that follow an AZRebalance launch
    unbalanced_since: datetime | None = None
    refreshes: list[InstanceRefresh] = field(default_factory=list)  # newest first
    protected_warned: bool = False


def _is_spot_tagged(moto_group: moto.MotoGroup) -> bool:
    return capacity_type_of(moto.group_tags(moto_group)) == SPOT


def group_shape(moto_group: moto.MotoGroup) -> GroupShape:
    """What the group launches: its MixedInstancesPolicy's overrides and distribution, or its template's type."""
    zones = tuple(moto.group_zones(moto_group))
    policy = moto.mixed_instances_policy(moto_group)
    spot_lt = _is_spot_tagged(moto_group) or moto.template_market(moto_group) == SPOT_MARKET
    lt_market = SPOT_MARKET if spot_lt else ON_DEMAND_MARKET
    if policy is None:
        return GroupShape((moto.group_instance_type(moto_group),), zones, False, Distribution(), lt_market)
    overrides = (policy.get("LaunchTemplate") or {}).get("Overrides") or []
    types = tuple(str(o["InstanceType"]) for o in overrides if o.get("InstanceType"))
    raw: dict[str, Any] = policy.get("InstancesDistribution") or {}
    distribution = Distribution(
        on_demand_base=int(raw.get("OnDemandBaseCapacity", 0) or 0),
        on_demand_percentage=int(raw.get("OnDemandPercentageAboveBaseCapacity", 100)),
        spot_strategy=str(raw.get("SpotAllocationStrategy") or "lowest-price"),
        on_demand_strategy=str(raw.get("OnDemandAllocationStrategy") or "prioritized"),
    )
    return GroupShape(types or (moto.group_instance_type(moto_group),), zones, True, distribution, lt_market)
