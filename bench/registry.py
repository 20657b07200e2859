"""The benchmark registry: ``@benchmark("name")`` on a function that takes a Context and returns its Figures.

Every module ``bench/*_benchmarks.py`` is imported by ``discover()``, so adding a benchmark needs no edit
anywhere else::

    @benchmark("controller_fallback", "rebalance notice to on-demand scale-up when spot is short")
    def fallback(context: Context) -> list[Figure]:
        ...
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pkgutil
from collections.abc import Callable, Sequence
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from bench.figures import Figure
from sandbox.environment import Sandbox

log = logging.getLogger("bench")

BENCH_DIR = Path(__file__).resolve().parent
MODULE_SUFFIX = "_benchmarks"


@dataclasses.dataclass
class Context:
    """What a benchmark gets: the started sandbox, the --quick switch and a directory for its logs."""

    sandbox: Sandbox
    quick: bool
    workdir: Path
    _api_client: k8s.ApiClient | None = None

    def api_client(self) -> k8s.ApiClient:
        if self._api_client is None:
            self._api_client = k8s_config.new_client_from_config(config_file=str(self.sandbox.kubeconfig))
        return self._api_client

    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api_client())


BenchmarkFunction = Callable[[Context], Figure | Sequence[Figure]]


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    function: BenchmarkFunction

    def run(self, context: Context) -> list[Figure]:
        result = self.function(context)
        return [result] if isinstance(result, Figure) else list(result)


_REGISTRY: dict[str, Benchmark] = {}


def benchmark(name: str, description: str = "") -> Callable[[BenchmarkFunction], BenchmarkFunction]:
    """Register the decorated function as benchmark ``name`` (names are unique)."""

    def register(function: BenchmarkFunction) -> BenchmarkFunction:
        if name in _REGISTRY and _REGISTRY[name].function is not function:
            raise ValueError(f"two benchmarks are called {name!r}")
        _REGISTRY[name] = Benchmark(name, description or (function.__doc__ or "").strip().split("\n")[0], function)
        return function

    return register


def discover() -> dict[str, Benchmark]:
    """Import every ``bench/*_benchmarks.py`` and return the registered benchmarks by name, in name order."""
    for module in pkgutil.iter_modules([str(BENCH_DIR)]):
        if module.name.endswith(MODULE_SUFFIX):
            importlib.import_module(f"bench.{module.name}")
    return dict(sorted(_REGISTRY.items()))
