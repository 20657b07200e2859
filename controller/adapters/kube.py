"""The thin Kubernetes layer: raw JSON requests, list+watch with resume, and a slim Node cache.

Objects are kept as small dataclasses built from the raw JSON (never the client's generated
models), so that a cluster of thousands of Nodes costs little memory. Watches resume from the last
resourceVersion seen (bookmarks included) and re-list only on 410 Gone; nothing polls.

A watch cannot freeze the cache unnoticed: the API server ends each watch after ``watch_timeout`` seconds (the
cache watches again from where it was), so a healthy watch never goes quiet for longer; one that delivers nothing
for ``read_timeout`` seconds (a half-open connection, a frozen API server or proxy) is given up and restarted.
TCP keepalive finds a peer that is gone altogether. An object that cannot be read is left out (its last good
version stays), reported once per version and counted; it stops nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from controller.clock import Cancellation
from controller.model.malformed import MalformedObjectError
from controller.model.node import NodeView
from nodewatch.annotations import MalformedAnnotationError

log = logging.getLogger(__name__)

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


CONNECTIONS = 16  # kept open to the API server: a watch, the record writers, events, the lifecycle
#: TCP keepalive on every connection to the API server: a peer that is gone is noticed after about
#: idle + interval x count seconds (5 + 2 x 3), even on a connection waiting for an answer.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 2, 3
#: Seconds the API server keeps one watch open (``timeoutSeconds``); the cache then watches again from the same
#: resourceVersion. Short, so that a watch that delivers nothing for longer has certainly stalled.
WATCH_TIMEOUT = 5.0
#: Seconds a watch may deliver nothing before it counts as stalled: its timeout and a margin for a busy server.
WATCH_READ_GRACE = 5.0


class KubeConfigError(Exception):
    """No usable connection settings for the API server; the message says which and what to do (one line)."""


def api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """A client from ``kubeconfig`` (or $KUBECONFIG / ~/.kube/config), else the in-cluster config.

    Raises KubeConfigError when neither gives a usable configuration (a missing, unreadable or malformed file, an
    unknown context, no cluster at all)."""
    configuration = k8s.Configuration()
    try:
        if kubeconfig or context:
            _readable(kubeconfig)
            k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        else:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)
            except k8s_config.ConfigException as in_cluster:
                default = os.path.expanduser(k8s_config.KUBE_CONFIG_DEFAULT_LOCATION)
                if not any(os.path.exists(path) for path in default.split(os.pathsep)):
                    raise KubeConfigError(
                        f"no cluster to connect to: not in a pod ({in_cluster}) and no kubeconfig at {default}; "
                        "pass --kubeconfig or set KUBECONFIG"
                    ) from None
                k8s_config.load_kube_config(client_configuration=configuration)
    except KubeConfigError:
        raise
    except (k8s_config.ConfigException, OSError, yaml.YAMLError, ValueError, KeyError, TypeError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or k8s_config.KUBE_CONFIG_DEFAULT_LOCATION
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise KubeConfigError(f"cannot use kubeconfig {where}: {reason}") from None
    configuration.connection_pool_maxsize = CONNECTIONS
    api = k8s.ApiClient(configuration)
    keep_alive(api)
    return api


def keep_alive(api: k8s.ApiClient) -> None:
    """Turn TCP keepalive on for the connections ``api`` opens from now on (see ``KEEPALIVE_IDLE``)."""
    options = [*urllib3.connection.HTTPConnection.default_socket_options, (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        if hasattr(socket, name):  # Linux; elsewhere the system's keepalive timings apply
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    api.rest_client.pool_manager.connection_pool_kw["socket_options"] = options


def _readable(path: str | None) -> None:
    """A single kubeconfig file must be readable (a list of them, as KUBECONFIG may hold, skips missing ones)."""
    if path is None or os.pathsep in path:
        return
    try:
        with open(os.path.expanduser(path), "rb"):
            pass
    except OSError as exc:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {exc.strerror or exc}") from None


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


#: Items per page of a LIST (the API server's chunking; ``pages`` follows the continue tokens).
PAGE_SIZE = 500


def pages(
    kube: KubeRequests, path: str, query: Mapping[str, str | int] | None = None, timeout: float | None = 60.0
) -> Iterator[JSON]:
    """Each page of the LIST of ``path`` (``query``: selectors), ``PAGE_SIZE`` items a page, following ``continue``
    tokens: the one way Spot Guard lists, so that no LIST of a large cluster comes back whole or stops at a page."""
    params: dict[str, str | int] = {**(query or {}), "limit": PAGE_SIZE}
    while True:
        page = kube.request("GET", path, query=params, timeout=timeout)
        yield page
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return
        params["continue"] = token


def list_all(
    kube: KubeRequests, path: str, query: Mapping[str, str | int] | None = None, timeout: float | None = 60.0
) -> list[JSON]:
    """Every item of the LIST of ``path``, over all its pages (``pages``)."""
    return [item for page in pages(kube, path, query, timeout) for item in page.get("items") or []]


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


MalformedHandler = Callable[[str, str], None]


class WatchCache(Generic[T]):
    """List, then watch from the list's resourceVersion; re-list only on 410 Gone.

    ``handler(event_type, item)`` is called for every ADDED/MODIFIED/DELETED (a re-list reports
    what changed while the watch was down, including deletions). The cache is ``items`` (by name);
    ``synced`` is set once the first list is in: until then an empty cache says nothing about the cluster.

    What this process writes it can ``remember`` at once (read your own writes): until the watch
    delivers that very version (or ``pin_seconds`` pass, or a re-list), older events of the object
    do not replace it.

    The API server closes each watch after ``watch_timeout`` seconds; a watch silent for ``read_timeout``
    (default: ``watch_timeout`` + ``WATCH_READ_GRACE``) has stalled and is restarted at once, counted in
    ``stalls`` (and reported to ``on_stall``). An object ``convert`` cannot read (a ``MalformedObjectError`` or
    ``MalformedAnnotationError``) is left out, its last good version kept, and reported once per version:
    a warning and ``on_malformed(kind, field)``.
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
        watch_timeout: float = WATCH_TIMEOUT,
        read_timeout: float | None = None,
        backoff: Callable[[int], float] | None = None,
        pin_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        on_malformed: MalformedHandler | None = None,
        on_stall: Callable[[str], None] | None = None,
    ) -> None:
        if not 1 <= watch_timeout <= 3600:
            raise ValueError(
                f"watch_timeout must be 1 to 3600 seconds (the API server's timeoutSeconds), got {watch_timeout!r}"
            )
        read_timeout = watch_timeout + WATCH_READ_GRACE if read_timeout is None else read_timeout
        if not read_timeout > watch_timeout:
            raise ValueError(
                f"read_timeout ({read_timeout!r}s) must be longer than watch_timeout ({watch_timeout!r}s): the API "
                "server ends a quiet watch only then"
            )
        self.kube = kube
        self.path = path
        self.convert = convert
        self.handler = handler
        self.what = what
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.read_timeout = read_timeout
        self.on_malformed = on_malformed
        self.on_stall = on_stall
        self.stalls = 0
        self._reported: dict[str, str] = {}  # name -> resourceVersion of the malformed version last reported
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
            except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
                self.stalls += 1
                log.warning(
                    "%s watch delivered nothing for %gs (the API server ends a healthy one after %gs): stalled "
                    "connection (%s); watching again from resourceVersion %s",
                    self.what,
                    self.read_timeout,
                    self.watch_timeout,
                    type(exc).__name__,
                    self.resource_version or "(a new list)",
                )
                if self.on_stall is not None:
                    self.on_stall(self.what)
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

    def show(self, raw: JSON) -> None:
        """Show this version of an object from now on, as if the watch had delivered it (observe-only mode's
        would-be writes, ``controller.adapters.dry_run``, which change nothing the watch could report)."""
        name, rv = _identity(raw)
        item = self._convert(raw, name, rv)
        if item is None:
            return
        with self._lock:
            self.items[name] = item
        self.handler("MODIFIED", item)

    def forget(self, name: str) -> None:
        """This process just deleted ``name``."""
        with self._lock:
            self.items.pop(name, None)
            self._pinned.pop(name, None)

    def _list(self) -> None:
        query: dict[str, str | int] = {"labelSelector": self.label_selector} if self.label_selector else {}
        seen: dict[str, T] = {}
        versions: dict[str, str] = {}
        page: JSON = {}
        for page in pages(self.kube, self.path, query):
            for raw in page.get("items", []):
                name, rv = _identity(raw)
                item = self._convert(raw, name, rv)
                if item is None:
                    with self._lock:
                        kept = self.items.get(name)
                    if kept is None:
                        continue
                    item = kept  # the last good version stays
                seen[name] = item
                versions[name] = rv
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
        for event in self.kube.stream(self.path, query, timeout=self.read_timeout):
            if stop.is_set():
                return
            kind = event.get("type")
            obj = event.get("object", {})
            if kind == "ERROR":
                code = int(obj.get("code", 0))
                raise ApiException(status=code, reason=obj.get("message", "watch error"))
            name, rv = _identity(obj)
            if kind == "BOOKMARK":
                self.resource_version = rv or self.resource_version
                continue
            item = self._convert(obj, name, rv)
            self.resource_version = rv or self.resource_version
            if item is None:
                continue  # reported; the last good version (if any) stays
            self._apply(str(kind), name, rv, item)
            self.handler(str(kind), item)

    def _convert(self, raw: JSON, name: str, rv: str) -> T | None:
        """``convert(raw)``, or None when the object cannot be read (reported once per version)."""
        try:
            item = self.convert(raw)
        except (MalformedObjectError, MalformedAnnotationError) as exc:
            if self._reported.get(name) != rv:
                self._reported[name] = rv
                log.warning("%s %s (resourceVersion %s) cannot be read and is left alone: %s", self.what, name, rv, exc)
                if self.on_malformed is not None:
                    self.on_malformed(exc.kind, exc.field)
            return None
        self._reported.pop(name, None)
        return item

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


