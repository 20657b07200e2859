"""Launching, pending, capacity shortages and termination, driven through plain boto3."""

from __future__ import annotations

import re
import threading

import pytest
from botocore.exceptions import ClientError

from sandbox.aws.engine import LAUNCH_SLICE
from tests.unit.sandbox.conftest import ON_DEMAND, SPOT, Sandbox

SPOT_SHORTAGE = (
    "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot capacity available that "
    "matches your request. Launching EC2 instance failed."
)


def test_startup_creates_tagged_spot_and_on_demand_groups_with_in_service_instances(sandbox: Sandbox) -> None:
    spot, on_demand = sandbox.group(SPOT), sandbox.group(ON_DEMAND)

    assert (spot["DesiredCapacity"], spot["MinSize"], spot["MaxSize"]) == (3, 0, 10)
    assert spot["CapacityRebalance"] is False
    assert sorted(i["LifecycleState"] for i in spot["Instances"]) == ["InService"] * 3
    assert sorted(i["AvailabilityZone"] for i in spot["Instances"]) == ["us-east-1a", "us-east-1b", "us-east-1c"]
    assert {i["InstanceType"] for i in spot["Instances"]} == {"m5.large"}
    spot_tags = {t["Key"]: t["Value"] for t in spot["Tags"]}
    assert spot_tags["spotguard.io/capacity-type"] == "spot"
    assert spot_tags["spotguard.io/on-demand-partner"] == ON_DEMAND
    for group in (spot, on_demand):  # what manifests/iam-policy.json requires of a group the controller changes
        assert {t["Key"]: t["Value"] for t in group["Tags"]}["spotguard.io/managed"] == "true"
    assert {t["Key"]: t["Value"] for t in on_demand["Tags"]}["spotguard.io/capacity-type"] == "on-demand"
    assert (on_demand["DesiredCapacity"], on_demand["Instances"]) == (0, [])
    spot_template = spot["MixedInstancesPolicy"]["LaunchTemplate"]["LaunchTemplateSpecification"]["LaunchTemplateName"]
    assert spot_template == on_demand["LaunchTemplate"]["LaunchTemplateName"] == "spotguard-nodes"
    assert spot["MixedInstancesPolicy"]["InstancesDistribution"]["OnDemandPercentageAboveBaseCapacity"] == 0
    for group in (spot, on_demand):  # as a Spot Guard operator sets them up (spotguard doctor checks it)
        assert [p["ProcessName"] for p in group["SuspendedProcesses"]] == ["AZRebalance"]


def test_spot_instances_launch_as_spot_in_ec2(sandbox: Sandbox) -> None:
    ids = list(sandbox.lifecycle_states(SPOT))
    reservations = sandbox.ec2.describe_instances(InstanceIds=ids)["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    assert {i.get("InstanceLifecycle") for i in instances} == {"spot"}
    tags = {t["Key"]: t["Value"] for t in instances[0]["Tags"]}
    assert tags["aws:autoscaling:groupName"] == SPOT


def test_raising_desired_gives_a_pending_instance_that_goes_in_service_after_pending_seconds(sandbox: Sandbox) -> None:
    sandbox.control.set_capacity(SPOT, pending_seconds=5)
    before = set(sandbox.lifecycle_states(SPOT))

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=4, HonorCooldown=False)

    states = sandbox.lifecycle_states(SPOT)
    (new_id,) = set(states) - before
    assert sandbox.group(SPOT)["DesiredCapacity"] == 4
    assert states[new_id] == "Pending"
    launch = sandbox.activities(SPOT)[0]
    assert launch["Description"] == f"Launching a new EC2 instance: {new_id}"
    assert launch["StatusCode"] == "InProgress"

    sandbox.advance(4.9)
    assert sandbox.lifecycle_states(SPOT)[new_id] == "Pending"

    sandbox.advance(0.2)
    assert sandbox.lifecycle_states(SPOT)[new_id] == "InService"
    launch = sandbox.activities(SPOT)[0]
    assert (launch["StatusCode"], launch["Progress"]) == ("Successful", 100)
    assert "explicitly set group desired capacity changing the desired capacity from 3 to 4" in launch["Cause"]
    assert "increasing the capacity from 3 to 4" in launch["Cause"]


