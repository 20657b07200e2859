"""nodewatch's figures on the sandbox: notice-to-annotation latency, resident memory and CPU while polling.

Both benchmarks run the real ``python -m nodewatch`` against the official EC2 metadata mock (AEMM) of a spot
Node's instance and the sandbox's real kube-apiserver, at nodewatch's default poll interval (2 s).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import math
import platform
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from bench.figures import Figure, Peer, Target
from bench.nodewatch_process import NodewatchProcess
from bench.registry import Context, benchmark
from nodewatch import annotations as contract
from sandbox.binaries import read_versions
from sandbox.imds import MetadataMock, NoticeSchedule

log = logging.getLogger("bench.nodewatch")

SPOT_ASG = "spotguard-spot-1"
ASG_LABEL = "spotguard.io/asg"
POLL_INTERVAL = 2.0  # nodewatch's default; the targets are stated for it
LATENCY_SAMPLES = 10
NOTICE_READ_MESSAGE = "rebalance recommendation appeared in IMDS"  # nodewatch.agent's info line
NOTICE_LEAD = 5.5  # seconds from scheduling a notice to its trigger: room for a fresh nodewatch to poll once first
FOOTPRINT_SECONDS = 600.0
FOOTPRINT_SECONDS_QUICK = 60.0
WARM_UP_POLLS = 3
# What the DaemonSet's probes (manifests/nodewatch.yaml) and the ServiceMonitor ask, in seconds between requests.
PROBE_PERIODS = {"/readyz": 5.0, "/healthz": 10.0, "/metrics": 30.0}
MEMORY_SAMPLE_PERIOD = 10.0

NTH = "aws-node-termination-handler"
NTH_POLLS = Peer(NTH, "polls IMDS every 2 s, so it too sees a notice up to one poll late")
NTH_MEMORY = Peer(NTH, "its Helm chart requests 64 MiB of memory", value=64.0)
NTH_CPU = Peer(NTH, "its Helm chart requests 50m CPU", value=50.0)


def _versions() -> str:
    versions = read_versions()
    return f"AEMM {versions['AEMM_VERSION']}, kube-apiserver {versions['KUBERNETES_VERSION']}"


def _spot_nodes(core: k8s.CoreV1Api) -> list[tuple[str, str, str]]:
    """(name, instance id, zone) of the spot group's Nodes, from ``spec.providerID`` (aws:///<zone>/<id>)."""
    found = []
    for node in core.list_node(label_selector=f"{ASG_LABEL}={SPOT_ASG}").items:
        zone, _, instance_id = node.spec.provider_id.removeprefix("aws:///").partition("/")
        found.append((node.metadata.name, instance_id, zone))
    if not found:
        raise RuntimeError(f"the sandbox has no Node of {SPOT_ASG}")
    return sorted(found)


def _strip_annotations(core: k8s.CoreV1Api) -> None:
    """Leave the Nodes as the next benchmark expects them: without nodewatch's annotations."""
    for node in core.list_node().items:
        own = [key for key in node.metadata.annotations or {} if key in contract.NODEWATCH_KEYS]
        if own:
            core.patch_node(node.metadata.name, {"metadata": {"annotations": dict.fromkeys(own)}})


def _wait(what: str, condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


# -- notice to annotation ----------------------------------------------------------------------------


class NodeAnnotationWatch:
    """Every change of one Node's nodewatch annotations, with the wall-clock time the watch event arrived."""

    def __init__(self, kubeconfig: str, node_name: str) -> None:
        # A client of its own: the kubernetes client's ApiClient is not shared across threads here.
        self._core = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=kubeconfig))
        self._node_name = node_name
        self._events: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-watch", daemon=True)

    def __enter__(self) -> NodeAnnotationWatch:
        self._thread.start()
        _wait("the Node watch to deliver its first event", lambda: bool(self.events()), timeout=30)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()  # the daemon thread ends at its next event or when the server ends the watch

    def events(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self._events)

    def first(self, after: float, condition: Callable[[Mapping[str, str]], bool]) -> float | None:
        """The arrival time of the first event after ``after`` whose annotations satisfy ``condition``."""
        for received, own in self.events():
            if received > after and condition(own):
                return received
        return None

    def _run(self) -> None:
        resource_version: str | None = None
        while not self._stop.is_set():
            watcher = k8s_watch.Watch()
            try:
                for event in watcher.stream(
                    self._core.list_node,
                    field_selector=f"metadata.name={self._node_name}",
                    resource_version=resource_version,
                    timeout_seconds=120,
                ):
                    received = time.time()
                    node = event["object"]
                    resource_version = node.metadata.resource_version
                    own = {k: v for k, v in (node.metadata.annotations or {}).items() if k in contract.NODEWATCH_KEYS}
                    with self._lock:
                        self._events.append((received, own))
                    if self._stop.is_set():
                        watcher.stop()
            except ApiException as error:
                if error.status == 410:  # too old: list again
                    resource_version = None
                else:
                    log.warning(f"node watch failed: {error}; watching again")
                    time.sleep(0.5)
            except Exception as error:
                log.warning(f"node watch failed: {error}; watching again")
                time.sleep(0.5)


