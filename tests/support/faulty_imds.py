"""A small IMDS double on 127.0.0.1 that can misbehave on purpose.

It serves the paths nodewatch reads, in one of three modes:

* ``IMDSMode.V2_REQUIRED`` - like AEMM with ``-I`` or an instance with HttpTokens=required: a GET without
  a valid session token is answered 401;
* ``IMDSMode.V2_OPTIONAL`` - tokens are issued and checked when sent, token-less GETs work too;
* ``IMDSMode.V1_ONLY`` - no tokens: ``PUT /latest/api/token`` is answered with ``v1_token_status``.

Faults are injected per path (the token path included) and apply to the next ``times`` requests, or until
cleared: ``Garbage`` (a 200 with a broken body), ``Status`` (any HTTP status, e.g. 503), ``Slow`` (answer
after a delay, to trigger client timeouts), ``Hangup`` (close the connection without an answer).
``reject_tokens(n)`` answers the next ``n`` token-carrying requests with 401 (a 401 storm).

Usage::

    with FaultyIMDS() as imds:
        imds.set_rebalance("2025-01-15T10:00:00Z")
        imds.inject(REBALANCE_PATH, Status(503), times=2)
        ... IMDSClient(imds.url) ...
"""

from __future__ import annotations

import dataclasses
import enum
import http.server
import json
import secrets
import threading
import time
from typing import Any

TOKEN_PATH = "/latest/api/token"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"
AVAILABILITY_ZONE_PATH = "/latest/meta-data/placement/availability-zone"
INSTANCE_LIFE_CYCLE_PATH = "/latest/meta-data/instance-life-cycle"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"


class IMDSMode(enum.Enum):
    V2_REQUIRED = "v2-required"
    V2_OPTIONAL = "v2-optional"
    V1_ONLY = "v1-only"


@dataclasses.dataclass(frozen=True)
class Garbage:
    """Answer 200 with this body instead of the document."""

    body: bytes = b'{"noticeTime": "2025-01-15T1'


@dataclasses.dataclass(frozen=True)
class Status:
    """Answer with this HTTP status and a short text body."""

    code: int


@dataclasses.dataclass(frozen=True)
class Slow:
    """Wait ``delay`` seconds, then answer normally (the client should have timed out by then)."""

    delay: float


@dataclasses.dataclass(frozen=True)
class Hangup:
    """Close the connection without sending anything."""


Fault = Garbage | Status | Slow | Hangup


@dataclasses.dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    token: str | None
    ttl_header: str | None
    status: int | None  # None: hung up (Hangup) or answered late (Slow)


@dataclasses.dataclass
class _Injection:
    fault: Fault
    remaining: int | None


