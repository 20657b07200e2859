"""Only the controller writes the controller's state, on the sandbox's real API server (the Node authorizer,
NodeRestriction, RBAC, and manifests/controller-state-admission.yaml):

- a kubelet's identity (``system:node:<name>`` in ``system:nodes``, a client certificate as kubelets have) and a
  ServiceAccount with plain ``nodes/patch`` may still write their other annotations, but neither may create,
  change or remove the replacement record (or any other controller annotation) or the finalizer; the refusal says
  why;
- the controller's own ServiceAccount may.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controller.adapters.kube import MERGE_PATCH
from controller.model.ownership import CONTROLLER_ANNOTATIONS, CONTROLLER_FINALIZERS
from controller.model.record import ANNOTATION as RECORD
from controller.model.record import FINALIZER
from sandbox.environment import Sandbox
from sandbox.pki import issue_client_certificate
from tests.integration import spotguard_install as install
from tests.support import manifests as m
from tests.support.waiting import wait_until

FORGED = json.dumps(
    {
        "phase": "Retiring",
        "trigger": "rebalance",
        "instanceId": "i-0123456789abcdef0",
        "spotAsg": "spotguard-spot-1",
        "onDemandAsg": "spotguard-ondemand-1",
        "replacementNode": "some-other-node",
    }
)
PATCHER = "sg-node-patcher"  # a ServiceAccount with nothing but get and patch on nodes


@pytest.fixture(scope="module")
def policy_installed(sandbox: Sandbox, api_client: k8s.ApiClient) -> Iterator[None]:
    """The kustomization's CRD, RBAC and admission policies (no workloads), and a ServiceAccount with nodes/patch."""
    core = k8s.CoreV1Api(api_client)
    install.install_without(sandbox, "Deployment", "PodDisruptionBudget", "DaemonSet")
    rbac = k8s.RbacAuthorizationV1Api(api_client)
    core.create_namespaced_service_account(install.NAMESPACE, {"metadata": {"name": PATCHER}})
    rbac.create_cluster_role(
        {
            "metadata": {"name": PATCHER},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": PATCHER},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": PATCHER},
            "subjects": [{"kind": "ServiceAccount", "name": PATCHER, "namespace": install.NAMESPACE}],
        }
    )
    try:
        yield
    finally:
        with contextlib.suppress(ApiException):
            rbac.delete_cluster_role_binding(PATCHER)
        with contextlib.suppress(ApiException):
            rbac.delete_cluster_role(PATCHER)
        with contextlib.suppress(ApiException):
            core.delete_namespaced_service_account(PATCHER, install.NAMESPACE)


def _node_client(sandbox: Sandbox, node: str, directory: Path) -> k8s.ApiClient:
    """The API as the kubelet of ``node``: a client certificate for system:node:<node> in group system:nodes."""
    pki = sandbox.info.workdir / "pki"
    if not (pki / "ca.key").exists():
        pytest.skip("this sandbox's Kubernetes (k3s) does not hand out its CA key")
    cert, key = issue_client_certificate(pki, f"system:node:{node}", ("system:nodes",), directory)
    configuration = k8s.Configuration()
    configuration.host = sandbox.info.server
    configuration.ssl_ca_cert = str(sandbox.info.ca_cert)
    configuration.cert_file = str(cert)
    configuration.key_file = str(key)
    return k8s.ApiClient(configuration)


def _token_client(sandbox: Sandbox, core: k8s.CoreV1Api, account: str) -> k8s.ApiClient:
    return install.client_with_token(sandbox.info, install.token(core, account))


def _patch(api: k8s.ApiClient, node: str, metadata: dict[str, Any]) -> None:
    api.call_api(
        f"/api/v1/nodes/{node}",
        "PATCH",
        body={"metadata": metadata},
        header_params={"Content-Type": MERGE_PATCH, "Accept": "application/json"},
        auth_settings=["BearerToken"],
        _preload_content=False,
    )


def _refusal(write: Callable[[], None]) -> str:
    """The API server's message for a write that must be refused (fails the test if it is not)."""
    with pytest.raises(ApiException) as raised:
        write()
    assert raised.value.status == 403, f"expected 403, got {raised.value.status}: {raised.value.body}"
    return str(json.loads(raised.value.body)["message"])


def _annotations(core: k8s.CoreV1Api, node: str) -> dict[str, str]:
    return dict(core.read_node(node).metadata.annotations or {})


def _finalizers(core: k8s.CoreV1Api, node: str) -> list[str]:
    return list(core.read_node(node).metadata.finalizers or [])


@pytest.fixture
def node(core: k8s.CoreV1Api, policy_installed: None) -> Iterator[str]:
    with install.node_of_its_own(core, "state") as name:
        yield name
        # Break glass (system:masters) to clean up what the controller's identity left.
        with contextlib.suppress(ApiException):
            _patch(core.api_client, name, {"finalizers": None, "annotations": dict.fromkeys(CONTROLLER_ANNOTATIONS)})


