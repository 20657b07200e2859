"""What waits for an instance refresh (controller.checks.instance_refresh), as a table, and the per-group cache of
the refreshes (controller.capacity.refreshes)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from controller.adapters.aws import AwsError
from controller.capacity.groups import Pair
from controller.capacity.refreshes import REFRESHES_MAX_AGE, RefreshCache
from controller.checks.instance_refresh import REBALANCE_WAIT_MAX, Step, refresh_wait
from controller.clock import FakeClock
from controller.config import Settings
from controller.model.asg import InstanceRefresh
from controller.observability.events import EventRecorder
from controller.observability.metrics import Metrics
from controller.observability.reporters import KubeReplacementReporter
from controller.replacement.batching import Queued
from controller.replacement.scale_up import refresh_waits
from tests.unit.controller.replacement_parts import context

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


class _Events:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str, str, str]] = []

    def record(self, ref: Any, kind: str, reason: str, message: str) -> None:
        self.recorded.append((ref.name, kind, reason, message))


def _queued(node: str, trigger: str, seen: float) -> Queued:
    return Queued(node, trigger, Pair("spot", "od"), seen)


def test_a_rebalance_waits_for_its_groups_refresh_and_an_interruption_goes_ahead(clock: FakeClock) -> None:
    """The replacement's split of a closed queue: the rebalance is held (reported once per refresh), the interruption
    goes ahead; past the bound, or once the refresh has ended, the rebalance goes ahead too."""
    asg = _Asg()
    events = _Events()
    metrics = Metrics(process_metrics=False)
    ctx = context(
        Settings(spot_asg_name="spot", on_demand_asg_name="od"),
        clock,
        asg,
        writer=None,
        nodes=dict,
        reporter=KubeReplacementReporter(cast(EventRecorder, events), metrics),
    )
    now = clock.monotonic()
    items = [_queued("rebalanced", "rebalance", now), _queued("interrupted", "interruption", now)]

    go, wait = refresh_waits(ctx, "spot", items)
    assert [i.node for i in go] == ["interrupted"] and [i.node for i in wait] == ["rebalanced"]
    assert metrics.registry.get_sample_value("spotguard_instance_refresh_active", {"asg": "spot"}) == 1
    [(node, kind, reason, message)] = events.recorded
    assert (node, kind, reason) == ("rebalanced", "Warning", "InstanceRefreshActive")
    assert "r-0" in message and "ASG spot" in message and "rebalanced" in message and "cancel" in message

    clock.advance(REFRESHES_MAX_AGE)
    go, wait = refresh_waits(ctx, "spot", wait)
    assert wait and len(events.recorded) == 1, "still waiting, reported once per refresh"

    clock.advance(REBALANCE_WAIT_MAX)
    go, wait = refresh_waits(ctx, "spot", [_queued("rebalanced", "rebalance", now)])
    assert [i.node for i in go] == ["rebalanced"] and not wait, "the bound has passed: it goes ahead"

    asg.statuses = ["Successful"]
    clock.advance(REFRESHES_MAX_AGE)
    go, wait = refresh_waits(ctx, "spot", [_queued("fresh", "rebalance", clock.monotonic())])
    assert [i.node for i in go] == ["fresh"] and not wait, "the refresh has ended"
    assert metrics.registry.get_sample_value("spotguard_instance_refresh_active", {"asg": "spot"}) == 0


def test_an_interruption_alone_reads_no_refresh(clock: FakeClock) -> None:
    asg = _Asg()
    ctx = context(Settings(spot_asg_name="spot", on_demand_asg_name="od"), clock, asg, writer=None, nodes=dict)
    go, wait = refresh_waits(ctx, "spot", [_queued("interrupted", "interruption", clock.monotonic())])
    assert [i.node for i in go] == ["interrupted"] and not wait
    assert asg.calls == 0, "DescribeInstanceRefreshes only when something could wait"
