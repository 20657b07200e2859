"""The steps a batch takes together, each through the capacity owner: make sure a recorded request was made,
check whether its capacity arrived, fall back, give the spot claim back, ask on-demand, and fail.

The capacity check is ``controller.checks.capacity_check.evaluate`` over the batch's claim
(``controller.checks.arrivals``): its new instances, InService with a Ready Node, and how many of its launches
someone else's lower desired capacity no longer covers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
from collections import defaultdict
from typing import Any

from controller import failpoints
from controller.adapters.aws import AwsError
from controller.capacity.owner import Change, ChangesHeldError, Plan
from controller.checks import capacity_check
from controller.checks.arrivals import GroupClaims
from controller.checks.launch_failures import CONFIGURATION
from controller.checks.launch_hooks import HELD_STATES, hook_wait
from controller.config import format_duration
from controller.effects.node_writes import NodeGoneError
from controller.model.asg import Activity
from controller.model.node import NodeView
from controller.model.record import TAINT_KEY, Phase, ReplacementRecord
from controller.model.sgfe import Spec, Status, event_name
from controller.observability import tracing
from controller.replacement.context import Context, parse_time, span
from controller.replacement.record_book import Write, on_demand_claim_key, spot_claim_key
from controller.replacement.scale_up import Batch, confirm, write_all
from nodewatch import annotations as contract

log = logging.getLogger("controller.replacement")


def claim_key(batch: Batch, on_demand: bool) -> str:
    return on_demand_claim_key(batch.first) if on_demand else spot_claim_key(batch.first)


def recorded_change(batch: Batch, on_demand: bool) -> Change:
    """The increase the batch's records say was asked for: one instance per node of the batch."""
    first = batch.first
    if on_demand:
        before, target, token, group = (
            first.on_demand_before,
            first.on_demand_target,
            first.on_demand_change,
            first.on_demand_asg,
        )
        count = len(batch.members)
    else:
        before, target, token, group = first.spot_before, first.spot_target, first.spot_change, first.spot_asg
        count = len(batch.members) + sum(len(r.members) for _, r in batch.members)
    if before is None:  # written before tokens: only the absolute target is known
        return Change(group, None, target or 0, token)
    return Change(group, before, before + count, token)


# -- requests ----------------------------------------------------------------------------------------------


def finish_request(ctx: Context, batch: Batch, on_demand: bool) -> bool:
    """A request recorded as intent (SpotRequested / OnDemandRequested): make sure its call was made (the owner
    tells from the token), then confirm it. False when AWS could not be reached (the next pass tries again)."""
    if on_demand or batch.batch not in ctx.memory.sent:
        try:
            ctx.owner.finish(recorded_change(batch, on_demand))
        except AwsError as exc:
            ctx.report_aws_error(batch.asg, batch.names, exc)
            return False
    if on_demand:
        confirm(ctx, batch, Phase.ON_DEMAND_SCALED_UP)
    return True


# -- capacity checks ---------------------------------------------------------------------------------------


def check(ctx: Context, batches: list[Batch], on_demand: bool) -> float:
    """Check every batch whose group's poll is due (one DescribeAutoScalingGroups for all of them); returns
    the monotonic time of the next check."""
    now = ctx.clock.monotonic()
    wake_at = now + 30.0
    due: dict[str, list[Batch]] = defaultdict(list)
    for batch in batches:
        deadline = _deadline(ctx, batch, on_demand)
        poll_at = ctx.memory.next_poll.get(batch.asg, now)
        if now >= poll_at or now >= deadline:
            due[batch.asg].append(batch)
        else:
            wake_at = min(wake_at, poll_at, deadline)
    if not due:
        return wake_at
    try:
        states = ctx.owner.describe(sorted(due))
    except AwsError as exc:
        for asg, items in due.items():
            ctx.report_aws_error(asg, [n for b in items for n in b.names], exc)
        return now + ctx.settings.capacity_poll_interval
    ready_ids = ctx.ready_instance_ids()
    for asg, items in due.items():
        state = states.get(asg)
        ctx.memory.next_poll[asg] = ctx.clock.monotonic() + ctx.settings.capacity_poll_interval
        if state is None:
            continue
        try:
            activities = ctx.owner.asg.activities(asg)
        except AwsError as exc:
            ctx.report_aws_error(asg, [n for b in items for n in b.names], exc)
            activities = []
        for batch in items:
            wake_at = min(
                wake_at,
                _decide(
                    ctx,
                    batch,
                    state=state,
                    activities=activities,
                    ready_ids=ready_ids,
                    on_demand=on_demand,
                ),
            )
    return wake_at


