"""SpotGuardFallbackEvent (SGFE): the seed's spec and status, its phase names, and the event's name.

The schema is the seed's (``manifests/crd-spotguardfallbackevent.yaml``); ``controller.adapters.sgfe_store``
reads and writes these objects. Reading one checks each field's type (the CRD's schema does too, but an object
stored under an older or looser CRD, or by a writer that bypassed it, reaches the controller all the same) and
raises ``MalformedEventError`` naming the event and the field; values are kept as written (a time or a duration is
checked where it is used: ``FallbackEvent.minimum_wait``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

from controller.config import ConfigError, parse_duration
from controller.model.progress import MalformedRecordError

GROUP = "aws.amazon.com"
VERSION = "v1"
PLURAL = "spotguardfallbackevents"
KIND = "SpotGuardFallbackEvent"
# The seed's labels, so `kubectl get sgfe -l component=spot-guard` works as documented.
LABELS = {"app": "aws-node-termination-handler", "component": "spot-guard"}


class MalformedEventError(MalformedRecordError):
    """An SGFE this version cannot read: ``name`` is the event, ``field`` the JSON path of the wrong value.

    A MalformedRecordError, so that the lifecycle contains it to its event as it does a bad lifecycle record."""

    def __init__(self, name: str, field: str, value: object, expected: str) -> None:
        shown = repr(value)
        shown = shown if len(shown) <= 120 else shown[:120] + "..."
        super().__init__(
            f"SpotGuardFallbackEvent {name or '(no name)'}: {field} is {shown}: expected {expected}; fix or delete "
            "the event",
            kind=KIND,
            name=name,
            field=field,
        )


def _texts(name: str, where: str, data: object, keys: Mapping[str, str]) -> dict[str, str]:
    """The text fields ``keys`` (JSON key -> attribute) of the object ``data`` at ``where``; "" when absent."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise MalformedEventError(name, where, data, "an object")
    values: dict[str, str] = {}
    for key, attribute in keys.items():
        value = data.get(key)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise MalformedEventError(name, f"{where}.{key}", value, "text")
        values[attribute] = value
    return values


def _flags(name: str, where: str, data: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, bool]:
    values: dict[str, bool] = {}
    for key, attribute in keys.items():
        value = data.get(key)
        if value is None:
            value = False
        if not isinstance(value, bool):
            raise MalformedEventError(name, f"{where}.{key}", value, "true or false")
        values[attribute] = value
    return values


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
    def from_json(cls, data: Mapping[str, Any] | None, name: str = "") -> Spec:
        """The spec of event ``name``; MalformedEventError naming the field when one has the wrong type."""
        return cls(**_texts(name, "spec", data, _SPEC_KEYS))


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
    def from_json(cls, data: Mapping[str, Any] | None, name: str = "") -> Status:
        """The status of event ``name``; MalformedEventError naming the field when one has the wrong type."""
        texts = _texts(name, "status", data, {"phase": "phase", "message": "message", "spotHealthySince": "since"})
        flags = _flags(name, "status", data or {}, _STATUS_FLAGS)
        return cls(
            phase=texts["phase"] or Phase.PENDING,
            message=texts["message"],
            spot_healthy_since=texts["since"],
            **flags,
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
        """An SGFE as the API server returns it; MalformedEventError naming the event and the field otherwise."""
        if not isinstance(obj, Mapping):
            raise MalformedEventError("", "", obj, "a SpotGuardFallbackEvent object")
        raw_meta = obj.get("metadata")
        name = raw_meta.get("name") if isinstance(raw_meta, Mapping) else None
        name = name if isinstance(name, str) else ""
        meta = _texts(name, "metadata", raw_meta, _META_KEYS)
        if not meta["name"]:
            raise MalformedEventError("", "metadata.name", name, "the event's name")
        annotations = (raw_meta or {}).get("annotations") or {}
        if not isinstance(annotations, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise MalformedEventError(name, "metadata.annotations", annotations, "a map of text to text")
        return cls(
            spec=Spec.from_json(obj.get("spec"), name),
            status=Status.from_json(obj.get("status"), name),
            annotations=dict(annotations),
            **meta,
        )

    def minimum_wait(self, default: float) -> float:
        """Seconds of ``spec.minimumWaitDuration`` (``default`` when unset); MalformedEventError when it is not a
        duration this version reads (``nan``, ``inf``, ``1e400``, more than a year, ...)."""
        text = self.spec.minimum_wait_duration
        if not text:
            return default
        try:
            return parse_duration("spec.minimumWaitDuration", text)
        except ConfigError as exc:
            raise MalformedEventError(
                self.name, "spec.minimumWaitDuration", text, "a duration such as 10m or 1h30m, at most a year"
            ) from exc


_SPEC_KEYS = {
    "spotASGName": "spot_asg_name",
    "onDemandASGName": "on_demand_asg_name",
    "onDemandNodeName": "on_demand_node_name",
    "timestamp": "timestamp",
    "onDemandInstanceID": "on_demand_instance_id",
    "minimumWaitDuration": "minimum_wait_duration",
}
_STATUS_FLAGS = {"spotCapacityRestored": "spot_capacity_restored", "scaleDownInitiated": "scale_down_initiated"}
_META_KEYS = {"name": "name", "namespace": "namespace", "uid": "uid", "resourceVersion": "resource_version"}


def event_name(unix_time: int, instance_id: str) -> str:
    """Deterministic name in the seed's form (``fallback-1736938845-abc123``) for one replaced instance."""
    digest = hashlib.sha256(instance_id.encode()).hexdigest()[:6]
    return f"fallback-{unix_time}-{digest}"
