"""The sandbox's AWS half: unmodified boto3 sees Pending -> InService with a Ready Node, and a real
Failed scaling activity (and no Node) while spot capacity is short."""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client as k8s

from sandbox.aws.client import SandboxAWSClient
from sandbox.environment import Sandbox

SPOT = "spotguard-spot-1"
REAL_MESSAGE = (
    "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot capacity available that "
    "matches your request. Launching EC2 instance failed."
)


def _states(autoscaling: Any, group: str) -> dict[str, str]:
    described = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
    return {i["InstanceId"]: i["LifecycleState"] for i in described["Instances"]}


def _node_for(core: k8s.CoreV1Api, instance_id: str) -> k8s.V1Node | None:
    for node in core.list_node().items:
        if node.spec.provider_id and node.spec.provider_id.endswith("/" + instance_id):
            return node
    return None


def _ready(node: k8s.V1Node | None) -> bool:
    return node is not None and any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def _poll(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not seen within {timeout:.0f}s"
        time.sleep(0.2)


def test_scale_up_gives_pending_then_in_service_instance_and_ready_node(
    aws_sim: SandboxAWSClient, autoscaling: Any, core: k8s.CoreV1Api
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=2, capacity_short=False)
    before = _states(autoscaling, SPOT)
    autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=len(before) + 1, HonorCooldown=False)

    new = _poll("a new instance", lambda: [i for i in _states(autoscaling, SPOT) if i not in before])
    (instance_id,) = new
    assert _states(autoscaling, SPOT)[instance_id] == "Pending"
    assert _node_for(core, instance_id) is None, "no Node while the instance is Pending"

    _poll("the instance InService", lambda: _states(autoscaling, SPOT)[instance_id] == "InService")
    node = _poll("its Node Ready", lambda: (n := _node_for(core, instance_id)) is not None and _ready(n) and n)
    labels = node.metadata.labels
    assert labels["eks.amazonaws.com/capacityType"] == "SPOT"
    assert labels["node.kubernetes.io/instance-type"] == "m5.large"
    assert node.spec.provider_id == f"aws:///{labels['topology.kubernetes.io/zone']}/{instance_id}"


def test_capacity_shortage_gives_failed_activity_with_real_message_and_no_node(
    aws_sim: SandboxAWSClient, autoscaling: Any, core: k8s.CoreV1Api, sandbox: Sandbox
) -> None:
    aws_sim.set_capacity(SPOT, capacity_short=True, retry_seconds=1)
    before = _states(autoscaling, SPOT)
    autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=len(before) + 1, HonorCooldown=False)

    def failed() -> list[dict[str, Any]]:
        activities = autoscaling.describe_scaling_activities(AutoScalingGroupName=SPOT)["Activities"]
        return [a for a in activities if a["StatusCode"] == "Failed"]

    activity = _poll("a Failed scaling activity", failed)[0]
    assert activity["StatusMessage"] == REAL_MESSAGE
    assert REAL_MESSAGE in activity["Description"]
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[SPOT])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == len(before) + 1
    assert set(_states(autoscaling, SPOT)) == set(before)
    assert len(core.list_node(label_selector=f"spotguard.io/asg={SPOT}").items) == len(before)
