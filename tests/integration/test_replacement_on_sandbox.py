"""From a nodewatch annotation to replacement capacity, on the real sandbox (API server, kwok, moto +
capacity simulator), with the controller's production wiring running in-process."""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from controller import config
from controller.adapters.kube import Kube
from controller.app.run import leader_components, run_leader
from controller.clock import Cancellation, SystemClock
from sandbox.aws.client import SandboxAWSClient
from sandbox.environment import Sandbox

SPOT = "spotguard-spot-1"
ON_DEMAND = "spotguard-ondemand-1"
SETTINGS = config.Settings(
    spot_asg_name=SPOT,
    on_demand_asg_name=ON_DEMAND,
    capacity_check_timeout=15.0,
    capacity_poll_interval=0.5,
    batch_window=0.3,
    drain_timeout=15.0,
    minimum_wait_duration=600.0,
)


@dataclasses.dataclass
class Running:
    cancel: Cancellation
    thread: threading.Thread


@pytest.fixture
def start_controller(
    api_client: k8s.ApiClient, aws_sim: SandboxAWSClient, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Running]]:
    for key, value in sandbox.env().items():
        monkeypatch.setenv(key, value)
    started: list[Running] = []

    def start(**overrides: Any) -> Running:
        settings = dataclasses.replace(SETTINGS, **overrides).validate()
        cancel = Cancellation()
        parts = leader_components(settings, Kube(api_client), SystemClock(), lambda op: None, cancel)
        thread = threading.Thread(target=run_leader, args=(parts, cancel), daemon=True)
        thread.start()
        running = Running(cancel, thread)
        started.append(running)
        return running

    yield start
    for running in started:
        running.cancel.cancel("test over")
        running.thread.join(timeout=20)
    custom = k8s.CustomObjectsApi(api_client)
    for item in custom.list_namespaced_custom_object("aws.amazon.com", "v1", "kube-system", "spotguardfallbackevents")[
        "items"
    ]:
        custom.delete_namespaced_custom_object(
            "aws.amazon.com", "v1", "kube-system", "spotguardfallbackevents", item["metadata"]["name"]
        )


def _spot_nodes(core: k8s.CoreV1Api, asg: str = SPOT) -> list[k8s.V1Node]:
    return sorted(core.list_node(label_selector=f"spotguard.io/asg={asg}").items, key=lambda n: n.metadata.name)


def _instance(node: k8s.V1Node) -> str:
    return str(node.spec.provider_id.rsplit("/", 1)[-1])


def _recommend(core: k8s.CoreV1Api, node: k8s.V1Node, **extra: str) -> None:
    """Write the annotations exactly as nodewatch does."""
    annotations = {
        "spotguard.io/rebalance-notice-time": "2026-11-21T10:00:00Z",
        "spotguard.io/rebalance-first-seen": "2026-11-21T10:00:01Z",
        "spotguard.io/instance-id": _instance(node),
        "spotguard.io/availability-zone": node.metadata.labels["topology.kubernetes.io/zone"],
        **extra,
    }
    core.patch_node(node.metadata.name, {"metadata": {"annotations": annotations}})


def _record(core: k8s.CoreV1Api, name: str) -> dict[str, Any] | None:
    try:
        node = core.read_node(name)
    except k8s.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    raw = (node.metadata.annotations or {}).get("spotguard.io/replacement")
    return None if raw is None else dict(json.loads(raw))


def _gone(core: k8s.CoreV1Api, name: str) -> bool:
    try:
        core.read_node(name)
    except k8s.ApiException as exc:
        return bool(exc.status == 404)
    return False


