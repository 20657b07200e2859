"""Which Node changes wake the replacement controller: not the heartbeats of thousands of quiet Nodes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from controller.clock import FakeClock
from controller.config import Settings
from controller.model.node import NodeView
from controller.replacement.controller import ReplacementController
from tests.unit.controller import replacement_parts

QUIET = NodeView(
    name="n1",
    resource_version="1",
    provider_id="aws:///us-east-1a/i-1",
    labels={},
    annotations={},
    ready=True,
    unschedulable=False,
    taints=(),
)


@pytest.fixture
def controller(clock: FakeClock) -> ReplacementController:
    unused: Any = None
    return ReplacementController(replacement_parts.context(Settings(), clock, unused, unused, dict))


def _woken(controller: ReplacementController, event_type: str, node: NodeView) -> bool:
    controller._wake.clear()
    controller.notify(event_type, node)
    return controller._wake.is_set()


def test_a_quiet_node_wakes_it_when_it_comes_and_goes_but_not_on_heartbeats(controller: ReplacementController) -> None:
    assert _woken(controller, "ADDED", QUIET)
    for version in range(2, 20):  # status heartbeats, another controller's labels
        assert not _woken(controller, "MODIFIED", dataclasses.replace(QUIET, resource_version=str(version)))
    assert _woken(controller, "DELETED", QUIET)


def test_readiness_and_spot_guard_annotations_wake_it(controller: ReplacementController) -> None:
    controller.notify("ADDED", dataclasses.replace(QUIET, ready=False))
    assert _woken(controller, "MODIFIED", QUIET), "a replacement Node became Ready"
    assert _woken(controller, "MODIFIED", dataclasses.replace(QUIET, deleting=True)), "a Node is going"
    noticed = dataclasses.replace(QUIET, annotations={"spotguard.io/rebalance-notice-time": "2026-11-22T02:00:00Z"})
    assert _woken(controller, "MODIFIED", noticed)
    assert _woken(controller, "MODIFIED", dataclasses.replace(noticed, resource_version="9")), "annotated: always"


def test_a_call_without_a_node_always_wakes_it(controller: ReplacementController) -> None:
    assert _woken(controller, "", None)  # type: ignore[arg-type]
