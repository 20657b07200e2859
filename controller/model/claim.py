"""A claim: capacity Spot Guard asked a group for and has neither bound to a node nor given back yet.

Each open replacement batch (and each return to spot of an SGFE) holds one claim on one group: ``count``
instances beyond the group's instances it saw when it asked (``known``). Claims are derived from the records
on every pass (never kept only in memory), so a successor sees the same claims as its predecessor.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Claim:
    key: str  # unique among open claims: "batch/<id>" or "sgfe/<name>"
    group: str
    count: int  # instances still owed to it
    known: frozenset[str]  # the group's instances when the increase was asked for (none of them is its)
    requested_at: str  # RFC 3339; older claims are served first
    withdrawing: bool = False  # being given back: its instances are still its own, its launches justify nothing
    taken: frozenset[str] = frozenset()  # being given back: the instances it had when that began (its own for good)

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"claim {self.key} on {self.group}: count {self.count} is negative")


@dataclasses.dataclass(frozen=True)
class Claims:
    """Every open claim on the groups, the instances already bound to a node (never an arrival again), and the
    instances whose Node is Ready (a claim takes those first: they can serve at once)."""

    open: tuple[Claim, ...] = ()
    bound: frozenset[str] = frozenset()
    ready: frozenset[str] = frozenset()

    def __add__(self, other: Claims) -> Claims:
        return Claims(self.open + other.open, self.bound | other.bound, self.ready | other.ready)

    def on(self, group: str) -> list[Claim]:
        """The open claims on ``group``, oldest first."""
        return sorted((c for c in self.open if c.group == group), key=lambda c: (c.requested_at, c.key))
