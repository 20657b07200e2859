"""``spotguard events list | describe | delete | cleanup`` on a fake API server."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from controller.admin.events_cmd import PHASES, UNFINISHED, WOULD_ACT_REASON, events_path
from controller.model.sgfe import Phase
from tests.unit.controller.admin.conftest import Run
from tests.unit.controller.admin.fake_kube import FakeKube, api_error

NS = "kube-system"


def sgfe(
    kube: FakeKube,
    name: str,
    phase: str = "Monitoring",
    timestamp: str = "2025-01-15T09:55:00Z",
    *,
    namespace: str = NS,
    finished_at: str | None = None,
) -> dict[str, Any]:
    annotations = {"spotguard.io/lifecycle": json.dumps({"finishedAt": finished_at})} if finished_at else {}
    return kube.put(
        events_path(namespace, name),
        {
            "apiVersion": "aws.amazon.com/v1",
            "kind": "SpotGuardFallbackEvent",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {
                "spotASGName": "spot-a",
                "onDemandASGName": "od-a",
                "onDemandNodeName": f"od-{name}",
                "timestamp": timestamp,
                "minimumWaitDuration": "10m",
            },
            "status": {"phase": phase, "message": f"{name} is {phase}", "spotCapacityRestored": False},
        },
    )


def test_the_phases_are_the_crds() -> None:
    assert PHASES == Phase.ALL
    assert UNFINISHED == Phase.UNFINISHED


def test_list_shows_a_table_newest_first(run: Run, kube: FakeKube) -> None:
    sgfe(kube, "fallback-old", "Completed", "2025-01-14T10:00:00Z")
    sgfe(kube, "fallback-new", "Monitoring", "2025-01-15T09:55:00Z")

    result = run("events", "list")

    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "NAME           PHASE        SPOT ASG   ON-DEMAND ASG   ON-DEMAND NODE    AGE",
        "fallback-new   Monitoring   spot-a     od-a            od-fallback-new   5m",
        "fallback-old   Completed    spot-a     od-a            od-fallback-old   24h",
    ]


def test_list_as_json_and_yaml_gives_the_objects(run: Run, kube: FakeKube) -> None:
    sgfe(kube, "fallback-1")

    as_json = json.loads(run("events", "list", "-o", "json").stdout)
    as_yaml = yaml.safe_load(run("events", "list", "--output", "yaml").stdout)

    assert as_json == as_yaml
    assert as_json["kind"] == "List"
    assert [i["metadata"]["name"] for i in as_json["items"]] == ["fallback-1"]
    assert as_json["items"][0]["spec"]["spotASGName"] == "spot-a"


def test_list_filters_by_phase_and_spans_namespaces(run: Run, kube: FakeKube) -> None:
    sgfe(kube, "a", "Completed")
    sgfe(kube, "b", "Failed")
    sgfe(kube, "c", "Completed", namespace="other")

    here = run("events", "list", "--phase", "Completed", "-o", "json")
    everywhere = run("events", "list", "-A", "--phase", "Completed")

    assert [i["metadata"]["name"] for i in json.loads(here.stdout)["items"]] == ["a"]
    lines = everywhere.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert sorted(line.split()[:2] for line in lines[1:]) == [["kube-system", "a"], ["other", "c"]]


def test_list_uses_the_namespace_flag(run: Run, kube: FakeKube) -> None:
    sgfe(kube, "x", namespace="spotguard")

    assert "x" in run("events", "list", "-n", "spotguard").stdout
    assert run("events", "list", "--namespace", "elsewhere").stdout == ""


def test_an_empty_list_says_so_on_stderr_and_exits_0(run: Run) -> None:
    result = run("events", "list")

    assert result.exit_code == 0
    assert result.stdout == ""
    assert "No SpotGuardFallbackEvents found in namespace kube-system." in result.stderr


def test_an_unknown_phase_or_format_is_a_usage_error(run: Run) -> None:
    assert run("events", "list", "--phase", "Sleeping").exit_code == 2
    assert run("events", "list", "-o", "xml").exit_code == 2


def test_an_api_failure_exits_1_with_the_reason(run: Run, kube: FakeKube) -> None:
    kube.failures[("GET", events_path(NS))] = api_error(403, "Forbidden", "sgfe is forbidden: User alice")

    result = run("events", "list")

    assert result.exit_code == 1
    assert "403 Forbidden: sgfe is forbidden: User alice" in result.stderr
    assert "RBAC" in result.stderr


def k8s_event(kube: FakeKube, name: str, reason: str, message: str, last: str, *, count: int = 1) -> None:
    kube.put(
        f"/api/v1/namespaces/{NS}/events/{name}.{reason}",
        {
            "involvedObject": {"kind": "SpotGuardFallbackEvent", "name": name, "namespace": NS},
            "type": "Normal",
            "reason": reason,
            "message": message,
            "count": count,
            "firstTimestamp": "2025-01-15T09:55:00Z",
            "lastTimestamp": last,
            "source": {"component": "spotguard-controller"},
        },
    )


def test_describe_shows_spec_status_age_and_the_kubernetes_events(run: Run, kube: FakeKube) -> None:
    sgfe(kube, "fallback-1", "Monitoring")
    k8s_event(kube, "fallback-1", "PhaseChanged", "Pending -> Monitoring", "2025-01-15T09:58:00Z", count=2)
    k8s_event(kube, "fallback-1", "FallbackStarted", "spot short", "2025-01-15T09:55:00Z")
    k8s_event(kube, "fallback-2", "Other", "not about it", "2025-01-15T09:58:00Z")

    result = run("events", "describe", "fallback-1")

    assert result.exit_code == 0
    out = result.stdout
    assert "Name:                    fallback-1" in out
    assert "Phase:                   Monitoring" in out
    assert "Age:                     5m" in out
    assert "On-Demand Node:          od-fallback-1" in out
    assert "Minimum Wait:            10m" in out
    events = out.split("Events:", 1)[1].splitlines()
    assert events[1].split()[:2] == ["TYPE", "REASON"]
    assert "FallbackStarted" in events[2]
    assert "PhaseChanged" in events[3]
    assert "2m (x2 over 5m)" in events[3]
    assert "not about it" not in out


def test_describe_as_json_and_yaml(run: Run, kube: FakeKube) -> None:
    sgfe(kube, "fallback-1", "Completed", finished_at="2025-01-15T09:59:00Z")
    k8s_event(kube, "fallback-1", "Completed", "done", "2025-01-15T09:59:00Z")

    data = json.loads(run("events", "describe", "fallback-1", "-o", "json").stdout)

    assert data["name"] == "fallback-1"
    assert data["age"] == "5m"
    assert data["status"]["phase"] == "Completed"
    assert data["spec"]["onDemandASGName"] == "od-a"
    assert data["events"] == [
        {
            "type": "Normal",
            "reason": "Completed",
            "message": "done",
            "count": 1,
            "firstTimestamp": "2025-01-15T09:55:00Z",
            "lastTimestamp": "2025-01-15T09:59:00Z",
            "source": "spotguard-controller",
        }
    ]
    assert yaml.safe_load(run("events", "describe", "fallback-1", "-o", "yaml").stdout) == data


def test_describe_without_events_says_none(run: Run, kube: FakeKube) -> None:
    sgfe(kube, "fallback-1")
    assert run("events", "describe", "fallback-1").stdout.rstrip().endswith("Events:  <none>")


def test_describing_a_missing_event_exits_1(run: Run) -> None:
    result = run("events", "describe", "nope")

    assert result.exit_code == 1
    assert "SpotGuardFallbackEvent kube-system/nope not found" in result.stderr


def test_delete_asks_first_and_deletes_exactly_that_object(run: Run, kube: FakeKube) -> None:
    created = sgfe(kube, "fallback-1", "Completed")

    result = run("events", "delete", "fallback-1", input="y\n")

    assert result.exit_code == 0
    assert 'spotguardfallbackevent.aws.amazon.com "fallback-1" deleted' in result.stdout
    assert kube.get(events_path(NS, "fallback-1")) is None
    delete = [body for method, _, body in kube.requests if method == "DELETE"]
    assert delete[0]["preconditions"] == {"uid": created["metadata"]["uid"]}


def test_delete_answered_no_keeps_the_event_and_exits_1(run: Run, kube: FakeKube) -> None:
    sgfe(kube, "fallback-1", "Completed")

    result = run("events", "delete", "fallback-1", input="n\n")

    assert result.exit_code == 1
    assert "Aborted" in result.stderr
    assert kube.get(events_path(NS, "fallback-1")) is not None


def test_delete_with_yes_warns_about_an_unfinished_event(run: Run, kube: FakeKube) -> None:
    sgfe(kube, "fallback-1", "Monitoring")

    result = run("events", "delete", "fallback-1", "--yes", "-o", "json")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"name": "fallback-1", "namespace": NS, "phase": "Monitoring", "deleted": True}
    assert "still acting on it" in result.stderr
    assert "od-fallback-1" in result.stderr


def test_deleting_a_missing_event_exits_1(run: Run) -> None:
    result = run("events", "delete", "nope", "-y")
    assert result.exit_code == 1
    assert "not found" in result.stderr


@pytest.fixture
def aged(kube: FakeKube) -> None:
    # NOW is 2025-01-15T10:00:00Z.
    sgfe(kube, "done-long-ago", "Completed", "2025-01-10T00:00:00Z", finished_at="2025-01-13T00:00:00Z")
    sgfe(kube, "done-recently", "Completed", "2025-01-10T00:00:00Z", finished_at="2025-01-15T09:00:00Z")
    sgfe(kube, "done-no-record", "Completed", "2025-01-14T08:00:00Z")
    sgfe(kube, "failed-long-ago", "Failed", "2025-01-01T00:00:00Z")
    sgfe(kube, "monitoring-long", "Monitoring", "2025-01-01T00:00:00Z")


@pytest.mark.usefixtures("aged")
def test_cleanup_deletes_completed_events_past_the_ttl_counted_from_completion(run: Run, kube: FakeKube) -> None:
    result = run("events", "cleanup")

    assert result.exit_code == 0
    left = sorted(p.rsplit("/", 1)[1] for p in kube.objects if "/spotguardfallbackevents/" in p)
    assert left == ["done-recently", "failed-long-ago", "monitoring-long"]
    assert "2 of 5 events deleted (Completed more than 24h ago)." in result.stdout
    deletes = [body for method, _, body in kube.requests if method == "DELETE"]
    assert all(set(body["preconditions"]) == {"uid", "resourceVersion"} for body in deletes)


@pytest.mark.usefixtures("aged")
def test_cleanup_dry_run_deletes_nothing(run: Run, kube: FakeKube) -> None:
    result = run("events", "cleanup", "--dry-run", "--ttl", "1h", "-o", "json")

    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["dryRun"] is True
    assert data["ttl"] == "1h"
    assert data["examined"] == 5
    assert sorted((i["name"], i["result"]) for i in data["items"]) == [
        ("done-long-ago", "would delete"),
        ("done-no-record", "would delete"),
    ]
    assert not [m for m, _, _ in kube.requests if m == "DELETE"]


@pytest.mark.usefixtures("aged")
def test_cleanup_with_a_long_ttl_finds_nothing(run: Run) -> None:
    result = run("events", "cleanup", "--ttl", "72h")
    assert result.exit_code == 0
    assert result.stdout.strip() == "No Completed SpotGuardFallbackEvents older than 72h (5 examined)."


@pytest.mark.usefixtures("aged")
def test_cleanup_keeps_an_event_that_changed_and_reports_failures(run: Run, kube: FakeKube) -> None:
    kube.failures[("DELETE", events_path(NS, "done-long-ago"))] = api_error(409, "Conflict")
    kube.failures[("DELETE", events_path(NS, "done-no-record"))] = api_error(500, "InternalError")

    result = run("events", "cleanup", "-o", "yaml")

    assert result.exit_code == 1
    items = {i["name"]: i["result"] for i in yaml.safe_load(result.stdout)["items"]}
    assert items == {"done-long-ago": "changed since read; kept", "done-no-record": "failed: HTTP 500 InternalError"}
    assert "1 of 2 deletions failed" in result.stderr


def test_cleanup_rejects_a_bad_ttl_as_a_usage_error(run: Run) -> None:
    result = run("events", "cleanup", "--ttl", "a day")
    assert result.exit_code == 2
    assert "is not a duration" in result.stderr


def would_event(kube: FakeKube, name: str, kind: str, obj: str, message: str, *, namespace: str = "default") -> None:
    kube.put(
        f"/api/v1/namespaces/{namespace}/events/{name}",
        {
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {"kind": kind, "name": obj},
            "type": "Normal",
            "reason": WOULD_ACT_REASON,
            "message": message,
            "count": 1,
            "lastTimestamp": "2025-01-15T09:58:00Z",
        },
    )


def test_would_lists_what_observe_only_mode_would_have_done_in_every_namespace(run: Run, kube: FakeKube) -> None:
    would_event(
        kube,
        "lease.1",
        "Lease",
        "spotguard-controller",
        "scale-up: would set the desired capacity of ASG spot-1 from 3 to 5 (+2); nothing was sent to AWS",
        namespace=NS,
    )
    would_event(kube, "n1.1", "Node", "n1", "taint: would taint node n1 with spotguard.io/rebalance=x:NoSchedule")
    k8s_event(kube, "fallback-1", "PhaseChanged", "not observe-only", "2025-01-15T09:58:00Z")

    out = run("events", "would").stdout
    assert "lease/spotguard-controller" in out and "scale-up" in out and "from 3 to 5 (+2)" in out
    assert "node/n1" in out and "taint" in out
    assert "not observe-only" not in out
    only_node = run("events", "would", "--node", "n1").stdout
    assert "node/n1" in only_node and "spot-1" not in only_node
    only_group = run("events", "would", "--asg", "spot-1", "-o", "json").stdout
    assert [e["involvedObject"]["name"] for e in json.loads(only_group)["items"]] == ["spotguard-controller"]
    assert run("events", "would", "--asg", "spot").stdout.strip() == "", "spot is not spot-1"


def test_the_would_act_reason_is_the_controllers() -> None:
    from controller.observability.would_act import REASON

    assert WOULD_ACT_REASON == REASON
