"""The thin AWS layer: error codes kept, retries bounded; provider ids read."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from controller.adapters.aws import AutoScaling, AwsError
from controller.model.asg import instance_id_from_provider_id


def test_provider_id_parsing() -> None:
    assert instance_id_from_provider_id("aws:///us-east-1a/i-0123456789abcdef0") == "i-0123456789abcdef0"
    assert instance_id_from_provider_id("aws:///us-east-1a/i-0123/") == "i-0123"
    assert instance_id_from_provider_id("kind://docker/kind/node") is None
    assert instance_id_from_provider_id("aws:///us-east-1a/") is None
    assert instance_id_from_provider_id("") is None


def _client_error(code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "SetDesiredCapacity")


class FakeClient:
    def __init__(self, failures: list[ClientError]) -> None:
        self.failures = failures
        self.calls: list[dict[str, Any]] = []

    def set_desired_capacity(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if self.failures:
            raise self.failures.pop(0)
        return {}


def test_throttling_is_retried_with_backoff_then_succeeds() -> None:
    client = FakeClient([_client_error("Throttling", "Rate exceeded")] * 2)
    sleeps: list[float] = []
    asg = AutoScaling(client=client, sleep=sleeps.append, base_backoff=0.2)
    asg.set_desired_capacity("spot", 4)
    assert len(client.calls) == 3
    assert client.calls[-1] == {"AutoScalingGroupName": "spot", "DesiredCapacity": 4, "HonorCooldown": False}
    assert len(sleeps) == 2
    assert 0.1 <= sleeps[0] <= 0.2 and 0.2 <= sleeps[1] <= 0.4  # jittered exponential backoff


def test_access_denied_is_not_retried_and_keeps_the_code() -> None:
    client = FakeClient([_client_error("AccessDenied", "User: x is not authorized to perform: SetDesiredCapacity")])
    asg = AutoScaling(client=client, sleep=lambda s: None)
    with pytest.raises(AwsError) as failure:
        asg.set_desired_capacity("spot", 4)
    assert failure.value.code == "AccessDenied"
    assert failure.value.access_denied
    assert "SetDesiredCapacity on spot failed: AccessDenied" in str(failure.value)
    assert len(client.calls) == 1


def test_retries_are_bounded() -> None:
    client = FakeClient([_client_error("Throttling", "Rate exceeded")] * 10)
    asg = AutoScaling(client=client, sleep=lambda s: None, max_attempts=3)
    with pytest.raises(AwsError) as failure:
        asg.set_desired_capacity("spot", 4)
    assert failure.value.code == "Throttling"
    assert len(client.calls) == 3


def test_fence_runs_before_every_capacity_change_and_can_stop_it() -> None:
    class DeposedError(Exception):
        pass

    def fence(operation: str) -> None:
        raise DeposedError(operation)

    client = FakeClient([])
    asg = AutoScaling(client=client, fence=fence, sleep=lambda s: None)
    with pytest.raises(DeposedError):
        asg.set_desired_capacity("spot", 4)
    assert client.calls == []


def test_fence_is_checked_again_before_a_retry() -> None:
    checks: list[str] = []

    def fence(operation: str) -> None:
        checks.append(operation)
        if len(checks) > 1:
            raise RuntimeError("lease lost while backing off")

    client = FakeClient([_client_error("Throttling", "Rate exceeded")])
    asg = AutoScaling(client=client, fence=fence, sleep=lambda s: None)
    with pytest.raises(RuntimeError, match="lease lost"):
        asg.set_desired_capacity("spot", 4)
    assert len(client.calls) == 1


def test_capacity_changes_move_as_a_change_begins_and_ends_even_when_it_fails() -> None:
    """A description read while the count stood still is not outdated by this process's own calls."""
    seen_during: list[tuple[int, int]] = []

    class Client(FakeClient):
        def set_desired_capacity(self, **kwargs: Any) -> dict[str, Any]:
            seen_during.append(asg.capacity_changes("spot"))
            return super().set_desired_capacity(**kwargs)

        def terminate_instance_in_auto_scaling_group(self, **kwargs: Any) -> dict[str, Any]:
            return {}

    asg = AutoScaling(client=Client([_client_error("AccessDenied", "not authorized")]), sleep=lambda s: None)
    before = asg.capacity_changes("spot")

    with pytest.raises(AwsError):
        asg.set_desired_capacity("spot", 4)

    assert seen_during[0] != before, "moved as the call began"
    assert asg.capacity_changes("spot") not in (before, seen_during[0]), "moved again as it ended"
    assert asg.capacity_changes("on-demand") == before, "another group's count is its own"
    after_call = asg.capacity_changes("on-demand")
    asg.terminate_instance("i-0123456789abcdef0")
    assert asg.capacity_changes("on-demand") != after_call, "a termination names no group: every count moves"


class RefreshClient:
    """DescribeInstanceRefreshes' answer, shaped as the API Reference documents it
    (https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_DescribeInstanceRefreshes.html)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def describe_instance_refreshes(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        return {
            "InstanceRefreshes": [
                {
                    "InstanceRefreshId": "08b91cf7-8fa6-48af-b6a6-d227f40f1b9b",
                    "AutoScalingGroupName": "spot",
                    "Status": "InProgress",
                    "StatusReason": "Waiting for instances to warm up before continuing.",
                    "PercentageComplete": 50,
                },
                {"InstanceRefreshId": "dd7728d0-5bc4-4575-96a3-1b2c52bf8bb1", "Status": "Successful"},
            ]
        }


def test_instance_refreshes_are_read_with_their_status() -> None:
    client = RefreshClient()
    refreshes = AutoScaling(client=client, sleep=lambda s: None).instance_refreshes("spot")
    assert client.calls == [{"AutoScalingGroupName": "spot", "MaxRecords": 5}]
    assert [(r.refresh_id[:8], r.group, r.status, r.active) for r in refreshes] == [
        ("08b91cf7", "spot", "InProgress", True),
        ("dd7728d0", "spot", "Successful", False),
    ]
    assert refreshes[0].status_reason.startswith("Waiting for instances to warm up")
