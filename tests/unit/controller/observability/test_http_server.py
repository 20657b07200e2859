"""/metrics, /healthz and /readyz over real HTTP; the scraped text passes ``promtool check metrics``."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from controller.clock import FakeClock
from controller.observability.http_server import ObservabilityServer, serve
from controller.observability.metrics import CapacityType, FallbackEventAge, Metrics, ScaleUpResult
from tests.unit.controller.observability.promtool import run_promtool


class Readiness:
    def __init__(self) -> None:
        self.ready = False

    def __call__(self) -> tuple[bool, str]:
        return (True, "ready") if self.ready else (False, "not leading and the node cache is not synced yet")


def broken_probe() -> tuple[bool, str]:
    raise RuntimeError("the informer thread died")


def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


@pytest.fixture
def metrics(clock: FakeClock) -> Metrics:
    metrics = Metrics(clock)
    metrics.prepare_group_pair("spot-a", "od-a")
    metrics.scale_up_started("spot-a", CapacityType.SPOT)
    metrics.scale_up_finished("spot-a", CapacityType.SPOT, ScaleUpResult.TIMEOUT)
    metrics.fell_back("spot-a", "od-a", "timeout")
    metrics.replacement_ready(CapacityType.ON_DEMAND, 140.0)
    metrics.fallback_completed(7200.0)
    metrics.aws_call("SetDesiredCapacity", "AccessDenied")
    metrics.set_leader(True)
    metrics.set_fallback_events([FallbackEventAge("sgfe-1", "Monitoring", clock.now(), clock.now())])
    return metrics


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
def server(metrics: Metrics, readiness: Readiness) -> Iterator[ObservabilityServer]:
    server = serve(0, metrics.exposition, readiness=readiness, host="127.0.0.1")
    yield server
    server.stop()


def test_a_real_scrape_passes_promtool_check_metrics(server: ObservabilityServer) -> None:
    status, content_type, body = get(server.url + "/metrics")

    assert status == 200
    assert content_type.startswith("text/plain; version=")
    assert 'spotguard_fallbacks_total{on_demand_asg="od-a",reason="timeout",spot_asg="spot-a"} 1.0' in body
    assert 'spotguard_fallback_event_phase_age_seconds{name="sgfe-1",phase="Monitoring"} 0.0' in body
    assert "spotguard_leader 1.0" in body
    assert "process_cpu_seconds_total" in body
    run_promtool("check", "metrics", stdin=body)


def test_readiness_follows_its_callable(server: ObservabilityServer, readiness: Readiness) -> None:
    status, _, body = get(server.url + "/readyz")
    assert (status, body) == (503, "not leading and the node cache is not synced yet\n")

    readiness.ready = True

    assert get(server.url + "/readyz")[::2] == (200, "ready\n")
    assert get(server.url + "/healthz")[::2] == (200, "ok\n")


def test_a_probe_that_raises_answers_503_with_the_error(metrics: Metrics) -> None:
    server = serve(0, metrics.exposition, liveness=broken_probe, host="127.0.0.1")
    try:
        status, _, body = get(server.url + "/healthz")
    finally:
        server.stop()
    assert status == 503
    assert "the liveness check raised RuntimeError: the informer thread died" in body


def test_unknown_paths_get_404_naming_the_served_ones(server: ObservabilityServer) -> None:
    status, _, body = get(server.url + "/metricz")
    assert status == 404
    assert "/metrics, /healthz and /readyz" in body


def test_a_taken_port_is_an_error_naming_it_and_the_setting(server: ObservabilityServer, metrics: Metrics) -> None:
    with pytest.raises(OSError, match=rf"127\.0\.0\.1:{server.port}.*SPOT_GUARD_METRICS_PORT"):
        serve(server.port, metrics.exposition, host="127.0.0.1")
