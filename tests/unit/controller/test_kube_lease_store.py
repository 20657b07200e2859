"""``KubeLeaseStore`` against a fake CoordinationV1Api that keeps Leases as JSON, as strict as the API server.

The fake enforces what the real server does and a mock would not: resourceVersion checks (409), 404 on a
missing Lease, and Go's MicroTime layout (exactly six fraction digits) on every timestamp written.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any, cast
from unittest.mock import MagicMock

import pytest
import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controller.adapters.election import (
    ApiTimeoutError,
    ConflictError,
    KubeLeaseStore,
    LeaseApiError,
    LeaseElector,
    LeaseStoreError,
)
from controller.adapters.election.kube_store import request_timeout_arg
from controller.clock import FakeClock
from tests.unit.controller.election_helpers import START, ExitRecorder, held_by

NAMESPACE, NAME = "spotguard", "spotguard-controller"
# Go's time.Parse with RFC3339Micro, "2006-01-02T15:04:05.000000Z07:00", as metav1.MicroTime unmarshals.
GO_MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)")


class FakeResponse:
    """What the client returns with ``_preload_content=False``: an urllib3 response with the raw body."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()
        self.released = False

    def release_conn(self) -> None:
        self.released = True


def api_error(status: int, reason: str, message: str) -> ApiException:
    error = ApiException(status=status, reason=reason)
    error.body = json.dumps(
        {"kind": "Status", "status": "Failure", "reason": reason, "message": message, "code": status}
    )
    return error