def _deadline(ctx: Context, batch: Batch, on_demand: bool) -> float:
    key = claim_key(batch, on_demand)
    cached = ctx.memory.deadlines.get(key)
    if cached is not None:
        return cached
    text = batch.first.on_demand_deadline_at if on_demand else batch.first.deadline_at
    remaining = (parse_time(text) - ctx.clock.now()).total_seconds() if text else 0.0
    deadline = ctx.clock.monotonic() + remaining
    ctx.memory.deadlines[key] = deadline
    return deadline


def _decide(
    ctx: Context,
    batch: Batch,
    *,
    state: GroupClaims,
    activities: list[Activity],
    ready_ids: set[str],
    on_demand: bool,
) -> float:
    first = batch.first
    group = state.group
    key = claim_key(batch, on_demand)
    mark = first.on_demand_activity_mark if on_demand else first.activity_mark
    held = tuple(i.instance_id for i in state.arrivals.get(key, ()) if i.lifecycle_state in HELD_STATES)
    hooks = None
    if held:  # only then are the group's hooks read (cached per group)
        hooks = hook_wait(
            ctx.memory.hooks.hooks(ctx.owner.asg, ctx.clock, group.name), ctx.settings.capacity_check_timeout
        )
    decision = capacity_check.evaluate(
        wanted=len(batch.members),
        group_name=group.name,
        ready=state.ready(key, ready_ids),
        short=state.short.get(key, 0),
        activities=activities,
        requested_at=parse_time(first.on_demand_requested_at if on_demand else first.requested_at),
        seen_before=contract.parse_time("activity mark", mark) if mark else None,
        deadline_monotonic=_deadline(ctx, batch, on_demand),
        now_monotonic=ctx.clock.monotonic(),
        poll_interval=ctx.settings.capacity_poll_interval,
        held=held,
        hooks=hooks,
        pools=group.pools,
        launch_suspended=not group.launches,
    )
    if isinstance(decision, capacity_check.Wait):
        return decision.until_monotonic
    outcome = "ready" if isinstance(decision, capacity_check.Ready) else decision.code
    for _, member in batch.members:
        with span(member, "capacity-check", asg=batch.asg, capacity_type=_kind(on_demand)) as step:
            step.outcome(outcome)
    members = sorted(batch.members, key=lambda m: m[0].name)
    capacity_type = _kind(on_demand)
    index = ctx.instance_nodes()
    for (node, record), instance in zip(members, decision.instances, strict=False):
        mark_ready(
            ctx, node, record, instance=instance, replacement_node=index.get(instance, ""), capacity_type=capacity_type
        )
    if isinstance(decision, capacity_check.Fallback):
        rest = members[len(decision.instances) :]
        given_back = tuple(
            i.instance_id for i in state.arrivals.get(key, ()) if i.instance_id not in decision.instances
        )
        result = "timeout" if decision.code in ("CapacityCheckTimeout", "LaunchHookTimeout") else "no_capacity"
        ctx.reporter.scale_up(batch.asg, capacity_type, result)
        if decision.category:
            ctx.reporter.launch_failed(batch.asg, decision.category)
        if decision.category == CONFIGURATION:  # not a shortage: say so where people look, on every node it affects
            for node, _ in rest:
                ctx.reporter.node_event(node.name, "Warning", "LaunchConfigurationError", decision.reason)
        if on_demand:
            on_demand_failed(ctx, Batch(batch.asg, batch.batch, rest), decision.reason, given_back)
        else:
            fall_back(ctx, batch.asg, rest, reason=decision.reason, code=decision.code, given_back=given_back)
    else:
        ctx.reporter.scale_up(batch.asg, capacity_type, "success")
    return ctx.clock.monotonic()


def mark_ready(
    ctx: Context,
    node: NodeView,
    record: ReplacementRecord,
    *,
    instance: str,
    replacement_node: str,
    capacity_type: str,
) -> None:
    now = ctx.clock.now()
    changes: dict[str, Any] = {
        "replacement_instance": instance,
        "replacement_node": replacement_node,
        "replacement_capacity": capacity_type,
        "replaced_at": contract.format_time(now),
    }
    if capacity_type == "on-demand":
        changes["sgfe"] = create_fallback_event(ctx, record, instance, replacement_node, now)
        failpoints.hit("replacement:event-created")
    phase = Phase.ON_DEMAND_READY if capacity_type == "on-demand" else Phase.SPOT_READY
    if not ctx.book.write(node.name, record, record.advance(phase, now, **changes)):
        return
    seconds = (now - parse_time(record.requested_at)).total_seconds() if record.requested_at else 0.0
    ctx.reporter.replacement_ready(capacity_type, seconds)
    ctx.reporter.node_event(
        node.name,
        "Normal",
        "ReplacementReady",
        f"{capacity_type} replacement {instance} (node {replacement_node}) is InService and Ready",
    )
    ctx.wake()


