"""Where the controllers report what they decide: Kubernetes Events, metrics and log lines in production
(wired by ``controller.app.run``), log lines only by default (unit tests).

Every call must be quick and must not raise. The lifecycle's ``phase_changed`` is called synchronously, in the
thread that wrote the new phase, right after the write succeeded.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Protocol

from controller.checks.instance_refresh import REBALANCE_WAIT_MAX
from controller.model.asg import InstanceRefresh
from controller.model.sgfe import FallbackEvent
from controller.observability import tracing
from controller.observability.events import EventRecorder, node_ref, sgfe_ref
from controller.observability.metrics import FallbackEventAge, Metrics
from nodewatch import annotations as contract

log = logging.getLogger("controller.replacement")
lifecycle_log = logging.getLogger("controller.lifecycle")

#: The start of every replacement Event's message in observe-only mode: the decision is real, its effects were not.
OBSERVE_ONLY_PREFIX = "observe-only (nothing was changed): "
#: The reason of the Warning Event about an active instance refresh that replacements wait for.
REFRESH_REASON = "InstanceRefreshActive"

# The controller's refusal reasons, in the metric's vocabulary.
_REFUSALS = {
    "malformed-annotation": "malformed_annotation",
    "malformed-record": "malformed_annotation",
    "stale-annotation": "malformed_annotation",
    "no-provider-id": "no_instance_id",
    "not-in-a-group": "not_in_configured_group",
    "unconfigured-group": "not_in_configured_group",
    "unknown-asg": "not_in_configured_group",
    "capacity-rebalance": "capacity_rebalance_enabled",
    "paused": "paused",
}


class ReplacementReporter(Protocol):
    """Where the replacement controller reports its decisions."""

    def node_event(self, node: str, kind: str, reason: str, message: str) -> None: ...

    def refused(self, reason: str) -> None: ...

    def scale_up(self, asg: str, capacity_type: str, result: str) -> None: ...

    def fallback(self, spot_asg: str, on_demand_asg: str, reason: str) -> None: ...

    def launch_failed(self, asg: str, category: str) -> None: ...

    def replacement_ready(self, capacity_type: str, seconds: float) -> None: ...

    def replacement_failed(self, reason: str) -> None: ...

    def outside_change(self, group: str, desired: int, justified: int, claims: tuple[str, ...]) -> None: ...

    def refused_effect(self, what: str, message: str) -> None: ...

    def instance_refresh(self, group: str, refresh: InstanceRefresh | None, nodes: tuple[str, ...]) -> None: ...

    def malformed(self, kind: str, field: str) -> None: ...


def refresh_message(refresh: InstanceRefresh, nodes: tuple[str, ...]) -> str:
    """What the Event about an active refresh says: the group, the refresh, what waits and what to do."""
    return (
        f"instance refresh {refresh.refresh_id} of ASG {refresh.group} is {refresh.status}: the rebalance "
        f"replacement of {', '.join(nodes)} waits for it (at most {REBALANCE_WAIT_MAX:.0f} s; interruptions never "
        "wait); let it finish, or cancel it (aws autoscaling cancel-instance-refresh) to replace at once"
    )


class LogReplacementReporter:
    """A ReplacementReporter that only logs (unit tests, and the fallback when Events cannot be written)."""

    def node_event(self, node: str, kind: str, reason: str, message: str) -> None:
        level = logging.WARNING if kind == "Warning" else logging.INFO
        log.log(level, "node %s: %s: %s", node, reason, message)

    def refused(self, reason: str) -> None:
        return None

    def scale_up(self, asg: str, capacity_type: str, result: str) -> None:
        return None

    def fallback(self, spot_asg: str, on_demand_asg: str, reason: str) -> None:
        return None

    def launch_failed(self, asg: str, category: str) -> None:
        return None

    def replacement_ready(self, capacity_type: str, seconds: float) -> None:
        return None

    def replacement_failed(self, reason: str) -> None:
        return None

    def outside_change(self, group: str, desired: int, justified: int, claims: tuple[str, ...]) -> None:
        log.warning(
            "ASG %s: desired capacity is %d, but Spot Guard's instances and open claims justify %d: someone else "
            "changed it, or an instance left without a decrement (EC2 took it back, a health check, a refresh) and "
            "the group is launching one in its place",
            group,
            desired,
            justified,
        )

    def refused_effect(self, what: str, message: str) -> None:
        log.warning("refused %s: %s", what, message)

    def instance_refresh(self, group: str, refresh: InstanceRefresh | None, nodes: tuple[str, ...]) -> None:
        if refresh is not None and nodes:
            log.warning("ASG %s: %s", group, refresh_message(refresh, nodes))

    def malformed(self, kind: str, field: str) -> None:
        return None


class KubeReplacementReporter:
    """The production ``ReplacementReporter``: every decision becomes an Event on its Node, a metric and a log line."""

    def __init__(self, events: EventRecorder, metrics: Metrics, *, observe_only: bool = False) -> None:
        self.events = events
        self.metrics = metrics
        #: observe-only mode (SPOT_GUARD_DRY_RUN): every message says that its decision changed nothing
        self.prefix = OBSERVE_ONLY_PREFIX if observe_only else ""
        self._refreshes_reported: set[str] = set()  # refresh ids whose Event was written

    def node_event(self, node: str, kind: str, reason: str, message: str) -> None:
        message = self.prefix + message
        level = logging.WARNING if kind == "Warning" else logging.INFO
        log.log(level, "node %s: %s: %s", node, reason, message, extra={"node": node, "reason": reason})
        self.events.record(node_ref(node), kind, reason, message)

    def refused(self, reason: str) -> None:
        self.metrics.refused(_REFUSALS.get(reason, reason.replace("-", "_")))

    def scale_up(self, asg: str, capacity_type: str, result: str) -> None:
        if result == "attempt":
            self.metrics.scale_up_started(asg, capacity_type)
        else:
            self.metrics.scale_up_finished(asg, capacity_type, result)

    def fallback(self, spot_asg: str, on_demand_asg: str, reason: str) -> None:
        self.metrics.fell_back(spot_asg, on_demand_asg, reason)

    def launch_failed(self, asg: str, category: str) -> None:
        self.metrics.launch_failed(asg, category)

    def replacement_ready(self, capacity_type: str, seconds: float) -> None:
        self.metrics.replacement_ready(capacity_type, seconds)

    def replacement_failed(self, reason: str) -> None:
        self.metrics.replacement_failed(reason)

    def outside_change(self, group: str, desired: int, justified: int, claims: tuple[str, ...]) -> None:
        log.warning(
            "ASG %s: desired capacity is %d, but Spot Guard's instances and open claims justify %d: someone else "
            "changed it, or an instance left without a decrement (EC2 took it back, a health check, a refresh) and "
            "the group is launching one in its place (open claims: %s)",
            group,
            desired,
            justified,
            ", ".join(claims) or "none",
            extra={"asg": group},
        )
        self.metrics.outside_change(group)

    def refused_effect(self, what: str, message: str) -> None:
        log.warning("refused %s: %s", what, message)
        self.metrics.refused_effect(what.split(" ", 1)[0])

    def instance_refresh(self, group: str, refresh: InstanceRefresh | None, nodes: tuple[str, ...]) -> None:
        """The group's refresh as last read: the gauge always; while ``nodes`` wait for it, a Warning Event once per
        refresh id, on the first of them (a Node: an ASG has no Kubernetes object to carry it)."""
        self.metrics.instance_refresh(group, refresh is not None)
        if refresh is None or not nodes or refresh.refresh_id in self._refreshes_reported:
            return
        self._refreshes_reported.add(refresh.refresh_id)
        message = self.prefix + refresh_message(refresh, nodes)
        log.warning("ASG %s: %s", group, message, extra={"asg": group, "reason": REFRESH_REASON})
        self.events.record(node_ref(nodes[0]), "Warning", REFRESH_REASON, message)

    def malformed(self, kind: str, field: str) -> None:
        self.metrics.malformed_object(kind, field)


class KubeLifecycleReporter:
    """The production ``LifecycleReporter``: Events on the SGFE, metrics, a log line and a span per phase change
    (in the fallback's trace, whose context the SGFE carries)."""

    def __init__(self, events: EventRecorder, metrics: Metrics) -> None:
        self.events = events
        self.metrics = metrics
        self._phase_since: dict[tuple[str, str], dt.datetime] = {}  # (name, phase) -> first seen in it

    def observe(self, events: list[FallbackEvent]) -> None:
        """Keep the SGFE gauges (by phase, age of the oldest unfinished, time in phase) current."""
        now = dt.datetime.now(dt.UTC)
        ages = []
        seen = set()
        for event in events:
            key = (event.name, event.status.phase)
            seen.add(key)
            try:
                fallback_at = contract.parse_time("timestamp", event.spec.timestamp)
            except contract.MalformedAnnotationError:
                fallback_at = now
            since = self._phase_since.setdefault(key, now if event.status.phase != "Pending" else fallback_at)
            ages.append(FallbackEventAge(event.name, event.status.phase, fallback_at, since))
        for key in list(self._phase_since):
            if key not in seen:
                del self._phase_since[key]
        self.metrics.set_fallback_events(ages)

    def sgfe_event(self, event: FallbackEvent, kind: str, reason: str, message: str) -> None:
        level = logging.WARNING if kind == "Warning" else logging.INFO
        lifecycle_log.log(
            level, "SpotGuardFallbackEvent %s: %s: %s", event.name, reason, message, extra={"sgfe": event.name}
        )
        self.events.record(sgfe_ref(event.name, event.namespace, event.uid), kind, reason, message)
        with tracing.span(
            reason,
            tracing.carrier_from_annotations(event.annotations),
            sgfe=event.name,
            node=event.spec.on_demand_node_name,
            instance=event.spec.on_demand_instance_id,
            asg=event.spec.on_demand_asg_name,
        ) as step:
            step.outcome(kind.lower())

    def phase_changed(self, event: FallbackEvent, old: str, new: str) -> None:
        self._phase_since[(event.name, new)] = dt.datetime.now(dt.UTC)
        lifecycle_log.info(
            "SpotGuardFallbackEvent %s: phase %s -> %s", event.name, old, new, extra={"sgfe": event.name}
        )
        with tracing.span(
            "phase-change",
            tracing.carrier_from_annotations(event.annotations),
            sgfe=event.name,
            node=event.spec.on_demand_node_name,
            instance=event.spec.on_demand_instance_id,
            asg=event.spec.spot_asg_name,
            from_phase=old,
            to_phase=new,
        ) as step:
            step.outcome(new)
        if new == "Completed" and event.spec.timestamp:
            started = contract.parse_time("timestamp", event.spec.timestamp)
            self.metrics.fallback_completed((dt.datetime.now(dt.UTC) - started).total_seconds())

    def malformed(self, kind: str, field: str) -> None:
        self.metrics.malformed_object(kind, field)


class LifecycleReporter(Protocol):
    def sgfe_event(self, event: FallbackEvent, kind: str, reason: str, message: str) -> None:
        """An Event about ``event``: ``kind`` Normal or Warning, a CamelCase ``reason``, a sentence."""
        ...

    def phase_changed(self, event: FallbackEvent, old: str, new: str) -> None:
        """``event`` (as written) moved from phase ``old`` to ``new``."""
        ...

    def malformed(self, kind: str, field: str) -> None:
        """An object of ``kind`` could not be read because of ``field`` (the malformed-objects metric)."""
        ...


class LogLifecycleReporter:
    """Logs only (unit tests, and the default when nothing is wired)."""

    def sgfe_event(self, event: FallbackEvent, kind: str, reason: str, message: str) -> None:
        level = logging.WARNING if kind == "Warning" else logging.INFO
        lifecycle_log.log(level, "SpotGuardFallbackEvent %s/%s: %s: %s", event.namespace, event.name, reason, message)

    def phase_changed(self, event: FallbackEvent, old: str, new: str) -> None:
        lifecycle_log.info("SpotGuardFallbackEvent %s/%s: phase %s -> %s", event.namespace, event.name, old, new)

    def malformed(self, kind: str, field: str) -> None:
        return None


class SafeLifecycleReporter:
    """Wraps a recorder so that its failures never break the lifecycle work."""

    def __init__(self, inner: LifecycleReporter) -> None:
        self.inner = inner

    def sgfe_event(self, event: FallbackEvent, kind: str, reason: str, message: str) -> None:
        try:
            self.inner.sgfe_event(event, kind, reason, message)
        except Exception:
            lifecycle_log.exception(
                "recording event %s for SpotGuardFallbackEvent %s failed; ignoring it", reason, event.name
            )

    def phase_changed(self, event: FallbackEvent, old: str, new: str) -> None:
        try:
            self.inner.phase_changed(event, old, new)
        except Exception:
            lifecycle_log.exception(
                "recording phase %s -> %s of SpotGuardFallbackEvent %s failed", old, new, event.name
            )

    def malformed(self, kind: str, field: str) -> None:
        try:
            self.inner.malformed(kind, field)
        except Exception:
            lifecycle_log.exception("counting a malformed %s (%s) failed; ignoring it", kind, field)