class FakeCoordinationApi:
    """The three Lease endpoints of an API server, keeping Leases as JSON."""

    def __init__(self) -> None:
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.request_kwargs: list[dict[str, Any]] = []
        self._version = 100

    def read_namespaced_lease(self, name: str, namespace: str, **kwargs: Any) -> FakeResponse:
        self.request_kwargs.append(kwargs)
        lease = self.leases.get((namespace, name))
        if lease is None:
            raise api_error(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
        return FakeResponse(lease)

    def create_namespaced_lease(self, namespace: str, body: dict[str, Any], **kwargs: Any) -> FakeResponse:
        self.request_kwargs.append(kwargs)
        name = self._validate(body)
        if (namespace, name) in self.leases:
            raise api_error(409, "AlreadyExists", f'leases.coordination.k8s.io "{name}" already exists')
        if "resourceVersion" in body["metadata"]:
            raise api_error(500, "InternalError", "resourceVersion should not be set on objects to be created")
        return self._store(namespace, name, body)

    def replace_namespaced_lease(self, name: str, namespace: str, body: dict[str, Any], **kwargs: Any) -> FakeResponse:
        self.request_kwargs.append(kwargs)
        self._validate(body)
        current = self.leases.get((namespace, name))
        if current is None:
            raise api_error(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise api_error(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        return self._store(namespace, name, body)

    def _validate(self, body: dict[str, Any]) -> str:
        json.dumps(body)  # a datetime or model object would not serialise: the client would send garbage
        for field in ("acquireTime", "renewTime"):
            value = body["spec"].get(field)
            if value is not None and not GO_MICRO_TIME.fullmatch(value):
                raise api_error(400, "BadRequest", f'parsing time "{value}" as "2006-01-02T15:04:05.000000Z07:00"')
        return str(body["metadata"]["name"])

    def _store(self, namespace: str, name: str, body: dict[str, Any]) -> FakeResponse:
        self._version += 1
        stored = json.loads(json.dumps(body))
        stored["metadata"]["resourceVersion"] = str(self._version)
        self.leases[(namespace, name)] = stored
        return FakeResponse(stored)


def lease_json(spec: dict[str, Any], *, resource_version: str = "7", **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "resourceVersion": resource_version, **metadata},
        "spec": spec,
    }


@pytest.fixture
def api() -> FakeCoordinationApi:
    return FakeCoordinationApi()


def test_electors_acquire_renew_release_and_take_over_through_the_api(api: FakeCoordinationApi) -> None:
    clock = FakeClock(start=START)
    a = LeaseElector(KubeLeaseStore(api, NAMESPACE, NAME), identity="a", clock=clock, exit_process=ExitRecorder())
    b = LeaseElector(KubeLeaseStore(api, NAMESPACE, NAME), identity="b", clock=clock, exit_process=ExitRecorder())

    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.advance(2)
    assert a.try_acquire_or_renew()
    spec = api.leases[(NAMESPACE, NAME)]["spec"]
    assert spec == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "leaseTransitions": 0,
        "acquireTime": "2025-01-15T10:00:00.000000Z",
        "renewTime": "2025-01-15T10:00:02.000000Z",
    }

    assert a.release()
    assert api.leases[(NAMESPACE, NAME)]["spec"]["holderIdentity"] == ""
    assert api.leases[(NAMESPACE, NAME)]["spec"]["leaseDurationSeconds"] == 1
    assert b.try_acquire_or_renew()
    assert api.leases[(NAMESPACE, NAME)]["spec"]["leaseTransitions"] == 1

    assert all(kwargs["_preload_content"] is False for kwargs in api.request_kwargs)
    assert all(kwargs["_request_timeout"] == 5 for kwargs in api.request_kwargs)


def test_a_missing_lease_reads_as_none(api: FakeCoordinationApi) -> None:
    assert KubeLeaseStore(api, NAMESPACE, NAME).get(timeout=5) is None


def test_creating_a_lease_that_already_exists_is_a_conflict(api: FakeCoordinationApi) -> None:
    first, second = KubeLeaseStore(api, NAMESPACE, NAME), KubeLeaseStore(api, NAMESPACE, NAME)
    first.create(held_by("a", START), timeout=5)

    with pytest.raises(ConflictError, match="409 AlreadyExists"):
        second.create(held_by("b", START), timeout=5)


def test_replacing_from_a_stale_resource_version_is_a_conflict(api: FakeCoordinationApi) -> None:
    store = KubeLeaseStore(api, NAMESPACE, NAME)
    created = store.create(held_by("a", START), timeout=5)
    store.update(held_by("a", START + dt.timedelta(seconds=2)), created.resource_version, timeout=5)

    with pytest.raises(ConflictError, match="409 Conflict"):
        store.update(held_by("b", START), created.resource_version, timeout=5)
    assert api.leases[(NAMESPACE, NAME)]["spec"]["holderIdentity"] == "a"


def test_a_replace_keeps_the_labels_annotations_and_owners_it_read(api: FakeCoordinationApi) -> None:
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "spotguard", "uid": "1234"}
    api.leases[(NAMESPACE, NAME)] = lease_json(
        {"holderIdentity": "", "leaseDurationSeconds": 1},
        labels={"app": "spotguard"},
        annotations={"team": "infra"},
        ownerReferences=[owner],
    )
    store = KubeLeaseStore(api, NAMESPACE, NAME)
    current = store.get(timeout=5)
    assert current is not None

    store.update(held_by("a", START), current.resource_version, timeout=5)

    metadata = api.leases[(NAMESPACE, NAME)]["metadata"]
    assert metadata["labels"] == {"app": "spotguard"}
    assert metadata["annotations"] == {"team": "infra"}
    assert metadata["ownerReferences"] == [owner]


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("2025-01-15T10:00:00.123456Z", dt.datetime(2025, 1, 15, 10, 0, 0, 123456, tzinfo=dt.UTC)),
        ("2025-01-15T10:00:00Z", dt.datetime(2025, 1, 15, 10, 0, 0, tzinfo=dt.UTC)),
        ("2025-01-15T10:00:00.123456789Z", dt.datetime(2025, 1, 15, 10, 0, 0, 123456, tzinfo=dt.UTC)),
        ("2025-01-15T12:00:00.5+02:00", dt.datetime(2025, 1, 15, 10, 0, 0, 500000, tzinfo=dt.UTC)),
        (None, None),
        ("yesterday", None),
        ("2025-01-15T10:00:00", None),  # no zone: ambiguous, so unreadable
    ],
)
def test_lease_timestamps_are_read_leniently(
    api: FakeCoordinationApi, written: str | None, read: dt.datetime | None
) -> None:
    api.leases[(NAMESPACE, NAME)] = lease_json(
        {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": written, "acquireTime": written}
    )

    current = KubeLeaseStore(api, NAMESPACE, NAME).get(timeout=5)

    assert current is not None
    assert (current.record.renew_time, current.record.acquire_time) == (read, read)
    assert current.record.holder_identity == "a"


def test_a_lease_with_an_empty_spec_reads_as_unheld(api: FakeCoordinationApi) -> None:
    api.leases[(NAMESPACE, NAME)] = lease_json({})

    current = KubeLeaseStore(api, NAMESPACE, NAME).get(timeout=5)

    assert current is not None
    assert (current.record.holder_identity, current.record.lease_duration_seconds) == ("", 0)
    assert current.resource_version == "7"


def _refused(status: int, reason: str) -> ApiException:
    return api_error(status, reason, "the server says no")


@pytest.mark.parametrize(
    ("raised", "expected", "message"),
    [
        (_refused(403, "Forbidden"), LeaseApiError, "grant the controller's ServiceAccount get, create and update"),
        (_refused(500, "InternalError"), LeaseApiError, "500 InternalError"),
        (_refused(504, "Timeout"), ApiTimeoutError, "504 Timeout"),
        (_refused(429, "TooManyRequests"), LeaseApiError, "429 TooManyRequests"),
        (
            urllib3.exceptions.ReadTimeoutError(cast(Any, None), "/apis", "read timed out"),
            ApiTimeoutError,
            "within 5.0s",
        ),
        (
            urllib3.exceptions.MaxRetryError(
                cast(Any, None), "/apis", urllib3.exceptions.NewConnectionError(cast(Any, None), "refused")
            ),
            LeaseApiError,
            "could not reach the API server",
        ),
        (ConnectionResetError("reset by peer"), LeaseApiError, "could not reach the API server"),
    ],
)
def test_api_failures_become_store_errors_that_say_what_happened(
    raised: Exception, expected: type[LeaseStoreError], message: str
) -> None:
    api = MagicMock()
    api.read_namespaced_lease.side_effect = raised
    store = KubeLeaseStore(api, NAMESPACE, NAME)

    with pytest.raises(expected, match=message) as caught:
        store.get(timeout=5)
    assert f"lease {NAMESPACE}/{NAME}" in str(caught.value)


def test_a_reply_that_is_not_json_is_a_store_error() -> None:
    api = MagicMock()
    api.read_namespaced_lease.return_value.data = b"<html>proxy error</html>"

    with pytest.raises(LeaseApiError, match="not JSON"):
        KubeLeaseStore(api, NAMESPACE, NAME).get(timeout=5)


@pytest.mark.parametrize(
    ("seconds", "argument"),
    [(5.0, 5), (4.99, 4), (1.0, 1), (0.6, (0.3, 0.3))],
)
def test_request_timeouts_are_shaped_so_the_client_does_not_ignore_them(
    seconds: float, argument: int | tuple[float, float]
) -> None:
    # The client ignores a float _request_timeout entirely: only int (total) or a (connect, read) pair work.
    result = request_timeout_arg(seconds)
    assert result == argument
    assert not isinstance(result, float)


def test_a_client_that_retries_on_its_own_is_flagged_and_from_configuration_turns_retries_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configuration = k8s.Configuration()
    with caplog.at_level(logging.WARNING):
        KubeLeaseStore(k8s.CoordinationV1Api(k8s.ApiClient(configuration)), NAMESPACE, NAME)
    assert "retries failed requests" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        KubeLeaseStore.from_configuration(configuration, NAMESPACE, NAME)
    assert "retries failed requests" not in caplog.text
    assert configuration.retries is None  # the caller's configuration is left alone
