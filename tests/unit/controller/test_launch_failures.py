"""The failed-launch classifier against the message shapes AWS really writes, each row citing where it was seen, and
against every shape the sandbox writes."""

from __future__ import annotations

import datetime as dt

import pytest

from controller.checks.launch_failures import CAPACITY, CONFIGURATION, QUOTA, UNKNOWN, classify, is_failed_launch
from controller.model.asg import Activity
from sandbox.aws import launch_errors

FAILED = "Launching a new EC2 instance.  Status Reason: "
CAUSE = (
    "At 2020-08-18T15:46:11Z an instance was started in response to a difference between desired and actual capacity, "
    "increasing the capacity from 0 to 2."
)
ENDING = " Launching EC2 instance failed."


def failed(message: str, status: str = "Failed", description: str | None = None) -> Activity:
    return Activity(
        activity_id="a-1",
        status_code=status,
        status_message=message,
        description=description if description is not None else FAILED + message,
        cause=CAUSE,
        start_time=dt.datetime(2025, 1, 15, tzinfo=dt.UTC),
    )


# (message as AWS wrote it, expected category, expected code, source)
TABLE = [
    (
        "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot capacity available that "
        "matches your request." + ENDING,
        CAPACITY,
        "InsufficientInstanceCapacity",
        "kubernetes/autoscaler#3241, cortexlabs/cortex#1258 (MixedInstancesPolicy spot group)",
    ),
    (
        "There is no Spot capacity available that matches your request." + ENDING,
        CAPACITY,
        "InsufficientInstanceCapacity",
        "aws/aws-parallelcluster#1944 (spot group without a MixedInstancesPolicy: no code)",
    ),
    (
        "We currently do not have sufficient m5.large capacity in the Availability Zone you requested (us-east-1a). "
        "Our system will be working on provisioning additional capacity. You can currently get m5.large capacity by "
        "not specifying an Availability Zone in your request or choosing us-east-1b, us-east-1c." + ENDING,
        CAPACITY,
        "InsufficientInstanceCapacity",
        "User Guide 'Troubleshoot Amazon EC2 Auto Scaling: EC2 instance launch failures' (on-demand, no code)",
    ),
    (
        "Could not launch On-Demand Instances. InsufficientInstanceCapacity - We currently do not have sufficient "
        "g6.xlarge capacity in the Availability Zone you requested (us-west-2d). Our system will be working on "
        "provisioning additional capacity. You can currently get g6.xlarge capacity by not specifying an Availability "
        "Zone in your request or choosing us-west-2a, us-west-2b, us-west-2c." + ENDING,
        CAPACITY,
        "InsufficientInstanceCapacity",
        "the coded wrapper of dspace-group/dspace-reference-architecture-aws#85 around EC2's sentence "
        "(hashicorp/terraform-provider-aws#1496)",
    ),
    (
        "Your Spot request price of 0.015 is lower than the minimum required Spot request fulfillment price of "
        "0.0735." + ENDING,
        CAPACITY,
        "SpotMaxPriceTooLow",
        "User Guide 'Troubleshoot ...: EC2 instance launch failures'",
    ),
    (
        "Max spot instance count exceeded." + ENDING,
        QUOTA,
        "MaxSpotInstanceCountExceeded",
        "aws-deepracer-community/deepracer-on-the-spot#55 (an activity, no code)",
    ),
    (
        "Could not launch Spot Instances. MaxSpotInstanceCountExceeded - Max spot instance count exceeded." + ENDING,
        QUOTA,
        "MaxSpotInstanceCountExceeded",
        "the coded wrapper around EC2's message (NixOS/nixops-aws#41)",
    ),
    (
        "You have requested more vCPU capacity than your current vCPU limit of 64 allows for the instance bucket that "
        "the specified instance type belongs to. Please visit http://aws.amazon.com/contact-us/ec2-request to request "
        "an adjustment to this limit." + ENDING,
        QUOTA,
        "VcpuLimitExceeded",
        "4dn-dcic/tibanna#267 (says 'capacity' yet is a quota)",
    ),
    (
        "You have requested more instances (7) than your current instance limit of 6 allows for the specified "
        "instance type. Please visit http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this "
        "limit." + ENDING,
        QUOTA,
        "InstanceLimitExceeded",
        "kubernetes/autoscaler#1263",
    ),
    (
        "20 instance(s) are already running." + ENDING,
        QUOTA,
        "InstanceLimitExceeded",
        "User Guide 'Troubleshoot ...: EC2 instance launch failures'",
    ),
    (
        "There are not enough free addresses in subnet 'subnet-66d3dd2c' to satisfy the requested number of "
        "instances." + ENDING,
        QUOTA,
        "InsufficientFreeAddressesInSubnet",
        "PrairieLearn/PrairieLearn#3271",
    ),
    (
        "Could not launch On-Demand Instances. Unsupported - Your requested instance type (p3.2xlarge) is not "
        "supported in your requested Availability Zone (eu-central-1c). Please retry your request by not specifying "
        "an Availability Zone or choosing eu-central-1a, eu-central-1b." + ENDING,
        CONFIGURATION,
        "Unsupported",
        "dspace-group/dspace-reference-architecture-aws#100",
    ),
    (
        "Your requested instance type (t2.micro) is not supported in your requested Availability Zone (sa-east-1b). "
        "Please retry your request by not specifying an Availability Zone or choosing sa-east-1a, sa-east-1c." + ENDING,
        CONFIGURATION,
        "Unsupported",
        "User Guide 'Troubleshoot ...: EC2 instance launch failures'; trailofbits/algo#314",
    ),
    (
        "The requested configuration is currently not supported. Please check the documentation for supported "
        "configurations." + ENDING,
        CONFIGURATION,
        "Unsupported",
        "User Guide 'Troubleshoot ...: EC2 instance launch failures'; hashicorp/terraform-provider-aws#9113",
    ),
    (
        "The AMI ID ami-0c55b159cbfafe1f0 does not exist." + ENDING,
        CONFIGURATION,
        "InvalidAMIID.NotFound",
        "User Guide 'Troubleshoot Amazon EC2 Auto Scaling: AMI issues'",
    ),
    (
        "Could not launch On-Demand Instances. InvalidAMIID.NotFound - The image id '[ami-0c55b159cbfafe1f0]' does "
        "not exist." + ENDING,
        CONFIGURATION,
        "InvalidAMIID.NotFound",
        "the coded wrapper around EC2's message (hashicorp/terraform#11220)",
    ),
    (
        "AMI ami-0123456789abcdef0 is pending, and cannot be run." + ENDING,
        CONFIGURATION,
        None,
        "User Guide 'Troubleshoot ...: AMI issues'",
    ),
    (
        "Value (s3-access-for-ec2) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile "
        "name" + ENDING,
        CONFIGURATION,
        "InvalidParameterValue",
        "CiscoDevNet/cloud-cml#4, hashicorp/terraform-provider-aws#27516",
    ),
    (
        "The specified launch template, with template ID lt-019c5be5798f24ca7, does not exist." + ENDING,
        CONFIGURATION,
        "InvalidLaunchTemplateId.NotFound",
        "aws/karpenter-provider-aws#5665",
    ),
    (
        "The security group sg-12345678 does not exist." + ENDING,
        CONFIGURATION,
        "InvalidGroup.NotFound",
        "User Guide 'Troubleshoot ...: EC2 instance launch failures'",
    ),
    (
        "The key pair my-key does not exist." + ENDING,
        CONFIGURATION,
        "InvalidKeyPair.NotFound",
        "User Guide 'Troubleshoot ...: EC2 instance launch failures'",
    ),
    (
        "Client.InternalError: Client error on launch." + ENDING,
        CONFIGURATION,
        "Client.InternalError",
        "User Guide 'Troubleshoot ...: EC2 instance launch failures'",
    ),
    (
        "Placement groups may not be used with instances of type 'm1.large'." + ENDING,
        CONFIGURATION,
        None,
        "User Guide 'Troubleshoot ...: EC2 instance launch failures'",
    ),
]


