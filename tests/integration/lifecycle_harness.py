"""Running the SGFE lifecycle controller in-process against the sandbox, and watching what it does.

* ``compressed`` settings: the seed's durations shrunk to seconds (minimum wait 2 s, stability 3 s, poll 0.5 s);
* ``LifecycleRun``: one controller (with its own Node informer) in threads, stopped at the end of the test;
* ``SgfeWatch``: every status the API server stored for the test's SGFEs, from a watch (nothing is missed);
* ``fall_back``: the state the replacement controller leaves after a fallback (spot at original - 1, on-demand
  at original + 1, an SGFE naming the new on-demand instance and node);
* ``Workload``: a Deployment placed on the on-demand node, and its PodDisruptionBudget.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.adapters.aws import AutoScaling
from controller.adapters.kube import Informer, Kube
from controller.adapters.sgfe_store import FallbackEvents
from controller.capacity.owner import CapacityOwner
from controller.clock import Cancellation, SystemClock
from controller.config import Settings
from controller.effects.drain import Drainer
from controller.effects.node_writes import NodeWriter
from controller.lifecycle.controller import LifecycleController
from controller.model.progress import format_time
from controller.model.sgfe import GROUP, PLURAL, VERSION, FallbackEvent, Spec, Status
from controller.workers import ThreadWorkers
from sandbox.aws.client import SandboxAWSClient
from tests.support.waiting import wait_until

log = logging.getLogger(__name__)

JSON = dict[str, Any]
SPOT = "spotguard-spot-1"
ON_DEMAND = "spotguard-ondemand-1"
IMAGE = "registry.invalid/app:1"


def compressed(namespace: str, **overrides: Any) -> Settings:
    """The seed's timeline with seconds for minutes: every wait short, every bound still there."""
    base = Settings(
        spot_asg_name=SPOT,
        on_demand_asg_name=ON_DEMAND,
        namespace=namespace,
        minimum_wait_duration=2,
        stability_window=3,
        lifecycle_poll_interval=0.5,
        capacity_poll_interval=0.5,
        capacity_check_timeout=20,
        drain_timeout=30,
        safety_retry_interval=1,
        completed_ttl=2,
        monitoring_backoff_initial=1,
        monitoring_backoff_max=2,
        scale_down_takeover=10,
    )
    return dataclasses.replace(base, **overrides).validate()


