"""Observe-only mode (``SPOT_GUARD_DRY_RUN=true``) on the sandbox, with the real controller process: a burst of
50 recommendations, and a fallback with spot short, leave every group's desired capacity, every instance and every
Node (labels, annotations, taints, unschedulable, finalizers) exactly as they were; the simulator receives no
call that changes anything; and the Events (reason ``SpotGuardWouldAct``, and the road's own Events marked
observe-only) say what would have happened: a scale-up of +N on the spot group, the fallback, the on-demand
scale-up, the give-backs, the taint of a failed replacement.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from controller.observability.reporters import OBSERVE_ONLY_PREFIX
from controller.observability.would_act import REASON
from sandbox.aws.client import SandboxAWSClient
from sandbox.environment import Sandbox
from tests.integration.controller_process import (
    ASG_LABEL,
    LEASE_NAMESPACE,
    ON_DEMAND_ASG,
    SPOT_ASG,
    ControllerLauncher,
    annotate_rebalance,
    controller_env,
    spot_nodes,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(400)

BURST = 50
#: Short deadlines: in observe-only no instance ever comes, so each capacity check ends at its deadline.
FAST = {
    "SPOT_GUARD_DRY_RUN": "true",
    "SPOT_GUARD_CAPACITY_CHECK_TIMEOUT": "4",
    "SPOT_GUARD_CAPACITY_POLL_INTERVAL": "0.5",
    "SPOT_GUARD_BATCH_WINDOW": "0.5",
    "SPOT_GUARD_BATCH_MAX_DELAY": "2",
}
SCALE = re.compile(r"would set the desired capacity of ASG (\S+) from (\d+) to (\d+) \(([+-]\d+)\)")
READ_ONLY = re.compile(r"(Describe|Get|List)\w*")


@pytest.fixture
def launcher(
    sandbox: Sandbox, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api, tmp_path: Path
) -> Iterator[ControllerLauncher]:
    with ControllerLauncher(controller_env(sandbox.env()), tmp_path, core=core) as launcher:
        yield launcher


def _aws_snapshot(aws_sim: SandboxAWSClient) -> dict[str, Any]:
    return {
        g["name"]: {
            "desired": g["desired_capacity"],
            "min": g["min_size"],
            "max": g["max_size"],
            "instances": sorted((i["instance_id"], i["lifecycle_state"]) for i in g["instances"]),
        }
        for g in aws_sim.state()["groups"]
    }


def _node_snapshot(core: k8s.CoreV1Api) -> dict[str, Any]:
    return {
        n.metadata.name: {
            "labels": dict(n.metadata.labels or {}),
            "annotations": dict(n.metadata.annotations or {}),
            "finalizers": list(n.metadata.finalizers or []),
            "taints": sorted((t.key, t.value, t.effect) for t in n.spec.taints or []),
            "unschedulable": bool(n.spec.unschedulable),
            "deleting": n.metadata.deletion_timestamp is not None,
        }
        for n in core.list_node(label_selector=ASG_LABEL).items
    }


def _settled(core: k8s.CoreV1Api) -> dict[str, Any]:
    """The Nodes' snapshot once the cluster itself stopped changing them (new Nodes get labels and lose their
    not-ready taint for a while after they turn Ready): the same over two reads 3 s apart, no not-ready taint."""
    last: dict[str, Any] = {}

    def still() -> bool:
        nonlocal last
        now = _node_snapshot(core)
        same = now == last and not any(
            taint[0].startswith("node.kubernetes.io/") for node in now.values() for taint in node["taints"]
        )
        last = now
        return same

    wait_until(still, 120, "the Nodes to stop changing on their own", interval=3)
    return last


def _events(core: k8s.CoreV1Api, since: dt.datetime) -> list[k8s.CoreV1Event]:
    found = []
    for namespace in ("default", LEASE_NAMESPACE):
        for event in core.list_namespaced_event(namespace).items:
            when = event.last_timestamp or event.first_timestamp or event.event_time
            if when is not None and when >= since:
                found.append(event)
    return found


def _would(events: list[k8s.CoreV1Event], lease: str) -> list[k8s.CoreV1Event]:
    """The controller's SpotGuardWouldAct Events (on its own Lease, and on the Nodes)."""
    return [
        e
        for e in events
        if e.reason == REASON and (e.involved_object.kind == "Node" or e.involved_object.name == lease)
    ]


def _scale_changes(events: list[k8s.CoreV1Event]) -> Counter[tuple[str, str]]:
    """Sum of the would-be desired capacity changes, by (group, scale-up or scale-down)."""
    total: Counter[tuple[str, str]] = Counter()
    for event in events:
        match = SCALE.search(event.message or "")
        if match:
            total[(match.group(1), "up" if int(match.group(4)) > 0 else "down")] += int(match.group(4)) * (
                event.count or 1
            )
    return total


def _assert_nothing_mutating(aws_sim: SandboxAWSClient) -> None:
    calls = aws_sim.calls()
    assert calls, "the controller read the groups"
    mutating = sorted({str(c["operation"]) for c in calls if not READ_ONLY.fullmatch(str(c["operation"]))})
    assert mutating == [], f"observe-only sent calls that change AWS: {mutating}"