@pytest.mark.parametrize(("message", "category", "code", "source"), TABLE, ids=[row[3][:60] for row in TABLE])
def test_real_messages_are_classified_by_code_and_by_sentence(
    message: str, category: str, code: str | None, source: str
) -> None:
    found = classify(failed(message))

    assert found is not None, source
    assert (found.category, found.code) == (category, code), source
    assert found.message == message
    assert found.reason


def test_a_lifecycle_hook_that_abandoned_a_launch_is_a_configuration_failure() -> None:
    # User Guide "Troubleshoot Amazon EC2 Auto Scaling" (StatusCode Cancelled)
    message = (
        "Instance failed to complete user's Lifecycle Action: Lifecycle Action with token "
        "e85eb647-4fe0-4909-b341-a6c42d8aba1f was abandoned: Lifecycle Action Completed with ABANDON Result"
    )
    activity = failed(
        message,
        status="Cancelled",
        description=f"Launching a new EC2 instance: i-003a5b3ffe1e9358e.  Status Reason: {message}",
    )

    found = classify(activity)

    assert found is not None and found.category == CONFIGURATION and "lifecycle hook" in found.reason


def test_the_bare_word_capacity_classifies_nothing() -> None:
    for message in (
        "Could not scale to desired capacity because all remaining instances are protected from scale-in.",
        "The capacity reservation cr-0123 is not active.",
        "insufficient capacity",
    ):
        found = classify(failed(message))
        assert found is not None and found.category == UNKNOWN, message


