"""The thin AWS layer: the Auto Scaling calls Spot Guard makes, and error classification by code.

Nothing here decides anything; it calls, retries what AWS says is retryable (throttling) with
backoff and jitter, and turns botocore errors into ``AwsError`` with the AWS error code kept.

Capacity-changing calls are fenced (the Lease check of the election module) so that none reaches AWS after a
standby may have taken the Lease over. The time budget of such a call is explicit (``CallBudget``):

1. credentials: refreshed first, when they are due (an STS call that may take seconds);
2. the fence, with ``fence_margin`` seconds to spare before the Lease could be taken over;
3. botocore signs the request (with the credentials of step 1) and, just before it connects, emits
   ``before-send``: the fence is checked there again, so whatever the SDK did in between (a credential refresh
   of its own included) cannot push the request past the Lease;
4. connecting (TCP and TLS) and writing the request: each bounded by ``connect_timeout`` (urllib3 applies it to
   every socket operation until the request is written), so the request is on its way to AWS within
   ``request_window`` = 2 x connect_timeout of the last fence check, which ``fence_margin`` must exceed;
5. the answer: ``read_timeout``. The request has reached AWS by then; a retry passes the fence again.

Not bounded: a DNS lookup of the endpoint, which happens only when no pooled connection is open (the controller's
regular reads keep one open).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from controller.fence import FenceCheck, no_fence
from controller.model.asg import Activity, Group, Instance, InstanceRefresh, LifecycleHook, Membership

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


class InvalidCallBudgetError(ValueError):
    """The AWS call timings do not fit the fence; ``field`` names the timing to change."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


#: Seconds of the fence margin kept beyond the request window: the network's transit and the hosts' clock rates.
FENCE_ALLOWANCE = 0.5
#: Operations that change capacity: fenced before the call and again just before the request is sent.
CAPACITY_OPERATIONS = ("SetDesiredCapacity", "TerminateInstanceInAutoScalingGroup")


@dataclasses.dataclass(frozen=True)
class CallBudget:
    """How long an Auto Scaling call may take, in seconds, and the fence margin that must cover it (see the module
    docs). Validated when made, as client-go validates its election timings.

    connect_timeout: TCP and TLS set-up, and again writing the request (urllib3 bounds each by it).
    read_timeout: waiting for AWS's answer once the request is written.
    fence_margin: the election's fence margin (``ElectionConfig.fence_margin``): the fence closes this long
      before a standby may take the Lease over. At least ``request_window`` + ``FENCE_ALLOWANCE``.
    """

    connect_timeout: float = 1.0
    read_timeout: float = 5.0
    fence_margin: float = 3.0

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "fence_margin"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidCallBudgetError(f"{name} must be a positive finite number of seconds, got {value!r}", name)
        if self.fence_margin < self.request_window + FENCE_ALLOWANCE:
            raise InvalidCallBudgetError(
                f"fence_margin ({self.fence_margin:g}s) does not cover a capacity change's request: after the fence "
                f"the request may take up to 2 x connect_timeout ({self.request_window:g}s) to be written, and the "
                f"margin keeps {FENCE_ALLOWANCE:g}s more; fence_margin must be at least "
                f"{self.request_window + FENCE_ALLOWANCE:g}s, or connect_timeout at most "
                f"{(self.fence_margin - FENCE_ALLOWANCE) / 2:g}s",
                "fence_margin",
            )

    @property
    def request_window(self) -> float:
        """Seconds from the last fence check until the request is written: connection set-up, then the write."""
        return 2 * self.connect_timeout


