"""Trust boundaries: a replacement record written on a Node by someone else than Spot Guard (an admin bypassing the
admission policy) leads to no AWS call and no drain, only a Warning; and the healthy nodes beside it are served.

Each test forges a record directly on a Node (as ``kubectl annotate`` would), then gives a healthy node beside it a
real rebalance notice: that node is replaced and retired as usual, while the forged record's node gets a
SpotGuardRefused Warning, the refused-effects metric counts it, and AWS sees no call for it (the model's call log):
no SetDesiredCapacity of another group, no termination, no drain or cordon of any other node.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from controller.model.record import ANNOTATION, Phase, ReplacementRecord
from nodewatch import annotations as contract
from tests.model.harness import SETTINGS, Process, World, disarm, install
from tests.model.test_regression_scenarios import Scenario

PAIRS = {"spot-a": ("od-a", 4), "spot-b": ("od-b", 2)}


class Forge(Scenario):
    """Two managed pairs: spot-a (four nodes) and spot-b (two nodes)."""

    def __init__(self) -> None:
        self.world = World(PAIRS, SETTINGS)
        self.process = Process(self.world)
        self.nodes = sorted(self.world.kube.nodes)
        self.a = sorted(self.node_of(i) for i in self.live("spot-a"))
        self.b = sorted(self.node_of(i) for i in self.live("spot-b"))
        self.healthy = self.a[0]

    def instance(self, node: str) -> str:
        return str(self.world.kube.nodes[node]["spec"]["providerID"].rsplit("/", 1)[-1])

    def forge(self, node: str, **fields: object) -> ReplacementRecord:
        """Write a record on ``node`` by hand, as an admin would (no controller involved)."""
        now = self.world.clock.now()
        values: dict[str, object] = {
            "trigger": "rebalance",
            "instance_id": self.instance(node),
            "spot_asg": "spot-a",
            "on_demand_asg": "od-a",
            "updated_at": contract.format_time(now),
            "notice": "rebalance:" + contract.format_time(now),
            "requested_at": contract.format_time(now),
            "deadline_at": contract.format_time(now + dt.timedelta(seconds=20)),
            "batch": "forged",
        }
        values.update(fields)
        record = ReplacementRecord(**values)  # type: ignore[arg-type]
        self.world.kube.annotate(node, {ANNOTATION: record.to_json()})
        return record

    def poison(self, node: str, text: str) -> None:
        self.world.kube.annotate(node, {ANNOTATION: text})

    # -- the outcome ---------------------------------------------------------------------------------------------
    def serve_healthy(self) -> str:
        """A real rebalance notice on the healthy node: it is replaced by a new spot instance and retired."""
        original = set(self.world.aws.instances)
        self.world.notice(self.healthy, "rebalance")
        self.until(f"{self.healthy} retired", lambda: self.retired(self.healthy))
        self.rounds(10, 1.0, aws=True)
        [new] = [i for i in self.live("spot-a") if i not in original]
        return new

    def warned(self, node: str) -> list[str]:
        return [m for n, reason, m in self.world.reports.events if n == node and reason == "SpotGuardRefused"]

    def assert_untouched(self, forged: str, *, spared: set[str]) -> None:
        """Only the healthy node's replacement touched AWS and Kubernetes; ``forged`` got a Warning."""
        world = self.world
        healthy_instance = next(t.instance for t in world.aws.terminations if t.group == "spot-a")
        assert [(t.instance, t.group) for t in world.aws.terminations] == [(healthy_instance, "spot-a")], (
            f"only the healthy node's instance is terminated: {self.terminated()}"
        )
        assert all(group == "spot-a" for group, _ in world.aws.set_calls), (
            f"no capacity call on another group: {world.aws.set_calls}"
        )
        assert max(d for _, d in world.aws.set_calls) == 5, f"spot-a raised by one only: {world.aws.set_calls}"
        assert self.desired("spot-a") == 4 and self.desired("spot-b") == 2
        assert self.desired("od-a") == 0 and self.desired("od-b") == 0
        assert world.drains.drained == [self.healthy], f"only the healthy node was drained: {world.drains.drained}"
        for node in spared | {forged}:
            assert node in world.kube.nodes, f"{node} is still there"
            assert not self.cordoned(node), f"{node} is not cordoned"
            taints = world.kube.nodes[node]["spec"].get("taints") or []
            assert not [t for t in taints if t["key"].startswith("spotguard.io/")], f"{node} is not tainted: {taints}"
        assert self.warned(forged), f"a SpotGuardRefused Warning names {forged}: {world.reports.events}"
        assert world.reports.refusals, "the refusal is counted"


