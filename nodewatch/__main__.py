"""``spotguard-nodewatch``: start the probe server and the poll loop; stop cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from nodewatch.agent import Agent, AgentTiming
from nodewatch.config import Settings, parse_settings
from nodewatch.imds import IMDSClient
from nodewatch.kube_connection import KubeConfigError, KubeConnection, from_kubeconfig, in_cluster
from nodewatch.logs import configure_logging
from nodewatch.node import NodeClient
from nodewatch.server import ProbeServer

log = logging.getLogger("nodewatch")

EXIT_CONFIG = 2
STOP_GRACE_SECONDS = 0.5


def _connection(settings: Settings) -> KubeConnection:
    if settings.kubeconfig:
        return from_kubeconfig(settings.kubeconfig)
    return in_cluster(settings.service_account_dir)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    configure_logging(settings.node_name, settings.log_level)
    try:
        connection = _connection(settings)
    except KubeConfigError as error:
        log.error(f"nodewatch cannot start: {error}")
        return EXIT_CONFIG
    stop = threading.Event()
    imds = IMDSClient(
        settings.imds_url,
        timeout=settings.imds_timeout,
        attempts=settings.imds_attempts,
        token_ttl=settings.imds_token_ttl,
        allow_v1_fallback=settings.imds_v1_fallback,
        sleep=stop.wait,  # retry pauses end early on SIGTERM
    )
    timing = AgentTiming(
        poll_interval=settings.poll_interval,
        max_backoff=settings.max_backoff,
        unready_after=settings.unready_after,
    )
    agent = Agent(settings.node_name, imds, NodeClient(connection, timeout=settings.api_timeout), timing=timing)
    try:
        server = ProbeServer((settings.listen_host, settings.listen_port), agent, agent.metrics.exposition)
    except OSError as error:
        log.error(
            f"nodewatch cannot listen on {settings.listen_host}:{settings.listen_port} for /healthz, /readyz and "
            f"/metrics: {error.strerror or error}; choose another address with --listen"
        )
        return EXIT_CONFIG

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info(f"received {signal.Signals(signum).name}: stopping")
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server.start()
    log.info(
        f"nodewatch started: polling {settings.imds_url} every {settings.poll_interval:g} s for node "
        f"{settings.node_name}; probes and metrics on {server.address}",
        extra={
            "imds": settings.imds_url,
            "api_server": connection.description,
            "address": server.address,
            "imds_v1_fallback": settings.imds_v1_fallback,
        },
    )
    loop = threading.Thread(target=agent.run, args=(stop,), name="poll-loop", daemon=True)
    loop.start()
    while not stop.wait(1.0):
        if not loop.is_alive():
            log.error("the poll loop ended unexpectedly; exiting so that the kubelet restarts nodewatch")
            server.stop()
            return 1
    loop.join(STOP_GRACE_SECONDS)  # an IMDS request in flight is abandoned rather than waited for
    server.stop()
    log.info("nodewatch stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
