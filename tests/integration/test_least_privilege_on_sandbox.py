"""Least privilege, on the sandbox's real API server (RBAC, the Node authorizer, ValidatingAdmissionPolicy):

- the controller and nodewatch, each with nothing but its own ServiceAccount's token, carry a whole rebalance
  recommendation through to an on-demand fallback, without a single refusal;
- SubjectAccessReviews: every permission they need is granted, the dangerous ones are not;
- the admission policy keeps a nodewatch token, bound to a pod on node A, to its own annotations on A.

The manifests are installed without the controller's Deployment (the controller runs here as a process) but
with the nodewatch DaemonSet, whose pods the nodewatch tokens are bound to (kwok runs them).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from nodewatch import annotations as contract
from sandbox.aws.client import SandboxAWSClient
from sandbox.environment import Sandbox
from sandbox.imds import NoticeSchedule
from tests.integration import spotguard_install as install
from tests.integration.spotguard_install import CONTROLLER_USER, NODEWATCH_USER
from tests.support import manifests as m
from tests.support.waiting import wait_until

SPOT_ASG = "spotguard-spot-1"
ON_DEMAND_ASG = "spotguard-ondemand-1"
NS = install.NAMESPACE
SGFE = ("aws.amazon.com", "v1", NS, "spotguardfallbackevents")
DENIED_WORDS = ("forbidden", "Forbidden")
SCENARIO_TIMEOUT = 120.0  # generous for a shared machine; the flow itself takes seconds


@pytest.fixture(scope="module")
def installed(sandbox: Sandbox, api_client: k8s.ApiClient) -> Iterator[None]:
    core = k8s.CoreV1Api(api_client)
    install.install_without(sandbox, "Deployment", "PodDisruptionBudget")
    yield
    install.remove_workloads(sandbox, core)


@pytest.fixture
def nodewatch_pods(installed: None, core: k8s.CoreV1Api) -> dict[str, Any]:
    """node name -> the Running nodewatch pod of the DaemonSet on it, for every spot node."""
    spot_nodes = {n.metadata.name for n in core.list_node(label_selector="eks.amazonaws.com/capacityType=SPOT").items}

    def running() -> dict[str, Any]:
        pods = [p for p in install.pods_of(core, "nodewatch") if p.status.phase == "Running"]
        return {p.spec.node_name: p for p in pods if p.metadata.deletion_timestamp is None}

    wait_until(lambda: set(running()) >= spot_nodes, timeout=60, what="a nodewatch pod on each spot node", interval=0.2)
    return running()


def _spot_nodes(core: k8s.CoreV1Api) -> list[Any]:
    nodes = core.list_node(label_selector=f"spotguard.io/asg={SPOT_ASG}").items
    return sorted((n for n in nodes if n.metadata.deletion_timestamp is None), key=lambda n: n.metadata.name)


# -- the whole flow, as the two ServiceAccounts ------------------------------------------------------------------


class Processes:
    """Starts the test's processes, each logging to its own file under the test's tmp_path."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[install.LoggedProcess] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> install.LoggedProcess:
        process = install.LoggedProcess(argv, env, self.directory / f"{name}.log")
        self.started.append(process)
        return process


@pytest.fixture
def processes(api_client: k8s.ApiClient, core: k8s.CoreV1Api, tmp_path: Path) -> Iterator[Processes]:
    """The test's processes, ended afterwards; then the SGFEs, the Lease and the Nodes' Spot Guard traces go."""
    started = Processes(tmp_path)
    yield started
    for process in started.started:
        process.close()
    custom = k8s.CustomObjectsApi(api_client)
    for item in custom.list_namespaced_custom_object(*SGFE)["items"]:
        custom.delete_namespaced_custom_object(*SGFE, item["metadata"]["name"])
    try:
        k8s.CoordinationV1Api(api_client).delete_namespaced_lease(m.CONTROLLER, NS)
    except ApiException as error:
        if error.status != 404:
            raise
    install.strip_spot_guard_traces(core)


def _refusals(process: install.LoggedProcess) -> list[str]:
    """Log lines that report the API server refusing a request (RBAC or admission: 403 Forbidden)."""
    return [line for line in process.log_text().splitlines() if any(word in line for word in DENIED_WORDS)]


def _process_env(sandbox: Sandbox, **settings: str) -> dict[str, str]:
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    env.update({k: v for k, v in sandbox.env().items() if k != "KUBECONFIG"})
    env.update({"PYTHONPATH": str(m.REPO), "PYTHONUNBUFFERED": "1", **settings})
    return env


