"""The Drainer against an in-memory API server on a FakeClock: evictions, 429 backoff, timeouts, cancellation."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from controller.adapters.kube import MERGE_PATCH
from controller.checks.drain_plan import DrainOptions, PodRef
from controller.clock import Cancellation, FakeClock
from controller.effects.drain import (
    EVICTIONS_IN_FLIGHT,
    Drainer,
    DrainError,
    DrainOutcome,
    EvictionResult,
    equal_jitter,
)
from controller.workers import ThreadWorkers
from tests.unit.controller.fake_drain_api import FakeDrainApi, api_error
from tests.unit.controller.k8s_objects import JSON, pod

NODE = "od-1"


def no_jitter(delay: float) -> float:
    return delay


class Events:
    """Records the on_event calls."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, EvictionResult]] = []

    def __call__(self, ref: PodRef, result: EvictionResult) -> None:
        self.seen.append((str(ref), result))


def web(name: str, grace: int = 1, **kwargs: Any) -> JSON:
    """A pod on NODE that kwok deletes ``grace`` seconds after its eviction."""
    item = pod(name, **kwargs)
    item["spec"]["terminationGracePeriodSeconds"] = grace
    return item


#: The controller's eviction threads (``controller.workers``), as the controller hands them to its drainers.
EVICTION_THREADS = ThreadWorkers(lanes={})


def make(clock: FakeClock, pods: list[JSON]) -> tuple[FakeDrainApi, Drainer, Events]:
    api = FakeDrainApi(clock, pods)
    events = Events()
    return (
        api,
        Drainer(api, clock, on_event=events, jitter=no_jitter, parallel=EVICTION_THREADS.evict_in_parallel),
        events,
    )


def test_drain_cordons_evicts_waits_until_gone_and_leaves_the_daemonset_pod(clock: FakeClock) -> None:
    api, drainer, events = make(clock, [web("web-1"), web("web-2", grace=5), web("agent", owner_kind="DaemonSet")])

    result = drainer.drain(NODE, DrainOptions(timeout=60))

    assert result.outcome is DrainOutcome.DRAINED and result.drained
    assert api.unschedulable[NODE] is True
    assert api.patches == [(NODE, {"spec": {"unschedulable": True}}, MERGE_PATCH)]
    assert api.names() == {"agent"}
    assert sorted(result.evicted) == ["default/web-1", "default/web-2"]
    assert result.remaining == ()
    assert sorted(events.seen) == [
        ("default/web-1", EvictionResult.EVICTED),
        ("default/web-2", EvictionResult.EVICTED),
    ]
    assert "2 pod(s) evicted and gone" in result.message and "1 left alone" in result.message


def test_eviction_is_a_policy_v1_eviction_with_the_uid_and_optional_grace_period(clock: FakeClock) -> None:
    api, drainer, _ = make(clock, [web("web-1", uid="u-42")])

    drainer.drain(NODE, DrainOptions(grace_period_seconds=0))

    assert api.evictions == [
        {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": "web-1", "namespace": "default"},
            "deleteOptions": {"gracePeriodSeconds": 0, "preconditions": {"uid": "u-42"}},
        }
    ]


def test_pod_refused_by_its_budget_a_few_times_is_retried_with_growing_backoff(clock: FakeClock) -> None:
    api, drainer, events = make(clock, [web("web-1")])
    api.scripted["web-1"] = [429, 429, 429]

    result = drainer.drain(NODE, DrainOptions(timeout=60, backoff_initial=0.1, backoff_max=10))

    assert result.outcome is DrainOutcome.DRAINED
    assert result.retries == {"default/web-1": 3}
    assert clock.slept[:3] == [0.1, 0.2, 0.4]
    assert [r for _, r in events.seen] == [EvictionResult.DISRUPTION_BUDGET] * 3 + [EvictionResult.EVICTED]
    assert api.names() == set()


