"""``spotguard demo``: a fallback's whole life, end to end, on the local sandbox, in about a minute and a half.

A spot node gets a rebalance recommendation through the EC2 metadata mock (AEMM); nodewatch annotates its
Node; the controller (a real ``spotguard run`` process holding the Lease) scales the spot ASG up; spot capacity
is short, so the launch fails with InsufficientInstanceCapacity; the controller falls back to on-demand, records
a SpotGuardFallbackEvent (SGFE) and retires the old node. Then spot capacity comes back: the SGFE moves from
Pending to Monitoring, the controller scales spot back up, waits for it to stay healthy, runs its safety checks,
drains the on-demand node and terminates exactly that instance; the SGFE ends Completed. Durations are
compressed (``DEMO_ENV``); the timeline is printed as it happens, then ``kubectl get sgfe -n kube-system``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SPOT = "spotguard-spot-1"
ON_DEMAND = "spotguard-ondemand-1"
SGFE_PATH = "/apis/aws.amazon.com/v1/namespaces/kube-system/spotguardfallbackevents"
# The seed's durations compressed to seconds, so the whole life takes about a minute.
DEMO_ENV = {
    "SPOT_ASG_NAME": SPOT,
    "ON_DEMAND_ASG_NAME": ON_DEMAND,
    "SPOT_GUARD_CAPACITY_CHECK_TIMEOUT": "30",
    "SPOT_GUARD_CAPACITY_POLL_INTERVAL": "1",
    "SPOT_GUARD_DRAIN_TIMEOUT": "30",
    "SPOT_GUARD_MINIMUM_WAIT_DURATION": "5s",  # the seed's 10m
    "SPOT_GUARD_STABILITY_WINDOW": "3s",  # 2m
    "SPOT_GUARD_LIFECYCLE_POLL_INTERVAL": "0.5",
    "SPOT_GUARD_SAFETY_RETRY_INTERVAL": "1",
    "SPOT_GUARD_MONITORING_BACKOFF_INITIAL": "1",
    "SPOT_GUARD_MONITORING_BACKOFF_MAX": "2",
    "SPOT_GUARD_SCALE_DOWN_TAKEOVER": "2",
    "SPOT_GUARD_COMPLETED_TTL": "10m",
    "LOG_LEVEL": "info",
    "SPOT_GUARD_METRICS_HOST": "127.0.0.1",
    "SPOT_GUARD_METRICS_PORT": "0",
}
#: How long the timeline holds a scale-down phase back for the safety checks' Events (see _Story).
SAFETY_WAIT = 2.0
#: The SGFE's phases on the way back to spot, in order (the CRD's status.phase).
SGFE_PHASES = ("Pending", "Monitoring", "ReadyForScaleDown", "ScalingDown", "Completed")


@dataclasses.dataclass
class Timeline:
    """Prints each step once, with the time since the demo's start."""

    echo: Callable[[str], None]
    started: float = dataclasses.field(default_factory=time.monotonic)
    seen: set[str] = dataclasses.field(default_factory=set)

    def step(self, key: str, text: str) -> None:
        if key in self.seen:
            return
        self.seen.add(key)
        self.echo(f"  T+{time.monotonic() - self.started:5.1f}s  {text}")


