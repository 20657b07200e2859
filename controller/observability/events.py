"""Kubernetes Events about Nodes and SpotGuardFallbackEvents, so that ``kubectl describe`` tells the story.

Events are core/v1 Events written the way client-go's recorder writes them: a Node's go to namespace
``default`` (with ``involvedObject.uid`` set to the node's name, as the kubelet's), other objects' to their
own namespace. The same event again (same object, type, reason and message) within ``aggregate_window``
seconds of the last one bumps ``count`` and ``lastTimestamp`` of the existing Event instead of creating
another.

Recording is best-effort and never raises: a failed write is logged once (until writes work again) and
dropped, and after a failure further events are dropped without trying for ``pause_after_failure`` seconds,
so an API server outage does not slow down the replacement work that records them. With ``queue_size``
(as the controller runs it) events are written by a thread of their own, as client-go's broadcaster does:
recording costs the caller no API call, at most ``max_rate`` events are written per second (the 500 events
of a burst's 500 replacements must not compete with its scale-up calls for the API server), and when the
queue is full an event is dropped and counted.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.adapters.kube import MERGE_PATCH, KubeRequests
from controller.clock import Clock, SystemClock

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
NODE_EVENT_NAMESPACE = "default"
SGFE_API_VERSION = "aws.amazon.com/v1"
SGFE_KIND = "SpotGuardFallbackEvent"
MAX_MESSAGE = 1024
_MAX_NAME = 253


@dataclasses.dataclass(frozen=True)
class ObjectRef:
    """The object an Event is about (``involvedObject``)."""

    kind: str
    name: str
    namespace: str = ""
    uid: str = ""
    api_version: str = "v1"

    def to_json(self) -> dict[str, str]:
        data = {"kind": self.kind, "name": self.name, "apiVersion": self.api_version}
        if self.namespace:
            data["namespace"] = self.namespace
        if self.uid:
            data["uid"] = self.uid
        return data


def node_ref(name: str, uid: str = "") -> ObjectRef:
    """A Node. ``uid`` defaults to the node's name, as in the kubelet's own events about its Node, so one
    ``--field-selector involvedObject.uid=<node>`` finds both; ``kubectl describe node`` shows either.
    """
    return ObjectRef(kind="Node", name=name, uid=uid or name)


def sgfe_ref(name: str, namespace: str, uid: str) -> ObjectRef:
    """A SpotGuardFallbackEvent (``kubectl describe sgfe`` selects on its real UID)."""
    return ObjectRef(kind=SGFE_KIND, name=name, namespace=namespace, uid=uid, api_version=SGFE_API_VERSION)


@dataclasses.dataclass
class _Recorded:
    namespace: str
    name: str
    count: int
    last_seen: float  # monotonic


@dataclasses.dataclass(frozen=True)
class _Occurrence:
    """What makes two events the same event (and the key they are aggregated under)."""

    obj: ObjectRef
    event_type: str
    reason: str
    message: str


class EventRecorder:
    """Writes Events for one component; thread-safe. ``normal`` and ``warning`` never raise."""

    def __init__(
        self,
        kube: KubeRequests,
        component: str = "spotguard-controller",
        clock: Clock | None = None,
        *,
        host: str = "",
        aggregate_window: float = 300.0,
        pause_after_failure: float = 30.0,
        request_timeout: float = 5.0,
        max_remembered: int = 4096,
        queue_size: int = 0,
        max_rate: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kube = kube
        self._component = component
        self._clock = clock or SystemClock()
        self._host = host
        self._aggregate_window = aggregate_window
        self._pause_after_failure = pause_after_failure
        self._request_timeout = request_timeout
        self._max_remembered = max_remembered
        self._lock = threading.Lock()
        self._recent: collections.OrderedDict[_Occurrence, _Recorded] = collections.OrderedDict()
        self._failing_since: float | None = None
        self._last_failure = 0.0
        self._dropped = 0
        self._recorded = 0
        self._queue: queue.Queue[tuple[ObjectRef, str, str, str] | None] | None = None
        self._queue_full = False
        self._interval = 1.0 / max_rate if max_rate > 0 else 0.0  # between queued writes
        self._sleep = sleep  # the writer thread's pacing (real time: it paces real requests)
        self._monotonic = monotonic
        self._overflow_lock = threading.Lock()
        self._overflowed = 0
        if queue_size:
            self._queue = queue.Queue(queue_size)
            threading.Thread(target=self._write_queued, name="event-writer", daemon=True).start()

    @property
    def dropped(self) -> int:
        """Events that could not be written (or were skipped during a pause after a failure)."""
        return self._dropped + self._overflowed  # int reads are atomic; the writer may hold the lock for long

    @property
    def recorded(self) -> int:
        """Events written, new or aggregated."""
        with self._lock:
            return self._recorded

    def normal(self, obj: ObjectRef, reason: str, message: str) -> None:
        self.record(obj, NORMAL, reason, message)

    def warning(self, obj: ObjectRef, reason: str, message: str) -> None:
        self.record(obj, WARNING, reason, message)

    def record(self, obj: ObjectRef, event_type: str, reason: str, message: str) -> None:
        """Write (or aggregate into) an Event, or queue it for the writer thread; never raises."""
        if self._queue is None:
            self._write(obj, event_type, reason, message)
            return
        try:
            self._queue.put_nowait((obj, event_type, reason, message))
            self._queue_full = False
        except queue.Full:
            with self._overflow_lock:  # not self._lock: the writer holds that during its API call
                self._overflowed += 1
            if not self._queue_full:
                self._queue_full = True
                log.warning(
                    "dropping event %s about %s %s: %d events are waiting to be written (the API server is slow)",
                    reason,
                    obj.kind.lower(),
                    obj.name,
                    self._queue.maxsize,
                )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event is written or dropped; False if that took longer than ``timeout``."""
        if self._queue is None:
            return True
        deadline = time.monotonic() + timeout  # a real wait for a real thread, whatever clock decides the rest
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (for up to ``timeout``), then stop the writer thread."""
        if self._queue is None:
            return
        self.flush(timeout)
        self._queue.put(None)

    # -- internals --------------------------------------------------------------------------------------------

    def _write_queued(self) -> None:
        assert self._queue is not None
        next_at = 0.0
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                wait = next_at - self._monotonic()
                if wait > 0:
                    self._sleep(wait)  # paced: a burst's events never crowd out its work
                next_at = self._monotonic() + self._interval
                self._write(*item)
            finally:
                self._queue.task_done()

    def _write(self, obj: ObjectRef, event_type: str, reason: str, message: str) -> None:
        try:
            self._record(obj, event_type, reason, message[:MAX_MESSAGE])
        except Exception as error:  # best-effort: an event must never break the work it describes
            self._failed(obj, reason, error)

    def _record(self, obj: ObjectRef, event_type: str, reason: str, message: str) -> None:
        with self._lock:  # one writer at a time keeps count exact; the calls are short (request_timeout)
            now = self._clock.monotonic()
            if self._failing_since is not None and now - self._last_failure < self._pause_after_failure:
                self._dropped += 1
                log.debug(
                    "dropped event %s about %s %s: paused after a failed write", reason, obj.kind.lower(), obj.name
                )
                return
            key = _Occurrence(obj, event_type, reason, message)
            previous = self._recent.get(key)
            wall = _format_time(self._clock.now())
            recent = previous is not None and now - previous.last_seen <= self._aggregate_window
            if previous is not None and recent and self._bump(previous, wall):
                previous.last_seen = now
            else:
                self._recent[key] = self._create(key, wall, now)
            self._recent.move_to_end(key)
            while len(self._recent) > self._max_remembered:
                self._recent.popitem(last=False)
            self._succeeded()

    def _create(self, occurrence: _Occurrence, wall: str, now: float) -> _Recorded:
        obj = occurrence.obj
        namespace = obj.namespace or NODE_EVENT_NAMESPACE
        source: dict[str, str] = {"component": self._component}
        if self._host:
            source["host"] = self._host
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": _event_name(obj.name, self._clock.now()), "namespace": namespace},
            "involvedObject": obj.to_json(),
            "reason": occurrence.reason,
            "message": occurrence.message,
            "type": occurrence.event_type,
            "source": source,
            "firstTimestamp": wall,
            "lastTimestamp": wall,
            "count": 1,
        }
        created = self._kube.request(
            "POST", f"/api/v1/namespaces/{namespace}/events", body=body, timeout=self._request_timeout
        )
        name = str(created.get("metadata", {}).get("name") or body["metadata"]["name"])
        return _Recorded(namespace=namespace, name=name, count=1, last_seen=now)

    def _bump(self, previous: _Recorded, wall: str) -> bool:
        """PATCH count and lastTimestamp; False if the Event is gone (expired), so a new one is created."""
        count = previous.count + 1
        try:
            self._kube.request(
                "PATCH",
                f"/api/v1/namespaces/{previous.namespace}/events/{previous.name}",
                body={"count": count, "lastTimestamp": wall},
                content_type=MERGE_PATCH,
                timeout=self._request_timeout,
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        previous.count = count
        return True

    def _succeeded(self) -> None:
        self._recorded += 1
        if self._failing_since is not None:
            log.info("recording Kubernetes Events works again; %d events were dropped while it did not", self._dropped)
            self._failing_since = None

    def _failed(self, obj: ObjectRef, reason: str, error: Exception) -> None:
        with self._lock:
            now = self._clock.monotonic()
            self._dropped += 1
            first = self._failing_since is None
            if first:
                self._failing_since = now
            self._last_failure = now
        detail = _describe(error)
        where = f"{obj.kind.lower()} {obj.namespace + '/' if obj.namespace else ''}{obj.name}"
        if first:
            log.warning(
                "could not record event %s about %s: %s; dropping it (events are best-effort) and pausing event "
                "writes for %.0f s; check the API server and that the controller may create and patch events",
                reason,
                where,
                detail,
                self._pause_after_failure,
                extra={"event_reason": reason, **_object_fields(obj)},
            )
        else:
            log.debug("could not record event %s about %s either: %s; dropped", reason, where, detail)


def _object_fields(obj: ObjectRef) -> dict[str, str]:
    """The log fields that name ``obj`` (see controller.observability.logs)."""
    if obj.kind == "Node":
        return {"node": obj.name}
    if obj.kind == SGFE_KIND:
        return {"sgfe": f"{obj.namespace}/{obj.name}"}
    return {"object": f"{obj.kind}/{obj.name}"}


def _describe(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"


def _format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event_name(object_name: str, moment: dt.datetime) -> str:
    """``<object>.<unix nanoseconds in hex><random>``, as client-go names events, cut to a valid length."""
    nanos = int(moment.timestamp() * 1_000_000_000)
    suffix = f".{nanos:x}{secrets.token_hex(2)}"
    return object_name[: _MAX_NAME - len(suffix)] + suffix
