"""Instance refreshes: a rolling replacement of a group's instances, batch by batch.

Follows the EC2 Auto Scaling User Guide, "Replace Auto Scaling instances based on an instance refresh" (how it works,
minimum healthy percentage, instance warmup), "Understand the default values for an instance refresh" (minimum
healthy percentage 90; scale-in protected and standby instances: Wait) and "Check the status of an instance refresh"
(statuses, the "Waiting for instances to warm up" reason): the group takes a batch of instances out of service,
terminates them, launches replacements, waits until they are InService and warmed up, then goes on. A batch is the
share of the group the minimum healthy percentage allows to be out (at least one instance). Protected instances are
replaced (``Refresh``), skipped (``Ignore``) or waited for (``Wait``, the default), and the refresh fails after an
hour of waiting. Suspending InstanceRefresh pauses it ("Suspend and resume a process for an Auto Scaling group").
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from datetime import datetime

from sandbox.aws.activities import aws_time
from sandbox.aws.query_protocol import AwsApiError, elements

PENDING = "Pending"
IN_PROGRESS = "InProgress"
SUCCESSFUL = "Successful"
FAILED = "Failed"
CANCELLING = "Cancelling"
CANCELLED = "Cancelled"
ACTIVE = (PENDING, IN_PROGRESS, CANCELLING)

WAIT = "Wait"
IGNORE = "Ignore"
REFRESH = "Refresh"
PROTECTED_WAIT_SECONDS = 3600  # "One-hour timeout" in the guide's Limitations


@dataclasses.dataclass(frozen=True)
class Preferences:
    min_healthy_percentage: int = 90
    instance_warmup: int | None = None  # None: the group's health check grace period, as AWS defaults it
    skip_matching: bool = False
    scale_in_protected_instances: str = WAIT
    standby_instances: str = WAIT

    @classmethod
    def from_params(cls, params: dict[str, str]) -> Preferences:
        """From the query parameters of StartInstanceRefresh (``Preferences.MinHealthyPercentage``, ...); a bad value
        is a ValidationError naming the parameter."""

        def integer(name: str, default: int | None, low: int, high: int) -> int | None:
            raw = params.get(f"Preferences.{name}")
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise AwsApiError("ValidationError", f"Preferences.{name} must be an integer, got {raw!r}") from None
            if not low <= value <= high:
                raise AwsApiError("ValidationError", f"Preferences.{name} must be between {low} and {high}")
            return value

        protected = params.get("Preferences.ScaleInProtectedInstances", WAIT)
        if protected not in (WAIT, IGNORE, REFRESH):
            raise AwsApiError(
                "ValidationError",
                f"Preferences.ScaleInProtectedInstances must be Refresh, Ignore or Wait, got {protected!r}",
            )
        return cls(
            min_healthy_percentage=integer("MinHealthyPercentage", 90, 0, 100) or 0,
            instance_warmup=integer("InstanceWarmup", None, 0, 3600 * 24),
            skip_matching=params.get("Preferences.SkipMatching", "false").lower() == "true",
            scale_in_protected_instances=protected,
            standby_instances=params.get("Preferences.StandbyInstances", WAIT),
        )

    def batch_size(self, desired: int) -> int:
        """How many instances may be out of service at once: (100 - minimum healthy)% of desired, at least one."""
        return max(1, math.floor(desired * (100 - self.min_healthy_percentage) / 100))


@dataclasses.dataclass
class InstanceRefresh:
    group_name: str
    preferences: Preferences
    start_time: datetime
    to_replace: list[str]
    total: int
    warmup_seconds: int
    refresh_id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    status: str = PENDING
    status_reason: str | None = None
    end_time: datetime | None = None
    in_flight: set[str] = dataclasses.field(default_factory=set)
    replaced: int = 0
    warm_until: datetime | None = None
    waiting_since: datetime | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def percentage_complete(self) -> int:
        if self.status == SUCCESSFUL or self.total == 0:
            return 100 if self.status == SUCCESSFUL else 0
        return math.floor(100 * self.replaced / self.total)

    def finish(self, status: str, now: datetime, reason: str | None = None) -> None:
        self.status = status
        self.end_time = now
        self.status_reason = reason
        self.warm_until = None

    def to_xml(self) -> str:
        preferences = elements(
            {
                "MinHealthyPercentage": self.preferences.min_healthy_percentage,
                "InstanceWarmup": self.warmup_seconds,
                "SkipMatching": self.preferences.skip_matching,
                "ScaleInProtectedInstances": self.preferences.scale_in_protected_instances,
                "StandbyInstances": self.preferences.standby_instances,
            }
        )
        return (
            elements(
                {
                    "InstanceRefreshId": self.refresh_id,
                    "AutoScalingGroupName": self.group_name,
                    "Status": self.status,
                    "StatusReason": self.status_reason,
                    "StartTime": aws_time(self.start_time),
                    "EndTime": aws_time(self.end_time) if self.end_time else None,
                    "PercentageComplete": self.percentage_complete,
                    "InstancesToUpdate": len(self.to_replace) + len(self.in_flight),
                }
            )
            + f"<Preferences>{preferences}</Preferences>"
        )
