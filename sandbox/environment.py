"""The whole local sandbox in one object: Kubernetes control plane + kwok, moto's AWS with the
capacity simulator (which keeps a Node per InService instance), the SpotGuardFallbackEvent CRD,
and on demand one EC2 metadata mock (AEMM) per spot node.

Used by the pytest fixtures and by ``spotguard sandbox``::

    with Sandbox() as sb:
        print(sb.kubeconfig, sb.env())
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from sandbox import binaries as binaries_mod
from sandbox.cluster import Cluster, ClusterInfo
from sandbox.imds import MetadataMock, NoticeSchedule
from sandbox.k3s import K3sCluster
from sandbox.processes import Child, ProcessFailedError, wait_until

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = REPO_ROOT / "manifests"
CRD_FILE = MANIFESTS / "crd-spotguardfallbackevent.yaml"
AWS_REGION = "us-east-1"
# moto accepts any credentials; these name no real account.
AWS_FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class Sandbox:
    """Start with ``start()`` or a ``with`` block; everything lives under one temp dir."""

    def __init__(
        self,
        pairs: int = 1,
        spot_desired: int = 3,
        workdir: Path | None = None,
        keep_workdir: bool = False,
        build: bool = True,
    ) -> None:
        self.pairs = pairs
        self.spot_desired = spot_desired
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="spotguard-sandbox-"))
        self.keep_workdir = keep_workdir
        self.binaries = binaries_mod.ensure(build=build)
        # SPOTGUARD_SANDBOX_KUBERNETES=k3s: a k3s container via testcontainers (needs Docker).
        kind = os.environ.get("SPOTGUARD_SANDBOX_KUBERNETES", "local")
        if kind not in {"local", "k3s"}:
            raise ValueError(f"SPOTGUARD_SANDBOX_KUBERNETES={kind!r}: expected 'local' (default) or 'k3s'")
        self.cluster: Cluster | K3sCluster = (
            K3sCluster(self.binaries, self.workdir / "cluster")
            if kind == "k3s"
            else Cluster(self.binaries, self.workdir / "cluster")
        )
        self.cluster_info: ClusterInfo | None = None
        self.aws: Child | None = None
        self.aws_endpoint = ""
        self.aws_groups: list[dict[str, Any]] = []
        self.queue_url = ""  # the SQS queue EventBridge feeds with EC2's events (sandbox.aws.event_queue)
        self.mocks: dict[str, MetadataMock] = {}
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Sandbox:
        atexit.register(self.stop)
        try:
            self.cluster_info = self.cluster.start()
            self._start_aws()
            self.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
            self.kubectl(
                "wait", "--for=condition=Established", "--timeout=30s", "crd/spotguardfallbackevents.aws.amazon.com"
            )
            self.wait_for_nodes(self.spot_desired * self.pairs)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for mock in self.mocks.values():
            mock.stop()
        if self.aws is not None:
            self.aws.stop()
        self.cluster.stop()
        if self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what clients need -----------------------------------------------------------------------
    @property
    def info(self) -> ClusterInfo:
        if self.cluster_info is None:
            raise RuntimeError("sandbox not started")
        return self.cluster_info

    @property
    def kubeconfig(self) -> Path:
        return self.info.kubeconfig

    def env(self) -> dict[str, str]:
        """Environment that points kubectl, the kubernetes client and unmodified boto3 here."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "AWS_ENDPOINT_URL": self.aws_endpoint,
            "AWS_DEFAULT_REGION": AWS_REGION,
            "AWS_REGION": AWS_REGION,
            **AWS_FAKE_CREDENTIALS,
        }

    def kubectl(
        self, *args: str, check: bool = True, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input_text,
            check=False,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
        return result

    def wait_for_nodes(self, count: int, timeout: float = 60, exact: bool = False) -> None:
        """Wait until at least (or with ``exact``, exactly) ``count`` Nodes exist, all of them Ready."""

        def ready() -> bool:
            out = self.kubectl(
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}",
            ).stdout
            states = out.split()
            if exact:
                return len(states) == count and states.count("True") == count
            return states.count("True") >= count

        wait_until(f"{count} Ready Nodes", ready, timeout=timeout, children=self._children(), interval=0.25)

    def metadata_mock(
        self,
        instance_id: str,
        availability_zone: str,
        notices: NoticeSchedule | None = None,
        imdsv2_only: bool = False,
        life_cycle: str = "spot",
    ) -> MetadataMock:
        """Start (or reschedule) the AEMM for one instance; returns it with its ``url``. ``life_cycle`` is what
        it answers for instance-life-cycle (``spot``, or ``on-demand`` for an on-demand instance)."""
        mock = self.mocks.get(instance_id)
        if mock is None or mock.imdsv2_only != imdsv2_only or mock.life_cycle != life_cycle:
            if mock is not None:
                mock.stop()
            mock = MetadataMock(
                self.binaries.aemm, self.workdir, instance_id, availability_zone, imdsv2_only, life_cycle=life_cycle
            )
            self.mocks[instance_id] = mock
        mock.schedule(notices or NoticeSchedule())
        return mock

    def check_alive(self) -> None:
        for child in self._children():
            child.check_alive()

    # -- internals -------------------------------------------------------------------------------
    def _children(self) -> list[Child]:
        return [*self.cluster.children, *([self.aws] if self.aws else [])]

    def _start_aws(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "sandbox.aws",
            "--port=0",
            f"--region={AWS_REGION}",
            f"--pairs={self.pairs}",
            f"--spot-desired={self.spot_desired}",
            f"--kubeconfig={self.kubeconfig}",
        ]
        env = {**AWS_FAKE_CREDENTIALS, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.aws = Child("aws", argv, self.workdir, env=env, stdout=subprocess.PIPE)
        line = _read_line(self.aws, timeout=60)
        announced = json.loads(line)
        self.aws_endpoint = str(announced["endpoint"])
        self.aws_groups = list(announced.get("groups", []))
        self.queue_url = str(announced.get("queue_url", ""))


def _read_line(child: Child, timeout: float) -> str:
    """The first line the child prints on stdout, or a clear error with its log."""
    assert child.proc.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    fd = child.proc.stdout.fileno()
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProcessFailedError(f"{child.name} printed no ready line in {timeout:.0f}s:\n{child.tail()}")
        readable, _, _ = select.select([fd], [], [], min(remaining, 0.5))
        if readable:
            chunk = os.read(fd, 4096)
            if not chunk:
                child.check_alive()
                raise ProcessFailedError(f"{child.name} closed stdout before its ready line:\n{child.tail()}")
            buffer += chunk
        else:
            child.check_alive()
    return buffer.split(b"\n", 1)[0].decode()
