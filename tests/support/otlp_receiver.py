"""A tiny OTLP/HTTP trace receiver for tests: POST /v1/traces (protobuf, optionally gzip) on 127.0.0.1.

with OtlpReceiver() as receiver:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    ...  # emit spans, force a flush
    receiver.wait_for_spans(3)
    assert [s.name for s in receiver.spans()] == [...]
"""

from __future__ import annotations

import dataclasses
import gzip
import http.server
import threading
import zlib
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.waiting import wait_until

TRACES_PATH = "/v1/traces"


@dataclasses.dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, ids as lowercase hex ("" for no parent)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    service_name: str
    status_code: int  # 0 unset, 1 ok, 2 error


class _Handler(http.server.BaseHTTPRequestHandler):
    server: OtlpReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != TRACES_PATH:
            self._reply(404, b"this receiver takes traces on /v1/traces only", "text/plain")
            return
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception as error:
            self.server.errors.append(f"undecodable body ({self.headers.get('Content-Type')}): {error}")
            self._reply(400, b"not an ExportTraceServiceRequest", "text/plain")
            return
        self.server.add(request, {key.lower(): value for key, value in self.headers.items()})
        self._reply(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


class OtlpReceiver(http.server.ThreadingHTTPServer):
    """Records every ExportTraceServiceRequest it receives; use as a context manager."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self._lock = threading.Lock()
        self.requests: list[ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []  # per request, names in lower case
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL for OTEL_EXPORTER_OTLP_ENDPOINT (the exporter appends /v1/traces)."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, request: ExportTraceServiceRequest, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(request)
            self.headers.append(headers)

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._lock:
            requests = list(self.requests)
        spans: list[ReceivedSpan] = []
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        spans.append(
                            ReceivedSpan(
                                name=span.name,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                attributes={a.key: _value(a.value) for a in span.attributes},
                                service_name=str(resource.get("service.name", "")),
                                status_code=int(span.status.code),
                            )
                        )
        return spans

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        wait_until(lambda: len(self.spans()) >= count, timeout, f"{count} spans on {self.endpoint}{TRACES_PATH}")
        return self.spans()

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)
