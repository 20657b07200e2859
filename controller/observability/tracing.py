"""OpenTelemetry traces: one trace per replacement/fallback, continued across leader changes and restarts.

Configured only through the standard environment variables: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``,
``none``), ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (OTLP over HTTP with
protobuf; the exporter reads its headers, timeout, compression and certificates from ``OTEL_EXPORTER_OTLP_*``
too), ``OTEL_SERVICE_NAME`` (default ``spotguard-controller``), ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER`` and ``OTEL_BSP_*``. With neither an exporter nor an endpoint set (or with
``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true``) no SDK is loaded: ``span`` costs what a no-op
tracer costs.

The trace context travels on the Kubernetes objects: the W3C ``traceparent`` (and ``tracestate``) of the
span that detected a recommendation is stored in the annotation ``spotguard.io/traceparent`` of the Node's
replacement record and of the SGFE, and every later step starts its span as a child of it::

    with tracing.span("detection", None, node=node.name, instance=instance_id) as step:
        patch_annotations(node, step.annotations())  # spotguard.io/traceparent
    ...  # later, maybe in another process after a leader change:
    with tracing.span("drain", carrier_from_annotations(sgfe.annotations), node=sgfe.node) as step:
        step.outcome("drained")

Attribute names without a dot get the ``spotguard.`` prefix (``node`` -> ``spotguard.node``); every span ends
with ``spotguard.outcome`` (``ok`` unless set, ``error`` when the block raised).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanContext, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from controller.config import ConfigError
from nodewatch import annotations as contract

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

TRACEPARENT_ANNOTATION = contract.PREFIX + "traceparent"
TRACESTATE_ANNOTATION = contract.PREFIX + "tracestate"
DEFAULT_SERVICE_NAME = "spotguard-controller"
INSTRUMENTATION_NAME = "spotguard.controller"
ATTRIBUTE_PREFIX = "spotguard."
OUTCOME = ATTRIBUTE_PREFIX + "outcome"
EXPORTERS = ("otlp", "console")
_PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")

_PROPAGATOR = TraceContextTextMapPropagator()
_CARRIER_KEYS = {"traceparent": TRACEPARENT_ANNOTATION, "tracestate": TRACESTATE_ANNOTATION}


class TracedStep:
    """The span of one step, as ``Tracing.span`` hands it to the block (a no-op when tracing is off)."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self.outcome_set = False

    def set(self, **attributes: object) -> None:
        """Add attributes (``asg="spot-a"`` becomes ``spotguard.asg``); None values are left out."""
        if self.span.is_recording():
            self.span.set_attributes(_attributes(attributes))

    def outcome(self, outcome: str) -> None:
        """How the step ended (``spotguard.outcome``), e.g. ``ready``, ``no_capacity``, ``fell_back``."""
        self.outcome_set = True
        if self.span.is_recording():
            self.span.set_attribute(OUTCOME, outcome)

    def annotations(self) -> dict[str, str]:
        """This span's context as annotations to store on the Node or SGFE ({} when tracing is off)."""
        return annotations_from_context(self.span)


