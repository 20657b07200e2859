"""The SGFE lifecycle's phase rules (controller.lifecycle_decisions), on a FakeClock: no I/O, no waiting."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import pytest

from controller.checks.arrivals import assign
from controller.checks.safety import CheckResult
from controller.clock import FakeClock
from controller.config import Settings
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
    backoff,
    decide,
)
from controller.model.asg import Activity, Group, Instance, InstanceRefresh
from controller.model.claim import Claim
from controller.model.progress import ANNOTATION, LifecycleProgress, format_time
from controller.model.sgfe import FallbackEvent, Phase, Spec, Status
from tests.unit.controller.election_helpers import START

SETTINGS = Settings(
    minimum_wait_duration=600,
    stability_window=120,
    capacity_check_timeout=180,
    capacity_poll_interval=5,
    lifecycle_poll_interval=10,
    monitoring_backoff_initial=60,
    monitoring_backoff_max=200,
    safety_retry_interval=30,
    completed_ttl=86400,
)
SPOT = "my-spot-asg"


def event(
    phase: str = Phase.PENDING,
    *,
    record: LifecycleProgress | None = None,
    wait: str = "10m",
    timestamp: dt.datetime = START,
    **status: object,
) -> FallbackEvent:
    annotations = {ANNOTATION: record.to_json()} if record is not None else {}
    return FallbackEvent(
        name="fallback-1736938845-abc123",
        namespace="kube-system",
        uid="uid-1",
        resource_version="42",
        spec=Spec(
            spot_asg_name=SPOT,
            on_demand_asg_name="my-ondemand-asg",
            on_demand_node_name="ip-10-0-2-100",
            on_demand_instance_id="i-0987654321fedcba0",
            timestamp=format_time(timestamp),
            minimum_wait_duration=wait,
        ),
        status=dataclasses.replace(Status(phase=phase), **status),  # type: ignore[arg-type]
        annotations=annotations,
    )


def group(desired: int, states: dict[str, str], max_size: int = 10) -> Group:
    return Group(
        name=SPOT,
        desired=desired,
        min_size=0,
        max_size=max_size,
        capacity_rebalance=False,
        instances=tuple(Instance(i, s, "us-east-1a", "m5.large") for i, s in states.items()),
        tags={},
    )


HEALTHY = group(2, {"i-s1": "InService", "i-s2": "InService"})
READY = frozenset({"i-s1", "i-s2"})


def facts(
    clock: FakeClock,
    spot: Group | None = HEALTHY,
    ready: frozenset[str] = READY,
    record: LifecycleProgress | None = None,
    **more: object,
) -> Facts:
    """The snapshot the controller would gather; with ``record``, its return's claim as the capacity owner sees it."""
    if record is not None and record.return_target is not None and spot is not None:
        claim = Claim(
            "sgfe/e",
            SPOT,
            1,
            frozenset(record.return_known),
            record.return_requested_at,
            withdrawing=record.withdraw_target is not None,
        )
        state = assign(spot, [claim])
        more.setdefault("return_ready", state.ready("sgfe/e", ready))
        more.setdefault("return_short", state.short.get("sgfe/e", 0))
    more.setdefault("refreshes", ())  # read, none active (tests of the refresh rule pass their own)
    return Facts(now=clock.now(), spot=spot, ready_instances=ready, **more)  # type: ignore[arg-type]


def step(current: FallbackEvent, action: Action) -> FallbackEvent:
    """Apply a Transition's writes to the event, as the runner would."""
    assert isinstance(action, Transition), action
    annotations = dict(current.annotations)
    if action.record is not None:
        annotations[ANNOTATION] = action.record.to_json()
    return dataclasses.replace(current, status=action.status, annotations=annotations)


# -- Pending ------------------------------------------------------------------------------------------------


def test_pending_waits_out_the_minimum_wait_from_the_spec_timestamp(clock: FakeClock) -> None:
    clock.advance(450)
    action = decide(event(), LifecycleProgress(), facts(clock), SETTINGS)
    assert action == Wait(150, "minimum wait 10m not over")

    clock.advance(150)
    action = decide(event(), LifecycleProgress(), facts(clock), SETTINGS)
    assert isinstance(action, Transition)
    assert action.status.phase == Phase.MONITORING
    assert action.status.message == "Minimum wait time 10m elapsed, monitoring spot ASG my-spot-asg health"
    assert action.reason == "MonitoringStarted"