def test_capacity_shortage_raises_desired_but_launches_nothing_and_reports_failed_activities(sandbox: Sandbox) -> None:
    sandbox.control.set_capacity(SPOT, capacity_short=True, retry_seconds=10)
    before = sandbox.lifecycle_states(SPOT)

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=4)

    assert sandbox.group(SPOT)["DesiredCapacity"] == 4
    assert sandbox.lifecycle_states(SPOT) == before
    (failed,) = sandbox.activities(SPOT)[:1]
    assert failed["StatusCode"] == "Failed"
    assert failed["StatusMessage"] == SPOT_SHORTAGE
    assert failed["Description"] == f"Launching a new EC2 instance.  Status Reason: {SPOT_SHORTAGE}"
    assert re.search(
        r"At \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ an instance was started in response to a difference between desired "
        r"and actual capacity, increasing the capacity from 3 to 4\.$",
        failed["Cause"],
    )
    assert failed["Progress"] == 100
    assert failed["EndTime"] >= failed["StartTime"]
    failures_before_retry = sum(a["StatusCode"] == "Failed" for a in sandbox.activities(SPOT))

    sandbox.advance(5)
    assert sum(a["StatusCode"] == "Failed" for a in sandbox.activities(SPOT)) == failures_before_retry
    sandbox.advance(5)
    assert sum(a["StatusCode"] == "Failed" for a in sandbox.activities(SPOT)) == failures_before_retry + 1
    assert sandbox.lifecycle_states(SPOT) == before


def test_on_demand_shortage_uses_the_on_demand_message(sandbox: Sandbox) -> None:
    sandbox.control.set_capacity(ON_DEMAND, capacity_short=True)

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=ON_DEMAND, DesiredCapacity=1)

    failed = sandbox.activities(ON_DEMAND)[0]
    assert failed["StatusCode"] == "Failed"
    assert failed["StatusMessage"].startswith(
        "We currently do not have sufficient m5.large capacity in the Availability Zone you requested (us-east-1a). "
        "Our system will be working on provisioning additional capacity. You can currently get m5.large capacity "
        "by not specifying an Availability Zone in your request or choosing us-east-1b, us-east-1c."
    )
    assert sandbox.group(ON_DEMAND)["Instances"] == []


def test_lifting_the_shortage_launches_the_missing_instances(sandbox: Sandbox) -> None:
    sandbox.control.set_capacity(SPOT, capacity_short=True, pending_seconds=3)
    before = set(sandbox.lifecycle_states(SPOT))
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=5)
    assert set(sandbox.lifecycle_states(SPOT)) == before

    sandbox.control.set_capacity(SPOT, capacity_short=False)

    new = {i: s for i, s in sandbox.lifecycle_states(SPOT).items() if i not in before}
    assert sorted(new.values()) == ["Pending", "Pending"]
    sandbox.advance(3)
    assert sorted(sandbox.lifecycle_states(SPOT).values()) == ["InService"] * 5
    launches = [a for a in sandbox.activities(SPOT) if a["Description"].startswith("Launching a new EC2 instance: ")]
    assert {a["Description"].rsplit(" ", 1)[1] for a in launches[:2]} == set(new)
    assert {a["StatusCode"] for a in launches[:2]} == {"Successful"}


def test_a_large_scale_out_launches_a_slice_with_the_call_and_the_rest_on_tick_naming_the_whole_step(
    sandbox: Sandbox,
) -> None:
    sandbox.autoscaling.update_auto_scaling_group(AutoScalingGroupName=SPOT, MaxSize=100)
    target = 3 + 2 * LAUNCH_SLICE + 5

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=target)

    assert len(sandbox.lifecycle_states(SPOT)) == 3 + LAUNCH_SLICE
    assert sandbox.server.simulator.work.is_set()  # the ticker is told to carry on at once
    sandbox.server.simulator.tick()
    assert len(sandbox.lifecycle_states(SPOT)) == target
    launches = [a for a in sandbox.activities(SPOT) if a["Description"].startswith("Launching a new EC2 instance: ")]
    assert len(launches) == target  # the 3 start-up launches and this step's, newest first
    for launch in launches[: target - 3]:
        assert f"changing the desired capacity from 3 to {target}" in launch["Cause"]
        assert f"increasing the capacity from 3 to {target}" in launch["Cause"]


def test_seeding_a_start_up_group_larger_than_a_slice_puts_every_instance_in_service_at_once(sandbox: Sandbox) -> None:
    sandbox.autoscaling.update_auto_scaling_group(AutoScalingGroupName=SPOT, MaxSize=100)
    sandbox.control.set_capacity(SPOT, pending_seconds=5)

    seeded = sandbox.server.simulator.seed_in_service(SPOT, 3 + 2 * LAUNCH_SLICE + 1)

    assert len(seeded) == 3 + 2 * LAUNCH_SLICE + 1
    assert set(sandbox.lifecycle_states(SPOT).values()) == {"InService"}


