"""20 overlapping rebalance recommendations in one spot group, with retirements, a fallback and a lifecycle return
running at once; every invariant holds. On the sandbox (real API server, kwok kubelets, simulated Auto Scaling),
with the real controller process (replacement and SGFE lifecycle controllers, durations compressed to seconds).

The spot group is grown to 22 nodes; 20 of them get a rebalance recommendation, in four waves that overlap:

* wave A (8 nodes): spot replacements; once they are Ready, A's old nodes retire while...
* wave B (2 nodes) arrives with spot short: B's batch falls back to on-demand and gets one SGFE per node;
* wave C (6 nodes) arrives the moment B's spot claim is given back and spot is back, while B's on-demand check runs;
* wave D (4 nodes) arrives the moment an SGFE starts its return to spot, so D's scale-up, retirements and the
  lifecycle's return and scale-down of the on-demand nodes run at once.

Then, once everything settled: every recommended instance terminated exactly once (with decrement), nothing else
terminated but the on-demand stand-ins, both groups back to their sizes, no outside capacity change counted, every
SGFE Completed, no node left cordoned, tainted or with an unfinished replacement record, and only wave B fell back.
"""

from __future__ import annotations

import collections
import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from prometheus_client.parser import text_string_to_metric_families

from controller.adapters.kube import Kube
from controller.model.record import ANNOTATION as RECORD_ANNOTATION
from controller.model.record import FINALIZER
from controller.model.record import Phase as RecordPhase
from controller.model.sgfe import GROUP, PLURAL, VERSION
from controller.model.sgfe import Phase as SgfePhase
from sandbox.aws.client import SandboxAWSClient
from sandbox.environment import Sandbox
from sandbox.processes import free_port
from tests.integration.controller_process import (
    ASG_LABEL,
    ON_DEMAND_ASG,
    SPOT_ASG,
    ControllerLauncher,
    ControllerProcess,
    SpotNode,
    annotate_rebalance,
    controller_env,
    spot_nodes,
)
from tests.integration.lifecycle_harness import SgfeWatch, spot_guard_marks
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(300)

SPOT_SIZE = 22  # the spot group's size for the scenario (the sandbox starts it at 3)
SPOT_MAX = 40  # room for every wave's scale-up and the returns at once
WAVES = {"A": 8, "B": 2, "C": 6, "D": 4}  # 20 recommendations; B arrives while spot is short
SETTLE_TIMEOUT = 150.0
ON_DEMAND_PHASES = frozenset(
    {RecordPhase.ON_DEMAND_REQUESTED, RecordPhase.ON_DEMAND_SCALED_UP, RecordPhase.ON_DEMAND_READY}
)
#: The seed's timeline with seconds for minutes (as lifecycle_harness.compressed), in the process's environment.
COMPRESSED = {
    "SPOT_GUARD_MINIMUM_WAIT_DURATION": "2",
    "SPOT_GUARD_STABILITY_WINDOW": "3",
    "SPOT_GUARD_LIFECYCLE_POLL_INTERVAL": "0.5",
    "SPOT_GUARD_CAPACITY_POLL_INTERVAL": "0.5",
    "SPOT_GUARD_CAPACITY_CHECK_TIMEOUT": "30",
    "SPOT_GUARD_DRAIN_TIMEOUT": "30",
    "SPOT_GUARD_SAFETY_RETRY_INTERVAL": "1",
    "SPOT_GUARD_COMPLETED_TTL": "600",  # Completed SGFEs stay for the assertions (the namespace goes afterwards)
    "SPOT_GUARD_MONITORING_BACKOFF_INITIAL": "1",
    "SPOT_GUARD_MONITORING_BACKOFF_MAX": "2",
    "SPOT_GUARD_SCALE_DOWN_TAKEOVER": "10",
    "SPOT_GUARD_BATCH_WINDOW": "0.5",  # each wave's annotations (written back to back) make one batch
}


@pytest.fixture
def launcher(
    sandbox: Sandbox, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api, namespace: str, tmp_path: Path
) -> Iterator[ControllerLauncher]:
    # Depends on aws_sim and namespace, so the controller is gone before the groups are reset and the SGFEs deleted.
    with ControllerLauncher(controller_env(sandbox.env()), tmp_path, core=core) as launcher:
        yield launcher


