"""SpotGuardFallbackEvent (SGFE): the seed's spec and status, its phase names, and the event's name.

The schema is the seed's (``manifests/crd-spotguardfallbackevent.yaml``); ``controller.adapters.sgfe_store``
reads and writes these objects.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

GROUP = "aws.amazon.com"
VERSION = "v1"
PLURAL = "spotguardfallbackevents"
KIND = "SpotGuardFallbackEvent"
# The seed's labels, so `kubectl get sgfe -l component=spot-guard` works as documented.
LABELS = {"app": "aws-node-termination-handler", "component": "spot-guard"}


class Phase:
    PENDING = "Pending"
    MONITORING = "Monitoring"
    READY_FOR_SCALE_DOWN = "ReadyForScaleDown"
    SCALING_DOWN = "ScalingDown"
    COMPLETED = "Completed"
    FAILED = "Failed"

    ALL = (PENDING, MONITORING, READY_FOR_SCALE_DOWN, SCALING_DOWN, COMPLETED, FAILED)
    UNFINISHED = (PENDING, MONITORING, READY_FOR_SCALE_DOWN, SCALING_DOWN)


@dataclasses.dataclass(frozen=True)
class Spec:
    spot_asg_name: str
    on_demand_asg_name: str
    on_demand_node_name: str
    timestamp: str
    on_demand_instance_id: str = ""
    minimum_wait_duration: str = ""

    def to_json(self) -> dict[str, str]:
        data = {
            "spotASGName": self.spot_asg_name,
            "onDemandASGName": self.on_demand_asg_name,
            "onDemandNodeName": self.on_demand_node_name,
            "timestamp": self.timestamp,
        }
        if self.on_demand_instance_id:
            data["onDemandInstanceID"] = self.on_demand_instance_id
        if self.minimum_wait_duration:
            data["minimumWaitDuration"] = self.minimum_wait_duration
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Spec:
        return cls(
            spot_asg_name=str(data.get("spotASGName", "")),
            on_demand_asg_name=str(data.get("onDemandASGName", "")),
            on_demand_node_name=str(data.get("onDemandNodeName", "")),
            timestamp=str(data.get("timestamp", "")),
            on_demand_instance_id=str(data.get("onDemandInstanceID", "")),
            minimum_wait_duration=str(data.get("minimumWaitDuration", "")),
        )


@dataclasses.dataclass(frozen=True)
class Status:
    phase: str = Phase.PENDING
    message: str = ""
    spot_capacity_restored: bool = False
    scale_down_initiated: bool = False
    spot_healthy_since: str = ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "phase": self.phase,
            "message": self.message,
            "spotCapacityRestored": self.spot_capacity_restored,
            "scaleDownInitiated": self.scale_down_initiated,
        }
        if self.spot_healthy_since:
            data["spotHealthySince"] = self.spot_healthy_since
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Status:
        data = data or {}
        return cls(
            phase=str(data.get("phase") or Phase.PENDING),
            message=str(data.get("message", "")),
            spot_capacity_restored=bool(data.get("spotCapacityRestored", False)),
            scale_down_initiated=bool(data.get("scaleDownInitiated", False)),
            spot_healthy_since=str(data.get("spotHealthySince", "")),
        )


@dataclasses.dataclass(frozen=True)
class FallbackEvent:
    name: str
    namespace: str
    uid: str
    resource_version: str
    spec: Spec
    status: Status
    annotations: Mapping[str, str]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FallbackEvent:
        meta = obj.get("metadata", {})
        return cls(
            name=meta["name"],
            namespace=meta.get("namespace", ""),
            uid=meta.get("uid", ""),
            resource_version=meta.get("resourceVersion", ""),
            spec=Spec.from_json(obj.get("spec", {})),
            status=Status.from_json(obj.get("status")),
            annotations=dict(meta.get("annotations") or {}),
        )


def event_name(unix_time: int, instance_id: str) -> str:
    """Deterministic name in the seed's form (``fallback-1736938845-abc123``) for one replaced instance."""
    digest = hashlib.sha256(instance_id.encode()).hexdigest()[:6]
    return f"fallback-{unix_time}-{digest}"
