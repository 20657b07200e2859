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

    spans = receiver.spans()
    by_name = {s.name: s for s in spans}
    detection = by_name["detection"]
    assert detection.service_name == "first"
    assert detection.attributes["spotguard.node"] == old.name
    assert detection.attributes["spotguard.instance"] == old.instance_id
    # Spans still in the first leader's export buffer die with it (SIGKILL); those it exported stay.
    assert "spot-scale-up" in {s.name for s in spans if s.service_name == "first"}
    after_kill = {s.name for s in spans if s.service_name == "second"}
    assert {"on-demand-scale-up", "capacity-check", "fallback-event", "drain", "termination"} <= after_kill
    for span in spans:
        assert span.trace_id == detection.trace_id, f"{span.name} from {span.service_name} left the trace"
        if span is not detection:
            assert span.parent_span_id == detection.span_id, f"{span.name} is not a child of detection"
    check = next(s for s in spans if s.name == "capacity-check" and s.service_name == "second")
    assert check.attributes["spotguard.capacity_type"] == "on-demand"
    assert check.attributes["spotguard.outcome"] == "ready"
    sgfe = k8s.CustomObjectsApi(api_client).list_namespaced_custom_object(
        "aws.amazon.com", "v1", "kube-system", "spotguardfallbackevents"
    )["items"][0]
    assert detection.trace_id in sgfe["metadata"]["annotations"]["spotguard.io/traceparent"]
