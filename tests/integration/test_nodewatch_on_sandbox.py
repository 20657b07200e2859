"""nodewatch against the real parts: the real ``python -m nodewatch`` process polls the official EC2 metadata mock
(AEMM) and annotates its Node through the sandbox's real kube-apiserver.

Each spot Node of the sandbox carries ``spec.providerID: aws:///<zone>/<instance-id>``; its AEMM serves that
instance id and zone. The tests assert what ends up on the Nodes, never how fast it got there (that is
``python -m bench --only nodewatch_notice_latency``). AEMM itself (v1.12.0) answers every read of a notice with a
fresh time: the rebalance ``noticeTime`` is the request time and the interruption ``time`` is the request time plus
two minutes, so the tests bound those times instead of expecting one value.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.client
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from bench.nodewatch_process import NodewatchProcess
from nodewatch import annotations as contract
from sandbox.environment import Sandbox
from sandbox.imds import MetadataMock, NoticeSchedule

SPOT_ASG = "spotguard-spot-1"
ASG_LABEL = "spotguard.io/asg"  # put on every Node by the sandbox's node sync
POLL_INTERVAL = 1.0
PATIENCE = 60.0  # a generous limit for shared machines: these tests assert outcomes, never how fast they came
AEMM_INTERRUPTION_LEAD = dt.timedelta(minutes=2)  # AEMM's instance-action time: its request time + 2 minutes
NODEWATCH_MANAGER = "spotguard-nodewatch"  # the field manager the API server derives from nodewatch's User-Agent


@dataclasses.dataclass(frozen=True)
class SpotNode:
    name: str
    instance_id: str
    zone: str


def _spot_nodes(core: k8s.CoreV1Api) -> list[SpotNode]:
    """The spot group's Nodes, identity taken from ``spec.providerID`` (aws:///<zone>/<instance-id>)."""
    found = []
    for node in core.list_node(label_selector=f"{ASG_LABEL}={SPOT_ASG}").items:
        if node.metadata.deletion_timestamp is not None:
            continue
        zone, _, instance_id = node.spec.provider_id.removeprefix("aws:///").partition("/")
        found.append(SpotNode(node.metadata.name, instance_id, zone))
    return sorted(found, key=lambda n: n.name)


def _own_annotations(core: k8s.CoreV1Api, name: str) -> dict[str, str]:
    annotations = core.read_node(name).metadata.annotations or {}
    return {key: value for key, value in annotations.items() if key in contract.NODEWATCH_KEYS}


def _whole_second(moment: dt.datetime) -> dt.datetime:
    return moment.replace(microsecond=0)


def _imds_get(url: str, path: str, token: bool = True) -> tuple[int, str]:
    """(status, body) of one read from the metadata mock, with an IMDSv2 token or without one."""
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=5)
    try:
        headers = {}
        if token:
            connection.request("PUT", "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
            answer = connection.getresponse()
            headers["X-aws-ec2-metadata-token"] = answer.read().decode()
            assert answer.status == 200
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


class Harness:
    """Metadata mocks and nodewatch processes for one test; ``close`` stops them and strips nodewatch's keys."""

    def __init__(self, sandbox: Sandbox, core: k8s.CoreV1Api, logdir: Path) -> None:
        self.sandbox = sandbox
        self.core = core
        self.logdir = logdir
        self.processes: list[NodewatchProcess] = []
        self.mocks: list[MetadataMock] = []

    def spot_nodes(self, count: int) -> list[SpotNode]:
        self.eventually(f"{count} spot Nodes of {SPOT_ASG}", lambda: len(_spot_nodes(self.core)) >= count)
        return _spot_nodes(self.core)[:count]

    def mock(
        self,
        node: SpotNode,
        notices: NoticeSchedule | None = None,
        imdsv2_only: bool = False,
        life_cycle: str = "spot",
    ) -> MetadataMock:
        """(Re)start the AEMM of ``node``'s instance (same port on a restart) with the given notices."""
        mock = self.sandbox.metadata_mock(
            node.instance_id, node.zone, notices=notices, imdsv2_only=imdsv2_only, life_cycle=life_cycle
        )
        if mock not in self.mocks:
            self.mocks.append(mock)
        return mock

    def nodewatch(self, node: SpotNode, mock: MetadataMock, *extra_args: str) -> NodewatchProcess:
        process = NodewatchProcess(
            node.name,
            mock.url,
            self.sandbox.kubeconfig,
            self.logdir,
            poll_interval=POLL_INTERVAL,
            extra_args=extra_args,
        )
        self.processes.append(process)
        return process.start()

    def eventually(self, what: str, condition: Callable[[], object]) -> None:
        deadline = time.monotonic() + PATIENCE
        while not condition():
            for process in self.processes:
                if not process.alive():
                    pytest.fail(f"{process.name} exited while waiting for {what}:\n{process.log_tail()}")
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.name}:\n{p.log_tail(15)}" for p in self.processes)
                pytest.fail(f"gave up after {PATIENCE:g} s waiting for {what}\n{logs}")
            time.sleep(0.1)

    def annotated(self, node: SpotNode, key: str) -> dict[str, str]:
        """Wait until ``node`` carries nodewatch annotation ``key``; nodewatch's annotations then."""
        seen: dict[str, str] = {}

        def present() -> bool:
            seen.clear()
            seen.update(_own_annotations(self.core, node.name))
            return key in seen

        self.eventually(f"{key} on node {node.name}", present)
        return dict(seen)

    def more_good_polls(self, process: NodewatchProcess, count: int = 2) -> None:
        """Wait until ``process`` has made ``count`` more successful polls.

        The counter moves once a poll's IMDS reads succeed, before that poll updates the Node: after two more,
        at least one whole poll (reads and Node update) has happened since the call.
        """
        target = process.polls("ok") + count
        self.eventually(f"{count} more good polls of {process.name}", lambda: process.polls("ok") >= target)

    def strip_annotations(self) -> None:
        for node in self.core.list_node().items:
            own = [key for key in node.metadata.annotations or {} if key in contract.NODEWATCH_KEYS]
            if own:
                self.core.patch_node(node.metadata.name, {"metadata": {"annotations": dict.fromkeys(own)}})

    def close(self) -> None:
        for process in self.processes:
            process.stop()
        for mock in self.mocks:
            mock.stop()
        self.strip_annotations()