def test_pod_its_budget_never_allows_times_out_naming_it_after_capped_backoff(clock: FakeClock) -> None:
    api, drainer, _ = make(clock, [web("guarded"), web("free")])
    api.guarded.add("guarded")

    result = drainer.drain(NODE, DrainOptions(timeout=60, backoff_initial=0.1, backoff_max=10))

    assert result.outcome is DrainOutcome.TIMED_OUT
    assert "default/guarded" in result.message and "PodDisruptionBudget" in result.message
    assert "default/free" not in result.message.split("not evicted:")[1]
    assert "default/guarded" in result.remaining
    assert result.evicted == ("default/free",)
    backoff = clock.slept
    assert backoff[:8] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10]
    assert max(backoff) == 10 and backoff[-2] == 10
    assert sum(backoff) == pytest.approx(60)  # it stops at the deadline, not one backoff later
    assert result.retries["default/guarded"] == len(backoff) + 1
    assert "guarded" in api.names()


def test_one_pass_tries_every_pod_before_backing_off(clock: FakeClock) -> None:
    api, drainer, events = make(clock, [web("a"), web("b"), web("c")])
    api.scripted["a"] = [429]
    api.scripted["b"] = [429]

    drainer.drain(NODE, DrainOptions(timeout=60))

    first_pass = [name for name, _ in events.seen[:3]]
    assert sorted(first_pass) == ["default/a", "default/b", "default/c"]
    assert clock.slept[0] == 0.1  # one backoff for the whole pass, then both retried


def test_pods_that_outlive_the_timeout_while_terminating_are_named(clock: FakeClock) -> None:
    api, drainer, _ = make(clock, [web("slow", grace=600), web("quick", grace=1)])

    result = drainer.drain(NODE, DrainOptions(timeout=60))

    assert result.outcome is DrainOutcome.TIMED_OUT
    assert result.remaining == ("default/slow",)
    assert "still terminating: default/slow" in result.message
    assert api.names() == {"slow"}


def test_gone_and_replaced_pods_count_as_evicted(clock: FakeClock) -> None:
    api, drainer, events = make(clock, [web("gone"), web("db-0", owner_kind="StatefulSet", uid="old")])
    api.scripted["gone"] = [404]
    api.scripted["db-0"] = [409]

    result = drainer.drain(NODE)

    assert result.outcome is DrainOutcome.DRAINED
    assert sorted(events.seen) == [
        ("default/db-0", EvictionResult.REPLACED),
        ("default/gone", EvictionResult.ALREADY_GONE),
    ]


def test_a_replacement_with_the_same_name_but_another_uid_does_not_hold_up_the_wait(clock: FakeClock) -> None:
    api, drainer, _ = make(clock, [web("db-0", owner_kind="StatefulSet", uid="old", grace=1000)])
    original_evict = api._evict

    def evict_then_replace(namespace: str, name: str, body: JSON) -> JSON:
        answer = original_evict(namespace, name, body)
        api.deleted_at.clear()
        api.add(web("db-0", owner_kind="StatefulSet", uid="new"))  # the StatefulSet recreated it at once
        return answer

    api._evict = evict_then_replace  # type: ignore[method-assign]

    result = drainer.drain(NODE, DrainOptions(timeout=60))

    assert result.outcome is DrainOutcome.DRAINED


def test_transient_api_errors_are_retried(clock: FakeClock) -> None:
    api, drainer, events = make(clock, [web("web-1")])
    api.scripted["web-1"] = [500, 500]

    result = drainer.drain(NODE)

    assert result.outcome is DrainOutcome.DRAINED
    assert [r for _, r in events.seen] == [EvictionResult.ERROR, EvictionResult.ERROR, EvictionResult.EVICTED]


def test_forbidden_eviction_fails_at_once_pointing_at_rbac(clock: FakeClock) -> None:
    api, drainer, _ = make(clock, [web("web-1")])
    api.scripted["web-1"] = [403]

    result = drainer.drain(NODE, DrainOptions(timeout=60))

    assert result.outcome is DrainOutcome.FAILED
    assert "default/web-1" in result.message and "RBAC" in result.message
    assert len(api.evictions) == 1 and clock.slept == []


def test_an_rbac_refusal_says_which_permission_to_grant_and_where(clock: FakeClock) -> None:
    api, drainer, _ = make(clock, [web("web-1")])
    api.scripted["web-1"] = [403]
    api.messages = {  # type: ignore[attr-defined]
        "web-1": 'pods "web-1" is forbidden: User "system:serviceaccount:kube-system:spotguard-controller" cannot '
        'create resource "pods/eviction" in API group "" in the namespace "default"'
    }
    real = api._evict

    def evict(namespace: str, name: str, body: JSON) -> JSON:
        try:
            return real(namespace, name, body)
        except ApiException as exc:
            raise api_error(403, api.messages[name]) from exc  # type: ignore[attr-defined]

    api._evict = evict  # type: ignore[method-assign]
    result = drainer.drain(NODE, DrainOptions(timeout=60))

    assert result.outcome is DrainOutcome.FAILED
    assert "grant its ServiceAccount create on pods/eviction (manifests/controller-rbac.yaml)" in result.message


