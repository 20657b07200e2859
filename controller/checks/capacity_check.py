"""The capacity check, as a pure decision: has a claim's new capacity arrived, must it fall back now,
or should it wait (and until when)?

Success means new instances InService *and* their Nodes Ready, never that a count went up; which new
instances are the claim's is ``controller.checks.arrivals``. A claim falls back early when a launch of the
group that started after the scale-up failed (whatever AWS wrote: a code or only a sentence; its category from
``controller.checks.launch_failures``: capacity, quota, configuration or unknown), or when someone else lowered
the group's desired capacity below what its live instances and open claims need (``short``); otherwise at its
deadline, exactly, unless a launch lifecycle hook holds one of its new instances (``Pending:Wait``): then it waits
as ``controller.checks.launch_hooks`` says (the hook's timeout, capped), and a hook that abandons the launch is a
failed launch. A group with several instance pools gets to try them: capacity failures fall back only once as
many failed as the group has pools (``pools_exhausted``; measured in docs/simulator.md). A group whose Launch
process is suspended launches nothing: the claim falls back at once, reported as the configuration it is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from controller.checks.launch_failures import CAPACITY, CONFIGURATION, LaunchFailure, classify
from controller.checks.launch_hooks import HookWait
from controller.model.asg import Activity, Group

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
    category: str = ""  # of the failed launch that caused it (launch_failures.CAPACITY ...); "" for other causes


@dataclasses.dataclass(frozen=True)
class Wait:
    until_monotonic: float


Decision = Ready | Fallback | Wait


def launch_failures(
    activities: Sequence[Activity], requested_at: dt.datetime, seen_before: dt.datetime | None = None
) -> list[LaunchFailure]:
    """The failed launches that started after the scale-up, classified, newest first.

    ``seen_before`` is the start of the newest activity AWS listed just before the scale-up: anything
    that old or older belongs to an earlier request, however close in time.
    """
    found: list[LaunchFailure] = []
    for activity in activities:  # newest first
        if activity.start_time + ACTIVITY_CLOCK_SKEW < requested_at:
            continue
        if seen_before is not None and activity.start_time <= seen_before:
            continue
        failure = classify(activity)
        if failure is not None:
            found.append(failure)
    return found


def launch_failure(
    activities: Sequence[Activity], requested_at: dt.datetime, seen_before: dt.datetime | None = None
) -> LaunchFailure | None:
    """The newest failed launch that started after the scale-up, classified."""
    found = launch_failures(activities, requested_at, seen_before)
    return found[0] if found else None


def pools_exhausted(failures: Sequence[LaunchFailure], pools: int) -> bool:
    """The pool rule: is it time to fall back on these failed launches of a group with ``pools`` pools?

    Quota, configuration and unknown failures: at once (another pool of the same account and launch template does
    not help). Capacity failures: once the group has had as many of them as it has pools, so every pool has had
    its try (a group with one pool: at the first). Until then the group tries its other pools, as EC2 Auto Scaling
    does (a pool that refused is left alone until the group's retry, so a batch's launches go to the other pools
    rather than failing there once each); the deadline still bounds the wait. Measured in docs/simulator.md
    ("Several pools").
    """
    if not failures:
        return False
    if any(f.category != CAPACITY for f in failures):
        return True
    return len(failures) >= max(1, pools)


def _failure_reason(group_name: str, failure: LaunchFailure) -> str:
    code = f" ({failure.code})" if failure.code else ""
    if failure.category == CONFIGURATION:
        return (
            f"a launch of {group_name} failed on a configuration error{code}: {failure.reason}; AWS wrote: "
            f"{failure.message} -- fix the group or its launch template (spotguard doctor checks it); "
            "nothing launches in it until then"
        )
    return f"a launch of {group_name} failed ({failure.category}{code}): {failure.reason}; AWS wrote: {failure.message}"


def evaluate(
    *,
    wanted: int,
    group_name: str,
    ready: Sequence[str],
    short: int,
    activities: Sequence[Activity],
    requested_at: dt.datetime,
    seen_before: dt.datetime | None = None,
    deadline_monotonic: float,
    now_monotonic: float,
    poll_interval: float,
    held: Sequence[str] = (),
    hooks: HookWait | None = None,
    pools: int = 1,
    launch_suspended: bool = False,
) -> Decision:
    """Decide for one claim of ``wanted`` instances: ``ready`` are its arrived instances that are InService with
    a Ready Node, ``short`` how many of its launches the group's desired capacity no longer covers, ``held`` its
    arrived instances a launch hook holds (Pending:Wait, Pending:Proceed), ``hooks`` the group's launch hooks,
    ``pools`` how many instance pools the group tries before it has tried them all (``pools_exhausted``),
    ``launch_suspended`` whether the group's Launch process is suspended."""
    arrived = tuple(ready)
    if len(arrived) >= wanted:
        return Ready(arrived[:wanted])
    shortfall = wanted - len(arrived)
    if launch_suspended:
        return Fallback(
            reason=f"the Launch process of {group_name} is suspended, so it launches nothing until it is resumed: "
            f"aws autoscaling resume-processes --auto-scaling-group-name {group_name} --scaling-processes Launch "
            "(spotguard doctor checks it)",
            code="LaunchProcessSuspended",
            instances=arrived,
            shortfall=shortfall,
            category=CONFIGURATION,
        )
    failures = launch_failures(activities, requested_at, seen_before)
    if pools_exhausted(failures, pools):
        failure = next((f for f in failures if f.category != CAPACITY), failures[0])
        return Fallback(
            reason=_failure_reason(group_name, failure),
            code=failure.code or f"LaunchFailed.{failure.category}",
            instances=arrived,
            shortfall=shortfall,
            category=failure.category,
        )
    if short > 0:
        return Fallback(
            reason=f"desired capacity of {group_name} was lowered by someone other than Spot Guard: {short} of the "
            "launches Spot Guard asked for are no longer covered",
            code="DesiredCapacityLowered",
            instances=arrived,
            shortfall=shortfall,
        )
    if now_monotonic >= deadline_monotonic and held and hooks is not None and hooks.hooks:
        hook_deadline = deadline_monotonic + hooks.grace
        if now_monotonic < hook_deadline:
            return Wait(min(hook_deadline, now_monotonic + poll_interval))
        return Fallback(
            reason=f"new instance(s) {', '.join(held)} of {group_name} still held by launch lifecycle hook(s) "
            f"{hooks.names()} {hooks.window:.0f}s after the scale-up (the longest Spot Guard waits for a hook): "
            "complete the hook (CompleteLifecycleAction) sooner or lower its heartbeat timeout; spotguard doctor "
            "checks it",
            code="LaunchHookTimeout",
            instances=arrived,
            shortfall=shortfall,
        )
    if now_monotonic >= deadline_monotonic:
        return Fallback(
            reason=f"{shortfall} of {wanted} new instance(s) of {group_name} not InService with a Ready Node "
            "by the capacity-check deadline",
            code="CapacityCheckTimeout",
            instances=arrived,
            shortfall=shortfall,
        )
    return Wait(min(deadline_monotonic, now_monotonic + poll_interval))


def plan_scale_up(group: Group, wanted: int) -> tuple[int, int]:
    """(new desired, how many of ``wanted`` fit under MaxSize). The rest fall back at once."""
    room = max(0, group.max_size - group.desired)
    granted = min(wanted, room)
    return group.desired + granted, granted
