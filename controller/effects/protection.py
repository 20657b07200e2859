"""What the lifecycle controller puts on an SGFE's on-demand Node, and how it takes it off again.

* While the event is active (Pending to ScalingDown) the node carries the cluster-autoscaler's
  ``scale-down-disabled`` annotation, so the autoscaler does not remove it behind Spot Guard's back, and
  ``spotguard.io/lifecycle-event: <namespace>/<name>`` naming the event it is protected for. The second one
  lets any controller (a successor after a crash included) find nodes whose event is gone and clean up.
  If the autoscaler annotation was there before Spot Guard came, ``spotguard.io/scale-down-disabled-preexisting``
  records it, and taking the protection off leaves it in place.
* During the scale-down the node is cordoned and tainted ``spotguard.io/scale-down=<event>:NoSchedule``;
  a rollback (spot relapsed, drain failed, event deleted) removes both.
"""

from __future__ import annotations

import contextlib
import logging

from controller.effects.drain import Drainer, DrainError
from controller.effects.node_writes import CA_SCALE_DOWN_DISABLED, NodeGoneError, NodeWriter
from controller.model import ownership
from controller.model.node import NodeView
from nodewatch import annotations as contract

log = logging.getLogger(__name__)

# Defined with every other key only the controller writes on Nodes (the admission policy guards them).
PROTECTED_FOR = ownership.PROTECTED_FOR
CA_PREEXISTING = ownership.CA_PREEXISTING
SCALE_DOWN_TAINT = contract.PREFIX + "scale-down"


def event_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def protected_for(node: NodeView) -> str | None:
    """The event (``namespace/name``) the node is protected for, if any (from the informer's view)."""
    return node.annotations.get(PROTECTED_FOR)


def tainted_by_spot_guard(node: NodeView) -> bool:
    return any(t.get("key") == SCALE_DOWN_TAINT for t in node.taints)


def protect(writer: NodeWriter, node: str, key: str) -> None:
    """Keep the cluster-autoscaler from removing ``node`` while event ``key`` is active. Raises NodeGoneError."""
    annotations = writer.read(node).get("metadata", {}).get("annotations") or {}
    if annotations.get(PROTECTED_FOR) == key and annotations.get(CA_SCALE_DOWN_DISABLED) == "true":
        return
    changes: dict[str, str | None] = {PROTECTED_FOR: key, CA_SCALE_DOWN_DISABLED: "true"}
    if CA_SCALE_DOWN_DISABLED in annotations and PROTECTED_FOR not in annotations:
        changes[CA_PREEXISTING] = "true"
    writer.annotate(node, changes)
    log.info("node %s: set %s=true while SpotGuardFallbackEvent %s is active", node, CA_SCALE_DOWN_DISABLED, key)


def unprotect(writer: NodeWriter, node: str) -> None:
    """Take the autoscaler protection off (keeping an annotation that was there before); a gone node is fine."""
    try:
        annotations = writer.read(node).get("metadata", {}).get("annotations") or {}
        if PROTECTED_FOR not in annotations:
            return
        changes: dict[str, str | None] = {PROTECTED_FOR: None, CA_PREEXISTING: None}
        if CA_PREEXISTING not in annotations:
            changes[CA_SCALE_DOWN_DISABLED] = None
        writer.annotate(node, changes)
        log.info("node %s: removed the autoscaler scale-down protection Spot Guard had set", node)
    except NodeGoneError:
        return


def cordon_and_taint(writer: NodeWriter, node: str, event_name: str) -> None:
    """Step 1 and 2 of the seed's scale-down: taint, then cordon. Raises NodeGoneError."""
    writer.set_taint(node, SCALE_DOWN_TAINT, event_name, "NoSchedule")
    writer.set_unschedulable(node, True)


def release(writer: NodeWriter, drainer: Drainer, node: str, *, keep_protection: bool) -> None:
    """Undo a scale-down on ``node``: if it carries Spot Guard's taint (so Spot Guard cordoned it), uncordon it
    and remove the taint; unless ``keep_protection`` (the event goes on), take the autoscaler protection off.
    A node that is gone needs nothing."""
    try:
        current = writer.read(node)
    except NodeGoneError:
        return
    taints = (current.get("spec") or {}).get("taints") or []
    if any(t.get("key") == SCALE_DOWN_TAINT for t in taints):
        try:
            drainer.uncordon(node)
        except DrainError as exc:
            if exc.status != 404:
                raise
            return
        with contextlib.suppress(NodeGoneError):
            writer.remove_taint(node, SCALE_DOWN_TAINT)
        log.info("node %s: uncordoned and taint %s removed", node, SCALE_DOWN_TAINT)
    if not keep_protection:
        unprotect(writer, node)
