"""What every AWS call that changes capacity must pass: the fence, and the error it raises.

The fence is the Lease check of ``controller.adapters.election``; the controllers only see ``NotLeaderError``,
which stops their work (a successor carries on from the records).
"""

from __future__ import annotations

from collections.abc import Callable

#: ``fence(operation)`` raises NotLeaderError unless this process may change capacity now.
FenceCheck = Callable[[str], None]


class NotLeaderError(Exception):
    """This process may not change capacity now: it is not the leader, or cannot vouch that it still is."""

    def __init__(self, message: str, *, identity: str, holder: str | None, seconds_since_renew: float | None) -> None:
        super().__init__(message)
        self.identity = identity
        self.holder = holder
        self.seconds_since_renew = seconds_since_renew


def no_fence(operation: str) -> None:
    """A fence that always passes (tests and admin commands that run no election)."""
    return None
