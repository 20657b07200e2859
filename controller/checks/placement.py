"""The kube-scheduler's filter predicates over raw Node and Pod JSON, for "would this pod fit there?".

Implemented, after the scheduler's plugins of the same name:

* NodeResourcesFit: the pod's requests (sum of its containers; at least the largest init container, with
  restartable "sidecar" init containers added; plus spec.overhead; one "pods" slot) against the node's
  allocatable minus the requests of the unfinished pods already bound there;
* TaintToleration: every NoSchedule and NoExecute taint must be tolerated (PreferNoSchedule is a score);
* NodeAffinity: spec.nodeSelector, and requiredDuringSchedulingIgnoredDuringExecution node affinity
  (terms ORed; matchExpressions In, NotIn, Exists, DoesNotExist, Gt, Lt; matchFields on metadata.name);
* candidate nodes are Ready, not cordoned and not being deleted.

Not simulated: inter-pod (anti-)affinity, topology spread constraints, host ports and volume limits. A
placement here is necessary, not sufficient, for the real scheduler to place the pod.

Resources are ``dict[str, int]`` in the scheduler's integer units: millicores for cpu, bytes for memory,
whole units for everything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from controller.checks.drain_plan import is_finished
from controller.model.quantity import format_units, to_units

Resources = dict[str, int]
PODS = "pods"
FILTER_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


def node_name(node: Mapping[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("name", ""))


def is_ready(node: Mapping[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def is_cordoned(node: Mapping[str, Any]) -> bool:
    return bool((node.get("spec") or {}).get("unschedulable", False))


def unavailable_reason(node: Mapping[str, Any]) -> str | None:
    """Why no pod may be placed on ``node`` at all (not Ready, cordoned, being deleted), or None."""
    if (node.get("metadata") or {}).get("deletionTimestamp"):
        return "is being deleted"
    if not is_ready(node):
        return "is not Ready"
    if is_cordoned(node):
        return "is cordoned (spec.unschedulable)"
    return None


# -- resources -----------------------------------------------------------------------------------------


def parse_resources(values: Mapping[str, Any] | None) -> Resources:
    """A resource list (``{"cpu": "500m", "memory": "1Gi"}``) in integer units."""
    return {name: to_units(name, value) for name, value in (values or {}).items()}


def add(total: Resources, more: Mapping[str, int]) -> None:
    for name, value in more.items():
        total[name] = total.get(name, 0) + value


def _max_into(total: Resources, other: Mapping[str, int]) -> None:
    for name, value in other.items():
        total[name] = max(total.get(name, 0), value)


def pod_requests(pod: Mapping[str, Any]) -> Resources:
    """What the scheduler reserves for ``pod`` (component-helpers resource.PodRequests), plus one pod slot."""
    spec = pod.get("spec") or {}
    total: Resources = {}
    for container in spec.get("containers") or []:
        add(total, parse_resources((container.get("resources") or {}).get("requests")))
    sidecars: Resources = {}
    init_peak: Resources = {}
    for container in spec.get("initContainers") or []:
        requests = parse_resources((container.get("resources") or {}).get("requests"))
        if container.get("restartPolicy") == "Always":  # a sidecar keeps running next to the app containers
            add(total, requests)
            add(sidecars, requests)
            during_init = dict(sidecars)
        else:
            during_init = dict(requests)
            add(during_init, sidecars)
        _max_into(init_peak, during_init)
    _max_into(total, init_peak)
    add(total, parse_resources(spec.get("overhead")))
    total[PODS] = total.get(PODS, 0) + 1
    return total


def requested_by_node(pods: Iterable[Mapping[str, Any]]) -> dict[str, Resources]:
    """Per node name, the summed requests of the unfinished pods bound to it (one pass over the pods)."""
    used: dict[str, Resources] = {}
    for pod in pods:
        name = (pod.get("spec") or {}).get("nodeName")
        if name and not is_finished(pod):
            add(used.setdefault(str(name), {}), pod_requests(pod))
    return used


def free_resources(node: Mapping[str, Any], requested: Mapping[str, int]) -> Resources:
    """``node``'s allocatable minus ``requested`` (what its pods already request; may go negative)."""
    free = parse_resources((node.get("status") or {}).get("allocatable"))
    for resource, value in requested.items():
        free[resource] = free.get(resource, 0) - value
    return free


