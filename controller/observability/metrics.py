"""The Prometheus metrics the controller exports on /metrics, in a registry of their own.

Names follow Prometheus conventions: the ``spotguard_`` prefix, ``_total`` on counters, units in the name
(``_seconds``). Label values that alerts depend on are created up front (``Metrics()`` creates the fixed
ones, ``prepare_group_pair`` those of one spot/on-demand ASG pair), because ``increase()`` cannot see the
first increment of a series that did not exist before it.

The gauges that describe SpotGuardFallbackEvents (how many per phase, the age of the oldest unfinished one,
how long each unfinished one has been in its phase) are computed at scrape time from the last snapshot
given to ``set_fallback_events``, so ages keep growing between snapshots.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.adapters.sqs import ADVICE as QUEUE_ERROR_ADVICE
from controller.clock import Clock, SystemClock
from controller.model.ec2_event import OUTCOMES as QUEUE_OUTCOMES

PREFIX = "spotguard_"
QUEUE_ERROR_KINDS = tuple(QUEUE_ERROR_ADVICE)
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: The SGFE phases of manifests/crd-spotguardfallbackevent.yaml (status.phase enum), in order.
SGFE_PHASES = ("Pending", "Monitoring", "ReadyForScaleDown", "ScalingDown", "Completed", "Failed")
SGFE_UNFINISHED_PHASES = ("Pending", "Monitoring", "ReadyForScaleDown", "ScalingDown")
SGFE_FINISHED_PHASES = ("Completed", "Failed")

#: Time from a rebalance recommendation to a Ready replacement: seconds to an hour.
REPLACEMENT_READY_BUCKETS = (5.0, 15.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
#: Time from a fallback to its SGFE's Completed: minutes to a week.
FALLBACK_COMPLETED_BUCKETS = (
    300.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    43200.0,
    86400.0,
    172800.0,
    604800.0,
)


class CapacityType:
    SPOT = "spot"
    ON_DEMAND = "on-demand"


class ScaleUpResult:
    """``result`` of ``spotguard_scale_up_results_total``; everything but SUCCESS counts as a failure."""

    SUCCESS = "success"  # the new instance is InService and its Node Ready
    NO_CAPACITY = "no_capacity"  # a scaling activity failed with a capacity code
    TIMEOUT = "timeout"  # the deadline passed without a Ready instance
    ERROR = "error"  # the SetDesiredCapacity call itself failed

    ALL = (SUCCESS, NO_CAPACITY, TIMEOUT, ERROR)


class FallbackReason:
    """``reason`` of ``spotguard_fallbacks_total``: why spot was given up for on-demand."""

    NO_CAPACITY = "no_capacity"
    TIMEOUT = "timeout"
    ERROR = "error"

    ALL = (NO_CAPACITY, TIMEOUT, ERROR)


class Refusal:
    """``reason`` of ``spotguard_refusals_total``: a recommendation Spot Guard declined to act on."""

    NOT_IN_CONFIGURED_GROUP = "not_in_configured_group"
    CAPACITY_REBALANCE_ENABLED = "capacity_rebalance_enabled"
    MALFORMED_ANNOTATION = "malformed_annotation"
    NO_INSTANCE_ID = "no_instance_id"
    PAUSED = "paused"

    ALL = (NOT_IN_CONFIGURED_GROUP, CAPACITY_REBALANCE_ENABLED, MALFORMED_ANNOTATION, NO_INSTANCE_ID, PAUSED)


class DrainResult:
    SUCCESS = "success"
    TIMEOUT = "timeout"
    ERROR = "error"

    ALL = (SUCCESS, TIMEOUT, ERROR)


class EvictionResult:
    EVICTED = "evicted"
    BLOCKED = "blocked"  # 429: a PodDisruptionBudget does not allow it now
    GONE = "gone"  # 404: the pod was already gone
    NAMESPACE_TERMINATING = "namespace_terminating"  # 403: its namespace is being deleted; tried again
    ERROR = "error"

    ALL = (EVICTED, BLOCKED, GONE, NAMESPACE_TERMINATING, ERROR)


class ReplacementFailure:
    """``reason`` of ``spotguard_replacement_failures_total``: a replacement ended in the Failed phase."""

    NO_CAPACITY = "no_capacity"  # neither spot nor on-demand gave an instance
    AWS_ERROR = "aws_error"
    TIMEOUT = "timeout"

    ALL = (NO_CAPACITY, AWS_ERROR, TIMEOUT)


#: controller.effects.drain.EvictionResult values -> this module's EvictionResult labels.
_EVICTION_RESULTS = {
    "evicted": EvictionResult.EVICTED,
    "disruption_budget": EvictionResult.BLOCKED,
    "already_gone": EvictionResult.GONE,
    "replaced": EvictionResult.GONE,
    "error": EvictionResult.ERROR,
    "namespace_terminating": EvictionResult.NAMESPACE_TERMINATING,
    "refused": EvictionResult.ERROR,
}

#: The Auto Scaling operations controller.adapters.aws makes, and the error codes that mean missing IAM permissions:
#: their error series exist from the start so that the AccessDenied alert sees the first one.
AWS_OPERATIONS = (
    "DescribeAutoScalingGroups",
    "DescribeAutoScalingInstances",
    "DescribeInstanceRefreshes",
    "DescribeLifecycleHooks",
    "DescribeScalingActivities",
    "SetDesiredCapacity",
    "TerminateInstanceInAutoScalingGroup",
)
AWS_ACCESS_CODES = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation")


@dataclasses.dataclass(frozen=True)
class FallbackEventAge:
    """What the metrics need to know of one SGFE: its phase, when the fallback happened, when the phase began."""

    name: str
    phase: str
    fallback_at: dt.datetime  # spec.timestamp
    phase_since: dt.datetime  # when status.phase last changed (fallback_at if unknown)


class Metrics:
    """Every metric of one controller process. Thread-safe (prometheus_client's objects are)."""

    def __init__(self, clock: Clock | None = None, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.scale_up_attempts = Counter(
            PREFIX + "scale_up_attempts",
            "Scale-ups started (SetDesiredCapacity to replace a node), by ASG and capacity type",
            ["asg", "capacity_type"],
            registry=registry,
        )
        self.scale_up_results = Counter(
            PREFIX + "scale_up_results",
            "Scale-ups finished, by ASG, capacity type and result (success, no_capacity, timeout, error)",
            ["asg", "capacity_type", "result"],
            registry=registry,
        )
        self.fallbacks = Counter(
            PREFIX + "fallbacks",
            "Replacements that fell back from the spot ASG to its on-demand partner, by reason",
            ["spot_asg", "on_demand_asg", "reason"],
            registry=registry,
        )
        self.replacement_ready_seconds = Histogram(
            PREFIX + "replacement_ready_seconds",
            "Seconds from a rebalance recommendation to a Ready replacement node, by the replacement's capacity type",
            ["capacity_type"],
            buckets=REPLACEMENT_READY_BUCKETS,
            registry=registry,
        )
        self.fallback_completed_seconds = Histogram(
            PREFIX + "fallback_completed_seconds",
            "Seconds from a fallback to on-demand until its SpotGuardFallbackEvent reached Completed",
            buckets=FALLBACK_COMPLETED_BUCKETS,
            registry=registry,
        )
        self.drains = Counter(
            PREFIX + "drains",
            "Node drains finished, by result (success, timeout, error)",
            ["result"],
            registry=registry,
        )
        self.evictions = Counter(
            PREFIX + "evictions",
            "Pod evictions requested while draining, by result (evicted, blocked, gone, namespace_terminating, error)",
            ["result"],
            registry=registry,
        )
        self.aws_calls = Counter(
            PREFIX + "aws_calls",
            "AWS API calls made (each retry counts), by operation",
            ["operation"],
            registry=registry,
        )
        self.aws_errors = Counter(
            PREFIX + "aws_errors",
            "AWS API calls that failed, by operation and AWS error code",
            ["operation", "code"],
            registry=registry,
        )
        self.leader = Gauge(PREFIX + "leader", "1 while this replica holds the leader Lease", registry=registry)
        self.leader_transitions = Counter(
            PREFIX + "leader_transitions",
            "Times this replica became or stopped being the leader",
            registry=registry,
        )
        self.refusals = Counter(
            PREFIX + "refusals",
            "Rebalance recommendations Spot Guard declined to act on, by reason",
            ["reason"],
            registry=registry,
        )
        self.paused = Gauge(
            PREFIX + "paused", "1 while Spot Guard is paused and starts no replacement", registry=registry
        )
        self.replacement_failures = Counter(
            PREFIX + "replacement_failures",
            "Replacements that ended Failed (the node kept only a PreferNoSchedule taint), by reason",
            ["reason"],
            registry=registry,
        )
        self.outside_changes = Counter(
            PREFIX + "outside_capacity_changes",
            "Times a group's desired capacity was found other than Spot Guard's instances and claims justify "
            "(changed by a person or another autoscaler, or above them while the group relaunches an instance EC2 "
            "took back), by group",
            ["asg"],
            registry=registry,
        )
        self.instance_refresh_active = Gauge(
            PREFIX + "instance_refresh_active",
            "1 while an instance refresh of the group is active (Pending, InProgress, Cancelling, RollbackInProgress, "
            "Baking) as Spot Guard last read it, 0 once it read none; rebalance scale-ups and the return to spot "
            "wait meanwhile (controller/checks/instance_refresh.py)",
            ["asg"],
            registry=registry,
        )
        self.launch_failures = Counter(
            PREFIX + "launch_failures",
            "Failed launches seen after a Spot Guard scale-up, by group and category (capacity, quota, configuration, "
            "unknown; controller/checks/launch_failures.py); each made the claim fall back",
            ["asg", "category"],
            registry=registry,
        )
        self.refused_effects = Counter(
            PREFIX + "refused_effects",
            "AWS or node effects Spot Guard refused because what they would touch is not its own (a forged or stale "
            "record), by kind",
            ["kind"],
            registry=registry,
        )
        self.malformed_objects = Counter(
            PREFIX + "malformed_objects",
            "Objects Spot Guard could not read and left alone (an annotation, a replacement or lifecycle record, a "
            "SpotGuardFallbackEvent), by kind and field; each was reported in a Warning or a log line",
            ["kind", "field"],
            registry=registry,
        )
        self.dry_run_actions = Counter(
            PREFIX + "dry_run_actions",
            "Changes observe-only mode (SPOT_GUARD_DRY_RUN) would have made and did not, by action and ASG "
            "(empty for a change not about a group)",
            ["action", "asg"],
            registry=registry,
        )
        self.watch_stalls = Counter(
            PREFIX + "watch_stalls",
            "Watches that delivered nothing within their read timeout and were restarted, by kind",
            ["kind"],
            registry=registry,
        )
        self.queue_messages = Counter(
            PREFIX + "queue_messages",
            "Messages read from the EC2 events queue (SPOT_GUARD_QUEUE_URL) and deleted, by outcome: acted (recorded "
            "on a Node), or why nothing was done (malformed, unknown-type, foreign, old, no-node, unmanaged, "
            "not-replacing)",
            ["outcome"],
            registry=registry,
        )
        self.queue_errors = Counter(
            PREFIX + "queue_errors",
            "Failed reads of the EC2 events queue, by kind (access-denied, missing-queue, throttled, unreachable, "
            "other)",
            ["kind"],
            registry=registry,
        )
        self.queue_readable = Gauge(
            PREFIX + "queue_readable",
            "1 while the leader reads the EC2 events queue, 0 while it cannot (absent without SPOT_GUARD_QUEUE_URL)",
            registry=registry,
        )
        self._fallback_events = _FallbackEventCollector(clock or SystemClock())
        registry.register(self._fallback_events)
        if process_metrics:
            ProcessCollector(registry=registry)
        self._leader_lock = threading.Lock()
        self._leading = False
        for result in DrainResult.ALL:
            self.drains.labels(result)
        for eviction in EvictionResult.ALL:
            self.evictions.labels(eviction)
        for operation in AWS_OPERATIONS:
            self.aws_calls.labels(operation)
            for code in AWS_ACCESS_CODES:
                self.aws_errors.labels(operation, code)
        for refusal in Refusal.ALL:
            self.refusals.labels(refusal)
        for failure in ReplacementFailure.ALL:
            self.replacement_failures.labels(failure)
        for capacity_type in (CapacityType.SPOT, CapacityType.ON_DEMAND):
            self.replacement_ready_seconds.labels(capacity_type)

    # -- label sets ------------------------------------------------------------------------------------------

    def prepare_group_pair(self, spot_asg: str, on_demand_asg: str) -> None:
        """Create the zero series of one spot/on-demand ASG pair (call it for every pair Spot Guard manages)."""
        for asg, capacity_type in ((spot_asg, CapacityType.SPOT), (on_demand_asg, CapacityType.ON_DEMAND)):
            self.scale_up_attempts.labels(asg, capacity_type)
            for result in ScaleUpResult.ALL:
                self.scale_up_results.labels(asg, capacity_type, result)
        for reason in FallbackReason.ALL:
            self.fallbacks.labels(spot_asg, on_demand_asg, reason)
        for asg in (spot_asg, on_demand_asg):
            self.outside_changes.labels(asg)
            self.instance_refresh_active.labels(asg)

    # -- recording ------------------------------------------------------------------------------------------

    def eviction(self, pod: object, result: str) -> None:
        """Matches ``controller.effects.drain.Drainer(on_event=...)``: one eviction answer, in this metric's words."""
        self.evictions.labels(_EVICTION_RESULTS.get(str(result), EvictionResult.ERROR)).inc()

    def malformed_object(self, kind: str, field: str) -> None:
        """One object of ``kind`` could not be read because of ``field`` (fits ``WatchCache(on_malformed=...)``;
        the errors of the parsers carry both: ``MalformedObjectError.kind``/``.field``)."""
        self.malformed_objects.labels(kind or "unknown", field or "(whole object)").inc()

    def dry_run_action(self, action: str, asg: str) -> None:
        """One change observe-only mode would have made (``controller.observability.would_act``)."""
        self.dry_run_actions.labels(action, asg).inc()

    def watch_stalled(self, kind: str) -> None:
        self.watch_stalls.labels(kind).inc()

    def drain_finished(self, outcome: str) -> None:
        """One drain ended (``controller.effects.drain.DrainOutcome``): drained, timed_out, or anything else."""
        result = {"drained": DrainResult.SUCCESS, "timed_out": DrainResult.TIMEOUT}.get(str(outcome), DrainResult.ERROR)
        self.drains.labels(result).inc()

    def aws_call(self, operation: str, error_code: str | None) -> None:
        """Count one AWS call attempt; fits ``controller.adapters.aws.AutoScaling(on_call=...)``."""
        self.aws_calls.labels(operation).inc()
        if error_code is not None:
            self.aws_errors.labels(operation, error_code).inc()

    def scale_up_started(self, asg: str, capacity_type: str) -> None:
        self.scale_up_attempts.labels(asg, capacity_type).inc()

    def scale_up_finished(self, asg: str, capacity_type: str, result: str) -> None:
        self.scale_up_results.labels(asg, capacity_type, result).inc()

    def fell_back(self, spot_asg: str, on_demand_asg: str, reason: str) -> None:
        self.fallbacks.labels(spot_asg, on_demand_asg, reason).inc()

    def replacement_ready(self, capacity_type: str, seconds: float) -> None:
        """Observe the time from recommendation to Ready replacement (negative, from skewed clocks, counts as 0)."""
        self.replacement_ready_seconds.labels(capacity_type).observe(max(0.0, seconds))

    def fallback_completed(self, seconds: float) -> None:
        self.fallback_completed_seconds.observe(max(0.0, seconds))

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def outside_change(self, asg: str) -> None:
        self.outside_changes.labels(asg).inc()

    def instance_refresh(self, asg: str, active: bool) -> None:
        self.instance_refresh_active.labels(asg).set(1 if active else 0)

    def launch_failed(self, asg: str, category: str) -> None:
        self.launch_failures.labels(asg, category).inc()

    def refused_effect(self, kind: str) -> None:
        self.refused_effects.labels(kind).inc()

    def replacement_failed(self, reason: str) -> None:
        self.replacement_failures.labels(reason).inc()

    def prepare_queue(self) -> None:
        """Create the zero series of the EC2 events queue (call it when SPOT_GUARD_QUEUE_URL is set)."""
        for outcome in QUEUE_OUTCOMES:
            self.queue_messages.labels(outcome)
        for kind in QUEUE_ERROR_KINDS:
            self.queue_errors.labels(kind)
        self.queue_readable.set(1)

    def queue_message(self, outcome: str) -> None:
        self.queue_messages.labels(outcome).inc()

    def queue_failed(self, kind: str) -> None:
        self.queue_errors.labels(kind).inc()

    def set_queue_readable(self, readable: bool) -> None:
        self.queue_readable.set(1 if readable else 0)

    def set_paused(self, paused: bool) -> None:
        self.paused.set(1 if paused else 0)

    def set_leader(self, leading: bool) -> None:
        """Record this replica's leadership; a change from the previous value counts as a transition."""
        with self._leader_lock:
            changed = leading != self._leading
            self._leading = leading
            self.leader.set(1 if leading else 0)
            if changed:
                self.leader_transitions.inc()

    def set_fallback_events(self, events: Iterable[FallbackEventAge]) -> None:
        """Replace the SGFE snapshot the phase gauges are computed from (the leader's view of all SGFEs)."""
        self._fallback_events.replace(events)

    def clear_fallback_events(self) -> None:
        """Forget the snapshot (on losing the leadership, so a standby exports no stale ages)."""
        self._fallback_events.replace(())

    # -- exposition -------------------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric (serve it with content type ``CONTENT_TYPE``)."""
        return generate_latest(self.registry)


class _FallbackEventCollector(Collector):
    """The SGFE gauges, computed at scrape time from the last snapshot and the clock."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._events: tuple[FallbackEventAge, ...] = ()

    def replace(self, events: Iterable[FallbackEventAge]) -> None:
        snapshot = tuple(events)
        with self._lock:
            self._events = snapshot

    def describe(self) -> Iterator[Metric]:
        yield from self._families(())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            events = self._events
        yield from self._families(events)

    def _families(self, events: tuple[FallbackEventAge, ...]) -> Iterator[Metric]:
        by_phase = GaugeMetricFamily(
            PREFIX + "fallback_events", "SpotGuardFallbackEvents that exist, by status.phase", labels=["phase"]
        )
        oldest = GaugeMetricFamily(
            PREFIX + "oldest_unfinished_fallback_event_age_seconds",
            "Seconds since the fallback of the oldest SpotGuardFallbackEvent not yet Completed or Failed (0 if none)",
        )
        phase_age = GaugeMetricFamily(
            PREFIX + "fallback_event_phase_age_seconds",
            "Seconds each unfinished SpotGuardFallbackEvent has been in its current phase",
            labels=["name", "phase"],
        )
        counts = dict.fromkeys(SGFE_PHASES, 0)
        unfinished = [event for event in events if event.phase not in SGFE_FINISHED_PHASES]
        for event in events:
            counts[event.phase] = counts.get(event.phase, 0) + 1
        for phase, count in counts.items():
            by_phase.add_metric([phase], count)
        if unfinished:
            now = self._clock.now()
            oldest.add_metric([], max(0.0, *((now - e.fallback_at).total_seconds() for e in unfinished)))
            for event in sorted(unfinished, key=lambda e: e.name):
                phase_age.add_metric([event.name, event.phase], max(0.0, (now - event.phase_since).total_seconds()))
        else:
            oldest.add_metric([], 0.0)
        yield by_phase
        yield oldest
        yield phase_age
