"""The launch template and spot/on-demand group pairs the sandbox creates at start-up (through plain boto3).

The spot group is a MixedInstancesPolicy group (all spot, price-capacity-optimized), as eksctl creates self-managed
spot node groups and as the User Guide's "Auto Scaling groups with multiple instance types and purchase options"
recommends; ``spot_mixed_instances=False`` makes it a plain launch-template group tagged spot instead (its failed
launches then carry no error code). Both groups have AZRebalance suspended, as a Spot Guard operator must do
(``spotguard doctor`` fails a decremented group without it): ``suspend_az_rebalance=False`` leaves it running. Both
carry ``spotguard.io/managed=true``, as docs/install.md tells operators to tag them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox.aws.capacity import CAPACITY_TYPE_TAG, ON_DEMAND, ON_DEMAND_PARTNER_TAG, SPOT

# The tag the controller's IAM policy (manifests/iam-policy.json) requires on every group it changes.
MANAGED_TAG = "spotguard.io/managed"


@dataclass(frozen=True)
class StartupGroups:
    """What to create at start-up: `pairs` pairs of (spot, on-demand) groups sharing one launch template.

    Names are formatted with `i` = 1..pairs. `availability_zones` None means the region's a, b and c zones.
    """

    pairs: int = 1
    spot_name: str = "spotguard-spot-{i}"
    on_demand_name: str = "spotguard-ondemand-{i}"
    launch_template_name: str = "spotguard-nodes"
    image_id: str = "ami-0abcdef1234567890"
    instance_type: str = "m5.large"
    availability_zones: tuple[str, ...] | None = None
    min_size: int = 0
    max_size: int = 10
    spot_desired: int = 3
    on_demand_desired: int = 0
    spot_mixed_instances: bool = True
    spot_instance_types: tuple[str, ...] = ()  # empty: instance_type alone
    spot_allocation_strategy: str = "price-capacity-optimized"
    suspend_az_rebalance: bool = True

    def spot_types(self) -> tuple[str, ...]:
        return self.spot_instance_types or (self.instance_type,)

    def zones(self, region: str) -> list[str]:
        return list(self.availability_zones or (f"{region}a", f"{region}b", f"{region}c"))

    def validate(self) -> None:
        if self.pairs < 1:
            raise ValueError(f"pairs must be >= 1, got {self.pairs}")
        for label, desired in (("spot", self.spot_desired), ("on-demand", self.on_demand_desired)):
            if not self.min_size <= desired <= self.max_size:
                raise ValueError(
                    f"{label} desired capacity {desired} is outside min {self.min_size} .. max {self.max_size}"
                )


@dataclass(frozen=True)
class CreatedGroup:
    name: str
    capacity_type: str
    on_demand_partner: str | None
    desired_capacity: int
    min_size: int
    max_size: int
    availability_zones: tuple[str, ...]
    instance_type: str
    instance_types: tuple[str, ...] = ()
    mixed_instances: bool = False
    suspended_processes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "capacity_type": self.capacity_type,
            "on_demand_partner": self.on_demand_partner,
            "desired_capacity": self.desired_capacity,
            "min_size": self.min_size,
            "max_size": self.max_size,
            "availability_zones": list(self.availability_zones),
            "instance_type": self.instance_type,
            "instance_types": list(self.instance_types or (self.instance_type,)),
            "mixed_instances": self.mixed_instances,
            "suspended_processes": list(self.suspended_processes),
        }


def _tags(group_name: str, tags: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "ResourceId": group_name,
            "ResourceType": "auto-scaling-group",
            "Key": key,
            "Value": value,
            "PropagateAtLaunch": True,
        }
        for key, value in tags.items()
    ]


def create_startup_groups(spec: StartupGroups, region: str, ec2: Any, autoscaling: Any) -> list[CreatedGroup]:
    """Create the launch template and the groups, all with desired 0 (the caller fills them in).

    `ec2` and `autoscaling` are boto3 clients pointed at the sandbox.
    """
    spec.validate()
    zones = spec.zones(region)
    ec2.create_launch_template(
        LaunchTemplateName=spec.launch_template_name,
        LaunchTemplateData={"ImageId": spec.image_id, "InstanceType": spec.instance_type},
    )
    created: list[CreatedGroup] = []
    for i in range(1, spec.pairs + 1):
        spot_name = spec.spot_name.format(i=i)
        on_demand_name = spec.on_demand_name.format(i=i)
        pair = (
            (
                on_demand_name,
                {CAPACITY_TYPE_TAG: ON_DEMAND, MANAGED_TAG: "true"},
                None,
                spec.on_demand_desired,
                ON_DEMAND,
            ),
            (
                spot_name,
                {CAPACITY_TYPE_TAG: SPOT, ON_DEMAND_PARTNER_TAG: on_demand_name, MANAGED_TAG: "true"},
                on_demand_name,
                spec.spot_desired,
                SPOT,
            ),
        )
        for name, tags, partner, desired, capacity_type in pair:
            mixed = capacity_type == SPOT and spec.spot_mixed_instances
            template = {"LaunchTemplateName": spec.launch_template_name, "Version": "$Latest"}
            source: dict[str, Any] = {"LaunchTemplate": template}
            types = spec.spot_types() if capacity_type == SPOT else (spec.instance_type,)
            if mixed:
                source = {
                    "MixedInstancesPolicy": {
                        "LaunchTemplate": {
                            "LaunchTemplateSpecification": template,
                            "Overrides": [{"InstanceType": t} for t in types],
                        },
                        "InstancesDistribution": {
                            "OnDemandBaseCapacity": 0,
                            "OnDemandPercentageAboveBaseCapacity": 0,
                            "SpotAllocationStrategy": spec.spot_allocation_strategy,
                        },
                    }
                }
            autoscaling.create_auto_scaling_group(
                AutoScalingGroupName=name,
                MinSize=spec.min_size,
                MaxSize=spec.max_size,
                DesiredCapacity=0,
                AvailabilityZones=zones,
                CapacityRebalance=False,
                Tags=_tags(name, tags),
                **source,
            )
            suspended: tuple[str, ...] = ()
            if spec.suspend_az_rebalance:
                autoscaling.suspend_processes(AutoScalingGroupName=name, ScalingProcesses=["AZRebalance"])
                suspended = ("AZRebalance",)
            created.append(
                CreatedGroup(
                    name=name,
                    capacity_type=capacity_type,
                    on_demand_partner=partner,
                    desired_capacity=desired,
                    min_size=spec.min_size,
                    max_size=spec.max_size,
                    availability_zones=tuple(zones),
                    instance_type=types[0],
                    instance_types=types,
                    mixed_instances=mixed,
                    suspended_processes=suspended,
                )
            )
    return sorted(created, key=lambda g: (g.capacity_type != SPOT, g.name))
