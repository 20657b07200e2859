"""Figure 7, drain: a spot Node with 50 pods, drained by controller.drain.Drainer (the controller's drain code,
called directly against the sandbox's API server; kwok plays the kubelet).

The pods are a Deployment of 50 replicas pinned to the Node by ``kubernetes.io/hostname``, with
terminationGracePeriodSeconds 5 and a PDB that allows every disruption (maxUnavailable 100%).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench.controller_harness import wait_until
from bench.figures import Figure, Target
from bench.registry import Context, benchmark
from controller.adapters.kube import Kube
from controller.checks.drain_plan import DrainOptions
from controller.effects.drain import Drainer
from controller.workers import ThreadWorkers
from tests.integration.controller_process import spot_nodes

PODS, GRACE = 50, 5
HOSTNAME = "kubernetes.io/hostname"


def _workload(name: str, host: str) -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": PODS,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {HOSTNAME: host},
                    "terminationGracePeriodSeconds": GRACE,
                    "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                },
            },
        },
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {"maxUnavailable": "100%", "selector": {"matchLabels": {"app": name}}},
    }
    return deployment, pdb


def _running_on(kube: Kube, namespace: str, node: str) -> int:
    pods = kube.request("GET", f"/api/v1/namespaces/{namespace}/pods", query={"fieldSelector": f"spec.nodeName={node}"})
    return sum(1 for p in pods["items"] if p.get("status", {}).get("phase") == "Running")


@benchmark("controller_drain", "drain of a Node with 50 pods (grace 5 s) by the controller's Drainer")
def drain(context: Context) -> list[Figure]:
    """Figure 7: time of Drainer.cordon + Drainer.drain until every evicted pod is gone."""
    repeats = 2 if context.quick else 3
    kube = Kube(context.api_client())
    node = spot_nodes(context.core())[0]
    host = kube.request("GET", f"/api/v1/nodes/{node.name}")["metadata"]["labels"][HOSTNAME]
    namespace = f"bench-drain-{uuid.uuid4().hex[:6]}"
    kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
    took: list[float] = []
    evicted: list[int] = []
    try:
        deployment, pdb = _workload("web", host)
        kube.request("POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", body=deployment)
        kube.request("POST", f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets", body=pdb)
        drainer = Drainer(kube, parallel=ThreadWorkers(lanes={}).evict_in_parallel)  # as the controller's
        for _ in range(repeats):
            drainer.uncordon(node.name)
            wait_until(f"{PODS} pods Running", lambda: _running_on(kube, namespace, node.name) >= PODS, 120, 0.5)
            started = time.monotonic()
            drainer.cordon(node.name)
            result = drainer.drain(node.name, DrainOptions(timeout=60, poll_interval=0.2))
            took.append(time.monotonic() - started)
            if not result.drained:
                raise RuntimeError(f"the drain did not finish: {result.outcome} {result.message}")
            evicted.append(len(result.evicted))
    finally:
        Drainer(kube).uncordon(node.name)
        kube.request("DELETE", f"/api/v1/namespaces/{namespace}")
    return [
        Figure.of_samples(
            "controller.drain_50_pods",
            took,
            "s",
            f"{PODS} pods of one Deployment on one kwok Node, terminationGracePeriodSeconds {GRACE}, PDB "
            "maxUnavailable 100% (the Deployment's replacements stay Pending: pinned to the cordoned Node); "
            "controller.drain.Drainer (cordon + drain, poll 0.2 s) called directly, not through "
            f"a retirement; kwok's kubelet removes terminating pods; {repeats} runs",
            target=Target(GRACE + 5.0, applies_to="max", text="longest grace period + 5 s"),
            title="Drain of a Node with 50 pods",
            details={"pods_evicted": evicted},
        )
    ]
