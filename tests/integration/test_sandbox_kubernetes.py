"""The sandbox's Kubernetes half behaves like a real cluster where Spot Guard depends on it."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from sandbox.environment import Sandbox


def _eventually(what: str, check: Callable[[], bool], timeout: float = 60, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not true after {timeout:.0f}s")
        time.sleep(interval)


def test_two_writers_from_one_resource_version_one_gets_conflict(api_client: k8s.ApiClient, namespace: str) -> None:
    leases = k8s.CoordinationV1Api(api_client)
    now = dt.datetime.now(dt.UTC)
    leases.create_namespaced_lease(
        namespace,
        k8s.V1Lease(
            metadata=k8s.V1ObjectMeta(name="race"),
            spec=k8s.V1LeaseSpec(holder_identity="nobody", lease_duration_seconds=15, renew_time=now),
        ),
    )
    seen_by_a = leases.read_namespaced_lease("race", namespace)
    seen_by_b = leases.read_namespaced_lease("race", namespace)
    assert seen_by_a.metadata.resource_version == seen_by_b.metadata.resource_version

    seen_by_a.spec.holder_identity = "a"
    leases.replace_namespaced_lease("race", namespace, seen_by_a)
    seen_by_b.spec.holder_identity = "b"
    with pytest.raises(ApiException) as lost:
        leases.replace_namespaced_lease("race", namespace, seen_by_b)

    assert lost.value.status == 409
    assert leases.read_namespaced_lease("race", namespace).spec.holder_identity == "a"


def _pod(name: str, labels: dict[str, str]) -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name, labels=labels),
        spec=k8s.V1PodSpec(
            containers=[k8s.V1Container(name="app", image="registry.invalid/app:1")],
            termination_grace_period_seconds=1,
        ),
    )


def _eviction(name: str, namespace: str) -> k8s.V1Eviction:
    return k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=name, namespace=namespace))


def test_pdb_blocks_eviction_with_429_and_unprotected_pod_really_goes(
    core: k8s.CoreV1Api, api_client: k8s.ApiClient, namespace: str
) -> None:
    policy = k8s.PolicyV1Api(api_client)
    core.create_namespaced_pod(namespace, _pod("guarded", {"app": "guarded"}))
    core.create_namespaced_pod(namespace, _pod("free", {"app": "free"}))
    policy.create_namespaced_pod_disruption_budget(
        namespace,
        k8s.V1PodDisruptionBudget(
            metadata=k8s.V1ObjectMeta(name="guard"),
            spec=k8s.V1PodDisruptionBudgetSpec(
                min_available=1, selector=k8s.V1LabelSelector(match_labels={"app": "guarded"})
            ),
        ),
    )

    def running(name: str) -> bool:
        return bool(core.read_namespaced_pod(name, namespace).status.phase == "Running")

    _eventually("both pods Running on kwok nodes", lambda: running("guarded") and running("free"))

    def pdb_computed() -> bool:
        status = policy.read_namespaced_pod_disruption_budget("guard", namespace).status
        return status is not None and status.observed_generation == 1 and status.current_healthy == 1

    _eventually("kube-controller-manager computed the PDB status", pdb_computed)
    assert policy.read_namespaced_pod_disruption_budget("guard", namespace).status.disruptions_allowed == 0

    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod_eviction("guarded", namespace, _eviction("guarded", namespace))
    assert refused.value.status == 429
    assert core.read_namespaced_pod("guarded", namespace).metadata.deletion_timestamp is None

    core.create_namespaced_pod_eviction("free", namespace, _eviction("free", namespace))

    def gone() -> bool:
        try:
            core.read_namespaced_pod("free", namespace)
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    _eventually("the evicted pod is deleted (kwok finished it)", gone)


SGFE = {
    "apiVersion": "aws.amazon.com/v1",
    "kind": "SpotGuardFallbackEvent",
    "metadata": {"name": "fallback-test", "namespace": "kube-system", "labels": {"component": "spot-guard"}},
    "spec": {
        "spotASGName": "my-spot-asg",
        "onDemandASGName": "my-ondemand-asg",
        "onDemandInstanceID": "i-0987654321fedcba0",
        "onDemandNodeName": "ip-10-0-2-100",
        "timestamp": "2025-01-15T10:00:45Z",
        "minimumWaitDuration": "10m",
    },
}


def test_crd_rejects_a_number_for_spot_asg_name(sandbox: Sandbox) -> None:
    bad = (
        "apiVersion: aws.amazon.com/v1\nkind: SpotGuardFallbackEvent\n"
        "metadata: {name: bad, namespace: kube-system}\n"
        "spec: {spotASGName: 123, onDemandASGName: od, onDemandNodeName: n, timestamp: '2025-01-15T10:00:45Z'}\n"
    )
    result = sandbox.kubectl("create", "-f", "-", input_text=bad, check=False)
    assert result.returncode != 0
    assert 'spec.spotASGName: Invalid value: "integer": spec.spotASGName in body must be of type string' in (
        result.stderr
    )


def test_kubectl_get_sgfe_prints_the_seed_columns(api_client: k8s.ApiClient, sandbox: Sandbox) -> None:
    custom = k8s.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object("aws.amazon.com", "v1", "kube-system", "spotguardfallbackevents", SGFE)
    try:
        custom.patch_namespaced_custom_object_status(
            "aws.amazon.com",
            "v1",
            "kube-system",
            "spotguardfallbackevents",
            "fallback-test",
            {"status": {"phase": "Pending", "spotCapacityRestored": False, "scaleDownInitiated": False}},
        )
        table = sandbox.kubectl("get", "sgfe", "-n", "kube-system").stdout.splitlines()
        assert table[0].split() == ["NAME", "SPOT", "ASG", "ON-DEMAND", "NODE", "PHASE", "AGE"]
        row = next(line.split() for line in table[1:] if line.startswith("fallback-test"))
        assert row[:4] == ["fallback-test", "my-spot-asg", "ip-10-0-2-100", "Pending"]
    finally:
        custom.delete_namespaced_custom_object(
            "aws.amazon.com", "v1", "kube-system", "spotguardfallbackevents", "fallback-test"
        )
