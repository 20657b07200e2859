"""Node sync against a fake CoreV1Api: one Node per InService instance, only its own Nodes touched."""

from __future__ import annotations

import copy
import json
import threading
import types
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from kubernetes.client import ApiClient, V1Node, V1NodeList, V1NodeSpec, V1NodeStatus, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

from sandbox.aws.capacity import CapacitySettings, GroupView, InstanceView
from sandbox.aws.nodesync import OWNER, OWNER_ANNOTATION, NodeSync, node_body
from tests.unit.sandbox.conftest import SPOT, Sandbox


class FakeCoreV1Api:
    """Stores Nodes in a dict; label selectors of the form `key` (label exists) are honoured."""

    def __init__(self, keep_status_on_create: bool = True) -> None:
        self.nodes: dict[str, V1Node] = {}
        self.keep_status_on_create = keep_status_on_create
        self.status_patches: list[str] = []

    def list_node(self, **kwargs: Any) -> Any:
        selector = kwargs.get("label_selector")
        items = [n for n in self.nodes.values() if selector is None or selector in (n.metadata.labels or {})]
        listed = V1NodeList(items=[copy.deepcopy(n) for n in items])
        if kwargs.get("_preload_content", True):
            return listed
        raw = json.dumps(ApiClient().sanitize_for_serialization(listed)).encode()
        return types.SimpleNamespace(data=raw)

    def create_node(self, body: Any, **kwargs: Any) -> V1Node:
        name = body["metadata"]["name"]
        if name in self.nodes:
            raise ApiException(status=409, reason="AlreadyExists")
        status = body.get("status", {}) if self.keep_status_on_create else {}
        node = V1Node(
            metadata=V1ObjectMeta(
                name=name, labels=dict(body["metadata"]["labels"]), annotations=dict(body["metadata"]["annotations"])
            ),
            spec=V1NodeSpec(provider_id=body["spec"]["providerID"]),
            status=V1NodeStatus(capacity=status.get("capacity"), allocatable=status.get("allocatable")),
        )
        self.nodes[name] = node
        return copy.deepcopy(node)

    def delete_node(self, name: str, **kwargs: Any) -> None:
        if self.nodes.pop(name, None) is None:
            raise ApiException(status=404, reason="NotFound")

    def patch_node_status(self, name: str, body: Any, **kwargs: Any) -> V1Node:
        self.status_patches.append(name)
        node = self.nodes[name]
        node.status = V1NodeStatus(capacity=body["status"]["capacity"], allocatable=body["status"]["allocatable"])
        return node


def _instance(
    instance_id: str, state: str = "InService", group: str = SPOT, capacity_type: str = "spot"
) -> InstanceView:
    number = int(instance_id[-2:], 16)
    return InstanceView(
        instance_id=instance_id,
        group_name=group,
        capacity_type=capacity_type,
        lifecycle_state=state,
        availability_zone="us-east-1b",
        instance_type="m5.large",
        private_dns_name=f"ip-10-0-1-{number}.ec2.internal",
        private_ip=f"10.0.1.{number}",
    )


class Groups:
    """A mutable stand-in for the simulator's snapshot."""

    def __init__(self, *instances: InstanceView) -> None:
        self.instances = list(instances)

    def __call__(self) -> list[GroupView]:
        return [
            GroupView(
                name=SPOT,
                arn="arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:x:autoScalingGroupName/" + SPOT,
                capacity_type="spot",
                min_size=0,
                max_size=10,
                desired_capacity=len(self.instances),
                availability_zones=("us-east-1a", "us-east-1b"),
                instance_type="m5.large",
                tags={},
                settings=CapacitySettings(),
                instances=tuple(self.instances),
            )
        ]


def _foreign_node(name: str, labels: dict[str, str]) -> V1Node:
    return V1Node(metadata=V1ObjectMeta(name=name, labels=labels, annotations={}), spec=V1NodeSpec())


def test_creates_a_kwok_node_per_in_service_instance_only() -> None:
    api = FakeCoreV1Api()
    groups = Groups(_instance("i-0000000000000000a"), _instance("i-0000000000000000b", state="Pending"))

    result = NodeSync(api, groups, "us-east-1").sync_once()

    assert result.created == ["ip-10-0-1-10.ec2.internal"]
    node = api.nodes["ip-10-0-1-10.ec2.internal"]
    assert node.spec.provider_id == "aws:///us-east-1b/i-0000000000000000a"
    assert node.metadata.labels == {
        "kubernetes.io/hostname": "ip-10-0-1-10.ec2.internal",
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "m5.large",
        "topology.kubernetes.io/zone": "us-east-1b",
        "topology.kubernetes.io/region": "us-east-1",
        "eks.amazonaws.com/capacityType": "SPOT",
        "node.kubernetes.io/lifecycle": "spot",
        "spotguard.io/asg": SPOT,
        "type": "kwok",
    }
    assert node.metadata.annotations["kwok.x-k8s.io/node"] == "fake"
    assert node.status.capacity == {"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"}
    assert node.status.allocatable == node.status.capacity


