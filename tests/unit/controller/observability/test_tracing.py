"""Traces: parents kept across processes through annotations, a no-op when not configured, real OTLP/HTTP export."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from controller.config import ConfigError
from controller.observability import tracing as tracing_module
from controller.observability.tracing import (
    TRACEPARENT_ANNOTATION,
    Tracing,
    annotations_from_context,
    carrier_from_annotations,
    exporter_names,
    setup_tracing,
)
from tests.support.otlp_receiver import OtlpReceiver

REPO = Path(__file__).resolve().parents[4]


class Process:
    """One controller process's tracing, exporting to memory (a new one stands for a restart or a new leader)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracing = Tracing(provider)

    def finished(self) -> dict[str, ReadableSpan]:
        return {span.name: span for span in self.exporter.get_finished_spans()}


@pytest.fixture(autouse=True)
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OTEL_* variables from the machine running the tests; the module's current Tracing restored after."""
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    before = tracing_module.current()
    yield
    tracing_module._current = before


def test_later_spans_join_the_trace_stored_in_annotations_after_a_restart() -> None:
    first = Process()
    with first.tracing.span("detection", None, node="n1", instance="i-0abc") as step:
        annotations = step.annotations()  # written to the Node's record and the SGFE
    detection = first.finished()["detection"]
    assert set(annotations) == {TRACEPARENT_ANNOTATION}

    restarted = Process()  # a new leader: fresh provider, nothing in memory but the annotations
    with restarted.tracing.span("drain", carrier_from_annotations(annotations), node="od-n9", asg="od-a") as step:
        step.outcome("drained")
        with restarted.tracing.span("termination", instance="i-0od"):
            pass

    drain = restarted.finished()["drain"]
    termination = restarted.finished()["termination"]
    assert detection.context is not None and drain.context is not None and termination.context is not None
    assert drain.context.trace_id == detection.context.trace_id
    assert drain.parent is not None and drain.parent.span_id == detection.context.span_id
    assert termination.parent is not None and termination.parent.span_id == drain.context.span_id
    assert drain.attributes == {
        "spotguard.node": "od-n9",
        "spotguard.asg": "od-a",
        "spotguard.outcome": "drained",
    }
    assert termination.attributes is not None and termination.attributes["spotguard.outcome"] == "ok"


def test_a_span_without_a_stored_context_starts_a_new_trace() -> None:
    process = Process()
    with process.tracing.span("detection", {}):
        pass
    assert process.finished()["detection"].parent is None


def test_a_malformed_stored_context_starts_a_new_trace_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    process = Process()
    garbage = carrier_from_annotations({TRACEPARENT_ANNOTATION: "garbage"})
    with (
        caplog.at_level(logging.WARNING, logger="controller.observability.tracing"),
        process.tracing.span("drain", garbage),
    ):
        pass
    assert process.finished()["drain"].parent is None
    assert "span drain: ignoring the stored trace context 'garbage'" in caplog.text


def test_an_exception_is_recorded_as_the_outcome_and_re_raised() -> None:
    process = Process()
    with (
        pytest.raises(RuntimeError, match="SetDesiredCapacity refused"),
        process.tracing.span("spot scale-up", asg="spot-a"),
    ):
        raise RuntimeError("SetDesiredCapacity refused")
    span = process.finished()["spot scale-up"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["spotguard.outcome"] == "error"
    assert [event.name for event in span.events] == ["exception"]


def test_annotations_round_trip_the_current_context() -> None:
    process = Process()
    with process.tracing.span("fallback") as step:
        context = step.span.get_span_context()
        assert annotations_from_context() == annotations_from_context(context) == step.annotations()
    carrier = carrier_from_annotations(annotations_from_context(context))
    assert carrier["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")


def test_without_otel_environment_the_tracer_is_the_no_op_one() -> None:
    tracing = setup_tracing()

    assert tracing.provider is None
    assert not tracing.enabled
    assert isinstance(tracing.tracer, trace.NoOpTracer)
    assert tracing_module.current() is tracing
    with tracing.span("detection", None, node="n1") as step:
        step.outcome("ok")
        assert not step.span.is_recording()
        assert step.annotations() == {}
    assert tracing.force_flush()


def test_without_otel_environment_the_sdk_is_not_even_loaded() -> None:
    script = (
        "import sys\n"
        "from controller.observability.logs import setup_logging\n"
        "from controller.observability.tracing import setup_tracing\n"
        "setup_logging('info')\n"
        "with setup_tracing().span('detection', None, node='n1'):\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))\n"
    )
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=environment, timeout=60
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, ()),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, ("otlp",)),
    ],
)
def test_the_exporters_come_from_the_standard_variables(environment: dict[str, str], expected: tuple[str]) -> None:
    assert exporter_names(environment) == expected


def test_unsupported_exporters_and_protocols_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match=r"OTEL_TRACES_EXPORTER='jaeger'.*otlp \(OTLP over HTTP\), console or none"):
        exporter_names({"OTEL_TRACES_EXPORTER": "jaeger"})
    with pytest.raises(ConfigError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL='grpc'.*OTLP/HTTP exporter only"):
        exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_spans_arrive_over_real_otlp_http(monkeypatch: pytest.MonkeyPatch) -> None:
    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        tracing = setup_tracing()
        try:
            assert tracing.enabled
            with tracing.span("detection", None, node="n1", instance="i-0abc") as step:
                stored = step.annotations()
            with tracing.span("capacity check", carrier_from_annotations(stored), asg="spot-a") as step:
                step.outcome("no_capacity")
            assert tracing.force_flush()
            spans = {span.name: span for span in receiver.wait_for_spans(2)}
        finally:
            tracing.shutdown()

    assert receiver.errors == []
    assert receiver.headers[0]["content-type"] == "application/x-protobuf"
    detection, check = spans["detection"], spans["capacity check"]
    assert detection.parent_span_id == ""
    assert check.parent_span_id == detection.span_id
    assert check.trace_id == detection.trace_id
    assert check.attributes == {"spotguard.asg": "spot-a", "spotguard.outcome": "no_capacity"}
    assert detection.attributes["spotguard.instance"] == "i-0abc"
    assert detection.service_name == "spotguard-controller"


def test_otel_service_name_names_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "spotguard-staging")
        tracing = setup_tracing()
        try:
            with tracing.span("detection"):
                pass
            tracing.force_flush()
            (span,) = receiver.wait_for_spans(1)
        finally:
            tracing.shutdown()
    assert span.service_name == "spotguard-staging"
