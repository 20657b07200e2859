"""The scheduler predicates: requests, taints and tolerations, nodeSelector, required node affinity."""

from __future__ import annotations

from typing import Any

import pytest

from controller.checks import placement
from tests.unit.controller.k8s_objects import JSON, node, pod

GI = 2**30


def container(name: str, cpu: str = "0", memory: str = "0", restart: str | None = None) -> JSON:
    item: JSON = {"name": name, "resources": {"requests": {"cpu": cpu, "memory": memory}}}
    if restart:
        item["restartPolicy"] = restart
    return item


# -- requests ---------------------------------------------------------------------------------------------


def test_requests_sum_the_containers_and_take_one_pod_slot() -> None:
    two = pod("p", cpu="500m", memory="1Gi", extra_containers=[container("sidecar", "250m", "512Mi")])

    assert placement.pod_requests(two) == {"cpu": 750, "memory": GI + GI // 2, "pods": 1}


def test_a_bigger_init_container_sets_the_requests() -> None:
    migrating = pod("p", cpu="500m", memory="1Gi", init_containers=[container("migrate", "2", "256Mi")])

    assert placement.pod_requests(migrating) == {"cpu": 2000, "memory": GI, "pods": 1}


def test_restartable_init_containers_add_to_the_app_and_to_later_init_containers() -> None:
    init = [container("proxy", "1", "0", restart="Always"), container("setup", "2", "0")]

    requests = placement.pod_requests(pod("p", cpu="500m", init_containers=init))

    # app 500m + sidecar 1 = 1500m; while "setup" runs: sidecar 1 + setup 2 = 3000m
    assert requests["cpu"] == 3000


def test_pod_overhead_is_added() -> None:
    item = pod("p", cpu="100m")
    item["spec"]["overhead"] = {"cpu": "250m"}

    assert placement.pod_requests(item)["cpu"] == 350


def test_free_resources_subtract_only_unfinished_pods_bound_to_that_node() -> None:
    here = node("spot-1", cpu="4", memory="16Gi", pods="10")
    pods = [
        pod("a", node="spot-1", cpu="1", memory="4Gi"),
        pod("done", node="spot-1", cpu="2", memory="4Gi", phase="Succeeded"),
        pod("elsewhere", node="spot-2", cpu="3", memory="4Gi"),
    ]

    requested = placement.requested_by_node(pods)

    assert placement.free_resources(here, requested["spot-1"]) == {"cpu": 3000, "memory": 12 * GI, "pods": 9}
    assert requested["spot-2"]["cpu"] == 3000


def test_insufficient_names_the_resource_and_both_amounts() -> None:
    assert placement.insufficient({"cpu": 2000, "pods": 1}, {"cpu": 500, "pods": 5}) == (
        "insufficient cpu (needs 2, 500m free)"
    )
    assert placement.insufficient({"cpu": 500, "pods": 1}, {"cpu": 500, "pods": 1}) is None
    assert placement.insufficient({"nvidia.com/gpu": 1}, {"cpu": 500}) is not None


# -- readiness ----------------------------------------------------------------------------------------


def test_unavailable_nodes_say_why() -> None:
    deleting = node("d")
    deleting["metadata"]["deletionTimestamp"] = "2025-01-15T10:00:00Z"

    assert placement.unavailable_reason(node("ok")) is None
    assert placement.unavailable_reason(node("nr", ready=False)) == "is not Ready"
    assert placement.unavailable_reason(node("c", unschedulable=True)) == "is cordoned (spec.unschedulable)"
    assert placement.unavailable_reason(deleting) == "is being deleted"


# -- taints and tolerations ------------------------------------------------------------------------------

GPU_TAINT = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("toleration", "tolerated"),
    [
        ({"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}, True),
        ({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}, True),  # empty operator means Equal
        ({"key": "dedicated", "operator": "Equal", "value": "cpu", "effect": "NoSchedule"}, False),
        ({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}, True),
        ({"key": "dedicated", "operator": "Exists"}, True),  # empty effect matches every effect
        ({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "other", "operator": "Exists"}, False),
        ({"operator": "Exists"}, True),  # empty key with Exists tolerates everything
        ({"key": "dedicated", "operator": "Gt", "value": "1"}, False),
    ],
)
def test_toleration_matching(toleration: JSON, tolerated: bool) -> None:
    assert placement.tolerates(toleration, GPU_TAINT) is tolerated


def test_only_noschedule_and_noexecute_taints_keep_a_pod_off() -> None:
    soft = node("n", taints=[{"key": "spot", "effect": "PreferNoSchedule"}])
    hard = node("n", taints=[{"key": "spot", "effect": "PreferNoSchedule"}, {"key": "x", "effect": "NoExecute"}])

    assert placement.untolerated_taint(pod("p"), soft) is None
    assert placement.untolerated_taint(pod("p"), hard) == {"key": "x", "effect": "NoExecute"}
    tolerant = pod("p", tolerations=[{"key": "x", "operator": "Exists", "effect": "NoExecute"}])
    assert placement.untolerated_taint(tolerant, hard) is None


# -- nodeSelector and node affinity ------------------------------------------------------------------------

ZONE = "topology.kubernetes.io/zone"


def test_node_selector_needs_every_label() -> None:
    labelled = node("n", labels={ZONE: "us-east-1a", "disk": "ssd"})

    assert placement.matches_node_selector(pod("p", node_selector={ZONE: "us-east-1a", "disk": "ssd"}), labelled)
    assert not placement.matches_node_selector(pod("p", node_selector={ZONE: "us-east-1a", "disk": "hdd"}), labelled)
    assert not placement.matches_node_selector(pod("p", node_selector={"gpu": "true"}), labelled)


def affinity(*terms: JSON) -> JSON:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}


def expr(key: str, operator: str, *values: str) -> JSON:
    item: JSON = {"key": key, "operator": operator}
    if values:
        item["values"] = list(values)
    return item


@pytest.mark.parametrize(
    ("requirement", "matches"),
    [
        (expr(ZONE, "In", "us-east-1a", "us-east-1b"), True),
        (expr(ZONE, "In", "us-east-1c"), False),
        (expr(ZONE, "NotIn", "us-east-1c"), True),
        (expr(ZONE, "NotIn", "us-east-1a"), False),
        (expr("absent", "NotIn", "x"), True),
        (expr("absent", "In", "x"), False),
        (expr(ZONE, "Exists"), True),
        (expr("absent", "Exists"), False),
        (expr("absent", "DoesNotExist"), True),
        (expr(ZONE, "DoesNotExist"), False),
        (expr("cores", "Gt", "4"), True),
        (expr("cores", "Gt", "8"), False),
        (expr("cores", "Lt", "16"), True),
        (expr("cores", "Lt", "8"), False),
        (expr(ZONE, "Gt", "1"), False),  # not an integer
        (expr("absent", "Lt", "1"), False),
        (expr(ZONE, "Sideways", "x"), False),
    ],
)
def test_node_selector_requirement_operators(requirement: JSON, matches: bool) -> None:
    labelled = node("n", labels={ZONE: "us-east-1a", "cores": "8"})

    assert (
        placement.matches_required_affinity(pod("p", affinity=affinity({"matchExpressions": [requirement]})), labelled)
        is matches
    )


def test_affinity_terms_are_ored_and_the_expressions_of_a_term_anded() -> None:
    labelled = node("n", labels={ZONE: "us-east-1a", "disk": "ssd"})
    both = {"matchExpressions": [expr(ZONE, "In", "us-east-1a"), expr("disk", "In", "hdd")]}
    either = [{"matchExpressions": [expr("disk", "In", "hdd")]}, {"matchExpressions": [expr("disk", "In", "ssd")]}]

    assert not placement.matches_required_affinity(pod("p", affinity=affinity(both)), labelled)
    assert placement.matches_required_affinity(pod("p", affinity=affinity(*either)), labelled)


def test_match_fields_select_by_node_name() -> None:
    by_name = affinity({"matchFields": [expr("metadata.name", "In", "spot-2")]})

    assert placement.matches_required_affinity(pod("p", affinity=by_name), node("spot-2"))
    assert not placement.matches_required_affinity(pod("p", affinity=by_name), node("spot-3"))


def test_an_empty_term_matches_no_node_and_no_affinity_matches_every_node() -> None:
    assert not placement.matches_required_affinity(pod("p", affinity=affinity({})), node("n"))
    preferred_only: dict[str, Any] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    assert placement.matches_required_affinity(pod("p", affinity=preferred_only), node("n"))
    assert placement.matches_required_affinity(pod("p"), node("n"))


def test_why_not_gives_the_first_reason_in_words() -> None:
    tainted = node("n", taints=[GPU_TAINT], labels={"disk": "ssd"})
    plain = node("n", labels={"disk": "ssd"})
    needs = {"cpu": 100, "pods": 1}
    room = {"cpu": 4000, "pods": 10}

    assert placement.why_not(pod("p"), needs, tainted, room) == "taint dedicated=gpu:NoSchedule not tolerated"
    assert placement.why_not(pod("p", node_selector={"disk": "hdd"}), needs, plain, room) == (
        "nodeSelector does not match its labels"
    )
    far = affinity({"matchExpressions": [expr("disk", "DoesNotExist")]})
    assert placement.why_not(pod("p", affinity=far), needs, plain, room) == "required node affinity does not match"
    assert placement.why_not(pod("p"), {"cpu": 8000, "pods": 1}, plain, room) == ("insufficient cpu (needs 8, 4 free)")
    assert placement.why_not(pod("p"), needs, plain, room) is None
