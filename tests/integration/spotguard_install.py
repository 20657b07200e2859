"""Installing manifests/ on the sandbox, and acting as the ServiceAccounts it creates.

The sandbox is shared by the whole test session, so what a test installs must not change what the next test
sees: ``remove_workloads`` takes the Deployment and the DaemonSet (and their pods, at once) away again, and
leaves the CRD, RBAC and the admission policy, which change nothing for other users.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controller.adapters.kube import MERGE_PATCH, Kube
from controller.model.record import ANNOTATION as RECORD_ANNOTATION
from controller.model.record import FINALIZER, TAINT_KEY
from nodewatch.annotations import INSTANCE_ID, NODEWATCH_KEYS, REBALANCE_NOTICE_TIME
from sandbox.cluster import ClusterInfo, write_kubeconfig
from sandbox.environment import Sandbox
from tests.support import manifests as m
from tests.support.faulty_imds import FaultyIMDS
from tests.support.waiting import wait_until

NAMESPACE = "kube-system"
SELECTOR = "app.kubernetes.io/name=spotguard"
CONTROLLER_USER = f"system:serviceaccount:{NAMESPACE}:{m.CONTROLLER}"
NODEWATCH_USER = f"system:serviceaccount:{NAMESPACE}:{m.NODEWATCH}"
NOTICE_TIME = "2026-11-21T10:00:00Z"
SERVICE_ACCOUNT_GROUPS = ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"]


def apply_kustomization(sandbox: Sandbox, directory: Path = m.MANIFESTS) -> subprocess.CompletedProcess[str]:
    """``kubectl apply --server-side -k directory``; fails the test with kubectl's words if it fails."""
    result = sandbox.kubectl("apply", "--server-side", "-k", str(directory), check=False)
    assert result.returncode == 0, f"kubectl apply --server-side -k {directory} failed:\n{result.stderr}"
    return result


def apply_objects(sandbox: Sandbox, objects: Iterable[m.Obj]) -> None:
    """Server-side apply of some of the kustomization's objects (as ``kubectl kustomize`` renders them)."""
    text = yaml.safe_dump_all(list(objects), sort_keys=False)
    result = sandbox.kubectl("apply", "--server-side", "-f", "-", input_text=text, check=False)
    assert result.returncode == 0, f"kubectl apply --server-side failed:\n{result.stderr}"


def install_without(sandbox: Sandbox, *kinds: str) -> list[m.Obj]:
    """Install the kustomization except objects of ``kinds``; returns what was installed."""
    objects = [o for o in m.kustomize(sandbox.binaries.kubectl) if o["kind"] not in kinds]
    apply_objects(sandbox, objects)
    return objects


def remove_workloads(sandbox: Sandbox, core: k8s.CoreV1Api, timeout: float = 60) -> None:
    """Delete Spot Guard's Deployment, DaemonSet and PodDisruptionBudget, and their pods without a grace period.

    Owners go first without cascading (so nothing recreates a pod), then the pods are deleted with grace 0:
    kwok would otherwise keep each for its terminationGracePeriodSeconds, in the way of later drains.
    """
    for kind in ("deployment", "daemonset", "replicaset"):
        sandbox.kubectl(
            "-n", NAMESPACE, "delete", kind, "-l", SELECTOR, "--cascade=orphan", "--ignore-not-found", "--wait=false"
        )
    sandbox.kubectl("-n", NAMESPACE, "delete", "pdb", "-l", SELECTOR, "--ignore-not-found", "--wait=false")
    deadline = time.monotonic() + timeout
    while True:
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
        if not pods:
            return
        assert time.monotonic() < deadline, f"Spot Guard's pods still there: {[p.metadata.name for p in pods]}"
        sandbox.kubectl(
            "-n", NAMESPACE, "delete", "pods", "-l", SELECTOR, "--grace-period=0", "--force", "--ignore-not-found"
        )
        time.sleep(0.2)


def pods_of(core: k8s.CoreV1Api, component: str) -> list[Any]:
    selector = f"{SELECTOR},app.kubernetes.io/component={component}"
    return list(core.list_namespaced_pod(NAMESPACE, label_selector=selector).items)


def token(core: k8s.CoreV1Api, account: str, bound_pod: Any = None, seconds: int = 3600) -> str:
    """A TokenRequest for ``account`` in kube-system; bound to ``bound_pod`` (and so to its node) if given."""
    spec: dict[str, Any] = {"expirationSeconds": seconds}
    if bound_pod is not None:
        spec["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": bound_pod.metadata.name,
            "uid": bound_pod.metadata.uid,
        }
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    response = core.create_namespaced_service_account_token(account, NAMESPACE, body)
    return str(response.status.token)


def client_with_token(info: ClusterInfo, bearer: str) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    configuration.host = info.server
    configuration.ssl_ca_cert = str(info.ca_cert)
    configuration.api_key = {"authorization": f"Bearer {bearer}"}
    return k8s.ApiClient(configuration)


def kubeconfig_with_token(path: Path, info: ClusterInfo, bearer: str, user: str) -> Path:
    write_kubeconfig(path, info.server, info.ca_cert, bearer, user=user)
    return path


