"""One trace per fallback, received as real OTLP from controller processes, across a leader kill."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from sandbox.aws.client import SandboxAWSClient
from sandbox.environment import Sandbox
from tests.integration.controller_process import (
    SHORT_ELECTION,
    SPOT_ASG,
    ControllerLauncher,
    LeaseWatch,
    annotate_rebalance,
    controller_env,
    replacement_finished,
    spot_nodes,
)
from tests.support.otlp_receiver import OtlpReceiver


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def launcher(
    sandbox: Sandbox, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api, tmp_path: Path, receiver: OtlpReceiver
) -> Iterator[ControllerLauncher]:
    env = controller_env(
        sandbox.env(),
        **SHORT_ELECTION,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="50",
    )
    with ControllerLauncher(env, tmp_path, core=core) as launcher:
        yield launcher
    custom = k8s.CustomObjectsApi(core.api_client)
    for event in custom.list_namespaced_custom_object("aws.amazon.com", "v1", "kube-system", "spotguardfallbackevents")[
        "items"
    ]:
        custom.delete_namespaced_custom_object(
            "aws.amazon.com", "v1", "kube-system", "spotguardfallbackevents", event["metadata"]["name"]
        )


def test_a_fallback_is_one_trace_even_when_the_leader_dies_halfway(
    launcher: ControllerLauncher,
    receiver: OtlpReceiver,
    aws_sim: SandboxAWSClient,
    core: k8s.CoreV1Api,
    api_client: k8s.ApiClient,
) -> None:
    aws_sim.set_capacity(SPOT_ASG, capacity_short=True, retry_seconds=1)
    old = spot_nodes(core)[0]
    with LeaseWatch(api_client, launcher.lease_name) as lease:
        first = launcher.start("first", SPOTGUARD_FAILPOINTS="replacement:withdrawing", OTEL_SERVICE_NAME="first")
        lease.wait_for(lambda holder: holder == "first", timeout=30, what="the first replica leads")
        annotate_rebalance(core, old)
        assert first.wait(timeout=60) == -9, first.log_tail()
        second = launcher.start("second", OTEL_SERVICE_NAME="second")
        deadline = time.monotonic() + 90
        while not replacement_finished(core, old.name):
            assert time.monotonic() < deadline, second.log_tail()
            time.sleep(0.3)
        assert second.stop() == 0  # flushes its spans on the way out

    sgfe = k8s.CustomObjectsApi(api_client).list_namespaced_custom_object(
        "aws.amazon.com", "v1", "kube-system", "spotguardfallbackevents"
    )["items"][0]
    # The detection span's W3C context, as the first leader stored it on the record and the SGFE carries it.
    _, trace_id, detection_id, _ = sgfe["metadata"]["annotations"]["spotguard.io/traceparent"].split("-")
    spans = receiver.spans()
    after_kill = [s for s in spans if s.service_name == "second"]
    assert {"on-demand-scale-up", "capacity-check", "fallback-event", "drain", "termination"} <= {
        s.name for s in after_kill
    }
    for span in after_kill:
        assert span.trace_id == trace_id, f"{span.name} after the leader's death left the fallback's trace"
        assert span.parent_span_id == detection_id, f"{span.name} is not a child of the detection span"
    # What the first leader exported before its SIGKILL is in the same trace (spans still in its export
    # buffer die with it; how many made it out depends on timing).
    exported_before = [s for s in spans if s.service_name == "first"]
    assert all(s.trace_id == trace_id for s in exported_before)
    detection = next((s for s in exported_before if s.name == "detection"), None)
    if detection is not None:
        assert detection.span_id == detection_id
        assert detection.attributes["spotguard.node"] == old.name
        assert detection.attributes["spotguard.instance"] == old.instance_id
    check = next(s for s in after_kill if s.name == "capacity-check")
    assert check.attributes["spotguard.capacity_type"] == "on-demand"
    assert check.attributes["spotguard.outcome"] == "ready"
