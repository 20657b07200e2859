"""Wiring of the controller process: Lease election, the Node informer, and the controllers that
run only while this replica leads.

    spotguard run
      -> LeaseElector.run(work)                     (standby until it holds the Lease)
           work: Informer (list+watch Nodes) -> ReplacementController.reconcile (one thread)
                 Retirer pool (drain + terminate exactly the old instance)
      -> SIGTERM: cancel the work, release the Lease, exit 0
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from kubernetes import client as k8s

from controller.aws import AutoScaling
from controller.clock import Cancellation, SystemClock
from controller.config import Settings
from controller.drain import Drainer, DrainOptions
from controller.election import ElectionConfig, KubeLeaseStore, LeaseElector
from controller.fallbackevent import FallbackEvents
from controller.groups import GroupResolver
from controller.kube import Informer, Kube, api_client
from controller.nodes import NodeWriter
from controller.replacement import Recorder, ReplacementController
from controller.retirement import Retirer

log = logging.getLogger(__name__)


def run_controller(
    settings: Settings,
    kubeconfig: str | None = None,
    context: str | None = None,
    identity: str | None = None,
    recorder: Recorder | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or lost leadership (the elector exits the process with 1)."""
    clock = SystemClock()
    api = api_client(kubeconfig, context)
    kube = Kube(api)
    stop = Cancellation()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.cancel(f"received {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    store = KubeLeaseStore.from_configuration(api.configuration, settings.lease_namespace, settings.lease_name)
    elector = LeaseElector(
        store,
        identity=identity,
        config=ElectionConfig(
            lease_duration=settings.lease_duration,
            renew_deadline=settings.renew_deadline,
            retry_period=settings.retry_period,
            fence_margin=settings.fence_margin,
        ),
        clock=clock,
        on_new_leader=lambda holder: log.info("the leader is now %s", holder),
    )

    def work(cancel: Cancellation) -> None:
        asg = AutoScaling(fence=elector.fence)
        drainer = Drainer(kube, clock)
        retirer = Retirer(
            drainer,
            asg,
            DrainOptions(timeout=settings.drain_timeout, delete_emptydir_data=settings.delete_emptydir_data),
            cancel,
        )
        controller: ReplacementController | None = None

        def on_node(event_type: str, node: object) -> None:
            if controller is not None:
                controller.notify()

        informer = Informer(kube, on_node)
        controller = ReplacementController(
            settings=settings,
            asg=asg,
            resolver=GroupResolver(settings, asg, clock.monotonic),
            writer=NodeWriter(kube),
            sgfes=FallbackEvents(kube, settings.namespace),
            retirer=retirer,
            nodes=informer.snapshot,
            clock=clock,
            recorder=recorder,
        )
        watch_stop = threading.Event()
        cancel.add_callback(watch_stop.set)
        watcher = threading.Thread(target=informer.run, args=(watch_stop,), name="node-informer", daemon=True)
        watcher.start()
        informer.synced.wait(30)
        log.info("leading as %s: watching %d nodes", elector.identity, len(informer.nodes))
        try:
            controller.run(cancel)
        finally:
            watch_stop.set()
            retirer.shutdown()

    log.info(
        "starting as %s; campaigning for Lease %s/%s", elector.identity, settings.lease_namespace, settings.lease_name
    )
    elector.run(work, stop)
    log.info("stopped: %s", stop.reason or "work ended")
    return 0


def core_api(kubeconfig: str | None = None) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(api_client(kubeconfig))
