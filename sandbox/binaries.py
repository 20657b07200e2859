"""Where the sandbox's upstream binaries live, and building them when the cache is cold.

The versions are pinned once, in ``versions.env`` beside this file; ``build-binaries.sh`` builds
each part into ``<cache>/<part>-<version>/``. This module reads the same file, so Python and the
shell script can never disagree about a version.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSIONS_FILE = HERE / "versions.env"
BUILD_SCRIPT = HERE / "build-binaries.sh"


class BinariesMissingError(RuntimeError):
    """A sandbox binary is not in the cache and building it was not allowed or failed."""


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse ``KEY=value`` lines of versions.env (comments and blank lines ignored)."""
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: line {raw!r} is not KEY=value")
        versions[key.strip()] = value.strip()
    return versions


def cache_root() -> Path:
    explicit = os.environ.get("SPOTGUARD_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spotguard"


@dataclasses.dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    aemm: Path
    helm: Path
    kubernetes_version: str

    def all(self) -> list[Path]:
        return [
            self.etcd,
            self.kube_apiserver,
            self.kube_controller_manager,
            self.kube_scheduler,
            self.kubectl,
            self.kwok,
            self.aemm,
            self.helm,
        ]


def expected(root: Path | None = None) -> Binaries:
    """The paths the pinned versions build to (they may not exist yet)."""
    v = read_versions()
    root = root or cache_root()
    kube = root / f"kubernetes-{v['KUBERNETES_VERSION']}"
    return Binaries(
        etcd=root / f"etcd-{v['ETCD_VERSION']}" / "etcd",
        kube_apiserver=kube / "kube-apiserver",
        kube_controller_manager=kube / "kube-controller-manager",
        kube_scheduler=kube / "kube-scheduler",
        kubectl=kube / "kubectl",
        kwok=root / f"kwok-{v['KWOK_VERSION']}" / "kwok",
        aemm=root / f"aemm-{v['AEMM_VERSION']}" / "amazon-ec2-metadata-mock",
        helm=root / f"helm-{v['HELM_VERSION']}" / "helm",
        kubernetes_version=v["KUBERNETES_VERSION"],
    )


def missing(binaries: Binaries) -> list[Path]:
    return [p for p in binaries.all() if not os.access(p, os.X_OK)]


def ensure(build: bool = True) -> Binaries:
    """Return the binaries, building the missing ones first (progress goes to stderr)."""
    binaries = expected()
    absent = missing(binaries)
    if not absent:
        return binaries
    if not build:
        names = ", ".join(str(p) for p in absent)
        raise BinariesMissingError(f"sandbox binaries missing: {names}; run {BUILD_SCRIPT} to build them")
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.DEVNULL, stderr=sys.stderr, check=False)
    if result.returncode != 0:
        raise BinariesMissingError(
            f"{BUILD_SCRIPT} failed with exit code {result.returncode}; its output above says which part"
        )
    absent = missing(binaries)
    if absent:
        raise BinariesMissingError(f"{BUILD_SCRIPT} finished but these are still missing: {absent}")
    return binaries
