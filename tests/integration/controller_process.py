"""Controller replicas as real processes against the sandbox, for election, crash-safety and scenario tests.

Each replica is ``python -m controller.app.cli run --identity <id>``: the real process, with its own signal
handling and ``os._exit`` on lost leadership. Its stdout and stderr go to one log file (under the test's
``tmp_path``), which is the only way to see what it decided. Typical use::

    @pytest.fixture
    def launcher(sandbox, aws_sim, core, tmp_path):
        with ControllerLauncher(controller_env(sandbox.env()), tmp_path, core=core) as launcher:
            yield launcher  # on exit: every replica killed, the test's Lease deleted, the Nodes cleaned

    def test_something(launcher, api_client, core):
        with LeaseWatch(api_client, launcher.lease_name) as lease:
            a = launcher.start("a", **SHORT_ELECTION)
            lease.wait_for_holder("a", timeout=30)
            annotate_rebalance(core, spot_nodes(core)[0])
            a.freeze()  # SIGSTOP; a.thaw() is SIGCONT
            ...
            assert a.stop() == 0  # SIGTERM (after SIGCONT if frozen), then the exit status

Every launcher campaigns for a Lease of its own (``spotguard-test-<random>``), so a replica killed by one test
never delays the next, and gives each replica a free metrics port. ``ControllerLauncher.close`` (the ``with``
block's end) kills whatever replica is still running, frozen or not: no controller outlives its test. Two safety
nets cover a test process that dies without closing its launcher: an ``atexit`` hook, and each replica asks the
kernel to SIGKILL it when the thread that started it ends (PR_SET_PDEATHSIG; so start replicas from the test's
own thread, not from a short-lived helper thread).

The controller logs one JSON object per line; match log text on words of the message (quotes are escaped).

Waiting is always bounded (the ``timeout`` arguments); a wait that runs out raises AssertionError with the tail
of the replica's log, so a failing test says what the controller was doing.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from controller.adapters.kube import MERGE_PATCH, Kube
from controller.model.queue_notice import ANNOTATION as QUEUE_NOTICE
from controller.model.record import ANNOTATION as RECORD_ANNOTATION
from controller.model.record import FINALIZER, TAINT_KEY, Phase
from nodewatch import annotations as contract

REPO_ROOT = Path(__file__).resolve().parents[2]
LEASE_NAMESPACE = "kube-system"
SPOT_ASG = "spotguard-spot-1"
ON_DEMAND_ASG = "spotguard-ondemand-1"
ASG_LABEL = "spotguard.io/asg"  # put on every Node by the sandbox's node sync

#: Election timings short enough for a test to wait out a lease (every replica of a test must share them).
SHORT_ELECTION = {
    "SPOT_GUARD_LEASE_DURATION": "6",
    "SPOT_GUARD_RENEW_DEADLINE": "4",
    "SPOT_GUARD_RETRY_PERIOD": "1",
}

#: How long a replica may take to exit after SIGTERM before it is killed and the test fails.
STOP_TIMEOUT = 30.0

#: ``spotguard`` (controller.app.cli) behind a guard: SIGKILL when the starting thread dies, or exit if it already has.
_BOOT = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv.pop(1)):
    sys.exit("the test process that started this controller is gone")
from controller.app.cli import main
main(prog_name="spotguard")
"""