class FaultyIMDS:
    """A threaded fake IMDS; see the module docstring."""

    def __init__(
        self,
        mode: IMDSMode = IMDSMode.V2_REQUIRED,
        *,
        instance_id: str = "i-0123456789abcdef0",
        availability_zone: str = "us-east-1a",
        life_cycle: str | None = "spot",
        v1_token_status: int = 405,
    ) -> None:
        self.mode = mode
        self.v1_token_status = v1_token_status
        self._lock = threading.Lock()
        self._documents: dict[str, bytes] = {
            INSTANCE_ID_PATH: instance_id.encode(),
            AVAILABILITY_ZONE_PATH: availability_zone.encode(),
        }
        if life_cycle is not None:
            self._documents[INSTANCE_LIFE_CYCLE_PATH] = life_cycle.encode()
        self._faults: dict[str, list[_Injection]] = {}
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._reject_tokens = 0
        self._requests: list[SeenRequest] = []
        self._stopping = threading.Event()
        self._server = _Server(self)
        self._thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultyIMDS:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="faulty-imds", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultyIMDS:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- documents -----------------------------------------------------------------------------------

    def set_document(self, path: str, body: str | bytes | None) -> None:
        """Serve ``body`` at ``path``; None makes the path answer 404."""
        with self._lock:
            if body is None:
                self._documents.pop(path, None)
            else:
                self._documents[path] = body.encode() if isinstance(body, str) else body

    def set_rebalance(self, notice_time: str | None) -> None:
        """Show a rebalance recommendation with this noticeTime; None: 404 (no recommendation)."""
        body = None if notice_time is None else json.dumps({"noticeTime": notice_time})
        self.set_document(REBALANCE_PATH, body)

    def set_interruption(self, action: str | None, when: str | None = None) -> None:
        """Show a spot interruption notice; action None: 404 (no notice)."""
        body = None if action is None else json.dumps({"action": action, "time": when or "2025-01-15T10:02:00Z"})
        self.set_document(INSTANCE_ACTION_PATH, body)

    # -- faults --------------------------------------------------------------------------------------

    def inject(self, path: str, fault: Fault, times: int | None = None) -> None:
        """Answer the next ``times`` requests to ``path`` with ``fault`` (None: until cleared)."""
        with self._lock:
            self._faults.setdefault(path, []).append(_Injection(fault, times))

    def clear_faults(self, path: str | None = None) -> None:
        with self._lock:
            if path is None:
                self._faults.clear()
            else:
                self._faults.pop(path, None)

    def reject_tokens(self, times: int) -> None:
        """Answer the next ``times`` requests that carry a token with 401, valid or not (a 401 storm)."""
        with self._lock:
            self._reject_tokens = times

    def expire_tokens(self) -> None:
        """Forget every issued token, as if they had all expired."""
        with self._lock:
            self._tokens.clear()

    # -- what happened -------------------------------------------------------------------------------

    @property
    def requests(self) -> list[SeenRequest]:
        with self._lock:
            return list(self._requests)

    def count(self, method: str, path: str) -> int:
        return sum(1 for seen in self.requests if seen.method == method and seen.path == path)

    @property
    def token_requests(self) -> int:
        return self.count("PUT", TOKEN_PATH)

    # -- serving (called from the handler threads) ---------------------------------------------------

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(path)
            while queue:
                head = queue[0]
                if head.remaining is None:
                    return head.fault
                if head.remaining > 0:
                    head.remaining -= 1
                    return head.fault
                queue.pop(0)
            return None

    def _record(self, method: str, path: str, headers: Any, status: int | None) -> None:
        with self._lock:
            self._requests.append(
                SeenRequest(method, path, headers.get(TOKEN_HEADER), headers.get(TOKEN_TTL_HEADER), status)
            )

    def _answer_token(self, headers: Any) -> tuple[int, bytes, dict[str, str]]:
        if self.mode is IMDSMode.V1_ONLY:
            return self.v1_token_status, b"IMDSv2 is not available\n", {}
        ttl_text = headers.get(TOKEN_TTL_HEADER, "")
        if not ttl_text.isdigit() or not 1 <= int(ttl_text) <= 21600:
            return 400, b"missing or invalid X-aws-ec2-metadata-token-ttl-seconds\n", {}
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + int(ttl_text)
        return 200, token.encode(), {TOKEN_TTL_HEADER: ttl_text}

    def _token_ok(self, token: str | None) -> bool:
        """Whether a GET with this token (or none) may be answered."""
        if self.mode is IMDSMode.V1_ONLY:
            return True
        with self._lock:
            if token is not None and self._reject_tokens > 0:
                self._reject_tokens -= 1
                return False
            if token is None:
                return self.mode is IMDSMode.V2_OPTIONAL
            expiry = self._tokens.get(token)
            return expiry is not None and time.monotonic() < expiry

    def _answer_get(self, path: str, headers: Any) -> tuple[int, bytes, dict[str, str]]:
        if not self._token_ok(headers.get(TOKEN_HEADER)):
            return 401, b"Unauthorized\n", {}
        with self._lock:
            body = self._documents.get(path)
        if body is None:
            return 404, b"Not Found\n", {}
        return 200, body, {}


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def _serve(self, method: str) -> None:
        imds = self.server.imds
        path = self.path.split("?", 1)[0]
        fault = imds._next_fault(path)
        if isinstance(fault, Hangup):
            imds._record(method, path, self.headers, None)
            self.close_connection = True
            return
        if isinstance(fault, Slow):
            imds._record(method, path, self.headers, None)  # recorded on arrival: the client may give up first
            if imds._stopping.wait(fault.delay):
                return
        extra: dict[str, str] = {}
        if isinstance(fault, Garbage):
            status, body = 200, fault.body
        elif isinstance(fault, Status):
            status, body = fault.code, f"injected HTTP {fault.code}\n".encode()
        elif method == "PUT" and path == TOKEN_PATH:
            status, body, extra = imds._answer_token(self.headers)
        elif method == "GET":
            status, body, extra = imds._answer_get(path, self.headers)
        else:
            status, body = 405, b"Method Not Allowed\n"
        if not isinstance(fault, Slow):
            imds._record(method, path, self.headers, status)
        try:
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (timed out) before the answer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests look at ``FaultyIMDS.requests`` instead."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, imds: FaultyIMDS) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.imds = imds
