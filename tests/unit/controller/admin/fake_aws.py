"""Stand-ins for the boto3 clients ``spotguard doctor`` uses: Auto Scaling (paginated describes), STS and IAM.

The methods take boto3's own keyword names (hence N803).
"""

# ruff: noqa: N803

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import ClientError


def client_error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


MANAGED_TAG = "spotguard.io/managed"


def group(
    name: str,
    *,
    desired: int = 3,
    max_size: int = 10,
    capacity_rebalance: bool = False,
    tags: dict[str, str] | None = None,
    managed: bool = True,
    suspended: tuple[str, ...] = ("AZRebalance",),
    protect_new_instances: bool = False,
) -> dict[str, Any]:
    """A group as DescribeAutoScalingGroups answers; by default set up as Spot Guard needs (tagged managed,
    AZRebalance suspended)."""
    all_tags = {MANAGED_TAG: "true"} if managed else {}
    all_tags.update(tags or {})
    return {
        "AutoScalingGroupName": name,
        "DesiredCapacity": desired,
        "MinSize": 0,
        "MaxSize": max_size,
        "CapacityRebalance": capacity_rebalance,
        "Instances": [],
        "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()],
        "SuspendedProcesses": [{"ProcessName": p, "SuspensionReason": ""} for p in suspended],
        "NewInstancesProtectedFromScaleIn": protect_new_instances,
    }


def hook(name: str, transition: str = "autoscaling:EC2_INSTANCE_LAUNCHING", timeout: int = 3600) -> dict[str, Any]:
    return {
        "LifecycleHookName": name,
        "LifecycleTransition": transition,
        "HeartbeatTimeout": timeout,
        "DefaultResult": "ABANDON",
    }


class FakeAutoScaling:
    def __init__(self, groups: Iterable[dict[str, Any]]) -> None:
        self.groups = {g["AutoScalingGroupName"]: g for g in groups}
        self.hooks: dict[str, list[dict[str, Any]]] = {}  # group name -> DescribeLifecycleHooks' answer
        self.hooks_error: Exception | None = None
        self.refreshes: dict[str, list[dict[str, Any]]] = {}  # group name -> DescribeInstanceRefreshes' answer

    def describe_instance_refreshes(self, AutoScalingGroupName: str, MaxRecords: int = 50) -> dict[str, Any]:
        return {"InstanceRefreshes": self.refreshes.get(AutoScalingGroupName, [])[:MaxRecords]}

    def describe_lifecycle_hooks(self, AutoScalingGroupName: str) -> dict[str, Any]:
        if self.hooks_error is not None:
            raise self.hooks_error
        return {"LifecycleHooks": self.hooks.get(AutoScalingGroupName, [])}

    def get_paginator(self, name: str) -> FakeAutoScaling:
        assert name == "describe_auto_scaling_groups"
        return self

    def paginate(
        self, AutoScalingGroupNames: list[str] | None = None, Filters: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        found = list(self.groups.values())
        if AutoScalingGroupNames is not None:
            found = [g for g in found if g["AutoScalingGroupName"] in AutoScalingGroupNames]
        for f in Filters or []:
            assert f["Name"] == "tag-key"
            found = [g for g in found if any(t["Key"] in f["Values"] for t in g["Tags"])]
        return [{"AutoScalingGroups": found}]


class FakeSts:
    def __init__(self, arn: str = "arn:aws:sts::123456789012:assumed-role/spotguard/session-1") -> None:
        self.arn = arn
        self.error: Exception | None = None

    def get_caller_identity(self) -> dict[str, str]:
        if self.error is not None:
            raise self.error
        return {"Arn": self.arn, "Account": "123456789012", "UserId": "AIDEXAMPLE"}


class FakeIam:
    def __init__(self) -> None:
        self.denied: set[str] = set()
        self.error: Exception | None = None
        self.roles = {"spotguard": "arn:aws:iam::123456789012:role/controllers/spotguard"}
        self.simulated: list[tuple[str, list[str]]] = []

    def get_role(self, RoleName: str) -> dict[str, Any]:
        if RoleName not in self.roles:
            raise client_error("NoSuchEntity", f"role {RoleName} not found", "GetRole")
        return {"Role": {"Arn": self.roles[RoleName]}}

    def simulate_principal_policy(self, PolicySourceArn: str, ActionNames: list[str]) -> dict[str, Any]:
        self.simulated.append((PolicySourceArn, ActionNames))
        if self.error is not None:
            raise self.error
        return {
            "EvaluationResults": [
                {"EvalActionName": a, "EvalDecision": "implicitDeny" if a in self.denied else "allowed"}
                for a in ActionNames
            ]
        }


class FakeAws:
    """``Services.aws``: the client for a service name."""

    def __init__(self, groups: Iterable[dict[str, Any]] = ()) -> None:
        self.autoscaling = FakeAutoScaling(groups)
        self.sts = FakeSts()
        self.iam = FakeIam()
        self.broken: dict[str, Exception] = {}

    def __call__(self, service: str) -> Any:
        if service in self.broken:
            raise self.broken[service]
        clients: dict[str, Callable[[], Any]] = {
            "autoscaling": lambda: self.autoscaling,
            "sts": lambda: self.sts,
            "iam": lambda: self.iam,
        }
        return clients[service]()
