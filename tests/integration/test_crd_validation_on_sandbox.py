"""The SpotGuardFallbackEvent CRD on the sandbox's real API server refuses garbage before it is stored (a duration
that is not one, a time that is not one, an instance id that is not one), naming the field, and stores what the
design writes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controller.model.sgfe import GROUP, PLURAL, VERSION, FallbackEvent

GOOD_SPEC = {
    "spotASGName": "my-spot-asg",
    "onDemandASGName": "my-ondemand-asg",
    "onDemandInstanceID": "i-0987654321fedcba0",
    "onDemandNodeName": "ip-10-0-2-100",
    "timestamp": "2025-01-15T10:00:45Z",
    "minimumWaitDuration": "10m",
}


def _create(api_client: k8s.ApiClient, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SpotGuardFallbackEvent",
        "metadata": {"name": name},
        "spec": {**GOOD_SPEC, **spec},
    }
    created = k8s.CustomObjectsApi(api_client).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    return dict(created)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("minimumWaitDuration", "nan"),
        ("minimumWaitDuration", "1e400"),
        ("minimumWaitDuration", "inf"),
        ("timestamp", "yesterday"),
        ("onDemandInstanceID", "not-an-instance"),
        ("spotASGName", ""),
    ],
)
def test_garbage_is_refused_naming_the_field(api_client: k8s.ApiClient, namespace: str, field: str, value: str) -> None:
    with pytest.raises(ApiException) as refused:
        _create(api_client, namespace, "garbage", **{field: value})
    assert refused.value.status == 422
    assert f"spec.{field}" in json.loads(refused.value.body)["message"]


@pytest.mark.parametrize("wait", ["10m", "10m0s", "600", "1h30m", "500ms"])
def test_what_the_design_and_go_write_is_stored_and_read(api_client: k8s.ApiClient, namespace: str, wait: str) -> None:
    created = _create(api_client, namespace, "fallback-1736938845-abc123", minimumWaitDuration=wait)
    event = FallbackEvent.from_json(created)
    assert event.spec.minimum_wait_duration == wait
    assert event.minimum_wait(0.0) > 0
