"""The Node informer: list, then watch from the list's resourceVersion; re-list only on 410 Gone."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from controller.adapters.kube import Informer, WatchCache, wait_until_synced
from controller.clock import Cancellation
from controller.model.node import NodeView
from controller.model.sgfe import FallbackEvent


def _node(name: str, rv: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": rv, "annotations": annotations or {}},
        "spec": {"providerID": f"aws:///us-east-1a/i-{name}"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


class FakeKube:
    """Answers LISTs from ``lists`` and watches from ``watches`` (each a list of events or an exception)."""

    def __init__(self, lists: list[dict[str, Any]], watches: list[list[dict[str, Any]] | Exception]) -> None:
        self.lists = lists
        self.watches = watches
        self.requests: list[tuple[str, Mapping[str, str | int]]] = []
        self.stop = threading.Event()

    def request(self, method: str, path: str, query: Mapping[str, str | int] | None = None, **_: Any) -> dict[str, Any]:
        self.requests.append(("LIST", dict(query or {})))
        return self.lists.pop(0)

    def stream(self, path: str, query: Mapping[str, str | int], timeout: float) -> Iterator[dict[str, Any]]:
        self.requests.append(("WATCH", dict(query)))
        if not self.watches:
            self.stop.set()
            return
        item = self.watches.pop(0)
        if isinstance(item, Exception):
            raise item
        yield from item


def _run(kube: FakeKube) -> tuple[Informer, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    informer = Informer(kube, lambda kind, node: seen.append((kind, node.name)), backoff=lambda n: 0.0)  # type: ignore[arg-type]
    informer.run(kube.stop)
    return informer, seen


def test_watch_resumes_from_the_list_and_bookmarks_without_listing_again() -> None:
    kube = FakeKube(
        lists=[{"metadata": {"resourceVersion": "10"}, "items": [_node("a", "9")]}],
        watches=[
            [
                {"type": "ADDED", "object": _node("b", "11")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
            ],
            [{"type": "MODIFIED", "object": _node("a", "16", {"spotguard.io/rebalance-notice-time": "x"})}],
        ],
    )
    informer, seen = _run(kube)
    assert [kind for kind, _ in kube.requests] == ["LIST", "WATCH", "WATCH", "WATCH"]
    assert kube.requests[1][1]["resourceVersion"] == "10"
    assert kube.requests[2][1]["resourceVersion"] == "15", "resumed from the bookmark"
    assert kube.requests[3][1]["resourceVersion"] == "16"
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a")]
    assert informer.nodes["a"].annotations == {"spotguard.io/rebalance-notice-time": "x"}


def test_410_gone_relists_and_reports_what_changed_meanwhile() -> None:
    kube = FakeKube(
        lists=[
            {"metadata": {"resourceVersion": "10"}, "items": [_node("a", "9"), _node("b", "9")]},
            {"metadata": {"resourceVersion": "50"}, "items": [_node("a", "40"), _node("c", "41")]},
        ],
        watches=[[{"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}}], []],
    )
    informer, seen = _run(kube)
    assert [kind for kind, _ in kube.requests] == ["LIST", "WATCH", "LIST", "WATCH", "WATCH"]
    assert ("DELETED", "b") in seen and ("MODIFIED", "a") in seen and ("ADDED", "c") in seen
    assert set(informer.nodes) == {"a", "c"}
    assert kube.requests[3][1]["resourceVersion"] == "50"


def test_api_server_errors_back_off_and_resume_without_relisting() -> None:
    kube = FakeKube(
        lists=[{"metadata": {"resourceVersion": "10"}, "items": []}],
        watches=[ApiException(status=503, reason="Service Unavailable"), ConnectionResetError("reset by peer"), []],
    )
    _run(kube)
    assert [kind for kind, _ in kube.requests].count("LIST") == 1
    assert all(q.get("resourceVersion") == "10" for kind, q in kube.requests if kind == "WATCH")


def test_node_view_keeps_only_what_the_controller_needs() -> None:
    node = _node("a", "1", {"spotguard.io/instance-id": "i-1", "kubectl.kubernetes.io/last-applied": "{...}"})
    node["spec"]["taints"] = [{"key": "k", "value": "v", "effect": "NoSchedule", "timeAdded": "t"}]
    node["metadata"]["deletionTimestamp"] = "2026-11-21T10:00:00Z"
    view = NodeView.from_json(node)
    assert view.annotations == {"spotguard.io/instance-id": "i-1"}
    assert view.taints == ({"key": "k", "value": "v", "effect": "NoSchedule"},)
    assert view.ready and view.deleting


class _Script:
    """A watch whose events are interleaved with steps of the test (``callable`` items run in between)."""

    def __init__(self, items: list[dict[str, Any] | Callable[[], None]]) -> None:
        self.items = items

    def events(self) -> Iterator[dict[str, Any]]:
        for item in self.items:
            if callable(item):
                item()
            else:
                yield item


def _cache(script: _Script, clock: list[float]) -> tuple[WatchCache[NodeView], FakeKube]:
    kube = FakeKube(lists=[{"metadata": {"resourceVersion": "10"}, "items": [_node("a", "9")]}], watches=[])
    kube.stream = lambda path, query, timeout: script.events()  # type: ignore[method-assign]
    cache: WatchCache[NodeView] = WatchCache(
        kube,  # type: ignore[arg-type]
        "/api/v1/nodes",
        NodeView.from_json,
        lambda kind, item: None,
        what="node",
        backoff=lambda n: 0.0,
        monotonic=lambda: clock[0],
    )
    return cache, kube


def _run_once(cache: WatchCache[NodeView], kube: FakeKube) -> None:
    cache._list()
    cache._watch(kube.stop)


def test_own_writes_are_read_back_at_once_and_older_events_do_not_hide_them() -> None:
    clock = [100.0]
    mine = NodeView.from_json(_node("a", "12", {"spotguard.io/replacement": "mine"}))
    looked: list[dict[str, str]] = []

    def look() -> None:
        looked.append(dict(cache.snapshot()["a"].annotations))

    script = _Script(
        [
            lambda: cache.remember("a", "12", mine),
            look,  # before the watch has anything
            {"type": "MODIFIED", "object": _node("a", "11", {"other": "older"})},
            look,  # an event older than the write
            {"type": "MODIFIED", "object": _node("a", "12", {"spotguard.io/replacement": "mine"})},
            {"type": "MODIFIED", "object": _node("a", "13", {"spotguard.io/replacement": "theirs"})},
            look,  # newer than the write: shown
        ]
    )
    cache, kube = _cache(script, clock)
    _run_once(cache, kube)

    assert looked == [
        {"spotguard.io/replacement": "mine"},
        {"spotguard.io/replacement": "mine"},
        {"spotguard.io/replacement": "theirs"},
    ]


def test_a_write_the_watch_delivered_first_pins_nothing() -> None:
    clock = [100.0]
    mine = NodeView.from_json(_node("a", "12", {"spotguard.io/replacement": "mine"}))
    script = _Script(
        [
            {"type": "MODIFIED", "object": _node("a", "12", {"spotguard.io/replacement": "mine"})},
            lambda: cache.remember("a", "12", mine),
            {"type": "MODIFIED", "object": _node("a", "13", {"spotguard.io/replacement": "theirs"})},
        ]
    )
    cache, kube = _cache(script, clock)
    _run_once(cache, kube)

    assert cache.snapshot()["a"].annotations == {"spotguard.io/replacement": "theirs"}


def test_a_pin_lapses_so_a_lost_event_cannot_freeze_an_object() -> None:
    clock = [100.0]
    mine = NodeView.from_json(_node("a", "12", {"spotguard.io/replacement": "mine"}))

    def later() -> None:
        clock[0] += 6.0

    script = _Script(
        [
            lambda: cache.remember("a", "12", mine),
            later,
            {"type": "MODIFIED", "object": _node("a", "20", {"spotguard.io/replacement": "after-a-gap"})},
        ]
    )
    cache, kube = _cache(script, clock)
    _run_once(cache, kube)

    assert cache.snapshot()["a"].annotations == {"spotguard.io/replacement": "after-a-gap"}


# -- bad objects and stalled watches ------------------------------------------------------------------------------


def _event(name: str, rv: str, *, readable: bool) -> dict[str, Any]:
    """An SGFE as the API server would send it; an unreadable one has text where a boolean belongs."""
    return {
        "metadata": {"name": name, "namespace": "kube-system", "resourceVersion": rv},
        "spec": {
            "spotASGName": "spot-a",
            "onDemandASGName": "od-a",
            "onDemandNodeName": "od-1",
            "timestamp": "2025-01-15T10:00:00Z",
            "minimumWaitDuration": "10m",
        },
        "status": {"phase": "Pending", "scaleDownInitiated": False if readable else "yes"},
    }


def test_an_object_that_cannot_be_read_is_left_out_reported_once_and_stops_no_other() -> None:
    reported: list[tuple[str, str]] = []
    seen: list[tuple[str, str]] = []
    kube = FakeKube(
        lists=[
            {
                "metadata": {"resourceVersion": "10"},
                "items": [_event("good", "8", readable=True), _event("bad", "9", readable=False)],
            }
        ],
        watches=[
            [
                {"type": "MODIFIED", "object": _event("bad", "9", readable=False)},  # the same bad version again
                {"type": "MODIFIED", "object": _event("good", "11", readable=False)},  # a good one turns bad
                {"type": "ADDED", "object": _event("later", "12", readable=True)},
            ]
        ],
    )
    cache: WatchCache[FallbackEvent] = WatchCache(
        kube,  # type: ignore[arg-type]
        "/apis/aws.amazon.com/v1/namespaces/kube-system/spotguardfallbackevents",
        FallbackEvent.from_json,
        lambda kind, item: seen.append((kind, item.name)),
        what="SpotGuardFallbackEvent",
        backoff=lambda n: 0.0,
        on_malformed=lambda kind, field: reported.append((kind, field)),
    )
    cache.run(kube.stop)

    assert cache.synced.is_set()
    assert sorted(cache.items) == ["good", "later"], "the bad one left out, the others all there"
    assert cache.items["good"].resource_version == "8", "its last good version stays"
    assert seen == [("ADDED", "good"), ("ADDED", "later")]
    assert reported == [
        ("SpotGuardFallbackEvent", "status.scaleDownInitiated"),
        ("SpotGuardFallbackEvent", "status.scaleDownInitiated"),
    ], "once per bad version: bad@9 once, good@11 once"
    assert cache.lists == 1, "a bad object is no reason to list again"


def test_a_watch_that_delivers_nothing_within_its_read_timeout_is_restarted_at_once() -> None:
    stalled: list[str] = []
    delays: list[int] = []
    kube = FakeKube(
        lists=[{"metadata": {"resourceVersion": "10"}, "items": [_node("a", "9")]}],
        watches=[
            urllib3.exceptions.ReadTimeoutError(None, "/api/v1/nodes", "Read timed out."),  # type: ignore[arg-type]
            [{"type": "ADDED", "object": _node("b", "11")}],
        ],
    )
    informer = Informer(
        kube,  # type: ignore[arg-type]
        lambda kind, node: None,
        backoff=lambda n: delays.append(n) or 0.0,  # type: ignore[func-returns-value]
        on_stall=stalled.append,
    )
    informer.run(kube.stop)

    assert informer.stalls == 1 and stalled == ["node"]
    assert delays == [], "a stall is restarted at once, not after a backoff"
    assert [(kind, q.get("resourceVersion")) for kind, q in kube.requests] == [
        ("LIST", None),
        ("WATCH", "10"),
        ("WATCH", "10"),  # resumed where it was: no second list
        ("WATCH", "11"),
    ]
    assert sorted(informer.items) == ["a", "b"]


def test_watches_ask_the_server_to_end_them_before_the_read_timeout() -> None:
    kube = FakeKube(lists=[{"metadata": {"resourceVersion": "10"}, "items": []}], watches=[[]])
    timeouts: list[float] = []
    stream = kube.stream

    def recording(path: str, query: Mapping[str, str | int], timeout: float) -> Iterator[dict[str, Any]]:
        timeouts.append(timeout)
        return stream(path, query, timeout)

    kube.stream = recording  # type: ignore[method-assign]
    informer = Informer(kube, lambda kind, node: None, backoff=lambda n: 0.0)  # type: ignore[arg-type]
    informer.run(kube.stop)

    server_side = int(kube.requests[1][1]["timeoutSeconds"])
    assert server_side <= 10, "the API server ends a quiet watch within seconds"
    assert timeouts and all(server_side < t <= server_side + 10 for t in timeouts)
    with pytest.raises(ValueError, match="read_timeout"):
        Informer(kube, lambda kind, node: None, watch_timeout=5, read_timeout=5)  # type: ignore[arg-type]


def test_waiting_for_the_first_list_never_gives_up_on_its_own_only_when_cancelled() -> None:
    kube = FakeKube(lists=[], watches=[])
    never: WatchCache[NodeView] = Informer(kube, lambda kind, node: None)  # type: ignore[arg-type]
    cancel = Cancellation()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(wait_until_synced([never], cancel, step=0.01)))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive(), "still waiting: an unsynced cache is not an empty cluster"
    cancel.cancel("stop")
    waiter.join(5)
    assert result == [False]

    never.synced.set()
    assert wait_until_synced([never], Cancellation(), step=0.01)
