"""From nodewatch's annotation to replacement capacity: spot scale-up, bounded capacity check, and
fallback to on-demand; then the old node's retirement.

One reconcile pass reads the Node cache (no API polling), and moves every node's replacement
record one or more steps along (see ``controller.records.Phase``). Each step that changes AWS is
first written to the record (intent), then done, then confirmed; targets are absolute, so a
successor repeating a step after a crash changes nothing. Recommendations that arrive within
``batch_window`` of each other are scaled up with one SetDesiredCapacity per ASG, computed from a
read of the group made while its queue waits to close and used only while current (at most
``READ_AHEAD_MAX_AGE`` old, no capacity change by this process since), so none of this process's own
changes is lost and another writer's only if it lands within that second.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import logging
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from controller import failpoints
from controller.adapters.aws import AutoScaling, AwsError
from controller.adapters.sgfe_store import FallbackEvents
from controller.capacity.groups import GroupResolver, Pair, Refusal
from controller.capacity.removal import Retirer
from controller.checks import capacity_check as capacity
from controller.clock import Cancellation, Clock
from controller.config import Settings, format_duration
from controller.effects.node_writes import NodeGoneError, NodeWriter, RecordChangedError
from controller.model.asg import IN_SERVICE, PENDING_STATES, Group, instance_id_from_provider_id
from controller.model.node import NodeView
from controller.model.record import ANNOTATION, FINALIZER, TAINT_KEY, Member, Phase, ReplacementRecord
from controller.model.sgfe import Spec, Status, event_name
from controller.observability import tracing
from controller.replacement.batching import BatchQueues, Queued
from controller.workers import run_passes
from nodewatch import annotations as contract

log = logging.getLogger(__name__)

MAX_BATCH = 1000  # nodes one intent record lists (about 120 kB of the Node's 256 kB of annotations)
IO_THREADS = 8  # API calls in flight at once: a batch's record writes, reads made alongside each other
SCALERS = 4  # spot groups scaled up at once
QUIET_WAIT = 10.0  # the longest the batch-recorder defers its writes while recommendations wait for their call
RECORD_CHUNK = 4 * IO_THREADS  # member records the batch-recorder writes between two looks at the queues
# A queue's group is read this long before the queue is due, so the read overlaps the wait for quiet; a read is used
# only if no more than READ_AHEAD_MAX_AGE old and no capacity change by this process touched the group since. A queue
# that stays open longer than that after its read (arrivals keep pushing its close back, up to the maximum delay) is
# read again when it next looks due, so at most once per READ_AHEAD_MAX_AGE - READ_AHEAD_LEAD per group.
READ_AHEAD_LEAD = 0.2
READ_AHEAD_MAX_AGE = 1.0
GROUPS_REFRESH_AHEAD = 60.0  # the groups' listing is reloaded this long before it goes stale, while nothing waits
Write = tuple[str, "ReplacementRecord | None", "ReplacementRecord", "NodeView | None"]


class Recorder(Protocol):
    """Where decisions are reported: Kubernetes Events + metrics (controller.observability)."""

    def node_event(self, node: str, kind: str, reason: str, message: str) -> None: ...

    def refused(self, reason: str) -> None: ...

    def scale_up(self, asg: str, capacity_type: str, result: str) -> None: ...

    def fallback(self, spot_asg: str, on_demand_asg: str, reason: str) -> None: ...

    def replacement_ready(self, capacity_type: str, seconds: float) -> None: ...

    def replacement_failed(self, reason: str) -> None: ...


class LogRecorder:
    """A Recorder that only logs (unit tests, and the fallback when Events cannot be written)."""

    def node_event(self, node: str, kind: str, reason: str, message: str) -> None:
        level = logging.WARNING if kind == "Warning" else logging.INFO
        log.log(level, "node %s: %s: %s", node, reason, message)

    def refused(self, reason: str) -> None:
        return None

    def scale_up(self, asg: str, capacity_type: str, result: str) -> None:
        return None

    def fallback(self, spot_asg: str, on_demand_asg: str, reason: str) -> None:
        return None

    def replacement_ready(self, capacity_type: str, seconds: float) -> None:
        return None

    def replacement_failed(self, reason: str) -> None:
        return None


_ON_DEMAND_PHASES = frozenset({Phase.ON_DEMAND_REQUESTED, Phase.ON_DEMAND_SCALED_UP})
# Phases whose next step is taken once per batch (an AWS call for all its nodes), not once per node.
_BATCHED_PHASES = frozenset({Phase.SPOT_REQUESTED, Phase.SPOT_SCALED_UP, Phase.SPOT_WITHDRAWING, *_ON_DEMAND_PHASES})


@dataclasses.dataclass
class _Batch:
    """Nodes waiting on one capacity request (same ASG, same batch id)."""

    asg: str
    batch: str
    members: list[tuple[NodeView, ReplacementRecord]]

    @property
    def first(self) -> ReplacementRecord:
        return self.members[0][1]


@dataclasses.dataclass(frozen=True)
class _ReadAhead:
    """A spot group's description (and newest activity) read while its queue waits to close."""

    started: float  # monotonic
    changes: tuple[int, int]  # AutoScaling.capacity_changes(group) when it started
    groups: concurrent.futures.Future[dict[str, Group]]
    activity_mark: concurrent.futures.Future[str]

    def current(self, now: float, changes: tuple[int, int]) -> bool:
        return changes == self.changes and now - self.started <= READ_AHEAD_MAX_AGE


def _parse_time(text: str) -> dt.datetime:
    return contract.parse_time("record", text)


