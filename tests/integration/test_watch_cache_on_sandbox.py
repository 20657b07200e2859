"""Caches you can rely on, against the sandbox's real API server through a TCP proxy that misbehaves:

- a watch whose connection is frozen (the proxy stops forwarding it and keeps it open: a half-open connection) is
  noticed within its read timeout and restarted, and the cache catches up with what changed meanwhile;
- a leader whose first list of Nodes is slow (the proxy holds the API server's answers) while its SGFEs come at
  once starts its controllers only once both caches are in, never on an empty Node cache, however long that takes
  (it used to go on after 30 s, with every SGFE and no Node: a scale-down's node looked gone).
"""

from __future__ import annotations

import dataclasses
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from controller.adapters.kube import Informer, Kube, WatchCache, api_client
from controller.adapters.sgfe_store import FallbackEvents
from controller.app.run import LeaderComponents, run_leader
from controller.clock import Cancellation
from controller.model.sgfe import FallbackEvent
from sandbox.environment import Sandbox
from tests.integration import spotguard_install as install
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

#: The old leader waited this long for its caches and then went on with whatever it had.
OLD_SYNC_WAIT = 30.0


@pytest.fixture
def proxy(sandbox: Sandbox) -> Iterator[TcpProxy]:
    server = urllib.parse.urlsplit(sandbox.info.server)
    with TcpProxy((server.hostname or "127.0.0.1", server.port or 443)) as running:
        yield running


def _kube_through(proxy: TcpProxy, sandbox: Sandbox) -> Kube:
    """The controller's own API client (keepalive and all), pointed at the proxy."""
    api = api_client(str(sandbox.kubeconfig))
    api.configuration.refresh_api_key_hook = None  # it would set the kubeconfig's server again on every request
    api.configuration.host = proxy.url
    return Kube(api)


def test_a_frozen_watch_is_noticed_and_restarted_and_the_cache_catches_up(
    sandbox: Sandbox, core: k8s.CoreV1Api, proxy: TcpProxy
) -> None:
    kube = _kube_through(proxy, sandbox)
    informer = Informer(kube, lambda kind, node: None)
    stop = threading.Event()
    threading.Thread(target=informer.run, args=(stop,), daemon=True).start()
    try:
        wait_until(informer.synced.is_set, timeout=60, what="the first list of nodes through the proxy")
        time.sleep(1.0)  # the watch is open
        assert proxy.freeze() >= 1, "the watch's connection was open"
        frozen_at = time.monotonic()

        with install.node_of_its_own(core, "watched") as name:  # written past the proxy, by the admin
            wait_until(lambda: name in informer.snapshot(), timeout=60, what=f"node {name} in the cache", interval=0.1)
            caught_up = time.monotonic() - frozen_at
    finally:
        stop.set()

    print(f"FIGURE frozen watch: new node in the cache {caught_up:.1f} s after the freeze")
    assert informer.stalls >= 1, "the frozen watch was given up"
    # The stall is noticed within the read timeout (10 s) of the last byte; the old cache waited 330 s.
    assert caught_up <= informer.read_timeout + 10.0


@dataclasses.dataclass
class StandIn:
    """Stands in for a controller of the leader: records when it was started and what the caches held then."""

    parts: list[LeaderComponents]
    started: list[tuple[float, int, int, bool, bool]] = dataclasses.field(default_factory=list)

    def run(self, cancel: Cancellation) -> None:
        (parts,) = self.parts
        self.started.append(
            (
                time.monotonic(),
                len(parts.informer.items),
                len(parts.sgfe_cache.items),
                parts.informer.synced.is_set(),
                parts.sgfe_cache.synced.is_set(),
            )
        )
        cancel.wait()

    def notify(self) -> None:
        return None


class _Idle:
    """Stands in for the leader's other parts (workers, events, AWS): nothing to do, nothing to stop."""

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        return None

    def close(self) -> None:
        return None


def test_a_leader_with_a_slow_first_list_of_nodes_starts_nothing_until_its_caches_are_in(
    sandbox: Sandbox, core: k8s.CoreV1Api, proxy: TcpProxy
) -> None:
    nodes = {n.metadata.name for n in core.list_node().items}
    parts: list[LeaderComponents] = []
    replacement, lifecycle = StandIn(parts), StandIn(parts)
    informer = Informer(_kube_through(proxy, sandbox), lambda kind, node: None)
    sgfe_cache: WatchCache[FallbackEvent] = WatchCache(
        Kube(api_client(str(sandbox.kubeconfig))),  # straight to the API server: the SGFEs come at once
        FallbackEvents.collection_path(install.NAMESPACE),
        FallbackEvent.from_json,
        lambda kind, event: None,
        what="SpotGuardFallbackEvent",
    )
    given: dict[str, Any] = {  # the optional parts (observe-only, the events queue) stay off
        f.name: _Idle() for f in dataclasses.fields(LeaderComponents) if f.default is dataclasses.MISSING
    }
    given.update(informer=informer, sgfe_cache=sgfe_cache, replacement=replacement, lifecycle=lifecycle)
    parts.append(LeaderComponents(**given))
    cancel = Cancellation()
    proxy.hold()  # the API server's answers to the Node cache wait in the proxy
    leader = threading.Thread(target=run_leader, args=(parts[0], cancel), daemon=True)
    leader.start()
    try:
        held = OLD_SYNC_WAIT + 2.0
        time.sleep(held)
        assert replacement.started == [] and lifecycle.started == [], "a controller started on an empty cache"
        assert leader.is_alive()
        released = time.monotonic()
        proxy.release()
        wait_until(lambda: replacement.started and lifecycle.started, timeout=60, what="both controllers to start")
    finally:
        cancel.cancel("test over")
        leader.join(30)

    for at, node_count, _, nodes_synced, events_synced in (*replacement.started, *lifecycle.started):
        assert at >= released and nodes_synced and events_synced
        assert node_count >= len(nodes), "started with every node of the cluster in its cache"
    assert not leader.is_alive()
