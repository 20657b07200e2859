"""Per-group capacity settings of the simulator and the read-only views it hands out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

CAPACITY_TYPE_TAG = "spotguard.io/capacity-type"
ON_DEMAND_PARTNER_TAG = "spotguard.io/on-demand-partner"
SPOT = "spot"
ON_DEMAND = "on-demand"


@dataclass
class CapacitySettings:
    """How one group behaves when it launches.

    pending_seconds: how long a new instance stays Pending before InService.
    capacity_short: while True every launch is refused with a Failed activity.
    retry_seconds: while short, how often the group tries again (one Failed activity per try).
    terminating_seconds: how long a terminated instance stays Terminating before it leaves the group.
    """

    pending_seconds: float = 0.0
    capacity_short: bool = False
    retry_seconds: float = 10.0
    terminating_seconds: float = 0.0

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

    def for_capacity_type(self, capacity_type: str) -> CapacitySettings:
        pending = self.spot_pending_seconds if capacity_type == SPOT else self.on_demand_pending_seconds
        return CapacitySettings(
            pending_seconds=pending, retry_seconds=self.retry_seconds, terminating_seconds=self.terminating_seconds
        )


def capacity_type_of(tags: dict[str, str]) -> str:
    """`spot` when the group is tagged spotguard.io/capacity-type=spot, otherwise `on-demand`."""
    return SPOT if tags.get(CAPACITY_TYPE_TAG) == SPOT else ON_DEMAND


@dataclass(frozen=True)
class InstanceView:
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
        }
