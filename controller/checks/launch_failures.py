"""What a failed launch activity means: capacity, quota, configuration or unknown, from EC2's code when the message
carries one and from EC2's documented sentences when it does not (never from a bare word such as "capacity").

EC2 Auto Scaling writes a failed launch two ways (sources in sandbox/aws/launch_errors.py and docs/simulator.md):
groups with a MixedInstancesPolicy as ``Could not launch Spot Instances. <Code> - <sentence> Launching EC2 instance
failed.``, other groups as the sentence alone. A launch a lifecycle hook abandoned is ``Cancelled`` with "Instance
failed to complete user's Lifecycle Action".

Categories: ``capacity``: EC2 has no capacity in the pool tried now (another pool, later, or on-demand may have
some); ``quota``: a limit of the account or its network (no other pool of the account helps); ``configuration``: the
group, its launch template or a lifecycle hook is wrong (nothing launches until someone fixes it); ``unknown``:
anything else, with AWS's words kept.
"""

from __future__ import annotations

import dataclasses
import re

from controller.model.asg import Activity

CAPACITY = "capacity"
QUOTA = "quota"
CONFIGURATION = "configuration"
UNKNOWN = "unknown"

_LAUNCH = "Launching a new EC2 instance"
_FAILED_STATUSES = frozenset({"Failed", "Cancelled"})
_CODED = re.compile(r"Could not launch (?:Spot|On-Demand) Instances\. (?P<code>[A-Za-z][\w.]*) - (?P<rest>.*)", re.S)
_PREFIXED = re.compile(r"^(?P<code>[A-Z][A-Za-z]+\.[A-Za-z]+): ")  # "Client.InternalError: Client error on launch."
_STATUS_REASON = "Status Reason: "

#: EC2 error codes and what they mean. Capacity: aws-parallelcluster-node PRs 415 and 673 (its fast fail-over list),
#: Karpenter pkg/errors/errors.go (unfulfillable capacity). Quota: the EC2 API Reference's "Error codes" page
#: (limits of the account), Karpenter (vCPU limit, subnet addresses). Configuration: the same page (not found,
#: invalid parameter, unsupported); "Unsupported" is an instance type or configuration the zone does not offer, which
#: waiting never fixes (Karpenter marks the offering unavailable instead, which suits a scheduler, not a fallback).
CODES: dict[str, tuple[str, str]] = {
    "InsufficientInstanceCapacity": (CAPACITY, "EC2 has no capacity for the instance type in the zone tried"),
    "InsufficientCapacity": (CAPACITY, "EC2 has not enough capacity for the request"),
    "UnfulfillableCapacity": (CAPACITY, "EC2 has not enough spare spot capacity for the request"),
    "SpotMaxPriceTooLow": (CAPACITY, "the spot price is above the group's maximum price"),
    "InsufficientHostCapacity": (CAPACITY, "the dedicated hosts have no capacity left"),
    "MaxSpotInstanceCountExceeded": (QUOTA, "the account's spot instance quota is reached"),
    "VcpuLimitExceeded": (QUOTA, "the account's vCPU quota for the instance family is reached"),
    "InstanceLimitExceeded": (QUOTA, "the account's instance quota is reached"),
    "InsufficientFreeAddressesInSubnet": (QUOTA, "the subnet has no free IP address left"),
    "Unsupported": (CONFIGURATION, "the instance type or configuration is not offered where it was requested"),
    "InvalidAMIID.NotFound": (CONFIGURATION, "the launch template's AMI does not exist"),
    "InvalidAMIID.Malformed": (CONFIGURATION, "the launch template's AMI id is malformed"),
    "InvalidAMIID.Unavailable": (CONFIGURATION, "the launch template's AMI is not available"),
    "InvalidLaunchTemplateId.NotFound": (CONFIGURATION, "the group's launch template does not exist"),
    "InvalidLaunchTemplateName.NotFoundException": (CONFIGURATION, "the group's launch template does not exist"),
    "InvalidGroup.NotFound": (CONFIGURATION, "a security group of the launch template does not exist"),
    "InvalidKeyPair.NotFound": (CONFIGURATION, "the launch template's key pair does not exist"),
    "InvalidSubnetID.NotFound": (CONFIGURATION, "a subnet of the group does not exist"),
    "InvalidParameterValue": (CONFIGURATION, "the launch template has an invalid parameter"),
    "InvalidParameterCombination": (CONFIGURATION, "the launch template combines parameters EC2 refuses"),
    "InvalidBlockDeviceMapping": (CONFIGURATION, "the launch template's block device mapping is invalid"),
    "UnauthorizedOperation": (CONFIGURATION, "the Auto Scaling service-linked role may not launch this"),
    "Client.InternalError": (CONFIGURATION, "an EBS volume's KMS key cannot be used by the Auto Scaling role"),
    "OptInRequired": (CONFIGURATION, "the account is not subscribed to the service or region"),
}


