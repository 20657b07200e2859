"""The Node informer: list, then watch from the list's resourceVersion; re-list only on 410 Gone."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.kube import Informer, NodeView


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
