"""What observe-only mode (``SPOT_GUARD_DRY_RUN``) would have changed: one value per change not made.

The seam that makes them (``controller.adapters.dry_run``) sits between the controller and every write it can
make; the announcer (``controller.observability.would_act``) turns each into a log line, an Event and a metric.
"""

from __future__ import annotations

import dataclasses
import enum


class Action(enum.StrEnum):
    """``action`` of ``spotguard_dry_run_actions_total`` and the first words of each Event's message."""

    SCALE_UP = "scale-up"  # SetDesiredCapacity above the group's desired capacity
    SCALE_DOWN = "scale-down"  # SetDesiredCapacity below it (a claim given back)
    TERMINATE = "terminate"  # TerminateInstanceInAutoScalingGroup
    TAINT = "taint"
    UNTAINT = "untaint"
    CORDON = "cordon"
    UNCORDON = "uncordon"
    EVICT = "evict"
    RECORD = "record"  # Spot Guard's own record annotations and finalizer on a Node (log and metric, no Event)
    ANNOTATE = "annotate"  # any other annotation on a Node (cluster-autoscaler hints, protection)
    CREATE_FALLBACK_EVENT = "create-fallback-event"
    UPDATE_FALLBACK_EVENT = "update-fallback-event"
    DELETE_FALLBACK_EVENT = "delete-fallback-event"
    ACKNOWLEDGE = "acknowledge-message"  # DeleteMessageBatch on the EC2 events queue (log and metric, no Event)
    OTHER = "other-write"  # a write the seam has no word for (sent to the API server with dryRun=All only)

    @property
    def counted(self) -> bool:
        """Each one is a change of its own, however like another it reads: a group's desired capacity may go
        from 3 to 4 for one notice and, after a give-back, from 3 to 4 again for the next. Never de-duplicated."""
        return self in {Action.SCALE_UP, Action.SCALE_DOWN}

    @property
    def quiet(self) -> bool:
        """Bookkeeping, not an effect a user would see: logged and counted, no Event."""
        return self in {Action.RECORD, Action.ACKNOWLEDGE}


@dataclasses.dataclass(frozen=True)
class WouldAct:
    """One change observe-only mode did not make.

    kind/name: the object it would have changed (``Node``, ``AutoScalingGroup``, ``Pod``,
    ``SpotGuardFallbackEvent``); ``node``: the Node the Event goes on, when the change is about one; ``asg``: the
    group, when known; ``message``: what would have happened, in a sentence starting with "would".
    """

    action: Action
    kind: str
    name: str
    message: str
    node: str = ""
    asg: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Two announcements with this key are one would-be change seen twice (announced once)."""
        return (self.action, self.kind, self.name, self.message)
