"""The sandbox's shortcuts through moto's internals give moto's own answers."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from moto.ec2.exceptions import InvalidInstanceIdError
from moto.ec2.models import ec2_backends
from moto.ec2.models.instance_types import INSTANCE_TYPE_OFFERINGS

from sandbox.aws import moto_bridge
from tests.unit.sandbox.conftest import SPOT, Sandbox


def _offerings(region: str) -> dict[str, Counter[tuple[str, str]]]:
    return {
        location_type: Counter((o["InstanceType"], o["Location"]) for o in by_region.get(region, []))
        for location_type, by_region in INSTANCE_TYPE_OFFERINGS.items()
    }


def test_launching_puts_the_groups_instance_type_first_among_moto_offerings_and_changes_none(sandbox: Sandbox) -> None:
    before = _offerings("us-east-1")
    instance_type = sandbox.group(SPOT)["Instances"][0]["InstanceType"]

    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=4)

    assert _offerings("us-east-1") == before
    for by_region in INSTANCE_TYPE_OFFERINGS.values():
        offerings = by_region["us-east-1"]
        assert offerings[0]["InstanceType"] == instance_type


def test_an_instance_looked_up_by_id_is_the_one_ec2_describes(sandbox: Sandbox) -> None:
    instance_id = sorted(sandbox.lifecycle_states(SPOT))[0]

    (reservation,) = sandbox.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    backend = ec2_backends[moto_bridge.account_id()]["us-east-1"]

    assert backend.get_instance(instance_id).id == reservation["Instances"][0]["InstanceId"] == instance_id
    with pytest.raises(InvalidInstanceIdError):
        backend.get_instance("i-00000000000000000")


def test_a_launch_finds_its_new_instance_without_passing_every_older_one(sandbox: Sandbox) -> None:
    """Each launch looks up the instance it is making; terminated instances stay in moto, so a scan from the oldest
    reservation grew with every instance the sandbox ever ran."""
    backend: Any = ec2_backends[moto_bridge.account_id()]["us-east-1"]
    sandbox.autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=6)
    reservations = list(backend.reservations.values())
    visited: list[str] = []

    class Counting:
        def __init__(self, reservation: Any) -> None:
            self.reservation = reservation

        @property
        def instances(self) -> Any:
            visited.append(self.reservation.id)
            return self.reservation.instances

    newest = reservations[-1].instances[-1].id
    saved = dict(backend.reservations)
    try:
        backend.reservations = {key: Counting(r) for key, r in saved.items()}
        assert backend.get_instance(newest).id == newest
    finally:
        backend.reservations = saved

    assert len(reservations) >= 6 and visited == [reservations[-1].id]