def can(
    api_client: k8s.ApiClient,
    user: str,
    verb: str,
    resource: str,
    *,
    group: str = "",
    subresource: str = "",
    namespace: str = "",
    name: str = "",
) -> bool:
    """A SubjectAccessReview for a ServiceAccount user of kube-system: is ``verb`` on ``resource`` allowed?"""
    attributes = {"verb": verb, "group": group, "resource": resource}
    for key, value in (("subresource", subresource), ("namespace", namespace), ("name", name)):
        if value:
            attributes[key] = value
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": SERVICE_ACCOUNT_GROUPS, "resourceAttributes": attributes},
    }
    answer = k8s.AuthorizationV1Api(api_client).create_subject_access_review(review)
    return bool(answer.status.allowed)


def strip_spot_guard_traces(core: k8s.CoreV1Api) -> None:
    """Take notices, replacement records, the finalizer, the taint and the cordon off the sandbox's Nodes."""
    kube = Kube(core.api_client)
    keys = [*NODEWATCH_KEYS, RECORD_ANNOTATION]
    for node in core.list_node(label_selector="spotguard.io/asg").items:
        annotations = node.metadata.annotations or {}
        metadata: dict[str, Any] = {}
        spec: dict[str, Any] = {}
        if any(key in annotations for key in keys):
            metadata["annotations"] = {key: None for key in keys if key in annotations}
        if FINALIZER in (node.metadata.finalizers or []):
            metadata["finalizers"] = [f for f in node.metadata.finalizers if f != FINALIZER]
        taints = node.spec.taints or []
        if any(t.key == TAINT_KEY for t in taints):
            spec["taints"] = [
                {"key": t.key, "value": t.value, "effect": t.effect} for t in taints if t.key != TAINT_KEY
            ]
        if node.spec.unschedulable:
            spec["unschedulable"] = False
        patch = {key: value for key, value in (("metadata", metadata), ("spec", spec)) if value}
        if patch:
            with contextlib.suppress(ApiException):
                kube.request("PATCH", f"/api/v1/nodes/{node.metadata.name}", body=patch, content_type=MERGE_PATCH)


class LoggedProcess:
    """A child process whose stdout and stderr go to one log file; ``stop`` ends it (SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path = m.REPO,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of ``pattern`` in the log; fails with the log's tail if the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.log_text())
            if found:
                return found
            assert self.proc.poll() is None, f"{self.argv[0]} exited with {self.proc.returncode}:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"no {pattern!r} in the log within {timeout:g} s:\n{self.log_tail()}"
            time.sleep(0.05)

    def stop(self, timeout: float = 30, *, pid: int | None = None) -> int:
        """SIGTERM (to ``pid`` if given, e.g. the command inside a wrapper) and the exit status; SIGKILL (and a
        failure) if it does not exit within ``timeout``."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid if pid is not None else self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.argv} did not stop within {timeout:g} s:\n{self.log_tail()}") from None
        finally:
            self._log.close()

    def close(self) -> None:
        """Make sure the process is gone; idempotent."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if not self._log.closed:
            self._log.close()


@contextlib.contextmanager
def node_of_its_own(core: k8s.CoreV1Api, purpose: str) -> Iterator[str]:
    """A Node object for one test (no kubelet or kwok behind it), deleted afterwards."""
    name = f"sg-{purpose}-{uuid.uuid4().hex[:8]}"
    core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    try:
        yield name
    finally:
        with contextlib.suppress(ApiException):
            core.delete_node(name)


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    """(status, body) of a plain GET; (0, b"") if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())
    except (urllib.error.URLError, OSError):
        return 0, b""


def nodewatch_argv(node: str, imds_url: str, kubeconfig: Path | None = None) -> list[str]:
    """Flags for a short nodewatch run on 127.0.0.1; in-cluster credentials unless ``kubeconfig`` is given."""
    argv = [f"--node-name={node}", f"--imds-url={imds_url}", "--poll-interval=0.2", "--listen=127.0.0.1:0"]
    return [*argv, f"--kubeconfig={kubeconfig}"] if kubeconfig else argv


def check_nodewatch_works(
    process: LoggedProcess, core: k8s.CoreV1Api, node: str, imds: FaultyIMDS, instance_id: str
) -> None:
    """nodewatch serves its probes and metrics, turns ready, and records the rebalance recommendation that
    ``imds`` shows (next to the instance id, ``instance_id``) on its Node."""
    address = process.wait_for_log(r"probes and metrics on ([0-9.]+:\d+)", timeout=60).group(1)
    expected = {REBALANCE_NOTICE_TIME: NOTICE_TIME, INSTANCE_ID: instance_id}
    imds.set_rebalance(NOTICE_TIME)

    def recorded() -> bool:
        annotations = core.read_node(node).metadata.annotations or {}
        return {key: annotations.get(key) for key in expected} == expected

    wait_until(recorded, timeout=60, what=f"nodewatch to record {expected} on node {node}", interval=0.1)
    wait_until(lambda: http_get(f"http://{address}/readyz")[0] == 200, timeout=60, what="nodewatch ready", interval=0.1)
    assert http_get(f"http://{address}/healthz")[0] == 200
    status, metrics = http_get(f"http://{address}/metrics")
    assert status == 200 and b"spotguard_nodewatch_ready 1.0" in metrics
