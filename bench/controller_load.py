"""Bulk objects for the footprint benchmark: plain Nodes (no kwok annotation, so kwok ignores them) and Pods
bound to them by ``spec.nodeName``, created and deleted with many threads, each with an API client of its own.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from controller.adapters.kube import Kube

LABEL = "bench.spotguard.io/footprint"
NAMESPACE = "bench-footprint"
THREADS = 24


class Load:
    """``nodes`` Nodes and ``pods`` Pods (spread evenly over those Nodes) in the API server."""

    def __init__(self, kubeconfig: Path, nodes: int, pods: int) -> None:
        self.kubeconfig = kubeconfig
        self.nodes = nodes
        self.pods = pods
        self._local = threading.local()

    def _kube(self) -> Kube:
        kube: Kube | None = getattr(self._local, "kube", None)
        if kube is None:
            kube = Kube(k8s_config.new_client_from_config(config_file=str(self.kubeconfig)))
            self._local.kube = kube
        return kube

    def _node(self, index: int) -> str:
        return f"bench-fp-{index:05d}"

    def _create_node(self, index: int) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self._node(index), "labels": {LABEL: "true", "kubernetes.io/os": "linux"}},
            "spec": {"providerID": f"aws:///us-east-1a/i-fp{index:015d}"},
        }
        self._create("/api/v1/nodes", body)

    def _create_pod(self, index: int) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"fp-{index:06d}", "labels": {LABEL: "true", "app": f"fp-{index % 50}"}},
            "spec": {
                "nodeName": self._node(index % self.nodes),
                "tolerations": [{"operator": "Exists"}],  # no taint-based eviction from the Nodes nobody runs
                "containers": [
                    {"name": "app", "image": "registry.invalid/app:1", "resources": {"requests": {"cpu": "10m"}}}
                ],
            },
        }
        self._create(f"/api/v1/namespaces/{NAMESPACE}/pods", body)

    def _create(self, path: str, body: Any) -> None:
        try:
            self._kube().request("POST", path, body=body, timeout=60)
        except ApiException as error:
            if error.status != 409:  # already there from an interrupted run
                raise

    @staticmethod
    def _run(function: Callable[[int], None], indexes: Iterable[int]) -> None:
        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            for future in concurrent.futures.as_completed([pool.submit(function, i) for i in indexes]):
                future.result()

    def create(self) -> None:
        kube = self._kube()
        try:
            kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NAMESPACE}})
        except ApiException as error:
            if error.status != 409:
                raise
        self._run(self._create_node, range(self.nodes))
        self._run(self._create_pod, range(self.pods))

    def delete(self) -> None:
        """Pods (grace 0: no kubelet would confirm them), then the Nodes, then the namespace.

        A delete-collection of thousands of objects can outlast the API server's 60 s request timeout (504);
        it goes on deleting, so it is sent again until nothing is left.
        """
        now: dict[str, str | int] = {"gracePeriodSeconds": 0}
        self._delete_all(f"/api/v1/namespaces/{NAMESPACE}/pods", now)
        self._delete_all("/api/v1/nodes", {"labelSelector": LABEL})
        self._kube().request("DELETE", f"/api/v1/namespaces/{NAMESPACE}", timeout=60)

    def _delete_all(self, path: str, query: dict[str, str | int], attempts: int = 20) -> None:
        kube = self._kube()
        for _ in range(attempts):
            try:
                kube.request("DELETE", path, query=query, body=dict(query), timeout=120)
            except ApiException as error:
                if error.status not in (500, 504):
                    raise
            left = kube.request("GET", path, query={**query, "limit": 1}, timeout=60)
            if not left.get("items"):
                return
        raise RuntimeError(f"{path}: objects left after {attempts} delete-collection requests")
