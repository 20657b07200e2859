"""The scale-down of one SGFE's on-demand node (phase ScalingDown), a job on the ``sgfe`` lane, crash-safe.

Steps (the seed's Phase 7), each recorded on the SGFE before the next one that changes AWS:

1. claim: ``owner`` and ``drain_started_at`` in the lifecycle record (optimistic: a loser steps back);
2. taint ``spotguard.io/scale-down`` and cordon the node, keep the autoscaler protection on it;
3. drain it with kubectl-drain semantics (``controller.effects.drain``), bounded by ``drain_timeout`` counted from
   ``drain_started_at`` (so a successor does not start the clock over), and wait until its pods are gone;
   a node re-created or uncordoned meanwhile is cordoned and drained again;
4. check the spot ASG once more, then record ``terminate_requested_at`` (intent);
5. TerminateInstanceInAutoScalingGroup for exactly the SGFE's instance with ShouldDecrementDesiredCapacity
   (never SetDesiredCapacity(desired - 1), which lets AWS pick the instance);
6. ``finished_at``, then status Completed.

A drain that does not finish in time (a PodDisruptionBudget that never allows the eviction) or is refused
ends in Failed with the reason; the node is uncordoned and untainted and the instance kept. The controller
aborts a running scale-down when the spot ASG relapses (rolled back to Monitoring), when the SGFE is deleted
(node released, nothing written) or at shutdown (left as is: a successor resumes it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import threading
from collections.abc import Callable

from controller import failpoints
from controller.adapters.sgfe_store import ConflictError, FallbackEvents
from controller.capacity.owner import CapacityOwner, Outcome
from controller.checks.drain_plan import DrainOptions, PodRef, plan_drain
from controller.checks.left_undecremented import Owes
from controller.checks.spot_health import SpotHealth
from controller.clock import Cancellation, Clock
from controller.config import Settings, format_duration
from controller.effects.drain import Drainer, DrainError, DrainOutcome, DrainResult
from controller.effects.node_writes import NodeGoneError, NodeWriter
from controller.effects.protection import SCALE_DOWN_TAINT, cordon_and_taint, event_key, protect, release
from controller.fence import NotLeaderError
from controller.lifecycle.decisions import relapse_status
from controller.model.asg import instance_id_from_provider_id
from controller.model.progress import ANNOTATION, LifecycleProgress, format_time, parse_time
from controller.model.sgfe import FallbackEvent, Phase, Status
from controller.observability.reporters import LifecycleReporter
from controller.workers import Workers

log = logging.getLogger(__name__)

#: The ``Workers`` lane scale-downs run on, and the key of an event's job there.
LANE = "sgfe"


def job_key(event: str) -> str:
    return f"scale-down/{event}"


#: A successor resuming a drain whose time is up still gets this long (at most drain_timeout) to confirm it.
MIN_DRAIN_ATTEMPT = 10.0
#: Drain rounds when the node keeps changing under the drain (re-created, uncordoned by hand).
MAX_DRAIN_ROUNDS = 3


class AbortKind(enum.StrEnum):
    RELAPSE = "spot ASG relapsed"
    DELETED = "SpotGuardFallbackEvent deleted"
    SHUTDOWN = "controller shutting down"


class EventGoneError(RuntimeError):
    """The SGFE was deleted (or replaced by another of the same name) while its scale-down ran."""


class SteppedBackError(RuntimeError):
    """Another controller owns the scale-down now; this one stops without touching anything."""


class NotYetError(RuntimeError):
    """A step must wait (the group has not launched in place of the instance that left it, say): the scale-down
    stops where it is and resumes on a later pass."""


@dataclasses.dataclass(frozen=True)
class ScaleDownContext:
    """What a scale-down needs; ``spot_health`` re-assesses the event's spot ASG (fresh reads)."""

    settings: Settings
    sgfes: FallbackEvents
    owner: CapacityOwner
    drainer: Drainer
    writer: NodeWriter
    clock: Clock
    recorder: LifecycleReporter
    identity: str
    spot_health: Callable[[FallbackEvent], SpotHealth]
    wake: Callable[[], None] = lambda: None


