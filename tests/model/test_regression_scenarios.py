"""Deterministic scenarios for five capacity bugs that are fixed now (issue 16), each in the situations it showed
in: the real code of both controllers over the in-memory AWS and Kubernetes models (``tests.model.harness``), with
the passes, the jobs and AWS's moves in the order each test chooses and the clock advanced by hand (no sleeps, no
randomness).

Each test ends in what a user would see: which instance was terminated and by whom, the groups' desired capacity,
whether on-demand was asked for, the SpotGuardFallbackEvent's end, a node's record and cordon. The model-based
test (``test_capacity_model``) explores interleavings at random; these pin the situations the bugs were found in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from controller.config import Settings
from controller.model.progress import LifecycleProgress
from controller.model.record import Phase, ReplacementRecord
from controller.model.sgfe import FallbackEvent
from controller.model.sgfe import Phase as SgfePhase
from tests.model import invariants
from tests.model.aws_model import Termination
from tests.model.harness import SETTINGS, Process, World, disarm, install

PAIR = {"spot-a": ("od-a", 4)}
SETTLE_QUIET_ROUNDS = 40  # one simulated second each: longer than every wait of the settings used here
SETTLE_MAX_ROUNDS = 400


class Scenario:
    """One World and one leader term over it, moved one step at a time: AWS moves only when the test says so."""

    def __init__(self, settings: Settings = SETTINGS) -> None:
        self.world = World(PAIR, settings)
        self.process = Process(self.world)
        self.nodes = sorted(self.world.kube.nodes)  # the spot group's four original nodes, oldest first

    # -- moving ------------------------------------------------------------------------------------------------
    def run_jobs(self) -> None:
        while self.process.workers.pending:
            self.process.workers.run(0)

    def round(self, seconds: float = 0.5, *, aws: bool = False) -> None:
        """A replacement pass and its jobs, a lifecycle pass and its jobs; AWS moves if ``aws``; time passes."""
        self.process.replacement.reconcile()
        self.run_jobs()
        self.process.lifecycle.reconcile()
        self.run_jobs()
        if aws:
            self.world.aws.tick()
        self.world.clock.advance(seconds)

    def rounds(self, count: int, seconds: float = 0.5, *, aws: bool = False) -> None:
        for _ in range(count):
            self.round(seconds, aws=aws)

    def until(self, what: str, done: Callable[[], bool], *, aws: bool = True, limit: int = 120) -> None:
        """Rounds of one simulated second until ``done``; an AssertionError naming ``what`` if it never is."""
        for _ in range(limit):
            if done():
                return
            self.round(1.0, aws=aws)
        raise AssertionError(f"never happened: {what}; {self.world._describe_group('spot-a')}")

    def settle(self) -> None:
        """Capacity comes back, drains pass, kubelets catch up: everything runs until nothing changes."""
        world = self.world
        world.aws.short.clear()
        world.drains.blocked.clear()
        world.slow_kubelets = False
        world.kubelets_catch_up()
        quiet, last = 0, None
        for _ in range(SETTLE_MAX_ROUNDS):
            self.round(1.0, aws=True)
            now = self._fingerprint()
            quiet = quiet + 1 if now == last else 0
            last = now
            if quiet >= SETTLE_QUIET_ROUNDS:
                return
        raise AssertionError("the world never settled")

    def _fingerprint(self) -> Any:
        world = self.world
        return (
            sorted((name, group["desired"]) for name, group in world.aws.groups.items()),
            sorted((i.instance_id, i.state) for i in world.aws.instances.values()),
            sorted(
                (name, str(node["metadata"].get("annotations")), str(node["spec"]))
                for name, node in world.kube.nodes.items()
            ),
            sorted((e.name, e.status.phase, e.status.message) for e in world.events()),
        )

    # -- looking -----------------------------------------------------------------------------------------------
    def record(self, node: str) -> ReplacementRecord:
        record = self.world.record(node)
        assert record is not None, f"node {node} has no replacement record"
        return record

    def retired(self, node: str) -> bool:
        """Its instance was terminated and the Node is gone (a Retired record goes with it)."""
        return node not in self.world.kube.nodes or self.phase(node) == Phase.RETIRED

    def phase(self, node: str) -> str:
        record = self.world.record(node)
        return record.phase if record is not None else "(none)"

    def desired(self, group: str) -> int:
        return int(self.world.aws.groups[group]["desired"])

    def instances(self, group: str, state: str) -> list[str]:
        return sorted(i.instance_id for i in self.world.aws.instances.values() if i.group == group and i.state == state)

    def state(self, instance: str) -> str:
        return self.world.aws.instances[instance].state

    def live(self, group: str) -> set[str]:
        return {i.instance_id for i in self.world.aws.live(group)}

    def node_of(self, instance: str) -> str:
        node = self.world.kube.node_of(instance)
        assert node is not None, f"instance {instance} has no Node"
        return node

    def cordoned(self, node: str) -> bool:
        return bool(self.world.kube.nodes[node]["spec"].get("unschedulable"))

    def event(self) -> FallbackEvent:
        events = self.world.events()
        assert len(events) == 1, f"expected one SpotGuardFallbackEvent, found {[e.name for e in events]}"
        return events[0]

    def terminations(self) -> list[Termination]:
        return list(self.world.aws.terminations)

    def terminated(self) -> list[tuple[str, str, str, bool | None]]:
        """(instance, group, who chose it, whether its Node was drained) of every termination so far."""
        return [(t.instance, t.group, t.chosen_by, t.cordoned) for t in self.world.aws.terminations]

    def ready(self, node: str) -> bool:
        return self.world.kube.node_views()[node].ready

    def spot_raises_after(self, call: int, above: int) -> list[tuple[str, int]]:
        """SetDesiredCapacity calls on the spot group since call number ``call`` that asked for more than ``above``."""
        return [(g, d) for g, d in self.world.aws.set_calls[call:] if g == "spot-a" and d > above]

    def fallback_to_on_demand(self, node: str) -> str:
        """Spot stays short: ``node``'s rebalance notice ends in an on-demand replacement (OnDemandReady, with its
        SGFE). Spot is healthy again afterwards. Returns the on-demand instance."""
        self.world.aws.short.add("spot-a")
        self.world.notice(node, "rebalance")
        self.until(f"{node} has an on-demand replacement", lambda: self.phase(node) == Phase.ON_DEMAND_READY)
        self.world.aws.short.discard("spot-a")
        record = self.record(node)
        assert record.replacement_capacity == "on-demand" and record.sgfe
        return record.replacement_instance


@pytest.fixture(autouse=True)
def _model(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    install(monkeypatch)
    disarm()  # no crashes here: no failpoint hook of another test's leader either
    yield
    disarm()


def _with(**changes: Any) -> Settings:
    return dataclasses.replace(SETTINGS, **changes)


# -- 1. Spot Guard's own retirement is not someone else's lowering ---------------------------------------------


def test_a_retirement_while_another_batch_waits_is_not_an_outside_lowering() -> None:
    """Batches A and B of one spot group are both in flight (desired 4 -> 5 -> 6). A's replacement arrives and
    A's old node is retired: terminated exactly, with decrement (desired 6 -> 5), while B's instance is still
    launching. Desired is now below B's recorded target, but by Spot Guard's own hand: B keeps waiting, its
    launching instance becomes its replacement, and no on-demand capacity is asked for."""
    s = Scenario()
    a, b = s.nodes[0], s.nodes[1]
    s.world.notice(a, "rebalance")
    s.until("batch A's scale-up", lambda: s.phase(a) == Phase.SPOT_SCALED_UP, aws=False)
    s.world.aws.tick()  # A's instance launches
    s.world.notice(b, "rebalance")
    s.until("batch B's scale-up", lambda: s.phase(b) == Phase.SPOT_SCALED_UP, aws=False)
    assert s.desired("spot-a") == 6
    s.world.aws.tick()  # A's instance InService (its Node Ready); B's instance launches
    [launching] = s.instances("spot-a", "Pending")

    s.until(f"{a} retired", lambda: s.retired(a), aws=False)
    s.rounds(6)  # B's capacity check polls several times with desired 5 below its target 6
    assert s.phase(b) == Phase.SPOT_SCALED_UP, (
        f"batch B still waits for its launching instance, not {s.phase(b)} ({s.record(b).fallback_reason})"
    )
    assert s.instances("spot-a", "Pending") == [launching], f"B's launching instance {launching} is still there"
    assert s.desired("spot-a") == 5, "A's retirement lowered desired capacity by exactly its own instance"

    s.until("B's replacement ready", lambda: bool(s.record(b).replacement_instance))
    record = s.record(b)
    assert (record.replacement_capacity, record.replacement_instance) == ("spot", launching), (
        f"B's launching instance {launching} is its replacement: {record}"
    )
    s.settle()
    assert s.phase(b) == "(none)", f"{b} was retired (its Node is gone)"
    assert launching in s.live("spot-a")
    assert s.instances("od-a", "InService") == [] and not [c for c in s.world.aws.set_calls if c[0] == "od-a"], (
        f"no on-demand capacity asked for: {s.world.aws.set_calls}"
    )
    assert invariants.settled(s.world, s.process) == []


# -- 2. A withdrawal terminates exactly its instance, never lets AWS pick -------------------------------------


def test_a_withdrawn_scale_up_terminates_exactly_its_in_service_instance() -> None:
    """A spot scale-up's instance is InService, but its Node never becomes Ready before the capacity check's
    deadline. The withdrawal gives back exactly that instance (TerminateInstanceInAutoScalingGroup with
    decrement): desired is back at 4, no old serving node is touched, none is left to AWS's termination policy,
    and the on-demand replacement follows."""
    s = Scenario()
    node = s.nodes[0]
    s.world.slow_kubelets = True
    s.world.notice(node, "rebalance")
    s.until("the spot scale-up", lambda: s.phase(node) == Phase.SPOT_SCALED_UP, aws=False)
    s.world.aws.tick()
    s.world.aws.tick()
    [new] = sorted(s.live("spot-a") - s.world.original)
    assert s.state(new) == "InService" and not s.ready(s.node_of(new)), "InService, its Node not Ready"

    s.until("on-demand asked for", lambda: s.phase(node) in Phase.ON_DEMAND_CLAIM, aws=False)
    assert s.terminated() == [(new, "spot-a", "spot-guard", True)], (
        f"the withdrawal terminates exactly the new InService instance {new} (drained, with decrement): "
        f"{s.terminations()}"
    )
    assert s.desired("spot-a") == 4
    assert set(s.world.original) <= s.live("spot-a"), "every old serving node is still there"

    s.world.slow_kubelets = False
    s.world.kubelets_catch_up()
    s.until("the on-demand replacement ready", lambda: s.phase(node) == Phase.ON_DEMAND_READY)
    s.settle()
    assert s.retired(node)
    assert invariants.settled(s.world, s.process) == []


def test_a_withdrawn_scale_up_terminates_exactly_its_instance_that_launched_after_the_deadline() -> None:
    """A spot scale-up's instance does not even launch before the capacity check's deadline (nothing arrived:
    the fallback gives back nothing it knows of), then launches and is InService, its Node not Ready, when the
    withdrawal runs. The withdrawal terminates exactly that instance; lowering desired capacity instead would
    let AWS's termination policy pick an old serving node."""
    s = Scenario()
    node = s.nodes[0]
    s.world.slow_kubelets = True
    s.world.notice(node, "rebalance")
    s.until("the spot scale-up", lambda: s.phase(node) == Phase.SPOT_SCALED_UP, aws=False)
    s.until("the fallback at the deadline", lambda: s.phase(node) == Phase.SPOT_WITHDRAWING, aws=False)
    assert s.record(node).given_back == ()
    s.world.aws.tick()
    s.world.aws.tick()
    [new] = sorted(s.live("spot-a") - s.world.original)
    assert s.state(new) == "InService" and not s.ready(s.node_of(new)), "InService, its Node not Ready"

    s.until("on-demand asked for", lambda: s.phase(node) in Phase.ON_DEMAND_CLAIM, aws=False)
    assert s.terminated() == [(new, "spot-a", "spot-guard", True)], (
        f"the withdrawal terminates exactly the late instance {new} (drained, with decrement): {s.terminations()}"
    )
    assert s.desired("spot-a") == 4
    assert set(s.world.original) <= s.live("spot-a"), "every old serving node is still there"
    assert invariants.always(s.world) == []