def _until(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not true within {timeout:.0f}s"
        time.sleep(0.2)


def _desired(aws_sim: SandboxAWSClient, group: str) -> int:
    return int(aws_sim.group(group)["desired_capacity"])


def _instances(aws_sim: SandboxAWSClient, group: str) -> set[str]:
    return {i["instance_id"] for i in aws_sim.group(group)["instances"]}


def _events(core: k8s.CoreV1Api, node: str) -> list[str]:
    items = core.list_namespaced_event("default", field_selector=f"involvedObject.name={node}").items
    return [f"{e.type} {e.reason}: {e.message}" for e in items]


def test_rebalance_gets_a_spot_replacement_then_exactly_the_old_instance_is_retired(
    start_controller: Callable[..., Running], core: k8s.CoreV1Api, aws_sim: SandboxAWSClient
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=1)
    old = _spot_nodes(core)[0]
    old_instance = _instance(old)
    before = _instances(aws_sim, SPOT)
    start_controller()
    _recommend(core, old)

    _until(
        "an Event on the node saying the recommendation was seen (reason as in NTH)",
        lambda: any(e.startswith("Normal RebalanceRecommendation: ") for e in _events(core, old.metadata.name)),
    )
    _until("the old node retired and gone", lambda: _gone(core, old.metadata.name), timeout=60)
    after = _instances(aws_sim, SPOT)
    assert old_instance not in after
    assert before - {old_instance} < after, "every other spot instance survives"
    assert len(after) == len(before) and _desired(aws_sim, SPOT) == len(before), "capacity neutral"
    assert aws_sim.count_calls("SetDesiredCapacity", asg=SPOT) == 1
    terminations = aws_sim.calls("TerminateInstanceInAutoScalingGroup")
    assert len(terminations) == 1 and old_instance in json.dumps(terminations[0])
    assert _desired(aws_sim, ON_DEMAND) == 0
    _until("all spot nodes Ready", lambda: len(_spot_nodes(core)) == len(before))


def test_spot_shortage_falls_back_to_on_demand_and_records_a_fallback_event(
    start_controller: Callable[..., Running], core: k8s.CoreV1Api, aws_sim: SandboxAWSClient, api_client: k8s.ApiClient
) -> None:
    aws_sim.set_capacity(SPOT, capacity_short=True, retry_seconds=1)
    old = _spot_nodes(core)[0]
    start_controller()
    _recommend(core, old)

    custom = k8s.CustomObjectsApi(api_client)

    def fallback_event() -> dict[str, Any] | None:
        items = custom.list_namespaced_custom_object(
            "aws.amazon.com", "v1", "kube-system", "spotguardfallbackevents", label_selector="component=spot-guard"
        )["items"]
        return items[0] if items else None

    event = _until("a SpotGuardFallbackEvent", fallback_event)
    od_instances = _instances(aws_sim, ON_DEMAND)
    assert len(od_instances) == 1
    spec = event["spec"]
    assert spec["spotASGName"] == SPOT and spec["onDemandASGName"] == ON_DEMAND
    assert spec["onDemandInstanceID"] in od_instances
    od_node = core.read_node(spec["onDemandNodeName"])
    assert od_node.spec.provider_id.endswith("/" + spec["onDemandInstanceID"])
    assert spec["minimumWaitDuration"] == "10m"
    assert event["metadata"]["labels"] == {"app": "aws-node-termination-handler", "component": "spot-guard"}
    _until("the SGFE status set", lambda: (fallback_event() or {}).get("status", {}).get("phase") == "Pending")

    _until("the old spot node retired", lambda: _gone(core, old.metadata.name))
    # Neutral: the on-demand node stands in for the spot one; no spot increase left dangling.
    assert _desired(aws_sim, SPOT) == 2 and len(_instances(aws_sim, SPOT)) == 2
    assert _desired(aws_sim, ON_DEMAND) == 1
    failed = [a for a in aws_sim.activities(SPOT) if a["status_code"] == "Failed"]
    assert failed, "the fallback was triggered by the simulator's Failed activity"


def test_spot_and_on_demand_both_short_leave_only_a_prefer_no_schedule_taint(
    start_controller: Callable[..., Running], core: k8s.CoreV1Api, aws_sim: SandboxAWSClient
) -> None:
    aws_sim.set_capacity(SPOT, capacity_short=True, retry_seconds=1)
    aws_sim.set_capacity(ON_DEMAND, capacity_short=True, retry_seconds=1)
    old = _spot_nodes(core)[0]
    start_controller()
    _recommend(core, old)

    record = _until(
        "the replacement recorded as Failed",
        lambda: (r := _record(core, old.metadata.name)) is not None and r["phase"] == "Failed" and r,
    )
    assert "InsufficientInstanceCapacity" in record["failedReason"]
    node = core.read_node(old.metadata.name)
    effects = {(t.key, t.effect) for t in node.spec.taints or []}
    assert effects == {("spotguard.io/rebalance", "PreferNoSchedule")}, "never NoSchedule without a replacement"
    assert not node.spec.unschedulable
    assert "spotguard.io/replacement" not in (node.metadata.finalizers or [])
    assert _desired(aws_sim, SPOT) == 3 and _desired(aws_sim, ON_DEMAND) == 0, "no increase left dangling"
    # Events are written by the recorder's own thread, after the record: give it its moment.
    _until("a ReplacementFailed event", lambda: any("ReplacementFailed" in e for e in _events(core, old.metadata.name)))


def test_simultaneous_recommendations_are_batched_into_one_scale_up(
    start_controller: Callable[..., Running], core: k8s.CoreV1Api, aws_sim: SandboxAWSClient
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=1)
    nodes = _spot_nodes(core)
    start_controller(batch_window=1.0)
    for node in nodes:
        _recommend(core, node)

    _until("all three old nodes retired", lambda: all(_gone(core, n.metadata.name) for n in nodes), 90)
    calls = aws_sim.calls("SetDesiredCapacity", asg=SPOT)
    assert len(calls) == 1, calls
    assert "6" in json.dumps(calls[0]), "one call raised desired from 3 to 6"
    assert _desired(aws_sim, SPOT) == 3
    assert not _instances(aws_sim, SPOT) & {_instance(n) for n in nodes}


def test_spot_at_max_size_falls_back_at_once(
    start_controller: Callable[..., Running], core: k8s.CoreV1Api, aws_sim: SandboxAWSClient, autoscaling: Any
) -> None:
    autoscaling.update_auto_scaling_group(AutoScalingGroupName=SPOT, MaxSize=3)
    old = _spot_nodes(core)[0]
    start_controller()
    _recommend(core, old)

    _until("the old node retired", lambda: _gone(core, old.metadata.name))
    assert aws_sim.count_calls("SetDesiredCapacity", asg=SPOT) == 0, "no spot scale-up beyond MaxSize"
    assert _desired(aws_sim, ON_DEMAND) == 1 and _desired(aws_sim, SPOT) == 2


def test_malformed_annotation_and_unknown_group_are_refused_with_a_warning(
    start_controller: Callable[..., Running], core: k8s.CoreV1Api, aws_sim: SandboxAWSClient
) -> None:
    bad = _spot_nodes(core)[0]
    core.patch_node(
        bad.metadata.name, {"metadata": {"annotations": {"spotguard.io/rebalance-notice-time": "yesterday"}}}
    )
    stranger = "stranger-node"
    core.create_node(
        k8s.V1Node(
            metadata=k8s.V1ObjectMeta(
                name=stranger,
                annotations={
                    "kwok.x-k8s.io/node": "fake",
                    "spotguard.io/rebalance-notice-time": "2026-11-21T10:00:00Z",
                },
            ),
            spec=k8s.V1NodeSpec(provider_id="aws:///us-east-1a/i-0000000000000dead"),
        )
    )
    try:
        start_controller()
        _until(
            "a warning on the malformed node",
            lambda: any("SpotGuardRefused" in e for e in _events(core, bad.metadata.name)),
        )
        _until("a warning on the stranger node", lambda: any("SpotGuardRefused" in e for e in _events(core, stranger)))
        assert any("rebalance-notice-time='yesterday' is malformed" in e for e in _events(core, bad.metadata.name))
        assert any("is in no Auto Scaling Group" in e for e in _events(core, stranger))
        time.sleep(2)  # give a wrong implementation the chance to act
        assert aws_sim.count_calls("SetDesiredCapacity") == 0
    finally:
        core.delete_node(stranger)


@pytest.mark.parametrize(
    ("code", "message", "count"),
    [
        ("AccessDenied", None, 1),
        ("ValidationError", "AutoScalingGroup name not found - null", 1),
        ("ScalingActivityInProgress", None, 6),  # more than the 5 attempts of one call
        ("Throttling", None, 6),
    ],
)
def test_aws_errors_are_reported_on_the_node_and_nothing_is_lost(
    start_controller: Callable[..., Running],
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    *,
    code: str,
    message: str | None,
    count: int,
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=0)
    aws_sim.add_fault("SetDesiredCapacity", code, message, count=count, asg=SPOT)
    old = _spot_nodes(core)[0]
    start_controller()
    _recommend(core, old)

    _until(
        f"a {code} warning naming the node's ASG",
        lambda: any("AWSError" in e and code in e and SPOT in e for e in _events(core, old.metadata.name)),
    )
    _until("the replacement done once the fault is gone", lambda: _gone(core, old.metadata.name), 60)
    assert _desired(aws_sim, SPOT) == 3 and len(_instances(aws_sim, SPOT)) == 3


def test_interruption_notice_drains_at_once_and_retires_after_the_replacement(
    start_controller: Callable[..., Running], core: k8s.CoreV1Api, aws_sim: SandboxAWSClient
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=4)
    old = _spot_nodes(core)[0]
    start_controller()
    _recommend(
        core,
        old,
        **{"spotguard.io/interruption-action": "terminate", "spotguard.io/interruption-time": "2026-11-21T10:02:00Z"},
    )

    _until("the node cordoned for the interruption", lambda: core.read_node(old.metadata.name).spec.unschedulable)
    _until(
        "an Event on the node saying the interruption notice was seen, with its time",
        lambda: any(
            e.startswith("Normal SpotInterruption: ") and "2026-11-21T10:02:00Z" in e
            for e in _events(core, old.metadata.name)
        ),
    )
    record = _record(core, old.metadata.name)
    assert record is not None and record["trigger"] == "interruption"
    assert record["phase"] in {"SpotRequested", "SpotScaledUp"}, "drain started before the replacement was Ready"
    _until("the old node retired", lambda: _gone(core, old.metadata.name))
    assert _desired(aws_sim, SPOT) == 3 and len(_instances(aws_sim, SPOT)) == 3


def test_keep_policy_gives_the_surplus_back_when_no_interruption_comes(
    start_controller: Callable[..., Running], core: k8s.CoreV1Api, aws_sim: SandboxAWSClient
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=0)
    old = _spot_nodes(core)[0]
    start_controller(retire_policy="keep-until-interruption", keep_grace_period=3.0)
    _recommend(core, old)

    record = _until(
        "the surplus released",
        lambda: (r := _record(core, old.metadata.name)) is not None and r["phase"] == "Released" and r,
    )
    node = core.read_node(old.metadata.name)
    assert not [t for t in node.spec.taints or [] if t.key.startswith("spotguard.io/")], "taint lifted"
    assert not node.spec.unschedulable, "never cordoned"
    assert record["replacementInstance"] not in _instances(aws_sim, SPOT), "the replacement was given back"
    assert _instance(old) in _instances(aws_sim, SPOT), "the recommended node stays"
    assert _desired(aws_sim, SPOT) == 3


def test_fifty_rebalance_and_interruption_cycles_leave_no_capacity_drift(
    start_controller: Callable[..., Running], core: k8s.CoreV1Api, aws_sim: SandboxAWSClient, autoscaling: Any
) -> None:
    """Every 5th cycle has no spot capacity (fallback); every other cycle is an interruption notice."""
    for group in (SPOT, ON_DEMAND):
        autoscaling.update_auto_scaling_group(AutoScalingGroupName=group, MaxSize=20)
    autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=12, HonorCooldown=False)
    _until("12 spot nodes Ready", lambda: sum(_ready(n) for n in _spot_nodes(core)) == 12)
    total = _desired(aws_sim, SPOT) + _desired(aws_sim, ON_DEMAND)
    start_controller(batch_window=0.05, capacity_check_timeout=20.0)
    fallbacks = 0
    for cycle in range(50):
        short = cycle % 5 == 4
        aws_sim.set_capacity(SPOT, pending_seconds=0, capacity_short=short, retry_seconds=1)
        victim = next(n for n in _spot_nodes(core) if _ready(n) and not n.spec.unschedulable)
        extra = {}
        if cycle % 2:
            extra = {
                "spotguard.io/interruption-action": "terminate",
                "spotguard.io/interruption-time": "2026-11-21T10:02:00Z",
            }
        _recommend(core, victim, **extra)
        name = victim.metadata.name
        _until(f"cycle {cycle}: {name} retired", functools.partial(_gone, core, name), 60)
        fallbacks += short
        spot, on_demand = _desired(aws_sim, SPOT), _desired(aws_sim, ON_DEMAND)
        assert spot + on_demand == total, f"cycle {cycle}: drift {spot + on_demand - total}"
        assert on_demand == fallbacks, f"cycle {cycle}: one on-demand stand-in per fallback"
        assert len(_instances(aws_sim, SPOT)) == spot, f"cycle {cycle}: no spot increase left dangling"
    assert fallbacks == 10


