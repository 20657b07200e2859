"""Node sync: one kwok-managed Kubernetes Node per booted instance of the simulated groups.

A Node appears when its instance has booted (InService, or held by a launch lifecycle hook in Pending:Wait or
Pending:Proceed: its kubelet registers whatever the group's state) and goes away when the instance leaves its
group (a Terminating, Terminating:Wait or Terminating:Proceed instance keeps the Node it already has). Nodes are
named after the instance's private DNS name and carry `spec.providerID: aws:///<zone>/<instance-id>`. Only Nodes
this module created (label spotguard.io/asg plus the owner annotation) are ever changed or deleted. kwok (started
with --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake) makes them Ready.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from sandbox.aws.capacity import SPOT, GroupView, InstanceView

log = logging.getLogger(__name__)

ASG_LABEL = "spotguard.io/asg"
OWNER_ANNOTATION = "sandbox.spotguard.io/owner"
OWNER = "sandbox-aws"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE = "fake"

IN_SERVICE = "InService"
TERMINATING = "Terminating"
BOOTED_STATES = frozenset({IN_SERVICE, "Pending:Wait", "Pending:Proceed"})
LEAVING_STATES = frozenset({TERMINATING, "Terminating:Wait", "Terminating:Proceed"})
WATCH_SECONDS = 5  # each deletion watch ends after this long and is resumed: a stop is never kept waiting longer


@dataclass(frozen=True)
class NodeShape:
    cpu: str
    memory: str
    pods: str = "110"
    ephemeral_storage: str = "20Gi"


# What the kubelet would report per instance type (vCPU and memory from EC2's instance type table).
INSTANCE_SHAPES: dict[str, NodeShape] = {
    "t3.medium": NodeShape("2", "4Gi"),
    "t3.large": NodeShape("2", "8Gi"),
    "m5.large": NodeShape("2", "8Gi"),
    "m5.xlarge": NodeShape("4", "16Gi"),
    "m5.2xlarge": NodeShape("8", "32Gi"),
    "m5a.large": NodeShape("2", "8Gi"),
    "m6i.large": NodeShape("2", "8Gi"),
    "m6i.xlarge": NodeShape("4", "16Gi"),
    "c5.large": NodeShape("2", "4Gi"),
    "c5.xlarge": NodeShape("4", "8Gi"),
    "r5.large": NodeShape("2", "16Gi"),
    "r5.xlarge": NodeShape("4", "32Gi"),
}
DEFAULT_SHAPE = NodeShape("2", "8Gi")


class CoreV1ApiLike(Protocol):
    """The part of kubernetes.client.CoreV1Api node sync uses."""

    def list_node(self, **kwargs: Any) -> Any: ...

    def create_node(self, body: Any, **kwargs: Any) -> Any: ...

    def delete_node(self, name: str, **kwargs: Any) -> Any: ...

    def patch_node_status(self, name: str, body: Any, **kwargs: Any) -> Any: ...


def provider_id(instance: InstanceView) -> str:
    return f"aws:///{instance.availability_zone}/{instance.instance_id}"


def node_body(instance: InstanceView, region: str) -> dict[str, Any]:
    """The Node object for an InService instance."""
    spot = instance.capacity_type == SPOT
    shape = INSTANCE_SHAPES.get(instance.instance_type, DEFAULT_SHAPE)
    resources = {
        "cpu": shape.cpu,
        "memory": shape.memory,
        "pods": shape.pods,
        "ephemeral-storage": shape.ephemeral_storage,
    }
    addresses = [{"type": "InternalDNS", "address": instance.private_dns_name}]
    addresses.append({"type": "Hostname", "address": instance.private_dns_name})
    if instance.private_ip:
        addresses.insert(0, {"type": "InternalIP", "address": instance.private_ip})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": instance.private_dns_name,
            "labels": {
                "kubernetes.io/hostname": instance.private_dns_name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": instance.instance_type,
                "topology.kubernetes.io/zone": instance.availability_zone,
                "topology.kubernetes.io/region": region,
                "eks.amazonaws.com/capacityType": "SPOT" if spot else "ON_DEMAND",
                "node.kubernetes.io/lifecycle": "spot" if spot else "normal",
                ASG_LABEL: instance.group_name,
                "type": "kwok",
            },
            "annotations": {KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE, OWNER_ANNOTATION: OWNER},
        },
        "spec": {"providerID": provider_id(instance)},
        "status": {"capacity": dict(resources), "allocatable": dict(resources), "addresses": addresses},
    }


@dataclass
class SyncResult:
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _is_ours(node: dict[str, Any]) -> bool:
    annotations = node.get("metadata", {}).get("annotations") or {}
    return bool(annotations.get(OWNER_ANNOTATION) == OWNER)


class _Outage:
    """Logs a failing loop once when its failures begin and once when they end."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failing = False

    def began(self, error: Exception, consequence: str) -> None:
        if not self.failing:
            log.warning("%s failed (%s: %s); %s", self.what, type(error).__name__, error, consequence)
        self.failing = True

    def ended(self) -> None:
        if self.failing:
            log.info("%s works again", self.what)
        self.failing = False


