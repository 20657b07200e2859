"""Reads and patches the annotations of one Node through the Kubernetes API (http.client + ssl).

The only two calls nodewatch makes: GET /api/v1/nodes/{name} at start-up (to learn what it recorded
before a restart) and a JSON merge PATCH that touches nothing but nodewatch's own annotation keys.
Both ask for metadata only (PartialObjectMetadata), so a Node with a long image list costs no memory.
"""

from __future__ import annotations

import dataclasses
import enum
import http.client
import json
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any

from nodewatch.annotations import NODEWATCH_KEYS
from nodewatch.kube_connection import KubeConnection, TokenUnavailableError

# Metadata only when the server supports it (every supported version does); full object otherwise.
ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json"
MERGE_PATCH = "application/merge-patch+json"
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
USER_AGENT = "spotguard-nodewatch"


class KubeAPIErrorKind(enum.StrEnum):
    """Why a call to the API server failed; also the ``kind`` label of the patch error metric."""

    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    INVALID = "invalid"
    SERVER_ERROR = "server_error"
    UNEXPECTED_STATUS = "unexpected_status"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    TLS = "tls"
    CREDENTIALS = "credentials"
    MALFORMED = "malformed"


_STATUS_KINDS = {
    401: KubeAPIErrorKind.UNAUTHORIZED,
    403: KubeAPIErrorKind.FORBIDDEN,
    404: KubeAPIErrorKind.NOT_FOUND,
    422: KubeAPIErrorKind.INVALID,
}

_ADVICE = {
    KubeAPIErrorKind.UNAUTHORIZED: "check the service-account token (or the kubeconfig credentials)",
    KubeAPIErrorKind.FORBIDDEN: (
        "nodewatch needs get and patch on nodes, and may change only its own annotation keys on its own node; "
        "check its ClusterRole and the admission policy"
    ),
    KubeAPIErrorKind.NOT_FOUND: "check that NODE_NAME (--node-name) is this pod's node (spec.nodeName)",
    KubeAPIErrorKind.INVALID: "the API server refused the annotation values; this is a nodewatch bug, please report it",
}


