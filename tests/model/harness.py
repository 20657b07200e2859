"""Both controllers, as one process of the real code, against the in-memory AWS and Kubernetes models, with every
thread replaced by jobs the test runs when it says, and crashes wherever it says.

``World`` is what survives a crash (AWS, the API server's objects, the clock); ``Process`` is one leader term (the
controllers, the capacity owner, the workers) and is thrown away by a crash: its successor starts from the World.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from controller import failpoints
from controller.adapters.aws import AutoScaling
from controller.adapters.kube import Kube
from controller.adapters.sgfe_store import FallbackEvents
from controller.capacity.groups import GroupResolver
from controller.capacity.owner import CapacityOwner
from controller.clock import FakeClock
from controller.config import Settings
from controller.effects.drain import Drainer, NodeDrains
from controller.effects.node_writes import NodeWriter
from controller.lifecycle.controller import LifecycleController
from controller.model.record import ANNOTATION, ReplacementRecord
from controller.model.sgfe import FallbackEvent
from controller.replacement import scale_up
from controller.replacement.context import Context
from controller.replacement.controller import ReplacementController
from controller.replacement.record_book import RecordBook
from controller.workers import completed
from nodewatch import annotations as contract
from tests.model.aws_model import AutoScalingModel, ModelInstance
from tests.model.kube_model import KubeModel, ModelDrains

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

PARTNER_TAG = "spotguard.io/on-demand-partner"
#: The seed's durations compressed to seconds, so a test walks a whole fallback's life in a few hundred steps.
SETTINGS = Settings(
    capacity_check_timeout=20.0,
    capacity_poll_interval=1.0,
    batch_window=0.1,
    batch_max_delay=1.0,
    minimum_wait_duration=10.0,
    stability_window=4.0,
    lifecycle_poll_interval=2.0,
    safety_retry_interval=2.0,
    completed_ttl=3600.0,
    monitoring_backoff_initial=4.0,
    monitoring_backoff_max=8.0,
    drain_timeout=10.0,
    keep_grace_period=30.0,
    max_drain_attempts=2,
    scale_down_takeover=0.0,
)


class SimulatedCrash(BaseException):
    """The leader dies here (raised at an armed failpoint, or by the test)."""


class SteppedWorkers:
    """``Workers`` whose jobs wait until the test runs them: the interleavings are the test's to choose."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, str, Callable[[], None]]] = []

    def submit(self, lane: str, key: str, job: Callable[[], None]) -> bool:
        if any(k == key for _, k, _ in self.pending):
            return False
        self.pending.append((lane, key, job))
        return True

    def busy(self, key: str) -> bool:
        return any(k == key for _, k, _ in self.pending)

    def run_in_parallel(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return [fn(item) for item in items]

    def read_ahead(self, fn: Callable[[], R]) -> concurrent.futures.Future[R]:
        return completed(fn)

    def run(self, index: int) -> None:
        """Run one pending job (an exception other than a crash is the job's own, logged as production does)."""
        _lane, key, job = self.pending[index % len(self.pending)]
        try:
            job()
        except Exception:
            log.exception("job %s failed", key)
        finally:
            self.pending = [p for p in self.pending if p[1] != key]


@dataclasses.dataclass
class Pair:
    spot: str
    on_demand: str


class Reports:
    """The ReplacementReporter of the model: keeps what the invariants look at."""

    def __init__(self) -> None:
        self.outside_changes: list[tuple[str, int, int]] = []
        self.context: Callable[[str], str] = lambda group: ""  # the world's state of a group, for the reports
        self.refused_effects: list[str] = []
        self.fallback_reasons: list[str] = []
        self.events: list[tuple[str, str, str]] = []
        self.details: list[str] = []
        self.refusals: list[str] = []  # the reasons of the refusals counted (the refused-effects metric)

    def node_event(self, node: str, kind: str, reason: str, message: str) -> None:
        self.events.append((node, reason, message))
        if reason == "SpotCapacityShort":
            self.fallback_reasons.append(message)

    def refused(self, reason: str) -> None:
        self.refusals.append(reason)

    def scale_up(self, asg: str, capacity_type: str, result: str) -> None:
        return None

    def fallback(self, spot_asg: str, on_demand_asg: str, reason: str) -> None:
        return None

    def replacement_ready(self, capacity_type: str, seconds: float) -> None:
        return None

    def replacement_failed(self, reason: str) -> None:
        return None

    def outside_change(self, group: str, desired: int, justified: int, claims: tuple[str, ...]) -> None:
        self.outside_changes.append((group, desired, justified))
        self.details.append(
            f"{group}: desired {desired}, justified {justified}, claims {claims}; {self.context(group)}"
        )

    def instance_refresh(self, group: str, refresh: object, nodes: tuple[str, ...]) -> None:
        return None

    def refused_effect(self, what: str, message: str) -> None:
        self.refused_effects.append(f"{what}: {message}")

    def malformed(self, kind: str, field: str) -> None:
        return None

    def launch_failed(self, asg: str, category: str) -> None:
        return None


class World:
    """What outlives a leader: AWS, the API server's objects, the clock."""

    def __init__(self, pairs: dict[str, tuple[str, int]], settings: Settings = SETTINGS) -> None:
        self.settings = settings
        self.clock = FakeClock()
        self.aws = AutoScalingModel(self.clock.now)
        self.kube = KubeModel(self.clock)
        self.drains = ModelDrains(self.kube)
        self.reports = Reports()
        self.pairs = [Pair(spot, od) for spot, (od, _) in pairs.items()]
        self.slow_kubelets = False  # new instances' Nodes register NotReady until the kubelets catch up
        self.aws.on_launch = self._launched
        self.aws.on_gone = self._gone
        self.aws.node_cordoned = self._cordoned
        for spot, (on_demand, size) in pairs.items():
            self.aws.add_group(spot, size, tags={PARTNER_TAG: on_demand})
            self.aws.add_group(on_demand, 0)
        self.reports.context = self._describe_group
        self.initial_total = {pair.spot: len(self.aws.live(pair.spot)) for pair in self.pairs}
        self.original = set(self.aws.instances)

    def _describe_group(self, group: str) -> str:
        instances = sorted((i.instance_id[-3:], i.state) for i in self.aws.instances.values() if i.group == group)
        records = []
        for name in self.kube.nodes:
            record = self.record(name)
            if record is not None and not record.terminal:
                records.append(
                    f"{name}:{record.phase}:spot{record.spot_before}->{record.spot_target}:{record.spot_change}:"
                    f"od{record.on_demand_before}->{record.on_demand_target}:{record.on_demand_change}:"
                    f"{record.replacement_instance[-3:]}"
                )
        return f"instances {instances}; records {records}; step {self.aws.step}"

    def _launched(self, instance: ModelInstance) -> None:
        if self.kube.node_of(instance.instance_id) is None:
            self.kube.add_instance_node(instance.instance_id, ready=not self.slow_kubelets)

    def kubelets_catch_up(self) -> None:
        for name in list(self.kube.nodes):
            self.kube.set_ready(name)

    def _gone(self, instance: ModelInstance) -> None:
        node = self.kube.node_of(instance.instance_id)
        if node is not None:
            self.kube.delete_node(node)

    def _cordoned(self, instance: str) -> bool | None:
        node = self.kube.node_of(instance)
        if node is None:
            return None
        return bool(self.kube.nodes[node]["spec"].get("unschedulable"))

    # -- what the world does on its own ------------------------------------------------------------------------
    def notice(self, node: str, kind: str) -> None:
        """nodewatch writes a notice on ``node`` (a rebalance recommendation or an interruption warning)."""
        instance = self.kube.nodes[node]["spec"]["providerID"].rsplit("/", 1)[-1]
        at = contract.format_time(self.clock.now())
        if kind == "rebalance":
            notes = {contract.REBALANCE_NOTICE_TIME: at, contract.REBALANCE_FIRST_SEEN: at}
        else:
            notes = {
                contract.INTERRUPTION_ACTION: "terminate",
                contract.INTERRUPTION_TIME: at,
                contract.INTERRUPTION_FIRST_SEEN: at,
                contract.INTERRUPTION_CLEARED: None,  # type: ignore[dict-item]
            }
        self.kube.annotate(node, {**notes, contract.INSTANCE_ID: instance})

    def clear_interruption(self, node: str) -> None:
        self.kube.annotate(node, {contract.INTERRUPTION_CLEARED: contract.format_time(self.clock.now())})

    def record(self, node: str) -> ReplacementRecord | None:
        raw = self.kube.annotations(node).get(ANNOTATION) if node in self.kube.nodes else None
        return None if raw is None else ReplacementRecord.from_json(raw)

    def events(self) -> list[FallbackEvent]:
        return [FallbackEvent.from_json(obj) for obj in self.kube.sgfes.values()]

    def spot_nodes(self) -> list[str]:
        spot = {pair.spot for pair in self.pairs}
        names = []
        for name, node in self.kube.nodes.items():
            instance = self.aws.instances.get(node["spec"]["providerID"].rsplit("/", 1)[-1])
            if instance is not None and instance.group in spot and not node["metadata"].get("deletionTimestamp"):
                names.append(name)
        return sorted(names)


class Process:
    """One leader term of the real code over the World."""

    def __init__(self, world: World, crash_at: str = "") -> None:
        self.world = world
        self.workers = SteppedWorkers()
        clock, settings = world.clock, world.settings
        kube = cast(Kube, world.kube)
        asg = AutoScaling(world.aws, sleep=lambda seconds: None)
        writer = NodeWriter(kube)
        sgfes = FallbackEvents(kube, settings.namespace)
        resolver = GroupResolver(settings, asg, clock.monotonic)
        owner = CapacityOwner(
            asg,
            clock,
            reporter=world.reports,
            managed=lambda: {name for pair in world.pairs for name in (pair.spot, pair.on_demand)},
            drain=world.drains.drain,
            read_ahead=self.workers.read_ahead,
        )
        ctx = Context(
            settings=settings,
            clock=clock,
            owner=owner,
            book=RecordBook(writer, world.kube.node_views),
            writer=writer,
            drains=cast(NodeDrains, world.drains),
            sgfes=sgfes,
            resolver=resolver,
            workers=self.workers,
            reporter=world.reports,
            nodes=world.kube.node_views,
            wake=lambda: None,
        )
        owner.node_of = ctx.node_of_instance
        self.owner = owner
        self.replacement = ReplacementController(ctx)
        self.lifecycle = LifecycleController(
            settings=settings,
            sgfes=sgfes,
            owner=owner,
            kube=world.kube,
            writer=writer,
            drainer=Drainer(world.kube, clock, jitter=lambda delay: delay),
            nodes=world.kube.node_views,
            clock=clock,
            identity="model",
            workers=self.workers,  # scale-downs are jobs too: run when the test says, between the others
        )
        owner.hold_until(self.replacement.RECOVERY, self.lifecycle.RECOVERY)
        self.crash_at = crash_at
        world.reports.context = lambda group: world._describe_group(group) + "; " + self._claims_of(group)

    def _claims_of(self, group: str) -> str:
        claims = self.owner.claims()
        return (
            "claims "
            + ", ".join(
                f"{c.key} count {c.count} known {sorted(k[-3:] for k in c.known)} taken {sorted(c.taken)} "
                f"withdrawing {c.withdrawing}"
                for c in claims.on(group)
            )
            + f"; bound {sorted(b[-3:] for b in claims.bound)}"
        )

    def failpoint(self, name: str) -> None:
        if name == self.crash_at:
            raise SimulatedCrash(name)


def install(monkeypatch: Any) -> None:
    """What every model test needs: member records not waiting for quiet."""
    monkeypatch.setattr(scale_up, "QUIET_WAIT", 0.0)


def arm(process: Process) -> None:
    failpoints.set_hook(process.failpoint)


def disarm() -> None:
    failpoints.set_hook(None)