def test_pending_without_a_minimum_wait_uses_the_configured_one(clock: FakeClock) -> None:
    settings = dataclasses.replace(SETTINGS, minimum_wait_duration=30)
    clock.advance(29)
    assert isinstance(decide(event(wait=""), LifecycleProgress(), facts(clock), settings), Wait)
    clock.advance(1)
    action = decide(event(wait=""), LifecycleProgress(), facts(clock), settings)
    assert isinstance(action, Transition) and action.status.phase == Phase.MONITORING


def test_a_malformed_minimum_wait_fails_the_event_with_the_reason(clock: FakeClock) -> None:
    action = decide(event(wait="ten minutes"), LifecycleProgress(), facts(clock), SETTINGS)
    assert isinstance(action, Transition)
    assert action.status.phase == Phase.FAILED
    assert "spec.minimumWaitDuration='ten minutes'" in action.status.message
    assert action.status.message.endswith("fix or delete the event")


# -- Monitoring: the stability window -----------------------------------------------------------------------


def test_healthy_spot_starts_the_stability_window_then_waits_it_out(clock: FakeClock) -> None:
    current = event(Phase.MONITORING)
    action = decide(current, LifecycleProgress(), facts(clock), SETTINGS)
    assert isinstance(action, Transition) and action.reason == "SpotHealthy"
    assert action.status.spot_healthy_since == format_time(clock.now())
    current = step(current, action)

    clock.advance(119)
    assert isinstance(decide(current, LifecycleProgress(), facts(clock), SETTINGS), Wait)
    clock.advance(1)
    assert isinstance(decide(current, LifecycleProgress(), facts(clock), SETTINGS), RequestReturn)


@pytest.mark.parametrize(
    ("spot", "ready", "words"),
    [
        (group(2, {"i-s1": "InService", "i-s2": "Pending"}), READY, "has 1 InService of desired 2 (others: Pending)"),
        (HEALTHY, frozenset({"i-s1"}), "1 InService instance(s) of spot ASG my-spot-asg have no Ready Node: i-s2"),
        (None, READY, "spot ASG my-spot-asg does not exist"),
    ],
)
def test_unhealthy_spot_does_not_start_the_window_and_says_why(
    clock: FakeClock, spot: Group | None, ready: frozenset[str], words: str
) -> None:
    action = decide(event(Phase.MONITORING), LifecycleProgress(), facts(clock, spot, ready), SETTINGS)
    assert isinstance(action, Transition)
    assert action.status.phase == Phase.MONITORING
    assert not action.status.spot_healthy_since
    assert words in action.status.message


def test_an_activity_in_progress_is_not_healthy(clock: FakeClock) -> None:
    running = Activity("a-1", "InProgress", "", "Launching a new EC2 instance: i-s3", "", clock.now())
    action = decide(event(Phase.MONITORING), LifecycleProgress(), facts(clock, activities=(running,)), SETTINGS)
    assert isinstance(action, Transition)
    assert "1 scaling activity(ies) of spot ASG my-spot-asg in progress (InProgress" in action.status.message


def test_a_spot_group_whose_launch_process_is_suspended_is_not_returned_to(clock: FakeClock) -> None:
    suspended = dataclasses.replace(HEALTHY, suspended_processes=frozenset({"Launch", "AZRebalance"}))
    action = decide(stable_event(clock), LifecycleProgress(), facts(clock, spot=suspended), SETTINGS)
    assert isinstance(action, Transition) and action.reason == "SpotRelapsed", action
    assert "the Launch process of spot ASG my-spot-asg is suspended" in action.status.message
    assert "resume-processes" in action.status.message


def test_a_termination_a_hook_holds_in_terminating_wait_does_not_make_spot_unstable(clock: FakeClock) -> None:
    leaving = group(2, {"i-s1": "InService", "i-s2": "InService", "i-s0": "Terminating:Wait"})
    held = Activity("a-1", "MidLifecycleAction", "", "Terminating EC2 instance: i-s0", "", clock.now())
    action = decide(event(Phase.MONITORING), LifecycleProgress(), facts(clock, leaving, activities=(held,)), SETTINGS)
    assert isinstance(action, Transition) and action.reason == "SpotHealthy", action


