"""``spotguard leader`` and ``spotguard pause | resume`` on a fake API server."""

from __future__ import annotations

import json
from typing import Any

import yaml

from controller.adapters.pause_switch import PAUSED, PAUSED_AT, PAUSED_BY, PAUSED_REASON, lease_path
from controller.admin.context import Target
from tests.unit.controller.admin.conftest import Run
from tests.unit.controller.admin.fake_kube import FakeKube, api_error

PATH = lease_path("kube-system", "spotguard-controller")


def held(kube: FakeKube, renewed: str = "2025-01-15T09:59:58.000000Z", **annotations: str) -> dict[str, Any]:
    return kube.put(
        PATH,
        {
            "metadata": {"name": "spotguard-controller", "namespace": "kube-system", "annotations": annotations},
            "spec": {
                "holderIdentity": "spotguard-7d9f_ab12",
                "leaseDurationSeconds": 15,
                "acquireTime": "2025-01-15T09:00:00.000000Z",
                "renewTime": renewed,
                "leaseTransitions": 3,
            },
        },
    )


def test_leader_shows_holder_since_renew_transitions_and_not_paused(run: Run, kube: FakeKube) -> None:
    held(kube)

    result = run("leader")

    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "Lease:           kube-system/spotguard-controller",
        "Holder:          spotguard-7d9f_ab12",
        "State:           leading",
        "Since:           2025-01-15T09:00:00Z (60m ago)",
        "Last Renew:      2025-01-15T09:59:58Z (2s ago)",
        "Lease Duration:  15s",
        "Transitions:     3",
        "Paused:          no",
    ]


def test_leader_as_json_and_yaml_includes_the_pause(run: Run, kube: FakeKube) -> None:
    held(kube, **{PAUSED: "true", PAUSED_BY: "alice", PAUSED_AT: "2025-01-15T09:30:00Z", PAUSED_REASON: "INC-1"})

    data = json.loads(run("leader", "-o", "json").stdout)

    assert data == {
        "lease": "kube-system/spotguard-controller",
        "holder": "spotguard-7d9f_ab12",
        "state": "leading",
        "since": "2025-01-15T09:00:00Z",
        "lastRenew": "2025-01-15T09:59:58Z",
        "leaseDurationSeconds": 15,
        "transitions": 3,
        "paused": {"paused": True, "by": "alice", "at": "2025-01-15T09:30:00Z", "reason": "INC-1"},
    }
    assert yaml.safe_load(run("leader", "-o", "yaml").stdout) == data
    assert "Paused:          yes, by alice, at 2025-01-15T09:30:00Z (30m ago): INC-1" in run("leader").stdout


def test_leader_exits_1_when_the_holder_stopped_renewing(run: Run, kube: FakeKube) -> None:
    held(kube, renewed="2025-01-15T09:59:00.000000Z")

    result = run("leader")

    assert result.exit_code == 1
    assert "State:           expired" in result.stdout
    assert "no live leader" in result.stderr


def test_leader_exits_1_when_released(run: Run, kube: FakeKube) -> None:
    held(kube)
    kube.objects[PATH]["spec"]["holderIdentity"] = ""

    result = run("leader", "-o", "json")

    assert result.exit_code == 1
    assert json.loads(result.stdout)["state"] == "released"


def test_leader_without_a_lease_exits_1(run: Run) -> None:
    result = run("leader")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "no Lease kube-system/spotguard-controller" in result.stderr


def test_leader_uses_the_lease_name_and_namespace_flags(
    run: Run, kube: FakeKube, connections: list[tuple[Target, str | None]]
) -> None:
    kube.put(
        lease_path("spotguard", "other"),
        {"spec": {"holderIdentity": "x", "leaseDurationSeconds": 15, "renewTime": "2025-01-15T10:00:00Z"}},
    )

    result = run("leader", "-n", "spotguard", "--lease-name", "other", "--kubeconfig", "/k", "--context", "prod")

    assert result.exit_code == 0
    assert "Holder:          x" in result.stdout
    assert connections == [(Target("/k", "prod", "spotguard", "other"), None)]


def test_the_lease_namespace_can_differ_like_the_controllers(run: Run, kube: FakeKube) -> None:
    kube.put(lease_path("leases", "spotguard-controller"), {"spec": {"holderIdentity": "y"}})

    result = run("leader", "-o", "json", env={"SPOT_GUARD_LEASE_NAMESPACE": "leases"})

    assert json.loads(result.stdout)["holder"] == "y"


def test_pause_needs_a_reason(run: Run) -> None:
    result = run("pause")
    assert result.exit_code == 2
    assert "Missing option '--reason'" in result.stderr


def test_pause_annotates_the_lease_and_leader_shows_it(run: Run, kube: FakeKube) -> None:
    held(kube)

    paused = run("pause", "--reason", "spot market incident")

    assert paused.exit_code == 0
    assert "Spot Guard paused by alice@laptop at 2025-01-15T10:00:00Z: spot market incident." in paused.stdout
    stored = kube.get(PATH)
    assert stored is not None
    assert stored["metadata"]["annotations"] == {
        PAUSED: "true",
        PAUSED_BY: "alice@laptop",
        PAUSED_AT: "2025-01-15T10:00:00Z",
        PAUSED_REASON: "spot market incident",
    }
    assert stored["spec"]["holderIdentity"] == "spotguard-7d9f_ab12"
    assert json.loads(run("leader", "-o", "json").stdout)["paused"]["paused"] is True


def test_pause_by_someone_as_json(run: Run, kube: FakeKube) -> None:
    result = run("pause", "--reason", "r", "--by", "oncall", "-o", "json")

    assert json.loads(result.stdout) == {
        "lease": "kube-system/spotguard-controller",
        "paused": True,
        "by": "oncall",
        "at": "2025-01-15T10:00:00Z",
        "reason": "r",
    }


def test_resume_removes_the_switch(run: Run, kube: FakeKube) -> None:
    held(kube, **{PAUSED: "true", PAUSED_BY: "alice"})

    result = run("resume")

    assert result.exit_code == 0
    assert result.stdout.strip() == "Spot Guard resumed: acting on notices again."
    stored = kube.get(PATH)
    assert stored is not None
    assert stored["metadata"]["annotations"] == {}
    again = run("resume", "-o", "yaml")
    assert again.exit_code == 0
    assert yaml.safe_load(again.stdout)["wasPaused"] is False


def test_a_forbidden_pause_exits_1(run: Run, kube: FakeKube) -> None:
    held(kube)
    kube.failures[("PATCH", PATH)] = api_error(403, "Forbidden", "cannot patch leases")

    result = run("pause", "--reason", "x")

    assert result.exit_code == 1
    assert "403 Forbidden: cannot patch leases" in result.stderr
