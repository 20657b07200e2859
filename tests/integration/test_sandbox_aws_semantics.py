"""Real Auto Scaling semantics on the running sandbox, through plain boto3 (no controller): one scenario per
behaviour the simulator follows (docs/simulator.md), with the Nodes kwok keeps for the instances."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client as k8s

from controller.adapters.aws import AutoScaling
from controller.checks.launch_failures import CONFIGURATION, QUOTA, classify
from sandbox.aws.client import SandboxAWSClient

T = TypeVar("T")
SPOT = "spotguard-spot-1"
ON_DEMAND = "spotguard-ondemand-1"
TEMPLATE = "spotguard-nodes"
ZONES = ["us-east-1a", "us-east-1b", "us-east-1c"]


def poll(what: str, check: Callable[[], T | None], timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not seen within {timeout:.0f}s"
        time.sleep(0.2)


def group(autoscaling: Any, name: str) -> dict[str, Any]:
    return autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]  # type: ignore[no-any-return]


def states(autoscaling: Any, name: str) -> dict[str, str]:
    return {i["InstanceId"]: i["LifecycleState"] for i in group(autoscaling, name)["Instances"]}


def activities(autoscaling: Any, name: str) -> list[dict[str, Any]]:
    return autoscaling.describe_scaling_activities(AutoScalingGroupName=name)["Activities"]  # type: ignore[no-any-return]


def node_of(core: k8s.CoreV1Api, instance_id: str) -> k8s.V1Node | None:
    for node in core.list_node(label_selector="spotguard.io/asg").items:
        if (node.spec.provider_id or "").endswith("/" + instance_id):
            return node
    return None


def create_group(autoscaling: Any, name: str, *, types: list[str] | None = None, zones: list[str] = ZONES) -> None:
    """A spot group on the sandbox's launch template: a MixedInstancesPolicy group with ``types``, else a plain
    launch-template group tagged spot (and managed, as Spot Guard's groups are)."""
    tags = [
        {"ResourceId": name, "ResourceType": "auto-scaling-group", "Key": k, "Value": v, "PropagateAtLaunch": True}
        for k, v in {"spotguard.io/capacity-type": "spot", "spotguard.io/managed": "true"}.items()
    ]
    template = {"LaunchTemplateName": TEMPLATE, "Version": "$Latest"}
    source: dict[str, Any] = {"LaunchTemplate": template}
    if types:
        source = {
            "MixedInstancesPolicy": {
                "LaunchTemplate": {
                    "LaunchTemplateSpecification": template,
                    "Overrides": [{"InstanceType": t} for t in types],
                },
                "InstancesDistribution": {
                    "OnDemandPercentageAboveBaseCapacity": 0,
                    "SpotAllocationStrategy": "price-capacity-optimized",
                },
            }
        }
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        MinSize=0,
        MaxSize=10,
        DesiredCapacity=0,
        AvailabilityZones=zones,
        Tags=tags,
        **source,
    )


def test_a_mixed_instances_group_with_one_short_pool_tries_its_next_pool_and_that_instance_joins(
    aws_sim: SandboxAWSClient, autoscaling: Any, core: k8s.CoreV1Api
) -> None:
    create_group(autoscaling, "mixed", types=["m5.large", "m6i.large"], zones=["us-east-1a"])
    poll("the simulator to adopt the group", lambda: "mixed" in [g["name"] for g in aws_sim.state()["groups"]])
    aws_sim.set_capacity("mixed", pending_seconds=1)
    aws_sim.set_pool("mixed", instance_type="m5.large", short=True)

    autoscaling.set_desired_capacity(AutoScalingGroupName="mixed", DesiredCapacity=1)

    (instance_id,) = poll("an instance", lambda: list(states(autoscaling, "mixed")))
    failed = [a for a in activities(autoscaling, "mixed") if a["StatusCode"] == "Failed"]
    assert [a["StatusMessage"] for a in failed] == [
        "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot capacity available that "
        "matches your request. Launching EC2 instance failed."
    ]
    node = poll("its Node", lambda: node_of(core, instance_id))
    assert node.metadata.labels["node.kubernetes.io/instance-type"] == "m6i.large"


def test_a_launch_template_spot_group_writes_its_shortage_as_a_bare_sentence(
    aws_sim: SandboxAWSClient, autoscaling: Any
) -> None:
    create_group(autoscaling, "lt-spot")
    poll("the simulator to adopt the group", lambda: "lt-spot" in [g["name"] for g in aws_sim.state()["groups"]])
    aws_sim.set_capacity("lt-spot", capacity_short=True)

    autoscaling.set_desired_capacity(AutoScalingGroupName="lt-spot", DesiredCapacity=1)

    failed = poll(
        "a Failed activity", lambda: [a for a in activities(autoscaling, "lt-spot") if a["StatusCode"] == "Failed"]
    )
    assert failed[0]["StatusMessage"] == (
        "There is no Spot capacity available that matches your request. Launching EC2 instance failed."
    )