def test_a_withdrawn_return_to_spot_terminates_exactly_its_in_service_instance() -> None:
    """The lifecycle returns to spot for an SGFE; the new spot instance is InService but its Node is not Ready
    by the return's deadline. The lifecycle gives the return back by terminating exactly that instance (with
    decrement): desired is back where it was, no serving node is touched, and the on-demand node stays."""
    s = Scenario()
    on_demand = s.fallback_to_on_demand(s.nodes[0])
    s.until("the old node retired", lambda: s.retired(s.nodes[0]))
    s.until("the old instance gone", lambda: s.instances("spot-a", "Terminating") == [])
    before = s.desired("spot-a")
    serving = s.live("spot-a")
    s.world.slow_kubelets = True
    s.until("the return to spot", lambda: LifecycleProgress.of(s.event().annotations).return_in_flight, aws=False)
    assert s.desired("spot-a") == before + 1
    s.world.aws.tick()
    s.world.aws.tick()
    [new] = sorted(s.live("spot-a") - serving)
    assert s.state(new) == "InService" and not s.ready(s.node_of(new)), "InService, its Node not Ready"
    count = len(s.terminations())

    s.until("the return given back", lambda: LifecycleProgress.of(s.event().annotations).return_attempts > 0, aws=False)
    assert s.terminated()[count:] == [(new, "spot-a", "spot-guard", True)], (
        f"the give-back terminates exactly the return's InService instance {new} (drained, with decrement): "
        f"{s.terminations()[count:]}"
    )
    assert s.desired("spot-a") == before
    assert serving <= s.live("spot-a"), "every serving spot instance is still there"
    assert on_demand in s.live("od-a")
    assert invariants.always(s.world) == []


