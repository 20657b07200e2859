"""The capacity check as a pure decision: arrival, early fallback, someone else's lower desired capacity, MaxSize,
deadline."""

from __future__ import annotations

import datetime as dt

from controller.checks import capacity_check as capacity
from controller.model.asg import Activity, Group, Instance

T0 = dt.datetime(2026, 11, 21, 10, 0, 0, tzinfo=dt.UTC)
SHORT = "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot capacity available."


def _group(*states: tuple[str, str], desired: int = 4, max_size: int = 10) -> Group:
    return Group(
        name="spot",
        desired=desired,
        min_size=0,
        max_size=max_size,
        capacity_rebalance=False,
        instances=tuple(Instance(i, s, "us-east-1a", "m5.large") for i, s in states),
        tags={},
    )


def _failed(at: dt.datetime) -> Activity:
    return Activity("a", "Failed", SHORT, "", "", at)


def _evaluate(
    ready: tuple[str, ...] = (), activities: tuple[Activity, ...] = (), now: float = 10.0, **kw: object
) -> object:
    args: dict[str, object] = {
        "wanted": 1,
        "group_name": "spot",
        "ready": ready,
        "short": 0,
        "activities": activities,
        "requested_at": T0,
        "deadline_monotonic": 100.0,
        "now_monotonic": now,
        "poll_interval": 5.0,
    }
    args.update(kw)
    return capacity.evaluate(**args)  # type: ignore[arg-type]


OLD = (("i-old1", "InService"), ("i-old2", "InService"), ("i-old3", "InService"))


def test_a_ready_arrival_is_success() -> None:
    assert isinstance(_evaluate(), capacity.Wait)
    assert _evaluate(ready=("i-new",)) == capacity.Ready(("i-new",))


def test_nothing_ready_waits_until_the_next_poll_not_past_the_deadline() -> None:
    assert _evaluate(now=10.0) == capacity.Wait(15.0)
    assert _evaluate(now=98.0) == capacity.Wait(100.0)


def test_deadline_falls_back_exactly_at_the_deadline() -> None:
    decision = _evaluate(now=100.0)
    assert isinstance(decision, capacity.Fallback) and decision.code == "CapacityCheckTimeout"


def test_a_capacity_failure_after_the_scale_up_falls_back_at_once() -> None:
    decision = _evaluate(activities=(_failed(T0 + dt.timedelta(seconds=1)),))
    assert isinstance(decision, capacity.Fallback)
    assert decision.code == "InsufficientInstanceCapacity" and decision.shortfall == 1


def test_a_failure_of_an_earlier_request_does_not_count() -> None:
    earlier = _failed(T0 - dt.timedelta(seconds=2))  # inside the clock-skew allowance, but already seen
    assert isinstance(_evaluate(activities=(earlier,), seen_before=earlier.start_time), capacity.Wait)
    long_ago = _failed(T0 - dt.timedelta(minutes=5))
    assert isinstance(_evaluate(activities=(long_ago,)), capacity.Wait)


def test_a_claim_whose_launch_someone_else_uncovered_falls_back() -> None:
    decision = _evaluate(short=1)
    assert isinstance(decision, capacity.Fallback) and decision.code == "DesiredCapacityLowered"
    assert "someone other than Spot Guard" in decision.reason


def test_partial_arrival_falls_back_only_for_the_shortfall() -> None:
    decision = _evaluate(ready=("i-new",), now=100.0, wanted=2)
    assert isinstance(decision, capacity.Fallback)
    assert decision.instances == ("i-new",) and decision.shortfall == 1


def test_plan_scale_up_stops_at_max_size() -> None:
    assert capacity.plan_scale_up(_group(*OLD, desired=3, max_size=10), 2) == (5, 2)
    assert capacity.plan_scale_up(_group(*OLD, desired=9, max_size=10), 3) == (10, 1)
    assert capacity.plan_scale_up(_group(*OLD, desired=10, max_size=10), 1) == (10, 0)