def test_a_pod_of_a_namespace_being_deleted_is_waited_out_as_kubectl_does(clock: FakeClock) -> None:
    """403 NamespaceTerminating: retried until the namespace controller marks the pod, then waited until gone."""
    doomed = web("doomed", namespace="leaving")
    api, drainer, events = make(clock, [web("web-1"), doomed])
    start = clock.monotonic()
    api.terminating["leaving"] = (start + 7.0, start + 12.0)  # marked after 7 s, gone after 12 s

    result = drainer.drain(NODE, DrainOptions(timeout=60, backoff_initial=1.0, backoff_max=4.0))

    assert result.outcome is DrainOutcome.DRAINED, result.message
    assert set(result.evicted) == {"default/web-1", "leaving/doomed"}
    assert clock.monotonic() - start >= 12.0, "drained once the pod was gone, not before"
    refused = [r for p, r in events.seen if p == "leaving/doomed"]
    assert set(refused) == {EvictionResult.NAMESPACE_TERMINATING} and len(refused) >= 3, "tried again meanwhile"
    assert "leaving/doomed" not in api.names()


def test_a_namespace_that_is_not_deleted_in_time_times_out_naming_the_pod(clock: FakeClock) -> None:
    api, drainer, _ = make(clock, [web("stuck", namespace="leaving")])
    api.terminating["leaving"] = (clock.monotonic() + 1000.0, clock.monotonic() + 2000.0)

    result = drainer.drain(NODE, DrainOptions(timeout=30, backoff_initial=1.0, backoff_max=4.0))

    assert result.outcome is DrainOutcome.TIMED_OUT
    assert "leaving/stuck" in result.message and "being terminated" in result.message


def test_the_servers_retry_after_is_respected(clock: FakeClock) -> None:
    api, drainer, _ = make(clock, [web("web-1")])
    real = api._evict
    answers = [api_error(429, "too many requests", {"retryAfterSeconds": 3})]

    def evict(namespace: str, name: str, body: JSON) -> JSON:
        if answers:
            raise answers.pop()
        return real(namespace, name, body)

    api._evict = evict  # type: ignore[method-assign]
    result = drainer.drain(NODE, DrainOptions(timeout=60, backoff_initial=0.1, backoff_max=10.0))

    assert result.outcome is DrainOutcome.DRAINED
    assert clock.slept[0] == 3.0, "waited as long as the server asked, not the 0.1 s backoff"


def test_blocked_plan_touches_nothing_and_names_the_pod_and_the_consent(clock: FakeClock) -> None:
    api, drainer, _ = make(clock, [web("web-1"), web("debug", owner_kind=None)])

    result = drainer.drain(NODE)

    assert result.outcome is DrainOutcome.BLOCKED
    assert "default/debug" in result.message and "no setting allows it" in result.message
    assert "kubectl delete pod -n default debug" in result.message
    assert api.patches == [] and api.evictions == []
    assert api.unschedulable[NODE] is False


def test_cancellation_during_a_pass_stops_further_evictions(clock: FakeClock) -> None:
    """A pass sends up to EVICTIONS_IN_FLIGHT evictions at once: those sent before the cancellation are answered,
    the rest are not sent, and no pod is tried again."""
    names = [f"p{index:02}" for index in range(3 * EVICTIONS_IN_FLIGHT)]
    api, drainer, _ = make(clock, [web(name) for name in names])
    api.guarded.update(names)
    cancel = Cancellation()

    def cancel_on_first_refusal(ref: PodRef, result: EvictionResult) -> None:
        cancel.cancel("lost leadership")

    drainer.on_event = cancel_on_first_refusal

    result = drainer.drain(NODE, DrainOptions(timeout=60), cancel)

    assert result.outcome is DrainOutcome.CANCELLED
    assert "lost leadership" in result.message and "cordoned" in result.message
    sent = [body["metadata"]["name"] for body in api.evictions]
    assert 1 <= len(sent) < len(names) and len(set(sent)) == len(sent), "each pod tried once at most, not all"
    assert sorted(result.remaining) == [f"default/{name}" for name in names]