# -- 3. No lost update between the two controllers -------------------------------------------------------------


def test_a_return_to_spot_and_a_replacement_scale_up_both_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lifecycle has read the spot group (desired 3) and decided to return to spot for its SGFE; before its
    change is made, a replacement's scale-up of the same group lands (3 -> 4). The return is computed from its own
    fresh read, so desired ends at 5: what it was plus both increases; both instances arrive and everything ends
    capacity neutral."""
    s = Scenario()
    s.fallback_to_on_demand(s.nodes[0])
    s.until("the old node retired", lambda: s.retired(s.nodes[0]))
    s.until("the old instance gone", lambda: s.instances("spot-a", "Terminating") == [])
    before = s.desired("spot-a")
    assert before == 3

    other = s.nodes[1]
    lifecycle = s.process.lifecycle
    request_return = lifecycle._request_return
    landed: list[int] = []

    def with_scale_up_in_between(*args: Any, **kwargs: Any) -> float:
        """The replacement's scale-up (another thread) lands after the pass read the group, before its change."""
        s.world.notice(other, "rebalance")
        for _ in range(2):
            s.process.replacement.reconcile()  # queue, then start the scale-up
            s.world.clock.advance(SETTINGS.batch_window * 2)
        s.run_jobs()
        landed.append(s.desired("spot-a"))
        return request_return(*args, **kwargs)

    monkeypatch.setattr(lifecycle, "_request_return", with_scale_up_in_between)
    s.until("the return to spot", lambda: bool(landed), aws=False)
    monkeypatch.setattr(lifecycle, "_request_return", request_return)
    assert landed == [before + 1], "the replacement's scale-up landed in between"
    assert s.desired("spot-a") == before + 2, (
        f"desired capacity {s.desired('spot-a')}: {before} + the replacement's 1 + the return's 1 = {before + 2}"
    )
    progress = LifecycleProgress.of(s.event().annotations)
    assert (progress.return_before, progress.return_target) == (before + 1, before + 2)
    assert (s.record(other).spot_before, s.record(other).spot_target) == (before, before + 1)

    s.until(f"{other}'s replacement ready", lambda: bool(s.record(other).replacement_instance))
    replacement = s.record(other).replacement_instance
    s.settle()
    returned = LifecycleProgress.of(s.event().annotations).returned_instance
    assert returned and replacement and returned != replacement, "each increase brought its own instance"
    assert s.event().status.phase == SgfePhase.COMPLETED
    assert invariants.settled(s.world, s.process) == []


