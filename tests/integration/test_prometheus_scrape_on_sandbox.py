"""A real Prometheus server (Debian's package) scrapes a running controller and nodewatch: the series
operators alert on are there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from sandbox.aws.client import SandboxAWSClient
from sandbox.environment import Sandbox
from sandbox.imds import NoticeSchedule
from sandbox.processes import free_port
from tests.integration.controller_process import (
    ControllerLauncher,
    LeaseWatch,
    controller_env,
    spot_nodes,
)

CONTROLLER_SERIES = [
    "spotguard_leader",
    "spotguard_leader_transitions_total",
    "spotguard_paused",
    "spotguard_aws_calls_total",
    "spotguard_scale_up_attempts_total",
    "spotguard_fallback_events",
    "spotguard_oldest_unfinished_fallback_event_age_seconds",
]
NODEWATCH_SERIES = [
    "spotguard_nodewatch_polls_total",
    "spotguard_nodewatch_imds_errors_total",
    "spotguard_nodewatch_last_good_poll_timestamp_seconds",
]


@pytest.fixture
def launcher(
    sandbox: Sandbox, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api, tmp_path: Path
) -> Iterator[ControllerLauncher]:
    with ControllerLauncher(controller_env(sandbox.env()), tmp_path, core=core) as launcher:
        yield launcher


def _query(base: str, expr: str) -> list[dict[str, object]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    return list(body["data"]["result"])


def test_prometheus_scrapes_the_controller_and_nodewatch(
    launcher: ControllerLauncher, sandbox: Sandbox, core: k8s.CoreV1Api, api_client: k8s.ApiClient, tmp_path: Path
) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "install Debian's prometheus package (the CI script does)"
    controller_port, nodewatch_port, prometheus_port = free_port(), free_port(), free_port()
    with LeaseWatch(api_client, launcher.lease_name) as lease:
        launcher.start("a", SPOT_GUARD_METRICS_PORT=str(controller_port))
        lease.wait_for(lambda holder: holder == "a", timeout=30, what="the replica leads")

    node = spot_nodes(core)[0]
    zone = core.read_node(node.name).metadata.labels["topology.kubernetes.io/zone"]
    mock = sandbox.metadata_mock(node.instance_id, zone, NoticeSchedule())
    nodewatch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nodewatch",
            f"--node-name={node.name}",
            f"--imds-url={mock.url}",
            f"--kubeconfig={sandbox.kubeconfig}",
            "--poll-interval=1",
            f"--listen=127.0.0.1:{nodewatch_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "nodewatch.log").open("wb"),
    )
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {"job_name": "spotguard-controller", "static_configs": [{"targets": [f"127.0.0.1:{controller_port}"]}]},
            {"job_name": "spotguard-nodewatch", "static_configs": [{"targets": [f"127.0.0.1:{nodewatch_port}"]}]},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    base = f"http://127.0.0.1:{prometheus_port}"
    try:
        deadline = time.monotonic() + 60
        missing: list[str] = []
        while True:
            try:
                up = {r["metric"]["job"]: r["value"][1] for r in _query(base, "up")}  # type: ignore[index]
                missing = [s for s in CONTROLLER_SERIES + NODEWATCH_SERIES if not _query(base, s)]
            except OSError:
                up, missing = {}, ["(prometheus not answering yet)"]
            if up == {"spotguard-controller": "1", "spotguard-nodewatch": "1"} and not missing:
                break
            assert time.monotonic() < deadline, (
                f"up={up}, missing series: {missing}\n{(tmp_path / 'prometheus.log').read_text()[-2000:]}"
            )
            time.sleep(0.5)
        leader = _query(base, 'spotguard_leader{job="spotguard-controller"}')
        assert [r["value"][1] for r in leader] == ["1"]  # type: ignore[index]
        rules = Path(__file__).resolve().parents[2] / "manifests" / "monitoring" / "prometheusrule.yaml"
        for group in yaml.safe_load(rules.read_text())["spec"]["groups"]:
            for rule in group["rules"]:
                # Every alert expression is valid PromQL for this server and evaluates without error.
                _query(base, rule["expr"])
    finally:
        server.terminate()
        nodewatch.terminate()
        server.wait(timeout=20)
        nodewatch.wait(timeout=20)
        mock.stop()