class RecordWatch:
    """Every replacement record version the API server sent for the recommended Nodes (a watch: none missed),
    so a node's phases and replacement capacity are known even after the Node is gone."""

    def __init__(self, core: k8s.CoreV1Api, names: set[str]) -> None:
        self.core = core
        self.names = names
        self.phases: dict[str, list[str]] = collections.defaultdict(list)
        self.capacity: dict[str, str] = {}
        self.deleted: set[str] = set()
        self.error = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        listed = core.list_node(label_selector=ASG_LABEL)
        self._rv = listed.metadata.resource_version
        for node in listed.items:
            self._see(node, "ADDED")
        self._thread = threading.Thread(target=self._run, name="record-watch", daemon=True)

    def __enter__(self) -> RecordWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for event in k8s_watch.Watch().stream(
                    self.core.list_node,
                    label_selector=ASG_LABEL,
                    resource_version=self._rv,
                    timeout_seconds=2,
                    allow_watch_bookmarks=False,
                ):
                    node = event["object"]
                    self._rv = node.metadata.resource_version
                    self._see(node, str(event["type"]))
            except Exception as exc:  # the test's own watch: resume from the last version seen
                if self._stop.is_set():
                    return
                if "410" in str(exc):
                    self.error = f"the test's Node watch expired ({exc}): records may have been missed"
                    return
                time.sleep(0.1)

    def _see(self, node: Any, kind: str) -> None:
        name = node.metadata.name
        if name not in self.names:
            return
        with self._lock:
            if kind == "DELETED":
                self.deleted.add(name)
            raw = (node.metadata.annotations or {}).get(RECORD_ANNOTATION)
            if raw is None:
                return
            record = json.loads(raw)
            phase = str(record.get("phase"))
            if not self.phases[name] or self.phases[name][-1] != phase:
                self.phases[name].append(phase)
            if record.get("replacementCapacity"):
                self.capacity[name] = str(record["replacementCapacity"])

    def phase(self, name: str) -> str:
        with self._lock:
            return self.phases[name][-1] if self.phases.get(name) else ""

    def summary(self, names: list[str]) -> str:
        with self._lock:
            return "\n".join(
                f"  {n}: {' > '.join(self.phases.get(n, [])) or '(no record)'}"
                f"{' [deleted]' if n in self.deleted else ''} capacity={self.capacity.get(n, '?')}"
                for n in names
            )


