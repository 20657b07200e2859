"""Draining a node of the real local API server (kwok plays the kubelets): PDBs hold it, then it drains."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controller.adapters.kube import MERGE_PATCH, Kube
from controller.checks.drain_plan import DrainOptions, plan_drain
from controller.checks.safety import check_pdbs, check_pods_fit, pods_on_node
from controller.effects.drain import Drainer, DrainOutcome, DrainResult, EvictionResult
from controller.workers import ThreadWorkers
from tests.support.waiting import wait_until

JSON = dict[str, Any]
POOL = "spotguard.test/drain-pool"
HOSTNAME = "kubernetes.io/hostname"
IMAGE = "registry.invalid/app:1"


def kwok_node(name: str, pool: str) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {HOSTNAME: name, POOL: pool, "type": "kwok"},
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
    }


def pod_template(app: str, node_selector: dict[str, str]) -> JSON:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {
            "nodeSelector": node_selector,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": IMAGE, "resources": {"requests": {"cpu": "100m"}}}],
        },
    }


def deployment(name: str, replicas: int, node_selector: dict[str, str]) -> JSON:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, node_selector),
        },
    }


def daemonset(name: str, node_selector: dict[str, str]) -> JSON:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": pod_template(name, node_selector)},
    }


class Workload:
    """Reads of one test namespace's pods through the raw JSON layer."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    def pods(self, app: str) -> list[JSON]:
        answer = self.kube.request("GET", f"/api/v1/namespaces/{self.namespace}/pods", {"labelSelector": f"app={app}"})
        return list(answer.get("items") or [])

    def running(self, app: str, node: str | None = None) -> list[JSON]:
        return [
            p
            for p in self.pods(app)
            if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and (node is None or p["spec"].get("nodeName") == node)
        ]


def node_schedulable(kube: Kube, name: str) -> bool:
    """Ready, and the node lifecycle controller has lifted its not-ready NoSchedule taint."""
    node = kube.request("GET", f"/api/v1/nodes/{name}")
    conditions = node.get("status", {}).get("conditions") or []
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return ready and not node.get("spec", {}).get("taints")


@pytest.fixture
def kube(api_client: k8s.ApiClient) -> Kube:
    return Kube(api_client)


@pytest.fixture
def nodes(kube: Kube, namespace: str) -> Iterator[tuple[str, str]]:
    """Two kwok Nodes of this test's own pool: the one to drain and the one its pods move to."""
    suffix = uuid.uuid4().hex[:6]
    target, other = f"drain-target-{suffix}", f"drain-other-{suffix}"
    created: list[str] = []
    try:
        kube.request("POST", "/api/v1/nodes", body=kwok_node(target, namespace))
        created.append(target)
        wait_until(lambda: node_schedulable(kube, target), 30, f"node {target} Ready and untainted")
        yield target, other
    finally:
        for name in (target, other):
            try:
                kube.request("DELETE", f"/api/v1/nodes/{name}")
            except ApiException as exc:
                if exc.status != 404:
                    raise


