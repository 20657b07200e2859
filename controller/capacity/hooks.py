"""The launch lifecycle hooks of each group, read with DescribeLifecycleHooks and kept for a while: the capacity
check needs them only when a claim's new instance sits in Pending:Wait, and hooks change rarely."""

from __future__ import annotations

import logging
import threading

from controller.adapters.aws import AutoScaling, AwsError
from controller.clock import Clock
from controller.model.asg import LifecycleHook

log = logging.getLogger(__name__)

#: A group's hooks are read again after this long (seconds).
HOOKS_MAX_AGE = 300.0


class HookCache:
    """group -> its lifecycle hooks, read at most once per ``max_age`` (monotonic clock)."""

    def __init__(self, max_age: float = HOOKS_MAX_AGE) -> None:
        self.max_age = max_age
        self._hooks: dict[str, tuple[float, tuple[LifecycleHook, ...]]] = {}
        self._lock = threading.Lock()

    def hooks(self, asg: AutoScaling, clock: Clock, group: str) -> tuple[LifecycleHook, ...]:
        """The group's hooks; on an AWS error the last ones read (none if never read), and a warning saying so."""
        now = clock.monotonic()
        with self._lock:
            cached = self._hooks.get(group)
        if cached is not None and now - cached[0] < self.max_age:
            return cached[1]
        try:
            hooks = tuple(asg.lifecycle_hooks(group))
        except AwsError as error:
            log.warning(
                "cannot read the lifecycle hooks of %s (%s: %s): an instance a launch hook holds in Pending:Wait "
                "gets only the capacity-check deadline; allow autoscaling:DescribeLifecycleHooks",
                group,
                error.code,
                error.aws_message,
            )
            hooks = cached[1] if cached is not None else ()
        with self._lock:
            self._hooks[group] = (now, hooks)
        return hooks
