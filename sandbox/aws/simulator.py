"""The capacity simulator: what EC2 Auto Scaling does with moto's groups, step by step, as scaling activities.

moto keeps the groups and instances; the simulator decides when instances are launched (in which pool), how long they
stay Pending, when and how launches fail, which instance a scale-in terminates, what lifecycle hooks, AZRebalance and
instance refreshes do, and when terminated instances leave, and it records every such step as a scaling activity.
Each behaviour names the AWS page it follows in the module that holds it (sandbox.aws.pools, .termination,
.lifecycle_hooks, .instance_refresh, .launch_errors) or beside the code below; docs/simulator.md lists them all.
All state changes happen under `lock`, which the server also holds while moto answers a request.

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
from typing import Any

from sandbox.aws import aws_messages as msg
from sandbox.aws import launch_errors
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
from sandbox.aws.instance_refresh import ACTIVE as REFRESH_ACTIVE
from sandbox.aws.instance_refresh import CANCELLED as REFRESH_CANCELLED
from sandbox.aws.instance_refresh import FAILED as REFRESH_FAILED
from sandbox.aws.instance_refresh import IGNORE as REFRESH_IGNORE
from sandbox.aws.instance_refresh import IN_PROGRESS as REFRESH_IN_PROGRESS
from sandbox.aws.instance_refresh import PENDING as REFRESH_PENDING
from sandbox.aws.instance_refresh import PROTECTED_WAIT_SECONDS, InstanceRefresh, Preferences
from sandbox.aws.instance_refresh import REFRESH as REFRESH_PROTECTED
from sandbox.aws.instance_refresh import SUCCESSFUL as REFRESH_SUCCESSFUL
from sandbox.aws.launch_errors import LaunchContext, LaunchFailureShape
from sandbox.aws.lifecycle_hooks import ABANDON, RESULTS, LifecycleAction, outcome
from sandbox.aws.pools import (
    ON_DEMAND_MARKET,
    SPOT_MARKET,
    Distribution,
    GroupShape,
    Pool,
    PoolSettings,
    other_zones,
    pool_settings_key,
    pools_to_try,
    settings_for,
)
from sandbox.aws.query_protocol import AwsApiError
from sandbox.aws.termination import GroupFacts, Member, choose_victim

log = logging.getLogger(__name__)

PENDING = "Pending"
PENDING_WAIT = "Pending:Wait"
PENDING_PROCEED = "Pending:Proceed"
IN_SERVICE = "InService"
TERMINATING = "Terminating"
TERMINATING_WAIT = "Terminating:Wait"
TERMINATING_PROCEED = "Terminating:Proceed"
# Lifecycle states that count toward the group's capacity; the leaving ones.
COUNTED_STATES = frozenset({PENDING, PENDING_WAIT, PENDING_PROCEED, IN_SERVICE})
LEAVING_STATES = frozenset({TERMINATING, TERMINATING_WAIT, TERMINATING_PROCEED})

SUCCESSFUL = "Successful"
FAILED = "Failed"
CANCELLED = "Cancelled"
IN_PROGRESS = "InProgress"
MID_LIFECYCLE_ACTION = "MidLifecycleAction"

# Scaling processes (SuspendProcesses); "Suspend and resume a process for an Auto Scaling group".
LAUNCH = "Launch"
TERMINATE = "Terminate"
AZ_REBALANCE = "AZRebalance"
INSTANCE_REFRESH = "InstanceRefresh"

LAUNCH_SLICE = 20  # instances launched per hold of the lock
SLICE_PAUSE = 0.001  # seconds between slices with the lock let go, so waiting calls get it


class UnknownGroupError(LookupError):
    """The simulator has no group of that name."""


@dataclass
class _TrackedInstance:
    state: moto.MotoInstanceState
    launched_at: datetime
    market: str
    instance_type: str
    zone: str
    template: tuple[str, int] | None = None
    launch_configuration: str | None = None
    in_service_at: datetime | None = None  # when its Pending time ends
    leave_at: datetime | None = None  # when its Terminating time ends
    launch_activity: Activity | None = None
    terminate_activity: Activity | None = None
    actions: list[LifecycleAction] = field(default_factory=list)  # lifecycle actions of its current wait

    @property
    def instance_id(self) -> str:
        return str(self.state.instance.id)

    @property
    def lifecycle(self) -> str:
        return str(self.state.lifecycle_state)

    def member(self) -> Member:
        return Member(
            instance_id=self.instance_id,
            zone=self.zone,
            market=self.market,
            instance_type=self.instance_type,
            launched_at=self.launched_at,
            template=self.template,
            launch_configuration=self.launch_configuration,
        )


@dataclass
class _Group:
    name: str
    moto_group: moto.MotoGroup
    settings: CapacitySettings
    tracked: dict[str, _TrackedInstance] = field(default_factory=dict)
    pools: dict[str, PoolSettings] = field(default_factory=dict)
    failed_pools: dict[Pool, datetime] = field(default_factory=dict)  # pool -> when the group may try it again
    next_attempt_at: datetime | None = None
    cause_prefix: str | None = None
    scale_out_from: tuple[int, int] | None = None  # (actual, desired) when the scale-out under way began
    rebalance_launch: str | None = None  # the AZRebalance launch not yet InService
    rebalance_prefix: str | None = None  # cause of the terminations that follow an AZRebalance launch
    unbalanced_since: datetime | None = None
    refreshes: list[InstanceRefresh] = field(default_factory=list)  # newest first
    protected_warned: bool = False


def _is_spot_tagged(moto_group: moto.MotoGroup) -> bool:
    return capacity_type_of(moto.group_tags(moto_group)) == SPOT


def group_shape(moto_group: moto.MotoGroup) -> GroupShape:
    """What the group launches: its MixedInstancesPolicy's overrides and distribution, or its template's type."""
    zones = tuple(moto.group_zones(moto_group))
    policy = moto.mixed_instances_policy(moto_group)
    spot_lt = _is_spot_tagged(moto_group) or moto.template_market(moto_group) == SPOT_MARKET
    lt_market = SPOT_MARKET if spot_lt else ON_DEMAND_MARKET
    if policy is None:
        return GroupShape((moto.group_instance_type(moto_group),), zones, False, Distribution(), lt_market)
    overrides = (policy.get("LaunchTemplate") or {}).get("Overrides") or []
    types = tuple(str(o["InstanceType"]) for o in overrides if o.get("InstanceType"))
    raw: dict[str, Any] = policy.get("InstancesDistribution") or {}
    distribution = Distribution(
        on_demand_base=int(raw.get("OnDemandBaseCapacity", 0) or 0),
        on_demand_percentage=int(raw.get("OnDemandPercentageAboveBaseCapacity", 100)),
        spot_strategy=str(raw.get("SpotAllocationStrategy") or "lowest-price"),
        on_demand_strategy=str(raw.get("OnDemandAllocationStrategy") or "prioritized"),
    )
    return GroupShape(types or (moto.group_instance_type(moto_group),), zones, True, distribution, lt_market)


class CapacitySimulator:
    """Simulates EC2 Auto Scaling for every group moto holds in one account and region."""

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

    def _track(self, group: _Group, state: moto.MotoInstanceState, market: str) -> _TrackedInstance:
        facts = moto.facts(state)
        tracked = _TrackedInstance(
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

    def _notice_membership(self, group: _Group) -> None:
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

    def _advance(self, group: _Group) -> bool:
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

    def _booted(self, group: _Group, tracked: _TrackedInstance, now: datetime) -> None:
        """The instance finished its Pending time: its launch hooks hold it in Pending:Wait, or it is InService."""
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

    def _in_service(self, group: _Group, tracked: _TrackedInstance, now: datetime) -> None:
        moto.set_lifecycle_state(tracked.state, IN_SERVICE)
        tracked.actions = []
        if tracked.launch_activity is not None:
            tracked.launch_activity.finish(SUCCESSFUL, now)
        self.changed.set()
        log.info("Instance %s of %s is InService", tracked.instance_id, group.name)

    def _actions_changed(self, group: _Group, tracked: _TrackedInstance, now: datetime) -> None:
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

    def _abandon_launch(self, group: _Group, tracked: _TrackedInstance, action: LifecycleAction, now: datetime) -> None:
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

    def _leave(self, group: _Group, instance_id: str, now: datetime) -> None:
        tracked = group.tracked.pop(instance_id)
        moto.remove_and_terminate(group.moto_group, tracked.state)
        if tracked.terminate_activity is not None:
            tracked.terminate_activity.finish(SUCCESSFUL, now)
        self.changed.set()
        log.info("Instance %s terminated and left %s", instance_id, group.name)

    def _counted(self, group: _Group) -> list[_TrackedInstance]:
        return [t for t in group.tracked.values() if t.lifecycle in COUNTED_STATES]

    def _reconcile(self, group: _Group) -> bool:
        """Launch (a slice) or terminate toward the group's desired capacity, then let AZRebalance look at the
        zones; True if launches are left, in which case the ticker is woken to carry on."""
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

    def _shape(self, group: _Group) -> GroupShape:
        return group_shape(group.moto_group)

    def _zone_load(self, group: _Group, shape: GroupShape) -> dict[str, int]:
        """Counted instances per zone of the group (its zones only, in its order)."""
        load = {zone: 0 for zone in shape.zones or (f"{self.region}a",)}
        for tracked in self._counted(group):
            if tracked.zone in load:
                load[tracked.zone] += 1
        return load

    def _group_failure(self, group: _Group) -> LaunchFailureShape | None:
        """A failure every launch of the group meets, whatever the pool."""
        if not moto.template_exists(group.moto_group):
            return launch_errors.LAUNCH_TEMPLATE_NOT_FOUND
        if group.settings.launch_failure is not None:
            return launch_errors.shape(group.settings.launch_failure)
        if group.settings.capacity_short:
            return launch_errors.INSUFFICIENT_CAPACITY
        return None

    def _pool_failure(self, group: _Group, pool: Pool) -> LaunchFailureShape | None:
        """Why a launch in ``pool`` fails: the type is not offered in the zone (EC2's DescribeInstanceTypeOfferings,
        moto's copy), or the pool is short."""
        if pool.zone not in moto.zones_offering(self.region, pool.instance_type):
            return launch_errors.UNSUPPORTED_TYPE_IN_ZONE
        if settings_for(pool, group.pools).short:
            return launch_errors.INSUFFICIENT_CAPACITY
        return None

    def _scale_out(self, group: _Group, actual: int, desired: int) -> bool:
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
        launched = 0
        while actual + launched < desired and launched < LAUNCH_SLICE:
            if not self._launch_one(group, shape, desired, cause, now):
                return False
            launched += 1
        return actual + launched < desired

    def _launch_one(self, group: _Group, shape: GroupShape, desired: int, cause: str, now: datetime) -> bool:
        """Try pools until one launches an instance; False (and when to try again) if none did."""
        load = self._zone_load(group, shape)
        on_demand = sum(1 for t in self._counted(group) if t.market == ON_DEMAND_MARKET)
        market = shape.market_for(desired, on_demand)
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
        group: _Group,
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

    def _launch(self, group: _Group, pool: Pool, market: str, cause: str, now: datetime) -> _TrackedInstance:
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

    def _facts(self, group: _Group, shape: GroupShape) -> GroupFacts:
        return GroupFacts(
            policies=moto.termination_policies(group.moto_group),
            template=moto.current_template(group.moto_group),
            launch_configuration=moto.launch_configuration_name(group.moto_group),
            shape=shape,
            pools=group.pools,
        )

    def _scale_in(self, group: _Group, counted: list[_TrackedInstance], target: int) -> None:
        """Terminate down to ``target`` counted instances, each victim chosen by the termination policies; instances
        protected from scale in are never chosen (User Guide, "Use instance scale-in protection": when all are
        protected desired capacity drops but nothing is terminated until the protection is removed)."""
        now = self.clock.now()
        facts = self._facts(group, self._shape(group))
        remaining = list(counted)
        candidates = [
            t for t in remaining if not t.state.protected_from_scale_in and t.instance_id != group.rebalance_launch
        ]
        prefix = group.rebalance_prefix or group.cause_prefix
        while len(remaining) > target:
            victim_member = choose_victim(
                [t.member() for t in candidates], [t.member() for t in remaining], facts, len(remaining) - 1, now
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
            remaining.remove(victim)
            candidates.remove(victim)
        group.protected_warned = False
        group.rebalance_prefix = None

    def _terminate(self, group: _Group, tracked: _TrackedInstance, cause: str, now: datetime) -> Activity:
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

    def _settle_rebalance(self, group: _Group) -> None:
        """Forget the AZRebalance launch once it is InService (its termination may now follow) or gone."""
        if group.rebalance_launch is None:
            return
        tracked = group.tracked.get(group.rebalance_launch)
        if tracked is None or tracked.lifecycle not in (PENDING, PENDING_WAIT, PENDING_PROCEED):
            group.rebalance_launch = None
            if tracked is None:
                group.rebalance_prefix = None

    def _az_rebalance(self, group: _Group, counted: list[_TrackedInstance], suspended: frozenset[str]) -> None:
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
        if len(load) < 2 or max(load.values()) - min(load.values()) <= 1:
            group.unbalanced_since = None
            return
        if group.unbalanced_since is None:
            group.unbalanced_since = now
        if (now - group.unbalanced_since).total_seconds() < group.settings.az_rebalance_seconds:
            return
        group.unbalanced_since = now  # the next attempt, if this one fails, waits as long again
        emptiest = min(load.values())
        short_zones = [z for z, n in load.items() if n == emptiest]
        zone = short_zones[0]
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
            group.rebalance_prefix = msg.rebalance_launched_cause(now, short_zones)
            log.info("AZRebalance of %s: launched %s in %s (zones %s)", group.name, tracked.instance_id, zone, load)
            self._settle_rebalance(group)
            if tracked.lifecycle == IN_SERVICE:  # InService at once: the termination follows now
                self._reconcile(group)
            return

    # ---- instance refresh ----

    def _active_refresh(self, group: _Group) -> InstanceRefresh | None:
        return next((r for r in group.refreshes if r.status in REFRESH_ACTIVE), None)

    def _advance_refresh(self, group: _Group, now: datetime) -> None:
        refresh = self._active_refresh(group)
        if refresh is None:
            return
        if refresh.status == REFRESH_PENDING:
            refresh.status = REFRESH_IN_PROGRESS
        suspended = moto.suspended_processes(group.moto_group)
        if suspended & {INSTANCE_REFRESH, LAUNCH, TERMINATE}:
            paused_by = ", ".join(sorted(suspended & {INSTANCE_REFRESH, LAUNCH, TERMINATE}))
            refresh.status_reason = f"Paused: the group's {paused_by} process is suspended."
            return
        desired = moto.group_sizes(group.moto_group)[2]
        counted = self._counted(group)
        if refresh.in_flight:
            waiting = [t for t in counted if t.lifecycle != IN_SERVICE]
            if len(counted) < desired or waiting or any(i in group.tracked for i in refresh.in_flight):
                refresh.status_reason = "Waiting for the replacement instances to be InService."
                return
            if refresh.warm_until is None:
                refresh.warm_until = now + timedelta(seconds=refresh.warmup_seconds)
            if now < refresh.warm_until:
                newest = max(counted, key=lambda t: t.launched_at)
                refresh.status_reason = (
                    "Waiting for instances to warm up before continuing. For example: "
                    f"{newest.instance_id} is warming up."
                )
                return
            refresh.in_flight.clear()
            refresh.warm_until = None
        refresh.to_replace = [
            i for i in refresh.to_replace if i in group.tracked and group.tracked[i].lifecycle in COUNTED_STATES
        ]
        if not refresh.to_replace:
            refresh.replaced = refresh.total
            refresh.finish(REFRESH_SUCCESSFUL, now)
            log.info("Instance refresh %s of %s is Successful", refresh.refresh_id, group.name)
            return
        movable = [
            i
            for i in refresh.to_replace
            if not group.tracked[i].state.protected_from_scale_in
            or refresh.preferences.scale_in_protected_instances == REFRESH_PROTECTED
        ]
        if not movable:
            refresh.waiting_since = refresh.waiting_since or now
            if (now - refresh.waiting_since).total_seconds() >= PROTECTED_WAIT_SECONDS:
                refresh.finish(
                    REFRESH_FAILED, now, "Instances protected from scale in were not released within an hour."
                )
            else:
                refresh.status_reason = (
                    f"Waiting for {len(refresh.to_replace)} instance(s) protected from scale in to be released."
                )
            return
        refresh.waiting_since = None
        for instance_id in movable[: refresh.preferences.batch_size(desired)]:
            refresh.to_replace.remove(instance_id)
            refresh.in_flight.add(instance_id)
            refresh.replaced += 1
            self._terminate(group, group.tracked[instance_id], msg.instance_refresh_cause(now, instance_id), now)
        refresh.status_reason = None

    # ---- bookkeeping ----

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

    def _api_group(self, name: str) -> _Group:
        try:
            return self._group(name)
        except UnknownGroupError:
            raise AwsApiError("ValidationError", msg.group_not_found(name)) from None

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
        """TerminateInstanceInAutoScalingGroup: that exact instance goes, protected or not (scale-in protection does
        not cover it: "Use instance scale-in protection"); desired drops by one if asked. An instance already leaving
        is not terminated again: the call answers with its termination under way."""
        with self.lock:
            self._sync_groups()
            owner = next((g for g in self._groups.values() if instance_id in g.tracked), None)
            if owner is None:
                raise AwsApiError("ValidationError", msg.instance_not_managed(instance_id))
            tracked = owner.tracked[instance_id]
            now = self.clock.now()
            if tracked.lifecycle in LEAVING_STATES and tracked.terminate_activity is not None:
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

    def complete_lifecycle_action(
        self, group_name: str, hook_name: str, result: str, instance_id: str | None, token: str | None
    ) -> None:
        """CompleteLifecycleAction: end the named hook's wait for the instance (by id or token) with ``result``."""
        with self.lock:
            if result not in RESULTS:
                raise AwsApiError("ValidationError", msg.invalid_lifecycle_result(result))
            group = self._api_group(group_name)
            tracked, action = self._open_action(group, hook_name, instance_id, token)
            action.complete(result)
            log.info(
                "Lifecycle action %s of %s for %s completed with %s", hook_name, group_name, tracked.instance_id, result
            )
            self._actions_changed(group, tracked, self.clock.now())
            self._reconcile(group)

    def record_lifecycle_action_heartbeat(
        self, group_name: str, hook_name: str, instance_id: str | None, token: str | None
    ) -> None:
        """RecordLifecycleActionHeartbeat: restart the hook's heartbeat timeout."""
        with self.lock:
            group = self._api_group(group_name)
            _tracked, action = self._open_action(group, hook_name, instance_id, token)
            action.heartbeat(self.clock.now())

    def _open_action(
        self, group: _Group, hook_name: str, instance_id: str | None, token: str | None
    ) -> tuple[_TrackedInstance, LifecycleAction]:
        for tracked in group.tracked.values():
            for action in tracked.actions:
                if (
                    action.open
                    and action.hook.name == hook_name
                    and ((token and action.token == token) or (not token and action.instance_id == instance_id))
                ):
                    return tracked, action
        raise AwsApiError("ValidationError", msg.no_active_lifecycle_action(instance_id, token))

    def start_instance_refresh(self, group_name: str, preferences: Preferences) -> InstanceRefresh:
        """StartInstanceRefresh: replace every instance the group holds now, batch by batch."""
        with self.lock:
            group = self._api_group(group_name)
            if self._active_refresh(group) is not None:
                raise AwsApiError("InstanceRefreshInProgress", msg.instance_refresh_in_progress())
            counted = self._counted(group)
            to_replace = [
                t.instance_id
                for t in sorted(counted, key=lambda t: t.launched_at)
                if not (t.state.protected_from_scale_in and preferences.scale_in_protected_instances == REFRESH_IGNORE)
            ]
            warmup = preferences.instance_warmup
            refresh = InstanceRefresh(
                group_name=group_name,
                preferences=preferences,
                start_time=self.clock.now(),
                to_replace=to_replace,
                total=len(to_replace),
                warmup_seconds=moto.health_check_grace_period(group.moto_group) if warmup is None else warmup,
            )
            group.refreshes.insert(0, refresh)
            log.info(
                "Instance refresh %s of %s started: %d instance(s) to replace",
                refresh.refresh_id,
                group_name,
                len(to_replace),
            )
            return dataclasses.replace(refresh)

    def describe_instance_refreshes(self, group_name: str, refresh_ids: list[str]) -> list[InstanceRefresh]:
        with self.lock:
            group = self._api_group(group_name)
            found = [r for r in group.refreshes if not refresh_ids or r.refresh_id in refresh_ids]
            return [dataclasses.replace(r, in_flight=set(r.in_flight), to_replace=list(r.to_replace)) for r in found]

    def cancel_instance_refresh(self, group_name: str) -> str:
        """CancelInstanceRefresh: stop replacing; terminations under way finish (the refresh ends Cancelled)."""
        with self.lock:
            group = self._api_group(group_name)
            refresh = self._active_refresh(group)
            if refresh is None:
                raise AwsApiError("ActiveInstanceRefreshNotFound", msg.no_active_instance_refresh(group_name))
            refresh.finish(REFRESH_CANCELLED, self.clock.now())
            return refresh.refresh_id

    def group_created(self, group_name: str) -> None:
        """CreateAutoScalingGroup: moto launched the group's first instances itself (InService, on-demand, in one
        zone); take them back unrecorded and launch them as AWS would, with the creation's cause (the User Guide's
        "Troubleshoot Amazon EC2 Auto Scaling" example: "a user request created an AutoScalingGroup changing the
        desired capacity from 0 to 1")."""
        with self.lock:
            self._sync_groups()
            group = self._groups.get(group_name)
            if group is None:
                return
            for tracked in list(group.tracked.values()):
                group.tracked.pop(tracked.instance_id)
                moto.remove_and_terminate(group.moto_group, tracked.state)
            desired = moto.group_sizes(group.moto_group)[2]
            if desired:
                group.cause_prefix = msg.group_created_by_user(self.clock.now(), desired)
            self.changed.set()
            self._reconcile(group)

    def after_update(self, group_name: str) -> None:
        """A moto call changed the group's settings (suspended processes, protection, ...): act on them now."""
        with self.lock:
            group = self._groups.get(group_name)
            if group is not None:
                self._reconcile(group)

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
            if self._group_failure(group) is None:
                group.next_attempt_at = None
            self._reconcile(group)
            return dataclasses.replace(group.settings)

    def pool_settings(self, group_name: str) -> dict[str, PoolSettings]:
        with self.lock:
            return {k: dataclasses.replace(v) for k, v in self._group(group_name).pools.items()}

    def update_pool(
        self,
        group_name: str,
        instance_type: str | None,
        zone: str | None,
        changes: PoolSettings,
        *,
        clear: bool = False,
    ) -> PoolSettings:
        """Change the settings of the pools of ``instance_type`` in ``zone`` (None: any), or ``clear`` them; a pool
        that is no longer short may be tried again at once."""
        with self.lock:
            group = self._group(group_name)
            key = pool_settings_key(instance_type, zone)
            merged = PoolSettings() if clear else changes.merged_over(group.pools.get(key, PoolSettings()))
            if merged == PoolSettings():
                group.pools.pop(key, None)
            else:
                group.pools[key] = merged
            group.failed_pools = {p: t for p, t in group.failed_pools.items() if settings_for(p, group.pools).short}
            if not group.failed_pools:
                group.next_attempt_at = None
            log.info("Pool settings %s of %s are now %s", key, group_name, group.pools.get(key))
            self._reconcile(group)
            return dataclasses.replace(merged)

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
        shape = self._shape(group)
        min_size, max_size, desired = moto.group_sizes(moto_group)
        instances = []
        for state in moto.instance_states(moto_group):
            facts = moto.facts(state)
            tracked = group.tracked.get(facts.instance_id)
            instances.append(
                InstanceView(
                    instance_id=facts.instance_id,
                    group_name=group.name,
                    capacity_type=tracked.market if tracked else capacity_type_of(tags),
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
            capacity_type=capacity_type_of(tags),
            min_size=min_size,
            max_size=max_size,
            desired_capacity=desired,
            availability_zones=tuple(moto.group_zones(moto_group)),
            instance_type=shape.instance_types[0],
            tags=tags,
            settings=dataclasses.replace(group.settings),
            instances=tuple(instances),
            instance_types=shape.instance_types,
            mixed_instances=shape.mixed,
            suspended_processes=tuple(sorted(moto.suspended_processes(moto_group))),
            pools={key: value.to_json() for key, value in group.pools.items()},
        )