def test_controller_and_nodewatch_as_their_service_accounts_fall_back_to_on_demand_without_a_refusal(
    sandbox: Sandbox,
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    nodewatch_pods: dict[str, Any],
    processes: Processes,
) -> None:
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    old = _spot_nodes(core)[0]
    zone, _, instance = old.spec.provider_id.removeprefix("aws:///").partition("/")
    controller_kubeconfig = install.kubeconfig_with_token(
        processes.directory / "controller.kubeconfig", sandbox.info, install.token(core, m.CONTROLLER), CONTROLLER_USER
    )
    nodewatch_kubeconfig = install.kubeconfig_with_token(
        processes.directory / "nodewatch.kubeconfig",
        sandbox.info,
        install.token(core, m.NODEWATCH, bound_pod=nodewatch_pods[old.metadata.name]),
        NODEWATCH_USER,
    )
    aws_sim.set_capacity(SPOT_ASG, capacity_short=True, retry_seconds=1)
    imds = sandbox.metadata_mock(instance, zone, NoticeSchedule(rebalance_in=2))

    controller = processes.start(
        "controller",
        [sys.executable, "-m", "controller.app.cli", "run", "--kubeconfig", str(controller_kubeconfig)],
        _process_env(
            sandbox,
            SPOT_ASG_NAME=SPOT_ASG,
            ON_DEMAND_ASG_NAME=ON_DEMAND_ASG,
            SPOT_GUARD_CAPACITY_POLL_INTERVAL="0.5",
            SPOT_GUARD_CAPACITY_CHECK_TIMEOUT="20",
            SPOT_GUARD_DRAIN_TIMEOUT="30",
            SPOT_GUARD_METRICS_HOST="127.0.0.1",
            SPOT_GUARD_METRICS_PORT="0",
            SPOT_GUARD_NAMESPACE=NS,
            SPOT_GUARD_LEASE_NAMESPACE=NS,
            SPOT_GUARD_LEASE_NAME=m.CONTROLLER,  # the one Lease its Role names
        ),
    )
    nodewatch = processes.start(
        "nodewatch",
        [
            sys.executable,
            "-m",
            "nodewatch",
            "--node-name",
            old.metadata.name,
            "--imds-url",
            imds.url,
            "--kubeconfig",
            str(nodewatch_kubeconfig),
            "--poll-interval",
            "1",
            "--listen",
            "127.0.0.1:0",
        ],
        _process_env(sandbox),
    )

    custom = k8s.CustomObjectsApi(core.api_client)

    def fallback_event() -> dict[str, Any] | None:
        items = [
            i for i in custom.list_namespaced_custom_object(*SGFE)["items"] if i["spec"]["spotASGName"] == SPOT_ASG
        ]
        return items[0] if items else None

    def old_node_gone() -> bool:
        return not [n for n in core.list_node().items if n.metadata.name == old.metadata.name]

    def progress() -> str:
        return f"\ncontroller:\n{controller.log_tail(15)}\nnodewatch:\n{nodewatch.log_tail(10)}"

    def unrefused(condition: Callable[[], bool]) -> Callable[[], bool]:
        """``condition``, but fail at once, with the refusal, as soon as either process is refused something."""

        def check() -> bool:
            for name, process in (("controller", controller), ("nodewatch", nodewatch)):
                refused = _refusals(process)
                assert not refused, f"the {name} was refused something:\n" + "\n".join(refused[:5])
            return condition()

        return check

    try:
        wait_until(
            unrefused(lambda: fallback_event() is not None), SCENARIO_TIMEOUT, "a SpotGuardFallbackEvent", interval=0.2
        )
        wait_until(
            unrefused(old_node_gone), SCENARIO_TIMEOUT, f"the old spot node {old.metadata.name} retired", interval=0.2
        )
    except AssertionError as error:
        raise AssertionError(f"{error}{progress()}") from None

    event = fallback_event()
    assert event is not None
    assert event["spec"]["onDemandASGName"] == ON_DEMAND_ASG
    on_demand = {i["instance_id"] for i in aws_sim.group(ON_DEMAND_ASG)["instances"]}
    assert event["spec"]["onDemandInstanceID"] in on_demand
    assert instance not in {i["instance_id"] for i in aws_sim.group(SPOT_ASG)["instances"]}
    # The controller recorded its Events (best effort: a refused write would only be logged).
    node_events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={old.metadata.name}")
    mine = [e for e in node_events.items if e.source.component == m.CONTROLLER and e.last_timestamp >= started]
    assert mine, f"no Event from the controller about {old.metadata.name}{progress()}"

    assert controller.stop() == 0
    assert nodewatch.stop() == 0
    for name, process in (("controller", controller), ("nodewatch", nodewatch)):
        assert not _refusals(process), f"the {name} was refused something:\n" + "\n".join(_refusals(process))
    assert "released" in controller.log_text()  # its Lease too, as its own ServiceAccount


