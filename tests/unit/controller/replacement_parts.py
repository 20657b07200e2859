"""A replacement controller's parts for unit tests: the production classes around in-memory fakes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from controller.adapters.aws import AutoScaling
from controller.capacity.groups import GroupResolver
from controller.capacity.owner import CapacityOwner
from controller.clock import FakeClock
from controller.config import Settings
from controller.effects.node_writes import NodeWriter
from controller.model.node import NodeView
from controller.observability.reporters import LogReplacementReporter, ReplacementReporter
from controller.replacement.context import Context
from controller.replacement.record_book import RecordBook
from controller.workers import ThreadWorkers, Workers


def context(
    settings: Settings,
    clock: FakeClock,
    aws: Any,
    writer: Any,
    nodes: Callable[[], dict[str, NodeView]],
    *,
    workers: Workers | None = None,
    reporter: ReplacementReporter | None = None,
    sgfes: Any = None,
    drains: Any = None,
) -> Context:
    """A Context whose AWS client (``aws``: an ``AutoScaling`` or a stand-in with its methods) and Node writer are
    the test's; the capacity owner, the record book and the workers are the production ones."""
    workers = workers or ThreadWorkers()
    owner = CapacityOwner(cast(AutoScaling, aws), clock, read_ahead=workers.read_ahead)
    ctx = Context(
        settings=settings,
        clock=clock,
        owner=owner,
        book=RecordBook(cast(NodeWriter, writer), nodes),
        writer=cast(NodeWriter, writer),
        drains=drains,
        sgfes=sgfes,
        resolver=GroupResolver(settings, cast(AutoScaling, aws), clock.monotonic),
        workers=workers,
        reporter=reporter or LogReplacementReporter(),
        nodes=nodes,
        wake=lambda: None,
    )
    owner.node_of = ctx.node_of_instance
    return ctx
