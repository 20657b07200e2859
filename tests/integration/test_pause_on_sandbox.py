"""`spotguard pause` stops a running controller from acting on new recommendations; `resume` undoes it."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from sandbox.aws.client import SandboxAWSClient
from sandbox.environment import Sandbox
from tests.integration.controller_process import (
    SPOT_ASG,
    ControllerLauncher,
    LeaseWatch,
    annotate_rebalance,
    controller_env,
    replacement_finished,
    replacement_phase,
    spot_nodes,
)


@pytest.fixture
def launcher(
    sandbox: Sandbox, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api, tmp_path: Path
) -> Iterator[ControllerLauncher]:
    with ControllerLauncher(controller_env(sandbox.env()), tmp_path, core=core) as launcher:
        yield launcher


def _cli(launcher: ControllerLauncher, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.app.cli", *args, "--lease-name", launcher.lease_name],
        env=launcher.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _paused_metric(port: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = str(response.read().decode())
    return next(line for line in text.splitlines() if line.startswith("spotguard_paused "))


def test_pause_holds_new_recommendations_and_resume_acts_on_them(
    launcher: ControllerLauncher, aws_sim: SandboxAWSClient, core: k8s.CoreV1Api, api_client: k8s.ApiClient
) -> None:
    aws_sim.set_capacity(SPOT_ASG, pending_seconds=0)
    port = "18777"
    with LeaseWatch(api_client, launcher.lease_name) as lease:
        leader = launcher.start("a", SPOT_GUARD_METRICS_PORT=port)
        lease.wait_for(lambda holder: holder == "a", timeout=30, what="the replica leads")
    paused = _cli(launcher, "pause", "--reason", "maintenance window")
    assert paused.returncode == 0, paused.stderr
    deadline = time.monotonic() + 20
    while _paused_metric(port) != "spotguard_paused 1.0":
        assert time.monotonic() < deadline, "spotguard_paused never became 1"
        time.sleep(0.5)

    old = spot_nodes(core)[0]
    aws_sim.reset_calls()
    annotate_rebalance(core, old)
    time.sleep(5)  # a controller ignoring the pause would have scaled up by now
    assert aws_sim.count_calls("SetDesiredCapacity") == 0
    assert replacement_phase(core, old.name) is None
    assert "paused" in _cli(launcher, "leader", "-o", "json").stdout

    resumed = _cli(launcher, "resume")
    assert resumed.returncode == 0, resumed.stderr
    deadline = time.monotonic() + 90
    while not replacement_finished(core, old.name):
        assert time.monotonic() < deadline, leader.log_tail()
        time.sleep(0.5)
    assert aws_sim.count_calls("SetDesiredCapacity", asg=SPOT_ASG) == 1
