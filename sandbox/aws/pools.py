"""Instance pools (instance type x Availability Zone) and the order in which a group tries them.

Follows the EC2 Auto Scaling User Guide, "Auto Scaling groups with multiple instance types and purchase options":
a group first balances its instances across its Availability Zones, then picks the instance type by its allocation
strategy; if a pool has no capacity it keeps trying other pools. Groups without a MixedInstancesPolicy have one
instance type, so one pool per zone, and try another zone when one fails ("Instance distribution" in "Amazon EC2
Auto Scaling benefits": "If the attempt fails, however, Amazon EC2 Auto Scaling attempts to launch the instances in
another Availability Zone until it succeeds"; the API's AvailabilityZoneDistribution default, balanced-best-effort).

Spot allocation strategies, roughly (API Reference, InstancesDistribution):
- ``lowest-price`` (the API's default when none is given): the cheapest pool in the zone, whatever its capacity;
- ``capacity-optimized``: the pool with the most spare capacity (ties: override order);
- ``capacity-optimized-prioritized``: the override order, among the pools with the most spare capacity;
- ``price-capacity-optimized`` (the console's default, recommended): among the pools with the most spare capacity,
  the cheapest.
On-demand: ``prioritized`` (override order, the default) or ``lowest-price``.

The simulator knows two things per pool: its ``capacity_score`` (the spare capacity EC2 sees, which the strategies
read) and whether it is ``short`` (launches there fail). They are kept apart on purpose: EC2's view of capacity is not
a promise, so a pool a strategy prefers can still refuse a launch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

SPOT_MARKET = "spot"
ON_DEMAND_MARKET = "on-demand"

LOWEST_PRICE = "lowest-price"
CAPACITY_OPTIMIZED = "capacity-optimized"
CAPACITY_OPTIMIZED_PRIORITIZED = "capacity-optimized-prioritized"
PRICE_CAPACITY_OPTIMIZED = "price-capacity-optimized"
PRIORITIZED = "prioritized"
SPOT_STRATEGIES = (LOWEST_PRICE, CAPACITY_OPTIMIZED, CAPACITY_OPTIMIZED_PRIORITIZED, PRICE_CAPACITY_OPTIMIZED)
ON_DEMAND_STRATEGIES = (PRIORITIZED, LOWEST_PRICE)

# On-demand prices (USD per hour, us-east-1 Linux, from the EC2 On-Demand pricing page) of the types the sandbox's
# tests use; an unknown type costs DEFAULT_PRICE. Spot prices default to SPOT_DISCOUNT of these.
ON_DEMAND_PRICES: dict[str, float] = {
    "t3.medium": 0.0416,
    "t3.large": 0.0832,
    "m5.large": 0.096,
    "m5a.large": 0.086,
    "m5.xlarge": 0.192,
    "m5.2xlarge": 0.384,
    "m6i.large": 0.096,
    "m6i.xlarge": 0.192,
    "c5.large": 0.085,
    "c5.xlarge": 0.17,
    "r5.large": 0.126,
    "r5.xlarge": 0.252,
}
DEFAULT_PRICE = 0.1
SPOT_DISCOUNT = 0.35


@dataclasses.dataclass(frozen=True, order=True)
class Pool:
    instance_type: str
    zone: str

    def key(self) -> str:
        return f"{self.instance_type}/{self.zone}"


@dataclasses.dataclass
class PoolSettings:
    """What the simulator decides for one pool; None fields fall back to broader settings or defaults.

    short: launches in the pool fail with InsufficientInstanceCapacity.
    spot_price: the pool's spot price (default SPOT_DISCOUNT of the on-demand price).
    capacity_score: spare capacity as EC2 reports it to the allocation strategies (default 1.0; higher is more).
    """

    short: bool | None = None
    spot_price: float | None = None
    capacity_score: float | None = None

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> PoolSettings:
        """ValueError naming the field when a value has the wrong type."""
        short, price, score = data.get("short"), data.get("spot_price"), data.get("capacity_score")
        if short is not None and not isinstance(short, bool):
            raise ValueError(f"pool setting 'short' must be true or false, got {short!r}")
        for name, value in (("spot_price", price), ("capacity_score", score)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise ValueError(f"pool setting {name!r} must be a number >= 0, got {value!r}")
        return cls(
            short=short,
            spot_price=float(price) if isinstance(price, int | float) else None,
            capacity_score=float(score) if isinstance(score, int | float) else None,
        )

    def merged_over(self, broader: PoolSettings) -> PoolSettings:
        """These settings, with the unset ones taken from ``broader``."""
        return PoolSettings(
            short=self.short if self.short is not None else broader.short,
            spot_price=self.spot_price if self.spot_price is not None else broader.spot_price,
            capacity_score=self.capacity_score if self.capacity_score is not None else broader.capacity_score,
        )


def pool_settings_key(instance_type: str | None, zone: str | None) -> str:
    """The key a pool setting is stored under: ``type/zone``, ``*/zone`` (a whole zone) or ``type/*``."""
    return f"{instance_type or '*'}/{zone or '*'}"


def settings_for(pool: Pool, stored: Mapping[str, PoolSettings]) -> PoolSettings:
    """The most specific settings for ``pool``: type/zone, then */zone, then type/*."""
    merged = PoolSettings()
    for key in (
        pool_settings_key(pool.instance_type, pool.zone),
        pool_settings_key(None, pool.zone),
        pool_settings_key(pool.instance_type, None),
    ):
        found = stored.get(key)
        if found is not None:
            merged = merged.merged_over(found)
    return merged


@dataclasses.dataclass(frozen=True)
class Distribution:
    """A MixedInstancesPolicy's InstancesDistribution, with the API's defaults (API Reference,
    InstancesDistribution): OnDemandBaseCapacity 0, OnDemandPercentageAboveBaseCapacity 100, SpotAllocationStrategy
    lowest-price, OnDemandAllocationStrategy prioritized."""

    on_demand_base: int = 0
    on_demand_percentage: int = 100
    spot_strategy: str = LOWEST_PRICE
    on_demand_strategy: str = PRIORITIZED

    def on_demand_target(self, capacity: int) -> int:
        """How many of ``capacity`` instances are on-demand: the base first, then the percentage of the rest, rounded
        up in favour of On-Demand ("Control the proportion of On-Demand Instances")."""
        if capacity <= self.on_demand_base:
            return capacity
        above = capacity - self.on_demand_base
        return self.on_demand_base + math.ceil(above * self.on_demand_percentage / 100)


@dataclasses.dataclass(frozen=True)
class GroupShape:
    """What a group can launch: its instance types (override order), its zones, and, for a MixedInstancesPolicy group,
    the distribution. ``mixed`` groups write coded failure messages, the others plain sentences."""

    instance_types: tuple[str, ...]
    zones: tuple[str, ...]
    mixed: bool
    distribution: Distribution
    lt_market: str  # market of a group without a MixedInstancesPolicy (its launch template's, or the spot tag's)

    def market_for(self, desired: int, on_demand_now: int) -> str:
        """The market of the next instance when ``on_demand_now`` of the group's instances are on-demand."""
        if not self.mixed:
            return self.lt_market
        return ON_DEMAND_MARKET if on_demand_now < self.distribution.on_demand_target(desired) else SPOT_MARKET


def spot_price(pool: Pool, settings: PoolSettings) -> float:
    if settings.spot_price is not None:
        return settings.spot_price
    return round(ON_DEMAND_PRICES.get(pool.instance_type, DEFAULT_PRICE) * SPOT_DISCOUNT, 4)


def on_demand_price(instance_type: str) -> float:
    return ON_DEMAND_PRICES.get(instance_type, DEFAULT_PRICE)


def rank_types(shape: GroupShape, zone: str, market: str, stored: Mapping[str, PoolSettings]) -> list[Pool]:
    """The pools of ``zone`` in the order the group's allocation strategy tries them."""
    pools = [Pool(t, zone) for t in shape.instance_types]
    priority = {t: i for i, t in enumerate(shape.instance_types)}

    def score(pool: Pool) -> float:
        value = settings_for(pool, stored).capacity_score
        return 1.0 if value is None else value

    if market == ON_DEMAND_MARKET:
        if shape.distribution.on_demand_strategy == LOWEST_PRICE:
            return sorted(pools, key=lambda p: (on_demand_price(p.instance_type), priority[p.instance_type]))
        return pools
    strategy = shape.distribution.spot_strategy
    if strategy == LOWEST_PRICE:
        return sorted(pools, key=lambda p: (spot_price(p, settings_for(p, stored)), priority[p.instance_type]))
    if strategy in (CAPACITY_OPTIMIZED, CAPACITY_OPTIMIZED_PRIORITIZED):
        return sorted(pools, key=lambda p: (-score(p), priority[p.instance_type]))
    # price-capacity-optimized: the pools with the most capacity first, the cheapest of them first.
    return sorted(pools, key=lambda p: (-score(p), spot_price(p, settings_for(p, stored)), priority[p.instance_type]))


def pools_to_try(
    shape: GroupShape,
    zone_load: Mapping[str, int],
    market: str,
    stored: Mapping[str, PoolSettings],
    excluded: Iterable[Pool] = (),
) -> list[Pool]:
    """Every pool the next launch may try, in order: the emptiest zone first (zone balance comes first), each zone's
    pools by the allocation strategy; ``excluded`` pools (failed a moment ago) are left out."""
    skip = set(excluded)
    zones = sorted(shape.zones, key=lambda z: (zone_load.get(z, 0), shape.zones.index(z)))
    return [p for zone in zones for p in rank_types(shape, zone, market, stored) if p not in skip]


def other_zones(shape: GroupShape, zone: str) -> Sequence[str]:
    return [z for z in shape.zones if z != zone]
