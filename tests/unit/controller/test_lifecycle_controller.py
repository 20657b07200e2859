"""The lifecycle controller's I/O runner against in-memory fakes, on a FakeClock (scale-downs run inline)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any, cast

import pytest

from controller.adapters.kube import Kube
from controller.adapters.sgfe_store import FallbackEvents
from controller.capacity.owner import CapacityOwner
from controller.clock import Cancellation, FakeClock
from controller.config import Settings
from controller.effects.drain import Drainer
from controller.effects.node_writes import CA_SCALE_DOWN_DISABLED, NodeWriter
from controller.effects.protection import CA_PREEXISTING, PROTECTED_FOR, SCALE_DOWN_TAINT
from controller.fence import NotLeaderError
from controller.lifecycle.controller import LifecycleController
from controller.model.progress import ANNOTATION, LifecycleProgress, format_time
from controller.model.sgfe import FallbackEvent, Phase, Spec, Status
from controller.workers import InlineWorkers
from tests.unit.controller import k8s_objects
from tests.unit.controller.fake_lifecycle_cluster import FakeAutoScalingClient, FakeCluster, autoscaling

NAME = "fallback-1736938845-abc123"
NAMESPACE = "kube-system"
SETTINGS = Settings(
    minimum_wait_duration=600,
    stability_window=120,
    capacity_check_timeout=180,
    capacity_poll_interval=5,
    lifecycle_poll_interval=10,
    drain_timeout=90,
    safety_retry_interval=30,
    completed_ttl=86400,
    scale_down_takeover=30,
)


class Recording:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.phases: list[tuple[str, str]] = []
        self.malformed_objects: list[tuple[str, str]] = []

    def sgfe_event(self, event: FallbackEvent, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def phase_changed(self, event: FallbackEvent, old: str, new: str) -> None:
        self.phases.append((old, new))

    def malformed(self, kind: str, field: str) -> None:
        self.malformed_objects.append((kind, field))

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


@dataclasses.dataclass
class World:
    clock: FakeClock
    cluster: FakeCluster
    aws: FakeAutoScalingClient
    sgfes: FallbackEvents

    def controller(self, identity: str = "a", settings: Settings = SETTINGS, **kwargs: Any) -> LifecycleController:
        kube = cast(Kube, self.cluster)
        return LifecycleController(
            settings=settings,
            sgfes=self.sgfes,
            owner=CapacityOwner(kwargs.pop("asg", autoscaling(self.aws)), self.clock),
            kube=self.cluster,
            writer=NodeWriter(kube),
            drainer=Drainer(self.cluster, self.clock, jitter=lambda delay: delay),
            nodes=self.cluster.node_views,
            clock=self.clock,
            identity=identity,
            workers=InlineWorkers(),  # each scale-down runs in the reconciling thread: a pass is deterministic
            recorder=kwargs.pop("recorder", Recording()),
        )

    def event(self) -> FallbackEvent | None:
        return self.sgfes.find(NAME)

    def record(self) -> LifecycleProgress:
        event = self.event()
        assert event is not None
        return LifecycleProgress.of(event.annotations)

    def node(self, name: str) -> dict[str, Any]:
        return self.cluster.nodes[name]

    def write(self, phase: str, record: LifecycleProgress | None = None, **status: Any) -> None:
        event = self.event()
        assert event is not None
        if record is not None:
            event = self.sgfes.annotate(event, {ANNOTATION: record.to_json()})
        self.sgfes.update_status(event, dataclasses.replace(event.status, phase=phase, **status))


@pytest.fixture
def world(clock: FakeClock) -> World:
    """The fallback state: spot at original - 1 (2 of 3), on-demand + 1 with two pods on its node, an SGFE."""
    cluster = FakeCluster(clock)
    aws = FakeAutoScalingClient(clock)
    aws.add_group("spot", ["i-s1", "i-s2"])
    aws.add_group("od", ["i-o1"])
    for name, instance in (("spot-1", "i-s1"), ("spot-2", "i-s2"), ("od-1", "i-o1")):
        cluster.add_node(name, instance)

    def launched(group: str, instance: str) -> None:
        cluster.add_node(f"node-{instance}", instance)

    def terminated(group: str, instance: str) -> None:
        for name, node in list(cluster.nodes.items()):
            if node["spec"]["providerID"].endswith(instance):
                cluster.remove_node(name)

    aws.on_launch = launched
    aws.on_terminate = terminated
    for index in (1, 2):
        pod = k8s_objects.pod(f"web-{index}", node="od-1", cpu="100m", labels={"app": "web"})
        pod["spec"]["terminationGracePeriodSeconds"] = 1
        cluster.pods.add(pod)
    sgfes = FallbackEvents(cast(Kube, cluster), NAMESPACE)
    sgfes.create(
        NAME,
        Spec("spot", "od", "od-1", format_time(clock.now()), "i-o1", "10m"),
        Status(message="Fallback to on-demand completed, waiting 10m before monitoring"),
    )
    return World(clock, cluster, aws, sgfes)


def drive(controller: LifecycleController, clock: FakeClock, done: Callable[[], bool], passes: int = 200) -> None:
    for _ in range(passes):
        delay = controller.reconcile()
        if done():
            return
        clock.advance(min(max(delay, 0.01), 3600.0))
    state = controller.sgfes.find(NAME)
    raise AssertionError(f"not done after {passes} passes; the event is {state}")


def phases(cluster: FakeCluster) -> list[str]:
    seen: list[str] = []
    for _, phase in cluster.status_writes:
        if not seen or seen[-1] != phase:
            seen.append(phase)
    return seen


def taints(node: dict[str, Any]) -> list[str]:
    return [t["key"] for t in node["spec"].get("taints") or []]


# -- the whole lifecycle -------------------------------------------------------------------------------------


def test_the_seed_timeline_from_fallback_to_cleanup(world: World) -> None:
    recorder = Recording()
    controller = world.controller(recorder=recorder)
    drive(controller, world.clock, lambda: cast(FallbackEvent, world.event()).status.phase == Phase.COMPLETED)
    world.clock.advance(SETTINGS.completed_ttl - 1)
    controller.reconcile()
    assert world.event() is not None
    world.clock.advance(1)
    controller.reconcile()
    assert world.event() is None  # cleaned up after the TTL

    assert phases(world.cluster) == [
        Phase.PENDING,
        Phase.MONITORING,
        Phase.READY_FOR_SCALE_DOWN,
        Phase.SCALING_DOWN,
        Phase.COMPLETED,
    ]
    assert recorder.phases == [
        (Phase.PENDING, Phase.MONITORING),
        (Phase.MONITORING, Phase.READY_FOR_SCALE_DOWN),
        (Phase.READY_FOR_SCALE_DOWN, Phase.SCALING_DOWN),
        (Phase.SCALING_DOWN, Phase.COMPLETED),
    ]
    # Spot came back first (one SetDesiredCapacity, to the original size), then exactly the on-demand instance went.
    assert [c for c in world.aws.calls if c[0] != "DescribeAutoScalingGroups"] == [
        ("SetDesiredCapacity", {"group": "spot", "desired": 3}),
        ("TerminateInstanceInAutoScalingGroup", {"instance": "i-o1", "decrement": True}),
    ]
    assert world.aws.groups["spot"]["DesiredCapacity"] == 3
    assert world.aws.groups["od"]["DesiredCapacity"] == 0
    assert "od-1" not in world.cluster.nodes
    assert not world.cluster.pods.pods  # both pods evicted through the Eviction API, and gone
    assert len(world.cluster.pods.evictions) == 2
    for node in world.cluster.nodes.values():
        assert SCALE_DOWN_TAINT not in taints(node) and not node["spec"].get("unschedulable")
    for reason in ("SafetyCheckPassed", "ScaleDownStarted", "OnDemandInstanceTerminated", "ScaleDownCompleted"):
        assert reason in recorder.reasons()


@pytest.mark.parametrize("refreshed", ["spot", "od"])
def test_an_instance_refresh_of_either_group_holds_the_return_to_spot_until_it_ends(
    world: World, refreshed: str
) -> None:
    """The return to spot waits while an instance refresh of the spot or the on-demand group runs (a capacity
    change would fight it); the event says so once; the refreshes are read at most once per 15 s per group; once
    the refresh ends the lifecycle finishes as before."""
    refresh = {"InstanceRefreshId": "08b91cf7-refresh", "AutoScalingGroupName": refreshed, "Status": "InProgress"}
    world.aws.refreshes[refreshed] = [refresh]
    recorder = Recording()
    controller = world.controller(recorder=recorder)
    drive(controller, world.clock, lambda: "WaitingForInstanceRefresh" in recorder.reasons())
    waiting_since = world.clock.monotonic()
    for _ in range(60):  # ten minutes of passes
        world.clock.advance(min(max(controller.reconcile(), 0.01), 3600.0))
    event = world.event()
    assert event is not None and event.status.phase == Phase.MONITORING
    assert "08b91cf7-refresh" in event.status.message and f"ASG {refreshed}" in event.status.message
    assert world.aws.count("SetDesiredCapacity") == 0 and world.aws.count("TerminateInstanceInAutoScalingGroup") == 0
    assert recorder.reasons().count("WaitingForInstanceRefresh") == 1, "said once"
    minutes = (world.clock.monotonic() - waiting_since) / 60
    assert world.aws.refresh_reads.count(refreshed) <= 4 * minutes + 2, "at most one read per 15 s per group"

    refresh["Status"] = "Successful"
    drive(controller, world.clock, lambda: cast(FallbackEvent, world.event()).status.phase == Phase.COMPLETED)
    assert [c for c in world.aws.calls if c[0] != "DescribeAutoScalingGroups"] == [
        ("SetDesiredCapacity", {"group": "spot", "desired": 3}),
        ("TerminateInstanceInAutoScalingGroup", {"instance": "i-o1", "decrement": True}),
    ]


def test_an_instance_refresh_starting_after_spot_returned_holds_the_scale_down(world: World) -> None:
    """A refresh of the on-demand group that begins once spot is back holds the scale-down (in ReadyForScaleDown:
    nothing is cordoned or drained meanwhile), then the on-demand instance goes as before."""
    recorder = Recording()
    controller = world.controller(recorder=recorder)
    ready = Phase.READY_FOR_SCALE_DOWN
    drive(controller, world.clock, lambda: cast(FallbackEvent, world.event()).status.phase == ready)
    refresh = {"InstanceRefreshId": "r-od", "AutoScalingGroupName": "od", "Status": "Pending"}
    world.aws.refreshes["od"] = [refresh]
    world.clock.advance(20)  # past the 15 s the refreshes are kept
    for _ in range(30):
        world.clock.advance(min(max(controller.reconcile(), 0.01), 3600.0))
    event = world.event()
    assert event is not None and event.status.phase == Phase.READY_FOR_SCALE_DOWN, event
    assert "r-od" in event.status.message and "scaling down on-demand node od-1" in event.status.message
    assert not world.node("od-1")["spec"].get("unschedulable") and len(world.cluster.pods.pods) == 2
    assert world.aws.count("TerminateInstanceInAutoScalingGroup") == 0
    refresh["Status"] = "Cancelled"
    drive(controller, world.clock, lambda: cast(FallbackEvent, world.event()).status.phase == Phase.COMPLETED)
    assert world.aws.groups["od"]["DesiredCapacity"] == 0


def test_a_malformed_lifecycle_record_is_reported_once_counted_and_touches_nothing(world: World) -> None:
    recorder = Recording()
    controller = world.controller(recorder=recorder)
    event = world.event()
    assert event is not None
    world.sgfes.annotate(event, {ANNOTATION: '{"version": 1, "returnTarget": "three"}'})
    status_writes = list(world.cluster.status_writes)
    for _ in range(3):
        controller.reconcile()
        world.clock.advance(SETTINGS.lifecycle_poll_interval)

    warnings = [(reason, message) for kind, reason, message in recorder.events if kind == "Warning"]
    assert len(warnings) == 1 and warnings[0][0] == "MalformedLifecycleRecord"
    assert "returnTarget" in warnings[0][1] and "remove the annotation" in warnings[0][1]
    assert recorder.malformed_objects == [("SpotGuardFallbackEvent", f"{ANNOTATION}.returnTarget")]
    assert world.aws.calls == [] and world.cluster.status_writes == status_writes, "nothing acted on what it can't read"


def test_the_on_demand_node_is_protected_from_the_autoscaler_while_the_event_is_active(world: World) -> None:
    world.cluster.nodes["od-1"]["metadata"]["annotations"] = {}
    controller = world.controller()
    controller.reconcile()
    annotations = world.node("od-1")["metadata"]["annotations"]
    assert annotations[CA_SCALE_DOWN_DISABLED] == "true"
    assert annotations[PROTECTED_FOR] == f"{NAMESPACE}/{NAME}"

    world.write(Phase.FAILED, message="given up by hand")
    controller.reconcile()
    assert CA_SCALE_DOWN_DISABLED not in world.node("od-1")["metadata"]["annotations"]
    assert PROTECTED_FOR not in world.node("od-1")["metadata"]["annotations"]


def test_an_autoscaler_annotation_that_was_there_before_stays(world: World) -> None:
    world.cluster.nodes["od-1"]["metadata"]["annotations"] = {CA_SCALE_DOWN_DISABLED: "true"}
    controller = world.controller()
    controller.reconcile()
    assert world.node("od-1")["metadata"]["annotations"][CA_PREEXISTING] == "true"
    world.sgfes.delete(cast(FallbackEvent, world.event()))
    controller.reconcile()
    assert world.node("od-1")["metadata"]["annotations"] == {CA_SCALE_DOWN_DISABLED: "true"}


# -- the race ------------------------------------------------------------------------------------------------


def test_two_controllers_racing_from_one_resource_version_scale_down_exactly_once(world: World) -> None:
    a_recorder, b_recorder = Recording(), Recording()
    a, b = world.controller("a", recorder=a_recorder), world.controller("b", recorder=b_recorder)
    drive(a, world.clock, lambda: cast(FallbackEvent, world.event()).status.phase == Phase.READY_FOR_SCALE_DOWN)
    read_by_a = cast(FallbackEvent, world.event()).resource_version

    def b_writes_first(name: str, body: dict[str, Any]) -> None:
        """a has read the event and sends its ScalingDown write; b, which read the same version, is faster."""
        if body["status"]["phase"] == Phase.SCALING_DOWN and body["metadata"]["resourceVersion"] == read_by_a:
            world.cluster.before_status_write = None
            b.reconcile()

    world.cluster.before_status_write = b_writes_first
    a.reconcile()

    assert world.cluster.status_writes.count((NAME, Phase.SCALING_DOWN)) == 1
    assert world.aws.count("TerminateInstanceInAutoScalingGroup") == 1
    assert "ScaleDownStarted" in b_recorder.reasons()
    assert "ScaleDownSteppedBack" in a_recorder.reasons()
    assert "ScaleDownStarted" not in a_recorder.reasons()
    assert world.record().owner == "b"
    assert cast(FallbackEvent, world.event()).status.phase == Phase.COMPLETED


# -- crash safety: a successor neither repeats nor skips a step ----------------------------------------------


def return_intent(world: World, confirmed: bool = False) -> LifecycleProgress:
    now = world.clock.now()
    return LifecycleProgress(
        return_target=3,
        return_known=("i-s1", "i-s2"),
        return_requested_at=format_time(now),
        return_deadline_at=format_time(now + dt.timedelta(seconds=180)),
        return_confirmed=confirmed,
    )


@pytest.mark.parametrize(("desired_before_crash", "calls"), [(3, 0), (2, 1)])
def test_a_recorded_return_is_not_sent_twice(world: World, desired_before_crash: int, calls: int) -> None:
    """Killed between recording the return and confirming it: the call went out (desired 3) or did not (2)."""
    world.write(Phase.MONITORING, return_intent(world), spot_healthy_since=format_time(world.clock.now()))
    if desired_before_crash == 3:
        world.aws.set_desired_capacity(AutoScalingGroupName="spot", DesiredCapacity=3, HonorCooldown=False)
        world.aws.calls.clear()
    world.controller("successor").reconcile()
    assert world.aws.count("SetDesiredCapacity") == calls
    assert world.record().return_confirmed
    assert world.aws.groups["spot"]["DesiredCapacity"] == 3


def scaling_down(world: World, **record: Any) -> None:
    world.aws.set_desired_capacity(AutoScalingGroupName="spot", DesiredCapacity=3, HonorCooldown=False)
    world.aws.calls.clear()
    state = LifecycleProgress(returned_instance="i-new1", owner="dead", drain_started_at=format_time(world.clock.now()))
    world.write(Phase.SCALING_DOWN, state.replace(**record), scale_down_initiated=True, spot_capacity_restored=True)


def test_a_successor_resumes_a_recorded_terminate_without_draining_again(world: World) -> None:
    scaling_down(world, terminate_requested_at=format_time(world.clock.now()), terminate_by="dead")
    successor = world.controller("successor", settings=dataclasses.replace(SETTINGS, scale_down_takeover=0))
    successor.reconcile()
    assert world.aws.calls[-1] == ("TerminateInstanceInAutoScalingGroup", {"instance": "i-o1", "decrement": True})
    assert world.aws.count("TerminateInstanceInAutoScalingGroup") == 1
    assert not world.cluster.pods.evictions  # the drain was done before the intent: not repeated
    assert cast(FallbackEvent, world.event()).status.phase == Phase.COMPLETED


def test_a_terminate_that_already_happened_is_not_sent_again(world: World) -> None:
    scaling_down(world, terminate_requested_at=format_time(world.clock.now()), terminate_by="dead")
    world.aws.set_state("i-o1", "Terminating")  # the predecessor's call went out: AWS wrote it down
    world.aws.activities["od"].insert(0, world.aws.termination_activity("i-o1", decremented=True))
    world.controller("successor", settings=dataclasses.replace(SETTINGS, scale_down_takeover=0)).reconcile()
    assert world.aws.count("TerminateInstanceInAutoScalingGroup") == 0
    assert world.aws.count("SetDesiredCapacity") == 0
    event = cast(FallbackEvent, world.event())
    assert event.status.phase == Phase.COMPLETED
    assert "instance i-o1 had already left on-demand ASG od" in event.status.message
    assert "with its desired capacity lowered" in event.status.message


def test_an_on_demand_instance_aws_replaced_before_the_scale_down_is_settled_by_terminating_the_one_in_its_place(
    world: World,
) -> None:
    """An instance refresh (or a health check) of the on-demand group replaced the SGFE's instance before the
    scale-down terminated it: the group launched another in its place and kept its desired capacity. The scale-down
    terminates exactly that one (intent recorded first), so the on-demand group ends where it was."""
    scaling_down(world, terminate_requested_at=format_time(world.clock.now()), terminate_by="dead")
    group = world.aws.groups["od"]
    group["Instances"] = [FakeAutoScalingClient._instance("i-o9", "InService")]  # i-o1 gone, i-o9 in its place
    world.aws.activities["od"][:0] = [
        {
            "ActivityId": "act-launch",
            "StatusCode": "Successful",
            "Description": "Launching a new EC2 instance: i-o9",
            "Cause": "At a time an instance was started in response to a difference between desired and actual "
            "capacity, increasing the capacity from 0 to 1.",
            "StartTime": world.clock.now(),
        },
        {
            "ActivityId": "act-refresh",
            "StatusCode": "Successful",
            "Description": "Terminating EC2 instance: i-o1",
            "Cause": "At a time an instance was taken out of service in response to an instance refresh.  At a time "
            "instance i-o1 was selected for termination.",
            "StartTime": world.clock.now(),
        },
    ]
    world.controller("successor", settings=dataclasses.replace(SETTINGS, scale_down_takeover=0)).reconcile()

    event = cast(FallbackEvent, world.event())
    assert event.status.phase == Phase.COMPLETED, event.status
    assert [c for c in world.aws.calls if c[0] == "TerminateInstanceInAutoScalingGroup"] == [
        ("TerminateInstanceInAutoScalingGroup", {"instance": "i-o9", "decrement": True})
    ]
    assert group["DesiredCapacity"] == 0 and group["Instances"] == []
    assert "i-o9, which the group launched in its place" in event.status.message
    assert LifecycleProgress.of(event.annotations).owed_instance == "i-o9", "the intent was written first"


def test_another_owners_scale_down_is_taken_over_only_after_it_stalled(world: World) -> None:
    scaling_down(world)
    successor = world.controller("successor")
    successor.reconcile()
    assert world.record().owner == "dead"  # the owner might still be working: wait
    world.clock.advance(SETTINGS.scale_down_takeover)
    successor.reconcile()
    assert world.aws.count("TerminateInstanceInAutoScalingGroup") == 1
    assert world.record().owner == "successor"
    assert cast(FallbackEvent, world.event()).status.phase == Phase.COMPLETED


# -- failures and rollbacks ----------------------------------------------------------------------------------


def test_a_pdb_that_never_allows_the_eviction_fails_the_event_and_releases_the_node(world: World) -> None:
    world.cluster.pdbs.append(k8s_objects.pdb("web", match_labels={"app": "web"}, allowed=2))
    world.cluster.pods.guarded = {"web-1"}  # the API server keeps answering 429 for it
    recorder = Recording()
    controller = world.controller(recorder=recorder)
    drive(controller, world.clock, lambda: cast(FallbackEvent, world.event()).status.phase == Phase.FAILED)

    event = cast(FallbackEvent, world.event())
    assert "Scale-down of on-demand node od-1 failed: drain of node od-1 timed out after" in event.status.message
    assert "check the PodDisruptionBudgets" in event.status.message
    assert "instance i-o1 kept" in event.status.message
    node = world.node("od-1")
    assert not node["spec"].get("unschedulable") and SCALE_DOWN_TAINT not in taints(node)
    assert CA_SCALE_DOWN_DISABLED not in node["metadata"]["annotations"]
    assert world.aws.count("TerminateInstanceInAutoScalingGroup") == 0
    assert "ScaleDownFailed" in recorder.reasons()
    world.clock.advance(30 * 86400)
    controller.reconcile()
    assert world.event() is not None  # Failed events stay until an operator acts


def test_a_relapse_found_by_a_successor_rolls_the_scale_down_back(world: World) -> None:
    scaling_down(world, owner="successor")
    world.cluster.nodes["od-1"]["metadata"]["annotations"] = {
        PROTECTED_FOR: f"{NAMESPACE}/{NAME}",
        CA_SCALE_DOWN_DISABLED: "true",
    }
    world.cluster.nodes["od-1"]["spec"].update(
        unschedulable=True, taints=[{"key": SCALE_DOWN_TAINT, "value": NAME, "effect": "NoSchedule"}]
    )
    world.cluster.nodes["spot-1"]["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    world.controller("successor").reconcile()

    event = cast(FallbackEvent, world.event())
    assert event.status.phase == Phase.MONITORING
    assert not event.status.scale_down_initiated and not event.status.spot_capacity_restored
    assert "relapsed during the scale-down" in event.status.message
    assert world.record().owner == "" and world.record().returned_instance == "i-new1"
    node = world.node("od-1")
    assert not node["spec"].get("unschedulable") and SCALE_DOWN_TAINT not in taints(node)
    assert node["metadata"]["annotations"][CA_SCALE_DOWN_DISABLED] == "true"  # the event goes on
    assert world.aws.count("TerminateInstanceInAutoScalingGroup") == 0


def test_a_node_left_tainted_for_a_deleted_event_is_released(world: World) -> None:
    world.cluster.nodes["od-1"]["metadata"]["annotations"] = {
        PROTECTED_FOR: f"{NAMESPACE}/{NAME}",
        CA_SCALE_DOWN_DISABLED: "true",
    }
    world.cluster.nodes["od-1"]["spec"].update(
        unschedulable=True, taints=[{"key": SCALE_DOWN_TAINT, "value": NAME, "effect": "NoSchedule"}]
    )
    world.sgfes.delete(cast(FallbackEvent, world.event()))
    world.controller().reconcile()
    node = world.node("od-1")
    assert not node["spec"].get("unschedulable") and SCALE_DOWN_TAINT not in taints(node)
    assert node["metadata"]["annotations"] == {}


def test_a_deposed_leader_stops_at_its_first_fenced_aws_call(world: World) -> None:
    def fence(operation: str) -> None:
        raise NotLeaderError(
            f"not the leader; refusing AWS {operation}", identity="a", holder="b", seconds_since_renew=20
        )

    asg = autoscaling(world.aws)
    asg.fence = fence
    world.write(Phase.MONITORING, spot_healthy_since=format_time(world.clock.now() - dt.timedelta(hours=1)))
    with pytest.raises(NotLeaderError):
        world.controller(asg=asg).reconcile()
    assert world.aws.count("SetDesiredCapacity") == 0
    assert world.record().return_target == 3  # the intent stays for the leader to pick up


def test_run_returns_when_leadership_is_lost(world: World) -> None:
    def fence(operation: str) -> None:
        raise NotLeaderError("deposed", identity="a", holder="b", seconds_since_renew=20)

    asg = autoscaling(world.aws)
    asg.fence = fence
    world.write(Phase.MONITORING, spot_healthy_since=format_time(world.clock.now() - dt.timedelta(hours=1)))
    world.controller(asg=asg).run(Cancellation())  # returns instead of looping
