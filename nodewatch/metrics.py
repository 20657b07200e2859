"""The Prometheus metrics nodewatch exports on /metrics, in a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, generate_latest

from nodewatch.imds import IMDSErrorKind
from nodewatch.node import KubeAPIErrorKind

PREFIX = "spotguard_nodewatch_"
INTERNAL_ERROR = "internal"


class NodewatchMetrics:
    """Counters and gauges of one agent. Every label value is pre-created, so alerts see zeros, not gaps."""

    def __init__(self, notice_kinds: tuple[str, ...] = ("rebalance", "interruption")) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.polls = Counter(PREFIX + "polls", "IMDS polls, by result (ok or error)", ["result"], registry=registry)
        self.notices = Counter(
            PREFIX + "notices", "Notices that appeared in IMDS, by kind", ["kind"], registry=registry
        )
        self.notice_active = Gauge(
            PREFIX + "notice_active", "1 while IMDS shows a notice of this kind", ["kind"], registry=registry
        )
        self.imds_errors = Counter(PREFIX + "imds_errors", "Failed IMDS reads, by kind", ["kind"], registry=registry)
        self.node_patches = Counter(PREFIX + "node_patches", "Successful patches of this Node", registry=registry)
        self.patch_errors = Counter(
            PREFIX + "patch_errors", "Failed patches of this Node's annotations, by kind", ["kind"], registry=registry
        )
        self.node_read_errors = Counter(
            PREFIX + "node_read_errors", "Failed reads of this Node's annotations, by kind", ["kind"], registry=registry
        )
        self.internal_errors = Counter(
            PREFIX + "internal_errors", "Unexpected errors caught by the poll loop (bugs)", registry=registry
        )
        self.last_good_poll = Gauge(
            PREFIX + "last_good_poll_timestamp_seconds",
            "Unix time of the last poll in which every IMDS read succeeded",
            registry=registry,
        )
        self.ready = Gauge(PREFIX + "ready", "1 while /readyz reports ready", registry=registry)
        self.idle = Gauge(
            PREFIX + "idle",
            "1 while nodewatch idles on an instance that is not spot (IMDS instance-life-cycle): it polls nothing",
            registry=registry,
        )
        ProcessCollector(registry=registry)
        for result in ("ok", "error"):
            self.polls.labels(result)
        for kind in notice_kinds:
            self.notices.labels(kind)
            self.notice_active.labels(kind)
        for imds_kind in IMDSErrorKind:
            self.imds_errors.labels(imds_kind.value)
        for kube_kind in KubeAPIErrorKind:
            self.patch_errors.labels(kube_kind.value)
            self.node_read_errors.labels(kube_kind.value)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