def insufficient(requests: Mapping[str, int], free: Mapping[str, int]) -> str | None:
    """The first resource ``requests`` needs more of than ``free`` has, in words, or None if it fits."""
    for resource in sorted(requests):
        needed = requests[resource]
        available = free.get(resource, 0)
        if needed > 0 and needed > available:
            return (
                f"insufficient {resource} (needs {format_units(resource, needed)}, "
                f"{format_units(resource, max(available, 0))} free)"
            )
    return None


# -- taints and tolerations ----------------------------------------------------------------------------


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """core/v1 Toleration.ToleratesTaint: empty effect matches every effect, empty key with Exists every key."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    if operator == "Equal":
        return bool((toleration.get("value") or "") == (taint.get("value") or ""))
    return False


def untolerated_taint(pod: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The first NoSchedule/NoExecute taint of ``node`` that ``pod`` does not tolerate, or None."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") not in FILTER_EFFECTS:
            continue
        if not any(tolerates(toleration, taint) for toleration in tolerations):
            return dict(taint)
    return None


def describe_taint(taint: Mapping[str, Any]) -> str:
    value = taint.get("value")
    return f"{taint.get('key', '')}{'=' + str(value) if value else ''}:{taint.get('effect', '')}"


# -- node selection ------------------------------------------------------------------------------------


def matches_node_selector(pod: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """Every key=value of spec.nodeSelector is a label of ``node``."""
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in selector.items())


def requirement_matches(requirement: Mapping[str, Any], values_by_key: Mapping[str, str]) -> bool:
    """One NodeSelectorRequirement (or LabelSelectorRequirement) against labels, or against fields."""
    key = str(requirement.get("key", ""))
    operator = str(requirement.get("operator", ""))
    values = [str(v) for v in requirement.get("values") or []]
    if key not in values_by_key:
        return operator in {"NotIn", "DoesNotExist"}
    actual = values_by_key[key]
    if operator in {"In", "NotIn"}:
        return (actual in values) == (operator == "In")
    if operator in {"Gt", "Lt"}:
        return len(values) == 1 and _compare_integers(actual, operator, values[0])
    return operator == "Exists"


def _compare_integers(actual: str, operator: str, bound: str) -> bool:
    """Gt/Lt: both sides must parse as integers, else the requirement does not match."""
    try:
        have, limit = int(actual), int(bound)
    except ValueError:
        return False
    return have > limit if operator == "Gt" else have < limit


def term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """A NodeSelectorTerm: all its expressions and fields hold; an empty term matches nothing."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False
    labels = (node.get("metadata") or {}).get("labels") or {}
    node_fields = {"metadata.name": node_name(node)}
    return all(requirement_matches(r, labels) for r in expressions) and all(
        requirement_matches(r, node_fields) for r in fields
    )


def matches_required_affinity(pod: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """requiredDuringSchedulingIgnoredDuringExecution node affinity: at least one term matches (or none set)."""
    affinity = ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return True
    return any(term_matches(term, node) for term in required.get("nodeSelectorTerms") or [])


def why_not(
    pod: Mapping[str, Any], requests: Mapping[str, int], node: Mapping[str, Any], free: Resources
) -> str | None:
    """Why ``pod`` (needing ``requests``) cannot go on ``node`` with ``free`` left, in words; None if it fits."""
    taint = untolerated_taint(pod, node)
    if taint is not None:
        return f"taint {describe_taint(taint)} not tolerated"
    if not matches_node_selector(pod, node):
        return "nodeSelector does not match its labels"
    if not matches_required_affinity(pod, node):
        return "required node affinity does not match"
    return insufficient(requests, free)
