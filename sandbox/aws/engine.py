"""The engine of the simulator: what EC2 Auto Scaling does to each group as time passes and as its settings change.

It launches toward desired capacity from the group's pools (failing, and trying other pools, as EC2 would), holds
instances in lifecycle hooks, terminates by the termination policies, rebalances zones and runs instance refreshes,
and records each step as a scaling activity; sandbox.aws.simulator.CapacitySimulator adds the operations callers ask
for. Every method runs under the caller's hold of ``lock``.

A scale-out launches at most ``LAUNCH_SLICE`` instances per hold of the lock: the first slice with the call that
made the gap (what a single replacement sees at once), the rest from the ticker, slice by slice, with the lock let go
in between. AWS answers SetDesiredCapacity at once and launches in the background, and one group's launches never
hold up another group's calls; here a call waits for one slice at most, not for a whole scale-out of hundreds.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

from sandbox.aws import aws_messages as msg
from sandbox.aws import launch_errors
from sandbox.aws import moto_bridge as moto
from sandbox.aws.activities import Activity, ActivityLog
from sandbox.aws.capacity import SimulatorDefaults, capacity_type_of
from sandbox.aws.clock import Clock
from sandbox.aws.group_state import (
    AZ_REBALANCE,
    CANCELLED,
    COUNTED_STATES,
    FAILED,
    IN_PROGRESS,
    IN_SERVICE,
    LAUNCH,
    LEAVING_STATES,
    MID_LIFECYCLE_ACTION,
    PENDING,
    PENDING_PROCEED,
    PENDING_WAIT,
    SUCCESSFUL,
    TERMINATE,
    TERMINATING,
    TERMINATING_PROCEED,
    TERMINATING_WAIT,
    GroupState,
    TrackedInstance,
    group_shape,
)
from sandbox.aws.instance_refresh import ACTIVE as REFRESH_ACTIVE
from sandbox.aws.instance_refresh import InstanceRefresh
from sandbox.aws.launch_errors import LaunchContext, LaunchFailureShape
from sandbox.aws.lifecycle_hooks import ABANDON, LifecycleAction, outcome
from sandbox.aws.pools import (
    ON_DEMAND_MARKET,
    SPOT_MARKET,
    GroupShape,
    Pool,
    other_zones,
    pools_to_try,
    settings_for,
)
from sandbox.aws.termination import GroupFacts, choose_victim
from sandbox.aws.zone_balance import rebalance_target

log = logging.getLogger(__name__)

LAUNCH_SLICE = 20  # instances launched per hold of the lock
SLICE_PAUSE = 0.001  # seconds between slices with the lock let go, so waiting calls get it


class GroupEngine:
    """What EC2 Auto Scaling does to every group moto holds in one account and region."""

    def __init__(self, region: str, clock: Clock, defaults: SimulatorDefaults | None = None) -> None:
        self.region = region
        self.clock = clock
        self.defaults = defaults or SimulatorDefaults()
        self.lock = threading.RLock()
        # Set whenever an instance a Node may stand for changes: it finishes booting, or enters or leaves a group other
        # than by a Pending launch (the node sync's wake-up: a burst's hundreds of Pending launches need no sync).
        self.changed = threading.Event()
        # Set when a scale-out has slices left: the ticker carries on at once rather than at its next tick.
        self.work = threading.Event()
        self.activities = ActivityLog()
        self._groups: dict[str, GroupState] = {}

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

    def _adopt(self, name: str, moto_group: moto.MotoGroup) -> GroupState:
        capacity_type = capacity_type_of(moto.group_tags(moto_group))
        group = GroupState(name=name, moto_group=moto_group, settings=self.defaults.for_capacity_type(capacity_type))
        self._groups[name] = group
        moto.adopt(
            moto_group,
            on_desired_set=lambda desired: self._desired_set_by_moto(group, desired),
            on_replace_requested=lambda: self._membership_changed(group),
        )
        self._notice_membership(group)
        log.info("Capacity simulator now manages Auto Scaling group %s (%s)", name, capacity_type)
        return group

    def _drop_group(self, group: GroupState) -> None:
        """The group was deleted (or moto was reset): terminate what it still held and stop tracking it."""
        for tracked in group.tracked.values():
            moto.remove_and_terminate(None, tracked.state)
        del self._groups[group.name]
        self.changed.set()
        log.info("Auto Scaling group %s is gone; the capacity simulator stopped managing it", group.name)

    def _membership_changed(self, group: GroupState) -> None:
        """moto removed members on its own (EC2 TerminateInstances): record the loss and replace at once."""
        self._notice_membership(group)
        self._reconcile(group)

    def _track(self, group: GroupState, state: moto.MotoInstanceState, market: str) -> TrackedInstance:
        facts = moto.facts(state)
        tracked = TrackedInstance(
            state=state,
            launched_at=self.clock.now(),
            market=market,
            instance_type=facts.instance_type,
            zone=facts.availability_zone,
            template=moto.current_template(group.moto_group),
            launch_configuration=moto.launch_configuration_name(group.moto_group),
        )
        group.tracked[tracked.instance_id] = tracked
        return tracked

    def _notice_membership(self, group: GroupState) -> None:
        """Track instances moto added on its own; record instances that vanished without the simulator."""
        present = {s.instance.id: s for s in moto.instance_states(group.moto_group)}
        for instance_id, state in present.items():
            if instance_id not in group.tracked:
                lifecycle = getattr(state.instance, "lifecycle", None)
                self._track(group, state, SPOT_MARKET if lifecycle == "spot" else ON_DEMAND_MARKET)
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

    def _advance(self, group: GroupState) -> bool:
        """Finish ``group``'s due transitions, move its refresh on and reconcile it; True if its scale-out has slices
        left."""
        now = self.clock.now()
        for tracked in list(group.tracked.values()):
            lifecycle = tracked.lifecycle
            if lifecycle == PENDING and tracked.in_service_at is not None and now >= tracked.in_service_at:
                self._booted(group, tracked, now)
            elif lifecycle in (PENDING_WAIT, TERMINATING_WAIT):
                expired = [a for a in tracked.actions if a.expire_if_due(now)]
                if expired:
                    self._actions_changed(group, tracked, now)
            elif (
                lifecycle in (TERMINATING, TERMINATING_PROCEED)
                and tracked.leave_at is not None
                and now >= tracked.leave_at
            ):
                self._leave(group, tracked.instance_id, now)
        self._advance_refresh(group, now)
        return self._reconcile(group)

    def _booted(self, group: GroupState, tracked: TrackedInstance, now: datetime) -> None:
        """The instance finished its Pending time: its launch hooks hold it in Pending:Wait, or it is InService
        (User Guide, "How lifecycle hooks work"; sandbox.aws.lifecycle_hooks)."""
        tracked.in_service_at = None
        hooks = [h for h in moto.lifecycle_hooks(group.moto_group) if h.transition == moto.LAUNCHING_TRANSITION]
        self.changed.set()
        if hooks:
            tracked.actions = [LifecycleAction.begin(h, tracked.instance_id, now) for h in hooks]
            moto.set_lifecycle_state(tracked.state, PENDING_WAIT)
            if tracked.launch_activity is not None:
                tracked.launch_activity.status_code = MID_LIFECYCLE_ACTION
                tracked.launch_activity.progress = 40
            log.info(
                "Instance %s of %s is Pending:Wait (launch hooks %s)",
                tracked.instance_id,
                group.name,
                [h.name for h in hooks],
            )
            return
        self._in_service(group, tracked, now)

    def _in_service(self, group: GroupState, tracked: TrackedInstance, now: datetime) -> None:
        moto.set_lifecycle_state(tracked.state, IN_SERVICE)
        tracked.actions = []
        if tracked.launch_activity is not None:
            tracked.launch_activity.finish(SUCCESSFUL, now)
        self.changed.set()
        log.info("Instance %s of %s is InService", tracked.instance_id, group.name)

    def _actions_changed(self, group: GroupState, tracked: TrackedInstance, now: datetime) -> None:
        """A lifecycle action of the instance completed or timed out: move it on once all of them are done."""
        deciding = outcome(tracked.actions)
        if deciding is None:
            return
        if tracked.lifecycle == PENDING_WAIT:
            if deciding.result == ABANDON:
                self._abandon_launch(group, tracked, deciding, now)
            else:
                moto.set_lifecycle_state(tracked.state, PENDING_PROCEED)
                self._in_service(group, tracked, now)
        elif tracked.lifecycle == TERMINATING_WAIT:
            tracked.actions = []
            moto.set_lifecycle_state(tracked.state, TERMINATING_PROCEED)
            if tracked.terminate_activity is not None:
                tracked.terminate_activity.status_code = IN_PROGRESS
            tracked.leave_at = now + timedelta(seconds=group.settings.terminating_seconds)
            if group.settings.terminating_seconds <= 0:
                self._leave(group, tracked.instance_id, now)

    def _abandon_launch(
        self, group: GroupState, tracked: TrackedInstance, action: LifecycleAction, now: datetime
    ) -> None:
        """A launch hook abandoned the instance: the launch is Cancelled and the instance terminated; the group
        launches another (User Guide, "Amazon EC2 Auto Scaling lifecycle hooks")."""
        reason = msg.lifecycle_abandoned(action.token, action.timed_out)
        activity = tracked.launch_activity
        if activity is not None:
            activity.description = msg.status_reason_description(activity.description, reason)
            activity.finish(CANCELLED, now, reason)
        group.tracked.pop(tracked.instance_id, None)
        moto.remove_and_terminate(group.moto_group, tracked.state)
        self.changed.set()
        log.info("Launch of %s in %s abandoned by lifecycle hook %s", tracked.instance_id, group.name, action.hook.name)

    def _leave(self, group: GroupState, instance_id: str, now: datetime) -> None:
        tracked = group.tracked.pop(instance_id)
        moto.remove_and_terminate(group.moto_group, tracked.state)
        if tracked.terminate_activity is not None:
            tracked.terminate_activity.finish(SUCCESSFUL, now)
        self.changed.set()
        log.info("Instance %s terminated and left %s", instance_id, group.name)

    def _counted(self, group: GroupState) -> list[TrackedInstance]:
        return [t for t in group.tracked.values() if t.lifecycle in COUNTED_STATES]

    def _reconcile(self, group: GroupState) -> bool:
        """Launch (a slice) or terminate toward the group's desired capacity, then let AZRebalance look at the
        zones; True if launches are left, in which case the ticker is woken to carry on. A suspended Launch or
        Terminate process stops that half (User Guide, "Suspend and resume a process for an Auto Scaling group")."""
        desired = moto.group_sizes(group.moto_group)[2]
        counted = self._counted(group)
        suspended = moto.suspended_processes(group.moto_group)
        self._settle_rebalance(group)
        excess = len(counted) - desired - (1 if group.rebalance_launch else 0)
        more = False
        if desired > len(counted):
            more = LAUNCH not in suspended and self._scale_out(group, len(counted), desired)
        else:
            group.next_attempt_at = None
            if excess > 0 and TERMINATE not in suspended:
                self._scale_in(group, counted, len(counted) - excess)
            elif excess <= 0:
                self._az_rebalance(group, counted, suspended)
        if more:
            self.work.set()
        else:
            group.scale_out_from = None
            if desired <= len(counted):
                group.cause_prefix = None
        return more

    # ---- launching ----

    def _shape(self, group: GroupState) -> GroupShape:
        return group_shape(group.moto_group)

    def _zone_load(self, group: GroupState, shape: GroupShape) -> dict[str, int]:
        """Counted instances per zone of the group (its zones only, in its order)."""
        load = {zone: 0 for zone in shape.zones or (f"{self.region}a",)}
        for tracked in self._counted(group):
            if tracked.zone in load:
                load[tracked.zone] += 1
        return load

    def _group_failure(self, group: GroupState) -> LaunchFailureShape | None:
        """A failure every launch of the group meets, whatever the pool (shapes: sandbox.aws.launch_errors)."""
        if not moto.template_exists(group.moto_group):
            return launch_errors.LAUNCH_TEMPLATE_NOT_FOUND
        if group.settings.launch_failure is not None:
            return launch_errors.shape(group.settings.launch_failure)
        if group.settings.capacity_short:
            return launch_errors.INSUFFICIENT_CAPACITY
        return None

    def _pool_failure(self, group: GroupState, pool: Pool) -> LaunchFailureShape | None:
        """Why a launch in ``pool`` fails: the type is not offered in the zone (EC2's DescribeInstanceTypeOfferings,
        moto's copy), or the pool is short."""
        if pool.zone not in moto.zones_offering(self.region, pool.instance_type):
            return launch_errors.UNSUPPORTED_TYPE_IN_ZONE
        if settings_for(pool, group.pools).short:
            return launch_errors.INSUFFICIENT_CAPACITY
        return None

    def _scale_out(self, group: GroupState, actual: int, desired: int) -> bool:
        """Launch up to ``LAUNCH_SLICE`` instances toward ``desired``; True if more are left to launch now."""
        now = self.clock.now()
        if group.next_attempt_at is not None and now < group.next_attempt_at:
            return False
        group.next_attempt_at = None
        if group.scale_out_from is None or group.scale_out_from[1] != desired:
            group.scale_out_from = (actual, desired)  # every slice's activity names the whole step, as AWS's do
        began = group.scale_out_from[0]
        cause = msg.join_causes(group.cause_prefix, msg.launch_cause(now, began, desired))
        shape = self._shape(group)
        # counted once per slice, then kept up to date: launching n instances is O(n), not O(n^2)
        load = self._zone_load(group, shape)
        markets = [t.market for t in self._counted(group)]
        on_demand = [markets.count(ON_DEMAND_MARKET)]
        launched = 0
        while actual + launched < desired and launched < LAUNCH_SLICE:
            if not self._launch_one(
                group, shape, desired=desired, cause=cause, now=now, load=load, on_demand=on_demand
            ):
                return False
            launched += 1
        return actual + launched < desired

    def _launch_one(
        self,
        group: GroupState,
        shape: GroupShape,
        *,
        desired: int,
        cause: str,
        now: datetime,
        load: dict[str, int],
        on_demand: list[int],
    ) -> bool:
        """Try pools until one launches an instance (counting it in ``load`` and ``on_demand``); False (and when to
        try again) if none did. Each refusal is its own Failed activity and the group goes on to its next pool, as
        the User Guide's "Auto Scaling groups with multiple instance types and purchase options" ("keeps trying to
        launch from other Spot Instance pools") and "Amazon EC2 Auto Scaling benefits" (Instance distribution:
        "attempts to launch the instances in another Availability Zone until it succeeds") describe; a failure of the
        whole group (its launch template gone, a quota or configuration error, every pool short) is one Failed
        activity per ``retry_seconds``."""
        market = shape.market_for(desired, on_demand[0])
        group_failure = self._group_failure(group)
        if group_failure is not None:
            first = pools_to_try(shape, load, market, group.pools)[0]
            self._record_failure(
                group, shape=shape, pool=first, market=market, failure=group_failure, cause=cause, now=now
            )
            group.next_attempt_at = now + timedelta(seconds=group.settings.retry_seconds)
            return False
        group.failed_pools = {p: t for p, t in group.failed_pools.items() if t > now}
        for pool in pools_to_try(shape, load, market, group.pools, excluded=group.failed_pools):
            failure = self._pool_failure(group, pool)
            if failure is None:
                self._launch(group, pool, market, cause, now)
                load[pool.zone] = load.get(pool.zone, 0) + 1
                on_demand[0] += market == ON_DEMAND_MARKET
                return True
            self._record_failure(group, shape=shape, pool=pool, market=market, failure=failure, cause=cause, now=now)
            group.failed_pools[pool] = now + timedelta(seconds=group.settings.retry_seconds)
            if group.settings.pool_retry_seconds > 0:
                group.next_attempt_at = now + timedelta(seconds=group.settings.pool_retry_seconds)
                return False
        group.next_attempt_at = min(
            group.failed_pools.values(), default=now + timedelta(seconds=group.settings.retry_seconds)
        )
        return False

    def _record_failure(
        self,
        group: GroupState,
        *,
        shape: GroupShape,
        pool: Pool,
        market: str,
        failure: LaunchFailureShape,
        cause: str,
        now: datetime,
    ) -> None:
        context = LaunchContext(
            instance_type=pool.instance_type,
            zone=pool.zone,
            other_zones=[
                z for z in other_zones(shape, pool.zone) if z in moto.zones_offering(self.region, pool.instance_type)
            ],
            image_id=moto.image_id(group.moto_group),
            template_id=moto.template_id(group.moto_group) or launch_errors.LaunchContext.template_id,
            subnet_id=moto.subnet_in_zone(group.moto_group, pool.zone) or LaunchContext.subnet_id,
        )
        status = failure.status_message(context, spot=market == SPOT_MARKET, coded=shape.mixed)
        self._record(
            group,
            description=msg.failed_launch_description(status),
            cause=cause,
            status_code=FAILED,
            progress=100,
            end_time=now,
            status_message=status,
            zone=pool.zone,
            subnet_id=moto.subnet_in_zone(group.moto_group, pool.zone),
        )
        log.warning(
            "Auto Scaling group %s could not launch %s %s in %s (%s, simulated); clear the group's or the pool's "
            "setting to let it launch",
            group.name,
            market,
            pool.instance_type,
            pool.zone,
            failure.code,
        )

    def _launch(self, group: GroupState, pool: Pool, market: str, cause: str, now: datetime) -> TrackedInstance:
        state = moto.launch_instance(group.moto_group, pool.zone, PENDING, market == SPOT_MARKET, pool.instance_type)
        tracked = self._track(group, state, market)
        tracked.launch_activity = self._record(
            group,
            description=msg.launch_description(tracked.instance_id),
            cause=cause,
            status_code=IN_PROGRESS,
            progress=30,
            end_time=None,
            zone=pool.zone,
            subnet_id=moto.facts(state).subnet_id,
        )
        tracked.in_service_at = now + timedelta(seconds=group.settings.pending_seconds)
        log.info(
            "Launched %s %s in %s for %s (%s)", market, tracked.instance_id, pool.zone, group.name, pool.instance_type
        )
        if group.settings.pending_seconds <= 0:
            self._booted(group, tracked, now)
        return tracked

    # ---- scaling in ----

    def _facts(self, group: GroupState, shape: GroupShape) -> GroupFacts:
        return GroupFacts(
            policies=moto.termination_policies(group.moto_group),
            template=moto.current_template(group.moto_group),
            launch_configuration=moto.launch_configuration_name(group.moto_group),
            shape=shape,
            pools=group.pools,
        )

    def _scale_in(self, group: GroupState, counted: list[TrackedInstance], target: int) -> None:
        """Terminate down to ``target`` counted instances, each victim chosen by the termination policies; instances
        protected from scale in are never chosen (User Guide, "Use instance scale-in protection": when all are
        protected desired capacity drops but nothing is terminated until the protection is removed)."""
        now = self.clock.now()
        facts = self._facts(group, self._shape(group))
        remaining = {t.instance_id: t.member() for t in counted}  # built once: a scale-in of n is O(n) per victim
        candidates = {
            i: m for i, m in remaining.items() if not group.tracked[i].protected and i != group.rebalance_launch
        }
        prefix = group.rebalance_prefix or group.cause_prefix
        while len(remaining) > target:
            victim_member = choose_victim(
                list(candidates.values()), list(remaining.values()), facts, len(remaining) - 1, now
            )
            if victim_member is None:
                if not group.protected_warned:
                    log.warning(
                        "Auto Scaling group %s is above desired capacity %d but every remaining instance is protected "
                        "from scale-in (AWS: 'Could not scale to desired capacity because all remaining instances are "
                        "protected from scale-in'); remove the protection to let it shrink",
                        group.name,
                        target,
                    )
                    group.protected_warned = True
                return
            victim = group.tracked[victim_member.instance_id]
            # every termination of the step names the whole step, as AWS's do
            cause = msg.join_causes(prefix, msg.scale_in_cause(now, len(counted), target, victim.instance_id))
            self._terminate(group, victim, cause, now)
            del remaining[victim.instance_id], candidates[victim.instance_id]
        group.protected_warned = False
        group.rebalance_prefix = None

    def _terminate(self, group: GroupState, tracked: TrackedInstance, cause: str, now: datetime) -> Activity:
        """Take the instance out: its termination hooks hold it in Terminating:Wait, then it is Terminating for
        ``terminating_seconds`` and leaves."""
        if tracked.launch_activity is not None and tracked.launch_activity.end_time is None:
            tracked.launch_activity.finish(SUCCESSFUL, now)
        tracked.in_service_at = None
        hooks = [h for h in moto.lifecycle_hooks(group.moto_group) if h.transition == moto.TERMINATING_TRANSITION]
        tracked.terminate_activity = self._record(
            group,
            description=msg.terminate_description(tracked.instance_id),
            cause=cause,
            status_code=MID_LIFECYCLE_ACTION if hooks else IN_PROGRESS,
            progress=50,
            end_time=None,
            zone=tracked.zone,
        )
        self.changed.set()
        if hooks:
            tracked.actions = [LifecycleAction.begin(h, tracked.instance_id, now) for h in hooks]
            moto.set_lifecycle_state(tracked.state, TERMINATING_WAIT)
            return tracked.terminate_activity
        tracked.actions = []
        moto.set_lifecycle_state(tracked.state, TERMINATING)
        tracked.leave_at = now + timedelta(seconds=group.settings.terminating_seconds)
        if group.settings.terminating_seconds <= 0:
            self._leave(group, tracked.instance_id, now)
        return tracked.terminate_activity

    # ---- AZRebalance ----

    def _settle_rebalance(self, group: GroupState) -> None:
        """Forget the AZRebalance launch once it is InService (its termination may now follow) or gone."""
        if group.rebalance_launch is None:
            return
        tracked = group.tracked.get(group.rebalance_launch)
        if tracked is None or tracked.lifecycle not in (PENDING, PENDING_WAIT, PENDING_PROCEED):
            group.rebalance_launch = None
            if tracked is None:
                group.rebalance_prefix = None

    def _az_rebalance(self, group: GroupState, counted: list[TrackedInstance], suspended: frozenset[str]) -> None:
        """After a change that left the zones unbalanced (a terminate or detach, a zone's capacity recovering, ...),
        launch in the emptiest zone and then, once that instance is InService, terminate in the fullest one,
        undrained (User Guide, "Rebalancing activities": "launches new instances before terminating the earlier
        ones"). Balanced means no zone has two more instances than another. Nothing happens while AZRebalance or
        Launch is suspended, while an instance refresh runs, or while instances are still launching."""
        now = self.clock.now()
        if (
            AZ_REBALANCE in suspended
            or LAUNCH in suspended
            or group.rebalance_launch is not None
            or self._active_refresh(group) is not None
            or any(t.lifecycle != IN_SERVICE for t in counted)
        ):
            group.unbalanced_since = None if AZ_REBALANCE in suspended else group.unbalanced_since
            return
        shape = self._shape(group)
        offered = {z for t in shape.instance_types for z in moto.zones_offering(self.region, t)}
        load = {z: n for z, n in self._zone_load(group, shape).items() if z in offered}
        target = rebalance_target(load)
        if target is None:
            group.unbalanced_since = None
            return
        if group.unbalanced_since is None:
            group.unbalanced_since = now
        if (now - group.unbalanced_since).total_seconds() < group.settings.az_rebalance_seconds:
            return
        group.unbalanced_since = now  # the next attempt, if this one fails, waits as long again
        zone = target.zone
        cause = msg.rebalance_launch_cause(now, {z: load[z] for z in load})
        on_demand = sum(1 for t in counted if t.market == ON_DEMAND_MARKET)
        market = shape.market_for(len(counted) + 1, on_demand)
        for pool in [p for p in pools_to_try(shape, {zone: 0}, market, group.pools) if p.zone == zone]:
            failure = self._group_failure(group) or self._pool_failure(group, pool)
            if failure is not None:
                self._record_failure(
                    group, shape=shape, pool=pool, market=market, failure=failure, cause=cause, now=now
                )
                continue
            tracked = self._launch(group, pool, market, cause, now)
            group.rebalance_launch = tracked.instance_id
            group.rebalance_prefix = msg.rebalance_launched_cause(now, target.short_zones)
            log.info("AZRebalance of %s: launched %s in %s (zones %s)", group.name, tracked.instance_id, zone, load)
            self._settle_rebalance(group)
            if tracked.lifecycle == IN_SERVICE:  # InService at once: the termination follows now
                self._reconcile(group)
            return

    # ---- instance refresh ----

    def _active_refresh(self, group: GroupState) -> InstanceRefresh | None:
        return next((r for r in group.refreshes if r.status in REFRESH_ACTIVE), None)

    def _advance_refresh(self, group: GroupState, now: datetime) -> None:
        refresh = self._active_refresh(group)
        if refresh is None:
            return
        counted = self._counted(group)
        leaving = {i for i, t in group.tracked.items() if t.lifecycle in LEAVING_STATES}
        outcome_ = refresh.step(
            now=now,
            desired=moto.group_sizes(group.moto_group)[2],
            counted={t.instance_id: t for t in counted},
            leaving=leaving,
            suspended=moto.suspended_processes(group.moto_group),
        )
        for instance_id in outcome_:
            self._terminate(group, group.tracked[instance_id], msg.instance_refresh_cause(now, instance_id), now)
        if not refresh.active:
            log.info("Instance refresh %s of %s is %s", refresh.refresh_id, group.name, refresh.status)

    # ---- bookkeeping ----

    def _record(
        self,
        group: GroupState,
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

    def _desired_set_by_moto(self, group: GroupState, desired: int | None) -> None:
        """moto changed desired capacity (UpdateAutoScalingGroup, DetachInstances, ...): record it and reconcile."""
        self._notice_membership(group)
        min_size, max_size, old = moto.group_sizes(group.moto_group)
        new = min_size if desired is None else desired
        moto.set_desired(group.moto_group, new)
        if new != old:
            group.cause_prefix = msg.desired_updated_by_user(self.clock.now(), min_size, max_size, old, new)
        self._reconcile(group)
