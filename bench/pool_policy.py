"""Several pools: fall back at the first failed launch, or let the group try its other pools first?

``python -m bench.pool_policy`` runs, for each policy, a spot scale-up of one instance on a MixedInstancesPolicy
group of three instance types (three pools) in the capacity simulator (sandbox/aws, in-process, on a manual clock:
no Kubernetes, no waiting), with one, two or all three pools short, and the controller's own capacity check
(``controller.checks.capacity_check.evaluate``) polled as the controller polls it. It measures the time to a
replacement (a spot instance InService, or an on-demand one after the fallback) and the on-demand instance-minutes
a fallback costs (the on-demand instance runs from the fallback until the lifecycle returns to spot: on-demand boot,
minimumWaitDuration, stability window, the returned spot instance's boot, the drain), and merges the figures into
bench/results.json (``bench.pool_policy.*``). The choice and the figures are in docs/simulator.md ("Several pools").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import boto3
from botocore.config import Config

from bench import results
from bench.figures import Figure
from controller.adapters.aws import AutoScaling
from controller.checks import capacity_check
from sandbox.aws.clock import ManualClock
from sandbox.aws.server import SandboxAWSConfig, SandboxAWSServer

BENCHMARK = "pool_policy"
GROUP = "bench-mixed"
TYPES = ("m5.large", "m6i.large", "m5a.large")
TEMPLATE = "spotguard-nodes"
POLL = 5.0  # SPOT_GUARD_CAPACITY_POLL_INTERVAL's default
DEADLINE = 180.0  # SPOT_GUARD_CAPACITY_CHECK_TIMEOUT's default
SPOT_BOOT = 60.0  # a spot instance's launch to InService with a Ready Node
ON_DEMAND_BOOT = 60.0
MINIMUM_WAIT = 600.0  # SPOT_GUARD_MINIMUM_WAIT_DURATION's default
STABILITY = 120.0  # SPOT_GUARD_STABILITY_WINDOW's default
DRAIN = 30.0
#: How long the on-demand instance of a fallback runs, when spot is back by the end of the minimum wait.
ON_DEMAND_LIFETIME = ON_DEMAND_BOOT + MINIMUM_WAIT + STABILITY + SPOT_BOOT + DRAIN
SCENARIOS = {"one_of_three_short": TYPES[:1], "two_of_three_short": TYPES[:2], "all_three_short": TYPES}
POLICIES = {"first_failure": 1, "every_pool": len(TYPES)}  # the pools the check is told of
POOL_RETRIES = (0.0, 10.0)  # seconds before the group tries its next pool (the simulator's pool_retry_seconds)


@dataclasses.dataclass(frozen=True)
class Outcome:
    to_replacement: float  # seconds from the scale-up
    on_demand_minutes: float
    fell_back: bool
    code: str


def _client(endpoint: str) -> Any:
    session = boto3.session.Session(
        aws_access_key_id="bench",
        aws_secret_access_key="bench",  # noqa: S106 - the in-process simulator takes any
        region_name="us-east-1",
    )
    return session.client(
        "autoscaling", endpoint_url=endpoint, config=Config(retries={"total_max_attempts": 1, "mode": "standard"})
    )


def _create(server: SandboxAWSServer, client: Any) -> None:
    client.create_auto_scaling_group(
        AutoScalingGroupName=GROUP,
        MinSize=0,
        MaxSize=10,
        DesiredCapacity=0,
        AvailabilityZones=["us-east-1a"],
        MixedInstancesPolicy={
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {"LaunchTemplateName": TEMPLATE, "Version": "$Latest"},
                "Overrides": [{"InstanceType": t} for t in TYPES],
            },
            "InstancesDistribution": {
                "OnDemandPercentageAboveBaseCapacity": 0,
                "SpotAllocationStrategy": "capacity-optimized-prioritized",
            },
        },
        Tags=[
            {
                "ResourceId": GROUP,
                "ResourceType": "auto-scaling-group",
                "Key": "spotguard.io/capacity-type",
                "Value": "spot",
                "PropagateAtLaunch": True,
            }
        ],
    )
    server.simulator.tick()


def run_once(
    server: SandboxAWSServer, clock: ManualClock, short: tuple[str, ...], pools: int, pool_retry: float
) -> Outcome:
    from sandbox.aws.client import SandboxAWSClient

    server.reset()
    client = _client(server.endpoint)
    control = SandboxAWSClient(server.endpoint)
    _create(server, client)
    control.set_capacity(GROUP, pending_seconds=SPOT_BOOT, retry_seconds=30.0, pool_retry_seconds=pool_retry)
    for instance_type in short:
        control.set_pool(GROUP, instance_type=instance_type, short=True)
    asg = AutoScaling(client, max_attempts=1)
    requested_at = clock.now()
    client.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    elapsed = 0.0
    while True:
        clock.advance(POLL)
        server.simulator.tick()
        elapsed += POLL
        (group,) = asg.describe_groups([GROUP]).values()
        decision = capacity_check.evaluate(
            wanted=1,
            group_name=GROUP,
            ready=tuple(i.instance_id for i in group.in_service),
            short=0,
            activities=asg.activities(GROUP),
            requested_at=requested_at - dt.timedelta(seconds=1),
            deadline_monotonic=DEADLINE,
            now_monotonic=elapsed,
            poll_interval=POLL,
            pools=pools,
        )
        if isinstance(decision, capacity_check.Ready):
            return Outcome(elapsed, 0.0, False, "ready")
        if isinstance(decision, capacity_check.Fallback):
            return Outcome(elapsed + ON_DEMAND_BOOT, ON_DEMAND_LIFETIME / 60.0, True, decision.code)


def measure() -> list[Figure]:
    clock = ManualClock()
    server = SandboxAWSServer(SandboxAWSConfig(tick_seconds=None), clock=clock)
    server.start()
    figures: list[Figure] = []
    try:
        for scenario, short in SCENARIOS.items():
            for policy, pools in POLICIES.items():
                outcomes = [run_once(server, clock, short, pools, retry) for retry in POOL_RETRIES]
                conditions = (
                    f"capacity simulator, manual clock: MixedInstancesPolicy group of {len(TYPES)} types in one zone, "
                    f"{len(short)} short; capacity poll {POLL:g} s, deadline {DEADLINE:g} s, spot and on-demand "
                    f"boot {SPOT_BOOT:g} s; samples: next pool tried after {', '.join(f'{r:g}' for r in POOL_RETRIES)} "
                    "s; on-demand runs boot + minimumWaitDuration 10m + stability 2m + spot boot + drain 30 s"
                )
                details = {"outcomes": [dataclasses.asdict(o) for o in outcomes]}
                figures.append(
                    Figure.of_samples(
                        f"pool_policy.{scenario}.{policy}.time_to_replacement",
                        [o.to_replacement for o in outcomes],
                        "s",
                        conditions,
                        title=f"Time to a replacement, {scenario.replace('_', ' ')}, policy {policy.replace('_', ' ')}",
                        details=details,
                    )
                )
                figures.append(
                    Figure.of_samples(
                        f"pool_policy.{scenario}.{policy}.on_demand_minutes",
                        [o.on_demand_minutes for o in outcomes],
                        "min",
                        conditions,
                        title=f"On-demand instance-minutes, {scenario.replace('_', ' ')}, policy "
                        f"{policy.replace('_', ' ')}",
                        details=details,
                    )
                )
    finally:
        server.stop()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [dataclasses.replace(f, benchmark=BENCHMARK, measured_at=stamp) for f in figures]


def main() -> None:
    figures = measure()
    merged = results.merge(results.load(), figures, rerun={BENCHMARK})
    results.save(merged)
    results.write_docs(merged)
    for figure in figures:
        print(json.dumps({"name": figure.name, "value": figure.value, "unit": figure.unit, "samples": figure.samples}))


if __name__ == "__main__":
    main()