@pytest.fixture
def harness(sandbox: Sandbox, core: k8s.CoreV1Api, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(sandbox, core, tmp_path)
    harness.strip_annotations()  # every test starts from Nodes without nodewatch annotations
    yield harness
    harness.close()


def _assert_identity(recorded: dict[str, str], node: SpotNode, mock: MetadataMock) -> None:
    """Instance id and zone on the Node are AEMM's, and they are the ones in the Node's providerID."""
    assert _imds_get(mock.url, "/latest/meta-data/instance-id") == (200, node.instance_id)
    assert _imds_get(mock.url, "/latest/meta-data/placement/availability-zone") == (200, node.zone)
    assert recorded[contract.INSTANCE_ID] == node.instance_id
    assert recorded[contract.AVAILABILITY_ZONE] == node.zone


def test_rebalance_recommendation_is_annotated_on_its_own_node_and_no_other(
    harness: Harness, core: k8s.CoreV1Api
) -> None:
    target, *others = harness.spot_nodes(3)
    earliest = _whole_second(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3))
    target_mock = harness.mock(target, NoticeSchedule(rebalance_in=3))
    quiet = [(node, harness.nodewatch(node, harness.mock(node))) for node in others]
    harness.nodewatch(target, target_mock)

    recorded = harness.annotated(target, contract.REBALANCE_NOTICE_TIME)
    for _node, process in quiet:
        harness.more_good_polls(process)
    observed = dt.datetime.now(dt.UTC)

    notice = contract.parse(recorded)
    assert notice.rebalance is not None and notice.interruption is None
    assert earliest <= notice.rebalance.notice_time <= observed, "AEMM serves the notice from its trigger time on"
    assert notice.rebalance.first_seen is not None and earliest <= notice.rebalance.first_seen <= observed
    assert notice.rebalance.cleared is None
    _assert_identity(recorded, target, target_mock)
    for node in core.list_node().items:
        if node.metadata.name != target.name:
            own = {k: v for k, v in (node.metadata.annotations or {}).items() if k in contract.NODEWATCH_KEYS}
            assert own == {}, f"node {node.metadata.name} carries nodewatch annotations it has no notice for"


@pytest.mark.parametrize("action", ["terminate", "stop"])
def test_interruption_notice_is_annotated_with_action_and_time(harness: Harness, action: str) -> None:
    (target,) = harness.spot_nodes(1)
    earliest = _whole_second(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2))
    mock = harness.mock(target, NoticeSchedule(interruption_in=2, interruption_action=action))
    harness.nodewatch(target, mock)

    recorded = harness.annotated(target, contract.INTERRUPTION_ACTION)
    observed = dt.datetime.now(dt.UTC)

    notice = contract.parse(recorded)
    assert notice.interruption is not None and notice.rebalance is None
    assert notice.interruption.action == action
    assert earliest + AEMM_INTERRUPTION_LEAD <= notice.interruption.time <= observed + AEMM_INTERRUPTION_LEAD
    assert notice.interruption.first_seen is not None and earliest <= notice.interruption.first_seen <= observed
    _assert_identity(recorded, target, mock)


