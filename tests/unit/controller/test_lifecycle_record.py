"""The lifecycle record kept on an SGFE's annotation, and the spot ASG health verdict."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from controller.checks.spot_health import assess, ready_instances
from controller.model.asg import Activity, Group, Instance
from controller.model.node import NodeView
from controller.model.progress import ANNOTATION, LifecycleProgress, MalformedRecordError, format_time


def test_the_record_round_trips_and_leaves_out_empty_fields() -> None:
    record = LifecycleProgress(return_target=3, return_known=("i-1", "i-2"), return_confirmed=True, owner="a")
    text = record.to_json()
    assert json.loads(text) == {
        "returnTarget": 3,
        "returnKnown": ["i-1", "i-2"],
        "returnConfirmed": True,
        "owner": "a",
        "version": 1,
    }
    assert LifecycleProgress.from_json(text) == record
    assert LifecycleProgress.of({}) == LifecycleProgress()
    assert LifecycleProgress.of({ANNOTATION: text}) == record


def test_keys_of_a_newer_version_are_ignored_but_a_newer_schema_is_refused() -> None:
    assert LifecycleProgress.from_json('{"owner":"a","somethingNew":1}') == LifecycleProgress(owner="a")
    with pytest.raises(MalformedRecordError, match="schema version 2, written by a newer Spot Guard"):
        LifecycleProgress.from_json('{"version":2}')
    with pytest.raises(MalformedRecordError, match=f"annotation {ANNOTATION} is not JSON"):
        LifecycleProgress.from_json("{")


def test_times_keep_milliseconds_so_short_windows_do_not_lose_a_second() -> None:
    moment = dt.datetime(2025, 1, 15, 10, 0, 0, 987654, tzinfo=dt.UTC)
    assert format_time(moment) == "2025-01-15T10:00:00.987Z"


def group(desired: int, states: dict[str, str]) -> Group:
    instances = tuple(Instance(i, s, "us-east-1a", "m5.large") for i, s in states.items())
    return Group("spot", desired, 0, 10, False, instances, {})


def node(name: str, instance: str, ready: bool = True, deleting: bool = False) -> NodeView:
    return NodeView(name, "1", f"aws:///us-east-1a/{instance}", {}, {}, ready, False, (), deleting)


def test_ready_instances_come_from_ready_nodes_that_are_not_being_deleted() -> None:
    nodes = {
        "a": node("a", "i-a"),
        "b": node("b", "i-b", ready=False),
        "c": node("c", "i-c", deleting=True),
        "d": NodeView("d", "1", "kind://d", {}, {}, True, False, ()),
    }
    assert ready_instances(nodes) == {"i-a"}


def test_healthy_needs_all_desired_in_service_every_node_ready_and_no_activity() -> None:
    now = dt.datetime(2025, 1, 15, tzinfo=dt.UTC)
    ok = group(2, {"i-a": "InService", "i-b": "InService"})
    assert assess(ok, [], {"i-a", "i-b"}).healthy
    done = Activity("1", "Successful", "", "Launching", "", now)
    assert assess(ok, [done], {"i-a", "i-b"}).healthy
    assert not assess(group(3, {"i-a": "InService", "i-b": "InService"}), [], {"i-a", "i-b"}).healthy
    assert not assess(ok, [], {"i-a"}).healthy
    running = Activity("2", "PreInService", "", "Launching", "", now)
    assert "in progress (PreInService: Launching)" in assess(ok, [running], {"i-a", "i-b"}).reason
    assert assess(None, [], set(), "gone").reason.startswith("spot ASG gone does not exist")