def test_node_addresses_are_the_instance_ip_and_dns_name() -> None:
    body = node_body(_instance("i-0000000000000000a"), "us-east-1")

    assert body["status"]["addresses"] == [
        {"type": "InternalIP", "address": "10.0.1.10"},
        {"type": "InternalDNS", "address": "ip-10-0-1-10.ec2.internal"},
        {"type": "Hostname", "address": "ip-10-0-1-10.ec2.internal"},
    ]


def test_on_demand_nodes_are_labelled_on_demand() -> None:
    api = FakeCoreV1Api()
    groups = Groups(_instance("i-0000000000000000a", group="od", capacity_type="on-demand"))

    NodeSync(api, groups, "us-east-1").sync_once()

    labels = api.nodes["ip-10-0-1-10.ec2.internal"].metadata.labels
    assert (labels["eks.amazonaws.com/capacityType"], labels["node.kubernetes.io/lifecycle"]) == ("ON_DEMAND", "normal")
    assert labels["spotguard.io/asg"] == "od"


def test_pending_instance_gets_its_node_once_in_service() -> None:
    api = FakeCoreV1Api()
    pending = _instance("i-0000000000000000a", state="Pending")
    groups = Groups(pending)
    sync = NodeSync(api, groups, "us-east-1")
    sync.sync_once()
    assert api.nodes == {}

    groups.instances = [replace(pending, lifecycle_state="InService")]
    result = sync.sync_once()

    assert result.created == ["ip-10-0-1-10.ec2.internal"]


def test_node_goes_when_the_instance_leaves_but_stays_while_terminating() -> None:
    api = FakeCoreV1Api()
    instance = _instance("i-0000000000000000a")
    groups = Groups(instance)
    sync = NodeSync(api, groups, "us-east-1")
    sync.sync_once()

    groups.instances = [replace(instance, lifecycle_state="Terminating")]
    assert sync.sync_once().deleted == []
    assert "ip-10-0-1-10.ec2.internal" in api.nodes

    groups.instances = []
    assert sync.sync_once().deleted == ["ip-10-0-1-10.ec2.internal"]
    assert api.nodes == {}


def test_second_sync_changes_nothing() -> None:
    api = FakeCoreV1Api()
    sync = NodeSync(api, Groups(_instance("i-0000000000000000a"), _instance("i-0000000000000000b")), "us-east-1")
    sync.sync_once()

    result = sync.sync_once()

    assert (result.created, result.deleted) == ([], [])
    assert len(api.nodes) == 2


def test_nodes_it_did_not_create_are_never_touched() -> None:
    api = FakeCoreV1Api()
    api.nodes["control-plane"] = _foreign_node("control-plane", {"kubernetes.io/hostname": "control-plane"})
    api.nodes["labelled-by-someone"] = _foreign_node("labelled-by-someone", {"spotguard.io/asg": SPOT})

    result = NodeSync(api, Groups(), "us-east-1").sync_once()

    assert result.deleted == []
    assert set(api.nodes) == {"control-plane", "labelled-by-someone"}


def test_name_taken_by_a_foreign_node_is_skipped_and_left_alone() -> None:
    api = FakeCoreV1Api()
    api.nodes["ip-10-0-1-10.ec2.internal"] = _foreign_node("ip-10-0-1-10.ec2.internal", {})

    result = NodeSync(api, Groups(_instance("i-0000000000000000a")), "us-east-1").sync_once()

    assert result.skipped == ["ip-10-0-1-10.ec2.internal"]
    assert api.nodes["ip-10-0-1-10.ec2.internal"].metadata.labels == {}


def test_node_of_a_different_instance_with_the_same_name_is_replaced() -> None:
    api = FakeCoreV1Api()
    groups = Groups(_instance("i-0000000000000000a"))
    sync = NodeSync(api, groups, "us-east-1")
    sync.sync_once()

    groups.instances = [replace(_instance("i-0000000000000000a"), instance_id="i-0000000000000001a")]
    result = sync.sync_once()

    assert (result.deleted, result.created) == (["ip-10-0-1-10.ec2.internal"], ["ip-10-0-1-10.ec2.internal"])
    assert api.nodes["ip-10-0-1-10.ec2.internal"].spec.provider_id == "aws:///us-east-1b/i-0000000000000001a"


