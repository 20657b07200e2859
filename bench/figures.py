"""What a benchmark measures: a Figure (the median of repeated samples), its Target and the Peer it is set beside."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Literal

Comparison = Literal["<=", ">="]
Statistic = Literal["median", "max"]


def _rounded(value: float) -> float:
    """Six significant digits: more than any of these measurements can tell apart, fewer than float noise."""
    return float(f"{value:.6g}")


@dataclasses.dataclass(frozen=True)
class Target:
    """What the issue asks of a figure: ``limit`` (in the figure's unit), compared with the median or the max."""

    limit: float
    comparison: Comparison = "<="
    applies_to: Statistic = "median"
    text: str = ""
    """Where the limit comes from, e.g. "one poll interval + 100 ms"."""

    def met(self, figure: Figure) -> bool:
        measured = figure.maximum if self.applies_to == "max" else figure.value
        return measured <= self.limit if self.comparison == "<=" else measured >= self.limit

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Target:
        return Target(
            limit=float(data["limit"]),
            comparison=data.get("comparison", "<="),
            applies_to=data.get("applies_to", "median"),
            text=str(data.get("text", "")),
        )


@dataclasses.dataclass(frozen=True)
class Peer:
    """The comparable figure of another tool, e.g. aws-node-termination-handler's memory request."""

    name: str
    text: str
    value: float | None = None
    """In the figure's unit when the two are directly comparable; None when the peer is only context."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Peer:
        value = data.get("value")
        return Peer(name=str(data["name"]), text=str(data["text"]), value=None if value is None else float(value))


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured figure. ``value`` is the median of ``samples`` (one sample is its own median)."""

    name: str
    """Stable identifier, ``<component>.<what>``, e.g. ``nodewatch.notice_to_annotation``."""
    value: float
    unit: str
    conditions: str
    target: Target | None = None
    peer: Peer | None = None
    title: str = ""
    samples: tuple[float, ...] = ()
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Filled in by the runner:
    benchmark: str = ""
    measured_at: str = ""
    environment: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @staticmethod
    def of_samples(
        name: str,
        samples: Sequence[float],
        unit: str,
        conditions: str,
        *,
        target: Target | None = None,
        peer: Peer | None = None,
        title: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> Figure:
        """The figure whose value is the median of ``samples`` (at least one, all finite)."""
        if not samples:
            raise ValueError(f"figure {name} has no samples")
        if not all(math.isfinite(sample) for sample in samples):
            raise ValueError(f"figure {name} has a sample that is not a finite number: {list(samples)}")
        return Figure(
            name=name,
            value=float(statistics.median(samples)),
            unit=unit,
            conditions=conditions,
            target=target,
            peer=peer,
            title=title,
            samples=tuple(float(sample) for sample in samples),
            details=dict(details or {}),
        )

    @property
    def maximum(self) -> float:
        return max(self.samples) if self.samples else self.value

    @property
    def minimum(self) -> float:
        return min(self.samples) if self.samples else self.value

    def target_met(self) -> bool | None:
        return None if self.target is None else self.target.met(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "value": _rounded(self.value),
            "unit": self.unit,
            "statistic": "median" if len(self.samples) != 1 else "single run",
            "samples": [_rounded(sample) for sample in self.samples],
            "min": _rounded(self.minimum),
            "max": _rounded(self.maximum),
            "conditions": self.conditions,
            "target": None if self.target is None else self.target.to_json(),
            "target_met": self.target_met(),
            "peer": None if self.peer is None else self.peer.to_json(),
            "details": dict(self.details),
            "benchmark": self.benchmark,
            "measured_at": self.measured_at,
            "environment": dict(self.environment),
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Figure:
        target = data.get("target")
        peer = data.get("peer")
        return Figure(
            name=str(data["name"]),
            value=float(data["value"]),
            unit=str(data["unit"]),
            conditions=str(data.get("conditions", "")),
            target=None if target is None else Target.from_json(target),
            peer=None if peer is None else Peer.from_json(peer),
            title=str(data.get("title", "")),
            samples=tuple(float(sample) for sample in data.get("samples", ())),
            details=dict(data.get("details", {})),
            benchmark=str(data.get("benchmark", "")),
            measured_at=str(data.get("measured_at", "")),
            environment=dict(data.get("environment", {})),
        )
