"""EC2's events through EventBridge and SQS as a second source of notices, on the real sandbox (API server, kwok,
moto's EventBridge and SQS, the capacity simulator), with the controller's production wiring running in-process:
no nodewatch runs, the events are published with put_events in the shapes AWS documents (sandbox.aws.event_queue).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from kubernetes import client as k8s

from controller.adapters.kube import Kube
from controller.adapters.kube import api_client as kube_api_client
from controller.app.cli import main
from controller.app.run import leader_components, run_leader
from controller.clock import Cancellation, SystemClock
from controller.model.queue_notice import ANNOTATION as QUEUE_NOTICE
from controller.model.record import ANNOTATION as RECORD_ANNOTATION
from controller.observability.metrics import Metrics
from controller.replacement.queue_feed import RECORDED
from sandbox.aws import event_queue
from sandbox.aws.client import SandboxAWSClient
from sandbox.environment import Sandbox
from tests.integration.controller_process import (
    SHORT_ELECTION,
    ControllerLauncher,
    LeaseWatch,
    SpotNode,
    annotate_rebalance,
    clean_nodes,
    controller_env,
    replacement_finished,
    spot_nodes,
)
from tests.integration.test_replacement_on_sandbox import ON_DEMAND, SETTINGS, SPOT


@dataclasses.dataclass
class Running:
    cancel: Cancellation
    thread: threading.Thread
    metrics: Metrics

    def counted(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value("spotguard_queue_messages_total", {"outcome": outcome})
        return value or 0.0


@dataclasses.dataclass
class Aws:
    events: Any
    sqs: Any
    queue_url: str
    account: str
    region: str

    def publish(self, kind: str, instance: str, **fields: Any) -> None:
        event_queue.publish(
            self.events, [event_queue.entry(kind, instance, region=self.region, account=self.account, **fields)]
        )

    def left(self) -> int:
        """Messages in the queue, visible or not (received and not deleted)."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


@pytest.fixture
def aws(sandbox: Sandbox, aws_sim: SandboxAWSClient) -> Aws:
    env = sandbox.env()
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )
    account = sandbox.queue_url.rstrip("/").split("/")[-2]
    return Aws(
        session.client("events", endpoint_url=env["AWS_ENDPOINT_URL"]),
        session.client("sqs", endpoint_url=env["AWS_ENDPOINT_URL"]),
        sandbox.queue_url,
        account,
        env["AWS_REGION"],
    )


@pytest.fixture
def start_controller(
    api_client: k8s.ApiClient, aws_sim: SandboxAWSClient, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Running]]:
    for key, value in sandbox.env().items():
        monkeypatch.setenv(key, value)
    started: list[Running] = []

    def start(**overrides: Any) -> Running:
        settings = dataclasses.replace(SETTINGS, **{"queue_url": sandbox.queue_url, **overrides}).validate()
        cancel = Cancellation()
        metrics = Metrics(SystemClock(), process_metrics=False)
        # the controller's own client, as `spotguard run` makes it (its connection pool sized for the pollers)
        controller_client = kube_api_client(str(sandbox.kubeconfig))
        parts = leader_components(
            settings, Kube(controller_client), SystemClock(), lambda op: None, cancel, metrics=metrics
        )
        thread = threading.Thread(target=run_leader, args=(parts, cancel), daemon=True)
        thread.start()
        running = Running(cancel, thread, metrics)
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
    clean_nodes(k8s.CoreV1Api(api_client))


