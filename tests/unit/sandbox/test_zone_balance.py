"""AZRebalance: after a change that unbalances the zones the group launches in the emptiest zone, then terminates an
instance nobody chose in the fullest one; not while AZRebalance is suspended."""

from __future__ import annotations

from sandbox.aws.zone_balance import rebalance_target
from tests.unit.sandbox.conftest import Sandbox, create_group, instances, zone_counts

GROUP = "balanced"


def test_a_zone_two_below_another_is_unbalanced_and_the_first_emptiest_zone_gets_the_launch() -> None:
    assert rebalance_target({"a": 1, "b": 1, "c": 2}) is None
    assert rebalance_target({"a": 5}) is None
    target = rebalance_target({"a": 2, "b": 0, "c": 0})
    assert target is not None and (target.zone, target.short_zones) == ("b", ("b", "c"))


def _six(sandbox: Sandbox, **kwargs: object) -> None:
    create_group(sandbox, GROUP, **kwargs)  # type: ignore[arg-type]
    sandbox.control.set_capacity(GROUP, az_rebalance_seconds=30, pending_seconds=5)
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=6)
    sandbox.advance(5)


def _in(sandbox: Sandbox, zone: str) -> list[str]:
    return sorted(i["InstanceId"] for i in instances(sandbox, GROUP) if i["AvailabilityZone"] == zone)


def test_terminating_with_decrement_unbalances_the_zones_and_az_rebalance_terminates_an_instance_nobody_chose(
    sandbox: Sandbox,
) -> None:
    _six(sandbox)
    chosen = _in(sandbox, "us-east-1a")
    for victim in chosen:  # e.g. Spot Guard retiring two nodes of one zone
        sandbox.autoscaling.terminate_instance_in_auto_scaling_group(
            InstanceId=victim, ShouldDecrementDesiredCapacity=True
        )
    assert zone_counts(sandbox, GROUP) == {"us-east-1a": 0, "us-east-1b": 2, "us-east-1c": 2}
    others = set(_in(sandbox, "us-east-1b") + _in(sandbox, "us-east-1c"))

    sandbox.advance(29)
    assert zone_counts(sandbox, GROUP)["us-east-1a"] == 0  # not yet
    sandbox.advance(1)
    (rebalance_launch,) = _in(sandbox, "us-east-1a")
    launch = sandbox.activities(GROUP)[0]
    assert launch["Description"] == f"Launching a new EC2 instance: {rebalance_launch}"
    assert launch["Cause"].endswith(
        "availability zones  us-east-1a us-east-1b us-east-1c had  0 2 2 instances respectively. An instance was "
        "launched to aid in balancing the group's zones."
    )
    assert len(instances(sandbox, GROUP)) == 5  # launched before anything is terminated
    assert sandbox.group(GROUP)["DesiredCapacity"] == 4

    sandbox.advance(5)  # the new instance is InService: one of the fullest zones loses an instance, undrained

    assert sorted(zone_counts(sandbox, GROUP).values()) == [1, 1, 2]
    (terminated,) = others - {i["InstanceId"] for i in instances(sandbox, GROUP)}
    termination = next(
        a for a in sandbox.activities(GROUP) if a["Description"] == f"Terminating EC2 instance: {terminated}"
    )
    assert "instances were launched to balance instances in zones  us-east-1a with other zones" in termination["Cause"]
    assert "shrinking the capacity from 5 to 4" in termination["Cause"]
    assert f"instance {terminated} was selected for termination" in termination["Cause"]


def test_nothing_is_rebalanced_while_az_rebalance_is_suspended(sandbox: Sandbox) -> None:
    _six(sandbox, suspend=("AZRebalance",))
    for victim in _in(sandbox, "us-east-1a"):
        sandbox.autoscaling.terminate_instance_in_auto_scaling_group(
            InstanceId=victim, ShouldDecrementDesiredCapacity=True
        )
    before = {i["InstanceId"] for i in instances(sandbox, GROUP)}

    sandbox.advance(300)

    assert {i["InstanceId"] for i in instances(sandbox, GROUP)} == before
    assert [p["ProcessName"] for p in sandbox.group(GROUP)["SuspendedProcesses"]] == ["AZRebalance"]


def test_resuming_az_rebalance_rebalances_a_group_left_unbalanced(sandbox: Sandbox) -> None:
    _six(sandbox, suspend=("AZRebalance",))
    for victim in _in(sandbox, "us-east-1a"):
        sandbox.autoscaling.terminate_instance_in_auto_scaling_group(
            InstanceId=victim, ShouldDecrementDesiredCapacity=True
        )

    sandbox.autoscaling.resume_processes(AutoScalingGroupName=GROUP, ScalingProcesses=["AZRebalance"])
    sandbox.advance(30)
    sandbox.advance(5)

    assert sorted(zone_counts(sandbox, GROUP).values()) == [1, 1, 2]


def test_a_zone_whose_shortage_ends_gets_its_instances_back_from_the_others(sandbox: Sandbox) -> None:
    create_group(sandbox, GROUP)
    sandbox.control.set_capacity(GROUP, az_rebalance_seconds=30)
    sandbox.control.set_pool(GROUP, zone="us-east-1a", short=True)
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=4)
    assert zone_counts(sandbox, GROUP) == {"us-east-1a": 0, "us-east-1b": 2, "us-east-1c": 2}

    sandbox.control.set_pool(GROUP, zone="us-east-1a")  # the shortage ends
    sandbox.advance(30)

    counts = zone_counts(sandbox, GROUP)
    assert counts["us-east-1a"] == 1 and sorted(counts.values()) == [1, 1, 2]  # balanced: no zone 2 above another
    assert sandbox.group(GROUP)["DesiredCapacity"] == 4
    assert len(instances(sandbox, GROUP)) == 4


def test_with_terminate_suspended_az_rebalance_launches_without_terminating(sandbox: Sandbox) -> None:
    _six(sandbox)
    for victim in _in(sandbox, "us-east-1a"):
        sandbox.autoscaling.terminate_instance_in_auto_scaling_group(
            InstanceId=victim, ShouldDecrementDesiredCapacity=True
        )
    sandbox.autoscaling.suspend_processes(AutoScalingGroupName=GROUP, ScalingProcesses=["Terminate"])

    sandbox.advance(30)
    sandbox.advance(5)

    # "AZRebalance is still active but does not function properly. It can launch new instances without terminating
    # the old ones" (Suspend and resume a process for an Auto Scaling group)
    assert len(instances(sandbox, GROUP)) == 5
    assert sandbox.group(GROUP)["DesiredCapacity"] == 4
