"""An instance Spot Guard meant to terminate with decrement left its group another way: what the group owes back.

Spot Guard retires an old spot node by terminating exactly its instance with ``ShouldDecrementDesiredCapacity``, so
the group shrinks by the one its replacement added. But the instance may be gone first: EC2 reclaims an interrupted
spot instance two minutes after the notice ("Spot Instance interruptions", EC2 User Guide), an instance refresh
terminates it in a batch, a health check replaces it. None of those lowers desired capacity: the group launches
an instance in its place ("Health checks for instances in an Auto Scaling group": an unhealthy or terminated
instance is replaced; ``TerminateInstanceInAutoScalingGroup``, API Reference: without the decrement "Amazon EC2 Auto
Scaling launches instances to replace the ones that are terminated"). Left alone, the group stays one above where it
was, for good.

AWS's own record says which happened. The termination's scaling activity ("Terminating EC2 instance: i-...") has a
cause that ends "shrinking the capacity from N to N-1" when desired capacity was lowered with it (a user request
with the decrement: Spot Guard's own, perhaps a predecessor's that crashed before writing it down) and no such clause
when it was not ("...in response to an EC2 health check indicating it has been terminated or stopped", "...in
response to an instance refresh"). Its launch activities name each instance ("Launching a new EC2 instance: i-...").

The rule (one snapshot: the group with its claims, its activities newest first, the instances bound to nodes):

* termination not among the activities read -> UNKNOWN: nothing is done (never guess which instance to remove);
* termination lowered desired capacity -> NOTHING owed;
* else the group owes one instance back. The first instance launched after that termination which is still live and
  which no open claim took and no node's record holds is the one launched in its place -> TERMINATE exactly it
  (drained, with decrement), never a lower desired capacity that lets the termination policy choose;
* nothing launched in its place yet while the group still owes a launch (desired above its live instances and open
  claims): if a launch failed since the termination the group cannot launch now -> LOWER desired capacity by one
  (nothing to choose from: as a give-back lowers it only for launches that never happened); else WAIT for the launch;
* nothing launched in its place and no launch owed -> NOTHING (someone else already lowered desired capacity).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection, Sequence

from controller.checks.arrivals import GroupClaims, live_instances
from controller.checks.spot_health import TERMINATION
from controller.model.asg import Activity

#: How EC2 Auto Scaling describes a termination activity and a launch activity of one instance.
TERMINATING = f"{TERMINATION}: "
LAUNCHING = "Launching a new EC2 instance: "
#: The clause AWS writes in a termination's cause when desired capacity was lowered with it.
SHRINKING = "shrinking the capacity from"
#: How many of the group's newest scaling activities are read (the most DescribeScalingActivities returns at once).
ACTIVITIES_READ = 100


class Owes(enum.Enum):
    NOTHING = "nothing"
    UNKNOWN = "unknown"
    TERMINATE = "terminate"
    LOWER = "lower"
    WAIT = "wait"


@dataclasses.dataclass(frozen=True)
class Owed:
    owes: Owes
    reason: str  # in words, for the record's message and the log
    instance: str = ""  # TERMINATE: the instance the group launched in place of the one that left


def owed(left: str, state: GroupClaims, activities: Sequence[Activity], bound: Collection[str] = ()) -> Owed:
    """What ``state.group`` owes back for instance ``left``, which left it before Spot Guard terminated it."""
    group = state.group.name
    termination = next((a for a in activities if a.description == TERMINATING + left), None)
    if termination is None:
        return Owed(
            Owes.UNKNOWN,
            f"instance {left} left ASG {group}, but its termination is not among the group's {len(activities)} newest "
            "scaling activities, so whether desired capacity was lowered with it cannot be told; nothing done (compare "
            f"desired capacity with the instances: aws autoscaling describe-scaling-activities "
            f"--auto-scaling-group-name {group})",
        )
    if SHRINKING in termination.cause:
        return Owed(Owes.NOTHING, f"instance {left} left ASG {group} with its desired capacity lowered")
    after = activities[: list(activities).index(termination)]  # newest first: what came after the termination
    launched = [a.description[len(LAUNCHING) :] for a in reversed(after) if a.description.startswith(LAUNCHING)]
    live = {i.instance_id for i in live_instances(state.group)}
    claimed = {i.instance_id for instances in state.arrivals.values() for i in instances}
    taken = claimed | set(bound)
    in_place = next((i for i in launched if i in live and i not in taken), None)
    why = f"instance {left} left ASG {group} without its desired capacity lowered ({_cause(termination)})"
    if in_place is not None:
        return Owed(Owes.TERMINATE, f"{why}; the group launched {in_place} in its place", in_place)
    if state.unexplained <= 0:
        return Owed(Owes.NOTHING, f"{why}; nothing was launched in its place and no launch is owed")
    if any(a.status_code == "Failed" and a.description.startswith("Launching") for a in after):
        return Owed(Owes.LOWER, f"{why}; the group cannot launch in its place now (a launch failed since)")
    return Owed(Owes.WAIT, f"{why}; the group has not launched in its place yet")


def _cause(termination: Activity) -> str:
    """The cause's reason, without AWS's timestamp ("At 2026-... an instance was taken out of service in response
    to an EC2 health check ..." -> "taken out of service in response to an EC2 health check ...")."""
    cause = termination.cause.split(".  ", 1)[0].strip()
    marker = "taken out of service"
    return cause[cause.index(marker) :] if marker in cause else cause or "no cause given"
