"""The safety checks before removing an on-demand node: pure functions over raw JSON snapshots, no I/O.

1. ``check_pods_fit``: every pod the drain would evict (``drain.plan_drain``'s ``to_evict``, so the same
   filters apply) has another Ready, schedulable node where it fits (see ``controller.checks.placement`` for the
   predicates). Placement is greedy and cumulative, biggest pod first: a pod placed earlier consumes the
   capacity it takes; among the nodes that fit, the least allocated one is chosen, as the scheduler does.
2. ``check_pdbs``: the PodDisruptionBudgets covering those pods allow all those evictions *taken
   together* (3 covered pods and disruptionsAllowed 2 fails), counted the way the Eviction API counts.
3. ``check_utilisation``: the cpu and memory requested by the pods that stay in the cluster, over the
   allocatable of the Ready, schedulable nodes left after the removal, stays at or under the buffer.

A failed check is not an error: the caller keeps the event in ReadyForScaleDown and checks again later.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from controller.checks import placement
from controller.checks.drain_plan import DrainOptions, DrainPlan, PodRef, is_finished, plan_drain
from controller.model.quantity import format_units

log = logging.getLogger(__name__)

JSON = Mapping[str, Any]
PODS_FIT = "pods-fit"
DISRUPTION_BUDGETS = "disruption-budgets"
UTILISATION = "utilisation"
DEFAULT_BUFFER = 0.75
#: How many pods (and distinct reasons per pod) a failed fit check names in its message; details hold all.
MAX_PODS_IN_MESSAGE = 5


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One safety check's verdict; ``message`` says what was found and, on failure, what blocks the removal."""

    name: str
    passed: bool
    message: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


def pods_on_node(node_name: str, pods: Sequence[JSON]) -> list[JSON]:
    return [pod for pod in pods if (pod.get("spec") or {}).get("nodeName") == node_name]


# -- 1. every evictable pod fits elsewhere --------------------------------------------------------------


def check_pods_fit(
    node_name: str, nodes: Sequence[JSON], pods: Sequence[JSON], options: DrainOptions | None = None
) -> CheckResult:
    """Can every pod evicted from ``node_name`` be placed on another Ready, schedulable node?"""
    plan = plan_drain(pods_on_node(node_name, pods), options)
    if not plan.can_start:
        return CheckResult(
            PODS_FIT,
            False,
            f"draining node {node_name} would be blocked: {plan.blocked_message()}",
            {"blocked": {str(item.pod): item.reason for item in plan.blocked}},
        )
    if not plan.to_evict:
        return CheckResult(PODS_FIT, True, f"no pod on node {node_name} needs another node", {"placements": {}})
    candidates: list[JSON] = []
    excluded: dict[str, str] = {}
    for node in nodes:
        name = placement.node_name(node)
        if name == node_name:
            continue
        reason = placement.unavailable_reason(node)
        if reason is None:
            candidates.append(node)
        else:
            excluded[name] = reason
    if not candidates:
        why = "; ".join(f"{name} {reason}" for name, reason in sorted(excluded.items())) or "it is the only node"
        return CheckResult(
            PODS_FIT,
            False,
            f"{len(plan.to_evict)} pod(s) on node {node_name} would have nowhere to go: no other Ready, "
            f"schedulable node ({why})",
            {"excluded_nodes": excluded, "unplaced": {str(ref): {} for ref in plan.evict_refs}},
        )
    return _place_greedily(node_name, plan, candidates, pods, excluded)


