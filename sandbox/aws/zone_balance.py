"""When a group's Availability Zones are unbalanced, and where AZRebalance launches to even them.

Follows the EC2 Auto Scaling User Guide, "Amazon EC2 Auto Scaling benefits" (Instance distribution, Rebalancing
activities): the group keeps equivalent numbers of instances in its enabled zones; after a change leaves them
uneven it launches in the zones with the fewest instances first, then terminates elsewhere. The simulator calls a
group unbalanced when one zone holds at least two more instances than another (with n instances over k zones, a
balanced group has floor(n/k) or ceil(n/k) in each).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class RebalanceTarget:
    zone: str  # where AZRebalance launches next
    short_zones: tuple[str, ...]  # every zone with the fewest instances, in the group's order


def rebalance_target(load: Mapping[str, int]) -> RebalanceTarget | None:
    """The zone to launch in when ``load`` (instances per zone, in the group's zone order) is unbalanced; None when
    it is balanced (or has fewer than two zones)."""
    if len(load) < 2 or max(load.values()) - min(load.values()) <= 1:
        return None
    fewest = min(load.values())
    short_zones = tuple(z for z, n in load.items() if n == fewest)
    return RebalanceTarget(short_zones[0], short_zones)
