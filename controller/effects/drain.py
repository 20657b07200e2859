"""Draining a Node the way ``kubectl drain`` does, through the Eviction API, on an injected clock.

Which pods are evicted is ``controller.checks.drain_plan`` (kubectl's filters, a pure function).

``Drainer.drain`` cordons the Node, evicts every pod of the plan (POST .../pods/NAME/eviction, never a
plain delete; up to 16 in flight at once, where kubectl sends them all at once, on the threads the caller
hands it as ``parallel``: the controller's ``Workers``), retries those the API
server answers 429 (a PodDisruptionBudget forbids it now) or with an error that may pass (5xx, network) with
exponential backoff and jitter (never sooner than the server's Retry-After) until the timeout, then waits, within
the same timeout, until every evicted pod is gone (deleted, or replaced by a pod of the same name with another
UID). 404 and 409 count as done.

A 403 whose cause is ``NamespaceTerminating`` (the pod's namespace is being deleted: NamespaceLifecycle refuses
every new object in it, evictions included) is no refusal for good: as kubectl drain does, the eviction is tried
again until the namespace controller has marked the pod for deletion, and then the drain waits for it to be gone.
Only a refusal that cannot pass (RBAC, an admission policy, a malformed request) ends the drain, with a message
saying what to do.
Every wait goes through ``clock.sleep(seconds, cancel)``, so a drain is cancellable and FakeClock-driven.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import urllib3
from kubernetes.client.exceptions import ApiException

from controller.adapters.kube import JSON, MERGE_PATCH, KubeRequests, list_all
from controller.checks.drain_plan import DrainOptions, DrainPlan, PodRef, plan_drain
from controller.clock import Cancellation, Clock, SystemClock
from controller.workers import EVICTION_THREADS

log = logging.getLogger(__name__)

#: Answers to an eviction after which the pod we meant is gone or going: 404 (deleted) and 409 (its UID
#: precondition failed: the name now belongs to a replacement pod).
_DONE_STATUSES = frozenset({404, 409})
#: Answers retrying cannot fix: a malformed request, or no permission to evict (but see NamespaceTerminating).
_FATAL_STATUSES = frozenset({400, 401, 403, 405, 422})
#: metav1.StatusCause type of NamespaceLifecycle's refusal (corev1.NamespaceTerminatingCause).
NAMESPACE_TERMINATING_CAUSE = "NamespaceTerminating"
#: Evictions sent at once by the controller: the threads ``controller.workers`` gives ``parallel``.
EVICTIONS_IN_FLIGHT = EVICTION_THREADS

T = TypeVar("T")
R = TypeVar("R")
#: Runs ``fn`` on each item, several at once, and returns the results in the items' order
#: (``controller.workers.ThreadWorkers.evict_in_parallel``); the drainer starts no thread of its own.
Parallel = Callable[[Callable[[PodRef], "EvictionAttempt | None"], Sequence[PodRef]], list["EvictionAttempt | None"]]


def one_at_a_time(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """The ``Parallel`` of a drainer given no threads: one eviction after another."""
    return [fn(item) for item in items]


# -- the drainer ---------------------------------------------------------------------------------------


class DrainOutcome(enum.StrEnum):
    DRAINED = "drained"
    TIMED_OUT = "timed_out"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"
    #: the API server refused an eviction in a way retrying cannot fix (400, 401, 403, 405, 422)
    FAILED = "failed"


class EvictionResult(enum.StrEnum):
    """What one eviction request came to (the ``on_event`` outcome, e.g. for an evictions-by-result metric)."""

    EVICTED = "evicted"  # 200/201: the API server accepted it; the pod is terminating
    ALREADY_GONE = "already_gone"  # 404
    REPLACED = "replaced"  # 409: the name belongs to a pod with another UID now
    DISRUPTION_BUDGET = "disruption_budget"  # 429: a PodDisruptionBudget forbids it now; retried
    ERROR = "error"  # another failure that may pass (5xx, network); retried
    NAMESPACE_TERMINATING = "namespace_terminating"  # 403: the namespace is being deleted; retried until the pod is
    # marked for deletion, then waited for
    REFUSED = "refused"  # a failure retrying cannot fix; the drain fails


@dataclasses.dataclass(frozen=True)
class DrainResult:
    """How a drain ended.

    evicted: pods whose eviction was accepted, or that were already gone ("namespace/name").
    retries: per pod, how many eviction attempts were answered with 429 or a transient error.
    remaining: pods of the plan not known to be gone when the drain ended (not evicted yet, or terminating;
      for "blocked", every pod the drain would have to remove).
    """

    node: str
    outcome: DrainOutcome
    message: str
    evicted: tuple[str, ...] = ()
    retries: Mapping[str, int] = dataclasses.field(default_factory=dict)
    remaining: tuple[str, ...] = ()
    plan: DrainPlan | None = None

    @property
    def drained(self) -> bool:
        return self.outcome is DrainOutcome.DRAINED


class DrainError(RuntimeError):
    """Cordoning, uncordoning or listing the pods of a node failed at the API server."""

    def __init__(self, message: str, node: str, status: int | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.status = status


@dataclasses.dataclass(frozen=True)
class EvictionAttempt:
    """One eviction request and its answer; ``detail`` is the API server's words (or the network error),
    ``retry_after`` the seconds it asked to wait before trying again (Retry-After), if it said."""

    pod: PodRef
    result: EvictionResult
    detail: str
    retry_after: float | None = None

    @property
    def done(self) -> bool:
        """The pod is evicted or already gone: no further eviction is needed."""
        return self.result in {EvictionResult.EVICTED, EvictionResult.ALREADY_GONE, EvictionResult.REPLACED}


EventCallback = Callable[[PodRef, EvictionResult], None]
Jitter = Callable[[float], float]


def equal_jitter(delay: float) -> float:
    """A random delay between half of ``delay`` and ``delay`` (spreads retries, keeps them growing)."""
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography


class Drainer:
    """Cordon, uncordon and drain Nodes through the API server (see the module docs)."""

    def __init__(
        self,
        kube: KubeRequests,
        clock: Clock | None = None,
        *,
        on_event: EventCallback | None = None,
        jitter: Jitter = equal_jitter,
        parallel: Parallel = one_at_a_time,
    ) -> None:
        self.kube = kube
        self.clock: Clock = clock or SystemClock()
        self.on_event = on_event
        self.jitter = jitter
        self.parallel = parallel

    # -- node schedulability ---------------------------------------------------------------------------
    def cordon(self, node: str) -> None:
        """Mark ``node`` unschedulable (spec.unschedulable=true), so that nothing new lands on it."""
        self._set_unschedulable(node, True)

    def uncordon(self, node: str) -> None:
        """Make ``node`` schedulable again (spec.unschedulable=false)."""
        self._set_unschedulable(node, False)

    def _set_unschedulable(self, node: str, value: bool) -> None:
        verb = "cordon" if value else "uncordon"
        try:
            self.kube.request(
                "PATCH", f"/api/v1/nodes/{node}", body={"spec": {"unschedulable": value}}, content_type=MERGE_PATCH
            )
        except ApiException as exc:
            raise DrainError(
                f"could not {verb} node {node}: HTTP {exc.status} {exc.reason}; {_hint(exc.status, 'patch nodes')}",
                node,
                exc.status,
            ) from exc
        log.info("%sed node %s (spec.unschedulable=%s)", verb, node, str(value).lower())

    # -- pods ------------------------------------------------------------------------------------------
    def pods_on(self, node: str) -> list[JSON]:
        """Every pod bound to ``node``, in all namespaces (raw JSON)."""
        try:
            return list_all(self.kube, "/api/v1/pods", {"fieldSelector": f"spec.nodeName={node}"}, timeout=None)
        except ApiException as exc:
            raise DrainError(
                f"could not list the pods on node {node}: HTTP {exc.status} {exc.reason}; "
                f"{_hint(exc.status, 'list pods in all namespaces')}",
                node,
                exc.status,
            ) from exc

    def evict(self, pod: PodRef, options: DrainOptions) -> EvictionAttempt:
        """One eviction request for ``pod``, its answer classified; never raises for an API or network error."""
        body: JSON = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
        }
        delete_options: JSON = {}
        if options.grace_period_seconds is not None:
            delete_options["gracePeriodSeconds"] = options.grace_period_seconds
        if pod.uid:
            delete_options["preconditions"] = {"uid": pod.uid}
        if delete_options:
            body["deleteOptions"] = delete_options
        path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/eviction"
        try:
            self.kube.request("POST", path, body=body)
            attempt = EvictionAttempt(pod, EvictionResult.EVICTED, "accepted")
            log.debug("eviction of pod %s accepted", pod)
        except ApiException as exc:
            attempt = EvictionAttempt(
                pod, _classify(exc), f"HTTP {exc.status} {exc.reason}: {_body(exc)}".strip(), _retry_after(exc)
            )
            _log_answer(attempt)
        except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:  # connection refused or reset, timeouts
            attempt = EvictionAttempt(pod, EvictionResult.ERROR, f"{type(exc).__name__}: {exc}")
            _log_answer(attempt)
        if self.on_event is not None:
            try:
                self.on_event(pod, attempt.result)
            except Exception:
                log.exception("the eviction event callback raised for pod %s (%s); ignoring it", pod, attempt.result)
        return attempt

    # -- the drain -------------------------------------------------------------------------------------
    def drain(self, node: str, options: DrainOptions | None = None, cancel: Cancellation | None = None) -> DrainResult:
        """Cordon ``node`` and evict its pods (see the module docs); never raises for a pod's eviction.

        A blocked plan returns "blocked" before the node is cordoned (unlike kubectl, which cordons first).
        Timing out, failing or being cancelled leaves the node cordoned (uncordon it to undo). Raises DrainError
        when the node cannot be cordoned or its pods listed.
        """
        options = options or DrainOptions()
        deadline = self.clock.monotonic() + options.timeout
        plan = plan_drain(self.pods_on(node), options)
        if not plan.can_start:
            return self._blocked(node, plan, "node left schedulable as it was")
        self.cordon(node)
        plan = plan_drain(self.pods_on(node), options)  # pods may have landed before the cordon took effect
        if not plan.can_start:
            return self._blocked(node, plan, "the node stays cordoned: uncordon it if the drain is abandoned")
        log.info(
            "draining node %s: %d pod(s) to evict, %d skipped (%s)",
            node,
            len(plan.to_evict),
            len(plan.skipped),
            ", ".join(f"{s.pod}: {s.reason}" for s in plan.skipped) or "none",
        )
        run = _DrainRun(self, node, options, plan, deadline, cancel)
        return run.execute()

    @staticmethod
    def _blocked(node: str, plan: DrainPlan, node_state: str) -> DrainResult:
        message = (
            f"drain of node {node} not started: {len(plan.blocked)} pod(s) need consent first: "
            f"{plan.blocked_message()}; {node_state}"
        )
        log.warning("%s", message)
        remaining = (*(str(ref) for ref in plan.evict_refs), *(str(item.pod) for item in plan.blocked))
        return DrainResult(node, DrainOutcome.BLOCKED, message, remaining=remaining, plan=plan)


@dataclasses.dataclass
class _DrainRun:
    """The state of one drain: which pods still need an eviction, which are terminating, the retries."""

    drainer: Drainer
    node: str
    options: DrainOptions
    plan: DrainPlan
    deadline: float
    cancel: Cancellation | None
    pending: list[PodRef] = dataclasses.field(default_factory=list)
    evicted: list[PodRef] = dataclasses.field(default_factory=list)
    retries: dict[str, int] = dataclasses.field(default_factory=dict)
    last_error: dict[str, str] = dataclasses.field(default_factory=dict)
    retry_after: float = 0.0  # the longest Retry-After of the last pass
    terminating_namespace: set[str] = dataclasses.field(default_factory=set)  # pods already reported as such

    def execute(self) -> DrainResult:
        self.pending = self.plan.evict_refs
        attempt = 0
        while self.pending:
            if self._cancelled():
                return self._end(DrainOutcome.CANCELLED, self._cancel_message())
            refused = self._evict_pending()
            if refused is not None:
                return self._end(DrainOutcome.FAILED, refused)
            if not self.pending:
                break
            delay = self.drainer.jitter(min(self.options.backoff_max, self.options.backoff_initial * 2**attempt))
            delay = max(delay, min(self.retry_after, self.options.backoff_max))
            attempt += 1
            if not self._sleep_until_deadline(delay):
                if self._cancelled():
                    return self._end(DrainOutcome.CANCELLED, self._cancel_message())
                return self._end(DrainOutcome.TIMED_OUT, self._eviction_timeout_message())
        return self._wait_until_gone()

    def _evict_pending(self) -> str | None:
        """One pass over the pods still to evict, up to ``EVICTIONS_IN_FLIGHT`` at once (kubectl drain sends every
        pod's eviction at once); a message if one was refused for good. A cancellation stops the evictions not
        sent yet."""

        def send(pod: PodRef) -> EvictionAttempt | None:
            return None if self._cancelled() else self.drainer.evict(pod, self.options)

        attempts = self.drainer.parallel(send, self.pending)
        still: list[PodRef] = []
        refusal: str | None = None
        self.retry_after = max((a.retry_after or 0.0 for a in attempts if a is not None), default=0.0)
        marked = self._marked_for_deletion(
            [p for p, a in zip(self.pending, attempts, strict=True) if a and a.result is _NS_TERMINATING]
        )
        for pod, attempt in zip(self.pending, attempts, strict=True):
            if attempt is None:
                still.append(pod)
            elif attempt.done or pod in marked:
                self.evicted.append(pod)
                if attempt.result is EvictionResult.EVICTED:
                    log.info("evicted pod %s from node %s", pod, self.node)
                elif pod in marked:
                    log.info(
                        "pod %s on node %s is being deleted with its namespace; waiting for it to be gone",
                        pod,
                        self.node,
                    )
            elif attempt.result is EvictionResult.REFUSED:
                refusal = refusal or _refusal_message(self.node, pod, attempt.detail)
            else:
                key = str(pod)
                if attempt.result is _NS_TERMINATING and key not in self.terminating_namespace:
                    self.terminating_namespace.add(key)
                    log.info(
                        "eviction of pod %s from node %s refused for now (403): namespace %s is being deleted; "
                        "trying again until the pod is marked for deletion, then waiting for it to be gone (as kubectl "
                        "drain does), within the drain's %g s timeout",
                        pod,
                        self.node,
                        pod.namespace,
                        self.options.timeout,
                    )
                if attempt.result is EvictionResult.DISRUPTION_BUDGET and key not in self.retries:
                    log.info(
                        "eviction of pod %s from node %s refused for now (429): a PodDisruptionBudget forbids it; "
                        "retrying with backoff until the drain's %g s timeout",
                        pod,
                        self.node,
                        self.options.timeout,
                    )
                self.retries[key] = self.retries.get(key, 0) + 1
                self.last_error[key] = attempt.detail
                still.append(pod)
        if refusal is not None:
            self.pending = [p for p in self.pending if p not in self.evicted]
            return refusal
        self.pending = still
        return None

    def _marked_for_deletion(self, pods: Sequence[PodRef]) -> set[PodRef]:
        """Which of ``pods`` (refused because their namespace is being deleted) are gone or marked for deletion
        already: no eviction can pass for them any more, and none is needed."""
        if not pods:
            return set()
        try:
            present = {PodRef.of(p): p for p in self.drainer.pods_on(self.node)}
        except DrainError as exc:
            log.warning("%s; asking again after the next eviction attempt", exc)
            return set()
        return {
            pod for pod in pods if pod not in present or (present[pod].get("metadata") or {}).get("deletionTimestamp")
        }

    def _wait_until_gone(self) -> DrainResult:
        waiting = list(self.evicted)
        while True:
            try:
                present = {PodRef.of(p) for p in self.drainer.pods_on(self.node)}
                waiting = [pod for pod in waiting if pod in present]
            except DrainError as exc:
                log.warning("%s; checking again in %g s", exc, self.options.poll_interval)
            if not waiting:
                message = f"drained node {self.node}: {len(self.evicted)} pod(s) evicted and gone" + (
                    f", {len(self.plan.skipped)} left alone (DaemonSet, mirror or finished)"
                    if self.plan.skipped
                    else ""
                )
                log.info("%s", message)
                return self._end(DrainOutcome.DRAINED, message, remaining=[])
            if not self._sleep_until_deadline(self.options.poll_interval):
                if self._cancelled():
                    return self._end(DrainOutcome.CANCELLED, self._cancel_message(), remaining=waiting)
                names = ", ".join(str(p) for p in waiting)
                message = (
                    f"drain of node {self.node} timed out after {self.options.timeout:g} s: every eviction was "
                    f"accepted but {len(waiting)} pod(s) are still terminating: {names}; check their "
                    "terminationGracePeriodSeconds, finalizers and the node's kubelet"
                )
                return self._end(DrainOutcome.TIMED_OUT, message, remaining=waiting)

    def _sleep_until_deadline(self, seconds: float) -> bool:
        """Sleep ``seconds`` but not past the deadline; False if the deadline has passed or cancel fired."""
        clock = self.drainer.clock
        left = self.deadline - clock.monotonic()
        if left <= 0:
            return False
        if clock.sleep(min(seconds, left), self.cancel):
            return False
        return not self._cancelled()

    def _cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.cancelled

    def _cancel_message(self) -> str:
        reason = self.cancel.reason if self.cancel is not None else None
        return (
            f"drain of node {self.node} cancelled ({reason}) after {len(self.evicted)} eviction(s); "
            "the node stays cordoned: uncordon it or drain it again"
        )

    def _eviction_timeout_message(self) -> str:
        details = ", ".join(
            f"{pod} ({self.retries.get(str(pod), 0)} attempts refused, last: {self.last_error.get(str(pod), 'none')})"
            for pod in self.pending
        )
        return (
            f"drain of node {self.node} timed out after {self.options.timeout:g} s with {len(self.pending)} pod(s) "
            f"not evicted: {details}; check the PodDisruptionBudgets covering them "
            "(kubectl get pdb -A) or raise SPOT_GUARD_DRAIN_TIMEOUT"
        )

    def _end(self, outcome: DrainOutcome, message: str, remaining: Sequence[PodRef] | None = None) -> DrainResult:
        if remaining is None:  # ended before the wait: the evicted pods are not known to be gone yet
            remaining = [*self.pending, *self.evicted]
        if outcome is not DrainOutcome.DRAINED:
            log.warning("%s", message)
        return DrainResult(
            node=self.node,
            outcome=outcome,
            message=message,
            evicted=tuple(str(p) for p in self.evicted),
            retries=dict(self.retries),
            remaining=tuple(str(p) for p in remaining),
            plan=self.plan,
        )


_NS_TERMINATING = EvictionResult.NAMESPACE_TERMINATING


def _refusal_message(node: str, pod: PodRef, detail: str) -> str:
    """Why a drain ended on a refusal that retrying cannot fix, and what to do about it."""
    head = f"drain of node {node} failed: the API server refused to evict pod {pod} ({detail}); retrying will not help"
    if "cannot create resource" in detail and "pods/eviction" in detail:
        return (
            f"{head}: RBAC does not let the controller evict: grant its ServiceAccount create on pods/eviction "
            "(manifests/controller-rbac.yaml), and the drain is tried again on its next attempt"
        )
    if detail.startswith("HTTP 401"):
        return f"{head}: the API server did not accept the controller's credentials: check its ServiceAccount token"
    return (
        f"{head}: it is not RBAC's (no 'cannot create resource'); an admission webhook or policy, or the pod itself, "
        "refused it: fix what the message names, or evict the pod yourself (kubectl drain), and the drain is "
        "tried again on its next attempt"
    )


def _hint(status: int | None, permission: str) -> str:
    """What to do about a failed node or pod-list request."""
    if status in {401, 403}:
        return f"check that the controller's ServiceAccount may {permission}"
    if status == 404:
        return "check that the node still exists"
    return "the API server may be unavailable or overloaded; try again later"


def _classify(exc: ApiException) -> EvictionResult:
    status = exc.status or 0
    if status == 404:
        return EvictionResult.ALREADY_GONE
    if status == 409:
        return EvictionResult.REPLACED
    if status == 429:
        return EvictionResult.DISRUPTION_BUDGET
    if status == 403 and _namespace_terminating(exc):
        return EvictionResult.NAMESPACE_TERMINATING
    if status in _FATAL_STATUSES:
        return EvictionResult.REFUSED
    return EvictionResult.ERROR


def _status(exc: ApiException) -> JSON:
    """The metav1.Status of an error answer ({} when the body is not one)."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        status = json.loads(str(body or ""))
    except ValueError:
        return {}
    return status if isinstance(status, dict) else {}


def _namespace_terminating(exc: ApiException) -> bool:
    """NamespaceLifecycle's refusal: a cause of type NamespaceTerminating (as kubectl checks it), or, from a server
    that sends no causes, its sentence."""
    status = _status(exc)
    details = status.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    if isinstance(causes, list) and any(
        isinstance(c, dict) and c.get("reason") == NAMESPACE_TERMINATING_CAUSE for c in causes
    ):
        return True
    return "because it is being terminated" in str(status.get("message", ""))


def _retry_after(exc: ApiException) -> float | None:
    """Seconds the server asked to wait (Status details.retryAfterSeconds, or a Retry-After header in seconds)."""
    details = _status(exc).get("details")
    seconds = details.get("retryAfterSeconds") if isinstance(details, dict) else None
    if seconds is None and exc.headers is not None:
        seconds = exc.headers.get("Retry-After")
    try:
        value = float(seconds) if seconds is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and 0 <= value <= 3600 else None


def _log_answer(attempt: EvictionAttempt) -> None:
    pod, result = attempt.pod, attempt.result
    if result is EvictionResult.DISRUPTION_BUDGET:
        log.debug("eviction of pod %s refused for now (429): a PodDisruptionBudget forbids it", pod)
    elif result is EvictionResult.ERROR:
        log.warning("eviction of pod %s failed (%s); will retry", pod, attempt.detail)
    elif result is EvictionResult.NAMESPACE_TERMINATING:
        log.debug("eviction of pod %s refused for now (403): its namespace is being deleted", pod)
    elif result is EvictionResult.REFUSED:
        log.error("eviction of pod %s refused for good (%s)", pod, attempt.detail)
    else:
        log.info("eviction of pod %s counted as done: %s (%s)", pod, result, attempt.detail)


def _body(exc: ApiException) -> str:
    """The API server's message from an error answer (its Status JSON's message when there is one)."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    text = str(body or "")
    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or text)[:300]


class NodeDrains:
    """Drain and uncordon whole nodes for the controllers: one drain's options, the leader's cancellation,
    and a node that is already gone counted as drained."""

    def __init__(
        self,
        drainer: Drainer,
        options: DrainOptions,
        cancel: Cancellation,
        on_drain: Callable[[str], None] | None = None,
    ) -> None:
        self.drainer = drainer
        self.options = options
        self.cancel = cancel
        self.on_drain = on_drain  # told each drain's outcome (metrics)

    def drain(self, node: str) -> bool:
        """Cordon and drain ``node``; True when every evictable pod is gone (or the node is)."""
        try:
            result = self.drainer.drain(node, self.options, self.cancel)
        except DrainError as exc:
            if exc.status == 404:
                log.info("node %s is already gone; nothing to drain", node)
                return True
            raise
        if self.on_drain is not None:
            self.on_drain(str(result.outcome))
        if not result.drained:
            log.warning("drain of node %s ended %s: %s", node, result.outcome, result.message)
        return bool(result.drained)

    def uncordon(self, node: str) -> None:
        """Make ``node`` schedulable again (a node that is gone needs nothing)."""
        try:
            self.drainer.uncordon(node)
        except DrainError as exc:
            if exc.status != 404:
                raise
