"""Lifecycle hooks: Pending:Wait and Terminating:Wait, CompleteLifecycleAction, heartbeats, timeouts and the hook's
DefaultResult, and the activities AWS shows meanwhile."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.unit.sandbox.conftest import Sandbox, create_group, instances

GROUP = "hooked"
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"


def _hook(sandbox: Sandbox, name: str, transition: str, timeout: int = 60, result: str = "CONTINUE") -> None:
    sandbox.autoscaling.put_lifecycle_hook(
        LifecycleHookName=name,
        AutoScalingGroupName=GROUP,
        LifecycleTransition=transition,
        HeartbeatTimeout=timeout,
        DefaultResult=result,
    )


def _states(sandbox: Sandbox) -> dict[str, str]:
    return {i["InstanceId"]: i["LifecycleState"] for i in instances(sandbox, GROUP)}


def _launch_one(sandbox: Sandbox) -> str:
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    (instance_id,) = _states(sandbox)
    return instance_id


def _activity(sandbox: Sandbox, instance_id: str, verb: str = "Launching") -> dict[str, Any]:
    return next(
        a for a in sandbox.activities(GROUP) if a["Description"].startswith(verb) and instance_id in a["Description"]
    )


@pytest.fixture
def group(sandbox: Sandbox) -> Sandbox:
    create_group(sandbox, GROUP, zones=("us-east-1a",))
    return sandbox


def test_a_launch_hook_holds_the_instance_in_pending_wait_until_the_action_is_completed(group: Sandbox) -> None:
    _hook(group, "boot", LAUNCHING)
    instance_id = _launch_one(group)

    assert _states(group) == {instance_id: "Pending:Wait"}
    assert _activity(group, instance_id)["StatusCode"] == "MidLifecycleAction"
    described = group.autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"]
    assert described[0]["LifecycleState"] == "Pending:Wait"

    group.autoscaling.complete_lifecycle_action(
        LifecycleHookName="boot", AutoScalingGroupName=GROUP, LifecycleActionResult="CONTINUE", InstanceId=instance_id
    )

    assert _states(group) == {instance_id: "InService"}
    assert _activity(group, instance_id)["StatusCode"] == "Successful"


def test_at_the_heartbeat_timeout_a_continue_hook_puts_the_instance_in_service(group: Sandbox) -> None:
    _hook(group, "boot", LAUNCHING, timeout=60, result="CONTINUE")
    instance_id = _launch_one(group)

    group.advance(59)
    assert _states(group) == {instance_id: "Pending:Wait"}
    group.advance(1)
    assert _states(group) == {instance_id: "InService"}


def test_a_heartbeat_restarts_the_timeout(group: Sandbox) -> None:
    _hook(group, "boot", LAUNCHING, timeout=60, result="CONTINUE")
    instance_id = _launch_one(group)
    group.advance(50)

    group.autoscaling.record_lifecycle_action_heartbeat(
        LifecycleHookName="boot", AutoScalingGroupName=GROUP, InstanceId=instance_id
    )
    group.advance(50)
    assert _states(group) == {instance_id: "Pending:Wait"}
    group.advance(10)
    assert _states(group) == {instance_id: "InService"}


def test_an_abandoned_launch_is_cancelled_terminated_and_replaced(group: Sandbox) -> None:
    _hook(group, "boot", LAUNCHING, timeout=60, result="ABANDON")
    first = _launch_one(group)

    group.advance(60)

    activity = _activity(group, first)
    assert activity["StatusCode"] == "Cancelled"
    assert activity["StatusMessage"].startswith("Instance failed to complete user's Lifecycle Action: Lifecycle Action")
    assert activity["StatusMessage"].endswith("was abandoned: Heartbeat Timeout")
    assert (
        activity["Description"] == f"Launching a new EC2 instance: {first}.  Status Reason: {activity['StatusMessage']}"
    )
    (replacement,) = _states(group)
    assert replacement != first and _states(group)[replacement] == "Pending:Wait"
    state = group.ec2.describe_instances(InstanceIds=[first])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "terminated"


def test_completing_with_abandon_says_so(group: Sandbox) -> None:
    _hook(group, "boot", LAUNCHING)
    instance_id = _launch_one(group)

    group.autoscaling.complete_lifecycle_action(
        LifecycleHookName="boot", AutoScalingGroupName=GROUP, LifecycleActionResult="ABANDON", InstanceId=instance_id
    )

    assert _activity(group, instance_id)["StatusMessage"].endswith("Lifecycle Action Completed with ABANDON Result")
    assert instance_id not in _states(group)


def test_a_termination_hook_holds_the_instance_in_terminating_wait_and_it_is_not_terminated_twice(
    group: Sandbox,
) -> None:
    _hook(group, "drain", TERMINATING, timeout=300)
    group.autoscaling.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=2)
    victim = sorted(_states(group))[0]

    first = group.autoscaling.terminate_instance_in_auto_scaling_group(
        InstanceId=victim, ShouldDecrementDesiredCapacity=True
    )["Activity"]
    again = group.autoscaling.terminate_instance_in_auto_scaling_group(
        InstanceId=victim, ShouldDecrementDesiredCapacity=True
    )["Activity"]

    assert _states(group)[victim] == "Terminating:Wait"
    assert again["ActivityId"] == first["ActivityId"]
    assert group.group(GROUP)["DesiredCapacity"] == 1  # decremented once
    assert _activity(group, victim, "Terminating")["StatusCode"] == "MidLifecycleAction"

    group.autoscaling.complete_lifecycle_action(
        LifecycleHookName="drain", AutoScalingGroupName=GROUP, LifecycleActionResult="CONTINUE", InstanceId=victim
    )

    assert victim not in _states(group)
    assert _activity(group, victim, "Terminating")["StatusCode"] == "Successful"
    assert len(_states(group)) == 1


def test_completing_an_action_that_is_not_waiting_is_a_validation_error(group: Sandbox) -> None:
    _hook(group, "boot", LAUNCHING)
    instance_id = _launch_one(group)
    group.autoscaling.complete_lifecycle_action(
        LifecycleHookName="boot", AutoScalingGroupName=GROUP, LifecycleActionResult="CONTINUE", InstanceId=instance_id
    )

    with pytest.raises(ClientError) as raised:
        group.autoscaling.complete_lifecycle_action(
            LifecycleHookName="boot",
            AutoScalingGroupName=GROUP,
            LifecycleActionResult="CONTINUE",
            InstanceId=instance_id,
        )

    assert raised.value.response["Error"]["Code"] == "ValidationError"
    assert (
        raised.value.response["Error"]["Message"] == f"No active Lifecycle Action found with instance ID {instance_id}"
    )
