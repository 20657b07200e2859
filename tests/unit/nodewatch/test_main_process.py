"""spotguard-nodewatch as a process: fake IMDS in, patched Node out, probes served, clean stop on SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from nodewatch import annotations as keys
from tests.support.fake_kube_api import FakeKubeAPI
from tests.support.faulty_imds import FaultyIMDS
from tests.support.waiting import wait_until

NODE = "ip-10-0-0-1.ec2.internal"
BANNED = ("boto3", "botocore", "kubernetes", "click", "controller", "sandbox", "yaml")


def kubeconfig(path: Path, server: str) -> Path:
    document = {
        "current-context": "dev",
        "contexts": [{"name": "dev", "context": {"cluster": "dev", "user": "dev"}}],
        "clusters": [{"name": "dev", "cluster": {"server": server}}],
        "users": [{"name": "dev", "user": {"token": "test-token"}}],
    }
    path.write_text(yaml.safe_dump(document))
    return path


class LogReader:
    """Collects the JSON log lines a process writes to stderr."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        assert process.stderr is not None
        stream = process.stderr

        def pump() -> None:
            for line in stream:
                self.lines.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def drain(self) -> list[dict[str, Any]]:
        while not self.lines.empty():
            self.seen.append(json.loads(self.lines.get()))
        return self.seen

    def field(self, name: str) -> Any:
        for entry in self.drain():
            if name in entry:
                return entry[name]
        return None


def probe(address: str, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection(address, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def start(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "LOG_LEVEL": "info"}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.Popen(
        [sys.executable, "-m", "nodewatch", *args], stderr=subprocess.PIPE, text=True, env=env, cwd=Path.cwd()
    )


def test_main_patches_its_own_node_serves_probes_and_stops_cleanly(tmp_path: Path) -> None:
    with FaultyIMDS() as imds, FakeKubeAPI() as api:
        api.add_node(NODE)
        api.add_node("some-other-node")
        imds.set_rebalance("2025-01-15T10:00:00Z")
        process = start(
            "--node-name",
            NODE,
            "--imds-url",
            imds.url,
            "--kubeconfig",
            str(kubeconfig(tmp_path / "kubeconfig", api.url)),
            "--listen",
            "127.0.0.1:0",
            "--poll-interval",
            "0.2",
        )
        try:
            logs = LogReader(process)
            wait_until(lambda: logs.field("address"), 20, "nodewatch to log its probe address")
            address = logs.field("address")
            wait_until(lambda: keys.REBALANCE_NOTICE_TIME in api.annotations(NODE), 10, "the rebalance annotation")
            wait_until(lambda: probe(address, "/readyz")[0] == 200, 10, "/readyz to turn ready")
            assert probe(address, "/healthz")[0] == 200
            metrics = probe(address, "/metrics")[1]
            assert 'spotguard_nodewatch_notices_total{kind="rebalance"} 1.0' in metrics
            assert "spotguard_nodewatch_node_patches_total 1.0" in metrics

            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

        annotations = api.annotations(NODE)
        assert annotations[keys.REBALANCE_NOTICE_TIME] == "2025-01-15T10:00:00Z"
        assert annotations[keys.INSTANCE_ID] == "i-0123456789abcdef0"
        assert api.annotations("some-other-node") == {}
        assert [patch.path for patch in api.patches] == [f"/api/v1/nodes/{NODE}"]
        entries = logs.drain()
        assert all(entry["node"] == NODE for entry in entries)
        assert entries[-1]["msg"] == "nodewatch stopped"


def test_main_refuses_to_start_without_a_usable_kubeconfig(tmp_path: Path) -> None:
    process = start("--node-name", NODE, "--kubeconfig", str(tmp_path / "missing"), "--listen", "127.0.0.1:0")
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 2
    entry = json.loads(stderr.strip().splitlines()[-1])
    assert entry["level"] == "error"
    assert str(tmp_path / "missing") in entry["msg"]


def test_nodewatch_imports_nothing_heavy() -> None:
    code = (
        "import sys, json, nodewatch.__main__, nodewatch.agent, nodewatch.node, nodewatch.imds, nodewatch.server;"
        "print(json.dumps(sorted(sys.modules)))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True).stdout)
    assert [name for name in loaded if name.split(".")[0] in BANNED] == []
    assert "prometheus_client" in loaded  # the check does see third-party imports
