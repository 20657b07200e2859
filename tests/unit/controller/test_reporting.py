"""The lifecycle recorder keeps the SGFE gauges that the 'stuck' and 'too long' alerts read."""

from __future__ import annotations

import datetime as dt
from typing import Any

from controller.model.sgfe import FallbackEvent, Spec, Status
from controller.observability.metrics import Metrics
from controller.observability.reporters import KubeLifecycleReporter


class NoEvents:
    def record(self, *args: Any) -> None:
        return None


def _event(name: str, phase: str, minutes_ago: int) -> FallbackEvent:
    at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago)
    return FallbackEvent(
        name=name,
        namespace="kube-system",
        uid="u",
        resource_version="1",
        spec=Spec("spot", "od", "node", at.strftime("%Y-%m-%dT%H:%M:%SZ"), "i-1", "10m"),
        status=Status(phase=phase),
        annotations={},
    )


def _sample(text: str, prefix: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(prefix)))


def test_observed_events_feed_the_phase_gauge_and_the_oldest_age() -> None:
    metrics = Metrics(process_metrics=False)
    recorder = KubeLifecycleReporter(NoEvents(), metrics)  # type: ignore[arg-type]
    recorder.observe([_event("a", "Monitoring", 90), _event("b", "Monitoring", 5), _event("c", "Completed", 200)])
    text = metrics.exposition().decode()
    assert _sample(text, 'spotguard_fallback_events{phase="Monitoring"}') == 2
    assert _sample(text, 'spotguard_fallback_events{phase="Completed"}') == 1
    assert 89 * 60 < _sample(text, "spotguard_oldest_unfinished_fallback_event_age_seconds") < 92 * 60

    recorder.observe([])
    text = metrics.exposition().decode()
    assert _sample(text, 'spotguard_fallback_events{phase="Monitoring"}') == 0


def test_drain_and_eviction_answers_are_counted_in_the_metrics_words() -> None:
    metrics = Metrics(process_metrics=False)
    for answer in ("evicted", "evicted", "disruption_budget", "already_gone", "refused"):
        metrics.eviction(object(), answer)
    metrics.drain_finished("drained")
    metrics.drain_finished("timed_out")
    metrics.drain_finished("blocked")
    text = metrics.exposition().decode()
    assert _sample(text, 'spotguard_evictions_total{result="evicted"}') == 2
    assert _sample(text, 'spotguard_evictions_total{result="blocked"}') == 1
    assert _sample(text, 'spotguard_evictions_total{result="gone"}') == 1
    assert _sample(text, 'spotguard_evictions_total{result="error"}') == 1
    assert _sample(text, 'spotguard_drains_total{result="success"}') == 1
    assert _sample(text, 'spotguard_drains_total{result="timeout"}') == 1
    assert _sample(text, 'spotguard_drains_total{result="error"}') == 1