@pytest.mark.parametrize(
    ("message", "category", "code"),
    [
        (
            "Could not launch Spot Instances. SpotMaxPriceTooLow - Your max price is below the price.",
            CAPACITY,
            "SpotMaxPriceTooLow",
        ),
        ("MaxSpotInstanceCountExceeded - Max spot instance count exceeded.", QUOTA, "MaxSpotInstanceCountExceeded"),
        (
            "We currently do not have sufficient m5.large capacity in the Availability Zone you requested "
            "(us-east-1a). Launching EC2 instance failed.",
            CAPACITY,
            "InsufficientInstanceCapacity",
        ),
        # The seed's false positives: neither the word "capacity" nor "insufficient" is a shortage.
        ("Launching a new EC2 instance failed: the capacity reservation was not found.", UNKNOWN, None),
        ("Insufficient permissions: not authorized to perform ec2:RunInstances.", UNKNOWN, None),
        (
            "The requested configuration is currently not supported. capacity-not-available",
            CONFIGURATION,
            "Unsupported",
        ),
    ],
)
def test_a_code_or_a_whole_sentence_classifies_never_a_word(message: str, category: str, code: str | None) -> None:
    found = classify(failed(message))

    assert found is not None and (found.category, found.code) == (category, code)


def test_the_cause_is_never_read_though_it_speaks_of_capacity() -> None:
    found = classify(failed(""))  # no message, an empty reason
    assert found is not None and found.category == UNKNOWN


def test_an_unknown_code_is_kept() -> None:
    found = classify(failed("Could not launch Spot Instances. SomethingNew - A new thing happened." + ENDING))

    assert found is not None and (found.category, found.code) == (UNKNOWN, "SomethingNew")
    assert "SomethingNew" in found.reason


def test_the_description_is_read_when_the_status_message_is_empty() -> None:
    message = "Max spot instance count exceeded." + ENDING
    found = classify(failed("", description=FAILED + message))

    assert found is not None and found.code == "MaxSpotInstanceCountExceeded"


@pytest.mark.parametrize(
    ("status", "description"),
    [
        ("Successful", "Launching a new EC2 instance: i-0123"),
        ("InProgress", "Launching a new EC2 instance: i-0123"),
        ("Failed", "Terminating EC2 instance: i-0123"),
    ],
)
def test_what_is_not_a_failed_launch_is_not_classified(status: str, description: str) -> None:
    activity = failed("There is no Spot capacity available that matches your request.", status, description)

    assert not is_failed_launch(activity)
    assert classify(activity) is None


@pytest.mark.parametrize("shape", launch_errors.SHAPES, ids=lambda s: s.name)
@pytest.mark.parametrize("coded", [True, False], ids=["coded", "uncoded"])
def test_every_shape_the_sandbox_writes_is_classified_as_the_sandbox_means_it(
    shape: launch_errors.LaunchFailureShape, coded: bool
) -> None:
    context = launch_errors.LaunchContext(instance_type="m5.large", zone="us-east-1a", other_zones=("us-east-1b",))
    for spot in (True, False) if not shape.spot_only else (True,):
        message = shape.status_message(context, spot=spot, coded=coded)

        found = classify(failed(message))

        assert found is not None
        assert (found.category, found.code) == (shape.category, shape.code), message
