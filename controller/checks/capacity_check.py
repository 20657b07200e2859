"""The capacity check, as a pure decision: has a batch's new capacity arrived, must it fall back now,
or should it wait (and until when)?

Success means new instances InService *and* their Nodes Ready, never that a count went up. A batch
falls back early when a scaling activity of the group that started after the scale-up failed with
a capacity code, or when the group cannot grow (MaxSize); otherwise at its deadline, exactly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Sequence

from controller.model.asg import IN_SERVICE, Activity, Group

# Activities are stamped by AWS's clock and the scale-up by ours: allow this much skew.
ACTIVITY_CLOCK_SKEW = dt.timedelta(seconds=5)


@dataclasses.dataclass(frozen=True)
class Ready:
    """Replacement instances for the batch's nodes, in the batch's order."""

    instances: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Fallback:
    """Fall back for ``shortfall`` nodes; ``instances`` are the ones that did arrive (partial success)."""

    reason: str
    code: str
    instances: tuple[str, ...]
    shortfall: int


@dataclasses.dataclass(frozen=True)
class Wait:
    until_monotonic: float


Decision = Ready | Fallback | Wait


def new_ready_instances(group: Group, known: Collection[str], ready_instance_ids: Collection[str]) -> list[str]:
    """Instances that were not in the group before the scale-up, InService, with a Ready Node."""
    return sorted(
        i.instance_id
        for i in group.instances
        if i.instance_id not in known and i.lifecycle_state == IN_SERVICE and i.instance_id in ready_instance_ids
    )


def capacity_failure(
    activities: Sequence[Activity], requested_at: dt.datetime, seen_before: dt.datetime | None = None
) -> Activity | None:
    """The newest Failed activity with a capacity code that started after the scale-up.

    ``seen_before`` is the start of the newest activity AWS listed just before the scale-up: anything
    that old or older belongs to an earlier request, however close in time.
    """
    for activity in activities:  # newest first
        if activity.start_time + ACTIVITY_CLOCK_SKEW < requested_at:
            continue
        if seen_before is not None and activity.start_time <= seen_before:
            continue
        if activity.capacity_code():
            return activity
    return None


def evaluate(
    *,
    wanted: int,
    group: Group,
    known: Collection[str],
    ready_instance_ids: Collection[str],
    activities: Sequence[Activity],
    requested_at: dt.datetime,
    seen_before: dt.datetime | None = None,
    deadline_monotonic: float,
    now_monotonic: float,
    poll_interval: float,
    target: int,
) -> Decision:
    """Decide for one batch of ``wanted`` nodes whose scale-up set desired capacity to ``target``."""
    arrived = new_ready_instances(group, known, ready_instance_ids)
    if len(arrived) >= wanted:
        return Ready(tuple(arrived[:wanted]))
    shortfall = wanted - len(arrived)
    failure = capacity_failure(activities, requested_at, seen_before)
    if failure is not None:
        code = failure.capacity_code() or ""
        detail = failure.status_message or failure.description
        return Fallback(
            reason=f"scaling activity of {group.name} failed with {code}: {detail}",
            code=code,
            instances=tuple(arrived),
            shortfall=shortfall,
        )
    if group.desired < target:
        # Someone (or AWS) lowered desired below our target: the increase will not be fulfilled.
        return Fallback(
            reason=f"{group.name} desired capacity is {group.desired}, below the {target} Spot Guard set",
            code="DesiredCapacityLowered",
            instances=tuple(arrived),
            shortfall=shortfall,
        )
    if now_monotonic >= deadline_monotonic:
        return Fallback(
            reason=f"{shortfall} of {wanted} new instance(s) of {group.name} not InService with a Ready Node "
            "by the capacity-check deadline",
            code="CapacityCheckTimeout",
            instances=tuple(arrived),
            shortfall=shortfall,
        )
    return Wait(min(deadline_monotonic, now_monotonic + poll_interval))


def plan_scale_up(group: Group, wanted: int) -> tuple[int, int]:
    """(new desired, how many of ``wanted`` fit under MaxSize). The rest fall back at once."""
    room = max(0, group.max_size - group.desired)
    granted = min(wanted, room)
    return group.desired + granted, granted
