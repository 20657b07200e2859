"""NodeClient against the fake API server: what it sends, what it refuses, how it fails, token rotation."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodewatch import annotations as keys
from nodewatch.clock import ManualClock
from nodewatch.kube_connection import KubeConnection, StaticToken, TokenFile
from nodewatch.node import KubeAPIError, KubeAPIErrorKind, NodeClient
from tests.support.fake_kube_api import FakeKubeAPI

NODE = "ip-10-0-0-1.ec2.internal"


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as server:
        server.add_node(NODE, {"node.alpha.kubernetes.io/ttl": "0"})
        yield server


def plain_connection(url: str, token: StaticToken | TokenFile | None = None) -> KubeConnection:
    host, port = url.removeprefix("http://").split(":")
    return KubeConnection(
        scheme="http",
        host=host,
        port=int(port),
        base_path="",
        ssl_context=None,
        token=token if token is not None else StaticToken("test-token"),
        description="fake API server",
    )


def test_get_returns_the_node_annotations_asking_for_metadata_only(api: FakeKubeAPI) -> None:
    client = NodeClient(plain_connection(api.url))

    assert client.get_annotations(NODE) == {"node.alpha.kubernetes.io/ttl": "0"}
    (request,) = api.requests
    assert request.path == f"/api/v1/nodes/{NODE}"
    assert request.authorization == "Bearer test-token"
    assert request.accept is not None
    assert "as=PartialObjectMetadata" in request.accept


def test_patch_is_a_merge_patch_of_nodewatch_annotations_only(api: FakeKubeAPI) -> None:
    client = NodeClient(plain_connection(api.url))
    before = api.node(NODE)
    changes: dict[str, str | None] = {
        keys.REBALANCE_NOTICE_TIME: "2025-01-15T10:00:00Z",
        keys.REBALANCE_FIRST_SEEN: "2025-01-15T10:00:01Z",
    }

    after = client.patch_annotations(NODE, changes)
    client.patch_annotations(NODE, {keys.REBALANCE_FIRST_SEEN: None})

    first, second = api.patches
    assert first.content_type == "application/merge-patch+json"
    assert first.body == {"metadata": {"annotations": changes}}
    assert second.body == {"metadata": {"annotations": {keys.REBALANCE_FIRST_SEEN: None}}}
    assert after == {"node.alpha.kubernetes.io/ttl": "0", **changes}
    node = api.node(NODE)
    assert node["metadata"]["annotations"] == {
        "node.alpha.kubernetes.io/ttl": "0",
        keys.REBALANCE_NOTICE_TIME: "2025-01-15T10:00:00Z",
    }
    assert node["metadata"]["labels"] == before["metadata"]["labels"]
    assert node["spec"] == before["spec"]
    assert node["status"] == before["status"]


def test_patching_a_foreign_key_is_refused_before_anything_is_sent(api: FakeKubeAPI) -> None:
    client = NodeClient(plain_connection(api.url))
    with pytest.raises(ValueError, match=re.escape("node.kubernetes.io/exclude")):
        client.patch_annotations(NODE, {keys.INSTANCE_ID: "i-1", "node.kubernetes.io/exclude": "true"})
    assert api.requests == []


@pytest.mark.parametrize(
    ("status", "kind", "advice"),
    [
        (403, KubeAPIErrorKind.FORBIDDEN, "ClusterRole"),
        (500, KubeAPIErrorKind.SERVER_ERROR, "retries with backoff"),
        (429, KubeAPIErrorKind.SERVER_ERROR, "retries with backoff"),
        (422, KubeAPIErrorKind.INVALID, "bug"),
    ],
)
def test_api_errors_say_what_failed_and_what_to_do(
    api: FakeKubeAPI, status: int, kind: KubeAPIErrorKind, advice: str
) -> None:
    api.fail("PATCH", status, message="denied by policy spotguard-nodewatch")
    with pytest.raises(KubeAPIError) as caught:
        NodeClient(plain_connection(api.url)).patch_annotations(NODE, {keys.INSTANCE_ID: "i-1"})
    assert caught.value.kind is kind
    assert caught.value.status == status
    message = str(caught.value)
    assert f"HTTP {status}" in message
    assert f"PATCH of node {NODE}" in message
    assert "denied by policy spotguard-nodewatch" in message
    assert advice in message


def test_an_unknown_node_points_at_the_node_name(api: FakeKubeAPI) -> None:
    with pytest.raises(KubeAPIError) as caught:
        NodeClient(plain_connection(api.url)).get_annotations("no-such-node")
    assert caught.value.kind is KubeAPIErrorKind.NOT_FOUND
    assert "NODE_NAME" in str(caught.value)


def test_an_unreachable_api_server_is_a_connection_error() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    with pytest.raises(KubeAPIError) as caught:
        NodeClient(plain_connection(f"http://127.0.0.1:{port}"), timeout=1.0).get_annotations(NODE)
    assert caught.value.kind is KubeAPIErrorKind.CONNECTION
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_a_rotated_token_file_is_picked_up_on_change(api: FakeKubeAPI, tmp_path: Path) -> None:
    token_path = tmp_path / "token"
    token_path.write_text("first-token\n")
    api.accepted_tokens = {"first-token"}
    client = NodeClient(plain_connection(api.url, TokenFile(token_path)))
    client.get_annotations(NODE)

    token_path.write_text("second-token-longer\n")
    api.accepted_tokens = {"second-token-longer"}
    client.get_annotations(NODE)

    assert [request.authorization for request in api.requests] == [
        "Bearer first-token",
        "Bearer second-token-longer",
    ]


def test_a_401_makes_the_client_read_the_token_file_again_and_retry(api: FakeKubeAPI, tmp_path: Path) -> None:
    token_path = tmp_path / "token"
    token_path.write_text("token-A")
    api.accepted_tokens = {"token-A"}
    client = NodeClient(plain_connection(api.url, TokenFile(token_path)))
    client.get_annotations(NODE)
    # Rotated behind our back with the same size and modification time: only the 401 can tell.
    stat = token_path.stat()
    token_path.write_text("token-B")
    os.utime(token_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    api.accepted_tokens = {"token-B"}

    assert client.get_annotations(NODE) == {"node.alpha.kubernetes.io/ttl": "0"}
    assert [(request.authorization, request.status) for request in api.requests[1:]] == [
        ("Bearer token-A", 401),
        ("Bearer token-B", 200),
    ]


def test_a_rejected_static_token_is_an_unauthorized_error(api: FakeKubeAPI) -> None:
    with pytest.raises(KubeAPIError) as caught:
        NodeClient(plain_connection(api.url, StaticToken("wrong"))).get_annotations(NODE)
    assert caught.value.kind is KubeAPIErrorKind.UNAUTHORIZED
    assert "token" in str(caught.value)


def test_a_missing_token_file_is_a_credentials_error_naming_the_file(api: FakeKubeAPI, tmp_path: Path) -> None:
    client = NodeClient(plain_connection(api.url, TokenFile(tmp_path / "absent")))
    with pytest.raises(KubeAPIError) as caught:
        client.get_annotations(NODE)
    assert caught.value.kind is KubeAPIErrorKind.CREDENTIALS
    assert str(tmp_path / "absent") in str(caught.value)
    assert api.requests == []


def test_token_file_is_read_again_every_minute_even_without_a_visible_change(tmp_path: Path) -> None:
    clock = ManualClock()
    token_path = tmp_path / "token"
    token_path.write_text("token-A")
    token = TokenFile(token_path, clock=clock)
    assert token.value() == "token-A"
    stat = token_path.stat()
    token_path.write_text("token-B")
    os.utime(token_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    clock.advance(59)
    assert token.value() == "token-A"
    clock.advance(2)
    assert token.value() == "token-B"