@dataclasses.dataclass(frozen=True)
class _Sentence:
    """EC2 sentences (all parts must appear) that identify a failure written without its code."""

    parts: tuple[str, ...]
    code: str | None  # the code EC2 gives the same failure when it gives one; None when no source names it
    category: str
    reason: str


#: Sources: the EC2 Auto Scaling User Guide's "Troubleshoot Amazon EC2 Auto Scaling: EC2 instance launch failures"
#: and "...: AMI issues" pages (each sentence, followed by "Launching EC2 instance failed."), and the activities quoted
#: in aws/aws-parallelcluster#1944 (spot), kubernetes/autoscaler#1263 (instance limit),
#: aws-deepracer-community/deepracer-on-the-spot#55 (spot count), PrairieLearn/PrairieLearn#3271 (subnet), the AWS
#: knowledge-center article "lifecycle actions don't complete" (abandoned hooks).
SENTENCES: tuple[_Sentence, ...] = (
    _Sentence(
        ("There is no Spot capacity available that matches your request",),
        "InsufficientInstanceCapacity",
        CAPACITY,
        CODES["InsufficientInstanceCapacity"][1],
    ),
    _Sentence(
        ("We currently do not have sufficient", "capacity in the Availability Zone you requested"),
        "InsufficientInstanceCapacity",
        CAPACITY,
        CODES["InsufficientInstanceCapacity"][1],
    ),
    _Sentence(
        ("is lower than the minimum required Spot request fulfillment price",),
        "SpotMaxPriceTooLow",
        CAPACITY,
        CODES["SpotMaxPriceTooLow"][1],
    ),
    _Sentence(
        ("there isn't enough spare capacity to fulfill your request for Spot Instances",),
        "UnfulfillableCapacity",
        CAPACITY,
        CODES["UnfulfillableCapacity"][1],
    ),
    _Sentence(
        ("Max spot instance count exceeded",),
        "MaxSpotInstanceCountExceeded",
        QUOTA,
        CODES["MaxSpotInstanceCountExceeded"][1],
    ),
    _Sentence(
        ("You have requested more vCPU capacity than your current vCPU limit",),
        "VcpuLimitExceeded",
        QUOTA,
        CODES["VcpuLimitExceeded"][1],
    ),
    _Sentence(
        ("You have requested more instances", "than your current instance limit"),
        "InstanceLimitExceeded",
        QUOTA,
        CODES["InstanceLimitExceeded"][1],
    ),
    _Sentence(("instance(s) are already running",), "InstanceLimitExceeded", QUOTA, CODES["InstanceLimitExceeded"][1]),
    _Sentence(
        ("There are not enough free addresses in subnet",),
        "InsufficientFreeAddressesInSubnet",
        QUOTA,
        CODES["InsufficientFreeAddressesInSubnet"][1],
    ),
    _Sentence(
        ("is not supported in your requested Availability Zone",),
        "Unsupported",
        CONFIGURATION,
        "the instance type is not offered in the zone tried",
    ),
    _Sentence(
        ("The requested configuration is currently not supported",),
        "Unsupported",
        CONFIGURATION,
        CODES["Unsupported"][1],
    ),
    _Sentence(
        ("The requested Availability Zone is no longer supported",),
        "Unsupported",
        CONFIGURATION,
        "the zone tried no longer accepts this request",
    ),
    _Sentence(
        ("The image id '[", "]' does not exist"),
        "InvalidAMIID.NotFound",
        CONFIGURATION,
        CODES["InvalidAMIID.NotFound"][1],
    ),
    _Sentence(
        ("The AMI ID", "does not exist"), "InvalidAMIID.NotFound", CONFIGURATION, CODES["InvalidAMIID.NotFound"][1]
    ),
    _Sentence(("is pending, and cannot be run",), None, CONFIGURATION, "the launch template's AMI is not ready"),
    _Sentence(
        ("does not match the architecture in the manifest for",),
        None,
        CONFIGURATION,
        "the instance type's architecture does not match the AMI's",
    ),
    _Sentence(
        ("for parameter iamInstanceProfile",),
        "InvalidParameterValue",
        CONFIGURATION,
        "the launch template's instance profile is invalid",
    ),
    _Sentence(
        ("The specified launch template, with template", "does not exist"),
        "InvalidLaunchTemplateId.NotFound",
        CONFIGURATION,
        CODES["InvalidLaunchTemplateId.NotFound"][1],
    ),
    _Sentence(
        ("The security group", "does not exist"),
        "InvalidGroup.NotFound",
        CONFIGURATION,
        CODES["InvalidGroup.NotFound"][1],
    ),
    _Sentence(
        ("The key pair", "does not exist"),
        "InvalidKeyPair.NotFound",
        CONFIGURATION,
        CODES["InvalidKeyPair.NotFound"][1],
    ),
    _Sentence(("Client error on launch",), "Client.InternalError", CONFIGURATION, CODES["Client.InternalError"][1]),
    _Sentence(
        ("Placement groups may not be used with instances of type",),
        None,
        CONFIGURATION,
        "the placement group does not take the instance type",
    ),
    _Sentence(("Invalid device name",), None, CONFIGURATION, "the launch template's block device name is invalid"),
    _Sentence(
        ("for parameter virtualName is invalid",),
        None,
        CONFIGURATION,
        "the launch template's block device virtual name is invalid",
    ),
    _Sentence(
        ("EBS block device mappings not supported for instance-store AMIs",),
        None,
        CONFIGURATION,
        "the launch template maps EBS volumes on an instance-store AMI",
    ),
    _Sentence(("You are not subscribed to this service",), "OptInRequired", CONFIGURATION, CODES["OptInRequired"][1]),
    _Sentence(
        ("Instance failed to complete user's Lifecycle Action",),
        None,
        CONFIGURATION,
        "a launch lifecycle hook abandoned the instance",
    ),
)


