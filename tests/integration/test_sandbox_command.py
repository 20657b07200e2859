"""`spotguard sandbox` comes up, is usable with the printed environment, and leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest

from sandbox import binaries

SPOTGUARD = [sys.executable, "-c", "from controller.app.cli import main; main()"]


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes whose argv mentions ``text`` (the sandbox's temp dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


class _Output:
    """Collects a process's stdout and stderr lines in background threads."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((proc.stdout, self.out), (proc.stderr, self.err)):
            assert stream is not None
            threading.Thread(target=lambda s=stream, k=sink: k.extend(iter(s.readline, "")), daemon=True).start()

    def wait_for(self, proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in self.err):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"sandbox did not print {marker!r}; stdout:\n{''.join(self.out)}\nstderr:\n{''.join(self.err)}"
                )
            time.sleep(0.2)
        return "".join(self.out)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_sandbox_command_prints_a_working_environment_and_stops_cleanly(stop_signal: signal.Signals) -> None:
    proc = subprocess.Popen(
        [*SPOTGUARD, "sandbox"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        out = _Output(proc).wait_for(proc, "Press Ctrl-C to stop.", timeout=120)
        exports = dict(re.findall(r"^export (\w+)=(\S+)$", out, flags=re.MULTILINE))
        assert {"KUBECONFIG", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"} <= exports.keys()
        kubeconfig = exports["KUBECONFIG"]
        workdir = str(Path(kubeconfig).parent.parent)

        nodes = subprocess.run(
            [str(binaries.expected().kubectl), f"--kubeconfig={kubeconfig}", "get", "nodes", "--no-headers"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        assert len(nodes) == 3 and all(" Ready " in line for line in nodes)

        asg = boto3.client(
            "autoscaling",
            endpoint_url=exports["AWS_ENDPOINT_URL"],
            region_name=exports["AWS_DEFAULT_REGION"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        names = {g["AutoScalingGroupName"] for g in asg.describe_auto_scaling_groups()["AutoScalingGroups"]}
        assert names == {"spotguard-spot-1", "spotguard-ondemand-1"}
        assert _processes_mentioning(workdir), "the sandbox's processes should be running"

        proc.send_signal(stop_signal)
        assert proc.wait(timeout=60) == 0
        assert _processes_mentioning(workdir) == []
        assert not Path(workdir).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