def _wait_for_policy(sandbox: Sandbox, core: k8s.CoreV1Api, node: str) -> None:
    """The policy is enforced a moment after it is created: probe with dry-run writes until one is refused."""
    patcher = _token_client(sandbox, core, PATCHER)

    def refused() -> bool:
        try:
            k8s.CoreV1Api(patcher).patch_node(node, {"metadata": {"annotations": {RECORD: FORGED}}}, dry_run="All")
        except ApiException as exc:
            return bool(exc.status == 403)
        return False

    wait_until(refused, timeout=30, what="the controller-state admission policy to be enforced", interval=0.2)


def test_a_kubelet_may_not_write_the_record_or_the_finalizer_on_its_own_node(
    sandbox: Sandbox, core: k8s.CoreV1Api, node: str, tmp_path: Path
) -> None:
    _wait_for_policy(sandbox, core, node)
    kubelet = _node_client(sandbox, node, tmp_path)

    # The kubelet may write its own Node (the Node authorizer and NodeRestriction let it)...
    _patch(kubelet, node, {"annotations": {"example.com/kubelet-note": "fine"}})
    assert _annotations(core, node)["example.com/kubelet-note"] == "fine"
    # ...but not the controller's state on it.
    message = _refusal(lambda: _patch(kubelet, node, {"annotations": {RECORD: FORGED}}))
    assert f"only Spot Guard's controller (ServiceAccount {m.CONTROLLER}) may create, change or remove" in message
    assert f"annotation {RECORD} on a Node: the controller acts on it in AWS" in message
    assert f"system:node:{node} may not write it" in message
    finalizer = _refusal(lambda: _patch(kubelet, node, {"finalizers": [FINALIZER]}))
    assert f"may add or remove finalizer {FINALIZER} on a Node" in finalizer
    for key in CONTROLLER_ANNOTATIONS:
        _refusal(lambda key=key: _patch(kubelet, node, {"annotations": {key: "forged"}}))  # type: ignore[misc]
    assert RECORD not in _annotations(core, node) and _finalizers(core, node) == []


def test_a_kubelet_may_not_register_its_node_with_a_record(
    sandbox: Sandbox, core: k8s.CoreV1Api, node: str, tmp_path: Path
) -> None:
    _wait_for_policy(sandbox, core, node)
    name = f"sg-state-new-{uuid.uuid4().hex[:8]}"
    kubelet = _node_client(sandbox, name, tmp_path)
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "annotations": {RECORD: FORGED}}}

    message = _refusal(lambda: k8s.CoreV1Api(kubelet).create_node(body))

    assert f"annotation {RECORD}" in message
    with pytest.raises(ApiException) as gone:
        core.read_node(name)
    assert gone.value.status == 404


def test_plain_nodes_patch_may_not_write_the_record_or_the_finalizer(
    sandbox: Sandbox, core: k8s.CoreV1Api, node: str
) -> None:
    _wait_for_policy(sandbox, core, node)
    patcher = _token_client(sandbox, core, PATCHER)
    user = f"system:serviceaccount:{install.NAMESPACE}:{PATCHER}"

    _patch(patcher, node, {"annotations": {"example.com/note": "fine"}})  # RBAC lets it patch Nodes
    message = _refusal(lambda: _patch(patcher, node, {"annotations": {RECORD: FORGED}}))
    assert f"annotation {RECORD} on a Node" in message and f"{user} may not write it" in message
    _refusal(lambda: _patch(patcher, node, {"finalizers": [*CONTROLLER_FINALIZERS]}))
    assert RECORD not in _annotations(core, node)


def test_the_controllers_service_account_writes_and_removes_its_state_and_no_one_else_may_touch_it(
    sandbox: Sandbox, core: k8s.CoreV1Api, node: str, tmp_path: Path
) -> None:
    _wait_for_policy(sandbox, core, node)
    controller = _token_client(sandbox, core, m.CONTROLLER)
    kubelet = _node_client(sandbox, node, tmp_path)
    patcher = _token_client(sandbox, core, PATCHER)
    nodewatch = _token_client(sandbox, core, m.NODEWATCH)

    _patch(controller, node, {"annotations": {RECORD: FORGED}, "finalizers": [FINALIZER]})
    assert _annotations(core, node)[RECORD] == FORGED and _finalizers(core, node) == [FINALIZER]

    # What the controller wrote, no one else changes or removes.
    for intruder in (kubelet, patcher, nodewatch):
        _refusal(lambda api=intruder: _patch(api, node, {"annotations": {RECORD: FORGED.replace("1", "2")}}))  # type: ignore[misc]
        _refusal(lambda api=intruder: _patch(api, node, {"annotations": {RECORD: None}}))  # type: ignore[misc]
        _refusal(lambda api=intruder: _patch(api, node, {"finalizers": None}))  # type: ignore[misc]
    # Changes to the rest of the Node (here the kubelet's own annotation) still go through.
    _patch(kubelet, node, {"annotations": {"example.com/kubelet-note": "still fine"}})

    _patch(controller, node, {"annotations": {RECORD: None}, "finalizers": None})
    assert RECORD not in _annotations(core, node) and _finalizers(core, node) == []
