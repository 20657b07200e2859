"""Node -> spot ASG -> pair, with as few AWS calls as a burst of recommendations allows (moto in-process)."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from controller.adapters.aws import AutoScaling, AwsError
from controller.capacity.groups import GroupResolver, Pair, Refusal
from controller.config import Settings

REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
        client = boto3.client("autoscaling", region_name=REGION)
        client.create_launch_configuration(
            LaunchConfigurationName="lc", ImageId="ami-12c6146b", InstanceType="m5.large"
        )
        for name, size in (("spot-a", 60), ("od-a", 0), ("other", 2)):
            client.create_auto_scaling_group(
                AutoScalingGroupName=name,
                LaunchConfigurationName="lc",
                MinSize=0,
                MaxSize=100,
                DesiredCapacity=size,
                VPCZoneIdentifier=subnet,
            )
        yield client


def _instances(client: Any, group: str) -> list[str]:
    described = client.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
    return sorted(i["InstanceId"] for i in described["Instances"])


def _resolver(client: Any, calls: Counter[str], now: list[float]) -> GroupResolver:
    asg = AutoScaling(client, on_call=lambda operation, error: calls.update([operation]))
    return GroupResolver(Settings(spot_asg_name="spot-a", on_demand_asg_name="od-a"), asg, lambda: now[0])


def test_a_burst_in_a_configured_group_costs_no_lookup_per_instance(aws: Any) -> None:
    calls: Counter[str] = Counter()
    resolver = _resolver(aws, calls, [0.0])
    spot = _instances(aws, "spot-a")

    resolver.prefetch(spot)
    answers = [resolver.resolve(f"aws:///us-east-1a/{i}") for i in spot]

    assert all(answer == (i, Pair("spot-a", "od-a")) for answer, i in zip(answers, spot, strict=True))
    assert calls["DescribeAutoScalingInstances"] == 0, "no lookup per instance: the group lists them"
    assert calls["DescribeAutoScalingGroups"] == 2, "the tagged pairs, then the configured one"


def test_instances_outside_the_configured_groups_are_looked_up_fifty_at_a_time(aws: Any) -> None:
    calls: Counter[str] = Counter()
    resolver = _resolver(aws, calls, [0.0])
    aws.create_auto_scaling_group(
        AutoScalingGroupName="big-other",
        LaunchConfigurationName="lc",
        MinSize=0,
        MaxSize=100,
        DesiredCapacity=60,
        AvailabilityZones=["us-east-1a"],
    )
    strangers = _instances(aws, "big-other")

    resolver.prefetch(strangers)
    refusal = resolver.resolve(f"aws:///us-east-1a/{strangers[0]}")

    assert isinstance(refusal, Refusal) and refusal.reason == "unconfigured-group"
    assert calls["DescribeAutoScalingInstances"] == 2, "60 unknown instances: two calls of at most 50"


def test_an_instance_in_no_group_is_not_asked_about_again_until_the_refresh(aws: Any) -> None:
    calls: Counter[str] = Counter()
    now = [0.0]
    resolver = _resolver(aws, calls, now)
    provider_id = "aws:///us-east-1a/i-0123456789abcdef0"

    for _ in range(5):  # one reconcile pass after another
        refusal = resolver.resolve(provider_id)
        assert isinstance(refusal, Refusal) and refusal.reason == "not-in-a-group"
    assert calls["DescribeAutoScalingInstances"] == 1
    now[0] += resolver.refresh_seconds
    resolver.resolve(provider_id)
    assert calls["DescribeAutoScalingInstances"] == 2


def test_refresh_ahead_reloads_the_groups_only_when_they_are_stale_or_about_to_be(aws: Any) -> None:
    calls: Counter[str] = Counter()
    now = [0.0]
    resolver = _resolver(aws, calls, now)  # refresh_seconds 300

    resolver.refresh(ahead=60.0)
    assert calls["DescribeAutoScalingGroups"] > 0, "nothing loaded yet: the first refresh loads"
    loaded = calls["DescribeAutoScalingGroups"]
    now[0] = 239.0
    resolver.refresh(ahead=60.0)
    assert calls["DescribeAutoScalingGroups"] == loaded, "61 s before going stale: kept"
    resolver.pairs()
    assert calls["DescribeAutoScalingGroups"] == loaded

    now[0] = 240.0
    resolver.refresh(ahead=60.0)
    assert calls["DescribeAutoScalingGroups"] == 2 * loaded, "60 s before going stale: reloaded"
    now[0] = 500.0
    resolver.pairs()
    assert calls["DescribeAutoScalingGroups"] == 2 * loaded, "the reload counts from when it was made"


def test_a_missing_spot_group_is_reported_once_and_not_asked_about_on_every_pass(
    aws: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="controller.capacity.groups")
    calls: Counter[str] = Counter()
    now = [0.0]
    asg = AutoScaling(aws, on_call=lambda operation, error: calls.update([operation]))
    resolver = GroupResolver(Settings(spot_asg_name="spot-new", on_demand_asg_name="od-a"), asg, lambda: now[0])
    node = f"aws:///us-east-1a/{_instances(aws, 'spot-a')[0]}"

    refusals = [resolver.resolve(node) for _ in range(100)]  # the replacement loop's passes, many a second
    now[0] += resolver.refresh_seconds
    refusals += [resolver.resolve(node) for _ in range(100)]  # the listing is due again: once

    refusal = refusals[-1]
    assert isinstance(refusal, Refusal) and refusal.reason == "unconfigured-group"
    assert all(r == refusal for r in refusals)
    assert resolver.missing("spot-new")
    assert calls["DescribeAutoScalingGroups"] == 4, "two listings (tagged, configured), one per refresh period"
    assert calls["DescribeAutoScalingInstances"] == 1, "the instance's own group is looked up once"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "spot ASG spot-new is configured but AWS does not know it (DescribeAutoScalingGroups does not return it): "
        "check SPOT_ASG_NAME (was the group renamed or deleted?); reported once, listed again every 300s"
    ]

    aws.create_auto_scaling_group(
        AutoScalingGroupName="spot-new",
        LaunchConfigurationName="lc",
        MinSize=0,
        MaxSize=10,
        DesiredCapacity=0,
        AvailabilityZones=["us-east-1a"],
    )
    now[0] += resolver.refresh_seconds
    resolver.pairs()
    assert not resolver.missing("spot-new")
    assert "spot ASG spot-new exists again" in caplog.text


def test_a_renamed_spot_group_is_named_in_the_refusal_of_its_nodes(aws: Any) -> None:
    calls: Counter[str] = Counter()
    asg = AutoScaling(aws, on_call=lambda operation, error: calls.update([operation]))
    resolver = GroupResolver(Settings(spot_asg_name="spot-old", on_demand_asg_name="od-a"), asg, lambda: 0.0)

    refusal = resolver.resolve(f"aws:///us-east-1a/{_instances(aws, 'spot-a')[0]}")

    assert isinstance(refusal, Refusal) and refusal.reason == "unconfigured-group"
    assert "configured spot ASG spot-old does not exist: was it renamed?" in refusal.message


class _Refusing:
    """An Auto Scaling client whose every DescribeAutoScalingGroups is refused (IAM), until ``allow``."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.refuse = True

    def get_paginator(self, name: str) -> Any:
        if self.refuse:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, name)
        return self.real.get_paginator(name)


