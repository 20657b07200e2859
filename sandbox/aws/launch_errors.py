"""The shapes of failed launches EC2 Auto Scaling really writes, each from a public source named beside it.

A failed launch is a scaling activity with StatusCode ``Failed`` whose StatusMessage (and Description, after
``Status Reason:``) carries EC2's reason. Two wrappings exist:

- groups with a MixedInstancesPolicy write ``Could not launch Spot Instances. <Code> - <EC2 sentence> Launching
  EC2 instance failed.`` (or ``On-Demand``): kubernetes/autoscaler issue 3241 and cortexlabs/cortex issue 1258
  (spot), dspace-group/dspace-reference-architecture-aws issues 85 and 100 (on-demand, ``Unsupported``);
- groups launching from a launch template or configuration alone write the sentence without any code:
  ``<EC2 sentence> Launching EC2 instance failed.``: aws/aws-parallelcluster issue 1944 (spot),
  kubernetes/autoscaler issue 1263 (instance limit), aws-deepracer-community/deepracer-on-the-spot issue 55
  (spot count), PrairieLearn/PrairieLearn issue 3271 (subnet addresses), and every message of the EC2 Auto Scaling
  User Guide's "Troubleshoot Amazon EC2 Auto Scaling: EC2 instance launch failures" and "...: AMI issues" pages.

The EC2 sentences themselves are EC2's API error messages, as RunInstances returns them with the code (sources per
shape below). ``category`` is what the failure means for Spot Guard: ``capacity`` (EC2 has none now; waiting or
another pool may help), ``quota`` (a limit of the account: another pool of the same account will not help, the
on-demand group may), ``configuration`` (the group or its launch template is wrong: nothing launches until someone
fixes it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

CAPACITY = "capacity"
QUOTA = "quota"
CONFIGURATION = "configuration"

LAUNCH_FAILED = "Launching EC2 instance failed."


@dataclasses.dataclass(frozen=True)
class LaunchContext:
    """What a failure message may name: the pool tried and the group's launch settings."""

    instance_type: str
    zone: str
    other_zones: Sequence[str] = ()
    image_id: str = "ami-0abcdef1234567890"
    template_id: str = "lt-0abcdef1234567890"
    subnet_id: str = "subnet-0abcdef1234567890"
    requested: int = 1


@dataclasses.dataclass(frozen=True)
class LaunchFailureShape:
    """One way a launch fails: EC2's code (None when EC2 gives none), its sentence, what it means, and where the
    wording comes from."""

    name: str
    code: str
    category: str
    sentence: Callable[[LaunchContext, bool], str]  # (context, spot) -> EC2's sentence, ending with a period
    source: str
    spot_only: bool = False

    def status_message(self, context: LaunchContext, *, spot: bool, coded: bool) -> str:
        """The StatusMessage of the Failed activity: coded (MixedInstancesPolicy groups) or the bare sentence."""
        sentence = self.sentence(context, spot)
        if coded:
            market = "Spot" if spot else "On-Demand"
            return f"Could not launch {market} Instances. {self.code} - {sentence} {LAUNCH_FAILED}"
        return f"{sentence} {LAUNCH_FAILED}"


def _or_choosing(zones: Sequence[str]) -> str:
    return f" or choosing {', '.join(zones)}" if zones else ""


def _insufficient_capacity(context: LaunchContext, spot: bool) -> str:
    if spot:
        return "There is no Spot capacity available that matches your request."
    return (
        f"We currently do not have sufficient {context.instance_type} capacity in the Availability Zone you requested "
        f"({context.zone}). Our system will be working on provisioning additional capacity. You can currently get "
        f"{context.instance_type} capacity by not specifying an Availability Zone in your request"
        f"{_or_choosing(context.other_zones)}."
    )


def _unsupported_type_in_zone(context: LaunchContext, _spot: bool) -> str:
    return (
        f"Your requested instance type ({context.instance_type}) is not supported in your requested Availability Zone "
        f"({context.zone}). Please retry your request by not specifying an Availability Zone"
        f"{_or_choosing(context.other_zones)}."
    )