class NodeSync:
    """Keeps the cluster's sandbox Nodes in step with the simulator's InService instances.

    A sync runs whenever the simulator's instances change (``wake``), whenever one of the sandbox's Nodes is
    deleted (``watch_deletions``: a deleted Node comes back at once, as its kubelet would re-register it), and every
    ``interval_seconds`` as a safety net. Listing every sandbox Node each 0.3 s instead cost a fifth of a core of
    this process at 500 Nodes, and more of the API server's, on the machine the benchmarks measure on.
    """

    def __init__(
        self,
        core_api: CoreV1ApiLike,
        snapshot: Callable[[], list[GroupView]],
        region: str,
        interval_seconds: float = 5.0,
        wake: threading.Event | None = None,
    ) -> None:
        self.core_api = core_api
        self.snapshot = snapshot
        self.region = region
        self.interval_seconds = interval_seconds
        self.wake = wake or threading.Event()
        self._warned_conflicts: set[str] = set()

    def sync_once(self) -> SyncResult:
        result = SyncResult()
        instances = [i for g in self.snapshot() for i in g.instances]
        wanted = {i.private_dns_name: i for i in instances if i.lifecycle_state in BOOTED_STATES}
        keep = {i.private_dns_name: i for i in instances if i.lifecycle_state in LEAVING_STATES}
        existing = self._existing()

        for name, node_provider_id in existing.items():
            instance = wanted.get(name) or keep.get(name)
            if instance is None or node_provider_id != provider_id(instance):
                self._delete(name, result)
        for name, instance in wanted.items():
            current = existing.get(name)
            if current is None or name in result.deleted:
                self._create(instance, result)
        return result

    def _existing(self) -> dict[str, str]:
        """name -> providerID of the sandbox's own Nodes. Raw JSON: the client's models cost about a
        millisecond per Node, which at hundreds of Nodes listed every interval took a whole core."""
        response = self.core_api.list_node(label_selector=ASG_LABEL, _preload_content=False)
        items = json.loads(response.data).get("items") or []
        return {n["metadata"]["name"]: (n.get("spec") or {}).get("providerID", "") for n in items if _is_ours(n)}

    def _delete(self, name: str, result: SyncResult) -> None:
        try:
            self.core_api.delete_node(name)
        except ApiException as error:
            if error.status != 404:
                raise
        result.deleted.append(name)
        log.info("Deleted Node %s: its instance left the Auto Scaling group", name)

    def _create(self, instance: InstanceView, result: SyncResult) -> None:
        body = node_body(instance, self.region)
        name = instance.private_dns_name
        try:
            created = self.core_api.create_node(body)
        except ApiException as error:
            if error.status != 409:
                raise
            result.skipped.append(name)
            if name not in self._warned_conflicts:
                self._warned_conflicts.add(name)
                log.warning(
                    "Node %s already exists but was not created by the sandbox; leaving it alone, so instance %s "
                    "of %s has no Node. Delete that Node if the sandbox should own the name",
                    name,
                    instance.instance_id,
                    instance.group_name,
                )
            return
        status = getattr(created, "status", None)
        if status is None or not getattr(status, "capacity", None):
            # Some API servers drop status on create; set it the way a kubelet would.
            self.core_api.patch_node_status(name, {"status": body["status"]})
        self._warned_conflicts.discard(name)
        result.created.append(name)
        log.info(
            "Created Node %s for %s instance %s in %s (%s)",
            name,
            instance.capacity_type,
            instance.instance_id,
            instance.availability_zone,
            instance.group_name,
        )

    def watch_deletions(self, stop: threading.Event) -> None:
        """Until ``stop``: wake the sync whenever a Node this module created is deleted."""
        resource_version = ""
        outage = _Outage("Watching the sandbox's Nodes")
        while not stop.is_set():
            try:
                if not resource_version:
                    resource_version = self._current_resource_version()
                    self.wake.set()  # anything deleted before the watch starts is found by this sync
                resource_version = self._follow(resource_version, stop)
                outage.ended()
            except Exception as error:
                outage.began(error, f"a deleted Node comes back within {self.interval_seconds:g} s, not at once")
                resource_version = ""
                stop.wait(1.0)

    def _current_resource_version(self) -> str:
        response = self.core_api.list_node(label_selector=ASG_LABEL, limit=1, _preload_content=False)
        return str(json.loads(response.data)["metadata"]["resourceVersion"])

    def _follow(self, resource_version: str, stop: threading.Event) -> str:
        """One watch from ``resource_version``; the version to resume from ("" to list again: 410 Gone)."""
        response = self.core_api.list_node(
            label_selector=ASG_LABEL,
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=WATCH_SECONDS + 10,
            _preload_content=False,
        )
        try:
            for line in iter_resp_lines(response):
                if stop.is_set():
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, thing = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    return ""  # most likely 410 Gone: too old to resume from
                resource_version = (thing.get("metadata") or {}).get("resourceVersion") or resource_version
                if kind == "DELETED" and _is_ours(thing):
                    self.wake.set()
        finally:
            response.release_conn()
        return resource_version

    def run(self, stop: threading.Event) -> None:
        """Sync until `stop` is set: on every wake-up (instance changes) and at least every interval."""
        outage = _Outage("Node sync against the API server")
        while not stop.is_set():
            self.wake.clear()
            try:
                self.sync_once()
                outage.ended()
            except Exception as error:
                outage.began(error, f"retrying every {self.interval_seconds:g} s until it works")
            self.wake.wait(self.interval_seconds)


def core_api_from_kubeconfig(path: str) -> CoreV1ApiLike:
    """A CoreV1Api for the cluster the kubeconfig file points at."""
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=path)
    return client.CoreV1Api(api_client)  # type: ignore[no-any-return]
