"""Quota and configuration failures as the sandbox writes them: coded in MixedInstancesPolicy groups, a bare sentence
in launch-template groups, one Failed activity per try; a deleted launch template fails every launch."""

from __future__ import annotations

import pytest

from sandbox.aws import launch_errors
from sandbox.aws.client import SandboxAWSError
from tests.unit.sandbox.conftest import ON_DEMAND, SPOT, Sandbox, create_group, instances


def _failures(sandbox: Sandbox, group: str) -> list[str]:
    return [a["StatusMessage"] for a in sandbox.activities(group) if a["StatusCode"] == "Failed"]


def test_a_vcpu_quota_failure_is_coded_in_a_mixed_instances_group(sandbox: Sandbox) -> None:
    sandbox.control.set_launch_failure(SPOT, "vcpu-limit")

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=4)

    assert _failures(sandbox, SPOT) == [
        "Could not launch Spot Instances. VcpuLimitExceeded - You have requested more vCPU capacity than your current "
        "vCPU limit of 32 allows for the instance bucket that the specified instance type belongs to. Please visit "
        "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit. Launching EC2 instance "
        "failed."
    ]


def test_a_missing_ami_in_a_launch_template_group_is_a_sentence_without_its_code(sandbox: Sandbox) -> None:
    sandbox.control.set_launch_failure(ON_DEMAND, "ami-not-found")

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=ON_DEMAND, DesiredCapacity=1)

    assert _failures(sandbox, ON_DEMAND) == [
        "The image id '[ami-0abcdef1234567890]' does not exist. Launching EC2 instance failed."
    ]


def test_a_group_wide_failure_fails_once_per_try_and_clearing_it_launches(sandbox: Sandbox) -> None:
    sandbox.control.set_capacity(ON_DEMAND, retry_seconds=10)
    sandbox.control.set_launch_failure(ON_DEMAND, "instance-profile-invalid")
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=ON_DEMAND, DesiredCapacity=1)

    sandbox.advance(10)
    assert len(_failures(sandbox, ON_DEMAND)) == 2
    assert instances(sandbox, ON_DEMAND) == []

    sandbox.control.set_launch_failure(ON_DEMAND, None)
    assert len(instances(sandbox, ON_DEMAND)) == 1


def test_a_deleted_launch_template_fails_every_launch_as_ec2_says(sandbox: Sandbox) -> None:
    create_group(sandbox, "orphan", zones=("us-east-1a",))
    sandbox.ec2.create_launch_template(
        LaunchTemplateName="short-lived",
        LaunchTemplateData={"ImageId": "ami-0abcdef1234567890", "InstanceType": "m5.large"},
    )
    sandbox.autoscaling.update_auto_scaling_group(
        AutoScalingGroupName="orphan", LaunchTemplate={"LaunchTemplateName": "short-lived", "Version": "$Latest"}
    )
    template_id = sandbox.group("orphan")["LaunchTemplate"]["LaunchTemplateId"]
    sandbox.ec2.delete_launch_template(LaunchTemplateName="short-lived")

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName="orphan", DesiredCapacity=1)

    assert _failures(sandbox, "orphan") == [
        f"The specified launch template, with template ID {template_id}, does not exist. Launching EC2 instance failed."
    ]


def test_every_shape_is_listed_with_its_code_category_and_source(sandbox: Sandbox) -> None:
    listed = {f["name"]: f for f in sandbox.control.launch_failures()}

    assert set(listed) == set(launch_errors.BY_NAME)
    assert listed["max-spot-instance-count"]["code"] == "MaxSpotInstanceCountExceeded"
    assert {f["category"] for f in listed.values()} == {"capacity", "quota", "configuration"}
    assert all(f["source"] for f in listed.values())


def test_an_unknown_failure_name_is_refused_with_the_known_names(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxAWSError, match=r"unknown launch failure 'no-such'; known failures are \[.*'vcpu-limit'"):
        sandbox.control.set_launch_failure(SPOT, "no-such")
    assert sandbox.control.capacity(SPOT)["launch_failure"] is None