SHAPES: tuple[LaunchFailureShape, ...] = (
    LaunchFailureShape(
        "insufficient-capacity",
        "InsufficientInstanceCapacity",
        CAPACITY,
        _insufficient_capacity,
        "User Guide 'Troubleshoot ...: EC2 instance launch failures' (both sentences); coded spot form: "
        "kubernetes/autoscaler#3241, cortexlabs/cortex#1258; uncoded spot form: aws/aws-parallelcluster#1944; "
        "on-demand sentence with its code: hashicorp/terraform-provider-aws#1496",
    ),
    LaunchFailureShape(
        "spot-price-too-low",
        "SpotMaxPriceTooLow",
        CAPACITY,
        lambda _c, _s: (
            "Your Spot request price of 0.015 is lower than the minimum required Spot request fulfillment price of "
            "0.0735."
        ),
        "User Guide 'Troubleshoot ...: EC2 instance launch failures'; code: aws/aws-parallelcluster-node#415",
        spot_only=True,
    ),
    LaunchFailureShape(
        "unfulfillable-capacity",
        "UnfulfillableCapacity",
        CAPACITY,
        lambda _c, _s: (
            "At this time there isn't enough spare capacity to fulfill your request for Spot Instances. You can wait a "
            "few minutes to see whether capacity becomes available for your request."
        ),
        "EC2 API Reference 'Error codes' (the code's description, quoted in aws/aws-parallelcluster-node#673); "
        "Karpenter pkg/errors/errors.go lists the code as unfulfillable capacity",
        spot_only=True,
    ),
    LaunchFailureShape(
        "max-spot-instance-count",
        "MaxSpotInstanceCountExceeded",
        QUOTA,
        lambda _c, _s: "Max spot instance count exceeded.",
        "uncoded in an activity: aws-deepracer-community/deepracer-on-the-spot#55; with its code: "
        "NixOS/nixops-aws#41; aws/aws-parallelcluster#340 (the spot quota)",
        spot_only=True,
    ),
    LaunchFailureShape(
        "vcpu-limit",
        "VcpuLimitExceeded",
        QUOTA,
        lambda _c, _s: (
            "You have requested more vCPU capacity than your current vCPU limit of 32 allows for the instance bucket "
            "that the specified instance type belongs to. Please visit http://aws.amazon.com/contact-us/ec2-request to "
            "request an adjustment to this limit."
        ),
        "4dn-dcic/tibanna#267 (code and sentence); Karpenter pkg/errors/errors.go",
    ),
    LaunchFailureShape(
        "instance-limit",
        "InstanceLimitExceeded",
        QUOTA,
        lambda c, _s: (
            f"You have requested more instances ({c.requested + 5}) than your current instance limit of 5 allows for "
            "the specified instance type. Please visit http://aws.amazon.com/contact-us/ec2-request to request an "
            "adjustment to this limit."
        ),
        "uncoded in an activity: kubernetes/autoscaler#1263",
    ),
    LaunchFailureShape(
        "subnet-addresses",
        "InsufficientFreeAddressesInSubnet",
        QUOTA,
        lambda c, _s: (
            f"There are not enough free addresses in subnet '{c.subnet_id}' to satisfy the requested number of "
            "instances."
        ),
        "uncoded in an activity: PrairieLearn/PrairieLearn#3271; with its code: osbuild/osbuild-composer#1575; "
        "Karpenter pkg/errors/errors.go",
    ),
    LaunchFailureShape(
        "unsupported-type-in-zone",
        "Unsupported",
        CONFIGURATION,
        _unsupported_type_in_zone,
        "User Guide 'Troubleshoot ...: EC2 instance launch failures'; coded on-demand form: "
        "dspace-group/dspace-reference-architecture-aws#85 and #100",
    ),
    LaunchFailureShape(
        "unsupported-configuration",
        "Unsupported",
        CONFIGURATION,
        lambda _c, _s: (
            "The requested configuration is currently not supported. Please check the documentation for supported "
            "configurations."
        ),
        "User Guide 'Troubleshoot ...: EC2 instance launch failures'; code and full sentence: "
        "hashicorp/terraform-provider-aws#9113",
    ),
    LaunchFailureShape(
        "ami-not-found",
        "InvalidAMIID.NotFound",
        CONFIGURATION,
        lambda c, _s: f"The image id '[{c.image_id}]' does not exist.",
        "EC2's sentence with its code: hashicorp/terraform#11220, brikis98/terraform-up-and-running-code#41; the "
        "User Guide 'Troubleshoot ...: AMI issues' page lists the failure",
    ),
    LaunchFailureShape(
        "instance-profile-invalid",
        "InvalidParameterValue",
        CONFIGURATION,
        lambda _c, _s: (
            "Value (spotguard-nodes) for parameter iamInstanceProfile.name is invalid. Invalid IAM "
            "Instance Profile name."
        ),
        "hashicorp/terraform-provider-aws#27516, CiscoDevNet/cloud-cml#4 (code and sentence)",
    ),
    LaunchFailureShape(
        "launch-template-not-found",
        "InvalidLaunchTemplateId.NotFound",
        CONFIGURATION,
        lambda c, _s: f"The specified launch template, with template ID {c.template_id}, does not exist.",
        "aws/karpenter-provider-aws#5665 (code and sentence)",
    ),
    LaunchFailureShape(
        "security-group-not-found",
        "InvalidGroup.NotFound",
        CONFIGURATION,
        lambda _c, _s: "The security group 'sg-0abcdef1234567890' does not exist.",
        "User Guide 'Troubleshoot ...: EC2 instance launch failures'",
    ),
    LaunchFailureShape(
        "kms-key-not-usable",
        "Client.InternalError",
        CONFIGURATION,
        lambda _c, _s: "Client.InternalError: Client error on launch.",
        "User Guide 'Troubleshoot ...: EC2 instance launch failures' (an EBS volume's KMS key the service-linked role "
        "may not use)",
    ),
)

BY_NAME: dict[str, LaunchFailureShape] = {shape.name: shape for shape in SHAPES}
INSUFFICIENT_CAPACITY = BY_NAME["insufficient-capacity"]
UNSUPPORTED_TYPE_IN_ZONE = BY_NAME["unsupported-type-in-zone"]
LAUNCH_TEMPLATE_NOT_FOUND = BY_NAME["launch-template-not-found"]


def shape(name: str) -> LaunchFailureShape:
    """The shape called ``name``; ValueError listing the known names otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown launch failure {name!r}; known failures are {sorted(BY_NAME)}") from None