def _sgfes(custom: k8s.CustomObjectsApi, namespace: str) -> list[dict[str, Any]]:
    return list(custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"])


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def _metric_sum(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and all(dict(sample_labels).get(k) == v for k, v in labels.items())
    )


def test_twenty_overlapping_recommendations_with_a_fallback_and_a_return_keep_every_invariant(
    launcher: ControllerLauncher,
    aws_sim: SandboxAWSClient,
    autoscaling: Any,
    core: k8s.CoreV1Api,
    namespace: str,
) -> None:
    kube = Kube(core.api_client)
    custom = k8s.CustomObjectsApi(core.api_client)

    # -- the group: 22 spot nodes, all Ready; on-demand as the sandbox has it ---------------------------------
    aws_sim.set_capacity(SPOT_ASG, pending_seconds=1, retry_seconds=1, capacity_short=False)
    aws_sim.set_capacity(ON_DEMAND_ASG, pending_seconds=2, retry_seconds=1, capacity_short=False)
    autoscaling.update_auto_scaling_group(AutoScalingGroupName=SPOT_ASG, MaxSize=SPOT_MAX)
    autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT_ASG, DesiredCapacity=SPOT_SIZE, HonorCooldown=False)
    aws_sim.wait_for_instances(SPOT_ASG, "InService", SPOT_SIZE, timeout_seconds=60)
    wait_until(lambda: len(spot_nodes(core)) == SPOT_SIZE, 60, f"{SPOT_SIZE} spot Nodes Ready", interval=0.2)
    nodes = spot_nodes(core)
    spot_before = {i["instance_id"] for i in aws_sim.instances(SPOT_ASG)}
    assert {n.instance_id for n in nodes} == spot_before
    assert aws_sim.group(SPOT_ASG)["desired_capacity"] == SPOT_SIZE
    od_start = aws_sim.group(ON_DEMAND_ASG)["desired_capacity"]
    od_before = {i["instance_id"] for i in aws_sim.instances(ON_DEMAND_ASG)}
    assert len(od_before) == od_start

    waves: dict[str, list[SpotNode]] = {}
    start = 0
    for wave, size in WAVES.items():
        waves[wave] = nodes[start : start + size]
        start += size
    survivors = nodes[start:]
    recommended = [n for wave in waves.values() for n in wave]
    names = [n.name for n in recommended]
    recommended_ids = {n.instance_id for n in recommended}
    assert len(recommended) == 20 and len(survivors) == SPOT_SIZE - 20

    # -- the controller ----------------------------------------------------------------------------------------
    aws_sim.reset_calls()
    port = free_port()
    controller = launcher.start(
        "overlap", SPOT_GUARD_NAMESPACE=namespace, SPOT_GUARD_METRICS_PORT=str(port), **COMPRESSED
    )
    controller.wait_for_log(f"watching {SPOT_SIZE} nodes", timeout=30)

    timeline: list[str] = []
    began = time.monotonic()

    def note(text: str) -> None:
        timeline.append(f"{time.monotonic() - began:6.1f}s {text}")

    with RecordWatch(core, set(names)) as records, SgfeWatch(kube, namespace) as sgfe_watch:

        def state() -> str:
            spot, od = aws_sim.group(SPOT_ASG), aws_sim.group(ON_DEMAND_ASG)
            lines = ["timeline:", *timeline]
            for group in (spot, od):
                states = collections.Counter(i["lifecycle_state"] for i in group["instances"])
                lines.append(f"{group['name']}: desired {group['desired_capacity']}, instances {dict(states)}")
            for event in _sgfes(custom, namespace):
                status = event.get("status") or {}
                lines.append(
                    f"SGFE {event['metadata']['name']} ({event['spec']['onDemandInstanceID']}): "
                    f"{' > '.join(sgfe_watch.phases(event['metadata']['name']))}: {status.get('message')}"
                )
            lines.append("replacement records:")
            lines.append(records.summary(names))
            lines.append("controller log (tail):")
            lines.append(controller.log_tail(60))
            return "\n".join(lines)

        def wait(condition: Callable[[], object], timeout: float, what: str) -> None:
            try:
                wait_until(condition, timeout, what, interval=0.1)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{state()}") from None

        def recommend(wave: str) -> None:
            for node in waves[wave]:
                annotate_rebalance(core, node)
            note(f"wave {wave} recommended: {[n.name for n in waves[wave]]}")

        def phases_of(wave: str) -> list[str]:
            return [records.phase(n.name) or "-" for n in waves[wave]]

        # Wave A: spot replacements. Once they are Ready, A's old nodes retire (drain, terminate)...
        recommend("A")
        wait(
            lambda: all(n.name in records.capacity or n.name in records.deleted for n in waves["A"]),
            45,
            "wave A's spot replacements InService with Ready Nodes",
        )
        # ...while wave B arrives with spot short: B's capacity check finds the Failed activity and falls back.
        aws_sim.set_capacity(SPOT_ASG, capacity_short=True)
        note(f"spot short; wave A phases {phases_of('A')}")
        recommend("B")
        wait(
            lambda: all(
                records.phase(n.name) in ON_DEMAND_PHASES or records.capacity.get(n.name) == "on-demand"
                for n in waves["B"]
            ),
            45,
            "wave B's spot claim given back and on-demand asked for",
        )
        # Spot is back, and wave C arrives while B's on-demand capacity check (and A's retirements) run.
        aws_sim.set_capacity(SPOT_ASG, capacity_short=False)
        note(f"spot back; wave A phases {phases_of('A')}, wave B phases {phases_of('B')}")
        recommend("C")

        # Wave D arrives the moment an SGFE starts its return to spot.
        def returning() -> bool:
            for event in _sgfes(custom, namespace):
                status = event.get("status") or {}
                if "returning to spot" in str(status.get("message")) or status.get("phase") in (
                    SgfePhase.READY_FOR_SCALE_DOWN,
                    SgfePhase.SCALING_DOWN,
                    SgfePhase.COMPLETED,
                ):
                    note(f"SGFE {event['metadata']['name']} {status.get('phase')}: {status.get('message')}")
                    return True
            return False

        wait(returning, 60, "an SGFE returning to spot")
        note(f"wave C phases {phases_of('C')}")
        recommend("D")

        # -- everything settles ----------------------------------------------------------------------------------
        def settled() -> bool:
            spot, od = aws_sim.group(SPOT_ASG), aws_sim.group(ON_DEMAND_ASG)
            if spot["desired_capacity"] != SPOT_SIZE or len(spot["instances"]) != SPOT_SIZE:
                return False
            if any(i["lifecycle_state"] != "InService" for i in spot["instances"]):
                return False
            if od["desired_capacity"] != od_start or len(od["instances"]) != od_start:
                return False
            events = _sgfes(custom, namespace)
            if len(events) != WAVES["B"] or any(
                (e.get("status") or {}).get("phase") != SgfePhase.COMPLETED for e in events
            ):
                return False
            present = {n.metadata.name for n in core.list_node(label_selector=ASG_LABEL).items}
            return not present & set(names) and len(spot_nodes(core)) == SPOT_SIZE

        wait(settled, SETTLE_TIMEOUT, "every replacement and every SGFE to settle")
        note("settled")
        time.sleep(1)  # a wrong implementation's late change would show now

    print("\n".join(timeline))  # shown with -s or on failure: how the waves overlapped
    _assert_outcomes(
        aws_sim=aws_sim,
        core=core,
        kube=kube,
        custom=custom,
        namespace=namespace,
        controller=controller,
        port=port,
        waves=waves,
        survivors=survivors,
        recommended_ids=recommended_ids,
        spot_before=spot_before,
        od_before=od_before,
        od_start=od_start,
        records=records,
        state=state,
    )


