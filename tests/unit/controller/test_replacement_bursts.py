"""The replacement controller's batching against in-memory fakes: recommendations that arrive while a
spot scale-up is still in flight are neither lost nor counted twice, and a batch costs one intent write."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from controller.clock import FakeClock
from controller.config import Settings
from controller.effects.node_writes import RecordChangedError
from controller.model.asg import Group, Instance
from controller.model.node import NodeView
from controller.model.record import ANNOTATION, Phase, ReplacementRecord
from controller.replacement import scale_up
from controller.replacement.batching import BURST_QUIET_WINDOWS
from controller.replacement.controller import ReplacementController
from controller.workers import ThreadWorkers
from nodewatch import annotations as contract
from tests.unit.controller import replacement_parts

SPOT, ON_DEMAND = "spot-a", "od-a"
SETTINGS = Settings(spot_asg_name=SPOT, on_demand_asg_name=ON_DEMAND, batch_window=0.1, batch_max_delay=2.0)
QUIET = SETTINGS.batch_window * BURST_QUIET_WINDOWS  # the longest a queue stays open with no arrival


class FakeAutoScaling:
    """Two groups; ``hold`` keeps SetDesiredCapacity from answering until it is set."""

    def __init__(self, nodes: int) -> None:
        self.desired = {SPOT: nodes, ON_DEMAND: 0}
        self.instances = [f"i-{index:017x}" for index in range(nodes)]
        self.set_calls: list[tuple[str, int]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.in_call = threading.Event()
        self.describes: list[str] = []
        self.changes = 0  # SetDesiredCapacity calls begun or ended, as AutoScaling.capacity_changes counts them

    def capacity_changes(self, group: str) -> tuple[int, int]:
        return self.changes, 0

    def _group(self, name: str) -> Group:
        instances = (
            tuple(Instance(i, "InService", "us-east-1a", "m5.large") for i in self.instances) if name == SPOT else ()
        )
        return Group(name, self.desired[name], 0, 1000, False, instances, {})

    def describe_groups(self, names: Any) -> dict[str, Group]:
        self.describes.extend(names)
        return {name: self._group(name) for name in names if name in self.desired}

    def tagged_groups(self, tag: str) -> dict[str, Group]:
        return {}

    def group_of_instances(self, ids: Any) -> dict[str, str]:
        return {i: SPOT for i in ids if i in self.instances}

    def activities(self, group: str, max_records: int = 20) -> list[Any]:
        return []

    def instance_refreshes(self, group: str) -> list[Any]:
        return []

    def set_desired_capacity(self, group: str, desired: int) -> None:
        self.changes += 1
        self.in_call.set()
        assert self.hold.wait(10), "the test never released the call"
        self.set_calls.append((group, desired))
        self.desired[group] = desired
        self.changes += 1


class FakeWriter:
    """Replacement records kept in memory, compare-and-swap like NodeWriter; counts the writes."""

    def __init__(self, annotations: dict[str, dict[str, str]]) -> None:
        self.annotations = annotations
        self.writes = 0
        self.lock = threading.Lock()
        self.hold = threading.Event()  # cleared: writes wait (a slow API server)
        self.hold.set()
        self.in_write = threading.Event()

    def write_record(
        self, name: str, expected: ReplacementRecord | None, new: ReplacementRecord, seen: Any = None
    ) -> None:
        self.in_write.set()
        assert self.hold.wait(10), "the test never released the write"
        with self.lock:
            current = self.annotations[name].get(ANNOTATION)
            if current != (expected.to_json() if expected else None):
                raise RecordChangedError(f"node {name}: record changed")
            self.annotations[name][ANNOTATION] = new.to_json()
            self.writes += 1


def _views(aws: FakeAutoScaling, annotations: dict[str, dict[str, str]]) -> Callable[[], dict[str, NodeView]]:
    def nodes() -> dict[str, NodeView]:
        return {
            name: NodeView(
                name=name,
                resource_version="1",
                provider_id=f"aws:///us-east-1a/{aws.instances[int(name[1:])]}",
                labels={},
                annotations=dict(notes),
                ready=True,
                unschedulable=False,
                taints=(),
            )
            for name, notes in annotations.items()
        }

    return nodes


def _recommend(annotations: dict[str, dict[str, str]], aws: FakeAutoScaling, index: int) -> None:
    annotations[f"n{index}"].update(
        {contract.REBALANCE_NOTICE_TIME: "2026-11-22T03:00:00Z", contract.INSTANCE_ID: aws.instances[index]}
    )


def _workers(controller: ReplacementController) -> ThreadWorkers:
    workers = controller.ctx.workers
    assert isinstance(workers, ThreadWorkers)
    return workers


@pytest.fixture
def setup(
    clock: FakeClock,
) -> Iterator[tuple[ReplacementController, FakeAutoScaling, FakeWriter, dict[str, dict[str, str]]]]:
    aws = FakeAutoScaling(nodes=20)
    annotations: dict[str, dict[str, str]] = {f"n{index}": {} for index in range(20)}
    writer = FakeWriter(annotations)
    controller = ReplacementController(
        replacement_parts.context(SETTINGS, clock, aws, writer, _views(aws, annotations))
    )
    yield controller, aws, writer, annotations
    aws.hold.set()
    writer.hold.set()
    _workers(controller).shutdown(wait=True)


def _phases(annotations: dict[str, dict[str, str]]) -> dict[str, str]:
    return {
        name: ReplacementRecord.from_json(notes[ANNOTATION]).phase
        for name, notes in annotations.items()
        if ANNOTATION in notes
    }


@pytest.mark.parametrize("slow", ["intent write", "SetDesiredCapacity"])
def test_recommendations_arriving_during_a_slow_scale_up_are_neither_lost_nor_counted_twice(
    slow: str,
    setup: tuple[ReplacementController, FakeAutoScaling, FakeWriter, dict[str, dict[str, str]]],
    clock: FakeClock,
) -> None:
    controller, aws, writer, annotations = setup
    held, entered = (writer.hold, writer.in_write) if slow == "intent write" else (aws.hold, aws.in_call)
    try:
        for index in range(3):
            _recommend(annotations, aws, index)
        controller.reconcile()  # detected and queued
        held.clear()
        clock.advance(QUIET)
        controller.reconcile()  # the queue closes: its scale-up goes to a thread and waits
        assert entered.wait(5)

        for index in range(3, 5):  # more recommendations while the call is in flight
            _recommend(annotations, aws, index)
        for _ in range(5):
            clock.advance(0.5)
            controller.reconcile()  # the first three must not be queued again; the group's scale-up is busy
        assert aws.set_calls == []

        held.set()
        _pass_until_scaled_up(controller, clock, annotations, records=5)
    finally:
        held.set()
        _workers(controller).shutdown(wait=True)

    assert aws.set_calls == [(SPOT, 23), (SPOT, 25)], "3 then 2 more: every recommendation counted once"
    assert set(_phases(annotations).values()) == {Phase.SPOT_SCALED_UP}, _phases(annotations)


def test_a_batch_costs_one_write_before_its_call(
    setup: tuple[ReplacementController, FakeAutoScaling, FakeWriter, dict[str, dict[str, str]]], clock: FakeClock
) -> None:
    controller, aws, writer, annotations = setup
    try:
        for index in range(10):
            _recommend(annotations, aws, index)
        controller.reconcile()
        aws.hold.clear()
        clock.advance(QUIET)
        controller.reconcile()
        assert aws.in_call.wait(5)
        writes_before_the_call = writer.writes
        intents = [n for n, notes in annotations.items() if ANNOTATION in notes]
        aws.hold.set()
        _pass_until_scaled_up(controller, clock, annotations)
    finally:
        aws.hold.set()
        _workers(controller).shutdown(wait=True)

    assert writes_before_the_call == 1 and intents == ["n0"]
    assert aws.set_calls == [(SPOT, 30)]
    assert set(_phases(annotations).values()) == {Phase.SPOT_SCALED_UP}


def test_member_records_pause_while_new_recommendations_wait_for_their_call(
    setup: tuple[ReplacementController, FakeAutoScaling, FakeWriter, dict[str, dict[str, str]]],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch's member records are not urgent (its intent covers them): in a burst they must not compete at the
    API server with the recommendations still arriving. Chunks of 4 here: the chunk under way finishes, the next
    waits until the newcomer's call is made."""
    monkeypatch.setattr(scale_up, "RECORD_CHUNK", 4)
    controller, aws, writer, annotations = setup
    recorder_waits = threading.Event()  # the batch-recorder is blocked waiting for no recommendation to wait

    class Quiet(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            if not self.is_set() and threading.current_thread().name.startswith("records"):
                recorder_waits.set()
            return super().wait(timeout)

    controller._quiet = Quiet()
    controller._quiet.set()
    try:
        for index in range(13):  # one intent + 12 members: three chunks
            _recommend(annotations, aws, index)
        controller.reconcile()
        clock.advance(QUIET)
        controller.reconcile()  # the queue closes: the call is made on a scale-up thread
        _wait_for(lambda: aws.set_calls == [(SPOT, 33)])
        writer.hold.clear()  # the API server is slow: the first chunk of member records waits in flight
        writer.in_write.clear()
        controller.reconcile()  # the call is confirmed: the batch-recorder starts on the members
        assert writer.in_write.wait(5)
        _recommend(annotations, aws, 13)  # a newcomer arrives while the first chunk is in flight
        controller.reconcile()
        writer.hold.set()
        assert recorder_waits.wait(5), "the batch-recorder should wait for the newcomer's call"
        assert writer.writes == 1 + 4, "no further member record while the newcomer waits for its call"

        clock.advance(QUIET)
        controller.reconcile()  # the newcomer's queue closes: its call, then the members' records go on
        _pass_until_scaled_up(controller, clock, annotations, records=14)
    finally:
        writer.hold.set()
        _workers(controller).shutdown(wait=True)

    assert aws.set_calls == [(SPOT, 33), (SPOT, 34)]
    assert set(_phases(annotations).values()) == {Phase.SPOT_SCALED_UP}


def test_an_idle_pass_lists_the_groups_so_a_bursts_first_detection_does_not_wait_for_it(
    setup: tuple[ReplacementController, FakeAutoScaling, FakeWriter, dict[str, dict[str, str]]], clock: FakeClock
) -> None:
    controller, aws, _, annotations = setup
    try:
        controller.reconcile()  # nothing annotated: the groups are listed now
        assert aws.describes == [SPOT]

        _recommend(annotations, aws, 0)
        controller.reconcile()
        _wait_for(lambda: len(aws.describes) == 2)
        clock.advance(SETTINGS.batch_window)
        controller.reconcile()
        _wait_for(lambda: aws.set_calls == [(SPOT, 21)])
    finally:
        _workers(controller).shutdown(wait=True)

    assert aws.describes == [SPOT, SPOT], "the listing, then the read for the call: no listing on detection"


def test_a_queues_group_is_read_while_it_waits_to_close_and_that_read_serves_its_call(
    setup: tuple[ReplacementController, FakeAutoScaling, FakeWriter, dict[str, dict[str, str]]], clock: FakeClock
) -> None:
    controller, aws, _, annotations = setup
    try:
        _one_recommendation_read_ahead(controller, aws, annotations)
        assert aws.set_calls == []

        clock.advance(SETTINGS.batch_window)
        controller.reconcile()
        _wait_for(lambda: aws.set_calls == [(SPOT, 21)])
    finally:
        _workers(controller).shutdown(wait=True)

    assert aws.describes == [SPOT], "the call used the read made ahead: no second DescribeAutoScalingGroups"


def test_a_capacity_change_by_this_process_after_the_read_ahead_makes_the_call_read_again(
    setup: tuple[ReplacementController, FakeAutoScaling, FakeWriter, dict[str, dict[str, str]]], clock: FakeClock
) -> None:
    """Another of the controller's loops (the lifecycle's return to spot, say) changes the group through the capacity
    owner while a queue waits: a call computed from the earlier read would undo that change."""
    controller, aws, _, annotations = setup
    try:
        _one_recommendation_read_ahead(controller, aws, annotations)
        # The lifecycle's return to spot (say) asks the owner for 5 more: the read made ahead is outdated by it.
        controller.ctx.owner.raise_by(SPOT, 5, lambda plan: plan.granted)

        clock.advance(SETTINGS.batch_window)
        controller.reconcile()
        _wait_for(lambda: len(aws.set_calls) == 2)
    finally:
        _workers(controller).shutdown(wait=True)

    assert aws.set_calls == [(SPOT, 25), (SPOT, 26)], "the scale-up counts on top of the other change"
    assert aws.describes == [SPOT, SPOT]


def test_a_read_ahead_older_than_its_limit_is_made_again_ahead_of_the_call(
    setup: tuple[ReplacementController, FakeAutoScaling, FakeWriter, dict[str, dict[str, str]]], clock: FakeClock
) -> None:
    """A steady trickle keeps a queue open up to the maximum delay: the read made when it first looked due would be
    too old by then (someone else may have changed the group), so it is made again while the queue still waits
    (as measured in the benchmark's bursts, a read of a 250-instance group on the call's path took 0.1-0.3 s)."""
    controller, aws, _, annotations = setup
    try:
        _one_recommendation_read_ahead(controller, aws, annotations)
        aws.desired[SPOT] = 30  # changed by someone else right after the first read
        for index in range(1, 10):  # one arrival every 0.2 s keeps the queue from going quiet
            clock.advance(0.2)
            _recommend(annotations, aws, index)
            controller.reconcile()
            if index < 9:
                assert aws.describes == [SPOT], f"{index * 0.2:.1f} s: the first read is still current at the close"
        _wait_for(lambda: aws.describes == [SPOT, SPOT])  # 1.8 s: the queue closes in 0.2 s, the read is 1.8 s old
        clock.advance(0.2)
        controller.reconcile()  # two seconds after the first arrival: the queue closes
        _wait_for(lambda: len(aws.set_calls) == 1)
    finally:
        _workers(controller).shutdown(wait=True)

    assert aws.set_calls == [(SPOT, 40)], "10 nodes on top of the desired capacity read last"
    assert aws.describes == [SPOT, SPOT], "read again once, ahead of the call: the call itself read nothing"


def _one_recommendation_read_ahead(
    controller: ReplacementController, aws: FakeAutoScaling, annotations: dict[str, dict[str, str]]
) -> None:
    """With the nodes' group known, one recommendation is detected: due in one window, within the read-ahead
    lead, so its group is read at once (and nothing else is)."""
    _groups_known(controller, aws)
    _recommend(annotations, aws, 0)
    controller.reconcile()
    _wait_for(lambda: aws.describes == [SPOT])


def _groups_known(controller: ReplacementController, aws: FakeAutoScaling) -> None:
    """Let the controller learn the nodes' group (its resolver reads the group once), then forget that read: the
    tests count the reads made for scale-ups."""
    controller.ctx.resolver.resolve(f"aws:///us-east-1a/{aws.instances[0]}")
    aws.describes.clear()


def _pass_until_scaled_up(
    controller: ReplacementController,
    clock: FakeClock,
    annotations: dict[str, dict[str, str]],
    records: int | None = None,
) -> None:
    """Reconcile passes (0.5 s apart on the clock) until every record (``records`` of them, if given) is
    SpotScaledUp, giving the controller's threads a moment between passes; at most 50 passes."""
    for _ in range(50):
        clock.advance(0.5)
        controller.reconcile()
        phases = _phases(annotations)
        if (records is None or len(phases) == records) and set(phases.values()) == {Phase.SPOT_SCALED_UP}:
            return
        time.sleep(0.02)


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within 5 s"
        time.sleep(0.01)
