"""The Lease on the API server (``coordination.k8s.io/v1``), read and written as raw JSON.

Raw JSON both ways (``_preload_content=False``, dict bodies) so that timestamps are MicroTimes with exactly
six fraction digits on the way out and are parsed leniently on the way in, whatever the client's models do.
Writes are full replaces (PUT) carrying the resourceVersion read, so a racing writer gets 409 Conflict.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controller.adapters.election.record import LeaseRecord, StoredLease, format_micro_time, parse_micro_time
from controller.adapters.election.store import ApiTimeoutError, ConflictError, LeaseApiError, LeaseStoreError

log = logging.getLogger(__name__)

#: Metadata and spec fields of the Lease that a replace keeps as they were read.
_KEPT_METADATA = ("labels", "annotations", "ownerReferences", "finalizers")
_KEPT_SPEC = ("preferredHolder", "strategy")


class KubeLeaseStore:
    """A ``LeaseStore`` over ``CoordinationV1Api`` for one Lease.

    Each call passes ``_request_timeout`` so it ends within the timeout it is given. urllib3 retries would
    multiply that bound, so build the store with ``from_configuration`` (own connection pool, retries off)
    or hand in an ``api`` whose configuration has ``retries = False``.
    """

    def __init__(self, api: Any, namespace: str, name: str) -> None:
        if not namespace or not name:
            raise ValueError(f"a Lease needs a namespace and a name, got namespace={namespace!r} name={name!r}")
        self._api = api
        self._namespace = namespace
        self._name = name
        self._description = f"lease {namespace}/{name}"
        self._last_body: Mapping[str, Any] | None = None
        configuration = getattr(getattr(api, "api_client", None), "configuration", None)
        if configuration is not None and getattr(configuration, "retries", False) is None:
            log.warning(
                "the API client for %s retries failed requests (urllib3's default of 3), so one call can outlast "
                "its timeout and the renew deadline; build it with KubeLeaseStore.from_configuration or set "
                "configuration.retries = False",
                self._description,
            )

    @classmethod
    def from_configuration(cls, configuration: Any, namespace: str, name: str) -> KubeLeaseStore:
        """A store with its own connection pool, from a copy of ``configuration`` with urllib3 retries off."""
        own = copy.deepcopy(configuration)
        own.retries = False
        return cls(k8s.CoordinationV1Api(k8s.ApiClient(own)), namespace, name)

    @property
    def description(self) -> str:
        return self._description

    def get(self, *, timeout: float) -> StoredLease | None:
        try:
            response = self._api.read_namespaced_lease(
                self._name, self._namespace, _preload_content=False, _request_timeout=request_timeout_arg(timeout)
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise self._api_error("reading", error) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise self._transport_error("reading", error, timeout) from error
        return self._read_reply("reading", response)

    def create(self, record: LeaseRecord, *, timeout: float) -> StoredLease:
        body = self._body(record, resource_version=None)
        try:
            response = self._api.create_namespaced_lease(
                self._namespace, body, _preload_content=False, _request_timeout=request_timeout_arg(timeout)
            )
        except ApiException as error:
            raise self._api_error("creating", error) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise self._transport_error("creating", error, timeout) from error
        return self._read_reply("creating", response)

    def update(self, record: LeaseRecord, resource_version: str, *, timeout: float) -> StoredLease:
        body = self._body(record, resource_version=resource_version)
        try:
            response = self._api.replace_namespaced_lease(
                self._name,
                self._namespace,
                body,
                _preload_content=False,
                _request_timeout=request_timeout_arg(timeout),
            )
        except ApiException as error:
            raise self._api_error(f"updating (from resourceVersion {resource_version})", error) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise self._transport_error("updating", error, timeout) from error
        return self._read_reply("updating", response)

    # -- bodies ----------------------------------------------------------------------------------------------

    def _body(self, record: LeaseRecord, resource_version: str | None) -> dict[str, Any]:
        """The full Lease to send. A replace keeps labels, owners etc. of the version it replaces."""
        metadata: dict[str, Any] = {"name": self._name, "namespace": self._namespace}
        spec: dict[str, Any] = {}
        previous = self._last_body
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
            if previous is not None and _metadata(previous).get("resourceVersion") == resource_version:
                metadata.update({key: _metadata(previous)[key] for key in _KEPT_METADATA if key in _metadata(previous)})
                spec.update({key: _spec(previous)[key] for key in _KEPT_SPEC if key in _spec(previous)})
        spec["holderIdentity"] = record.holder_identity
        spec["leaseDurationSeconds"] = record.lease_duration_seconds
        spec["leaseTransitions"] = record.lease_transitions
        if record.acquire_time is not None:
            spec["acquireTime"] = format_micro_time(record.acquire_time)
        if record.renew_time is not None:
            spec["renewTime"] = format_micro_time(record.renew_time)
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    def _read_reply(self, action: str, response: Any) -> StoredLease:
        try:
            raw = response.data
        finally:
            release = getattr(response, "release_conn", None)
            if callable(release):
                release()
        try:
            body = json.loads(raw)
        except (TypeError, ValueError) as error:
            raise LeaseApiError(
                f"{action} {self._description}: the API server's reply is not JSON ({error}); is the API server "
                f"address right?",
                lease=self._description,
                status=None,
            ) from error
        if not isinstance(body, dict):
            raise self._malformed(action, f"expected a Lease object, got {type(body).__name__}")
        stored = self.parse_lease(body)
        self._last_body = body
        return stored

    def parse_lease(self, body: Mapping[str, Any]) -> StoredLease:
        """The record and resourceVersion in a Lease's JSON; tolerant of absent fields and odd timestamps."""
        version = _metadata(body).get("resourceVersion")
        if not isinstance(version, str) or not version:
            raise self._malformed("reading", "the Lease has no metadata.resourceVersion")
        spec = _spec(body)
        holder = spec.get("holderIdentity")
        record = LeaseRecord(
            holder_identity=holder if isinstance(holder, str) else "",
            lease_duration_seconds=_whole_number(spec.get("leaseDurationSeconds")),
            acquire_time=parse_micro_time(spec.get("acquireTime"), field="spec.acquireTime", lease=self._description),
            renew_time=parse_micro_time(spec.get("renewTime"), field="spec.renewTime", lease=self._description),
            lease_transitions=_whole_number(spec.get("leaseTransitions")),
        )
        return StoredLease(record=record, resource_version=version)

    # -- errors ----------------------------------------------------------------------------------------------

    def _api_error(self, action: str, error: ApiException) -> LeaseStoreError:
        status = int(error.status or 0)
        reason, message = _status_details(error)
        what = f"{action} {self._description} failed: {status} {reason}: {message}"
        if status == 409:
            return ConflictError(f"{what} (another elector wrote it first)", lease=self._description)
        if status in (401, 403):
            return LeaseApiError(
                f"{what}; grant the controller's ServiceAccount get, create and update on "
                f"leases.coordination.k8s.io in namespace {self._namespace}",
                lease=self._description,
                status=status,
            )
        if status == 504 or reason in ("Timeout", "ServerTimeout"):
            return ApiTimeoutError(what, lease=self._description)
        return LeaseApiError(what, lease=self._description, status=status or None)

    def _transport_error(self, action: str, error: Exception, timeout: float) -> LeaseStoreError:
        cause: object = error.reason if isinstance(error, urllib3.exceptions.MaxRetryError) else error
        # NewConnectionError (refused, no route) subclasses urllib3's ConnectTimeoutError: it is not a timeout.
        timed_out = not isinstance(cause, urllib3.exceptions.NewConnectionError)
        if timed_out and isinstance(cause, urllib3.exceptions.TimeoutError | TimeoutError):
            return ApiTimeoutError(
                f"{action} {self._description}: the API server did not answer within {timeout:.1f}s ({cause})",
                lease=self._description,
            )
        return LeaseApiError(
            f"{action} {self._description}: could not reach the API server ({cause}); check its address and the "
            f"network path to it",
            lease=self._description,
            status=None,
        )

    def _malformed(self, action: str, problem: str) -> LeaseApiError:
        return LeaseApiError(
            f"{action} {self._description}: malformed reply, {problem}", lease=self._description, status=None
        )


