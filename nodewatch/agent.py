"""The poll loop: IMDS notices in, annotation patches of the agent's own Node out.

One loop, one thread. The first good poll learns the instance's purchasing option (IMDS
``instance-life-cycle``). On a spot instance, or one whose option IMDS does not tell, each poll reads the
interruption notice and the rebalance recommendation (and the instance identity until it is known), works
out which annotations need to change, and patches the Node only when something did. On an instance that is
not spot (on-demand, scheduled, capacity block) AWS sends neither notice: the agent goes idle, polls nothing
more, never writes to the Node, and says so in its log, on /readyz and in ``spotguard_nodewatch_idle``.
Errors are counted, logged once per distinct error, and answered with backoff; the loop itself never ends
except when asked to stop.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
from collections.abc import Callable, Mapping
from typing import Protocol

from nodewatch.annotations import NODEWATCH_KEYS, PREFIX, format_time
from nodewatch.clock import Clock, SystemClock
from nodewatch.imds import IMDSError, InterruptionNotice, RebalanceRecommendation
from nodewatch.logs import ErrorReporter
from nodewatch.metrics import NodewatchMetrics
from nodewatch.node import KubeAPIError
from nodewatch.notices import (
    INTERRUPTION,
    NOTICE_KINDS,
    REBALANCE,
    Sighting,
    all_changes,
    apply_changes,
    interruption_values,
    rebalance_values,
)

log = logging.getLogger(__name__)

#: IMDS instance-life-cycle values of instances that never get a rebalance recommendation or an interruption
#: notice. Any other value (spot, or one AWS adds later) is watched: a poll costs little, a missed notice a node.
NOT_SPOT_LIFE_CYCLES = frozenset({"on-demand", "scheduled", "capacity-block"})
#: How long the idle loop sleeps between looks at its stop event (it wakes at once when asked to stop).
IDLE_WAIT = 3600.0


def _describe(values: Mapping[str, str] | None) -> str:
    """``interruption-action=terminate, interruption-time=...`` for log messages."""
    return ", ".join(f"{key.removeprefix(PREFIX)}={value}" for key, value in (values or {}).items())


class NoticeSource(Protocol):
    """What the agent reads from IMDS (nodewatch.imds.IMDSClient)."""

    def interruption_notice(self) -> InterruptionNotice | None: ...

    def rebalance_recommendation(self) -> RebalanceRecommendation | None: ...

    def instance_id(self) -> str: ...

    def availability_zone(self) -> str: ...

    def instance_life_cycle(self) -> str | None: ...


class NodeAnnotations(Protocol):
    """What the agent needs from the API server (nodewatch.node.NodeClient)."""

    def get_annotations(self, name: str) -> dict[str, str]: ...

    def patch_annotations(self, name: str, changes: Mapping[str, str | None]) -> dict[str, str]: ...


@dataclasses.dataclass(frozen=True)
class AgentTiming:
    poll_interval: float = 2.0
    """Seconds from the start of one poll to the start of the next while IMDS answers."""
    max_backoff: float = 10.0
    """Longest wait between polls (and between API server retries) while something fails."""
    unready_after: float = 30.0
    """/readyz turns not-ready when IMDS (or the Node API) has failed for this long."""
    stall_after: float = 120.0
    """/healthz fails when the loop has not started a poll for this long (it is stuck, not merely failing)."""


class Agent:
    """Keeps the nodewatch annotations of Node ``node_name`` in line with what IMDS shows."""

    def __init__(
        self,
        node_name: str,
        imds: NoticeSource,
        nodes: NodeAnnotations,
        *,
        timing: AgentTiming | None = None,
        clock: Clock | None = None,
        metrics: NodewatchMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.node_name = node_name
        self._imds = imds
        self._nodes = nodes
        self.timing = timing or AgentTiming()
        self._clock = clock or SystemClock()
        self.metrics = metrics or NodewatchMetrics()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._sightings = {kind.name: Sighting() for kind in NOTICE_KINDS}
        self._instance_id: str | None = None
        self._availability_zone: str | None = None
        self._life_cycle: str | None = None  # IMDS instance-life-cycle, once read ("" when IMDS has none)
        self._idle_reason: str | None = None
        self._recorded: dict[str, str] | None = None  # nodewatch's annotations on the Node, once read
        self._imds_errors = ErrorReporter(log, "IMDS polling", self._clock)
        self._node_errors = ErrorReporter(log, f"updating node {node_name}", self._clock)
        self._internal_errors = ErrorReporter(log, "the poll loop", self._clock)
        self._failed_polls = 0
        self._last_good_poll: float | None = None
        self._last_imds_error = "no poll yet"
        self._node_failures = 0
        self._node_failing_since: float | None = None
        self._node_retry_at = 0.0
        self._last_node_error = ""
        self._heartbeat = self._clock.monotonic()
        self.metrics.ready.set_function(lambda: 1.0 if self.readiness()[0] else 0.0)

    # -- one poll ------------------------------------------------------------------------------------

    @property
    def idle_reason(self) -> str | None:
        """Why the agent watches nothing (this instance is not spot), or None while it watches."""
        return self._idle_reason

    def poll_once(self) -> None:
        """Read IMDS once and bring the Node's annotations up to date (never raises for IMDS/API errors)."""
        self._heartbeat = self._clock.monotonic()
        now_text = format_time(self._clock.now())
        self._read_imds(now_text)
        if self._life_cycle is not None and self._idle_reason is None:  # a node that may be spot, once IMDS said so
            self._sync_node()

    def _observe(self, kind_name: str, values: dict[str, str] | None, now_text: str, description: str) -> None:
        sighting = self._sightings[kind_name]
        before = sighting.values
        if sighting.observe(values, now_text):
            self.metrics.notices.labels(kind_name).inc()
            log.info(f"{description} appeared in IMDS: {_describe(values)}", extra={"notice": kind_name})
        elif values is None and before is not None:
            log.info(f"{description} disappeared from IMDS (was {_describe(before)})", extra={"notice": kind_name})
        self.metrics.notice_active.labels(kind_name).set(0 if values is None else 1)

    def _read_interruption(self, now_text: str) -> None:
        values = interruption_values(self._imds.interruption_notice())
        self._observe(INTERRUPTION.name, values, now_text, "spot interruption notice")

    def _read_rebalance(self, now_text: str) -> None:
        values = rebalance_values(self._imds.rebalance_recommendation())
        self._observe(REBALANCE.name, values, now_text, "rebalance recommendation")

    def _read_instance_id(self, _: str) -> None:
        self._instance_id = self._imds.instance_id()

    def _read_availability_zone(self, _: str) -> None:
        self._availability_zone = self._imds.availability_zone()

    def _read_life_cycle(self, _: str) -> None:
        value = self._imds.instance_life_cycle()
        self._life_cycle = value or ""
        if value in NOT_SPOT_LIFE_CYCLES:
            self._idle_reason = (
                f"idle: this is an {value} instance (IMDS instance-life-cycle={value}); AWS sends rebalance "
                f"recommendations and interruption notices only to spot instances, so nodewatch polls nothing and "
                f"never writes to node {self.node_name}"
            )
            self.metrics.idle.set(1)
            log.info(self._idle_reason, extra={"life_cycle": value})
        elif value == "spot":
            log.info(f"spot instance (IMDS instance-life-cycle=spot): watching for notices for node {self.node_name}")
        else:
            shown = "no instance-life-cycle" if value is None else f"instance-life-cycle={value!r}, not a known option"
            log.warning(
                f"IMDS has {shown}; watching for notices as on a spot instance (a poll costs little, a missed notice "
                "a node)",
                extra={"life_cycle": value},
            )

    def _read_imds(self, now_text: str) -> bool:
        reads: list[Callable[[str], None]] = [self._read_interruption, self._read_rebalance]
        if self._life_cycle is None:
            reads.insert(0, self._read_life_cycle)
        if self._instance_id is None:
            reads.append(self._read_instance_id)
        if self._availability_zone is None:
            reads.append(self._read_availability_zone)
        errors: list[IMDSError] = []
        for read in reads:
            if self._idle_reason is not None:
                break  # not a spot instance: nothing more to read, now or later
            try:
                read(now_text)
            except IMDSError as error:
                errors.append(error)
                self.metrics.imds_errors.labels(error.kind.value).inc()
                if error.affects_every_read:
                    break  # e.g. IMDS did not answer at all: the other reads would only wait for the same timeout
        if errors:
            self._failed_polls += 1
            self.metrics.polls.labels("error").inc()
            for failure in errors:
                self._imds_errors.failed(
                    failure.key,
                    f"{failure}; nodewatch keeps polling",
                    error_kind=failure.kind.value,
                    imds_path=failure.path,
                )
            self._last_imds_error = str(errors[-1])
            return False
        self._imds_errors.succeeded()
        self._failed_polls = 0
        self._last_good_poll = self._clock.monotonic()
        self.metrics.polls.labels("ok").inc()
        self.metrics.last_good_poll.set(self._clock.now().timestamp())
        return True

    def _sync_node(self) -> None:
        now = self._clock.monotonic()
        if now < self._node_retry_at:
            return
        operation = "read"
        try:
            if self._recorded is None:
                self._recorded = self._own_keys(self._nodes.get_annotations(self.node_name))
                if self._recorded:
                    log.info(
                        f"node {self.node_name} already carries nodewatch annotations; keeping their first-seen times",
                        extra={"annotations": self._recorded},
                    )
            changes = all_changes(self._recorded, self._sightings, self._instance_id, self._availability_zone)
            if changes:
                operation = "patch"
                after = self._own_keys(self._nodes.patch_annotations(self.node_name, changes))
                # The answer is the truth, but never re-patch in a loop if something strips our keys again.
                self._recorded = apply_changes(after, changes)
                self.metrics.node_patches.inc()
                log.info(f"patched the annotations of node {self.node_name}", extra={"changes": changes})
        except KubeAPIError as error:
            self._node_failed(error, operation, now)
            return
        self._node_errors.succeeded()
        self._node_failures = 0
        self._node_failing_since = None

    def _node_failed(self, error: KubeAPIError, operation: str, now: float) -> None:
        counter = self.metrics.patch_errors if operation == "patch" else self.metrics.node_read_errors
        counter.labels(error.kind.value).inc()
        self._node_failures += 1
        if self._node_failing_since is None:
            self._node_failing_since = now
        self._node_retry_at = now + self._backoff(self._node_failures)
        self._last_node_error = str(error)
        self._node_errors.failed(
            f"{operation}:{error.key}",
            f"cannot {operation} node {self.node_name}: {error}; nodewatch retries with backoff",
            error_kind=error.kind.value,
            http_status=error.status,
        )

    @staticmethod
    def _own_keys(annotations: Mapping[str, str]) -> dict[str, str]:
        return {key: value for key, value in annotations.items() if key in NODEWATCH_KEYS}

    # -- pacing, health, the loop --------------------------------------------------------------------

    def _backoff(self, failures: int) -> float:
        interval = self.timing.poll_interval
        ceiling = min(self.timing.max_backoff, interval * 2.0**failures)
        return max(interval, ceiling * self._rng.uniform(0.75, 1.0))

    def next_delay(self) -> float:
        """Seconds from the start of this poll to the start of the next one."""
        if self._failed_polls == 0:
            return self.timing.poll_interval
        return self._backoff(self._failed_polls)

    def readiness(self) -> tuple[bool, str]:
        """(ready, why): not ready before the first good poll and after a sustained IMDS or Node API outage."""
        if self._idle_reason is not None:
            return True, self._idle_reason
        now = self._clock.monotonic()
        limit = self.timing.unready_after
        if self._last_good_poll is None:
            return False, f"no successful IMDS poll yet; last error: {self._last_imds_error}"
        if now - self._last_good_poll > limit:
            return False, (
                f"no successful IMDS poll for {now - self._last_good_poll:.0f} s; last error: {self._last_imds_error}"
            )
        if self._node_failing_since is not None and now - self._node_failing_since > limit:
            return False, (
                f"node {self.node_name} could not be read or patched for {now - self._node_failing_since:.0f} s; "
                f"last error: {self._last_node_error}"
            )
        return True, "ready"

    def liveness(self) -> tuple[bool, str]:
        """(alive, why): false only when the poll loop is stuck, never because IMDS or the API server fail."""
        if self._idle_reason is not None:
            return True, "ok (idle: not a spot instance)"
        age = self._clock.monotonic() - self._heartbeat
        if age > self.timing.stall_after:
            return False, f"the poll loop has not started a poll for {age:.0f} s; it is stuck"
        return True, "ok"

    def run(self, stop: threading.Event, wait: Callable[[float], bool] | None = None) -> None:
        """Poll until ``stop`` is set. ``wait(seconds)`` returns True when stopping (default: stop.wait)."""
        pause = wait or stop.wait
        while not stop.is_set():
            started = self._clock.monotonic()
            try:
                self.poll_once()
            except Exception as error:  # the loop outlives its own bugs: count, log once, back off
                self._failed_polls += 1
                self.metrics.internal_errors.inc()
                self._internal_errors.failed(
                    f"{type(error).__name__}:{error}",
                    f"unexpected {type(error).__name__} in the poll loop: {error}; nodewatch keeps polling "
                    "(this is a bug, please report it with this log line)",
                    exc_info=True,
                )
            if self._idle_reason is not None:
                while not pause(IDLE_WAIT):
                    pass
                break
            remaining = self.next_delay() - (self._clock.monotonic() - started)
            if remaining > 0 and pause(remaining):
                break