def test_another_groups_call_gets_in_between_the_slices_of_a_scale_out(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.autoscaling.update_auto_scaling_group(AutoScalingGroupName=SPOT, MaxSize=100)
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=3 + 4 * LAUNCH_SLICE)
    seen_between: list[int] = []

    def pause(seconds: float) -> None:  # the ticker's pause between slices: another caller asks for the group
        caller = threading.Thread(target=lambda: seen_between.append(len(sandbox.lifecycle_states(SPOT))))
        caller.start()
        caller.join(timeout=10)
        assert not caller.is_alive(), "a DescribeAutoScalingGroups call waited for the whole scale-out"

    monkeypatch.setattr("sandbox.aws.engine.time.sleep", pause)
    sandbox.server.simulator.tick()

    # the call launched the first slice; the tick launched the others, letting the caller in after each but the last
    assert seen_between == [3 + 2 * LAUNCH_SLICE, 3 + 3 * LAUNCH_SLICE]
    assert len(sandbox.lifecycle_states(SPOT)) == 3 + 4 * LAUNCH_SLICE


def test_the_node_sync_is_woken_when_an_instance_goes_in_service_not_by_a_pending_launch(sandbox: Sandbox) -> None:
    changed = sandbox.server.simulator.changed
    sandbox.control.set_capacity(SPOT, pending_seconds=5)
    changed.clear()

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=5)
    assert not changed.is_set()  # two Pending launches: no Node to make yet

    sandbox.advance(5)
    assert changed.is_set()  # InService: their Nodes are due
    changed.clear()
    sandbox.control.set_capacity(SPOT, pending_seconds=0)
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=6)
    assert changed.is_set()  # launched straight InService


def test_terminate_with_decrement_removes_exactly_that_instance_and_lowers_desired(sandbox: Sandbox) -> None:
    ids = sorted(sandbox.lifecycle_states(SPOT))
    victim = ids[1]

    answer = sandbox.autoscaling.terminate_instance_in_auto_scaling_group(
        InstanceId=victim, ShouldDecrementDesiredCapacity=True
    )

    assert answer["Activity"]["Description"] == f"Terminating EC2 instance: {victim}"
    assert answer["Activity"]["StatusCode"] == "InProgress"
    assert "shrinking the capacity from 3 to 2" in answer["Activity"]["Cause"]
    sandbox.advance(30)
    assert sandbox.group(SPOT)["DesiredCapacity"] == 2
    assert sorted(sandbox.lifecycle_states(SPOT)) == [ids[0], ids[2]]
    state = sandbox.ec2.describe_instances(InstanceIds=[victim])["Reservations"][0]["Instances"][0]["State"]
    assert state["Name"] == "terminated"


def test_terminate_without_decrement_launches_a_replacement(sandbox: Sandbox) -> None:
    sandbox.control.set_capacity(SPOT, pending_seconds=0)
    ids = set(sandbox.lifecycle_states(SPOT))
    victim = sorted(ids)[0]

    sandbox.autoscaling.terminate_instance_in_auto_scaling_group(
        InstanceId=victim, ShouldDecrementDesiredCapacity=False
    )

    states = sandbox.lifecycle_states(SPOT)
    assert sandbox.group(SPOT)["DesiredCapacity"] == 3
    assert victim not in states
    assert len(set(states) - ids) == 1
    assert sorted(states.values()) == ["InService"] * 3


def test_terminating_seconds_keeps_the_instance_terminating_before_it_leaves(sandbox: Sandbox) -> None:
    sandbox.control.set_capacity(SPOT, terminating_seconds=4)
    victim = sorted(sandbox.lifecycle_states(SPOT))[0]

    sandbox.autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)

    assert sandbox.lifecycle_states(SPOT)[victim] == "Terminating"
    sandbox.advance(4)
    assert victim not in sandbox.lifecycle_states(SPOT)
    terminate = next(a for a in sandbox.activities(SPOT) if a["Description"].endswith(victim))
    assert terminate["StatusCode"] == "Successful"


def test_terminate_unknown_instance_is_a_validation_error(sandbox: Sandbox) -> None:
    with pytest.raises(ClientError) as raised:
        sandbox.autoscaling.terminate_instance_in_auto_scaling_group(
            InstanceId="i-0000000000000000f", ShouldDecrementDesiredCapacity=True
        )
    error = raised.value.response["Error"]
    assert error["Code"] == "ValidationError"
    assert error["Message"] == "Instance Id not found - No managed instance found for instance ID: i-0000000000000000f"