def test_a_relapse_restarts_the_stability_window(clock: FakeClock) -> None:
    current = step(
        event(Phase.MONITORING), decide(event(Phase.MONITORING), LifecycleProgress(), facts(clock), SETTINGS)
    )
    clock.advance(100)
    relapsed = group(2, {"i-s1": "InService"})
    action = decide(current, LifecycleProgress(), facts(clock, relapsed), SETTINGS)
    assert isinstance(action, Transition)
    assert action.reason == "SpotRelapsed" and action.kind == "Warning"
    assert action.status.spot_healthy_since == ""
    assert "stability window restarts" in action.status.message
    current = step(current, action)

    clock.advance(10)  # healthy again: a new window from now, not from the first start
    restart = clock.now()
    current = step(current, decide(current, LifecycleProgress(), facts(clock), SETTINGS))
    assert current.status.spot_healthy_since == format_time(restart)
    clock.advance(119)
    assert isinstance(decide(current, LifecycleProgress(), facts(clock), SETTINGS), Wait)
    clock.advance(1)
    assert isinstance(decide(current, LifecycleProgress(), facts(clock), SETTINGS), RequestReturn)


# -- Monitoring: returning to spot ---------------------------------------------------------------------------


def stable_event(clock: FakeClock, record: LifecycleProgress | None = None) -> FallbackEvent:
    since = format_time(clock.now())
    clock.advance(SETTINGS.stability_window)
    return event(Phase.MONITORING, record=record, spot_healthy_since=since)


def test_a_stable_spot_asg_is_scaled_up_by_one_with_the_intent_recorded(clock: FakeClock) -> None:
    current = stable_event(clock)
    action = decide(current, LifecycleProgress(), facts(clock), SETTINGS)
    assert isinstance(action, RequestReturn)
    assert action.target == 3
    assert action.record.return_target == 3
    assert action.record.return_known == ("i-s1", "i-s2")
    assert action.record.return_requested_at == format_time(clock.now())
    assert action.record.return_deadline_at == format_time(clock.now() + dt.timedelta(seconds=180))
    assert not action.record.return_confirmed
    assert action.status.phase == Phase.MONITORING
    assert "returning to spot: desired 2 -> 3" in action.status.message


def in_flight(clock: FakeClock, **changes: object) -> LifecycleProgress:
    return LifecycleProgress(
        return_target=3,
        return_known=("i-s1", "i-s2"),
        return_requested_at=format_time(clock.now()),
        return_deadline_at=format_time(clock.now() + dt.timedelta(seconds=180)),
        return_confirmed=True,
    ).replace(**changes)


def test_an_unconfirmed_return_is_confirmed_first(clock: FakeClock) -> None:
    record = in_flight(clock, return_confirmed=False)
    assert decide(stable_event(clock, record), record, facts(clock), SETTINGS) == ConfirmReturn(record)


def test_the_returned_instance_in_service_with_a_ready_node_restores_spot(clock: FakeClock) -> None:
    record = in_flight(clock)
    current = stable_event(clock, record)
    scaled = group(3, {"i-s1": "InService", "i-s2": "InService", "i-s3": "InService"})

    waiting = decide(current, record, facts(clock, scaled, record=record), SETTINGS)  # InService, Node not Ready yet
    assert isinstance(waiting, Wait)

    action = decide(current, record, facts(clock, scaled, READY | {"i-s3"}, record=record), SETTINGS)
    assert isinstance(action, Transition)
    assert action.status.phase == Phase.READY_FOR_SCALE_DOWN
    assert action.status.spot_capacity_restored
    assert action.record == record.replace(returned_instance="i-s3")
    assert action.reason == "SpotCapacityRestored"
    assert "spot instance i-s3 of my-spot-asg is InService with a Ready Node" in action.status.message