def test_status_is_patched_when_the_api_server_dropped_it_on_create() -> None:
    api = FakeCoreV1Api(keep_status_on_create=False)

    NodeSync(api, Groups(_instance("i-0000000000000000a")), "us-east-1").sync_once()

    assert api.status_patches == ["ip-10-0-1-10.ec2.internal"]
    assert api.nodes["ip-10-0-1-10.ec2.internal"].status.capacity["cpu"] == "2"


def test_api_errors_other_than_conflict_propagate() -> None:
    class Forbidden(FakeCoreV1Api):
        def create_node(self, body: Any, **kwargs: Any) -> V1Node:
            raise ApiException(status=403, reason="Forbidden")

    with pytest.raises(ApiException):
        NodeSync(Forbidden(), Groups(_instance("i-0000000000000000a")), "us-east-1").sync_once()


def test_nodes_follow_the_simulated_groups(sandbox: Sandbox) -> None:
    api = FakeCoreV1Api()
    sync = NodeSync(api, sandbox.server.simulator.snapshot, "us-east-1")
    sandbox.control.set_capacity(SPOT, pending_seconds=5)
    sync.sync_once()
    assert len(api.nodes) == 3

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=4)
    sync.sync_once()
    assert len(api.nodes) == 3
    sandbox.advance(5)
    sync.sync_once()
    in_service = {
        i["PrivateDnsName"]
        for r in sandbox.ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["running"]}])[
            "Reservations"
        ]
        for i in r["Instances"]
    }
    assert set(api.nodes) == in_service
    assert len(api.nodes) == 4

    victim = sorted(sandbox.lifecycle_states(SPOT))[0]
    sandbox.autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)
    sync.sync_once()
    assert len(api.nodes) == 3
    assert all(not n.spec.provider_id.endswith(victim) for n in api.nodes.values())


class WatchingCoreV1Api(FakeCoreV1Api):
    """Answers node watches from a script: each watch returns the next list of events (JSON lines)."""

    def __init__(self, script: list[list[dict[str, Any]]], stop: threading.Event) -> None:
        super().__init__()
        self.script = script
        self.stop = stop
        self.watched_from: list[str] = []
        self.lists = 0

    def list_node(self, **kwargs: Any) -> Any:
        if not kwargs.get("watch"):
            self.lists += 1
            return types.SimpleNamespace(data=json.dumps({"metadata": {"resourceVersion": f"list-{self.lists}"}}))
        self.watched_from.append(kwargs["resource_version"])
        if not self.script:
            self.stop.set()
            return _Stream([])
        return _Stream(self.script.pop(0))


class _Stream:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.body = b"".join(json.dumps(e).encode() + b"\n" for e in events)

    def stream(self, amt: Any = None, decode_content: Any = None) -> Iterator[bytes]:
        yield from (self.body[i : i + 7] for i in range(0, len(self.body), 7))  # lines split across chunks

    def release_conn(self) -> None:
        return None


def _event(kind: str, name: str, version: str, ours: bool = True) -> dict[str, Any]:
    annotations = {OWNER_ANNOTATION: OWNER} if ours else {}
    return {
        "type": kind,
        "object": {"metadata": {"name": name, "resourceVersion": version, "annotations": annotations}},
    }


def test_a_deleted_sandbox_node_wakes_the_sync_at_once() -> None:
    stop = threading.Event()
    first = [_event("MODIFIED", "n1", "11"), _event("DELETED", "foreign", "12", ours=False)]
    api = WatchingCoreV1Api([first, [_event("DELETED", "n1", "13")]], stop)
    woken_during: list[int] = []  # how many watches had started when the sync was woken

    class Wake(threading.Event):
        def set(self) -> None:
            woken_during.append(len(api.watched_from))
            super().set()

    NodeSync(api, Groups(), "us-east-1", wake=Wake()).watch_deletions(stop)

    assert woken_during == [0, 2], "once after listing, then only for the sandbox's own Node deleted in watch 2"
    assert api.watched_from == ["list-1", "12", "13"], "each watch resumes where the last one ended"


def test_an_expired_watch_lists_again() -> None:
    stop = threading.Event()
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    api = WatchingCoreV1Api([[_event("MODIFIED", "n1", "21"), gone], []], stop)
    sync = NodeSync(api, Groups(), "us-east-1")

    sync.watch_deletions(stop)

    assert api.watched_from == ["list-1", "list-2", "list-2"]
    assert api.lists == 2
