"""The Event recorder against an in-memory events API: bodies, aggregation, and best-effort failure handling."""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Mapping
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from controller.clock import FakeClock
from controller.observability.events import EventRecorder, node_ref, sgfe_ref
from tests.support.fake_kube_api import merge_patch


class FakeEventsApi:
    """POST and merge-PATCH of core/v1 Events, kept by (namespace, name); ``fail_with`` makes calls raise."""

    def __init__(self) -> None:
        self.events: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_with: Exception | None = None

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int] | None = None,
        *,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> dict[str, Any]:
        self.calls.append((method, path))
        if self.fail_with is not None:
            raise self.fail_with
        parts = path.strip("/").split("/")  # api v1 namespaces <ns> events [<name>]
        namespace = parts[3]
        if method == "POST":
            event: dict[str, Any] = copy.deepcopy(body)
            self.events[(namespace, event["metadata"]["name"])] = event
            return event
        assert method == "PATCH"
        assert content_type == "application/merge-patch+json"
        key = (namespace, parts[5])
        if key not in self.events:
            raise ApiException(status=404, reason="Not Found")
        patched: dict[str, Any] = merge_patch(self.events[key], body)
        self.events[key] = patched
        return patched

    def only(self) -> dict[str, Any]:
        (event,) = self.events.values()
        return event


@pytest.fixture
def api() -> FakeEventsApi:
    return FakeEventsApi()


@pytest.fixture
def recorder(api: FakeEventsApi, clock: FakeClock) -> EventRecorder:
    return EventRecorder(api, clock=clock, pause_after_failure=30.0)


def test_a_node_event_goes_to_default_with_the_kubelets_involved_object(
    api: FakeEventsApi, recorder: EventRecorder
) -> None:
    recorder.warning(node_ref("ip-10-0-1-5"), "SpotFallback", "no spot capacity in spot-a; scaled od-a to 2")

    (namespace, name), event = next(iter(api.events.items()))
    assert namespace == "default"
    assert name.startswith("ip-10-0-1-5.")
    assert event["involvedObject"] == {"kind": "Node", "name": "ip-10-0-1-5", "uid": "ip-10-0-1-5", "apiVersion": "v1"}
    assert (event["type"], event["reason"]) == ("Warning", "SpotFallback")
    assert event["message"] == "no spot capacity in spot-a; scaled od-a to 2"
    assert event["source"] == {"component": "spotguard-controller"}
    assert event["count"] == 1
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2025-01-15T10:00:00Z"


def test_an_sgfe_event_goes_to_its_namespace(api: FakeEventsApi, recorder: EventRecorder) -> None:
    recorder.normal(sgfe_ref("fallback-n1", "kube-system", "uid-1"), "PhaseChanged", "Pending -> Monitoring")
    event = api.only()
    assert event["metadata"]["namespace"] == "kube-system"
    assert event["involvedObject"] == {
        "kind": "SpotGuardFallbackEvent",
        "name": "fallback-n1",
        "namespace": "kube-system",
        "uid": "uid-1",
        "apiVersion": "aws.amazon.com/v1",
    }


def test_a_repeat_within_the_window_bumps_count_and_last_timestamp(
    api: FakeEventsApi, recorder: EventRecorder, clock: FakeClock
) -> None:
    node = node_ref("n1")
    recorder.warning(node, "SafetyCheckFailed", "pods do not fit elsewhere")
    clock.advance(120)
    recorder.warning(node, "SafetyCheckFailed", "pods do not fit elsewhere")
    clock.advance(120)
    recorder.warning(node, "SafetyCheckFailed", "pods do not fit elsewhere")

    event = api.only()
    assert event["count"] == 3
    assert event["firstTimestamp"] == "2025-01-15T10:00:00Z"
    assert event["lastTimestamp"] == "2025-01-15T10:04:00Z"
    assert [method for method, _ in api.calls] == ["POST", "PATCH", "PATCH"]
    assert recorder.recorded == 3


def test_different_messages_or_a_late_repeat_make_new_events(
    api: FakeEventsApi, recorder: EventRecorder, clock: FakeClock
) -> None:
    node = node_ref("n1")
    recorder.normal(node, "ScaleUp", "scaled spot-a to 4")
    recorder.normal(node, "ScaleUp", "scaled spot-a to 5")
    clock.advance(301)
    recorder.normal(node, "ScaleUp", "scaled spot-a to 5")

    assert sorted(e["message"] for e in api.events.values()) == [
        "scaled spot-a to 4",
        "scaled spot-a to 5",
        "scaled spot-a to 5",
    ]
    assert all(e["count"] == 1 for e in api.events.values())


def test_an_expired_event_is_created_again(api: FakeEventsApi, recorder: EventRecorder) -> None:
    node = node_ref("n1")
    recorder.normal(node, "Drained", "evicted 3 pods")
    api.events.clear()  # the API server's event TTL removed it
    recorder.normal(node, "Drained", "evicted 3 pods")
    assert api.only()["count"] == 1