def _place_greedily(
    node_name: str, plan: DrainPlan, candidates: list[JSON], pods: Sequence[JSON], excluded: dict[str, str]
) -> CheckResult:
    used = placement.requested_by_node(pods)
    free = {
        placement.node_name(n): placement.free_resources(n, used.get(placement.node_name(n), {})) for n in candidates
    }
    allocatable = {placement.node_name(n): placement.parse_resources(_status(n).get("allocatable")) for n in candidates}
    wanted = sorted(
        ((pod, placement.pod_requests(pod)) for pod in plan.to_evict),
        key=lambda item: (-item[1].get("cpu", 0), -item[1].get("memory", 0), str(PodRef.of(item[0]))),
    )
    needs = {str(PodRef.of(pod)): requests for pod, requests in wanted}
    placements: dict[str, str] = {}
    unplaced: dict[str, dict[str, str]] = {}
    for pod, requests in wanted:
        reasons: dict[str, str] = {}
        fitting: list[str] = []
        for node in candidates:
            name = placement.node_name(node)
            reason = placement.why_not(pod, requests, node, free[name])
            if reason is None:
                fitting.append(name)
            else:
                reasons[name] = reason
        key = str(PodRef.of(pod))
        if not fitting:
            unplaced[key] = reasons
            continue
        chosen = min(fitting, key=lambda name: (-_free_share(free[name], requests, allocatable[name]), name))
        for resource, value in requests.items():
            free[chosen][resource] = free[chosen].get(resource, 0) - value
        placements[key] = chosen
    details: dict[str, Any] = {"placements": placements, "unplaced": unplaced, "excluded_nodes": excluded}
    if unplaced:
        shown = sorted(unplaced.items())[:MAX_PODS_IN_MESSAGE]
        words = "; ".join(f"{pod} ({_describe(needs[pod])}): {_why_nowhere(why)}" for pod, why in shown)
        if len(unplaced) > len(shown):
            words += f"; and {len(unplaced) - len(shown)} more (see details)"
        return CheckResult(
            PODS_FIT,
            False,
            f"{len(unplaced)} of {len(wanted)} pod(s) on node {node_name} fit on no other Ready, schedulable "
            f"node: {words}",
            details,
        )
    return CheckResult(
        PODS_FIT,
        True,
        f"all {len(wanted)} pod(s) to evict from node {node_name} fit on the other "
        f"{len(candidates)} Ready, schedulable node(s)",
        details,
    )


def _why_nowhere(reasons: Mapping[str, str]) -> str:
    """Per-node reasons, grouped when many nodes refuse a pod for the same reason, a few names each."""
    by_reason: dict[str, list[str]] = {}
    for node, reason in sorted(reasons.items()):
        by_reason.setdefault(reason, []).append(node)
    parts = []
    for reason, nodes in sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0]))[:MAX_PODS_IN_MESSAGE]:
        if len(nodes) == 1:
            parts.append(f"{nodes[0]}: {reason}")
        else:
            names = ", ".join(nodes[:3]) + (", ..." if len(nodes) > 3 else "")
            parts.append(f"{reason} on {len(nodes)} nodes ({names})")
    if len(by_reason) > MAX_PODS_IN_MESSAGE:
        parts.append(f"{len(by_reason) - MAX_PODS_IN_MESSAGE} other reason(s)")
    return ", ".join(parts)


def _free_share(free: Mapping[str, int], requests: Mapping[str, int], allocatable: Mapping[str, int]) -> float:
    """The scheduler's LeastAllocated score: the mean share of cpu and memory left after placing the pod."""
    shares = []
    for resource in ("cpu", "memory"):
        total = allocatable.get(resource, 0)
        if total > 0:
            shares.append((free.get(resource, 0) - requests.get(resource, 0)) / total)
    return sum(shares) / len(shares) if shares else 0.0


def _describe(requests: Mapping[str, int]) -> str:
    shown = [f"{name} {format_units(name, value)}" for name, value in sorted(requests.items()) if name != "pods"]
    return ", ".join(shown) or "no requests"


# -- 2. the disruption budgets allow all the evictions together ------------------------------------------


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector: None matches nothing, {} matches everything (as policy/v1 PDBs define)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(placement.requirement_matches(r, labels) for r in selector.get("matchExpressions") or [])