def _until(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not true within {timeout:.0f}s"
        time.sleep(0.2)


def _annotations(core: k8s.CoreV1Api, name: str) -> dict[str, str] | None:
    try:
        return dict(core.read_node(name).metadata.annotations or {})
    except k8s.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _gone(core: k8s.CoreV1Api, name: str) -> bool:
    return _annotations(core, name) is None


def _events(core: k8s.CoreV1Api, node: str) -> list[str]:
    items = core.list_namespaced_event("default", field_selector=f"involvedObject.name={node}").items
    return [f"{e.type} {e.reason}: {e.message}" for e in items]


def _sgfes(api_client: k8s.ApiClient) -> list[dict[str, Any]]:
    return list(
        k8s.CustomObjectsApi(api_client).list_namespaced_custom_object(
            "aws.amazon.com", "v1", "kube-system", "spotguardfallbackevents"
        )["items"]
    )


def test_an_ec2_event_through_the_queue_replaces_a_node_as_an_annotation_would(
    start_controller: Callable[..., Running], core: k8s.CoreV1Api, aws_sim: SandboxAWSClient, aws: Aws
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=1)
    old = spot_nodes(core)[0]
    before = {i["instance_id"] for i in aws_sim.group(SPOT)["instances"]}
    running = start_controller()
    aws.publish("rebalance", old.instance_id)

    notice = _until("the event recorded on the node", lambda: (_annotations(core, old.name) or {}).get(QUEUE_NOTICE))
    assert json.loads(notice)["instanceId"] == old.instance_id and "rebalance" in json.loads(notice)
    _until(
        "an Event on the node saying the recommendation was seen (reason as in NTH)",
        lambda: any(e.startswith("Normal RebalanceRecommendation: ") for e in _events(core, old.name)),
    )
    _until("the old node retired and gone", lambda: _gone(core, old.name))
    after = {i["instance_id"] for i in aws_sim.group(SPOT)["instances"]}
    assert old.instance_id not in after and before - {old.instance_id} < after
    assert len(after) == len(before) and aws_sim.group(SPOT)["desired_capacity"] == len(before), "capacity neutral"
    assert aws_sim.count_calls("SetDesiredCapacity", asg=SPOT) == 1
    terminations = aws_sim.calls("TerminateInstanceInAutoScalingGroup")
    assert len(terminations) == 1 and old.instance_id in json.dumps(terminations[0])
    _until("the message deleted", lambda: aws.left() == 0)
    assert running.counted("acted") == 1


@pytest.mark.parametrize("first", ["annotation", "event"])
def test_both_sources_of_one_notice_and_a_redelivery_give_one_scale_up_and_one_fallback_event(
    *,
    first: str,
    start_controller: Callable[..., Running],
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    aws: Aws,
    api_client: k8s.ApiClient,
) -> None:
    """Spot is short, so the replacement falls back to on-demand: one spot increase, one on-demand increase, one
    SGFE, whichever source spoke first; the event's time and IMDS's notice time differ by seconds, as on AWS."""
    aws_sim.set_capacity(SPOT, capacity_short=True, retry_seconds=1)
    old = spot_nodes(core)[0]
    now = dt.datetime.now(dt.UTC)
    running = start_controller()

    def by_nodewatch() -> None:
        annotate_rebalance(core, old, at=now - dt.timedelta(seconds=3))

    def by_queue() -> None:
        aws.publish("rebalance", old.instance_id, time=now)
        aws.publish("rebalance", old.instance_id, time=now)  # EventBridge delivers at least once

    sources = [by_nodewatch, by_queue] if first == "annotation" else [by_queue, by_nodewatch]
    sources[0]()
    _until("the replacement under way", lambda: RECORD_ANNOTATION in (_annotations(core, old.name) or {}))
    sources[1]()
    _until("the queue's event recorded", lambda: QUEUE_NOTICE in (_annotations(core, old.name) or {}))
    _until("a SpotGuardFallbackEvent", lambda: _sgfes(api_client))
    _until("the old spot node retired", lambda: _gone(core, old.name), timeout=90)
    _until("both messages deleted", lambda: aws.left() == 0)
    time.sleep(2)  # a second replacement would have started by now

    def desired(group: str) -> list[str]:
        return [str(c["params"].get("DesiredCapacity")) for c in aws_sim.calls("SetDesiredCapacity", asg=group)]

    assert desired(SPOT) == ["4", "3"], "one spot increase, given back once spot proved short"
    assert desired(ON_DEMAND) == ["1"], "one on-demand increase"
    assert len(_sgfes(api_client)) == 1
    announced = [e for e in _events(core, old.name) if "RebalanceRecommendation" in e]
    assert len(announced) <= 1, announced
    assert running.counted("acted") == 2


def test_malformed_and_foreign_messages_are_deleted_and_counted_while_annotations_are_served(
    start_controller: Callable[..., Running], core: k8s.CoreV1Api, aws_sim: SandboxAWSClient, aws: Aws
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=1)
    old = spot_nodes(core)[0]
    running = start_controller()
    now = dt.datetime.now(dt.UTC)
    event = json.loads(
        json.dumps(
            {
                "version": "0",
                "id": "7bf73129-1428-4cd3-a780-95db273d1602",
                "detail-type": "EC2 Instance Rebalance Recommendation",
                "source": "aws.ec2",
                "account": aws.account,
                "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": aws.region,
                "resources": [f"arn:aws:ec2:{aws.region}:{aws.account}:instance/{old.instance_id}"],
                "detail": {"instance-id": old.instance_id},
            }
        )
    )
    bodies = {
        "malformed": ["{not json", json.dumps({**event, "detail": {}})],
        "unknown-type": [json.dumps({**event, "detail-type": "EC2 Instance Launch Successful"})],
        "foreign": [json.dumps({**event, "account": "210987654321"}), json.dumps({**event, "region": "eu-west-3"})],
        "old": [json.dumps({**event, "time": "2026-01-01T00:00:00Z"})],
        "no-node": [json.dumps({**event, "detail": {"instance-id": "i-0000000000000dead"}})],
    }
    for batch in bodies.values():
        for body in batch:
            aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=body)
    annotate_rebalance(core, old)

    _until("every bad message deleted", lambda: aws.left() == 0)
    for outcome, batch in bodies.items():
        assert running.counted(outcome) == len(batch), outcome
    assert running.counted("acted") == 0
    assert QUEUE_NOTICE not in (_annotations(core, old.name) or {})
    _until("the annotated node replaced all the same", lambda: _gone(core, old.name))
    assert aws_sim.count_calls("SetDesiredCapacity", asg=SPOT) == 1