class ScaleDown:
    """One event's scale-down. ``start(workers)`` runs it as a job of the ``sgfe`` lane; ``abort()`` stops it from
    another thread."""

    def __init__(self, ctx: ScaleDownContext, event: FallbackEvent) -> None:
        self.ctx = ctx
        self.name = event.name
        self.uid = event.uid
        self.key = event_key(event.namespace, event.name)
        self.node = event.spec.on_demand_node_name
        self.cancel = Cancellation()
        self.not_leader: NotLeaderError | None = None
        self.failed = False  # ended by an unexpected error: the controller retries after a pause
        self._abort: tuple[AbortKind, str] | None = None
        self._lock = threading.Lock()
        self._started = False
        self._done = threading.Event()

    # -- control -------------------------------------------------------------------------------------------
    def start(self, workers: Workers) -> bool:
        """Hand the run to ``workers`` (lane ``sgfe``, one job per event); False if a job of this event runs."""
        self._started = workers.submit(LANE, job_key(self.uid or self.key), self.run)
        if not self._started:
            self._done.set()
        return self._started

    def alive(self) -> bool:
        """Started and not yet ended (a job waiting for a thread of its lane is alive)."""
        return self._started and not self._done.is_set()

    def join(self, timeout: float) -> None:
        if self._started:
            self._done.wait(timeout)

    def abort(self, kind: AbortKind, detail: str) -> None:
        with self._lock:
            if self._abort is None:
                self._abort = (kind, detail)
        self.cancel.cancel(f"{kind}: {detail}")

    @property
    def aborted(self) -> tuple[AbortKind, str] | None:
        with self._lock:
            return self._abort

    # -- the run -------------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        finally:
            self._done.set()

    def _run(self) -> None:
        try:
            self._execute()
        except NotLeaderError as exc:
            self.not_leader = exc
            log.error("scale-down of SpotGuardFallbackEvent %s stopped: %s", self.key, exc)
        except (ConflictError, SteppedBackError) as exc:
            log.warning("scale-down of SpotGuardFallbackEvent %s: %s; stepping back", self.key, exc)
        except NotYetError as exc:
            self.failed = True  # rerun after a while, not at once
            log.info("scale-down of SpotGuardFallbackEvent %s: %s; resuming on a later pass", self.key, exc)
        except EventGoneError:
            self._released_for_deleted_event()
        except Exception:
            self.failed = True
            log.exception(
                "scale-down of SpotGuardFallbackEvent %s (node %s) failed; it resumes on a later pass",
                self.key,
                self.node,
            )
        finally:
            self.ctx.wake()

    def _execute(self) -> None:
        event = self._claim()
        record = LifecycleProgress.of(event.annotations)
        if not record.terminate_requested_at:
            result = self._drain(event, record)
            if self._handled_abort():
                return
            if result is not None and not result.drained:
                self.fail(result.message)
                return
            failpoints.hit("lifecycle:drained")
            health = self.ctx.spot_health(event)
            if not health.healthy:
                self.relapse(health.reason)
                return
            event = self._fresh(owned=True)
            record = LifecycleProgress.of(event.annotations).replace(
                terminate_requested_at=format_time(self.ctx.clock.now()), terminate_by=self.ctx.identity
            )
            event = self.ctx.sgfes.annotate(event, {ANNOTATION: record.to_json()})
            failpoints.hit("lifecycle:terminate-requested")
        note = self._terminate(event)
        failpoints.hit("lifecycle:terminated")
        self._complete(note)

    def _claim(self) -> FallbackEvent:
        event = self._fresh()
        if event.status.phase != Phase.SCALING_DOWN:
            raise SteppedBackError(f"it is {event.status.phase} now, not ScalingDown")
        record = LifecycleProgress.of(event.annotations)
        if record.owner == self.ctx.identity and record.drain_started_at:
            return event
        previous = record.owner
        record = record.replace(
            owner=self.ctx.identity, drain_started_at=record.drain_started_at or format_time(self.ctx.clock.now())
        )
        event = self.ctx.sgfes.annotate(event, {ANNOTATION: record.to_json()})
        failpoints.hit("lifecycle:drain-claimed")
        taken = f" (taking over from {previous})" if previous else ""
        instance = event.spec.on_demand_instance_id or "(from the node's providerID)"
        self.ctx.recorder.sgfe_event(
            event,
            "Normal",
            "ScaleDownStarted",
            f"{self.ctx.identity} scales down on-demand node {self.node}{taken}: taint, cordon, drain within "
            f"{format_duration(self.ctx.settings.drain_timeout)}, then terminate instance {instance} with decrement",
        )
        return event

    def _fresh(self, owned: bool = False) -> FallbackEvent:
        event = self.ctx.sgfes.find(self.name)
        if event is None or (self.uid and event.uid != self.uid):
            raise EventGoneError(self.key)
        if owned and LifecycleProgress.of(event.annotations).owner != self.ctx.identity:
            raise SteppedBackError(f"{LifecycleProgress.of(event.annotations).owner or 'nobody'} owns it now")
        return event

    # -- drain ---------------------------------------------------------------------------------------------
    def _drain(self, event: FallbackEvent, record: LifecycleProgress) -> DrainResult | None:
        """Taint, cordon and drain until the node is empty, within the drain timeout counted from
        ``drain_started_at``. None when the node is gone with nothing left bound to it (nothing to drain).

        A node deleted by hand while pods are still bound to it is waited for (a kubelet re-registers it) until
        those pods are gone or the timeout; a node that comes back uncordoned is cordoned and drained again.
        """
        settings = self.ctx.settings
        started = parse_time("drain started at", record.drain_started_at)
        deadline = started + dt.timedelta(seconds=settings.drain_timeout)
        result: DrainResult | None = None
        rounds = 0
        while not self.cancel.cancelled:
            left = (deadline - self.ctx.clock.now()).total_seconds()
            options = DrainOptions(
                timeout=max(left, min(MIN_DRAIN_ATTEMPT, settings.drain_timeout)),
                delete_emptydir_data=settings.delete_emptydir_data,
            )
            try:
                cordon_and_taint(self.ctx.writer, self.node, event.name)
                protect(self.ctx.writer, self.node, self.key)
                result = self.ctx.drainer.drain(self.node, options, self.cancel)
            except (NodeGoneError, DrainError) as exc:
                if isinstance(exc, DrainError) and exc.status != 404:
                    raise
                bound = [str(PodRef.of(p)) for p in plan_drain(self.ctx.drainer.pods_on(self.node), options).to_evict]
                if not bound:
                    log.info("on-demand node %s of %s no longer exists and no pod is bound to it", self.node, self.key)
                    return None
                if left <= 0:
                    message = (
                        f"node {self.node} was deleted while {len(bound)} pod(s) were still bound to it "
                        f"({', '.join(bound[:5])}) and neither it came back nor they went within the "
                        f"{format_duration(settings.drain_timeout)} drain timeout; check the node's kubelet"
                    )
                    return DrainResult(self.node, DrainOutcome.TIMED_OUT, message, remaining=tuple(bound))
                log.warning(
                    "node %s is gone but %d pod(s) are still bound to it; waiting for it to re-register",
                    self.node,
                    len(bound),
                )
                self.ctx.clock.sleep(options.poll_interval, self.cancel)
                continue
            if not result.drained or self._settled(options):
                return result
            rounds += 1
            if rounds >= MAX_DRAIN_ROUNDS:
                message = f"node {self.node} kept changing during its drain (re-created or uncordoned {rounds} times)"
                return DrainResult(self.node, DrainOutcome.TIMED_OUT, message)
            log.warning(
                "node %s changed during its drain (re-created, uncordoned or new pods); cordoning and draining again",
                self.node,
            )
        return result

    def _settled(self, options: DrainOptions) -> bool:
        """Still cordoned and tainted by us with nothing left to evict, or gone with nothing bound to it (and not
        back a moment later: a kubelet re-registers a Node deleted by hand, uncordoned, and pods may land on it)."""
        for attempt in range(2):
            try:
                node = self.ctx.writer.read(self.node)
                break
            except NodeGoneError:
                if plan_drain(self.ctx.drainer.pods_on(self.node), options).to_evict:
                    return False
                if attempt or self.ctx.clock.sleep(options.poll_interval, self.cancel):
                    return True
        spec = node.get("spec") or {}
        tainted = any(t.get("key") == SCALE_DOWN_TAINT for t in spec.get("taints") or [])
        if not (spec.get("unschedulable") and tainted):
            return False
        plan = plan_drain(self.ctx.drainer.pods_on(self.node), options)
        return not plan.to_evict and not plan.blocked

    # -- endings -------------------------------------------------------------------------------------------
    def _handled_abort(self) -> bool:
        abort = self.aborted
        if abort is None:
            return False
        kind, detail = abort
        if kind is AbortKind.RELAPSE:
            self.relapse(detail)
        elif kind is AbortKind.DELETED:
            self._released_for_deleted_event()
        else:
            log.info("scale-down of %s paused (%s); a successor resumes it", self.key, detail)
        return True

    def relapse(self, reason: str) -> None:
        """Roll back: uncordon, untaint, forget the scale-down, status back to Monitoring."""
        event = self._fresh()
        if event.status.phase != Phase.SCALING_DOWN:
            log.info("SpotGuardFallbackEvent %s is %s already: nothing to roll back", self.key, event.status.phase)
            return
        release(self.ctx.writer, self.ctx.drainer, self.node, keep_protection=True)
        record = LifecycleProgress.of(event.annotations).cleared_scale_down()
        event = self.ctx.sgfes.annotate(event, {ANNOTATION: record.to_json()})
        written = self.ctx.sgfes.update_status(event, relapse_status(event, reason))
        self.ctx.recorder.phase_changed(written, Phase.SCALING_DOWN, Phase.MONITORING)
        self.ctx.recorder.sgfe_event(written, "Warning", "SpotRelapsed", written.status.message)

    def fail(self, reason: str) -> None:
        """Failed, with the reason; the node uncordoned and untainted, the instance kept."""
        release(self.ctx.writer, self.ctx.drainer, self.node, keep_protection=False)
        event = self._fresh(owned=True)
        record = LifecycleProgress.of(event.annotations).replace(finished_at=format_time(self.ctx.clock.now()))
        event = self.ctx.sgfes.annotate(event, {ANNOTATION: record.to_json()})
        instance = event.spec.on_demand_instance_id or "(unnamed)"
        message = (
            f"Scale-down of on-demand node {self.node} failed: {reason}. The node is uncordoned and untainted and "
            f"instance {instance} kept; fix the cause, then delete this event (a Failed event is not retried)"
        )
        written = self.ctx.sgfes.update_status(
            event, dataclasses.replace(event.status, phase=Phase.FAILED, message=message)
        )
        self.ctx.recorder.phase_changed(written, Phase.SCALING_DOWN, Phase.FAILED)
        self.ctx.recorder.sgfe_event(written, "Warning", "ScaleDownFailed", message)

    def _released_for_deleted_event(self) -> None:
        log.warning(
            "SpotGuardFallbackEvent %s was deleted during its scale-down: stopping, releasing node %s "
            "(uncordoned, untainted, instance kept)",
            self.key,
            self.node,
        )
        release(self.ctx.writer, self.ctx.drainer, self.node, keep_protection=False)

    def _terminate(self, event: FallbackEvent) -> str:
        """Terminate exactly the SGFE's instance with decrement (the capacity owner), unless it already left; a
        sentence saying which."""
        asg_name = event.spec.on_demand_asg_name
        instance = event.spec.on_demand_instance_id or self._instance_of_node()
        if not instance:
            raise SteppedBackError(
                f"SpotGuardFallbackEvent {self.key} names no onDemandInstanceID and node {self.node} is gone, so "
                "which instance to terminate is unknown; terminate it by hand and delete the event"
            )
        if LifecycleProgress.of(event.annotations).owed_instance:
            return self._terminate_in_place(event, instance)
        removal = self.ctx.owner.remove(instance, expect_group=asg_name, drain=False)
        if removal.outcome is Outcome.REFUSED:
            raise SteppedBackError(f"not terminating instance {instance}: {removal.message}")
        if removal.outcome is Outcome.ALREADY_GONE:
            return self._terminate_in_place(event, instance)
        note = f"terminated instance {instance} with ShouldDecrementDesiredCapacity (on-demand ASG {asg_name})"
        log.info("SpotGuardFallbackEvent %s: %s", self.key, note)
        self.ctx.recorder.sgfe_event(event, "Normal", "OnDemandInstanceTerminated", note)
        return note

    def _terminate_in_place(self, event: FallbackEvent, left: str) -> str:
        """The on-demand instance left its group before Spot Guard terminated it (an instance refresh, a health
        check, by hand): settle what the group owes for it (``controller.checks.left_undecremented``): terminate
        exactly the instance launched in its place (its intent recorded first), or lower desired capacity for a
        launch the group cannot make, or nothing. A sentence saying which."""
        asg_name = event.spec.on_demand_asg_name
        record = LifecycleProgress.of(event.annotations)
        instance = record.owed_instance
        if not instance:
            owed = self.ctx.owner.settle_left(left, asg_name)
            log.info("SpotGuardFallbackEvent %s: %s", self.key, owed.reason)
            if owed.owes is Owes.WAIT:
                raise NotYetError(owed.reason)
            if owed.owes is not Owes.TERMINATE:
                if owed.owes is Owes.UNKNOWN:
                    self.ctx.recorder.sgfe_event(event, "Warning", "InstanceLeftUndecremented", owed.reason)
                return f"instance {left} had already left on-demand ASG {asg_name}: {owed.reason}"
            event = self._fresh(owned=True)
            record = LifecycleProgress.of(event.annotations).replace(owed_instance=owed.instance)
            event = self.ctx.sgfes.annotate(event, {ANNOTATION: record.to_json()})
            instance = owed.instance
            self.ctx.recorder.sgfe_event(event, "Normal", "InstanceLeftUndecremented", f"{owed.reason}: terminating it")
        removal = self.ctx.owner.remove(instance, expect_group=asg_name, drain=True)
        if removal.outcome in (Outcome.NOT_DRAINED, Outcome.REFUSED):
            raise NotYetError(f"instance {instance}, launched in place of {left}: {removal.message}")
        note = (
            f"instance {left} had already left on-demand ASG {asg_name} without a decrement; drained and terminated "
            f"{instance}, which the group launched in its place, with ShouldDecrementDesiredCapacity"
        )
        self.ctx.recorder.sgfe_event(event, "Normal", "OnDemandInstanceTerminated", note)
        return note

    def _instance_of_node(self) -> str:
        try:
            node = self.ctx.writer.read(self.node)
        except NodeGoneError:
            return ""
        return instance_id_from_provider_id((node.get("spec") or {}).get("providerID", "")) or ""

    def _complete(self, note: str) -> None:
        event = self._fresh(owned=True)
        record = LifecycleProgress.of(event.annotations).replace(finished_at=format_time(self.ctx.clock.now()))
        event = self.ctx.sgfes.annotate(event, {ANNOTATION: record.to_json()})
        message = f"On-demand node {self.node} drained and {note}; scale-down complete"
        status: Status = dataclasses.replace(event.status, phase=Phase.COMPLETED, message=message)
        written = self.ctx.sgfes.update_status(event, status)
        self.ctx.recorder.phase_changed(written, Phase.SCALING_DOWN, Phase.COMPLETED)
        self.ctx.recorder.sgfe_event(written, "Normal", "ScaleDownCompleted", message)
