"""The thin Kubernetes layer: raw JSON requests, list+watch with resume, and a slim Node cache.

Objects are kept as small dataclasses built from the raw JSON (never the client's generated
models), so that a cluster of thousands of Nodes costs little memory. Watches resume from the last
resourceVersion seen (bookmarks included) and re-list only on 410 Gone; nothing polls.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from controller.model.node import NodeView

log = logging.getLogger(__name__)

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


CONNECTIONS = 16  # kept open to the API server: a watch, the record writers, events, the lifecycle


def api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """A client from ``kubeconfig`` (or $KUBECONFIG / ~/.kube/config), else the in-cluster config."""
    configuration = k8s.Configuration()
    if kubeconfig or context:
        k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    else:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = CONNECTIONS
    return k8s.ApiClient(configuration)


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


T = TypeVar("T")
NodeHandler = Callable[[str, NodeView], None]


class WatchCache(Generic[T]):
    """List, then watch from the list's resourceVersion; re-list only on 410 Gone.

    ``handler(event_type, item)`` is called for every ADDED/MODIFIED/DELETED (a re-list reports
    what changed while the watch was down, including deletions). The cache is ``items`` (by name).

    What this process writes it can ``remember`` at once (read your own writes): until the watch
    delivers that very version (or ``pin_seconds`` pass, or a re-list), older events of the object
    do not replace it.
    """

    def __init__(
        self,
        kube: Kube,
        path: str,
        convert: Callable[[JSON], T],
        handler: Callable[[str, T], None],
        *,
        what: str,
        label_selector: str = "",
        watch_timeout: float = 300.0,
        backoff: Callable[[int], float] | None = None,
        pin_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.path = path
        self.convert = convert
        self.handler = handler
        self.what = what
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.backoff = backoff or (lambda failures: min(30.0, 0.5 * 2**failures) * random.uniform(0.5, 1.0))  # noqa: S311
        self.pin_seconds = pin_seconds
        self.monotonic = monotonic
        self.items: dict[str, T] = {}
        self.resource_version = ""
        self.synced = threading.Event()
        self.lists = 0
        self.watches = 0
        self._lock = threading.Lock()
        self._delivered: dict[str, str] = {}  # name -> resourceVersion of its last event
        self._pinned: dict[str, tuple[str, float]] = {}  # name -> (version written, until)

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
                    log.info(
                        "%s watch expired (410 Gone at resourceVersion %s); re-listing",
                        self.what,
                        self.resource_version,
                    )
                    self.resource_version = ""
                    continue
                failures += 1
                log.warning("%s list/watch failed: HTTP %s %s; retrying", self.what, exc.status, exc.reason)
                stop.wait(self.backoff(failures))
            except Exception as exc:  # the API server restarting shows up in many forms
                failures += 1
                log.warning("%s list/watch failed: %s: %s; retrying", self.what, type(exc).__name__, exc)
                stop.wait(self.backoff(failures))

    def snapshot(self) -> dict[str, T]:
        with self._lock:
            return dict(self.items)

    def remember(self, name: str, resource_version: str, item: T) -> None:
        """This process just wrote ``item`` at ``resource_version``: show it from now on."""
        with self._lock:
            if self._delivered.get(name) == resource_version:
                return  # the watch was faster (or the write changed nothing)
            self.items[name] = item
            self._pinned[name] = (resource_version, self.monotonic() + self.pin_seconds)

    def forget(self, name: str) -> None:
        """This process just deleted ``name``."""
        with self._lock:
            self.items.pop(name, None)
            self._pinned.pop(name, None)

    def _list(self) -> None:
        query: dict[str, str | int] = {"limit": 500}
        if self.label_selector:
            query["labelSelector"] = self.label_selector
        seen: dict[str, T] = {}
        versions: dict[str, str] = {}
        while True:
            page = self.kube.request("GET", self.path, query=query, timeout=60)
            for raw in page.get("items", []):
                name = raw["metadata"]["name"]
                seen[name] = self.convert(raw)
                versions[name] = raw["metadata"].get("resourceVersion", "")
            cont = page.get("metadata", {}).get("continue")
            if not cont:
                break
            query["continue"] = cont
        self.lists += 1
        with self._lock:
            before = self.items
            self.items = seen
            self._pinned.clear()
            self._delivered = versions
        for name, gone in before.items():
            if name not in seen:
                self.handler("DELETED", gone)
        for name, item in seen.items():
            previous = before.get(name)
            if previous is None:
                self.handler("ADDED", item)
            elif previous != item:
                self.handler("MODIFIED", item)
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
        for event in self.kube.stream(self.path, query, timeout=self.watch_timeout + 30):
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
            item = self.convert(obj)
            self._apply(str(kind), obj["metadata"]["name"], rv or "", item)
            self.resource_version = rv or self.resource_version
            self.handler(str(kind), item)

    def _apply(self, kind: str, name: str, rv: str, item: T) -> None:
        with self._lock:
            pin = self._pinned.get(name)
            if pin is not None:
                written, until = pin
                if rv != written and self.monotonic() < until:
                    self._delivered[name] = rv
                    return  # older than what this process wrote: keep showing that
                del self._pinned[name]
            if kind == "DELETED":
                self.items.pop(name, None)
                self._delivered.pop(name, None)
            else:
                self.items[name] = item
                self._delivered[name] = rv


class Informer(WatchCache[NodeView]):
    """The Node cache (``NodeView``s: a few fields of each Node, so thousands cost little memory)."""

    def __init__(
        self,
        kube: Kube,
        handler: NodeHandler,
        label_selector: str = "",
        watch_timeout: float = 300.0,
        backoff: Callable[[int], float] | None = None,
    ) -> None:
        super().__init__(
            kube,
            "/api/v1/nodes",
            NodeView.from_json,
            handler,
            what="node",
            label_selector=label_selector,
            watch_timeout=watch_timeout,
            backoff=backoff,
        )

    @property
    def nodes(self) -> dict[str, NodeView]:
        return self.items