class Tracing:
    """A tracer and, when tracing is on, the SDK TracerProvider behind it (``provider`` None means off)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self.tracer: trace.Tracer = provider.get_tracer(INSTRUMENTATION_NAME) if provider else trace.NoOpTracer()

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    @contextlib.contextmanager
    def span(
        self, name: str, parent_carrier: Mapping[str, str] | None = None, **attributes: object
    ) -> Iterator[TracedStep]:
        """A span named ``name``, child of the W3C context in ``parent_carrier`` if it holds one, else of the
        current span (a new trace if there is none); ``attributes`` as in ``TracedStep.set``.

        An exception from the block is recorded on the span (status ERROR, outcome ``error``) and re-raised.
        """
        if self.provider is None:
            yield TracedStep(trace.INVALID_SPAN)
            return
        parent = _parent_context(name, parent_carrier)
        with self.tracer.start_as_current_span(
            name,
            context=parent,
            attributes=_attributes(attributes),
            record_exception=False,
            set_status_on_exception=False,
        ) as otel_span:
            step = TracedStep(otel_span)
            try:
                yield step
            except Exception as error:
                if not step.outcome_set:
                    step.outcome("error")
                otel_span.record_exception(error)
                otel_span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
                raise
            except BaseException:
                if not step.outcome_set:
                    step.outcome("interrupted")
                raise
            if not step.outcome_set:
                step.outcome("ok")

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        """Export every finished span now; False if that did not complete in time."""
        return self.provider.force_flush(timeout_millis) if self.provider else True

    def shutdown(self) -> None:
        """Flush and stop the exporters (call once, on exit)."""
        if self.provider is not None:
            self.provider.shutdown()


_current = Tracing()


def current() -> Tracing:
    """The Tracing made by the last ``setup_tracing`` (tracing off before that)."""
    return _current


@contextlib.contextmanager
def span(name: str, parent_carrier: Mapping[str, str] | None = None, **attributes: object) -> Iterator[TracedStep]:
    """``current().span(...)``."""
    with _current.span(name, parent_carrier, **attributes) as step:
        yield step


def setup_tracing() -> Tracing:
    """Read the OTEL_* environment, build the Tracing it asks for and make it ``current()``.

    Raises ConfigError for an exporter or OTLP protocol Spot Guard does not ship.
    """
    global _current  # noqa: PLW0603 - the process-wide tracer, set once at start-up
    exporters = exporter_names(os.environ)
    if not exporters:
        log.debug("tracing is off: neither OTEL_TRACES_EXPORTER nor OTEL_EXPORTER_OTLP_ENDPOINT is set")
        _current = Tracing()
        return _current
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER
    for exporter_name in exporters:
        exporter: SpanExporter
        if exporter_name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*
    log.info(
        "tracing is on: exporting spans of service %s with %s",
        resource.attributes.get(SERVICE_NAME),
        ", ".join(exporters),
        extra={"otlp_endpoint": _otlp_endpoint(os.environ)} if "otlp" in exporters else None,
    )
    _current = Tracing(provider)
    return _current


def exporter_names(env: Mapping[str, str]) -> tuple[str, ...]:
    """The span exporters the environment asks for; () means tracing is off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if raw:
        names = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    else:
        names = ("otlp",) if _otlp_endpoint(env) else ()
    if names == ("none",):
        return ()
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={raw!r}: Spot Guard can export traces with otlp (OTLP over HTTP), console "
            f"or none, not {', '.join(unknown)}"
        )
    if "otlp" in names:
        # The traces-specific variable wins over the general one, as in the SDK.
        var = next((v for v in _PROTOCOL_VARIABLES if env.get(v, "").strip()), "")
        protocol = env.get(var, "").strip() if var else ""
        if protocol and protocol != "http/protobuf":
            raise ConfigError(
                f"{var}={protocol!r}: Spot Guard ships the OTLP/HTTP exporter only; use http/protobuf "
                "(a collector's port 4318) or unset it"
            )
    return names


def carrier_from_annotations(annotations: Mapping[str, str]) -> dict[str, str]:
    """The W3C carrier (``traceparent``, ``tracestate``) stored in an object's annotations ({} if none)."""
    return {header: annotations[key] for header, key in _CARRIER_KEYS.items() if annotations.get(key)}


def annotations_from_context(
    context: otel_context.Context | Span | SpanContext | None = None,
) -> dict[str, str]:
    """The annotations that store ``context`` (the current one by default); {} if it holds no valid span."""
    if context is None:
        ctx = otel_context.get_current()
    elif isinstance(context, Span):
        ctx = trace.set_span_in_context(context)
    elif isinstance(context, SpanContext):
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(context))
    else:
        ctx = context
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=ctx)
    return {_CARRIER_KEYS[header]: value for header, value in carrier.items() if header in _CARRIER_KEYS}


def _parent_context(name: str, carrier: Mapping[str, str] | None) -> otel_context.Context | None:
    """The context to start ``name`` in: the carrier's if it holds a valid one, else None (the current one)."""
    if not carrier or "traceparent" not in carrier:
        return None
    extracted = _PROPAGATOR.extract(carrier)
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        log.warning(
            "span %s: ignoring the stored trace context %r (not a W3C traceparent such as "
            "00-<32 hex>-<16 hex>-01); the span starts a new trace",
            name,
            carrier["traceparent"],
        )
        return None
    return extracted


def _attributes(attributes: Mapping[str, object]) -> dict[str, AttributeValue]:
    result: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        name = key if "." in key else ATTRIBUTE_PREFIX + key
        result[name] = value if isinstance(value, str | bool | int | float) else str(value)
    return result


def _otlp_endpoint(env: Mapping[str, str]) -> str:
    return env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
