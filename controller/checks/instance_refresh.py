"""What waits while an instance refresh runs, and what must not: one pure rule, used by the replacement and the
lifecycle controllers.

An instance refresh ("Replace Auto Scaling instances based on an instance refresh",
https://docs.aws.amazon.com/autoscaling/ec2/userguide/asg-instance-refresh.html) replaces a group's instances
itself, batch by batch, and a change of desired capacity made meanwhile fights it: the refresh sizes its batches
from the desired capacity and replaces what a scale-up launched with the old configuration. Its statuses
(``controller.model.asg.ACTIVE_REFRESH_STATUSES``) follow "InstanceRefresh",
https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_InstanceRefresh.html.

The rule, by action:

* an interruption notice never waits: the instance dies two minutes after the notice, whatever the refresh does;
* a rebalance scale-up of the spot group waits (queued, not dropped) while a refresh of that group is active, at
  most ``REBALANCE_WAIT_MAX`` after the recommendation was queued; then it proceeds: an old instance at elevated
  risk matters more than a tidy refresh;
* the lifecycle's return to spot and its scale-down of the on-demand node wait while a refresh runs on either
  group of the pair, without bound: the on-demand node keeps the workload running meanwhile, and AWS ends every
  refresh (a protected instance makes it fail after an hour at most);
* retiring an old spot node whose replacement has arrived never waits: it removes exactly that instance
  (TerminateInstanceInAutoScalingGroup), which a refresh does not undo.
"""

from __future__ import annotations

import dataclasses
import enum

#: The longest a rebalance scale-up waits for a spot group's refresh (seconds after it was queued).
REBALANCE_WAIT_MAX = 600.0


class Step(enum.Enum):
    INTERRUPTION_SCALE_UP = "interruption scale-up"
    REBALANCE_SCALE_UP = "rebalance scale-up"
    RETURN_TO_SPOT = "return to spot"
    ON_DEMAND_SCALE_DOWN = "on-demand scale-down"
    RETIRE_OLD_SPOT = "retirement of the old spot node"


@dataclasses.dataclass(frozen=True)
class RefreshWait:
    """Whether a step waits, and why (for the log and the Event)."""

    waits: bool
    reason: str


def refresh_wait(step: Step, spot_refreshing: bool, on_demand_refreshing: bool, waited: float = 0.0) -> RefreshWait:
    """Whether ``step`` waits for the active refreshes of its pair's groups; ``waited``: seconds it has waited."""
    if step is Step.INTERRUPTION_SCALE_UP:
        return RefreshWait(False, "an interrupted instance stops in 2 minutes: it never waits for a refresh")
    if step is Step.RETIRE_OLD_SPOT:
        return RefreshWait(False, "a retirement removes exactly its instance: a refresh does not undo it")
    if step is Step.REBALANCE_SCALE_UP:
        if not spot_refreshing:
            return RefreshWait(False, "no refresh of the spot group is active")
        if waited >= REBALANCE_WAIT_MAX:
            return RefreshWait(False, f"waited {waited:.0f} s for the spot group's refresh, the most it waits")
        return RefreshWait(True, "an instance refresh of the spot group is active")
    if spot_refreshing or on_demand_refreshing:
        which = "spot" if spot_refreshing else "on-demand"
        return RefreshWait(True, f"an instance refresh of the {which} group is active")
    return RefreshWait(False, "no refresh of either group is active")
