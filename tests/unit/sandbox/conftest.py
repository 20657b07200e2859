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