# -- SubjectAccessReviews -----------------------------------------------------------------------------------------

# (verb, resource, subresource, group, namespace, name)
Access = tuple[str, str, str, str, str, str]

CONTROLLER_NEEDS: list[Access] = [
    *[(verb, "nodes", "", "", "", "") for verb in ("get", "list", "watch", "patch")],
    ("list", "pods", "", "", "", ""),
    ("create", "pods", "eviction", "", "team-a", "web-0"),
    ("list", "poddisruptionbudgets", "", "policy", "", ""),
    *[(verb, "spotguardfallbackevents", "", "aws.amazon.com", NS, "") for verb in ("get", "list", "create")],
    *[(verb, "spotguardfallbackevents", "", "aws.amazon.com", NS, "f-1") for verb in ("get", "patch", "delete")],
    ("update", "spotguardfallbackevents", "status", "aws.amazon.com", NS, "f-1"),
    ("create", "leases", "", "coordination.k8s.io", NS, ""),
    ("get", "leases", "", "coordination.k8s.io", NS, m.CONTROLLER),
    ("update", "leases", "", "coordination.k8s.io", NS, m.CONTROLLER),
    *[(verb, "events", "", "", namespace, "") for verb in ("create", "patch") for namespace in ("default", NS)],
]

CONTROLLER_MUST_NOT: list[Access] = [
    ("get", "secrets", "", "", NS, "any"),
    ("list", "secrets", "", "", "", ""),
    ("create", "pods", "exec", "", "team-a", "web-0"),
    ("delete", "pods", "", "", "team-a", "web-0"),
    ("create", "pods", "", "", NS, ""),
    ("get", "pods", "log", "", NS, "any"),
    ("delete", "nodes", "", "", "", "ip-10-0-0-1"),
    ("update", "nodes", "status", "", "", "ip-10-0-0-1"),
    ("create", "clusterroles", "", "rbac.authorization.k8s.io", "", ""),
    ("bind", "clusterroles", "", "rbac.authorization.k8s.io", "", "cluster-admin"),
    ("escalate", "roles", "", "rbac.authorization.k8s.io", NS, "spotguard-controller"),
    ("create", "rolebindings", "", "rbac.authorization.k8s.io", NS, ""),
    ("update", "leases", "", "coordination.k8s.io", NS, "kube-controller-manager"),
    ("get", "leases", "", "coordination.k8s.io", "default", m.CONTROLLER),
    ("update", "leases", "", "coordination.k8s.io", "team-a", m.CONTROLLER),
    ("create", "leases", "", "coordination.k8s.io", "default", ""),
    ("create", "spotguardfallbackevents", "", "aws.amazon.com", "default", ""),
    ("create", "events", "", "", "team-a", ""),
    ("create", "serviceaccounts", "token", "", NS, m.CONTROLLER),
    ("patch", "deployments", "", "apps", NS, m.CONTROLLER),
    ("get", "configmaps", "", "", NS, "any"),
    ("create", "customresourcedefinitions", "", "apiextensions.k8s.io", "", ""),
    ("update", "validatingadmissionpolicies", "", "admissionregistration.k8s.io", "", m.NODEWATCH_POLICY),
]

NODEWATCH_NEEDS: list[Access] = [
    ("get", "nodes", "", "", "", "ip-10-0-0-1"),
    ("patch", "nodes", "", "", "", "ip-10-0-0-1"),
]

NODEWATCH_MUST_NOT: list[Access] = [
    *[(verb, "nodes", "", "", "", "") for verb in ("list", "watch", "create", "deletecollection")],
    *[(verb, "nodes", "", "", "", "ip-10-0-0-1") for verb in ("update", "delete")],
    ("patch", "nodes", "status", "", "", "ip-10-0-0-1"),
    ("get", "nodes", "proxy", "", "", "ip-10-0-0-1"),
    ("list", "pods", "", "", "", ""),
    ("create", "pods", "eviction", "", "team-a", "web-0"),
    ("create", "pods", "exec", "", NS, "any"),
    ("get", "secrets", "", "", NS, "any"),
    ("create", "events", "", "", "default", ""),
    ("get", "leases", "", "coordination.k8s.io", NS, m.CONTROLLER),
    ("list", "spotguardfallbackevents", "", "aws.amazon.com", NS, ""),
    ("create", "rolebindings", "", "rbac.authorization.k8s.io", NS, ""),
]


