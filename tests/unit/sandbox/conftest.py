"""Fixtures: one in-process sandbox AWS server per session on a manual clock, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.config import Config

from sandbox.aws.client import SandboxAWSClient
from sandbox.aws.clock import ManualClock
from sandbox.aws.server import SandboxAWSConfig, SandboxAWSServer

SPOT = "spotguard-spot-1"
ON_DEMAND = "spotguard-ondemand-1"


@dataclass
class Sandbox:
    server: SandboxAWSServer
    clock: ManualClock
    control: SandboxAWSClient
    autoscaling: Any
    ec2: Any

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass on the simulator's clock and let it act on them."""
        self.clock.advance(seconds)
        self.server.simulator.tick()

    def group(self, name: str) -> dict[str, Any]:
        groups = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
        assert len(groups) == 1, f"expected group {name}, got {groups}"
        return groups[0]  # type: ignore[no-any-return]

    def lifecycle_states(self, name: str) -> dict[str, str]:
        return {i["InstanceId"]: i["LifecycleState"] for i in self.group(name)["Instances"]}

    def activities(self, name: str) -> list[dict[str, Any]]:
        return self.autoscaling.describe_scaling_activities(AutoScalingGroupName=name)["Activities"]  # type: ignore[no-any-return]


def boto3_client(endpoint: str, service: str) -> Any:
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    # No retries: a test sees exactly the answer the sandbox gave.
    config = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    return session.client(service, endpoint_url=endpoint, config=config)  # type: ignore[call-overload]


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[tuple[SandboxAWSServer, ManualClock]]:
    clock = ManualClock()
    server = SandboxAWSServer(SandboxAWSConfig(tick_seconds=None), clock=clock)
    server.start()
    yield server, clock
    server.stop()


@pytest.fixture(scope="session")
def _clients(sandbox_server: tuple[SandboxAWSServer, ManualClock]) -> tuple[Any, Any]:
    endpoint = sandbox_server[0].endpoint
    return boto3_client(endpoint, "autoscaling"), boto3_client(endpoint, "ec2")


@pytest.fixture
def sandbox(sandbox_server: tuple[SandboxAWSServer, ManualClock], _clients: tuple[Any, Any]) -> Sandbox:
    server, clock = sandbox_server
    server.reset()
    return Sandbox(
        server=server, clock=clock, control=SandboxAWSClient(server.endpoint), autoscaling=_clients[0], ec2=_clients[1]
    )


ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
TEMPLATE = "spotguard-nodes"  # the start-up launch template (m5.large)


def create_group(
    sandbox: Sandbox,
    name: str,
    *,
    instance_types: tuple[str, ...] | None = None,
    zones: tuple[str, ...] = ZONES,
    spot: bool = True,
    on_demand_base: int = 0,
    on_demand_percentage: int | None = None,
    spot_strategy: str | None = "price-capacity-optimized",
    max_size: int = 20,
    suspend: tuple[str, ...] = (),
    **extra: Any,
) -> None:
    """A group on the start-up launch template: with ``instance_types`` a MixedInstancesPolicy group (all spot unless
    on-demand settings say otherwise), without them a plain launch-template group tagged spot or on-demand."""
    tags = [
        {
            "ResourceId": name,
            "ResourceType": "auto-scaling-group",
            "Key": "spotguard.io/capacity-type",
            "Value": "spot" if spot else "on-demand",
            "PropagateAtLaunch": True,
        }
    ]
    source: dict[str, Any] = {"LaunchTemplate": {"LaunchTemplateName": TEMPLATE, "Version": "$Latest"}}
    if instance_types is not None:
        distribution: dict[str, Any] = {
            "OnDemandBaseCapacity": on_demand_base,
            "OnDemandPercentageAboveBaseCapacity": (0 if spot else 100)
            if on_demand_percentage is None
            else on_demand_percentage,
        }
        if spot_strategy is not None:
            distribution["SpotAllocationStrategy"] = spot_strategy
        source = {
            "MixedInstancesPolicy": {
                "LaunchTemplate": {
                    "LaunchTemplateSpecification": {"LaunchTemplateName": TEMPLATE, "Version": "$Latest"},
                    "Overrides": [{"InstanceType": t} for t in instance_types],
                },
                "InstancesDistribution": distribution,
            }
        }
    sandbox.autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        MinSize=0,
        MaxSize=max_size,
        DesiredCapacity=0,
        AvailabilityZones=list(zones),
        Tags=tags,
        **source,
        **extra,
    )
    if suspend:
        sandbox.autoscaling.suspend_processes(AutoScalingGroupName=name, ScalingProcesses=list(suspend))
    sandbox.server.simulator.tick()
    sandbox.control.set_capacity(name, pending_seconds=0)


def instances(sandbox: Sandbox, name: str) -> list[dict[str, Any]]:
    return sandbox.group(name)["Instances"]  # type: ignore[no-any-return]


def zone_counts(sandbox: Sandbox, name: str) -> dict[str, int]:
    counts = dict.fromkeys(sandbox.group(name)["AvailabilityZones"], 0)
    for instance in instances(sandbox, name):
        if instance["LifecycleState"] in ("Pending", "Pending:Wait", "Pending:Proceed", "InService"):
            counts[instance["AvailabilityZone"]] += 1
    return counts
