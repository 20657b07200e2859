"""The SGFE lifecycle controller: from on-demand back to spot, safely.

The replacement controller creates a SpotGuardFallbackEvent (SGFE) when it falls back to on-demand: the spot
ASG then sits at its original size - 1 and the on-demand ASG at + 1. This controller takes each SGFE from
there (``controller.lifecycle.decisions`` has the phase rules): it waits, watches the spot ASG until it is
stable, scales it back up by one (the bounded capacity check), runs the safety checks, then drains the
on-demand node and terminates exactly its instance with decrement (``controller.lifecycle.scale_down``): net drift 0.

One pass (``reconcile``) lists the SGFEs, reads AWS once per ASG, takes the Node view from the informer's
cache, and moves each event one step; every write goes through ``FallbackEvents`` with the resourceVersion
read, and every AWS change is recorded on the SGFE before it is made (``controller.model.progress``), so a
successor neither repeats nor skips a step. Scale-downs run as jobs on the workers' ``sgfe`` lane. A
``NotLeaderError`` from the fenced AWS calls stops the controller: the new leader carries on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Sequence

from kubernetes.client.exceptions import ApiException

from controller import failpoints
from controller.adapters.aws import AwsError
from controller.adapters.kube import KubeRequests, list_all
from controller.adapters.sgfe_store import ConflictError, FallbackEvents
from controller.capacity.hooks import HookCache
from controller.capacity.owner import CapacityOwner, Change, ChangesHeldError, Plan
from controller.capacity.refreshes import RefreshCache
from controller.checks.arrivals import GroupClaims
from controller.checks.drain_plan import DrainOptions
from controller.checks.launch_hooks import HELD_STATES, hook_wait
from controller.checks.safety import CheckResult, run_safety_checks
from controller.checks.spot_health import SpotHealth, assess, ready_instances
from controller.clock import Cancellation, Clock
from controller.config import Settings
from controller.effects.drain import Drainer, DrainError
from controller.effects.node_writes import NodeGoneError, NodeWriter
from controller.effects.protection import event_key, protect, protected_for, release, tainted_by_spot_guard
from controller.fence import NotLeaderError
from controller.lifecycle.decisions import (
    AbortScaleDown,
    Action,
    BeginScaleDown,
    CheckRefreshes,
    CheckSafety,
    ConfirmReturn,
    Delete,
    Facts,
    RequestReturn,
    RunScaleDown,
    Transition,
    Wait,
    Withdraw,
    decide,
)
from controller.lifecycle.scale_down import AbortKind, ScaleDown, ScaleDownContext
from controller.model.asg import Activity, InstanceRefresh
from controller.model.claim import Claim, Claims
from controller.model.node import NodeView
from controller.model.progress import ANNOTATION, LifecycleProgress, MalformedRecordError, parse_time
from controller.model.sgfe import FallbackEvent, Phase
from controller.observability.reporters import LifecycleReporter, LogLifecycleReporter, SafeLifecycleReporter
from controller.workers import Workers, run_passes

log = logging.getLogger(__name__)

#: Phases that need the spot ASG's state.
WATCHING = (Phase.MONITORING, Phase.READY_FOR_SCALE_DOWN, Phase.SCALING_DOWN)
#: After an unexpected error in a pass or a scale-down, wait this long before trying again.
ERROR_RETRY = 5.0
#: Crash points (controller.failpoints) in the order an event reaches them; the crash-safety tests kill the
#: controller at each and check that its successor finishes the event with no AWS step done twice.
LIFECYCLE_POINTS = (
    "lifecycle:monitoring",  # Monitoring written
    "lifecycle:return-requested",  # return intent written, SetDesiredCapacity(spot) not sent
    "lifecycle:return-scaled",  # SetDesiredCapacity(spot) done, not yet confirmed on the record
    "lifecycle:ready",  # ReadyForScaleDown written
    "lifecycle:scaling-down",  # ScalingDown written (the race won), scale-down not claimed
    "lifecycle:drain-claimed",  # owner and drain start recorded, nothing cordoned yet
    "lifecycle:drained",  # node drained, terminate intent not written
    "lifecycle:terminate-requested",  # terminate intent written, TerminateInstanceInAutoScalingGroup not sent
    "lifecycle:terminated",  # instance terminated, Completed not written
)
#: Reached only when a return to spot stays short.
WITHDRAW_POINT = "lifecycle:withdrawing"  # withdraw intent written, the increase not given back yet


def claim_key(event: str) -> str:
    """The claim of an SGFE's return to spot."""
    return f"sgfe/{event}"


