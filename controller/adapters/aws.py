"""The thin AWS layer: the Auto Scaling calls Spot Guard makes, and error classification by code.

Nothing here decides anything; it calls, retries what AWS says is retryable (throttling) with
backoff and jitter, and turns botocore errors into ``AwsError`` with the AWS error code kept.
Capacity-changing calls go through ``fence`` first (the Lease check of the election module).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from controller.fence import FenceCheck, no_fence
from controller.model.asg import Activity, Group, Instance, LifecycleHook

log = logging.getLogger(__name__)

T = TypeVar("T")

THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"})
#: Retried a few times too: another activity or writer holds the group for a moment.
CONTENTION_CODES = frozenset({"ScalingActivityInProgress", "ResourceContention"})
ACCESS_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})


class AwsError(RuntimeError):
    """An AWS call failed; ``code`` is AWS's error code (or a local one for transport errors)."""

    def __init__(self, operation: str, code: str, message: str, target: str = "") -> None:
        where = f" on {target}" if target else ""
        super().__init__(f"{operation}{where} failed: {code}: {message}")
        self.operation = operation
        self.code = code
        self.aws_message = message
        self.target = target

    @property
    def access_denied(self) -> bool:
        return self.code in ACCESS_CODES


class AutoScaling:
    """Auto Scaling calls with retries; ``fence(operation)`` runs before every capacity change."""

    def __init__(
        self,
        client: Any = None,
        *,
        fence: FenceCheck = no_fence,
        max_attempts: int = 5,
        base_backoff: float = 0.2,
        max_backoff: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        on_call: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.client = client or boto3.client(
            "autoscaling",
            config=BotoConfig(
                retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=10
            ),
        )
        self.fence = fence
        self.max_attempts = max_attempts
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.on_call = on_call
        # Capacity changes this process began or ended, per group (SetDesiredCapacity) and in all (terminations,
        # whose group the call does not name): a read of a group is current only while its count stands still.
        self._changes: dict[str, int] = {}
        self._terminations = 0
        self._changes_lock = threading.Lock()

    # -- reads ------------------------------------------------------------------------------------
    def describe_groups(self, names: Sequence[str]) -> dict[str, Group]:
        groups: dict[str, Group] = {}
        if not names:
            return groups
        pages = self._call(
            "DescribeAutoScalingGroups",
            ",".join(names),
            lambda: list(
                self.client.get_paginator("describe_auto_scaling_groups").paginate(AutoScalingGroupNames=list(names))
            ),
        )
        for page in pages:
            for raw in page["AutoScalingGroups"]:
                group = _group(raw)
                groups[group.name] = group
        return groups

    def tagged_groups(self, tag_key: str) -> dict[str, Group]:
        """Every group carrying the tag ``tag_key`` (whatever its value)."""
        pages = self._call(
            "DescribeAutoScalingGroups",
            f"tag-key={tag_key}",
            lambda: list(
                self.client.get_paginator("describe_auto_scaling_groups").paginate(
                    Filters=[{"Name": "tag-key", "Values": [tag_key]}]
                )
            ),
        )
        return {g.name: g for g in (_group(raw) for page in pages for raw in page["AutoScalingGroups"])}

    def group_of_instances(self, instance_ids: Iterable[str]) -> dict[str, str]:
        """instance id -> ASG name, for the instances AWS knows in an ASG."""
        ids = sorted(set(instance_ids))
        mapping: dict[str, str] = {}
        for start in range(0, len(ids), 50):
            chunk = ids[start : start + 50]
            response = self._call(
                "DescribeAutoScalingInstances",
                ",".join(chunk),
                lambda chunk=chunk: self.client.describe_auto_scaling_instances(InstanceIds=chunk),  # type: ignore[misc]
            )
            for item in response["AutoScalingInstances"]:
                mapping[item["InstanceId"]] = item["AutoScalingGroupName"]
        return mapping

    def activities(self, group: str, max_records: int = 20) -> list[Activity]:
        """The group's scaling activities, newest first."""
        response = self._call(
            "DescribeScalingActivities",
            group,
            lambda: self.client.describe_scaling_activities(AutoScalingGroupName=group, MaxRecords=max_records),
        )
        activities = [
            Activity(
                activity_id=a["ActivityId"],
                status_code=a.get("StatusCode", ""),
                status_message=a.get("StatusMessage", ""),
                description=a.get("Description", ""),
                cause=a.get("Cause", ""),
                start_time=a["StartTime"],
            )
            for a in response["Activities"]
        ]
        activities.sort(key=lambda a: a.start_time, reverse=True)
        return activities

    def lifecycle_hooks(self, group: str) -> list[LifecycleHook]:
        """The group's lifecycle hooks (AWS fills in HeartbeatTimeout 3600 and DefaultResult ABANDON when unset)."""
        response = self._call(
            "DescribeLifecycleHooks",
            group,
            lambda: self.client.describe_lifecycle_hooks(AutoScalingGroupName=group),
        )
        return [
            LifecycleHook(
                name=h["LifecycleHookName"],
                transition=h.get("LifecycleTransition", ""),
                heartbeat_timeout=int(h.get("HeartbeatTimeout", 3600)),
                default_result=h.get("DefaultResult", "ABANDON"),
            )
            for h in response.get("LifecycleHooks", [])
        ]

    # -- capacity changes (fenced) ----------------------------------------------------------------
    def capacity_changes(self, group: str) -> tuple[int, int]:
        """A count that moves whenever this process begins or ends a capacity change that may touch ``group``:
        a description of the group read while it stood still is not outdated by this process's own calls."""
        with self._changes_lock:
            return self._changes.get(group, 0), self._terminations

    def set_desired_capacity(self, group: str, desired: int) -> None:
        self.fence("SetDesiredCapacity")
        with self._changing(group):
            self._call(
                "SetDesiredCapacity",
                group,
                lambda: self.client.set_desired_capacity(
                    AutoScalingGroupName=group, DesiredCapacity=desired, HonorCooldown=False
                ),
                before_retry=lambda: self.fence("SetDesiredCapacity"),
            )

    def terminate_instance(self, instance_id: str, decrement: bool = True) -> None:
        """Remove exactly this instance; with ``decrement`` the group's desired capacity drops by one."""
        self.fence("TerminateInstanceInAutoScalingGroup")
        with self._changing(None):
            self._call(
                "TerminateInstanceInAutoScalingGroup",
                instance_id,
                lambda: self.client.terminate_instance_in_auto_scaling_group(
                    InstanceId=instance_id, ShouldDecrementDesiredCapacity=decrement
                ),
                before_retry=lambda: self.fence("TerminateInstanceInAutoScalingGroup"),
            )

    @contextlib.contextmanager
    def _changing(self, group: str | None) -> Iterator[None]:
        """Count the change once as it begins and once as it ends (answered or not)."""
        self._count_change(group)
        try:
            yield
        finally:
            self._count_change(group)

    def _count_change(self, group: str | None) -> None:
        with self._changes_lock:
            if group is None:
                self._terminations += 1
            else:
                self._changes[group] = self._changes.get(group, 0) + 1

    # -- plumbing ---------------------------------------------------------------------------------
    def _call(
        self,
        operation: str,
        target: str,
        call: Callable[[], T],
        before_retry: Callable[[], None] | None = None,
    ) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                result = call()
            except ClientError as exc:
                error = exc.response.get("Error", {})
                failure = AwsError(operation, str(error.get("Code", "Unknown")), str(error.get("Message", "")), target)
            except BotoCoreError as exc:
                failure = AwsError(operation, type(exc).__name__, str(exc), target)
            else:
                if self.on_call:
                    self.on_call(operation, None)
                return result
            if self.on_call:
                self.on_call(operation, failure.code)
            retryable = (
                failure.code in THROTTLING_CODES
                or failure.code in CONTENTION_CODES
                or (failure.code in {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"})
            )
            if not retryable or attempt >= self.max_attempts:
                raise failure
            delay = min(self.max_backoff, self.base_backoff * 2 ** (attempt - 1))
            delay = random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not cryptography
            log.warning(
                "%s on %s: %s (attempt %d of %d); retrying in %.2fs",
                operation,
                target,
                failure.code,
                attempt,
                self.max_attempts,
                delay,
            )
            self.sleep(delay)
            if before_retry:
                before_retry()


def _group(raw: dict[str, Any]) -> Group:
    return Group(
        name=raw["AutoScalingGroupName"],
        desired=int(raw["DesiredCapacity"]),
        min_size=int(raw["MinSize"]),
        max_size=int(raw["MaxSize"]),
        capacity_rebalance=bool(raw.get("CapacityRebalance", False)),
        instances=tuple(
            Instance(
                instance_id=i["InstanceId"],
                lifecycle_state=i["LifecycleState"],
                availability_zone=i.get("AvailabilityZone", ""),
                instance_type=i.get("InstanceType", ""),
            )
            for i in raw.get("Instances", [])
        ),
        tags={t["Key"]: t["Value"] for t in raw.get("Tags", [])},
        suspended_processes=frozenset(p["ProcessName"] for p in raw.get("SuspendedProcesses", [])),
        new_instances_protected=bool(raw.get("NewInstancesProtectedFromScaleIn", False)),
    )
