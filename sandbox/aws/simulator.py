"""The capacity simulator: launches, pending time, capacity shortages and scaling activities for moto's groups.

moto keeps the groups and instances; the simulator decides when instances are launched, how long they stay
Pending, when launches fail, and when terminated instances leave, and it records every such step as a scaling
activity. All state changes happen under `lock`, which the server also holds while moto answers a request.

A scale-out launches at most ``LAUNCH_SLICE`` instances per hold of the lock: the first slice with the call that
made the gap (what a single replacement sees at once), the rest from the ticker, slice by slice, with the lock let go
in between. AWS answers SetDesiredCapacity at once and launches in the background, and one group's launches never
hold up another group's calls; here a call waits for one slice at most, not for a whole scale-out of hundreds.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sandbox.aws import aws_messages as msg
from sandbox.aws import moto_bridge as moto
from sandbox.aws.activities import Activity, ActivityLog
from sandbox.aws.capacity import (
    SPOT,
    CapacitySettings,
    GroupView,
    InstanceView,
    SimulatorDefaults,
    capacity_type_of,
)
from sandbox.aws.clock import Clock
from sandbox.aws.query_protocol import AwsApiError

log = logging.getLogger(__name__)

PENDING = "Pending"
IN_SERVICE = "InService"
TERMINATING = "Terminating"
# Lifecycle states that count toward the group's capacity.
COUNTED_STATES = frozenset({PENDING, "Pending:Wait", "Pending:Proceed", IN_SERVICE})

SUCCESSFUL = "Successful"
FAILED = "Failed"
IN_PROGRESS = "InProgress"

LAUNCH_SLICE = 20  # instances launched per hold of the lock
SLICE_PAUSE = 0.001  # seconds between slices with the lock let go, so waiting calls get it


class UnknownGroupError(LookupError):
    """The simulator has no group of that name."""


@dataclass
class _TrackedInstance:
    state: moto.MotoInstanceState
    in_service_at: datetime | None = None
    leave_at: datetime | None = None
    launch_activity: Activity | None = None
    terminate_activity: Activity | None = None


@dataclass
class _Group:
    name: str
    moto_group: moto.MotoGroup
    settings: CapacitySettings
    tracked: dict[str, _TrackedInstance] = field(default_factory=dict)
    next_attempt_at: datetime | None = None
    cause_prefix: str | None = None
    scale_out_from: tuple[int, int] | None = None  # (actual, desired) when the scale-out under way began


class CapacitySimulator:
    """Simulates EC2 capacity for every Auto Scaling group moto holds in one account and region."""

    def __init__(self, region: str, clock: Clock, defaults: SimulatorDefaults | None = None) -> None:
        self.region = region
        self.clock = clock
        self.defaults = defaults or SimulatorDefaults()
        self.lock = threading.RLock()
        # Set whenever an instance a Node may stand for changes: it goes InService, or enters or leaves a group other
        # than by a Pending launch (the node sync's wake-up: a burst's hundreds of Pending launches need no sync).
        self.changed = threading.Event()
        # Set when a scale-out has slices left: the ticker carries on at once rather than at its next tick.
        self.work = threading.Event()
        self.activities = ActivityLog()
        self._groups: dict[str, _Group] = {}

    @property
    def account_id(self) -> str:
        return moto.account_id()

    # ---- keeping up with moto ----

    def tick(self) -> None:
        """Adopt new groups, notice lost instances, finish due transitions and close desired/actual gaps: every
        scale-out to its end, a slice per hold of the lock."""
        self.work.clear()
        with self.lock:
            self._sync_groups()
            busy = [group for group in list(self._groups.values()) if self._advance(group)]
        while busy:
            time.sleep(SLICE_PAUSE)
            with self.lock:
                busy = [g for g in busy if self._groups.get(g.name) is g and self._reconcile(g)]

    def forget_everything(self) -> None:
        """Drop all groups, activities and settings (after moto itself was reset)."""
        with self.lock:
            self._groups.clear()
            self.activities.clear()
            self.changed.set()

    def _sync_groups(self) -> None:
        current = moto.groups(self.region)
        for name, group in list(self._groups.items()):
            if current.get(name) is not group.moto_group:
                self._drop_group(group)
        for name, moto_group in current.items():
            if name not in self._groups:
                self._adopt(name, moto_group)
        for group in self._groups.values():
            self._notice_membership(group)

    def _adopt(self, name: str, moto_group: moto.MotoGroup) -> _Group:
        capacity_type = capacity_type_of(moto.group_tags(moto_group))
        group = _Group(name=name, moto_group=moto_group, settings=self.defaults.for_capacity_type(capacity_type))
        self._groups[name] = group
        moto.adopt(
            moto_group,
            on_desired_set=lambda desired: self._desired_set_by_moto(group, desired),
            on_replace_requested=lambda: self._membership_changed(group),
        )
        self._notice_membership(group)
        log.info("Capacity simulator now manages Auto Scaling group %s (%s)", name, capacity_type)
        return group

    def _drop_group(self, group: _Group) -> None:
        """The group was deleted (or moto was reset): terminate what it still held and stop tracking it."""
        for tracked in group.tracked.values():
            moto.remove_and_terminate(None, tracked.state)
        del self._groups[group.name]
        self.changed.set()
        log.info("Auto Scaling group %s is gone; the capacity simulator stopped managing it", group.name)

    def _membership_changed(self, group: _Group) -> None:
        """moto removed members on its own (EC2 TerminateInstances): record the loss and replace at once."""
        self._notice_membership(group)
        self._reconcile(group)

    def _notice_membership(self, group: _Group) -> None:
        """Track instances moto added on its own; record instances that vanished without the simulator."""
        present = {s.instance.id: s for s in moto.instance_states(group.moto_group)}
        for instance_id, state in present.items():
            if instance_id not in group.tracked:
                group.tracked[instance_id] = _TrackedInstance(state=state)
                self.changed.set()
        for instance_id in [i for i in group.tracked if i not in present]:
            tracked = group.tracked.pop(instance_id)
            self.changed.set()
            if tracked.terminate_activity is None:
                now = self.clock.now()
                facts = moto.facts(tracked.state)
                if facts.ec2_state in ("terminated", "shutting-down", "stopped", "stopping"):
                    description = msg.terminate_description(instance_id)
                    cause = msg.health_check_terminate_cause(now, instance_id)
                else:  # still running: DetachInstances took it out
                    description = msg.detach_description(instance_id)
                    cause = msg.detach_cause(now, instance_id)
                self._record(
                    group,
                    description=description,
                    cause=cause,
                    status_code=SUCCESSFUL,
                    progress=100,
                    end_time=now,
                    zone=facts.availability_zone,
                )

    # ---- time passing ----

    def _advance(self, group: _Group) -> bool:
        """Finish ``group``'s due transitions and reconcile it; True if its scale-out has slices left."""
        now = self.clock.now()
        for instance_id, tracked in list(group.tracked.items()):
            lifecycle = tracked.state.lifecycle_state
            if lifecycle == PENDING and tracked.in_service_at is not None and now >= tracked.in_service_at:
                moto.set_lifecycle_state(tracked.state, IN_SERVICE)
                tracked.in_service_at = None
                if tracked.launch_activity is not None:
                    tracked.launch_activity.finish(SUCCESSFUL, now)
                self.changed.set()
                log.info("Instance %s of %s is InService", instance_id, group.name)
            elif lifecycle == TERMINATING and tracked.leave_at is not None and now >= tracked.leave_at:
                self._leave(group, instance_id, now)
        return self._reconcile(group)

    def _leave(self, group: _Group, instance_id: str, now: datetime) -> None:
        tracked = group.tracked.pop(instance_id)
        moto.remove_and_terminate(group.moto_group, tracked.state)
        if tracked.terminate_activity is not None:
            tracked.terminate_activity.finish(SUCCESSFUL, now)
        self.changed.set()
        log.info("Instance %s terminated and left %s", instance_id, group.name)

    def _counted(self, group: _Group) -> list[_TrackedInstance]:
        return [t for t in group.tracked.values() if t.state.lifecycle_state in COUNTED_STATES]

    def _reconcile(self, group: _Group) -> bool:
        """Launch (a slice) or terminate toward the group's desired capacity; True if launches are left, in which
        case the ticker is woken to carry on."""
        desired = moto.group_sizes(group.moto_group)[2]
        counted = self._counted(group)
        more = False
        if desired > len(counted):
            more = self._scale_out(group, len(counted), desired)
        else:
            group.next_attempt_at = None
            if desired < len(counted):
                self._scale_in(group, counted, desired)
        if more:
            self.work.set()
        else:
            group.cause_prefix = None
            group.scale_out_from = None
        return more

    def _zone_load(self, group: _Group) -> dict[str, int]:
        """Counted instances per zone of the group (its zones only)."""
        zones = moto.group_zones(group.moto_group) or [f"{self.region}a"]
        load = {zone: 0 for zone in zones}
        for tracked in self._counted(group):
            zone = moto.facts(tracked.state).availability_zone
            if zone in load:
                load[zone] += 1
        return load

    def _scale_out(self, group: _Group, actual: int, desired: int) -> bool:
        """Launch up to ``LAUNCH_SLICE`` instances toward ``desired``; True if more are left to launch."""
        now = self.clock.now()
        spot = capacity_type_of(moto.group_tags(group.moto_group)) == SPOT
        if group.settings.capacity_short:
            if group.next_attempt_at is not None and now < group.next_attempt_at:
                return False
            self._record_capacity_failure(group, actual, desired, spot, now)
            group.next_attempt_at = now + timedelta(seconds=group.settings.retry_seconds)
            return False
        group.next_attempt_at = None
        if group.scale_out_from is None or group.scale_out_from[1] != desired:
            group.scale_out_from = (actual, desired)  # every slice's activity names the whole step, as AWS's do
        began = group.scale_out_from[0]
        count = min(desired - actual, LAUNCH_SLICE)
        load = self._zone_load(group)  # counted once, then kept up to date: launching n is O(n), not O(n^2)
        for _ in range(count):
            zone = _emptiest(load)
            self._launch(group, zone, began, desired, spot=spot, now=now)
            load[zone] += 1
        return desired - actual > count

    def _record_capacity_failure(self, group: _Group, actual: int, desired: int, spot: bool, now: datetime) -> None:
        zone = _emptiest(self._zone_load(group))
        instance_type = moto.group_instance_type(group.moto_group)
        if spot:
            status = msg.spot_capacity_failure(instance_type)
        else:
            others = [z for z in moto.group_zones(group.moto_group) if z != zone]
            status = msg.on_demand_capacity_failure(instance_type, zone, others)
        self._record(
            group,
            description=msg.failed_launch_description(status),
            cause=msg.join_causes(group.cause_prefix, msg.launch_cause(now, actual, desired)),
            status_code=FAILED,
            progress=100,
            end_time=now,
            status_message=status,
            zone=zone,
        )
        log.warning(
            "Auto Scaling group %s could not launch (simulated capacity shortage, desired %d, actual %d); "
            "clear capacity_short to let it launch",
            group.name,
            desired,
            actual,
        )

    def _launch(self, group: _Group, zone: str, actual: int, desired: int, *, spot: bool, now: datetime) -> None:
        pending = group.settings.pending_seconds > 0
        state = moto.launch_instance(group.moto_group, zone, PENDING if pending else IN_SERVICE, spot)
        instance_id = state.instance.id
        activity = self._record(
            group,
            description=msg.launch_description(instance_id),
            cause=msg.join_causes(group.cause_prefix, msg.launch_cause(now, actual, desired)),
            status_code=IN_PROGRESS if pending else SUCCESSFUL,
            progress=30 if pending else 100,
            end_time=None if pending else now,
            zone=zone,
            subnet_id=moto.facts(state).subnet_id,
        )
        group.tracked[instance_id] = _TrackedInstance(
            state=state,
            in_service_at=now + timedelta(seconds=group.settings.pending_seconds) if pending else None,
            launch_activity=activity,
        )
        if not pending:
            self.changed.set()
        log.info("Launched %s in %s for %s (%s)", instance_id, zone, group.name, PENDING if pending else IN_SERVICE)

    def _scale_in(self, group: _Group, counted: list[_TrackedInstance], desired: int) -> None:
        now = self.clock.now()
        candidates = [t for t in counted if not t.state.protected_from_scale_in]
        for _ in range(len(counted) - desired):
            if not candidates:
                log.warning(
                    "Auto Scaling group %s is above desired capacity %d but every instance is protected from "
                    "scale-in; remove the protection to let it shrink",
                    group.name,
                    desired,
                )
                return
            victim = self._scale_in_victim(candidates)
            candidates.remove(victim)
            instance_id = victim.state.instance.id
            cause = msg.join_causes(group.cause_prefix, msg.scale_in_cause(now, len(counted), desired, instance_id))
            self._terminate(group, victim, cause, now)

    @staticmethod
    def _scale_in_victim(candidates: list[_TrackedInstance]) -> _TrackedInstance:
        """Default termination policy, simplified: the zone with the most instances, then its oldest instance."""
        by_zone: dict[str, list[_TrackedInstance]] = {}
        for tracked in candidates:
            by_zone.setdefault(tracked.state.instance.placement.zone, []).append(tracked)
        busiest = max(by_zone.values(), key=len)
        return min(busiest, key=lambda t: t.state.instance.launch_time)

    def _terminate(self, group: _Group, tracked: _TrackedInstance, cause: str, now: datetime) -> Activity:
        instance_id = tracked.state.instance.id
        if tracked.launch_activity is not None and tracked.launch_activity.end_time is None:
            tracked.launch_activity.finish(SUCCESSFUL, now)
        tracked.in_service_at = None
        tracked.terminate_activity = self._record(
            group,
            description=msg.terminate_description(instance_id),
            cause=cause,
            status_code=IN_PROGRESS,
            progress=50,
            end_time=None,
            zone=moto.facts(tracked.state).availability_zone,
        )
        moto.set_lifecycle_state(tracked.state, TERMINATING)
        tracked.leave_at = now + timedelta(seconds=group.settings.terminating_seconds)
        self.changed.set()
        if group.settings.terminating_seconds <= 0:
            self._leave(group, instance_id, now)
        return tracked.terminate_activity

    def _record(
        self,
        group: _Group,
        *,
        description: str,
        cause: str,
        status_code: str,
        progress: int,
        end_time: datetime | None,
        zone: str,
        status_message: str | None = None,
        subnet_id: str | None = None,
    ) -> Activity:
        details = {"Subnet ID": subnet_id, "Availability Zone": zone} if subnet_id else {"Availability Zone": zone}
        activity = Activity(
            group_name=group.name,
            group_arn=moto.group_arn(group.moto_group),
            description=description,
            cause=cause,
            start_time=self.clock.now(),
            end_time=end_time,
            status_code=status_code,
            status_message=status_message,
            progress=progress,
            details=details,
        )
        return self.activities.add(activity)

    def _desired_set_by_moto(self, group: _Group, desired: int | None) -> None:
        """moto changed desired capacity (UpdateAutoScalingGroup, DetachInstances, ...): record it and reconcile."""
        self._notice_membership(group)
        min_size, max_size, old = moto.group_sizes(group.moto_group)
        new = min_size if desired is None else desired
        moto.set_desired(group.moto_group, new)
        if new != old:
            group.cause_prefix = msg.desired_updated_by_user(self.clock.now(), min_size, max_size, old, new)
        self._reconcile(group)

    # ---- the Auto Scaling operations the simulator answers itself ----

    def _group(self, name: str) -> _Group:
        self._sync_groups()
        group = self._groups.get(name)
        if group is None:
            raise UnknownGroupError(name)
        return group

    def set_desired_capacity(self, group_name: str, desired: int) -> None:
        """SetDesiredCapacity: validate like AWS, change DesiredCapacity, then launch or terminate."""
        with self.lock:
            try:
                group = self._group(group_name)
            except UnknownGroupError:
                raise AwsApiError("ValidationError", msg.group_not_found_for_set_desired()) from None
            min_size, max_size, old = moto.group_sizes(group.moto_group)
            if desired > max_size:
                raise AwsApiError("ValidationError", msg.desired_above_max(desired, max_size))
            if desired < min_size:
                raise AwsApiError("ValidationError", msg.desired_below_min(desired, min_size))
            moto.set_desired(group.moto_group, desired)
            if desired != old:
                group.cause_prefix = msg.desired_set_by_user(self.clock.now(), old, desired)
                log.info("Desired capacity of %s set from %d to %d", group_name, old, desired)
            self._reconcile(group)

    def terminate_instance_in_group(self, instance_id: str, should_decrement: bool) -> Activity:
        """TerminateInstanceInAutoScalingGroup: that exact instance goes; desired drops by one if asked."""
        with self.lock:
            self._sync_groups()
            owner = next((g for g in self._groups.values() if instance_id in g.tracked), None)
            if owner is None:
                raise AwsApiError("ValidationError", msg.instance_not_managed(instance_id))
            tracked = owner.tracked[instance_id]
            now = self.clock.now()
            if tracked.state.lifecycle_state == TERMINATING and tracked.terminate_activity is not None:
                return dataclasses.replace(tracked.terminate_activity)
            min_size, _max_size, old = moto.group_sizes(owner.moto_group)
            new = old
            if should_decrement:
                if old <= min_size:
                    raise AwsApiError("ValidationError", msg.decrement_below_min(min_size))
                new = old - 1
                moto.set_desired(owner.moto_group, new)
            activity = self._terminate(owner, tracked, msg.user_terminate_cause(now, instance_id, old, new), now)
            owner.cause_prefix = None
            log.info("Instance %s of %s terminated on request (desired %d -> %d)", instance_id, owner.name, old, new)
            self._reconcile(owner)
            # AWS answers before the work is done: the activity it returns is always just starting.
            return dataclasses.replace(activity, status_code=IN_PROGRESS, progress=0, end_time=None)

    def describe_scaling_activities(
        self, group_name: str | None, activity_ids: list[str], include_deleted_groups: bool
    ) -> list[Activity]:
        """Activities newest first, of one group or of all groups (deleted ones only when asked)."""
        with self.lock:
            self._sync_groups()
            live = set(self._groups)
            if group_name is not None:
                if group_name not in live and not include_deleted_groups:
                    return []
                found = self.activities.for_group(group_name)
            else:
                found = self.activities.all(None if include_deleted_groups else live)
            if activity_ids:
                wanted = set(activity_ids)
                found = [a for a in found if a.activity_id in wanted]
            return [dataclasses.replace(a) for a in found]

    # ---- control ----

    def seed_in_service(self, group_name: str, count: int) -> list[str]:
        """Set desired to `count` and launch the instances straight into InService (sandbox start-up)."""
        with self.lock:
            group = self._group(group_name)
            pending_seconds = group.settings.pending_seconds
            group.settings = dataclasses.replace(group.settings, pending_seconds=0.0)
            try:
                moto.set_desired(group.moto_group, count)
                while self._reconcile(group):  # every slice now, while the instances are to start InService
                    pass
            finally:
                group.settings = dataclasses.replace(group.settings, pending_seconds=pending_seconds)
            return sorted(group.tracked)

    def settings(self, group_name: str) -> CapacitySettings:
        with self.lock:
            return dataclasses.replace(self._group(group_name).settings)

    def update_settings(self, group_name: str, changes: dict[str, object]) -> CapacitySettings:
        """Change a group's capacity settings (ValueError on bad input); lifting a shortage launches at once."""
        with self.lock:
            group = self._group(group_name)
            before = group.settings
            group.settings = before.updated(changes)
            log.info("Capacity settings of %s changed from %s to %s", group_name, before, group.settings)
            if before.capacity_short and not group.settings.capacity_short:
                group.next_attempt_at = None
            self._reconcile(group)
            return dataclasses.replace(group.settings)

    def capacity_type(self, group_name: str) -> str:
        with self.lock:
            return capacity_type_of(moto.group_tags(self._group(group_name).moto_group))

    def group_of_instance(self, instance_id: str) -> str | None:
        with self.lock:
            return next((g.name for g in self._groups.values() if instance_id in g.tracked), None)

    def group_names(self) -> list[str]:
        with self.lock:
            self._sync_groups()
            return list(self._groups)

    def snapshot(self) -> list[GroupView]:
        """Every managed group with its instances, as plain values safe to use outside the lock."""
        with self.lock:
            self._sync_groups()
            return [self._view(group) for group in self._groups.values()]

    def _view(self, group: _Group) -> GroupView:
        moto_group = group.moto_group
        tags = moto.group_tags(moto_group)
        capacity_type = capacity_type_of(tags)
        min_size, max_size, desired = moto.group_sizes(moto_group)
        instances = []
        for state in moto.instance_states(moto_group):
            facts = moto.facts(state)
            instances.append(
                InstanceView(
                    instance_id=facts.instance_id,
                    group_name=group.name,
                    capacity_type=capacity_type,
                    lifecycle_state=facts.lifecycle_state,
                    availability_zone=facts.availability_zone,
                    instance_type=facts.instance_type,
                    private_dns_name=facts.private_dns_name,
                    private_ip=facts.private_ip,
                )
            )
        return GroupView(
            name=group.name,
            arn=moto.group_arn(moto_group),
            capacity_type=capacity_type,
            min_size=min_size,
            max_size=max_size,
            desired_capacity=desired,
            availability_zones=tuple(moto.group_zones(moto_group)),
            instance_type=moto.group_instance_type(moto_group),
            tags=tags,
            settings=dataclasses.replace(group.settings),
            instances=tuple(instances),
        )


def _emptiest(load: dict[str, int]) -> str:
    """The zone with the fewest counted instances (the first such, in the group's order): where AWS launches next."""
    return min(load, key=lambda zone: load[zone])