def test_evictions_are_sent_several_at_once(clock: FakeClock) -> None:
    """As kubectl drain sends them: one after another on a busy API server, each pod's grace period began only at
    its own eviction (the 50-pod drain benchmark: up to 10.3 s against its 10 s target)."""
    api, drainer, _ = make(clock, [web(f"p{index}") for index in range(4)])
    all_in_flight = threading.Barrier(4, timeout=5.0)
    answer = api.request

    def request(method: str, path: str, *args: Any, **kwargs: Any) -> JSON:
        if path.endswith("/eviction"):
            all_in_flight.wait()  # raises BrokenBarrierError after 5 s unless all 4 are in flight at once
        return answer(method, path, *args, **kwargs)

    api.request = request  # type: ignore[method-assign]

    result = drainer.drain(NODE, DrainOptions(timeout=60))

    assert result.outcome is DrainOutcome.DRAINED, result.message
    assert sorted(result.evicted) == [f"default/p{index}" for index in range(4)]


class CancellingClock(FakeClock):
    """A FakeClock on which ``cancel`` fires during the first sleep (as a SIGTERM would, from another thread)."""

    def __init__(self, cancel: Cancellation) -> None:
        super().__init__()
        self.cancel = cancel

    def sleep(self, seconds: float, cancel: Cancellation | None = None) -> bool:
        self.cancel.cancel("shutting down")
        return super().sleep(seconds, cancel)


def test_cancellation_while_waiting_for_terminating_pods_ends_the_wait() -> None:
    cancel = Cancellation()
    clock = CancellingClock(cancel)
    api, drainer, _ = make(clock, [web("slow", grace=600)])
    assert "slow" in api.names()

    result = drainer.drain(NODE, DrainOptions(timeout=900), cancel)

    assert result.outcome is DrainOutcome.CANCELLED
    assert result.evicted == ("default/slow",) and result.remaining == ("default/slow",)
    assert len(clock.slept) <= 1


def test_a_failing_pod_list_while_waiting_is_retried(clock: FakeClock) -> None:
    api, drainer, _ = make(clock, [web("web-1", grace=5)])
    api.list_failures_after_eviction = 2

    result = drainer.drain(NODE, DrainOptions(timeout=60))

    assert result.outcome is DrainOutcome.DRAINED
    assert api.list_failures_after_eviction == 0


def test_cancelled_before_it_starts_evicts_nothing(clock: FakeClock) -> None:
    api, drainer, _ = make(clock, [web("a")])
    cancel = Cancellation()
    cancel.cancel("shutting down")

    result = drainer.drain(NODE, cancel=cancel)

    assert result.outcome is DrainOutcome.CANCELLED
    assert api.evictions == []


def test_uncordon_makes_the_node_schedulable_again(clock: FakeClock) -> None:
    api, drainer, _ = make(clock, [])
    drainer.cordon(NODE)

    drainer.uncordon(NODE)

    assert api.unschedulable[NODE] is False
    assert api.patches[-1] == (NODE, {"spec": {"unschedulable": False}}, MERGE_PATCH)


def test_cordoning_a_missing_node_says_which_node(clock: FakeClock) -> None:
    _, drainer, _ = make(clock, [])

    with pytest.raises(DrainError, match="could not cordon node ghost: HTTP 404") as failure:
        drainer.cordon("ghost")

    assert failure.value.node == "ghost" and failure.value.status == 404


def test_pods_on_follows_pagination_and_only_returns_that_nodes_pods(clock: FakeClock) -> None:
    api, drainer, _ = make(clock, [web(f"p{i}") for i in range(5)] + [web("elsewhere", node="spot-1")])
    api.page_size = 2

    names = sorted(p["metadata"]["name"] for p in drainer.pods_on(NODE))

    assert names == ["p0", "p1", "p2", "p3", "p4"]


def test_default_jitter_keeps_each_delay_between_half_and_all_of_it() -> None:
    delays = [equal_jitter(8.0) for _ in range(200)]

    assert all(4.0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 1
