"""The controller copes with the Auto Scaling processes around it, on the real sandbox (API server, kwok, moto +
capacity simulator) with the controller's production wiring: launch hooks holding a replacement in Pending:Wait,
termination hooks holding a retired instance in Terminating:Wait, scale-in protection on new instances, an instance
refresh of the spot group."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s

from controller.adapters.kube import Kube
from controller.adapters.sgfe_store import FallbackEvents
from controller.model.sgfe import Phase
from sandbox.aws.client import SandboxAWSClient
from tests.integration.lifecycle_harness import LifecycleRun, compressed, fall_back
from tests.integration.test_replacement_on_sandbox import (
    ON_DEMAND,
    SPOT,
    Running,
    _desired,
    _events,
    _gone,
    _instance,
    _instances,
    _recommend,
    _record,
    _spot_nodes,
    _until,
    start_controller,  # noqa: F401 - the fixture
)


@pytest.fixture
def kube(api_client: k8s.ApiClient) -> Kube:
    return Kube(api_client)


LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
DEADLINE = 4.0  # the capacity-check deadline these scenarios run with (seconds)


def _hook(autoscaling: Any, name: str, transition: str, *, heartbeat: int, default: str) -> None:
    """A lifecycle hook on the spot group (PutLifecycleHook, as an operator adds one)."""
    autoscaling.put_lifecycle_hook(
        LifecycleHookName=name,
        AutoScalingGroupName=SPOT,
        LifecycleTransition=transition,
        HeartbeatTimeout=heartbeat,
        DefaultResult=default,
    )


def _first_spot_node(core: k8s.CoreV1Api, aws_sim: SandboxAWSClient) -> tuple[k8s.V1Node, set[str]]:
    """The spot node a scenario recommends or interrupts, and the spot group's instances before it starts."""
    return _spot_nodes(core)[0], _instances(aws_sim, SPOT)


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
    _hook(autoscaling, "bootstrap", LAUNCHING, heartbeat=120, default="ABANDON")
    old, before = _first_spot_node(core, aws_sim)
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
    _hook(autoscaling, "bootstrap", LAUNCHING, heartbeat=120, default="CONTINUE")
    old, before = _first_spot_node(core, aws_sim)
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


# -- scale-in protection ---------------------------------------------------------------------------------------


def _protect_everything(autoscaling: Any, group: str) -> None:
    """NewInstancesProtectedFromScaleIn on the group and protection on every instance it has now."""
    autoscaling.update_auto_scaling_group(AutoScalingGroupName=group, NewInstancesProtectedFromScaleIn=True)
    instances = list(_states(autoscaling, group))
    if instances:
        autoscaling.set_instance_protection(
            AutoScalingGroupName=group, InstanceIds=instances, ProtectedFromScaleIn=True
        )


