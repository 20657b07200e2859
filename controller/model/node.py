"""What the controller keeps of a Node: a few fields, so that a cache of thousands costs little memory."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from nodewatch import annotations as contract


@dataclasses.dataclass(frozen=True)
class NodeView:
    """What the controller needs to know of a Node."""

    name: str
    resource_version: str
    provider_id: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]  # Spot Guard's own keys only
    ready: bool
    unschedulable: bool
    taints: tuple[Mapping[str, str], ...]
    deleting: bool = False
    finalizers: tuple[str, ...] = ()
    created: str = ""  # metadata.creationTimestamp (RFC 3339; "" when not known)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> NodeView:
        meta = obj.get("metadata", {})
        spec = obj.get("spec", {})
        conditions = obj.get("status", {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(contract.PREFIX)}
        return cls(
            name=meta["name"],
            resource_version=meta.get("resourceVersion", ""),
            provider_id=spec.get("providerID", ""),
            labels=dict(meta.get("labels") or {}),
            annotations=annotations,
            ready=ready,
            unschedulable=bool(spec.get("unschedulable", False)),
            taints=tuple(
                {k: str(v) for k, v in t.items() if k in {"key", "value", "effect"}} for t in spec.get("taints") or []
            ),
            deleting=bool(meta.get("deletionTimestamp")),
            finalizers=tuple(meta.get("finalizers") or ()),
            created=str(meta.get("creationTimestamp") or ""),
        )