def _assert_outcomes(
    *,
    aws_sim: SandboxAWSClient,
    core: k8s.CoreV1Api,
    kube: Kube,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    controller: ControllerProcess,
    port: int,
    waves: dict[str, list[SpotNode]],
    survivors: list[SpotNode],
    recommended_ids: set[str],
    spot_before: set[str],
    od_before: set[str],
    od_start: int,
    records: RecordWatch,
    state: Callable[[], str],
) -> None:
    recommended = [n for wave in waves.values() for n in wave]
    assert not records.error, records.error

    # Every recommended node retired: its Node gone after Spot Guard began retiring it, its instance gone. (The
    # Retired record may never be stored: the write that takes the finalizer off a Node being deleted deletes it,
    # and the API server then sends the Node as it was, Retiring.)
    present = {n.metadata.name for n in core.list_node().items}
    assert not present & {n.name for n in recommended}, state()
    retiring = {RecordPhase.RETIRING, RecordPhase.RETIRED}
    not_retired = [n.name for n in recommended if records.phase(n.name) not in retiring]
    assert not not_retired, f"Nodes gone without being retired by Spot Guard: {not_retired}\n{state()}"
    spot_now = {i["instance_id"] for i in aws_sim.instances(SPOT_ASG)}
    assert not spot_now & recommended_ids, state()
    assert {n.instance_id for n in survivors} <= spot_now, f"a spot instance nobody recommended is gone\n{state()}"

    # Terminations: each recommended instance and each on-demand stand-in exactly once, nothing else, all with
    # ShouldDecrementDesiredCapacity=True.
    events = _sgfes(custom, namespace)
    od_stand_ins = {e["spec"]["onDemandInstanceID"] for e in events}
    calls = aws_sim.calls("TerminateInstanceInAutoScalingGroup")
    terminated = collections.Counter(c["params"].get("InstanceId", "") for c in calls)
    described = "\n".join(
        f"  {c['params'].get('InstanceId')} decrement={c['params'].get('ShouldDecrementDesiredCapacity')} "
        f"http={c['http_status']} error={c['error_code']}"
        for c in calls
    )
    twice = {i: k for i, k in terminated.items() if k != 1}
    assert not twice, f"instances terminated more than once: {twice}\n{described}\n{state()}"
    missing = recommended_ids - set(terminated)
    assert not missing, f"recommended instances never terminated: {sorted(missing)}\n{state()}"
    unexpected = set(terminated) - recommended_ids - od_stand_ins
    assert not unexpected, (
        f"terminated instances that were neither recommended nor an on-demand stand-in: {sorted(unexpected)} "
        f"(of the nodes present before: {sorted(unexpected & (spot_before | od_before))})\n{described}\n{state()}"
    )
    assert od_stand_ins <= set(terminated), f"on-demand stand-ins not removed\n{described}\n{state()}"
    assert all(str(c["params"].get("ShouldDecrementDesiredCapacity", "")).lower() == "true" for c in calls), described
    assert all(c["http_status"] == 200 and not c["error_code"] for c in calls), described

    # Capacity: both groups back to their sizes, drift 0.
    spot, od = aws_sim.group(SPOT_ASG), aws_sim.group(ON_DEMAND_ASG)
    in_service = [i for i in spot["instances"] if i["lifecycle_state"] == "InService"]
    assert spot["desired_capacity"] == len(in_service) == SPOT_SIZE, state()
    assert od["desired_capacity"] == od_start and len(od["instances"]) == od_start, state()
    assert {i["instance_id"] for i in od["instances"]} == od_before, state()

    # Only wave B fell back: on-demand raised for B's nodes alone (never lowered: its stand-ins left by termination),
    # one SGFE per B node; every other wave got spot. (B's batch may fall back node by node: a member whose own
    # record is not written yet is checked on its own, so on-demand may be raised once per B node.)
    b_names = {n.name for n in waves["B"]}
    od_sizes = [int(c["params"]["DesiredCapacity"]) for c in aws_sim.calls("SetDesiredCapacity", ON_DEMAND_ASG)]
    assert od_sizes and od_sizes == sorted(set(od_sizes)), f"on-demand desired capacities set: {od_sizes}"
    assert od_sizes[0] > od_start and od_sizes[-1] == od_start + len(b_names), f"on-demand sizes set: {od_sizes}"
    assert len(events) == len(b_names) == len(od_stand_ins), state()
    capacities = {n.name: records.capacity.get(n.name, "") for n in recommended}
    expected = {n.name: "on-demand" if n.name in b_names else "spot" for n in recommended}
    assert capacities == expected, state()
    fell_back: set[str] = set()
    for match in re.finditer(r"falling back to on-demand for \[([^\]]*)\]", controller.log_text()):
        fell_back |= set(re.findall(r"[\w.-]+", match.group(1).replace("\\'", "'").replace("'", " ")))
    assert fell_back == b_names, f"nodes that fell back: {sorted(fell_back)}\n{state()}"

    # Every SGFE Completed; its on-demand node gone with its instance.
    for event in events:
        assert (event.get("status") or {}).get("phase") == SgfePhase.COMPLETED, event
    od_nodes = {n.metadata.name for n in core.list_node(label_selector=f"{ASG_LABEL}={ON_DEMAND_ASG}").items}
    assert not od_nodes & {e["spec"]["onDemandNodeName"] for e in events}, state()

    # No node left cordoned, tainted by Spot Guard, holding its finalizer or an unfinished replacement record.
    assert spot_guard_marks(kube) == [], state()
    for node in core.list_node().items:
        assert FINALIZER not in (node.metadata.finalizers or []), node.metadata.name
        raw = (node.metadata.annotations or {}).get(RECORD_ANNOTATION)
        if raw is not None:
            phase = json.loads(raw).get("phase")
            assert phase in RecordPhase.TERMINAL, f"{node.metadata.name} has a {phase} record\n{state()}"

    # The controller's own counters: B's fallbacks, every replacement Ready, and no outside capacity change seen
    # (every SetDesiredCapacity in this test was Spot Guard's own, so none may be reported as someone else's).
    assert controller.running, f"the controller exited with {controller.returncode}\n{state()}"
    samples = _metrics(port)
    assert _metric_sum(samples, "spotguard_fallbacks_total", spot_asg=SPOT_ASG) == len(b_names), state()
    ready_spot = _metric_sum(samples, "spotguard_replacement_ready_seconds_count", capacity_type="spot")
    ready_od = _metric_sum(samples, "spotguard_replacement_ready_seconds_count", capacity_type="on-demand")
    assert (ready_spot, ready_od) == (len(recommended) - len(b_names), len(b_names)), state()
    outside = {
        group: _metric_sum(samples, "spotguard_outside_capacity_changes_total", asg=group)
        for group in (SPOT_ASG, ON_DEMAND_ASG)
    }
    reported = [line for line in controller.log_text().splitlines() if "someone else changed it" in line]
    assert outside == {SPOT_ASG: 0, ON_DEMAND_ASG: 0}, (
        f"spotguard_outside_capacity_changes_total: {outside}; the controller logged:\n" + "\n".join(reported)
    )