def test_a_short_return_is_withdrawn_and_retried_after_a_growing_backoff(clock: FakeClock) -> None:
    record = in_flight(clock)
    current = stable_event(clock, record)
    failed = Activity(
        "a-1",
        "Failed",
        "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot capacity available that "
        "matches your request. Launching EC2 instance failed.",
        "Launching a new EC2 instance.  Status Reason: Could not launch Spot Instances. InsufficientInstanceCapacity",
        "",
        clock.now(),
    )
    action = decide(
        current,
        record,
        facts(clock, group(3, dict.fromkeys(READY, "InService")), record=record, activities=(failed,)),
        SETTINGS,
    )
    assert isinstance(action, Withdraw)
    assert action.record.withdraw_target == 2
    assert action.record.return_attempts == 1
    assert action.record.next_return_at == format_time(clock.now() + dt.timedelta(seconds=60))
    assert action.status.phase == Phase.MONITORING and action.status.spot_healthy_since == ""
    assert (
        "Spot is still short: a launch of my-spot-asg failed (capacity (InsufficientInstanceCapacity))" in action.note
    )
    assert "nothing drained" in action.note and "backoff 1m" in action.note

    # The runner withdrew and cleared the return. Spot stays healthy and stable: no new attempt before the backoff.
    after = action.record.cleared_return()
    current = event(Phase.MONITORING, record=after, spot_healthy_since=format_time(clock.now() - dt.timedelta(hours=1)))
    clock.advance(59)
    assert isinstance(decide(current, after, facts(clock), SETTINGS), Wait)
    clock.advance(1)
    retry = decide(current, after, facts(clock), SETTINGS)
    assert isinstance(retry, RequestReturn)
    assert retry.record.return_attempts == 1  # the count of short attempts carries on to the next one

    # Short again: the backoff doubles, up to the maximum.
    failed_again = dataclasses.replace(failed, activity_id="a-2", start_time=clock.now())
    scaled = group(3, dict.fromkeys(READY, "InService"))
    again = decide(
        current,
        retry.record.replace(return_confirmed=True),
        facts(clock, scaled, record=retry.record, activities=(failed_again,)),
        SETTINGS,
    )
    assert isinstance(again, Withdraw)
    assert "InsufficientInstanceCapacity" in again.note
    assert again.record.return_attempts == 2
    assert again.record.next_return_at == format_time(clock.now() + dt.timedelta(seconds=120))
    assert [backoff(n, SETTINGS) for n in (1, 2, 3, 4)] == [60, 120, 200, 200]


def test_a_return_past_its_deadline_is_withdrawn(clock: FakeClock) -> None:
    record = in_flight(clock)
    current = stable_event(clock, record)
    clock.advance(181)
    pending = group(3, {"i-s1": "InService", "i-s2": "InService", "i-s3": "Pending"})
    action = decide(current, record, facts(clock, pending, record=record), SETTINGS)
    assert isinstance(action, Withdraw)
    assert "not InService with a Ready Node by the capacity-check deadline" in action.note


def test_a_returned_instance_a_launch_hook_holds_is_waited_for_past_the_deadline(clock: FakeClock) -> None:
    from controller.checks.launch_hooks import hook_wait
    from controller.model.asg import LAUNCHING_TRANSITION, LifecycleHook

    record = in_flight(clock)
    current = stable_event(clock, record)
    hooks = hook_wait([LifecycleHook("bootstrap", LAUNCHING_TRANSITION, 300, "ABANDON")], 180.0)
    held = group(3, {"i-s1": "InService", "i-s2": "InService", "i-s3": "Pending:Wait"})
    clock.advance(181)
    action = decide(current, record, facts(clock, held, record=record, return_held=("i-s3",), hooks=hooks), SETTINGS)
    assert isinstance(action, Wait), action
    clock.advance(300)  # the deadline plus the hook's timeout
    action = decide(current, record, facts(clock, held, record=record, return_held=("i-s3",), hooks=hooks), SETTINGS)
    assert isinstance(action, Withdraw) and "still held by launch lifecycle hook(s) bootstrap" in action.note


def test_a_withdraw_intent_left_by_a_crash_is_resumed(clock: FakeClock) -> None:
    record = in_flight(clock, withdraw_target=2, return_attempts=1, last_short_reason="short")
    action = decide(stable_event(clock, record), record, facts(clock), SETTINGS)
    assert isinstance(action, Withdraw) and action.record == record


def test_a_spot_asg_at_max_size_backs_off_without_scaling(clock: FakeClock) -> None:
    full = group(2, dict.fromkeys(READY, "InService"), max_size=2)
    action = decide(stable_event(clock), LifecycleProgress(), facts(clock, full), SETTINGS)
    assert isinstance(action, Transition)
    assert action.reason == "SpotStillShort"
    assert action.record is not None and action.record.return_attempts == 1
    assert "at its MaxSize 2" in action.status.message


def test_after_a_relapse_an_already_returned_spot_is_not_scaled_up_again(clock: FakeClock) -> None:
    record = LifecycleProgress(return_target=3, return_confirmed=True, returned_instance="i-s3")
    action = decide(stable_event(clock, record), record, facts(clock), SETTINGS)
    assert isinstance(action, Transition)
    assert action.status.phase == Phase.READY_FOR_SCALE_DOWN
    assert action.record is None  # nothing new to record