@dataclasses.dataclass(frozen=True)
class LaunchFailure:
    """A failed launch: its category, EC2's code (when it gave one or the sentence identifies it), a short reason,
    and AWS's own message."""

    category: str
    code: str | None
    reason: str
    message: str


def is_failed_launch(activity: Activity) -> bool:
    """A launch that ended Failed, or Cancelled (a lifecycle hook abandoned it)."""
    return activity.status_code in _FAILED_STATUSES and activity.description.startswith(_LAUNCH)


def _message(activity: Activity) -> str:
    if activity.status_message:
        return activity.status_message
    description = activity.description
    index = description.find(_STATUS_REASON)
    return description[index + len(_STATUS_REASON) :] if index >= 0 else description


def _by_sentence(text: str) -> _Sentence | None:
    return next((s for s in SENTENCES if all(part in text for part in s.parts)), None)


def classify(activity: Activity) -> LaunchFailure | None:
    """What the failed launch ``activity`` means; None when it is not a failed (or abandoned) launch.

    Looks at the StatusMessage (else the Description's "Status Reason"), never at the Cause (which speaks of
    "increasing the capacity" for every launch)."""
    if not is_failed_launch(activity):
        return None
    message = _message(activity)
    coded = _CODED.search(message) or _PREFIXED.search(message)
    code = coded.group("code") if coded else None
    if code is not None and code in CODES:
        category, reason = CODES[code]
        return LaunchFailure(category, code, reason, message)
    sentence = _by_sentence(message)
    if sentence is not None:
        return LaunchFailure(sentence.category, code or sentence.code, sentence.reason, message)
    reason = f"EC2 error {code}" if code else "the launch failed for a reason Spot Guard does not know"
    return LaunchFailure(UNKNOWN, code, reason, message)
