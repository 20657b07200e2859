"""Timing of the leader election (client-go's defaults and rules) and the default elector identity."""

from __future__ import annotations

import dataclasses
import math
import secrets
import socket

#: client-go's JitterFactor: the renew deadline must leave room for more than one jittered retry.
JITTER_FACTOR = 1.2


class InvalidElectionConfigError(ValueError):
    """The election timings contradict each other; the message says which rule and how to fix it, ``field``
    names the timing to change."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class ElectionConfig:
    """How long a lease lasts and how hard its holder tries to keep it, in seconds.

    lease_duration: how long a standby waits, from the last change it saw, before taking over.
    renew_deadline: how long the leader keeps failing to renew before it gives up and stops its work.
    retry_period: the pause between attempts (standbys jitter it down to half, never up).
    request_timeout: the bound on each API call; None means min(renew_deadline / 2, 5).
    fence_margin: ``ensure_leader``'s default safety margin before the lease would expire. It must leave the
      fence open through one renewal (lease_duration - fence_margin >= retry_period + call_timeout), or a healthy
      leader's capacity changes would be refused between two renewals.
    """

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    request_timeout: float | None = None
    fence_margin: float = 3.0

    def __post_init__(self) -> None:
        for name in ("lease_duration", "renew_deadline", "retry_period", "fence_margin"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise InvalidElectionConfigError(f"{name} must be a finite number of seconds, got {value!r}", name)
        if self.request_timeout is not None and not math.isfinite(self.request_timeout):
            raise InvalidElectionConfigError(
                f"request_timeout must be a finite number of seconds, got {self.request_timeout!r}", "request_timeout"
            )
        for name in ("lease_duration", "renew_deadline", "retry_period"):
            value = getattr(self, name)
            if not value > 0:
                raise InvalidElectionConfigError(f"{name} must be positive seconds, got {value!r}", name)
        if self.lease_duration != int(self.lease_duration):
            raise InvalidElectionConfigError(
                f"lease_duration must be whole seconds (the Lease stores leaseDurationSeconds as an integer), "
                f"got {self.lease_duration!r}",
                "lease_duration",
            )
        if self.lease_duration <= self.renew_deadline:
            raise InvalidElectionConfigError(
                f"lease_duration ({self.lease_duration}s) must be greater than renew_deadline "
                f"({self.renew_deadline}s): a leader must give up before a standby may take over",
                "renew_deadline",
            )
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise InvalidElectionConfigError(
                f"renew_deadline ({self.renew_deadline}s) must be greater than {JITTER_FACTOR} x retry_period "
                f"({self.retry_period}s): the leader needs more than one retry before its deadline",
                "renew_deadline",
            )
        if self.request_timeout is not None and not 0 < self.request_timeout < self.renew_deadline:
            raise InvalidElectionConfigError(
                f"request_timeout ({self.request_timeout!r}s) must be positive and shorter than renew_deadline "
                f"({self.renew_deadline}s): one hung call must not use up the whole deadline",
                "request_timeout",
            )
        if not 0 <= self.fence_margin < self.lease_duration:
            raise InvalidElectionConfigError(
                f"fence_margin ({self.fence_margin!r}s) must be at least 0 and less than lease_duration "
                f"({self.lease_duration}s)",
                "fence_margin",
            )
        if self.lease_duration - self.fence_margin < self.retry_period + self.call_timeout:
            open_for = self.lease_duration - self.fence_margin
            raise InvalidElectionConfigError(
                f"fence_margin ({self.fence_margin:g}s) leaves the fence open for {open_for:g}s after a renewal, "
                f"less than retry_period + the call timeout ({self.retry_period:g}s + {self.call_timeout:g}s): a "
                "healthy leader's capacity changes would be refused between renewals; fence_margin must be at most "
                f"{self.lease_duration - self.retry_period - self.call_timeout:g}s, or lease_duration longer",
                "fence_margin",
            )

    @property
    def call_timeout(self) -> float:
        """The bound on each API call: ``request_timeout``, or min(renew_deadline / 2, 5) seconds."""
        if self.request_timeout is not None:
            return self.request_timeout
        return min(self.renew_deadline / 2, 5.0)

    @property
    def lease_duration_seconds(self) -> int:
        return int(self.lease_duration)


def default_identity() -> str:
    """``<hostname>_<random hex>``, client-go style: unique even when a pod restarts under the same name."""
    return f"{socket.gethostname()}_{secrets.token_hex(4)}"