@pytest.fixture(autouse=True)
def _model(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    install(monkeypatch)
    disarm()
    yield
    disarm()


# -- (a) a SpotRequested intent naming another managed group ---------------------------------------------------


@pytest.mark.parametrize("before", [None, 2], ids=["no-before", "before"])
def test_spot_requested_for_another_group_at_its_max_size_is_refused(before: int | None) -> None:
    s = Forge()
    forged = s.a[1]
    s.forge(
        forged,
        phase=Phase.SPOT_REQUESTED,
        spot_asg="spot-b",
        on_demand_asg="od-b",
        spot_before=before,
        spot_target=50,
        spot_change="forged:0",
    )
    s.serve_healthy()
    s.assert_untouched(forged, spared={*s.a[1:], *s.b})


def test_spot_requested_with_a_target_far_from_its_members_is_refused() -> None:
    """Its own group and pair, but a target 46 above its before for one node."""
    s = Forge()
    forged = s.a[1]
    s.forge(forged, phase=Phase.SPOT_REQUESTED, spot_before=4, spot_target=50, spot_change="forged:0")
    s.serve_healthy()
    s.assert_untouched(forged, spared={*s.a[1:], *s.b})


def test_on_demand_requested_for_another_pair_is_refused() -> None:
    s = Forge()
    forged = s.a[1]
    s.forge(
        forged,
        phase=Phase.ON_DEMAND_REQUESTED,
        on_demand_asg="od-b",
        on_demand_before=0,
        on_demand_target=30,
        on_demand_change="forged:0",
        on_demand_requested_at=contract.format_time(s.world.clock.now()),
        on_demand_deadline_at=contract.format_time(s.world.clock.now() + dt.timedelta(seconds=20)),
    )
    s.serve_healthy()
    s.assert_untouched(forged, spared={*s.a[1:], *s.b})


# -- (b) Retiring naming another node's instance ---------------------------------------------------------------


def test_retiring_naming_another_nodes_instance_is_refused() -> None:
    s = Forge()
    forged, victim = s.a[1], s.a[2]
    s.forge(
        forged,
        phase=Phase.RETIRING,
        instance_id=s.instance(victim),
        replacement_instance=s.instance(s.a[3]),
        replacement_node=s.a[3],
        replacement_capacity="spot",
    )
    s.serve_healthy()
    s.assert_untouched(forged, spared={*s.a[1:], *s.b})


# -- (c) a replacement Spot Guard never launched ---------------------------------------------------------------


# Not refused yet: a "replacement" that is another original instance of the same group (the Node creation time is
# no proof of which instance is newer; the sandbox re-registers Nodes). See the issue note.


@pytest.mark.parametrize("phase", [Phase.ON_DEMAND_READY, Phase.RELEASING])
def test_an_on_demand_replacement_in_another_group_is_refused(phase: str) -> None:
    s = Forge()
    forged, other = s.a[1], s.b[0]
    s.forge(
        forged,
        phase=phase,
        replacement_instance=s.instance(other),
        replacement_node=other,
        replacement_capacity="on-demand",
        replaced_at=contract.format_time(s.world.clock.now()),
    )
    s.serve_healthy()
    s.assert_untouched(forged, spared={*s.a[1:], *s.b})


# -- (d) a managed group that is not the node's own ------------------------------------------------------------


@pytest.mark.parametrize("phase", [Phase.SPOT_WITHDRAWING, Phase.SPOT_SCALED_UP])
def test_a_claim_on_a_managed_group_not_the_nodes_own_is_refused(phase: str) -> None:
    """A claim on spot-b (whose instances it does not know) would give back spot-b's instances as its arrivals."""
    s = Forge()
    forged = s.a[1]
    s.forge(
        forged,
        phase=phase,
        spot_asg="spot-b",
        on_demand_asg="od-b",
        spot_before=2,
        spot_target=3,
        spot_change="forged:0",
        fallback_reason="forged" if phase == Phase.SPOT_WITHDRAWING else "",
    )
    s.serve_healthy()
    s.assert_untouched(forged, spared={*s.a[1:], *s.b})


def test_an_interruption_drain_needs_the_record_to_be_the_nodes_own() -> None:
    """A record naming another instance on an interrupted node: no drain on its word (the healthy one is served)."""
    s = Forge()
    forged = s.a[1]
    s.forge(forged, phase=Phase.SPOT_READY, instance_id=s.instance(s.a[2]), replacement_instance="i-0000000000000abcd")
    s.world.notice(forged, "interruption")
    s.serve_healthy()
    s.assert_untouched(forged, spared={*s.a[1:], *s.b})


# -- poisoned objects beside healthy ones ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"phase":"Retiring","trigger":"rebalance"}',
        '{"phase":"SpotRequested","trigger":"rebalance","instanceId":1,"spotAsg":"spot-b","onDemandAsg":"od-b"}',
        '{"phase":"Retiring","trigger":"rebalance","instanceId":"i-1","spotAsg":"spot-a","onDemandAsg":"od-a",'
        '"members":[["x"]]}',
        "[]",
    ],
)
def test_a_malformed_record_beside_healthy_nodes(text: str) -> None:
    s = Forge()
    forged = s.a[1]
    s.poison(forged, text)
    s.serve_healthy()
    s.assert_untouched(forged, spared={*s.a[1:], *s.b})