def controller_env(sandbox_env: Mapping[str, str], **overrides: str) -> dict[str, str]:
    """The environment of a replica: the sandbox's (kubeconfig, AWS endpoint, fake credentials), the one pair
    of groups, fast capacity polling, then ``overrides`` (e.g. ``**SHORT_ELECTION``, ``LOG_LEVEL="debug"``).

    Only PATH, HOME and LANG are taken from this process, so no stray ``SPOT_GUARD_*`` or AWS setting leaks in.
    """
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    env.update(sandbox_env)
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
            "SPOT_ASG_NAME": SPOT_ASG,
            "ON_DEMAND_ASG_NAME": ON_DEMAND_ASG,
            "SPOT_GUARD_CAPACITY_POLL_INTERVAL": "0.5",
            "SPOT_GUARD_CAPACITY_CHECK_TIMEOUT": "20",
        }
    )
    env.update(overrides)
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ControllerProcess:
    """One running replica. Signals go to its pid only; ``returncode`` is None while it runs (or is frozen)."""

    def __init__(self, identity: str, env: Mapping[str, str], log_path: Path) -> None:
        self.identity = identity
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self._frozen = False
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(os.getpid()), "run", "--identity", identity],
            env=dict(env),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches pytest, not the replicas
        )

    def __repr__(self) -> str:
        state = "frozen" if self._frozen else "running" if self.running else f"exited {self.returncode}"
        return f"<ControllerProcess {self.identity} pid {self.pid} {state}>"

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    @property
    def frozen(self) -> bool:
        return self._frozen and self.running

    # -- signals ----------------------------------------------------------------------------------------

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (after SIGCONT if frozen) and wait for the exit status; kill it and fail if it hangs."""
        if self.running:
            self.thaw()
            self._signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> int:
        """SIGKILL (works on a frozen process too) and reap it; returns the exit status (-9 if it was running)."""
        if self.running:
            self._signal(signal.SIGKILL)
        self._frozen = False
        return self._proc.wait(STOP_TIMEOUT)

    def freeze(self) -> None:
        """SIGSTOP: every thread stops at once, mid-call if need be; monotonic time keeps running."""
        self._signal(signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT (harmless if not frozen)."""
        if self.running:
            self._signal(signal.SIGCONT)
        self._frozen = False

    def _signal(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # it exited between poll() and kill(): nothing to signal
            os.kill(self._proc.pid, signum)

    # -- waiting ----------------------------------------------------------------------------------------

    def wait(self, timeout: float) -> int:
        """The exit status once it exits within ``timeout`` seconds; otherwise kill it and fail with its log."""
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"controller {self.identity} did not exit within {timeout:g} s (killed); log:\n{self.log_tail()}"
            ) from None

    def wait_for_log(self, text: str, timeout: float, *, after: int = 0) -> int:
        """Wait until the log has ``text`` at or beyond offset ``after``; returns the offset just past it.

        Fails at once if the replica exits first (its log tail is in the message). Pass a previous return
        value (or ``log_size()``) as ``after`` to wait for a new occurrence.
        """
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text()
            found = log.find(text, after)
            if found >= 0:
                return found + len(text)
            if not self.running:
                raise AssertionError(
                    f"controller {self.identity} exited with {self.returncode} before logging {text!r}; log:\n"
                    f"{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"controller {self.identity} did not log {text!r} within {timeout:g} s; log:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    # -- the log ----------------------------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything the replica wrote so far (stdout and stderr interleaved, as written)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_size(self) -> int:
        return len(self.log_text())

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def close(self) -> None:
        """Make sure the process is gone (SIGKILL if needed) and close its log file. Idempotent."""
        if self.running:
            self.kill()
        self._log.close()


class ControllerLauncher:
    """Starts replicas that share one environment and a Lease of their own; ``close`` ends every one of them.

    ``core`` (optional): a CoreV1Api; if given, ``close`` also strips what the controller and the test left on
    the sandbox's Nodes (notice annotations, replacement record, finalizer, taint, cordon), so that Nodes whose
    instances the next AWS reset removes can be deleted and the next test starts from clean Nodes.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        lease_name: str | None = None,
        core: k8s.CoreV1Api | None = None,
    ) -> None:
        self.lease_name = lease_name or f"spotguard-test-{uuid.uuid4().hex[:8]}"
        self.env = {**env, "SPOT_GUARD_LEASE_NAME": self.lease_name, "SPOT_GUARD_LEASE_NAMESPACE": LEASE_NAMESPACE}
        self.log_dir = log_dir
        self.core = core
        self.processes: list[ControllerProcess] = []
        self.proxies: list[PausableProxy] = []
        _LIVE_LAUNCHERS.add(self)

    def start(self, identity: str, **env_overrides: str) -> ControllerProcess:
        """Start replica ``identity``; ``env_overrides`` win over the launcher's environment.

        Its log is ``<log_dir>/controller-<identity>.log`` (``-2.log``, ``-3.log``... when an identity is
        started again, e.g. a crashed replica restarting, so each process has a log of its own).
        """
        env = {**self.env, "SPOT_GUARD_METRICS_PORT": str(_free_port()), **env_overrides}
        log_path = self.log_dir / f"controller-{identity}.log"
        serial = 1
        while log_path.exists():
            serial += 1
            log_path = self.log_dir / f"controller-{identity}-{serial}.log"
        process = ControllerProcess(identity, env, log_path)
        self.processes.append(process)
        return process

    def api_proxy(self) -> PausableProxy:
        """A proxy to the API server for one replica: start it with ``KUBECONFIG=str(proxy.kubeconfig)``.

        ``proxy.pause()`` then cuts that replica off from the API server (and only it) until ``resume()``.
        """
        kubeconfig = Path(self.env["KUBECONFIG"])
        config = yaml.safe_load(kubeconfig.read_text())
        (cluster,) = config["clusters"]
        upstream = urllib.parse.urlsplit(cluster["cluster"]["server"])
        proxy = PausableProxy(upstream.hostname or "127.0.0.1", upstream.port or 443)
        self.proxies.append(proxy)
        cluster["cluster"]["server"] = f"{upstream.scheme}://127.0.0.1:{proxy.port}"
        proxy.kubeconfig = self.log_dir / f"kubeconfig-via-proxy-{proxy.port}"
        proxy.kubeconfig.write_text(yaml.safe_dump(config))
        return proxy

    def close(self) -> None:
        """Kill every replica still running (frozen ones too), then clean up the Lease and the Nodes."""
        for process in self.processes:
            process.close()
        for proxy in self.proxies:
            proxy.close()
        if self.core is not None:
            coordination = k8s.CoordinationV1Api(self.core.api_client)
            with contextlib.suppress(ApiException):
                coordination.delete_namespaced_lease(self.lease_name, LEASE_NAMESPACE)
            clean_nodes(self.core)
        _LIVE_LAUNCHERS.discard(self)

    def __enter__(self) -> ControllerLauncher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_LIVE_LAUNCHERS: weakref.WeakSet[ControllerLauncher] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    """Safety net for a launcher that was never closed (an interrupted session): no replica outlives pytest."""
    for launcher in list(_LIVE_LAUNCHERS):
        for process in launcher.processes:
            with contextlib.suppress(Exception):
                process.close()


class PausableProxy:
    """A TCP forwarder from 127.0.0.1:<port> to one upstream; while paused, not a byte passes either way.

    Stands in for a network that stops carrying one replica's traffic (a partition) without touching the
    server or the other replicas. TLS passes through untouched (the sandbox's certificate names 127.0.0.1).
    Connections made while paused are accepted but carry nothing until ``resume()``.
    """

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.kubeconfig: Path | None = None  # set by ControllerLauncher.api_proxy
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._open = threading.Event()
        self._open.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True)]
        self._threads[0].start()

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    def pause(self) -> None:
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    def close(self) -> None:
        """Stop forwarding and close every connection (the replica sees them reset). Idempotent."""
        self._closed.set()
        self._open.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
            threads = list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in recv (close alone does not)
            sock.close()
        self._listener.close()
        for thread in threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                downstream, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                downstream.close()
                continue
            downstream.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if self._closed.is_set():
                    downstream.close()
                    upstream.close()
                    return
                self._sockets += [downstream, upstream]
                for source, sink in ((downstream, upstream), (upstream, downstream)):
                    thread = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                    self._threads.append(thread)
                    thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                while not self._open.wait(0.1):  # paused: hold what arrived, read nothing more
                    pass
                if not data or self._closed.is_set():
                    break
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


# -- the Lease ------------------------------------------------------------------------------------------


def lease_holder(api_client: k8s.ApiClient, name: str, namespace: str = LEASE_NAMESPACE) -> str | None:
    """The Lease's holderIdentity: None if there is no such Lease, ``""`` once its holder released it."""
    try:
        lease = k8s.CoordinationV1Api(api_client).read_namespaced_lease(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return str(lease.spec.holder_identity or "")


@dataclasses.dataclass(frozen=True)
class HolderChange:
    at: float  # time.monotonic() in the test process when the watch delivered the change
    holder: str  # "" when released


class LeaseWatch:
    """Every holder the Lease has had, in order, with when this process saw it (a watch: none is missed).

    Polling could miss a Lease that is released and taken over between two reads; a watch delivers every
    version in order. Use as a context manager (the watch thread stops on exit).
    """

    def __init__(self, api_client: k8s.ApiClient, name: str, namespace: str = LEASE_NAMESPACE) -> None:
        self._api = k8s.CoordinationV1Api(api_client)
        self._name = name
        self._namespace = namespace
        self._changes: list[HolderChange] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"lease-watch-{name}", daemon=True)

    def __enter__(self) -> LeaseWatch:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        resource_version = ""
        try:
            while not self._stop.is_set():
                watcher = k8s_watch.Watch()
                for event in watcher.stream(
                    self._api.list_namespaced_lease,
                    self._namespace,
                    field_selector=f"metadata.name={self._name}",
                    resource_version=resource_version,
                    timeout_seconds=1,  # reconnect every second, so stopping takes at most that long
                    allow_watch_bookmarks=False,
                ):
                    lease = event["object"]
                    resource_version = lease.metadata.resource_version
                    holder = "" if event["type"] == "DELETED" else str(lease.spec.holder_identity or "")
                    self._record(holder)
                    if self._stop.is_set():
                        watcher.stop()
        except BaseException as error:  # reported by the next wait, so a broken watch cannot pass silently
            with self._changed:
                self._error = error
                self._changed.notify_all()

    def _record(self, holder: str) -> None:
        with self._changed:
            if not self._changes or self._changes[-1].holder != holder:
                self._changes.append(HolderChange(time.monotonic(), holder))
                self._changed.notify_all()

    @property
    def changes(self) -> list[HolderChange]:
        with self._changed:
            return list(self._changes)

    @property
    def holders(self) -> list[str]:
        """The holders in the order they held the Lease (``""`` for released; no repeats)."""
        return [change.holder for change in self.changes]

    @property
    def current(self) -> str | None:
        changes = self.changes
        return changes[-1].holder if changes else None

    def wait_for(self, condition: Callable[[str], bool], timeout: float, what: str, *, since: float = 0.0) -> float:
        """Wait until a holder satisfying ``condition`` was seen at or after ``since`` (monotonic); its time."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for change in self._changes:
                    if change.at >= since and condition(change.holder):
                        return change.at
                if self._error is not None:
                    raise AssertionError(f"the watch on Lease {self._name} failed: {self._error!r}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"gave up after {timeout:g} s waiting for the Lease {self._name} to be held by {what}; "
                        f"holders seen: {[c.holder for c in self._changes]}"
                    )
                self._changed.wait(remaining)

    def wait_for_holder(self, identity: str, timeout: float, *, since: float = 0.0) -> float:
        """Wait until ``identity`` holds the Lease (seen at or after ``since``); when it was seen (monotonic)."""
        return self.wait_for(lambda holder: holder == identity, timeout, repr(identity), since=since)


# -- Nodes ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SpotNode:
    name: str
    instance_id: str


def instance_id_of(node: Any) -> str:
    return str(node.spec.provider_id or "").rstrip("/").rsplit("/", 1)[-1]


def spot_nodes(core: k8s.CoreV1Api, asg: str = SPOT_ASG) -> list[SpotNode]:
    """The group's Ready Nodes that are not being deleted, by name."""
    found = []
    for node in core.list_node(label_selector=f"{ASG_LABEL}={asg}").items:
        conditions = {c.type: c.status for c in (node.status.conditions or [])}
        if node.metadata.deletion_timestamp is None and conditions.get("Ready") == "True":
            found.append(SpotNode(node.metadata.name, instance_id_of(node)))
    return sorted(found, key=lambda n: n.name)


def annotate_rebalance(core: k8s.CoreV1Api, node: SpotNode, at: dt.datetime | None = None) -> None:
    """Write what nodewatch writes on a rebalance recommendation: notice time and instance id."""
    moment = at or dt.datetime.now(dt.UTC)
    core.patch_node(
        node.name,
        {
            "metadata": {
                "annotations": {
                    contract.REBALANCE_NOTICE_TIME: contract.format_time(moment),
                    contract.INSTANCE_ID: node.instance_id,
                }
            }
        },
    )


def replacement_phase(core: k8s.CoreV1Api, node_name: str) -> str | None:
    """The phase in the Node's replacement record; None if there is no record, ``"Gone"`` if the Node is gone."""
    try:
        node = core.read_node(node_name)
    except ApiException as error:
        if error.status == 404:
            return "Gone"
        raise
    raw = (node.metadata.annotations or {}).get(RECORD_ANNOTATION)
    return None if raw is None else str(json.loads(raw).get("phase"))


def replacement_finished(core: k8s.CoreV1Api, node_name: str) -> bool:
    """The Node's replacement is over: terminal record, or the Node deleted after its instance was retired."""
    phase = replacement_phase(core, node_name)
    return phase == "Gone" or phase in Phase.TERMINAL


def clean_nodes(core: k8s.CoreV1Api) -> None:
    """Remove every trace of notices and replacements from the sandbox's Nodes (best effort, Node by Node).

    JSON merge patches: ``null`` deletes an annotation, and lists (finalizers, taints) are replaced whole.
    """
    kube = Kube(core.api_client)
    keys = [*contract.NODEWATCH_KEYS, RECORD_ANNOTATION, QUEUE_NOTICE]
    for node in core.list_node(label_selector=ASG_LABEL).items:
        annotations = node.metadata.annotations or {}
        finalizers = node.metadata.finalizers or []
        taints = node.spec.taints or []
        metadata: dict[str, Any] = {}
        spec: dict[str, Any] = {}
        stale = {key: None for key in keys if key in annotations}
        if stale:
            metadata["annotations"] = stale
        if FINALIZER in finalizers:
            metadata["finalizers"] = [f for f in finalizers if f != FINALIZER]
        if any(t.key == TAINT_KEY for t in taints):
            spec["taints"] = [
                {"key": t.key, "value": t.value, "effect": t.effect} for t in taints if t.key != TAINT_KEY
            ]
        if node.spec.unschedulable:
            spec["unschedulable"] = False
        patch = {key: value for key, value in (("metadata", metadata), ("spec", spec)) if value}
        if patch:
            with contextlib.suppress(ApiException):
                kube.request("PATCH", f"/api/v1/nodes/{node.metadata.name}", body=patch, content_type=MERGE_PATCH)
