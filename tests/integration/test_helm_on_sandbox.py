"""`helm install` of charts/spotguard onto the sandbox's real API server: the release installs (a wrong value is
refused before anything is created), nodewatch lands on every Linux node, and the controller and nodewatch, each
with nothing but the token of the ServiceAccount the chart created, carry a rebalance recommendation through to an
on-demand fallback without a single refusal (RBAC and the admission policy as the chart installed them).

The chart runs the controller with 0 replicas here (kwok's pods run nothing): the controller is a local
``spotguard run`` process with the chart's ServiceAccount token, and nodewatch a local process with a token bound to
the DaemonSet's pod on the recommended node, as in test_least_privilege_on_sandbox.py for the kustomize base.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from sandbox.aws.client import SandboxAWSClient
from sandbox.environment import Sandbox
from sandbox.imds import NoticeSchedule
from tests.integration import spotguard_install as install
from tests.integration.spotguard_install import CONTROLLER_USER, NODEWATCH_USER
from tests.support import chart as c
from tests.support import manifests as m
from tests.support.waiting import wait_until

RELEASE = "spotguard"
NS = install.NAMESPACE
SPOT_ASG = "spotguard-spot-1"
ON_DEMAND_ASG = "spotguard-ondemand-1"
SGFE = ("aws.amazon.com", "v1", NS, "spotguardfallbackevents")
SCENARIO_TIMEOUT = 120.0
VALUES = {
    "controller": {"replicas": 0, "spotASGName": SPOT_ASG, "onDemandASGName": ON_DEMAND_ASG},
    "awsRegion": "us-east-1",
}


def helm(sandbox: Sandbox, *args: str, check: bool = True) -> Any:
    return c.run_helm(*args, "--kubeconfig", str(sandbox.kubeconfig), check=check)


@pytest.fixture(scope="module")
def installed(sandbox: Sandbox, api_client: k8s.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``helm install`` of the chart; its notes. The release (and its pods) go afterwards; the CRD stays."""
    values = tmp_path_factory.mktemp("helm") / "values.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    # --take-ownership and --force-conflicts: other tests of the session may have applied the kustomize base's objects
    # already (server-side, as kubectl's field manager, some with the test's own namespace in them).
    result = helm(
        sandbox, "install", RELEASE, str(c.CHART), "-n", NS, "-f", str(values), "--take-ownership", "--force-conflicts"
    )
    yield result.stdout
    helm(sandbox, "uninstall", RELEASE, "-n", NS, "--wait=legacy", check=False)
    install.remove_workloads(sandbox, k8s.CoreV1Api(api_client))


def test_a_wrong_value_is_refused_at_install_and_nothing_is_created(sandbox: Sandbox, tmp_path: Path) -> None:
    values = tmp_path / "wrong.yaml"
    values.write_text(yaml.safe_dump({"controller": {"retirePolicy": "delete-the-node"}}))
    result = helm(sandbox, "install", "spotguard-wrong", str(c.CHART), "-n", NS, "-f", str(values), check=False)
    assert result.returncode != 0
    assert "at '/controller/retirePolicy': value must be one of 'drain', 'keep-until-interruption'" in result.stderr
    status = helm(sandbox, "status", "spotguard-wrong", "-n", NS, check=False)
    assert status.returncode != 0 and "not found" in status.stderr


def test_the_release_installs_says_what_to_check_and_nodewatch_runs_on_every_linux_node(
    sandbox: Sandbox, installed: str, core: k8s.CoreV1Api
) -> None:
    assert "STATUS: deployed" in installed
    assert f"spotguard doctor -n {NS} --as system:serviceaccount:{NS}:spotguard-controller" in installed
    for kind, name in (("ClusterRole", m.CONTROLLER), ("ValidatingAdmissionPolicy", m.NODEWATCH_POLICY)):
        got = sandbox.kubectl("get", kind.lower(), name, "-o", "json")
        assert '"meta.helm.sh/release-name": "spotguard"' in got.stdout, f"{kind} {name} is not the release's"
    linux = sorted(n.metadata.name for n in core.list_node(label_selector="kubernetes.io/os=linux").items)

    def running() -> list[str]:
        pods = install.pods_of(core, "nodewatch")
        return sorted(p.spec.node_name for p in pods if p.status.phase == "Running" and p.spec.node_name)

    wait_until(lambda: running() == linux, 60, f"a running nodewatch pod on each Linux node {linux}", interval=0.2)


def _process_env(sandbox: Sandbox, **settings: str) -> dict[str, str]:
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    env.update({k: v for k, v in sandbox.env().items() if k != "KUBECONFIG"})
    env.update({"PYTHONPATH": str(m.REPO), "PYTHONUNBUFFERED": "1", **settings})
    return env


def _refusals(process: install.LoggedProcess) -> list[str]:
    return [line for line in process.log_text().splitlines() if "orbidden" in line]


