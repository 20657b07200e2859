"""`spotguard demo` (the README's first command) tells the whole fallback story and exits 0."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_the_fallback_end_to_end_and_prints_the_timeline() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controller.app.cli", "demo"], capture_output=True, text=True, timeout=300, check=False
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # The Node's own story comes through one watch, so its steps are printed in order.
    node_steps = [
        "nodewatch saw the rebalance recommendation in IMDS and annotated",
        "is SpotScaledUp",
        "is SpotWithdrawing: falling back to on-demand",
        "is OnDemandRequested",
        "is OnDemandReady",
        "is Retiring",
        "drained; instance",
    ]
    positions = [out.find(step) for step in node_steps]
    assert all(p >= 0 for p in positions), out
    assert positions == sorted(positions), f"timeline out of order:\n{out}"
    # AWS's side and the fallback event are polled beside it.
    assert "AWS: spot launch failed: Could not launch Spot Instances. InsufficientInstanceCapacity" in out
    assert "AWS: spotguard-ondemand-1 desired 0 -> 1" in out
    assert "SpotGuardFallbackEvent fallback-" in out
    table = out.split("$ kubectl get sgfe -n kube-system", 1)[1].strip().splitlines()
    assert table[0].split()[:4] == ["NAME", "SPOT", "ASG", "ON-DEMAND"]
    assert "spotguard-spot-1" in table[1] and "Pending" in table[1]
