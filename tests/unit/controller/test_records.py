"""The replacement record on a Node: its JSON form, and a batch's intent listing the other nodes."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from controller.model.record import Member, Phase, ReplacementRecord
from nodewatch import annotations as contract

NOW = dt.datetime(2026, 11, 22, 2, 0, tzinfo=dt.UTC)


def _intent(members: tuple[Member, ...]) -> ReplacementRecord:
    return ReplacementRecord(
        phase=Phase.SPOT_REQUESTED,
        trigger="rebalance",
        instance_id="i-0000000000000000a",
        spot_asg="spot",
        on_demand_asg="od",
        updated_at=contract.format_time(NOW),
        batch="b1",
        spot_target=503,
        members=members,
    )


def test_an_intent_lists_its_batch_and_reads_back_the_same() -> None:
    members = tuple(Member(f"node-{i}", f"i-{i:017x}", "rebalance", f"00-{i:032x}-{i:016x}-01") for i in range(500))
    record = _intent(members)
    text = record.to_json()

    assert ReplacementRecord.from_json(text) == record
    assert json.loads(text)["members"][1] == ["node-1", "i-00000000000000001", "rebalance", members[1].traceparent]
    assert len(text.encode()) < 256 * 1024 // 2, "half of a Node's annotation budget at most for 500 nodes"


def test_a_record_without_members_writes_none() -> None:
    assert "members" not in json.loads(_intent(()).to_json())


@pytest.mark.parametrize("members", [["node-1"], [["node-1", "i-1", "rebalance"]], [[1, 2, 3, 4]], "node-1"])
def test_malformed_members_are_refused_with_the_shape_expected(members: object) -> None:
    data = json.loads(_intent(()).to_json())
    data["members"] = members
    with pytest.raises(contract.MalformedAnnotationError, match=r"\[node, instance, trigger, traceparent, notice\]"):
        ReplacementRecord.from_json(json.dumps(data))


def test_advancing_a_member_copies_the_batch_and_drops_the_list() -> None:
    intent = _intent((Member("node-2", "i-2", "interruption", ""),))
    member = intent.members[0]
    own = intent.advance(
        Phase.SPOT_SCALED_UP, NOW, trigger=member.trigger, instance_id=member.instance_id, traceparent="", members=()
    )

    assert (own.batch, own.spot_target, own.trigger, own.instance_id) == ("b1", 503, "interruption", "i-2")
    assert own.members == ()