def run_demo(echo: Callable[[str], None], timeout: float = 150.0) -> int:
    """Run the demo; returns 0 when the fallback's SGFE reached Completed as designed, 1 otherwise."""
    began = time.monotonic()
    from sandbox.aws.client import SandboxAWSClient
    from sandbox.environment import Sandbox
    from sandbox.imds import NoticeSchedule

    echo(
        "Starting the sandbox: Kubernetes (etcd, kube-apiserver, controller-manager, scheduler, kwok), "
        "moto AWS with a spot and an on-demand ASG..."
    )
    with Sandbox(pairs=1, spot_desired=3) as sb:
        sim = SandboxAWSClient(sb.aws_endpoint)
        env = {**os.environ, **sb.env(), **DEMO_ENV}
        logs = sb.workdir / "demo-logs"
        logs.mkdir(exist_ok=True)
        nodes = _nodes(sb)
        victim = nodes[0]
        name = victim["metadata"]["name"]
        provider = victim["spec"]["providerID"]
        instance, zone = provider.rsplit("/", 1)[-1], provider.rsplit("/", 2)[-2]
        echo(f"Sandbox ready: 3 spot nodes in {SPOT}, 0 in {ON_DEMAND}. Spot capacity is now SHORT.")
        sim.set_capacity(SPOT, capacity_short=True, retry_seconds=2)

        mock = sb.metadata_mock(instance, zone, NoticeSchedule(rebalance_in=4))
        children = [
            _spawn([sys.executable, "-m", "controller.app.cli", "run"], env, logs / "controller.log"),
            _spawn(
                [
                    sys.executable,
                    "-m",
                    "nodewatch",
                    f"--node-name={name}",
                    f"--imds-url={mock.url}",
                    f"--kubeconfig={sb.kubeconfig}",
                    "--poll-interval=1",
                    "--listen=127.0.0.1:0",
                ],
                env,
                logs / "nodewatch.log",
            ),
        ]
        timeline = Timeline(echo)
        echo(f"Timeline (rebalance recommendation for {name} / {instance} scheduled in AEMM):")
        try:
            ok = _watch(sb, sim, timeline, name=name, instance=instance, timeout=timeout)
        finally:
            for child in children:
                child.terminate()
            for child in children:
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.kill()
        echo("")
        echo("$ kubectl get sgfe -n kube-system")
        echo(sb.kubectl("get", "sgfe", "-n", "kube-system").stdout.rstrip())
        if not ok:
            echo(f"The demo did not complete within {timeout:.0f}s; logs: {logs}")
            return 1
        echo(f"\nA fallback's whole life, spot short to Completed, in {time.monotonic() - began:.0f} s.")
        return 0


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(argv, env=env, stdout=handle, stderr=handle, stdin=subprocess.DEVNULL)