def _notice_shown(annotations: Mapping[str, str]) -> bool:
    return contract.REBALANCE_NOTICE_TIME in annotations and contract.REBALANCE_CLEARED not in annotations


@dataclasses.dataclass
class _LatencyRun:
    context: Context
    node: str
    mock: MetadataMock
    watch: NodeAnnotationWatch
    rng: random.Random

    def sample(self, index: int) -> tuple[float, float] | None:
        """(trigger to visible, read to visible) in seconds; None if the sample is void.

        trigger: AEMM's trigger time; read: nodewatch's log line saying that the notice appeared in IMDS;
        visible: arrival of the Node's watch event that shows the notice.
        """
        trigger = float(math.ceil(time.time() + NOTICE_LEAD))  # AEMM's trigger times are whole seconds
        self.mock.schedule(NoticeSchedule(rebalance_in=0.0), now=dt.datetime.fromtimestamp(trigger, dt.UTC))
        time.sleep(self.rng.uniform(0.0, POLL_INTERVAL))  # a random poll phase relative to the trigger
        process = NodewatchProcess(
            self.node,
            self.mock.url,
            self.context.sandbox.kubeconfig,
            self.context.workdir,
            poll_interval=POLL_INTERVAL,
        )
        with process:
            _wait(f"the first poll of sample {index}", lambda: process.polls("ok") >= 1, timeout=30)
            lead = trigger - time.time()
            if lead < 0.2:
                log.info(f"sample {index} void: nodewatch first polled only {lead:.2f} s before the notice")
                return None
            _wait(
                f"the notice of sample {index} on the Node",
                lambda: self.watch.first(trigger, _notice_shown) is not None,
                timeout=POLL_INTERVAL + 30,
                interval=0.1,
            )
        visible = self.watch.first(trigger, _notice_shown)
        assert visible is not None
        read = [
            _log_time(entry)
            for entry in process.log_entries()
            if str(entry.get("msg", "")).startswith(NOTICE_READ_MESSAGE) and _log_time(entry) >= trigger
        ]
        if not read:
            raise RuntimeError(f"nodewatch logged no {NOTICE_READ_MESSAGE!r} line in sample {index}")
        return visible - trigger, visible - read[0]


def _log_time(entry: Mapping[str, object]) -> float:
    """The Unix time of a nodewatch JSON log line (millisecond precision)."""
    return dt.datetime.fromisoformat(str(entry["time"]).replace("Z", "+00:00")).timestamp()


@benchmark("nodewatch_notice_latency", "time from a notice appearing in IMDS (AEMM) to its annotation on the Node")
def notice_latency(context: Context) -> list[Figure]:
    core = context.core()
    name, instance_id, zone = _spot_nodes(core)[0]
    _strip_annotations(core)
    mock = context.sandbox.metadata_mock(instance_id, zone)
    rng = random.Random()  # a poll phase, not a secret
    samples: list[float] = []
    after_read: list[float] = []
    void = 0
    try:
        with NodeAnnotationWatch(str(context.sandbox.kubeconfig), name) as watch:
            run = _LatencyRun(context, name, mock, watch, rng)
            while len(samples) < LATENCY_SAMPLES:
                sample = run.sample(len(samples) + void + 1)
                if sample is None:
                    void += 1
                    if void > LATENCY_SAMPLES:
                        raise RuntimeError("nodewatch started too slowly for most samples; the machine is overloaded")
                    continue
                samples.append(sample[0])
                after_read.append(1000 * sample[1])
                log.info(
                    f"sample {len(samples)}: trigger to visible {sample[0]:.3f} s, read to visible {sample[1]:.3f} s"
                )
    finally:
        mock.stop()
        _strip_annotations(core)
    conditions = (
        f"--poll-interval {POLL_INTERVAL:g} s (default); a fresh nodewatch per sample at a random poll phase, "
        f"polling at least once before the notice; visible = arrival of the first watch event of the Node that "
        f"shows the notice; {_versions()}"
    )
    details = {"poll_interval_s": POLL_INTERVAL, "void_samples": void}
    return [
        Figure.of_samples(
            "nodewatch.notice_to_annotation",
            samples,
            "s",
            f"from AEMM's trigger time (a rebalance recommendation served from that whole second on) to visible; "
            f"{conditions}",
            target=Target(POLL_INTERVAL + 0.1, applies_to="max", text="one poll interval + 100 ms"),
            peer=NTH_POLLS,
            title="nodewatch: notice in IMDS → annotation visible",
            details=details,
        ),
        Figure.of_samples(
            "nodewatch.read_to_annotation",
            after_read,
            "ms",
            f"from nodewatch's log line that the notice appeared in IMDS (after the read) to visible: the Node patch "
            f"(a new TLS connection), the API server's write and the watch; {conditions}",
            target=Target(100.0, applies_to="max", text="the 100 ms beyond one poll interval"),
            title="nodewatch: notice read → annotation visible",
            details=details,
        ),
    ]


