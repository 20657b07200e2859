"""/metrics, /healthz and /readyz of the controller on one small HTTP port, served from a daemon thread."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
from collections.abc import Callable

from controller.observability.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)

#: A probe answers (ok, why); ``why`` is the response body, so it should say what is wrong.
Probe = Callable[[], tuple[bool, str]]


def always_ok() -> tuple[bool, str]:
    return True, "ok"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ObservabilityServer
    server_version = "spotguard-controller"
    sys_version = ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._metrics()
        elif path == "/healthz":
            self._probe("liveness", self.server.liveness)
        elif path == "/readyz":
            self._probe("readiness", self.server.readiness)
        else:
            self._send(404, b"not found: the controller serves /metrics, /healthz and /readyz\n")

    def _metrics(self) -> None:
        try:
            body = self.server.metrics()
        except Exception as error:
            log.exception("rendering /metrics failed; answering 500")
            self._send(500, f"rendering the metrics failed: {type(error).__name__}: {error}\n".encode())
            return
        self._send(200, body, CONTENT_TYPE)

    def _probe(self, name: str, check: Probe) -> None:
        try:
            ok, why = check()
        except Exception as error:
            log.exception("the %s check raised; answering 503", name)
            ok, why = False, f"the {name} check raised {type(error).__name__}: {error}"
        self._send(200 if ok else 503, (why + "\n").encode())

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("observability request: " + format % args)


class ObservabilityServer(http.server.ThreadingHTTPServer):
    """Serves ``metrics()`` on /metrics and the probes on /healthz and /readyz; ``start`` runs it in a thread."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        metrics: Callable[[], bytes],
        *,
        liveness: Probe = always_ok,
        readiness: Probe = always_ok,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.metrics = metrics
        self.liveness = liveness
        self.readiness = readiness
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` of the listening socket (the port chosen by the kernel if 0 was asked)."""
        host = self.server_address[0]
        host_text = host.decode() if isinstance(host, bytes) else str(host)
        host_text = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host_text, host_text)  # the wildcard: use loopback
        return f"http://[{host_text}]:{self.port}" if ":" in host_text else f"http://{host_text}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, name="observability-server", daemon=True
        )
        self._thread.start()
        log.info("serving /metrics, /healthz and /readyz on %s", self.url)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def serve(
    port: int,
    metrics: Callable[[], bytes],
    *,
    liveness: Probe = always_ok,
    readiness: Probe = always_ok,
    host: str = "0.0.0.0",
) -> ObservabilityServer:
    """Bind ``host:port`` (0 picks a free port) and start serving; an OSError says which port was taken."""
    try:
        server = ObservabilityServer((host, port), metrics, liveness=liveness, readiness=readiness)
    except OSError as error:
        raise OSError(
            error.errno,
            f"cannot serve /metrics, /healthz and /readyz on {host}:{port}: {error.strerror}; "
            "choose another port with SPOT_GUARD_METRICS_PORT",
        ) from error
    server.start()
    return server
