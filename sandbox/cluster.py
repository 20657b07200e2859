"""A real Kubernetes control plane on this machine: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, and kwok playing the kubelets of every Node annotated ``kwok.x-k8s.io/node=fake``.

Everything listens on 127.0.0.1 on random free ports, lives in one temp dir, and is stopped by
``Cluster.stop()`` (also called by the context manager).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import ssl
import urllib.request
from pathlib import Path
from types import TracebackType

import yaml

from sandbox import pki as pki_mod
from sandbox.binaries import Binaries
from sandbox.processes import Child, free_port, wait_until

log = logging.getLogger(__name__)

ADMIN_USER = "sandbox-admin"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_ANNOTATION_VALUE = "fake"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    server: str
    kubeconfig: Path
    token: str
    ca_cert: Path
    etcd_endpoint: str
    workdir: Path


def write_kubeconfig(path: Path, server: str, ca_cert: Path, token: str, user: str = ADMIN_USER) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {"server": server, "certificate-authority": str(ca_cert)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": user}}],
        "current-context": "sandbox",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


class Cluster:
    """Starts the control plane in ``workdir``; ``start()`` returns once the API server is ready."""

    def __init__(self, binaries: Binaries, workdir: Path) -> None:
        self.binaries = binaries
        self.workdir = workdir
        self.logdir = workdir / "logs"
        self.children: list[Child] = []
        self.info: ClusterInfo | None = None
        self._apiserver_args: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> ClusterInfo:
        self.logdir.mkdir(parents=True, exist_ok=True)
        keys = pki_mod.generate(self.workdir / "pki")
        token = secrets.token_hex(24)
        (self.workdir / "tokens.csv").write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        etcd_endpoint = f"http://127.0.0.1:{etcd_port}"
        server = f"https://127.0.0.1:{api_port}"
        kubeconfig = self.workdir / "kubeconfig"
        write_kubeconfig(kubeconfig, server, keys.ca_cert, token)
        self.info = ClusterInfo(server, kubeconfig, token, keys.ca_cert, etcd_endpoint, self.workdir)

        etcd = self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=sandbox",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_endpoint}",
                f"--advertise-client-urls={etcd_endpoint}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=sandbox=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        wait_until("etcd", lambda: _http_ok(f"{etcd_endpoint}/health"), timeout=30, children=[etcd])

        self._apiserver_args = [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers={etcd_endpoint}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--tls-cert-file={keys.serving_cert}",
            f"--tls-private-key-file={keys.serving_key}",
            f"--client-ca-file={keys.ca_cert}",
            f"--token-auth-file={self.workdir / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            # As a real cluster has it: a kubelet (system:node:<name>) may change only its own Node (not its
            # taints, nor the labels kept for the control plane) and the pods bound to it.
            "--enable-admission-plugins=NodeRestriction",
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={keys.sa_pub}",
            f"--service-account-signing-key-file={keys.sa_key}",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]
        apiserver = self._spawn("kube-apiserver", self._apiserver_args)
        self._wait_apiserver([etcd, apiserver])

        self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--service-account-private-key-file={keys.sa_key}",
                f"--root-ca-file={keys.ca_cert}",
                "--controllers=*",
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.binaries.kube_scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
        )
        kwok_config = Path(__file__).resolve().parent / "kwok-stages.yaml"
        self._spawn(
            "kwok",
            [
                str(self.binaries.kwok),
                f"--kubeconfig={kubeconfig}",
                f"--config={kwok_config}",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_ANNOTATION_VALUE}",
                "--cidr=10.244.0.0/16",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )
        wait_until(
            "the default ServiceAccount (kube-controller-manager running)",
            lambda: self._get_ok("/api/v1/namespaces/default/serviceaccounts/default"),
            timeout=60,
            children=self.children,
        )
        return self.info

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()

    def restart_apiserver(self) -> None:
        """Kill and start kube-apiserver again on the same port (for API-server-restart tests)."""
        if self.info is None:
            raise RuntimeError("cluster not started")
        old = next(c for c in self.children if c.name == "kube-apiserver")
        old.stop()
        self.children.remove(old)
        new = self._spawn("kube-apiserver", self._apiserver_args)
        etcd = next(c for c in self.children if c.name == "etcd")
        self._wait_apiserver([etcd, new])

    def check_alive(self) -> None:
        for child in self.children:
            child.check_alive()

    def __enter__(self) -> ClusterInfo:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> Child:
        child = Child(name, argv, self.logdir)
        self.children.append(child)
        return child

    def _wait_apiserver(self, children: list[Child]) -> None:
        wait_until("kube-apiserver /readyz", lambda: self._get_ok("/readyz"), timeout=60, children=children)

    def _get_ok(self, path: str) -> bool:
        assert self.info is not None
        context = ssl.create_default_context(cafile=str(self.info.ca_cert))
        request = urllib.request.Request(
            self.info.server + path, headers={"Authorization": f"Bearer {self.info.token}"}
        )
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return int(response.status) == 200


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return int(response.status) == 200
