"""Pools (instance type x zone): one short pool, retries in the others as their own activities, allocation strategies,
the on-demand share of a MixedInstancesPolicy group, types a zone does not offer, and plain launch-template groups."""

from __future__ import annotations

from typing import Any

from tests.unit.sandbox.conftest import Sandbox, create_group, instances, zone_counts

MIXED = "mixed-spot"
COUPLE = ("m5.large", "m6i.large")


def _failed(sandbox: Sandbox, name: str) -> list[dict[str, Any]]:
    return [a for a in sandbox.activities(name) if a["StatusCode"] == "Failed"]


def _markets(sandbox: Sandbox, name: str) -> dict[str, str]:
    ids = [i["InstanceId"] for i in instances(sandbox, name)]
    found = sandbox.ec2.describe_instances(InstanceIds=ids)["Reservations"]
    return {i["InstanceId"]: i.get("InstanceLifecycle", "on-demand") for r in found for i in r["Instances"]}


def test_a_short_pool_fails_with_its_own_activity_and_the_group_launches_in_its_next_pool(sandbox: Sandbox) -> None:
    create_group(sandbox, MIXED, instance_types=COUPLE)
    # price-capacity-optimized with equal capacity: the cheaper pool first (m5.large and m6i.large cost the same,
    # so the override order decides); make that one short in the first zone.
    sandbox.control.set_pool(MIXED, instance_type="m5.large", zone="us-east-1a", short=True)

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=MIXED, DesiredCapacity=1)

    (failed,) = _failed(sandbox, MIXED)
    assert failed["StatusMessage"] == (
        "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot capacity available that "
        "matches your request. Launching EC2 instance failed."
    )
    assert '"Availability Zone":"us-east-1a"' in failed["Details"]
    (instance,) = instances(sandbox, MIXED)
    assert (instance["InstanceType"], instance["AvailabilityZone"]) == ("m6i.large", "us-east-1a")
    launch = sandbox.activities(MIXED)[0]
    assert launch["Description"] == f"Launching a new EC2 instance: {instance['InstanceId']}"
    assert launch["StatusCode"] == "Successful"


def test_a_zone_short_in_every_pool_sends_the_launch_to_the_next_zone_each_try_recorded(sandbox: Sandbox) -> None:
    create_group(sandbox, MIXED, instance_types=COUPLE)
    sandbox.control.set_pool(MIXED, zone="us-east-1a", short=True)

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=MIXED, DesiredCapacity=1)

    assert len(_failed(sandbox, MIXED)) == 2  # both pools of us-east-1a
    assert zone_counts(sandbox, MIXED) == {"us-east-1a": 0, "us-east-1b": 1, "us-east-1c": 0}


def test_pools_that_failed_are_left_alone_until_the_retry_interval_then_tried_again(sandbox: Sandbox) -> None:
    create_group(sandbox, MIXED, instance_types=COUPLE, zones=("us-east-1a",))
    sandbox.control.set_capacity(MIXED, retry_seconds=10)
    sandbox.control.set_pool(MIXED, zone="us-east-1a", short=True)

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=MIXED, DesiredCapacity=1)
    assert len(_failed(sandbox, MIXED)) == 2
    sandbox.advance(9)
    assert len(_failed(sandbox, MIXED)) == 2
    sandbox.advance(1)
    assert len(_failed(sandbox, MIXED)) == 4
    assert instances(sandbox, MIXED) == []

    sandbox.control.set_pool(MIXED, zone="us-east-1a")  # capacity is back: the group launches at once
    assert len(instances(sandbox, MIXED)) == 1


def test_pool_retry_seconds_spaces_the_tries_in_other_pools(sandbox: Sandbox) -> None:
    create_group(sandbox, MIXED, instance_types=COUPLE, zones=("us-east-1a",))
    sandbox.control.set_capacity(MIXED, pool_retry_seconds=2)
    sandbox.control.set_pool(MIXED, instance_type="m5.large", short=True)

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=MIXED, DesiredCapacity=1)
    assert (len(_failed(sandbox, MIXED)), instances(sandbox, MIXED)) == (1, [])

    sandbox.advance(2)
    assert [i["InstanceType"] for i in instances(sandbox, MIXED)] == ["m6i.large"]


def test_lowest_price_takes_the_cheapest_pool_and_capacity_optimized_the_deepest(sandbox: Sandbox) -> None:
    create_group(sandbox, "cheap", instance_types=("m5.large", "c5.large"), zones=("us-east-1a",), spot_strategy=None)
    create_group(
        sandbox,
        "deep",
        instance_types=("m5.large", "c5.large"),
        zones=("us-east-1a",),
        spot_strategy="capacity-optimized",
    )
    sandbox.control.set_pool("deep", instance_type="m5.large", capacity_score=5)
    sandbox.control.set_pool("cheap", instance_type="m5.large", capacity_score=5)

    for name in ("cheap", "deep"):
        sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=1)

    # lowest-price (the API's default when no strategy is given): c5.large's spot price is the lower
    assert [i["InstanceType"] for i in instances(sandbox, "cheap")] == ["c5.large"]
    assert [i["InstanceType"] for i in instances(sandbox, "deep")] == ["m5.large"]