def test_an_api_error_is_logged_once_and_never_raised(
    api: FakeEventsApi, recorder: EventRecorder, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    api.fail_with = ApiException(status=403, reason="Forbidden")
    with caplog.at_level(logging.DEBUG, logger="controller.observability.events"):
        recorder.warning(node_ref("n1"), "SpotFallback", "fell back")
        clock.advance(31)
        recorder.warning(node_ref("n2"), "SpotFallback", "fell back")

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "could not record event SpotFallback about node n1: HTTP 403 Forbidden; dropping it (events are "
        "best-effort) and pausing event writes for 30 s; check the API server and that the controller may create "
        "and patch events"
    ]
    assert recorder.dropped == 2
    assert api.events == {}
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.node == "n1"  # type: ignore[attr-defined]


def test_events_are_dropped_without_a_call_while_paused_then_written_again(
    api: FakeEventsApi, recorder: EventRecorder, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    api.fail_with = TimeoutError("read timed out")
    recorder.normal(node_ref("n1"), "ScaleUp", "scaled spot-a to 4")
    api.fail_with = None
    calls_after_failure = len(api.calls)

    recorder.normal(node_ref("n1"), "ScaleUp", "scaled spot-a to 5")  # within the pause: not even tried
    assert len(api.calls) == calls_after_failure

    clock.advance(30)
    with caplog.at_level(logging.INFO, logger="controller.observability.events"):
        recorder.normal(node_ref("n1"), "ScaleUp", "scaled spot-a to 6")

    assert api.only()["message"] == "scaled spot-a to 6"
    assert recorder.dropped == 2
    assert "recording Kubernetes Events works again; 2 events were dropped while it did not" in caplog.messages


def test_long_messages_are_cut_and_long_names_stay_valid(api: FakeEventsApi, recorder: EventRecorder) -> None:
    recorder.normal(node_ref("n" * 253), "Long", "x" * 5000)
    (_, name), event = next(iter(api.events.items()))
    assert len(event["message"]) == 1024
    assert len(name) <= 253


class BlockingEventsApi(FakeEventsApi):
    """Holds every call until ``release`` is set; ``entered`` tells that a call is waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def request(
        self, method: str, path: str, query: Mapping[str, str | int] | None = None, **kw: Any
    ) -> dict[str, Any]:
        self.entered.set()
        assert self.release.wait(10)
        return super().request(method, path, query, **kw)


def test_with_a_queue_recording_costs_the_caller_no_api_call(clock: FakeClock) -> None:
    api = BlockingEventsApi()
    recorder = EventRecorder(api, clock=clock, queue_size=10)
    try:
        recorder.normal(node_ref("n1"), "SpotScaleUp", "scaled spot-a to 4")  # returns while the API is held
        assert api.entered.wait(5)
        assert api.events == {}
        api.release.set()
        assert recorder.flush(5)
        assert api.only()["reason"] == "SpotScaleUp"
        assert recorder.recorded == 1
    finally:
        api.release.set()
        recorder.close()


def test_a_full_queue_drops_and_counts_instead_of_blocking(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    api = BlockingEventsApi()
    recorder = EventRecorder(api, clock=clock, queue_size=2)
    try:
        recorder.normal(node_ref("n0"), "SpotScaleUp", "first")
        assert api.entered.wait(5)  # the writer holds the first; two fit in the queue
        with caplog.at_level(logging.WARNING):
            for index in range(1, 5):
                recorder.normal(node_ref(f"n{index}"), "SpotScaleUp", f"event {index}")
        assert recorder.dropped == 2
        assert "2 events are waiting to be written" in caplog.text
        api.release.set()
        assert recorder.flush(5)
        assert sorted(e["involvedObject"]["name"] for e in api.events.values()) == ["n0", "n1", "n2"]
    finally:
        api.release.set()
        recorder.close()


def test_queued_events_are_written_no_faster_than_the_rate(api: FakeEventsApi, clock: FakeClock) -> None:
    now = [0.0]
    written_at: list[float] = []

    def sleep(seconds: float) -> None:
        now[0] += seconds

    class Timed(FakeEventsApi):
        def request(self, method: str, path: str, query: Any = None, **kw: Any) -> dict[str, Any]:
            written_at.append(now[0])
            return super().request(method, path, query, **kw)

    recorder = EventRecorder(Timed(), clock=clock, queue_size=100, max_rate=20.0, sleep=sleep, monotonic=lambda: now[0])
    try:
        for index in range(5):
            recorder.normal(node_ref(f"n{index}"), "SpotScaleUp", "scaled")
        assert recorder.flush(5)
    finally:
        recorder.close()

    assert written_at == pytest.approx([0.0, 0.05, 0.10, 0.15, 0.20])
