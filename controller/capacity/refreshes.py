"""The active instance refresh of each group, read with DescribeInstanceRefreshes and kept for a short while: read
only when a step that may wait for a refresh is about to change capacity (``controller.checks.instance_refresh``)."""

from __future__ import annotations

import logging
import threading

from controller.adapters.aws import AutoScaling, AwsError
from controller.clock import Clock
from controller.model.asg import InstanceRefresh

log = logging.getLogger(__name__)

#: A group's refreshes are read again after this long (seconds): a refresh lasts minutes, and a step that waits
#: for one looks again at its next pass.
REFRESHES_MAX_AGE = 15.0


class RefreshCache:
    """group -> its active instance refresh (None if none), read at most once per ``max_age`` (monotonic clock)."""

    def __init__(self, max_age: float = REFRESHES_MAX_AGE) -> None:
        self.max_age = max_age
        self._active: dict[str, tuple[float, InstanceRefresh | None]] = {}
        self._lock = threading.Lock()

    def active(self, asg: AutoScaling, clock: Clock, group: str) -> InstanceRefresh | None:
        """The group's active refresh; on an AWS error none (nothing waits for what cannot be seen), and a warning
        saying so."""
        now = clock.monotonic()
        with self._lock:
            cached = self._active.get(group)
        if cached is not None and now - cached[0] < self.max_age:
            return cached[1]
        try:
            active = next((r for r in asg.instance_refreshes(group) if r.active), None)
        except AwsError as error:
            log.warning(
                "cannot read the instance refreshes of %s (%s: %s): Spot Guard changes its capacity without waiting "
                "for a refresh; allow autoscaling:DescribeInstanceRefreshes",
                group,
                error.code,
                error.aws_message,
            )
            active = None
        with self._lock:
            self._active[group] = (now, active)
        return active