def _ready(node: k8s.V1Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def test_the_controller_rides_out_an_api_server_restart(
    start_controller: Callable[..., Running], core: k8s.CoreV1Api, aws_sim: SandboxAWSClient, sandbox: Sandbox
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=0)
    start_controller()
    time.sleep(1)  # the informer is watching
    sandbox.cluster.restart_apiserver()  # type: ignore[union-attr]
    old = _spot_nodes(core)[0]
    _recommend(core, old)
    _until("the recommendation handled after the restart", lambda: _gone(core, old.metadata.name), 90)
    assert _desired(aws_sim, SPOT) == 3


def test_a_node_that_cannot_be_drained_is_not_left_cordoned_for_ever(
    start_controller: Callable[..., Running],
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    api_client: k8s.ApiClient,
    namespace: str,
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=0)
    old = _spot_nodes(core)[0]
    core.create_namespaced_pod(
        namespace,
        k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name="precious", labels={"app": "precious"}),
            spec=k8s.V1PodSpec(
                node_name=old.metadata.name,
                containers=[k8s.V1Container(name="app", image="registry.invalid/app:1")],
            ),
        ),
    )
    k8s.PolicyV1Api(api_client).create_namespaced_pod_disruption_budget(
        namespace,
        k8s.V1PodDisruptionBudget(
            metadata=k8s.V1ObjectMeta(name="never"),
            spec=k8s.V1PodDisruptionBudgetSpec(
                max_unavailable=0, selector=k8s.V1LabelSelector(match_labels={"app": "precious"})
            ),
        ),
    )
    start_controller(drain_timeout=2.0, max_drain_attempts=2)
    _recommend(core, old)

    record = _until(
        "the replacement given back",
        lambda: (r := _record(core, old.metadata.name)) is not None and r["phase"] == "Released" and r,
        90,
    )
    node = core.read_node(old.metadata.name)
    assert not node.spec.unschedulable, "uncordoned"
    assert not [t for t in node.spec.taints or [] if t.key.startswith("spotguard.io/")], "taint lifted"
    assert "drain did not complete in 2 attempts" in record["failedReason"]
    assert core.read_namespaced_pod("precious", namespace).metadata.deletion_timestamp is None, "no pod lost"
    assert record["replacementInstance"] not in _instances(aws_sim, SPOT)
    assert _desired(aws_sim, SPOT) == 3
    _until("a DrainAbandoned event", lambda: any("DrainAbandoned" in e for e in _events(core, old.metadata.name)))


def test_capacity_rebalancing_groups_are_refused(
    start_controller: Callable[..., Running], core: k8s.CoreV1Api, aws_sim: SandboxAWSClient, autoscaling: Any
) -> None:
    autoscaling.update_auto_scaling_group(AutoScalingGroupName=SPOT, CapacityRebalance=True)
    old = _spot_nodes(core)[0]
    start_controller()
    _recommend(core, old)
    _until(
        "a refusal naming Capacity Rebalancing",
        lambda: any("Capacity Rebalancing on" in e for e in _events(core, old.metadata.name)),
    )
    assert aws_sim.count_calls("SetDesiredCapacity") == 0


def test_stale_annotations_from_an_earlier_instance_are_refused(
    start_controller: Callable[..., Running], core: k8s.CoreV1Api, aws_sim: SandboxAWSClient
) -> None:
    old = _spot_nodes(core)[0]
    start_controller()
    _recommend(core, old, **{"spotguard.io/instance-id": "i-0ffffffffffffffff"})
    _until("a stale-annotation refusal", lambda: any("stale" in e for e in _events(core, old.metadata.name)))
    assert aws_sim.count_calls("SetDesiredCapacity") == 0
