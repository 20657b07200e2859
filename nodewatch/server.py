"""/healthz, /readyz and /metrics on one small HTTP port, served from a background thread."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)


class HealthSource(Protocol):
    """What the probes ask (nodewatch.agent.Agent)."""

    def liveness(self) -> tuple[bool, str]: ...

    def readiness(self) -> tuple[bool, str]: ...


class _ProbeHandler(http.server.BaseHTTPRequestHandler):
    server: ProbeServer
    server_version = "spotguard-nodewatch"
    sys_version = ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._probe(self.server.health.liveness)
        elif path == "/readyz":
            self._probe(self.server.health.readiness)
        elif path == "/metrics":
            self._send(200, self.server.metrics(), CONTENT_TYPE_LATEST)
        else:
            self._send(404, b"not found: nodewatch serves /healthz, /readyz and /metrics\n")

    def _probe(self, check: Callable[[], tuple[bool, str]]) -> None:
        ok, why = check()
        self._send(200 if ok else 503, (why + "\n").encode())

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("probe request: " + format % args)


class ProbeServer(http.server.ThreadingHTTPServer):
    """Serves the probes and the metrics; ``start`` runs it in a daemon thread."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], health: HealthSource, metrics: Callable[[], bytes]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _ProbeHandler)
        self.health = health
        self.metrics = metrics
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else str(host)
        return f"[{host_text}]:{port}" if ":" in host_text else f"{host_text}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, name="probe-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
