"""Reads and optimistic writes of SpotGuardFallbackEvents (SGFEs) in one namespace.

Status is written only through the status subresource, always with the resourceVersion that was
read, so two controllers racing on one event cannot both win (the loser gets ``ConflictError``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from kubernetes.client.exceptions import ApiException

from controller.adapters.kube import Kube, WatchCache
from controller.model.sgfe import GROUP, KIND, LABELS, PLURAL, VERSION, FallbackEvent, MalformedEventError, Spec, Status

log = logging.getLogger(__name__)


class ConflictError(RuntimeError):
    """The object changed since it was read (HTTP 409): re-read and decide again."""


class FallbackEvents:
    """CRUD for SGFEs in one namespace through the thin Kubernetes layer.

    With a ``cache`` (a watch of the namespace's SGFEs) ``list`` reads the cache, so nothing LISTs
    periodically, and every write is remembered in it at once, so the next pass reads its own writes.
    """

    def __init__(self, kube: Kube, namespace: str, cache: WatchCache[FallbackEvent] | None = None) -> None:
        self.kube = kube
        self.namespace = namespace
        self.cache = cache

    @staticmethod
    def collection_path(namespace: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"

    def _path(self, name: str = "", status: bool = False) -> str:
        base = self.collection_path(self.namespace)
        if name:
            base += f"/{name}"
        return base + ("/status" if status else "")

    def create(
        self, name: str, spec: Spec, status: Status, annotations: Mapping[str, str] | None = None
    ) -> FallbackEvent:
        """Create the event and set its first status; idempotent: an existing one is returned as is."""
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": dict(LABELS),
                "annotations": dict(annotations or {}),
            },
            "spec": spec.to_json(),
        }
        try:
            created = self._seen(FallbackEvent.from_json(self.kube.request("POST", self._path(), body=body)))
        except ApiException as exc:
            if exc.status != 409:
                raise
            return self.get(name)
        return self.update_status(created, status)

    def get(self, name: str) -> FallbackEvent:
        return self._seen(FallbackEvent.from_json(self.kube.request("GET", self._path(name))))

    def find(self, name: str) -> FallbackEvent | None:
        try:
            return self.get(name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self) -> list[FallbackEvent]:
        if self.cache is not None and self.cache.synced.is_set():
            return sorted(self.cache.snapshot().values(), key=lambda event: event.name)
        items = self.kube.request("GET", self._path()).get("items", [])
        events = []
        for item in items:
            try:
                events.append(FallbackEvent.from_json(item))
            except MalformedEventError as exc:  # one bad event stops no other
                log.warning("%s; left alone", exc)
        return events

    def update_status(self, event: FallbackEvent, status: Status) -> FallbackEvent:
        """Replace the status of exactly the version read; ``ConflictError`` if it changed since."""
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": event.name, "namespace": event.namespace, "resourceVersion": event.resource_version},
            "spec": event.spec.to_json(),
            "status": status.to_json(),
        }
        try:
            return self._seen(
                FallbackEvent.from_json(self.kube.request("PUT", self._path(event.name, status=True), body=body))
            )
        except ApiException as exc:
            if exc.status == 409:
                raise ConflictError(
                    f"SpotGuardFallbackEvent {event.namespace}/{event.name} changed since resourceVersion "
                    f"{event.resource_version}; another controller acted on it"
                ) from exc
            raise

    def annotate(self, event: FallbackEvent, annotations: Mapping[str, str]) -> FallbackEvent:
        body = {"metadata": {"annotations": dict(annotations), "resourceVersion": event.resource_version}}
        try:
            return self._seen(
                FallbackEvent.from_json(
                    self.kube.request(
                        "PATCH", self._path(event.name), body=body, content_type="application/merge-patch+json"
                    )
                )
            )
        except ApiException as exc:
            if exc.status == 409:
                raise ConflictError(f"SpotGuardFallbackEvent {event.namespace}/{event.name} changed") from exc
            raise

    def delete(self, event: FallbackEvent) -> None:
        body = {"preconditions": {"uid": event.uid}} if event.uid else None
        try:
            self.kube.request("DELETE", self._path(event.name), body=body)
        except ApiException as exc:
            if exc.status != 404:
                raise
        if self.cache is not None:
            self.cache.forget(event.name)

    def _seen(self, event: FallbackEvent) -> FallbackEvent:
        """``event`` is the API server's answer to this process: the cache shows it from now on."""
        if self.cache is not None:
            self.cache.remember(event.name, event.resource_version, event)
        return event
