"""`kubectl apply -k manifests/` on the sandbox's real API server: it installs, the workloads land where they
should (kwok runs the pods), the pod templates pass the restricted Pod Security Standard, and the overlay
docs/install.md shows configures image, ASG names, region and IAM role."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from sandbox.aws.client import SandboxAWSClient
from sandbox.environment import Sandbox
from tests.integration import spotguard_install as install
from tests.support import manifests as m
from tests.support.waiting import wait_until

SPOT_LABEL = "eks.amazonaws.com/capacityType=SPOT"
LINUX_LABEL = "kubernetes.io/os=linux"
ON_DEMAND_LABEL = "eks.amazonaws.com/capacityType=ON_DEMAND"
ON_DEMAND_ASG = "spotguard-ondemand-1"


@pytest.fixture(scope="module")
def applied(sandbox: Sandbox, api_client: k8s.ApiClient) -> Iterator[str]:
    """The whole kustomization, server-side applied; kubectl's output. The workloads go again afterwards."""
    result = install.apply_kustomization(sandbox)
    yield result.stdout
    install.remove_workloads(sandbox, k8s.CoreV1Api(api_client))


def _running_on(pods: list[Any]) -> list[str]:
    return sorted(p.spec.node_name for p in pods if p.status.phase == "Running" and p.spec.node_name)


def test_server_side_apply_installs_every_object_and_a_second_apply_changes_nothing(
    sandbox: Sandbox, applied: str
) -> None:
    objects = m.kustomize(sandbox.binaries.kubectl)
    for obj in objects:
        where = ["-n", obj["metadata"]["namespace"]] if obj["metadata"].get("namespace") else []
        sandbox.kubectl("get", *where, f"{obj['kind']}/{obj['metadata']['name']}", "-o", "name")
    assert applied.count("serverside-applied") == len(objects)
    assert {"Deployment", "DaemonSet", "ValidatingAdmissionPolicy", "CustomResourceDefinition"} <= {
        o["kind"] for o in objects
    }

    diff = sandbox.kubectl("diff", "--server-side", "-k", str(m.MANIFESTS), check=False)
    assert diff.returncode == 0, f"applying again would change:\n{diff.stdout}{diff.stderr}"


def test_nodewatch_runs_on_each_linux_node_and_the_controller_on_two_different_nodes(
    sandbox: Sandbox, applied: str, core: k8s.CoreV1Api
) -> None:
    linux_nodes = sorted(n.metadata.name for n in core.list_node(label_selector=LINUX_LABEL).items)
    spot_nodes = {n.metadata.name for n in core.list_node(label_selector=SPOT_LABEL).items}
    assert len(spot_nodes) >= 2 and spot_nodes <= set(linux_nodes)

    wait_until(
        lambda: _running_on(install.pods_of(core, "nodewatch")) == linux_nodes,
        timeout=60,
        what=f"one running nodewatch pod on each Linux node {linux_nodes}, spot or not",
        interval=0.2,
    )
    wait_until(
        lambda: len(set(_running_on(install.pods_of(core, "controller")))) == 2,
        timeout=60,
        what="two running controller pods on two different nodes",
        interval=0.2,
    )
    for pod in install.pods_of(core, "controller"):
        assert pod.spec.service_account_name == m.CONTROLLER
    env_from = install.pods_of(core, "controller")[0].spec.containers[0].env_from
    config_map = core.read_namespaced_config_map(env_from[0].config_map_ref.name, install.NAMESPACE)
    assert config_map.data["SPOT_GUARD_CAPACITY_CHECK_TIMEOUT"] == "180s"
    assert config_map.data["SPOT_GUARD_SCALE_TIMEOUT"] == "60s"
    assert config_map.data["LOG_LEVEL"] == "info"
    policy = k8s.PolicyV1Api(core.api_client)
    wait_until(
        lambda: (
            policy.read_namespaced_pod_disruption_budget(m.CONTROLLER, install.NAMESPACE).status.disruptions_allowed
            == 1
        ),
        timeout=30,
        what="the controller's PodDisruptionBudget to allow exactly one disruption (one of two replicas)",
        interval=0.2,
    )


