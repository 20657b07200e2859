"""Scale-in protection (SetInstanceProtection, NewInstancesProtectedFromScaleIn) and suspended processes (Launch,
Terminate) as EC2 Auto Scaling honours them."""

from __future__ import annotations

from tests.unit.sandbox.conftest import Sandbox, create_group, instances

GROUP = "protected"


def _ids(sandbox: Sandbox) -> set[str]:
    return {i["InstanceId"] for i in instances(sandbox, GROUP)}


def _three(sandbox: Sandbox, **kwargs: object) -> list[str]:
    create_group(sandbox, GROUP, **kwargs)  # type: ignore[arg-type]
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=3)
    return sorted(_ids(sandbox))


def test_a_protected_instance_is_never_the_one_a_lowered_desired_capacity_terminates(sandbox: Sandbox) -> None:
    ids = _three(sandbox)
    keep = ids[:2]
    sandbox.autoscaling.set_instance_protection(AutoScalingGroupName=GROUP, InstanceIds=keep, ProtectedFromScaleIn=True)

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=2)

    assert _ids(sandbox) == set(keep)
    protected = {i["InstanceId"]: i["ProtectedFromScaleIn"] for i in instances(sandbox, GROUP)}
    assert protected == dict.fromkeys(keep, True)


def test_when_every_instance_is_protected_desired_drops_and_nothing_goes_until_the_protection_is_removed(
    sandbox: Sandbox,
) -> None:
    ids = _three(sandbox)
    sandbox.autoscaling.set_instance_protection(AutoScalingGroupName=GROUP, InstanceIds=ids, ProtectedFromScaleIn=True)

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    sandbox.advance(60)

    assert sandbox.group(GROUP)["DesiredCapacity"] == 1
    assert _ids(sandbox) == set(ids)

    sandbox.autoscaling.set_instance_protection(
        AutoScalingGroupName=GROUP, InstanceIds=ids[:2], ProtectedFromScaleIn=False
    )

    assert _ids(sandbox) == {ids[2]}


def test_protection_does_not_stop_terminate_instance_in_auto_scaling_group(sandbox: Sandbox) -> None:
    ids = _three(sandbox)
    sandbox.autoscaling.set_instance_protection(
        AutoScalingGroupName=GROUP, InstanceIds=ids[:1], ProtectedFromScaleIn=True
    )

    sandbox.autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=ids[0], ShouldDecrementDesiredCapacity=True)

    assert _ids(sandbox) == set(ids[1:])


def test_new_instances_protected_from_scale_in_protects_every_launch(sandbox: Sandbox) -> None:
    ids = _three(sandbox, NewInstancesProtectedFromScaleIn=True)

    assert sandbox.group(GROUP)["NewInstancesProtectedFromScaleIn"] is True
    assert {i["ProtectedFromScaleIn"] for i in instances(sandbox, GROUP)} == {True}
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=0)
    assert _ids(sandbox) == set(ids)


def test_with_launch_suspended_a_raised_desired_capacity_launches_only_once_launch_is_resumed(
    sandbox: Sandbox,
) -> None:
    _three(sandbox, suspend=("Launch",))
    assert _ids(sandbox) == set()
    assert [p["ProcessName"] for p in sandbox.group(GROUP)["SuspendedProcesses"]] == ["Launch"]

    sandbox.autoscaling.resume_processes(AutoScalingGroupName=GROUP, ScalingProcesses=["Launch"])

    assert len(_ids(sandbox)) == 3


def test_with_terminate_suspended_a_lowered_desired_capacity_terminates_only_once_terminate_is_resumed(
    sandbox: Sandbox,
) -> None:
    ids = _three(sandbox)
    sandbox.autoscaling.suspend_processes(AutoScalingGroupName=GROUP, ScalingProcesses=["Terminate"])

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    sandbox.advance(60)
    assert _ids(sandbox) == set(ids)

    sandbox.autoscaling.resume_processes(AutoScalingGroupName=GROUP, ScalingProcesses=["Terminate"])

    assert len(_ids(sandbox)) == 1
