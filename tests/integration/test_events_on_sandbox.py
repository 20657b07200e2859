"""Kubernetes Events written by the controller's recorder, read back from a real API server and kubectl."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from controller.adapters.kube import Kube
from controller.observability.events import EventRecorder, node_ref, sgfe_ref
from sandbox.environment import Sandbox


@pytest.fixture
def node_name(core: k8s.CoreV1Api) -> Iterator[str]:
    """A Node of this test's own (no kubelet or kwok behind it), deleted afterwards."""
    name = f"sg-events-{uuid.uuid4().hex[:8]}"
    core.create_node(k8s.V1Node(metadata=k8s.V1ObjectMeta(name=name, labels={"spotguard.io/test": "events"})))
    yield name
    core.delete_node(name)


def test_node_events_show_in_kubectl_describe_node_and_repeats_are_counted(
    sandbox: Sandbox, api_client: k8s.ApiClient, core: k8s.CoreV1Api, node_name: str
) -> None:
    recorder = EventRecorder(Kube(api_client))
    node = node_ref(node_name)

    recorder.warning(node, "SpotCapacityShort", "spot ASG spot-a has no capacity; falling back to on-demand od-a")
    recorder.warning(node, "SpotCapacityShort", "spot ASG spot-a has no capacity; falling back to on-demand od-a")
    recorder.normal(node, "ReplacementReady", "on-demand node od-n1 (i-0od) is Ready")

    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={node_name}").items
    counts = {event.reason: event.count for event in events}
    assert counts == {"SpotCapacityShort": 2, "ReplacementReady": 1}
    assert {event.source.component for event in events} == {"spotguard-controller"}
    assert recorder.dropped == 0

    described = sandbox.kubectl("describe", "node", node_name).stdout
    events_section = described.split("Events:", 1)[1]
    assert "SpotCapacityShort" in events_section
    assert "(x2 over" in events_section
    assert "spot ASG spot-a has no capacity; falling back to on-demand od-a" in events_section
    assert "on-demand node od-n1 (i-0od) is Ready" in events_section
    assert "spotguard-controller" in events_section


def test_sgfe_events_show_in_kubectl_describe_sgfe(sandbox: Sandbox, api_client: k8s.ApiClient, namespace: str) -> None:
    sgfe = k8s.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "aws.amazon.com",
        "v1",
        namespace,
        "spotguardfallbackevents",
        {
            "apiVersion": "aws.amazon.com/v1",
            "kind": "SpotGuardFallbackEvent",
            "metadata": {"name": "fallback-n1"},
            "spec": {
                "spotASGName": "spot-a",
                "onDemandASGName": "od-a",
                "onDemandNodeName": "od-n1",
                "timestamp": "2025-01-15T10:00:00Z",
            },
        },
    )
    recorder = EventRecorder(Kube(api_client))

    recorder.normal(
        sgfe_ref("fallback-n1", namespace, sgfe["metadata"]["uid"]), "PhaseChanged", "Pending -> Monitoring"
    )

    described = sandbox.kubectl("-n", namespace, "describe", "sgfe", "fallback-n1").stdout
    events_section = described.split("Events:", 1)[1]
    assert "PhaseChanged" in events_section
    assert "Pending -> Monitoring" in events_section


def test_a_refused_write_is_dropped_not_raised(api_client: k8s.ApiClient, caplog: pytest.LogCaptureFixture) -> None:
    recorder = EventRecorder(Kube(api_client))
    gone = sgfe_ref("fallback-n1", f"no-such-namespace-{uuid.uuid4().hex[:6]}", "uid-1")

    with caplog.at_level(logging.WARNING, logger="controller.observability.events"):
        recorder.normal(gone, "PhaseChanged", "Pending -> Monitoring")

    assert recorder.dropped == 1
    assert recorder.recorded == 0
    assert "could not record event PhaseChanged about spotguardfallbackevent" in caplog.text
    assert "HTTP 404" in caplog.text
