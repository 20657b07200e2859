"""Lifecycle actions: an instance held in Pending:Wait or Terminating:Wait by the group's lifecycle hooks.

Follows the EC2 Auto Scaling User Guide, "Amazon EC2 Auto Scaling lifecycle hooks" and "How lifecycle hooks work":
a launch hook puts a new instance in ``Pending:Wait`` until CompleteLifecycleAction or the heartbeat timeout, then
``Pending:Proceed``; a termination hook holds a leaving instance in ``Terminating:Wait``, then
``Terminating:Proceed``. RecordLifecycleActionHeartbeat restarts the timeout; the global timeout (48 hours or 100
times the heartbeat timeout, whichever is smaller) caps the wait. At the timeout the hook's DefaultResult applies:
for a launch, CONTINUE puts the instance in service and ABANDON terminates it (and the group replaces it); for a
termination either result terminates. With several hooks, one ABANDON abandons the launch.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta

from sandbox.aws.moto_bridge import HookConfig

CONTINUE = "CONTINUE"
ABANDON = "ABANDON"
RESULTS = (CONTINUE, ABANDON)
GLOBAL_TIMEOUT_CAP = 172_800  # seconds: 48 hours


@dataclasses.dataclass
class LifecycleAction:
    hook: HookConfig
    instance_id: str
    started_at: datetime
    heartbeat_deadline: datetime
    global_deadline: datetime
    token: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    result: str | None = None
    timed_out: bool = False

    @classmethod
    def begin(cls, hook: HookConfig, instance_id: str, now: datetime) -> LifecycleAction:
        timeout = timedelta(seconds=hook.heartbeat_timeout)
        cap = timedelta(seconds=min(GLOBAL_TIMEOUT_CAP, 100 * hook.heartbeat_timeout))
        return cls(hook, instance_id, now, now + timeout, now + cap)

    @property
    def open(self) -> bool:
        return self.result is None

    def heartbeat(self, now: datetime) -> None:
        """Restart the heartbeat timeout from ``now`` (never past the global timeout)."""
        self.heartbeat_deadline = min(now + timedelta(seconds=self.hook.heartbeat_timeout), self.global_deadline)

    def complete(self, result: str) -> None:
        self.result = result

    def expire_if_due(self, now: datetime) -> bool:
        """Apply the hook's DefaultResult if its timeout passed; True if it did."""
        if self.open and now >= min(self.heartbeat_deadline, self.global_deadline):
            self.result = self.hook.default_result if self.hook.default_result in RESULTS else ABANDON
            self.timed_out = True
            return True
        return False


def outcome(actions: list[LifecycleAction]) -> LifecycleAction | None:
    """None while any action is open; else the deciding action: the first ABANDON, or the last to finish."""
    if not actions or any(a.open for a in actions):
        return None
    abandoned = [a for a in actions if a.result == ABANDON]
    return abandoned[0] if abandoned else actions[-1]
