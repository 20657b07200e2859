"""The replacement controller: from nodewatch's annotation to replacement capacity, and the old node's end.

One pass reads the Node cache (no API polling) and, for every node with Spot Guard's annotations, decides its
next steps from a snapshot (``controller.replacement.decisions``), then applies them. The steps a batch takes
together (the scale-up, the capacity check, the fallback) are applied per claim
(``controller.replacement.scale_up``, ``controller.replacement.capacity_steps``); a node's long steps (drain,
retire, release) run as jobs (``controller.replacement.node_jobs``). Every capacity change goes through the
capacity owner (``controller.capacity.owner``), and every step that changes AWS is written to the node's record
first (intent before effect), so a successor finds where its predecessor stopped.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping, Sequence

from controller.adapters.aws import AwsError
from controller.capacity.owner import ChangesHeldError
from controller.clock import Cancellation
from controller.model.asg import instance_id_from_provider_id
from controller.model.node import NodeView
from controller.model.progress import LifecycleProgress, MalformedRecordError
from controller.model.queue_notice import node_notices
from controller.model.record import FINALIZER, TAINT_KEY, Phase, ReplacementRecord
from controller.replacement import capacity_steps, node_jobs
from controller.replacement.batching import BatchQueues, Queued
from controller.replacement.context import Context
from controller.replacement.decisions import (
    BATCHED,
    Announce,
    BeginReleasing,
    BeginRetiring,
    DrainForInterruption,
    Finish,
    NodeFacts,
    Notice,
    Queue,
    Refuse,
    Release,
    Retire,
    Taint,
    Truth,
    Uncordon,
    Wait,
    decide,
    untrusted,
)
from controller.replacement.record_book import on_demand_claim_key, spot_claim_key
from controller.replacement.scale_up import Batch, record_batch, refresh_waits, scale_up
from controller.workers import run_passes
from nodewatch import annotations as contract

log = logging.getLogger("controller.replacement")

MAX_BATCH = 1000  # nodes one intent record lists (about 150 kB of the Node's 256 kB of annotations)
# A queue's group is read this long before the queue is due, so the read overlaps the wait for quiet.
READ_AHEAD_LEAD = 0.2
GROUPS_REFRESH_AHEAD = 60.0  # the groups' listing is reloaded this long before it goes stale, while nothing waits
IDLE = 30.0  # the longest a pass sleeps when nothing asks for an earlier one
# Passes start at least this far apart when woken by watch events (a burst's 500 Node events make ~20 passes a
# second, not 500): an arrival is seen at most this much later, well inside the batch window.
PASS_GAP = 0.05
#: How soon a rebalance waiting for an instance refresh is looked at again (seconds; the refresh is read at most
#: once per controller.capacity.refreshes.REFRESHES_MAX_AGE, so most looks cost no AWS call).
REFRESH_RECHECK = 5.0


class ReplacementController:
    #: The name it tells the capacity owner once its predecessor's intents are finished.
    RECOVERY = "replacement"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._wake = threading.Event()
        ctx.wake = self._wake.set
        self._queues = BatchQueues(ctx.settings.batch_window, ctx.settings.batch_max_delay, MAX_BATCH)
        self._handoff = threading.Lock()  # the scale-up jobs hand their results to the loop under it
        self._scaling: set[str] = set()  # spot groups with a scale-up job in flight
        self._in_flight: set[str] = set()  # the nodes those jobs took from the queues
        self._sent: list[Batch] = []  # batches whose call was made, members still to record
        self._retry: dict[str, tuple[list[Queued], float]] = {}  # group -> nodes whose scale-up failed, when to retry
        self._refresh_held: set[str] = set()  # groups of _retry whose nodes wait for an instance refresh
        self._quiet = threading.Event()  # no recommendation waits for its call: member records may be written
        self._quiet.set()
        self._node_states: dict[str, tuple[bool, bool]] = {}  # node -> (ready, annotated): notify's memory
        self._next_wait = 0.0  # the earliest a node's decision asked to be looked at again (monotonic)
        self._recovered = False  # the intents found at the first pass are finished
        self._noticed: set[str] = set()  # nodes with an active notice, this pass
        # node -> (its annotations, nodewatch's notices read from them): read again only when they change
        self._parsed: dict[
            str, tuple[Mapping[str, str], contract.NodeNotices | contract.MalformedAnnotationError, Notice | None]
        ] = {}
        ctx.owner.claims_from(ctx.book.claims)

    # -- driving --------------------------------------------------------------------------------------------
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
            run_passes("replacement work", self.reconcile, self._wake, cancel, retry=1.0, min_gap=PASS_GAP)
        finally:
            self._quiet.set()

    # -- one pass -------------------------------------------------------------------------------------------
    def reconcile(self) -> float:
        """Move every node along; return how long to sleep before the next pass (seconds)."""
        ctx = self.ctx
        now = ctx.clock.monotonic()
        wake_at = now + IDLE
        batches = self._visit(now)
        with self._handoff:
            retries, self._retry = self._retry, {}
            held, self._refresh_held = self._refresh_held, set()
            sent, self._sent = self._sent, []
        for asg, (items, retry_at) in retries.items():
            self._queues.put_back(asg, items, retry_at, refresh_held=asg in held)
        for asg in self._queues.due(now):
            if asg not in self._scaling:
                self._start_scale_up(asg, now)
        wake_at = min(wake_at, self._read_ahead(now))
        if not self._queues.waiting() and not self._scaling:
            self._refresh_groups()
        if self._queues.next_due() is None and not self._scaling:
            self._quiet.set()  # nothing waits for a call: the batch records may be written
        else:
            self._quiet.clear()
        # Requests recorded as intent: make sure each call was made. A new owner makes no increase before the first
        # pass has done this for every intent a predecessor left (the scale-ups started above wait for it).
        requested = {batch.batch: batch for batch in [*sent, *batches[Phase.SPOT_REQUESTED]]}
        for batch in requested.values():
            self._record_request(batch)
        for batch in batches[Phase.ON_DEMAND_REQUESTED]:
            capacity_steps.finish_request(ctx, batch, on_demand=True)
        if not self._recovered:
            self._recovered = True
            ctx.owner.recovered(self.RECOVERY)
        next_due = self._queues.next_due()
        if next_due is not None:
            wake_at = min(wake_at, next_due)
        wake_at = min(wake_at, capacity_steps.check(ctx, batches[Phase.SPOT_SCALED_UP], on_demand=False))
        for batch in batches[Phase.SPOT_WITHDRAWING]:
            capacity_steps.withdraw(ctx, batch)
        wake_at = min(wake_at, capacity_steps.check(ctx, batches[Phase.ON_DEMAND_SCALED_UP], on_demand=True))
        return min(wake_at, self._next_wait) - ctx.clock.monotonic()

    def _visit(self, now: float) -> dict[str, list[Batch]]:
        """Decide for every node with something to do, apply the per-node steps, and group the nodes whose next
        step is one per batch by phase, group and batch."""
        ctx = self.ctx
        in_flight = set(self._in_flight)  # before the records: a scale-up writes the intent, then lets go
        entries = ctx.book.entries()
        if len(self._parsed) > 2 * len(entries) + 100:  # forget the nodes that went or lost their annotations
            names = {node.name for node, _, _ in entries}
            self._parsed = {name: seen for name, seen in self._parsed.items() if name in names}
        # A record that does not agree with what AWS and the cluster say is not Spot Guard's: it drives nothing
        # (no call, no drain), holds no claim and covers no node; its node gets a Warning (``decisions.untrusted``).
        truths = self._truths(entries)
        distrusted = frozenset(
            node.name
            for node, record, _ in entries
            if record is not None
            and untrusted(record, instance_id_from_provider_id(node.provider_id) or "", truths.get(node.name, Truth()))
        )
        ctx.book.distrusted = distrusted
        trusted = [(n, r, e) for n, r, e in entries if n.name not in distrusted]
        covered = {
            m.node for _, r, _ in trusted if r is not None and r.phase == Phase.SPOT_REQUESTED for m in r.members
        }
        waiting = self._queues.queued() | in_flight | covered
        pending = self._pending_claims()
        stand_ins = self._stand_ins(trusted)
        grouped: dict[str, dict[tuple[str, str], Batch]] = {phase: {} for phase in BATCHED}
        to_queue: list[tuple[NodeView, ReplacementRecord | None, Queue]] = []
        self._next_wait = now + IDLE
        paused = ctx.paused()
        for node, record, error in entries:
            facts = self._facts(
                node,
                record,
                error,
                waiting=waiting,
                paused=paused,
                pending=pending,
                stand_ins=stand_ins,
                truth=truths.get(node.name, Truth()),
            )
            for action in decide(facts, ctx.settings):
                if isinstance(action, Queue):
                    to_queue.append((node, record, action))
                else:
                    self._apply(node, record, facts, action, now)
        if to_queue:
            self._detect(to_queue, now)
        self._settle_orphans(trusted)
        # The batched steps see each record as it is after this pass's own writes (a drain's mark, say).
        for node, before, error in trusted:
            record = ctx.book.record(node) if before is not None and not error else None
            if record is None or record.phase not in BATCHED:
                continue
            on_demand = record.phase in Phase.ON_DEMAND_CLAIM
            group = record.on_demand_asg if on_demand else record.spot_asg
            key = (group, on_demand_claim_key(record) if on_demand else spot_claim_key(record))
            grouped[record.phase].setdefault(key, Batch(group, record.batch, [])).members.append((node, record))
        # A claim is checked as a whole: not while some of its records are still being written (the request's
        # intent moves last), or a fallback would give back the launches of members it did not see.
        for checked, writing in (
            (Phase.SPOT_SCALED_UP, Phase.SPOT_REQUESTED),
            (Phase.ON_DEMAND_SCALED_UP, Phase.ON_DEMAND_REQUESTED),
        ):
            for key in set(grouped[checked]) & set(grouped[writing]):
                del grouped[checked][key]
        return {phase: list(found.values()) for phase, found in grouped.items()}

    def _facts(
        self,
        node: NodeView,
        record: ReplacementRecord | None,
        error: contract.MalformedAnnotationError | None,
        *,
        waiting: set[str],
        paused: bool,
        pending: dict[str, str],
        stand_ins: dict[str, str],
        truth: Truth,
    ) -> NodeFacts:
        notice: Notice | None = None
        notice_error = ""
        error_field = _field(error) if error else ""
        interrupted = False
        annotated = ""
        notices, active = self._notices_of(node)
        if isinstance(notices, contract.MalformedAnnotationError):
            notice_error = str(notices.on_node(node.name))
            error_field = error_field or _field(notices)
        else:
            notice = active
            interrupted = notices.interruption is not None and notices.interruption.cleared is None
            annotated = notices.instance_id or ""
        instance = instance_id_from_provider_id(node.provider_id) or ""
        stand_in_noticed = False
        if record is not None and record.phase in Phase.REPLACED and record.replacement_node:
            stand_in_noticed = record.replacement_node in self._noticed
        claim_pending = False
        if record is not None and record.terminal and record.replacement_instance and record.replaced_at:
            group = record.on_demand_asg if record.replacement_capacity == "on-demand" else record.spot_asg
            oldest = pending.get(group)
            claim_pending = oldest is not None and oldest < record.replaced_at
        return NodeFacts(
            name=node.name,
            now=self.ctx.clock.now(),
            record=record,
            record_error=str(error) if error else "",
            error_field=error_field,
            notice=notice,
            notice_error=notice_error,
            interrupted=interrupted,
            instance_id=instance_id_from_provider_id(node.provider_id) or "",
            annotated_instance=annotated,
            deleting=node.deleting,
            has_finalizer=FINALIZER in node.finalizers,
            replaced_taint=any(t.get("key") == TAINT_KEY and t.get("effect") == "NoSchedule" for t in node.taints),
            waiting=node.name in waiting,
            job_running=self.ctx.workers.busy(node_jobs.lane_key(node.name)),
            paused=paused,
            claim_pending=claim_pending,
            stands_in_for=stand_ins.get(instance, ""),
            stand_in_noticed=stand_in_noticed,
            announced=self.ctx.memory.announced.get(node.name, ""),
            truth=truth,
        )

    def _truths(self, entries: Sequence[tuple[NodeView, ReplacementRecord | None, object]]) -> dict[str, Truth]:
        """node -> what AWS and the cluster say about what its unended record names: the group (and configured
        pair) of the node's instance, the group of its replacement instance, another record binding that instance,
        and whether the replacement's Node registered after this one. Groups come from the resolver (instances never
        change group: each is looked up once); one that cannot be looked up now is left unknown."""
        ctx = self.ctx
        unended = [(node, record) for node, record, _ in entries if record is not None and not record.terminal]
        if not unended:
            return {}
        own = {node.name: instance_id_from_provider_id(node.provider_id) or "" for node, _ in unended}
        wanted = [*filter(None, own.values()), *(r.replacement_instance for _, r in unended if r.replacement_instance)]
        pairs: dict[str, tuple[str, str]] | None
        try:
            ctx.resolver.prefetch(wanted)
            pairs = {name: (p.spot, p.on_demand) for name, p in ctx.resolver.pairs().items()}
        except AwsError as exc:
            log.debug("could not look up the groups of %d instances named by records: %s", len(wanted), exc)
            pairs = None
        binders: dict[str, list[str]] = {}
        for node, record in unended:
            if record.replacement_instance:
                binders.setdefault(record.replacement_instance, []).append(node.name)
        truths: dict[str, Truth] = {}
        for node, record in unended:
            group = (ctx.resolver.known_group(own[node.name]) or "") if own[node.name] and pairs is not None else ""
            replacement = record.replacement_instance
            replacement_group = bound_by = ""
            if replacement:
                replacement_group = ctx.resolver.known_group(replacement) or ""
                bound_by = next((n for n in binders[replacement] if n != node.name), "")
            truths[node.name] = Truth(
                group=group,
                pair=pairs.get(group) if pairs is not None and group else None,
                replacement_group=replacement_group,
                replacement_bound_by=bound_by,
            )
        return truths

    def _stand_ins(self, entries: Sequence[tuple[NodeView, ReplacementRecord | None, object]]) -> dict[str, str]:
        """instance -> what it stands in for, for the instances that get no replacement of their own: one bound to
        a node whose replacement has not ended, or a new instance of a group with an open claim (it may be that
        claim's arrival). Also remembers which nodes have an active notice (``_noticed``)."""
        stand_ins: dict[str, str] = {}
        self._noticed = set()
        swapped: dict[str, str] = {}  # SGFE -> the node whose on-demand replacement it is
        noticed: dict[str, str] = {}  # instance -> node, of the noticed nodes
        for node, record, _ in entries:
            if record is not None and not record.terminal and record.replacement_instance:
                stand_ins[record.replacement_instance] = f"node {node.name}"
                if record.replacement_capacity == "on-demand" and record.sgfe:
                    swapped[record.sgfe] = node.name
            if self._notices_of(node)[1] is not None:
                self._noticed.add(node.name)
                if instance := instance_id_from_provider_id(node.provider_id):
                    noticed[instance] = node.name
        if swapped:  # a return to spot swapped the on-demand replacement for a spot instance: that one stands in
            for event in self.ctx.sgfes.list():
                if event.name in swapped:
                    try:
                        returned = LifecycleProgress.of(event.annotations).returned_instance
                    except MalformedRecordError:
                        continue
                    if returned:
                        stand_ins[returned] = f"node {swapped[event.name]}"
        claims = self.ctx.owner.claims()
        candidates = [i for i in noticed if i not in stand_ins and i not in claims.bound]
        if claims.open and candidates:
            try:
                self.ctx.resolver.prefetch(candidates)
            except AwsError as exc:
                log.debug("could not look up the groups of %d noticed instances: %s", len(candidates), exc)
            for instance in candidates:
                group = self.ctx.resolver.known_group(instance)
                for claim in claims.on(group or ""):
                    if instance not in claim.known:
                        stand_ins[instance] = f"claim {claim.key} (it may be its new instance)"
                        break
        return stand_ins

    def _settle_orphans(self, entries: Sequence[tuple[NodeView, ReplacementRecord | None, object]]) -> None:
        """Intents whose claim is settled but that still list members without a record of their own."""
        open_claims = {spot_claim_key(r) for _, r, _ in entries if r is not None and r.phase in Phase.SPOT_CLAIM}
        for node, record, _ in entries:
            if (
                record is None
                or not record.members
                or record.spot_target is None
                or record.phase in Phase.SPOT_CLAIM
                or spot_claim_key(record) in open_claims
            ):
                continue
            self.ctx.workers.submit(
                "node", f"orphans/{node.name}", functools.partial(capacity_steps.settle_orphans, self.ctx, node, record)
            )

    def _notices_of(
        self, node: NodeView
    ) -> tuple[contract.NodeNotices | contract.MalformedAnnotationError, Notice | None]:
        """nodewatch's annotations on ``node`` and its active notice, read once per version of its annotations (a
        pass looks at every annotated node)."""
        seen = self._parsed.get(node.name)
        if seen is not None and seen[0] == node.annotations:
            return seen[1], seen[2]
        notices: contract.NodeNotices | contract.MalformedAnnotationError
        try:
            read = node_notices(node.annotations)
        except contract.MalformedAnnotationError as exc:
            notices, notice = exc, None
        else:
            notices, notice = read, Notice.of(read)
        self._parsed[node.name] = (dict(node.annotations), notices, notice)
        return notices, notice

    def _pending_claims(self) -> dict[str, str]:
        """group -> when its oldest open claim was asked for (an ended record keeps its finalizer until then)."""
        oldest: dict[str, str] = {}
        for claim in self.ctx.book.claims().open:
            if claim.group not in oldest or claim.requested_at < oldest[claim.group]:
                oldest[claim.group] = claim.requested_at
        return oldest

    def _apply(
        self, node: NodeView, record: ReplacementRecord | None, facts: NodeFacts, action: object, now: float
    ) -> None:
        ctx = self.ctx
        if isinstance(action, Refuse):
            reported = ctx.refuse_once(node.name, action.reason, action.message, action.field)
            if reported and action.reason == "untrusted-record":
                ctx.reporter.refused_effect(f"replacement record of node {node.name}", action.message)
            return
        if isinstance(action, Announce):
            ctx.announce(node, action.reason, action.notice.trigger, action.notice.identity)
            return
        if isinstance(action, Wait):
            self._next_wait = min(self._next_wait, now + action.seconds)
            return
        assert record is not None  # every other action is about a replacement under way or ended
        if isinstance(action, Taint):
            node_jobs.taint(ctx, node)
        elif isinstance(action, DrainForInterruption):
            node_jobs.drain_for_interruption(ctx, node, record)
        elif isinstance(action, Uncordon):
            node_jobs.uncordon(ctx, node, record)
        elif isinstance(action, Finish):
            node_jobs.finish(ctx, node, record)
        elif isinstance(action, BeginRetiring):
            new = node_jobs.begin(ctx, node, record, Phase.RETIRING)
            if new is not None:
                node_jobs.retire(ctx, node, new, facts.interrupted)
        elif isinstance(action, Retire):
            node_jobs.retire(ctx, node, record, facts.interrupted)
        elif isinstance(action, BeginReleasing):
            new = node_jobs.begin(ctx, node, record, Phase.RELEASING)
            if new is not None:
                node_jobs.release(ctx, node, new, facts.interrupted)
        elif isinstance(action, Release):
            node_jobs.release(ctx, node, record, facts.interrupted)

    # -- detection ------------------------------------------------------------------------------------------
    def _detect(self, found: list[tuple[NodeView, ReplacementRecord | None, Queue]], now: float) -> None:
        ctx = self.ctx
        ids = [i for node, _, _ in found if (i := instance_id_from_provider_id(node.provider_id))]
        try:
            ctx.resolver.prefetch(ids)
        except AwsError as exc:  # each node's own resolve reports it
            log.debug("could not look up the groups of %d instances at once: %s", len(ids), exc)
        for node, _, action in found:
            if now < ctx.memory.retry_at.get(node.name, 0.0):
                continue
            try:
                resolved = ctx.resolver.resolve(node.provider_id)
            except AwsError as exc:
                ctx.refuse_once(node.name, f"aws-{exc.code}", f"could not map the node to its ASG: {exc}")
                ctx.memory.retry_at[node.name] = now + 5.0
                continue
            if not isinstance(resolved, tuple):
                ctx.refuse_once(node.name, resolved.reason, resolved.message)
                continue
            _, pair = resolved
            with ctx.memory.lock:
                ctx.memory.refused.pop(node.name, None)
            item = Queued(node.name, action.notice.trigger, pair, now, action.notice.identity, action.previous)
            if self._queues.add(pair.spot, item):
                log.info(
                    "node %s: %s notice; replacement queued for spot ASG %s",
                    node.name,
                    action.notice.trigger,
                    pair.spot,
                )

    # -- spot scale-ups -------------------------------------------------------------------------------------
    def _start_scale_up(self, asg: str, now: float) -> None:
        self._scaling.add(asg)
        items = self._queues.take(asg)
        self._in_flight.update(item.node for item in items)

        def job() -> None:
            try:
                going, waiting = refresh_waits(self.ctx, asg, items)
                if waiting:  # queued again, not dropped: looked at again after a poll interval, until the bound
                    with self._handoff:
                        self._retry[asg] = (waiting, self.ctx.clock.monotonic() + REFRESH_RECHECK)
                        self._refresh_held.add(asg)
                batch = scale_up(self.ctx, asg, going) if going else None
                if batch is not None:
                    with self._handoff:
                        self._sent.append(batch)
            except ChangesHeldError as exc:
                log.info("spot scale-up of %s waits: %s", asg, exc)
                with self._handoff:
                    self._retry[asg] = (items, self.ctx.clock.monotonic() + self.ctx.settings.batch_window)
            except Exception:
                log.exception("spot scale-up of %s failed; its recommendations are retried", asg)
                with self._handoff:
                    self._retry[asg] = (items, self.ctx.clock.monotonic() + self.ctx.settings.capacity_poll_interval)
            finally:
                self._in_flight.difference_update(item.node for item in items)
                self._scaling.discard(asg)
                self._wake.set()

        if not self.ctx.workers.submit("scale-up", f"scale-up/{asg}", job):
            self._scaling.discard(asg)
            self._in_flight.difference_update(item.node for item in items)
            self._queues.put_back(asg, items, now)

    def _read_ahead(self, now: float) -> float:
        """Ask the owner to read the group of every queue due within ``READ_AHEAD_LEAD``: its scale-up then finds
        the read ready. Returns when the next read is due."""
        next_read = now + IDLE
        for asg in self._queues.waiting():
            due = self._queues.due_at(asg)
            if due is None or asg in self._scaling:
                continue
            if due - READ_AHEAD_LEAD > now:
                next_read = min(next_read, due - READ_AHEAD_LEAD)
                continue
            self.ctx.owner.prefetch(asg, needed_at=due)
        return next_read

    def _refresh_groups(self) -> None:
        """Keep the resolver's listing of the groups fresh while nothing waits (see ``GroupResolver.refresh``)."""
        try:
            self.ctx.resolver.refresh(ahead=GROUPS_REFRESH_AHEAD)
        except AwsError as exc:  # the next detection tries again and reports it on its node
            log.debug("could not list the Auto Scaling groups ahead of need: %s", exc)

    def _record_request(self, batch: Batch) -> None:
        """A SpotRequested batch: make sure its call was made, then write its members' records and confirm it
        (on the records lane, so hundreds of writes never hold up the next batch's call)."""
        ctx = self.ctx
        if batch.batch in ctx.memory.recording or batch.asg in self._scaling:
            return  # its records are being written, or a scale-up of its group is in flight
        if any(ctx.book.record(node) != record for node, record in batch.members):
            return  # moved on since this pass looked
        if not capacity_steps.finish_request(ctx, batch, on_demand=False):
            return
        ctx.memory.recording.add(batch.batch)
        if not ctx.workers.submit("records", f"records/{batch.batch}", lambda: record_batch(ctx, batch, self._quiet)):
            ctx.memory.recording.discard(batch.batch)


def _field(exc: contract.MalformedAnnotationError) -> str:
    """The malformed annotation, and the field of its value when one is named (the metric's ``field`` label)."""
    return f"{exc.key}.{exc.field}" if exc.field else exc.key