# -- footprint -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_nodewatches(context: Context) -> Iterator[list[NodewatchProcess]]:
    """One nodewatch per spot Node, each polling its own AEMM that shows no notice."""
    mocks: list[MetadataMock] = []
    processes: list[NodewatchProcess] = []
    try:
        for name, instance_id, zone in _spot_nodes(context.core()):
            mock = context.sandbox.metadata_mock(instance_id, zone)
            mocks.append(mock)
            processes.append(
                NodewatchProcess(
                    name, mock.url, context.sandbox.kubeconfig, context.workdir, poll_interval=POLL_INTERVAL
                ).start()
            )
        yield processes
    finally:
        for process in processes:
            process.stop()
        for mock in mocks:
            mock.stop()


@benchmark("nodewatch_footprint", "resident memory and CPU of nodewatch polling a quiet IMDS for 10 minutes")
def footprint(context: Context) -> list[Figure]:
    duration = FOOTPRINT_SECONDS_QUICK if context.quick else FOOTPRINT_SECONDS
    with _quiet_nodewatches(context) as processes:
        started = time.monotonic()
        _wait("every nodewatch ready", lambda: all(p.ready() for p in processes), timeout=60, interval=0.2)
        _wait(
            f"{WARM_UP_POLLS} polls of every nodewatch",
            lambda: all(p.polls("ok") >= WARM_UP_POLLS for p in processes),
            timeout=60,
            interval=0.2,
        )
        window_start = time.monotonic()
        polls_before = [p.polls() for p in processes]
        cpu_before = [p.cpu_seconds() for p in processes]
        memory_samples: list[list[int]] = [[p.memory_kib()[0]] for p in processes]
        due = {path: window_start for path in PROBE_PERIODS}
        next_memory = window_start + MEMORY_SAMPLE_PERIOD
        end = started + duration
        while (now := time.monotonic()) < end:
            for path, period in PROBE_PERIODS.items():
                if now >= due[path]:
                    for process in processes:
                        process.get(path)
                    due[path] += period
            if now >= next_memory:
                for samples, process in zip(memory_samples, processes, strict=True):
                    samples.append(process.memory_kib()[0])
                next_memory += MEMORY_SAMPLE_PERIOD
            time.sleep(max(0.0, min([*due.values(), next_memory, end]) - time.monotonic()))
        window = time.monotonic() - window_start
        cpu = [p.cpu_seconds() - before for p, before in zip(processes, cpu_before, strict=True)]
        polls = [p.polls() - before for p, before in zip(processes, polls_before, strict=True)]
        memory = [p.memory_kib() for p in processes]
        polling_minutes = (time.monotonic() - started) / 60
        exit_codes = [p.stop() for p in processes]

    rss_mib = [rss / 1024 for rss, _ in memory]
    cpu_ms_per_poll = [1000 * seconds / count for seconds, count in zip(cpu, polls, strict=True)]
    millicores = [1000 * seconds / window for seconds in cpu]
    quick_note = " (--quick: the target is stated for 10 minutes)" if context.quick else ""
    common = (
        f"{len(processes)} nodewatch processes at once, one per spot Node, each polling its own AEMM (no notice) "
        f"every {POLL_INTERVAL:g} s for {polling_minutes:.0f} min{quick_note}; probes as the DaemonSet and "
        f"ServiceMonitor ask (/readyz every 5 s, /healthz every 10 s, /metrics every 30 s); "
        f"Python {platform.python_version()}; {_versions()}"
    )
    details_common = {"processes": len(processes), "exit_codes": exit_codes, "window_s": round(window, 1)}
    return [
        Figure.of_samples(
            "nodewatch.rss_after_polling",
            rss_mib,
            "MiB",
            f"VmRSS after the run; {common}",
            target=Target(30.0, text="the nodewatch issue"),
            peer=NTH_MEMORY,
            title="nodewatch: resident memory after polling",
            details={
                **details_common,
                "peak_rss_mib": [round(hwm / 1024, 1) for _, hwm in memory],
                "rss_mib_first_last_max": [
                    [round(s[0] / 1024, 1), round(s[-1] / 1024, 1), round(max(s) / 1024, 1)] for s in memory_samples
                ],
            },
        ),
        Figure.of_samples(
            "nodewatch.cpu_per_poll",
            cpu_ms_per_poll,
            "ms",
            f"(utime + stime from /proc/PID/stat) / polls, probes included, after {WARM_UP_POLLS} warm-up polls; "
            f"clock tick 10 ms over {statistics.median(polls):.0f} polls; {common}",
            title="nodewatch: CPU time per poll",
            details={**details_common, "polls": polls, "cpu_seconds": [round(c, 3) for c in cpu]},
        ),
        Figure.of_samples(
            "nodewatch.cpu_while_polling",
            millicores,
            "millicores",
            f"CPU time / wall time over the same window; {common}",
            peer=NTH_CPU,
            title="nodewatch: average CPU while polling",
            details=details_common,
        ),
    ]