def test_drain_waits_for_the_pdb_then_evicts_all_but_the_daemonset_pod(
    kube: Kube, namespace: str, nodes: tuple[str, str]
) -> None:
    target, other = nodes
    ns = f"/apis/apps/v1/namespaces/{namespace}"
    work = Workload(kube, namespace)
    pool = {POOL: namespace}

    # Everything lands on the target: it is the only node of this test's pool so far.
    kube.request("POST", f"{ns}/daemonsets", body=daemonset("agent", {HOSTNAME: target}))
    kube.request("POST", f"{ns}/deployments", body=deployment("web", 2, pool))
    kube.request("POST", f"{ns}/deployments", body=deployment("guarded", 1, pool))
    kube.request(
        "POST",
        f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets",
        body={
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "guarded-all"},
            "spec": {"minAvailable": "100%", "selector": {"matchLabels": {"app": "guarded"}}},
        },
    )
    wait_until(
        lambda: (
            len(work.running("web", target)) == 2
            and len(work.running("guarded", target)) == 1
            and len(work.running("agent", target)) == 1
        ),
        60,
        f"the DaemonSet and Deployment pods Running on {target}",
    )

    def budget_computed() -> bool:
        status = kube.request("GET", f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/guarded-all")
        return bool(status.get("status", {}).get("observedGeneration") == 1) and (
            status["status"].get("currentHealthy") == 1
        )

    wait_until(budget_computed, 30, "the disruption controller to compute PDB guarded-all")
    kube.request("POST", "/api/v1/nodes", body=kwok_node(other, namespace))
    wait_until(lambda: node_schedulable(kube, other), 30, f"node {other} Ready and untainted")
    agent_before = work.running("agent", target)[0]["metadata"]["uid"]
    web_before = {p["metadata"]["name"] for p in work.pods("web")}
    guarded_name = work.pods("guarded")[0]["metadata"]["name"]

    # The pure safety checks agree, on the real objects: the pods fit elsewhere, but the PDB forbids it.
    all_nodes = kube.request("GET", "/api/v1/nodes")["items"]
    all_pods = kube.request("GET", "/api/v1/pods")["items"]
    pdbs = kube.request("GET", f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets")["items"]
    fit = check_pods_fit(target, all_nodes, all_pods)
    assert fit.passed, fit.message
    pdb_check = check_pdbs(target, plan_drain(pods_on_node(target, all_pods)).to_evict, pdbs)
    assert not pdb_check.passed
    assert f"PDB {namespace}/guarded-all allows 0 disruption(s)" in pdb_check.message

    drainer = Drainer(kube, parallel=ThreadWorkers(lanes={}).evict_in_parallel)  # as the controller's
    held = drainer.drain(target, DrainOptions(timeout=4, backoff_max=1))

    assert held.outcome is DrainOutcome.TIMED_OUT
    assert f"{namespace}/{guarded_name}" in held.message
    assert f"{namespace}/{guarded_name}" in held.remaining
    assert held.retries[f"{namespace}/{guarded_name}"] >= 1
    assert work.running("guarded", target), "the PDB-protected pod must still run on the node"

    kube.request("DELETE", f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/guarded-all")
    drained = drainer.drain(target, DrainOptions(timeout=30))

    assert drained.outcome is DrainOutcome.DRAINED, drained.message
    names_left = {p["metadata"]["name"] for p in work.pods("web") + work.pods("guarded")}
    assert not names_left & (web_before | {guarded_name}), "every evicted pod is gone"
    wait_until(
        lambda: len(work.running("web", other)) == 2 and len(work.running("guarded", other)) == 1,
        60,
        f"the Deployments' replacement pods Running on {other}",
    )
    assert kube.request("GET", f"/api/v1/nodes/{target}")["spec"].get("unschedulable") is True
    agent = work.pods("agent")
    assert [(p["metadata"]["uid"], p["spec"]["nodeName"]) for p in agent] == [(agent_before, target)]
    assert not agent[0]["metadata"].get("deletionTimestamp"), "the DaemonSet pod was left alone"


def test_a_pod_of_a_namespace_being_deleted_is_waited_for_not_a_failed_drain(
    kube: Kube, namespace: str, nodes: tuple[str, str]
) -> None:
    """kubectl drain waits out the 403 that evictions get in a namespace being deleted; so does the controller."""
    target, _ = nodes
    leaving = f"leaving-{uuid.uuid4().hex[:6]}"
    hold = "spotguard.test/hold"  # keeps the pod (marked for deletion) until the test lets it go
    kube.request(
        "POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": leaving}}
    )
    wait_until(
        lambda: kube.request("GET", f"/api/v1/namespaces/{leaving}/serviceaccounts").get("items"),
        30,
        f"the default ServiceAccount of namespace {leaving}",
    )
    held = deployment("held", 1, {POOL: namespace})
    held["spec"]["template"]["metadata"]["finalizers"] = [hold]
    kube.request("POST", f"/apis/apps/v1/namespaces/{leaving}/deployments", body=held)
    kube.request(
        "POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", body=deployment("web", 1, {POOL: namespace})
    )
    work, gone_work = Workload(kube, namespace), Workload(kube, leaving)
    wait_until(
        lambda: len(work.running("web", target)) == 1 and len(gone_work.running("held", target)) == 1,
        60,
        f"a pod of each namespace Running on {target}",
    )
    (pod,) = gone_work.pods("held")
    pod_name = f"{leaving}/{pod['metadata']['name']}"

    def let_go() -> None:
        with contextlib.suppress(ApiException):
            kube.request(
                "PATCH",
                f"/api/v1/namespaces/{leaving}/pods/{pod['metadata']['name']}",
                body={"metadata": {"finalizers": None}},
                content_type=MERGE_PATCH,
            )

    try:
        kube.request("DELETE", f"/api/v1/namespaces/{leaving}")
        wait_until(
            lambda: gone_work.pods("held") and gone_work.pods("held")[0]["metadata"].get("deletionTimestamp"),
            30,
            f"the namespace controller to mark {pod_name} for deletion",
        )
        answers: list[tuple[str, EvictionResult]] = []
        drainer = Drainer(
            kube,
            on_event=lambda ref, result: answers.append((str(ref), result)),
            parallel=ThreadWorkers(lanes={}).evict_in_parallel,
        )
        outcome: list[DrainResult] = []
        drain = threading.Thread(target=lambda: outcome.append(drainer.drain(target, DrainOptions(timeout=60))))
        drain.start()

        drain.join(6.0)
        ended = [(r.outcome, r.message) for r in outcome]
        assert drain.is_alive() and not outcome, f"the drain ended while {pod_name} was still there: {ended}"
        assert (pod_name, EvictionResult.NAMESPACE_TERMINATING) in answers, answers
        let_go()
        drain.join(60)

        (result,) = outcome
        assert result.outcome is DrainOutcome.DRAINED, result.message
        assert pod_name in result.evicted and not result.remaining
        assert not gone_work.pods("held"), f"{pod_name} is gone"
    finally:
        let_go()
