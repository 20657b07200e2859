"""Instance refresh: StartInstanceRefresh replaces every instance in batches (terminations and launches recorded as
activities), DescribeInstanceRefreshes reports it, CancelInstanceRefresh stops it, a suspended InstanceRefresh pauses
it."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.unit.sandbox.conftest import Sandbox, create_group, instances

GROUP = "refreshed"


def _ids(sandbox: Sandbox) -> set[str]:
    return {i["InstanceId"] for i in instances(sandbox, GROUP)}


def _refresh(sandbox: Sandbox) -> dict[str, Any]:
    return sandbox.autoscaling.describe_instance_refreshes(AutoScalingGroupName=GROUP)["InstanceRefreshes"][0]  # type: ignore[no-any-return]


@pytest.fixture
def four(sandbox: Sandbox) -> set[str]:
    create_group(sandbox, GROUP)
    sandbox.control.set_capacity(GROUP, pending_seconds=5)
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=4)
    sandbox.advance(5)
    return _ids(sandbox)


def test_a_refresh_replaces_the_group_in_batches_waiting_for_each_batch_to_be_in_service_and_warm(
    sandbox: Sandbox, four: set[str]
) -> None:
    refresh_id = sandbox.autoscaling.start_instance_refresh(
        AutoScalingGroupName=GROUP, Preferences={"MinHealthyPercentage": 50, "InstanceWarmup": 10}
    )["InstanceRefreshId"]
    assert _refresh(sandbox)["Status"] == "Pending"

    sandbox.advance(0)  # batch of 2 (50% of 4 may be out): terminated, replacements Pending
    refresh = _refresh(sandbox)
    assert (refresh["InstanceRefreshId"], refresh["Status"]) == (refresh_id, "InProgress")
    assert len(four - _ids(sandbox)) == 2
    terminations = [a for a in sandbox.activities(GROUP) if a["Description"].startswith("Terminating")]
    assert len(terminations) == 2
    assert all("in response to an instance refresh" in a["Cause"] for a in terminations)

    sandbox.advance(5)  # replacements InService; warming up for 10 s
    assert len(four - _ids(sandbox)) == 2
    assert _refresh(sandbox)["StatusReason"].startswith("Waiting for instances to warm up before continuing.")
    sandbox.advance(10)  # second batch
    assert four.isdisjoint(_ids(sandbox)) and len(_ids(sandbox)) == 4
    sandbox.advance(5)
    sandbox.advance(10)

    refresh = _refresh(sandbox)
    assert (refresh["Status"], refresh["PercentageComplete"], refresh["InstancesToUpdate"]) == ("Successful", 100, 0)
    assert refresh["Preferences"]["MinHealthyPercentage"] == 50
    launches = [a for a in sandbox.activities(GROUP) if a["Description"].startswith("Launching a new EC2 instance: ")]
    assert len(launches) == 8  # the first four and their four replacements


def test_only_one_refresh_at_a_time_and_cancel_stops_it(sandbox: Sandbox, four: set[str]) -> None:
    sandbox.autoscaling.start_instance_refresh(AutoScalingGroupName=GROUP, Preferences={"MinHealthyPercentage": 75})
    with pytest.raises(ClientError) as raised:
        sandbox.autoscaling.start_instance_refresh(AutoScalingGroupName=GROUP)
    assert raised.value.response["Error"]["Code"] == "InstanceRefreshInProgress"
    sandbox.advance(0)
    replaced = four - _ids(sandbox)
    assert len(replaced) == 1

    sandbox.autoscaling.cancel_instance_refresh(AutoScalingGroupName=GROUP)
    sandbox.advance(300)

    assert _refresh(sandbox)["Status"] == "Cancelled"
    assert four - _ids(sandbox) == replaced
    with pytest.raises(ClientError) as again:
        sandbox.autoscaling.cancel_instance_refresh(AutoScalingGroupName=GROUP)
    assert again.value.response["Error"]["Code"] == "ActiveInstanceRefreshNotFound"


def test_a_suspended_instance_refresh_process_pauses_the_refresh(sandbox: Sandbox, four: set[str]) -> None:
    sandbox.autoscaling.suspend_processes(AutoScalingGroupName=GROUP, ScalingProcesses=["InstanceRefresh"])
    sandbox.autoscaling.start_instance_refresh(AutoScalingGroupName=GROUP, Preferences={"InstanceWarmup": 0})

    sandbox.advance(60)
    assert _ids(sandbox) == four
    assert _refresh(sandbox)["Status"] == "InProgress"

    sandbox.autoscaling.resume_processes(AutoScalingGroupName=GROUP, ScalingProcesses=["InstanceRefresh"])
    sandbox.advance(0)
    assert len(four - _ids(sandbox)) == 1  # minimum healthy 90% of 4: one at a time