def test_terminate_with_decrement_at_min_size_is_refused(sandbox: Sandbox) -> None:
    sandbox.autoscaling.update_auto_scaling_group(AutoScalingGroupName=SPOT, MinSize=3)
    victim = sorted(sandbox.lifecycle_states(SPOT))[0]

    with pytest.raises(ClientError) as raised:
        sandbox.autoscaling.terminate_instance_in_auto_scaling_group(
            InstanceId=victim, ShouldDecrementDesiredCapacity=True
        )

    assert raised.value.response["Error"]["Code"] == "ValidationError"
    assert raised.value.response["Error"]["Message"].startswith("Currently, desiredSize equals minSize (3).")
    assert sandbox.lifecycle_states(SPOT)[victim] == "InService"


def test_desired_above_max_is_a_validation_error_and_changes_nothing(sandbox: Sandbox) -> None:
    with pytest.raises(ClientError) as raised:
        sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=11)

    assert raised.value.response["Error"]["Code"] == "ValidationError"
    assert (
        raised.value.response["Error"]["Message"]
        == "New SetDesiredCapacity value 11 is above max value 10 for the AutoScalingGroup."
    )
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert sandbox.group(SPOT)["DesiredCapacity"] == 3


def test_desired_for_a_missing_group_is_a_validation_error(sandbox: Sandbox) -> None:
    with pytest.raises(ClientError) as raised:
        sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName="no-such-group", DesiredCapacity=1)

    assert raised.value.response["Error"]["Code"] == "ValidationError"
    assert raised.value.response["Error"]["Message"] == "AutoScalingGroup name not found - null"


def test_lowering_desired_terminates_instances_and_records_it(sandbox: Sandbox) -> None:
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=1)

    assert len(sandbox.lifecycle_states(SPOT)) == 1
    terminations = [a for a in sandbox.activities(SPOT) if a["Description"].startswith("Terminating EC2 instance: ")]
    assert len(terminations) == 2
    assert {a["StatusCode"] for a in terminations} == {"Successful"}
    assert all("shrinking the capacity from 3 to 1" in a["Cause"] for a in terminations)


def test_ec2_termination_of_a_member_is_noticed_and_replaced(sandbox: Sandbox) -> None:
    sandbox.control.set_capacity(SPOT, pending_seconds=2)
    ids = set(sandbox.lifecycle_states(SPOT))
    victim = sorted(ids)[0]

    sandbox.ec2.terminate_instances(InstanceIds=[victim])

    states = sandbox.lifecycle_states(SPOT)
    assert victim not in states
    (replacement,) = set(states) - ids
    assert states[replacement] == "Pending"
    assert any(
        a["Description"] == f"Terminating EC2 instance: {victim}" and "EC2 health check" in a["Cause"]
        for a in sandbox.activities(SPOT)
    )
    sandbox.advance(2)
    assert sandbox.lifecycle_states(SPOT)[replacement] == "InService"


def test_update_auto_scaling_group_desired_goes_through_the_simulator(sandbox: Sandbox) -> None:
    sandbox.control.set_capacity(ON_DEMAND, pending_seconds=1)

    sandbox.autoscaling.update_auto_scaling_group(AutoScalingGroupName=ON_DEMAND, DesiredCapacity=2)

    assert sorted(sandbox.lifecycle_states(ON_DEMAND).values()) == ["Pending", "Pending"]
    sandbox.advance(1)
    assert sorted(sandbox.lifecycle_states(ON_DEMAND).values()) == ["InService", "InService"]


def test_describe_auto_scaling_instances_maps_instances_to_groups(sandbox: Sandbox) -> None:
    ids = sorted(sandbox.lifecycle_states(SPOT))

    found = sandbox.autoscaling.describe_auto_scaling_instances(InstanceIds=ids)["AutoScalingInstances"]

    assert {i["InstanceId"]: i["AutoScalingGroupName"] for i in found} == dict.fromkeys(ids, SPOT)


def test_detach_without_decrement_records_the_detach_and_launches_a_replacement(sandbox: Sandbox) -> None:
    sandbox.control.set_capacity(SPOT, pending_seconds=0)
    ids = set(sandbox.lifecycle_states(SPOT))
    detached = sorted(ids)[0]

    sandbox.autoscaling.detach_instances(
        AutoScalingGroupName=SPOT, InstanceIds=[detached], ShouldDecrementDesiredCapacity=False
    )

    states = sandbox.lifecycle_states(SPOT)
    assert detached not in states
    assert len(set(states) - ids) == 1
    assert any(a["Description"] == f"Detaching EC2 instance: {detached}" for a in sandbox.activities(SPOT))
    ec2_state = sandbox.ec2.describe_instances(InstanceIds=[detached])["Reservations"][0]["Instances"][0]["State"]
    assert ec2_state["Name"] == "running"