@pytest.fixture
def processes(api_client: k8s.ApiClient, core: k8s.CoreV1Api) -> Iterator[list[install.LoggedProcess]]:
    started: list[install.LoggedProcess] = []
    yield started
    for process in started:
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


def test_a_rebalance_falls_back_to_on_demand_through_the_installed_rbac(
    sandbox: Sandbox,
    *,
    installed: str,
    core: k8s.CoreV1Api,
    aws_sim: SandboxAWSClient,
    processes: list[install.LoggedProcess],
    tmp_path: Path,
) -> None:
    nodes = sorted(core.list_node(label_selector=f"spotguard.io/asg={SPOT_ASG}").items, key=lambda n: n.metadata.name)
    old = nodes[0]
    zone, _, instance = old.spec.provider_id.removeprefix("aws:///").partition("/")

    def nodewatch_pod() -> Any:
        pods = [p for p in install.pods_of(core, "nodewatch") if p.spec.node_name == old.metadata.name]
        return pods[0] if pods and pods[0].status.phase == "Running" else None

    wait_until(nodewatch_pod, 60, f"the chart's nodewatch pod on {old.metadata.name}", interval=0.2)
    controller_kubeconfig = install.kubeconfig_with_token(
        tmp_path / "controller.kubeconfig", sandbox.info, install.token(core, m.CONTROLLER), CONTROLLER_USER
    )
    nodewatch_kubeconfig = install.kubeconfig_with_token(
        tmp_path / "nodewatch.kubeconfig",
        sandbox.info,
        install.token(core, m.NODEWATCH, bound_pod=nodewatch_pod()),
        NODEWATCH_USER,
    )
    aws_sim.set_capacity(SPOT_ASG, capacity_short=True, retry_seconds=1)
    imds = sandbox.metadata_mock(instance, zone, NoticeSchedule(rebalance_in=2))
    # The controller's configuration as the chart rendered it (its ConfigMap), plus the local test's endpoints.
    config_map = core.read_namespaced_config_map("spotguard-controller-config", NS).data
    local = {
        "AWS_DEFAULT_REGION": sandbox.env().get("AWS_DEFAULT_REGION", ""),  # the sandbox's region
        "SPOT_GUARD_CAPACITY_POLL_INTERVAL": "0.5",
        "SPOT_GUARD_CAPACITY_CHECK_TIMEOUT": "20",
        "SPOT_GUARD_METRICS_HOST": "127.0.0.1",
        "SPOT_GUARD_METRICS_PORT": "0",
        "SPOT_GUARD_NAMESPACE": NS,
        "SPOT_GUARD_LEASE_NAMESPACE": NS,
        "SPOT_GUARD_LEASE_NAME": m.CONTROLLER,
    }
    controller = install.LoggedProcess(
        [sys.executable, "-m", "controller.app.cli", "run", "--kubeconfig", str(controller_kubeconfig)],
        _process_env(sandbox, **{**config_map, **local}),
        tmp_path / "controller.log",
    )
    processes.append(controller)
    nodewatch = install.LoggedProcess(
        [
            sys.executable,
            "-m",
            "nodewatch",
            *install.nodewatch_argv(old.metadata.name, imds.url, nodewatch_kubeconfig),
        ],
        _process_env(sandbox),
        tmp_path / "nodewatch.log",
    )
    processes.append(nodewatch)
    custom = k8s.CustomObjectsApi(core.api_client)

    def fallen_back() -> bool:
        for name, process in (("controller", controller), ("nodewatch", nodewatch)):
            assert not _refusals(process), f"the {name} was refused something:\n" + "\n".join(_refusals(process)[:5])
        events = custom.list_namespaced_custom_object(*SGFE)["items"]
        gone = old.metadata.name not in {n.metadata.name for n in core.list_node().items}
        return bool(events) and gone

    try:
        wait_until(fallen_back, SCENARIO_TIMEOUT, "an SGFE and the old spot node retired", interval=0.2)
    except AssertionError as error:
        raise AssertionError(
            f"{error}\ncontroller:\n{controller.log_tail(15)}\nnodewatch:\n{nodewatch.log_tail(10)}"
        ) from None
    (event,) = custom.list_namespaced_custom_object(*SGFE)["items"]
    assert (event["spec"]["spotASGName"], event["spec"]["onDemandASGName"]) == (SPOT_ASG, ON_DEMAND_ASG)
    on_demand = {i["instance_id"] for i in aws_sim.group(ON_DEMAND_ASG)["instances"]}
    assert event["spec"]["onDemandInstanceID"] in on_demand
    assert instance not in {i["instance_id"] for i in aws_sim.group(SPOT_ASG)["instances"]}
    assert controller.stop() == 0 and nodewatch.stop() == 0
    assert not _refusals(controller) and not _refusals(nodewatch)
