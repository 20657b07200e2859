"""A real Prometheus server (Debian's package) scrapes a running controller and nodewatch: the series
operators alert on are there, every alert expression evaluates, and every query of the Grafana dashboard
(charts/spotguard/dashboards/spotguard.json) returns the series its panel shows."""

from __future__ import annotations

import json
import re
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

from dashboards.spotguard import queries
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
#: Grafana's macros, as the dashboard's time range and scrape interval would set them.
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__range": "5m"}
DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "spotguard" / "dashboards" / "spotguard.json"
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
            {
                "job_name": "spotguard-nodewatch",
                # The node label, as the nodewatch ServiceMonitor's relabelling gives it.
                "static_configs": [{"targets": [f"127.0.0.1:{nodewatch_port}"], "labels": {"node": node.name}}],
            },
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
        _check_dashboard(base, node.name)
    finally:
        server.terminate()
        nodewatch.terminate()
        server.wait(timeout=20)
        nodewatch.wait(timeout=20)
        mock.stop()


def _dashboard_results(base: str) -> tuple[dict[str, list[dict[str, object]]], list[str]]:
    """Each panel's series (its queries' results, in order), and the queries that returned none."""
    results: dict[str, list[dict[str, object]]] = {}
    empty: list[str] = []
    for title, shipped, legend in queries(json.loads(DASHBOARD.read_text())):
        expr = shipped
        for macro, value in GRAFANA_MACROS.items():
            expr = expr.replace(macro, value)
        assert "$" not in expr, f"{title}: a Grafana variable the test does not know: {expr}"
        series = _query(base, expr)
        if not series:
            empty.append(f"{title}: {expr}")
        wanted = set(re.findall(r"{{\s*(\w+)\s*}}", legend))
        for one in series:
            labels = one["metric"]
            assert isinstance(labels, dict)
            assert wanted <= set(labels), f"{title}: a series without {wanted - set(labels)}: {one} ({expr})"
        results.setdefault(title, []).extend(series)
    return results, empty


def _check_dashboard(base: str, node: str) -> None:
    """Each panel's query returns series, each with the labels its legend names; some panels exactly these."""
    deadline = time.monotonic() + 60
    while True:  # rate() and increase() need two scrapes inside their range
        results, empty = _dashboard_results(base)
        if not empty:
            break
        assert time.monotonic() < deadline, "panels with no series:\n" + "\n".join(empty)
        time.sleep(1)

    def label_values(title: str, label: str) -> set[str]:
        return {str(one["metric"][label]) for one in results[title]}  # type: ignore[index]

    assert label_values("Open fallbacks by phase", "phase") == {
        "Pending",
        "Monitoring",
        "ReadyForScaleDown",
        "ScalingDown",
    }
    assert label_values("Scale-up results by group", "asg") >= {"spotguard-spot-1", "spotguard-ondemand-1"}
    assert label_values("Scale-up results by group", "result") == {"success", "no_capacity", "timeout", "error"}
    assert label_values("AWS errors by code", "code") >= {"AccessDenied", "UnauthorizedOperation"}
    evictions = {"evicted", "blocked", "namespace_terminating", "gone", "error"}
    assert label_values("Evictions by result", "result") == evictions
    assert label_values("Notices seen by kind", "kind") == {"rebalance", "interruption"}
    assert label_values("Notices showing now, by node", "node") == {node}
    assert [one["value"][1] for one in results["Leader"]] == ["1"]  # type: ignore[index]
    # watching, idle, not ready: the one nodewatch runs on AEMM's spot instance.
    assert [one["value"][1] for one in results["nodewatch agents"]] == ["1", "0", "0"]  # type: ignore[index]