# -- ReadyForScaleDown -------------------------------------------------------------------------------------


def passed(name: str) -> CheckResult:
    return CheckResult(name, True, f"{name} fine")


def test_ready_asks_for_the_safety_checks_then_starts_the_scale_down(clock: FakeClock) -> None:
    current = event(Phase.READY_FOR_SCALE_DOWN, spot_capacity_restored=True)
    assert isinstance(decide(current, LifecycleProgress(), facts(clock), SETTINGS), CheckSafety)
    results = (passed("pods-fit"), passed("disruption-budgets"), passed("utilisation"))
    action = decide(current, LifecycleProgress(), facts(clock, safety=results), SETTINGS)
    assert isinstance(action, BeginScaleDown)
    assert action.status.phase == Phase.SCALING_DOWN
    assert action.status.scale_down_initiated
    assert action.status.message == "Safety checks passed, scaling down on-demand node ip-10-0-2-100"


def test_a_failed_safety_check_keeps_the_event_ready_and_is_not_a_failure(clock: FakeClock) -> None:
    current = event(Phase.READY_FOR_SCALE_DOWN, spot_capacity_restored=True)
    results = (passed("pods-fit"), CheckResult("disruption-budgets", False, "PDB a/b allows 0"), passed("utilisation"))
    action = decide(current, LifecycleProgress(), facts(clock, safety=results), SETTINGS)
    assert isinstance(action, Transition)
    assert action.status.phase == Phase.READY_FOR_SCALE_DOWN
    assert (
        action.status.message
        == "Waiting for the safety checks (again in 30s): disruption-budgets failed: PDB a/b allows 0"
    )
    assert action.wake_in == 30
    again = decide(step(current, action), LifecycleProgress(), facts(clock, safety=results), SETTINGS)
    assert again == Wait(30, "safety checks failed")


def test_a_relapse_before_the_scale_down_goes_back_to_monitoring(clock: FakeClock) -> None:
    current = event(Phase.READY_FOR_SCALE_DOWN, spot_capacity_restored=True, spot_healthy_since="x")
    action = decide(current, LifecycleProgress(), facts(clock, ready=frozenset({"i-s1"})), SETTINGS)
    assert isinstance(action, Transition)
    assert action.status.phase == Phase.MONITORING
    assert not action.status.spot_capacity_restored and not action.status.spot_healthy_since
    assert action.reason == "SpotRelapsed"


# -- instance refreshes --------------------------------------------------------------------------------------

ON_DEMAND = "my-ondemand-asg"


@pytest.mark.parametrize(
    ("phase", "refreshing", "status", "waits"),
    [
        # the return to spot and the scale-down wait while a refresh of either group of the pair is active
        (Phase.MONITORING, SPOT, "InProgress", True),
        (Phase.MONITORING, ON_DEMAND, "Pending", True),
        (Phase.MONITORING, ON_DEMAND, "Cancelling", True),
        (Phase.READY_FOR_SCALE_DOWN, SPOT, "RollbackInProgress", True),
        (Phase.READY_FOR_SCALE_DOWN, ON_DEMAND, "InProgress", True),
        # an ended refresh, or one of a group outside the pair, holds nothing
        (Phase.MONITORING, SPOT, "Successful", False),
        (Phase.MONITORING, "someone-elses-asg", "InProgress", False),
        (Phase.READY_FOR_SCALE_DOWN, ON_DEMAND, "Cancelled", False),
    ],
)
def test_the_return_to_spot_and_the_scale_down_wait_for_an_instance_refresh_of_either_group(
    clock: FakeClock, phase: str, refreshing: str, status: str, waits: bool
) -> None:
    current = stable_event(clock) if phase == Phase.MONITORING else event(phase, spot_capacity_restored=True)
    refresh = InstanceRefresh("08b91cf7-8fa6-48af-b6a6-d227f40f1b9b", refreshing, status)
    assert isinstance(decide(current, LifecycleProgress(), facts(clock, refreshes=None), SETTINGS), CheckRefreshes)
    action = decide(current, LifecycleProgress(), facts(clock, refreshes=(refresh,)), SETTINGS)
    if not waits:
        assert isinstance(action, RequestReturn if phase == Phase.MONITORING else CheckSafety), action
        return
    assert isinstance(action, Transition), action
    assert action.status.phase == phase, "waiting is not a phase change"
    assert action.reason == "WaitingForInstanceRefresh"
    assert refresh.refresh_id in action.status.message and refreshing in action.status.message
    assert "on-demand node ip-10-0-2-100 keeps the workload" in action.status.message
    assert "cancel-instance-refresh" in action.status.message
    # said once; then it waits, with no write, until the refresh ends
    again = decide(step(current, action), LifecycleProgress(), facts(clock, refreshes=(refresh,)), SETTINGS)
    assert isinstance(again, Wait) and again.seconds == SETTINGS.lifecycle_poll_interval
    ended = decide(step(current, action), LifecycleProgress(), facts(clock), SETTINGS)
    assert isinstance(ended, RequestReturn if phase == Phase.MONITORING else CheckSafety), ended