def test_a_state_change_of_a_node_not_being_replaced_is_acknowledged_and_changes_nothing(
    start_controller: Callable[..., Running], core: k8s.CoreV1Api, aws_sim: SandboxAWSClient, aws: Aws
) -> None:
    old = spot_nodes(core)[0]
    running = start_controller()
    aws.publish("state", old.instance_id, state="shutting-down")
    _until("the message deleted", lambda: aws.left() == 0)
    assert running.counted("not-replacing") == 1
    assert QUEUE_NOTICE not in (_annotations(core, old.name) or {})
    assert aws_sim.count_calls("SetDesiredCapacity") == 0


@pytest.fixture
def launcher(
    sandbox: Sandbox, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api, tmp_path: Path
) -> Iterator[ControllerLauncher]:
    env = controller_env(sandbox.env(), **SHORT_ELECTION, SPOT_GUARD_QUEUE_URL=sandbox.queue_url)
    with ControllerLauncher(env, tmp_path, core=core) as launcher:
        yield launcher


def test_a_leader_killed_between_recording_an_event_and_deleting_it_leaves_its_successor_nothing_to_do_twice(
    launcher: ControllerLauncher, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api, api_client: k8s.ApiClient, aws: Aws
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=0)
    old = spot_nodes(core)[0]
    aws_sim.reset_calls()
    with LeaseWatch(api_client, launcher.lease_name) as lease:
        doomed = launcher.start("doomed", SPOTGUARD_FAILPOINTS=RECORDED)
        lease.wait_for(lambda holder: holder == "doomed", timeout=30, what="the first replica leads")
        aws.publish("rebalance", old.instance_id)
        assert doomed.wait(timeout=60) == -9, f"the leader should have died at {RECORDED}:\n{doomed.log_tail()}"
        assert QUEUE_NOTICE in (_annotations(core, old.name) or {}), "the effect was recorded before the crash"
        assert aws.left() == 1, "the message was not deleted"

        successor = launcher.start("successor")
        deadline = time.monotonic() + 120
        while not (replacement_finished(core, old.name) and aws.left() == 0):
            assert time.monotonic() < deadline, f"not finished after the crash:\n{successor.log_tail()}"
            time.sleep(0.3)

    raised = [c["params"].get("DesiredCapacity") for c in aws_sim.calls("SetDesiredCapacity", asg=SPOT)]
    assert raised == ["4"], f"one scale-up, made once: {raised}"
    terminations = [c["params"].get("InstanceId") for c in aws_sim.calls("TerminateInstanceInAutoScalingGroup")]
    assert terminations == [old.instance_id], terminations
    assert aws_sim.group(SPOT)["desired_capacity"] == 3


@pytest.mark.parametrize("straight_to_the_queue", [False, True])
def test_spotguard_simulate_via_queue_publishes_an_event_the_controller_acts_on(
    *,
    straight_to_the_queue: bool,
    start_controller: Callable[..., Running],
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    sandbox: Sandbox,
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=1)
    old = spot_nodes(core)[0]
    start_controller()
    args = ["simulate", "rebalance", old.name, "--via", "queue", "-o", "json"]
    if straight_to_the_queue:  # as against AWS itself, where only EC2 may put aws.ec2 events
        args += ["--queue-url", sandbox.queue_url]
    result = CliRunner().invoke(main, args, env=sandbox.env(), prog_name="spotguard")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["instanceId"] == old.instance_id
    _until("the event recorded on the node", lambda: QUEUE_NOTICE in (_annotations(core, old.name) or {}))
    _until("the old node retired and gone", lambda: _gone(core, old.name))
    assert aws_sim.count_calls("SetDesiredCapacity", asg=SPOT) == 1


