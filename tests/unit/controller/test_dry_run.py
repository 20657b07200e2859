"""Observe-only mode's seam (controller.adapters.dry_run): nothing written for real but Events and Leases, the
would-be state shown to the controller's own reads, every change announced once (controller.observability)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import pytest
from kubernetes.client.exceptions import ApiException
from moto import mock_aws

from controller.adapters.aws import AwsError
from controller.adapters.dry_run import DryRunAutoScaling, DryRunKube, merge_patch
from controller.adapters.kube import MERGE_PATCH
from controller.clock import FakeClock
from controller.model.record import ANNOTATION, FINALIZER
from controller.model.would_act import Action, WouldAct
from controller.observability.events import ObjectRef
from controller.observability.metrics import Metrics
from controller.observability.would_act import REASON, WouldActAnnouncer, lease_ref

REGION = "us-east-1"
SGFES = "/apis/aws.amazon.com/v1/namespaces/kube-system/spotguardfallbackevents"


# -- Auto Scaling -------------------------------------------------------------------------------------------------
@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
        client = boto3.client("autoscaling", region_name=REGION)
        client.create_launch_configuration(
            LaunchConfigurationName="lc", ImageId="ami-12c6146b", InstanceType="m5.large"
        )
        client.create_auto_scaling_group(
            AutoScalingGroupName="spot",
            LaunchConfigurationName="lc",
            MinSize=0,
            MaxSize=5,
            DesiredCapacity=3,
            VPCZoneIdentifier=subnet,
        )
        yield client


def _real(client: Any, name: str = "spot") -> tuple[int, list[str]]:
    group = client.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
    return group["DesiredCapacity"], sorted(i["InstanceId"] for i in group["Instances"])


def test_a_scale_up_is_announced_and_shown_but_never_sent(aws: Any) -> None:
    said: list[WouldAct] = []
    asg = DryRunAutoScaling(aws, announce=said.append)
    before = _real(aws)

    asg.set_desired_capacity("spot", 5)

    assert _real(aws) == before, "AWS must not change"
    shown = asg.describe_groups(["spot"])["spot"]
    assert shown.desired == 5, "the controller's own reads show the would-be desired capacity"
    assert sorted(i.instance_id for i in shown.instances) == before[1], "but no instance arrives"
    assert [(w.action, w.asg) for w in said] == [(Action.SCALE_UP, "spot")]
    assert "from 3 to 5 (+2)" in said[0].message

    asg.set_desired_capacity("spot", 4)  # a give-back of a launch that never happened
    assert said[-1].action == Action.SCALE_DOWN and "from 5 to 4 (-1)" in said[-1].message
    assert asg.describe_groups(["spot"])["spot"].desired == 4
    assert _real(aws) == before


def test_a_scale_up_beyond_max_size_fails_as_aws_would(aws: Any) -> None:
    said: list[WouldAct] = []
    asg = DryRunAutoScaling(aws, announce=said.append)
    with pytest.raises(AwsError) as raised:
        asg.set_desired_capacity("spot", 6)
    assert raised.value.code == "ValidationError" and "above max value 5" in str(raised.value)
    assert said == []


def test_a_termination_hides_the_instance_and_lowers_desired_but_terminates_nothing(aws: Any) -> None:
    said: list[WouldAct] = []
    asg = DryRunAutoScaling(aws, announce=said.append)
    desired, instances = _real(aws)
    victim = instances[0]

    asg.terminate_instance(victim, decrement=True)

    assert _real(aws) == (desired, instances), "the instance is still there, desired capacity unchanged"
    shown = asg.describe_groups(["spot"])["spot"]
    assert victim not in {i.instance_id for i in shown.instances}
    assert shown.desired == desired - 1
    assert victim not in asg.memberships([victim])
    assert said[0].action == Action.TERMINATE and victim in said[0].message and said[0].asg == "spot"
    with pytest.raises(AwsError, match="Instance Id not found"):  # the owner's "already gone"
        asg.terminate_instance(victim)


# -- Kubernetes ---------------------------------------------------------------------------------------------------
class FakeKube:
    """The API server's answers as ``Kube.request`` gives them; every request recorded."""

    api = None
    request_timeout = 10.0

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {
            "n1": {
                "metadata": {"name": "n1", "resourceVersion": "7", "labels": {"zone": "a"}},
                "spec": {"taints": [{"key": "other", "value": "x", "effect": "NoSchedule"}]},
            }
        }
        self.pods = [
            {"metadata": {"namespace": "app", "name": "web-1"}},
            {"metadata": {"namespace": "app", "name": "db"}},
        ]
        self.sgfes: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, Any]]] = []

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int] | None = None,
        *,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> dict[str, Any]:
        self.requests.append((method, path, dict(query or {})))
        if method == "GET" and path.startswith("/api/v1/nodes/"):
            return copy.deepcopy(self.nodes[path.rsplit("/", 1)[1]])
        if method == "GET" and path == "/api/v1/nodes":
            return {"items": copy.deepcopy(list(self.nodes.values()))}
        if method == "GET" and path == "/api/v1/pods":
            return {"items": copy.deepcopy(self.pods)}
        if method == "GET" and path == SGFES:
            return {"items": copy.deepcopy(self.sgfes)}
        if method == "PATCH" and path.startswith("/api/v1/nodes/"):
            return merge_patch(self.nodes[path.rsplit("/", 1)[1]], body)  # type: ignore[no-any-return]
        if method == "POST" and path == SGFES:
            return {**copy.deepcopy(body), "metadata": {**body["metadata"], "uid": "u-1"}}
        return {}

    def stream(self, path: str, query: Mapping[str, str | int], timeout: float) -> Iterator[dict[str, Any]]:
        for node in self.nodes.values():
            yield {"type": "MODIFIED", "object": copy.deepcopy(node)}

    def writes(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [r for r in self.requests if r[0] != "GET"]


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube()


def _dry(fake: FakeKube) -> tuple[DryRunKube, list[WouldAct]]:
    said: list[WouldAct] = []
    return DryRunKube(fake, said.append), said  # type: ignore[arg-type]


def test_every_node_write_is_sent_with_dry_run_only_and_shown_to_later_reads(fake: FakeKube) -> None:
    kube, said = _dry(fake)
    shown: list[dict[str, Any]] = []
    kube.on_node.append(shown.append)
    record = json.dumps({"phase": "SpotRequested"})
    taints = [
        *fake.nodes["n1"]["spec"]["taints"],
        {"key": "spotguard.io/rebalance", "value": "x", "effect": "NoSchedule"},
    ]
    original = copy.deepcopy(fake.nodes["n1"])

    kube.request(
        "PATCH",
        "/api/v1/nodes/n1",
        body={"metadata": {"resourceVersion": "7", "annotations": {ANNOTATION: record}, "finalizers": [FINALIZER]}},
        content_type=MERGE_PATCH,
    )
    kube.request("PATCH", "/api/v1/nodes/n1", body={"spec": {"taints": taints}}, content_type=MERGE_PATCH)
    kube.request("PATCH", "/api/v1/nodes/n1", body={"spec": {"unschedulable": True}}, content_type=MERGE_PATCH)

    assert fake.nodes["n1"] == original
    assert all(query.get("dryRun") == "All" for _, _, query in fake.writes()), fake.writes()
    node = kube.request("GET", "/api/v1/nodes/n1")
    assert node["metadata"]["annotations"][ANNOTATION] == record and node["metadata"]["finalizers"] == [FINALIZER]
    assert node["spec"]["unschedulable"] is True and len(node["spec"]["taints"]) == 2
    listed = kube.request("GET", "/api/v1/nodes")["items"][0]
    watched = next(kube.stream("/api/v1/nodes", {}, 1.0))["object"]
    assert listed == node and watched == node, "lists and watches show the would-be Node too"
    assert [w.action for w in said] == [Action.RECORD, Action.TAINT, Action.CORDON]
    assert "SpotRequested" in said[0].message and "spotguard.io/rebalance=x:NoSchedule" in said[1].message
    assert all(w.node == "n1" for w in said)
    assert shown[-1] == node, "the Node cache is shown each would-be version"

    kube.request("PATCH", "/api/v1/nodes/n1", body={"spec": {"taints": taints[:1], "unschedulable": False}})
    assert [w.action for w in said[3:]] == [Action.UNTAINT, Action.UNCORDON]


def test_an_eviction_is_checked_by_the_api_server_and_the_pod_left_out_of_lists(fake: FakeKube) -> None:
    kube, said = _dry(fake)
    kube.request("POST", "/api/v1/namespaces/app/pods/web-1/eviction", body={"kind": "Eviction"})

    assert fake.writes() == [("POST", "/api/v1/namespaces/app/pods/web-1/eviction", {"dryRun": "All"})]
    pods = kube.request("GET", "/api/v1/pods", {"fieldSelector": "spec.nodeName=n1"})["items"]
    assert [p["metadata"]["name"] for p in pods] == ["db"]
    assert said == [
        WouldAct(Action.EVICT, "Pod", "app/web-1", "would evict pod app/web-1; nothing was changed (observe-only)")
    ]


def test_a_refused_eviction_is_refused_in_observe_only_too(fake: FakeKube) -> None:
    kube, said = _dry(fake)

    def refuse(method: str, path: str, query: Any = None, **kwargs: Any) -> dict[str, Any]:
        raise ApiException(status=429, reason="Too Many Requests")  # a PodDisruptionBudget

    fake.request = refuse  # type: ignore[method-assign]
    with pytest.raises(ApiException):
        kube.request("POST", "/api/v1/namespaces/app/pods/web-1/eviction", body={})
    assert said == []


def test_events_and_leases_are_written_for_real(fake: FakeKube) -> None:
    kube, said = _dry(fake)
    kube.request("POST", "/api/v1/namespaces/default/events", body={})
    kube.request("PATCH", "/api/v1/namespaces/default/events/e1", body={})
    kube.request("PATCH", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/spotguard", body={})
    assert [query for _, _, query in fake.writes()] == [{}, {}, {}]
    assert said == []


def test_a_fallback_event_lives_in_memory_from_create_to_delete(fake: FakeKube) -> None:
    kube, said = _dry(fake)
    body = {"metadata": {"name": "fe-1", "namespace": "kube-system"}, "spec": {"onDemandNodeName": "od-1"}}

    created = kube.request("POST", SGFES, body=body)
    assert fake.writes() == [("POST", SGFES, {"dryRun": "All"})] and fake.sgfes == []
    assert [i["metadata"]["name"] for i in kube.request("GET", SGFES)["items"]] == ["fe-1"]
    version = created["metadata"]["resourceVersion"]
    updated = kube.request(
        "PUT",
        f"{SGFES}/fe-1/status",
        body={"metadata": {"resourceVersion": version}, "status": {"phase": "Monitoring"}},
    )
    assert kube.request("GET", f"{SGFES}/fe-1")["status"] == {"phase": "Monitoring"}
    with pytest.raises(ApiException) as conflict:  # the version it replaced
        kube.request("PUT", f"{SGFES}/fe-1/status", body={"metadata": {"resourceVersion": version}, "status": {}})
    assert conflict.value.status == 409
    kube.request("DELETE", f"{SGFES}/fe-1", body={"preconditions": {"uid": updated["metadata"]["uid"]}})
    with pytest.raises(ApiException) as gone:
        kube.request("GET", f"{SGFES}/fe-1")
    assert gone.value.status == 404
    assert kube.request("GET", SGFES)["items"] == []
    assert [w.action for w in said] == [
        Action.CREATE_FALLBACK_EVENT,
        Action.UPDATE_FALLBACK_EVENT,
        Action.DELETE_FALLBACK_EVENT,
    ]
    assert "phase Monitoring" in said[1].message and said[0].node == "od-1"
    assert len(fake.writes()) == 1, "changes of an object that exists only here never reach the API server"


def test_any_other_write_is_sent_with_dry_run_and_announced(fake: FakeKube) -> None:
    kube, said = _dry(fake)
    kube.request("DELETE", "/api/v1/namespaces/app/pods/db")
    assert fake.writes() == [("DELETE", "/api/v1/namespaces/app/pods/db", {"dryRun": "All"})]
    assert [w.action for w in said] == [Action.OTHER]


# -- the announcer ------------------------------------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.recorded: list[tuple[ObjectRef, str, str, str]] = []

    def record(self, obj: ObjectRef, event_type: str, reason: str, message: str) -> None:
        self.recorded.append((obj, event_type, reason, message))


def test_each_would_be_change_is_said_once_an_event_a_metric_and_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    events, metrics = Recorder(), Metrics(clock, process_metrics=False)
    lease = lease_ref("kube-system", "spotguard-controller")
    announcer = WouldActAnnouncer(events, metrics, clock, lease, repeat_window=600)  # type: ignore[arg-type]
    scale = WouldAct(Action.SCALE_UP, "AutoScalingGroup", "spot", "would set ... (+2)", asg="spot")
    taint = WouldAct(Action.TAINT, "Node", "n1", "would taint node n1", node="n1", asg="spot")
    record = WouldAct(Action.RECORD, "Node", "n1", "would write the record", node="n1")

    with caplog.at_level("INFO", logger="controller.dry_run"):
        for would in (scale, taint, record, taint, record):
            announcer.announce(would)
    assert [(obj.kind, obj.name, reason) for obj, _, reason, _ in events.recorded] == [
        ("Lease", "spotguard-controller", REASON),
        ("Node", "n1", REASON),
    ], "group changes go on the Lease, Node changes on the Node, the record writes nowhere, repeats not at all"
    assert events.recorded[0][3] == "scale-up: would set ... (+2)"
    assert metrics.dry_run_actions.labels("scale-up", "spot")._value.get() == 1
    assert metrics.dry_run_actions.labels("record", "")._value.get() == 1
    assert sum("observe-only" in r.getMessage() for r in caplog.records) == 3

    clock.advance(601)  # a later notice that would do the same again is a new announcement
    announcer.announce(taint)
    assert len(events.recorded) == 3


def test_every_scale_change_is_announced_even_when_it_reads_like_the_last() -> None:
    clock = FakeClock()
    events, metrics = Recorder(), Metrics(clock, process_metrics=False)
    announcer = WouldActAnnouncer(events, metrics, clock, lease_ref("ns", "l"))  # type: ignore[arg-type]
    up = WouldAct(Action.SCALE_UP, "AutoScalingGroup", "od", "would set ... from 0 to 1 (+1)", asg="od")
    down = WouldAct(Action.SCALE_DOWN, "AutoScalingGroup", "od", "would set ... from 1 to 0 (-1)", asg="od")
    for would in (up, down, up, down):  # two notices, one after the other
        announcer.announce(would)
    assert len(events.recorded) == 4
    assert metrics.dry_run_actions.labels("scale-up", "od")._value.get() == 2


#: The AutoScaling adapter's methods that only read (observe-only passes them through).
READS = {
    "describe_groups",
    "tagged_groups",
    "group_of_instances",
    "memberships",
    "activities",
    "lifecycle_hooks",
    "instance_refreshes",
    "capacity_changes",
}


def test_every_write_of_the_aws_adapter_is_cut_by_the_seam() -> None:
    """A method added to AutoScaling that changes anything must be overridden by DryRunAutoScaling (or, if it
    only reads, named in READS): nothing reaches AWS past the seam by a new door."""
    from controller.adapters.aws import AutoScaling

    public = {name for name, value in vars(AutoScaling).items() if callable(value) and not name.startswith("_")}
    overridden = {name for name in vars(DryRunAutoScaling) if not name.startswith("_")}
    assert public - READS - overridden == set()
    assert {"set_desired_capacity", "terminate_instance"} <= overridden


def test_the_events_queue_is_read_but_no_message_is_deleted(aws: Any) -> None:
    """Deleting a message is a change in AWS: observe-only receives the EC2 events as ever and deletes none (each
    comes back after the visibility timeout and changes nothing); every delete it would make is counted."""
    from controller.adapters.dry_run import DryRunEventQueue
    from controller.adapters.sqs import EventQueue

    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="spotguard-ec2-events", Attributes={"VisibilityTimeout": "0"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody='{"detail-type": "EC2 Instance Rebalance Recommendation"}')
    announced: list[WouldAct] = []
    queue = DryRunEventQueue(url, sqs, announce=announced.append)

    received = queue.receive(wait_seconds=0)
    assert queue.delete(received) == [], "the feed is told they are done: no 'could not delete' warning"

    assert len(EventQueue(url, sqs).receive(wait_seconds=0)) == 1, "the message is still in the queue"
    assert [(w.action, w.kind) for w in announced] == [(Action.ACKNOWLEDGE, "Queue")]
    assert received[0].message_id in announced[0].message and "observe-only" in announced[0].message
    assert not Action.ACKNOWLEDGE.counted and Action.ACKNOWLEDGE.quiet, "logged and counted, no Event"