# -- 4. A given-back on-demand replacement ends its SGFE -------------------------------------------------------


def test_a_released_on_demand_replacement_ends_its_sgfe() -> None:
    """keep-until-interruption: a rebalance recommendation got an on-demand replacement (an SGFE), and no
    interruption came within the grace period, so the replacement is given back. Its SGFE ends Completed, saying
    why, and the lifecycle never adds a spot instance for it later."""
    s = Scenario(_with(retire_policy="keep-until-interruption", keep_grace_period=5.0, minimum_wait_duration=20.0))
    node = s.nodes[0]
    on_demand = s.fallback_to_on_demand(node)
    desired = s.desired("spot-a")
    calls = len(s.world.aws.set_calls)
    s.until("the replacement released", lambda: s.phase(node) == Phase.RELEASED)

    event = s.event()
    assert (event.status.phase, event.status.message) == (
        SgfePhase.COMPLETED,
        f"On-demand replacement {on_demand} of node {node} given back (no interruption within 5s); nothing to "
        "return to spot for it",
    ), f"the SGFE of the given-back replacement ends, saying why: {event.status}"
    assert LifecycleProgress.of(event.annotations).given_back == "no interruption within 5s"
    assert [t.instance for t in s.terminations()] == [on_demand]

    s.settle()  # past the SGFE's minimum wait and the stability window
    assert s.spot_raises_after(calls, desired) == [], "no spot instance is returned for a given-back replacement"
    assert s.desired("spot-a") == desired == 4
    assert s.event().status.phase == SgfePhase.COMPLETED
    assert invariants.settled(s.world, s.process) == []