BURST = 200
POLL_INTERVAL = 2.0  # nodewatch's default: the spread of one burst's annotations


def test_two_hundred_events_at_once_are_batched_like_two_hundred_annotations(
    start_controller: Callable[..., Running],
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    aws: Aws,
    sandbox: Sandbox,
) -> None:
    """A capacity pool's recommendations reach 200 nodes at once: written by nodewatch on 200 nodes, then published
    as 200 events for 200 others. Replacements stay Pending: only the scale-ups are counted.

    Each annotation is written at a random moment within one nodewatch poll interval (2 s), as nodewatch writes a
    burst (each agent sees it at its next poll; bench/controller_burst_benchmarks.py does the same). The events are
    published at once; the queue's first receive returns as soon as the first arrive, as SQS's long poll does, so
    they too come first in a small clump, then the rest (controller.replacement.batching: one or two calls)."""
    env = sandbox.env()
    autoscaling = boto3.client(
        "autoscaling",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    aws_sim.set_capacity(SPOT, pending_seconds=0)
    autoscaling.update_auto_scaling_group(AutoScalingGroupName=SPOT, MaxSize=1000, DesiredCapacity=2 * BURST)
    _until(f"{2 * BURST} Ready spot Nodes", lambda: len(spot_nodes(core)) >= 2 * BURST, timeout=300)
    aws_sim.set_capacity(SPOT, pending_seconds=3600)
    nodes = spot_nodes(core)[: 2 * BURST]
    by_annotation, by_event = nodes[:BURST], nodes[BURST:]
    start_controller()
    time.sleep(2)  # the caches' first list
    aws_sim.reset_calls()

    def scale_ups() -> int:
        return aws_sim.count_calls("SetDesiredCapacity", asg=SPOT)

    rng = random.Random(2)  # noqa: S311 (arrival times, not secrets)
    start = time.monotonic() + 0.2
    moments = sorted(start + rng.uniform(0.0, POLL_INTERVAL) for _ in by_annotation)

    def by_nodewatch(item: tuple[float, SpotNode]) -> None:
        moment, node = item
        time.sleep(max(0.0, moment - time.monotonic()))
        annotate_rebalance(core, node)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(by_nodewatch, zip(moments, by_annotation, strict=True)))
    _until("every annotated node asked for", lambda: aws_sim.group(SPOT)["desired_capacity"] == 3 * BURST, 120)
    time.sleep(3)
    annotation_calls = scale_ups()

    entries = [
        event_queue.entry("rebalance", node.instance_id, region=aws.region, account=aws.account) for node in by_event
    ]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda start: event_queue.publish(aws.events, entries[start : start + 10]), range(0, BURST, 10)))
    _until("every node of an event asked for", lambda: aws_sim.group(SPOT)["desired_capacity"] == 4 * BURST, 120)
    time.sleep(3)
    event_calls = scale_ups() - annotation_calls
    _until("every message deleted", lambda: aws.left() == 0)

    # An annotation burst is held to at most two calls per ASG (bench: controller.burst_set_desired_calls_per_asg,
    # 500 over two groups): this one's 200 arrive within one poll interval and usually fit in one call; the events,
    # whose first receive returns as soon as the first arrive, in one or two. The events are held to the same bound.
    assert 1 <= annotation_calls <= 2, annotation_calls
    assert 1 <= event_calls <= 2, f"{event_calls} calls for the events ({annotation_calls} for the annotations)"


def test_a_queue_that_is_not_there_is_reported_and_counted_while_annotations_are_served(
    start_controller: Callable[..., Running], core: k8s.CoreV1Api, aws_sim: SandboxAWSClient, sandbox: Sandbox
) -> None:
    aws_sim.set_capacity(SPOT, pending_seconds=1)
    old = spot_nodes(core)[0]
    running = start_controller(queue_url=sandbox.queue_url.rsplit("/", 1)[0] + "/deleted-queue")
    registry = running.metrics.registry
    _until(
        "the missing queue counted",
        lambda: (registry.get_sample_value("spotguard_queue_errors_total", {"kind": "missing-queue"}) or 0) >= 1,
    )
    assert registry.get_sample_value("spotguard_queue_readable") == 0
    annotate_rebalance(core, old)
    _until("the annotated node replaced all the same", lambda: _gone(core, old.name))
    assert aws_sim.count_calls("SetDesiredCapacity", asg=SPOT) == 1