def test_imdsv2_only_metadata_service_is_read_with_tokens(harness: Harness) -> None:
    (target,) = harness.spot_nodes(1)
    mock = harness.mock(target, NoticeSchedule(rebalance_in=1), imdsv2_only=True)
    assert _imds_get(mock.url, "/latest/meta-data/instance-id", token=False)[0] == 401, "AEMM is IMDSv2-only"
    process = harness.nodewatch(target, mock)

    recorded = harness.annotated(target, contract.REBALANCE_NOTICE_TIME)

    _assert_identity(recorded, target, mock)
    assert process.polls("error") == 0, "no read failed: nodewatch asks for a token before every session"


def test_readyz_follows_the_metadata_service(harness: Harness) -> None:
    (target,) = harness.spot_nodes(1)
    mock = harness.mock(target)
    mock.stop()  # nodewatch starts while IMDS does not answer
    process = harness.nodewatch(target, mock, "--unready-after=3", "--max-backoff=2")

    status, why = process.get("/readyz")
    assert (status, why.startswith("no successful IMDS poll yet")) == (503, True)

    harness.mock(target)  # the same port again
    harness.eventually("/readyz ready after the first good poll", process.ready)
    assert process.get("/readyz") == (200, "ready\n")

    mock.stop()
    harness.eventually("/readyz not ready while the metadata service is down", lambda: not process.ready())
    status, why = process.get("/readyz")
    assert status == 503 and why.startswith("no successful IMDS poll for"), why
    assert process.get("/healthz")[0] == 200, "an IMDS outage is not a reason to restart nodewatch"

    harness.mock(target)
    harness.eventually("/readyz ready again once the metadata service answers", process.ready)
    assert process.polls("ok") >= 2


def test_on_an_on_demand_instance_nodewatch_idles_ready_and_writes_nothing(harness: Harness) -> None:
    """AEMM answers instance-life-cycle=on-demand (as IMDS does on an on-demand instance, even one that got a
    notice scheduled here): nodewatch is Ready, says it idles on /readyz, and never annotates its Node."""
    (node,) = harness.spot_nodes(1)
    mock = harness.mock(node, NoticeSchedule(rebalance_in=0), life_cycle="on-demand")
    assert _imds_get(mock.url, "/latest/meta-data/instance-life-cycle") == (200, "on-demand")
    process = harness.nodewatch(node, mock)

    harness.eventually("nodewatch to idle", lambda: process.metric("spotguard_nodewatch_idle") == 1)
    status, why = process.get("/readyz")
    assert status == 200 and why.startswith("idle: this is an on-demand instance"), why
    assert process.get("/healthz")[0] == 200
    time.sleep(3 * POLL_INTERVAL)  # the rebalance recommendation is there to be read: it must stay unread
    assert _own_annotations(harness.core, node.name) == {}
    assert process.polls() == 1  # the one poll that read the life cycle
    assert "idle: this is an on-demand instance" in process.log_tail()


def _node_state(node: k8s.V1Node) -> dict[str, Any]:
    """Everything of a Node that is not status and not nodewatch's own annotations."""
    annotations = node.metadata.annotations or {}
    return {
        "labels": node.metadata.labels or {},
        "annotations": {k: v for k, v in annotations.items() if k not in contract.NODEWATCH_KEYS},
        "spec": node.spec.to_dict(),
    }


def _nodewatch_fields(node: k8s.V1Node) -> list[dict[str, Any]]:
    """The managedFields entries of nodewatch's writes (fieldsV1 of each)."""
    return [
        entry.fields_v1 for entry in node.metadata.managed_fields or [] if entry.manager.startswith(NODEWATCH_MANAGER)
    ]


def test_nodewatch_changes_nothing_but_its_own_annotations(harness: Harness, core: k8s.CoreV1Api) -> None:
    (target,) = harness.spot_nodes(1)
    before = {node.metadata.name: _node_state(node) for node in core.list_node().items}
    mock = harness.mock(target, NoticeSchedule(rebalance_in=1, interruption_in=2))
    process = harness.nodewatch(target, mock)

    harness.annotated(target, contract.REBALANCE_NOTICE_TIME)
    harness.annotated(target, contract.INTERRUPTION_ACTION)
    harness.more_good_polls(process)
    nodes = core.list_node().items

    assert {node.metadata.name: _node_state(node) for node in nodes} == before
    own_keys = {"f:" + key for key in contract.NODEWATCH_KEYS}
    for node in nodes:
        written = _nodewatch_fields(node)
        if node.metadata.name != target.name:
            assert written == [], f"nodewatch of {target.name} wrote to node {node.metadata.name}"
            continue
        assert written, "the API server records nodewatch's writes under its User-Agent"
        for fields in written:
            assert set(fields) == {"f:metadata"}
            assert set(fields["f:metadata"]) == {"f:annotations"}
            assert set(fields["f:metadata"]["f:annotations"]) <= own_keys
    assert process.stop() == 0, "nodewatch stops cleanly on SIGTERM"