def test_an_abandoned_drain_ends_the_sgfe_of_its_on_demand_replacement() -> None:
    """The old node of an on-demand replacement cannot be drained (a PodDisruptionBudget never allows it): after
    the last attempt it is uncordoned and the on-demand replacement given back. Its SGFE ends Completed with the
    drain's reason, and the lifecycle never adds a spot instance for it later."""
    s = Scenario(_with(minimum_wait_duration=60.0))
    node = s.nodes[0]
    s.world.drains.blocked.add(node)
    on_demand = s.fallback_to_on_demand(node)
    desired = s.desired("spot-a")
    calls = len(s.world.aws.set_calls)
    s.until("the replacement released", lambda: s.phase(node) == Phase.RELEASED)

    event = s.event()
    why = f"drain did not complete in 2 attempts; node uncordoned and replacement {on_demand} given back instead"
    assert (event.status.phase, event.status.message) == (
        SgfePhase.COMPLETED,
        f"On-demand replacement {on_demand} of node {node} given back ({why}); nothing to return to spot for it",
    ), f"the SGFE of the given-back replacement ends, saying why: {event.status}"
    assert [t.instance for t in s.terminations()] == [on_demand]
    assert not s.cordoned(node)

    s.settle()
    assert s.spot_raises_after(calls, desired) == [], "no spot instance is returned for a given-back replacement"
    assert s.event().status.phase == SgfePhase.COMPLETED
    assert invariants.settled(s.world, s.process) == []


# -- 5. Released and Failed are not dead ends ------------------------------------------------------------------


def test_a_new_notice_after_a_released_replacement_starts_a_new_one() -> None:
    """keep-until-interruption: a rebalance recommendation's spot replacement was given back (Released). Later
    the node gets an interruption notice: a new replacement starts (the Released outcome kept in ``previous``),
    the node is retired, and its new spot replacement serves."""
    s = Scenario(_with(retire_policy="keep-until-interruption", keep_grace_period=5.0))
    node = s.nodes[0]
    s.world.notice(node, "rebalance")
    s.until("the spare given back", lambda: s.phase(node) == Phase.RELEASED)
    released = s.record(node)
    s.until("the spare gone", lambda: s.instances("spot-a", "Terminating") == [])

    s.world.notice(node, "interruption")
    s.rounds(4, 1.0, aws=True)
    record = s.record(node)
    assert record.phase != Phase.RELEASED, (
        f"the interruption notice after Released starts a new replacement, not {record.phase} "
        f"(previous {record.previous!r})"
    )
    assert record.previous == released.outcome()
    assert record.previous.startswith("Released at")

    s.until("the new replacement ready", lambda: bool(s.record(node).replacement_instance))
    replacement = s.record(node).replacement_instance
    s.settle()
    assert s.terminated() == [
        (released.replacement_instance, "spot-a", "spot-guard", True),
        (released.instance_id, "spot-a", "spot-guard", True),
    ], "the spare was given back, then the interrupted node retired (each exactly, drained)"
    assert s.retired(node) and replacement in s.live("spot-a")
    assert invariants.settled(s.world, s.process) == []


