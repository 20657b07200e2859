"""The SGFE lifecycle on the sandbox (real API server, kwok kubelets, simulated Auto Scaling), in-process,
with the seed's durations compressed to seconds. Each test starts from the fallback state the replacement
controller leaves (``lifecycle_harness.fall_back``) and asserts outcomes: phases, group sizes, instances, pods.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controller.adapters.kube import Kube
from controller.adapters.sgfe_store import ConflictError, FallbackEvents
from controller.effects.node_writes import CA_SCALE_DOWN_DISABLED
from controller.effects.protection import PROTECTED_FOR
from controller.fence import NotLeaderError
from controller.model.sgfe import FallbackEvent, Phase, Status
from sandbox.aws.client import SandboxAWSClient
from tests.integration.lifecycle_harness import (
    ON_DEMAND,
    SPOT,
    Fallback,
    LifecycleRun,
    Recorder,
    SgfeWatch,
    Workload,
    compressed,
    fall_back,
    schedulable,
    spot_guard_marks,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

SEED_PHASES = [Phase.PENDING, Phase.MONITORING, Phase.READY_FOR_SCALE_DOWN, Phase.SCALING_DOWN, Phase.COMPLETED]


@pytest.fixture
def kube(api_client: k8s.ApiClient) -> Kube:
    return Kube(api_client)


def phase_of(kube: Kube, namespace: str, name: str) -> str | None:
    event = FallbackEvents(kube, namespace).find(name)
    return None if event is None else event.status.phase


def terminations_of(sim: SandboxAWSClient, instance: str) -> int:
    return sum(1 for c in sim.calls("TerminateInstanceInAutoScalingGroup") if c["params"].get("InstanceId") == instance)


def in_service(sim: SandboxAWSClient, group: str) -> set[str]:
    return {i["instance_id"] for i in sim.instances(group, "InService")}


def desired(sim: SandboxAWSClient, group: str) -> int:
    return sim.group(group)["desired_capacity"]


def annotations_of(kube: Kube, node: str) -> dict[str, str]:
    return dict(kube.request("GET", f"/api/v1/nodes/{node}")["metadata"].get("annotations") or {})


# -- the seed's whole timeline -------------------------------------------------------------------------------


def test_the_seed_timeline_back_to_spot_with_no_pod_lost(
    kube: Kube, aws_sim: SandboxAWSClient, autoscaling: Any, namespace: str
) -> None:
    with SgfeWatch(kube, namespace) as watch:
        fb = fall_back(kube, aws_sim, autoscaling, namespace)
        work = Workload(kube, namespace)
        evicted = work.place(fb.on_demand_node, on_node=3, elsewhere=1)
        work.budget(min_available=1, wait_allowed=3)  # allows exactly the 3 evictions the drain needs
        assert desired(aws_sim, SPOT) == 2 and desired(aws_sim, ON_DEMAND) == 1
        aws_sim.reset_calls()

        run = LifecycleRun(kube, autoscaling, compressed(namespace), "leader").start()
        try:
            wait_until(lambda: "Deleted" in watch.phases(fb.sgfe), 60, f"SGFE {fb.sgfe} completed and cleaned up")
        finally:
            run.stop()

    assert watch.phases(fb.sgfe) == [*SEED_PHASES, "Deleted"]
    # Spot came back to its original size before anything was drained; exactly the on-demand instance went.
    assert desired(aws_sim, SPOT) == 3 and len(in_service(aws_sim, SPOT)) == 3
    assert desired(aws_sim, ON_DEMAND) == 0 and not aws_sim.instances(ON_DEMAND)
    assert aws_sim.count_calls("SetDesiredCapacity", SPOT) == 1
    assert aws_sim.count_calls("SetDesiredCapacity", ON_DEMAND) == 0
    assert aws_sim.count_calls("TerminateInstanceInAutoScalingGroup") == 1
    assert terminations_of(aws_sim, fb.on_demand_instance) == 1
    # No pod lost: the evicted ones are gone, and the Deployment runs all 4 replicas on spot nodes.
    wait_until(lambda: len(work.running()) == 4, 30, "4 web pods Running")
    running = work.running()
    assert not {p["metadata"]["uid"] for p in running} & evicted
    assert all(p["spec"]["nodeName"] != fb.on_demand_node for p in running)
    assert spot_guard_marks(kube) == []
    for reason in ("MonitoringStarted", "SpotHealthy", "SpotReturnRequested", "SpotCapacityRestored"):
        assert reason in run.recorder.reasons()
    assert run.recorder.reasons().count("SafetyCheckPassed") == 3


def test_an_extra_on_demand_instance_survives(
    kube: Kube, aws_sim: SandboxAWSClient, autoscaling: Any, namespace: str
) -> None:
    fb = fall_back(kube, aws_sim, autoscaling, namespace, on_demand_before=1)
    (extra,) = fb.other_on_demand
    run = LifecycleRun(kube, autoscaling, compressed(namespace, completed_ttl=600), "leader").start()
    try:
        wait_until(lambda: phase_of(kube, namespace, fb.sgfe) == Phase.COMPLETED, 60, "the SGFE Completed")
    finally:
        run.stop()
    assert desired(aws_sim, ON_DEMAND) == 1
    assert in_service(aws_sim, ON_DEMAND) == {extra}
    assert terminations_of(aws_sim, extra) == 0
    assert desired(aws_sim, SPOT) == 3


def test_spot_still_short_goes_back_to_monitoring_with_backoff_and_drains_nothing(
    kube: Kube, aws_sim: SandboxAWSClient, autoscaling: Any, namespace: str
) -> None:
    fb = fall_back(kube, aws_sim, autoscaling, namespace)
    work = Workload(kube, namespace)
    work.place(fb.on_demand_node, on_node=2)
    aws_sim.set_capacity(SPOT, capacity_short=True, retry_seconds=1)
    aws_sim.reset_calls()
    run = LifecycleRun(kube, autoscaling, compressed(namespace, completed_ttl=600), "leader").start()
    try:
        wait_until(lambda: "SpotStillShort" in run.recorder.reasons(), 60, "the return to spot found short")
        wait_until(lambda: desired(aws_sim, SPOT) == 2, 10, "the unfulfilled increase given back")
        event = FallbackEvents(kube, namespace).get(fb.sgfe)
        assert event.status.phase == Phase.MONITORING
        (short,) = [message for _, reason, message in run.recorder.events if reason == "SpotStillShort"]
        assert "InsufficientInstanceCapacity" in short and "nothing drained" in short and "backoff 1s" in short
        assert not cordoned(kube, fb.on_demand_node)
        assert len(work.running(fb.on_demand_node)) == 2  # nothing drained
        assert aws_sim.count_calls("TerminateInstanceInAutoScalingGroup") == 0

        aws_sim.set_capacity(SPOT, capacity_short=False)  # capacity is back: the next attempt (after the backoff) works
        wait_until(lambda: phase_of(kube, namespace, fb.sgfe) == Phase.COMPLETED, 60, "the SGFE Completed")
    finally:
        run.stop()
    spot_sizes = [c["params"].get("DesiredCapacity") for c in aws_sim.calls("SetDesiredCapacity", SPOT)]
    assert spot_sizes[:2] == ["3", "2"] and spot_sizes[-1] == "3", spot_sizes
    assert desired(aws_sim, SPOT) == 3 and desired(aws_sim, ON_DEMAND) == 0
    assert terminations_of(aws_sim, fb.on_demand_instance) == 1
    wait_until(lambda: len(work.running(not_on=fb.on_demand_node)) == 2, 30, "2 web pods Running on spot")
    assert spot_guard_marks(kube) == []


# -- the race ------------------------------------------------------------------------------------------------


class MeetingPoint(FallbackEvents):
    """FallbackEvents whose ScalingDown write waits until the other controller sends its own: both send the
    resourceVersion they read, at the same moment (the seed's race scenario)."""

    def __init__(self, kube: Kube, namespace: str, barrier: threading.Barrier, who: str, outcomes: list[str]) -> None:
        super().__init__(kube, namespace)
        self.barrier = barrier
        self.who = who
        self.outcomes = outcomes

    def update_status(self, event: FallbackEvent, status: Status) -> FallbackEvent:
        if status.phase != Phase.SCALING_DOWN or event.status.phase == Phase.SCALING_DOWN:
            return super().update_status(event, status)
        self.barrier.wait(timeout=30)
        try:
            written = super().update_status(event, status)
        except ConflictError:
            self.outcomes.append(f"{self.who}: conflict at resourceVersion {event.resource_version}")
            raise
        self.outcomes.append(f"{self.who}: wrote at resourceVersion {event.resource_version}")
        return written


def test_a_deposed_leader_racing_the_leader_on_one_event_scales_down_once(
    kube: Kube, aws_sim: SandboxAWSClient, autoscaling: Any, namespace: str
) -> None:
    fb = fall_back(kube, aws_sim, autoscaling, namespace)
    work = Workload(kube, namespace)
    work.place(fb.on_demand_node, on_node=2)
    aws_sim.reset_calls()
    settings = compressed(namespace, scale_down_takeover=3, completed_ttl=600)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def deposed(operation: str) -> None:
        raise NotLeaderError(
            f"'old' lost the lease; refusing AWS {operation}", identity="old", holder="new", seconds_since_renew=30
        )

    leader = LifecycleRun(
        kube, autoscaling, settings, "new", sgfes=MeetingPoint(kube, namespace, barrier, "new", outcomes)
    ).start()
    old: LifecycleRun | None = None
    try:
        wait_until(lambda: phase_of(kube, namespace, fb.sgfe) == Phase.READY_FOR_SCALE_DOWN, 60, "ReadyForScaleDown")
        # The deposed leader wakes up now, reads the same resourceVersion and goes for the same scale-down.
        old = LifecycleRun(
            kube,
            autoscaling,
            settings,
            "old",
            sgfes=MeetingPoint(kube, namespace, barrier, "old", outcomes),
            fence=deposed,
        ).start()
        wait_until(lambda: phase_of(kube, namespace, fb.sgfe) == Phase.COMPLETED, 60, "the SGFE Completed")
    finally:
        leader.stop()
        if old is not None:
            old.stop()

    assert len(outcomes) == 2, outcomes
    assert sum("wrote" in o for o in outcomes) == 1 and sum("conflict" in o for o in outcomes) == 1, outcomes
    loser = "old" if any(o.startswith("old: conflict") for o in outcomes) else "new"
    loser_run = old if loser == "old" else leader
    assert loser_run is not None and "ScaleDownSteppedBack" in loser_run.recorder.reasons()
    assert aws_sim.count_calls("TerminateInstanceInAutoScalingGroup") == 1
    assert terminations_of(aws_sim, fb.on_demand_instance) == 1
    assert desired(aws_sim, ON_DEMAND) == 0 and desired(aws_sim, SPOT) == 3
    wait_until(lambda: len(work.running(not_on=fb.on_demand_node)) == 2, 30, "2 web pods Running on spot")
    # The on-demand Node goes with its instance (the sandbox removes it once the instance has terminated);
    # after that no Node may be left cordoned or tainted.
    wait_until(lambda: fb.on_demand_node not in node_names(kube), 30, "the on-demand Node removed with its instance")
    assert spot_guard_marks(kube) == []


def node_names(kube: Kube) -> set[str]:
    return {n["metadata"]["name"] for n in kube.request("GET", "/api/v1/nodes")["items"]}


# -- the scale-down stopped: PDB, relapse, deleted event, deleted node ----------------------------------------


def held_drain(
    kube: Kube, aws_sim: SandboxAWSClient, autoscaling: Any, namespace: str
) -> tuple[Fallback, Workload, Recorder]:
    """Fallback state with 2 web pods on the on-demand node; the moment the scale-down starts, their PDB
    stops allowing any eviction (the safety checks had passed: the budget changes under the drain)."""
    fb = fall_back(kube, aws_sim, autoscaling, namespace)
    work = Workload(kube, namespace)
    work.place(fb.on_demand_node, on_node=2)
    work.budget(min_available=0, wait_allowed=2)
    aws_sim.reset_calls()

    def hold(event: FallbackEvent, phase: str) -> None:
        if phase == Phase.SCALING_DOWN:
            work.budget(min_available=2)

    return fb, work, Recorder(on_phase=hold)


def cordoned(kube: Kube, node: str) -> bool:
    try:
        return bool(kube.request("GET", f"/api/v1/nodes/{node}")["spec"].get("unschedulable"))
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


def test_a_pdb_that_never_allows_the_eviction_fails_the_event_and_uncordons(
    kube: Kube, aws_sim: SandboxAWSClient, autoscaling: Any, namespace: str
) -> None:
    fb, work, recorder = held_drain(kube, aws_sim, autoscaling, namespace)
    run = LifecycleRun(kube, autoscaling, compressed(namespace, drain_timeout=4), "leader", recorder=recorder).start()
    try:
        wait_until(lambda: phase_of(kube, namespace, fb.sgfe) == Phase.FAILED, 60, "the SGFE Failed")
        event = FallbackEvents(kube, namespace).get(fb.sgfe)
        wait_until(lambda: schedulable(kube, fb.on_demand_node), 10, "the on-demand node uncordoned")
    finally:
        run.stop()

    assert "drain of node" in event.status.message and "timed out after 4 s" in event.status.message
    assert "check the PodDisruptionBudgets" in event.status.message
    assert f"instance {fb.on_demand_instance} kept" in event.status.message
    assert CA_SCALE_DOWN_DISABLED not in annotations_of(kube, fb.on_demand_node)
    assert aws_sim.count_calls("TerminateInstanceInAutoScalingGroup") == 0
    assert in_service(aws_sim, ON_DEMAND) == {fb.on_demand_instance}
    assert len(work.running(fb.on_demand_node)) == 2  # nothing was evicted
    assert spot_guard_marks(kube) == []
    assert "ScaleDownFailed" in recorder.reasons()


def test_a_spot_relapse_during_the_drain_stops_it_and_goes_back_to_monitoring(
    kube: Kube, aws_sim: SandboxAWSClient, autoscaling: Any, namespace: str
) -> None:
    with SgfeWatch(kube, namespace) as watch:
        fb, work, recorder = held_drain(kube, aws_sim, autoscaling, namespace)
        run = LifecycleRun(kube, autoscaling, compressed(namespace), "leader", recorder=recorder).start()
        try:
            wait_until(lambda: cordoned(kube, fb.on_demand_node), 60, "the drain of the on-demand node under way")
            # A spot instance is lost and cannot be replaced: the spot ASG is short again.
            aws_sim.set_capacity(SPOT, capacity_short=True, retry_seconds=1)
            victim = sorted(in_service(aws_sim, SPOT))[0]
            autoscaling.terminate_instance_in_auto_scaling_group(
                InstanceId=victim, ShouldDecrementDesiredCapacity=False
            )
            wait_until(
                lambda: (
                    watch.phases(fb.sgfe)[-1:] == [Phase.MONITORING] and Phase.SCALING_DOWN in watch.phases(fb.sgfe)
                ),
                30,
                "the SGFE back in Monitoring",
            )
            wait_until(lambda: schedulable(kube, fb.on_demand_node), 10, "the on-demand node uncordoned")
        finally:
            run.stop()

    event = FallbackEvents(kube, namespace).get(fb.sgfe)
    assert not event.status.scale_down_initiated and not event.status.spot_capacity_restored
    relapses = [message for _, reason, message in recorder.events if reason == "SpotRelapsed"]
    assert len(relapses) == 1 and "relapsed during the scale-down" in relapses[0], relapses
    assert annotations_of(kube, fb.on_demand_node)[CA_SCALE_DOWN_DISABLED] == "true"  # the event goes on
    assert terminations_of(aws_sim, fb.on_demand_instance) == 0
    assert len(work.running(fb.on_demand_node)) == 2
    assert spot_guard_marks(kube) == []
    assert "SpotRelapsed" in recorder.reasons()


def test_an_sgfe_deleted_during_the_drain_releases_the_node(
    kube: Kube, aws_sim: SandboxAWSClient, autoscaling: Any, namespace: str
) -> None:
    fb, work, recorder = held_drain(kube, aws_sim, autoscaling, namespace)
    run = LifecycleRun(kube, autoscaling, compressed(namespace), "leader", recorder=recorder).start()
    try:
        wait_until(lambda: cordoned(kube, fb.on_demand_node), 60, "the drain of the on-demand node under way")
        events = FallbackEvents(kube, namespace)
        events.delete(events.get(fb.sgfe))
        wait_until(lambda: schedulable(kube, fb.on_demand_node), 15, "the on-demand node uncordoned")
        wait_until(
            lambda: PROTECTED_FOR not in annotations_of(kube, fb.on_demand_node),
            10,
            "the autoscaler protection removed",
        )
    finally:
        run.stop()
    assert CA_SCALE_DOWN_DISABLED not in annotations_of(kube, fb.on_demand_node)
    assert terminations_of(aws_sim, fb.on_demand_instance) == 0
    assert in_service(aws_sim, ON_DEMAND) == {fb.on_demand_instance}
    assert len(work.running(fb.on_demand_node)) == 2
    assert spot_guard_marks(kube) == []


def test_the_on_demand_node_deleted_by_hand_during_the_drain(
    kube: Kube, aws_sim: SandboxAWSClient, autoscaling: Any, namespace: str
) -> None:
    """The Node object goes (in the sandbox it comes back at once, as a kubelet re-registers it, uncordoned): the
    scale-down cordons whatever is there again, drains it, and still finishes with exactly that instance gone."""
    fb, work, recorder = held_drain(kube, aws_sim, autoscaling, namespace)
    run = LifecycleRun(kube, autoscaling, compressed(namespace, completed_ttl=600), "leader", recorder=recorder).start()
    try:
        wait_until(lambda: cordoned(kube, fb.on_demand_node), 60, "the drain of the on-demand node under way")
        kube.request("DELETE", f"/api/v1/nodes/{fb.on_demand_node}")
        work.budget(min_available=0)  # the budget allows the evictions again
        wait_until(lambda: phase_of(kube, namespace, fb.sgfe) == Phase.COMPLETED, 60, "the SGFE Completed")
    finally:
        run.stop()
    assert terminations_of(aws_sim, fb.on_demand_instance) == 1
    assert desired(aws_sim, ON_DEMAND) == 0 and desired(aws_sim, SPOT) == 3
    wait_until(lambda: len(work.running(not_on=fb.on_demand_node)) == 2, 30, "2 web pods Running on spot")
    # The terminated instance's Node goes once the instance has left (node sync); none stays marked.
    wait_until(lambda: spot_guard_marks(kube) == [], 15, "no node left cordoned or tainted by Spot Guard")
