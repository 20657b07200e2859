"""The sandbox's AWS process: moto's whole API plus the capacity simulator, on one HTTP port."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import boto3
from werkzeug.serving import BaseWSGIServer, make_server

from sandbox.aws import moto_bridge as moto
from sandbox.aws.aws_frontend import AwsFrontend
from sandbox.aws.call_log import CallLog
from sandbox.aws.capacity import SimulatorDefaults
from sandbox.aws.clock import Clock, SystemClock
from sandbox.aws.control_api import PREFIX, ControlApi
from sandbox.aws.event_queue import create_event_queue
from sandbox.aws.faults import FaultInjector
from sandbox.aws.groups import StartupGroups, create_startup_groups
from sandbox.aws.nodesync import NodeSync
from sandbox.aws.simulator import CapacitySimulator

log = logging.getLogger(__name__)

# Credentials any boto3 client can use against the sandbox (moto files them under its default account).
DUMMY_ACCESS_KEY_ID = "testing"
DUMMY_SECRET_ACCESS_KEY = "testing"  # noqa: S105 (moto accepts any secret)


@dataclass(frozen=True)
class SandboxAWSConfig:
    """host/port to bind (port 0 picks a free one); `tick_seconds` None stops background ticking, so a test
    drives time itself with a ManualClock and `simulator.tick()`."""

    host: str = "127.0.0.1"
    port: int = 0
    region: str = "us-east-1"
    startup: StartupGroups = field(default_factory=StartupGroups)
    defaults: SimulatorDefaults = field(default_factory=SimulatorDefaults)
    tick_seconds: float | None = 0.2


class SandboxAWSServer:
    """moto + capacity simulator + control API, served by a threaded werkzeug server in this process.

    `node_sync_factory`, if given, builds the NodeSync that keeps Kubernetes Nodes in step with InService
    instances; it runs on its own thread until `stop()`.
    """

    def __init__(
        self,
        config: SandboxAWSConfig | None = None,
        clock: Clock | None = None,
        node_sync_factory: Callable[[CapacitySimulator], NodeSync] | None = None,
    ) -> None:
        self.config = config or SandboxAWSConfig()
        moto.configure_moto()
        self.simulator = CapacitySimulator(self.config.region, clock or SystemClock(), self.config.defaults)
        self.faults = FaultInjector()
        self.calls = CallLog()
        self._frontend = AwsFrontend(self.simulator, self.faults, self.calls, moto.moto_wsgi_app())
        self._control = ControlApi(self.simulator, self.faults, self.calls, self.reset)
        self._node_sync_factory = node_sync_factory
        self.node_sync: NodeSync | None = None
        self._http: BaseWSGIServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._announcement: dict[str, object] = {}
        self._boto3_clients: dict[str, Any] = {}
        self._boto3_lock = threading.Lock()

    # ---- lifecycle ----

    @property
    def endpoint(self) -> str:
        if self._http is None:
            raise RuntimeError("SandboxAWSServer has no endpoint yet: call start() first")
        return f"http://{self.config.host}:{self._http.server_port}"

    def start(self) -> dict[str, object]:
        """Serve, create the start-up groups, start ticking and node sync; returns the announcement."""
        self._http = make_server(
            self.config.host, self.config.port, self._app, threaded=True, request_handler=moto.quiet_request_handler()
        )
        self._spawn("sandbox-aws-http", self._http.serve_forever)
        try:
            self._announcement = self._create_startup_groups()
            if self.config.tick_seconds is not None:
                self._spawn("sandbox-aws-ticker", self._tick_forever)
            if self._node_sync_factory is not None:
                node_sync = self._node_sync_factory(self.simulator)
                self.node_sync = node_sync
                self._spawn("sandbox-aws-nodesync", lambda: node_sync.run(self._stop))
                self._spawn("sandbox-aws-node-deletions", lambda: node_sync.watch_deletions(self._stop))
        except Exception:
            self.stop()
            raise
        log.info("Sandbox AWS serving on %s (region %s)", self.endpoint, self.config.region)
        return self.announcement()

    def stop(self) -> None:
        self._stop.set()
        self.simulator.changed.set()
        self.simulator.work.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
            if thread.is_alive():
                log.warning("Thread %s did not stop within 10 s; leaving it (daemon)", thread.name)
        self._threads.clear()

    def __enter__(self) -> SandboxAWSServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def announcement(self) -> dict[str, object]:
        """The start-up JSON line: endpoint, region, account and the groups created."""
        return {"endpoint": self.endpoint, **self._announcement}

    def reset(self) -> dict[str, object]:
        """Forget everything (moto, activities, faults, calls) and re-create the start-up groups."""
        with self.simulator.lock:
            moto.reset_all_backends()
            self.simulator.forget_everything()
            self.faults.clear()
        self._announcement = self._create_startup_groups()
        log.info("Sandbox AWS reset: start-up groups re-created")
        return self.announcement()

    def _spawn(self, name: str, target: Callable[[], object]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _tick_forever(self) -> None:
        """Tick every interval, or at once when a scale-out has slices left (``simulator.work``)."""
        interval = self.config.tick_seconds or 0.2
        while not self._stop.is_set():
            self.simulator.work.wait(interval)
            if self._stop.is_set():
                return
            try:
                self.simulator.tick()
            except Exception:
                log.exception("Capacity simulator tick failed; it will try again in %.1f s", interval)

    # ---- start-up groups ----

    def boto3_client(self, service: str) -> Any:
        """A boto3 client for `service` pointed at this sandbox with dummy credentials (made once, then reused)."""
        with self._boto3_lock:
            if service not in self._boto3_clients:
                session = boto3.session.Session(
                    aws_access_key_id=DUMMY_ACCESS_KEY_ID,
                    aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
                    region_name=self.config.region,
                )
                self._boto3_clients[service] = session.client(  # type: ignore[call-overload]
                    service, endpoint_url=self.endpoint
                )
            return self._boto3_clients[service]

    def _create_startup_groups(self) -> dict[str, object]:
        spec = self.config.startup
        created = create_startup_groups(
            spec, self.config.region, self.boto3_client("ec2"), self.boto3_client("autoscaling")
        )
        for group in created:
            self.simulator.seed_in_service(group.name, group.desired_capacity)
        queue_url = create_event_queue(self.boto3_client("sqs"), self.boto3_client("events"))
        self.calls.clear()
        return {
            "region": self.config.region,
            "account_id": moto.account_id(),
            "launch_template": spec.launch_template_name,
            "groups": [g.to_json() for g in created],
            "queue_url": queue_url,
        }

    # ---- routing ----

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == PREFIX or path.startswith(PREFIX + "/"):
            return self._control(environ, start_response)
        if path == "/moto-api/reset" and environ.get("REQUEST_METHOD") == "POST":
            with self.simulator.lock:
                moto.reset_all_backends()
                self.simulator.forget_everything()
            body = json.dumps({"status": "ok"}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return self._frontend(environ, start_response)