@pytest.mark.parametrize(
    "obj",
    [
        {"spec": {"spotAsgName": 3}},
        {"spec": "nothing"},
        {"spec": {}, "status": {"phase": "Nonsense"}},
        {
            "spec": {
                "spotAsgName": "spot-b",
                "onDemandAsgName": "od-b",
                "onDemandNodeName": "x",
                "onDemandInstanceId": 7,
            }
        },
    ],
)
def test_a_malformed_fallback_event_beside_a_healthy_replacement(obj: dict[str, object]) -> None:
    """A SpotGuardFallbackEvent nobody can read: the replacement controller serves the healthy node, the lifecycle
    controller neither crashes nor touches AWS for it."""
    s = Forge()
    body = {
        "apiVersion": "spotguard.io/v1alpha1",
        "kind": "SpotGuardFallbackEvent",
        "metadata": {"name": "poisoned", "namespace": SETTINGS.namespace, "resourceVersion": "1"},
        **obj,
    }
    s.world.kube.sgfes["poisoned"] = body
    s.serve_healthy()
    assert [(t.group, t.chosen_by) for t in s.world.aws.terminations] == [("spot-a", "spot-guard")]
    assert all(group == "spot-a" for group, _ in s.world.aws.set_calls), s.world.aws.set_calls
    assert s.desired("spot-a") == 4 and s.desired("spot-b") == 2 and s.desired("od-b") == 0


def test_a_forged_record_of_a_batch_never_joins_the_healthy_claim() -> None:
    """A forged SpotScaledUp on the healthy node's own group, asked for long ago: its claim must not take the
    healthy replacement's new instance as its own arrival."""
    s = Forge()
    forged = s.a[1]
    long_ago = s.world.clock.now() - dt.timedelta(hours=1)
    s.forge(
        forged,
        phase=Phase.SPOT_SCALED_UP,
        spot_before=4,
        spot_target=5,
        spot_change="forged:0",
        spot_known=tuple(s.live("spot-a")),
        requested_at=contract.format_time(long_ago),
        deadline_at=contract.format_time(s.world.clock.now() + dt.timedelta(hours=1)),
        instance_id="i-000000000000000ff",
    )
    new = s.serve_healthy()
    assert s.node_of(new)
    s.assert_untouched(forged, spared={*s.a[1:], *s.b})
