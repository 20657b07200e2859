"""Which new instances of a group belong to which open claim, and what the group's desired capacity justifies.

A pure function over one snapshot (the group, its open claims, the instances already bound to nodes):

* An instance *arrives for* a claim when it is live in the group (Pending, Pending:Wait, Pending:Proceed or
  InService), was not in the group when the claim asked (``Claim.known``) and is bound to no node yet. New
  instances are fungible, so the oldest claim is served first: with the instances that younger claims already
  knew (they arrived before those claims asked), then those whose Node is Ready (they can serve now: a launch the
  group made for someone else, an instance refresh's or one in place of an instance EC2 took, must not keep a claim
  waiting on a slow Node while a Ready one is there), then by id.
* A claim being given back keeps the instances it had when that began (``Claim.taken``, recorded then) and may
  still get launches that come late, but only as many as it had not got: it never takes another claim's share
  again once its own instances are gone.
* A claim's *outstanding* launches are those not arrived yet (none for a claim being given back). The group's
  desired capacity is *justified* by its live instances plus every outstanding launch: ``desired == live +
  outstanding`` is drift 0. Desired below that means someone else lowered it (Spot Guard's own terminations take
  their instance with them): the newest claims lose their increase first (``short``). Desired above it is
  capacity Spot Guard did not ask for (or a give-back under way).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping

from controller.model.asg import COUNTED_STATES, IN_SERVICE, Group, Instance
from controller.model.claim import Claim


@dataclasses.dataclass(frozen=True)
class GroupClaims:
    group: Group
    arrivals: Mapping[str, tuple[Instance, ...]]  # claim key -> its instances, in the order they were given
    outstanding: Mapping[str, int]  # claim key -> launches still owed
    short: Mapping[str, int]  # claim key -> outstanding launches the desired capacity no longer covers
    live: int
    withdrawing: bool  # a claim of the group is being given back: desired capacity is between two states

    @property
    def justified(self) -> int:
        """The desired capacity the live instances and the open claims justify."""
        return self.live + sum(self.outstanding.values())

    @property
    def unexplained(self) -> int:
        """Desired capacity minus what Spot Guard justifies: 0 unless someone else changed it (or launched)."""
        return self.group.desired - self.justified

    def ready(self, key: str, ready_instance_ids: Iterable[str]) -> tuple[str, ...]:
        """The claim's instances that are InService with a Ready Node."""
        ready = set(ready_instance_ids)
        return tuple(
            i.instance_id
            for i in self.arrivals.get(key, ())
            if i.lifecycle_state == IN_SERVICE and i.instance_id in ready
        )


def live_instances(group: Group) -> list[Instance]:
    return [i for i in group.instances if i.lifecycle_state in COUNTED_STATES]


def assign(
    group: Group, claims: Iterable[Claim], bound: Iterable[str] = (), ready: Collection[str] = ()
) -> GroupClaims:
    """Give each open claim of ``group`` its arrived instances (see the module's text); ``ready``: the instances
    whose Node is Ready."""
    ordered = sorted((c for c in claims if c.group == group.name), key=lambda c: (c.requested_at, c.key))
    taken = set(bound).union(*(c.taken for c in ordered))
    live = live_instances(group)
    arrivals: dict[str, tuple[Instance, ...]] = {}
    for index, claim in enumerate(ordered):
        younger = ordered[index + 1 :]
        own = [i for i in live if i.instance_id in claim.taken]
        candidates = [i for i in live if i.instance_id not in claim.known and i.instance_id not in taken]
        candidates.sort(
            key=lambda i: (-sum(i.instance_id in c.known for c in younger), i.instance_id not in ready, i.instance_id)
        )
        mine = (*own, *candidates[: max(0, claim.count - len(claim.taken))])
        taken.update(i.instance_id for i in mine)
        arrivals[claim.key] = mine
    outstanding = {c.key: 0 if c.withdrawing else c.count - len(arrivals[c.key]) for c in ordered}
    missing = max(0, len(live) + sum(outstanding.values()) - group.desired)
    short: dict[str, int] = {}
    for claim in reversed(ordered):  # the newest claims lose their increase first
        if missing <= 0:
            break
        lost = min(missing, outstanding[claim.key])
        if lost:
            short[claim.key] = lost
            missing -= lost
    return GroupClaims(group, arrivals, outstanding, short, len(live), any(c.withdrawing for c in ordered))