def pdb_covers(pdb: JSON, pod: JSON) -> bool:
    pdb_meta = pdb.get("metadata") or {}
    pod_meta = pod.get("metadata") or {}
    if pdb_meta.get("namespace") != pod_meta.get("namespace"):
        return False
    return selector_matches((pdb.get("spec") or {}).get("selector"), pod_meta.get("labels") or {})


def _is_pod_ready(pod: JSON) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _ignores_budgets(pod: JSON) -> bool:
    """The Eviction API evicts finished, Pending and terminating pods without asking any PDB."""
    phase = (pod.get("status") or {}).get("phase")
    return is_finished(pod) or phase == "Pending" or bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _spends_budget(pod: JSON, pdb: JSON) -> bool:
    """Whether evicting ``pod`` uses one of ``pdb``'s allowed disruptions (Eviction API rules)."""
    if _is_pod_ready(pod):
        return True
    spec, status = pdb.get("spec") or {}, pdb.get("status") or {}
    if spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow":
        return False
    desired = int(status.get("desiredHealthy") or 0)
    return not (desired > 0 and int(status.get("currentHealthy") or 0) >= desired)


def _pdb_name(pdb: JSON) -> str:
    meta = pdb.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def check_pdbs(node_name: str, pods_to_evict: Sequence[JSON], pdbs: Sequence[JSON]) -> CheckResult:
    """Do the PDBs covering ``pods_to_evict`` allow evicting all of them together?"""
    covered: dict[str, list[str]] = {}
    spending: dict[str, list[str]] = {}
    by_name = {_pdb_name(pdb): pdb for pdb in pdbs}
    problems: list[str] = []
    for pod in pods_to_evict:
        if _ignores_budgets(pod):
            continue
        key = str(PodRef.of(pod))
        owners = sorted(name for name, pdb in by_name.items() if pdb_covers(pdb, pod))
        if len(owners) > 1:
            problems.append(
                f"pod {key} is covered by {len(owners)} PDBs ({', '.join(owners)}) and the Eviction API refuses "
                "to evict a pod with more than one; remove the overlap"
            )
        for name in owners:
            covered.setdefault(name, []).append(key)
            if _spends_budget(pod, by_name[name]):
                spending.setdefault(name, []).append(key)
    budgets: dict[str, dict[str, Any]] = {}
    for name in sorted(covered):
        pdb = by_name[name]
        status = pdb.get("status") or {}
        generation = int((pdb.get("metadata") or {}).get("generation") or 0)
        observed = status.get("observedGeneration")
        allowed = int(status.get("disruptionsAllowed") or 0)
        needed = len(spending.get(name, []))
        budgets[name] = {"covered": covered[name], "needed": needed, "disruptions_allowed": allowed}
        if observed is None or int(observed) < generation:
            problems.append(
                f"PDB {name} covers {len(covered[name])} pod(s) to evict but its status is not computed yet "
                f"(observedGeneration {observed if observed is not None else 'unset'} < generation {generation}); "
                "the disruption controller has not caught up: check again later"
            )
        elif needed > allowed:
            problems.append(
                f"PDB {name} allows {allowed} disruption(s) but draining node {node_name} evicts {needed} pod(s) "
                f"it covers ({', '.join(spending[name])})"
            )
    details: dict[str, Any] = {"budgets": budgets}
    if problems:
        return CheckResult(DISRUPTION_BUDGETS, False, "; ".join(problems), details)
    if not budgets:
        return CheckResult(
            DISRUPTION_BUDGETS, True, f"no PodDisruptionBudget covers the pods to evict from node {node_name}", details
        )
    summary = ", ".join(f"{name}: {b['needed']} of {b['disruptions_allowed']} allowed" for name, b in budgets.items())
    return CheckResult(
        DISRUPTION_BUDGETS,
        True,
        f"the {len(budgets)} PodDisruptionBudget(s) covering the pods on node {node_name} allow all their "
        f"evictions together ({summary})",
        details,
    )


# -- 3. utilisation after the removal stays under the buffer ---------------------------------------------


