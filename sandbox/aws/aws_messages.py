"""The texts real EC2 Auto Scaling puts in errors and scaling activities (failed launches: sandbox.aws.launch_errors).

Each text is written from AWS's documented and commonly logged wording, its source named; where AWS's exact wording
is not certain the docstring says so.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime


def aws_timestamp(moment: datetime) -> str:
    """The `2025-01-15T10:00:30Z` form AWS uses inside activity causes."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def failed_launch_description(status_message: str) -> str:
    """Description of a Failed launch activity (AWS puts two spaces before 'Status Reason')."""
    return f"Launching a new EC2 instance.  Status Reason: {status_message}"


def launch_description(instance_id: str) -> str:
    return f"Launching a new EC2 instance: {instance_id}"


def terminate_description(instance_id: str) -> str:
    return f"Terminating EC2 instance: {instance_id}"


def desired_set_by_user(moment: datetime, old: int, new: int) -> str:
    """The first sentence of a cause when SetDesiredCapacity changed the group."""
    return (
        f"At {aws_timestamp(moment)} a user request explicitly set group desired capacity changing the desired "
        f"capacity from {old} to {new}."
    )


def desired_updated_by_user(moment: datetime, min_size: int, max_size: int, old: int, new: int) -> str:
    """The first sentence of a cause when UpdateAutoScalingGroup (or another moto path) changed desired."""
    return (
        f"At {aws_timestamp(moment)} a user request update of AutoScalingGroup constraints to min: {min_size}, "
        f"max: {max_size}, desired: {new} changing the desired capacity from {old} to {new}."
    )


def group_created_by_user(moment: datetime, desired: int) -> str:
    """First sentence of the causes of a new group's first launches (the User Guide's "Troubleshoot Amazon EC2 Auto
    Scaling" example)."""
    return (
        f"At {aws_timestamp(moment)} a user request created an AutoScalingGroup changing the desired capacity from 0 "
        f"to {desired}."
    )


def launch_cause(moment: datetime, actual: int, desired: int) -> str:
    return (
        f"At {aws_timestamp(moment)} an instance was started in response to a difference between desired and "
        f"actual capacity, increasing the capacity from {actual} to {desired}."
    )


def scale_in_cause(moment: datetime, actual: int, desired: int, instance_id: str) -> str:
    stamp = aws_timestamp(moment)
    return (
        f"At {stamp} an instance was taken out of service in response to a difference between desired and "
        f"actual capacity, shrinking the capacity from {actual} to {desired}.  At {stamp} instance {instance_id} "
        "was selected for termination."
    )


def user_terminate_cause(moment: datetime, instance_id: str, old_desired: int, new_desired: int) -> str:
    """Cause of the activity TerminateInstanceInAutoScalingGroup starts."""
    cause = f"At {aws_timestamp(moment)} instance {instance_id} was taken out of service in response to a user request"
    if new_desired < old_desired:
        return f"{cause}, shrinking the capacity from {old_desired} to {new_desired}."
    return f"{cause}."


def health_check_terminate_cause(moment: datetime, instance_id: str) -> str:
    """Cause recorded when an instance vanished from the group without the group terminating it."""
    return (
        f"At {aws_timestamp(moment)} an instance was taken out of service in response to an EC2 health check "
        f"indicating it has been terminated or stopped.  Instance {instance_id} is no longer in the group."
    )


def detach_description(instance_id: str) -> str:
    return f"Detaching EC2 instance: {instance_id}"


def detach_cause(moment: datetime, instance_id: str) -> str:
    return f"At {aws_timestamp(moment)} instance {instance_id} was detached in response to a user request."


def rebalance_launched_cause(moment: datetime, zones: Sequence[str]) -> str:
    """First sentence of the causes while an AZRebalance launch is in the group (the two spaces are AWS's):
    PrairieLearn/PrairieLearn issue 3271, spacelift-io/terraform-aws-spacelift-workerpool-on-ec2 PR 97."""
    return (
        f"At {aws_timestamp(moment)} instances were launched to balance instances in zones  {' '.join(zones)} with "
        "other zones resulting in more than desired number of instances in the group."
    )


def rebalance_launch_cause(moment: datetime, load: Mapping[str, int]) -> str:
    """Cause of the AZRebalance launch itself (PrairieLearn/PrairieLearn issue 3271)."""
    zones = " ".join(load)
    counts = " ".join(str(n) for n in load.values())
    return (
        f"At {aws_timestamp(moment)} availability zones  {zones} had  {counts} instances respectively. An instance was "
        "launched to aid in balancing the group's zones."
    )


def instance_refresh_cause(moment: datetime, instance_id: str) -> str:
    """Cause of an instance refresh's termination. Wording by analogy with the scale-in cause; no public source
    quotes it whole (the User Guide's "Check the status of an instance refresh" only says the terminations and
    launches appear in the activity history)."""
    stamp = aws_timestamp(moment)
    return (
        f"At {stamp} an instance was taken out of service in response to an instance refresh.  At {stamp} instance "
        f"{instance_id} was selected for termination."
    )


