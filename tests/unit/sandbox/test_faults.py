"""Injected faults reach boto3 as ClientError with AWS's code, message and HTTP status."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from sandbox.aws.client import SandboxAWSError
from tests.unit.sandbox.conftest import ON_DEMAND, SPOT, Sandbox


@pytest.mark.parametrize(
    ("code", "message", "status", "expected_message"),
    [
        ("Throttling", None, None, "Rate exceeded"),
        ("ResourceContention", None, None, "You already have a pending update to an Auto Scaling resource"),
        ("ScalingActivityInProgress", None, None, "Scaling activity "),
        ("AccessDenied", None, None, "User: arn:aws:sts::123456789012:assumed-role/"),
        ("ValidationError", "AutoScalingGroup name not found - null", None, "AutoScalingGroup name not found - null"),
        ("InternalFailure", None, None, "An internal error has occurred"),
    ],
)
def test_injected_fault_raises_client_error_with_its_code_and_message(
    sandbox: Sandbox, code: str, message: str | None, status: int | None, expected_message: str
) -> None:
    sandbox.control.add_fault("SetDesiredCapacity", code, message, http_status=status)

    with pytest.raises(ClientError) as raised:
        sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=4)

    error = raised.value.response["Error"]
    assert error["Code"] == code
    assert error["Message"].startswith(expected_message)
    assert error.get("Type") in ("Sender", "Receiver")
    expected_status = {"AccessDenied": 403, "InternalFailure": 500}.get(code, 400)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == expected_status
    assert sandbox.group(SPOT)["DesiredCapacity"] == 3


def test_access_denied_names_the_operation_and_the_group(sandbox: Sandbox) -> None:
    sandbox.control.add_fault("SetDesiredCapacity", "AccessDenied", asg=SPOT)

    with pytest.raises(ClientError) as raised:
        sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=4)

    message = raised.value.response["Error"]["Message"]
    assert "is not authorized to perform: autoscaling:SetDesiredCapacity on resource: arn:aws:autoscaling:" in message
    assert f"autoScalingGroupName/{SPOT}" in message


def test_fault_fires_count_times_then_calls_succeed(sandbox: Sandbox) -> None:
    sandbox.control.add_fault("SetDesiredCapacity", "Throttling", count=2)

    outcomes = []
    for _ in range(3):
        try:
            sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=4)
            outcomes.append("ok")
        except ClientError as error:
            outcomes.append(error.response["Error"]["Code"])

    assert outcomes == ["Throttling", "Throttling", "ok"]
    assert sandbox.group(SPOT)["DesiredCapacity"] == 4
    assert sandbox.control.faults() == []


def test_fault_for_one_group_leaves_other_groups_alone(sandbox: Sandbox) -> None:
    sandbox.control.add_fault("SetDesiredCapacity", "ScalingActivityInProgress", asg=SPOT)

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=ON_DEMAND, DesiredCapacity=1)
    with pytest.raises(ClientError) as raised:
        sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=4)

    assert raised.value.response["Error"]["Code"] == "ScalingActivityInProgress"
    assert sandbox.group(ON_DEMAND)["DesiredCapacity"] == 1


def test_fault_on_terminate_matches_the_group_of_the_instance(sandbox: Sandbox) -> None:
    sandbox.control.add_fault("TerminateInstanceInAutoScalingGroup", "ResourceContention", asg=SPOT)
    victim = sorted(sandbox.lifecycle_states(SPOT))[0]

    with pytest.raises(ClientError) as raised:
        sandbox.autoscaling.terminate_instance_in_auto_scaling_group(
            InstanceId=victim, ShouldDecrementDesiredCapacity=True
        )

    assert raised.value.response["Error"]["Code"] == "ResourceContention"
    assert victim in sandbox.lifecycle_states(SPOT)


def test_fault_on_an_ec2_operation_uses_ec2_error_format(sandbox: Sandbox) -> None:
    sandbox.control.add_fault(
        "DescribeInstances", "UnauthorizedOperation", "You are not authorized to perform this operation."
    )

    with pytest.raises(ClientError) as raised:
        sandbox.ec2.describe_instances()

    assert raised.value.response["Error"]["Code"] == "UnauthorizedOperation"
    assert raised.value.response["Error"]["Message"] == "You are not authorized to perform this operation."


def test_clear_faults_drops_waiting_faults(sandbox: Sandbox) -> None:
    sandbox.control.add_fault("SetDesiredCapacity", "Throttling", count=5)

    sandbox.control.clear_faults()

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=4)
    assert sandbox.group(SPOT)["DesiredCapacity"] == 4


@pytest.mark.parametrize(
    ("fault", "complaint"),
    [
        ({"operation": "SetDesiredCapacity", "code": "ValidationError"}, "'message' is required"),
        ({"operation": "SetDesiredCapacity", "code": "Throttling", "count": 0}, "'count' must be an integer >= 1"),
        ({"operation": "SetDesiredCapacity", "code": "Throttling", "http_status": 200}, "'http_status'"),
        ({"code": "Throttling"}, "'operation' must be a non-empty string"),
        ({"operation": "SetDesiredCapacity", "code": "Throttling", "colour": "red"}, "unknown fault field"),
    ],
)
def test_malformed_fault_is_refused_with_the_reason(sandbox: Sandbox, fault: dict[str, object], complaint: str) -> None:
    with pytest.raises(SandboxAWSError, match="HTTP 400") as raised:
        sandbox.control._call("POST", "/faults", fault)
    assert complaint in str(raised.value)
    assert sandbox.control.faults() == []