def check_utilisation(
    node_name: str, nodes: Sequence[JSON], pods: Sequence[JSON], buffer: float = DEFAULT_BUFFER
) -> CheckResult:
    """Would cpu or memory requests exceed ``buffer`` of what the remaining Ready, schedulable nodes offer?

    Requests count every unfinished pod that stays in the cluster: all of them except the DaemonSet and
    mirror pods of the removed node, which go away with it. Pods on cordoned or NotReady nodes count against
    the remaining nodes too (they may have to move there), which errs on the safe side.
    """
    if not 0 < buffer <= 1:
        raise ValueError(f"the utilisation buffer must be a fraction in (0, 1], got {buffer}")
    remaining = [n for n in nodes if placement.node_name(n) != node_name and placement.unavailable_reason(n) is None]
    allocatable: dict[str, int] = {}
    for node in remaining:
        placement.add(allocatable, placement.parse_resources(_status(node).get("allocatable")))
    leaving = {item.pod for item in plan_drain(pods_on_node(node_name, pods)).skipped}
    requested: dict[str, int] = {}
    for pod in pods:
        if not is_finished(pod) and PodRef.of(pod) not in leaving:
            placement.add(requested, placement.pod_requests(pod))
    ratios: dict[str, float | None] = {}
    for resource in ("cpu", "memory"):
        total = allocatable.get(resource, 0)
        ratios[resource] = requested.get(resource, 0) / total if total > 0 else None
    details: dict[str, Any] = {
        "buffer": buffer,
        "remaining_nodes": [placement.node_name(n) for n in remaining],
        "requested": {r: requested.get(r, 0) for r in ("cpu", "memory")},
        "allocatable": {r: allocatable.get(r, 0) for r in ("cpu", "memory")},
        "ratios": ratios,
    }
    if not remaining:
        return CheckResult(
            UTILISATION, False, f"removing node {node_name} would leave no Ready, schedulable node", details
        )
    words = " and ".join(
        f"{resource} {_percent(ratio)} ({format_units(resource, requested.get(resource, 0))} of "
        f"{format_units(resource, allocatable.get(resource, 0))})"
        for resource, ratio in ratios.items()
    )
    over = [resource for resource, ratio in ratios.items() if ratio is None or ratio > buffer]
    where = f"the {len(remaining)} remaining Ready, schedulable node(s)"
    if over:
        return CheckResult(
            UTILISATION,
            False,
            f"removing node {node_name} would put requests at {words} of {where}, over the "
            f"{buffer:.0%} buffer for {', '.join(over)}",
            details,
        )
    return CheckResult(
        UTILISATION,
        True,
        f"after removing node {node_name}, requests would be {words} of {where}, within the {buffer:.0%} buffer",
        details,
    )


def _percent(ratio: float | None) -> str:
    return "n/a (no allocatable)" if ratio is None else f"{ratio:.0%}"


def _status(obj: JSON) -> Mapping[str, Any]:
    return obj.get("status") or {}


# -- all of them -----------------------------------------------------------------------------------------


def run_safety_checks(
    node_name: str,
    nodes: Sequence[JSON],
    pods: Sequence[JSON],
    pdbs: Sequence[JSON],
    *,
    buffer: float = DEFAULT_BUFFER,
    options: DrainOptions | None = None,
) -> list[CheckResult]:
    """Every check for removing ``node_name``, each logged with its result; all must pass to go ahead."""
    plan = plan_drain(pods_on_node(node_name, pods), options)
    results = [
        check_pods_fit(node_name, nodes, pods, options),
        check_pdbs(node_name, plan.to_evict, pdbs),
        check_utilisation(node_name, nodes, pods, buffer),
    ]
    for result in results:
        if result.passed:
            log.info("safety check %s for removing node %s passed: %s", result.name, node_name, result.message)
        else:
            log.warning(
                "safety check %s for removing node %s failed, will check again later: %s",
                result.name,
                node_name,
                result.message,
            )
    return results


def all_passed(results: Sequence[CheckResult]) -> bool:
    return all(result.passed for result in results)
