"""One node's steps after its replacement: retire it, give the replacement back, drain it for an interruption,
uncordon it, take the finalizer off. The long ones (drains) run as jobs of the node lane, one per node.

* Retire: drain (kubectl semantics), then terminate exactly its instance with decrement (the capacity owner),
  then Retired. A drain that never finishes is retried a few times, then abandoned: the node is uncordoned and
  the replacement given back instead (Releasing), unless an interruption is pending.
* Release: give the replacement back through the capacity owner (exactly that instance, drained). An on-demand
  replacement ends its SpotGuardFallbackEvent first, saying why, so the lifecycle never returns spot for it; if
  the lifecycle already swapped it for a spot instance, that one is what goes back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

from controller import failpoints
from controller.adapters.sgfe_store import ConflictError
from controller.capacity.owner import Outcome
from controller.checks.left_undecremented import Owes
from controller.config import format_duration
from controller.effects.node_writes import NodeGoneError
from controller.model.node import NodeView
from controller.model.progress import ANNOTATION as PROGRESS
from controller.model.progress import LifecycleProgress, MalformedRecordError
from controller.model.queue_notice import instance_gone
from controller.model.record import TAINT_KEY, Phase, ReplacementRecord
from controller.model.sgfe import Phase as SgfePhase
from controller.replacement.context import Context, span

log = logging.getLogger("controller.replacement")

#: Seconds before a node's job is tried again after it could not finish.
RETRY = 10.0


def lane_key(node: str) -> str:
    return f"node/{node}"


def submit(ctx: Context, node: str, job: str, run: object) -> None:
    if ctx.clock.monotonic() < ctx.memory.retry_at.get(node, 0.0):
        return
    assert callable(run)
    ctx.workers.submit("node", lane_key(node), run)


def retry_later(ctx: Context, node: str) -> None:
    ctx.memory.retry_at[node] = ctx.clock.monotonic() + RETRY
    ctx.wake()


# -- small steps (on the loop) -----------------------------------------------------------------------------


def taint(ctx: Context, node: NodeView) -> None:
    with contextlib.suppress(NodeGoneError):
        ctx.writer.set_taint(node.name, TAINT_KEY, "replaced", "NoSchedule")


def uncordon(ctx: Context, node: NodeView, record: ReplacementRecord) -> None:
    """Spot Guard cordoned the node and nothing retires it now: make it schedulable again."""
    ctx.drains.uncordon(node.name)
    if ctx.book.write(node.name, record, dataclasses.replace(record, cordoned=False), node):
        ctx.reporter.node_event(node.name, "Normal", "Uncordoned", "no interruption is pending and nothing retires it")


def finish(ctx: Context, node: NodeView, record: ReplacementRecord) -> None:
    """Rewrite the ended record: the finalizer goes with it (``NodeWriter.write_record``)."""
    ctx.book.write(node.name, record, record, node)


def begin(
    ctx: Context, node: NodeView, record: ReplacementRecord, phase: str, **changes: object
) -> ReplacementRecord | None:
    new = record.advance(phase, ctx.clock.now(), **changes)
    return new if ctx.book.write(node.name, record, new, node) else None


# -- drain for an interruption -----------------------------------------------------------------------------


def drain_for_interruption(ctx: Context, node: NodeView, record: ReplacementRecord) -> None:
    """Mark the node as cordoned by Spot Guard (so it is uncordoned again if nothing retires it), then drain it at
    once: the interruption leaves two minutes."""
    marked = dataclasses.replace(record, cordoned=True)
    if not ctx.book.write(node.name, record, marked, node):
        return
    ctx.reporter.node_event(node.name, "Normal", "DrainForInterruption", "interruption notice: draining now")

    def job() -> None:
        try:
            if not instance_gone(node.annotations):
                ctx.drains.drain(node.name)
        finally:
            ctx.wake()

    submit(ctx, node.name, "drain", job)


# -- retire ------------------------------------------------------------------------------------------------


def retire(ctx: Context, node: NodeView, record: ReplacementRecord, interrupted: bool) -> None:
    def job() -> None:
        failpoints.hit("replacement:retiring")
        with span(record, "drain", node=node.name, instance=record.instance_id) as step:
            if instance_gone(node.annotations):  # EC2 said so through the queue: no pod can be moved off it
                ctx.reporter.node_event(
                    node.name, "Normal", "InstanceGone", f"instance {record.instance_id} is shutting down: not drained"
                )
                drained = True
            else:
                drained = ctx.drains.drain(node.name)
            step.outcome("drained" if drained else "incomplete")
        if not drained:
            _drain_failed(ctx, node, record, interrupted)
            return
        said = f"drained and terminated instance {record.instance_id} with decrement; capacity is neutral again"
        current = record
        if record.instance_id:
            with span(record, "termination", node=node.name, instance=record.instance_id, asg=record.spot_asg):
                removal = (
                    ctx.owner.remove(record.instance_id, expect_group=record.spot_asg, drain=False)
                    if not record.owed_instance
                    else None
                )
            if removal is not None and removal.outcome is Outcome.REFUSED:
                ctx.reporter.node_event(node.name, "Warning", "SpotGuardRefused", f"not retired: {removal.message}")
                retry_later(ctx, node.name)
                return
            if removal is None or removal.outcome is Outcome.ALREADY_GONE:
                settled = _settle_left(ctx, node, record, record.instance_id, record.spot_asg)
                if settled is None:
                    retry_later(ctx, node.name)
                    return
                current, said = settled
        failpoints.hit("replacement:terminated")
        ctx.book.write(node.name, current, current.advance(Phase.RETIRED, ctx.clock.now()))
        ctx.memory.drain_attempts.pop(node.name, None)
        ctx.reporter.node_event(node.name, "Normal", "Retired", said)
        ctx.wake()

    submit(ctx, node.name, "retire", job)


def _settle_left(
    ctx: Context, node: NodeView, record: ReplacementRecord, left: str, group: str
) -> tuple[ReplacementRecord, str] | None:
    """Instance ``left`` of ``group``, which Spot Guard was about to terminate with decrement, left the group another
    way: make the group give back what it owes for it (``controller.checks.left_undecremented``), the instance it
    launched in its place terminated exactly (that intent written on the record first, so a successor terminates
    that one and no other). Returns the record and what happened, in words; None to look again later (the group has
    not launched in its place yet, or that instance is not drained yet)."""
    instance = record.owed_instance
    if not instance:
        owed = ctx.owner.settle_left(left, group)
        log.info("node %s: %s", node.name, owed.reason)
        if owed.owes is Owes.WAIT:
            return None
        if owed.owes is not Owes.TERMINATE:
            if owed.owes is not Owes.NOTHING:
                kind = "Warning" if owed.owes is Owes.UNKNOWN else "Normal"
                ctx.reporter.node_event(node.name, kind, "InstanceLeftUndecremented", owed.reason)
            return record, f"instance {left} had already left ASG {group}: {owed.reason}"
        intent = dataclasses.replace(record, owed_instance=owed.instance)
        if not ctx.book.write(node.name, record, intent):
            return None
        record, instance = intent, owed.instance
        ctx.reporter.node_event(node.name, "Normal", "InstanceLeftUndecremented", f"{owed.reason}: terminating it")
    removal = ctx.owner.remove(instance, expect_group=group, drain=True)
    if removal.outcome in (Outcome.NOT_DRAINED, Outcome.REFUSED):
        ctx.reporter.node_event(node.name, "Warning", "InstanceLeftUndecremented", removal.message)
        return None
    return record, (
        f"instance {left} had already left ASG {group} without a decrement; drained and terminated {instance}, which "
        "the group launched in its place, with decrement"
    )


def _drain_failed(ctx: Context, node: NodeView, record: ReplacementRecord, interrupted: bool) -> None:
    """Retry a failed drain a few times; then, unless the node is being interrupted, give up: uncordon it and
    give the replacement back, so nothing stays cordoned or tainted for ever."""
    attempts = ctx.memory.drain_attempts[node.name] = ctx.memory.drain_attempts.get(node.name, 0) + 1
    if attempts < ctx.settings.max_drain_attempts or record.trigger == "interruption" or interrupted:
        ctx.reporter.node_event(
            node.name,
            "Warning",
            "DrainIncomplete",
            f"drain attempt {attempts} did not complete (a PodDisruptionBudget or a blocked pod keeps pods on "
            f"the node); retrying in {RETRY:g}s",
        )
        retry_later(ctx, node.name)
        return
    reason = (
        f"drain did not complete in {attempts} attempts; node uncordoned and replacement "
        f"{record.replacement_instance} given back instead"
    )
    ctx.drains.uncordon(node.name)
    if ctx.book.write(
        node.name, record, record.advance(Phase.RELEASING, ctx.clock.now(), failed_reason=reason, cordoned=False)
    ):
        ctx.reporter.node_event(node.name, "Warning", "DrainAbandoned", reason)
        ctx.memory.drain_attempts.pop(node.name, None)
    ctx.wake()


# -- release -----------------------------------------------------------------------------------------------


def release(ctx: Context, node: NodeView, record: ReplacementRecord, interrupted: bool) -> None:
    why = record.failed_reason or f"no interruption within {format_duration(ctx.settings.keep_grace_period)}"

    def job() -> None:
        target = _what_to_give_back(ctx, node, record, why)
        if target is None:
            retry_later(ctx, node.name)  # the lifecycle is swapping it for spot right now: wait for it
            return
        instance, group = target
        if instance and _being_replaced(ctx, instance):
            retry_later(ctx, node.name)  # the stand-in got a replacement of its own first: wait until it ends
            return
        current, said = record, f"{why}: taint lifted, replacement {instance or '(none)'} given back"
        if instance:
            removal = ctx.owner.remove(instance, expect_group=group, drain=True) if not record.owed_instance else None
            if removal is not None and removal.outcome in (Outcome.NOT_DRAINED, Outcome.REFUSED):
                ctx.reporter.node_event(node.name, "Warning", "ReleaseIncomplete", removal.message)
                retry_later(ctx, node.name)
                return
            if removal is None or removal.outcome is Outcome.ALREADY_GONE:
                settled = _settle_left(ctx, node, record, instance, group)
                if settled is None:
                    retry_later(ctx, node.name)
                    return
                current, left = settled
                said = f"{why}: taint lifted; {left}"
        with contextlib.suppress(NodeGoneError):
            ctx.writer.remove_taint(node.name, TAINT_KEY)
        if record.cordoned and not interrupted:
            ctx.drains.uncordon(node.name)
        ctx.book.write(node.name, current, current.advance(Phase.RELEASED, ctx.clock.now(), cordoned=False))
        ctx.reporter.node_event(node.name, "Normal", "Released", said)
        ctx.wake()

    submit(ctx, node.name, "release", job)


def _being_replaced(ctx: Context, instance: str) -> bool:
    """Does the Node of ``instance`` have a replacement of its own under way?"""
    name = ctx.node_of_instance(instance)
    node = ctx.nodes().get(name) if name else None
    record = ctx.book.record(node) if node is not None else None
    return record is not None and not record.terminal


def _what_to_give_back(ctx: Context, node: NodeView, record: ReplacementRecord, why: str) -> tuple[str, str] | None:
    """(instance, its group) that stands in for the node now; None while the lifecycle is swapping it."""
    instance, group = record.replacement_instance, record.spot_asg
    if record.replacement_capacity != "on-demand":
        return instance, group
    group = record.on_demand_asg
    if not record.sgfe:
        return instance, group
    event = ctx.sgfes.find(record.sgfe)
    if event is None:
        return instance, group  # deleted by hand: the on-demand instance is still the replacement
    try:
        progress = LifecycleProgress.of(event.annotations)
    except MalformedRecordError:
        progress = LifecycleProgress()
    phase = event.status.phase
    if phase == SgfePhase.COMPLETED:
        if progress.given_back or not progress.returned_instance:
            return instance, group
        return progress.returned_instance, record.spot_asg  # swapped back to spot: that instance stands in now
    if phase == SgfePhase.FAILED:
        if progress.returned_instance:
            return progress.returned_instance, record.spot_asg
        return instance, group
    if (
        phase in (SgfePhase.PENDING, SgfePhase.MONITORING)
        and not progress.return_in_flight
        and progress.withdraw_target is None
    ):
        message = (
            f"On-demand replacement {instance} of node {node.name} given back ({why}); nothing to return to spot for it"
        )
        try:
            event = ctx.sgfes.annotate(
                event, {PROGRESS: progress.replace(given_back=why, finished_at=ctx.now_text()).to_json()}
            )
            ctx.sgfes.update_status(
                event, dataclasses.replace(event.status, phase=SgfePhase.COMPLETED, message=message)
            )
        except ConflictError:
            return None  # the lifecycle moved it meanwhile: look again
        log.info("SpotGuardFallbackEvent %s ended: %s", record.sgfe, message)
        return instance, group
    return None