class ReplacementController:
    def __init__(
        self,
        *,
        settings: Settings,
        asg: AutoScaling,
        resolver: GroupResolver,
        writer: NodeWriter,
        sgfes: FallbackEvents,
        retirer: Retirer,
        nodes: Callable[[], dict[str, NodeView]],
        clock: Clock,
        recorder: Recorder | None = None,
        paused: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.asg = asg
        self.resolver = resolver
        self.writer = writer
        self.sgfes = sgfes
        self.retirer = retirer
        self.nodes = nodes
        self.clock = clock
        self.recorder: Recorder = recorder or LogRecorder()
        self.paused = paused
        self._wake = threading.Event()
        self._queues = BatchQueues(settings.batch_window, settings.batch_max_delay, MAX_BATCH)
        self._sent: set[str] = set()  # spot batches whose SetDesiredCapacity this process sent
        self._instance_nodes: dict[str, str] = {}  # instance -> node, built at most once per pass
        self._node_states: dict[str, tuple[bool, bool]] = {}  # node -> (ready, annotated): notify's memory
        self._pool = concurrent.futures.ThreadPoolExecutor(IO_THREADS, thread_name_prefix="replacement-io")
        self._batch_recorder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batch-recorder")
        self._scalers = concurrent.futures.ThreadPoolExecutor(SCALERS, thread_name_prefix="scale-up")
        # Handed from the scale-up threads to the loop (under _handoff): batches sent, scale-ups to retry.
        self._handoff = threading.Lock()
        self._sent_batches: list[_Batch] = []
        self._retry: dict[str, tuple[list[Queued], float]] = {}  # asg -> (nodes, when)
        self._read_ahead: dict[str, _ReadAhead] = {}  # spot group -> its read under way (taken by its scale-up)
        self._scaling: set[str] = set()  # spot groups with a scale-up in flight
        self._in_flight: set[str] = set()  # the nodes those scale-ups took from the queues
        self._quiet = threading.Event()  # no recommendation is waiting for its call
        self._quiet.set()
        self._recording: set[str] = set()  # spot batches whose records the batch-recorder is writing
        self._refused: dict[str, str] = {}  # node -> last refusal/malformed text (report once)
        self._next_poll: dict[str, float] = {}  # asg -> monotonic time of its next capacity poll
        self._deadlines: dict[str, float] = {}  # batch -> monotonic deadline (this process's clock)
        self._drained_for_interruption: set[str] = set()
        self._retry_after: dict[str, float] = {}  # node -> monotonic time before which we do not retry
        self._drain_attempts: dict[str, int] = {}
        # Records this process wrote that the Node cache may not show yet (the watch lags our writes).
        self._written: dict[str, list[str]] = {}
        self._written_lock = threading.Lock()

    # -- driving ----------------------------------------------------------------------------------
    def notify(self, event_type: str = "", node: NodeView | None = None) -> None:
        """Informer callback: reconcile soon if the change can matter here: a Node with Spot Guard's
        annotations, a Node coming or going, or one becoming Ready or not (a replacement arriving).
        Heartbeats and other writers' changes to quiet Nodes wake nothing."""
        if node is None:
            self._wake.set()
            return
        state = (node.ready and not node.deleting, bool(node.annotations))
        before = self._node_states.pop(node.name, None) if event_type == "DELETED" else None
        if event_type != "DELETED":
            before = self._node_states.get(node.name)
            self._node_states[node.name] = state
        if event_type == "DELETED" or before != state or node.annotations:
            self._wake.set()

    def run(self, cancel: Cancellation) -> None:
        try:
            run_passes("replacement work", self.reconcile, self._wake, cancel, retry=1.0)
        finally:
            self._quiet.set()
            self._batch_recorder.shutdown(wait=True)
            self._scalers.shutdown(wait=True)
            self._pool.shutdown(wait=True)

    # -- one pass ---------------------------------------------------------------------------------
    def reconcile(self) -> float:
        """Move every record along; return how long to sleep before the next pass (seconds)."""
        now = self.clock.monotonic()
        wake_at = now + 30.0
        self._instance_nodes = {}
        batches = self._visit(now)  # phase -> that phase's batches

        # Due scale-ups go to the scale-up threads, one in flight per spot group: a slow AWS call holds up
        # neither the detection of further recommendations nor the other groups.
        with self._handoff:
            retries, self._retry = self._retry, {}
            sent, self._sent_batches = self._sent_batches, []
        for asg, (items, retry_at) in retries.items():
            self._queues.put_back(asg, items, retry_at)
        for asg in self._queues.due(now):
            if asg not in self._scaling:
                self._scaling.add(asg)
                items = self._queues.take(asg)
                self._in_flight.update(item.node for item in items)
                self._scalers.submit(self._scale_up_in_background, asg, items, now)
        wake_at = min(wake_at, self._read_groups_ahead(now))
        if not self._queues.waiting() and not self._scaling:
            self._refresh_groups()
        if self._queues.next_due() is None and not self._scaling:
            self._quiet.set()  # nothing waiting for a call: the batch-recorder may write
        else:
            self._quiet.clear()
        for batch in [*batches[Phase.SPOT_REQUESTED], *sent]:
            self._confirm_request(batch, on_demand=False)
        next_due = self._queues.next_due()
        if next_due is not None:
            wake_at = min(wake_at, next_due)
        wake_at = min(wake_at, self._check_batches(batches[Phase.SPOT_SCALED_UP], on_demand=False))
        for batch in batches[Phase.SPOT_WITHDRAWING]:
            self._withdraw(batch)
        for batch in batches[Phase.ON_DEMAND_REQUESTED]:
            self._confirm_request(batch, on_demand=True)
        wake_at = min(wake_at, self._check_batches(batches[Phase.ON_DEMAND_SCALED_UP], on_demand=True))
        return wake_at - self.clock.monotonic()

    def _visit(self, now: float) -> dict[str, list[_Batch]]:
        """Visit every node with something to do: detect new notices, move single-node phases along, and
        group the nodes whose next step is one per batch (an AWS call) by phase, ASG and batch."""
        # Nodes taken by an in-flight scale-up: read before the records, since a scale-up thread writes the
        # intent (visible to _record at once) before it lets go of its nodes.
        in_flight = set(self._in_flight)
        with self._written_lock:
            written = set(self._written)
        # Only Nodes carrying Spot Guard annotations (or a record this process just wrote) have anything
        # to do: the cache keeps only spotguard.io/ keys, so a quiet Node costs one dict check.
        active = [n for n in self.nodes().values() if n.annotations or n.name in written]
        entries = [(node, self._record(node)) for node in sorted(active, key=lambda n: n.name)]
        # Nodes listed on a batch's intent record already have their share of its scale-up.
        covered = {m.node for _, r in entries if r is not None and r.phase == Phase.SPOT_REQUESTED for m in r.members}
        queued = self._queues.queued() | in_flight
        undetected = [n for n, r in entries if r is None and n.name not in queued and n.name not in covered]
        self._prefetch_groups(undetected)
        for node in undetected:
            self._detect(node, now)
        grouped: dict[str, dict[tuple[str, str], _Batch]] = {phase: {} for phase in _BATCHED_PHASES}
        for node, record in entries:
            if record is None:
                continue
            if record.terminal:
                if FINALIZER in node.finalizers:
                    self._finish(node, record)
                continue
            if record.phase in _BATCHED_PHASES:
                asg = record.on_demand_asg if record.phase in _ON_DEMAND_PHASES else record.spot_asg
                batch = grouped[record.phase].setdefault((asg, record.batch), _Batch(asg, record.batch, []))
                batch.members.append((node, record))
            elif record.phase in Phase.REPLACED:
                self._after_replacement(node, record)
            elif record.phase == Phase.RETIRING:
                self._retire(node, record)
            elif record.phase == Phase.RELEASING:
                self._release(node, record)
            elif record.phase == Phase.DETECTED:
                pair = Pair(record.spot_asg, record.on_demand_asg)
                self._queues.add(record.spot_asg, Queued(node.name, record.trigger, pair, now))
            self._drain_on_interruption(node, record)
        return {phase: list(found.values()) for phase, found in grouped.items()}

    # -- detection --------------------------------------------------------------------------------
    def _prefetch_groups(self, nodes: list[NodeView]) -> None:
        """Learn the ASGs of every node about to be detected in as few AWS calls as possible."""
        ids = [i for n in nodes if (i := instance_id_from_provider_id(n.provider_id))]
        if not ids:
            return
        try:
            self.resolver.prefetch(ids)
        except AwsError as exc:  # each node's own resolve reports it
            log.debug("could not look up the groups of %d instances at once: %s", len(ids), exc)

    def _record(self, node: NodeView) -> ReplacementRecord | None:
        raw = node.annotations.get(ANNOTATION)
        with self._written_lock:
            history = self._written.get(node.name)
            if history:
                if raw == history[-1]:
                    del self._written[node.name]  # the cache caught up with our last write
                elif raw is None or raw in history[:-1]:
                    raw = history[-1]  # the cache still shows an older version we replaced
        if raw is None:
            return None
        try:
            return ReplacementRecord.from_json(raw)
        except contract.MalformedAnnotationError as exc:
            self._refuse_once(node.name, "malformed-record", f"{exc}; fix or remove the annotation by hand")
            return None

    def _refuse_once(self, node: str, reason: str, message: str) -> None:
        if self._refused.get(node) == message:
            return
        self._refused[node] = message
        log.warning("not acting on node %s: %s", node, message)
        self.recorder.node_event(node, "Warning", "SpotGuardRefused", message)
        self.recorder.refused(reason)

    def _detect(self, node: NodeView, now: float) -> None:
        try:
            notices = contract.parse(node.annotations)
        except contract.MalformedAnnotationError as exc:
            self._refuse_once(node.name, "malformed-annotation", str(exc))
            return
        trigger = ""
        if notices.interruption and notices.interruption.cleared is None:
            trigger = "interruption"
        elif notices.rebalance and notices.rebalance.cleared is None:
            trigger = "rebalance"
        if not trigger:
            return
        if node.deleting:
            return
        if self.paused():
            self._refuse_once(node.name, "paused", "Spot Guard is paused (spotguard resume to act on new notices)")
            return
        actual = instance_id_from_provider_id(node.provider_id)
        if notices.instance_id and actual and notices.instance_id != actual:
            self._refuse_once(
                node.name,
                "stale-annotation",
                f"notice annotations name instance {notices.instance_id} but the node is instance {actual}: stale "
                "annotations from an earlier instance; remove them",
            )
            return
        try:
            resolved = self.resolver.resolve(node.provider_id)
        except AwsError as exc:
            self._refuse_once(node.name, f"aws-{exc.code}", f"could not map the node to its ASG: {exc}")
            self._retry_after[node.name] = now + 5.0
            return
        if isinstance(resolved, Refusal):
            self._refuse_once(node.name, resolved.reason, resolved.message)
            return
        _, pair = resolved
        self._refused.pop(node.name, None)
        self._queues.add(pair.spot, Queued(node.name, trigger, pair, now))
        log.info("node %s: %s notice; replacement queued for spot ASG %s", node.name, trigger, pair.spot)

    # -- spot scale-up ----------------------------------------------------------------------------
    def _refresh_groups(self) -> None:
        """Keep the resolver's listing of the groups fresh while nothing waits (see ``GroupResolver.refresh``)."""
        try:
            self.resolver.refresh(ahead=GROUPS_REFRESH_AHEAD)
        except AwsError as exc:  # the next detection tries again and reports it on its node
            log.debug("could not list the Auto Scaling groups ahead of need: %s", exc)

    def _read_groups_ahead(self, now: float) -> float:
        """Start reading the group of every queue due within ``READ_AHEAD_LEAD`` (none in flight, no read under way
        that will still be current when the queue is due): its scale-up then finds the description ready. Returns
        when the next read is due."""
        next_read = now + 30.0
        for asg in self._queues.waiting():
            due = self._queues.due_at(asg)
            if due is None or asg in self._scaling:
                continue
            if due - READ_AHEAD_LEAD > now:
                next_read = min(next_read, due - READ_AHEAD_LEAD)
                continue
            changes = self.asg.capacity_changes(asg)
            with self._handoff:
                under_way = self._read_ahead.get(asg)
                if under_way is not None and under_way.current(due, changes):
                    continue  # still current when the queue is due: one read
                self._read_ahead[asg] = _ReadAhead(
                    started=self.clock.monotonic(),
                    changes=changes,
                    groups=self._pool.submit(self.asg.describe_groups, [asg]),
                    activity_mark=self._pool.submit(self._activity_mark, asg),
                )
        return next_read

    def _read_group(self, asg: str) -> tuple[Group | None, Callable[[], str]]:
        """The group's description and a way to its newest activity's start: the read made ahead if it is
        current (no older than ``READ_AHEAD_MAX_AGE``, no capacity change by this process since), else a fresh
        one. Raises AwsError if the group cannot be read."""
        with self._handoff:
            ahead = self._read_ahead.pop(asg, None)
        if ahead is not None and ahead.current(self.clock.monotonic(), self.asg.capacity_changes(asg)):
            try:
                return ahead.groups.result().get(asg), ahead.activity_mark.result
            except AwsError as exc:
                log.debug("reading spot ASG %s ahead failed (%s); reading it again", asg, exc)
        newest_activity = self._pool.submit(self._activity_mark, asg)  # read alongside the group
        return self.asg.describe_groups([asg]).get(asg), newest_activity.result

    def _scale_up_in_background(self, asg: str, items: list[Queued], now: float) -> None:
        """(scale-up thread) ``_scale_up``; hands the batch sent (or the nodes to retry) back to the loop."""
        try:
            batch = self._scale_up(asg, items, now)
            if batch is not None:
                with self._handoff:
                    self._sent_batches.append(batch)
        except Exception:
            log.exception("spot scale-up of %s failed; its recommendations are retried", asg)
            with self._handoff:
                self._retry[asg] = (items, self.clock.monotonic() + self.settings.capacity_poll_interval)
        finally:
            self._in_flight.difference_update(item.node for item in items)
            self._scaling.discard(asg)
            self._wake.set()

    def _scale_up(self, asg: str, items: list[Queued], now: float) -> _Batch | None:
        """Close ``asg``'s queue with one intent record and one SetDesiredCapacity.

        The intent is the record of the batch's first node, listing the others (``members``): one write
        however large the batch. Their own records are written after the call (``_confirm_request``); a
        successor that finds the intent does the same, and never counts its members again.
        """
        nodes = self.nodes()
        present = [(item, nodes[item.node]) for item in items if item.node in nodes]
        if not present:
            with self._handoff:
                self._read_ahead.pop(asg, None)  # the next queue of this group reads afresh
            return None
        try:
            group, newest_activity = self._read_group(asg)
        except AwsError as exc:
            self._report_aws_error(asg, [item.node for item, _ in present], exc)
            with self._handoff:  # re-queued by the loop
                self._retry[asg] = (items, now + self.settings.capacity_poll_interval)
            return None
        if group is None:
            for item, _ in present:
                self._refuse_once(item.node, "unknown-asg", f"spot ASG {asg} does not exist (ValidationError from AWS)")
            return None
        _, granted = capacity.plan_scale_up(group, len(present))
        now_wall = self.clock.now()
        batch = uuid.uuid4().hex[:12]
        bases = [(node, self._base_record(item, node, batch, now_wall)) for item, node in present]
        spot, beyond_max = bases[:granted], bases[granted:]
        mark = newest_activity() if spot else ""
        deadline = contract.format_time(now_wall + dt.timedelta(seconds=self.settings.capacity_check_timeout))
        intent: tuple[NodeView, ReplacementRecord] | None = None
        while spot and intent is None:
            (node, base), rest = spot[0], spot[1:]
            record = base.advance(
                Phase.SPOT_REQUESTED,
                now_wall,
                spot_target=group.desired + len(spot),
                spot_known=tuple(sorted(group.instance_ids())),
                activity_mark=mark,
                deadline_at=deadline,
                members=tuple(Member(n.name, b.instance_id, b.trigger, b.traceparent) for n, b in rest),
            )
            if self._write(node.name, None, record, node):
                intent = (node, record)
            else:
                spot = rest  # someone else wrote that node's record, or it is gone: the next node carries the intent
        if intent is not None:
            target = intent[1].spot_target or 0
            self.recorder.scale_up(asg, "spot", "attempt")
            failpoints.hit("replacement:spot-requested")
            try:
                with _span(intent[1], "spot-scale-up", asg=asg, desired=target, nodes=len(spot)):
                    self.asg.set_desired_capacity(asg, target)
            except AwsError as exc:
                self.recorder.scale_up(asg, "spot", "error")
                self._report_aws_error(asg, [n.name for n, _ in spot], exc)
                intent = None  # the intent stays SpotRequested: a later pass makes the call
            else:
                failpoints.hit("replacement:spot-scaled")
                self._sent.add(batch)
                self._deadlines[batch] = self.clock.monotonic() + self.settings.capacity_check_timeout
                self._next_poll[asg] = self.clock.monotonic()
                log.info(
                    "spot ASG %s: desired %d -> %d for %d nodes (batch %s)",
                    asg,
                    group.desired,
                    target,
                    len(spot),
                    batch,
                )
        if beyond_max:  # no spot call for these: straight to on-demand
            reason = f"spot ASG {asg} is at its MaxSize {group.max_size}"
            self._write_all(
                [
                    (
                        n.name,
                        None,
                        b.advance(Phase.SPOT_WITHDRAWING, now_wall, fallback_reason=reason, spot_withdraw_target=-1),
                        n,
                    )
                    for n, b in beyond_max
                ]
            )
        self._wake.set()
        return _Batch(asg, batch, [intent]) if intent is not None else None

    def _base_record(self, item: Queued, node: NodeView, batch: str, now: dt.datetime) -> ReplacementRecord:
        instance_id = instance_id_from_provider_id(node.provider_id) or ""
        return ReplacementRecord(
            phase=Phase.DETECTED,
            trigger=item.trigger,
            instance_id=instance_id,
            spot_asg=item.pair.spot,
            on_demand_asg=item.pair.on_demand,
            updated_at=contract.format_time(now),
            batch=batch,
            requested_at=contract.format_time(now),
            traceparent=_detection_span(node.name, instance_id, item.pair.spot, item.trigger),
        )

    def _activity_mark(self, asg: str) -> str:
        """RFC 3339 start of the group's newest scaling activity ("" if none or unreadable)."""
        try:
            newest = self.asg.activities(asg, max_records=1)
        except AwsError as exc:
            log.warning("could not read the scaling activities of %s before scaling it: %s", asg, exc)
            return ""
        if not newest:
            return ""
        return newest[0].start_time.astimezone(dt.UTC).isoformat()

    def _confirm_request(self, batch: _Batch, on_demand: bool) -> None:
        """A SpotRequested / OnDemandRequested record is an intent: make sure its call happened (unless this
        process made it: only if the recorded absolute target is not reached yet), write the records of the
        nodes it lists, then confirm it. A spot batch's records are written by the batch-recorder thread, so
        hundreds of writes never hold up the next batch's call."""
        if not on_demand and (batch.batch in self._recording or batch.asg in self._scaling):
            return  # its records are being written, or a scale-up of its group is in flight
        if any(self._record(node) != record for node, record in batch.members):
            return  # moved on since this pass looked (the batch-recorder just finished it)
        target = (batch.first.on_demand_target if on_demand else batch.first.spot_target) or 0
        if on_demand or batch.batch not in self._sent:
            try:
                group = self.asg.describe_groups([batch.asg]).get(batch.asg)
                if group is not None and group.desired < target:
                    self.asg.set_desired_capacity(batch.asg, target)
            except AwsError as exc:
                self._report_aws_error(batch.asg, [n.name for n, _ in batch.members], exc)
                return
        if on_demand:
            self._confirm(batch, Phase.ON_DEMAND_SCALED_UP)
            return
        self._recording.add(batch.batch)
        self._batch_recorder.submit(self._record_batch, batch)

    def _record_batch(self, batch: _Batch) -> None:
        """(batch-recorder thread) The members' own records, then the intent confirmed; wakes the loop.

        The intent covers its members already, so these writes go a chunk at a time, each once no
        recommendation is waiting for its call (``_write_when_quiet``): in a burst, the API server's time goes to
        the annotations and calls first."""
        try:
            self._write_members(batch)
            self._confirm(batch, Phase.SPOT_SCALED_UP)
            self._sent.discard(batch.batch)
        except Exception:
            log.exception("writing the records of batch %s failed; the next pass tries again", batch.batch)
        finally:
            self._recording.discard(batch.batch)
            self._wake.set()

    def _confirm(self, batch: _Batch, confirmed: str) -> None:
        now = self.clock.now()
        writes: list[Write] = [(n.name, r, r.advance(confirmed, now, members=()), n) for n, r in batch.members]
        for (name, _, record, _), done in zip(writes, self._write_all(writes), strict=True):
            if done and confirmed == Phase.SPOT_SCALED_UP:
                self.recorder.node_event(name, "Normal", "SpotScaleUp", self._scaled_up_message(record))

    def _write_members(self, batch: _Batch) -> None:
        """Write the own record of every node an intent lists (SpotScaledUp: the call is made)."""
        nodes = self.nodes()
        now = self.clock.now()
        writes: list[Write] = []
        for _, intent in batch.members:
            for member in intent.members:
                node = nodes.get(member.node)
                if node is None:
                    log.warning(
                        "node %s is gone before its record of batch %s was written; its share of the spot scale-up "
                        "stays as spare capacity",
                        member.node,
                        batch.batch,
                    )
                    continue
                if self._record(node) is not None:
                    continue  # written already (before a crash, or by this process)
                record = intent.advance(
                    Phase.SPOT_SCALED_UP,
                    now,
                    trigger=member.trigger,
                    instance_id=member.instance_id,
                    traceparent=member.traceparent,
                    members=(),
                )
                writes.append((member.node, None, record, node))
        for (name, _, record, _), done in zip(writes, self._write_when_quiet(writes), strict=True):
            if done:
                self.recorder.node_event(name, "Normal", "SpotScaleUp", self._scaled_up_message(record))

    def _write_when_quiet(self, writes: list[Write]) -> list[bool]:
        """(batch-recorder thread) ``_write_all`` a chunk at a time, each once no recommendation is waiting for its
        call (up to ``QUIET_WAIT``): hundreds of member records must not hold up a burst's own annotations and
        calls at the API server."""
        done: list[bool] = []
        for start in range(0, len(writes), RECORD_CHUNK):
            self._quiet.wait(QUIET_WAIT)
            done.extend(self._write_all(writes[start : start + RECORD_CHUNK]))
        return done

    def _scaled_up_message(self, record: ReplacementRecord) -> str:
        return (
            f"scaled spot ASG {record.spot_asg} to desired capacity {record.spot_target} for its replacement "
            f"(batch {record.batch}); waiting up to {format_duration(self.settings.capacity_check_timeout)} for an "
            "InService instance and Ready Node"
        )

    # -- capacity checks --------------------------------------------------------------------------
    def _check_batches(self, batches: list[_Batch], on_demand: bool) -> float:
        now = self.clock.monotonic()
        wake_at = now + 30.0
        due: dict[str, list[_Batch]] = defaultdict(list)
        for batch in batches:
            deadline = self._deadline(batch, on_demand)
            poll_at = self._next_poll.get(batch.asg, now)
            if now >= poll_at or now >= deadline:
                due[batch.asg].append(batch)
            else:
                wake_at = min(wake_at, poll_at, deadline)
        if not due:
            return wake_at
        try:
            groups = self.asg.describe_groups(sorted(due))  # one call for every ASG due, however many batches
        except AwsError as exc:
            for asg, items in due.items():
                self._report_aws_error(asg, [n.name for b in items for n, _ in b.members], exc)
            return now + self.settings.capacity_poll_interval
        ready_ids = self._ready_instance_ids()
        for asg, items in due.items():
            group = groups.get(asg)
            self._next_poll[asg] = self.clock.monotonic() + self.settings.capacity_poll_interval
            try:
                activities = self.asg.activities(asg)
            except AwsError as exc:
                self._report_aws_error(asg, [n.name for b in items for n, _ in b.members], exc)
                activities = []
            for batch in items:
                if group is None:
                    continue
                wake_at = min(wake_at, self._decide(batch, group, activities, ready_ids, on_demand))
        return wake_at

    def _deadline(self, batch: _Batch, on_demand: bool) -> float:
        cached = self._deadlines.get(batch.batch + (":od" if on_demand else ""))
        if cached is not None:
            return cached
        text = batch.first.on_demand_deadline_at if on_demand else batch.first.deadline_at
        remaining = (_parse_time(text) - self.clock.now()).total_seconds() if text else 0.0
        deadline = self.clock.monotonic() + remaining
        self._deadlines[batch.batch + (":od" if on_demand else "")] = deadline
        return deadline

    def _ready_instance_ids(self) -> set[str]:
        ids = set()
        for node in self.nodes().values():
            instance = instance_id_from_provider_id(node.provider_id)
            if instance and node.ready and not node.deleting:
                ids.add(instance)
        return ids

    def _decide(
        self,
        batch: _Batch,
        group: Group,
        activities: list[Any],
        ready_ids: set[str],
        on_demand: bool,
    ) -> float:
        first = batch.first
        known = set(first.on_demand_known if on_demand else first.spot_known)
        known |= self._assigned_instances()
        requested_at = _parse_time(first.on_demand_requested_at if on_demand else first.requested_at)
        mark = first.on_demand_activity_mark if on_demand else first.activity_mark
        target = (first.on_demand_target if on_demand else first.spot_target) or 0
        decision = capacity.evaluate(
            wanted=len(batch.members),
            group=group,
            known=known,
            ready_instance_ids=ready_ids,
            activities=activities,
            requested_at=requested_at,
            seen_before=_parse_time(mark) if mark else None,
            deadline_monotonic=self._deadline(batch, on_demand),
            now_monotonic=self.clock.monotonic(),
            poll_interval=self.settings.capacity_poll_interval,
            target=target,
        )
        if isinstance(decision, capacity.Wait):
            return decision.until_monotonic
        outcome = "ready" if isinstance(decision, capacity.Ready) else decision.code
        for _, member in batch.members:
            with _span(member, "capacity-check", asg=batch.asg, capacity_type=_kind(on_demand)) as step:
                step.outcome(outcome)
        arrived = decision.instances
        members = sorted(batch.members, key=lambda m: m[0].name)
        capacity_type = "on-demand" if on_demand else "spot"
        for (node, record), instance in zip(members, arrived, strict=False):
            self._mark_ready(node, record, instance, capacity_type)
        if isinstance(decision, capacity.Fallback):
            rest = members[len(arrived) :]
            result = "timeout" if decision.code == "CapacityCheckTimeout" else "no_capacity"
            self.recorder.scale_up(batch.asg, capacity_type, result)
            if on_demand:
                self._on_demand_failed(batch.asg, group, rest, decision.reason)
            else:
                self._fall_back(batch.asg, group, rest, decision.reason, decision.code)
        else:
            self.recorder.scale_up(batch.asg, capacity_type, "success")
        return self.clock.monotonic()

    def _assigned_instances(self) -> set[str]:
        assigned = set()
        for node in self.nodes().values():
            record = self._record(node)
            if record and record.replacement_instance:
                assigned.add(record.replacement_instance)
        return assigned

    def _node_of_instance(self, instance_id: str) -> str:
        if instance_id not in self._instance_nodes:  # index the cache once per pass, not once per instance
            self._instance_nodes = {
                instance: node.name
                for node in self.nodes().values()
                if (instance := instance_id_from_provider_id(node.provider_id))
            }
        return self._instance_nodes.get(instance_id, "")

    def _mark_ready(self, node: NodeView, record: ReplacementRecord, instance: str, capacity_type: str) -> None:
        now = self.clock.now()
        replacement_node = self._node_of_instance(instance)
        phase = Phase.ON_DEMAND_READY if capacity_type == "on-demand" else Phase.SPOT_READY
        changes: dict[str, Any] = {
            "replacement_instance": instance,
            "replacement_node": replacement_node,
            "replacement_capacity": capacity_type,
        }
        if capacity_type == "on-demand":
            sgfe = self._create_fallback_event(record, instance, replacement_node, now)
            failpoints.hit("replacement:event-created")
            changes["sgfe"] = sgfe
        new = record.advance(phase, now, **changes)
        if not self._write(node.name, record, new):
            return
        seconds = (now - _parse_time(record.requested_at)).total_seconds() if record.requested_at else 0.0
        self.recorder.replacement_ready(capacity_type, seconds)
        self.recorder.node_event(
            node.name,
            "Normal",
            "ReplacementReady",
            f"{capacity_type} replacement {instance} (node {replacement_node}) is InService and Ready",
        )
        self._after_replacement(node, new)

    def _create_fallback_event(
        self, record: ReplacementRecord, instance: str, replacement_node: str, now: dt.datetime
    ) -> str:
        requested = _parse_time(record.on_demand_requested_at or record.updated_at)
        name = event_name(int(requested.timestamp()), record.instance_id)
        wait = format_duration(self.settings.minimum_wait_duration)
        with _span(record, "fallback-event", sgfe=name, node=replacement_node, instance=instance):
            pass
        self.sgfes.create(
            name,
            Spec(
                spot_asg_name=record.spot_asg,
                on_demand_asg_name=record.on_demand_asg,
                on_demand_node_name=replacement_node,
                on_demand_instance_id=instance,
                timestamp=contract.format_time(now),
                minimum_wait_duration=wait,
            ),
            Status(message=f"Fallback to on-demand completed, waiting {wait} before monitoring"),
            annotations={tracing.TRACEPARENT_ANNOTATION: record.traceparent} if record.traceparent else None,
        )
        log.info("created SpotGuardFallbackEvent %s for on-demand node %s", name, replacement_node)
        return name

    # -- fallback ---------------------------------------------------------------------------------
    def _fall_back(
        self, asg: str, group: Group, members: list[tuple[NodeView, ReplacementRecord]], reason: str, code: str
    ) -> None:
        if not members:
            return
        # Withdraw the unfulfilled increase: exactly the pending new instances if any, else desired - n.
        withdraw_target = max(group.min_size, group.desired - len(members))
        now = self.clock.now()
        log.warning("spot ASG %s: falling back to on-demand for %s: %s", asg, [n.name for n, _ in members], reason)
        for node, record in members:
            with _span(record, "fallback", node=node.name, asg=asg, on_demand_asg=record.on_demand_asg) as step:
                step.set(reason=reason)
            self.recorder.fallback(
                record.spot_asg, record.on_demand_asg, "timeout" if code == "CapacityCheckTimeout" else "no_capacity"
            )
            self.recorder.node_event(node.name, "Warning", "SpotCapacityShort", f"{reason}; falling back to on-demand")
        new = {"fallback_reason": reason, "spot_withdraw_target": withdraw_target}
        self._write_all([(n.name, r, r.advance(Phase.SPOT_WITHDRAWING, now, **new), None) for n, r in members])
        self._wake.set()

    def _withdraw(self, batch: _Batch) -> None:
        failpoints.hit("replacement:withdrawing")
        target = batch.first.spot_withdraw_target
        if target is not None and target >= 0:
            try:
                group = self.asg.describe_groups([batch.asg]).get(batch.asg)
                if group is not None and group.desired > target:
                    pending = [
                        i.instance_id
                        for i in group.instances
                        if i.lifecycle_state in PENDING_STATES and i.instance_id not in batch.first.spot_known
                    ]
                    excess = group.desired - target
                    for instance in pending[:excess]:  # remove exactly the late launches, never an old node
                        self.asg.terminate_instance(instance, decrement=True)
                        excess -= 1
                    if excess > 0:
                        self.asg.set_desired_capacity(batch.asg, group.desired - (group.desired - target))
                    log.info("spot ASG %s: withdrew the unfulfilled increase (desired -> %d)", batch.asg, target)
            except AwsError as exc:
                self._report_aws_error(batch.asg, [n.name for n, _ in batch.members], exc)
                return
        failpoints.hit("replacement:withdrawn")
        self._request_on_demand(batch)

    def _request_on_demand(self, batch: _Batch) -> None:
        od_asg = batch.first.on_demand_asg
        try:
            group = self.asg.describe_groups([od_asg]).get(od_asg)
        except AwsError as exc:
            self._report_aws_error(od_asg, [n.name for n, _ in batch.members], exc)
            return
        if group is None:
            for node, record in batch.members:
                self._fail(node, record, f"on-demand ASG {od_asg} does not exist")
            return
        target, granted = capacity.plan_scale_up(group, len(batch.members))
        mark = self._activity_mark(od_asg) if granted else ""
        now = self.clock.now()
        deadline = now + dt.timedelta(seconds=self.settings.capacity_check_timeout)
        members = sorted(batch.members, key=lambda m: m[0].name)
        for node, record in members[granted:]:
            self._fail(node, record, f"on-demand ASG {od_asg} is at its MaxSize {group.max_size}")
        intents: list[Write] = [
            (
                node.name,
                record,
                record.advance(
                    Phase.ON_DEMAND_REQUESTED,
                    now,
                    on_demand_target=target,
                    on_demand_known=tuple(sorted(group.instance_ids())),
                    on_demand_requested_at=contract.format_time(now),
                    on_demand_activity_mark=mark,
                    on_demand_deadline_at=contract.format_time(deadline),
                ),
                None,
            )
            for node, record in members[:granted]
        ]
        by_name = {node.name: node for node, _ in members}
        requested = [
            (by_name[name], new)
            for (name, _, new, _), done in zip(intents, self._write_all(intents), strict=True)
            if done
        ]
        if not requested:
            return
        self.recorder.scale_up(od_asg, "on-demand", "attempt")
        failpoints.hit("replacement:on-demand-requested")
        try:
            with _span(requested[0][1], "on-demand-scale-up", asg=od_asg, desired=target, nodes=len(requested)):
                self.asg.set_desired_capacity(od_asg, target)
        except AwsError as exc:
            self.recorder.scale_up(od_asg, "on-demand", "error")
            self._report_aws_error(od_asg, [n.name for n, _ in requested], exc)
            return
        failpoints.hit("replacement:on-demand-scaled")
        self._deadlines[batch.batch + ":od"] = self.clock.monotonic() + self.settings.capacity_check_timeout
        self._next_poll[od_asg] = self.clock.monotonic()
        log.info("on-demand ASG %s: desired %d -> %d", od_asg, group.desired, target)
        now = self.clock.now()
        self._write_all([(n.name, r, r.advance(Phase.ON_DEMAND_SCALED_UP, now), None) for n, r in requested])
        for node, _ in requested:
            self.recorder.node_event(
                node.name,
                "Normal",
                "OnDemandScaleUp",
                f"scaled on-demand ASG {od_asg} from {group.desired} to {target}",
            )

    def _on_demand_failed(
        self, asg: str, group: Group, members: list[tuple[NodeView, ReplacementRecord]], reason: str
    ) -> None:
        if not members:
            return
        target = max(group.min_size, group.desired - len(members))
        try:
            if group.desired > target:
                self.asg.set_desired_capacity(asg, target)
        except AwsError as exc:
            self._report_aws_error(asg, [n.name for n, _ in members], exc)
            return
        for node, record in members:
            self._fail(node, record, f"spot failed ({record.fallback_reason}) and on-demand failed ({reason})")

    def _fail(self, node: NodeView, record: ReplacementRecord, reason: str) -> None:
        """Neither spot nor on-demand: PreferNoSchedule only, so the node is never stranded."""
        with contextlib.suppress(NodeGoneError):
            self.writer.set_taint(node.name, TAINT_KEY, "no-replacement", "PreferNoSchedule")
        self._write(node.name, record, record.advance(Phase.FAILED, self.clock.now(), failed_reason=reason))
        self.recorder.replacement_failed("no_capacity")
        with _span(record, "failed", node=node.name, instance=record.instance_id) as step:
            step.outcome("no_capacity")
            step.set(reason=reason)
        self.recorder.node_event(node.name, "Warning", "ReplacementFailed", f"{reason}; node tainted PreferNoSchedule")
        log.error("node %s: no replacement capacity: %s", node.name, reason)

    # -- after the replacement is Ready -----------------------------------------------------------
    def _after_replacement(self, node: NodeView, record: ReplacementRecord) -> None:
        if not any(t.get("key") == TAINT_KEY and t.get("effect") == "NoSchedule" for t in node.taints):
            with contextlib.suppress(NodeGoneError):
                self.writer.set_taint(node.name, TAINT_KEY, "replaced", "NoSchedule")
        interrupted = record.trigger == "interruption" or self._has_interruption(node)
        if self.settings.retire_policy == "drain" or interrupted:
            new = record.advance(Phase.RETIRING, self.clock.now())
            if self._write(node.name, record, new):
                self._retire(node, new)
            return
        # keep-until-interruption: give the surplus back when no interruption comes within the grace period.
        ready_at = _parse_time(record.updated_at)
        if (self.clock.now() - ready_at).total_seconds() >= self.settings.keep_grace_period:
            new = record.advance(Phase.RELEASING, self.clock.now())
            if self._write(node.name, record, new):
                self._release(node, new)

    def _has_interruption(self, node: NodeView) -> bool:
        try:
            notices = contract.parse(node.annotations)
        except contract.MalformedAnnotationError:
            return False
        return notices.interruption is not None and notices.interruption.cleared is None

    def _retire(self, node: NodeView, record: ReplacementRecord) -> None:
        if self.retirer.busy(node.name) or self.clock.monotonic() < self._retry_after.get(node.name, 0.0):
            return

        def job() -> None:
            failpoints.hit("replacement:retiring")
            with _span(record, "drain", node=node.name, instance=record.instance_id) as step:
                drained = self.retirer.drain(node.name)
                step.outcome("drained" if drained else "incomplete")
            if not drained:
                self._drain_failed(node, record)
                self._wake.set()
                return
            if record.instance_id:
                with _span(record, "termination", node=node.name, instance=record.instance_id, asg=record.spot_asg):
                    self.retirer.terminate(record.instance_id)
            failpoints.hit("replacement:terminated")
            self._write(node.name, record, record.advance(Phase.RETIRED, self.clock.now()))
            self.recorder.node_event(
                node.name,
                "Normal",
                "Retired",
                f"drained and terminated instance {record.instance_id} with decrement; capacity is neutral again",
            )
            self._wake.set()

        self.retirer.submit(node.name, job)

    def _drain_failed(self, node: NodeView, record: ReplacementRecord) -> None:
        """Retry a failed drain a few times; then, unless the node is being interrupted, give up:
        uncordon it and give the replacement back, so nothing stays cordoned or tainted for ever."""
        attempts = self._drain_attempts[node.name] = self._drain_attempts.get(node.name, 0) + 1
        if (
            attempts < self.settings.max_drain_attempts
            or record.trigger == "interruption"
            or (self._has_interruption(node))
        ):
            self._retry_after[node.name] = self.clock.monotonic() + 10.0
            self.recorder.node_event(
                node.name,
                "Warning",
                "DrainIncomplete",
                f"drain attempt {attempts} did not complete (a PodDisruptionBudget or a blocked pod keeps pods on "
                "the node); retrying in 10s",
            )
            return
        reason = (
            f"drain did not complete in {attempts} attempts; node uncordoned and replacement "
            f"{record.replacement_instance} given back instead"
        )
        self.retirer.uncordon(node.name)
        new = record.advance(Phase.RELEASING, self.clock.now(), failed_reason=reason)
        if self._write(node.name, record, new):
            self.recorder.node_event(node.name, "Warning", "DrainAbandoned", reason)
            self._drain_attempts.pop(node.name, None)
        self._wake.set()  # the next pass gives the replacement back (Releasing)

    def _release(self, node: NodeView, record: ReplacementRecord) -> None:
        """Give the replacement back and lift the taint: keep-until-interruption saw no interruption, or the
        old node could not be drained."""
        replacement = record.replacement_instance
        if self.retirer.busy(node.name) or self.clock.monotonic() < self._retry_after.get(node.name, 0.0):
            return
        why = record.failed_reason or (f"no interruption within {format_duration(self.settings.keep_grace_period)}")

        def job() -> None:
            if record.replacement_node and not self.retirer.drain(record.replacement_node):
                self._retry_after[node.name] = self.clock.monotonic() + 10.0
                return
            if replacement:
                self.retirer.terminate(replacement)
            self.writer.remove_taint(node.name, TAINT_KEY)
            self._write(node.name, record, record.advance(Phase.RELEASED, self.clock.now()))
            self.recorder.node_event(
                node.name,
                "Normal",
                "Released",
                f"{why}: taint lifted, replacement {replacement} given back",
            )

        self.retirer.submit(node.name, job)

    def _drain_on_interruption(self, node: NodeView, record: ReplacementRecord) -> None:
        """On an interruption notice, start draining at once (before the 2-minute deadline)."""
        if not self.settings.drain_on_interruption or node.name in self._drained_for_interruption:
            return
        if record.phase in (Phase.RETIRING, *Phase.TERMINAL) or not self._has_interruption(node):
            return
        self._drained_for_interruption.add(node.name)
        self.recorder.node_event(node.name, "Normal", "DrainForInterruption", "interruption notice: draining now")
        self.retirer.submit(node.name, lambda: self._drain_only(node.name))

    def _drain_only(self, node: str) -> None:
        try:
            self.retirer.drain(node)
        finally:
            self._wake.set()  # a retirement may have waited for this drain (the Retirer runs one job per node)

    def _finish(self, node: NodeView, record: ReplacementRecord) -> None:
        self._write(node.name, record, record)

    # -- plumbing ---------------------------------------------------------------------------------
    def _write_all(self, writes: list[Write]) -> list[bool]:
        """``_write`` each, several at once (a batch's nodes change phase together)."""
        if len(writes) <= 1:
            return [self._write(*write) for write in writes]
        return list(self._pool.map(lambda write: self._write(*write), writes))

    def _write(
        self, node: str, expected: ReplacementRecord | None, new: ReplacementRecord, seen: NodeView | None = None
    ) -> bool:
        try:
            self.writer.write_record(node, expected, new, seen)
            with self._written_lock:
                history = self._written.setdefault(node, [expected.to_json()] if expected else [])
                history.append(new.to_json())
                del history[:-8]
        except RecordChangedError as exc:
            log.warning("%s", exc)
            self._forget(node)
            return False
        except NodeGoneError:
            log.info("node %s is gone; its replacement record went with it", node)
            self._forget(node)
            return False
        return True

    def _forget(self, node: str) -> None:
        """Drop what this process wrote for ``node``: the API server's version is the truth again."""
        with self._written_lock:
            self._written.pop(node, None)

    def _report_aws_error(self, asg: str, nodes: Iterable[str], exc: AwsError) -> None:
        hint = {
            "AccessDenied": "grant the controller's IAM role the action (manifests/iam-policy.json)",
            "ValidationError": "check that the ASG exists and its MaxSize allows the change",
            "Throttling": "AWS is rate limiting; Spot Guard retries with backoff",
            "ScalingActivityInProgress": "another scaling activity holds the group; Spot Guard retries",
        }.get(exc.code, "Spot Guard retries on its next pass")
        for node in nodes:
            self.recorder.node_event(node, "Warning", "AWSError", f"{exc} (ASG {asg}); {hint}")
        log.warning("ASG %s: %s; %s", asg, exc, hint)


def in_service(group: Group) -> list[str]:
    return [i.instance_id for i in group.instances if i.lifecycle_state == IN_SERVICE]


def _detection_span(node: str, instance_id: str, asg: str, trigger: str) -> str:
    """Start this replacement's trace; returns its W3C traceparent ("" when tracing is off)."""
    with tracing.span("detection", None, node=node, instance=instance_id, asg=asg, trigger=trigger) as detected:
        return detected.annotations().get(tracing.TRACEPARENT_ANNOTATION, "")


def _kind(on_demand: bool) -> str:
    return "on-demand" if on_demand else "spot"


def _span(record: ReplacementRecord, name: str, **attributes: object) -> Any:
    """A span of this replacement's trace (the detection span's context is kept on the record)."""
    carrier = {"traceparent": record.traceparent} if record.traceparent else None
    attributes.setdefault("instance", record.instance_id)
    return tracing.span(name, carrier, **attributes)