_PHASE_POINTS = {Phase.MONITORING: "lifecycle:monitoring", Phase.READY_FOR_SCALE_DOWN: "lifecycle:ready"}


class LifecycleController:
    #: The name it tells the capacity owner once its predecessor's intents are finished.
    RECOVERY = "lifecycle"

    def __init__(
        self,
        *,
        settings: Settings,
        sgfes: FallbackEvents,
        owner: CapacityOwner,
        kube: KubeRequests,
        writer: NodeWriter,
        drainer: Drainer,
        nodes: Callable[[], dict[str, NodeView]],
        clock: Clock,
        identity: str,
        workers: Workers,
        recorder: LifecycleReporter | None = None,
        on_events: Callable[[list[FallbackEvent]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.workers = workers  # the scale-downs run on its ``sgfe`` lane
        self.sgfes = sgfes
        self.owner = owner
        self.asg = owner.asg  # reads only: every change goes through the owner
        self.kube = kube
        self.writer = writer
        self.drainer = drainer
        self.nodes = nodes
        self.clock = clock
        self.identity = identity
        self.on_events = on_events  # e.g. the SGFE gauges: every pass hands over what it listed
        self.recorder: LifecycleReporter = SafeLifecycleReporter(recorder or LogLifecycleReporter())
        self._wake = threading.Event()
        self._hooks = HookCache()  # spot group -> its lifecycle hooks, read when a returned instance is held
        self._refreshes = RefreshCache()  # group -> its active instance refresh, read when a step may wait for it
        self._jobs: dict[str, ScaleDown] = {}  # uid -> running (or finished) scale-down
        self._job_retry_at: dict[str, float] = {}  # uid -> monotonic time before which a failed job is not rerun
        self._next_safety: dict[str, float] = {}  # uid -> monotonic time of the next safety check
        self._foreign: dict[str, tuple[str, float]] = {}  # uid -> (resourceVersion, first seen) of another's scale-down
        self._protected: dict[str, str] = {}  # node -> resourceVersion it had when we protected it
        self._warned: dict[str, str] = {}  # uid -> last warning reported (report once)
        self._recovered = False  # the returns found unconfirmed at the first pass are finished
        owner.claims_from(self.claims)
        self.context = ScaleDownContext(
            settings=settings,
            sgfes=sgfes,
            owner=owner,
            drainer=drainer,
            writer=writer,
            clock=clock,
            recorder=self.recorder,
            identity=identity,
            spot_health=self.spot_health,
            wake=self._wake.set,
        )

    # -- driving ---------------------------------------------------------------------------------------------
    def notify(self, event_type: str = "", node: NodeView | None = None) -> None:
        """Informer callback: something changed; look again soon."""
        self._wake.set()

    def run(self, cancel: Cancellation) -> None:
        """Reconcile until ``cancel`` fires or this process may no longer act (NotLeaderError)."""
        try:
            run_passes("the SGFE lifecycle work", self.reconcile, self._wake, cancel, retry=ERROR_RETRY)
        finally:
            self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop running scale-downs where they are (a successor resumes them)."""
        for job in list(self._jobs.values()):
            job.abort(AbortKind.SHUTDOWN, "the lifecycle controller is stopping")
        for job in list(self._jobs.values()):
            job.join(timeout)

    # -- one pass --------------------------------------------------------------------------------------------
    def reconcile(self) -> float:
        """Move every SGFE along; return seconds until the next pass is due."""
        self._raise_if_deposed()
        events = self.sgfes.list()
        if self.on_events is not None:
            try:
                self.on_events(events)
            except Exception:
                log.exception("reporting the SpotGuardFallbackEvents listed failed; ignoring it")
        self._reap_jobs(events)
        if not self._recovered:
            self._recover(events)
        nodes = self.nodes()
        self._maintain_nodes(events, nodes)
        watching = [e for e in events if e.status.phase in WATCHING]
        try:
            groups, activities = self._read_spot(watching)
        except AwsError as exc:
            log.warning(
                "could not read the spot ASGs of %d SGFE(s): %s; retrying in %gs", len(watching), exc, ERROR_RETRY
            )
            return ERROR_RETRY
        ready = ready_instances(nodes)
        wake = self.settings.lifecycle_poll_interval
        for event in sorted(events, key=lambda e: e.name):
            state = groups.get(event.spec.spot_asg_name)
            held = (
                tuple(
                    i.instance_id
                    for i in state.arrivals.get(claim_key(event.name), ())
                    if i.lifecycle_state in HELD_STATES
                )
                if state is not None
                else ()
            )
            hooks = (
                hook_wait(
                    self._hooks.hooks(self.asg, self.clock, event.spec.spot_asg_name),
                    self.settings.capacity_check_timeout,
                )
                if held
                else None
            )
            facts = Facts(
                now=self.clock.now(),
                spot=state.group if state is not None else None,
                activities=tuple(activities.get(event.spec.spot_asg_name, ())),
                ready_instances=ready,
                return_ready=state.ready(claim_key(event.name), ready) if state is not None else (),
                return_short=state.short.get(claim_key(event.name), 0) if state is not None else 0,
                return_arrivals=tuple(i.instance_id for i in state.arrivals.get(claim_key(event.name), ()))
                if state is not None
                else (),
                return_held=held,
                hooks=hooks,
            )
            if event.status.phase in WATCHING and event.spec.spot_asg_name not in groups:
                self._warn_once(
                    event,
                    "UnknownSpotASG",
                    f"spot ASG {event.spec.spot_asg_name} does not exist (DescribeAutoScalingGroups does not return "
                    "it); fix spec.spotASGName or delete the event",
                )
            wake = min(wake, self._reconcile_event(event, facts))
        self._raise_if_deposed()
        return max(0.0, wake)

    def _recover(self, events: Sequence[FallbackEvent]) -> None:
        """Finish every return to spot a predecessor recorded but did not confirm, before any new change."""
        for event in events:
            try:
                progress = LifecycleProgress.of(event.annotations)
            except MalformedRecordError:
                continue
            if progress.return_in_flight and not progress.return_confirmed and event.status.phase == Phase.MONITORING:
                try:
                    self._confirm_return(event, progress, Facts(now=self.clock.now()))
                except (AwsError, ApiException, ConflictError) as exc:
                    log.warning("finishing the return to spot of %s failed: %s; the pass retries it", event.name, exc)
                    return
        self._recovered = True
        self.owner.recovered(self.RECOVERY)

    def _reconcile_event(self, event: FallbackEvent, facts: Facts) -> float:
        try:
            record = LifecycleProgress.of(event.annotations)
        except MalformedRecordError as exc:
            if self._warn_once(event, "MalformedLifecycleRecord", str(exc)):
                self.recorder.malformed(exc.kind or "SpotGuardFallbackEvent", exc.field or ANNOTATION)
            return self.settings.lifecycle_poll_interval
        try:
            action = decide(event, record, facts, self.settings)
            if isinstance(action, CheckRefreshes):
                facts = dataclasses.replace(facts, refreshes=self._active_refreshes(event))
                action = decide(event, record, facts, self.settings)
            if isinstance(action, CheckSafety):
                due = self._next_safety.get(event.uid, 0.0) - self.clock.monotonic()
                if due > 0:
                    return due
                results = self._safety_checks(event)
                action = decide(event, record, dataclasses.replace(facts, safety=tuple(results)), self.settings)
            return self._apply(event, record, action, facts)
        except NotLeaderError:
            raise
        except ConflictError as exc:
            log.info("%s; re-reading it on the next pass", exc)
            return 0.0
        except (AwsError, ApiException, DrainError, NodeGoneError, MalformedRecordError) as exc:
            self._warn_once(event, "LifecycleStepFailed", f"{_describe_error(exc)}; retrying in {ERROR_RETRY:g}s")
            return ERROR_RETRY

    def _active_refreshes(self, event: FallbackEvent) -> tuple[InstanceRefresh, ...]:
        """The active instance refreshes of the event's spot and on-demand groups (each read at most once per
        ``REFRESHES_MAX_AGE``)."""
        groups = dict.fromkeys((event.spec.spot_asg_name, event.spec.on_demand_asg_name))
        found = (self._refreshes.active(self.asg, self.clock, group) for group in groups if group)
        return tuple(refresh for refresh in found if refresh is not None)

    # -- applying decisions ----------------------------------------------------------------------------------
    def _apply(self, event: FallbackEvent, record: LifecycleProgress, action: Action, facts: Facts) -> float:
        if isinstance(action, Wait):
            return action.seconds
        if isinstance(action, Transition):
            self._transition(event, action)
            return action.wake_in
        if isinstance(action, RequestReturn):
            return self._request_return(event, action, facts)
        if isinstance(action, ConfirmReturn):
            return self._confirm_return(event, action.record, facts)
        if isinstance(action, Withdraw):
            return self._withdraw(event, action, facts)
        if isinstance(action, BeginScaleDown):
            return self._begin_scale_down(event, action)
        if isinstance(action, RunScaleDown):
            return self._run_scale_down(event, record)
        if isinstance(action, AbortScaleDown):
            return self._abort_scale_down(event, record, action)
        if isinstance(action, Delete):
            self.sgfes.delete(event)
            log.info("deleted SpotGuardFallbackEvent %s/%s: %s", event.namespace, event.name, action.why)
            return self.settings.lifecycle_poll_interval
        return self.settings.lifecycle_poll_interval  # a Check* twice cannot happen

    def _transition(self, event: FallbackEvent, action: Transition) -> FallbackEvent:
        if action.record is not None:
            event = self._annotate(event, action.record)
        written = self.sgfes.update_status(event, action.status)
        if written.status.phase != event.status.phase:
            self.recorder.phase_changed(written, event.status.phase, written.status.phase)
            if written.status.phase in _PHASE_POINTS and event.status.phase != Phase.SCALING_DOWN:
                failpoints.hit(_PHASE_POINTS[written.status.phase])
        if action.reason:
            self.recorder.sgfe_event(written, action.kind, action.reason, action.note)
        else:
            log.info("SpotGuardFallbackEvent %s/%s: %s", event.namespace, event.name, action.status.message)
        return written

    def _annotate(self, event: FallbackEvent, record: LifecycleProgress) -> FallbackEvent:
        return self.sgfes.annotate(event, {ANNOTATION: record.to_json()})

    def _request_return(self, event: FallbackEvent, action: RequestReturn, facts: Facts) -> float:
        asg = event.spec.spot_asg_name
        written: list[FallbackEvent] = []

        def intent(plan: Plan) -> int:  # intent before effect: the return's change, written on the event
            if not plan.granted:
                return 0
            change = plan.change(1)
            record = action.record.replace(
                return_target=change.target,
                return_before=change.before,
                return_change=change.token,
                return_known=tuple(sorted(plan.group.instance_ids())),
            )
            written.append(self._annotate(event, record))
            failpoints.hit("lifecycle:return-requested")
            return 1

        try:
            read, change = self.owner.raise_by(asg, 1, intent)
        except ChangesHeldError as exc:
            log.info("SpotGuardFallbackEvent %s/%s: return to spot waits: %s", event.namespace, event.name, exc)
            return self.settings.capacity_poll_interval
        if change is None or not written:
            group = read.group
            reason = (
                f"spot ASG {asg} does not exist"
                if group is None
                else f"spot ASG {asg} is at its MaxSize {group.max_size}, so it cannot grow back"
            )
            log.warning("SpotGuardFallbackEvent %s/%s: no return to spot: %s", event.namespace, event.name, reason)
            return self.settings.lifecycle_poll_interval
        failpoints.hit("lifecycle:return-scaled")
        event = written[0]
        record = LifecycleProgress.of(event.annotations)
        event = self._annotate(event, record.replace(return_confirmed=True))
        self._transition(
            event,
            Transition(
                action.status, "SpotReturnRequested", f"spot ASG {asg} desired {change.before} -> {change.target}"
            ),
        )
        return self.settings.capacity_poll_interval

    def _confirm_return(self, event: FallbackEvent, record: LifecycleProgress, facts: Facts) -> float:
        assert record.return_target is not None
        self.owner.finish(
            Change(event.spec.spot_asg_name, record.return_before, record.return_target, record.return_change)
        )
        self._annotate(event, record.replace(return_confirmed=True))
        return 0.0

    def _withdraw(self, event: FallbackEvent, action: Withdraw, facts: Facts) -> float:
        if LifecycleProgress.of(event.annotations) != action.record:
            event = self._annotate(event, action.record)  # intent before effect
            failpoints.hit(WITHDRAW_POINT)
        asg = event.spec.spot_asg_name
        gave = self.owner.give_back(asg, claim_key(event.name))
        if not gave.done:
            return self.settings.capacity_poll_interval  # an instance of the return still to drain: again later
        event = self._annotate(event, action.record.cleared_return())
        self._transition(event, Transition(action.status, "SpotStillShort", action.note, "Warning"))
        wait = (
            _seconds_until(action.record.next_return_at, facts)
            if action.record.next_return_at
            else self.settings.lifecycle_poll_interval
        )
        return min(self.settings.lifecycle_poll_interval, max(0.0, wait))

    # -- claims ----------------------------------------------------------------------------------------------
    def claims(self) -> Claims:
        """The returns to spot in flight (one instance each) and the spot instances returns brought."""
        open_: list[Claim] = []
        bound: set[str] = set()
        for event in self.sgfes.list():
            # The on-demand instance is bound by the replaced node's record while it exists (and that record is held
            # until no older claim is open); only the spot instance a return brought is bound by nothing else.
            try:
                progress = LifecycleProgress.of(event.annotations)
            except MalformedRecordError:
                continue
            if progress.returned_instance:
                bound.add(progress.returned_instance)
            elif progress.return_target is not None:
                open_.append(
                    Claim(
                        claim_key(event.name),
                        event.spec.spot_asg_name,
                        1,
                        frozenset(progress.return_known),
                        progress.return_requested_at,
                        withdrawing=progress.withdraw_target is not None,
                        taken=frozenset(progress.withdraw_instances),
                    )
                )
        return Claims(tuple(open_), frozenset(bound))  # the Ready instances come with the replacement's claims

    # -- safety checks ---------------------------------------------------------------------------------------
    def _safety_checks(self, event: FallbackEvent) -> list[CheckResult]:
        node = event.spec.on_demand_node_name
        nodes = list_all(self.kube, "/api/v1/nodes")
        pods = list_all(self.kube, "/api/v1/pods")
        pdbs = list_all(self.kube, "/apis/policy/v1/poddisruptionbudgets")
        results = run_safety_checks(
            node,
            nodes,
            pods,
            pdbs,
            buffer=self.settings.utilisation_buffer,
            options=DrainOptions(delete_emptydir_data=self.settings.delete_emptydir_data),
        )
        self._next_safety[event.uid] = self.clock.monotonic() + self.settings.safety_retry_interval
        for result in results:
            reason = "SafetyCheckPassed" if result.passed else "SafetyCheckFailed"
            kind = "Normal" if result.passed else "Warning"
            self.recorder.sgfe_event(event, kind, reason, f"{result.name}: {result.message}")
        return results

    # -- scale-down ------------------------------------------------------------------------------------------
    def _begin_scale_down(self, event: FallbackEvent, action: BeginScaleDown) -> float:
        try:
            written = self.sgfes.update_status(event, action.status)
        except ConflictError as exc:
            current = self.sgfes.find(event.name)
            state = (
                "deleted"
                if current is None
                else f"{current.status.phase}, scaleDownInitiated={str(current.status.scale_down_initiated).lower()}"
            )
            log.warning("%s; re-read it: %s. Stepping back: another controller handles the scale-down", exc, state)
            self.recorder.sgfe_event(
                event,
                "Normal",
                "ScaleDownSteppedBack",
                f"{self.identity} lost the race to start the scale-down (resourceVersion {event.resource_version} "
                f"changed; the event is now {state}); not acting on it",
            )
            if current is not None:
                self._foreign[event.uid] = (current.resource_version, self.clock.monotonic())
            return self.settings.lifecycle_poll_interval
        self.recorder.phase_changed(written, event.status.phase, written.status.phase)
        self.recorder.sgfe_event(written, "Normal", "ScaleDownInitiated", action.status.message)
        failpoints.hit("lifecycle:scaling-down")
        self._start_job(written)
        return self.settings.lifecycle_poll_interval

    def _start_job(self, event: FallbackEvent) -> None:
        job = ScaleDown(self.context, event)
        self._jobs[event.uid] = job
        self._foreign.pop(event.uid, None)
        job.start(self.workers)

    def _run_scale_down(self, event: FallbackEvent, record: LifecycleProgress) -> float:
        job = self._jobs.get(event.uid)
        if job is not None and job.alive():
            return self.settings.lifecycle_poll_interval
        if self.clock.monotonic() < self._job_retry_at.get(event.uid, 0.0):
            return self._job_retry_at[event.uid] - self.clock.monotonic()
        if not self._may_run(event, record):
            return self.settings.lifecycle_poll_interval
        if record.owner and record.owner != self.identity:
            log.warning(
                "SpotGuardFallbackEvent %s/%s: scale-down owner %s made no progress for %gs; taking it over",
                event.namespace,
                event.name,
                record.owner,
                self.settings.scale_down_takeover,
            )
        self._start_job(event)
        return self.settings.lifecycle_poll_interval

    def _abort_scale_down(self, event: FallbackEvent, record: LifecycleProgress, action: AbortScaleDown) -> float:
        job = self._jobs.get(event.uid)
        if job is not None and job.alive():
            job.abort(AbortKind.RELAPSE, action.reason)
            return self.settings.lifecycle_poll_interval
        if not self._may_run(event, record):
            return self.settings.lifecycle_poll_interval
        ScaleDown(self.context, event).relapse(action.reason)
        return 0.0

    def _may_run(self, event: FallbackEvent, record: LifecycleProgress) -> bool:
        """Run a scale-down someone else owns only once it made no progress (no write) for the takeover time.

        A successor after a crash takes over after that pause; a live owner (the race's winner, or a leader
        being deposed) keeps it. Two controllers never both reach AWS: its calls are fenced by the Lease.
        """
        if record.owner in ("", self.identity):
            return True
        now = self.clock.monotonic()
        seen = self._foreign.get(event.uid)
        if seen is None or seen[0] != event.resource_version:
            self._foreign[event.uid] = (event.resource_version, now)
            return self.settings.scale_down_takeover <= 0
        return now - seen[1] >= self.settings.scale_down_takeover

    def _reap_jobs(self, events: Sequence[FallbackEvent]) -> None:
        """Abort the scale-downs of deleted events; note failed ones; surface a lost leadership."""
        live = {e.uid for e in events}
        for uid, job in list(self._jobs.items()):
            if job.alive():
                if uid not in live:
                    job.abort(AbortKind.DELETED, "the event was deleted by hand")
                continue
            del self._jobs[uid]
            if job.not_leader is not None:
                raise job.not_leader
            if job.failed:
                self._job_retry_at[uid] = self.clock.monotonic() + ERROR_RETRY
        for table in (self._job_retry_at, self._next_safety, self._foreign, self._warned):
            for uid in [u for u in table if u not in live]:
                del table[uid]

    def _raise_if_deposed(self) -> None:
        for job in self._jobs.values():
            if job.not_leader is not None:
                raise job.not_leader

    # -- nodes -----------------------------------------------------------------------------------------------
    def _maintain_nodes(self, events: Sequence[FallbackEvent], nodes: dict[str, NodeView]) -> None:
        """Protect the nodes of active events from the autoscaler; release nodes whose event is gone or Failed."""
        by_key = {event_key(e.namespace, e.name): e for e in events}
        for event in events:
            if event.status.phase not in (Phase.PENDING, Phase.MONITORING, Phase.READY_FOR_SCALE_DOWN):
                continue  # a scale-down protects its node itself (a stale list must not undo its release)
            node = nodes.get(event.spec.on_demand_node_name)
            key = event_key(event.namespace, event.name)
            if node is None or protected_for(node) == key or self._protected.get(node.name) == node.resource_version:
                continue
            try:
                protect(self.writer, node.name, key)
                self._protected[node.name] = node.resource_version
            except NodeGoneError:
                continue
            except ApiException as exc:
                log.warning("could not protect node %s for %s: %s; trying again next pass", node.name, key, exc.reason)
        busy = {job.node for job in self._jobs.values() if job.alive()}
        for view in nodes.values():
            owner_key = protected_for(view)
            if owner_key is None or view.name in busy:
                continue  # a running scale-down releases its node itself
            if owner_key.split("/", 1)[0] != self.sgfes.namespace:
                continue  # another namespace's controller looks after it
            owner = by_key.get(owner_key)
            if owner is None or owner.status.phase == Phase.FAILED:
                log.info("node %s is protected for %s, which is %s: releasing it", view.name, owner_key, _state(owner))
                self._release(view.name, keep_protection=False)
            elif tainted_by_spot_guard(view) and owner.status.phase in (Phase.PENDING, Phase.MONITORING):
                log.info("node %s still carries the scale-down taint of %s: removing it", view.name, owner_key)
                self._release(view.name, keep_protection=True)

    def _release(self, node: str, *, keep_protection: bool) -> None:
        try:
            release(self.writer, self.drainer, node, keep_protection=keep_protection)
        except (ApiException, DrainError) as exc:
            log.warning("could not release node %s: %s; trying again next pass", node, exc)

    # -- facts -----------------------------------------------------------------------------------------------
    def _read_spot(self, events: Iterable[FallbackEvent]) -> tuple[dict[str, GroupClaims], dict[str, list[Activity]]]:
        names = sorted({e.spec.spot_asg_name for e in events})
        if not names:
            return {}, {}
        groups = self.owner.describe(names)
        activities = {name: self.asg.activities(name) if name in groups else [] for name in names}
        return groups, activities

    def spot_health(self, event: FallbackEvent) -> SpotHealth:
        """A fresh verdict on the event's spot ASG (used by a scale-down just before terminating)."""
        name = event.spec.spot_asg_name
        group = self.asg.describe_groups([name]).get(name)
        activities = self.asg.activities(name) if group is not None else []
        return assess(group, activities, ready_instances(self.nodes()), name)

    def _warn_once(self, event: FallbackEvent, reason: str, message: str) -> bool:
        """Report ``message`` about ``event`` unless it was the last one reported; True if reported now."""
        if self._warned.get(event.uid) == message:
            return False
        self._warned[event.uid] = message
        log.warning("SpotGuardFallbackEvent %s/%s: %s", event.namespace, event.name, message)
        self.recorder.sgfe_event(event, "Warning", reason, message)
        return True


def _seconds_until(text: str, facts: Facts) -> float:
    return (parse_time("next return attempt", text) - facts.now).total_seconds()


def _state(event: FallbackEvent | None) -> str:
    return "deleted" if event is None else event.status.phase


def _describe_error(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"Kubernetes API answered HTTP {exc.status} {exc.reason}"
    return str(exc)
