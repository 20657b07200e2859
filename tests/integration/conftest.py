"""Fixtures that run tests against the real local sandbox (see sandbox/environment.py).

One sandbox per test session; each test gets clients bound to it. ``SPOTGUARD_SANDBOX_KUBERNETES=k3s``
swaps the local control plane for a k3s container through testcontainers (needs a Docker engine).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from sandbox.aws.client import SandboxAWSClient
from sandbox.environment import Sandbox


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(pairs=1, spot_desired=3) as sb:
        yield sb


@pytest.fixture(scope="session")
def api_client(sandbox: Sandbox) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(sandbox.kubeconfig))


@pytest.fixture
def core(api_client: k8s.ApiClient) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(api_client)


@pytest.fixture
def namespace(core: k8s.CoreV1Api) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    # Pods are refused until kube-controller-manager has made the namespace's default ServiceAccount.
    deadline = time.monotonic() + 30
    while not core.list_namespaced_service_account(name, field_selector="metadata.name=default").items:
        assert time.monotonic() < deadline, f"no default ServiceAccount in namespace {name} after 30s"
        time.sleep(0.1)
    yield name
    core.delete_namespace(name)


@pytest.fixture
def aws_sim(sandbox: Sandbox) -> Iterator[SandboxAWSClient]:
    """The capacity simulator's control API; the test's changes to the groups are undone afterwards."""
    sim = SandboxAWSClient(sandbox.aws_endpoint)
    yield sim
    sim.clear_faults()
    sim.reset()
    # The reset replaces every instance: wait until the Nodes are exactly the new instances', all Ready,
    # so the next test never picks a Node that is about to go.
    wanted = {
        i["instance_id"] for g in sim.state()["groups"] for i in g["instances"] if i["lifecycle_state"] == "InService"
    }
    deadline = time.monotonic() + 60
    while True:
        nodes = (
            k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(sandbox.kubeconfig)))
            .list_node(label_selector="spotguard.io/asg")
            .items
        )
        have = {
            n.spec.provider_id.rsplit("/", 1)[-1]
            for n in nodes
            if n.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
        }
        if have == wanted and len(nodes) == len(wanted):
            break
        assert time.monotonic() < deadline, f"Nodes {sorted(have)} never matched the instances {sorted(wanted)}"
        time.sleep(0.2)


@pytest.fixture
def autoscaling(sandbox: Sandbox) -> Any:
    """A plain boto3 Auto Scaling client pointed at the sandbox, as the controller makes it."""
    env = sandbox.env()
    return boto3.client(
        "autoscaling",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