def test_a_new_notice_after_a_failed_replacement_starts_a_new_one() -> None:
    """Neither spot nor on-demand had capacity for a rebalance recommendation (Failed, PreferNoSchedule). Capacity
    comes back and the node gets an interruption notice: a new replacement starts (the Failed outcome kept in
    ``previous``), the node is retired, and its new spot replacement serves."""
    s = Scenario()
    node = s.nodes[0]
    s.world.aws.short.update({"spot-a", "od-a"})
    s.world.notice(node, "rebalance")
    s.until("the replacement failed", lambda: s.phase(node) == Phase.FAILED)
    failed = s.record(node)
    s.world.aws.short.clear()

    s.world.notice(node, "interruption")
    s.rounds(4, 1.0, aws=True)
    record = s.record(node)
    assert record.phase != Phase.FAILED, (
        f"the interruption notice after Failed starts a new replacement, not {record.phase} "
        f"(previous {record.previous!r})"
    )
    assert record.previous == failed.outcome()
    assert record.previous.startswith("Failed at")

    s.until("the new replacement ready", lambda: bool(s.record(node).replacement_instance))
    replacement = s.record(node).replacement_instance
    s.settle()
    assert s.terminated() == [(failed.instance_id, "spot-a", "spot-guard", True)], "the interrupted node retired"
    assert s.retired(node) and replacement in s.live("spot-a")
    assert s.instances("od-a", "InService") == []
    assert invariants.settled(s.world, s.process) == []


def test_a_failed_replacement_uncordons_its_node_when_the_interruption_clears() -> None:
    """An interruption notice: Spot Guard cordons and drains the node at once, but neither spot nor on-demand has
    capacity (Failed, PreferNoSchedule). Then the interruption clears: the node Spot Guard cordoned is made
    schedulable again, and nothing is left cordoned."""
    s = Scenario()
    node = s.nodes[0]
    s.world.aws.short.update({"spot-a", "od-a"})
    s.world.notice(node, "interruption")
    s.until("the replacement failed", lambda: s.phase(node) == Phase.FAILED)
    assert s.cordoned(node) and s.record(node).cordoned

    s.world.clear_interruption(node)
    s.rounds(3)
    assert not s.cordoned(node), "the node Spot Guard cordoned for the interruption is schedulable again"
    assert not s.record(node).cordoned

    s.settle()
    assert s.terminations() == [], "nothing was retired: the node stays"
    assert invariants.settled(s.world, s.process) == []


# -- 6. A batch member gone before its own record is written keeps its share claimed until it is given back -------


def _hold_records(s: Scenario, limit: int = 20) -> None:
    """Passes of both controllers and their jobs, except the records lane's: until a spot scale-up's call is made
    and the job writing its members' own records waits (as it does while other recommendations wait for a call)."""
    workers = s.process.workers
    for _ in range(limit):
        for controller in (s.process.replacement, s.process.lifecycle):
            controller.reconcile()
            while others := [i for i, (lane, _, _) in enumerate(workers.pending) if lane != "records"]:
                workers.run(others[0])
        if any(lane == "records" for lane, _, _ in workers.pending):
            return
        s.world.clock.advance(0.5)
    raise AssertionError(f"no batch's member records ever waited to be written: {[k for _, k, _ in workers.pending]}")


def _instance_of(s: Scenario, node: str) -> str:
    return str(s.world.kube.nodes[node]["spec"]["providerID"]).rsplit("/", 1)[-1]