def _identity(raw: JSON) -> tuple[str, str]:
    """(name, resourceVersion) of a raw object, "" where it has none."""
    meta = raw.get("metadata") if isinstance(raw, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    name, rv = meta.get("name", ""), meta.get("resourceVersion", "")
    return (name if isinstance(name, str) else "", rv if isinstance(rv, str) else "")


def wait_until_synced(
    caches: Iterable[WatchCache[Any]], cancel: Cancellation, report_every: float = 30.0, step: float = 0.2
) -> bool:
    """Wait until every cache has its first list (True), or ``cancel`` fires (False). Never gives up on its own:
    an empty cache before its list says nothing about the cluster. Reports every ``report_every`` seconds what
    it still waits for."""
    started = time.monotonic()
    reported = started
    for cache in caches:
        while not cache.synced.wait(step):
            if cancel.cancelled:
                return False
            now = time.monotonic()
            if now - reported >= report_every:
                reported = now
                log.warning(
                    "still waiting for the first list of %s after %.0fs (lists %d, watches %d): acting on nothing "
                    "until it is in",
                    cache.what,
                    now - started,
                    cache.lists,
                    cache.watches,
                )
    return not cancel.cancelled


class Informer(WatchCache[NodeView]):
    """The Node cache (``NodeView``s: a few fields of each Node, so thousands cost little memory)."""

    def __init__(
        self,
        kube: Kube,
        handler: NodeHandler,
        *,
        label_selector: str = "",
        watch_timeout: float = WATCH_TIMEOUT,
        read_timeout: float | None = None,
        backoff: Callable[[int], float] | None = None,
        on_stall: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(
            kube,
            "/api/v1/nodes",
            NodeView.from_json,
            handler,
            what="node",
            label_selector=label_selector,
            watch_timeout=watch_timeout,
            read_timeout=read_timeout,
            backoff=backoff,
            on_stall=on_stall,
        )

    @property
    def nodes(self) -> dict[str, NodeView]:
        return self.items
