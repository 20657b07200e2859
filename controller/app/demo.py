"""``spotguard demo``: Spot Guard's main job, end to end, on the local sandbox, in about a minute.

A spot node gets a rebalance recommendation through the EC2 metadata mock (AEMM); nodewatch
annotates its Node; the controller (a real ``spotguard run`` process holding the Lease) scales the
spot ASG up; spot capacity is short, so the launch fails with InsufficientInstanceCapacity; the
controller falls back to on-demand, records a SpotGuardFallbackEvent and retires the old node.
The timeline is printed as it happens, then ``kubectl get sgfe -n kube-system``.
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
# Compressed durations so the demo finishes in about a minute.
DEMO_ENV = {
    "SPOT_ASG_NAME": SPOT,
    "ON_DEMAND_ASG_NAME": ON_DEMAND,
    "SPOT_GUARD_CAPACITY_CHECK_TIMEOUT": "30",
    "SPOT_GUARD_CAPACITY_POLL_INTERVAL": "1",
    "SPOT_GUARD_MINIMUM_WAIT_DURATION": "10m",
    "SPOT_GUARD_DRAIN_TIMEOUT": "30",
    "LOG_LEVEL": "info",
    "SPOT_GUARD_METRICS_HOST": "127.0.0.1",
    "SPOT_GUARD_METRICS_PORT": "0",
}


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


def run_demo(echo: Callable[[str], None], timeout: float = 120.0) -> int:
    """Run the demo; returns 0 when the fallback completed as designed, 1 otherwise."""
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
        return 0


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(argv, env=env, stdout=handle, stderr=handle, stdin=subprocess.DEVNULL)


def _nodes(sb: Any) -> list[dict[str, Any]]:
    items = json.loads(sb.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    return sorted(items, key=lambda n: n["metadata"]["name"])


class _NodeWatch:
    """Follows one Node through a watch, so that every record write is seen, however fast."""

    def __init__(self, kube: Any, name: str) -> None:
        self.kube = kube
        self.name = name
        self.versions: list[dict[str, Any]] = []
        self.deleted = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        query = {"fieldSelector": f"metadata.name={self.name}", "timeoutSeconds": 300}
        while not self._stop.is_set():
            try:
                for event in self.kube.stream("/api/v1/nodes", query, timeout=310):
                    if event.get("type") == "DELETED":
                        self.deleted = True
                        return
                    self.versions.append(event.get("object", {}))
            except Exception:  # the demo keeps watching through hiccups
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()


def _watch(sb: Any, sim: Any, timeline: Timeline, *, name: str, instance: str, timeout: float) -> bool:
    from controller.adapters.kube import Kube, api_client

    kube = Kube(api_client(str(sb.kubeconfig)))
    watch = _NodeWatch(kube, name)
    deadline = time.monotonic() + timeout
    desired = {g["name"]: g["desired_capacity"] for g in sim.state()["groups"]}
    sgfe_seen = False
    handled = 0
    try:
        while time.monotonic() < deadline:
            for node in watch.versions[handled:]:
                handled += 1
                annotations = node.get("metadata", {}).get("annotations") or {}
                if "spotguard.io/rebalance-notice-time" in annotations:
                    timeline.step(
                        "annotated",
                        f"nodewatch saw the rebalance recommendation in IMDS and annotated {name} "
                        f"(noticeTime {annotations['spotguard.io/rebalance-notice-time']})",
                    )
                record = json.loads(annotations.get("spotguard.io/replacement", "{}") or "{}")
                if record.get("phase"):
                    timeline.step(
                        f"phase:{record['phase']}", f"controller: {name} is {record['phase']}{_detail(record)}"
                    )
                if node.get("spec", {}).get("unschedulable"):
                    timeline.step("cordoned", f"controller: {name} tainted NoSchedule and cordoned; draining it")
            for group in sim.state()["groups"]:
                now = group["desired_capacity"]
                if now != desired[group["name"]]:
                    states = ", ".join(i["lifecycle_state"] for i in group["instances"]) or "no instances"
                    timeline.step(
                        f"desired:{group['name']}:{desired[group['name']]}->{now}",
                        f"AWS: {group['name']} desired {desired[group['name']]} -> {now} ({states})",
                    )
                    desired[group["name"]] = now
            for activity in sim.activities(SPOT):
                if activity["status_code"] == "Failed":
                    timeline.step("failed-activity", f"AWS: spot launch failed: {activity['status_message']}")
            events = kube.request("GET", "/apis/aws.amazon.com/v1/namespaces/kube-system/spotguardfallbackevents")
            for event in events.get("items", []):
                spec = event["spec"]
                timeline.step(
                    f"sgfe:{event['metadata']['name']}",
                    f"SpotGuardFallbackEvent {event['metadata']['name']} created for on-demand node "
                    f"{spec['onDemandNodeName']} ({spec.get('onDemandInstanceID', '?')})",
                )
                sgfe_seen = True
            if watch.deleted and sgfe_seen:
                timeline.step("retired", f"old spot node {name} drained; instance {instance} terminated with decrement")
                return True
            time.sleep(0.05)
        return False
    finally:
        watch.stop()


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