def create_fallback_event(
    ctx: Context, record: ReplacementRecord, instance: str, replacement_node: str, now: dt.datetime
) -> str:
    requested = parse_time(record.on_demand_requested_at or record.updated_at)
    name = event_name(int(requested.timestamp()), record.instance_id)
    wait = format_duration(ctx.settings.minimum_wait_duration)
    with span(record, "fallback-event", sgfe=name, node=replacement_node, instance=instance):
        pass
    ctx.sgfes.create(
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


# -- fallback ----------------------------------------------------------------------------------------------


def fall_back(
    ctx: Context,
    asg: str,
    members: list[tuple[NodeView, ReplacementRecord]],
    *,
    reason: str,
    code: str,
    given_back: tuple[str, ...] = (),
) -> None:
    """Spot did not come: the batch's claim is to be given back (SpotWithdrawing), then on-demand asked."""
    if not members:
        return
    now = ctx.clock.now()
    log.warning("spot ASG %s: falling back to on-demand for %s: %s", asg, [n.name for n, _ in members], reason)
    for node, record in members:
        with span(record, "fallback", node=node.name, asg=asg, on_demand_asg=record.on_demand_asg) as step:
            step.set(reason=reason)
        ctx.reporter.fallback(
            record.spot_asg, record.on_demand_asg, "timeout" if code == "CapacityCheckTimeout" else "no_capacity"
        )
        ctx.reporter.node_event(node.name, "Warning", "SpotCapacityShort", f"{reason}; falling back to on-demand")
    write_all(
        ctx,
        [
            (n.name, r, r.advance(Phase.SPOT_WITHDRAWING, now, fallback_reason=reason, given_back=given_back), None)
            for n, r in members
        ],
    )
    ctx.wake()


def withdraw(ctx: Context, batch: Batch) -> None:
    """Give the batch's spot claim back (exactly its instances, then its launches that never happened), then
    ask on-demand. Repeating it after a crash finds nothing more to give back."""
    failpoints.hit("replacement:withdrawing")
    if any(r.spot_target is not None for _, r in batch.members):
        try:
            gave = ctx.owner.give_back(
                batch.asg, spot_claim_key(next(r for _, r in batch.members if r.spot_target is not None))
            )
        except AwsError as exc:
            ctx.report_aws_error(batch.asg, batch.names, exc)
            return
        for removal in gave.removed:
            log.info(
                "spot ASG %s: %s instance %s of batch %s", batch.asg, removal.outcome, removal.instance, batch.batch
            )
        if not gave.done:
            log.info("spot ASG %s: batch %s still has an instance to give back; trying again", batch.asg, batch.batch)
            return
    failpoints.hit("replacement:withdrawn")
    request_on_demand(ctx, batch)


def settle_orphans(ctx: Context, node: NodeView, record: ReplacementRecord) -> None:
    """(node lane) A batch's claim is settled but its intent still lists members whose own record was never written
    (the node went away, or got another replacement): give their share back (exactly their launched instances,
    then their launches that never happened), then drop them from the intent. Idempotent."""
    group = record.spot_asg
    try:
        gave = ctx.owner.give_back(group, spot_claim_key(record))
    except AwsError as exc:
        ctx.report_aws_error(group, [node.name], exc)
        return
    if not gave.done:
        return  # a drain did not finish: the next pass tries again
    log.info(
        "spot ASG %s: gave back the share of %s (no record of theirs was written): %d launch(es), %d instance(s)",
        group,
        ", ".join(m.node for m in record.members),
        gave.lowered,
        len(gave.removed),
    )
    ctx.book.write(node.name, record, dataclasses.replace(record, members=()), node)


def request_on_demand(ctx: Context, batch: Batch) -> None:
    od_asg = batch.first.on_demand_asg
    members = sorted(batch.members, key=lambda m: m[0].name)
    now = ctx.clock.now()
    deadline = contract.format_time(now + dt.timedelta(seconds=ctx.settings.capacity_check_timeout))
    requested: list[tuple[NodeView, ReplacementRecord]] = []

    def intent(plan: Plan) -> int:
        change = plan.change(plan.granted)
        for node, record in members[plan.granted :]:
            fail(ctx, node, record, f"on-demand ASG {od_asg} is at its MaxSize {plan.group.max_size}")
        writes: list[Write] = [
            (
                node.name,
                record,
                record.advance(
                    Phase.ON_DEMAND_REQUESTED,
                    now,
                    on_demand_before=change.before,
                    on_demand_target=change.target,
                    on_demand_change=change.token,
                    on_demand_known=tuple(sorted(plan.group.instance_ids())),
                    on_demand_requested_at=contract.format_time(now),
                    on_demand_activity_mark=plan.read.newest_activity,
                    on_demand_deadline_at=deadline,
                    given_back=(),
                    members=(),  # the spot claim, its unwritten members' share included, was given back
                ),
                None,
            )
            for node, record in members[: plan.granted]
        ]
        for (name, _, new, _), done in zip(writes, write_all(ctx, writes), strict=True):
            if done:
                requested.append((next(n for n, _ in members if n.name == name), new))
        if requested:
            ctx.reporter.scale_up(od_asg, "on-demand", "attempt")
            failpoints.hit("replacement:on-demand-requested")
        return len(requested)

    try:
        read, change = ctx.owner.raise_by(od_asg, len(members), intent)
    except ChangesHeldError as exc:
        log.info("on-demand request of batch %s waits: %s", batch.batch, exc)
        return
    except AwsError as exc:
        ctx.reporter.scale_up(od_asg, "on-demand", "error")
        ctx.report_aws_error(od_asg, batch.names, exc)
        return
    if read.group is None:
        for node, record in members:
            fail(ctx, node, record, f"on-demand ASG {od_asg} does not exist")
        return
    if change is None:
        return
    failpoints.hit("replacement:on-demand-scaled")
    with span(requested[0][1], "on-demand-scale-up", asg=od_asg, desired=change.target, nodes=change.amount):
        pass
    ctx.memory.deadlines[on_demand_claim_key(requested[0][1])] = (
        ctx.clock.monotonic() + ctx.settings.capacity_check_timeout
    )
    ctx.memory.next_poll[od_asg] = ctx.clock.monotonic()
    log.info("on-demand ASG %s: desired %d -> %d", od_asg, change.before, change.target)
    confirm(ctx, Batch(od_asg, batch.batch, requested), Phase.ON_DEMAND_SCALED_UP)
    for node, _ in requested:
        ctx.reporter.node_event(
            node.name,
            "Normal",
            "OnDemandScaleUp",
            f"scaled on-demand ASG {od_asg} from {change.before} to {change.target}",
        )


def on_demand_failed(ctx: Context, batch: Batch, reason: str, given_back: tuple[str, ...] = ()) -> None:
    """On-demand did not come either: give its claim back, then fail the nodes."""
    if not batch.members:
        return
    now = ctx.clock.now()
    marked: list[tuple[NodeView, ReplacementRecord]] = []
    for node, record in batch.members:
        new = (
            record if record.giving_back else record.advance(record.phase, now, giving_back=True, given_back=given_back)
        )
        if new is record or ctx.book.write(node.name, record, new, None):
            marked.append((node, new))
    batch = Batch(batch.asg, batch.batch, marked)
    try:
        gave = ctx.owner.give_back(batch.asg, on_demand_claim_key(batch.first))
    except AwsError as exc:
        ctx.report_aws_error(batch.asg, batch.names, exc)
        return
    if not gave.done:
        return
    for node, record in batch.members:
        fail(ctx, node, record, f"spot failed ({record.fallback_reason}) and on-demand failed ({reason})")


def fail(ctx: Context, node: NodeView, record: ReplacementRecord, reason: str) -> None:
    """Neither spot nor on-demand: PreferNoSchedule only, so the node is never stranded."""
    with contextlib.suppress(NodeGoneError):
        ctx.writer.set_taint(node.name, TAINT_KEY, "no-replacement", "PreferNoSchedule")
    ctx.book.write(node.name, record, record.advance(Phase.FAILED, ctx.clock.now(), failed_reason=reason))
    ctx.reporter.replacement_failed("no_capacity")
    with span(record, "failed", node=node.name, instance=record.instance_id) as step:
        step.outcome("no_capacity")
        step.set(reason=reason)
    ctx.reporter.node_event(node.name, "Warning", "ReplacementFailed", f"{reason}; node tainted PreferNoSchedule")
    log.error("node %s: no replacement capacity: %s", node.name, reason)


def _kind(on_demand: bool) -> str:
    return "on-demand" if on_demand else "spot"
