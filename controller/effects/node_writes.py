"""Writes to Nodes: the replacement record (compare-and-swap), taints, and cluster-autoscaler hints.

Every write reads the Node first and sends the resourceVersion it read; a 409 means the Node
changed, so the write is retried only if the record it expected is still there. A record that
someone else changed is never overwritten: ``RecordChangedError`` tells the caller to re-decide.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.adapters.kube import MERGE_PATCH, Kube
from controller.model.node import NodeView
from controller.model.record import ANNOTATION, FINALIZER, ReplacementRecord

log = logging.getLogger(__name__)

CA_SCALE_DOWN_DISABLED = "cluster-autoscaler.kubernetes.io/scale-down-disabled"


class RecordChangedError(RuntimeError):
    """The Node's replacement record is not the one this controller expected (another writer acted)."""


class NodeGoneError(RuntimeError):
    """The Node no longer exists."""


class NodeWriter:
    def __init__(self, kube: Kube, attempts: int = 5) -> None:
        self.kube = kube
        self.attempts = attempts

    def read(self, name: str) -> dict[str, Any]:
        try:
            return self.kube.request("GET", f"/api/v1/nodes/{name}")
        except ApiException as exc:
            if exc.status == 404:
                raise NodeGoneError(f"node {name} no longer exists") from exc
            raise

    @staticmethod
    def record_of(node: dict[str, Any]) -> ReplacementRecord | None:
        raw = (node.get("metadata", {}).get("annotations") or {}).get(ANNOTATION)
        return None if raw is None else ReplacementRecord.from_json(raw)

    def write_record(
        self, name: str, expected: ReplacementRecord | None, new: ReplacementRecord, seen: NodeView | None = None
    ) -> None:
        """Replace ``expected`` (None: no record yet) with ``new`` on the Node, or raise RecordChangedError.

        ``seen`` (the cached Node) saves the read when it shows ``expected``: its resourceVersion makes the
        write conditional all the same, and a 409 falls back to reading the Node.
        """
        want = expected.to_json() if expected else None
        for attempt in range(self.attempts):
            if attempt == 0 and seen is not None and seen.annotations.get(ANNOTATION) == want:
                version, present = seen.resource_version, list(seen.finalizers)
            else:
                node = self.read(name)
                current = self.record_of(node)
                if (current.to_json() if current else None) != want:
                    raise RecordChangedError(
                        f"node {name}: replacement record is {current.phase if current else 'absent'}, expected "
                        f"{expected.phase if expected else 'absent'}; another controller acted, re-reading"
                    )
                version, present = node["metadata"]["resourceVersion"], node["metadata"].get("finalizers") or []
            # While a replacement is in flight the Node carries our finalizer, so the record (and the
            # knowledge of what was asked of AWS) survives the Node being deleted under us.
            finalizers = [f for f in present if f != FINALIZER]
            if not new.terminal:
                finalizers.append(FINALIZER)
            patch = {
                "metadata": {
                    "resourceVersion": version,
                    "annotations": {ANNOTATION: new.to_json()},
                    "finalizers": finalizers,
                }
            }
            try:
                self.kube.request("PATCH", f"/api/v1/nodes/{name}", body=patch, content_type=MERGE_PATCH)
                return
            except ApiException as exc:
                if exc.status == 404:
                    raise NodeGoneError(f"node {name} no longer exists") from exc
                if exc.status != 409:
                    raise
                log.debug("node %s changed while writing its record; retrying", name)
        raise RecordChangedError(f"node {name} kept changing; gave up writing its record after {self.attempts} tries")

    def set_taint(self, name: str, key: str, value: str, effect: str) -> None:
        """Add or replace the taint ``key`` (one effect per key) without touching other taints."""
        self._update_taints(name, key, {"key": key, "value": value, "effect": effect})

    def remove_taint(self, name: str, key: str) -> None:
        self._update_taints(name, key, None)

    def _update_taints(self, name: str, key: str, taint: dict[str, str] | None) -> None:
        for _ in range(self.attempts):
            node = self.read(name)
            taints = [t for t in node.get("spec", {}).get("taints") or [] if t.get("key") != key]
            if taint is not None:
                taints.append(taint)
            elif len(taints) == len(node.get("spec", {}).get("taints") or []):
                return  # nothing to remove
            patch = {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]}, "spec": {"taints": taints}}
            try:
                self.kube.request("PATCH", f"/api/v1/nodes/{name}", body=patch, content_type=MERGE_PATCH)
                return
            except ApiException as exc:
                if exc.status == 404:
                    raise NodeGoneError(f"node {name} no longer exists") from exc
                if exc.status != 409:
                    raise
        raise RuntimeError(f"node {name} kept changing; could not update taint {key}")

    def set_unschedulable(self, name: str, unschedulable: bool) -> None:
        patch = {"spec": {"unschedulable": unschedulable}}
        try:
            self.kube.request("PATCH", f"/api/v1/nodes/{name}", body=patch, content_type=MERGE_PATCH)
        except ApiException as exc:
            if exc.status == 404:
                raise NodeGoneError(f"node {name} no longer exists") from exc
            raise

    def annotate(self, name: str, annotations: dict[str, str | None]) -> None:
        patch = {"metadata": {"annotations": annotations}}
        try:
            self.kube.request("PATCH", f"/api/v1/nodes/{name}", body=patch, content_type=MERGE_PATCH)
        except ApiException as exc:
            if exc.status == 404:
                raise NodeGoneError(f"node {name} no longer exists") from exc
            raise
