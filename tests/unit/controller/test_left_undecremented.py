"""What a group owes back for an instance that left it before Spot Guard terminated it (a table): the activities are
in the shapes EC2 Auto Scaling writes (the simulator's ``sandbox/aws/aws_messages.py`` cites where each comes from)."""

from __future__ import annotations

import datetime as dt

import pytest

from controller.checks.arrivals import assign
from controller.checks.left_undecremented import Owes, owed
from controller.model.asg import Activity, Group, Instance
from controller.model.claim import Claim

T0 = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC)
OLD = "i-0old00000000000a"  # the interrupted node's instance, which EC2 took
REPLACEMENT = "i-0repl0000000000b"  # its replacement, bound to the node's record
SERVING = {"i-0serve000000001": "InService", "i-0serve000000002": "InService"}

HEALTH_CHECK = (
    "At 2026-12-05T10:02:00Z an instance was taken out of service in response to an EC2 health check indicating it "
    f"has been terminated or stopped.  Instance {OLD} is no longer in the group."
)
REFRESH = (
    "At 2026-12-05T10:02:00Z an instance was taken out of service in response to an instance refresh.  At "
    f"2026-12-05T10:02:00Z instance {OLD} was selected for termination."
)
USER_DECREMENT = (
    f"At 2026-12-05T10:02:00Z instance {OLD} was taken out of service in response to a user request, shrinking the "
    "capacity from 4 to 3."
)
USER_NO_DECREMENT = f"At 2026-12-05T10:02:00Z instance {OLD} was taken out of service in response to a user request."


def activity(n: int, description: str, cause: str = "", status: str = "Successful", seconds: int = 0) -> Activity:
    return Activity(f"act-{n}", status, "", description, cause, T0 + dt.timedelta(seconds=seconds))


def terminated(cause: str) -> Activity:
    return activity(1, f"Terminating EC2 instance: {OLD}", cause, seconds=120)


def launched(instance: str, seconds: int) -> Activity:
    cause = "At 2026-12-05T10:02:30Z an instance was started in response to a difference between desired and actual "
    return activity(
        seconds, f"Launching a new EC2 instance: {instance}", cause + "capacity, increasing it", seconds=seconds
    )


FAILED = activity(
    99,
    "Launching a new EC2 instance.  Status Reason: Could not launch Spot Instances. InsufficientInstanceCapacity - "
    "There is no Spot capacity available that matches your request. Launching EC2 instance failed.",
    status="Failed",
    seconds=150,
)


def group(desired: int, states: dict[str, str]) -> Group:
    instances = tuple(Instance(i, s, "us-east-1a", "m5.large") for i, s in states.items())
    return Group("spot", desired, 0, 10, False, instances, {})


LIVE = {**SERVING, REPLACEMENT: "InService"}  # after EC2 took OLD: the two serving and the replacement


@pytest.mark.parametrize(
    ("desired", "states", "activities", "claims", "owes", "instance"),
    [
        pytest.param(
            4,
            {**LIVE, "i-0inplace0000000c": "Pending"},
            [launched("i-0inplace0000000c", 150), terminated(HEALTH_CHECK), launched(REPLACEMENT, 30)],
            [],
            Owes.TERMINATE,
            "i-0inplace0000000c",
            id="EC2 took it; the group launched one in its place: that one goes",
        ),
        pytest.param(
            4,
            {**LIVE, "i-0inplace0000000c": "InService"},
            [launched("i-0inplace0000000c", 150), terminated(REFRESH)],
            [],
            Owes.TERMINATE,
            "i-0inplace0000000c",
            id="an instance refresh took it: the refresh's launch goes",
        ),
        pytest.param(
            4,
            LIVE,
            [terminated(HEALTH_CHECK), launched(REPLACEMENT, 30)],
            [],
            Owes.WAIT,
            "",
            id="the group has not launched in its place yet: wait, never lower (the termination policy would choose)",
        ),
        pytest.param(
            4,
            LIVE,
            [FAILED, terminated(HEALTH_CHECK)],
            [],
            Owes.LOWER,
            "",
            id="the group cannot launch in its place (a launch failed since): lower, nothing to choose from",
        ),
        pytest.param(
            3,
            LIVE,
            [terminated(USER_DECREMENT)],
            [],
            Owes.NOTHING,
            "",
            id="its termination lowered desired capacity (ours, before a crash): nothing owed",
        ),
        pytest.param(
            4,
            {**LIVE, "i-0inplace0000000c": "InService"},
            [launched("i-0inplace0000000c", 150), terminated(USER_NO_DECREMENT)],
            [],
            Owes.TERMINATE,
            "i-0inplace0000000c",
            id="someone terminated it by hand without the decrement: the group's relaunch goes",
        ),
        pytest.param(
            3,
            LIVE,
            [terminated(HEALTH_CHECK)],
            [],
            Owes.NOTHING,
            "",
            id="someone else already lowered desired capacity: nothing owed",
        ),
        pytest.param(
            4,
            {**LIVE, "i-0inplace0000000c": "InService"},
            [launched("i-0inplace0000000c", 150)],
            [],
            Owes.UNKNOWN,
            "",
            id="its termination is not among the activities read: nothing is guessed",
        ),
        pytest.param(
            5,
            {**LIVE, "i-0inplace0000000c": "InService"},
            [launched("i-0inplace0000000c", 150), terminated(HEALTH_CHECK)],
            [Claim("batch/b", "spot", 1, frozenset({*SERVING, REPLACEMENT, OLD}), "2026-12-05T10:01:00Z")],
            Owes.WAIT,
            "",
            id="an open claim took the instance launched in its place: wait for the claim's own launch",
        ),
        pytest.param(
            5,
            {**LIVE, "i-0inplace0000000c": "InService", "i-0claims00000000d": "Pending"},
            [launched("i-0claims00000000d", 160), launched("i-0inplace0000000c", 150), terminated(HEALTH_CHECK)],
            [Claim("batch/b", "spot", 1, frozenset({*SERVING, REPLACEMENT, OLD}), "2026-12-05T10:01:00Z")],
            Owes.TERMINATE,
            "i-0inplace0000000c",
            id="...then whichever new instance the claim did not take goes (new instances are fungible)",
        ),
        pytest.param(
            3,
            {**LIVE, "i-0inplace0000000c": "Terminating"},
            [launched("i-0inplace0000000c", 150), terminated(HEALTH_CHECK)],
            [],
            Owes.NOTHING,
            "",
            id="the one launched in its place is leaving already (a successor's repeat): nothing more",
        ),
    ],
)
def test_what_a_group_owes_for_an_instance_that_left_it_undecremented(
    *,
    desired: int,
    states: dict[str, str],
    activities: list[Activity],
    claims: list[Claim],
    owes: Owes,
    instance: str,
) -> None:
    state = assign(group(desired, states), claims, bound={REPLACEMENT})
    verdict = owed(OLD, state, activities, bound={REPLACEMENT})
    assert (verdict.owes, verdict.instance) == (owes, instance), verdict.reason
    assert OLD in verdict.reason and "spot" in verdict.reason


def test_the_reason_says_how_it_left_without_aws_timestamps() -> None:
    state = assign(group(4, LIVE), [], bound={REPLACEMENT})
    verdict = owed(OLD, state, [terminated(HEALTH_CHECK)], bound={REPLACEMENT})
    assert "taken out of service in response to an EC2 health check" in verdict.reason
    assert "2026-12-05T10:02:00Z" not in verdict.reason
