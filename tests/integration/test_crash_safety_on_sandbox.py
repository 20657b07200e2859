"""A leader SIGKILLed at every step boundary of a replacement: its successor finishes the job with no
AWS step done twice, none skipped, and capacity neutral at the end."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from controller.failpoints import REPLACEMENT_POINTS
from controller.model.record import ANNOTATION as RECORD_ANNOTATION
from sandbox.aws.client import SandboxAWSClient
from sandbox.environment import Sandbox
from tests.integration.controller_process import (
    ON_DEMAND_ASG,
    SHORT_ELECTION,
    SPOT_ASG,
    ControllerLauncher,
    ControllerProcess,
    LeaseWatch,
    SpotNode,
    annotate_rebalance,
    controller_env,
    replacement_finished,
    spot_nodes,
)

# Points reached on the spot path; the others only when spot is short and the controller falls back.
SPOT_PATH = {
    "replacement:spot-requested",
    "replacement:spot-scaled",
    "replacement:retiring",
    "replacement:terminated",
}


@pytest.fixture
def launcher(
    sandbox: Sandbox, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api, tmp_path: Path
) -> Iterator[ControllerLauncher]:
    with ControllerLauncher(controller_env(sandbox.env(), **SHORT_ELECTION), tmp_path, core=core) as launcher:
        yield launcher
    custom = k8s.CustomObjectsApi(core.api_client)
    for event in custom.list_namespaced_custom_object("aws.amazon.com", "v1", "kube-system", "spotguardfallbackevents")[
        "items"
    ]:
        custom.delete_namespaced_custom_object(
            "aws.amazon.com", "v1", "kube-system", "spotguardfallbackevents", event["metadata"]["name"]
        )


def _mutations(aws_sim: SandboxAWSClient) -> list[tuple[str, str]]:
    """Every successful capacity change AWS received: (operation, what it changed)."""
    done = []
    for call in aws_sim.calls():
        if call["error_code"] is not None:
            continue
        if call["operation"] == "SetDesiredCapacity":
            done.append(("SetDesiredCapacity", f"{call['asg']}={call['params'].get('DesiredCapacity')}"))
        elif call["operation"] == "TerminateInstanceInAutoScalingGroup":
            done.append(("TerminateInstanceInAutoScalingGroup", str(call["params"].get("InstanceId"))))
    return done


@pytest.mark.parametrize("failpoint", REPLACEMENT_POINTS)
def test_successor_finishes_a_replacement_after_the_leader_dies_at(
    failpoint: str,
    launcher: ControllerLauncher,
    aws_sim: SandboxAWSClient,
    core: k8s.CoreV1Api,
    api_client: k8s.ApiClient,
) -> None:
    short = failpoint not in SPOT_PATH
    aws_sim.set_capacity(SPOT_ASG, pending_seconds=0, capacity_short=short, retry_seconds=1)
    old = spot_nodes(core)[0]
    aws_sim.reset_calls()

    with LeaseWatch(api_client, launcher.lease_name) as lease:
        doomed = _leader_dies_at(failpoint, launcher, lease, lambda: annotate_rebalance(core, old))
        assert f"failpoint {failpoint} reached" in doomed.log_text()

        _successor_finishes(launcher, lambda: replacement_finished(core, old.name), 90, f"the crash at {failpoint}")

    mutations = _mutations(aws_sim)
    assert len(mutations) == len(set(mutations)), f"a step was done twice: {json.dumps(mutations)}"
    assert ("TerminateInstanceInAutoScalingGroup", old.instance_id) in mutations, "the old instance was retired"
    spot = aws_sim.group(SPOT_ASG)
    on_demand = aws_sim.group(ON_DEMAND_ASG)
    assert spot["desired_capacity"] + on_demand["desired_capacity"] == 3, "capacity neutral"
    assert on_demand["desired_capacity"] == (1 if short else 0)
    assert len(spot["instances"]) == spot["desired_capacity"], "no spot increase left dangling"
    if short:
        events = k8s.CustomObjectsApi(api_client).list_namespaced_custom_object(
            "aws.amazon.com", "v1", "kube-system", "spotguardfallbackevents"
        )["items"]
        assert len(events) == 1, "exactly one SpotGuardFallbackEvent"


@pytest.mark.parametrize("failpoint", ["replacement:spot-requested", "replacement:spot-scaled"])
def test_successor_finishes_a_whole_batch_from_its_one_intent_record(
    failpoint: str,
    launcher: ControllerLauncher,
    aws_sim: SandboxAWSClient,
    core: k8s.CoreV1Api,
    api_client: k8s.ApiClient,
) -> None:
    """Three recommendations, one intent record (on the first node, listing the other two): the leader dies
    before or after its one call, and the successor gives every node its own record without a second call."""
    aws_sim.set_capacity(SPOT_ASG, pending_seconds=0)
    olds = spot_nodes(core)
    assert len(olds) == 3
    aws_sim.reset_calls()

    with LeaseWatch(api_client, launcher.lease_name) as lease:
        _leader_dies_at(
            failpoint,
            launcher,
            lease,
            lambda: _annotate_all(core, olds),
            SPOT_GUARD_BATCH_WINDOW="1",
        )

        records = {old.name: _record(core, old.name) for old in olds}
        with_record = {name: r for name, r in records.items() if r is not None}
        assert len(with_record) == 1, f"one intent record for the batch, not one per node: {records}"
        (intent_node, intent), *_ = with_record.items()
        assert intent["phase"] == "SpotRequested"
        assert sorted(m[0] for m in intent["members"]) == sorted(o.name for o in olds if o.name != intent_node)

        _successor_finishes(
            launcher,
            lambda: all(replacement_finished(core, old.name) for old in olds),
            120,
            f"the batch's crash at {failpoint}",
        )

    raised = [c["params"].get("DesiredCapacity") for c in aws_sim.calls("SetDesiredCapacity", asg=SPOT_ASG)]
    assert raised == ["6"], f"one scale-up for the three nodes, made once: {raised}"
    mutations = _mutations(aws_sim)
    assert len(mutations) == len(set(mutations)), f"a step was done twice: {json.dumps(mutations)}"
    for old in olds:
        assert ("TerminateInstanceInAutoScalingGroup", old.instance_id) in mutations, f"{old.name} was retired"
    spot = aws_sim.group(SPOT_ASG)
    assert spot["desired_capacity"] == 3 and len(spot["instances"]) == 3, "capacity neutral, nothing dangling"
    assert aws_sim.group(ON_DEMAND_ASG)["desired_capacity"] == 0


def _annotate_all(core: k8s.CoreV1Api, nodes: list[SpotNode]) -> None:
    for node in nodes:
        annotate_rebalance(core, node)


def _leader_dies_at(
    failpoint: str, launcher: ControllerLauncher, lease: LeaseWatch, recommend: Callable[[], None], **env: str
) -> ControllerProcess:
    """A replica with ``failpoint`` armed leads, ``recommend`` makes the recommendations, and it dies there."""
    doomed = launcher.start("doomed", SPOTGUARD_FAILPOINTS=failpoint, **env)
    lease.wait_for(lambda holder: holder == "doomed", timeout=30, what="the first replica leads")
    recommend()
    assert doomed.wait(timeout=60) == -9, f"the leader should have died at {failpoint}:\n{doomed.log_tail()}"
    return doomed


def _successor_finishes(launcher: ControllerLauncher, finished: Callable[[], bool], timeout: float, after: str) -> None:
    """A second replica takes over and ``finished`` comes true within ``timeout`` seconds."""
    successor = launcher.start("successor")
    deadline = time.monotonic() + timeout
    while not finished():
        assert time.monotonic() < deadline, f"not finished after {after}:\n{successor.log_tail()}"
        time.sleep(0.3)


def _record(core: k8s.CoreV1Api, node: str) -> dict[str, Any] | None:
    raw = (core.read_node(node).metadata.annotations or {}).get(RECORD_ANNOTATION)
    return None if raw is None else dict(json.loads(raw))
