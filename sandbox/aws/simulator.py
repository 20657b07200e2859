"""The capacity simulator: EC2 Auto Scaling for moto's groups, with the operations callers ask for.

moto keeps the groups and instances; the engine (sandbox.aws.engine) decides when instances are launched (in which
pool), how long they stay Pending, when and how launches fail, which instance a scale-in terminates, what lifecycle
hooks, AZRebalance and instance refreshes do, and when terminated instances leave, and it records every such step as
a scaling activity. This class answers the Auto Scaling operations moto lacks or the simulator owns, and the
sandbox's own control calls. Each behaviour names the AWS page it follows beside its code; docs/simulator.md lists
them all. All state changes happen under `lock`, which the server also holds while moto answers a request.
"""

from __future__ import annotations

import dataclasses
import logging

from sandbox.aws import aws_messages as msg
from sandbox.aws import moto_bridge as moto
from sandbox.aws.activities import Activity
from sandbox.aws.capacity import CapacitySettings, GroupView, InstanceView, capacity_type_of
from sandbox.aws.engine import GroupEngine
from sandbox.aws.group_state import (
    IN_PROGRESS,
    LEAVING_STATES,
    GroupState,
    TrackedInstance,
    UnknownGroupError,
)
from sandbox.aws.instance_refresh import CANCELLED as REFRESH_CANCELLED
from sandbox.aws.instance_refresh import IGNORE as REFRESH_IGNORE
from sandbox.aws.instance_refresh import InstanceRefresh, Preferences
from sandbox.aws.lifecycle_hooks import RESULTS, LifecycleAction
from sandbox.aws.pools import (
    PoolSettings,
    pool_settings_key,
    settings_for,
)
from sandbox.aws.query_protocol import AwsApiError

log = logging.getLogger(__name__)

__all__ = ["CapacitySimulator", "UnknownGroupError"]


class CapacitySimulator(GroupEngine):
    """Simulates EC2 Auto Scaling for every group moto holds in one account and region."""

    # ---- the Auto Scaling operations the simulator answers itself ----

    def _group(self, name: str) -> GroupState:
        self._sync_groups()
        group = self._groups.get(name)
        if group is None:
            raise UnknownGroupError(name)
        return group

    def _api_group(self, name: str) -> GroupState:
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
            owner, tracked = self._member(instance_id)
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

    def reclaim(self, instance_id: str) -> Activity:
        """EC2 takes the instance away on its own: a spot interruption two minutes after its notice ("Spot Instance
        interruptions", EC2 User Guide), or a failed health check. The group takes it out of service with the cause
        AWS writes for a terminated instance ("Why did Amazon EC2 Auto Scaling terminate an instance?", AWS
        knowledge center: "...in response to an EC2 health check indicating it has been terminated or stopped") and,
        its desired capacity unchanged, launches one in its place ("Health checks for instances in an Auto Scaling
        group": an unhealthy instance is replaced). An instance already leaving is left as it is."""
        with self.lock:
            owner, tracked = self._member(instance_id)
            if tracked.lifecycle in LEAVING_STATES and tracked.terminate_activity is not None:
                return dataclasses.replace(tracked.terminate_activity)
            now = self.clock.now()
            activity = self._terminate(owner, tracked, msg.health_check_terminate_cause(now, instance_id), now)
            log.info("Instance %s of %s reclaimed by EC2 (desired capacity unchanged)", instance_id, owner.name)
            self._reconcile(owner)
            return dataclasses.replace(activity)

    def _member(self, instance_id: str) -> tuple[GroupState, TrackedInstance]:
        """The group holding ``instance_id`` and its tracking (call with the lock held); AWS's ValidationError if no
        group does."""
        self._sync_groups()
        owner = next((g for g in self._groups.values() if instance_id in g.tracked), None)
        if owner is None:
            raise AwsApiError("ValidationError", msg.instance_not_managed(instance_id))
        return owner, owner.tracked[instance_id]

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
        self, group: GroupState, hook_name: str, instance_id: str | None, token: str | None
    ) -> tuple[TrackedInstance, LifecycleAction]:
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

    def _view(self, group: GroupState) -> GroupView:
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