def test_a_burst_of_fifty_recommendations_changes_nothing_and_says_what_it_would_do(
    launcher: ControllerLauncher, aws_sim: SandboxAWSClient, autoscaling: Any, core: k8s.CoreV1Api
) -> None:
    aws_sim.set_capacity(SPOT_ASG, pending_seconds=1, retry_seconds=1, capacity_short=False)
    autoscaling.update_auto_scaling_group(AutoScalingGroupName=SPOT_ASG, MaxSize=2 * BURST + 10)
    autoscaling.update_auto_scaling_group(AutoScalingGroupName=ON_DEMAND_ASG, MaxSize=BURST + 10)
    autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT_ASG, DesiredCapacity=BURST, HonorCooldown=False)
    aws_sim.wait_for_instances(SPOT_ASG, "InService", BURST, timeout_seconds=120)
    wait_until(lambda: len(spot_nodes(core)) == BURST, 120, f"{BURST} spot Nodes Ready", interval=0.5)
    nodes = spot_nodes(core)
    since = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for node in nodes:
        annotate_rebalance(core, node)
    nodes_before = _settled(core)
    aws_before = _aws_snapshot(aws_sim)
    aws_sim.reset_calls()

    controller = launcher.start("observer", **FAST)
    controller.wait_for_log("observe-only mode", timeout=30)

    def ended() -> int:
        endings = {"ReplacementFailed", "ReplacementReady"}
        return len({e.involved_object.name for e in _events(core, since) if e.reason in endings})

    wait_until(lambda: ended() == BURST, 180, f"all {BURST} replacements to end", interval=1)
    assert _aws_snapshot(aws_sim) == aws_before
    assert _node_snapshot(core) == nodes_before
    _assert_nothing_mutating(aws_sim)

    events = _events(core, since)
    would = _would(events, launcher.lease_name)
    changes = _scale_changes(would)
    assert changes[(SPOT_ASG, "up")] == BURST, f"a scale-up of +{BURST} on the spot group: {changes}"
    assert changes[(ON_DEMAND_ASG, "up")] == BURST, f"the fallback's +{BURST} on on-demand: {changes}"
    assert changes[(SPOT_ASG, "down")] == -BURST and changes[(ON_DEMAND_ASG, "down")] == -BURST, (
        f"every would-be increase given back: {changes}"
    )
    names = {n.name for n in nodes}
    road = ("SpotScaleUp", "SpotCapacityShort", "OnDemandScaleUp", "ReplacementFailed")
    for reason in road:
        told = {e.involved_object.name for e in events if e.reason == reason}
        assert told == names, f"{reason}: {len(told)} of {BURST} nodes"
    tainted = {e.involved_object.name for e in would if "PreferNoSchedule" in (e.message or "")}
    assert tainted == names, "each failed replacement's taint, said and not made"
    assert all((e.message or "").startswith(OBSERVE_ONLY_PREFIX) for e in events if e.reason in road), (
        "the road's own Events say that nothing was changed"
    )
    assert controller.running


def test_a_fallback_with_spot_short_changes_nothing_and_says_it_would_fall_back(
    launcher: ControllerLauncher, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api
) -> None:
    aws_sim.set_capacity(SPOT_ASG, capacity_short=True, retry_seconds=1)
    aws_sim.set_capacity(ON_DEMAND_ASG, pending_seconds=1, capacity_short=False)
    node = spot_nodes(core)[0]
    since = dt.datetime.now(dt.UTC).replace(microsecond=0)
    annotate_rebalance(core, node)
    nodes_before = _settled(core)
    aws_before = _aws_snapshot(aws_sim)
    aws_sim.reset_calls()

    controller = launcher.start("observer", **FAST)

    def told(reason: str) -> list[k8s.CoreV1Event]:
        return [e for e in _events(core, since) if e.reason == reason and e.involved_object.name == node.name]

    wait_until(
        lambda: told("ReplacementFailed") or told("ReplacementReady"), 60, f"node {node.name}'s replacement to end"
    )
    assert _aws_snapshot(aws_sim) == aws_before
    assert _node_snapshot(core) == nodes_before
    _assert_nothing_mutating(aws_sim)
    assert told("ReplacementFailed"), "no instance ever comes in observe-only: the replacement ends Failed"
    (fallback,) = told("SpotCapacityShort")
    assert fallback.message.startswith(OBSERVE_ONLY_PREFIX) and "falling back to on-demand" in fallback.message
    would = _would(_events(core, since), launcher.lease_name)
    changes = _scale_changes(would)
    assert changes == {
        (SPOT_ASG, "up"): 1,
        (SPOT_ASG, "down"): -1,
        (ON_DEMAND_ASG, "up"): 1,
        (ON_DEMAND_ASG, "down"): -1,
    }, "+1 on spot, given back at the deadline; +1 on on-demand, given back at its deadline"
    assert any(e.involved_object.name == node.name and "PreferNoSchedule" in (e.message or "") for e in would), (
        "the failed replacement's taint, said"
    )
    assert controller.running