def test_the_controller_prefers_a_node_that_is_not_spot(
    applied: str, core: k8s.CoreV1Api, aws_sim: SandboxAWSClient, autoscaling: Any, namespace: str
) -> None:
    autoscaling.set_desired_capacity(AutoScalingGroupName=ON_DEMAND_ASG, DesiredCapacity=1, HonorCooldown=False)

    def on_demand_nodes() -> list[str]:
        nodes = core.list_node(label_selector=ON_DEMAND_LABEL).items
        ready = [n for n in nodes if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])]
        return [n.metadata.name for n in ready if not n.spec.taints]

    wait_until(on_demand_nodes, timeout=60, what="a schedulable on-demand node", interval=0.2)
    (on_demand,) = on_demand_nodes()
    # Half the on-demand node is taken: left to resource balancing alone, the scheduler would now pick spot nodes.
    filler = {"name": "filler", "image": "filler", "resources": {"requests": {"cpu": "1", "memory": "4Gi"}}}
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "filler"},
            "spec": {"nodeName": on_demand, "containers": [filler], "terminationGracePeriodSeconds": 0},
        },
    )
    # Reschedule both replicas now that there is a node that is not spot.
    core.delete_collection_namespaced_pod(
        install.NAMESPACE, label_selector="app.kubernetes.io/component=controller", grace_period_seconds=0
    )

    def placed() -> list[str]:
        pods = [p for p in install.pods_of(core, "controller") if p.metadata.deletion_timestamp is None]
        return _running_on(pods) if len(pods) == 2 else []

    wait_until(lambda: len(placed()) == 2, timeout=60, what="both controller replicas running again", interval=0.2)
    nodes = placed()
    assert nodes.count(on_demand) == 1, f"one replica on the on-demand node {on_demand}, the other elsewhere: {nodes}"
    assert len(set(nodes)) == 2


def test_the_pod_templates_pass_the_restricted_pod_security_standard(
    sandbox: Sandbox, applied: str, core: k8s.CoreV1Api, namespace: str
) -> None:
    core.patch_namespace(namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    pods: list[dict[str, Any]] = []
    for workload in m.workloads(m.kustomize(sandbox.binaries.kubectl)):
        spec = copy.deepcopy(m.pod_spec(workload))
        spec.pop("serviceAccountName")  # the accounts exist in kube-system only; admission is what is tested here
        spec["nodeName"] = "nowhere"
        pods.append(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": workload["metadata"]["name"]}, "spec": spec}
        )
    assert len(pods) == 2
    for pod in pods:
        core.create_namespaced_pod(namespace, pod, dry_run="All")  # 403 if Pod Security refused it

    # The same admission refuses what the manifests avoid: the standard is really enforced in this namespace.
    rejected = copy.deepcopy(pods[0])
    rejected["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(k8s.ApiException) as refused:
        core.create_namespaced_pod(namespace, rejected, dry_run="All")
    assert refused.value.status == 403 and "restricted" in str(refused.value.body)


def _install_docs_overlay() -> str:
    docs = (m.REPO / "docs" / "install.md").read_text()
    install_section = docs.split("## Install with kustomize", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", install_section, re.S)
    assert match, "docs/install.md: no overlay example under ## Install with kustomize"
    return match.group(1)


def test_the_overlay_of_the_install_docs_configures_image_groups_region_and_role(
    sandbox: Sandbox, applied: str, tmp_path: Path
) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    text = _install_docs_overlay()
    assert "../../manifests" in text
    # kustomize takes relative paths only: from the overlay to this repository's manifests/.
    (overlay / "kustomization.yaml").write_text(text.replace("../../manifests", os.path.relpath(m.MANIFESTS, overlay)))

    objects = m.kustomize(sandbox.binaries.kubectl, overlay)
    config_map = m.find(objects, "ConfigMap")
    assert config_map["data"]["SPOT_ASG_NAME"] == "my-cluster-spot"
    assert config_map["data"]["ON_DEMAND_ASG_NAME"] == "my-cluster-on-demand"
    assert config_map["data"]["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert config_map["data"]["SPOT_GUARD_CAPACITY_CHECK_TIMEOUT"] == "180s"  # the base's defaults stay
    assert "<" not in "".join(config_map["data"].values())
    deployment = m.find(objects, "Deployment", m.CONTROLLER)
    (container,) = m.pod_spec(deployment)["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]
    images = {c["image"] for w in m.workloads(objects) for c in m.pod_spec(w)["containers"]}
    assert images == {"<registry>/spotguard:0.1.0"}
    account = m.find(objects, "ServiceAccount", m.CONTROLLER)
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/spotguard-controller"
    }

    # The API server accepts it as it is (server-side dry run: nothing changes on the sandbox).
    for workload in m.workloads(objects):
        for c in m.pod_spec(workload)["containers"]:
            c["image"] = "example/spotguard:0.1.0"  # "<registry>" is the one placeholder left for the reader
    dry_run = sandbox.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", input_text=yaml.safe_dump_all(objects), check=False
    )
    assert dry_run.returncode == 0, dry_run.stderr
