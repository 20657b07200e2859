"""Hand-built raw Kubernetes JSON (Pods, Nodes, PodDisruptionBudgets) for the drain and safety tests."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]


def owner(kind: str, name: str = "owner") -> JSON:
    return {"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": f"uid-{name}", "controller": True}


def pod(
    name: str,
    *,
    namespace: str = "default",
    node: str | None = "od-1",
    cpu: str | None = None,
    memory: str | None = None,
    owner_kind: str | None = "ReplicaSet",
    phase: str = "Running",
    ready: bool = True,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    volumes: list[JSON] | None = None,
    node_selector: dict[str, str] | None = None,
    tolerations: list[JSON] | None = None,
    affinity: JSON | None = None,
    init_containers: list[JSON] | None = None,
    extra_containers: list[JSON] | None = None,
    deleting: bool = False,
    uid: str | None = None,
) -> JSON:
    """A pod bound to ``node`` with one container requesting ``cpu``/``memory``, owned by a ``owner_kind``."""
    requests = {k: v for k, v in {"cpu": cpu, "memory": memory}.items() if v is not None}
    meta: JSON = {"name": name, "namespace": namespace, "uid": uid or f"uid-{namespace}-{name}"}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    if owner_kind:
        meta["ownerReferences"] = [owner(owner_kind, f"{name}-owner")]
    if deleting:
        meta["deletionTimestamp"] = "2025-01-15T10:00:00Z"
    spec: JSON = {"containers": [{"name": "app", "resources": {"requests": requests}}, *(extra_containers or [])]}
    if node:
        spec["nodeName"] = node
    for key, value in {
        "volumes": volumes,
        "nodeSelector": node_selector,
        "tolerations": tolerations,
        "affinity": affinity,
        "initContainers": init_containers,
    }.items():
        if value is not None:
            spec[key] = value
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"metadata": meta, "spec": spec, "status": {"phase": phase, "conditions": conditions}}


def node(
    name: str,
    *,
    cpu: str = "4",
    memory: str = "16Gi",
    pods: str = "110",
    ready: bool = True,
    unschedulable: bool = False,
    taints: list[JSON] | None = None,
    labels: dict[str, str] | None = None,
) -> JSON:
    spec: JSON = {}
    if unschedulable:
        spec["unschedulable"] = True
    if taints:
        spec["taints"] = taints
    allocatable = {"cpu": cpu, "memory": memory, "pods": pods}
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": spec,
        "status": {
            "allocatable": allocatable,
            "capacity": dict(allocatable),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pdb(
    name: str,
    *,
    namespace: str = "default",
    match_labels: dict[str, str] | None = None,
    selector: JSON | None = None,
    allowed: int = 1,
    current_healthy: int = 3,
    desired_healthy: int = 2,
    generation: int = 1,
    observed_generation: int | None = 1,
    unhealthy_policy: str | None = None,
) -> JSON:
    spec: JSON = {"selector": selector if selector is not None else {"matchLabels": match_labels or {}}}
    if unhealthy_policy:
        spec["unhealthyPodEvictionPolicy"] = unhealthy_policy
    status: JSON = {
        "disruptionsAllowed": allowed,
        "currentHealthy": current_healthy,
        "desiredHealthy": desired_healthy,
    }
    if observed_generation is not None:
        status["observedGeneration"] = observed_generation
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace, "generation": generation},
        "spec": spec,
        "status": status,
    }
