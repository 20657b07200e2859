"""The capacity check as a pure decision: arrival, early fallback, someone else's lower desired capacity, MaxSize,
deadline."""

from __future__ import annotations

import datetime as dt

import pytest

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


def _failed(at: dt.datetime, message: str = SHORT, status: str = "Failed") -> Activity:
    # As EC2 Auto Scaling writes a failed launch (DescribeScalingActivities): the sentence in StatusMessage and
    # again in the Description's "Status Reason".
    return Activity("a", status, message, f"Launching a new EC2 instance.  Status Reason: {message}", "", at)


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


# Failed launches as AWS writes them (sources in controller/checks/launch_failures.py): with a code (groups with a
# MixedInstancesPolicy), without one (launch-template spot groups write the sentence alone), quota, configuration.
UNCODED_SHORT = "There is no Spot capacity available that matches your request. Launching EC2 instance failed."
QUOTA = (
    "You have requested more vCPU capacity than your current vCPU limit of 32 allows for the instance bucket that the "
    "specified instance type belongs to. Please visit http://aws.amazon.com/contact-us/ec2-request to request an "
    "adjustment to this limit. Launching EC2 instance failed."
)
NO_AMI = "The image id '[ami-0123456789abcdef0]' does not exist. Launching EC2 instance failed."


@pytest.mark.parametrize(
    ("message", "category", "code", "said"),
    [
        (SHORT, "capacity", "InsufficientInstanceCapacity", "(capacity (InsufficientInstanceCapacity))"),
        (UNCODED_SHORT, "capacity", "InsufficientInstanceCapacity", "no capacity"),
        (QUOTA, "quota", "VcpuLimitExceeded", "vCPU"),
        (NO_AMI, "configuration", "InvalidAMIID.NotFound", "configuration error"),
    ],
    ids=["coded-capacity", "uncoded-capacity", "quota", "configuration"],
)
def test_every_failed_launch_falls_back_at_the_next_poll_saying_what_it_is(
    message: str, category: str, code: str, said: str
) -> None:
    decision = _evaluate(activities=(_failed(T0 + dt.timedelta(seconds=1), message),))
    assert isinstance(decision, capacity.Fallback)
    assert (decision.category, decision.code) == (category, code)
    assert said in decision.reason and message in decision.reason and "spot" in decision.reason


def test_a_group_whose_launch_process_is_suspended_falls_back_at_once_as_a_configuration_error() -> None:
    decision = _evaluate(launch_suspended=True)
    assert isinstance(decision, capacity.Fallback)
    assert decision.code == "LaunchProcessSuspended" and decision.category == "configuration"
    assert "--scaling-processes Launch" in decision.reason and "resume-processes" in decision.reason
    assert _evaluate(ready=("i-new",), launch_suspended=True) == capacity.Ready(("i-new",)), "arrived is arrived"


def test_a_configuration_error_tells_the_operator_to_fix_the_group() -> None:
    decision = _evaluate(activities=(_failed(T0 + dt.timedelta(seconds=1), NO_AMI),))
    assert isinstance(decision, capacity.Fallback)
    assert "fix the group or its launch template" in decision.reason and "spotguard doctor" in decision.reason


def test_an_unknown_failed_launch_falls_back_too_with_awss_words() -> None:
    decision = _evaluate(activities=(_failed(T0 + dt.timedelta(seconds=1), "Something new went wrong."),))
    assert isinstance(decision, capacity.Fallback)
    assert decision.category == "unknown" and decision.code == "LaunchFailed.unknown"
    assert "Something new went wrong." in decision.reason


def test_activities_that_are_not_failed_launches_do_not_count() -> None:
    ok = Activity("a", "Successful", "", "Launching a new EC2 instance: i-1", "", T0 + dt.timedelta(seconds=1))
    terminate = Activity("b", "Failed", SHORT, "Terminating EC2 instance: i-2", "", T0 + dt.timedelta(seconds=1))
    assert isinstance(_evaluate(activities=(ok, terminate)), capacity.Wait)


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


# -- several pools: the group tries its other pools before Spot Guard falls back --------------------------------

QUOTA_MESSAGE = (
    "Could not launch Spot Instances. MaxSpotInstanceCountExceeded - Max spot instance count exceeded. "
    "Launching EC2 instance failed."
)


@pytest.mark.parametrize(
    ("pools", "wanted", "failures", "messages", "falls_back"),
    [
        (1, 1, 1, SHORT, True),  # one pool: the first capacity failure
        (3, 1, 1, SHORT, False),  # one pool of three short: the group tries the next
        (3, 1, 2, SHORT, False),
        (3, 1, 3, SHORT, True),  # every pool tried
        (3, 2, 2, SHORT, False),  # a batch of two: the same rule
        (3, 2, 3, SHORT, True),
        (3, 1, 1, QUOTA_MESSAGE, True),  # a quota: no other pool of the account helps
        (6, 1, 1, NO_AMI, True),  # a configuration error: at once
    ],
)
def test_a_group_with_several_pools_falls_back_once_every_pool_failed(
    pools: int, wanted: int, failures: int, messages: str, falls_back: bool
) -> None:
    activities = tuple(_failed(T0 + dt.timedelta(seconds=1 + n), messages) for n in range(failures))
    decision = _evaluate(activities=activities, pools=pools, wanted=wanted)
    assert isinstance(decision, capacity.Fallback) == falls_back, decision
    if not falls_back:
        assert decision == capacity.Wait(15.0)
        assert _evaluate(activities=activities, pools=pools, wanted=wanted, now=100.0) == capacity.Fallback(
            reason="1 of 1 new instance(s) of spot not InService with a Ready Node by the capacity-check deadline"
            if wanted == 1
            else "2 of 2 new instance(s) of spot not InService with a Ready Node by the capacity-check deadline",
            code="CapacityCheckTimeout",
            instances=(),
            shortfall=wanted,
        )
