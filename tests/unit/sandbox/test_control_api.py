"""The /_sandbox control API: state, capacity settings, reset."""

from __future__ import annotations

import json
import urllib.request

import pytest

from sandbox.aws.client import SandboxAWSError
from tests.unit.sandbox.conftest import ON_DEMAND, SPOT, Sandbox


def test_state_lists_groups_instances_and_settings(sandbox: Sandbox) -> None:
    state = sandbox.control.state()

    assert state["region"] == "us-east-1"
    groups = {g["name"]: g for g in state["groups"]}
    assert set(groups) == {SPOT, ON_DEMAND}
    spot = groups[SPOT]
    assert (spot["capacity_type"], spot["desired_capacity"], spot["min_size"], spot["max_size"]) == ("spot", 3, 0, 10)
    assert groups[ON_DEMAND]["capacity_type"] == "on-demand"
    assert spot["settings"] == {
        "pending_seconds": 5.0,
        "capacity_short": False,
        "retry_seconds": 10.0,
        "terminating_seconds": 0.0,
        "launch_failure": None,
        "pool_retry_seconds": 0.0,
        "az_rebalance_seconds": 10.0,
    }
    instance = spot["instances"][0]
    assert instance["lifecycle_state"] == "InService"
    assert instance["instance_type"] == "m5.large"
    assert instance["private_dns_name"].endswith(".ec2.internal")
    assert instance["availability_zone"].startswith("us-east-1")


def test_set_capacity_changes_only_the_given_settings(sandbox: Sandbox) -> None:
    changed = sandbox.control.set_capacity(SPOT, capacity_short=True)

    assert changed["capacity_short"] is True
    assert changed["pending_seconds"] == 5.0
    assert sandbox.control.capacity(SPOT) == changed
    assert sandbox.control.capacity(ON_DEMAND)["capacity_short"] is False


def test_bad_capacity_settings_are_refused_with_the_reason(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxAWSError, match="pending_seconds must be a number of seconds >= 0"):
        sandbox.control.set_capacity(SPOT, pending_seconds=-1)
    with pytest.raises(SandboxAWSError, match=r"HTTP 404.*no Auto Scaling group 'nope'"):
        sandbox.control.capacity("nope")
    assert sandbox.control.capacity(SPOT)["pending_seconds"] == 5.0


def test_sandbox_reset_recreates_the_start_up_groups(sandbox: Sandbox) -> None:
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=6)
    sandbox.control.set_capacity(SPOT, capacity_short=True)
    sandbox.control.add_fault("SetDesiredCapacity", "Throttling")

    announcement = sandbox.control.reset()

    assert [g["name"] for g in announcement["groups"]] == [SPOT, ON_DEMAND]
    assert announcement["endpoint"] == sandbox.server.endpoint
    assert sandbox.group(SPOT)["DesiredCapacity"] == 3
    assert len(sandbox.group(SPOT)["Instances"]) == 3
    assert sandbox.control.capacity(SPOT)["capacity_short"] is False
    assert sandbox.control.faults() == []


def test_moto_reset_still_empties_everything(sandbox: Sandbox) -> None:
    request = urllib.request.Request(f"{sandbox.server.endpoint}/moto-api/reset", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == {"status": "ok"}

    assert sandbox.autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"] == []
    assert sandbox.control.state()["groups"] == []


def test_unknown_route_is_404_with_a_hint(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxAWSError, match="HTTP 404: no sandbox route GET /_sandbox/nothing"):
        sandbox.control._call("GET", "/nothing")


def test_pool_settings_are_set_listed_and_cleared(sandbox: Sandbox) -> None:
    sandbox.control.set_pool(SPOT, zone="us-east-1b", short=True)
    sandbox.control.set_pool(SPOT, instance_type="m5.large", zone="us-east-1a", spot_price=0.02)

    assert sandbox.control.pools(SPOT) == {
        "*/us-east-1b": {"short": True, "spot_price": None, "capacity_score": None},
        "m5.large/us-east-1a": {"short": None, "spot_price": 0.02, "capacity_score": None},
    }
    assert sandbox.control.group(SPOT)["pools"] == sandbox.control.pools(SPOT)

    sandbox.control.set_pool(SPOT, zone="us-east-1b")
    assert list(sandbox.control.pools(SPOT)) == ["m5.large/us-east-1a"]


def test_bad_pool_settings_are_refused_naming_the_field(sandbox: Sandbox) -> None:
    with pytest.raises(
        SandboxAWSError, match=r"HTTP 400: pool settings of spotguard-spot-1 unchanged: pool setting 'short'"
    ):
        sandbox.control._call("POST", f"/groups/{SPOT}/pools", {"zone": "us-east-1a", "short": "yes"})
    with pytest.raises(SandboxAWSError, match=r"unknown pool field\(s\) \['depth'\]"):
        sandbox.control._call("POST", f"/groups/{SPOT}/pools", {"depth": 3})
    with pytest.raises(SandboxAWSError, match=r"HTTP 404.*no Auto Scaling group 'nope'"):
        sandbox.control.set_pool("nope", short=True)
    assert sandbox.control.pools(SPOT) == {}
