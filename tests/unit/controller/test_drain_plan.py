"""plan_drain sorts a node's pods like kubectl drain: evict, leave alone, or refuse without consent."""

from __future__ import annotations

from typing import Any

import pytest

from controller.checks.drain_plan import SAFE_TO_EVICT_ANNOTATION, DrainOptions, PodRef, plan_drain
from tests.unit.controller.k8s_objects import pod

EMPTY_DIR = [{"name": "scratch", "emptyDir": {}}]


def names(refs: list[PodRef]) -> list[str]:
    return [ref.name for ref in refs]


def test_pods_of_a_controller_are_evicted_and_nothing_blocks() -> None:
    plan = plan_drain([pod("web-1"), pod("web-2", owner_kind="StatefulSet")])

    assert names(plan.evict_refs) == ["web-1", "web-2"]
    assert plan.can_start
    assert plan.skipped == () and plan.blocked == ()


def test_daemonset_pods_are_left_alone_with_the_daemonset_named() -> None:
    plan = plan_drain([pod("fluentbit-x", owner_kind="DaemonSet"), pod("web-1")])

    assert names(plan.evict_refs) == ["web-1"]
    assert [str(s.pod) for s in plan.skipped] == ["default/fluentbit-x"]
    assert "DaemonSet fluentbit-x-owner" in plan.skipped[0].reason


def test_mirror_pods_are_left_alone_even_without_a_controller() -> None:
    static = pod("kube-proxy-od-1", owner_kind=None, annotations={"kubernetes.io/config.mirror": "abc"})

    plan = plan_drain([static])

    assert plan.evict_refs == [] and plan.blocked == ()
    assert "mirror pod" in plan.skipped[0].reason


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_finished_pods_are_left_alone_even_with_emptydir_and_no_controller(phase: str) -> None:
    done = pod("job-abc", owner_kind=None, phase=phase, volumes=EMPTY_DIR)

    plan = plan_drain([done])

    assert plan.can_start and plan.evict_refs == []
    assert f"finished ({phase})" in plan.skipped[0].reason


def test_emptydir_pod_blocks_the_drain_until_its_data_loss_is_consented_to() -> None:
    cache = pod("cache-1", volumes=[*EMPTY_DIR, {"name": "config", "configMap": {"name": "c"}}])

    refused = plan_drain([cache, pod("web-1")])
    consented = plan_drain([cache, pod("web-1")], DrainOptions(delete_emptydir_data=True))

    assert not refused.can_start
    assert [str(b.pod) for b in refused.blocked] == ["default/cache-1"]
    assert "emptyDir volume(s) scratch" in refused.blocked[0].reason
    assert "set SPOT_GUARD_DELETE_EMPTYDIR_DATA=true to allow it" in refused.blocked[0].reason
    assert "config" not in refused.blocked[0].reason
    assert names(refused.evict_refs) == ["web-1"]
    assert consented.can_start and names(consented.evict_refs) == ["cache-1", "web-1"]


def test_pod_without_a_controller_blocks_the_drain_until_forced() -> None:
    bare = pod("debug", owner_kind=None)

    refused = plan_drain([bare])
    forced = plan_drain([bare], DrainOptions(force=True))

    assert not refused.can_start
    assert "no controller" in refused.blocked[0].reason and "no setting allows it" in refused.blocked[0].reason
    assert "kubectl delete pod -n default debug" in refused.blocked[0].reason
    assert names(forced.evict_refs) == ["debug"]


def test_owner_reference_that_is_not_a_controller_does_not_count_as_one() -> None:
    bare = pod("adopted", owner_kind=None)
    bare["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": False}]

    assert not plan_drain([bare]).can_start


def test_pod_needing_both_consents_names_both_reasons() -> None:
    plan = plan_drain([pod("scratchpad", owner_kind=None, volumes=EMPTY_DIR)], DrainOptions())

    reason = plan.blocked[0].reason
    assert "emptyDir" in reason and "no controller" in reason
    assert "default/scratchpad" in plan.blocked_message()


def test_one_consent_is_not_enough_for_a_pod_needing_both() -> None:
    both = pod("scratchpad", owner_kind=None, volumes=EMPTY_DIR)

    assert not plan_drain([both], DrainOptions(force=True)).can_start
    assert not plan_drain([both], DrainOptions(delete_emptydir_data=True)).can_start
    assert plan_drain([both], DrainOptions(force=True, delete_emptydir_data=True)).can_start


def test_safe_to_evict_false_is_for_the_cluster_autoscaler_only_and_does_not_stop_a_drain() -> None:
    guarded = pod("batch-1", annotations={SAFE_TO_EVICT_ANNOTATION: "false"})

    assert names(plan_drain([guarded]).evict_refs) == ["batch-1"]


def test_terminating_pod_is_still_evicted_so_the_drain_waits_for_it() -> None:
    assert names(plan_drain([pod("web-1", deleting=True)]).evict_refs) == ["web-1"]


def test_pod_refs_keep_the_uid_so_a_replacement_under_the_same_name_is_told_apart() -> None:
    plan = plan_drain([pod("db-0", namespace="data", owner_kind="StatefulSet", uid="u-1")])

    assert plan.evict_refs == [PodRef("data", "db-0", "u-1")]
    assert str(plan.evict_refs[0]) == "data/db-0"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"timeout": 0}, "timeout"),
        ({"grace_period_seconds": -1}, "grace_period_seconds"),
        ({"backoff_initial": 0}, "backoff_initial"),
        ({"backoff_initial": 20.0, "backoff_max": 10.0}, "backoff_max"),
        ({"poll_interval": 0}, "poll_interval"),
    ],
)
def test_nonsense_options_are_refused_naming_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        DrainOptions(**options)
