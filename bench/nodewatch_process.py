"""The real nodewatch (``python -m nodewatch``) as a child process: probe address, probes, metrics, /proc figures.

Used by the nodewatch benchmarks (bench/nodewatch_figures.py) and by tests/integration/test_nodewatch_on_sandbox.py.
The process listens on 127.0.0.1:0; its address is read from its "nodewatch started" log line. It runs under
sandbox.processes.Child, so it dies with the Python process that started it (start it from a thread that lives as
long as the process should: PR_SET_PDEATHSIG follows the starting thread).
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from sandbox.processes import Child, ProcessFailedError

STARTED_MESSAGE = "nodewatch started"
POLLS_METRIC = "spotguard_nodewatch_polls_total"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (/proc/PID/stat utime + stime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of process ``pid`` in KiB: resident memory now and its peak."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def metric_value(exposition: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """Sum of the samples of ``name`` in a Prometheus text exposition, limited to those carrying ``labels``."""
    wanted = [f'{key}="{value}"' for key, value in (labels or {}).items()]
    total: float | None = None
    for line in exposition.splitlines():
        if not line.startswith((name + " ", name + "{")):
            continue
        series, _, value = line.rpartition(" ")
        if all(pair in series for pair in wanted):
            total = (total or 0.0) + float(value)
    if total is None:
        raise LookupError(f"no sample of {name} {labels or ''} in the exposition")
    return total


class NodewatchProcess:
    """One ``python -m nodewatch`` for one Node, started with ``start()`` or a ``with`` block."""

    def __init__(
        self,
        node_name: str,
        imds_url: str,
        kubeconfig: Path | str,
        logdir: Path,
        *,
        poll_interval: float = 2.0,
        extra_args: Sequence[str] = (),
        log_level: str = "info",
    ) -> None:
        self.node_name = node_name
        self.argv = [
            sys.executable,
            "-m",
            "nodewatch",
            f"--node-name={node_name}",
            f"--imds-url={imds_url}",
            f"--kubeconfig={kubeconfig}",
            f"--poll-interval={poll_interval:g}",
            "--listen=127.0.0.1:0",
            *extra_args,
        ]
        self.logdir = logdir
        self.log_level = log_level
        self.address = ""
        self._child: Child | None = None
        self._log_start = 0

    @property
    def name(self) -> str:
        return f"nodewatch-{self.node_name}"

    @property
    def log_path(self) -> Path:
        return self.logdir / f"{self.name}.log"

    @property
    def pid(self) -> int:
        return self._running().pid

    def start(self, timeout: float = 60.0) -> NodewatchProcess:
        """Start the process and wait for its "nodewatch started" line (which names the probe address).

        That line is logged at info level: ``log_level`` must be "debug" or "info".
        """
        if self._child is not None:
            raise RuntimeError(f"{self.name} is already started")
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0  # the log is appended to
        self._child = Child(self.name, self.argv, self.logdir, env={"LOG_LEVEL": self.log_level})
        deadline = time.monotonic() + timeout
        while not self.address:
            self._child.check_alive()
            for entry in self.log_entries():
                if str(entry.get("msg", "")).startswith(STARTED_MESSAGE):
                    self.address = str(entry["address"])
            if not self.address:
                if time.monotonic() > deadline:
                    raise ProcessFailedError(f"{self.name} did not start within {timeout:g} s:\n{self.log_tail()}")
                time.sleep(0.05)
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (then SIGKILL after ``timeout``); the exit code, or None if it was never started."""
        if self._child is None:
            return None
        child, self._child = self._child, None
        child.stop(timeout=timeout)
        return child.proc.returncode

    def alive(self) -> bool:
        return self._child is not None and self._child.alive()

    def __enter__(self) -> NodewatchProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what it says ------------------------------------------------------------------------------
    def log_entries(self) -> list[dict[str, Any]]:
        """This run's JSON log lines (lines that are not JSON objects are skipped)."""
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(self._log_start)
                text = log_file.read().decode(errors="replace")
        except FileNotFoundError:
            return []
        entries = []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """(HTTP status, body) of GET ``path`` on the probe port."""
        host, _, port = self._running_address().rpartition(":")
        connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        status, body = self.get("/metrics")
        if status != 200:
            raise ProcessFailedError(f"{self.name} answered {status} on /metrics: {body[:200]}")
        return metric_value(body, name, labels)

    def polls(self, result: str | None = None) -> int:
        """Polls so far (``result`` "ok" or "error"; None for both)."""
        return int(self.metric(POLLS_METRIC, {"result": result} if result else None))

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def memory_kib(self) -> tuple[int, int]:
        return memory_kib(self.pid)

    def _running(self) -> Child:
        if self._child is None:
            raise RuntimeError(f"{self.name} is not running")
        self._child.check_alive()
        return self._child

    def _running_address(self) -> str:
        self._running()
        return self.address