def _denied_or_granted(api_client: k8s.ApiClient, user: str, accesses: list[Access], expected: bool) -> list[str]:
    wrong = []
    for verb, resource, subresource, group, namespace, name in accesses:
        allowed = install.can(
            api_client, user, verb, resource, group=group, subresource=subresource, namespace=namespace, name=name
        )
        if allowed != expected:
            what = "/".join(filter(None, (resource, subresource)))
            wrong.append(f"{verb} {what}{'.' + group if group else ''} {namespace}/{name}")
    return wrong


@pytest.mark.parametrize(
    ("user", "needs", "must_not"),
    [(CONTROLLER_USER, CONTROLLER_NEEDS, CONTROLLER_MUST_NOT), (NODEWATCH_USER, NODEWATCH_NEEDS, NODEWATCH_MUST_NOT)],
    ids=["controller", "nodewatch"],
)
def test_each_service_account_has_what_it_needs_and_nothing_dangerous(
    installed: None, api_client: k8s.ApiClient, user: str, needs: list[Access], must_not: list[Access]
) -> None:
    assert _denied_or_granted(api_client, user, needs, expected=True) == [], "needed but not granted"
    assert _denied_or_granted(api_client, user, must_not, expected=False) == [], "granted but dangerous"


# -- the admission policy -----------------------------------------------------------------------------------------


def _patch_node(client: k8s.ApiClient, name: str, body: dict[str, Any]) -> int:
    """The HTTP status of a merge patch of Node ``name``."""
    try:
        k8s.CoreV1Api(client).patch_node(name, body)
    except ApiException as error:
        return int(error.status)
    return 200


def test_a_nodewatch_token_changes_only_its_own_annotations_on_its_own_node(
    sandbox: Sandbox, core: k8s.CoreV1Api, nodewatch_pods: dict[str, Any]
) -> None:
    node_a, node_b = (n.metadata.name for n in _spot_nodes(core)[:2])
    as_nodewatch_on_a = install.client_with_token(
        sandbox.info, install.token(core, m.NODEWATCH, bound_pod=nodewatch_pods[node_a])
    )
    notice = {contract.REBALANCE_NOTICE_TIME: "2026-11-21T10:00:00Z", contract.INSTANCE_ID: "i-0aaaaaaaaaaaaaaaa"}
    try:
        assert _patch_node(as_nodewatch_on_a, node_a, {"metadata": {"annotations": notice}}) == 200
        annotations = core.read_node(node_a).metadata.annotations
        assert {key: annotations[key] for key in notice} == notice
        # ... and take them off again (a null deletes in a merge patch)
        assert (
            _patch_node(as_nodewatch_on_a, node_a, {"metadata": {"annotations": {contract.INSTANCE_ID: None}}}) == 200
        )
        assert contract.INSTANCE_ID not in (core.read_node(node_a).metadata.annotations or {})

        refused: dict[str, tuple[str, dict[str, Any]]] = {
            "Spot Guard's annotation on another node": (node_b, {"metadata": {"annotations": notice}}),
            "a label on its own node": (node_a, {"metadata": {"labels": {"spotguard.io/x": "y"}}}),
            "a taint on its own node": (
                node_a,
                {"spec": {"taints": [{"key": "spotguard.io/x", "value": "y", "effect": "NoSchedule"}]}},
            ),
            "cordoning its own node": (node_a, {"spec": {"unschedulable": True}}),
            "another annotation on its own node": (node_a, {"metadata": {"annotations": {"example.com/x": "y"}}}),
            "removing another annotation": (node_a, {"metadata": {"annotations": {"kwok.x-k8s.io/node": None}}}),
            "the controller's replacement record": (
                node_a,
                {"metadata": {"annotations": {"spotguard.io/replacement": "{}"}}},
            ),
        }
        for what, (name, body) in refused.items():
            assert _patch_node(as_nodewatch_on_a, name, body) == 403, what
        node = core.read_node(node_a)
        assert "spotguard.io/x" not in (node.metadata.labels or {})
        assert not [t for t in node.spec.taints or [] if t.key == "spotguard.io/x"] and not node.spec.unschedulable

        # A token of the same account that is not bound to a pod names no node: it may change none.
        unbound = install.client_with_token(sandbox.info, install.token(core, m.NODEWATCH))
        assert _patch_node(unbound, node_a, {"metadata": {"annotations": notice}}) == 403
        # Reading its node is allowed; listing nodes is not.
        assert k8s.CoreV1Api(as_nodewatch_on_a).read_node(node_a).metadata.name == node_a
        with pytest.raises(ApiException) as listing:
            k8s.CoreV1Api(as_nodewatch_on_a).list_node()
        assert listing.value.status == 403
    finally:
        install.strip_spot_guard_traces(core)
