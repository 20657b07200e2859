"""In-memory stand-ins for the lifecycle controller's unit tests: one API server (SGFEs with resourceVersions,
Nodes with merge patches, pods and evictions, PDBs) and one Auto Scaling client, both on a FakeClock.

The API server keeps SGFEs the way kube-apiserver does for a CRD with a status subresource: PUT .../status
replaces only the status and refuses (409) a stale resourceVersion; a merge PATCH carrying
``metadata.resourceVersion`` is refused (409) when it is stale. Every write bumps one global resourceVersion.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import ClientError

from controller.adapters.aws import AutoScaling
from controller.clock import FakeClock
from controller.model.node import NodeView
from controller.model.sgfe import GROUP, PLURAL, VERSION
from tests.support.fake_kube_api import merge_patch
from tests.unit.controller import k8s_objects
from tests.unit.controller.fake_drain_api import FakeDrainApi, api_error

JSON = dict[str, Any]
SGFE_PREFIX = f"/apis/{GROUP}/{VERSION}/namespaces/"


class FakeCluster:
    """Answers ``Kube.request`` for SGFEs, Nodes, pods (with evictions, via FakeDrainApi) and PDBs."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self._rv = itertools.count(100)
        self.sgfes: dict[str, JSON] = {}
        self.nodes: dict[str, JSON] = {}
        self.pdbs: list[JSON] = []
        self.pods = FakeDrainApi(clock, [], nodes=())
        self.status_writes: list[tuple[str, str]] = []  # (name, phase) of every accepted status write
        #: called before a status write is checked (tests use it to make two writers meet)
        self.before_status_write: Callable[[str, JSON], None] | None = None

    # -- setup -----------------------------------------------------------------------------------------------
    def add_node(self, name: str, instance_id: str, ready: bool = True) -> None:
        node = k8s_objects.node(name, cpu="2", memory="8Gi", ready=ready)
        node["metadata"]["resourceVersion"] = str(next(self._rv))
        node["spec"]["providerID"] = f"aws:///us-east-1a/{instance_id}"
        self.nodes[name] = node

    def remove_node(self, name: str) -> None:
        self.nodes.pop(name, None)

    def node_views(self) -> dict[str, NodeView]:
        return {name: NodeView.from_json(copy.deepcopy(node)) for name, node in self.nodes.items()}

    def sgfe(self, name: str) -> JSON | None:
        obj = self.sgfes.get(name)
        return copy.deepcopy(obj) if obj is not None else None

    # -- the Kube.request interface --------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int] | None = None,
        *,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> JSON:
        if path.startswith(SGFE_PREFIX):
            return self._sgfe(method, path, body)
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "nodes"]:
            return self._node(method, parts[3] if len(parts) > 3 else "", body)
        if path == "/apis/policy/v1/poddisruptionbudgets":
            return {"items": copy.deepcopy(self.pdbs), "metadata": {}}
        if path == "/api/v1/pods" or parts[-1] == "eviction":
            return self.pods.request(method, path, query, body=body, content_type=content_type)
        raise AssertionError(f"unexpected request {method} {path}")

    # -- SGFEs -----------------------------------------------------------------------------------------------
    def _sgfe(self, method: str, path: str, body: Any) -> JSON:
        parts = path[len(SGFE_PREFIX) :].split("/")  # ns, plural, [name, [status]]
        assert parts[1] == PLURAL
        name = parts[2] if len(parts) > 2 else ""
        if not name:
            if method == "GET":
                return {"items": [copy.deepcopy(o) for o in self.sgfes.values()]}
            assert method == "POST"
            meta = body["metadata"]
            if meta["name"] in self.sgfes:
                raise api_error(409, "already exists")
            obj = copy.deepcopy(body)
            obj["metadata"].update(uid=f"uid-{meta['name']}", resourceVersion=str(next(self._rv)))
            self.sgfes[meta["name"]] = obj
            return copy.deepcopy(obj)
        current = self.sgfes.get(name)
        if current is None:
            raise api_error(404, f"spotguardfallbackevents {name!r} not found")
        if method == "GET":
            return copy.deepcopy(current)
        if method == "DELETE":
            wanted = ((body or {}).get("preconditions") or {}).get("uid")
            if wanted and wanted != current["metadata"]["uid"]:
                raise api_error(409, "uid precondition failed")
            del self.sgfes[name]
            return {}
        sent_rv = (body.get("metadata") or {}).get("resourceVersion")
        if method == "PUT" and len(parts) > 3 and parts[3] == "status":
            if self.before_status_write is not None:
                self.before_status_write(name, body)
                current = self.sgfes.get(name)
                if current is None:
                    raise api_error(404, "gone")
            if sent_rv != current["metadata"]["resourceVersion"]:
                raise api_error(409, "the object has been modified; please apply your changes to the latest version")
            current["status"] = copy.deepcopy(body["status"])
            current["metadata"]["resourceVersion"] = str(next(self._rv))
            self.status_writes.append((name, body["status"].get("phase", "")))
            return copy.deepcopy(current)
        if method == "PATCH":
            if sent_rv is not None and sent_rv != current["metadata"]["resourceVersion"]:
                raise api_error(409, "the object has been modified")
            patch = copy.deepcopy(body)
            patch.get("metadata", {}).pop("resourceVersion", None)
            merged = merge_patch(current, patch)
            merged["metadata"]["resourceVersion"] = str(next(self._rv))
            self.sgfes[name] = merged
            return copy.deepcopy(merged)
        raise AssertionError(f"unexpected SGFE request {method} {path}")

    # -- Nodes -----------------------------------------------------------------------------------------------
    def _node(self, method: str, name: str, body: Any) -> JSON:
        if not name:
            assert method == "GET"
            return {"items": [copy.deepcopy(n) for n in self.nodes.values()], "metadata": {}}
        node = self.nodes.get(name)
        if node is None:
            raise api_error(404, f'nodes "{name}" not found')
        if method == "GET":
            return copy.deepcopy(node)
        assert method == "PATCH"
        sent_rv = (body.get("metadata") or {}).get("resourceVersion")
        if sent_rv is not None and sent_rv != node["metadata"]["resourceVersion"]:
            raise api_error(409, "the object has been modified")
        patch = copy.deepcopy(body)
        patch.get("metadata", {}).pop("resourceVersion", None)
        merged = merge_patch(node, patch)
        merged["metadata"]["resourceVersion"] = str(next(self._rv))
        self.nodes[name] = merged
        return copy.deepcopy(merged)


