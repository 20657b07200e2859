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
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from sandbox.aws.activities import aws_time
from sandbox.aws.query_protocol import AwsApiError, elements

PENDING = "Pending"
IN_PROGRESS = "InProgress"
SUCCESSFUL = "Successful"
FAILED = "Failed"
CANCELLING = "Cancelling"
CANCELLED = "Cancelled"
ACTIVE = (PENDING, IN_PROGRESS, CANCELLING)

# Processes whose suspension pauses a refresh ("Suspend and resume a process for an Auto Scaling group").
PAUSING_PROCESSES = frozenset({"InstanceRefresh", "Launch", "Terminate"})
IN_SERVICE = "InService"

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


class Member(Protocol):
    """What a refresh looks at of an instance of the group."""

    @property
    def instance_id(self) -> str: ...

    @property
    def lifecycle(self) -> str: ...

    @property
    def protected(self) -> bool: ...

    @property
    def launched_at(self) -> datetime: ...


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

    def step(
        self,
        *,
        now: datetime,
        desired: int,
        counted: Mapping[str, Member],
        leaving: Collection[str],
        suspended: Collection[str],
    ) -> list[str]:
        """Move the refresh on: the instances to terminate now (the next batch), if any. ``counted`` are the group's
        instances that count toward its capacity, ``leaving`` the ones being terminated."""
        if self.status == PENDING:
            self.status = IN_PROGRESS
        paused_by = sorted(PAUSING_PROCESSES.intersection(suspended))
        if paused_by:
            self.status_reason = f"Paused: the group's {', '.join(paused_by)} process is suspended."
            return []
        if self.in_flight and not self._batch_done(now, desired, counted, leaving):
            return []
        self.to_replace = [i for i in self.to_replace if i in counted]
        if not self.to_replace:
            self.replaced = self.total
            self.finish(SUCCESSFUL, now)
            return []
        movable = [
            i
            for i in self.to_replace
            if not counted[i].protected or self.preferences.scale_in_protected_instances == REFRESH
        ]
        if not movable:
            self.waiting_since = self.waiting_since or now
            if (now - self.waiting_since).total_seconds() >= PROTECTED_WAIT_SECONDS:
                self.finish(FAILED, now, "Instances protected from scale in were not released within an hour.")
            else:
                self.status_reason = (
                    f"Waiting for {len(self.to_replace)} instance(s) protected from scale in to be released."
                )
            return []
        self.waiting_since = None
        batch = movable[: self.preferences.batch_size(desired)]
        for instance_id in batch:
            self.to_replace.remove(instance_id)
            self.in_flight.add(instance_id)
            self.replaced += 1
        self.status_reason = None
        return batch

    def _batch_done(self, now: datetime, desired: int, counted: Mapping[str, Member], leaving: Collection[str]) -> bool:
        """The batch in flight is gone, its replacements are InService and warmed up."""
        booting = [m for m in counted.values() if m.lifecycle != IN_SERVICE]
        if len(counted) < desired or booting or any(i in leaving or i in counted for i in self.in_flight):
            self.status_reason = "Waiting for the replacement instances to be InService."
            return False
        if self.warm_until is None:
            self.warm_until = now + timedelta(seconds=self.warmup_seconds)
        if now < self.warm_until:
            newest = max(counted.values(), key=lambda m: m.launched_at)
            self.status_reason = (
                f"Waiting for instances to warm up before continuing. For example: {newest.instance_id} is warming up."
            )
            return False
        self.in_flight.clear()
        self.warm_until = None
        return True