def _batch_of_three(s: Scenario) -> tuple[str, str, str]:
    """Three nodes' rebalance recommendations batched into one spot scale-up (desired 4 -> 7): its intent, on the
    first node, lists the other two, whose own records wait to be written. Returns the three nodes."""
    first, second, third = s.nodes[:3]
    for node in (first, second, third):
        s.world.notice(node, "rebalance")
    _hold_records(s)
    assert s.desired("spot-a") == 7, "one scale-up for the batch of three"
    assert [m.node for m in s.record(first).members] == [second, third], "the intent lists the batch's members"
    assert s.phase(second) == s.phase(third) == "(none)", "the members' own records are not written yet"
    return first, second, third


def _assert_replaced_and_neutral(s: Scenario, kept: tuple[str, str], spared: str) -> None:
    """``kept`` get their spot replacements and are retired; the gone member's share (one instance) is given back;
    no other instance is terminated (``spared``: the gone member's old instance is not Spot Guard's to end). The
    group's desired capacity matches its live instances, capacity neutral, and nobody's change is taken for
    someone else's."""
    old = {_instance_of(s, node) for node in kept}
    s.until("the batch's replacements ready", lambda: all(s.record(n).replacement_instance for n in kept))
    replacements = {s.record(n).replacement_instance for n in kept}
    s.settle()

    def terminations() -> list[str]:
        return [f"{t.instance[-3:]} by {t.chosen_by}{'' if t.cordoned else ' undrained'}" for t in s.terminations()]

    assert s.world.reports.outside_changes == [], (
        "Spot Guard took its own scale-up for someone else's change (its claims no longer justified desired "
        f"capacity): {s.world.reports.details}"
    )
    assert all(s.retired(node) for node in kept), f"{list(kept)} retired: {[s.phase(n) for n in kept]}"
    assert replacements <= s.live("spot-a"), f"their spot replacements {sorted(replacements)} serve"
    assert s.desired("spot-a") == len(s.live("spot-a")) == 4, (
        f"spot-a ends with desired {s.desired('spot-a')} and {len(s.live('spot-a'))} live instances; 4 expected "
        f"(capacity neutral: the gone member's share, one instance, given back); terminations {terminations()}; "
        f"{s.world._describe_group('spot-a')}"
    )
    for t in s.terminations():
        assert (t.group, t.chosen_by, t.cordoned) == ("spot-a", "spot-guard", True), (
            f"{t.instance} was terminated by {t.chosen_by} (drained: {t.cordoned}): {terminations()}"
        )
        assert t.instance in old or t.instance not in s.world.original, (
            f"old instance {t.instance} was terminated, not one Spot Guard launched or retired: {terminations()}"
        )
    assert sorted(t.instance for t in s.terminations() if t.instance in old) == sorted(old), (
        f"exactly the old instances of {list(kept)} retired, each once: {terminations()}"
    )
    launched = [t.instance for t in s.terminations() if t.instance not in s.world.original]
    assert len(launched) <= 1, f"at most one new instance (the gone member's share) given back: {terminations()}"
    assert spared not in {t.instance for t in s.terminations()}, f"{spared} left alone: {terminations()}"
    assert not [c for c in s.world.aws.set_calls if c[0] == "od-a"], "no on-demand capacity asked for"
    assert invariants.settled(s.world, s.process) == []
    assert invariants.always(s.world) == []


def test_a_batch_member_whose_node_is_deleted_before_its_record_gives_its_share_back() -> None:
    """Three rebalance recommendations are batched into one spot scale-up (desired 4 -> 7). Before the members'
    own records are written, one member's Node is deleted through the API (no finalizer of Spot Guard's on it yet;
    its instance keeps running, no longer a node of the cluster). The spot instance launched for its share is given
    back, exactly (drained, with decrement), once the batch's claim is settled; the Node-less instance is not Spot
    Guard's to terminate. Nothing is reported as someone else's change, the other two nodes get their spot
    replacements and are retired, and desired capacity equals the live instances, capacity neutral."""
    s = Scenario()
    first, gone, third = _batch_of_three(s)
    orphaned = _instance_of(s, gone)
    s.world.kube.delete_node(gone)
    assert gone not in s.world.kube.nodes

    s.run_jobs()  # the members' records: the gone member's cannot be written
    _assert_replaced_and_neutral(s, (first, third), spared=orphaned)
    assert orphaned in s.live("spot-a")


