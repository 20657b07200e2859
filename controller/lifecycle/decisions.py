"""The SGFE lifecycle as pure decisions: given one event, its lifecycle record and a snapshot of the world,
what is the next step? No I/O here; ``controller.lifecycle`` gathers the facts and applies the action.

Phases (the seed's): Pending -> Monitoring -> ReadyForScaleDown -> ScalingDown -> Completed, or Failed.

* Pending: wait ``spec.minimumWaitDuration`` from ``spec.timestamp``, then Monitoring.
* Monitoring: the spot ASG must be healthy (``controller.spot_health``) for ``stability_window``; a relapse
  restarts the window (``status.spotHealthySince`` is cleared). Once stable, return to spot: scale the spot
  ASG up by one and run the bounded capacity check (``capacity.evaluate``, wanted=1). The new instance
  InService with a Ready Node -> ReadyForScaleDown (``spotCapacityRestored``). Still short -> the increase is
  given back, the event stays in Monitoring and the next attempt waits a growing backoff; nothing is drained.
* ReadyForScaleDown: the spot ASG must still be healthy (else back to Monitoring); then the safety checks;
  all passed -> ScalingDown (the seed's race point); one failed -> stay, check again later (not a failure).
* ScalingDown: run or resume the scale-down (``controller.lifecycle.scale_down``); a spot relapse before the
  terminate intent is recorded aborts it (drain stopped, node uncordoned, back to Monitoring).
* The return to spot and the scale-down wait while an instance refresh of either group runs
  (``controller.checks.instance_refresh``): the refreshes are read (``CheckRefreshes``) only when one is next.
* Completed: deleted ``completed_ttl`` after it finished. Failed: kept, with the reason, for an operator.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Sequence

from controller.checks import capacity_check as capacity
from controller.checks.instance_refresh import Step, refresh_wait
from controller.checks.launch_hooks import HookWait
from controller.checks.safety import CheckResult
from controller.checks.spot_health import SpotHealth, assess
from controller.config import ConfigError, Settings, format_duration, parse_duration
from controller.model.asg import Activity, Group, InstanceRefresh
from controller.model.progress import LifecycleProgress, MalformedRecordError, format_time, parse_time
from controller.model.sgfe import FallbackEvent, Phase, Status

NORMAL = "Normal"
WARNING = "Warning"


@dataclasses.dataclass(frozen=True)
class Facts:
    """One snapshot for one event. ``safety`` is gathered only when a decision asks for it (CheckSafety)."""

    now: dt.datetime
    spot: Group | None = None
    activities: tuple[Activity, ...] = ()
    ready_instances: frozenset[str] = frozenset()
    safety: tuple[CheckResult, ...] | None = None
    return_ready: tuple[str, ...] = ()  # the return's new spot instances, InService with a Ready Node
    return_short: int = 0  # 1 when someone else lowered the spot ASG below what the return needs
    return_arrivals: tuple[str, ...] = ()  # the return's new spot instances, whatever their state
    return_held: tuple[str, ...] = ()  # the return's new spot instances a launch hook holds (Pending:Wait)
    hooks: HookWait | None = None  # the spot group's launch hooks, read when an instance is held
    refreshes: tuple[InstanceRefresh, ...] | None = None  # active refreshes of the pair's groups; None: not read


# -- actions -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Wait:
    """Nothing to write now; look again in ``seconds``."""

    seconds: float
    why: str = ""


@dataclasses.dataclass(frozen=True)
class Transition:
    """Write ``record`` (if given, first) then ``status``; report an Event when ``reason`` is set."""

    status: Status
    reason: str = ""
    note: str = ""
    kind: str = NORMAL
    record: LifecycleProgress | None = None
    wake_in: float = 0.0


@dataclasses.dataclass(frozen=True)
class RequestReturn:
    """Return to spot: the capacity owner asks the spot ASG for one more instance, writing ``record`` (the intent,
    with the change's desired capacities and token) first; then confirm it and write ``status``. ``target`` is the
    desired capacity this snapshot expects (the owner computes the real one from its own read)."""

    record: LifecycleProgress
    target: int
    status: Status


@dataclasses.dataclass(frozen=True)
class ConfirmReturn:
    """The intent is recorded but not confirmed (a crash in between): the capacity owner makes the increase if
    its call was not made (it tells from the token), then confirm."""

    record: LifecycleProgress


@dataclasses.dataclass(frozen=True)
class Withdraw:
    """Give an unfulfilled return back: write ``record`` (intent: ``withdraw_target``), then the capacity owner
    terminates exactly the return's instance if one launched (drained) and lowers desired capacity only for a
    launch that never happened; then clear the return and write ``status``."""

    record: LifecycleProgress
    status: Status
    note: str


@dataclasses.dataclass(frozen=True)
class CheckSafety:
    """Run the safety checks, then decide again with ``Facts.safety`` filled in."""


@dataclasses.dataclass(frozen=True)
class CheckRefreshes:
    """Read the active instance refreshes of the event's two groups, then decide again with ``Facts.refreshes``
    filled in (read only when a step that waits for them is next: ``controller.checks.instance_refresh``)."""


@dataclasses.dataclass(frozen=True)
class BeginScaleDown:
    """The race point: write ``status`` (ScalingDown, scaleDownInitiated) with the resourceVersion read; only
    the writer that succeeds starts the scale-down."""

    status: Status


@dataclasses.dataclass(frozen=True)
class RunScaleDown:
    """Run, or resume, the scale-down of the on-demand node."""


@dataclasses.dataclass(frozen=True)
class AbortScaleDown:
    """The spot ASG relapsed during the scale-down: stop the drain, uncordon, back to Monitoring."""

    reason: str
    status: Status
    record: LifecycleProgress


@dataclasses.dataclass(frozen=True)
class Delete:
    why: str


Action = (
    Wait
    | Transition
    | RequestReturn
    | ConfirmReturn
    | Withdraw
    | CheckSafety
    | CheckRefreshes
    | BeginScaleDown
    | RunScaleDown
    | AbortScaleDown
    | Delete
)


# -- the decision ------------------------------------------------------------------------------------------


def decide(event: FallbackEvent, record: LifecycleProgress, facts: Facts, settings: Settings) -> Action:
    phase = event.status.phase
    if record.given_back and phase not in (Phase.COMPLETED, Phase.FAILED):
        message = f"On-demand replacement given back ({record.given_back}); nothing to return to spot for it"
        return Transition(_status(event, phase=Phase.COMPLETED, message=message), "GivenBack", message)
    try:
        if phase == Phase.PENDING:
            return _pending(event, record, facts, settings)
        if phase == Phase.MONITORING:
            return _monitoring(event, record, facts, settings)
        if phase == Phase.READY_FOR_SCALE_DOWN:
            return _ready(event, facts, settings)
        if phase == Phase.SCALING_DOWN:
            return _scaling_down(event, record, facts)
        if phase == Phase.COMPLETED:
            return _completed(event, record, facts, settings)
    except MalformedRecordError as exc:
        return _fail(event, record, facts, f"{exc}; fix or delete the event")
    if phase == Phase.FAILED:
        return Wait(math.inf, "Failed events stay until an operator deletes them")
    return Wait(settings.lifecycle_poll_interval, f"unknown phase {phase!r}: written by a newer Spot Guard?")


def minimum_wait(event: FallbackEvent, settings: Settings) -> float:
    text = event.spec.minimum_wait_duration
    if not text:
        return settings.minimum_wait_duration
    try:
        return parse_duration("spec.minimumWaitDuration", text)
    except ConfigError as exc:
        raise MalformedRecordError(str(exc)) from None


def backoff(attempts: int, settings: Settings) -> float:
    """Seconds before return attempt ``attempts + 1`` (after ``attempts`` short ones): doubling, capped."""
    if attempts <= 0:
        return 0.0
    return float(min(settings.monitoring_backoff_max, settings.monitoring_backoff_initial * 2 ** (attempts - 1)))


def _seconds(later: dt.datetime, now: dt.datetime) -> float:
    return (later - now).total_seconds()


def _status(event: FallbackEvent, **changes: object) -> Status:
    return dataclasses.replace(event.status, **changes)  # type: ignore[arg-type]


def _fail(event: FallbackEvent, record: LifecycleProgress, facts: Facts, reason: str) -> Transition:
    return Transition(
        _status(event, phase=Phase.FAILED, message=reason),
        reason="FallbackEventFailed",
        note=reason,
        kind=WARNING,
        record=record.replace(finished_at=format_time(facts.now)),
    )


# -- Pending -----------------------------------------------------------------------------------------------


def _pending(event: FallbackEvent, record: LifecycleProgress, facts: Facts, settings: Settings) -> Action:
    started = parse_time("spec.timestamp", event.spec.timestamp)
    wait = minimum_wait(event, settings)
    due = started + dt.timedelta(seconds=wait)
    if facts.now < due:
        return Wait(_seconds(due, facts.now), f"minimum wait {format_duration(wait)} not over")
    message = (
        f"Minimum wait time {format_duration(wait)} elapsed, monitoring spot ASG {event.spec.spot_asg_name} health"
    )
    return Transition(_status(event, phase=Phase.MONITORING, message=message), reason="MonitoringStarted", note=message)


# -- Monitoring --------------------------------------------------------------------------------------------


def _monitoring(event: FallbackEvent, record: LifecycleProgress, facts: Facts, settings: Settings) -> Action:
    asg = event.spec.spot_asg_name
    poll = settings.lifecycle_poll_interval
    if record.withdraw_target is not None:
        return _withdraw(event, record, record.last_short_reason or "the return stayed short", facts, settings)
    if record.return_in_flight:
        return _return_in_flight(event, record, facts, settings)
    health = assess(facts.spot, facts.activities, facts.ready_instances, asg)
    window = format_duration(settings.stability_window)
    if not health.healthy:
        if event.status.spot_healthy_since:
            message = (
                f"Spot ASG {asg} relapsed: {health.reason}; the {window} stability window restarts once it is "
                "healthy again"
            )
            return Transition(
                _status(event, spot_healthy_since="", message=message), "SpotRelapsed", message, WARNING, wake_in=poll
            )
        message = f"Monitoring spot ASG {asg}: not healthy yet: {health.reason}"
        if event.status.message != message:
            return Transition(_status(event, message=message), wake_in=poll)
        return Wait(poll, health.reason)
    since = _healthy_since(event)
    if since is None:
        message = f"Spot ASG {asg} healthy: {health.reason}; waiting {window} for it to stay so"
        return Transition(
            _status(event, spot_healthy_since=format_time(facts.now), message=message),
            "SpotHealthy",
            message,
            wake_in=min(poll, settings.stability_window),
        )
    stable_at = since + dt.timedelta(seconds=settings.stability_window)
    if facts.now < stable_at:
        return Wait(min(poll, _seconds(stable_at, facts.now)), "stability window not over")
    if record.returned_instance:
        return _restored(event, None, record.returned_instance, health)
    if record.next_return_at:
        next_at = parse_time("next return attempt", record.next_return_at)
        if facts.now < next_at:
            return Wait(min(poll, _seconds(next_at, facts.now)), "backing off after a short return")
    held = _refresh_hold(event, facts, settings, Step.RETURN_TO_SPOT)
    if held is not None:
        return held
    assert facts.spot is not None  # healthy implies the group exists
    target, granted = capacity.plan_scale_up(facts.spot, 1)
    if not granted:
        reason = f"spot ASG {asg} is at its MaxSize {facts.spot.max_size}, so it cannot grow back"
        return _short(event, record, reason, facts, settings, withdraw=False)
    timeout = settings.capacity_check_timeout
    intent = record.cleared_return().replace(
        return_target=target,
        return_known=tuple(sorted(facts.spot.instance_ids())),
        return_requested_at=format_time(facts.now),
        return_deadline_at=format_time(facts.now + dt.timedelta(seconds=timeout)),
        return_seen_activity=facts.activities[0].activity_id if facts.activities else "",
    )
    message = (
        f"Spot ASG {asg} stable for {window}; returning to spot: desired {facts.spot.desired} -> {target}, "
        f"waiting up to {format_duration(timeout)} for the new instance to be InService with a Ready Node"
    )
    return RequestReturn(intent, target, _status(event, message=message))


def _healthy_since(event: FallbackEvent) -> dt.datetime | None:
    text = event.status.spot_healthy_since
    if not text:
        return None
    try:
        return parse_time("status.spotHealthySince", text)
    except MalformedRecordError:
        return None  # hand-edited: start the window over


def _return_in_flight(event: FallbackEvent, record: LifecycleProgress, facts: Facts, settings: Settings) -> Action:
    if not record.return_confirmed:
        return ConfirmReturn(record)
    if facts.spot is None:
        return Wait(settings.capacity_poll_interval, f"spot ASG {event.spec.spot_asg_name} not described")
    assert record.return_target is not None
    requested = parse_time("return requested at", record.return_requested_at)
    deadline = parse_time("return deadline", record.return_deadline_at)
    decision = capacity.evaluate(
        wanted=1,
        group_name=facts.spot.name,
        ready=facts.return_ready,
        short=facts.return_short,
        activities=_since(facts.activities, record.return_seen_activity),
        requested_at=requested,
        deadline_monotonic=_seconds(deadline, facts.now),
        now_monotonic=0.0,
        poll_interval=settings.capacity_poll_interval,
        held=facts.return_held,
        hooks=facts.hooks,
        pools=facts.spot.pools,
        launch_suspended=not facts.spot.launches,
    )
    if isinstance(decision, capacity.Ready):
        instance = decision.instances[0]
        health = SpotHealth(True, f"spot instance {instance} is InService with a Ready Node")
        return _restored(event, record.replace(returned_instance=instance), instance, health)
    if isinstance(decision, capacity.Fallback):
        return _short(event, record, decision.reason, facts, settings, withdraw=True)
    return Wait(max(0.0, decision.until_monotonic), "waiting for the returned spot instance")


def _since(activities: Sequence[Activity], seen: str) -> Sequence[Activity]:
    """The activities (newest first) that came after ``seen``: an earlier attempt's failure is not this one's."""
    ids = [a.activity_id for a in activities]
    return activities[: ids.index(seen)] if seen in ids else activities


def _restored(event: FallbackEvent, record: LifecycleProgress | None, instance: str, health: SpotHealth) -> Transition:
    """ReadyForScaleDown; ``record`` (when the returned instance is new) is written first."""
    message = (
        f"Spot capacity restored and stable: spot instance {instance} of {event.spec.spot_asg_name} is InService "
        f"with a Ready Node ({health.reason}); ready for scale-down of on-demand node {event.spec.on_demand_node_name}"
    )
    return Transition(
        _status(event, phase=Phase.READY_FOR_SCALE_DOWN, spot_capacity_restored=True, message=message),
        "SpotCapacityRestored",
        message,
        record=record,
    )


def _short(
    event: FallbackEvent, record: LifecycleProgress, reason: str, facts: Facts, settings: Settings, *, withdraw: bool
) -> Action:
    attempts = record.return_attempts + 1
    wait = backoff(attempts, settings)
    after = record.replace(
        return_attempts=attempts,
        next_return_at=format_time(facts.now + dt.timedelta(seconds=wait)),
        last_short_reason=reason,
    )
    if withdraw:
        assert record.return_target is not None
        intent = after.replace(withdraw_target=record.return_target - 1, withdraw_instances=facts.return_arrivals)
        return _withdraw(event, intent, reason, facts, settings)
    message = _short_message(event, reason, after, wait)
    return Transition(
        _status(event, spot_healthy_since="", message=message),
        "SpotStillShort",
        message,
        WARNING,
        record=after.cleared_return(),
        wake_in=min(settings.lifecycle_poll_interval, wait),
    )


def _withdraw(
    event: FallbackEvent, intent: LifecycleProgress, reason: str, facts: Facts, settings: Settings
) -> Withdraw:
    wait = backoff(intent.return_attempts, settings)
    message = _short_message(event, reason, intent, wait)
    return Withdraw(intent, _status(event, spot_healthy_since="", message=message), message)


def _short_message(event: FallbackEvent, reason: str, record: LifecycleProgress, wait: float) -> str:
    given_back = (
        f"; the increase was given back (desired {record.withdraw_target})"
        if record.withdraw_target is not None
        else ""
    )
    return (
        f"Spot is still short: {reason}{given_back}; nothing drained, on-demand node "
        f"{event.spec.on_demand_node_name} stays; return attempt {record.return_attempts + 1} after "
        f"{record.next_return_at} (backoff {format_duration(wait)})"
    )


# -- instance refreshes ------------------------------------------------------------------------------------


def _refresh_hold(event: FallbackEvent, facts: Facts, settings: Settings, step: Step) -> Action | None:
    """None when ``step`` may go ahead; else read the refreshes first, or wait for the active one (said once on
    the event: the on-demand node keeps the workload meanwhile)."""
    if facts.refreshes is None:
        return CheckRefreshes()
    spot = next((r for r in facts.refreshes if r.group == event.spec.spot_asg_name and r.active), None)
    on_demand = next((r for r in facts.refreshes if r.group == event.spec.on_demand_asg_name and r.active), None)
    if not refresh_wait(step, spot is not None, on_demand is not None).waits:
        return None
    refresh = spot or on_demand
    assert refresh is not None
    role = "spot" if refresh is spot else "on-demand"
    node = event.spec.on_demand_node_name
    what = "returning to spot" if step is Step.RETURN_TO_SPOT else f"scaling down on-demand node {node}"
    message = (
        f"Waiting for instance refresh {refresh.refresh_id} of {role} ASG {refresh.group} ({refresh.status}) to end "
        f"before {what}: a capacity change would fight the refresh; on-demand node {event.spec.on_demand_node_name} "
        f"keeps the workload meanwhile (let the refresh finish, or cancel it: aws autoscaling cancel-instance-refresh "
        f"--auto-scaling-group-name {refresh.group})"
    )
    poll = settings.lifecycle_poll_interval
    if event.status.message != message:
        return Transition(_status(event, message=message), "WaitingForInstanceRefresh", message, wake_in=poll)
    return Wait(poll, f"instance refresh {refresh.refresh_id} of {refresh.group} is active")


# -- ReadyForScaleDown -------------------------------------------------------------------------------------


def _relapsed(event: FallbackEvent, health: SpotHealth, when: str) -> Status:
    return _status(
        event,
        phase=Phase.MONITORING,
        spot_capacity_restored=False,
        scale_down_initiated=False,
        spot_healthy_since="",
        message=f"Spot ASG {event.spec.spot_asg_name} relapsed {when}: {health.reason}; back to Monitoring, "
        f"on-demand node {event.spec.on_demand_node_name} stays",
    )


def _ready(event: FallbackEvent, facts: Facts, settings: Settings) -> Action:
    health = assess(facts.spot, facts.activities, facts.ready_instances, event.spec.spot_asg_name)
    if not health.healthy:
        status = _relapsed(event, health, "before the scale-down")
        return Transition(status, "SpotRelapsed", status.message, WARNING)
    held = _refresh_hold(event, facts, settings, Step.ON_DEMAND_SCALE_DOWN)
    if held is not None:
        return held
    if facts.safety is None:
        return CheckSafety()
    failed = [r for r in facts.safety if not r.passed]
    if not failed:
        node = event.spec.on_demand_node_name
        message = f"Safety checks passed, scaling down on-demand node {node}"
        return BeginScaleDown(_status(event, phase=Phase.SCALING_DOWN, scale_down_initiated=True, message=message))
    retry = format_duration(settings.safety_retry_interval)
    message = f"Waiting for the safety checks (again in {retry}): " + "; ".join(
        f"{r.name} failed: {r.message}" for r in failed
    )
    if event.status.message != message:
        return Transition(_status(event, message=message), wake_in=settings.safety_retry_interval)
    return Wait(settings.safety_retry_interval, "safety checks failed")


def safety_summary(results: Sequence[CheckResult]) -> str:
    return ", ".join(f"{r.name} {'passed' if r.passed else 'failed'}" for r in results)


# -- ScalingDown, Completed --------------------------------------------------------------------------------


def _scaling_down(event: FallbackEvent, record: LifecycleProgress, facts: Facts) -> Action:
    if record.terminate_requested_at:
        return RunScaleDown()  # the instance is going: no turning back
    health = assess(facts.spot, facts.activities, facts.ready_instances, event.spec.spot_asg_name)
    if not health.healthy:
        return AbortScaleDown(health.reason, _relapsed(event, health, "during the scale-down"), record)
    return RunScaleDown()


def relapse_status(event: FallbackEvent, reason: str) -> Status:
    """The status after a scale-down was rolled back because the spot ASG relapsed."""
    return _relapsed(event, SpotHealth(False, reason), "during the scale-down")


def _completed(event: FallbackEvent, record: LifecycleProgress, facts: Facts, settings: Settings) -> Action:
    finished = parse_time("finished at", record.finished_at or event.spec.timestamp)
    expires = finished + dt.timedelta(seconds=settings.completed_ttl)
    if facts.now >= expires:
        return Delete(f"Completed at {format_time(finished)}, kept for {format_duration(settings.completed_ttl)}")
    return Wait(_seconds(expires, facts.now), "Completed; deleted when its TTL runs out")