def test_price_capacity_optimized_takes_the_cheapest_of_the_deepest_pools(sandbox: Sandbox) -> None:
    create_group(sandbox, MIXED, instance_types=("m5.large", "c5.large", "r5.large"), zones=("us-east-1a",))
    sandbox.control.set_pool(MIXED, instance_type="c5.large", capacity_score=0.2)  # cheapest, but shallow
    sandbox.control.set_pool(MIXED, instance_type="r5.large", spot_price=0.01)  # deep and now cheapest

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=MIXED, DesiredCapacity=1)

    assert [i["InstanceType"] for i in instances(sandbox, MIXED)] == ["r5.large"]


def test_the_on_demand_base_and_percentage_decide_each_launchs_market(sandbox: Sandbox) -> None:
    create_group(sandbox, MIXED, instance_types=COUPLE, on_demand_base=1, on_demand_percentage=50)

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=MIXED, DesiredCapacity=4)

    # base 1, then 50% of the other 3 rounded up in favour of On-Demand: 1 + 2 on-demand, 1 spot
    assert sorted(_markets(sandbox, MIXED).values()) == ["on-demand", "on-demand", "on-demand", "spot"]
    assert sorted(i["InstanceType"] for i in instances(sandbox, MIXED)) == ["m5.large"] * 4  # prioritized


def test_an_instance_type_a_zone_does_not_offer_fails_as_unsupported_and_the_group_goes_elsewhere(
    sandbox: Sandbox,
) -> None:
    # EC2 offers m5.large in us-east-1a..d and f, not in us-east-1e (moto's copy of DescribeInstanceTypeOfferings)
    create_group(sandbox, MIXED, instance_types=("m5.large",), zones=("us-east-1e", "us-east-1a"), spot=False)

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=MIXED, DesiredCapacity=1)

    (failed,) = _failed(sandbox, MIXED)
    assert failed["StatusMessage"] == (
        "Could not launch On-Demand Instances. Unsupported - Your requested instance type (m5.large) is not supported "
        "in your requested Availability Zone (us-east-1e). Please retry your request by not specifying an "
        "Availability Zone or choosing us-east-1a. Launching EC2 instance failed."
    )
    assert zone_counts(sandbox, MIXED) == {"us-east-1e": 0, "us-east-1a": 1}


def test_a_launch_template_spot_group_writes_its_shortage_as_a_sentence_without_a_code(sandbox: Sandbox) -> None:
    create_group(sandbox, "lt-spot")
    sandbox.control.set_pool("lt-spot", zone="us-east-1a", short=True)

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName="lt-spot", DesiredCapacity=1)

    (failed,) = _failed(sandbox, "lt-spot")
    assert failed["StatusMessage"] == (
        "There is no Spot capacity available that matches your request. Launching EC2 instance failed."
    )
    assert failed["Description"] == (
        "Launching a new EC2 instance.  Status Reason: There is no Spot capacity available that matches your "
        "request. Launching EC2 instance failed."
    )
    assert zone_counts(sandbox, "lt-spot") == {"us-east-1a": 0, "us-east-1b": 1, "us-east-1c": 0}
    assert set(_markets(sandbox, "lt-spot").values()) == {"spot"}


def test_a_launch_template_that_requests_spot_makes_a_spot_group_without_the_tag(sandbox: Sandbox) -> None:
    sandbox.ec2.create_launch_template(
        LaunchTemplateName="spot-template",
        LaunchTemplateData={
            "ImageId": "ami-0abcdef1234567890",
            "InstanceType": "m5.large",
            "InstanceMarketOptions": {"MarketType": "spot"},
        },
    )
    sandbox.autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="untagged",
        LaunchTemplate={"LaunchTemplateName": "spot-template", "Version": "$Latest"},
        MinSize=0,
        MaxSize=3,
        DesiredCapacity=1,
        AvailabilityZones=["us-east-1a"],
    )
    sandbox.server.simulator.tick()

    assert set(_markets(sandbox, "untagged").values()) == {"spot"}


def test_update_auto_scaling_group_keeps_the_mixed_instances_policy_it_does_not_name(sandbox: Sandbox) -> None:
    create_group(sandbox, MIXED, instance_types=COUPLE)

    sandbox.autoscaling.update_auto_scaling_group(AutoScalingGroupName=MIXED, MaxSize=30)

    group = sandbox.group(MIXED)
    assert group["MaxSize"] == 30
    overrides = group["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]
    assert [o["InstanceType"] for o in overrides] == list(COUPLE)
