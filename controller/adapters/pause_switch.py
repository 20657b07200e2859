"""The pause switch: annotations on the controller's Lease that every replica and the CLI can see.

``spotguard pause`` sets them, ``spotguard resume`` removes them; the controller reads them through
``PauseSwitch.paused()`` and starts no replacement for a new notice while they say paused. The Lease
already exists wherever Spot Guard runs, so there is no new object type and no extra RBAC for the
replicas (they already get the Lease); the CLI writes with a JSON merge patch of the annotations only.

The elector replaces the Lease with a PUT carrying the resourceVersion it read, keeping the annotations
of exactly that version (``KubeLeaseStore``), so a pause written between its read and its write makes the
PUT conflict and the elector reads again: the switch is never lost.

Annotations::

    spotguard.io/paused: "true"
    spotguard.io/paused-by: alice@laptop
    spotguard.io/paused-at: 2025-01-15T10:00:00Z
    spotguard.io/paused-reason: spot market incident, see INC-123
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.adapters.kube import MERGE_PATCH, Kube
from controller.clock import Cancellation, Clock
from nodewatch.annotations import PREFIX, format_time, parse_time

log = logging.getLogger(__name__)

PAUSED = PREFIX + "paused"
PAUSED_BY = PREFIX + "paused-by"
PAUSED_AT = PREFIX + "paused-at"
PAUSED_REASON = PREFIX + "paused-reason"
KEYS = (PAUSED, PAUSED_BY, PAUSED_AT, PAUSED_REASON)


def lease_path(namespace: str, name: str = "") -> str:
    """The API path of the Leases in ``namespace`` (of one Lease, with ``name``)."""
    base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


@dataclasses.dataclass(frozen=True)
class PauseStatus:
    """What the Lease's annotations say. ``at`` is None when absent or unreadable."""

    paused: bool
    by: str = ""
    at: dt.datetime | None = None
    reason: str = ""

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str] | None) -> PauseStatus:
        annotations = annotations or {}
        if annotations.get(PAUSED, "").strip().lower() != "true":
            return cls(paused=False)
        at: dt.datetime | None = None
        if PAUSED_AT in annotations:
            try:
                at = parse_time(PAUSED_AT, annotations[PAUSED_AT])
            except ValueError:
                at = None
        return cls(
            paused=True,
            by=annotations.get(PAUSED_BY, ""),
            at=at,
            reason=annotations.get(PAUSED_REASON, ""),
        )

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any] | None) -> PauseStatus:
        """The status in a Lease's JSON (not paused if there is no Lease)."""
        if not lease:
            return cls(paused=False)
        metadata = lease.get("metadata") or {}
        return cls.from_annotations(metadata.get("annotations") or {})

    def describe(self) -> str:
        """One line for logs and the CLI."""
        if not self.paused:
            return "not paused"
        parts = ["paused"]
        if self.by:
            parts.append(f"by {self.by}")
        if self.at is not None:
            parts.append(f"at {format_time(self.at)}")
        text = " ".join(parts)
        return f"{text}: {self.reason}" if self.reason else text

    def to_json(self) -> dict[str, Any]:
        return {
            "paused": self.paused,
            "by": self.by,
            "at": format_time(self.at) if self.at is not None else "",
            "reason": self.reason,
        }


def annotations_for(paused: bool, by: str, reason: str, now: dt.datetime) -> dict[str, str | None]:
    """The merge-patch map that sets (or, for ``paused=False``, removes) the switch."""
    if not paused:
        return dict.fromkeys(KEYS)
    return {PAUSED: "true", PAUSED_BY: by, PAUSED_AT: format_time(now), PAUSED_REASON: reason}


