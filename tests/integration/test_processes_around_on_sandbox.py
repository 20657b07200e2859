"""The controller copes with the Auto Scaling processes around it, on the real sandbox (API server, kwok, moto +
capacity simulator) with the controller's production wiring: launch hooks holding a replacement in Pending:Wait,
termination hooks holding a retired instance in Terminating:Wait, scale-in protection on new instances."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s

from sandbox.aws.client import SandboxAWSClient
from tests.integration.test_replacement_on_sandbox import (
    ON_DEMAND,
    SPOT,
    Running,
    _desired,
    _gone,
    _instance,
    _instances,
    _recommend,
    _record,
    _spot_nodes,
    _until,
    start_controller,  # noqa: F401 - the fixture
)

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
DEADLINE = 4.0  # the capacity-check deadline these scenarios run with (seconds)


def _states(autoscaling: Any, group: str) -> dict[str, str]:
    (raw,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
    return {i["InstanceId"]: i["LifecycleState"] for i in raw["Instances"]}


def _held(autoscaling: Any, before: set[str]) -> list[str]:
    return [i for i, s in _states(autoscaling, SPOT).items() if s == "Pending:Wait" and i not in before]


def test_a_launch_hook_holding_the_replacement_past_the_deadline_is_no_shortage_and_continue_completes_it(
    start_controller: Callable[..., Running],  # noqa: F811 - the fixture imported above
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    autoscaling: Any,
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=0.5)
    autoscaling.put_lifecycle_hook(
        LifecycleHookName="bootstrap",
        AutoScalingGroupName=SPOT,
        LifecycleTransition=LAUNCHING,
        HeartbeatTimeout=120,
        DefaultResult="ABANDON",
    )
    old = _spot_nodes(core)[0]
    before = _instances(aws_sim, SPOT)
    start_controller(capacity_check_timeout=DEADLINE)
    _recommend(core, old)

    (new,) = _until("the replacement in Pending:Wait", lambda: _held(autoscaling, before))
    time.sleep(3 * DEADLINE)  # well past the deadline, many capacity polls
    record = _record(core, old.metadata.name)
    assert record is not None and record["phase"] == "SpotScaledUp", "a held instance is not a shortage"
    assert _desired(aws_sim, ON_DEMAND) == 0

    autoscaling.complete_lifecycle_action(
        LifecycleHookName="bootstrap", AutoScalingGroupName=SPOT, LifecycleActionResult="CONTINUE", InstanceId=new
    )
    _until("the old node retired and gone", lambda: _gone(core, old.metadata.name), timeout=60)
    assert _instances(aws_sim, SPOT) == before - {_instance(old)} | {new}, "the held instance replaced the old one"
    assert _desired(aws_sim, ON_DEMAND) == 0 and aws_sim.count_calls("SetDesiredCapacity", asg=ON_DEMAND) == 0


def test_a_launch_hook_that_abandons_the_replacement_falls_back_saying_so(
    start_controller: Callable[..., Running],  # noqa: F811 - the fixture imported above
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    autoscaling: Any,
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=0.5)
    aws_sim.set_capacity(ON_DEMAND, pending_seconds=0.5)
    autoscaling.put_lifecycle_hook(
        LifecycleHookName="bootstrap",
        AutoScalingGroupName=SPOT,
        LifecycleTransition=LAUNCHING,
        HeartbeatTimeout=120,
        DefaultResult="CONTINUE",
    )
    old = _spot_nodes(core)[0]
    before = _instances(aws_sim, SPOT)
    start_controller(capacity_check_timeout=DEADLINE)
    _recommend(core, old)

    (new,) = _until("the replacement in Pending:Wait", lambda: _held(autoscaling, before))
    time.sleep(2 * DEADLINE)
    autoscaling.complete_lifecycle_action(
        LifecycleHookName="bootstrap", AutoScalingGroupName=SPOT, LifecycleActionResult="ABANDON", InstanceId=new
    )
    record = _until(
        "the fallback recorded",
        lambda: (r := _record(core, old.metadata.name)) is not None and r.get("fallbackReason") and r,
    )
    assert "lifecycle hook abandoned" in record["fallbackReason"], record["fallbackReason"]
    assert "deadline" not in record["fallbackReason"]
    _until("an on-demand instance asked for", lambda: _desired(aws_sim, ON_DEMAND) == 1)
    _until("the old node retired and gone", lambda: _gone(core, old.metadata.name), timeout=60)
    assert new not in _instances(aws_sim, SPOT)
    assert _desired(aws_sim, SPOT) == len(before) - 1, "the abandoned launch is not left in desired capacity"
