"""Which instance goes when desired capacity is lowered: zone balance first, then the group's termination policies."""

from __future__ import annotations

import datetime as dt

from sandbox.aws.pools import Distribution, GroupShape
from sandbox.aws.termination import GroupFacts, Member, choose_victim
from tests.unit.sandbox.conftest import Sandbox, create_group, instances, zone_counts

T0 = dt.datetime(2025, 1, 15, 10, 0, tzinfo=dt.UTC)
LT = "lt-0123"
SHAPE = GroupShape(("m5.large",), ("a", "b"), False, Distribution(), "spot")


def member(instance_id: str, zone: str, minutes_old: float, version: int = 1, market: str = "spot") -> Member:
    return Member(instance_id, zone, market, "m5.large", T0 - dt.timedelta(minutes=minutes_old), (LT, version))


def facts(*policies: str, version: int = 2, shape: GroupShape = SHAPE) -> GroupFacts:
    return GroupFacts(policies=policies, template=(LT, version), launch_configuration=None, shape=shape, pools={})


def test_the_default_policy_takes_the_fullest_zone_first_whatever_the_age() -> None:
    counted = [member("i-a1", "a", 5), member("i-a2", "a", 6), member("i-b1", "b", 500)]

    victim = choose_victim(counted, counted, facts("Default"), 2, T0)

    assert victim is not None and victim.zone == "a"


def test_the_default_policy_then_takes_the_oldest_template_version_then_the_one_closest_to_its_billing_hour() -> None:
    old_version = [member("i-1", "a", 10, version=1), member("i-2", "a", 50, version=2)]
    assert choose_victim(old_version, old_version, facts("Default"), 1, T0).instance_id == "i-1"  # type: ignore[union-attr]

    same_version = [member("i-1", "a", 10), member("i-2", "a", 50)]
    # i-2 is 50 minutes into its hour, 10 minutes from the next: it goes
    assert choose_victim(same_version, same_version, facts("Default", version=1), 1, T0).instance_id == "i-2"  # type: ignore[union-attr]


def test_oldest_and_newest_instance_policies() -> None:
    counted = [member("i-young", "a", 1), member("i-old", "a", 100)]

    assert choose_victim(counted, counted, facts("OldestInstance"), 1, T0).instance_id == "i-old"  # type: ignore[union-attr]
    assert choose_victim(counted, counted, facts("NewestInstance"), 1, T0).instance_id == "i-young"  # type: ignore[union-attr]


def test_a_mixed_group_first_shrinks_the_market_above_its_share() -> None:
    shape = GroupShape(("m5.large",), ("a",), True, Distribution(on_demand_base=1, on_demand_percentage=0), "spot")
    counted = [member("i-od1", "a", 1, market="on-demand"), member("i-od2", "a", 2, market="on-demand")]
    counted.append(member("i-spot", "a", 3))

    victim = choose_victim(counted, counted, facts("OldestInstance", shape=shape), 2, T0)

    assert victim is not None and victim.instance_id == "i-od2"  # 2 on-demand for a base of 1: one of them goes


def test_no_candidate_no_victim() -> None:
    counted = [member("i-1", "a", 1)]
    assert choose_victim([], counted, facts(), 0, T0) is None


def test_lowering_desired_on_the_sandbox_keeps_the_zones_balanced(sandbox: Sandbox) -> None:
    create_group(sandbox, "six")
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName="six", DesiredCapacity=6)
    assert zone_counts(sandbox, "six") == {"us-east-1a": 2, "us-east-1b": 2, "us-east-1c": 2}

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName="six", DesiredCapacity=3)

    assert zone_counts(sandbox, "six") == {"us-east-1a": 1, "us-east-1b": 1, "us-east-1c": 1}
    terminations = [a for a in sandbox.activities("six") if a["Description"].startswith("Terminating")]
    assert len(terminations) == 3
    assert all("shrinking the capacity from 6 to 3" in a["Cause"] for a in terminations)


def test_the_default_policy_on_the_sandbox_removes_instances_of_an_older_template_version_first(
    sandbox: Sandbox,
) -> None:
    create_group(sandbox, "versions", zones=("us-east-1a",))
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName="versions", DesiredCapacity=1)
    (old,) = [i["InstanceId"] for i in instances(sandbox, "versions")]
    sandbox.ec2.create_launch_template_version(
        LaunchTemplateName="spotguard-nodes",
        LaunchTemplateData={"ImageId": "ami-0fedcba987654321", "InstanceType": "m5.large"},
    )
    sandbox.advance(1801)
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName="versions", DesiredCapacity=2)
    sandbox.advance(1800)
    # the old instance is 3601 s old (3599 s from its next billing hour), the new one 1800 s: the billing-hour rule
    # alone would take the new one; the old template version goes first

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName="versions", DesiredCapacity=1)

    assert old not in [i["InstanceId"] for i in instances(sandbox, "versions")]


def test_termination_policies_set_by_update_auto_scaling_group_are_honoured(sandbox: Sandbox) -> None:
    create_group(sandbox, "newest", zones=("us-east-1a",))
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName="newest", DesiredCapacity=1)
    (first,) = [i["InstanceId"] for i in instances(sandbox, "newest")]
    sandbox.advance(600)
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName="newest", DesiredCapacity=2)
    sandbox.autoscaling.update_auto_scaling_group(AutoScalingGroupName="newest", TerminationPolicies=["NewestInstance"])
    assert sandbox.group("newest")["TerminationPolicies"] == ["NewestInstance"]

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName="newest", DesiredCapacity=1)

    assert [i["InstanceId"] for i in instances(sandbox, "newest")] == [first]