class Recorder:
    """Collects Events and phase changes; ``on_phase(event, new)`` runs synchronously at each change."""

    def __init__(self, on_phase: Callable[[FallbackEvent, str], None] | None = None) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.phases: list[tuple[str, str]] = []
        self.malformed_objects: list[tuple[str, str]] = []
        self.on_phase = on_phase

    def sgfe_event(self, event: FallbackEvent, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def phase_changed(self, event: FallbackEvent, old: str, new: str) -> None:
        self.phases.append((old, new))
        if self.on_phase is not None:
            self.on_phase(event, new)

    def malformed(self, kind: str, field: str) -> None:
        self.malformed_objects.append((kind, field))

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


class LifecycleRun:
    """One lifecycle controller in threads: its informer, its reconcile loop. ``stop()`` ends both."""

    def __init__(
        self,
        kube: Kube,
        autoscaling_client: Any,
        settings: Settings,
        identity: str,
        *,
        recorder: Recorder | None = None,
        sgfes: FallbackEvents | None = None,
        fence: Callable[[str], None] | None = None,
    ) -> None:
        self.recorder = recorder or Recorder()
        asg = AutoScaling(autoscaling_client, fence=fence) if fence else AutoScaling(autoscaling_client)
        self.informer = Informer(kube, lambda kind, node: self.controller.notify())
        self.workers = ThreadWorkers()
        self.controller = LifecycleController(
            settings=settings,
            sgfes=sgfes or FallbackEvents(kube, settings.namespace),
            owner=CapacityOwner(asg, SystemClock()),
            kube=kube,
            writer=NodeWriter(kube),
            drainer=Drainer(kube, SystemClock(), parallel=self.workers.evict_in_parallel),
            nodes=self.informer.snapshot,
            clock=SystemClock(),
            identity=identity,
            workers=self.workers,
            recorder=self.recorder,
        )
        self.cancel = Cancellation()
        self._watch_stop = threading.Event()
        self._threads = [
            threading.Thread(target=self.informer.run, args=(self._watch_stop,), name=f"{identity}-nodes", daemon=True),
            threading.Thread(target=self._run, name=f"{identity}-lifecycle", daemon=True),
        ]
        self.returned = threading.Event()

    def _run(self) -> None:
        try:
            self.controller.run(self.cancel)
        finally:
            self.returned.set()

    def start(self) -> LifecycleRun:
        self._threads[0].start()
        if not self.informer.synced.wait(30):
            raise AssertionError("the node informer did not sync within 30 s")
        self._threads[1].start()
        return self

    def stop(self) -> None:
        self.cancel.cancel("test over")
        self._watch_stop.set()
        self._threads[1].join(30)
        assert not self._threads[1].is_alive(), "the lifecycle controller did not stop within 30 s"
        self.workers.shutdown(wait=False)


class SgfeWatch:
    """Watches the SGFEs of one namespace and keeps every (name, type, phase) the API server sent."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        self.seen: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        listed = kube.request("GET", self.path)
        self._rv = listed.get("metadata", {}).get("resourceVersion", "")
        self._thread = threading.Thread(target=self._run, name="sgfe-watch", daemon=True)

    def __enter__(self) -> SgfeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            query: dict[str, str | int] = {"resourceVersion": self._rv, "timeoutSeconds": 5}
            try:
                for event in self.kube.stream(self.path, query, timeout=15):
                    obj = event.get("object", {})
                    self._rv = obj.get("metadata", {}).get("resourceVersion", self._rv)
                    name = obj.get("metadata", {}).get("name", "")
                    phase = (obj.get("status") or {}).get("phase", "")
                    with self._lock:
                        self.seen.append((name, str(event.get("type")), phase))
            except Exception as exc:  # the test's own watch: log and resume
                log.warning("SGFE watch: %s; resuming", exc)

    def phases(self, name: str) -> list[str]:
        """The distinct phases ``name`` went through, in order (``Deleted`` last if it was deleted)."""
        out: list[str] = []
        with self._lock:
            seen = list(self.seen)
        for event_name, kind, phase in seen:
            if event_name != name:
                continue
            value = "Deleted" if kind == "DELETED" else phase
            if value and (not out or out[-1] != value):
                out.append(value)
        return out


@dataclasses.dataclass(frozen=True)
class Fallback:
    sgfe: str
    on_demand_instance: str
    on_demand_node: str
    retired_spot_instance: str
    other_on_demand: tuple[str, ...]


def node_name_of(sim: SandboxAWSClient, group: str, instance_id: str) -> str:
    return next(i["private_dns_name"] for i in sim.instances(group) if i["instance_id"] == instance_id)


def schedulable(kube: Kube, name: str) -> bool:
    """Ready, not cordoned, and no taint at all (the node lifecycle controller's not-ready taint lifted)."""
    try:
        node = kube.request("GET", f"/api/v1/nodes/{name}")
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    conditions = node.get("status", {}).get("conditions") or []
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return ready and not node["spec"].get("unschedulable") and not node["spec"].get("taints")


def fall_back(
    kube: Kube,
    sim: SandboxAWSClient,
    autoscaling: Any,
    namespace: str,
    *,
    on_demand_before: int = 0,
    retired_node_goes: bool = True,
) -> Fallback:
    """What the replacement controller leaves: on-demand + 1, an SGFE for it, the old spot node retired (its Node
    gone, unless ``retired_node_goes`` is False: a termination hook holds it)."""
    sim.set_capacity(SPOT, pending_seconds=1.0)
    if on_demand_before:
        autoscaling.set_desired_capacity(AutoScalingGroupName=ON_DEMAND, DesiredCapacity=on_demand_before)
        sim.wait_for_instances(ON_DEMAND, "InService", on_demand_before)
    before = {i["instance_id"] for i in sim.instances(ON_DEMAND)}
    autoscaling.set_desired_capacity(AutoScalingGroupName=ON_DEMAND, DesiredCapacity=on_demand_before + 1)
    sim.wait_for_instances(ON_DEMAND, "InService", on_demand_before + 1)
    instance = next(i["instance_id"] for i in sim.instances(ON_DEMAND) if i["instance_id"] not in before)
    node = node_name_of(sim, ON_DEMAND, instance)
    wait_until(lambda: schedulable(kube, node), 30, f"on-demand node {node} Ready and untainted")

    retired = sorted(i["instance_id"] for i in sim.instances(SPOT))[0]
    autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=retired, ShouldDecrementDesiredCapacity=True)
    sim.wait_for_instances(SPOT, "InService", 2)
    if retired_node_goes:
        wait_until(lambda: len(spot_nodes(kube)) == 2, 30, "the retired spot node gone")

    name = f"fallback-{int(dt.datetime.now(dt.UTC).timestamp())}-{uuid.uuid4().hex[:6]}"
    FallbackEvents(kube, namespace).create(
        name,
        Spec(
            spot_asg_name=SPOT,
            on_demand_asg_name=ON_DEMAND,
            on_demand_node_name=node,
            on_demand_instance_id=instance,
            timestamp=format_time(dt.datetime.now(dt.UTC)),
            minimum_wait_duration="2s",
        ),
        Status(message="Fallback to on-demand completed, waiting 2s before monitoring"),
    )
    return Fallback(name, instance, node, retired, tuple(sorted(before)))


def spot_nodes(kube: Kube) -> list[str]:
    items = kube.request("GET", "/api/v1/nodes", {"labelSelector": f"spotguard.io/asg={SPOT}"})["items"]
    return sorted(n["metadata"]["name"] for n in items)


def set_unschedulable(kube: Kube, nodes: list[str], value: bool) -> None:
    for name in nodes:
        kube.request(
            "PATCH",
            f"/api/v1/nodes/{name}",
            body={"spec": {"unschedulable": value}},
            content_type="application/merge-patch+json",
        )


class Workload:
    """A Deployment ``web`` whose pods start on the on-demand node, and a PDB covering them."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    def pods(self) -> list[JSON]:
        answer = self.kube.request("GET", f"/api/v1/namespaces/{self.namespace}/pods", {"labelSelector": "app=web"})
        return list(answer.get("items") or [])

    def running(self, node: str | None = None, *, not_on: str | None = None) -> list[JSON]:
        return [
            p
            for p in self.pods()
            if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and (node is None or p["spec"].get("nodeName") == node)
            and (not_on is None or p["spec"].get("nodeName") != not_on)
        ]

    def place(self, on_demand_node: str, on_node: int, elsewhere: int = 0) -> set[str]:
        """``on_node`` replicas on the on-demand node, then ``elsewhere`` more on spot nodes; their UIDs."""
        spot = spot_nodes(self.kube)
        set_unschedulable(self.kube, spot, True)
        try:
            self.kube.request(
                "POST", f"/apis/apps/v1/namespaces/{self.namespace}/deployments", body=self._deployment(on_node)
            )
            wait_until(
                lambda: len(self.running(on_demand_node)) == on_node, 60, f"{on_node} web pods on {on_demand_node}"
            )
        finally:
            set_unschedulable(self.kube, spot, False)
        uids = {p["metadata"]["uid"] for p in self.running(on_demand_node)}
        if elsewhere:
            set_unschedulable(self.kube, [on_demand_node], True)
            try:
                self.scale(on_node + elsewhere)
                wait_until(
                    lambda: len(self.running(not_on=on_demand_node)) == elsewhere, 60, f"{elsewhere} web pods on spot"
                )
            finally:
                set_unschedulable(self.kube, [on_demand_node], False)
        return uids

    def scale(self, replicas: int) -> None:
        self.kube.request(
            "PATCH",
            f"/apis/apps/v1/namespaces/{self.namespace}/deployments/web",
            body={"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )

    def budget(self, min_available: int, wait_allowed: int | None = None) -> None:
        """Create (or change) PDB ``web`` with ``minAvailable``; optionally wait until it allows that many."""
        path = f"/apis/policy/v1/namespaces/{self.namespace}/poddisruptionbudgets"
        try:
            self.kube.request(
                "PATCH",
                f"{path}/web",
                body={"spec": {"minAvailable": min_available}},
                content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.kube.request(
                "POST",
                path,
                body={
                    "apiVersion": "policy/v1",
                    "kind": "PodDisruptionBudget",
                    "metadata": {"name": "web"},
                    "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": "web"}}},
                },
            )
        if wait_allowed is not None:

            def computed() -> bool:
                pdb = self.kube.request("GET", f"{path}/web")
                status = pdb.get("status") or {}
                return bool(
                    status.get("observedGeneration") == pdb["metadata"]["generation"]
                    and status.get("disruptionsAllowed") == wait_allowed
                )

            wait_until(computed, 30, f"PDB web to allow {wait_allowed} disruption(s)")

    def _deployment(self, replicas: int) -> JSON:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "app", "image": IMAGE, "resources": {"requests": {"cpu": "100m"}}}],
                    },
                },
            },
        }


def spot_guard_marks(kube: Kube) -> list[str]:
    """Every node Spot Guard left cordoned or tainted (should be none)."""
    marks = []
    for node in kube.request("GET", "/api/v1/nodes")["items"]:
        name = node["metadata"]["name"]
        if node["spec"].get("unschedulable"):
            marks.append(f"{name} cordoned")
        for taint in node["spec"].get("taints") or []:
            if taint["key"].startswith("spotguard.io/"):
                marks.append(f"{name} tainted {taint['key']}")
    return marks
