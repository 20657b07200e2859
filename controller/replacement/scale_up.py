"""Closing a queue: one intent record and one spot scale-up for every node it holds, through the capacity owner.

The intent is the record of the batch's first node, listing the others (``members``): one Node write however
large the batch. The owner asks the group for the batch's instances (up to its MaxSize) and makes the call once
the intent is written; the nodes beyond MaxSize go straight to the fallback. The members' own records are
written after the call, a chunk at a time while no recommendation waits for its call (``write_members``); a
successor that finds the intent does the same and never counts its members again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import uuid

from controller import failpoints
from controller.adapters.aws import AwsError
from controller.capacity.owner import ChangesHeldError, Plan
from controller.checks.instance_refresh import Step, refresh_wait
from controller.config import format_duration
from controller.model.asg import instance_id_from_provider_id
from controller.model.node import NodeView
from controller.model.record import Member, Phase, ReplacementRecord
from controller.replacement.batching import Queued
from controller.replacement.context import Context, detection_span, span
from controller.replacement.decisions import RESTARTABLE
from controller.replacement.record_book import Write, spot_claim_key
from nodewatch import annotations as contract

log = logging.getLogger("controller.replacement")

#: Member records the recorder writes between two looks at the queues.
RECORD_CHUNK = 32
#: The longest the recorder defers a chunk while recommendations wait for their call.
QUIET_WAIT = 10.0


@dataclasses.dataclass
class Batch:
    """Nodes waiting on one capacity request (same group, same batch id), with their records."""

    asg: str
    batch: str
    members: list[tuple[NodeView, ReplacementRecord]]

    @property
    def first(self) -> ReplacementRecord:
        return self.members[0][1]

    @property
    def names(self) -> list[str]:
        return [node.name for node, _ in self.members]


def refresh_waits(ctx: Context, asg: str, items: list[Queued]) -> tuple[list[Queued], list[Queued]]:
    """``items`` split into those whose scale-up goes ahead and those that wait for an active instance refresh of
    ``asg`` (``controller.checks.instance_refresh``). The refreshes are read only when a rebalance is among them."""
    if all(item.trigger != "rebalance" for item in items):
        return items, []
    refresh = ctx.memory.refreshes.active(ctx.owner.asg, ctx.clock, asg)
    now = ctx.clock.monotonic()
    go: list[Queued] = []
    wait: list[Queued] = []
    for item in items:
        step = Step.REBALANCE_SCALE_UP if item.trigger == "rebalance" else Step.INTERRUPTION_SCALE_UP
        (wait if refresh_wait(step, refresh is not None, False, now - item.seen).waits else go).append(item)
    ctx.reporter.instance_refresh(asg, refresh, tuple(item.node for item in wait))
    if wait and refresh is not None:
        log.info(
            "spot scale-up of %s for %s waits for instance refresh %s (%s)",
            asg,
            ", ".join(item.node for item in wait),
            refresh.refresh_id,
            refresh.status,
        )
    return go, wait


def scale_up(ctx: Context, asg: str, items: list[Queued]) -> Batch | None:
    """Close ``asg``'s queue. Returns the batch whose call was made (its members' records still to write)."""
    nodes = ctx.nodes()
    present = [(item, nodes[item.node]) for item in items if item.node in nodes]
    if not present:
        return None
    now = ctx.clock.now()
    batch = uuid.uuid4().hex[:12]
    bases = [(node, item, _base(ctx, item, node, batch, now)) for item, node in present]
    standing_in = _standing_in(ctx)
    bases = [
        (node, item, base) for node, item, base in bases if _prior_ok(ctx, node) and base.instance_id not in standing_in
    ]
    if not bases:
        return None
    deadline = contract.format_time(now + dt.timedelta(seconds=ctx.settings.capacity_check_timeout))
    written: dict[str, tuple[NodeView, ReplacementRecord]] = {}
    beyond: list[tuple[NodeView, ReplacementRecord]] = []

    def intent(plan: Plan) -> int:
        spot = bases[: plan.granted]
        beyond.extend((node, base) for node, _, base in bases[plan.granted :])
        while spot:
            (node, _, base), rest = spot[0], spot[1:]
            change = plan.change(len(spot))
            record = base.advance(
                Phase.SPOT_REQUESTED,
                now,
                spot_before=change.before,
                spot_target=change.target,
                spot_change=change.token,
                spot_known=tuple(sorted(plan.group.instance_ids())),
                activity_mark=plan.read.newest_activity,
                deadline_at=deadline,
                members=tuple(Member(n.name, b.instance_id, b.trigger, b.traceparent, b.notice) for n, _, b in rest),
            )
            if ctx.book.write(node.name, _prior(ctx, node), record, node):
                written["intent"] = (node, record)
                ctx.reporter.scale_up(asg, "spot", "attempt")
                failpoints.hit("replacement:spot-requested")
                return len(spot)
            spot = rest  # someone else wrote that node's record, or it is gone: the next node carries the intent
        return 0

    try:
        read, change = ctx.owner.raise_by(asg, len(bases), intent)
    except ChangesHeldError:
        raise  # the loop puts the nodes back in the queue
    except AwsError as exc:
        ctx.reporter.scale_up(asg, "spot", "error")
        ctx.report_aws_error(asg, [node.name for node, _, _ in bases], exc)
        return None  # a written intent stays SpotRequested: a later pass makes the call (``confirm``)
    if read.group is None:
        for node, _, _ in bases:
            ctx.refuse_once(node.name, "unknown-asg", f"spot ASG {asg} does not exist (ValidationError from AWS)")
        return None
    if beyond:  # no room under MaxSize for these: straight to on-demand
        reason = f"spot ASG {asg} is at its MaxSize {read.group.max_size}"
        writes: list[Write] = [
            (n.name, _prior(ctx, n), b.advance(Phase.SPOT_WITHDRAWING, now, fallback_reason=reason), n)
            for n, b in beyond
        ]
        write_all(ctx, writes)
    ctx.wake()
    if change is None or "intent" not in written:
        return None
    node, record = written["intent"]
    failpoints.hit("replacement:spot-scaled")
    with span(record, "spot-scale-up", asg=asg, desired=change.target, nodes=change.amount):
        pass
    ctx.memory.sent.add(batch)
    ctx.memory.deadlines[spot_claim_key(record)] = ctx.clock.monotonic() + ctx.settings.capacity_check_timeout
    ctx.memory.next_poll[asg] = ctx.clock.monotonic()
    log.info(
        "spot ASG %s: desired %d -> %d for %d nodes (batch %s)", asg, change.before, change.target, change.amount, batch
    )
    return Batch(asg, batch, [(node, record)])


def _base(ctx: Context, item: Queued, node: NodeView, batch: str, now: dt.datetime) -> ReplacementRecord:
    instance_id = instance_id_from_provider_id(node.provider_id) or ""
    return ReplacementRecord(
        phase=Phase.DETECTED,
        trigger=item.trigger,
        instance_id=instance_id,
        spot_asg=item.pair.spot,
        on_demand_asg=item.pair.on_demand,
        updated_at=contract.format_time(now),
        batch=batch,
        notice=item.notice,
        requested_at=contract.format_time(now),
        previous=item.previous,
        traceparent=detection_span(node.name, instance_id, item.pair.spot, item.trigger),
    )


def _prior(ctx: Context, node: NodeView) -> ReplacementRecord | None:
    """The record a new replacement replaces: none, or an ended one a new notice follows."""
    return ctx.book.record(node)


def _standing_in(ctx: Context) -> set[str]:
    """Instances bound to a node whose replacement has not ended: they became someone's replacement while queued,
    and get no replacement of their own (``controller.replacement.decisions``)."""
    bound = set()
    for _, record, _ in ctx.book.entries():
        if record is not None and not record.terminal and record.replacement_instance:
            bound.add(record.replacement_instance)
    return bound


def _prior_ok(ctx: Context, node: NodeView) -> bool:
    prior = ctx.book.record(node)
    return prior is None or prior.phase in RESTARTABLE


# -- after the call ----------------------------------------------------------------------------------------


def write_all(ctx: Context, writes: list[Write]) -> list[bool]:
    """Write each record, several at once (a batch's nodes change phase together)."""
    return ctx.workers.run_in_parallel(lambda w: ctx.book.write(*w), writes)


def record_batch(ctx: Context, batch: Batch, quiet: threading.Event) -> None:
    """(records lane) The members' own records, then the intent confirmed (SpotScaledUp)."""
    try:
        orphans = write_members(ctx, batch, quiet)
        confirm(ctx, batch, Phase.SPOT_SCALED_UP, orphans=orphans)
        ctx.memory.sent.discard(batch.batch)
    finally:
        ctx.memory.recording.discard(batch.batch)
        ctx.wake()


def write_members(ctx: Context, batch: Batch, quiet: threading.Event) -> frozenset[str]:
    """Write the own record of every node an intent lists (SpotScaledUp: the call is made), a chunk at a time,
    each once no recommendation waits for its call: hundreds of member records must not hold up a burst's own
    annotations and calls at the API server. Returns the members whose record was not written (the node is gone,
    or another replacement of it is under way): their share of the increase stays listed on the intent until it is
    given back (``controller.replacement.capacity_steps.settle_orphans``)."""
    orphans: set[str] = set()
    nodes = ctx.nodes()
    now = ctx.clock.now()
    writes: list[Write] = []
    for _, intent in batch.members:
        for member in intent.members:
            node = nodes.get(member.node)
            if node is None:
                log.warning(
                    "node %s is gone before its record of batch %s was written; its share of the spot scale-up "
                    "is given back once the batch's claim is settled",
                    member.node,
                    batch.batch,
                )
                orphans.add(member.node)
                continue
            current = ctx.book.record(node)
            if current is not None and current.batch == batch.batch:
                continue  # written already (before a crash, or by this process)
            if current is not None and current.phase not in RESTARTABLE:
                orphans.add(member.node)  # another replacement of this node is under way
                continue
            record = intent.advance(
                Phase.SPOT_SCALED_UP,
                now,
                trigger=member.trigger,
                instance_id=member.instance_id,
                traceparent=member.traceparent,
                previous=current.outcome() if current is not None else "",
                notice=member.notice,
                members=(),
            )
            writes.append((member.node, current, record, node))
    done: list[bool] = []
    for start in range(0, len(writes), RECORD_CHUNK):
        quiet.wait(QUIET_WAIT)
        done.extend(write_all(ctx, writes[start : start + RECORD_CHUNK]))
    for (name, _, record, _), ok in zip(writes, done, strict=True):
        if ok:
            ctx.reporter.node_event(name, "Normal", "SpotScaleUp", scaled_up_message(ctx, record))
        else:
            orphans.add(name)
    return frozenset(orphans)


def confirm(ctx: Context, batch: Batch, confirmed: str, orphans: frozenset[str] = frozenset()) -> None:
    """Move the batch's records from the request (intent) to ``confirmed``: the call is made. ``orphans`` stay
    listed as members: their share is still claimed, to be given back."""
    now = ctx.clock.now()
    writes: list[Write] = [
        (n.name, r, r.advance(confirmed, now, members=tuple(m for m in r.members if m.node in orphans)), n)
        for n, r in batch.members
    ]
    for (name, _, record, _), done in zip(writes, write_all(ctx, writes), strict=True):
        if done and confirmed == Phase.SPOT_SCALED_UP:
            ctx.reporter.node_event(name, "Normal", "SpotScaleUp", scaled_up_message(ctx, record))


def scaled_up_message(ctx: Context, record: ReplacementRecord) -> str:
    return (
        f"scaled spot ASG {record.spot_asg} to desired capacity {record.spot_target} for its replacement "
        f"(batch {record.batch}); waiting up to {format_duration(ctx.settings.capacity_check_timeout)} for an "
        "InService instance and Ready Node"
    )