def test_az_rebalance_terminates_an_instance_nobody_chose_and_its_node_goes_unless_suspended(
    aws_sim: SandboxAWSClient, autoscaling: Any, core: k8s.CoreV1Api
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=0.5, az_rebalance_seconds=1)
    autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=6)
    poll("6 instances InService", lambda: list(states(autoscaling, SPOT).values()) == ["InService"] * 6)
    in_a = [i["InstanceId"] for i in group(autoscaling, SPOT)["Instances"] if i["AvailabilityZone"] == "us-east-1a"]

    # Suspended (as the sandbox's groups start): terminating both instances of one zone changes nothing else.
    for victim in in_a:
        autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)
    survivors = set(
        poll(
            "the victims gone", lambda: set(states(autoscaling, SPOT)) if len(states(autoscaling, SPOT)) == 4 else None
        )
    )
    time.sleep(3)  # three rebalance periods
    assert set(states(autoscaling, SPOT)) == survivors

    # Resumed: AZRebalance launches in us-east-1a, then terminates one of the survivors, undrained, Node and all.
    autoscaling.resume_processes(AutoScalingGroupName=SPOT, ScalingProcesses=["AZRebalance"])
    gone = poll("a survivor terminated by AZRebalance", lambda: survivors - set(states(autoscaling, SPOT)))
    (terminated,) = gone
    termination = next(
        a for a in activities(autoscaling, SPOT) if a["Description"] == f"Terminating EC2 instance: {terminated}"
    )
    assert "instances were launched to balance instances in zones" in termination["Cause"]
    poll("its Node deleted", lambda: node_of(core, terminated) is None)
    assert group(autoscaling, SPOT)["DesiredCapacity"] == 4


def test_a_lowered_desired_capacity_terminates_by_the_termination_policy_and_spares_protected_instances(
    aws_sim: SandboxAWSClient, autoscaling: Any
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=0)
    autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=6)
    poll("6 instances InService", lambda: list(states(autoscaling, SPOT).values()) == ["InService"] * 6)
    by_zone = {i["AvailabilityZone"]: i["InstanceId"] for i in group(autoscaling, SPOT)["Instances"]}
    protected = [by_zone["us-east-1a"], by_zone["us-east-1b"]]  # one of each zone: balance stays possible
    autoscaling.set_instance_protection(AutoScalingGroupName=SPOT, InstanceIds=protected, ProtectedFromScaleIn=True)

    autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=3)

    left = poll(
        "3 instances left",
        lambda: group(autoscaling, SPOT)["Instances"] if len(states(autoscaling, SPOT)) == 3 else None,
    )
    assert set(protected) <= {i["InstanceId"] for i in left}
    assert sorted(i["AvailabilityZone"] for i in left) == ZONES  # balanced: one per zone

    # All protected now: a lower desired capacity terminates nothing; an explicit terminate still does.
    autoscaling.set_instance_protection(
        AutoScalingGroupName=SPOT, InstanceIds=[i["InstanceId"] for i in left], ProtectedFromScaleIn=True
    )
    autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=1)
    time.sleep(1)
    assert len(states(autoscaling, SPOT)) == 3
    autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=protected[0], ShouldDecrementDesiredCapacity=False)
    poll("the protected instance terminated on request", lambda: protected[0] not in states(autoscaling, SPOT))


def test_a_launch_hook_holds_pending_wait_with_the_node_registered_until_it_is_completed(
    aws_sim: SandboxAWSClient, autoscaling: Any, core: k8s.CoreV1Api
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=0.5)
    autoscaling.put_lifecycle_hook(
        LifecycleHookName="bootstrap",
        AutoScalingGroupName=SPOT,
        LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
        HeartbeatTimeout=600,
    )
    before = set(states(autoscaling, SPOT))
    autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=len(before) + 1)

    (new,) = poll(
        "the new instance in Pending:Wait",
        lambda: [i for i, s in states(autoscaling, SPOT).items() if s == "Pending:Wait"],
    )
    launch = next(a for a in activities(autoscaling, SPOT) if a["Description"].endswith(new))
    assert launch["StatusCode"] == "MidLifecycleAction"
    poll("its Node (the kubelet registers during Pending:Wait)", lambda: node_of(core, new))

    autoscaling.complete_lifecycle_action(
        LifecycleHookName="bootstrap", AutoScalingGroupName=SPOT, LifecycleActionResult="CONTINUE", InstanceId=new
    )
    assert states(autoscaling, SPOT)[new] == "InService"


def test_a_termination_hook_holds_terminating_wait_keeping_the_node_and_the_instance_goes_once(
    aws_sim: SandboxAWSClient, autoscaling: Any, core: k8s.CoreV1Api
) -> None:
    autoscaling.put_lifecycle_hook(
        LifecycleHookName="drain",
        AutoScalingGroupName=SPOT,
        LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING",
        HeartbeatTimeout=600,
    )
    victim = sorted(states(autoscaling, SPOT))[0]
    desired = group(autoscaling, SPOT)["DesiredCapacity"]

    for _ in range(2):
        autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)

    assert states(autoscaling, SPOT)[victim] == "Terminating:Wait"
    assert group(autoscaling, SPOT)["DesiredCapacity"] == desired - 1
    time.sleep(1)
    assert node_of(core, victim) is not None
    autoscaling.complete_lifecycle_action(
        LifecycleHookName="drain", AutoScalingGroupName=SPOT, LifecycleActionResult="CONTINUE", InstanceId=victim
    )
    poll(
        "the instance gone and its Node deleted",
        lambda: victim not in states(autoscaling, SPOT) and node_of(core, victim) is None,
    )
    assert (
        len([a for a in activities(autoscaling, SPOT) if a["Description"] == f"Terminating EC2 instance: {victim}"])
        == 1
    )


