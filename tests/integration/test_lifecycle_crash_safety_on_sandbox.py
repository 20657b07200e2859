"""A leader SIGKILLed at every step boundary of an SGFE's lifecycle (``controller.lifecycle.LIFECYCLE_POINTS``):
its successor, a real ``spotguard run`` process too, finishes the event with no AWS step done twice, none
skipped: spot back at its original size, exactly the on-demand instance gone, the pods Running elsewhere."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from controller.adapters.kube import Kube
from controller.adapters.sgfe_store import FallbackEvents
from controller.lifecycle.controller import LIFECYCLE_POINTS, WITHDRAW_POINT
from controller.model.sgfe import Phase
from sandbox.aws.client import SandboxAWSClient
from sandbox.environment import Sandbox
from tests.integration.controller_process import SHORT_ELECTION, ControllerLauncher, LeaseWatch, controller_env
from tests.integration.lifecycle_harness import (
    ON_DEMAND,
    SPOT,
    SgfeWatch,
    Workload,
    fall_back,
    spot_guard_marks,
)
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
SGFE_NAMESPACE = "kube-system"  # where `spotguard run` keeps its SGFEs (SPOT_GUARD_NAMESPACE's default)
#: The seed's durations compressed to seconds, for the processes.
COMPRESSED = {
    "SPOT_GUARD_STABILITY_WINDOW": "3",
    "SPOT_GUARD_LIFECYCLE_POLL_INTERVAL": "0.5",
    "SPOT_GUARD_SAFETY_RETRY_INTERVAL": "1",
    "SPOT_GUARD_DRAIN_TIMEOUT": "30",
    "SPOT_GUARD_COMPLETED_TTL": "600",
    "SPOT_GUARD_SCALE_DOWN_TAKEOVER": "2",
    "SPOT_GUARD_MONITORING_BACKOFF_INITIAL": "1",
    "SPOT_GUARD_MONITORING_BACKOFF_MAX": "2",
}

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def launcher(
    sandbox: Sandbox, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api, tmp_path: Path
) -> Iterator[ControllerLauncher]:
    env = controller_env(sandbox.env(), **SHORT_ELECTION, **COMPRESSED)
    with ControllerLauncher(env, tmp_path, core=core) as launcher:
        yield launcher
    custom = k8s.CustomObjectsApi(core.api_client)
    for event in custom.list_namespaced_custom_object(
        "aws.amazon.com", "v1", SGFE_NAMESPACE, "spotguardfallbackevents"
    )["items"]:
        custom.delete_namespaced_custom_object(
            "aws.amazon.com", "v1", SGFE_NAMESPACE, "spotguardfallbackevents", event["metadata"]["name"]
        )


def mutations(aws_sim: SandboxAWSClient) -> list[tuple[str, str]]:
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


def wait_for_completed(kube: Kube, name: str, when: str, log_tail: Callable[[], str]) -> None:
    deadline = time.monotonic() + 90
    events = FallbackEvents(kube, SGFE_NAMESPACE)
    while (event := events.find(name)) is None or event.status.phase != Phase.COMPLETED:
        assert event is not None, "the SGFE disappeared"
        assert event.status.phase != Phase.FAILED, event.status.message
        assert time.monotonic() < deadline, f"not Completed {when}:\n{log_tail()}"
        time.sleep(0.3)


@pytest.mark.parametrize("failpoint", LIFECYCLE_POINTS)
def test_successor_finishes_the_sgfe_after_the_leader_dies_at(
    failpoint: str,
    *,
    launcher: ControllerLauncher,
    aws_sim: SandboxAWSClient,
    autoscaling: Any,
    api_client: k8s.ApiClient,
    namespace: str,
) -> None:
    kube = Kube(api_client)
    with SgfeWatch(kube, SGFE_NAMESPACE) as watch:
        fb = fall_back(kube, aws_sim, autoscaling, SGFE_NAMESPACE)
        work = Workload(kube, namespace)
        evicted = work.place(fb.on_demand_node, on_node=2)
        aws_sim.reset_calls()

        with LeaseWatch(api_client, launcher.lease_name) as lease:
            doomed = launcher.start("doomed", SPOTGUARD_FAILPOINTS=failpoint)
            lease.wait_for(lambda holder: holder == "doomed", timeout=30, what="the first replica leads")
            assert doomed.wait(timeout=60) == -9, f"the leader should have died at {failpoint}:\n{doomed.log_tail()}"
            assert f"failpoint {failpoint} reached" in doomed.log_text()

            successor = launcher.start("successor")
            deadline = time.monotonic() + 90
            events = FallbackEvents(kube, SGFE_NAMESPACE)
            while (event := events.find(fb.sgfe)) is None or event.status.phase != Phase.COMPLETED:
                assert event is not None, "the SGFE disappeared"
                assert event.status.phase != Phase.FAILED, event.status.message
                assert time.monotonic() < deadline, (
                    f"not Completed after the crash at {failpoint}:\n{successor.log_tail()}"
                )
                time.sleep(0.3)

    done = mutations(aws_sim)
    assert len(done) == len(set(done)), f"a step was done twice: {json.dumps(done)}"
    assert done == [
        ("SetDesiredCapacity", f"{SPOT}=3"),
        ("TerminateInstanceInAutoScalingGroup", fb.on_demand_instance),
    ], f"spot first, then exactly the on-demand instance: {json.dumps(done)}"
    assert aws_sim.group(SPOT)["desired_capacity"] == 3
    assert aws_sim.group(ON_DEMAND)["desired_capacity"] == 0
    assert watch.phases(fb.sgfe) == [
        Phase.PENDING,
        Phase.MONITORING,
        Phase.READY_FOR_SCALE_DOWN,
        Phase.SCALING_DOWN,
        Phase.COMPLETED,
    ]
    wait_until(lambda: len(work.running(not_on=fb.on_demand_node)) == 2, 30, "2 web pods Running on spot")
    assert not {p["metadata"]["uid"] for p in work.running()} & evicted
    assert spot_guard_marks(kube) == []


def test_successor_finishes_a_withdrawal_the_leader_died_in(
    launcher: ControllerLauncher,
    aws_sim: SandboxAWSClient,
    autoscaling: Any,
    api_client: k8s.ApiClient,
) -> None:
    """Spot is still short when the leader returns to it: the leader records the withdrawal and dies before
    giving the increase back; its successor gives it back (once), backs off, and returns once spot has room."""
    kube = Kube(api_client)
    fb = fall_back(kube, aws_sim, autoscaling, SGFE_NAMESPACE)
    aws_sim.set_capacity(SPOT, capacity_short=True, retry_seconds=1)
    aws_sim.reset_calls()

    with LeaseWatch(api_client, launcher.lease_name) as lease:
        doomed = launcher.start("doomed", SPOTGUARD_FAILPOINTS=WITHDRAW_POINT)
        lease.wait_for(lambda holder: holder == "doomed", timeout=30, what="the first replica leads")
        assert doomed.wait(timeout=60) == -9, f"the leader should have died at {WITHDRAW_POINT}:\n{doomed.log_tail()}"
        assert aws_sim.group(SPOT)["desired_capacity"] == 3, "died before giving the increase back"

        successor = launcher.start("successor")
        wait_until(lambda: aws_sim.group(SPOT)["desired_capacity"] == 2, 60, "the successor gave the increase back")
        aws_sim.set_capacity(SPOT, capacity_short=False)
        wait_for_completed(kube, fb.sgfe, "after spot had room again", successor.log_tail)

    assert mutations(aws_sim) == [
        ("SetDesiredCapacity", f"{SPOT}=3"),
        ("SetDesiredCapacity", f"{SPOT}=2"),
        ("SetDesiredCapacity", f"{SPOT}=3"),
        ("TerminateInstanceInAutoScalingGroup", fb.on_demand_instance),
    ]
    assert aws_sim.group(ON_DEMAND)["desired_capacity"] == 0