def test_a_scale_down_already_under_way_does_not_wait_for_a_refresh(clock: FakeClock) -> None:
    """Once ScalingDown began (the race point passed) the drain and the exact termination go on: a refresh
    does not undo TerminateInstanceInAutoScalingGroup of exactly the on-demand instance."""
    current = event(Phase.SCALING_DOWN, spot_capacity_restored=True, scale_down_initiated=True)
    refresh = InstanceRefresh("r-1", ON_DEMAND, "InProgress")
    assert isinstance(decide(current, LifecycleProgress(), facts(clock, refreshes=(refresh,)), SETTINGS), RunScaleDown)


# -- ScalingDown, Completed, Failed --------------------------------------------------------------------------


def test_scaling_down_runs_and_a_relapse_aborts_it_until_the_terminate_intent(clock: FakeClock) -> None:
    current = event(Phase.SCALING_DOWN, scale_down_initiated=True)
    assert isinstance(decide(current, LifecycleProgress(), facts(clock), SETTINGS), RunScaleDown)
    relapsed = facts(clock, group(3, dict.fromkeys(READY, "InService")))
    abort = decide(current, LifecycleProgress(owner="a"), relapsed, SETTINGS)
    assert isinstance(abort, AbortScaleDown)
    assert abort.status.phase == Phase.MONITORING and not abort.status.scale_down_initiated
    assert "relapsed during the scale-down" in abort.status.message
    committed = LifecycleProgress(owner="a", terminate_requested_at=format_time(clock.now()))
    assert isinstance(decide(current, committed, relapsed, SETTINGS), RunScaleDown)


def test_completed_events_are_deleted_after_the_ttl_from_when_they_finished(clock: FakeClock) -> None:
    record = LifecycleProgress(finished_at=format_time(clock.now() + dt.timedelta(hours=1)))
    current = event(Phase.COMPLETED, record=record)
    clock.advance(3600 + 86399)
    assert decide(current, record, facts(clock), SETTINGS) == Wait(1, "Completed; deleted when its TTL runs out")
    clock.advance(1)
    assert isinstance(decide(current, record, facts(clock), SETTINGS), Delete)


def test_failed_events_stay(clock: FakeClock) -> None:
    clock.advance(10 * 86400)
    action = decide(event(Phase.FAILED, message="drain timed out"), LifecycleProgress(), facts(clock), SETTINGS)
    assert isinstance(action, Wait) and math.isinf(action.seconds)


def test_an_earlier_attempts_failure_does_not_count_against_the_next_return(clock: FakeClock) -> None:
    current = stable_event(clock)
    # An earlier attempt failed 3 s ago: within the clock skew allowed between AWS and us, so only its id tells.
    earlier = clock.now() - dt.timedelta(seconds=3)
    short = "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot capacity available."
    old_failure = Activity(
        "a-1", "Failed", short, f"Launching a new EC2 instance.  Status Reason: {short}", "", earlier
    )
    request = decide(current, LifecycleProgress(), facts(clock, activities=(old_failure,)), SETTINGS)
    assert isinstance(request, RequestReturn)
    assert request.record.return_seen_activity == "a-1"

    record = request.record.replace(return_confirmed=True)
    scaled = group(3, {"i-s1": "InService", "i-s2": "InService", "i-s3": "Pending"})
    assert isinstance(
        decide(current, record, facts(clock, scaled, record=record, activities=(old_failure,)), SETTINGS), Wait
    )
    new_failure = dataclasses.replace(old_failure, activity_id="a-2", start_time=clock.now())
    action = decide(
        current, record, facts(clock, scaled, record=record, activities=(new_failure, old_failure)), SETTINGS
    )
    assert isinstance(action, Withdraw)
