"""Figure 5, footprint: the controller's resident memory with 5,000 Nodes and 20,000 Pods in the cluster, its
idle CPU, and whether it LISTs periodically (the API server's own apiserver_request_total, before and after).

The controller runs throughout: its memory is read before the load, after it (every object arrived through its
watches), and it then idles for 60 s (30 s with --quick) with nothing changing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import yaml
from kubernetes import client as k8s

from bench.controller_harness import controller
from bench.controller_load import Load
from bench.figures import Figure, Peer, Target
from bench.registry import Context, benchmark

log = logging.getLogger("bench.controller")

NODES, PODS = 5000, 20000
WINDOWS = 3  # idle CPU samples
RBAC = Path(__file__).resolve().parent.parent / "manifests" / "controller-rbac.yaml"
PROFILE_DIR = Path(tempfile.gettempdir())
SETTLE = 20.0
LIST_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def list_counts(api: k8s.ApiClient) -> Counter[str]:
    """LIST requests the API server has answered so far, by resource (every client together)."""
    response = api.call_api("/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False)
    raw = response[0].data if isinstance(response, tuple) else response.data
    counts: Counter[str] = Counter()
    for line in raw.decode().splitlines():
        match = LIST_LINE.match(line)
        if match and 'verb="LIST"' in match["labels"]:
            resource = re.search(r'resource="([^"]*)"', match["labels"])
            counts[resource.group(1) if resource else "?"] += int(float(match["value"]))
    return counts


def controller_listable() -> set[str]:
    """The resources the controller's Roles and ClusterRoles allow it to list (manifests/controller-rbac.yaml)."""
    listable: set[str] = set()
    for document in yaml.safe_load_all(RBAC.read_text()):
        if document and document.get("kind") in ("Role", "ClusterRole"):
            for rule in document.get("rules") or []:
                if "list" in rule.get("verbs", []):
                    listable.update(rule.get("resources", []))
    return listable


@contextlib.contextmanager
def profiled(pid: int, output: Path) -> Iterator[None]:
    """Sample ``pid``'s Python stacks with py-spy (if installed next to this Python) into ``output``."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        yield
        return
    command = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "50", "--nonblocking"]
    recorder = subprocess.Popen([*command, "-o", str(output)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            recorder.wait(60)
        log.info(f"profile of the controller: {output}")


@benchmark("controller_footprint", "controller memory with 5,000 Nodes and 20,000 Pods; idle CPU; no periodic LIST")
def footprint(context: Context) -> list[Figure]:
    """Figure 5."""
    idle = 30.0 if context.quick else 60.0
    load = Load(context.sandbox.kubeconfig, NODES, PODS)
    api = context.api_client()
    details: dict[str, object] = {}
    with controller(context) as process:
        details["rss_mib_empty_cluster"] = round(rss_mib(process.pid), 1)
        started = time.monotonic()
        try:
            with profiled(process.pid, PROFILE_DIR / "controller-under-load.txt"):
                load.create()
                details["load_create_seconds"] = round(time.monotonic() - started, 1)
                time.sleep(SETTLE)
            rss = rss_mib(process.pid)
            details["vm_hwm_mib"] = round(rss_mib(process.pid, "VmHWM"), 1)
            lists_before = list_counts(api)
            cpu: list[float] = []
            with profiled(process.pid, PROFILE_DIR / "controller-idle.txt"):
                for _ in range(WINDOWS):
                    cpu_before, at = cpu_seconds(process.pid), time.monotonic()
                    time.sleep(idle / WINDOWS)
                    cpu.append((cpu_seconds(process.pid) - cpu_before) / (time.monotonic() - at) * 1000)
            everyone = list_counts(api) - lists_before
            process.freeze()  # the same window without the controller: the other clients' LISTs
            try:
                frozen_before = list_counts(api)
                time.sleep(idle)
                others = list_counts(api) - frozen_before
            finally:
                process.thaw()
            listable = controller_listable()  # any other resource's LISTs are another client's
            grown = {k: v for k, v in (everyone - others).items() if v and k in listable}
            details["list_requests_idle_all_clients"] = dict(everyone)
            details["list_requests_same_window_controller_frozen"] = dict(others)
            details["rss_mib_after_idle"] = round(rss_mib(process.pid), 1)
            details["list_requests_during_idle_by_resource"] = dict(grown)
            details["resources_the_controller_may_list"] = sorted(listable)
        finally:
            deleting = time.monotonic()
            try:
                load.delete()
                details["load_delete_seconds"] = round(time.monotonic() - deleting, 1)
            except Exception as error:  # the figures stand; the sandbox is torn down after the run anyway
                log.warning(f"could not delete the footprint load: {error!r}")
    conditions = (
        f"controller with default settings, running while {NODES} plain Nodes (ignored by kwok, each with an "
        f"aws:/// providerID of no ASG) and {PODS} Pods bound to them were created; measured {SETTLE:g} s after"
    )
    return [
        Figure.of_samples(
            "controller.rss_5000_nodes_20000_pods",
            [rss],
            "MiB",
            f"{conditions}; VmRSS from /proc",
            target=Target(250.0, text="<= 250 MiB"),
            peer=Peer("aws-node-termination-handler", "its Helm chart requests 64 MiB (it watches no Pods)"),
            title="Controller resident memory, 5,000 Nodes / 20,000 Pods",
            details=details,
        ),
        Figure.of_samples(
            "controller.idle_cpu_5000_nodes_20000_pods",
            cpu,
            "millicores",
            f"{conditions}; user+system CPU from /proc/PID/stat over {WINDOWS} windows of {idle / WINDOWS:g} s with "
            "nothing of Spot Guard's changing (the controller-manager still updates the kubelet-less Nodes)",
            target=Target(50.0, text="near zero: under 5% of one core"),
            peer=Peer("aws-node-termination-handler", "its Helm chart requests 50m CPU"),
            title="Controller idle CPU, 5,000 Nodes / 20,000 Pods",
        ),
        Figure.of_samples(
            "controller.idle_list_requests",
            [float(sum(grown.values()))],
            "requests",
            f'{conditions}; growth of the API server\'s apiserver_request_total{{verb="LIST"}} over the {idle:g} s '
            "idle window minus its growth over as long a window with the controller frozen (SIGSTOP): the other "
            "clients' LISTs (the sandbox's node sync lists its Nodes every 5 s) cancel out; only resources the "
            "controller's RBAC lets it list are counted (the controller-manager's occasional LIST of Services is not "
            "the controller's)",
            target=Target(0.0, text="no periodic LIST calls"),
            title="LIST requests during 60 s idle",
            details={"by_resource": dict(grown)},
        ),
    ]
