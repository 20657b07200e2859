"""`spotguard demo` (the README's first command) tells a fallback's whole life, in order, and exits 0: spot short,
on-demand, spot back, safety checks, drain, exactly the on-demand instance removed, the SGFE Completed."""

from __future__ import annotations

import re
import subprocess
import sys

from controller.app.demo import SGFE_PHASES


def _in_order(out: str, steps: list[str]) -> None:
    positions = [out.find(step) for step in steps]
    missing = [step for step, position in zip(steps, positions, strict=True) if position < 0]
    assert not missing, f"not in the timeline: {missing}\n{out}"
    assert positions == sorted(positions), f"timeline out of order:\n{out}"


def test_demo_tells_the_whole_life_of_a_fallback_in_order() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controller.app.cli", "demo"], capture_output=True, text=True, timeout=300, check=False
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # The recommended Node's own story comes through one watch, so its steps are printed in order.
    _in_order(
        out,
        [
            "nodewatch saw the rebalance recommendation in IMDS and annotated",
            "is SpotScaledUp",
            "is SpotWithdrawing: falling back to on-demand",
            "is OnDemandRequested",
            "is OnDemandReady",
            "is Retiring",
            "drained; instance",
        ],
    )
    assert "AWS: spot launch failed: Could not launch Spot Instances. InsufficientInstanceCapacity" in out
    assert "AWS: spotguard-ondemand-1 desired 0 -> 1" in out

    # The way back: the SGFE through every phase, spot back before it leaves Pending, the safety checks before
    # the scale-down, then the drain and the removal of exactly the on-demand instance.
    sgfe = re.search(r"SpotGuardFallbackEvent (fallback-\S+) created for on-demand node (\S+) \((i-\w+)\)", out)
    assert sgfe, out
    name, on_demand_node, on_demand_instance = sgfe.groups()
    _in_order(
        out,
        [
            f"SGFE {name} is Pending",
            "Spot capacity is BACK",
            f"SGFE {name} is Monitoring",
            "AWS: spotguard-spot-1 desired 2 -> 3",
            f"SGFE {name} is ReadyForScaleDown",
            "controller event SafetyCheckPassed",
            f"SGFE {name} is ScalingDown",
            f"on-demand node {on_demand_node} cordoned; draining it",
            f"AWS: TerminateInstanceInAutoScalingGroup {on_demand_instance} in spotguard-ondemand-1, decrementing "
            "desired (exactly the SGFE's on-demand instance)",
            f"SGFE {name} is Completed",
        ],
    )
    assert [p for p in SGFE_PHASES if f"SGFE {name} is {p}:" in out] == list(SGFE_PHASES)
    assert "NOT the SGFE's on-demand instance" not in out
    assert out.count("TerminateInstanceInAutoScalingGroup") == 1  # the old spot instance is the Node's line above
    assert "AWS: spotguard-ondemand-1 desired 1 -> 0" in out
    table = out.split("$ kubectl get sgfe -n kube-system", 1)[1].strip().splitlines()
    assert table[0].split()[:4] == ["NAME", "SPOT", "ASG", "ON-DEMAND"]
    assert name in table[1] and "spotguard-spot-1" in table[1] and "Completed" in table[1]
