"""Which new instances belong to which claim, and what desired capacity the claims justify (a table)."""

from __future__ import annotations

import pytest

from controller.checks.arrivals import assign
from controller.model.asg import Group, Instance
from controller.model.claim import Claim

OLD = {"i-o1": "InService", "i-o2": "InService", "i-o3": "InService"}


def group(desired: int, states: dict[str, str]) -> Group:
    instances = tuple(Instance(i, s, "us-east-1a", "m5.large") for i, s in states.items())
    return Group("spot", desired, 0, 100, False, instances, {})


def claim(key: str, count: int, known: set[str], at: str, *, withdrawing: bool = False) -> Claim:
    return Claim(key, "spot", count, frozenset(known), at, withdrawing=withdrawing)


A = claim("a", 2, set(OLD), "2026-01-01T00:00:01Z")


@pytest.mark.parametrize(
    ("desired", "states", "claims", "bound", "arrivals", "outstanding", "short", "unexplained"),
    [
        pytest.param(3, OLD, [], (), {}, {}, {}, 0, id="no claim, steady"),
        pytest.param(5, OLD, [A], (), {"a": ()}, {"a": 2}, {}, 0, id="asked, nothing launched yet"),
        pytest.param(
            5, {**OLD, "i-n1": "Pending"}, [A], (), {"a": ("i-n1",)}, {"a": 1}, {}, 0, id="one launching counts"
        ),
        pytest.param(
            5,
            {**OLD, "i-n1": "InService", "i-n2": "Pending:Wait"},
            [A],
            (),
            {"a": ("i-n1", "i-n2")},
            {"a": 0},
            {},
            0,
            id="a launch held by a lifecycle hook is the claim's",
        ),
        pytest.param(
            5,
            {**OLD, "i-n1": "Terminating"},
            [A],
            (),
            {"a": ()},
            {"a": 2},
            {},
            0,
            id="an instance on its way out is nobody's arrival",
        ),
        pytest.param(
            4, OLD, [A], (), {"a": ()}, {"a": 2}, {"a": 1}, -1, id="someone lowered desired: the claim is short"
        ),
        pytest.param(
            4,
            {"i-o1": "InService", "i-o2": "InService", "i-o3": "Terminating"},
            [A],
            (),
            {"a": ()},
            {"a": 2},
            {},
            0,
            id="our own retirement (terminate with decrement) is not a lower desired",
        ),
        pytest.param(6, OLD, [A], (), {"a": ()}, {"a": 2}, {}, 1, id="someone raised desired: unexplained, no short"),
        pytest.param(
            5,
            {**OLD, "i-n1": "InService"},
            [A],
            ("i-n1",),
            {"a": ()},
            {"a": 2},
            {"a": 1},
            -1,
            id="an instance bound to a node already is no arrival",
        ),
        pytest.param(
            3,
            OLD,
            [claim("a", 2, set(OLD), "t1", withdrawing=True)],
            (),
            {"a": ()},
            {"a": 0},
            {},
            0,
            id="a claim given back justifies nothing",
        ),
    ],
)
def test_claims_of_one_group(
    *,
    desired: int,
    states: dict[str, str],
    claims: list[Claim],
    bound: tuple[str, ...],
    arrivals: dict[str, tuple[str, ...]],
    outstanding: dict[str, int],
    short: dict[str, int],
    unexplained: int,
) -> None:
    state = assign(group(desired, states), claims, bound)
    assert {k: tuple(i.instance_id for i in v) for k, v in state.arrivals.items()} == arrivals
    assert dict(state.outstanding) == outstanding
    assert dict(state.short) == short
    assert state.unexplained == unexplained


def test_the_oldest_claim_is_served_first_with_the_earliest_arrivals() -> None:
    older = claim("older", 1, set(OLD), "2026-01-01T00:00:01Z")
    # i-n1 arrived before the younger claim asked (it knows it); i-n2 after.
    younger = claim("younger", 1, {*OLD, "i-n1"}, "2026-01-01T00:00:05Z")
    state = assign(group(5, {**OLD, "i-n2": "InService", "i-n1": "InService"}), [younger, older])
    assert state.arrivals["older"][0].instance_id == "i-n1"
    assert state.arrivals["younger"][0].instance_id == "i-n2"


def test_a_claim_takes_an_instance_with_a_ready_node_before_one_still_booting() -> None:
    """The group launched two new instances (the claim's own, and one in place of an instance EC2 took): the claim
    takes the one whose Node is Ready, whichever id sorts first, so a slow Node does not keep it waiting; the other
    is nobody's."""
    one = claim("a", 1, set(OLD), "2026-01-01T00:00:01Z")
    states = {"i-o1": "InService", "i-o2": "InService", "i-n1": "InService", "i-n2": "InService"}
    assert assign(group(4, states), [one]).arrivals["a"][0].instance_id == "i-n1", "by id when neither is Ready"
    assert assign(group(4, states), [one], ready={"i-n2"}).arrivals["a"][0].instance_id == "i-n2"
    # what younger claims knew still comes first: that instance arrived before they asked
    younger = claim("b", 1, {*OLD, "i-n1"}, "2026-01-01T00:00:05Z")
    state = assign(group(5, states), [one, younger], ready={"i-n2"})
    assert state.arrivals["a"][0].instance_id == "i-n1" and state.arrivals["b"][0].instance_id == "i-n2"


def test_the_newest_claims_lose_their_increase_first() -> None:
    older = claim("older", 2, set(OLD), "t1")
    younger = claim("younger", 2, set(OLD), "t2")
    state = assign(group(5, OLD), [older, younger])  # 3 live + 4 outstanding, desired 5: 2 uncovered
    assert dict(state.short) == {"younger": 2}


def test_ready_needs_in_service_and_a_ready_node() -> None:
    state = assign(group(5, {**OLD, "i-n1": "InService", "i-n2": "Pending"}), [A])
    assert state.ready("a", {"i-n1", "i-n2"}) == ("i-n1",)
    assert state.ready("a", set()) == ()
