"""Which spot ASG a node belongs to, and which on-demand ASG stands in for it.

Pairs come from ``SPOT_ASG_NAME``/``ON_DEMAND_ASG_NAME`` (one pair) and from a tag on each spot
ASG naming its on-demand partner (many pairs). A node outside every pair, or in a group with
Capacity Rebalancing on (AWS would launch a second replacement), is refused with a reason (naming a configured
spot group AWS does not know, when there is one: renamed?).

A missing spot group is reported once (a warning when it goes missing, an info line when it is back), and a failed
listing is not repeated on every pass: the next attempt waits, doubling from ``LOAD_BACKOFF_INITIAL`` up to the
refresh period, while the last good listing (if any) stays in use.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable

from controller.adapters.aws import AutoScaling, AwsError
from controller.config import Settings
from controller.model.asg import instance_id_from_provider_id

log = logging.getLogger(__name__)

#: Seconds before the first retry of a failed listing of the groups (it doubles up to the refresh period).
LOAD_BACKOFF_INITIAL = 5.0


@dataclasses.dataclass(frozen=True)
class Pair:
    spot: str
    on_demand: str


@dataclasses.dataclass(frozen=True)
class Refusal:
    reason: str  # short, for metrics: no-provider-id, not-in-a-group, unconfigured-group, capacity-rebalance
    message: str


class GroupResolver:
    """Resolves instance -> spot ASG -> pair, caching what AWS said (instances never change group)."""

    def __init__(
        self, settings: Settings, asg: AutoScaling, clock: Callable[[], float], refresh_seconds: float = 300.0
    ) -> None:
        self.settings = settings
        self.asg = asg
        self.clock = clock
        self.refresh_seconds = refresh_seconds
        self._pairs: dict[str, Pair] = {}
        self._capacity_rebalance: dict[str, bool] = {}
        self._loaded_at: float | None = None
        self._group_of: dict[str, str] = {}
        self._in_no_group: dict[str, float] = {}  # instance -> when AWS said it is in no ASG
        self._missing: set[str] = set()  # spot groups of a pair that AWS does not know (reported once)
        self._failures = 0  # listings failed in a row
        self._retry_at = 0.0  # no listing before this (after a failure)
        self._load_error: AwsError | None = None  # the last failed listing's error, reported once
        # The replacement loop and the queue pollers resolve at once: one listing at a time (a second caller that
        # needs one waits for it and finds it fresh) rather than a listing each; a caller whose listing is fresh
        # does not wait at all.
        self._lock = threading.RLock()

    def pairs(self) -> dict[str, Pair]:
        self.refresh(ahead=0.0)
        return self._pairs

    def missing(self, group: str) -> bool:
        """Whether the last listing found that AWS does not know ``group`` (a spot group of a pair): a caller can
        skip work for it until the next listing finds it."""
        return group in self._missing

    def refresh(self, ahead: float) -> None:
        """Reload the groups if they are stale or would be within ``ahead`` seconds. The replacement loop calls
        this when nothing waits for a call, so a burst's first detection does not wait for the groups' listing
        (hundreds of instances: a fraction of a second that held up every detection behind it).

        A failed listing is tried again only after a backoff; meanwhile the last good listing stays in use, and if
        there is none, the failure's AwsError is raised again without asking AWS.

        Callers that find the listing fresh never wait for the lock: while the loop lists ahead of time, the
        detections read the listing that is still valid."""
        if self._fresh(ahead):
            return
        with self._lock:
            self._refresh(ahead)

    def _fresh(self, ahead: float) -> bool:
        loaded = self._loaded_at
        return loaded is not None and self.clock() - loaded < self.refresh_seconds - ahead

    def _refresh(self, ahead: float) -> None:
        now = self.clock()
        if self._loaded_at is not None and now - self._loaded_at < self.refresh_seconds - ahead:
            return
        if now < self._retry_at:
            if self._loaded_at is None and self._load_error is not None:
                raise self._load_error
            return
        try:
            self._load()
        except AwsError as exc:
            self._failures += 1
            delay = min(self.refresh_seconds, LOAD_BACKOFF_INITIAL * 2 ** (self._failures - 1))
            self._retry_at = now + delay
            if self._load_error is None or str(self._load_error) != str(exc):
                log.warning(
                    "listing the Auto Scaling groups failed: %s; %s, next attempt in %gs (doubling up to %gs)",
                    exc,
                    "keeping the last listing" if self._loaded_at is not None else "no group is known yet",
                    delay,
                    self.refresh_seconds,
                )
            self._load_error = exc
            if self._loaded_at is None:
                raise
            return
        if self._load_error is not None:
            log.info("listing the Auto Scaling groups works again (after %d failed attempts)", self._failures)
        self._loaded_at = now
        self._failures = 0
        self._retry_at = 0.0
        self._load_error = None

    def _load(self) -> None:
        pairs: dict[str, Pair] = {}
        if self.settings.spot_asg_name:
            pairs[self.settings.spot_asg_name] = Pair(self.settings.spot_asg_name, self.settings.on_demand_asg_name)
        tagged = self.asg.tagged_groups(self.settings.partner_tag)
        for group in tagged.values():
            partner = group.tags.get(self.settings.partner_tag, "")
            if partner and group.name not in pairs:
                pairs[group.name] = Pair(group.name, partner)
        untagged = sorted(set(pairs) - set(tagged))
        described = {name: group for name, group in tagged.items() if name in pairs}
        described.update(self.asg.describe_groups(untagged) if untagged else {})
        self._capacity_rebalance = {name: g.capacity_rebalance for name, g in described.items()}
        for name, group in described.items():  # the spot groups' instances need no lookup of their own
            self._group_of.update(dict.fromkeys(group.instance_ids(), name))
        missing = set(pairs) - set(described)
        for name in sorted(missing - self._missing):
            log.warning(
                "spot ASG %s is configured but AWS does not know it (DescribeAutoScalingGroups does not return it): "
                "check SPOT_ASG_NAME (was the group renamed or deleted?); reported once, listed again every %gs",
                name,
                self.refresh_seconds,
            )
        for name in sorted(self._missing - missing):
            log.info("spot ASG %s exists again", name)
        self._missing = missing
        self._pairs = pairs

    def prefetch(self, instance_ids: Iterable[str]) -> None:
        """Look up the groups of many instances in as few calls as possible: the configured spot groups'
        instances come with the groups; others in one DescribeAutoScalingInstances per 50. An instance
        in no group is asked about again only after ``refresh_seconds``."""
        wanted = list(instance_ids)
        self.pairs()
        if all(i in self._group_of for i in wanted):
            return  # known already (the usual case): no lock, no wait behind another caller's lookup
        with self._lock:
            self._prefetch(wanted)

    def _prefetch(self, instance_ids: Iterable[str]) -> None:
        self.pairs()
        now = self.clock()
        unknown = sorted(
            {
                i
                for i in instance_ids
                if i not in self._group_of
                and now - self._in_no_group.get(i, -self.refresh_seconds) >= self.refresh_seconds
            }
        )
        if not unknown:
            return
        found = self.asg.group_of_instances(unknown)
        self._group_of.update(found)
        for instance in unknown:
            if instance not in found:
                self._in_no_group[instance] = now

    def known_group(self, instance_id: str) -> str | None:
        """The group of ``instance_id`` if this resolver learned it already (no AWS call)."""
        return self._group_of.get(instance_id)

    def resolve(self, provider_id: str) -> tuple[str, Pair] | Refusal:
        """(instance id, pair) for a node's providerID, or why Spot Guard will not act on it."""
        instance_id = instance_id_from_provider_id(provider_id)
        if instance_id is None:
            return Refusal("no-provider-id", f"spec.providerID {provider_id!r} names no EC2 instance")
        self.prefetch([instance_id])
        group = self._group_of.get(instance_id)
        if group is None:
            return Refusal("not-in-a-group", f"instance {instance_id} is in no Auto Scaling Group")
        pair = self.pairs().get(group)
        if pair is None:
            gone = sorted(name for name in self._missing if name in self._pairs)
            renamed = f" (configured spot ASG {', '.join(gone)} does not exist: was it renamed?)" if gone else ""
            return Refusal(
                "unconfigured-group",
                f"instance {instance_id} is in ASG {group}, which is not a configured spot group{renamed}: set "
                f"SPOT_ASG_NAME/ON_DEMAND_ASG_NAME or tag it {self.settings.partner_tag}=<on-demand ASG>",
            )
        if self._capacity_rebalance.get(group):
            return Refusal(
                "capacity-rebalance",
                f"ASG {group} has Capacity Rebalancing on, so AWS already launches a replacement; turn it off "
                "or remove the group from Spot Guard (running both would launch two replacements)",
            )
        return instance_id, pair