def test_an_instance_refresh_replaces_every_instance_and_the_activities_show_it(
    aws_sim: SandboxAWSClient, autoscaling: Any
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=0.5)
    before = set(states(autoscaling, SPOT))

    refresh_id = autoscaling.start_instance_refresh(
        AutoScalingGroupName=SPOT, Preferences={"MinHealthyPercentage": 50, "InstanceWarmup": 0}
    )["InstanceRefreshId"]

    def done() -> dict[str, Any] | None:
        (refresh,) = autoscaling.describe_instance_refreshes(
            AutoScalingGroupName=SPOT, InstanceRefreshIds=[refresh_id]
        )["InstanceRefreshes"]
        return refresh if refresh["Status"] == "Successful" else None

    refresh = poll("the refresh to succeed", done)
    assert refresh["PercentageComplete"] == 100
    after = states(autoscaling, SPOT)
    assert before.isdisjoint(after) and list(after.values()) == ["InService"] * len(before)
    causes = [a["Cause"] for a in activities(autoscaling, SPOT) if a["Description"].startswith("Terminating")]
    assert sum("in response to an instance refresh" in c for c in causes) == len(before)


def test_an_instance_ec2_reclaims_leaves_without_a_decrement_and_the_group_launches_one_in_its_place(
    aws_sim: SandboxAWSClient, autoscaling: Any, core: k8s.CoreV1Api
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=0.5)
    before = states(autoscaling, SPOT)
    desired = group(autoscaling, SPOT)["DesiredCapacity"]
    victim = sorted(before)[0]

    aws_sim.reclaim(victim)

    def replaced() -> dict[str, str] | None:
        now = states(autoscaling, SPOT)
        return now if victim not in now and list(now.values()) == ["InService"] * desired else None

    after = poll("one launched in its place, InService", replaced)
    assert group(autoscaling, SPOT)["DesiredCapacity"] == desired, "no decrement"
    (in_place,) = set(after) - set(before)
    newest = activities(autoscaling, SPOT)
    described = [a["Description"] for a in newest]
    termination = described.index(f"Terminating EC2 instance: {victim}")
    assert described.index(f"Launching a new EC2 instance: {in_place}") < termination, "launched after it left"
    cause = newest[termination]["Cause"]
    assert "in response to an EC2 health check indicating it has been terminated or stopped" in cause
    assert "shrinking the capacity" not in cause
    poll("the victim's Node gone", lambda: node_of(core, victim) is None)


def test_a_suspended_launch_process_holds_a_scale_out_until_it_is_resumed(
    aws_sim: SandboxAWSClient, autoscaling: Any
) -> None:
    aws_sim.set_capacity(ON_DEMAND, pending_seconds=0)
    autoscaling.suspend_processes(AutoScalingGroupName=ON_DEMAND, ScalingProcesses=["Launch"])
    assert {p["ProcessName"] for p in group(autoscaling, ON_DEMAND)["SuspendedProcesses"]} == {"AZRebalance", "Launch"}

    autoscaling.set_desired_capacity(AutoScalingGroupName=ON_DEMAND, DesiredCapacity=2)
    time.sleep(1)
    assert states(autoscaling, ON_DEMAND) == {}

    autoscaling.resume_processes(AutoScalingGroupName=ON_DEMAND, ScalingProcesses=["Launch"])
    poll("2 instances launched", lambda: len(states(autoscaling, ON_DEMAND)) == 2)


def test_quota_and_configuration_failures_reach_the_controllers_classifier_as_such(
    aws_sim: SandboxAWSClient, autoscaling: Any
) -> None:
    asg = AutoScaling(autoscaling, max_attempts=1)
    aws_sim.set_launch_failure(SPOT, "vcpu-limit")
    aws_sim.set_launch_failure(ON_DEMAND, "launch-template-not-found")
    for name in (SPOT, ON_DEMAND):
        autoscaling.set_desired_capacity(
            AutoScalingGroupName=name, DesiredCapacity=group(autoscaling, name)["DesiredCapacity"] + 1
        )

    spot = poll("the spot failure", lambda: classify(asg.activities(SPOT)[0]))
    on_demand = poll("the on-demand failure", lambda: classify(asg.activities(ON_DEMAND)[0]))

    assert (spot.category, spot.code) == (QUOTA, "VcpuLimitExceeded")
    assert spot.message.startswith("Could not launch Spot Instances. VcpuLimitExceeded - You have requested more vCPU")
    assert (on_demand.category, on_demand.code) == (CONFIGURATION, "InvalidLaunchTemplateId.NotFound")
    assert not on_demand.message.startswith("Could not launch")  # a launch-template group: no code written
