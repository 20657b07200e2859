"""The controller's own AWS layer and failed-launch classifier against the sandbox: what the simulator writes is what
Spot Guard reads (group settings, lifecycle hooks, failed activities of both wrappings)."""

from __future__ import annotations

from controller.adapters.aws import AutoScaling
from controller.checks.launch_failures import CAPACITY, CONFIGURATION, QUOTA, classify
from tests.unit.sandbox.conftest import ON_DEMAND, SPOT, Sandbox, create_group


def test_the_adapter_reads_suspended_processes_protection_and_launch_hooks(sandbox: Sandbox) -> None:
    asg = AutoScaling(sandbox.autoscaling, max_attempts=1)
    sandbox.autoscaling.update_auto_scaling_group(AutoScalingGroupName=SPOT, NewInstancesProtectedFromScaleIn=True)
    sandbox.autoscaling.put_lifecycle_hook(
        LifecycleHookName="bootstrap",
        AutoScalingGroupName=SPOT,
        LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
        HeartbeatTimeout=300,
    )

    groups = asg.describe_groups([SPOT, ON_DEMAND])
    (hook,) = asg.lifecycle_hooks(SPOT)

    assert groups[SPOT].suspended_processes == frozenset({"AZRebalance"})
    assert groups[SPOT].new_instances_protected and not groups[ON_DEMAND].new_instances_protected
    assert (hook.name, hook.launching, hook.heartbeat_timeout, hook.default_result) == (
        "bootstrap",
        True,
        300,
        "ABANDON",
    )


def test_the_adapter_counts_a_groups_pools_as_instance_types_times_zones(sandbox: Sandbox) -> None:
    asg = AutoScaling(sandbox.autoscaling, max_attempts=1)
    create_group(sandbox, "mixed", instance_types=("m5.large", "m6i.large"), zones=("us-east-1a", "us-east-1b"))
    create_group(sandbox, "lt-spot", zones=("us-east-1a", "us-east-1b", "us-east-1c"))

    groups = asg.describe_groups(["mixed", "lt-spot", SPOT])

    assert {name: g.pools for name, g in groups.items()} == {"mixed": 4, "lt-spot": 3, SPOT: 3}


def test_failed_launches_of_both_wrappings_are_classified_from_what_the_adapter_reads(sandbox: Sandbox) -> None:
    asg = AutoScaling(sandbox.autoscaling, max_attempts=1)
    create_group(sandbox, "lt-spot", zones=("us-east-1a",))
    sandbox.control.set_capacity("lt-spot", capacity_short=True)
    sandbox.control.set_launch_failure(SPOT, "max-spot-instance-count")
    sandbox.control.set_launch_failure(ON_DEMAND, "ami-not-found")
    for name in ("lt-spot", SPOT, ON_DEMAND):
        sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=4)

    found = {name: classify(asg.activities(name)[0]) for name in ("lt-spot", SPOT, ON_DEMAND)}

    assert {name: (f.category, f.code) for name, f in found.items() if f} == {
        "lt-spot": (CAPACITY, "InsufficientInstanceCapacity"),  # a bare sentence, identified by it
        SPOT: (QUOTA, "MaxSpotInstanceCountExceeded"),  # coded
        ON_DEMAND: (CONFIGURATION, "InvalidAMIID.NotFound"),
    }
