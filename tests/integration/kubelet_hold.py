"""Kubelets that have not reported Ready yet, on the sandbox: new Nodes of one group stay NotReady until released.

A real instance can be InService while its kubelet has not joined (slow bootstrap, a bad AMI); on the sandbox
kwok makes every Node Ready at once. ``KubeletHold`` puts a ValidatingAdmissionPolicy on the API server that
refuses any Node write reporting ``Ready=True`` for a Node of ``group`` whose name is not known, so the Node that
node sync registers for a new instance exists but stays NotReady (kwok keeps trying, as a kubelet would).
``release(name)`` lets that one Node report Ready (and reports it, as its kubelet would); ``close`` removes the
policy. Use as a context manager::

    with KubeletHold(api_client, SPOT_ASG, known={n.name for n in spot_nodes(core)}) as hold:
        ...  # every new spot Node stays NotReady
        hold.release(node_name)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
import uuid
from collections.abc import Iterable
from types import TracebackType

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controller.adapters.kube import MERGE_PATCH, Kube

ASG_LABEL = "spotguard.io/asg"
POLICIES = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
BINDINGS = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
NOT_READY = (
    "!has(object.status) || !has(object.status.conditions) || "
    "!object.status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')"
)


class KubeletHold:
    def __init__(self, api_client: k8s.ApiClient, group: str, known: Iterable[str]) -> None:
        self.kube = Kube(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.group = group
        self.allowed = set(known)
        self.name = f"spotguard-test-kubelet-hold-{uuid.uuid4().hex[:8]}"
        self.kube.request("POST", POLICIES, body=self._policy())
        self.kube.request(
            "POST",
            BINDINGS,
            body={
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": self.name},
                "spec": {"policyName": self.name, "validationActions": ["Deny"]},
            },
        )
        self._wait_until(enforced=True)

    def _match_conditions(self) -> list[dict[str, str]]:
        return [
            {
                "name": "node-of-the-group",
                "expression": f"has(object.metadata.labels) && '{ASG_LABEL}' in object.metadata.labels && "
                f"object.metadata.labels['{ASG_LABEL}'] == '{self.group}'",
            },
            {"name": "not-released", "expression": f"!(object.metadata.name in {json.dumps(sorted(self.allowed))})"},
        ]

    def _policy(self) -> dict[str, object]:
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": self.name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["nodes", "nodes/status"],
                        }
                    ]
                },
                "matchConditions": self._match_conditions(),
                "validations": [{"expression": NOT_READY, "message": "the test holds this Node's kubelet NotReady"}],
            },
        }

    def _ready_node(self, name: str) -> dict[str, object]:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {ASG_LABEL: self.group}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": now}]},
        }

    def _enforced(self) -> bool:
        """Whether a dry-run Ready Node of the group is refused (the API server loads policies asynchronously)."""
        probe = self._ready_node(f"kubelet-hold-probe-{uuid.uuid4().hex[:6]}")
        try:
            self.kube.request("POST", "/api/v1/nodes", {"dryRun": "All"}, body=probe)
        except ApiException as error:
            if error.status in (400, 403, 422) and "NotReady" in str(error.body):
                return True
            raise
        return False

    def _wait_until(self, enforced: bool, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self._enforced() != enforced:
            assert time.monotonic() < deadline, (
                f"policy {self.name} still {'not ' if enforced else ''}enforced after {timeout:g} s"
            )
            time.sleep(0.2)

    def release(self, node: str, timeout: float = 20) -> None:
        """Let ``node`` report Ready, and report it (its kubelet's first status); kwok keeps it Ready."""
        self.allowed.add(node)
        self.kube.request(
            "PATCH",
            f"{POLICIES}/{self.name}",
            body={"spec": {"matchConditions": self._match_conditions()}},
            content_type=MERGE_PATCH,
        )
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        deadline = time.monotonic() + timeout
        while True:  # until the API server has the updated policy
            try:
                self.core.patch_node_status(node, {"status": {"conditions": [ready]}})
                return
            except ApiException as error:
                if "NotReady" not in str(error.body) or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def close(self) -> None:
        """Remove the policy and wait until the API server no longer enforces it (kwok backs off on refusals, so
        a Node refused after this returned would stay NotReady for a while)."""
        for path in (f"{BINDINGS}/{self.name}", f"{POLICIES}/{self.name}"):
            with contextlib.suppress(ApiException):
                self.kube.request("DELETE", path)
        self._wait_until(enforced=False)

    def __enter__(self) -> KubeletHold:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
