"""A tiny stand-in for the Kubernetes API server: GET and merge-PATCH of Nodes, with bearer-token checks.

It keeps whole Node objects (labels, taints and all) and applies JSON merge patches (RFC 7386) to them, so
a test can check both the patch bodies nodewatch sent and that nothing but annotations changed. It speaks
plain HTTP unless given a certificate and key, then HTTPS (optionally demanding a client certificate).
"""

from __future__ import annotations

import copy
import dataclasses
import http.server
import json
import ssl
import threading
from typing import Any

MERGE_PATCH = "application/merge-patch+json"


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    authorization: str | None
    content_type: str | None
    accept: str | None
    body: Any  # the parsed JSON body, or None
    status: int


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def make_node(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A Node object with some labels, a taint and status, so tests can see that they survive patches."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "karpenter.sh/capacity-type": "spot"},
            "annotations": dict(annotations or {}),
            "resourceVersion": "1",
        },
        "spec": {"taints": [{"key": "example.com/dedicated", "value": "batch", "effect": "NoSchedule"}]},
        "status": {"images": [{"names": ["registry.example/app:1"], "sizeBytes": 1}]},
    }


@dataclasses.dataclass
class _Failure:
    status: int
    message: str
    remaining: int


class FakeKubeAPI:
    """Serves /api/v1/nodes/{name}; see the module docstring."""

    def __init__(
        self,
        nodes: dict[str, dict[str, Any]] | None = None,
        *,
        tokens: set[str] | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_client_ca: str | None = None,
    ) -> None:
        self.nodes: dict[str, dict[str, Any]] = nodes if nodes is not None else {}
        self.accepted_tokens = {"test-token"} if tokens is None else tokens
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failures: dict[str, list[_Failure]] = {}
        self._server = _Server(self)
        self.scheme = "http"
        if tls_cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls_cert, tls_key)
            if tls_client_ca is not None:  # demand a client certificate signed by this CA
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(tls_client_ca)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"

    def start(self) -> FakeKubeAPI:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-kube-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- test controls -------------------------------------------------------------------------------

    def add_node(self, name: str, annotations: dict[str, str] | None = None) -> None:
        with self._lock:
            self.nodes[name] = make_node(name, annotations)

    def node(self, name: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self.nodes[name])

    def annotations(self, name: str) -> dict[str, str]:
        annotations: dict[str, str] = self.node(name)["metadata"].get("annotations") or {}
        return annotations

    def fail(self, method: str, status: int, times: int = 1, message: str = "injected failure") -> None:
        """Answer the next ``times`` requests with ``method`` with ``status``."""
        with self._lock:
            self._failures.setdefault(method, []).append(_Failure(status, message, times))

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def patches(self) -> list[RecordedRequest]:
        return [seen for seen in self.requests if seen.method == "PATCH" and seen.status == 200]

    # -- serving -------------------------------------------------------------------------------------

    def _injected(self, method: str) -> _Failure | None:
        with self._lock:
            queue = self._failures.get(method)
            if not queue:
                return None
            head = queue[0]
            head.remaining -= 1
            if head.remaining <= 0:
                queue.pop(0)
            return head

    def handle(self, method: str, path: str, headers: Any, raw: bytes) -> tuple[int, Any]:
        """Answer one request (called from the handler threads) and record it."""
        body: Any = None
        try:
            body = json.loads(raw) if raw else None
            answer = self._check(method, headers) or self._apply(method, path, headers, body)
        except ValueError:
            answer = _status(400, "body is not JSON")
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    method,
                    path,
                    headers.get("Authorization"),
                    headers.get("Content-Type"),
                    headers.get("Accept"),
                    body,
                    answer[0],
                )
            )
        return answer

    def _check(self, method: str, headers: Any) -> tuple[int, Any] | None:
        auth = headers.get("Authorization")
        if self.accepted_tokens and auth not in {f"Bearer {token}" for token in self.accepted_tokens}:
            return _status(401, "Unauthorized")
        failure = self._injected(method)
        if failure is not None:
            return _status(failure.status, failure.message)
        return None

    def _apply(self, method: str, path: str, headers: Any, body: Any) -> tuple[int, Any]:
        prefix = "/api/v1/nodes/"
        name = path[len(prefix) :] if path.startswith(prefix) else ""
        with self._lock:
            node = self.nodes.get(name)
            if node is None:
                return _status(404, f'nodes "{name}" not found')
            if method == "PATCH":
                if headers.get("Content-Type") != MERGE_PATCH:
                    return _status(415, "unsupported patch type")
                node = merge_patch(node, body)
                node["metadata"]["resourceVersion"] = str(int(node["metadata"]["resourceVersion"]) + 1)
                self.nodes[name] = node
            return 200, copy.deepcopy(node)


def _status(code: int, message: str) -> tuple[int, Any]:
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code}


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, answer = self.server.api.handle(method, self.path, self.headers, raw)
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests look at ``FakeKubeAPI.requests`` instead."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: FakeKubeAPI) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api
