"""The rule for instances a launch lifecycle hook holds (controller.checks.launch_hooks), and the capacity check
that follows it: a held instance is not a shortage while its hook can still complete."""

from __future__ import annotations

import datetime as dt

import pytest

from controller.checks import capacity_check as capacity
from controller.checks.launch_hooks import HOOK_WAIT_CAP, hook_wait
from controller.model.asg import LAUNCHING_TRANSITION, TERMINATING_TRANSITION, Activity, LifecycleHook

T0 = dt.datetime(2026, 11, 21, 10, 0, 0, tzinfo=dt.UTC)
ABANDONED = (
    "Instance failed to complete user's Lifecycle Action: Lifecycle Action with token "
    "7f5e5e4c-0000-0000-0000-000000000000 was abandoned: Lifecycle Action Completed with ABANDON Result"
)


def _hook(name: str, timeout: int, transition: str = LAUNCHING_TRANSITION, result: str = "ABANDON") -> LifecycleHook:
    return LifecycleHook(name, transition, timeout, result)


@pytest.mark.parametrize(
    ("hooks", "deadline", "window", "conflicts"),
    [
        ((), 180.0, 180.0, ()),
        ((_hook("drain", 3600, TERMINATING_TRANSITION),), 180.0, 180.0, ()),  # termination hooks do not count
        ((_hook("bootstrap", 300),), 180.0, 480.0, ()),
        ((_hook("bootstrap", 300), _hook("join", 600)), 180.0, 780.0, ()),
        ((_hook("bootstrap", 600),), 180.0, 780.0, ()),  # exactly the cap: fits
        ((_hook("bootstrap", 601),), 180.0, 180.0 + HOOK_WAIT_CAP, ("bootstrap",)),
        ((_hook("bootstrap", 3600), _hook("join", 60)), 180.0, 780.0, ("bootstrap",)),  # AWS's default: capped
        ((_hook("bootstrap", 600),), 1200.0, 1800.0, ()),
    ],
)
def test_the_wait_for_a_held_instance_is_the_deadline_plus_the_longest_launch_hook_capped(
    hooks: tuple[LifecycleHook, ...], deadline: float, window: float, conflicts: tuple[str, ...]
) -> None:
    wait = hook_wait(hooks, deadline)
    assert wait.window == window
    assert wait.grace == window - deadline
    assert tuple(h.name for h in wait.conflicts) == conflicts


def _evaluate(
    now: float, *, held: tuple[str, ...] = ("i-new",), hooks: tuple[LifecycleHook, ...] = (), **kw: object
) -> object:
    args: dict[str, object] = {
        "wanted": 1,
        "group_name": "spot",
        "ready": (),
        "short": 0,
        "activities": (),
        "requested_at": T0,
        "deadline_monotonic": 100.0,
        "now_monotonic": now,
        "poll_interval": 5.0,
        "held": held,
        "hooks": hook_wait(hooks, 100.0),
    }
    args.update(kw)
    return capacity.evaluate(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("now", "held", "hooks", "expected"),
    [
        # before the deadline nothing changes
        (10.0, ("i-new",), (_hook("bootstrap", 300),), capacity.Wait(15.0)),
        # at the deadline a held instance keeps waiting, a poll at a time, up to deadline + hook timeout
        (100.0, ("i-new",), (_hook("bootstrap", 300),), capacity.Wait(105.0)),
        (398.0, ("i-new",), (_hook("bootstrap", 300),), capacity.Wait(400.0)),
        (400.0, ("i-new",), (_hook("bootstrap", 300),), "LaunchHookTimeout"),
        # capped: a hook of an hour adds HOOK_WAIT_CAP (600 s) at most to the deadline (100 s)
        (699.0, ("i-new",), (_hook("bootstrap", 3600),), capacity.Wait(700.0)),
        (700.0, ("i-new",), (_hook("bootstrap", 3600),), "LaunchHookTimeout"),
        # no held instance (plain Pending, or none launched), or no launch hook: the deadline alone
        (100.0, (), (_hook("bootstrap", 300),), "CapacityCheckTimeout"),
        (100.0, ("i-new",), (), "CapacityCheckTimeout"),
        (100.0, ("i-new",), (_hook("drain", 300, TERMINATING_TRANSITION),), "CapacityCheckTimeout"),
    ],
)
def test_a_held_instance_is_waited_for_while_its_hook_can_complete(
    now: float, held: tuple[str, ...], hooks: tuple[LifecycleHook, ...], expected: object
) -> None:
    decision = _evaluate(now, held=held, hooks=hooks)
    if isinstance(expected, str):
        assert isinstance(decision, capacity.Fallback) and decision.code == expected
    else:
        assert decision == expected


def test_a_hook_timeout_fallback_names_the_instance_the_hook_and_what_to_do() -> None:
    decision = _evaluate(400.0, hooks=(_hook("bootstrap", 300),))
    assert isinstance(decision, capacity.Fallback)
    assert "i-new" in decision.reason and "bootstrap" in decision.reason and "spot" in decision.reason
    assert "CompleteLifecycleAction" in decision.reason and decision.shortfall == 1


def test_an_abandoned_launch_falls_back_at_once_even_while_the_hook_wait_runs() -> None:
    abandoned = Activity(
        "a",
        "Cancelled",
        ABANDONED,
        f"Launching a new EC2 instance: i-new.  Status Reason: {ABANDONED}",
        "",
        T0 + dt.timedelta(seconds=20),
    )
    decision = _evaluate(150.0, hooks=(_hook("bootstrap", 300),), activities=(abandoned,))
    assert isinstance(decision, capacity.Fallback)
    assert "lifecycle hook abandoned" in decision.reason and decision.code != "LaunchHookTimeout"
