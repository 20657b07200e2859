"""The call log counts the AWS operations the sandbox received."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading

import pytest
from botocore.exceptions import ClientError

from tests.unit.sandbox.conftest import ON_DEMAND, SPOT, Sandbox


def test_call_log_counts_operations_per_group(sandbox: Sandbox) -> None:
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=4)
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=5)
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=ON_DEMAND, DesiredCapacity=1)
    sandbox.autoscaling.describe_auto_scaling_groups()

    assert sandbox.control.count_calls("SetDesiredCapacity", asg=SPOT) == 2
    assert sandbox.control.count_calls("SetDesiredCapacity", asg=ON_DEMAND) == 1
    assert sandbox.control.count_calls("SetDesiredCapacity") == 3
    assert sandbox.control.count_calls("DescribeAutoScalingGroups") == 1
    call = sandbox.control.calls("SetDesiredCapacity", asg=ON_DEMAND)[0]
    assert call["service"] == "autoscaling"
    assert call["params"]["DesiredCapacity"] == "1"
    assert (call["http_status"], call["error_code"], call["injected"]) == (200, None, False)


def test_call_log_records_errors_and_injected_faults(sandbox: Sandbox) -> None:
    sandbox.control.add_fault("SetDesiredCapacity", "Throttling")
    for desired in (4, 11):
        with contextlib.suppress(ClientError):
            sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=desired)

    calls = sandbox.control.calls("SetDesiredCapacity")
    assert [(c["http_status"], c["error_code"], c["injected"]) for c in calls] == [
        (400, "Throttling", True),
        (400, "ValidationError", False),
    ]


def test_call_log_records_calls_moto_answers_and_ec2_calls(sandbox: Sandbox) -> None:
    sandbox.ec2.describe_instances()
    sandbox.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["missing"])

    ec2_call = sandbox.control.calls("DescribeInstances")[0]
    assert (ec2_call["service"], ec2_call["http_status"]) == ("ec2", 200)
    assert sandbox.control.count_calls("DescribeAutoScalingGroups") == 1


def test_reset_calls_empties_the_log(sandbox: Sandbox) -> None:
    sandbox.autoscaling.describe_auto_scaling_groups()

    sandbox.control.reset_calls()

    assert sandbox.control.calls() == []


def test_a_call_is_timed_when_it_arrives_not_when_it_is_answered(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Benchmarks read a call's time as when the client sent it: a call that waits (here for the simulator's lock,
    in a burst for another group's scale-out) keeps its arrival time; the answer time is logged beside it."""
    clock_read_by_server = threading.Event()
    test_thread = threading.current_thread()
    read_clock = sandbox.clock.now

    def now() -> dt.datetime:
        if threading.current_thread() is not test_thread:
            clock_read_by_server.set()
        return read_clock()

    monkeypatch.setattr(sandbox.clock, "now", now)
    arrived = sandbox.clock.now()
    worker = threading.Thread(
        target=sandbox.autoscaling.set_desired_capacity, kwargs={"AutoScalingGroupName": SPOT, "DesiredCapacity": 4}
    )
    with sandbox.server.simulator.lock:
        worker.start()
        assert clock_read_by_server.wait(10), "the call never reached the sandbox"
        sandbox.clock.advance(5)  # the call waits for the lock this test holds
    worker.join(10)

    call = sandbox.control.calls("SetDesiredCapacity", asg=SPOT)[0]
    assert dt.datetime.fromisoformat(call["time"]) == arrived
    assert dt.datetime.fromisoformat(call["answered"]) == arrived + dt.timedelta(seconds=5)
