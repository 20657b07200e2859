"""A small in-memory API server for the Drainer tests: pods, node cordoning and the Eviction subresource.

Like kube-apiserver with kwok as the kubelet, an accepted eviction marks the pod terminating and the pod is
deleted once its grace period has passed on the (fake) clock. Eviction answers can be scripted per pod.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.clock import FakeClock

JSON = dict[str, Any]
REASONS = {
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def api_error(status: int, message: str = "", details: JSON | None = None) -> ApiException:
    exc = ApiException(status=status, reason=REASONS.get(status, "Error"))
    body: JSON = {"kind": "Status", "code": status, "message": message or REASONS.get(status, "error")}
    if details is not None:
        body["details"] = details
    exc.body = json.dumps(body)
    return exc


def namespace_terminating(namespace: str, name: str) -> ApiException:
    """NamespaceLifecycle's answer to a create (an eviction too) in a namespace being deleted."""
    return api_error(
        403,
        f'pods "{name}" is forbidden: unable to create new content in namespace {namespace} because it is being '
        "terminated",
        {
            "name": name,
            "kind": "pods",
            "causes": [
                {
                    "reason": "NamespaceTerminating",
                    "message": f"namespace {namespace} is being terminated",
                    "field": "metadata.namespace",
                }
            ],
        },
    )


class FakeDrainApi:
    """Answers ``Kube.request`` calls for one cluster of pods, on ``clock``; one at a time, as the drainer sends
    several evictions at once."""

    def __init__(self, clock: FakeClock, pods: list[JSON], nodes: tuple[str, ...] = ("od-1",)) -> None:
        self.clock = clock
        self.pods: dict[tuple[str, str], JSON] = {}
        self.deleted_at: dict[tuple[str, str], float] = {}
        self.unschedulable = dict.fromkeys(nodes, False)
        #: per pod name: HTTP statuses to answer evictions with, in order, before accepting one (404 deletes the
        #: pod first, 409 replaces it with a pod of another UID, as happens in a real cluster)
        self.scripted: dict[str, list[int]] = {}
        #: pod names whose evictions a PodDisruptionBudget refuses (429) for ever
        self.guarded: set[str] = set()
        self.evictions: list[JSON] = []  # every eviction body received
        self.patches: list[tuple[str, JSON, str]] = []
        self.page_size = 0  # >0: list pods in pages of this size
        self.list_failures_after_eviction = 0  # how many pod lists fail (503) once an eviction was accepted
        #: namespaces being deleted -> (when the namespace controller marks their pods for deletion, when they are
        #: gone), on the clock's monotonic time; evictions in them are refused with 403 NamespaceTerminating
        self.terminating: dict[str, tuple[float, float]] = {}
        self._lock = threading.RLock()
        for item in pods:
            self.add(item)

    def add(self, pod: JSON) -> None:
        meta = pod["metadata"]
        self.pods[(meta["namespace"], meta["name"])] = pod

    def names(self) -> set[str]:
        self._kubelet()
        return {name for _, name in self.pods}

    # -- the Kube.request interface ------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int] | None = None,
        *,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> JSON:
        with self._lock:
            return self._answer(method, path, query, body, content_type)

    def _answer(
        self, method: str, path: str, query: Mapping[str, str | int] | None, body: Any, content_type: str
    ) -> JSON:
        self._kubelet()
        parts = path.strip("/").split("/")
        if method == "PATCH" and parts[:3] == ["api", "v1", "nodes"]:
            return self._patch_node(parts[3], body, content_type)
        if method == "GET" and path == "/api/v1/pods":
            return self._list(dict(query or {}))
        if method == "POST" and parts[-1] == "eviction":
            return self._evict(parts[3], parts[5], body)
        raise AssertionError(f"the drainer made an unexpected request: {method} {path}")

    # -- behaviour -----------------------------------------------------------------------------------------
    def _kubelet(self) -> None:
        """kwok: delete every terminating pod whose grace period is over; the namespace controller: mark the pods
        of a namespace being deleted, then delete them."""
        now = self.clock.monotonic()
        for (namespace, name), item in list(self.pods.items()):
            marked, gone = self.terminating.get(namespace, (float("inf"), float("inf")))
            if now >= marked and (namespace, name) not in self.deleted_at:
                item["metadata"]["deletionTimestamp"] = self.clock.now().isoformat()
                self.deleted_at[(namespace, name)] = gone
        for key, when in list(self.deleted_at.items()):
            if when <= now:
                self.pods.pop(key, None)
                del self.deleted_at[key]

    def _patch_node(self, name: str, body: JSON, content_type: str) -> JSON:
        if name not in self.unschedulable:
            raise api_error(404, f'nodes "{name}" not found')
        self.patches.append((name, body, content_type))
        self.unschedulable[name] = bool(body["spec"]["unschedulable"])
        return {"metadata": {"name": name}, "spec": {"unschedulable": self.unschedulable[name]}}

    def _list(self, query: dict[str, str | int]) -> JSON:
        if self.deleted_at and self.list_failures_after_eviction > 0:
            self.list_failures_after_eviction -= 1
            raise api_error(503, "the server is currently unable to handle the request")
        selector = str(query.get("fieldSelector", ""))
        node = selector.removeprefix("spec.nodeName=")
        items = [p for p in self.pods.values() if not selector or p["spec"].get("nodeName") == node]
        start = int(query.get("continue", 0) or 0)
        if self.page_size:
            page = items[start : start + self.page_size]
            more = start + self.page_size < len(items)
            return {"items": page, "metadata": {"continue": str(start + self.page_size) if more else ""}}
        return {"items": items, "metadata": {}}

    def _evict(self, namespace: str, name: str, body: JSON) -> JSON:
        self.evictions.append(body)
        key = (namespace, name)
        pod = self.pods.get(key)
        if pod is None:
            raise api_error(404, f'pods "{name}" not found')
        wanted_uid = (body.get("deleteOptions") or {}).get("preconditions", {}).get("uid")
        if wanted_uid and wanted_uid != pod["metadata"]["uid"]:
            raise api_error(409, "Precondition failed: UID in precondition does not match the UID in object")
        if namespace in self.terminating:
            raise namespace_terminating(namespace, name)
        script = self.scripted.get(name)
        if script:
            status = script.pop(0)
            if status == 404:  # deleted by someone else just before
                del self.pods[key]
            if status == 409:  # deleted and recreated under the same name just before
                self.pods[key] = {**pod, "metadata": {**pod["metadata"], "uid": pod["metadata"]["uid"] + "-new"}}
            raise api_error(status, "scripted answer")
        if name in self.guarded:
            raise api_error(429, "Cannot evict pod as it would violate the pod's disruption budget.")
        if key not in self.deleted_at:
            grace = (body.get("deleteOptions") or {}).get("gracePeriodSeconds")
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
            self.deleted_at[key] = self.clock.monotonic() + grace
            pod["metadata"]["deletionTimestamp"] = self.clock.now().isoformat()
        return {"kind": "Status", "status": "Success", "code": 201}