def lifecycle_abandoned(token: str, timed_out: bool) -> str:
    """StatusMessage of a launch a lifecycle hook abandoned (StatusCode Cancelled): the User Guide's
    "Troubleshoot Amazon EC2 Auto Scaling" example and the knowledge-center article "lifecycle actions don't complete"
    (both endings)."""
    ending = "Heartbeat Timeout" if timed_out else "Lifecycle Action Completed with ABANDON Result"
    return (
        f"Instance failed to complete user's Lifecycle Action: Lifecycle Action with token {token} was abandoned: "
        f"{ending}"
    )


def status_reason_description(description: str, status_message: str) -> str:
    """An activity's description once it ended with a reason (AWS puts two spaces before 'Status Reason')."""
    return f"{description}.  Status Reason: {status_message}"


def join_causes(*sentences: str | None) -> str:
    """AWS separates the sentences of a cause with two spaces."""
    return "  ".join(s for s in sentences if s)


# ---- API error messages (ValidationError unless noted) ----


def group_not_found_for_set_desired() -> str:
    """SetDesiredCapacity on a missing group: AWS answers with this literal `null` (widely seen in SDK logs)."""
    return "AutoScalingGroup name not found - null"


def desired_above_max(desired: int, max_size: int) -> str:
    return f"New SetDesiredCapacity value {desired} is above max value {max_size} for the AutoScalingGroup."


def desired_below_min(desired: int, min_size: int) -> str:
    return f"New SetDesiredCapacity value {desired} is below min value {min_size} for the AutoScalingGroup."


def instance_not_managed(instance_id: str) -> str:
    """TerminateInstanceInAutoScalingGroup for an instance in no group."""
    return f"Instance Id not found - No managed instance found for instance ID: {instance_id}"


def decrement_below_min(min_size: int) -> str:
    """TerminateInstanceInAutoScalingGroup(ShouldDecrementDesiredCapacity=True) when desired already equals min."""
    return (
        f"Currently, desiredSize equals minSize ({min_size}). Terminating instance without replacement will violate "
        "group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or lower group's "
        "min size."
    )


def scaling_activity_in_progress(activity_id: str) -> str:
    """Code ScalingActivityInProgress."""
    return f"Scaling activity {activity_id} is in progress and blocks this action."


def no_active_lifecycle_action(instance_id: str | None, token: str | None) -> str:
    """CompleteLifecycleAction/RecordLifecycleActionHeartbeat with nothing waiting (ValidationError):
    convox/rack issue 2432, spacelift-io/terraform-aws-spacelift-workerpool-on-ec2 PR 197."""
    if token:
        return f"No active Lifecycle Action found with token {token}"
    return f"No active Lifecycle Action found with instance ID {instance_id}"


def invalid_lifecycle_result(result: str) -> str:
    return f"LifecycleActionResult must be CONTINUE or ABANDON, got {result!r}"


def instance_refresh_in_progress() -> str:
    """Code InstanceRefreshInProgress: the API Reference's description of the error (StartInstanceRefresh)."""
    return "The request failed because an active instance refresh already exists for the specified Auto Scaling group."


def no_active_instance_refresh(group_name: str) -> str:
    """Code ActiveInstanceRefreshNotFound: the API Reference's description of the error (CancelInstanceRefresh)."""
    return (
        "The request failed because an active instance refresh or rollback for the specified Auto Scaling group "
        f"{group_name} was not found."
    )


def group_not_found(group_name: str) -> str:
    return f"AutoScalingGroup name not found - AutoScalingGroup {group_name} not found"


THROTTLING = "Rate exceeded"
RESOURCE_CONTENTION = (
    "You already have a pending update to an Auto Scaling resource (for example, a group, instance, or load balancer)."
)


def access_denied(operation: str, resource_arn: str, account_id: str = "123456789012") -> str:
    """Code AccessDenied, HTTP 403; the principal is the sandbox's stand-in role."""
    return (
        f"User: arn:aws:sts::{account_id}:assumed-role/spotguard-controller/botocore-session is not authorized to "
        f"perform: autoscaling:{operation} on resource: {resource_arn} because no identity-based policy allows the "
        f"autoscaling:{operation} action"
    )


def invalid_next_token() -> str:
    return "The token provided is invalid. Please provide a valid token."


def max_records_out_of_range(value: int) -> str:
    return (
        f"1 validation error detected: Value '{value}' at 'maxRecords' failed to satisfy constraint: Member must "
        "have value less than or equal to 100"
    )


# HTTP status AWS answers with, by error code (everything else: 400).
ERROR_HTTP_STATUS = {
    "AccessDenied": 403,
    "AccessDeniedException": 403,
    "InternalFailure": 500,
    "ServiceUnavailable": 503,
}


_FIXED_MESSAGES = {
    "Throttling": THROTTLING,
    "ResourceContention": RESOURCE_CONTENTION,
    "InternalFailure": "An internal error has occurred. Please try your request again.",
    "ServiceUnavailable": "Service is unavailable. Please try again later.",
}


def default_error_message(code: str, operation: str, resource_arn: str | None, account_id: str) -> str | None:
    """AWS's usual message for an error code, when one does not depend on the request; None if it does."""
    if code == "ScalingActivityInProgress":
        return scaling_activity_in_progress(str(uuid.uuid4()))
    if code in ("AccessDenied", "AccessDeniedException"):
        return access_denied(operation, resource_arn or "*", account_id)
    return _FIXED_MESSAGES.get(code)
