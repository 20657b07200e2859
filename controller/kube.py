"""The thin Kubernetes layer: raw JSON requests, list+watch with resume, and a slim Node cache.

Objects are kept as small dataclasses built from the raw JSON (never the client's generated
models), so that a cluster of thousands of Nodes costs little memory. Watches resume from the last
resourceVersion seen (bookmarks included) and re-list only on 410 Gone; nothing polls.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from nodewatch import annotations as contract

log = logging.getLogger(__name__)

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """A client from ``kubeconfig`` (or $KUBECONFIG / ~/.kube/config), else the in-cluster config."""
    if kubeconfig or context:
        return k8s_config.new_client_from_config(config_file=kubeconfig, context=context)
    try:
        k8s_config.load_incluster_config()
        return k8s.ApiClient()
    except k8s_config.ConfigException:
        return k8s_config.new_client_from_config()


class KubeRequests(Protocol):
    """The one call most of the controller needs of ``Kube``: tests pass small fakes with it."""

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int] | None = None,
        *,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> JSON: ...


class Kube:
    """Raw JSON access to the API server with a timeout on every call."""

    def __init__(self, api: k8s.ApiClient, request_timeout: float = 10.0) -> None:
        self.api = api
        self.request_timeout = request_timeout

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
        response = self.api.call_api(
            path,
            method,
            query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout or self.request_timeout,
        )
        raw = response[0].data if isinstance(response, tuple) else response.data
        return json.loads(raw) if raw else {}

    def stream(self, path: str, query: Mapping[str, str | int], timeout: float) -> Iterator[JSON]:
        """Yield the events of one watch request (until the server closes it)."""
        response = self.api.call_api(
            path,
            "GET",
            query_params=[*query.items(), ("watch", "true")],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=(self.request_timeout, timeout),
        )
        http = response[0] if isinstance(response, tuple) else response
        try:
            pending = b""
            for chunk in http.stream(65536, decode_content=True):
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            http.release_conn()


@dataclasses.dataclass(frozen=True)
class NodeView:
    """What the controller needs to know of a Node."""

    name: str
    resource_version: str
    provider_id: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]  # Spot Guard's own keys only
    ready: bool
    unschedulable: bool
    taints: tuple[Mapping[str, str], ...]
    deleting: bool = False
    finalizers: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, obj: JSON) -> NodeView:
        meta = obj.get("metadata", {})
        spec = obj.get("spec", {})
        conditions = obj.get("status", {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(contract.PREFIX)}
        return cls(
            name=meta["name"],
            resource_version=meta.get("resourceVersion", ""),
            provider_id=spec.get("providerID", ""),
            labels=dict(meta.get("labels") or {}),
            annotations=annotations,
            ready=ready,
            unschedulable=bool(spec.get("unschedulable", False)),
            taints=tuple(
                {k: str(v) for k, v in t.items() if k in {"key", "value", "effect"}} for t in spec.get("taints") or []
            ),
            deleting=bool(meta.get("deletionTimestamp")),
            finalizers=tuple(meta.get("finalizers") or ()),
        )


NodeHandler = Callable[[str, NodeView], None]


class Informer:
    """List, then watch from the list's resourceVersion; re-list only on 410 Gone.

    ``handler(event_type, node)`` is called for every ADDED/MODIFIED/DELETED (a re-list reports
    what changed while the watch was down, including deletions). The cache is ``nodes``.
    """

    def __init__(
        self,
        kube: Kube,
        handler: NodeHandler,
        label_selector: str = "",
        watch_timeout: float = 300.0,
        backoff: Callable[[int], float] | None = None,
    ) -> None:
        self.kube = kube
        self.handler = handler
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.backoff = backoff or (lambda failures: min(30.0, 0.5 * 2**failures) * random.uniform(0.5, 1.0))  # noqa: S311
        self.nodes: dict[str, NodeView] = {}
        self.resource_version = ""
        self.synced = threading.Event()
        self.lists = 0
        self.watches = 0
        self._lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                if not self.resource_version:
                    self._list()
                self._watch(stop)
                failures = 0
            except ApiException as exc:
                if exc.status == 410:
                    log.info("node watch expired (410 Gone at resourceVersion %s); re-listing", self.resource_version)
                    self.resource_version = ""
                    continue
                failures += 1
                log.warning("node list/watch failed: HTTP %s %s; retrying", exc.status, exc.reason)
                stop.wait(self.backoff(failures))
            except Exception as exc:  # the API server restarting shows up in many forms
                failures += 1
                log.warning("node list/watch failed: %s: %s; retrying", type(exc).__name__, exc)
                stop.wait(self.backoff(failures))

    def snapshot(self) -> dict[str, NodeView]:
        with self._lock:
            return dict(self.nodes)

    def _list(self) -> None:
        query: dict[str, str | int] = {"limit": 500}
        if self.label_selector:
            query["labelSelector"] = self.label_selector
        seen: dict[str, NodeView] = {}
        while True:
            page = self.kube.request("GET", "/api/v1/nodes", query=query, timeout=60)
            for item in page.get("items", []):
                node = NodeView.from_json(item)
                seen[node.name] = node
            cont = page.get("metadata", {}).get("continue")
            if not cont:
                break
            query["continue"] = cont
        self.lists += 1
        with self._lock:
            before = self.nodes
            self.nodes = seen
        for name, gone in before.items():
            if name not in seen:
                self.handler("DELETED", gone)
        for name, node in seen.items():
            previous = before.get(name)
            if previous is None:
                self.handler("ADDED", node)
            elif previous.resource_version != node.resource_version:
                self.handler("MODIFIED", node)
        self.resource_version = page.get("metadata", {}).get("resourceVersion", "")
        self.synced.set()

    def _watch(self, stop: threading.Event) -> None:
        query: dict[str, str | int] = {
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": int(self.watch_timeout),
        }
        if self.label_selector:
            query["labelSelector"] = self.label_selector
        self.watches += 1
        for event in self.kube.stream("/api/v1/nodes", query, timeout=self.watch_timeout + 30):
            if stop.is_set():
                return
            kind = event.get("type")
            obj = event.get("object", {})
            if kind == "ERROR":
                code = int(obj.get("code", 0))
                raise ApiException(status=code, reason=obj.get("message", "watch error"))
            rv = obj.get("metadata", {}).get("resourceVersion")
            if kind == "BOOKMARK":
                self.resource_version = rv or self.resource_version
                continue
            node = NodeView.from_json(obj)
            with self._lock:
                if kind == "DELETED":
                    self.nodes.pop(node.name, None)
                else:
                    self.nodes[node.name] = node
            self.resource_version = rv or self.resource_version
            self.handler(str(kind), node)