def _nodes(sb: Any) -> list[dict[str, Any]]:
    items = json.loads(sb.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    return sorted(items, key=lambda n: n["metadata"]["name"])


class _Watch:
    """Follows objects through a watch, so that every write is seen, however fast (a list could miss a phase
    that lasted a few milliseconds)."""

    def __init__(self, kube: Any, path: str, query: dict[str, str | int]) -> None:
        self.kube = kube
        self.path = path
        self.query = {**query, "timeoutSeconds": 300}
        self.versions: list[dict[str, Any]] = []
        self.deleted = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for event in self.kube.stream(self.path, self.query, timeout=310):
                    if event.get("type") == "DELETED":
                        self.deleted = True
                        return
                    self.versions.append(event.get("object", {}))
            except Exception:  # the demo keeps watching through hiccups
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()


class _NodeWatch(_Watch):
    """One Node's versions, until it is deleted."""

    def __init__(self, kube: Any, name: str) -> None:
        self.name = name
        super().__init__(kube, "/api/v1/nodes", {"fieldSelector": f"metadata.name={name}"})


def _watch(sb: Any, sim: Any, timeline: Timeline, *, name: str, instance: str, timeout: float) -> bool:
    """Follow the story until the SGFE is Completed (True) or ``timeout`` passes (False)."""
    from controller.adapters.kube import Kube, api_client

    kube = Kube(api_client(str(sb.kubeconfig)))
    story = _Story(kube, sim, timeline, name=name, instance=instance)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if story.step():
                return True
            time.sleep(0.05)
        return False
    finally:
        story.stop()


class _Story:
    """What the demo prints, from four places: the recommended Node (a watch), AWS (the simulator's groups,
    scaling activities and calls), the SGFE and its Events, and the on-demand Node (a watch, once it is known)."""

    def __init__(self, kube: Any, sim: Any, timeline: Timeline, *, name: str, instance: str) -> None:
        self.kube = kube
        self.sim = sim
        self.timeline = timeline
        self.name = name
        self.instance = instance
        self.watch = _NodeWatch(kube, name)
        self.on_demand_watch: _NodeWatch | None = None
        self.sgfe_watch = _Watch(kube, SGFE_PATH, {})
        self.sgfe_handled = 0
        self.handled = 0
        self.on_demand_handled = 0
        self.desired = {g["name"]: g["desired_capacity"] for g in sim.state()["groups"]}
        self.sgfe: dict[str, Any] | None = None
        self.spot_restored = False
        self.phase_messages: set[str] = set()
        self.phase_first_seen: dict[str, float] = {}
        self.safety_shown = False
        self.holding = False

    def stop(self) -> None:
        self.watch.stop()
        self.sgfe_watch.stop()
        if self.on_demand_watch is not None:
            self.on_demand_watch.stop()

    def step(self) -> bool:
        """Print what happened since the last call; True once the SGFE is Completed."""
        self._recommended_node()
        self.holding = False
        self._fallback_event()
        if not self.holding:  # a scale-down phase waits for its safety checks: what follows it waits too
            self._on_demand_node()  # its cordon before AWS's termination, as they happen
            self._aws()
        if self.watch.deleted and self.sgfe is not None and not self.spot_restored:
            self.spot_restored = True
            self.sim.set_capacity(SPOT, capacity_short=False)
            self.timeline.step("spot-back", f"Spot capacity is BACK: {SPOT}'s spot pools have room again")
        phase = ((self.sgfe or {}).get("status") or {}).get("phase")
        return bool(phase == "Completed")

    def _recommended_node(self) -> None:
        for node in self.watch.versions[self.handled :]:
            self.handled += 1
            annotations = node.get("metadata", {}).get("annotations") or {}
            if "spotguard.io/rebalance-notice-time" in annotations:
                self.timeline.step(
                    "annotated",
                    f"nodewatch saw the rebalance recommendation in IMDS and annotated {self.name} "
                    f"(noticeTime {annotations['spotguard.io/rebalance-notice-time']})",
                )
            record = json.loads(annotations.get("spotguard.io/replacement", "{}") or "{}")
            if record.get("phase"):
                self.timeline.step(
                    f"phase:{record['phase']}", f"controller: {self.name} is {record['phase']}{_detail(record)}"
                )
            if node.get("spec", {}).get("unschedulable"):
                self.timeline.step("cordoned", f"controller: {self.name} tainted NoSchedule and cordoned; draining it")
        if self.watch.deleted and self.sgfe is not None:
            self.timeline.step(
                "retired", f"old spot node {self.name} drained; instance {self.instance} terminated with decrement"
            )

    def _aws(self) -> None:
        for group in self.sim.state()["groups"]:
            now = group["desired_capacity"]
            if now != self.desired[group["name"]]:
                states = ", ".join(i["lifecycle_state"] for i in group["instances"]) or "no instances"
                self.timeline.step(
                    f"desired:{group['name']}:{self.desired[group['name']]}->{now}",
                    f"AWS: {group['name']} desired {self.desired[group['name']]} -> {now} ({states})",
                )
                self.desired[group["name"]] = now
        for activity in self.sim.activities(SPOT):
            if activity["status_code"] == "Failed":
                self.timeline.step("failed-activity", f"AWS: spot launch failed: {activity['status_message']}")
        if self.sgfe is None:
            return
        on_demand_instance = self.sgfe["spec"].get("onDemandInstanceID")
        for call in self.sim.calls("TerminateInstanceInAutoScalingGroup", ON_DEMAND):
            if call["error_code"] is not None:
                continue
            terminated = call["params"].get("InstanceId")
            which = (
                "exactly the SGFE's on-demand instance"
                if terminated == on_demand_instance
                else f"NOT the SGFE's on-demand instance {on_demand_instance}"
            )
            self.timeline.step(
                f"terminate:{terminated}",
                f"AWS: TerminateInstanceInAutoScalingGroup {terminated} in {ON_DEMAND}, decrementing desired ({which})",
            )

    def _fallback_event(self) -> None:
        while self.sgfe_handled < len(self.sgfe_watch.versions):
            event = self.sgfe_watch.versions[self.sgfe_handled]
            name = event["metadata"]["name"]
            spec = event["spec"]
            self.timeline.step(
                f"sgfe:{name}",
                f"SpotGuardFallbackEvent {name} created for on-demand node {spec['onDemandNodeName']} "
                f"({spec.get('onDemandInstanceID', '?')})",
            )
            self.sgfe = event
            status = event.get("status") or {}
            phase, message = status.get("phase"), status.get("message", "")
            self.phase_messages.add(message)
            if self.on_demand_watch is None and spec.get("onDemandNodeName"):
                self.on_demand_watch = _NodeWatch(self.kube, spec["onDemandNodeName"])
            if phase in ("ScalingDown", "Completed"):
                self._sgfe_events(name)  # what led here first: the safety checks, the drain, the termination
                if not self._phase_may_show(phase):
                    self.holding = True
                    return  # this version again next time
                self.timeline.step(f"sgfe-phase:{phase}", f"SGFE {name} is {phase}: {message}")
            else:
                if phase:
                    self.timeline.step(f"sgfe-phase:{phase}", f"SGFE {name} is {phase}: {message}")
                self._sgfe_events(name)
            self.sgfe_handled += 1
            if phase == "ScalingDown":
                return  # the drain and the termination it starts show before the next version (Completed)

    def _phase_may_show(self, phase: str) -> bool:
        """Scale-down phases wait (up to SAFETY_WAIT) for the Events of the safety checks, which the controller
        writes from another thread, in order, ScaleDownInitiated last: the checks show before the scale-down."""
        if self.safety_shown:
            return True
        first_seen = self.phase_first_seen.setdefault(phase, time.monotonic())
        return time.monotonic() - first_seen > SAFETY_WAIT

    def _sgfe_events(self, name: str) -> None:
        """The controller's Events about the SGFE (kubectl describe sgfe): the safety checks among them."""
        query = {"fieldSelector": f"involvedObject.name={name},involvedObject.kind=SpotGuardFallbackEvent"}
        events = self.kube.request("GET", "/api/v1/namespaces/kube-system/events", query).get("items", [])
        for event in sorted(events, key=lambda e: e.get("firstTimestamp") or e["metadata"]["creationTimestamp"]):
            message, reason = event.get("message", ""), event.get("reason", "")
            self.safety_shown = self.safety_shown or reason == "ScaleDownInitiated"
            if message in self.phase_messages:
                continue  # the phase's own line said it
            self.timeline.step(f"event:{reason}:{message}", f"controller event {reason}: {message}")

    def _on_demand_node(self) -> None:
        watch = self.on_demand_watch
        if watch is None:
            return
        for node in watch.versions[self.on_demand_handled :]:
            self.on_demand_handled += 1
            if node.get("spec", {}).get("unschedulable"):
                self.timeline.step(
                    "od-cordoned", f"controller: on-demand node {watch.name} cordoned; draining it (Eviction API)"
                )
        if watch.deleted:
            self.timeline.step("od-gone", f"on-demand node {watch.name} is gone with its instance")


def _detail(record: dict[str, Any]) -> str:
    phase = record.get("phase")
    if phase in {"SpotReady", "OnDemandReady"}:
        return f" (replacement {record.get('replacementInstance')} on node {record.get('replacementNode')} is Ready)"
    if phase == "SpotWithdrawing":
        return f": falling back to on-demand ({record.get('fallbackReason', '')[:70]}...)"
    if phase == "SpotRequested":
        return f": asking AWS for spot desired {record.get('spotTarget')} (intent recorded first)"
    if phase == "SpotScaledUp":
        return f": waiting until {record.get('deadlineAt')} for an InService instance and a Ready Node"
    if phase == "OnDemandRequested":
        return f": asking AWS for on-demand desired {record.get('onDemandTarget')}"
    if phase == "Retiring":
        return ": draining the old node, then terminating exactly its instance"
    return ""