def request_timeout_arg(seconds: float) -> int | tuple[float, float]:
    """The kubernetes client's ``_request_timeout`` for a call that must end within ``seconds``.

    The client turns an int into urllib3's total timeout (connect plus read) and a (connect, read) tuple into
    two separate bounds; it silently ignores a float. So: whole seconds, rounded down, from 1 s up; below
    that, half the time to connect and half to read.
    """
    if not seconds > 0:
        raise ValueError(f"a request timeout must be positive, got {seconds!r}")
    if seconds >= 1:
        return math.floor(seconds)
    return (seconds / 2, seconds / 2)


def _metadata(body: Mapping[str, Any]) -> Mapping[str, Any]:
    value = body.get("metadata")
    return value if isinstance(value, Mapping) else {}


def _spec(body: Mapping[str, Any]) -> Mapping[str, Any]:
    value = body.get("spec")
    return value if isinstance(value, Mapping) else {}


def _whole_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


def _status_details(error: ApiException) -> tuple[str, str]:
    """(reason, message) from the Status object the API server sends with an error, as far as it is readable."""
    reason = str(error.reason or "")
    body = error.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str) and body:
        try:
            status = json.loads(body)
        except ValueError:
            return reason, body[:200]
        if isinstance(status, dict):
            return str(status.get("reason") or reason), str(status.get("message") or "")
    return reason, ""
