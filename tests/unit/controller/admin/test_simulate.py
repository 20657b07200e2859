"""``spotguard simulate``: the annotations nodewatch would write, read back by the controller's own parser."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from controller.admin.simulate import identity_from_provider_id, interruption_changes, rebalance_changes
from nodewatch import annotations as contract
from tests.unit.controller.admin.conftest import NOW, Run
from tests.unit.controller.admin.fake_kube import FakeKube

NODE = "ip-10-0-0-1.ec2.internal"


@pytest.fixture
def node(kube: FakeKube) -> str:
    kube.put(
        f"/api/v1/nodes/{NODE}",
        {
            "metadata": {
                "labels": {"eks.amazonaws.com/capacityType": "SPOT"},
                "annotations": {contract.REBALANCE_CLEARED: "2025-01-15T08:00:00Z", "other": "kept"},
            },
            "spec": {"providerID": "aws:///us-east-1b/i-0abc"},
        },
    )
    return NODE


@pytest.mark.parametrize(
    ("provider_id", "identity"),
    [
        ("aws:///us-east-1b/i-0abc", ("i-0abc", "us-east-1b")),
        ("aws://us-east-1b/i-0abc", ("i-0abc", "us-east-1b")),
        ("aws:///i-0abc", ("i-0abc", None)),
        ("kwok://node-1", (None, None)),
        ("", (None, None)),
    ],
)
def test_identity_from_provider_id(provider_id: str, identity: tuple[str | None, str | None]) -> None:
    assert identity_from_provider_id(provider_id) == identity


def test_rebalance_changes_parse_as_a_standing_rebalance_notice() -> None:
    changes = rebalance_changes(NOW, "i-0abc", "us-east-1b")
    annotations = {k: v for k, v in changes.items() if v is not None}

    notices = contract.parse(annotations)

    assert notices.rebalance == contract.Rebalance(notice_time=NOW, first_seen=NOW, cleared=None)
    assert notices.instance_id == "i-0abc"
    assert notices.availability_zone == "us-east-1b"
    assert changes[contract.REBALANCE_CLEARED] is None  # an earlier cleared mark is removed


def test_interruption_changes_parse_as_a_standing_interruption_notice() -> None:
    changes = interruption_changes(NOW, "hibernate", 120, "i-0abc", None)
    notices = contract.parse({k: v for k, v in changes.items() if v is not None})

    assert notices.interruption == contract.Interruption(
        action="hibernate", time=NOW + dt.timedelta(minutes=2), first_seen=NOW, cleared=None
    )
    assert notices.availability_zone is None
    with pytest.raises(ValueError, match="interruption action"):
        interruption_changes(NOW, "reboot", 120, None, None)


def test_simulate_rebalance_patches_the_node_like_nodewatch(run: Run, kube: FakeKube, node: str) -> None:
    result = run("simulate", "rebalance", node)

    assert result.exit_code == 0
    stored = kube.get(f"/api/v1/nodes/{node}")
    assert stored is not None
    assert stored["metadata"]["annotations"] == {
        "other": "kept",
        contract.REBALANCE_NOTICE_TIME: "2025-01-15T10:00:00Z",
        contract.REBALANCE_FIRST_SEEN: "2025-01-15T10:00:00Z",
        contract.INSTANCE_ID: "i-0abc",
        contract.AVAILABILITY_ZONE: "us-east-1b",
    }
    assert f"node/{node} annotated as nodewatch would on a rebalance recommendation:" in result.stdout
    assert f"{contract.REBALANCE_CLEARED} removed" in result.stdout
    assert result.stderr == ""


def test_simulate_interruption_as_json(run: Run, kube: FakeKube, node: str) -> None:
    result = run("simulate", "interruption", node, "--action", "stop", "--in", "90s", "-o", "json")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "node": node,
        "notice": "spot interruption notice (stop)",
        "annotations": {
            contract.INTERRUPTION_ACTION: "stop",
            contract.INTERRUPTION_TIME: "2025-01-15T10:01:30Z",
            contract.INTERRUPTION_FIRST_SEEN: "2025-01-15T10:00:00Z",
            contract.INSTANCE_ID: "i-0abc",
            contract.AVAILABILITY_ZONE: "us-east-1b",
        },
        "removed": [],
    }


def test_simulate_warns_about_a_node_without_an_ec2_identity(run: Run, kube: FakeKube) -> None:
    kube.put("/api/v1/nodes/plain", {"metadata": {}, "spec": {}})

    result = run("simulate", "rebalance", "plain")

    assert result.exit_code == 0
    assert "no EC2 spec.providerID" in result.stderr
    assert "not labelled as a spot node" in result.stderr
    stored = kube.get("/api/v1/nodes/plain")
    assert stored is not None
    assert contract.INSTANCE_ID not in stored["metadata"]["annotations"]


def test_simulate_on_a_missing_node_exits_1(run: Run) -> None:
    result = run("simulate", "rebalance", "nope")
    assert result.exit_code == 1
    assert "node nope not found" in result.stderr


def test_simulate_usage_errors_exit_2(run: Run, node: str) -> None:
    assert run("simulate", "rebalance").exit_code == 2
    assert run("simulate", "interruption", node, "--action", "reboot").exit_code == 2
    assert run("simulate", "interruption", node, "--in", "soon").exit_code == 2