def _protection(autoscaling: Any, group: str) -> dict[str, bool]:
    (raw,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
    return {i["InstanceId"]: bool(i["ProtectedFromScaleIn"]) for i in raw["Instances"]}


def test_scale_in_protection_does_not_block_the_retirement_of_the_old_spot_node(
    start_controller: Callable[..., Running],  # noqa: F811 - the fixture imported above
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    autoscaling: Any,
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=0.5)
    _protect_everything(autoscaling, SPOT)
    old, before = _first_spot_node(core, aws_sim)
    start_controller()
    _recommend(core, old)

    _until("the old node retired and gone", lambda: _gone(core, old.metadata.name), timeout=60)
    after = _instances(aws_sim, SPOT)
    assert _instance(old) not in after and len(after) == len(before) == _desired(aws_sim, SPOT)
    (new,) = after - before
    assert _protection(autoscaling, SPOT)[new], "the replacement came protected, as the group says"
    assert aws_sim.count_calls("SetDesiredCapacity", asg=SPOT) == 1, "retired by terminating it, not by a decrement"


def test_scale_in_protection_does_not_block_giving_back_a_launch_that_never_happened(
    start_controller: Callable[..., Running],  # noqa: F811 - the fixture imported above
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    autoscaling: Any,
) -> None:
    aws_sim.set_capacity(SPOT, capacity_short=True, retry_seconds=1)
    aws_sim.set_capacity(ON_DEMAND, pending_seconds=0.5)
    _protect_everything(autoscaling, SPOT)
    _protect_everything(autoscaling, ON_DEMAND)
    old, before = _first_spot_node(core, aws_sim)
    start_controller()
    _recommend(core, old)

    _until("the old node retired and gone", lambda: _gone(core, old.metadata.name), timeout=60)
    assert _desired(aws_sim, SPOT) == len(before) - 1 == len(_instances(aws_sim, SPOT)), "the spot increase given back"
    assert _desired(aws_sim, ON_DEMAND) == 1 == len(_instances(aws_sim, ON_DEMAND))
    assert all(_protection(autoscaling, ON_DEMAND).values())


# -- termination hooks -----------------------------------------------------------------------------------------


def test_a_termination_hook_holding_the_retired_instance_is_leaving_and_terminated_once(
    start_controller: Callable[..., Running],  # noqa: F811 - the fixture imported above
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    autoscaling: Any,
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=0.5)
    _hook(autoscaling, "drain", TERMINATING, heartbeat=120, default="CONTINUE")
    first, second = _spot_nodes(core)[:2]
    before = _instances(aws_sim, SPOT)
    start_controller()
    _recommend(core, first)

    victim = _instance(first)
    _until(
        "the old instance held in Terminating:Wait",
        lambda: _states(autoscaling, SPOT).get(victim) == "Terminating:Wait",
    )
    # While it waits, a second notice: the held instance counts as leaving, not as capacity (nor as a new arrival).
    _recommend(core, second)
    _until(
        "the second node replaced by a spot instance",
        lambda: (r := _record(core, second.metadata.name)) is None or r.get("replacementCapacity") == "spot",
    )
    held = {victim, _instance(second)}
    _until(
        "both retired instances held in Terminating:Wait",
        lambda: all(_states(autoscaling, SPOT).get(i) == "Terminating:Wait" for i in held),
    )
    time.sleep(2)  # many passes while they are held
    for instance in held:
        autoscaling.complete_lifecycle_action(
            LifecycleHookName="drain", AutoScalingGroupName=SPOT, LifecycleActionResult="CONTINUE", InstanceId=instance
        )
    _until("both old nodes gone", lambda: _gone(core, first.metadata.name) and _gone(core, second.metadata.name))
    after = _instances(aws_sim, SPOT)
    assert victim not in after and _instance(second) not in after
    for instance in held:
        terminations = [c for c in aws_sim.calls("TerminateInstanceInAutoScalingGroup") if instance in str(c["params"])]
        assert len(terminations) == 1, f"held instance {instance} terminated once, never twice"
    _until("capacity neutral", lambda: len(_instances(aws_sim, SPOT)) == len(before) == _desired(aws_sim, SPOT))
    assert _desired(aws_sim, ON_DEMAND) == 0, "no fallback"


# -- the SGFE lifecycle among hooks and protection ---------------------------------------------------------------


def _lifecycle_completes(kube: Kube, autoscaling: Any, namespace: str, sgfe: str) -> None:
    run = LifecycleRun(kube, autoscaling, compressed(namespace, completed_ttl=600), "leader").start()
    try:
        _until(
            "the SGFE Completed",
            lambda: (e := FallbackEvents(kube, namespace).find(sgfe)) is not None and e.status.phase == Phase.COMPLETED,
            timeout=90,
        )
    finally:
        run.stop()


def test_the_lifecycle_returns_to_spot_and_removes_the_on_demand_node_of_protected_groups(
    kube: Kube, aws_sim: SandboxAWSClient, autoscaling: Any, namespace: str
) -> None:
    _protect_everything(autoscaling, SPOT)
    _protect_everything(autoscaling, ON_DEMAND)
    fb = fall_back(kube, aws_sim, autoscaling, namespace)
    autoscaling.set_instance_protection(
        AutoScalingGroupName=ON_DEMAND, InstanceIds=[fb.on_demand_instance], ProtectedFromScaleIn=True
    )

    _lifecycle_completes(kube, autoscaling, namespace, fb.sgfe)

    assert _desired(aws_sim, SPOT) == 3 == len(_instances(aws_sim, SPOT)), "spot grew back"
    assert all(_protection(autoscaling, SPOT).values())
    assert _desired(aws_sim, ON_DEMAND) == 0 and not _instances(aws_sim, ON_DEMAND), "the protected on-demand went"


def test_a_spot_instance_a_termination_hook_holds_does_not_keep_the_lifecycle_from_returning_to_spot(
    kube: Kube, aws_sim: SandboxAWSClient, autoscaling: Any, namespace: str
) -> None:
    _hook(autoscaling, "drain", TERMINATING, heartbeat=600, default="CONTINUE")
    # the retired spot instance stays in Terminating:Wait (and its Node with it)
    fb = fall_back(kube, aws_sim, autoscaling, namespace, retired_node_goes=False)
    assert _states(autoscaling, SPOT)[fb.retired_spot_instance] == "Terminating:Wait"

    _lifecycle_completes(kube, autoscaling, namespace, fb.sgfe)

    states = _states(autoscaling, SPOT)
    assert states.pop(fb.retired_spot_instance) == "Terminating:Wait", "still held: the lifecycle did not wait for it"
    assert list(states.values()) == ["InService"] * 3 and _desired(aws_sim, SPOT) == 3
    assert _desired(aws_sim, ON_DEMAND) == 0
    calls = aws_sim.calls("TerminateInstanceInAutoScalingGroup")
    assert not [c for c in calls if fb.retired_spot_instance in str(c["params"])][1:], (
        "the held instance terminated once"
    )


# -- several pools ---------------------------------------------------------------------------------------------


def test_a_mixed_instances_group_with_short_pools_gets_to_try_its_other_pools_before_a_fallback(
    start_controller: Callable[..., Running],  # noqa: F811 - the fixture imported above
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    autoscaling: Any,
) -> None:
    # The sandbox's spot group: a MixedInstancesPolicy group of one type in three zones, three pools. Two short.
    aws_sim.set_capacity(SPOT, pending_seconds=0.5)
    for zone in ("us-east-1a", "us-east-1b"):
        aws_sim.set_pool(SPOT, zone=zone, short=True)
    old, before = _first_spot_node(core, aws_sim)
    start_controller()
    _recommend(core, old)

    _until("the old node retired and gone", lambda: _gone(core, old.metadata.name), timeout=60)
    failed = [a for a in aws_sim.activities(SPOT) if a["status_code"] == "Failed"]
    assert failed, "a pool refused the launch first"
    (new,) = _instances(aws_sim, SPOT) - before
    (raw,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[SPOT])["AutoScalingGroups"]
    assert {i["InstanceId"]: i["AvailabilityZone"] for i in raw["Instances"]}[new] == "us-east-1c"
    assert _desired(aws_sim, ON_DEMAND) == 0 and aws_sim.count_calls("SetDesiredCapacity", asg=ON_DEMAND) == 0


def test_a_mixed_instances_group_with_every_pool_short_falls_back_once_each_pool_failed(
    start_controller: Callable[..., Running],  # noqa: F811 - the fixture imported above
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
) -> None:
    aws_sim.set_capacity(SPOT, capacity_short=True, retry_seconds=1)
    aws_sim.set_capacity(ON_DEMAND, pending_seconds=0.5)
    old = _spot_nodes(core)[0]
    start_controller()
    _recommend(core, old)

    record = _until(
        "the fallback recorded",
        lambda: (r := _record(core, old.metadata.name)) is not None and r.get("fallbackReason") and r,
    )
    assert "InsufficientInstanceCapacity" in record["fallbackReason"], "a shortage, not the deadline"
    failed = [a for a in aws_sim.activities(SPOT) if a["status_code"] == "Failed"]
    assert len(failed) >= 3, "each of the three pools failed before the fallback"
    _until("the old node retired and gone", lambda: _gone(core, old.metadata.name), timeout=60)
    assert _desired(aws_sim, ON_DEMAND) == 1


def _start_paused_refresh(autoscaling: Any, group: str) -> str:
    """An instance refresh of ``group`` that stays InProgress and replaces nothing yet: its group's InstanceRefresh
    process is suspended ("Suspend and resume a process for an Auto Scaling group": the refresh pauses)."""
    autoscaling.suspend_processes(AutoScalingGroupName=group, ScalingProcesses=["InstanceRefresh"])
    refresh = str(autoscaling.start_instance_refresh(AutoScalingGroupName=group)["InstanceRefreshId"])
    _until(
        "the refresh InProgress",
        lambda: (
            autoscaling.describe_instance_refreshes(AutoScalingGroupName=group)["InstanceRefreshes"][0]["Status"]
            == "InProgress"
        ),
    )
    return refresh


def test_a_rebalance_waits_for_an_instance_refresh_of_its_spot_group_and_proceeds_when_it_ends(
    start_controller: Callable[..., Running],  # noqa: F811 - the fixture imported above
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    autoscaling: Any,
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=0.5)
    old, before = _first_spot_node(core, aws_sim)
    refresh = _start_paused_refresh(autoscaling, SPOT)
    start_controller()
    _recommend(core, old)

    _until(
        "a Warning Event naming the refresh and what waits",
        lambda: any(
            e.startswith("Warning InstanceRefreshActive: ") and refresh in e and SPOT in e
            for e in _events(core, old.metadata.name)
        ),
    )
    time.sleep(5)  # many batch windows and recheck intervals
    assert _desired(aws_sim, SPOT) == len(before) and aws_sim.count_calls("SetDesiredCapacity", asg=SPOT) == 0
    assert _record(core, old.metadata.name) is None, "queued, not started"

    autoscaling.cancel_instance_refresh(AutoScalingGroupName=SPOT)
    _until("the old node retired and gone", lambda: _gone(core, old.metadata.name), timeout=60)
    after = _instances(aws_sim, SPOT)
    assert len(after) == len(before) and before - {_instance(old)} < after, "only the old instance was terminated"
    terminations = aws_sim.calls("TerminateInstanceInAutoScalingGroup")
    assert len(terminations) == 1 and _instance(old) in str(terminations[0]["params"])
    assert aws_sim.count_calls("SetDesiredCapacity", asg=SPOT) == 1
    assert _desired(aws_sim, ON_DEMAND) == 0


def test_an_interruption_during_an_instance_refresh_is_replaced_at_once(
    start_controller: Callable[..., Running],  # noqa: F811 - the fixture imported above
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    autoscaling: Any,
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=0.5)
    old, before = _first_spot_node(core, aws_sim)
    _start_paused_refresh(autoscaling, SPOT)
    start_controller()
    _recommend(
        core,
        old,
        **{"spotguard.io/interruption-action": "terminate", "spotguard.io/interruption-time": "2026-11-21T10:02:00Z"},
    )

    _until("the spot scale-up, at once", lambda: _desired(aws_sim, SPOT) == len(before) + 1, timeout=5)
    _until("the old node retired and gone", lambda: _gone(core, old.metadata.name), timeout=60)
    after = _instances(aws_sim, SPOT)
    assert len(after) == len(before) and before - {_instance(old)} < after, "only the old instance was terminated"
    assert not any("InstanceRefreshActive" in e for e in _events(core, old.metadata.name)), "nothing waited"
    active = autoscaling.describe_instance_refreshes(AutoScalingGroupName=SPOT)["InstanceRefreshes"][0]["Status"]
    assert active == "InProgress", "the refresh was left alone"


def test_the_lifecycle_waits_for_an_instance_refresh_of_its_on_demand_group_before_returning_to_spot(
    kube: Kube, aws_sim: SandboxAWSClient, autoscaling: Any, namespace: str
) -> None:
    """An SGFE whose spot group is stable does not return to spot (nor drain the on-demand node) while the on-demand
    group refreshes; its status and an Event name the refresh; once the refresh is cancelled it finishes."""
    fb = fall_back(kube, aws_sim, autoscaling, namespace)
    refresh = _start_paused_refresh(autoscaling, ON_DEMAND)
    run = LifecycleRun(kube, autoscaling, compressed(namespace, completed_ttl=600), "leader").start()
    try:
        sgfes = FallbackEvents(kube, namespace)
        _until(
            "the SGFE waiting for the refresh",
            lambda: (e := sgfes.find(fb.sgfe)) is not None and refresh in e.status.message,
            timeout=30,
        )
        time.sleep(5)  # ten lifecycle polls; the minimum wait (2 s) and stability window (3 s) are long over
        event = sgfes.find(fb.sgfe)
        assert event is not None and event.status.phase == Phase.MONITORING, event
        assert f"instance refresh {refresh} of on-demand ASG {ON_DEMAND}" in event.status.message
        assert "WaitingForInstanceRefresh" in run.recorder.reasons()
        assert _desired(aws_sim, SPOT) == 2 and aws_sim.count_calls("SetDesiredCapacity", asg=SPOT) == 0
        assert fb.on_demand_instance in _instances(aws_sim, ON_DEMAND)

        autoscaling.cancel_instance_refresh(AutoScalingGroupName=ON_DEMAND)
        _until(
            "the SGFE Completed",
            lambda: (e := sgfes.find(fb.sgfe)) is not None and e.status.phase == Phase.COMPLETED,
            timeout=90,
        )
    finally:
        run.stop()
    assert _desired(aws_sim, SPOT) == 3 and _desired(aws_sim, ON_DEMAND) == 0
    assert fb.on_demand_instance not in _instances(aws_sim, ON_DEMAND)


def test_an_interruption_while_an_instance_refresh_replaces_the_group_ends_with_the_group_where_it_was(
    start_controller: Callable[..., Running],  # noqa: F811 - the fixture imported above
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    autoscaling: Any,
) -> None:
    """A refresh that really replaces instances (batches of one, no warm-up) runs while an interrupted node is
    replaced at once. Whatever the refresh takes (the interrupted instance itself, possibly, before its retirement)
    and whatever it launches (which the claim may take as its arrival: new instances are fungible), the refresh
    completes, no on-demand is asked for, every instance Spot Guard terminated was terminated exactly with decrement,
    and the spot group ends at its desired capacity of before, all InService."""
    aws_sim.set_capacity(SPOT, pending_seconds=0.5, terminating_seconds=0.5)
    old = _spot_nodes(core)[0]
    size = len(_instances(aws_sim, SPOT))
    start_controller()
    refresh = autoscaling.start_instance_refresh(
        AutoScalingGroupName=SPOT, Preferences={"MinHealthyPercentage": 67, "InstanceWarmup": 0}
    )["InstanceRefreshId"]
    _recommend(
        core,
        old,
        **{"spotguard.io/interruption-action": "terminate", "spotguard.io/interruption-time": "2026-11-21T10:02:00Z"},
    )

    def refresh_status() -> str:
        (current,) = autoscaling.describe_instance_refreshes(AutoScalingGroupName=SPOT, InstanceRefreshIds=[refresh])[
            "InstanceRefreshes"
        ]
        return str(current["Status"])

    _until("the refresh Successful", lambda: refresh_status() == "Successful", timeout=120)
    _until("the interrupted node's replacement ended", lambda: _gone(core, old.metadata.name), timeout=60)
    _until(
        "the spot group back at its size, all InService",
        lambda: _desired(aws_sim, SPOT) == size and list(_states(autoscaling, SPOT).values()) == ["InService"] * size,
        timeout=60,
    )
    terminations = aws_sim.calls("TerminateInstanceInAutoScalingGroup")
    assert terminations and all(str(c["params"]["ShouldDecrementDesiredCapacity"]) == "true" for c in terminations)
    assert aws_sim.count_calls("SetDesiredCapacity", asg=SPOT) == 1, "one scale-up, never a lowering"
    assert _desired(aws_sim, ON_DEMAND) == 0 and aws_sim.count_calls("SetDesiredCapacity", asg=ON_DEMAND) == 0


def test_a_spot_group_whose_launch_process_is_suspended_falls_back_at_once_saying_why(
    start_controller: Callable[..., Running],  # noqa: F811 - the fixture imported above
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    autoscaling: Any,
) -> None:
    """A suspended Launch process launches nothing ("Suspend and resume a process for an Auto Scaling group"): a
    rebalance replacement does not wait out its 60 s deadline but falls back saying the Launch process is why, and
    the node's Warning says it is the Launch process (a configuration), not a shortage."""
    aws_sim.set_capacity(ON_DEMAND, pending_seconds=0.5)
    autoscaling.suspend_processes(AutoScalingGroupName=SPOT, ScalingProcesses=["Launch"])
    old, before = _first_spot_node(core, aws_sim)
    start_controller(capacity_check_timeout=60.0)
    _recommend(core, old)

    _until("the spot scale-up", lambda: _desired(aws_sim, SPOT) == len(before) + 1, timeout=10)
    record = _until(
        "the fallback recorded",
        lambda: (r := _record(core, old.metadata.name)) is not None and r.get("fallbackReason") and r,
    )
    assert "Launch process" in record["fallbackReason"], record["fallbackReason"]
    assert "deadline" not in record["fallbackReason"], "not a wait until the 60 s deadline"
    _until("on-demand asked for", lambda: _desired(aws_sim, ON_DEMAND) == 1, timeout=10)
    _until(
        "a Warning naming the suspended Launch process",
        lambda: any(
            e.startswith("Warning LaunchConfigurationError: ") and "Launch process" in e and SPOT in e
            for e in _events(core, old.metadata.name)
        ),
    )
    _until("the old node retired for its on-demand replacement", lambda: _gone(core, old.metadata.name), timeout=60)
    assert _instances(aws_sim, SPOT) == before - {_instance(old)}, "nothing launched in the spot group"
    assert _desired(aws_sim, SPOT) == len(before) - 1, "the spot increase was given back, the old node retired"
