"""Per-group capacity settings of the simulator and the read-only views it hands out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from sandbox.aws import launch_errors

CAPACITY_TYPE_TAG = "spotguard.io/capacity-type"
ON_DEMAND_PARTNER_TAG = "spotguard.io/on-demand-partner"
SPOT = "spot"
ON_DEMAND = "on-demand"


@dataclass
class CapacitySettings:
    """How one group behaves when it launches (per-pool settings: sandbox.aws.pools.PoolSettings).

    pending_seconds: how long a new instance stays Pending before InService (or its launch hooks' Pending:Wait).
    capacity_short: while True every launch of the group is refused (InsufficientInstanceCapacity) with one Failed
        activity per try; for one pool short, see the pool settings.
    retry_seconds: after a failed try, how long the group waits before trying again (and before trying a pool that
        failed again).
    terminating_seconds: how long a terminated instance stays Terminating before it leaves the group.
    launch_failure: every launch fails with this shape of sandbox.aws.launch_errors (a quota or configuration
        error: "vcpu-limit", "ami-not-found", ...); None: launches fail only for capacity.
    pool_retry_seconds: after a pool refused a launch, how long before the group tries its next pool (0: at once,
        each try still its own scaling activity).
    az_rebalance_seconds: how long the group's zones stay unbalanced before AZRebalance launches in the emptiest
        zone (and between its attempts).
    """

    pending_seconds: float = 0.0
    capacity_short: bool = False
    retry_seconds: float = 10.0
    terminating_seconds: float = 0.0
    launch_failure: str | None = None
    pool_retry_seconds: float = 0.0
    az_rebalance_seconds: float = 10.0

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    def updated(self, changes: dict[str, object]) -> CapacitySettings:
        """A copy with `changes` applied; unknown keys or wrong types raise ValueError naming the key."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown capacity setting(s) {unknown}; known settings are {sorted(known)}")
        values = asdict(self)
        for key, value in changes.items():
            if key == "capacity_short":
                if not isinstance(value, bool):
                    raise ValueError(f"capacity_short must be true or false, got {value!r}")
            elif key == "launch_failure":
                if value is not None:
                    if not isinstance(value, str):
                        raise ValueError(f"launch_failure must be a failure name or null, got {value!r}")
                    launch_errors.shape(value)  # ValueError listing the known names
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{key} must be a number of seconds >= 0, got {value!r}")
            values[key] = value
        if values["retry_seconds"] <= 0:
            raise ValueError(f"retry_seconds must be > 0, got {values['retry_seconds']!r}")
        return CapacitySettings(**values)


@dataclass(frozen=True)
class SimulatorDefaults:
    """Settings a group gets when the simulator first sees it, by capacity type."""

    spot_pending_seconds: float = 5.0
    on_demand_pending_seconds: float = 0.0
    retry_seconds: float = 10.0
    terminating_seconds: float = 0.0
    az_rebalance_seconds: float = 10.0

    def for_capacity_type(self, capacity_type: str) -> CapacitySettings:
        pending = self.spot_pending_seconds if capacity_type == SPOT else self.on_demand_pending_seconds
        return CapacitySettings(
            pending_seconds=pending,
            retry_seconds=self.retry_seconds,
            terminating_seconds=self.terminating_seconds,
            az_rebalance_seconds=self.az_rebalance_seconds,
        )


def capacity_type_of(tags: dict[str, str]) -> str:
    """`spot` when the group is tagged spotguard.io/capacity-type=spot, otherwise `on-demand`."""
    return SPOT if tags.get(CAPACITY_TYPE_TAG) == SPOT else ON_DEMAND


@dataclass(frozen=True)
class InstanceView:
    """capacity_type is the instance's own market (a MixedInstancesPolicy group holds both)."""

    instance_id: str
    group_name: str
    capacity_type: str
    lifecycle_state: str
    availability_zone: str
    instance_type: str
    private_dns_name: str
    private_ip: str | None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class GroupView:
    name: str
    arn: str
    capacity_type: str
    min_size: int
    max_size: int
    desired_capacity: int
    availability_zones: tuple[str, ...]
    instance_type: str
    tags: dict[str, str]
    settings: CapacitySettings
    instances: tuple[InstanceView, ...]
    instance_types: tuple[str, ...] = ()
    mixed_instances: bool = False
    suspended_processes: tuple[str, ...] = ()
    pools: dict[str, dict[str, object]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "arn": self.arn,
            "capacity_type": self.capacity_type,
            "min_size": self.min_size,
            "max_size": self.max_size,
            "desired_capacity": self.desired_capacity,
            "availability_zones": list(self.availability_zones),
            "instance_type": self.instance_type,
            "tags": self.tags,
            "settings": self.settings.to_json(),
            "instances": [i.to_json() for i in self.instances],
            "instance_types": list(self.instance_types),
            "mixed_instances": self.mixed_instances,
            "suspended_processes": list(self.suspended_processes),
            "pools": self.pools,
        }