class AutoScaling:
    """Auto Scaling calls with retries; every capacity change is fenced (see the module docs).

    ``credentials`` refreshes the credentials the client signs with if they are due (by default those of the
    boto3 session the client is made from); it runs before the fence of every capacity change.
    """

    def __init__(
        self,
        client: Any = None,
        *,
        fence: FenceCheck = no_fence,
        budget: CallBudget | None = None,
        credentials: Callable[[], object] | None = None,
        max_attempts: int = 5,
        base_backoff: float = 0.2,
        max_backoff: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        on_call: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.budget = budget or CallBudget()
        if client is None:
            session = boto3.session.Session()
            client = session.client(
                "autoscaling",
                config=BotoConfig(
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=self.budget.connect_timeout,
                    read_timeout=self.budget.read_timeout,
                ),
            )
            if credentials is None:
                credentials = _session_credentials(session)
        self.client = client
        self.fence = fence
        self._refresh_credentials = credentials
        # A botocore client: fence again right before the request is sent. The client may be shared (tests hand one
        # to several instances), so the handler acts only on this instance's own calls, on the calling thread.
        self._capacity_call = threading.local()
        events = getattr(getattr(client, "meta", None), "events", None)
        if events is not None:
            for operation in CAPACITY_OPERATIONS:
                events.register(
                    f"before-send.auto-scaling.{operation}",
                    self._fence_before_send,
                    unique_id=f"spotguard-fence-{id(self)}-{operation}",
                )
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
        return {instance: member.group for instance, member in self.memberships(instance_ids).items()}

    def memberships(self, instance_ids: Iterable[str]) -> dict[str, Membership]:
        """instance id -> its group and lifecycle state there, for the instances AWS knows in an ASG."""
        ids = sorted(set(instance_ids))
        mapping: dict[str, Membership] = {}
        for start in range(0, len(ids), 50):
            chunk = ids[start : start + 50]
            response = self._call(
                "DescribeAutoScalingInstances",
                ",".join(chunk),
                lambda chunk=chunk: self.client.describe_auto_scaling_instances(InstanceIds=chunk),  # type: ignore[misc]
            )
            for item in response["AutoScalingInstances"]:
                mapping[item["InstanceId"]] = Membership(item["AutoScalingGroupName"], item.get("LifecycleState", ""))
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

    def instance_refreshes(self, group: str, max_records: int = 5) -> list[InstanceRefresh]:
        """The group's latest instance refreshes, newest first (AWS answers newest first; one page is enough: only
        the newest can be active, AWS runs one refresh per group at a time)."""
        response = self._call(
            "DescribeInstanceRefreshes",
            group,
            lambda: self.client.describe_instance_refreshes(AutoScalingGroupName=group, MaxRecords=max_records),
        )
        return [
            InstanceRefresh(
                refresh_id=r["InstanceRefreshId"],
                group=r.get("AutoScalingGroupName", group),
                status=r.get("Status", ""),
                status_reason=r.get("StatusReason", ""),
            )
            for r in response.get("InstanceRefreshes", [])
        ]

    # -- capacity changes (fenced) ----------------------------------------------------------------
    def capacity_changes(self, group: str) -> tuple[int, int]:
        """A count that moves whenever this process begins or ends a capacity change that may touch ``group``:
        a description of the group read while it stood still is not outdated by this process's own calls."""
        with self._changes_lock:
            return self._changes.get(group, 0), self._terminations

    def set_desired_capacity(self, group: str, desired: int) -> None:
        self._fence("SetDesiredCapacity", group)
        with self._changing(group):
            self._call(
                "SetDesiredCapacity",
                group,
                lambda: self.client.set_desired_capacity(
                    AutoScalingGroupName=group, DesiredCapacity=desired, HonorCooldown=False
                ),
                before_retry=lambda: self._fence("SetDesiredCapacity", group),
            )

    def terminate_instance(self, instance_id: str, decrement: bool = True) -> None:
        """Remove exactly this instance; with ``decrement`` the group's desired capacity drops by one."""
        self._fence("TerminateInstanceInAutoScalingGroup", instance_id)
        with self._changing(None):
            self._call(
                "TerminateInstanceInAutoScalingGroup",
                instance_id,
                lambda: self.client.terminate_instance_in_auto_scaling_group(
                    InstanceId=instance_id, ShouldDecrementDesiredCapacity=decrement
                ),
                before_retry=lambda: self._fence("TerminateInstanceInAutoScalingGroup", instance_id),
            )

    def _fence(self, operation: str, target: str) -> None:
        """Credentials first (a refresh may take seconds), then the fence: never the other way round."""
        if self._refresh_credentials is not None:
            try:
                self._refresh_credentials()
            except (BotoCoreError, ClientError) as exc:
                raise AwsError(
                    operation, type(exc).__name__, f"refreshing the AWS credentials failed: {exc}", target
                ) from exc
        self.fence(operation)

    def _fence_before_send(self, event_name: str = "", **kwargs: Any) -> None:
        """botocore's ``before-send`` handler: the last fence check, after signing and before connecting."""
        if getattr(self._capacity_call, "active", False):
            self.fence(event_name.rsplit(".", 1)[-1] or "a capacity change")

    @contextlib.contextmanager
    def _changing(self, group: str | None) -> Iterator[None]:
        """Count the change once as it begins and once as it ends (answered or not); meanwhile this thread's
        requests are this instance's capacity change (the before-send fence applies to them)."""
        self._count_change(group)
        self._capacity_call.active = True
        try:
            yield
        finally:
            self._capacity_call.active = False
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


def _session_credentials(session: boto3.session.Session) -> Callable[[], object] | None:
    """What refreshes ``session``'s credentials when due (the client signs with the same object), if it has any."""
    found = session.get_credentials()
    if found is None:
        return None
    return found.get_frozen_credentials


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
        pools=_pools(raw),
    )


def _pools(raw: dict[str, Any]) -> int:
    """Instance types (the MixedInstancesPolicy's overrides, else 1) times Availability Zones (at least 1 each)."""
    policy = raw.get("MixedInstancesPolicy") or {}
    overrides = (policy.get("LaunchTemplate") or {}).get("Overrides") or []
    return max(1, len(overrides)) * max(1, len(raw.get("AvailabilityZones") or []))
