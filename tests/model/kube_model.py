"""The Kubernetes side of the model-based tests: Nodes (with finalizers that hold a deleted Node until they are
removed, as the API server does), SpotGuardFallbackEvents with resourceVersions and a status subresource, pods and
PodDisruptionBudgets (none, unless a test adds them), all answering ``Kube.request``; plus the drains the replacement
controller asks for, which a test can make fail for a node (a PodDisruptionBudget that never allows the eviction)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from controller.clock import FakeClock
from tests.unit.controller.fake_lifecycle_cluster import FakeCluster

JSON = dict[str, Any]


class KubeModel(FakeCluster):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.deleted: list[str] = []  # nodes whose deletion completed

    def add_instance_node(self, instance_id: str, ready: bool = True) -> str:
        name = f"node-{instance_id[-6:]}"
        self.add_node(name, instance_id, ready=ready)
        self.nodes[name]["metadata"]["creationTimestamp"] = self.clock.now().isoformat()
        return name

    def set_ready(self, name: str) -> None:
        node = self.nodes[name]
        for condition in node["status"]["conditions"]:
            if condition["type"] == "Ready" and condition["status"] != "True":
                condition["status"] = "True"
                node["metadata"]["resourceVersion"] = str(next(self._rv))

    def node_of(self, instance_id: str) -> str | None:
        for name, node in self.nodes.items():
            if node["spec"].get("providerID", "").endswith("/" + instance_id):
                return name
        return None

    def delete_node(self, name: str) -> None:
        """The Node's deletion as the API server does it: held by finalizers until they are gone."""
        node = self.nodes.get(name)
        if node is None:
            return
        if node["metadata"].get("finalizers"):
            node["metadata"].setdefault("deletionTimestamp", "2026-01-01T00:00:00Z")
            node["metadata"]["resourceVersion"] = str(next(self._rv))
            return
        del self.nodes[name]
        self.deleted.append(name)

    def annotate(self, name: str, annotations: Mapping[str, str | None]) -> None:
        node = self.nodes[name]
        current = node["metadata"].setdefault("annotations", {})
        for key, value in annotations.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        node["metadata"]["resourceVersion"] = str(next(self._rv))

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int] | None = None,
        *,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> JSON:
        answer = super().request(method, path, query, body=body, content_type=content_type, timeout=timeout)
        for name, node in list(self.nodes.items()):
            meta = node["metadata"]
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                del self.nodes[name]
                self.deleted.append(name)
        return answer

    def annotations(self, name: str) -> dict[str, str]:
        return dict(copy.deepcopy(self.nodes[name]["metadata"].get("annotations") or {}))


class ModelDrains:
    """``NodeDrains`` for the replacement controller: cordon, then drain (no pods: done), unless the test blocks
    the node's drains."""

    def __init__(self, kube: KubeModel) -> None:
        self.kube = kube
        self.blocked: set[str] = set()
        self.drained: list[str] = []

    def drain(self, node: str) -> bool:
        if node not in self.kube.nodes:
            return True
        self.kube.request("PATCH", f"/api/v1/nodes/{node}", body={"spec": {"unschedulable": True}})
        if node in self.blocked:
            return False
        self.drained.append(node)
        return True

    def uncordon(self, node: str) -> None:
        if node in self.kube.nodes:
            self.kube.request("PATCH", f"/api/v1/nodes/{node}", body={"spec": {"unschedulable": False}})
