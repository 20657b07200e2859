"""Which instance a group terminates when it scales in: zone balance first, then its termination policies.

Follows the EC2 Auto Scaling User Guide, "Configure termination policies for Amazon EC2 Auto Scaling" (and "Control
which Auto Scaling instances terminate during scale in"):

- Zone balance takes precedence over every policy: the victim comes from the Availability Zone with the most
  instances that has at least one instance not protected from scale in.
- A group with a MixedInstancesPolicy first decides whether a Spot or an On-Demand instance goes (the one whose
  share is above the distribution's target), then balances zones within that market.
- ``Default``: instances with an outdated configuration first (a launch configuration, then a launch template other
  than the group's, then the oldest version of the group's template); then the one closest to the next billing
  hour; among equals AWS picks at random: the simulator takes the lowest instance id, so runs repeat.
- ``OldestInstance``, ``NewestInstance``, ``OldestLaunchTemplate``, ``OldestLaunchConfiguration``,
  ``ClosestToNextInstanceHour``, ``AllocationStrategy`` narrow the candidates in the order the group lists them.

Instances protected from scale in are never candidates (the caller leaves them out).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence

from sandbox.aws.pools import (
    CAPACITY_OPTIMIZED,
    CAPACITY_OPTIMIZED_PRIORITIZED,
    LOWEST_PRICE,
    ON_DEMAND_MARKET,
    SPOT_MARKET,
    GroupShape,
    Pool,
    PoolSettings,
    on_demand_price,
    settings_for,
    spot_price,
)

DEFAULT = "Default"
OLDEST_INSTANCE = "OldestInstance"
NEWEST_INSTANCE = "NewestInstance"
OLDEST_LAUNCH_TEMPLATE = "OldestLaunchTemplate"
OLDEST_LAUNCH_CONFIGURATION = "OldestLaunchConfiguration"
CLOSEST_TO_NEXT_INSTANCE_HOUR = "ClosestToNextInstanceHour"
ALLOCATION_STRATEGY = "AllocationStrategy"
POLICIES = (
    DEFAULT,
    OLDEST_INSTANCE,
    NEWEST_INSTANCE,
    OLDEST_LAUNCH_TEMPLATE,
    OLDEST_LAUNCH_CONFIGURATION,
    CLOSEST_TO_NEXT_INSTANCE_HOUR,
    ALLOCATION_STRATEGY,
)


@dataclasses.dataclass(frozen=True)
class Member:
    """What the termination policies look at of one instance."""

    instance_id: str
    zone: str
    market: str
    instance_type: str
    launched_at: dt.datetime
    template: tuple[str, int] | None = None  # (launch template id, version) it was launched from
    launch_configuration: str | None = None


@dataclasses.dataclass(frozen=True)
class GroupFacts:
    """What the termination policies look at of the group."""

    policies: tuple[str, ...]
    template: tuple[str, int] | None
    launch_configuration: str | None
    shape: GroupShape
    pools: dict[str, PoolSettings]


Narrow = Callable[[list[Member], GroupFacts, dt.datetime], list[Member]]


def _minimal(members: list[Member], key: Callable[[Member], float]) -> list[Member]:
    keyed = [(key(m), m) for m in members]
    best = min(k for k, _ in keyed)
    return [m for k, m in keyed if k == best]


def _outdated_configuration(members: list[Member], group: GroupFacts, _now: dt.datetime) -> list[Member]:
    """Default/OldestLaunchTemplate/OldestLaunchConfiguration's first criterion, in the guide's order."""
    with_config = [m for m in members if m.launch_configuration is not None and group.launch_configuration is None]
    if with_config:
        return with_config
    if group.launch_configuration is not None:
        other = [m for m in members if m.launch_configuration != group.launch_configuration]
        return other or members
    if group.template is None:
        return members
    other_template = [m for m in members if m.template is None or m.template[0] != group.template[0]]
    if other_template:
        return other_template
    return _minimal(members, lambda m: m.template[1] if m.template else 0)


def _closest_to_next_hour(members: list[Member], _group: GroupFacts, now: dt.datetime) -> list[Member]:
    return _minimal(members, lambda m: 3600 - ((now - m.launched_at).total_seconds() % 3600))


def _allocation_strategy(members: list[Member], group: GroupFacts, _now: dt.datetime) -> list[Member]:
    """The instances that leave the remaining ones closest to the allocation strategy: on-demand, the lowest priority
    (or most expensive) type; spot, the most expensive pool (lowest-price) or the least spare capacity."""
    shape = group.shape
    priority = {t: i for i, t in enumerate(shape.instance_types)}
    costs: dict[tuple[str, str, str], float] = {}

    def cost(m: Member) -> float:
        pool = (m.market, m.instance_type, m.zone)
        if pool not in costs:
            costs[pool] = pool_cost(m)
        return costs[pool]

    def pool_cost(m: Member) -> float:
        if m.market == ON_DEMAND_MARKET:
            if shape.distribution.on_demand_strategy == LOWEST_PRICE:
                return -on_demand_price(m.instance_type)
            return -priority.get(m.instance_type, len(priority))
        settings = settings_for(Pool(m.instance_type, m.zone), group.pools)
        if shape.distribution.spot_strategy in (CAPACITY_OPTIMIZED, CAPACITY_OPTIMIZED_PRIORITIZED):
            return settings.capacity_score if settings.capacity_score is not None else 1.0
        return -spot_price(Pool(m.instance_type, m.zone), settings)

    return _minimal(members, cost)


def _default(members: list[Member], group: GroupFacts, now: dt.datetime) -> list[Member]:
    narrowed = members
    if group.shape.mixed:
        narrowed = _allocation_strategy(narrowed, group, now)
    return _closest_to_next_hour(_outdated_configuration(narrowed, group, now), group, now)


NARROWERS: dict[str, Narrow] = {
    DEFAULT: _default,
    OLDEST_INSTANCE: lambda ms, _g, _n: _minimal(ms, lambda m: m.launched_at.timestamp()),
    NEWEST_INSTANCE: lambda ms, _g, _n: _minimal(ms, lambda m: -m.launched_at.timestamp()),
    OLDEST_LAUNCH_TEMPLATE: _outdated_configuration,
    OLDEST_LAUNCH_CONFIGURATION: _outdated_configuration,
    CLOSEST_TO_NEXT_INSTANCE_HOUR: _closest_to_next_hour,
    ALLOCATION_STRATEGY: _allocation_strategy,
}


def market_to_shrink(counted: Sequence[Member], group: GroupFacts, desired_after: int) -> str | None:
    """For a MixedInstancesPolicy group, the market whose share is above the distribution's target once the group
    has ``desired_after`` instances; None for other groups."""
    if not group.shape.mixed:
        return None
    on_demand = sum(1 for m in counted if m.market == ON_DEMAND_MARKET)
    return ON_DEMAND_MARKET if on_demand > group.shape.distribution.on_demand_target(desired_after) else SPOT_MARKET


def choose_victim(
    candidates: Sequence[Member],
    counted: Sequence[Member],
    group: GroupFacts,
    desired_after: int,
    now: dt.datetime,
) -> Member | None:
    """The instance to terminate among ``candidates`` (unprotected), with ``counted`` all instances that count
    toward capacity; None when there is no candidate."""
    pool = list(candidates)
    if not pool:
        return None
    market = market_to_shrink(counted, group, desired_after)
    if market is not None:
        pool = [m for m in pool if m.market == market] or pool
    load: dict[str, int] = {}
    for member in counted:
        load[member.zone] = load.get(member.zone, 0) + 1
    busiest = max(load.get(m.zone, 0) for m in pool)
    pool = [m for m in pool if load.get(m.zone, 0) == busiest]
    for policy in group.policies or (DEFAULT,):
        narrow = NARROWERS.get(policy)
        if narrow is None or len(pool) == 1:
            continue
        pool = narrow(pool, group, now)
    return min(pool, key=lambda m: m.instance_id)
