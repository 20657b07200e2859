"""Wiring of the controller process: Lease election, the Node informer, and the controllers that
run only while this replica leads.

    spotguard run
      -> LeaseElector.run(work)                     (standby until it holds the Lease)
           work: Informer (list+watch Nodes) -> ReplacementController.reconcile (one thread)
                 WatchCache (list+watch SGFEs) -> LifecycleController.reconcile (one thread)
                 CapacityOwner: every change of every group's capacity, from both controllers
                 ThreadWorkers: every other thread of the term (scale-ups, drains, evictions, scale-downs, records)
                 QueueFeed (SPOT_GUARD_QUEUE_URL): EC2's events from SQS, recorded on their Nodes (its pollers)
      -> SIGTERM: cancel the work, release the Lease, exit 0
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from controller.adapters.aws import AutoScaling
from controller.adapters.dry_run import DryRunAutoScaling, DryRunEventQueue, DryRunKube
from controller.adapters.election import KubeLeaseStore, LeaseElector
from controller.adapters.kube import Informer, Kube, WatchCache, wait_until_synced
from controller.adapters.pause_switch import PauseSwitch
from controller.adapters.sgfe_store import FallbackEvents
from controller.adapters.sqs import EventQueue
from controller.app import startup
from controller.capacity.groups import GroupResolver
from controller.capacity.owner import CapacityOwner
from controller.checks.drain_plan import DrainOptions
from controller.clock import Cancellation, Clock, SystemClock
from controller.config import Settings
from controller.effects.drain import Drainer, NodeDrains
from controller.effects.node_writes import NodeWriter
from controller.fence import FenceCheck
from controller.lifecycle.controller import LifecycleController
from controller.model import ec2_event
from controller.model.node import NodeView
from controller.model.sgfe import FallbackEvent
from controller.observability.events import EventRecorder
from controller.observability.http_server import serve
from controller.observability.metrics import Metrics
from controller.observability.reporters import KubeLifecycleReporter, KubeReplacementReporter, ReplacementReporter
from controller.observability.tracing import setup_tracing
from controller.observability.would_act import WouldActAnnouncer, lease_ref
from controller.replacement.context import Context
from controller.replacement.controller import ReplacementController
from controller.replacement.queue_feed import POLLERS, QueueFeed
from controller.replacement.record_book import RecordBook
from controller.workers import ThreadWorkers

log = logging.getLogger(__name__)

EVENT_QUEUE = 1000  # Kubernetes Events waiting to be written (client-go's broadcaster keeps as many)
EVENT_RATE = 20.0  # Kubernetes Events written per second at most


def run_controller(
    settings: Settings,
    kubeconfig: str | None = None,
    context: str | None = None,
    identity: str | None = None,
    reporter: ReplacementReporter | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or lost leadership (the elector exits the process with 1).

    Raises ConfigError or StartupError (one line each) when it cannot start."""
    clock = SystemClock()
    election = startup.election_config(settings)
    startup.call_budget(settings)
    startup.require_aws_region()
    api = startup.kube_client(kubeconfig, context)
    kube = Kube(api)
    stop = Cancellation()
    metrics = Metrics(clock)
    tracing = setup_tracing()
    if settings.queue_url:
        metrics.prepare_queue()
    if settings.spot_asg_name:
        metrics.prepare_group_pair(settings.spot_asg_name, settings.on_demand_asg_name)
    try:
        server = serve(settings.metrics_port, metrics.exposition, host=settings.metrics_host)
    except OSError as exc:
        raise startup.StartupError(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc.strerror or exc}; "
            "set SPOT_GUARD_METRICS_PORT (and SPOT_GUARD_METRICS_HOST) to a free address"
        ) from None
    wake_leader: list[Callable[[], None]] = []  # the current term's controller, woken when paused changes

    def on_pause_change(paused: bool) -> None:
        metrics.set_paused(paused)
        for wake in list(wake_leader):
            wake()

    switch = PauseSwitch(kube, settings.lease_namespace, settings.lease_name, clock, on_change=on_pause_change)
    threading.Thread(target=switch.run, args=(stop,), name="pause-switch", daemon=True).start()
    log.info("serving /metrics, /healthz and /readyz on %s", server.url)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.cancel(f"received {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    store = KubeLeaseStore.from_configuration(api.configuration, settings.lease_namespace, settings.lease_name)
    elector = LeaseElector(
        store,
        identity=identity,
        config=election,
        clock=clock,
        on_new_leader=lambda holder: log.info("the leader is now %s", holder or "nobody (released)"),
        on_started_leading=lambda: metrics.set_leader(True),
        on_stopped_leading=lambda: metrics.set_leader(False),
    )

    def work(cancel: Cancellation) -> None:
        parts = leader_components(
            settings,
            kube,
            clock,
            elector.fence,
            cancel,
            reporter=reporter,
            metrics=metrics,
            paused=switch.paused,
            identity=elector.identity,
        )
        log.info("leading as %s", elector.identity)
        wake_leader[:] = [parts.replacement.notify]
        try:
            run_leader(parts, cancel)
        finally:
            wake_leader.clear()

    log.info(
        "starting as %s; campaigning for Lease %s/%s", elector.identity, settings.lease_namespace, settings.lease_name
    )
    if settings.dry_run:
        log.warning(
            "observe-only mode (SPOT_GUARD_DRY_RUN): deciding as usual, changing nothing in AWS or on any Node; each "
            "change it would make is logged, counted and written as an Event with reason SpotGuardWouldAct"
        )
    try:
        elector.run(work, stop)
    finally:
        server.stop()
        tracing.shutdown()
    log.info("stopped: %s", stop.reason or "work ended")
    return 0


@dataclasses.dataclass
class LeaderComponents:
    """What runs while this replica leads (built fresh on every term)."""

    informer: Informer
    sgfe_cache: WatchCache[FallbackEvent]
    owner: CapacityOwner
    replacement: ReplacementController
    lifecycle: LifecycleController
    workers: ThreadWorkers
    asg: AutoScaling
    events: EventRecorder
    announcer: WouldActAnnouncer | None = None  # observe-only mode's (None when the controller acts)
    queue_feed: QueueFeed | None = None  # only with SPOT_GUARD_QUEUE_URL


def leader_components(
    settings: Settings,
    kube: Kube,
    clock: Clock,
    fence: FenceCheck,
    cancel: Cancellation,
    *,
    reporter: ReplacementReporter | None = None,
    metrics: Metrics | None = None,
    paused: Callable[[], bool] = lambda: False,
    identity: str = "spotguard-controller",
) -> LeaderComponents:
    metrics = metrics or Metrics(clock)
    events = EventRecorder(kube, clock=clock, queue_size=EVENT_QUEUE, max_rate=EVENT_RATE)
    if reporter is None:
        reporter = KubeReplacementReporter(events, metrics, observe_only=settings.dry_run)
    asg: AutoScaling
    announcer: WouldActAnnouncer | None = None
    if settings.dry_run:
        # Observe-only: one seam under both controllers (controller.adapters.dry_run). Events (the recorder above)
        # and the Lease (the elector and the pause switch, which have their own clients) stay real.
        announcer = WouldActAnnouncer(events, metrics, clock, lease_ref(settings.lease_namespace, settings.lease_name))
        kube = DryRunKube(kube, announcer.announce)
        asg = DryRunAutoScaling(
            fence=fence, budget=startup.call_budget(settings), on_call=metrics.aws_call, announce=announcer.announce
        )
    else:
        asg = AutoScaling(fence=fence, budget=startup.call_budget(settings), on_call=metrics.aws_call)

    def deposed(exc: Exception) -> None:
        cancel.cancel(f"may no longer change capacity: {exc}")

    workers = ThreadWorkers(on_not_leader=deposed)
    drains = NodeDrains(
        Drainer(kube, clock, on_event=metrics.eviction, parallel=workers.evict_in_parallel),
        DrainOptions(timeout=settings.drain_timeout, delete_emptydir_data=settings.delete_emptydir_data),
        cancel,
        on_drain=metrics.drain_finished,
    )
    wake_replacement: list[Callable[[str, NodeView], None]] = []
    wake_lifecycle: list[Callable[[], None]] = []

    def on_node(event_type: str, node: NodeView) -> None:
        for callback in wake_replacement:
            callback(event_type, node)

    def on_sgfe(event_type: str, event: FallbackEvent) -> None:
        for callback in wake_lifecycle:
            callback()

    informer = Informer(kube, on_node, on_stall=metrics.watch_stalled)
    if isinstance(kube, DryRunKube):
        kube.on_node.append(informer.show)  # a would-be Node write shows in the cache as the real one's event would
    sgfe_cache = WatchCache(
        kube,
        FallbackEvents.collection_path(settings.namespace),
        FallbackEvent.from_json,
        on_sgfe,
        what="SpotGuardFallbackEvent",
        on_malformed=metrics.malformed_object,
        on_stall=metrics.watch_stalled,
    )
    sgfes = FallbackEvents(kube, settings.namespace, cache=sgfe_cache)
    resolver = GroupResolver(settings, asg, clock.monotonic)
    writer = NodeWriter(kube)
    book = RecordBook(writer, informer.snapshot)
    owner = CapacityOwner(
        asg,
        clock,
        reporter=reporter,
        managed=lambda: {name for pair in resolver.pairs().values() for name in (pair.spot, pair.on_demand)},
        drain=drains.drain,
        read_ahead=workers.read_ahead,
    )
    ctx = Context(
        settings=settings,
        clock=clock,
        owner=owner,
        book=book,
        writer=writer,
        drains=drains,
        sgfes=sgfes,
        resolver=resolver,
        workers=workers,
        reporter=reporter,
        nodes=informer.snapshot,
        wake=lambda: None,
        paused=paused,
    )
    owner.node_of = ctx.node_of_instance
    replacement = ReplacementController(ctx)
    lifecycle_reporter = KubeLifecycleReporter(events, metrics)
    lifecycle = LifecycleController(
        settings=settings,
        sgfes=sgfes,
        owner=owner,
        kube=kube,
        writer=writer,
        drainer=Drainer(kube, clock, on_event=metrics.eviction, parallel=workers.evict_in_parallel),
        nodes=informer.snapshot,
        clock=clock,
        identity=identity,
        workers=workers,
        recorder=lifecycle_reporter,
        on_events=lifecycle_reporter.observe,
    )
    # No increase until both controllers finished the intents a predecessor left (capacity.owner).
    owner.hold_until(replacement.RECOVERY, lifecycle.RECOVERY)
    # The lifecycle wakes on SGFE changes and its own poll interval, not on every Node change: its decisions
    # are about minutes, and a pass over thousands of Nodes at each heartbeat was most of the idle CPU.
    wake_replacement.append(replacement.notify)
    wake_lifecycle.append(lifecycle.notify)
    feed = None
    if settings.queue_url:
        queue = (
            DryRunEventQueue(
                settings.queue_url, announce=announcer.announce, connect_timeout=settings.aws_connect_timeout
            )
            if announcer is not None
            else EventQueue(settings.queue_url, connect_timeout=settings.aws_connect_timeout)
        )
        account, region = ec2_event.queue_owner(settings.queue_url)
        feed = QueueFeed(
            queue,
            kube=kube,
            resolver=resolver,
            nodes=informer.snapshot,
            clock=clock,
            reporter=metrics,
            account=account,
            region=region or str(queue.client.meta.region_name or ""),
            parallel=workers.run_in_parallel,
        )
    return LeaderComponents(informer, sgfe_cache, owner, replacement, lifecycle, workers, asg, events, announcer, feed)


def run_leader(parts: LeaderComponents, cancel: Cancellation) -> None:
    """List+watch Nodes and run the controllers until ``cancel`` fires."""
    watch_stop = threading.Event()
    cancel.add_callback(watch_stop.set)
    for name, cache in (("node-informer", parts.informer), ("sgfe-informer", parts.sgfe_cache)):
        threading.Thread(target=cache.run, args=(watch_stop,), name=name, daemon=True).start()
    if not wait_until_synced((parts.informer, parts.sgfe_cache), cancel):  # an empty cache is no empty cluster
        parts.events.close()  # cancelled before any controller started: nothing else to stop
        return
    log.info("watching %d nodes and %d SpotGuardFallbackEvents", len(parts.informer.items), len(parts.sgfe_cache.items))
    lifecycle = threading.Thread(target=parts.lifecycle.run, args=(cancel,), name="sgfe-lifecycle", daemon=True)
    lifecycle.start()
    if parts.queue_feed is not None:  # only the leader reads the queue, from its first synced pass on
        log.info("reading EC2 events from queue %s", parts.queue_feed.queue.queue_url)
        for number in range(POLLERS):
            threading.Thread(
                target=parts.queue_feed.run, args=(cancel,), name=f"queue-feed-{number}", daemon=True
            ).start()
    try:
        parts.replacement.run(cancel)
    finally:
        watch_stop.set()
        parts.workers.shutdown(wait=False)
        lifecycle.join(timeout=10)
        parts.events.close()
