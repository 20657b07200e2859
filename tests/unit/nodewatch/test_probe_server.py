"""/healthz, /readyz and /metrics as kubelet and Prometheus see them."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

from nodewatch.metrics import NodewatchMetrics
from nodewatch.server import ProbeServer


class StubHealth:
    def __init__(self) -> None:
        self.alive = (True, "ok")
        self.ready = (False, "no successful IMDS poll for 31 s; last error: IMDS answered HTTP 500")

    def liveness(self) -> tuple[bool, str]:
        return self.alive

    def readiness(self) -> tuple[bool, str]:
        return self.ready


@pytest.fixture
def served() -> Iterator[tuple[ProbeServer, StubHealth, NodewatchMetrics]]:
    health, metrics = StubHealth(), NodewatchMetrics()
    server = ProbeServer(("127.0.0.1", 0), health, metrics.exposition)
    server.start()
    yield server, health, metrics
    server.stop()


def get(server: ProbeServer, path: str) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection(server.address, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        connection.close()


def test_healthz_and_readyz_report_status_and_reason(served: tuple[ProbeServer, StubHealth, NodewatchMetrics]) -> None:
    server, health, _ = served
    assert get(server, "/healthz")[:1] == (200,)
    status, _, body = get(server, "/readyz")
    assert status == 503
    assert "IMDS answered HTTP 500" in body

    health.ready = (True, "ready")
    health.alive = (False, "the poll loop has not started a poll for 121 s; it is stuck")
    assert get(server, "/readyz")[0] == 200
    status, _, body = get(server, "/healthz")
    assert status == 503
    assert "stuck" in body


def test_metrics_are_served_in_prometheus_text_format(
    served: tuple[ProbeServer, StubHealth, NodewatchMetrics],
) -> None:
    server, _, metrics = served
    metrics.polls.labels("ok").inc(3)
    metrics.imds_errors.labels("timeout").inc()
    status, content_type, body = get(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert 'spotguard_nodewatch_polls_total{result="ok"} 3.0' in body
    assert 'spotguard_nodewatch_imds_errors_total{kind="timeout"} 1.0' in body
    assert 'spotguard_nodewatch_imds_errors_total{kind="server_error"} 0.0' in body
    assert 'spotguard_nodewatch_notices_total{kind="rebalance"} 0.0' in body
    assert 'spotguard_nodewatch_patch_errors_total{kind="forbidden"} 0.0' in body
    assert "spotguard_nodewatch_last_good_poll_timestamp_seconds" in body
    assert "process_resident_memory_bytes" in body


def test_unknown_paths_are_404(served: tuple[ProbeServer, StubHealth, NodewatchMetrics]) -> None:
    status, _, body = get(served[0], "/")
    assert status == 404
    assert "/readyz" in body
