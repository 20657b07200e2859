"""Which pods a drain evicts, skips or is blocked by: ``kubectl drain``'s filter chain as a pure function.

``plan_drain`` follows staging/src/k8s.io/kubectl/pkg/drain/filters.go over raw pod JSON:

* mirror (static) pods, annotated ``kubernetes.io/config.mirror``, are skipped: the kubelet owns them;
* pods controlled by a DaemonSet are skipped: the DaemonSet controller would recreate them at once, and
  they go away with the Node (kubectl's ``--ignore-daemonsets``);
* finished pods (phase Succeeded or Failed) are skipped: they hold no resources;
* pods with an emptyDir volume block the drain unless ``delete_emptydir_data`` consents to losing it;
* pods with no controller (no ownerReference with ``controller: true``) block the drain: nothing recreates
  them once evicted.

``cluster-autoscaler.kubernetes.io/safe-to-evict: "false"`` is honoured by the cluster-autoscaler only; neither
kubectl drain nor the Eviction API looks at it. PodDisruptionBudgets are what protects pods from a drain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from controller.config import env_var

JSON = dict[str, Any]

MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
#: Honoured by the cluster-autoscaler only; a drain treats such pods as any other (see the module docs).
SAFE_TO_EVICT_ANNOTATION = "cluster-autoscaler.kubernetes.io/safe-to-evict"
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})

# -- the plan ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PodRef:
    """Which pod: namespace, name and UID (a pod recreated under the same name has another UID)."""

    namespace: str
    name: str
    uid: str = ""

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> PodRef:
        meta = pod.get("metadata") or {}
        return cls(namespace=meta.get("namespace", ""), name=meta.get("name", ""), uid=meta.get("uid", ""))

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True)
class FilteredPod:
    """A pod the drain leaves alone (skipped) or refuses to touch (blocked), and why."""

    pod: PodRef
    reason: str


@dataclasses.dataclass(frozen=True)
class DrainOptions:
    """How to drain: kubectl's consent flags, the overall timeout, and the eviction backoff.

    delete_emptydir_data: evict pods with emptyDir volumes (their data is lost): SPOT_GUARD_DELETE_EMPTYDIR_DATA.
    force: evict pods that no controller will recreate (kubectl's --force; no setting turns it on: the controller
      never evicts such a pod, an operator deletes it).
    timeout: seconds for the whole drain: evictions and waiting for the pods to be gone.
    grace_period_seconds: overrides each pod's terminationGracePeriodSeconds when set.
    backoff_initial, backoff_max: the retry delay after a 429 doubles from the first to the second.
    poll_interval: seconds between checks whether the evicted pods are gone.
    """

    delete_emptydir_data: bool = False
    force: bool = False
    timeout: float = 300.0
    grace_period_seconds: int | None = None
    backoff_initial: float = 0.1
    backoff_max: float = 10.0
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"DrainOptions.timeout must be positive seconds, got {self.timeout}")
        if self.grace_period_seconds is not None and self.grace_period_seconds < 0:
            raise ValueError(
                "DrainOptions.grace_period_seconds must be >= 0, or None for each pod's own, "
                f"got {self.grace_period_seconds}"
            )
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError(
                "DrainOptions needs 0 < backoff_initial <= backoff_max, "
                f"got backoff_initial={self.backoff_initial}, backoff_max={self.backoff_max}"
            )
        if self.poll_interval <= 0:
            raise ValueError(f"DrainOptions.poll_interval must be positive seconds, got {self.poll_interval}")


@dataclasses.dataclass(frozen=True)
class DrainPlan:
    """What a drain would do with the pods of a Node.

    to_evict: the raw pod JSON of every pod to evict.
    skipped: pods left alone on purpose (DaemonSet, mirror, finished).
    blocked: pods that need consent first (emptyDir without delete_emptydir_data, unmanaged without force);
      any blocked pod means the drain must not start.
    """

    to_evict: tuple[JSON, ...]
    skipped: tuple[FilteredPod, ...]
    blocked: tuple[FilteredPod, ...]

    @property
    def can_start(self) -> bool:
        return not self.blocked

    @property
    def evict_refs(self) -> list[PodRef]:
        return [PodRef.of(pod) for pod in self.to_evict]

    def blocked_message(self) -> str:
        """The blocked pods and why, in one line ("" when nothing blocks)."""
        return "; ".join(f"{item.pod}: {item.reason}" for item in self.blocked)


def controller_of(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference with ``controller: true``, if any (metav1.GetControllerOf)."""
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") is True:
            return dict(ref)
    return None


def is_finished(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in FINISHED_PHASES


def is_mirror(pod: Mapping[str, Any]) -> bool:
    return MIRROR_POD_ANNOTATION in ((pod.get("metadata") or {}).get("annotations") or {})


def emptydir_volumes(pod: Mapping[str, Any]) -> list[str]:
    return [v.get("name", "?") for v in (pod.get("spec") or {}).get("volumes") or [] if "emptyDir" in v]


def plan_drain(pods: Sequence[Mapping[str, Any]], options: DrainOptions | None = None) -> DrainPlan:
    """Sort the pods of a Node into evict, skip and blocked, like kubectl drain's filters."""
    options = options or DrainOptions()
    to_evict: list[JSON] = []
    skipped: list[FilteredPod] = []
    blocked: list[FilteredPod] = []
    for pod in pods:
        ref = PodRef.of(pod)
        if is_mirror(pod):
            skipped.append(FilteredPod(ref, "mirror pod (static pod of the kubelet): the kubelet owns it"))
            continue
        owner = controller_of(pod)
        if owner is not None and owner.get("kind") == "DaemonSet":
            skipped.append(
                FilteredPod(ref, f"DaemonSet pod (DaemonSet {owner.get('name', '?')}): it goes away with the node")
            )
            continue
        if is_finished(pod):
            phase = pod["status"]["phase"]
            skipped.append(FilteredPod(ref, f"finished ({phase}): holds no resources; removed with the node"))
            continue
        reasons = []
        volumes = emptydir_volumes(pod)
        if volumes and not options.delete_emptydir_data:
            reasons.append(
                f"uses emptyDir volume(s) {', '.join(volumes)} whose data an eviction deletes; "
                f"set {env_var('delete_emptydir_data')}=true to allow it"
            )
        if owner is None and not options.force:
            reasons.append(
                "has no controller, so nothing recreates it after an eviction and Spot Guard never evicts it (no "
                f"setting allows it): delete it yourself (kubectl delete pod -n {ref.namespace} {ref.name}) or run it "
                "under a controller (a Deployment, StatefulSet or Job), and the drain goes on at its next attempt"
            )
        if reasons:
            blocked.append(FilteredPod(ref, " and ".join(reasons)))
        else:
            to_evict.append(dict(pod))
    return DrainPlan(tuple(to_evict), tuple(skipped), tuple(blocked))
