"""How long the capacity check waits for a new instance a launch lifecycle hook holds: one rule, used by the
capacity check (``controller.checks.capacity_check``) and by ``spotguard doctor``.

EC2 Auto Scaling ("Amazon EC2 Auto Scaling lifecycle hooks", "How lifecycle hooks work",
https://docs.aws.amazon.com/autoscaling/ec2/userguide/lifecycle-hooks-overview.html): a launch hook puts a new
instance in ``Pending:Wait`` until someone calls CompleteLifecycleAction or its HeartbeatTimeout passes (AWS
default 3600 s; RecordLifecycleActionHeartbeat restarts it, up to the global timeout: 48 hours or 100 times the
heartbeat timeout), then ``Pending:Proceed`` and ``InService``. At the timeout the hook's DefaultResult applies:
CONTINUE puts the instance in service, ABANDON terminates it and AWS writes the launch ``Cancelled`` ("Instance
failed to complete user's Lifecycle Action"), which the capacity check reads as a failed launch at its next poll.

The rule: a claim whose new instance is held (``Pending:Wait`` or ``Pending:Proceed``) when its capacity-check
deadline comes keeps waiting, until the deadline plus the longest launch hook's heartbeat timeout, but never more
than ``HOOK_WAIT_CAP`` beyond the deadline. An instance that is only
``Pending`` (no hook), or not launched at all, gets the deadline alone. A hook whose heartbeat timeout is longer than
the cap is a conflict: doctor WARNs about it, and a replacement still held when the cap passes falls back
(code ``LaunchHookTimeout``, naming the instance and the hook), as a shortage would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from controller.model.asg import LifecycleHook

#: The most a launch hook adds to the capacity-check deadline (seconds): a replacement that needs more than the
#: deadline and ten minutes no longer replaces anything in time (an interruption gives 2 minutes), and AWS's
#: default heartbeat timeout (an hour) is almost always a hook nobody tuned.
HOOK_WAIT_CAP = 600.0
#: The states of an instance a launch hook holds (Pending:Proceed: completed, on its way to InService).
HELD_STATES = frozenset({"Pending:Wait", "Pending:Proceed"})


@dataclasses.dataclass(frozen=True)
class HookWait:
    """What a group's launch hooks add to the capacity-check deadline ``deadline`` (seconds after a scale-up)."""

    hooks: tuple[LifecycleHook, ...]  # the group's launch hooks
    deadline: float  # SPOT_GUARD_CAPACITY_CHECK_TIMEOUT
    cap: float = HOOK_WAIT_CAP

    @property
    def grace(self) -> float:
        """Seconds a claim with a held instance may wait beyond its deadline."""
        if not self.hooks:
            return 0.0
        return min(self.cap, float(max(h.heartbeat_timeout for h in self.hooks)))

    @property
    def window(self) -> float:
        """Seconds after its scale-up a claim with a held instance may wait."""
        return self.deadline + self.grace

    @property
    def conflicts(self) -> tuple[LifecycleHook, ...]:
        """The launch hooks that may hold an instance longer than the capacity check waits for it."""
        return tuple(h for h in self.hooks if h.heartbeat_timeout > self.cap)

    def names(self) -> str:
        return ", ".join(h.name for h in self.hooks)


def hook_wait(hooks: Iterable[LifecycleHook], deadline: float, cap: float = HOOK_WAIT_CAP) -> HookWait:
    """The rule for a group with ``hooks`` (all of its lifecycle hooks; only launch hooks count)."""
    return HookWait(tuple(h for h in hooks if h.launching), deadline, cap)
