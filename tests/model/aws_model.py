"""An in-memory EC2 Auto Scaling for the model-based tests: the boto3 calls ``AutoScaling`` makes, behaving as AWS
does where Spot Guard's correctness depends on it, not as Spot Guard would like.

* SetDesiredCapacity answers at once; launches happen later (``tick``): an instance is Pending for one tick, then
  InService; a group whose capacity is short records a Failed launch activity instead (AWS keeps the desired
  capacity and retries).
* Lowering desired capacity below the live instances makes the *group* choose which instances to terminate, as
  the default termination policy does (EC2 Auto Scaling User Guide, "Control which Auto Scaling instances
  terminate during scale in"): here the oldest instance first, undrained. Every such termination is logged as
  chosen by AWS (``terminations``): the model's invariants forbid them.
* TerminateInstanceInAutoScalingGroup removes exactly that instance, with ShouldDecrementDesiredCapacity lowering
  desired by one (API reference); an instance already leaving or gone is refused with AWS's ValidationError.
* DescribeAutoScalingInstances answers the instance's group and lifecycle state.
* Each launch and termination writes the scaling activity AWS writes: "Launching a new EC2 instance: i-..." and
  "Terminating EC2 instance: i-..." whose cause says "shrinking the capacity" only when desired capacity was lowered
  with it (the shapes of ``sandbox/aws/aws_messages.py``, which cites its sources).
* ``reclaim``: EC2 takes an instance away on its own (a spot interruption two minutes after its notice, "Spot
  Instance interruptions"; a health check or an instance refresh's batch): it leaves without a decrement, so the
  group launches one in its place at its next tick ("Health checks for instances in an Auto Scaling group").
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import itertools
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

JSON = dict[str, Any]


@dataclasses.dataclass
class ModelInstance:
    instance_id: str
    group: str
    state: str  # Pending | InService | Terminating
    launched: int  # launch order (older first)


@dataclasses.dataclass(frozen=True)
class Termination:
    instance: str
    group: str
    chosen_by: str  # "spot-guard" (exact) | "aws" (termination policy)
    at_step: int
    cordoned: bool | None = None  # its Node was cordoned (drained) when it was terminated; None: no Node


class AutoScalingModel:
    def __init__(self, now: Callable[[], dt.datetime]) -> None:
        self.now = now
        self.groups: dict[str, JSON] = {}
        self.instances: dict[str, ModelInstance] = {}
        self.short: set[str] = set()
        self.activities: dict[str, list[JSON]] = {}
        self.terminations: list[Termination] = []
        self.set_calls: list[tuple[str, int]] = []
        self.step = 0
        self.on_call: Callable[[str], None] = lambda operation: None  # the harness interleaves jobs here
        self.on_launch: Callable[[ModelInstance], None] = lambda instance: None
        self.on_gone: Callable[[ModelInstance], None] = lambda instance: None
        self.node_cordoned: Callable[[str], bool | None] = lambda instance: None
        self._ids = itertools.count(1)
        self._order = itertools.count(1)

    # -- set-up and the world's own moves --------------------------------------------------------------------
    def add_group(self, name: str, instances: int, max_size: int = 50, tags: dict[str, str] | None = None) -> list[str]:
        self.groups[name] = {"desired": instances, "min": 0, "max": max_size, "tags": dict(tags or {})}
        self.activities[name] = []
        ids = []
        for _ in range(instances):
            instance = self._new(name, "InService")
            ids.append(instance.instance_id)
        return ids

    def live(self, group: str) -> list[ModelInstance]:
        return [i for i in self.instances.values() if i.group == group and i.state in ("Pending", "InService")]

    def tick(self) -> None:
        """AWS moves: Pending -> InService; leaving instances are gone; each group closes its gap to desired."""
        self.step += 1
        for instance in list(self.instances.values()):
            if instance.state == "Terminating":
                del self.instances[instance.instance_id]
                self.on_gone(instance)
            elif instance.state == "Pending":
                instance.state = "InService"
                self.on_launch(instance)
        for name, group in self.groups.items():
            gap = group["desired"] - len(self.live(name))
            if gap > 0:
                if name in self.short:
                    self.activities[name].insert(0, self._failed_activity(name))
                else:
                    for _ in range(gap):
                        self._new(name, "Pending")
            elif gap < 0:
                self._scale_in(name, -gap)

    def _scale_in(self, name: str, count: int) -> None:
        """The termination policy picks the victims: the oldest instances (one zone here, one launch template: the
        default policy then prefers the instance closest to its next billing hour, which is no better for us)."""
        victims = sorted(self.live(name), key=lambda i: i.launched)[:count]
        for victim in victims:
            victim.state = "Terminating"
            self._activity(
                name,
                f"Terminating EC2 instance: {victim.instance_id}",
                "At a time an instance was taken out of service in response to a difference between desired and actual "
                "capacity, shrinking the capacity from a to b.",
            )
            cordoned = self.node_cordoned(victim.instance_id)
            self.terminations.append(Termination(victim.instance_id, name, "aws", self.step, cordoned))

    def reclaim(self, instance_id: str) -> None:
        """EC2 takes the instance away on its own: no decrement; the group launches one in its place at its next
        tick."""
        instance = self.instances[instance_id]
        assert instance.state in ("Pending", "InService"), instance
        instance.state = "Terminating"
        self._activity(
            instance.group,
            f"Terminating EC2 instance: {instance_id}",
            "At a time an instance was taken out of service in response to an EC2 health check indicating it has been "
            f"terminated or stopped.  Instance {instance_id} is no longer in the group.",
        )
        cordoned = self.node_cordoned(instance_id)
        self.terminations.append(Termination(instance_id, instance.group, "ec2", self.step, cordoned))

    def _new(self, group: str, state: str) -> ModelInstance:
        instance = ModelInstance(f"i-{next(self._ids):017x}", group, state, next(self._order))
        self.instances[instance.instance_id] = instance
        if state == "InService":
            self.on_launch(instance)
        else:
            self._activity(
                group,
                f"Launching a new EC2 instance: {instance.instance_id}",
                "At a time an instance was started in response to a difference between desired and actual capacity, "
                "increasing the capacity from a to b.",
            )
        return instance

    def _activity(self, group: str, description: str, cause: str) -> None:
        """A finished scaling activity, newest first (the model's launches and terminations take no time)."""
        self.activities[group].insert(
            0,
            {
                "ActivityId": f"act-{next(self._ids)}",
                "AutoScalingGroupName": group,
                "StatusCode": "Successful",
                "Description": description,
                "Cause": cause,
                "StartTime": self.now(),
            },
        )

    def _failed_activity(self, group: str) -> JSON:
        return {
            "ActivityId": f"act-{next(self._ids)}",
            "AutoScalingGroupName": group,
            "StatusCode": "Failed",
            "StatusMessage": "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot "
            "capacity available that matches your request. Launching EC2 instance failed.",
            "Description": f"Launching a new EC2 instance. Status Reason: {group} is short",
            "Cause": "At a time an instance was started in response to a difference between desired and actual "
            "capacity",
            "StartTime": self.now() + dt.timedelta(seconds=1),
        }

    # -- the boto3 surface -----------------------------------------------------------------------------------
    def get_paginator(self, name: str) -> AutoScalingModel:
        assert name == "describe_auto_scaling_groups"
        return self

    def paginate(self, AutoScalingGroupNames: list[str] | None = None, Filters: Any = None) -> list[JSON]:  # noqa: N803
        self.on_call("DescribeAutoScalingGroups")
        names = AutoScalingGroupNames if AutoScalingGroupNames is not None else list(self.groups)
        keys = {v for f in Filters or [] if f["Name"] == "tag-key" for v in f["Values"]}
        if keys:
            names = [n for n in names if keys & set(self.groups[n]["tags"])]
        return [{"AutoScalingGroups": [self._describe(n) for n in names if n in self.groups]}]

    def _describe(self, name: str) -> JSON:
        group = self.groups[name]
        return {
            "AutoScalingGroupName": name,
            "DesiredCapacity": group["desired"],
            "MinSize": group["min"],
            "MaxSize": group["max"],
            "Instances": [
                {
                    "InstanceId": i.instance_id,
                    "LifecycleState": i.state,
                    "AvailabilityZone": "us-east-1a",
                    "InstanceType": "m5.large",
                }
                for i in sorted(self.instances.values(), key=lambda i: i.launched)
                if i.group == name
            ],
            "Tags": [{"Key": k, "Value": v} for k, v in group["tags"].items()],
        }

    def describe_scaling_activities(self, AutoScalingGroupName: str, MaxRecords: int = 20) -> JSON:  # noqa: N803
        self.on_call("DescribeScalingActivities")
        return {"Activities": copy.deepcopy(self.activities.get(AutoScalingGroupName, [])[:MaxRecords])}

    def describe_instance_refreshes(self, AutoScalingGroupName: str, MaxRecords: int = 50) -> JSON:  # noqa: N803
        return {"InstanceRefreshes": []}  # the model's groups are never refreshed

    def describe_auto_scaling_instances(self, InstanceIds: list[str]) -> JSON:  # noqa: N803
        self.on_call("DescribeAutoScalingInstances")
        return {
            "AutoScalingInstances": [
                {"InstanceId": i.instance_id, "AutoScalingGroupName": i.group, "LifecycleState": i.state}
                for i in self.instances.values()
                if i.instance_id in InstanceIds
            ]
        }

    def set_desired_capacity(self, AutoScalingGroupName: str, DesiredCapacity: int, HonorCooldown: bool) -> JSON:  # noqa: N803
        self.on_call("SetDesiredCapacity")
        group = self.groups.get(AutoScalingGroupName)
        if group is None:
            raise _error("ValidationError", f"AutoScalingGroup name not found - {AutoScalingGroupName}")
        if not group["min"] <= DesiredCapacity <= group["max"]:
            raise _error("ValidationError", f"New SetDesiredCapacity value {DesiredCapacity} is out of bounds")
        group["desired"] = DesiredCapacity
        self.set_calls.append((AutoScalingGroupName, DesiredCapacity))
        gap = DesiredCapacity - len(self.live(AutoScalingGroupName))
        if gap < 0:
            self._scale_in(AutoScalingGroupName, -gap)  # AWS acts on a lower desired capacity at once
        return {}

    def terminate_instance_in_auto_scaling_group(self, InstanceId: str, ShouldDecrementDesiredCapacity: bool) -> JSON:  # noqa: N803
        self.on_call("TerminateInstanceInAutoScalingGroup")
        instance = self.instances.get(InstanceId)
        if instance is None or instance.state not in ("Pending", "InService"):
            raise _error(
                "ValidationError", f"Instance Id not found - No managed instance found for instance ID: {InstanceId}"
            )
        instance.state = "Terminating"
        shrinking = ", shrinking the capacity from a to b" if ShouldDecrementDesiredCapacity else ""
        self._activity(
            instance.group,
            f"Terminating EC2 instance: {InstanceId}",
            f"At a time instance {InstanceId} was taken out of service in response to a user request{shrinking}.",
        )
        if ShouldDecrementDesiredCapacity:
            self.groups[instance.group]["desired"] -= 1
        cordoned = self.node_cordoned(InstanceId)
        self.terminations.append(Termination(InstanceId, instance.group, "spot-guard", self.step, cordoned))
        return {"Activity": {}}


def _error(code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "AutoScaling")