def test_a_failing_listing_backs_off_and_is_reported_once(aws: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="controller.capacity.groups")
    calls: Counter[str] = Counter()
    now = [0.0]
    client = _Refusing(aws)
    asg = AutoScaling(client, on_call=lambda operation, error: calls.update([operation]))
    resolver = GroupResolver(Settings(spot_asg_name="spot-a", on_demand_asg_name="od-a"), asg, lambda: now[0])
    node = f"aws:///us-east-1a/{_instances(aws, 'spot-a')[0]}"

    attempts = []
    for second in range(0, 40):
        now[0] = float(second)
        for _ in range(10):  # ten passes a second
            with pytest.raises(AwsError, match="AccessDenied"):
                resolver.resolve(node)
        attempts.append(calls["DescribeAutoScalingGroups"])
    # Tried at 0 s, then after 5, 10 and 20 s more: 4 calls in 40 s instead of 400.
    assert attempts[-1] == 4
    assert [attempts.index(n) for n in (1, 2, 3, 4)] == [0, 5, 15, 35]
    assert sum("listing the Auto Scaling groups failed" in r.getMessage() for r in caplog.records) == 1

    client.refuse = False
    now[0] = 100.0
    assert resolver.resolve(node) == (node.rsplit("/", 1)[1], Pair("spot-a", "od-a"))
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_callers_resolving_at_once_share_one_listing(aws: Any) -> None:
    """The replacement loop and the queue pollers resolve at the same moment: while one lists the groups the
    others wait for that listing instead of each making their own."""
    calls: Counter[str] = Counter()
    resolver = _resolver(aws, calls, [0.0])
    spot = _instances(aws, "spot-a")
    entered = threading.Event()
    release = threading.Event()
    describe = resolver.asg.describe_groups

    listings: list[int] = []

    def slow_describe(*args: Any, **kwargs: Any) -> Any:
        listings.append(1)
        entered.set()
        release.wait(5)
        return describe(*args, **kwargs)

    resolver.asg.describe_groups = slow_describe  # type: ignore[method-assign]
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(resolver.resolve(f"aws:///us-east-1a/{spot[i]}")))
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    assert entered.wait(5)
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(results) == 4 and all(isinstance(r, tuple) for r in results), results
    assert len(listings) == 1, f"{len(listings)} listings for 4 callers at once"
    assert calls["DescribeAutoScalingGroups"] == 2, "one listing: the tagged groups, then the configured one"


def test_a_detection_reads_the_fresh_listing_while_the_loop_lists_ahead(aws: Any) -> None:
    """The replacement loop lists the groups ahead of time (``refresh(ahead=...)``) so no detection waits for a
    listing: while that listing is under way, a resolve finds the current one fresh and does not wait for it."""
    calls: Counter[str] = Counter()
    now = [0.0]
    resolver = _resolver(aws, calls, now)
    spot = _instances(aws, "spot-a")
    resolver.pairs()  # the first listing
    now[0] = 250.0  # stale within the 60 s the loop lists ahead, still fresh for a detection
    entered, release = threading.Event(), threading.Event()
    describe = resolver.asg.describe_groups

    def slow_describe(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(5)
        return describe(*args, **kwargs)

    resolver.asg.describe_groups = slow_describe  # type: ignore[method-assign]
    ahead = threading.Thread(target=resolver.refresh, kwargs={"ahead": 60.0})
    ahead.start()
    assert entered.wait(5)
    results: list[object] = []
    detection = threading.Thread(target=lambda: results.append(resolver.resolve(f"aws:///us-east-1a/{spot[0]}")))
    detection.start()
    detection.join(5)
    done_while_listing = not detection.is_alive()
    release.set()
    ahead.join(5)
    detection.join(5)
    assert done_while_listing, "the detection waited for the listing ahead"
    assert results == [(spot[0], Pair("spot-a", "od-a"))]
