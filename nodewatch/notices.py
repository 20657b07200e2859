"""Which annotation changes a poll calls for: pure functions of what IMDS shows and what the Node records.

A notice is described by the annotation values that identify it (the rebalance notice time; the
interruption action and time). Each notice kind also has a first-seen key (when nodewatch first saw this
notice) and a cleared key (when IMDS stopped showing it). The functions here return a merge-patch map:
a key set to a string is written, a key set to None is deleted, keys that need no change are absent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from nodewatch import annotations as keys
from nodewatch.annotations import format_time
from nodewatch.imds import InterruptionNotice, RebalanceRecommendation

Changes = dict[str, str | None]


@dataclasses.dataclass(frozen=True)
class NoticeKind:
    name: str
    value_keys: tuple[str, ...]
    first_seen_key: str
    cleared_key: str


REBALANCE = NoticeKind(
    name="rebalance",
    value_keys=(keys.REBALANCE_NOTICE_TIME,),
    first_seen_key=keys.REBALANCE_FIRST_SEEN,
    cleared_key=keys.REBALANCE_CLEARED,
)
INTERRUPTION = NoticeKind(
    name="interruption",
    value_keys=(keys.INTERRUPTION_ACTION, keys.INTERRUPTION_TIME),
    first_seen_key=keys.INTERRUPTION_FIRST_SEEN,
    cleared_key=keys.INTERRUPTION_CLEARED,
)
NOTICE_KINDS = (INTERRUPTION, REBALANCE)


def rebalance_values(notice: RebalanceRecommendation | None) -> dict[str, str] | None:
    if notice is None:
        return None
    return {keys.REBALANCE_NOTICE_TIME: format_time(notice.notice_time)}


def interruption_values(notice: InterruptionNotice | None) -> dict[str, str] | None:
    if notice is None:
        return None
    return {keys.INTERRUPTION_ACTION: notice.action, keys.INTERRUPTION_TIME: format_time(notice.time)}


class Sighting:
    """What IMDS has shown for one notice kind, and since when (formatted time of the first such poll).

    ``values`` is None while IMDS answers 404. ``since`` is None until the first successful read.
    """

    def __init__(self) -> None:
        self.values: dict[str, str] | None = None
        self.since: str | None = None

    def observe(self, values: dict[str, str] | None, now: str) -> bool:
        """Record one successful read; True when it shows a notice that was not showing on the last read."""
        if self.since is not None and values == self.values:
            return False
        self.values = values
        self.since = now
        return values is not None


def notice_changes(kind: NoticeKind, recorded: Mapping[str, str], sighting: Sighting) -> Changes:
    """The changes that make ``recorded`` describe ``sighting`` for one notice kind."""
    if sighting.since is None:
        return {}  # never read successfully: nothing to say yet
    recorded_notice = any(key in recorded for key in kind.value_keys)
    cleared = kind.cleared_key in recorded
    if sighting.values is None:
        if recorded_notice and not cleared:
            return {kind.cleared_key: sighting.since}
        return {}
    same_notice = all(recorded.get(key) == value for key, value in sighting.values.items())
    if same_notice and not cleared:
        # The recorded first-seen time wins: it may come from before a restart of the agent.
        return {} if kind.first_seen_key in recorded else {kind.first_seen_key: sighting.since}
    changes: Changes = dict(sighting.values)
    changes[kind.first_seen_key] = sighting.since
    if cleared:
        changes[kind.cleared_key] = None
    return changes


def identity_changes(after: Mapping[str, str], instance_id: str | None, availability_zone: str | None) -> Changes:
    """Instance id and zone, written next to a recorded notice (a Node that never had one is left alone)."""
    if not any(kind.value_keys[0] in after for kind in NOTICE_KINDS):
        return {}
    changes: Changes = {}
    for key, value in ((keys.INSTANCE_ID, instance_id), (keys.AVAILABILITY_ZONE, availability_zone)):
        if value is not None and after.get(key) != value:
            changes[key] = value
    return changes


def apply_changes(recorded: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    """The annotation map after a merge patch of ``changes``."""
    result = dict(recorded)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def all_changes(
    recorded: Mapping[str, str],
    sightings: Mapping[str, Sighting],
    instance_id: str | None,
    availability_zone: str | None,
) -> Changes:
    """Every change one poll calls for; an empty map means the Node needs no patch."""
    changes: Changes = {}
    for kind in NOTICE_KINDS:
        sighting = sightings.get(kind.name)
        if sighting is not None:
            changes.update(notice_changes(kind, recorded, sighting))
    changes.update(identity_changes(apply_changes(recorded, changes), instance_id, availability_zone))
    return changes