def test_a_batch_member_reclaimed_by_aws_before_its_record_gives_its_share_back() -> None:
    """Three rebalance recommendations are batched into one spot scale-up (desired 4 -> 7). Before the members'
    own records are written, AWS reclaims one member's spot instance (not Spot Guard, not the group's termination
    policy): it leaves, its Node is deleted, and the group launches a replacement for it along with the batch's
    three. The gone member's share of the increase stays claimed and is given back once the batch's claim is
    settled, and only its share: the group's replacement of the reclaimed instance stays. Nothing is reported as
    someone else's change, the other two nodes get their spot replacements and are retired, and the group ends at
    its 4 instances, every termination Spot Guard's own, exact and drained."""
    s = Scenario()
    first, gone, third = _batch_of_three(s)
    reclaimed = _instance_of(s, gone)
    s.world.aws.instances[reclaimed].state = "Terminating"  # EC2 takes the spot instance back
    s.world.aws.tick()  # it leaves the group, its Node is deleted; the group launches toward desired 7
    assert gone not in s.world.kube.nodes, f"{gone} went away with its instance, before its record was written"
    assert len(s.live("spot-a")) == 7, "3 old instances, the batch's 3 launches and the group's own replacement"

    s.run_jobs()  # the members' records: the gone member's cannot be written
    _assert_replaced_and_neutral(s, (first, third), spared=reclaimed)


# -- instances EC2 takes away on its own (issue 17) ------------------------------------------------------------------


def test_an_interrupted_instance_ec2_takes_before_its_retirement_is_settled_by_removing_the_one_in_its_place() -> None:
    """An interruption notice; the spot replacement launches, its Node slow to become Ready; EC2 takes the
    interrupted instance back first (no decrement) and the group launches one in its place. When the replacement is
    Ready the retirement finds the old instance gone and terminates exactly the instance launched in its place
    (drained, with decrement), recorded first: the group ends where it was."""
    s = Scenario()
    old = s.nodes[0]
    instance = _instance_of(s, old)
    s.world.slow_kubelets = True
    s.world.notice(old, "interruption")
    s.until("the replacement launched", lambda: len(s.live("spot-a")) == 5)
    s.world.aws.reclaim(instance)
    s.world.aws.tick()  # it leaves; the group launches one in its place (desired 5 unchanged)
    assert len(s.live("spot-a")) == 5 and s.desired("spot-a") == 5
    s.world.slow_kubelets = False
    s.world.kubelets_catch_up()
    s.until("the interrupted node retired", lambda: s.retired(old))
    s.settle()

    assert s.desired("spot-a") == 4 and len(s.live("spot-a")) == 4, "back where it was"
    ours = [t for t in s.terminated() if t[2] == "spot-guard"]
    assert len(ours) == 1 and ours[0][3] is not False, f"one exact, drained termination: {s.terminated()}"
    assert not [t for t in s.terminated() if t[2] == "aws"], "nothing chosen by the termination policy"
    assert invariants.settled(s.world, s.process) == []


def test_a_spot_claim_given_back_as_spot_recovers_leaves_the_launch_in_place_of_an_instance_ec2_took() -> None:
    """Spot is short; EC2 takes an instance of the group (no decrement: the group owes a launch it cannot make); a
    rebalance recommendation's scale-up fails and is given back just as spot recovers and the group launches both
    (its own in place of the one taken, and the claim's). The give-back removes the claim's one launch and no more:
    the group's launch in place of the taken instance stays, and the pair ends capacity neutral."""
    s = Scenario()
    s.world.aws.short.add("spot-a")
    s.world.aws.reclaim(sorted(s.live("spot-a"))[0])
    s.world.aws.tick()  # gone; the group cannot launch in its place (short)
    s.world.notice(s.nodes[1], "rebalance")
    s.rounds(3, seconds=1.0, aws=True)  # scaled up, launches fail
    s.settle()  # spot recovers: both launches happen while the scale-up falls back and is given back

    assert invariants.settled(s.world, s.process) == []
    ours = [t for t in s.terminated() if t[2] == "spot-guard" and t[1] == "spot-a"]
    assert len(ours) == 2, f"the claim's one launch and the retired node, nothing more: {s.terminated()}"