class FakeAutoScalingClient:
    """The boto3 Auto Scaling calls AutoScaling makes, over in-memory groups; every call is logged in ``calls``.

    New instances launch InService at once (``launch_state`` to change that) unless ``short`` names the group,
    and ``on_launch(group, instance_id)`` / ``on_terminate`` let a test keep Nodes in step.
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.groups: dict[str, JSON] = {}
        self.activities: dict[str, list[JSON]] = {}
        self.calls: list[tuple[str, JSON]] = []
        self.short: set[str] = set()
        self.launch_state = "InService"
        self.on_launch: Callable[[str, str], None] = lambda group, instance: None
        self.on_terminate: Callable[[str, str], None] = lambda group, instance: None
        self.refreshes: dict[str, list[JSON]] = {}  # group -> its instance refreshes, newest first
        self.refresh_reads: list[str] = []  # the groups DescribeInstanceRefreshes was called for
        self._ids = itertools.count(1)

    def add_group(self, name: str, instances: list[str], max_size: int = 10) -> None:
        self.groups[name] = {
            "AutoScalingGroupName": name,
            "DesiredCapacity": len(instances),
            "MinSize": 0,
            "MaxSize": max_size,
            "Instances": [self._instance(i, "InService") for i in instances],
            "Tags": [],
        }
        self.activities[name] = []

    @staticmethod
    def _instance(instance_id: str, state: str) -> JSON:
        return {
            "InstanceId": instance_id,
            "LifecycleState": state,
            "AvailabilityZone": "us-east-1a",
            "InstanceType": "m5.large",
        }

    def instance_ids(self, group: str, state: str | None = None) -> list[str]:
        return [
            i["InstanceId"] for i in self.groups[group]["Instances"] if state is None or i["LifecycleState"] == state
        ]

    def count(self, operation: str) -> int:
        return sum(1 for op, _ in self.calls if op == operation)

    def set_state(self, instance_id: str, state: str) -> None:
        for group in self.groups.values():
            for instance in group["Instances"]:
                if instance["InstanceId"] == instance_id:
                    instance["LifecycleState"] = state

    # -- boto3 surface ---------------------------------------------------------------------------------------
    def get_paginator(self, name: str) -> FakeAutoScalingClient:
        assert name == "describe_auto_scaling_groups"
        return self

    def paginate(self, AutoScalingGroupNames: list[str]) -> list[JSON]:  # noqa: N803 - boto3's names
        self.calls.append(("DescribeAutoScalingGroups", {"names": AutoScalingGroupNames}))
        return [
            {"AutoScalingGroups": [copy.deepcopy(self.groups[n]) for n in AutoScalingGroupNames if n in self.groups]}
        ]

    def describe_auto_scaling_instances(self, InstanceIds: list[str]) -> JSON:  # noqa: N803
        found = [
            {"InstanceId": i["InstanceId"], "AutoScalingGroupName": name, "LifecycleState": i["LifecycleState"]}
            for name, group in self.groups.items()
            for i in group["Instances"]
            if i["InstanceId"] in InstanceIds
        ]
        return {"AutoScalingInstances": found}

    def describe_scaling_activities(self, AutoScalingGroupName: str, MaxRecords: int) -> JSON:  # noqa: N803
        return {"Activities": copy.deepcopy(self.activities.get(AutoScalingGroupName, []))}

    def describe_instance_refreshes(self, AutoScalingGroupName: str, MaxRecords: int) -> JSON:  # noqa: N803
        self.refresh_reads.append(AutoScalingGroupName)
        return {"InstanceRefreshes": copy.deepcopy(self.refreshes.get(AutoScalingGroupName, []))}

    def set_desired_capacity(self, AutoScalingGroupName: str, DesiredCapacity: int, HonorCooldown: bool) -> None:  # noqa: N803
        self.calls.append(("SetDesiredCapacity", {"group": AutoScalingGroupName, "desired": DesiredCapacity}))
        group = self.groups[AutoScalingGroupName]
        group["DesiredCapacity"] = DesiredCapacity
        counted = [i for i in group["Instances"] if not i["LifecycleState"].startswith("Terminat")]
        if AutoScalingGroupName in self.short:
            if DesiredCapacity > len(counted):
                self.activities[AutoScalingGroupName].insert(0, self.failed_activity(AutoScalingGroupName))
            return
        for _ in range(DesiredCapacity - len(counted)):
            instance_id = f"i-new{next(self._ids)}"
            group["Instances"].append(self._instance(instance_id, self.launch_state))
            self.on_launch(AutoScalingGroupName, instance_id)

    def failed_activity(self, group: str) -> JSON:
        return {
            "ActivityId": f"act-{next(self._ids)}",
            "StatusCode": "Failed",
            "StatusMessage": "We currently do not have sufficient m5.large capacity. InsufficientInstanceCapacity",
            "Description": f"Launching a new EC2 instance into {group}. Status Reason: InsufficientInstanceCapacity",
            "Cause": "test",
            "StartTime": self.clock.now() + dt.timedelta(seconds=1),
        }

    def termination_activity(self, instance: str, decremented: bool) -> JSON:
        """The activity AWS writes for a termination on request (the shapes of sandbox/aws/aws_messages.py)."""
        shrinking = ", shrinking the capacity from 1 to 0" if decremented else ""
        return {
            "ActivityId": f"act-{next(self._ids)}",
            "StatusCode": "Successful",
            "Description": f"Terminating EC2 instance: {instance}",
            "Cause": f"At a time instance {instance} was taken out of service in response to a user request{shrinking}"
            ".",
            "StartTime": self.clock.now(),
        }

    def terminate_instance_in_auto_scaling_group(self, InstanceId: str, ShouldDecrementDesiredCapacity: bool) -> JSON:  # noqa: N803
        self.calls.append(
            (
                "TerminateInstanceInAutoScalingGroup",
                {"instance": InstanceId, "decrement": ShouldDecrementDesiredCapacity},
            )
        )
        for name, group in self.groups.items():
            for instance in group["Instances"]:
                if instance["InstanceId"] == InstanceId:
                    group["Instances"].remove(instance)
                    if ShouldDecrementDesiredCapacity:
                        group["DesiredCapacity"] -= 1
                    self.activities[name].insert(
                        0, self.termination_activity(InstanceId, ShouldDecrementDesiredCapacity)
                    )
                    self.on_terminate(name, InstanceId)
                    return {"Activity": {}}
        raise ClientError(
            {
                "Error": {
                    "Code": "ValidationError",
                    "Message": f"Instance Id not found - No managed instance found for instance ID: {InstanceId}",
                }
            },
            "TerminateInstanceInAutoScalingGroup",
        )


def autoscaling(client: FakeAutoScalingClient) -> AutoScaling:
    return AutoScaling(client, sleep=lambda seconds: None)
