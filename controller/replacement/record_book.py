"""The replacement records as this process knows them: the Node cache, with its own writes shown at once.

The watch lags this process's writes; a pass must never act on a record older than one it wrote itself. The
book keeps what this process wrote for each node until the cache shows it, writes compare-and-swap
(``NodeWriter.write_record``), and derives the open claims (``controller.model.claim``) from the records for
the capacity owner.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from controller.checks.spot_health import ready_instances
from controller.effects.node_writes import NodeGoneError, NodeWriter, RecordChangedError
from controller.model.claim import Claim, Claims
from controller.model.node import NodeView
from controller.model.record import ANNOTATION, Phase, ReplacementRecord
from nodewatch import annotations as contract

log = logging.getLogger(__name__)

HISTORY = 8  # versions of a node's record kept while the cache catches up
MAX_PARSED = 20_000  # records kept parsed (one per node with a record); beyond, the memory starts over

Write = tuple[str, "ReplacementRecord | None", "ReplacementRecord", "NodeView | None"]


def spot_claim_key(record: ReplacementRecord) -> str:
    """The claim a record's spot increase belongs to: one per increase (its group and change token), so nodes of a
    batch that went separate ways never share a claim by accident."""
    return f"{record.spot_asg}/{record.spot_change or 'batch-' + record.batch}"


def on_demand_claim_key(record: ReplacementRecord) -> str:
    return f"{record.on_demand_asg}/{record.on_demand_change or 'batch-' + record.batch}"


class RecordBook:
    def __init__(self, writer: NodeWriter, nodes: Callable[[], dict[str, NodeView]]) -> None:
        self.writer = writer
        self.nodes = nodes
        self._written: dict[str, list[str]] = {}  # node -> versions this process wrote, newest last
        self._lock = threading.Lock()
        # node -> (record text, what it reads as): a text is parsed once, however many passes and claims read it
        self._parsed: dict[str, tuple[str, ReplacementRecord | None, contract.MalformedAnnotationError | None]] = {}
        #: nodes whose record is not Spot Guard's (``decisions.untrusted``, set each pass): they hold no claim
        self.distrusted: frozenset[str] = frozenset()

    # -- reading --------------------------------------------------------------------------------------------
    def raw(self, node: NodeView) -> str | None:
        """The node's record text: the cache's, or this process's newer write."""
        raw = node.annotations.get(ANNOTATION)
        with self._lock:
            history = self._written.get(node.name)
            if history:
                if raw == history[-1]:
                    del self._written[node.name]  # the cache caught up with our last write
                elif raw is None or raw in history[:-1]:
                    raw = history[-1]  # the cache still shows an older version we replaced
        return raw

    def read(self, node: NodeView) -> tuple[ReplacementRecord | None, contract.MalformedAnnotationError | None]:
        """(record, None) or (None, why it cannot be read)."""
        raw = self.raw(node)
        if raw is None:
            return None, None
        seen = self._parsed.get(node.name)
        if seen is not None and seen[0] == raw:
            return seen[1], seen[2]
        try:
            read: tuple[ReplacementRecord | None, contract.MalformedAnnotationError | None] = (
                ReplacementRecord.from_json(raw),
                None,
            )
        except contract.MalformedAnnotationError as exc:
            read = None, exc.on_node(node.name)
        with self._lock:
            if len(self._parsed) >= MAX_PARSED:
                self._parsed.clear()
            self._parsed[node.name] = (raw, *read)
        return read

    def record(self, node: NodeView) -> ReplacementRecord | None:
        return self.read(node)[0]

    def written_nodes(self) -> set[str]:
        with self._lock:
            return set(self._written)

    def entries(self) -> list[tuple[NodeView, ReplacementRecord | None, contract.MalformedAnnotationError | None]]:
        """Every node with something of Spot Guard's on it (annotations, or a record just written), by name."""
        written = self.written_nodes()
        active = [n for n in self.nodes().values() if n.annotations or n.name in written]
        return [(node, *self.read(node)) for node in sorted(active, key=lambda n: n.name)]

    # -- writing --------------------------------------------------------------------------------------------
    def write(
        self, node: str, expected: ReplacementRecord | None, new: ReplacementRecord, seen: NodeView | None = None
    ) -> bool:
        """Replace ``expected`` with ``new``; False when the node is gone or its record is not ``expected``."""
        try:
            self.writer.write_record(node, expected, new, seen)
        except RecordChangedError as exc:
            log.warning("%s", exc)
            self.forget(node)
            return False
        except NodeGoneError:
            log.info("node %s is gone; its replacement record went with it", node)
            self.forget(node)
            return False
        with self._lock:
            history = self._written.setdefault(node, [expected.to_json()] if expected else [])
            history.append(new.to_json())
            del history[:-HISTORY]
        return True

    def forget(self, node: str) -> None:
        """Drop what this process wrote for ``node``: the API server's version is the truth again."""
        with self._lock:
            self._written.pop(node, None)

    # -- claims ---------------------------------------------------------------------------------------------
    def claims(self) -> Claims:
        """The open claims of the records (a batch's spot increase, its on-demand request), the instances bound to
        nodes as their replacement, and the instances whose Node is Ready."""
        members: dict[str, set[str]] = {}
        shapes: dict[str, tuple[str, frozenset[str], str, bool]] = {}
        taken: dict[str, set[str]] = {}
        bound: set[str] = set()
        written = self.written_nodes()
        distrusted = self.distrusted
        views = self.nodes()
        for node in views.values():
            if (ANNOTATION not in node.annotations and node.name not in written) or node.name in distrusted:
                continue
            record = self.record(node)
            if record is None:
                continue
            if record.replacement_instance:
                bound.add(record.replacement_instance)
            for key, group, known, asked_at, withdrawing, nodes in _claims_of(node.name, record):
                members.setdefault(key, set()).update(nodes)
                if withdrawing:  # the instances it had when its give-back began
                    taken.setdefault(key, set()).update(record.given_back)
                shape = shapes.get(key)
                shapes[key] = (group, known, asked_at, withdrawing or (shape is not None and shape[3]))
        claims = tuple(
            Claim(key, group, len(members[key]), known, asked_at, withdrawing, frozenset(taken.get(key, ())))
            for key, (group, known, asked_at, withdrawing) in shapes.items()
        )
        # which new instances have a Ready Node matters only to open claims (one pass over the Nodes: ~2 ms per 5,000)
        return Claims(claims, frozenset(bound), ready_instances(views) if claims else frozenset())


def _claims_of(
    node: str, record: ReplacementRecord
) -> Iterable[tuple[str, str, frozenset[str], str, bool, Iterable[str]]]:
    """(claim key, group, known instances, asked at, being given back, the nodes it covers) of one record."""
    if record.phase in Phase.SPOT_CLAIM and record.spot_target is not None:
        nodes = [node, *(m.node for m in record.members)]
        withdrawing = record.phase == Phase.SPOT_WITHDRAWING
        yield (
            spot_claim_key(record),
            record.spot_asg,
            frozenset(record.spot_known),
            record.requested_at,
            withdrawing,
            nodes,
        )
    elif record.members and record.spot_target is not None:
        # members whose own record was never written (gone, or replaced otherwise): their share is still claimed,
        # to be given back (``capacity_steps.settle_orphans``)
        yield (
            spot_claim_key(record),
            record.spot_asg,
            frozenset(record.spot_known),
            record.requested_at,
            True,
            [m.node for m in record.members],
        )
    if record.phase in Phase.ON_DEMAND_CLAIM and record.on_demand_target is not None:
        yield (
            on_demand_claim_key(record),
            record.on_demand_asg,
            frozenset(record.on_demand_known),
            record.on_demand_requested_at,
            record.giving_back,
            [node],
        )