class KubeAPIError(Exception):
    """A call to the API server failed. ``key`` is stable across repeats of the same failure."""

    def __init__(self, kind: KubeAPIErrorKind, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.key = f"{kind}:{status}"


@dataclasses.dataclass(frozen=True)
class Request:
    """One call as nodewatch sends it: ``path`` is absolute on the server; ``headers`` are all that
    http.client sends (Host and Content-Length aside)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None


def patch_body(changes: Mapping[str, str | None]) -> bytes:
    """The merge patch that sets (or, for None, deletes) nodewatch annotation keys; ValueError for any other key."""
    foreign = sorted(set(changes) - set(NODEWATCH_KEYS))
    if foreign:
        raise ValueError(f"nodewatch may only patch its own annotation keys; refusing to patch {foreign}")
    return json.dumps({"metadata": {"annotations": dict(changes)}}, separators=(",", ":")).encode()


class NodeClient:
    """GET and merge-PATCH of one Node's annotations, limited to nodewatch's keys."""

    def __init__(self, connection: KubeConnection, timeout: float = 5.0) -> None:
        self.connection = connection
        self._timeout = timeout

    def get_annotations(self, name: str) -> dict[str, str]:
        """All annotations of Node ``name`` (not only nodewatch's)."""
        return self._annotations(self._call("GET", name, None), name)

    def patch_annotations(self, name: str, changes: Mapping[str, str | None]) -> dict[str, str]:
        """Merge-patch nodewatch annotations of Node ``name`` (None deletes a key); returns the annotations after."""
        return self._annotations(self._call("PATCH", name, patch_body(changes)), name)

    def _annotations(self, document: Any, name: str) -> dict[str, str]:
        metadata = document.get("metadata") if isinstance(document, dict) else None
        annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
        if metadata is None or (annotations is not None and not isinstance(annotations, dict)):
            raise KubeAPIError(
                KubeAPIErrorKind.MALFORMED,
                f"the API server's answer for node {name} has no readable metadata.annotations",
            )
        return {str(key): str(value) for key, value in (annotations or {}).items()}

    def _call(self, method: str, name: str, body: bytes | None) -> Any:
        token = self.connection.token
        status, payload = self._exchange(method, name, body)
        if status == 401 and token is not None:
            token.invalidate()  # the token may have been rotated under us: read it again and retry once
            status, payload = self._exchange(method, name, body)
        if 200 <= status < 300:
            try:
                return json.loads(payload)
            except ValueError:
                raise KubeAPIError(
                    KubeAPIErrorKind.MALFORMED,
                    f"the API server answered {method} of node {name} with something that is not JSON",
                    status,
                ) from None
        raise self._status_error(method, name, status, payload)

    def _status_error(self, method: str, name: str, status: int, payload: bytes) -> KubeAPIError:
        if status in _STATUS_KINDS:
            kind = _STATUS_KINDS[status]
        elif status >= 500 or status == 429:
            kind = KubeAPIErrorKind.SERVER_ERROR
        else:
            kind = KubeAPIErrorKind.UNEXPECTED_STATUS
        reason = ""
        try:
            status_document = json.loads(payload)
            if isinstance(status_document, dict) and status_document.get("message"):
                reason = f": {str(status_document['message'])[:300]}"
        except ValueError:
            pass
        advice = _ADVICE.get(kind, "nodewatch retries with backoff")
        return KubeAPIError(
            kind,
            f"{self.connection.server} answered HTTP {status} to {method} of node {name}{reason}; {advice}",
            status,
        )

    def request(self, method: str, name: str, body: bytes | None) -> Request:
        """The call ``method`` on Node ``name`` as this client sends it (the current token included)."""
        conn = self.connection
        path = f"{conn.base_path}/api/v1/nodes/{urllib.parse.quote(name, safe='')}"
        # Accept-Encoding as http.client would add it, so that these are all the headers it sends.
        headers = {"Accept": ACCEPT, "User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if body is not None:
            headers["Content-Type"] = MERGE_PATCH
        if conn.token is not None:
            try:
                headers["Authorization"] = f"Bearer {conn.token.value()}"
            except TokenUnavailableError as error:
                raise KubeAPIError(KubeAPIErrorKind.CREDENTIALS, str(error)) from None
        return Request(method, path, headers, body)

    def _exchange(self, method: str, name: str, body: bytes | None) -> tuple[int, bytes]:
        conn = self.connection
        request = self.request(method, name, body)
        path = request.path
        connection: http.client.HTTPConnection
        if conn.scheme == "https":
            connection = http.client.HTTPSConnection(
                conn.host, conn.port, timeout=self._timeout, context=conn.ssl_context
            )
        else:
            connection = http.client.HTTPConnection(conn.host, conn.port, timeout=self._timeout)
        where = f"{method} {conn.server}{path[len(conn.base_path) :]}"
        try:
            connection.request(method, path, body=body, headers=request.headers)
            response = connection.getresponse()
            return response.status, response.read(MAX_RESPONSE_BYTES)
        except TimeoutError:
            raise KubeAPIError(
                KubeAPIErrorKind.TIMEOUT, f"the API server did not answer {where} within {self._timeout:g} s"
            ) from None
        except ssl.SSLError as error:
            raise KubeAPIError(
                KubeAPIErrorKind.TLS,
                f"TLS with the API server failed for {where}: {error}; check the CA (ca.crt or "
                "certificate-authority) and the client certificate",
            ) from None
        except (OSError, http.client.HTTPException) as error:
            raise KubeAPIError(
                KubeAPIErrorKind.CONNECTION, f"cannot reach the API server for {where}: {error or type(error).__name__}"
            ) from None
        finally:
            connection.close()
