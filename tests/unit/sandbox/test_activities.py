"""DescribeScalingActivities as boto3 sees it: newest first, per group, filterable and paginated."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.unit.sandbox.conftest import ON_DEMAND, SPOT, Sandbox


def _launch_and_fail(sandbox: Sandbox) -> None:
    """Three successful start-up launches, then one launch, then one failure on the spot group."""
    sandbox.control.set_capacity(SPOT, pending_seconds=0)
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=4)
    sandbox.advance(1)
    sandbox.control.set_capacity(SPOT, capacity_short=True)
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=5)


def test_activities_are_newest_first_with_every_field_boto3_knows(sandbox: Sandbox) -> None:
    _launch_and_fail(sandbox)

    activities = sandbox.activities(SPOT)

    assert [a["StatusCode"] for a in activities] == ["Failed"] + ["Successful"] * 4
    starts = [a["StartTime"] for a in activities]
    assert starts == sorted(starts, reverse=True)
    newest = activities[0]
    assert set(newest) >= {
        "ActivityId",
        "AutoScalingGroupName",
        "Description",
        "Cause",
        "StartTime",
        "EndTime",
        "StatusCode",
        "StatusMessage",
        "Progress",
        "Details",
        "AutoScalingGroupARN",
    }
    assert newest["AutoScalingGroupName"] == SPOT
    assert newest["AutoScalingGroupARN"].startswith("arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:")
    assert '"Availability Zone":"us-east-1' in newest["Details"]


def test_activities_are_per_group(sandbox: Sandbox) -> None:
    _launch_and_fail(sandbox)

    assert sandbox.activities(ON_DEMAND) == []
    everything = sandbox.autoscaling.describe_scaling_activities()["Activities"]
    assert {a["AutoScalingGroupName"] for a in everything} == {SPOT}
    assert len(everything) == len(sandbox.activities(SPOT))


def test_activities_page_with_max_records_and_next_token(sandbox: Sandbox) -> None:
    _launch_and_fail(sandbox)
    expected = [a["ActivityId"] for a in sandbox.activities(SPOT)]

    first = sandbox.autoscaling.describe_scaling_activities(AutoScalingGroupName=SPOT, MaxRecords=2)
    second = sandbox.autoscaling.describe_scaling_activities(
        AutoScalingGroupName=SPOT, MaxRecords=2, NextToken=first["NextToken"]
    )
    paginator = sandbox.autoscaling.get_paginator("describe_scaling_activities")
    paged = [
        a["ActivityId"]
        for page in paginator.paginate(AutoScalingGroupName=SPOT, MaxRecords=2)
        for a in page["Activities"]
    ]

    assert [a["ActivityId"] for a in first["Activities"] + second["Activities"]] == expected[:4]
    assert paged == expected


def test_activities_filter_by_id(sandbox: Sandbox) -> None:
    _launch_and_fail(sandbox)
    wanted = sandbox.activities(SPOT)[2]["ActivityId"]

    found = sandbox.autoscaling.describe_scaling_activities(ActivityIds=[wanted])["Activities"]

    assert [a["ActivityId"] for a in found] == [wanted]


def test_activities_of_an_unknown_group_are_empty(sandbox: Sandbox) -> None:
    assert sandbox.activities("no-such-group") == []


def test_bad_next_token_is_refused(sandbox: Sandbox) -> None:
    with pytest.raises(ClientError) as raised:
        sandbox.autoscaling.describe_scaling_activities(AutoScalingGroupName=SPOT, NextToken="garbage")
    assert raised.value.response["Error"]["Code"] == "InvalidNextToken"


def test_activities_of_a_deleted_group_need_include_deleted_groups(sandbox: Sandbox) -> None:
    sandbox.autoscaling.delete_auto_scaling_group(AutoScalingGroupName=SPOT, ForceDelete=True)

    assert sandbox.activities(SPOT) == []
    kept = sandbox.autoscaling.describe_scaling_activities(AutoScalingGroupName=SPOT, IncludeDeletedGroups=True)
    assert len(kept["Activities"]) >= 3
