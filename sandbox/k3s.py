"""Optional: a k3s container (testcontainers) instead of the local control plane.

For contributors with a Docker engine: ``SPOTGUARD_SANDBOX_KUBERNETES=k3s`` makes ``Sandbox`` use
this. kwok still plays the kubelets of the sandbox's simulated Nodes, run locally against k3s.
No Docker engine runs on the project's CI machines, so CI always uses the local control plane.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandbox.binaries import Binaries
from sandbox.cluster import KWOK_NODE_ANNOTATION, KWOK_NODE_ANNOTATION_VALUE, ClusterInfo
from sandbox.processes import Child, free_port, wait_until


class K3sCluster:
    """Same surface as ``sandbox.cluster.Cluster``: start() -> ClusterInfo, stop(), children."""

    def __init__(self, binaries: Binaries, workdir: Path) -> None:
        self.binaries = binaries
        self.workdir = workdir
        self.children: list[Child] = []
        self._container: Any = None

    def start(self) -> ClusterInfo:
        try:
            from testcontainers.k3s import K3SContainer
        except ImportError as exc:
            raise RuntimeError(
                "SPOTGUARD_SANDBOX_KUBERNETES=k3s needs testcontainers: pip install 'spotguard[k3s]'"
            ) from exc
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._container = K3SContainer()
        self._container.start()
        kubeconfig = self.workdir / "kubeconfig"
        kubeconfig.write_text(self._container.config_yaml())
        kwok = Child(
            "kwok",
            [
                str(self.binaries.kwok),
                f"--kubeconfig={kubeconfig}",
                f"--config={Path(__file__).resolve().parent / 'kwok-stages.yaml'}",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_ANNOTATION_VALUE}",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
            self.workdir,
        )
        self.children.append(kwok)
        wait_until("kwok", kwok.alive, timeout=10, children=[kwok])
        server = str(self._container.get_container_host_ip())
        return ClusterInfo(
            server=server,
            kubeconfig=kubeconfig,
            token="",
            ca_cert=kubeconfig,
            etcd_endpoint="",
            workdir=self.workdir,
        )

    def stop(self) -> None:
        for child in self.children:
            child.stop()
        self.children.clear()
        if self._container is not None:
            self._container.stop()
            self._container = None

    def check_alive(self) -> None:
        for child in self.children:
            child.check_alive()
