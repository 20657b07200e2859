"""What waits for an instance refresh (controller.checks.instance_refresh), as a table, and the per-group cache of
the refreshes (controller.capacity.refreshes)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.adapters.aws import AwsError
from controller.capacity.refreshes import REFRESHES_MAX_AGE, RefreshCache
from controller.checks.instance_refresh import REBALANCE_WAIT_MAX, Step, refresh_wait
from controller.clock import FakeClock
from controller.model.asg import InstanceRefresh

S = Step


@pytest.mark.parametrize(
    ("step", "spot", "on_demand", "waited", "waits"),
    [
        (S.INTERRUPTION_SCALE_UP, True, True, 0.0, False),  # dies in 2 minutes: never waits
        (S.INTERRUPTION_SCALE_UP, False, False, 0.0, False),
        (S.REBALANCE_SCALE_UP, True, False, 0.0, True),  # queued while the spot group refreshes
        (S.REBALANCE_SCALE_UP, True, False, REBALANCE_WAIT_MAX - 1, True),
        (S.REBALANCE_SCALE_UP, True, False, REBALANCE_WAIT_MAX, False),  # the bound passed: proceeds
        (S.REBALANCE_SCALE_UP, False, True, 0.0, False),  # only its spot group's refresh matters
        (S.REBALANCE_SCALE_UP, False, False, 0.0, False),
        (S.RETURN_TO_SPOT, True, False, 0.0, True),
        (S.RETURN_TO_SPOT, False, True, 0.0, True),  # either group of the pair
        (S.RETURN_TO_SPOT, False, True, 10 * REBALANCE_WAIT_MAX, True),  # no bound: on-demand carries the load
        (S.RETURN_TO_SPOT, False, False, 0.0, False),
        (S.ON_DEMAND_SCALE_DOWN, False, True, 0.0, True),
        (S.ON_DEMAND_SCALE_DOWN, True, False, 0.0, True),
        (S.ON_DEMAND_SCALE_DOWN, False, False, 0.0, False),
        (S.RETIRE_OLD_SPOT, True, True, 0.0, False),  # exactly this instance: never waits
    ],
)
def test_what_waits_for_a_refresh(step: Step, spot: bool, on_demand: bool, waited: float, waits: bool) -> None:
    decision = refresh_wait(step, spot, on_demand, waited)
    assert decision.waits is waits, decision.reason
    assert decision.reason


@pytest.mark.parametrize(
    ("status", "active"),
    [
        ("Pending", True),
        ("InProgress", True),
        ("Cancelling", True),
        ("RollbackInProgress", True),
        ("Baking", True),
        ("Successful", False),
        ("Failed", False),
        ("Cancelled", False),
        ("RollbackFailed", False),
        ("RollbackSuccessful", False),
    ],
)
def test_the_statuses_aws_documents_as_running(status: str, active: bool) -> None:
    assert InstanceRefresh("r-1", "spot", status).active is active


class _Asg:
    def __init__(self) -> None:
        self.calls = 0
        self.statuses: list[str] = ["InProgress"]
        self.error: AwsError | None = None

    def instance_refreshes(self, group: str) -> list[InstanceRefresh]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return [InstanceRefresh(f"r-{i}", group, status) for i, status in enumerate(self.statuses)]


def test_a_groups_refreshes_are_read_once_per_max_age(clock: FakeClock) -> None:
    asg = _Asg()
    cache = RefreshCache()
    fake: Any = asg
    assert cache.active(fake, clock, "spot") == InstanceRefresh("r-0", "spot", "InProgress")
    asg.statuses = ["Successful"]
    clock.advance(REFRESHES_MAX_AGE - 1)
    assert cache.active(fake, clock, "spot") is not None, "still the cached answer"
    assert asg.calls == 1
    clock.advance(1)
    assert cache.active(fake, clock, "spot") is None, "read again: the refresh has ended"
    assert asg.calls == 2


def test_a_refresh_that_cannot_be_read_holds_nothing_back(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    asg = _Asg()
    asg.error = AwsError("DescribeInstanceRefreshes", "AccessDenied", "not authorized", "spot")
    fake: Any = asg
    assert RefreshCache().active(fake, clock, "spot") is None
    assert "autoscaling:DescribeInstanceRefreshes" in caplog.text and "spot" in caplog.text
