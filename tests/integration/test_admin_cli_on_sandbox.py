"""The ``spotguard`` admin commands against the real sandbox: every command, each output format, exit codes 0/1/2.

Commands run in-process through click's CliRunner with the sandbox's environment (KUBECONFIG, AWS_* as
``spotguard sandbox`` prints them) and real clients; a few run as the installed ``spotguard`` executable to
prove the entry point and the process exit codes. Every object a test creates is removed afterwards: SGFEs
and nodewatch pods live in the test's own namespace, Leases have the test's own name, node annotations
are removed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controller.adapters.election import KubeLeaseStore, LeaseElector
from controller.adapters.kube import Kube
from controller.adapters.pause_switch import KEYS as PAUSE_KEYS
from controller.adapters.pause_switch import PauseSwitch
from controller.adapters.sgfe_store import FallbackEvents
from controller.app.cli import main
from controller.clock import SystemClock
from controller.model.sgfe import Phase, Spec, Status
from controller.observability.events import EventRecorder, sgfe_ref
from nodewatch import annotations as contract
from sandbox.aws.client import SandboxAWSClient
from sandbox.environment import Sandbox

SPOT_ASG = "spotguard-spot-1"
ON_DEMAND_ASG = "spotguard-ondemand-1"
SPOTGUARD = Path(sys.executable).with_name("spotguard")
RBAC_MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "controller-rbac.yaml"

Run = Callable[..., Result]


@pytest.fixture
def run(sandbox: Sandbox) -> Run:
    """``run("leader", "-o", "json")``: the command in-process, pointed at the sandbox like a shell would be."""

    def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        environment = {**sandbox.env(), **(env or {})}
        return CliRunner().invoke(main, list(args), env=environment, input=input, prog_name="spotguard")

    return invoke


def spotguard(sandbox: Sandbox, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed executable, as a script would call it."""
    return subprocess.run(
        [str(SPOTGUARD), *args],
        env={"PATH": "/usr/bin:/bin", **sandbox.env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


# -- events -------------------------------------------------------------------------------------------------


def make_sgfe(kube: Kube, namespace: str, name: str, phase: str, timestamp: str) -> None:
    spec = Spec(SPOT_ASG, ON_DEMAND_ASG, f"od-{name}", timestamp, minimum_wait_duration="10m")
    FallbackEvents(kube, namespace).create(name, spec, Status(phase=phase, message=f"{name} is {phase}"))


def sgfe_names(api_client: k8s.ApiClient, namespace: str) -> list[str]:
    items = k8s.CustomObjectsApi(api_client).list_namespaced_custom_object(
        "aws.amazon.com", "v1", namespace, "spotguardfallbackevents"
    )["items"]
    return sorted(item["metadata"]["name"] for item in items)


def test_events_list_describe_delete_in_every_format(run: Run, api_client: k8s.ApiClient, namespace: str) -> None:
    kube = Kube(api_client)
    make_sgfe(kube, namespace, "fallback-new", Phase.MONITORING, "2030-01-01T00:00:00Z")
    make_sgfe(kube, namespace, "fallback-old", Phase.COMPLETED, "2020-01-01T00:00:00Z")
    uid = FallbackEvents(kube, namespace).get("fallback-new").uid
    EventRecorder(kube).normal(sgfe_ref("fallback-new", namespace, uid), "PhaseChanged", "Pending -> Monitoring")

    table = run("events", "list", "-n", namespace)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "SPOT", "ASG", "ON-DEMAND", "ASG", "ON-DEMAND", "NODE", "AGE"]
    assert [line.split()[:2] for line in lines[1:]] == [["fallback-new", "Monitoring"], ["fallback-old", "Completed"]]
    as_json = json.loads(run("events", "list", "-n", namespace, "-o", "json").stdout)
    as_yaml = yaml.safe_load(run("events", "list", "-n", namespace, "-o", "yaml").stdout)
    assert as_json == as_yaml
    assert [i["metadata"]["name"] for i in as_json["items"]] == ["fallback-new", "fallback-old"]
    everywhere = run("events", "list", "-A", "--phase", "Completed")
    assert f"{namespace}   fallback-old" in everywhere.stdout
    assert "fallback-new" not in everywhere.stdout

    described = run("events", "describe", "fallback-new", "-n", namespace)
    assert described.exit_code == 0, described.output
    assert "Phase:                   Monitoring" in described.stdout
    assert "On-Demand Node:          od-fallback-new" in described.stdout
    events_section = described.stdout.split("Events:", 1)[1]
    assert "PhaseChanged" in events_section
    assert "Pending -> Monitoring" in events_section
    assert "spotguard-controller" in events_section
    data = json.loads(run("events", "describe", "fallback-new", "-n", namespace, "-o", "json").stdout)
    assert data["status"]["phase"] == "Monitoring"
    assert [e["reason"] for e in data["events"]] == ["PhaseChanged"]
    assert yaml.safe_load(run("events", "describe", "fallback-new", "-n", namespace, "-o", "yaml").stdout) == data

    missing = run("events", "describe", "nope", "-n", namespace)
    assert missing.exit_code == 1
    assert f"SpotGuardFallbackEvent {namespace}/nope not found" in missing.stderr

    refused = run("events", "delete", "fallback-new", "-n", namespace, input="n\n")
    assert refused.exit_code == 1
    assert sgfe_names(api_client, namespace) == ["fallback-new", "fallback-old"]
    deleted = run("events", "delete", "fallback-new", "-n", namespace, "--yes", "-o", "json")
    assert deleted.exit_code == 0, deleted.output
    assert json.loads(deleted.stdout)["deleted"] is True
    assert "still acting on it" in deleted.stderr
    assert sgfe_names(api_client, namespace) == ["fallback-old"]
    assert run("events", "delete", "fallback-new", "-n", namespace, "--yes").exit_code == 1


def test_events_cleanup_removes_only_old_completed_events(run: Run, api_client: k8s.ApiClient, namespace: str) -> None:
    kube = Kube(api_client)
    make_sgfe(kube, namespace, "done-old", Phase.COMPLETED, "2020-01-01T00:00:00Z")
    make_sgfe(kube, namespace, "done-new", Phase.COMPLETED, "2030-01-01T00:00:00Z")
    make_sgfe(kube, namespace, "failed-old", Phase.FAILED, "2020-01-01T00:00:00Z")
    make_sgfe(kube, namespace, "monitoring-old", Phase.MONITORING, "2020-01-01T00:00:00Z")

    dry = run("events", "cleanup", "-n", namespace, "--dry-run", "-o", "json")
    assert dry.exit_code == 0, dry.output
    assert [(i["name"], i["result"]) for i in json.loads(dry.stdout)["items"]] == [("done-old", "would delete")]
    assert len(sgfe_names(api_client, namespace)) == 4

    cleaned = run("events", "cleanup", "-n", namespace, "--ttl", "24h")
    assert cleaned.exit_code == 0, cleaned.output
    assert "1 of 4 events deleted (Completed more than 24h ago)." in cleaned.stdout
    assert sgfe_names(api_client, namespace) == ["done-new", "failed-old", "monitoring-old"]

    again = run("events", "cleanup", "-n", namespace, "-o", "yaml")
    assert yaml.safe_load(again.stdout)["items"] == []
    assert run("events", "cleanup", "-n", namespace, "--ttl", "forever").exit_code == 2


# -- leader, pause, resume ----------------------------------------------------------------------------------


@pytest.fixture
def lease_name(api_client: k8s.ApiClient) -> Iterator[str]:
    """A Lease name of this test's own in kube-system; the Lease is deleted afterwards."""
    name = f"spotguard-admin-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        k8s.CoordinationV1Api(api_client).delete_namespaced_lease(name, "kube-system")
    except ApiException as error:
        if error.status != 404:
            raise


def test_leader_pause_and_resume_with_an_elector_holding_the_lease(
    run: Run, sandbox: Sandbox, api_client: k8s.ApiClient, lease_name: str
) -> None:
    elector = LeaseElector(
        KubeLeaseStore.from_configuration(api_client.configuration, "kube-system", lease_name),
        identity="controller-a",
        exit_process=lambda reason: None,
    )
    flag = ["--lease-name", lease_name]

    assert run("leader", *flag).exit_code == 1  # no Lease yet
    assert elector.try_acquire_or_renew()

    shown = run("leader", *flag)
    assert shown.exit_code == 0, shown.output
    assert "Holder:          controller-a" in shown.stdout
    assert "State:           leading" in shown.stdout
    assert "Paused:          no" in shown.stdout

    assert run("pause", *flag).exit_code == 2  # --reason is required
    paused = run("pause", *flag, "--reason", "rehearsal", "--by", "oncall")
    assert paused.exit_code == 0, paused.output
    assert elector.try_acquire_or_renew()  # the elector renews after the CLI's patch and keeps the switch
    data = json.loads(run("leader", *flag, "-o", "json").stdout)
    assert data["holder"] == "controller-a"
    assert data["state"] == "leading"
    assert data["transitions"] == 0
    assert data["paused"]["paused"] is True
    assert data["paused"]["by"] == "oncall"
    assert data["paused"]["reason"] == "rehearsal"
    assert yaml.safe_load(run("leader", *flag, "-o", "yaml").stdout)["paused"] == data["paused"]
    # What a replica sees through the switch:
    switch = PauseSwitch(Kube(api_client), "kube-system", lease_name, SystemClock())
    assert switch.paused() is True

    resumed = spotguard(sandbox, "resume", *flag, "-o", "json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["wasPaused"] is True
    assert switch.refresh().paused is False
    lease = k8s.CoordinationV1Api(api_client).read_namespaced_lease(lease_name, "kube-system")
    assert not set(lease.metadata.annotations or {}) & set(PAUSE_KEYS)

    assert elector.release()
    released = run("leader", *flag, "-o", "json")
    assert released.exit_code == 1
    assert json.loads(released.stdout)["state"] == "released"
    assert "no live leader" in released.stderr


def test_pausing_before_any_controller_ran_creates_the_lease_an_elector_then_keeps(
    run: Run, api_client: k8s.ApiClient, lease_name: str
) -> None:
    assert run("pause", "--lease-name", lease_name, "--reason", "not yet").exit_code == 0

    elector = LeaseElector(
        KubeLeaseStore.from_configuration(api_client.configuration, "kube-system", lease_name),
        identity="controller-b",
        exit_process=lambda reason: None,
    )
    assert elector.try_acquire_or_renew()

    data = json.loads(run("leader", "--lease-name", lease_name, "-o", "json").stdout)
    assert data["holder"] == "controller-b"
    assert data["paused"]["reason"] == "not yet"
    assert elector.release()


# -- simulate -----------------------------------------------------------------------------------------------


@pytest.fixture
def spot_node(core: k8s.CoreV1Api) -> Iterator[k8s.V1Node]:
    """One of the sandbox's spot nodes; nodewatch's annotations are removed from it afterwards."""
    node = core.list_node(label_selector="eks.amazonaws.com/capacityType=SPOT").items[0]
    yield node
    core.patch_node(node.metadata.name, {"metadata": {"annotations": dict.fromkeys(contract.NODEWATCH_KEYS)}})


def test_simulate_writes_what_nodewatch_would(run: Run, core: k8s.CoreV1Api, spot_node: k8s.V1Node) -> None:
    name = spot_node.metadata.name
    zone, instance = spot_node.spec.provider_id.split("/")[-2:]

    result = run("simulate", "rebalance", name)

    assert result.exit_code == 0, result.output
    annotations = core.read_node(name).metadata.annotations
    notices = contract.parse(annotations)
    assert notices.rebalance is not None
    assert notices.rebalance.cleared is None
    assert notices.rebalance.first_seen == notices.rebalance.notice_time
    assert (notices.instance_id, notices.availability_zone) == (instance, zone)

    interrupted = run("simulate", "interruption", name, "--in", "2m", "-o", "yaml")
    assert interrupted.exit_code == 0, interrupted.output
    shown = yaml.safe_load(interrupted.stdout)
    assert shown["annotations"][contract.INTERRUPTION_ACTION] == "terminate"
    notices = contract.parse(core.read_node(name).metadata.annotations)
    assert notices.interruption is not None
    assert (notices.interruption.time - notices.interruption.first_seen).total_seconds() == 120  # type: ignore[operator]

    as_json = run("simulate", "rebalance", name, "-o", "json")
    assert json.loads(as_json.stdout)["annotations"][contract.INSTANCE_ID] == instance
    missing = run("simulate", "rebalance", "no-such-node")
    assert missing.exit_code == 1
    assert "node no-such-node not found" in missing.stderr
    assert run("simulate", "interruption", name, "--action", "reboot").exit_code == 2


# -- doctor -------------------------------------------------------------------------------------------------

PAIR_ENV = {"SPOT_ASG_NAME": SPOT_ASG, "ON_DEMAND_ASG_NAME": ON_DEMAND_ASG}


def checks(result: Result | subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    return {c["check"]: c for c in json.loads(result.stdout)["checks"]}


def test_doctor_on_the_bare_sandbox_fails_on_nodewatch_and_says_what_to_do(
    sandbox: Sandbox, core: k8s.CoreV1Api
) -> None:
    linux = len(core.list_node(label_selector="kubernetes.io/os=linux").items)
    result = spotguard(sandbox, "doctor", "-o", "json", env=PAIR_ENV)

    assert result.returncode == 1, result.stderr
    found = checks(result)
    not_passed = {name: c["status"] for name, c in found.items() if c["status"] != "PASS"}
    assert not_passed["nodewatch"] == "FAIL"
    assert not_passed["iam"] == "WARN"  # moto does not implement iam:SimulatePrincipalPolicy
    assert set(not_passed) <= {"nodewatch", "iam", "controller", "pause"}  # no controller runs on the bare sandbox
    assert found["nodewatch"]["whatToDo"].startswith("kubectl apply -k manifests/")
    assert linux >= sandbox.spot_desired * sandbox.pairs
    assert f"{linux} of {linux} Linux nodes are unwatched" in found["nodewatch"]["finding"]
    assert "Auto Scaling has no DryRun parameter" in found["iam"]["finding"]
    assert "cannot verify IAM without iam:SimulatePrincipalPolicy" in found["iam"]["finding"]
    for name in ("crd", "rbac", "aws-credentials", f"headroom/{SPOT_ASG}", f"capacity-rebalance/{SPOT_ASG}"):
        assert found[name]["status"] == "PASS", found[name]
    assert "spotguard-spot-1 -> spotguard-ondemand-1 (configured)" in found["asg-pairs"]["finding"]
    assert "[6/6] AWS Auto Scaling groups and IAM" in result.stderr
    assert "Error: doctor found 1 failing check(s)" in result.stderr


@pytest.fixture
def nodewatch_pods(core: k8s.CoreV1Api, namespace: str) -> list[str]:
    """A stand-in nodewatch pod on every Linux node (kwok makes them Ready), in the test's namespace."""
    nodes = [n.metadata.name for n in core.list_node(label_selector="kubernetes.io/os=linux").items]
    for node in nodes:
        core.create_namespaced_pod(
            namespace,
            k8s.V1Pod(
                metadata=k8s.V1ObjectMeta(
                    name=f"nodewatch-{node.split('.')[0]}",
                    labels={"app.kubernetes.io/name": "spotguard", "app.kubernetes.io/component": "nodewatch"},
                ),
                spec=k8s.V1PodSpec(node_name=node, containers=[k8s.V1Container(name="nodewatch", image="nodewatch")]),
            ),
        )

    def all_ready() -> bool:
        pods = core.list_namespaced_pod(namespace).items
        return len(pods) == len(nodes) and all(
            any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []) for p in pods
        )

    wait_until("the nodewatch pods to be Ready", all_ready)
    return nodes


def test_doctor_passes_with_nodewatch_on_every_linux_node(run: Run, nodewatch_pods: list[str]) -> None:
    result = run("doctor", env=PAIR_ENV)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    nodewatch = next(line for line in lines if line.split()[1:2] == ["nodewatch"])
    assert nodewatch.split()[0] == "PASS"
    assert f"each of the {len(nodewatch_pods)} Linux nodes" in nodewatch
    assert lines[-1].endswith("0 failed")
    assert "what to do:" in result.stdout  # under the warnings
    assert yaml.safe_load(run("doctor", "-o", "yaml", env=PAIR_ENV).stdout)["ok"] is True


def test_doctor_fails_a_group_whose_az_rebalance_runs_and_warns_on_a_launch_hook_longer_than_the_deadline(
    run: Run, aws_sim: SandboxAWSClient, autoscaling: Any
) -> None:
    autoscaling.resume_processes(AutoScalingGroupName=ON_DEMAND_ASG, ScalingProcesses=["AZRebalance"])
    autoscaling.put_lifecycle_hook(
        LifecycleHookName="bootstrap",
        AutoScalingGroupName=SPOT_ASG,
        LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
        HeartbeatTimeout=900,
    )

    result = run("doctor", "-o", "json", env=PAIR_ENV)

    found = checks(result)
    assert found[f"az-rebalance/{ON_DEMAND_ASG}"]["status"] == "FAIL"
    assert found[f"az-rebalance/{ON_DEMAND_ASG}"]["whatToDo"] == (
        f"aws autoscaling suspend-processes --auto-scaling-group-name {ON_DEMAND_ASG} --scaling-processes AZRebalance"
    )
    assert found[f"az-rebalance/{SPOT_ASG}"]["status"] == "PASS"  # the sandbox suspends it, as operators must
    assert found[f"launch-hooks/{SPOT_ASG}"]["status"] == "WARN"
    assert "bootstrap (15m)" in found[f"launch-hooks/{SPOT_ASG}"]["finding"]
    for name in (SPOT_ASG, ON_DEMAND_ASG):
        assert found[f"managed-tag/{name}"]["status"] == "PASS"

    autoscaling.suspend_processes(AutoScalingGroupName=ON_DEMAND_ASG, ScalingProcesses=["AZRebalance"])
    assert checks(run("doctor", "-o", "json", env=PAIR_ENV))[f"az-rebalance/{ON_DEMAND_ASG}"]["status"] == "PASS"


def test_doctor_checks_rbac_as_the_controllers_service_account(run: Run) -> None:
    account = "system:serviceaccount:kube-system:spotguard-nobody"

    result = run("doctor", "--no-aws", "-o", "json", "--as", account)

    assert result.exit_code == 1
    rbac = checks(result)["rbac"]
    assert rbac["status"] == "FAIL"
    assert rbac["finding"].startswith(f"{account} lacks 20 of 20 permissions")
    assert "aws-credentials" not in checks(result)


@pytest.fixture
def controller_account(sandbox: Sandbox, namespace: str) -> Iterator[str]:
    """manifests/controller-rbac.yaml applied for a ServiceAccount of this test's own (names suffixed, the
    namespaced objects in the test's namespace); everything is deleted afterwards."""
    suffix = namespace
    documents = [d for d in yaml.safe_load_all(RBAC_MANIFEST.read_text()) if d]
    for document in documents:
        meta = document["metadata"]
        meta["name"] = f"{meta['name']}-{suffix}"
        if document["kind"] in ("Role", "RoleBinding", "ServiceAccount"):
            meta["namespace"] = meta.get("namespace", namespace)
        if "roleRef" in document:
            document["roleRef"]["name"] = f"{document['roleRef']['name']}-{suffix}"
        for subject in document.get("subjects", []):
            subject["name"] = f"{subject['name']}-{suffix}"
            subject["namespace"] = namespace
    text = yaml.safe_dump_all(documents)
    sandbox.kubectl("apply", "-f", "-", input_text=text)
    accounts = [d["metadata"]["name"] for d in documents if d["kind"] == "ServiceAccount"]
    yield f"system:serviceaccount:{namespace}:{accounts[0]}"
    sandbox.kubectl("delete", "--ignore-not-found", "-f", "-", input_text=text)


def test_doctor_finds_the_shipped_rbac_sufficient_for_the_controller(
    run: Run, namespace: str, controller_account: str
) -> None:
    result = run(
        "doctor",
        "--no-aws",
        "-o",
        "json",
        "-n",
        namespace,
        "--lease-name",
        "spotguard-controller",
        "--as",
        controller_account,
    )

    rbac = checks(result)["rbac"]
    assert rbac["status"] == "PASS", rbac
    assert rbac["finding"].startswith(f"{controller_account} has all 20 permissions")


def test_doctor_usage_errors_exit_2(sandbox: Sandbox) -> None:
    result = spotguard(sandbox, "doctor", "--spot-asg", SPOT_ASG)
    assert result.returncode == 2
    assert "go together" in result.stderr


# -- connection, usage and completion -----------------------------------------------------------------------


def test_an_unreachable_api_server_or_unknown_context_exits_1(run: Run, sandbox: Sandbox, tmp_path: Path) -> None:
    config = yaml.safe_load(sandbox.kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = "https://127.0.0.1:1"
    dead = tmp_path / "kubeconfig"
    dead.write_text(yaml.safe_dump(config))

    unreachable = run("events", "list", "--kubeconfig", str(dead))
    unknown = run("leader", "--context", "no-such-context")

    assert unreachable.exit_code == 1
    assert "cannot reach the API server" in unreachable.stderr
    assert unknown.exit_code == 1
    assert "cannot load the cluster configuration" in unknown.stderr
    assert "no-such-context" in unknown.stderr


def test_the_executable_exits_2_on_usage_errors_and_prints_completion(sandbox: Sandbox) -> None:
    assert spotguard(sandbox, "events", "list", "-o", "xml").returncode == 2
    assert spotguard(sandbox, "nonsense").returncode == 2

    script = spotguard(sandbox, env={"_SPOTGUARD_COMPLETE": "bash_source"})
    assert script.returncode == 0
    assert "complete -o nosort -F _spotguard_completion spotguard" in script.stdout

    completed = spotguard(
        sandbox,
        env={
            "_SPOTGUARD_COMPLETE": "bash_complete",
            "COMP_WORDS": "spotguard simulate rebalance ip-",
            "COMP_CWORD": "3",
        },
    )
    nodes = [line.split(",", 1)[1] for line in completed.stdout.splitlines()]
    assert len(nodes) == sandbox.spot_desired
    assert all(name.startswith("ip-") for name in nodes)

    listed = spotguard(sandbox, "events", "list", "-A", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["kind"] == "List"
