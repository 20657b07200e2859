"""`python -m sandbox.aws` as a process: one JSON line when ready, boto3 works unmodified, SIGTERM exits cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sandbox.aws.client import SandboxAWSClient
from tests.unit.sandbox.conftest import SPOT, boto3_client

REPO = Path(__file__).resolve().parents[3]


def _read_line(process: subprocess.Popen[str], timeout_seconds: float) -> str:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline() if process.stdout else ""))
    reader.start()
    reader.join(timeout_seconds)
    if not line:
        process.kill()
        pytest.fail(f"python -m sandbox.aws printed nothing within {timeout_seconds} s")
    return line[0]


def test_process_announces_serves_boto3_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.aws", "--port", "0", "--spot-pending-seconds", "0.3", "--log-level", "WARNING"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        announcement = json.loads(_read_line(process, timeout_seconds=60))
        endpoint = announcement["endpoint"]
        assert endpoint.startswith("http://127.0.0.1:")
        assert [g["name"] for g in announcement["groups"]] == [SPOT, "spotguard-ondemand-1"]

        autoscaling = boto3_client(endpoint, "autoscaling")
        autoscaling.set_desired_capacity(AutoScalingGroupName=SPOT, DesiredCapacity=4)
        control = SandboxAWSClient(endpoint)
        in_service = control.wait_for_instances(SPOT, "InService", 4, timeout_seconds=30)
        assert len(in_service) == 4
        assert control.count_calls("SetDesiredCapacity", asg=SPOT) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, stderr
