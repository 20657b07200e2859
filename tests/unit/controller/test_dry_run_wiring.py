"""Observe-only is wired in one place (controller.app.run): with SPOT_GUARD_DRY_RUN every controller of the term
gets the seam's adapters, and without it none does."""

from __future__ import annotations

import pytest

from controller.adapters.dry_run import DryRunAutoScaling, DryRunKube
from controller.adapters.kube import Kube
from controller.app.run import LeaderComponents, leader_components
from controller.clock import Cancellation, FakeClock
from controller.config import Settings


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")


def _parts(dry_run: bool) -> LeaderComponents:
    settings = Settings(spot_asg_name="s", on_demand_asg_name="o", dry_run=dry_run).validate()
    return leader_components(settings, Kube(None), FakeClock(), lambda operation: None, Cancellation())


def test_observe_only_puts_the_seam_under_both_controllers_and_keeps_events_real() -> None:
    parts = _parts(True)
    assert isinstance(parts.asg, DryRunAutoScaling)
    assert parts.owner.asg is parts.asg
    for kube in (
        parts.informer.kube,
        parts.sgfe_cache.kube,
        parts.lifecycle.kube,
        parts.replacement.ctx.writer.kube,
        parts.replacement.ctx.sgfes.kube,
    ):
        assert isinstance(kube, DryRunKube)
    assert not isinstance(parts.events._kube, DryRunKube), "Events are written for real"
    assert parts.announcer is not None


def test_without_it_nothing_of_the_seam_is_there() -> None:
    parts = _parts(False)
    assert not isinstance(parts.asg, DryRunAutoScaling)
    assert not isinstance(parts.informer.kube, DryRunKube)
    assert parts.announcer is None
