"""Figures for nodewatch: resident memory over time, CPU time per poll, notice-to-annotation latency, stop time.

Runs ``python -m nodewatch`` as a child process against the fault-injecting IMDS and the fake API server
(both in this process) and prints one JSON object. Not a test: nothing here asserts a time.

    .venv/bin/python -m tests.support.measure_nodewatch --seconds 600
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nodewatch import annotations as keys
from tests.support.fake_kube_api import FakeKubeAPI
from tests.support.faulty_imds import FaultyIMDS

NODE = "ip-10-0-0-1.ec2.internal"


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    parts = stat[stat.rindex(")") + 2 :].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def probe(address: str, path: str) -> str:
    connection = http.client.HTTPConnection(address, timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def metric(address: str, name: str) -> float:
    body = probe(address, "/metrics")
    values = [float(line.split()[-1]) for line in body.splitlines() if line.startswith((name + " ", name + "{"))]
    if not values:
        raise LookupError(name)
    return sum(values)  # over every label value


def wait_for(condition: Any, timeout: float) -> float:
    """Seconds until ``condition()`` held, polled every millisecond."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError("condition not met")
        time.sleep(0.001)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to poll before the memory figure")
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--notice-cycles", type=int, default=10)
    parser.add_argument(
        "--probe-every",
        type=float,
        default=5.0,
        help="scrape /healthz, /readyz, /metrics this often (0: never; CPU per poll then excludes probes)",
    )
    options = parser.parse_args()

    with FaultyIMDS() as imds, FakeKubeAPI() as api, tempfile.TemporaryDirectory() as scratch:
        api.add_node(NODE)
        config = Path(scratch, "kubeconfig")
        config.write_text(
            json.dumps(
                {
                    "current-context": "dev",
                    "contexts": [{"name": "dev", "context": {"cluster": "dev", "user": "dev"}}],
                    "clusters": [{"name": "dev", "cluster": {"server": api.url}}],
                    "users": [{"name": "dev", "user": {"token": "test-token"}}],
                }
            )
        )
        # A fixed port keeps the measurement simple; the unit tests use port 0 and read the log instead.
        address = f"127.0.0.1:{19732 + os.getpid() % 1000}"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nodewatch",
                f"--node-name={NODE}",
                f"--imds-url={imds.url}",
                f"--kubeconfig={config}",
                f"--listen={address}",
                f"--poll-interval={options.poll_interval}",
            ],
            stderr=subprocess.DEVNULL,
            env={**os.environ, "LOG_LEVEL": "warning"},
        )
        figures: dict[str, Any] = {"poll_interval_s": options.poll_interval}
        try:
            wait_for(lambda: imds.count("GET", "/latest/meta-data/spot/instance-action") > 0, 30)
            time.sleep(3 * options.poll_interval)
            figures["rss_kib_after_start"] = rss_kib(process.pid)[0]

            # Latency: notice appears in IMDS -> annotation visible through the API (at a random poll phase).
            latencies = []
            for cycle in range(options.notice_cycles):
                time.sleep(random.uniform(0, options.poll_interval))  # noqa: S311
                notice = f"2025-01-15T10:{cycle:02d}:00Z"
                imds.set_rebalance(notice)
                latencies.append(
                    wait_for(lambda n=notice: api.annotations(NODE).get(keys.REBALANCE_NOTICE_TIME) == n, 10)
                )
                imds.set_rebalance(None)
                wait_for(lambda: keys.REBALANCE_CLEARED in api.annotations(NODE), 10)
            figures["notice_to_annotation_s"] = {
                "max": round(max(latencies), 3),
                "median": round(statistics.median(latencies), 3),
                "samples": len(latencies),
            }

            # CPU per poll and memory while polling quietly.
            polls_before = metric(address, "spotguard_nodewatch_polls_total")
            cpu_before = cpu_seconds(process.pid)
            samples = []
            started = time.monotonic()
            next_sample = started + 10.0
            while time.monotonic() - started < options.seconds:
                time.sleep(options.probe_every or 1.0)
                if options.probe_every:
                    for path in ("/healthz", "/readyz", "/metrics"):  # what kubelet and Prometheus would ask
                        probe(address, path)
                if time.monotonic() >= next_sample:
                    samples.append(rss_kib(process.pid)[0])
                    next_sample += 10.0
            polls = metric(address, "spotguard_nodewatch_polls_total") - polls_before
            cpu = cpu_seconds(process.pid) - cpu_before
            rss, hwm = rss_kib(process.pid)
            figures.update(
                {
                    "quiet_polling_s": options.seconds,
                    "probe_every_s": options.probe_every,
                    "polls": int(polls),
                    "cpu_ms_per_poll": round(1000 * cpu / polls, 3) if polls else None,
                    "rss_kib_end": rss,
                    "rss_mib_end": round(rss / 1024, 1),
                    "rss_kib_peak": hwm,
                    "rss_kib_samples_min_max": [min(samples or [rss]), max(samples or [rss])],
                }
            )

            stop_started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            figures["exit_code"] = process.wait(timeout=10)
            figures["sigterm_to_exit_s"] = round(time.monotonic() - stop_started, 3)
        finally:
            if process.poll() is None:
                process.kill()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