class PauseSwitch:
    """The switch as one replica sees it: cached, re-read at most every ``refresh_seconds``.

    ``paused()`` never raises and never blocks longer than one GET of the Lease (``request_timeout``): if
    the read fails it keeps the last known value (not paused before the first successful read) and logs
    once per run of failures. A missing Lease means not paused. ``on_change(paused)`` is called after the
    first successful read and whenever the value changes (e.g. ``metrics.set_paused``); it must be quick.

    ``run(stop)`` refreshes every ``refresh_seconds`` until ``stop`` fires, so that ``on_change`` (and the
    metric) follow the switch even while nothing asks ``paused()``.
    """

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        lease_name: str,
        clock: Clock,
        refresh_seconds: float = 2.0,
        *,
        on_change: Callable[[bool], None] | None = None,
        request_timeout: float = 5.0,
    ) -> None:
        if not namespace or not lease_name:
            raise ValueError(f"the pause switch needs the Lease's namespace and name, got {namespace!r}/{lease_name!r}")
        if refresh_seconds < 0:
            raise ValueError(f"refresh_seconds must not be negative, got {refresh_seconds!r}")
        self.kube = kube
        self.namespace = namespace
        self.lease_name = lease_name
        self.clock = clock
        self.refresh_seconds = refresh_seconds
        self.on_change = on_change
        self.request_timeout = request_timeout
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._status = PauseStatus(paused=False)
        self._known = False  # a read has succeeded at least once
        self._read_at: float | None = None  # monotonic time of the last read attempt
        self._failing = False

    @property
    def description(self) -> str:
        return f"the pause switch on Lease {self.namespace}/{self.lease_name}"

    # -- reading -------------------------------------------------------------------------------------

    def paused(self) -> bool:
        """Whether Spot Guard is paused, as of at most ``refresh_seconds`` ago (fails safe: last known value)."""
        return self.status().paused

    def status(self) -> PauseStatus:
        """The full status (who, when, why), refreshed like ``paused()``."""
        with self._lock:
            stale = self._read_at is None or self.clock.monotonic() - self._read_at >= self.refresh_seconds
        if stale:
            self.refresh()
        with self._lock:
            return self._status

    def refresh(self) -> PauseStatus:
        """Read the Lease now (unless another thread is reading it); the status known afterwards."""
        if not self._refreshing.acquire(blocking=False):
            with self._lock:
                return self._status
        try:
            with self._lock:
                self._read_at = self.clock.monotonic()
            try:
                lease = self._get()
            except Exception as error:  # fail safe: keep the last known value
                self._read_failed(error)
                with self._lock:
                    return self._status
            return self._learn(PauseStatus.from_lease(lease))
        finally:
            self._refreshing.release()

    def run(self, stop: Cancellation) -> None:
        """Refresh every ``refresh_seconds`` until ``stop`` fires (run it in a daemon thread)."""
        while not stop.cancelled:
            self.refresh()
            if self.clock.sleep(max(self.refresh_seconds, 0.1), stop):
                return

    # -- writing -------------------------------------------------------------------------------------

    def set(self, paused: bool, by: str, reason: str) -> PauseStatus:
        """Pause or resume (merge patch of the Lease's annotations; creates the Lease if there is none yet).

        Raises ``ApiException`` if the API server refuses (e.g. 403: the caller may not patch Leases).
        """
        patch = {"metadata": {"annotations": annotations_for(paused, by, reason, self.clock.now())}}
        path = lease_path(self.namespace, self.lease_name)
        try:
            lease = self.kube.request("PATCH", path, body=patch, content_type=MERGE_PATCH, timeout=self.request_timeout)
        except ApiException as error:
            if error.status != 404:
                raise
            if not paused:
                return self._learn(PauseStatus(paused=False))  # no Lease: nothing to resume
            lease = self._create(patch["metadata"]["annotations"])
        with self._lock:
            self._read_at = self.clock.monotonic()
        return self._learn(PauseStatus.from_lease(lease))

    # -- internals -----------------------------------------------------------------------------------

    def _get(self) -> dict[str, Any] | None:
        try:
            return self.kube.request("GET", lease_path(self.namespace, self.lease_name), timeout=self.request_timeout)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _create(self, annotations: Mapping[str, str | None]) -> dict[str, Any]:
        """A Lease with no holder yet, carrying the switch; the first elector takes it over (keeping it)."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.lease_name,
                "namespace": self.namespace,
                "annotations": {k: v for k, v in annotations.items() if v is not None},
            },
            "spec": {},
        }
        try:
            return self.kube.request("POST", lease_path(self.namespace), body=body, timeout=self.request_timeout)
        except ApiException as error:
            if error.status != 409:
                raise
        # An elector created it in the meantime: patch that one.
        return self.kube.request(
            "PATCH",
            lease_path(self.namespace, self.lease_name),
            body={"metadata": {"annotations": dict(annotations)}},
            content_type=MERGE_PATCH,
            timeout=self.request_timeout,
        )

    def _learn(self, status: PauseStatus) -> PauseStatus:
        with self._lock:
            changed = not self._known or status.paused != self._status.paused
            first = not self._known
            recovered = self._failing
            self._status = status
            self._known = True
            self._failing = False
        if recovered:
            log.info("%s is readable again: %s", self.description, status.describe())
        if changed:
            if status.paused:
                log.warning("Spot Guard is %s; new notices are not acted on until spotguard resume", status.describe())
            elif not first:
                log.info("Spot Guard was resumed; acting on notices again")
            if self.on_change is not None:
                try:
                    self.on_change(status.paused)
                except Exception:
                    log.exception("the pause switch's on_change callback raised; ignoring it")
        return status

    def _read_failed(self, error: Exception) -> None:
        with self._lock:
            first_failure = not self._failing
            self._failing = True
            known = self._status.paused
        detail = f"HTTP {error.status} {error.reason}" if isinstance(error, ApiException) else repr(error)
        if first_failure:
            log.warning(
                "cannot read %s (%s); keeping the last known value (%s) until it is readable again",
                self.description,
                detail,
                "paused" if known else "not paused",
            )
        else:
            log.debug("still cannot read %s: %s", self.description, detail)
