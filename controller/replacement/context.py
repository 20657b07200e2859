"""What every step of the replacement road works with, in one object: the parts (wired once per leader term)
and the little memory this process keeps between passes (none of it needed after a crash)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from controller.adapters.aws import AwsError
from controller.adapters.sgfe_store import FallbackEvents
from controller.capacity.groups import GroupResolver
from controller.capacity.hooks import HookCache
from controller.capacity.owner import CapacityOwner
from controller.capacity.refreshes import RefreshCache
from controller.clock import Clock
from controller.config import Settings
from controller.effects.drain import NodeDrains
from controller.effects.node_writes import NodeWriter
from controller.model.asg import instance_id_from_provider_id
from controller.model.node import NodeView
from controller.model.record import ReplacementRecord
from controller.observability import tracing
from controller.observability.reporters import ReplacementReporter
from controller.replacement.record_book import RecordBook
from controller.workers import Workers
from nodewatch import annotations as contract

log = logging.getLogger("controller.replacement")

#: What AWS error codes mean for the operator, in a Warning Event on each node concerned.
AWS_HINTS = {
    "AccessDenied": "grant the controller's IAM role the action (manifests/iam-policy.json)",
    "ValidationError": "check that the ASG exists and its MaxSize allows the change",
    "Throttling": "AWS is rate limiting; Spot Guard retries with backoff",
    "ScalingActivityInProgress": "another scaling activity holds the group; Spot Guard retries",
}


@dataclasses.dataclass
class Memory:
    """What this process remembers between passes. Losing it (a crash) costs at most a repeated read."""

    sent: set[str] = dataclasses.field(default_factory=set)  # spot batches whose call this process made
    deadlines: dict[str, float] = dataclasses.field(default_factory=dict)  # claim -> monotonic deadline
    next_poll: dict[str, float] = dataclasses.field(default_factory=dict)  # group -> monotonic next capacity poll
    retry_at: dict[str, float] = dataclasses.field(default_factory=dict)  # node -> no retry of its job before
    drain_attempts: dict[str, int] = dataclasses.field(default_factory=dict)
    refused: dict[str, str] = dataclasses.field(default_factory=dict)  # node -> last refusal (reported once)
    announced: dict[str, str] = dataclasses.field(default_factory=dict)  # node -> the notice its Event announced
    recording: set[str] = dataclasses.field(default_factory=set)  # batches whose member records are being written
    hooks: HookCache = dataclasses.field(default_factory=HookCache)  # group -> its lifecycle hooks, read lately
    refreshes: RefreshCache = dataclasses.field(default_factory=RefreshCache)  # group -> its active refresh
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


@dataclasses.dataclass
class Context:
    settings: Settings
    clock: Clock
    owner: CapacityOwner
    book: RecordBook
    writer: NodeWriter
    drains: NodeDrains
    sgfes: FallbackEvents
    resolver: GroupResolver
    workers: Workers
    reporter: ReplacementReporter
    nodes: Callable[[], dict[str, NodeView]]
    wake: Callable[[], None]
    paused: Callable[[], bool] = lambda: False
    memory: Memory = dataclasses.field(default_factory=Memory)

    def announce(self, node: NodeView, reason: str, trigger: str, identity: str) -> None:
        """An Event on the node: a notice was first seen (once per notice and process)."""
        with self.memory.lock:
            if self.memory.announced.get(node.name) == identity:
                return
            self.memory.announced[node.name] = identity
        instance = instance_id_from_provider_id(node.provider_id) or "its instance"
        at = identity.split(":", 1)[1]
        if trigger == "interruption":
            message = f"EC2 will interrupt spot instance {instance} at {at} (interruption notice seen by nodewatch)"
        else:
            message = f"EC2 recommends rebalancing spot instance {instance} (notice of {at}, seen by nodewatch)"
        log.info("node %s: %s", node.name, message)
        self.reporter.node_event(node.name, "Normal", reason, message)

    def refuse_once(self, node: str, reason: str, message: str, field: str = "") -> bool:
        """Report a refusal once per node and message (``field``: the malformed annotation, when that is why);
        True when it was reported now."""
        with self.memory.lock:
            if self.memory.refused.get(node) == message:
                return False
            self.memory.refused[node] = message
        log.warning("not acting on node %s: %s", node, message)
        self.reporter.node_event(node, "Warning", "SpotGuardRefused", message)
        self.reporter.refused(reason)
        if field:
            self.reporter.malformed("Node", field)
        return True

    def report_aws_error(self, asg: str, nodes: Iterable[str], exc: AwsError) -> None:
        hint = AWS_HINTS.get(exc.code, "Spot Guard retries on its next pass")
        for node in nodes:
            self.reporter.node_event(node, "Warning", "AWSError", f"{exc} (ASG {asg}); {hint}")
        log.warning("ASG %s: %s; %s", asg, exc, hint)

    def ready_instance_ids(self) -> set[str]:
        ids = set()
        for node in self.nodes().values():
            instance = instance_id_from_provider_id(node.provider_id)
            if instance and node.ready and not node.deleting:
                ids.add(instance)
        return ids

    def instance_nodes(self) -> dict[str, str]:
        """instance id -> the name of its Node, for every Node of the cache."""
        return {
            instance: node.name
            for node in self.nodes().values()
            if (instance := instance_id_from_provider_id(node.provider_id))
        }

    def node_of_instance(self, instance_id: str) -> str | None:
        return self.instance_nodes().get(instance_id)

    def now_text(self) -> str:
        return contract.format_time(self.clock.now())


def parse_time(text: str) -> dt.datetime:
    return contract.parse_time("record", text)


def span(record: ReplacementRecord, name: str, **attributes: object) -> Any:
    """A span of this replacement's trace (the detection span's context is kept on the record)."""
    carrier = {"traceparent": record.traceparent} if record.traceparent else None
    attributes.setdefault("instance", record.instance_id)
    return tracing.span(name, carrier, **attributes)


def detection_span(node: str, instance_id: str, asg: str, trigger: str) -> str:
    """Start a replacement's trace; returns its W3C traceparent ("" when tracing is off)."""
    with tracing.span("detection", None, node=node, instance=instance_id, asg=asg, trigger=trigger) as detected:
        return detected.annotations().get(tracing.TRACEPARENT_ANNOTATION, "")
